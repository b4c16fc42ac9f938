//! The interposed libc functions.
//!
//! Each socket hook decides with [`steer`], then calls the real function. [`steer`] runs under [`guarded`]:
//! it is skipped when the shim itself is inside a hooked call (re-entry), and a panic in it lets the call go
//! on. The descriptor hooks (`socket`, `close`, `dup`, `dup2`, `dup3`) only keep [`fds`] and the log's
//! descriptor in step with the program's descriptor table: a few atomic operations, async-signal-safe.

use std::cell::Cell;
use std::net::Ipv6Addr;
use std::os::fd::BorrowedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};

use libc::{addrinfo, c_char, c_int, msghdr, sockaddr, socklen_t, ssize_t};
use libsrv6sock::attach;
use libsrv6sock::policy::{FailMode, Proto, Rule, ENV_SEGS};
use libsrv6sock::wire::srh::{self, Srh};

use crate::learned::{self, Learned};
use crate::log::{self, Action};
use crate::state::{self, Shim, State};
use crate::{agent, fds, names, real};

thread_local! {
    /// Set while the shim is working on this thread: calls it makes itself pass through.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// What the hook does after [`steer`].
pub(crate) enum Outcome {
    /// Call the real function.
    Proceed,
    /// Fail the call with this errno.
    Fail(c_int),
}

/// Run `f` unless the shim is already busy on this thread; a panic counts as [`Outcome::Proceed`].
pub(crate) fn guarded(f: impl FnOnce() -> Outcome) -> Outcome {
    if BUSY.with(|b| b.replace(true)) {
        return Outcome::Proceed;
    }
    let out = catch_unwind(AssertUnwindSafe(f)).unwrap_or(Outcome::Proceed);
    BUSY.with(|b| b.set(false));
    out
}

/// An IPv6 destination from a socket address; `None` for other families and v4-mapped addresses.
///
/// # Safety
/// `addr` must be null or point to `len` readable bytes.
unsafe fn destination(addr: *const sockaddr, len: socklen_t) -> Option<(Ipv6Addr, u16)> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sockaddr_in6>() {
        return None;
    }
    // SAFETY: the caller guarantees `len` readable bytes, which we checked cover a sockaddr_in6.
    let sin6 = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in6>()) };
    if sin6.sin6_family != libc::AF_INET6 as libc::sa_family_t {
        return None;
    }
    let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
    // A v4-mapped destination leaves as IPv4: nothing to steer.
    (ip.to_ipv4_mapped().is_none()).then_some((ip, u16::from_be(sin6.sin6_port)))
}

fn socket_proto(fd: BorrowedFd<'_>) -> Option<Proto> {
    // Known since its socket() call: one system call less on every connect().
    if let Some(proto) = fds::proto(std::os::fd::AsRawFd::as_raw_fd(&fd)) {
        return Some(proto);
    }
    let mut ty: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `ty`.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut c_int).cast(),
            &mut len,
        )
    };
    match (rc, ty) {
        (0, libc::SOCK_STREAM) => Some(Proto::Tcp),
        (0, libc::SOCK_DGRAM) => Some(Proto::Udp),
        _ => None,
    }
}

/// The first rule covering this socket, using the host names learned from `getaddrinfo()`.
fn lookup(shim: &Shim, proto: Proto, dst: Ipv6Addr, port: u16) -> Option<(usize, &Rule)> {
    let named = if shim.name_rules == 0 { 0 } else { names::rules_for(dst) & shim.name_rules };
    shim.policy.rules.iter().enumerate().find(|(i, r)| {
        // A name rule sees "its" name only if this address was resolved from it.
        let name = if *i < 64 && named & (1 << i) != 0 { r.name.as_deref() } else { None };
        r.matches(proto, dst, port, name)
    })
}

/// Decide and attach for a call on `fd` towards `addr`. `sending`: a `sendto`/`sendmsg` with an address
/// (UDP per datagram, or TCP Fast Open when `fastopen`).
///
/// # Safety
/// `addr` must be null or point to `len` readable bytes.
unsafe fn steer(call: &'static str, fd: c_int, addr: *const sockaddr, len: socklen_t, fastopen: bool) -> Outcome {
    let Some(state) = state::get() else { return Outcome::Proceed };
    // SAFETY: forwarded from the caller.
    let Some((dst, port)) = (unsafe { destination(addr, len) }) else { return Outcome::Proceed };
    if fd < 0 {
        return Outcome::Proceed;
    }
    // SAFETY: `fd` is the program's open descriptor for the duration of its call.
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    let Some(proto) = socket_proto(sock) else { return Outcome::Proceed };
    // A TCP send without Fast Open goes over the connection `connect()` already steered.
    if proto == Proto::Tcp && call != "connect" && !fastopen {
        return Outcome::Proceed;
    }
    let shim = match state {
        State::Ready(shim) => shim,
        State::Broken { closed: false } => return Outcome::Proceed,
        State::Broken { closed: true } => {
            log::decision(call, proto, dst, port, None, Action::RefusedBrokenConfig);
            return Outcome::Fail(libc::EINVAL);
        }
    };
    let found = lookup(shim, proto, dst, port);
    let mut buf = [0u8; srh::MAX_LEN];
    // Precedence: --segs (SRV6_SEGS), then a path DNS gave for this address (TCP), then the policy's rules.
    if proto == Proto::Tcp && found.is_none_or(|(_, r)| r.origin != ENV_SEGS) {
        match learned::get(dst, &mut buf) {
            Learned::Path(len) => {
                return attach(shim, &Call { name: call, sock, proto, dst, port }, &mut buf, len, None)
            }
            Learned::Refuse => {
                log::dns_decision(call, proto, dst, port, &[], Action::Refused(REFUSED_ERRNO));
                return Outcome::Fail(REFUSED_ERRNO);
            }
            Learned::Unknown | Learned::NoPath => {}
        }
    }
    let Some((index, rule)) = found else {
        // A UDP socket sending elsewhere than where the shim steered its last datagram: take the SRH off.
        if fds::clear_ours(fd) {
            let _ = attach::clear_srh(sock);
        }
        log::decision(call, proto, dst, port, None, Action::NoMatch);
        return Outcome::Proceed;
    };
    let template = &shim.srhs[index];
    buf[..template.len()].copy_from_slice(template);
    attach(shim, &Call { name: call, sock, proto, dst, port }, &mut buf, template.len(), Some(rule))
}

/// The call being steered: which hook, on which socket, towards where.
struct Call<'a> {
    name: &'static str,
    sock: BorrowedFd<'a>,
    proto: Proto,
    dst: Ipv6Addr,
    port: u16,
}

/// Errno of a connection refused because the resolver agent failed under `SRV6_FAIL=closed`.
const REFUSED_ERRNO: c_int = libc::EHOSTUNREACH;

/// Attach the SRH template in `buf[..len]` (segment 0 set to `dst` here) unless the program put a routing
/// header on the socket itself; `rule` is the policy rule it comes from, `None` for a path from DNS.
fn attach(shim: &Shim, c: &Call<'_>, buf: &mut [u8; srh::MAX_LEN], len: usize, rule: Option<&Rule>) -> Outcome {
    let (call, sock, proto, dst, port) = (c.name, c.sock, c.proto, c.dst, c.port);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let say = |srh: &[u8], action| match rule {
        Some(r) => log::decision(call, proto, dst, port, Some(r), action),
        None => log::dns_decision(call, proto, dst, port, srh, action),
    };
    // Whether the program set a routing header: its first bytes are enough (the kernel copies what fits).
    let mut current = [0u8; 8];
    if !fds::is_ours(fd) && attach::get_srh(sock, &mut current).is_ok_and(|n| n > 0) {
        say(&buf[..len], Action::ProgramSrh);
        return Outcome::Proceed;
    }
    // Templates come from SrhRepr::emit (rules) or were checked by AgentReply (DNS): segment 0 exists (an
    // error would only mean: leave the socket alone).
    let Some(srh) = buf.get_mut(..len) else { return Outcome::Proceed };
    if Srh::new_unchecked(&mut *srh).set_segment(0, dst).is_err() {
        return Outcome::Proceed;
    }
    match attach::set_srh(sock, srh) {
        Ok(()) => {
            fds::set_ours(fd);
            say(srh, Action::Attached);
            Outcome::Proceed
        }
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(libc::EINVAL);
            if shim.fail() == FailMode::Closed {
                say(srh, Action::Refused(errno));
                Outcome::Fail(errno)
            } else {
                say(srh, Action::FailedOpen(errno));
                Outcome::Proceed
            }
        }
    }
}

pub(crate) fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// Cast a resolved symbol to its function type, or fail the call with ENOSYS when libc has none.
macro_rules! real_fn {
    ($sym:expr, $ty:ty) => {{
        let p = $sym.get();
        if p.is_null() {
            set_errno(libc::ENOSYS);
            return -1;
        }
        // SAFETY: `p` is libc's definition of the function this hook replaces, which has exactly this type.
        unsafe { std::mem::transmute::<*mut libc::c_void, $ty>(p) }
    }};
}
pub(crate) use real_fn;

type ConnectFn = unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int;
type SendtoFn = unsafe extern "C" fn(c_int, *const libc::c_void, usize, c_int, *const sockaddr, socklen_t) -> ssize_t;
type SendmsgFn = unsafe extern "C" fn(c_int, *const msghdr, c_int) -> ssize_t;
type SocketFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type CloseFn = unsafe extern "C" fn(c_int) -> c_int;
type DupFn = unsafe extern "C" fn(c_int) -> c_int;
type Dup2Fn = unsafe extern "C" fn(c_int, c_int) -> c_int;
type Dup3Fn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type GetaddrinfoFn = unsafe extern "C" fn(*const c_char, *const c_char, *const addrinfo, *mut *mut addrinfo) -> c_int;

/// `connect(2)`: attach the matching SRH before the SYN leaves.
///
/// # Safety
/// The caller upholds `connect(2)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let real = real_fn!(real::CONNECT, ConnectFn);
    // SAFETY: `addr`/`len` come from the caller of connect().
    match guarded(|| unsafe { steer("connect", fd, addr, len, false) }) {
        Outcome::Fail(e) => {
            set_errno(e);
            -1
        }
        // SAFETY: the caller's arguments, unchanged.
        Outcome::Proceed => unsafe { real(fd, addr, len) },
    }
}

/// `sendto(2)`: TCP Fast Open connects here; unconnected UDP chooses its destination here.
///
/// # Safety
/// The caller upholds `sendto(2)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const libc::c_void,
    n: usize,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    let real = real_fn!(real::SENDTO, SendtoFn);
    if !addr.is_null() {
        // SAFETY: `addr`/`len` come from the caller of sendto().
        if let Outcome::Fail(e) = guarded(|| unsafe { steer("sendto", fd, addr, len, flags & libc::MSG_FASTOPEN != 0) })
        {
            set_errno(e);
            return -1;
        }
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real(fd, buf, n, flags, addr, len) }
}

/// `sendmsg(2)`: as [`sendto`], with the destination in `msg_name`.
///
/// # Safety
/// The caller upholds `sendmsg(2)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let real = real_fn!(real::SENDMSG, SendmsgFn);
    if !msg.is_null() {
        // SAFETY: a non-null `msg` points to the caller's msghdr.
        let (addr, len) = unsafe { ((*msg).msg_name as *const sockaddr, (*msg).msg_namelen) };
        if !addr.is_null() {
            // SAFETY: msg_name/msg_namelen describe the caller's buffer.
            let out = guarded(|| unsafe { steer("sendmsg", fd, addr, len, flags & libc::MSG_FASTOPEN != 0) });
            if let Outcome::Fail(e) = out {
                set_errno(e);
                return -1;
            }
        }
    }
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real(fd, msg, flags) }
}

/// `getaddrinfo(3)`: resolve as usual (the resolver's own sockets pass through), then remember which IPv6
/// answers came from a name that a rule asks for, and ask the resolver agent, if there is one, for the
/// name's paths.
///
/// # Safety
/// The caller upholds `getaddrinfo(3)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    let real = real_fn!(real::GETADDRINFO, GetaddrinfoFn);
    let was_busy = BUSY.with(|b| b.replace(true));
    // SAFETY: the caller's arguments, unchanged.
    let rc = unsafe { real(node, service, hints, res) };
    BUSY.with(|b| b.set(was_busy));
    if rc == 0 && !node.is_null() && !res.is_null() {
        // SAFETY: on success `*res` is the list getaddrinfo built and `node` the caller's C string.
        guarded(|| unsafe { learn(node, *res) });
        if let Some(State::Ready(shim)) = state::get() {
            guarded(|| {
                // SAFETY: as above.
                unsafe { agent::learn(shim, node, *res) };
                Outcome::Proceed
            });
        }
    }
    rc
}

/// Record the IPv6 answers of `node` if name rules ask for it.
///
/// # Safety
/// `node` is a C string and `list` a list returned by getaddrinfo.
unsafe fn learn(node: *const c_char, mut list: *const addrinfo) -> Outcome {
    let Some(State::Ready(shim)) = state::get() else { return Outcome::Proceed };
    if shim.name_rules == 0 {
        return Outcome::Proceed;
    }
    // SAFETY: `node` is the caller's NUL-terminated string.
    let Ok(name) = unsafe { std::ffi::CStr::from_ptr(node) }.to_str() else { return Outcome::Proceed };
    let rules = shim.policy.rules.iter().take(64).enumerate().fold(0u64, |m, (i, r)| {
        if r.name.as_deref().is_some_and(|want| libsrv6sock::policy::names_equal(want, name)) {
            m | 1 << i
        } else {
            m
        }
    });
    while rules != 0 && !list.is_null() {
        // SAFETY: `list` walks getaddrinfo's own linked list.
        let ai = unsafe { &*list };
        // SAFETY: ai_addr/ai_addrlen describe the entry's address.
        if let Some((ip, _)) = unsafe { destination(ai.ai_addr, ai.ai_addrlen) } {
            names::remember(ip, rules);
        }
        list = ai.ai_next;
    }
    Outcome::Proceed
}

/// `socket(2)`: a new socket holds no SRH, whatever its number held before (it may have been freed in a way
/// the shim does not see, such as `close_range()`); its type is remembered for `connect()`.
///
/// # Safety
/// The caller upholds `socket(2)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    let real = real_fn!(real::SOCKET, SocketFn);
    // SAFETY: the caller's arguments, unchanged.
    let fd = unsafe { real(domain, ty, protocol) };
    if fd >= 0 {
        fds::created(fd, domain, ty);
    }
    fd
}

/// `close(2)`: the number is free again, so whatever the shim knew about it is forgotten.
///
/// # Safety
/// The caller upholds `close(2)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    let real = real_fn!(real::CLOSE, CloseFn);
    // Before the real close: once it returns, another thread may get this number for a new socket or file.
    fds::forget(fd);
    log::closed(fd);
    // SAFETY: the caller's argument, unchanged.
    unsafe { real(fd) }
}

/// `dup(2)`: the new number refers to the same socket, and to the same SRH.
///
/// # Safety
/// The caller upholds `dup(2)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    let real = real_fn!(real::DUP, DupFn);
    // SAFETY: the caller's argument, unchanged.
    let new = unsafe { real(fd) };
    if new >= 0 {
        fds::copy(fd, new);
    }
    new
}

/// Before `newfd` is replaced by a copy of `oldfd`: forget what `newfd` was (a failed call then only
/// costs a log that was on `newfd`, never a line written into the program's file).
fn before_replace(oldfd: c_int, newfd: c_int) {
    if oldfd != newfd {
        fds::forget(newfd);
        log::closed(newfd);
    }
}

/// `dup2(2)`: `newfd` is closed and becomes a copy of `oldfd`.
///
/// # Safety
/// The caller upholds `dup2(2)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn dup2(oldfd: c_int, newfd: c_int) -> c_int {
    let real = real_fn!(real::DUP2, Dup2Fn);
    before_replace(oldfd, newfd);
    // SAFETY: the caller's arguments, unchanged.
    let rc = unsafe { real(oldfd, newfd) };
    if rc >= 0 {
        fds::copy(oldfd, newfd);
    }
    rc
}

/// `dup3(2)`: as [`dup2`], with flags.
///
/// # Safety
/// The caller upholds `dup3(2)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn dup3(oldfd: c_int, newfd: c_int, flags: c_int) -> c_int {
    let real = real_fn!(real::DUP3, Dup3Fn);
    before_replace(oldfd, newfd);
    // SAFETY: the caller's arguments, unchanged.
    let rc = unsafe { real(oldfd, newfd, flags) };
    if rc >= 0 {
        fds::copy(oldfd, newfd);
    }
    rc
}
