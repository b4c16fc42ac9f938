//! `libsrv6sock.so`: an `LD_PRELOAD` shim that attaches SRv6 Segment Routing Headers to the sockets of an
//! unmodified program, following the steering policy (`libsrv6sock(7)`).
//!
//! It interposes `connect()`, `sendto()`/`sendmsg()` (TCP Fast Open and UDP) and `getaddrinfo()` (to learn
//! which host name an address came from). Safety inside any host program:
//! * everything is parsed and every SRH pre-built in the library constructor ([`state`]); hooks only read
//!   that immutable state, so they allocate nothing, take no lock and are safe in forked children and in
//!   threads;
//! * the real functions come from `dlsym(RTLD_NEXT)` ([`real`]); a thread-local flag lets the shim's own
//!   calls (DNS inside `getaddrinfo`) pass through untouched;
//! * no threads of its own, and a panic never unwinds into C: the call goes on to libc unchanged.

mod hooks;
mod log;
mod names;
mod real;
mod state;

/// Runs when the library is loaded, before `main()`.
extern "C" fn init() {
    real::resolve_all();
    state::init();
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;
