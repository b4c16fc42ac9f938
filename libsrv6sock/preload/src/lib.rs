//! `libsrv6sock.so`: an `LD_PRELOAD` shim that attaches SRv6 Segment Routing Headers to the sockets of an
//! unmodified program, following the steering policy (`libsrv6sock(7)`).
//!
//! It interposes `connect()`, `sendto()`/`sendmsg()` (TCP Fast Open and UDP), `getaddrinfo()` (to learn
//! which host name an address came from), `socket()`/`close()`/`dup()`/`dup2()`/`dup3()` (to know
//! which descriptor numbers hold the shim's SRH) and `setsockopt()` (to see the program's own
//! `IPV6_RTHDR`); with `SRV6_REPLY`, `listen()` and `accept()`/`accept4()`
//! make a server reply along the return-path TLV of each SYN ([`serve`]). It must never take its host program down:
//! * everything is parsed and every SRH pre-built in the library constructor ([`state`]); hooks only read
//!   that immutable state, so they allocate nothing, take no lock and are safe in forked children and in
//!   threads;
//! * the real functions come from `dlsym(RTLD_NEXT)` ([`real`]); a thread-local flag lets the shim's own
//!   calls (DNS inside `getaddrinfo`) pass through untouched;
//! * no threads of its own; a panic, in the constructor or a hook, never unwinds into C (the call goes on
//!   to libc unchanged), and the build refuses `panic = "abort"`, which would turn it into a crash;
//! * what the shim writes goes through [`output`]: no `std::io`, no SIGPIPE, errors mean "message lost";
//! * paths from DNS come from the resolver agent ([`agent`], asked inside `getaddrinfo()`, and inside
//!   `connect()` when a path's TTL ran out, with a bounded timeout and stack buffers) and are kept per
//!   (name, address) in a lock-free table allocated once ([`learned`]) that `connect()` reads; the shim has
//!   no DNS code.

// catch_unwind is what keeps a bug in the shim from killing the host; with panic=abort it catches nothing.
#[cfg(panic = "abort")]
compile_error!("libsrv6sock.so must be built with panic = \"unwind\": an abort would kill the host program");

mod agent;
mod fds;
mod hooks;
mod learned;
mod log;
mod names;
mod output;
mod real;
mod serve;
mod state;

/// Runs when the library is loaded, before `main()`.
extern "C" fn init() {
    // A panic here leaves the state unset: every hook then passes its call through.
    let _ = std::panic::catch_unwind(|| {
        // std's default hook would print to standard error, which may be a broken pipe, or closed and soon
        // the program's own file: report panics in the decision log instead. The hook belongs to the shim's
        // own copy of std; a Rust host program's panic hook is not affected.
        std::panic::set_hook(Box::new(|info| log::internal_error(info.location())));
        real::resolve_all();
        state::init();
    });
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;
