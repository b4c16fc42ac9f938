//! Replying along the return path (`SRV6_REPLY`, `srv6run --reply-path`): an unmodified server's listening
//! sockets latch the SYN's SRH, and each accepted connection gets the SRH its SYN's return-path TLV asks
//! for, so that replies visit the return waypoints (off-path proxies, routers' End SIDs).
//!
//! * `listen()`: `IPV6_RECVRTHDR` (the kernel keeps the SYN's routing header for the accepted socket) and
//!   `TCP_MAXSEG` = the policy's MSS: the kernel does not lower the MSS of an accepted socket when an SRH
//!   is set on it after the handshake, so full-size segments would exceed the MTU and the flow would stall
//!   (ARCHITECTURE §8). The clamp leaves room for the longest reply SRH the policy accepts.
//! * `accept()`/`accept4()`: read the SYN's SRH; no SRH or no return-path TLV: the socket is left alone.
//!   A TLV that is malformed, names a waypoint that no reply may visit or that the operator did not allow,
//!   or is longer than the clamp leaves room for, is refused like a bad forward SRH at a proxy: the
//!   connection is reset, the call fails with `ECONNABORTED` (servers retry), the refusal is logged and
//!   counted. Otherwise the reply SRH `[client, waypoints…]` is set with `IPV6_RTHDR`.
//!
//! Same rules as every hook: nothing allocated (buffers on the stack), no lock, the real functions through
//! `dlsym(RTLD_NEXT)`, panics caught.

use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use libc::{c_int, sockaddr, socklen_t};
use libsrv6sock::attach;
use libsrv6sock::reply::ReplyPolicy;
use libsrv6sock::wire::reply::{ReturnPath, MAX_REPLY_LEN};

use crate::hooks::{guarded, real_fn, set_errno, Outcome};
use crate::log::{self, Reply};
use crate::state::{self, State};
use crate::{fds, real};

/// Connections whose return path was refused, in this process.
static REFUSED: AtomicU64 = AtomicU64::new(0);

fn reply_policy() -> Option<&'static ReplyPolicy> {
    match state::get()? {
        State::Ready(shim) => shim.reply.as_ref(),
        State::Broken { .. } => None,
    }
}

fn setsockopt_int(fd: BorrowedFd<'_>, level: c_int, opt: c_int, value: c_int) {
    // SAFETY: `value` is a live c_int whose size is passed; a failure only leaves the option unset.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&value as *const c_int).cast(),
            std::mem::size_of::<c_int>() as socklen_t,
        )
    };
}

/// Whether `fd` is an IPv6 TCP socket, and its peer when connected.
fn ipv6_stream(fd: BorrowedFd<'_>, peer: bool) -> Option<Option<(Ipv6Addr, u16)>> {
    let mut ty: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `ty`.
    let rc = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE, (&mut ty as *mut c_int).cast(), &mut len)
    };
    if rc != 0 || ty != libc::SOCK_STREAM {
        return None;
    }
    // SAFETY: a zeroed sockaddr_in6 is valid; the kernel fills at most `len` bytes of it.
    let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in6>() as socklen_t;
    let sa = (&mut sin6 as *mut libc::sockaddr_in6).cast::<sockaddr>();
    // SAFETY: `sa` points to `len` writable bytes.
    let rc = unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), sa, &mut len)
        } else {
            libc::getsockname(fd.as_raw_fd(), sa, &mut len)
        }
    };
    if rc != 0 || sin6.sin6_family != libc::AF_INET6 as libc::sa_family_t {
        return None;
    }
    let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
    // A v4-mapped peer talks IPv4: no SRH.
    Some(peer.then_some((ip, u16::from_be(sin6.sin6_port))).filter(|(ip, _)| ip.to_ipv4_mapped().is_none()))
}

/// On a listening socket: latch SYNs' SRHs and clamp the MSS.
fn prepare_listener(fd: c_int) -> Outcome {
    let Some(policy) = reply_policy() else { return Outcome::Proceed };
    if fd < 0 {
        return Outcome::Proceed;
    }
    // SAFETY: `fd` is the program's open descriptor for the duration of its call.
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    if ipv6_stream(sock, false).is_none() {
        return Outcome::Proceed;
    }
    let _ = attach::enable_syn_srh(sock);
    setsockopt_int(sock, libc::IPPROTO_TCP, libc::TCP_MAXSEG, policy.mss as c_int);
    Outcome::Proceed
}

/// On an accepted socket: install the reply SRH, or refuse (reset) the connection.
fn install(fd: c_int) -> Outcome {
    let Some(policy) = reply_policy() else { return Outcome::Proceed };
    // SAFETY: `fd` was just returned by accept() and is not yet known to the program.
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    let Some(Some((peer, port))) = ipv6_stream(sock, true) else { return Outcome::Proceed };
    let mut control = [0u8; libsrv6sock::wire::srh::MAX_LEN + 128];
    let Ok(Some(range)) = attach::syn_srh(sock, &mut control) else { return Outcome::Proceed };
    let checked = ReturnPath::find(&control[range]).map_err(Refusal::Wire).and_then(|rp| match rp {
        Some(rp) => policy.check(&rp).map(|()| Some(rp)).map_err(Refusal::Policy),
        None => Ok(None),
    });
    let path = match checked {
        Ok(Some(path)) => path,
        Ok(None) => return Outcome::Proceed,
        Err(r) => {
            let refused = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
            log::reply(peer, port, Reply::Refused { reason: &r, refused });
            // SO_LINGER 0: the close below sends a reset.
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: `linger` is a live struct whose size is passed.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as socklen_t,
                )
            };
            return Outcome::Fail(libc::ECONNABORTED);
        }
    };
    let mut srh = [0u8; MAX_REPLY_LEN];
    let len = match path.emit_srh(path.len(), peer, &mut srh) {
        Ok(0) | Err(_) => return Outcome::Proceed,
        Ok(n) => n,
    };
    match attach::set_srh(sock, &srh[..len]) {
        Ok(()) => {
            fds::set_ours(fd);
            log::reply(peer, port, Reply::Installed(&srh[..len]));
        }
        Err(e) => log::reply(peer, port, Reply::Failed(e.raw_os_error().unwrap_or(libc::EINVAL))),
    }
    Outcome::Proceed
}

/// Why a return path was refused.
enum Refusal {
    Wire(libsrv6sock::wire::Error),
    Policy(libsrv6sock::reply::ReplyRefusal),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Wire(e) => write!(f, "{e}"),
            Refusal::Policy(e) => write!(f, "{e}"),
        }
    }
}

type ListenFn = unsafe extern "C" fn(c_int, c_int) -> c_int;
type AcceptFn = unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
type Accept4Fn = unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int;

/// After a real `accept()`: install the reply SRH on `fd`, or reset it and fail the call.
fn after_accept(fd: c_int) -> c_int {
    if fd < 0 {
        return fd;
    }
    fds::forget(fd);
    match guarded(|| install(fd)) {
        Outcome::Proceed => fd,
        Outcome::Fail(e) => {
            let close = real_fn!(real::CLOSE, unsafe extern "C" fn(c_int) -> c_int);
            // SAFETY: closing the descriptor accept() just created, which the program never saw.
            unsafe { close(fd) };
            set_errno(e);
            -1
        }
    }
}

/// `listen(2)`: with `SRV6_REPLY`, latch SYNs' SRHs and clamp the MSS first.
///
/// # Safety
/// The caller upholds `listen(2)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let real = real_fn!(real::LISTEN, ListenFn);
    guarded(|| prepare_listener(fd));
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real(fd, backlog) }
}

/// `accept(2)`: with `SRV6_REPLY`, the new connection replies along its SYN's return path.
///
/// # Safety
/// The caller upholds `accept(2)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let real = real_fn!(real::ACCEPT, AcceptFn);
    // SAFETY: the caller's arguments, unchanged.
    after_accept(unsafe { real(fd, addr, len) })
}

/// `accept4(2)`: as [`accept`].
///
/// # Safety
/// The caller upholds `accept4(2)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    let real = real_fn!(real::ACCEPT4, Accept4Fn);
    // SAFETY: the caller's arguments, unchanged.
    after_accept(unsafe { real(fd, addr, len, flags) })
}
