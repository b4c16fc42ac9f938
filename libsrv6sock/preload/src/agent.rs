//! Asking the resolver agent (`srv6run --dns-paths`) for the paths of a name and the addresses libc returned
//! for it, from the `getaddrinfo()` hook, and again from `connect()` when the path of the address expired.
//!
//! One Unix stream connection per lookup, non-blocking, every wait bounded by one deadline
//! (`SRV6_AGENT_TIMEOUT_MS`): the program never waits longer than that for the agent, whatever the agent
//! does. Stack buffers only; the real `socket`/`connect`/`close` from [`real`]. What the agent answers is
//! checked by [`AgentReply`] before anything is learned from it.

use std::net::Ipv6Addr;

use libc::{addrinfo, c_char, c_int, sockaddr, socklen_t};
use libsrv6sock::policy::FailMode;
use libsrv6sock::wire::agent::{self, AgentReply, MAX_ADDRS, MAX_REPLY, MAX_REQUEST};

use crate::learned::Kind;
use crate::log::Failure;
use crate::state::{AgentAddr, Shim};
use crate::{learned, log, real};

/// How long connections to a name's addresses are refused after the agent failed, with `SRV6_FAIL=closed`.
const REFUSE_MS: u64 = 10_000;

type SocketFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type ConnectFn = unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int;
type CloseFn = unsafe extern "C" fn(c_int) -> c_int;

/// A descriptor closed with the real `close()` when dropped.
struct Fd(c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        let p = real::CLOSE.get();
        if !p.is_null() {
            // SAFETY: `p` is libc's close(); the descriptor is ours.
            unsafe { std::mem::transmute::<*mut libc::c_void, CloseFn>(p)(self.0) };
        }
    }
}

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Ask for `name` and `addrs`; the reply's length in `reply`.
fn ask(to: &AgentAddr, name: &[u8], addrs: &[Ipv6Addr], reply: &mut [u8; MAX_REPLY]) -> Result<usize, Failure> {
    let deadline = learned::now_ms().saturating_add(to.timeout_ms);
    let mut req = [0u8; MAX_REQUEST];
    let req_len = agent::emit_request(name, addrs, &mut req).map_err(|_| Failure::Garbage(0))?;
    let (sock, conn) = (real::SOCKET.get(), real::CONNECT.get());
    if sock.is_null() || conn.is_null() {
        return Err(Failure::Unreachable(libc::ENOSYS));
    }
    // SAFETY: libc's socket(), with its own signature.
    let fd = unsafe {
        std::mem::transmute::<*mut libc::c_void, SocketFn>(sock)(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(Failure::Unreachable(errno()));
    }
    let fd = Fd(fd);
    // SAFETY: libc's connect(); `to.addr` is a sockaddr_un of `to.len` bytes built by the constructor.
    let rc = unsafe {
        std::mem::transmute::<*mut libc::c_void, ConnectFn>(conn)(
            fd.0,
            (&to.addr as *const libc::sockaddr_un).cast(),
            to.len,
        )
    };
    if rc < 0 {
        return Err(Failure::Unreachable(errno()));
    }
    // SAFETY: `req` holds `req_len` bytes; MSG_NOSIGNAL: a dead agent must not raise SIGPIPE in the host.
    let sent = unsafe { libc::send(fd.0, req.as_ptr().cast(), req_len, libc::MSG_NOSIGNAL) };
    if sent != req_len as isize {
        return Err(Failure::Unreachable(if sent < 0 { errno() } else { libc::EMSGSIZE }));
    }
    // SAFETY: plain shutdown of our socket's sending side: the end of the request.
    unsafe { libc::shutdown(fd.0, libc::SHUT_WR) };
    let mut len = 0;
    loop {
        let left = deadline.saturating_sub(learned::now_ms());
        if left == 0 {
            return Err(Failure::Timeout);
        }
        let mut pfd = libc::pollfd { fd: fd.0, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.min(i32::MAX as u64) as c_int) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return Err(Failure::Timeout);
        }
        let room = &mut reply[len..];
        if room.is_empty() {
            return Err(Failure::Garbage(MAX_REPLY));
        }
        // SAFETY: `room` is writable for its length.
        let got = unsafe { libc::recv(fd.0, room.as_mut_ptr().cast(), room.len(), 0) };
        match got {
            0 => return Ok(len),
            n if n > 0 => len += n as usize,
            _ if matches!(errno(), libc::EINTR | libc::EAGAIN) => {}
            _ => return Err(Failure::Unreachable(errno())),
        }
    }
}

/// The IPv6 addresses (not v4-mapped) of a getaddrinfo list, at most [`MAX_ADDRS`], into `out`; returns how
/// many, and how many more there were.
///
/// # Safety
/// `list` is null or a list returned by getaddrinfo.
unsafe fn v6_addrs(mut list: *const addrinfo, out: &mut [Ipv6Addr; MAX_ADDRS]) -> (usize, usize) {
    let (mut n, mut more) = (0, 0);
    while !list.is_null() {
        // SAFETY: `list` walks getaddrinfo's own linked list.
        let ai = unsafe { &*list };
        if ai.ai_family == libc::AF_INET6
            && !ai.ai_addr.is_null()
            && ai.ai_addrlen as usize >= std::mem::size_of::<libc::sockaddr_in6>()
        {
            // SAFETY: an AF_INET6 entry's ai_addr points to a sockaddr_in6.
            let sin6 = unsafe { std::ptr::read_unaligned(ai.ai_addr.cast::<libc::sockaddr_in6>()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            if ip.to_ipv4_mapped().is_none() && !out[..n].contains(&ip) {
                if n < out.len() {
                    out[n] = ip;
                    n += 1;
                } else {
                    more += 1;
                }
            }
        }
        list = ai.ai_next;
    }
    (n, more)
}

/// Ask the agent about `name` and `addrs` and learn the answer; returns how many addresses got a path.
fn ask_and_learn(to: &AgentAddr, name: &[u8], addrs: &[Ipv6Addr]) -> Result<usize, Failure> {
    let mut buf = [0u8; MAX_REPLY];
    let len = ask(to, name, addrs, &mut buf)?;
    let reply = AgentReply::new_checked(&buf[..len]).map_err(|e| Failure::Garbage(offset_of(&e)))?;
    if reply.status() != agent::STATUS_OK {
        return Err(Failure::LookupFailed);
    }
    let (mut paths, mut evicted) = (0, 0);
    for e in reply.entries() {
        let ttl_ms = u64::from(e.ttl).saturating_mul(1000);
        let kind = match (e.srh.is_empty(), e.flags & agent::FLAG_MALFORMED != 0) {
            (false, _) => Kind::Path,
            (true, true) => Kind::Malformed,
            (true, false) => Kind::NoPath,
        };
        paths += usize::from(kind == Kind::Path);
        evicted += usize::from(learned::store(name, e.addr, ttl_ms, kind, e.srh));
    }
    if evicted > 0 {
        log::paths_overflow(evicted, learned::capacity());
    }
    Ok(paths)
}

/// After a successful `getaddrinfo(node)`: ask the agent for `node`'s paths for the IPv6 addresses libc
/// returned and learn them. On failure, log; with the closed failure policy, connections to these addresses
/// from `node` are refused for a while.
///
/// # Safety
/// `node` is a C string and `list` a list returned by getaddrinfo.
pub unsafe fn learn(shim: &Shim, node: *const c_char, list: *const addrinfo) {
    let Some(to) = &shim.agent else { return };
    // SAFETY: `node` is the caller's NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(node) }.to_bytes();
    // Numeric hosts and names without IPv6 answers have nothing to ask.
    let Ok(text) = std::str::from_utf8(name) else { return };
    if text.parse::<std::net::IpAddr>().is_ok() {
        return;
    }
    let mut addrs = [Ipv6Addr::UNSPECIFIED; MAX_ADDRS];
    // SAFETY: forwarded from the caller.
    let (count, more) = unsafe { v6_addrs(list, &mut addrs) };
    if count == 0 {
        return;
    }
    let addrs = &addrs[..count];
    match ask_and_learn(to, name, addrs) {
        Ok(paths) => {
            learned::resolved(name, addrs);
            log::agent_answer(text, paths, more);
        }
        Err(failure) => {
            let closed = shim.fail() == FailMode::Closed;
            if closed {
                for a in addrs {
                    learned::store(name, *a, REFUSE_MS, Kind::Refuse, &[]);
                }
                learned::resolved(name, addrs);
            }
            log::agent_failure(text, failure, closed);
        }
    }
}

/// From `connect()`, when the path of `addr` from `name` expired: ask the agent again (it looked the name
/// up again before expiry while it was in use, so it answers at once) and learn the answer.
pub fn refresh(shim: &Shim, name: &[u8], addr: Ipv6Addr) -> Result<(), Failure> {
    let Some(to) = &shim.agent else { return Err(Failure::Unreachable(libc::ENOENT)) };
    let text = std::str::from_utf8(name).unwrap_or("?");
    match ask_and_learn(to, name, &[addr]) {
        Ok(paths) => {
            log::agent_answer(text, paths, 0);
            Ok(())
        }
        Err(failure) => {
            log::agent_failure(text, failure, shim.fail() == FailMode::Closed);
            Err(failure)
        }
    }
}

fn offset_of(e: &agent::AgentError) -> usize {
    match e {
        agent::AgentError::Truncated { offset, .. }
        | agent::AgentError::TrailingBytes { offset, .. }
        | agent::AgentError::Field { offset, .. }
        | agent::AgentError::Srh { offset, .. } => *offset,
        agent::AgentError::BufferTooSmall { .. } => 0,
    }
}
