//! What the shim knows of each descriptor: whether it holds an SRH the shim put there itself (as opposed to
//! one the program set), and whether it is a TCP or UDP socket of `socket(AF_INET6, …)`, which spares
//! `connect()` a `getsockopt(SO_TYPE)`.
//!
//! One byte per descriptor below 65536, updated with atomics only (the hooks may run in signal handlers and
//! forked children). It follows the descriptor number: reset by `socket()` and `close()`, copied by
//! `dup()`/`dup2()`/`dup3()`, so a number reused by a new socket never inherits it, even after a close the
//! shim does not see (`close_range()`). Not followed: copies made by `fcntl(F_DUPFD)` (variadic, not
//! hooked) and descriptors received or inherited; their byte is clear, so an SRH on them counts as the
//! program's and is left alone, and their type is asked of the kernel.

use std::sync::atomic::{AtomicU8, Ordering};

use libc::c_int;
use libsrv6sock::policy::Proto;

/// The shim put the SRH on the socket.
const OURS: u8 = 1;
/// A TCP socket made by `socket(AF_INET6, SOCK_STREAM, …)`.
const TCP: u8 = 2;
/// A UDP socket made by `socket(AF_INET6, SOCK_DGRAM, …)`.
const UDP: u8 = 4;

static KNOWN: [AtomicU8; 65536] = [const { AtomicU8::new(0) }; 65536];

fn slot(fd: c_int) -> Option<&'static AtomicU8> {
    KNOWN.get(usize::try_from(fd).ok()?)
}

/// Whether the SRH on `fd` is the shim's.
pub fn is_ours(fd: c_int) -> bool {
    slot(fd).is_some_and(|s| s.load(Ordering::Relaxed) & OURS != 0)
}

/// Record that the shim put the SRH on `fd`.
pub fn set_ours(fd: c_int) {
    if let Some(s) = slot(fd) {
        s.fetch_or(OURS, Ordering::Relaxed);
    }
}

/// The shim took its SRH off `fd`; returns whether it had put one there.
pub fn clear_ours(fd: c_int) -> bool {
    slot(fd).is_some_and(|s| s.fetch_and(!OURS, Ordering::Relaxed) & OURS != 0)
}

/// Forget everything about `fd` (closed, or a new descriptor).
pub fn forget(fd: c_int) {
    if let Some(s) = slot(fd) {
        s.store(0, Ordering::Relaxed);
    }
}

/// `fd` was just made by `socket(domain, ty, …)`.
pub fn created(fd: c_int, domain: c_int, ty: c_int) {
    // SOCK_NONBLOCK and SOCK_CLOEXEC share the type argument.
    let kind = match (domain, ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)) {
        (libc::AF_INET6, libc::SOCK_STREAM) => TCP,
        (libc::AF_INET6, libc::SOCK_DGRAM) => UDP,
        _ => 0,
    };
    if let Some(s) = slot(fd) {
        s.store(kind, Ordering::Relaxed);
    }
}

/// TCP or UDP if `fd` was made by a `socket()` the shim saw; `None`: ask the kernel.
pub fn proto(fd: c_int) -> Option<Proto> {
    match slot(fd)?.load(Ordering::Relaxed) & (TCP | UDP) {
        TCP => Some(Proto::Tcp),
        UDP => Some(Proto::Udp),
        _ => None,
    }
}

/// `to` now refers to the socket of `from` (after a dup): the shim knows of it what it knows of `from`.
pub fn copy(from: c_int, to: c_int) {
    if from == to {
        return;
    }
    if let (Some(f), Some(t)) = (slot(from), slot(to)) {
        t.store(f.load(Ordering::Relaxed), Ordering::Relaxed);
    } else {
        forget(to);
    }
}
