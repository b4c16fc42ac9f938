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
use libsrv6sock::wire::agent::MAX_NAME;
use libsrv6sock::wire::srh::{self, Srh};

use crate::learned::{self, Learned};
use crate::log::{self, Action, Missing};
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
    let proto = match (rc, ty) {
        (0, libc::SOCK_STREAM) => Proto::Tcp,
        (0, libc::SOCK_DGRAM) => Proto::Udp,
        _ => return None,
    };
    fds::set_proto(std::os::fd::AsRawFd::as_raw_fd(&fd), proto);
    Some(proto)
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
    // A connected or connecting TCP socket keeps its SRH: connect() called again (the non-blocking "until
    // EISCONN" idiom) gets the kernel's answer, whatever the shim would decide now.
    if proto == Proto::Tcp && fds::connecting(fd) {
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
    let c = Call { name: call, sock, proto, dst, port };
    let found = lookup(shim, proto, dst, port);
    let mut buf = [0u8; srh::MAX_LEN];
    // Precedence: --segs (SRV6_SEGS), then a path DNS gave for this address (TCP), then the policy's rules.
    if proto == Proto::Tcp && found.is_none_or(|(_, r)| r.origin != ENV_SEGS) {
        match dns_path(shim, dst, &mut buf) {
            Ok(Some(len)) => return attach(shim, &c, &mut buf, len, None),
            Ok(None) => {}
            Err(missing) => {
                let errno = missing_errno(missing);
                if shim.fail() == FailMode::Closed {
                    log::dns_decision(call, proto, dst, port, &[], Action::Refused(errno), Some(missing));
                    return Outcome::Fail(errno);
                }
                log::dns_decision(call, proto, dst, port, &[], Action::FailedOpen(errno), Some(missing));
            }
        }
    }
    let Some((index, rule)) = found else {
        // A UDP socket sending elsewhere than where the shim steered its last datagram: take the SRH off
        // (never a TCP socket's: it is not connected yet, so the SRH is the shim's from a failed attempt).
        if proto == Proto::Udp && fds::clear_ours(fd) {
            let _ = attach::clear_srh(sock);
        }
        log::decision(call, proto, dst, port, None, Action::NoMatch);
        return Outcome::Proceed;
    };
    let template = &shim.srhs[index];
    buf[..template.len()].copy_from_slice(template);
    attach(shim, &c, &mut buf, template.len(), Some(rule))
}

/// The path DNS gives `dst` for the name this thread resolved it from (see [`learned`]), its SRH into
/// `buf`: `Ok(Some(len))`; `Ok(None)`: no path from DNS (the policy decides); `Err`: there should be one
/// and there is none. An expired path is asked again from the agent.
fn dns_path(shim: &Shim, dst: Ipv6Addr, buf: &mut [u8; srh::MAX_LEN]) -> Result<Option<usize>, Missing> {
    let name = learned::name_for(dst);
    let mut name_buf = [0u8; MAX_NAME];
    match learned::get(name, dst, buf, &mut name_buf) {
        Learned::Path(len) => Ok(Some(len)),
        Learned::NoPath => Ok(None),
        Learned::Malformed => Err(Missing::MalformedRecord),
        Learned::Refuse => Err(Missing::AgentFailed),
        // This thread resolved the address from a name through the agent, and its entry is gone.
        Learned::Unknown if name.is_some() => Err(Missing::Evicted),
        Learned::Unknown => Ok(None),
        Learned::Expired(len) => {
            let name = &name_buf[..len];
            agent::refresh(shim, name, dst).map_err(|_| Missing::Lapsed)?;
            match learned::get(Some(learned::name_hash(name)), dst, buf, &mut [0u8; MAX_NAME]) {
                Learned::Path(len) => Ok(Some(len)),
                Learned::NoPath => Ok(None),
                Learned::Malformed => Err(Missing::MalformedRecord),
                Learned::Refuse | Learned::Unknown | Learned::Expired(_) => Err(Missing::Lapsed),
            }
        }
    }
}

/// The errno of a connection refused for a missing path from DNS under `SRV6_FAIL=closed`.
fn missing_errno(missing: Missing) -> c_int {
    match missing {
        Missing::AgentFailed | Missing::Lapsed => libc::EHOSTUNREACH,
        Missing::Evicted => libc::ENOBUFS,
        Missing::MalformedRecord => libc::EPROTO,
    }
}

/// The call being steered: which hook, on which socket, towards where.
struct Call<'a> {
    name: &'static str,
    sock: BorrowedFd<'a>,
    proto: Proto,
    dst: Ipv6Addr,
    port: u16,
}

/// Attach the SRH template in `buf[..len]` (segment 0 set to `dst` here) unless the program put a routing
/// header on the socket itself; `rule` is the policy rule it comes from, `None` for a path from DNS.
fn attach(shim: &Shim, c: &Call<'_>, buf: &mut [u8; srh::MAX_LEN], len: usize, rule: Option<&Rule>) -> Outcome {
    let (call, sock, proto, dst, port) = (c.name, c.sock, c.proto, c.dst, c.port);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let say = |srh: &[u8], action| match rule {
        Some(r) => log::decision(call, proto, dst, port, Some(r), action),
        None => log::dns_decision(call, proto, dst, port, srh, action, None),
    };
    // Whether the program set a routing header: seen by the setsockopt() hook, or on a socket the shim did
    // not see made, in its first bytes (the kernel copies what fits).
    let mut current = [0u8; 8];
    if fds::program_srh(fd) || (!fds::is_ours(fd) && attach::get_srh(sock, &mut current).is_ok_and(|n| n > 0)) {
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
type SetsockoptFn = unsafe extern "C" fn(c_int, c_int, c_int, *const libc::c_void, socklen_t) -> c_int;
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
        Outcome::Proceed => {
            // SAFETY: the caller's arguments, unchanged.
            let rc = unsafe { real(fd, addr, len) };
            started(fd, rc);
            rc
        }
    }
}

/// After a connect (or a TCP Fast Open send) on `fd` returned `rc`: a TCP socket whose connection started
/// keeps its SRH from now on; one whose attempt failed at once may try again.
fn started(fd: c_int, rc: c_int) {
    if fds::proto(fd) != Some(Proto::Tcp) {
        return;
    }
    // SAFETY: __errno_location returns this thread's errno slot; read only, kept for the caller.
    let errno = unsafe { *libc::__errno_location() };
    let started = rc >= 0 || matches!(errno, libc::EINPROGRESS | libc::EALREADY | libc::EISCONN | libc::EINTR);
    fds::set_connecting(fd, started);
    set_errno(errno);
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
    let rc = unsafe { real(fd, buf, n, flags, addr, len) };
    if flags & libc::MSG_FASTOPEN != 0 {
        started(fd, if rc < 0 { -1 } else { 0 });
    }
    rc
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
    let rc = unsafe { real(fd, msg, flags) };
    if flags & libc::MSG_FASTOPEN != 0 {
        started(fd, if rc < 0 { -1 } else { 0 });
    }
    rc
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

/// `setsockopt(2)`: a routing header the program sets (or removes) itself is the program's: the shim leaves
/// that socket's SRH alone from then on. The shim's own calls (inside a hook) pass through unseen.
///
/// # Safety
/// The caller upholds `setsockopt(2)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const libc::c_void,
    len: socklen_t,
) -> c_int {
    let real = real_fn!(real::SETSOCKOPT, SetsockoptFn);
    // SAFETY: the caller's arguments, unchanged.
    let rc = unsafe { real(fd, level, name, value, len) };
    if rc == 0 && level == libc::IPPROTO_IPV6 && name == libc::IPV6_RTHDR && !BUSY.with(Cell::get) {
        fds::set_program_srh(fd);
    }
    rc
}
