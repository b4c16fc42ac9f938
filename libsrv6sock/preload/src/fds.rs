//! What the shim knows of each descriptor: whether it holds an SRH the shim put there itself, whether the
//! program set a routing header itself (`setsockopt(IPV6_RTHDR)`, seen by the hook), whether it is a TCP or
//! UDP socket (which spares `connect()` a `getsockopt(SO_TYPE)`), and whether a TCP `connect()` already went
//! out on it (its SRH is then never changed again: the non-blocking "connect until EISCONN" idiom calls
//! `connect()` on a connecting socket).
//!
//! One byte per descriptor, for every descriptor number: the first 65 536 in a static page, the others in
//! pages of 65 536 mapped with `mmap` when a descriptor in their range is first marked (never unmapped),
//! all updated with atomics only: the hooks may run in signal handlers and forked children, where neither a
//! lock nor `malloc` is safe. It follows the descriptor number: reset by `socket()` and `close()`, copied by
//! `dup()`/`dup2()`/`dup3()`, so a number reused by a new socket never inherits it, even after a close the
//! shim does not see (`close_range()`). Not followed: copies made by `fcntl(F_DUPFD)` (variadic, not
//! hooked) and descriptors received or inherited; their byte is clear, so an SRH on them counts as the
//! program's and is left alone, and their type is asked of the kernel.
//!
//! A `vfork()` child shares this memory with its parent while the parent waits: its `close()`/`dup2()`
//! before `exec` must not change the parent's bytes. Changes are made only by the process that owns the
//! memory: the pid recorded by the constructor and, through `pthread_atfork`, by each `fork()` child
//! (which has its own copy); a `vfork()` or `CLONE_VM` child has another pid and runs no fork handler, so
//! its changes are skipped. This costs one `getpid()` per change.

use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU8, Ordering};

use libc::c_int;
use libsrv6sock::policy::Proto;

/// The shim put the SRH on the socket.
const OURS: u8 = 1;
/// A TCP socket made by `socket(AF_INET6, SOCK_STREAM, …)`, or found to be one.
const TCP: u8 = 2;
/// A UDP socket made by `socket(AF_INET6, SOCK_DGRAM, …)`, or found to be one.
const UDP: u8 = 4;
/// A TCP connection was started on the socket (connected or connecting).
const CONNECTING: u8 = 8;
/// The program set (or removed) the socket's routing header itself.
const PROGRAM: u8 = 16;

const PAGE_BITS: u32 = 16;
const PAGE: usize = 1 << PAGE_BITS;
/// Pages covering every non-negative `c_int`.
const PAGES: usize = (c_int::MAX as usize >> PAGE_BITS) + 1;

static FIRST: [AtomicU8; PAGE] = [const { AtomicU8::new(0) }; PAGE];
/// `PAGES_MAP[i]` (i ≥ 1): the page of descriptors `i << 16 ..`, null until first marked.
static PAGES_MAP: [AtomicPtr<AtomicU8>; PAGES] = [const { AtomicPtr::new(std::ptr::null_mut()) }; PAGES];

/// The process whose memory this is (see the module's documentation); 0 before the constructor.
static OWNER: AtomicI32 = AtomicI32::new(0);

/// Record the owner; called once by the constructor, which also registers [`forked`].
pub fn init() {
    // SAFETY: getpid has no preconditions.
    OWNER.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    // SAFETY: `forked` is a plain extern "C" function that stays loaded for the life of the process.
    unsafe { libc::pthread_atfork(None, None, Some(forked)) };
}

/// In a `fork()` child (not a `vfork()` one): the child owns its copy.
extern "C" fn forked() {
    // SAFETY: getpid has no preconditions.
    OWNER.store(unsafe { libc::getpid() }, Ordering::Relaxed);
}

/// Whether this process may change the table (false in a `vfork()` child).
pub fn owner() -> bool {
    let owner = OWNER.load(Ordering::Relaxed);
    // SAFETY: getpid has no preconditions.
    owner == 0 || owner == unsafe { libc::getpid() }
}

/// The byte of `fd`, if its page exists; with `create`, its page is mapped when missing.
fn slot(fd: c_int, create: bool) -> Option<&'static AtomicU8> {
    let fd = usize::try_from(fd).ok()?;
    let (page, index) = (fd >> PAGE_BITS, fd & (PAGE - 1));
    if page == 0 {
        return FIRST.get(index);
    }
    let entry = PAGES_MAP.get(page)?;
    let mut ptr = entry.load(Ordering::Acquire);
    if ptr.is_null() {
        if !create {
            return None;
        }
        // SAFETY: an anonymous private mapping of PAGE zero bytes (mmap is async-signal-safe, malloc is not).
        let new = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if new == libc::MAP_FAILED {
            return None;
        }
        ptr = match entry.compare_exchange(std::ptr::null_mut(), new.cast(), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => new.cast(),
            Err(other) => {
                // SAFETY: `new` is our own mapping, which nobody saw: another thread installed its page first.
                unsafe { libc::munmap(new, PAGE) };
                other
            }
        };
    }
    // SAFETY: `ptr` is a live mapping of PAGE bytes (never unmapped once installed); zeroed bytes are valid
    // AtomicU8 values, and `index < PAGE`.
    Some(unsafe { &*ptr.add(index) })
}

fn bits(fd: c_int) -> u8 {
    slot(fd, false).map_or(0, |s| s.load(Ordering::Relaxed))
}

fn set(fd: c_int, add: u8, remove: u8) {
    if !owner() {
        return;
    }
    if let Some(s) = slot(fd, add != 0) {
        let _ = s.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some((b & !remove) | add));
    }
}

/// Whether the SRH on `fd` is the shim's.
pub fn is_ours(fd: c_int) -> bool {
    bits(fd) & OURS != 0
}

/// Record that the shim put the SRH on `fd`.
pub fn set_ours(fd: c_int) {
    set(fd, OURS, 0);
}

/// The shim took its SRH off `fd`; returns whether it had put one there.
pub fn clear_ours(fd: c_int) -> bool {
    let ours = is_ours(fd);
    set(fd, 0, OURS);
    ours
}

/// Whether the program set the routing header of `fd` itself.
pub fn program_srh(fd: c_int) -> bool {
    bits(fd) & PROGRAM != 0
}

/// The program set (or removed) the routing header of `fd`: the shim leaves it alone from now on.
pub fn set_program_srh(fd: c_int) {
    set(fd, PROGRAM, OURS);
}

/// Whether a TCP connection was started on `fd`.
pub fn connecting(fd: c_int) -> bool {
    bits(fd) & CONNECTING != 0
}

/// A TCP connection was started on `fd` (`started`), or its start failed at once (the socket may connect
/// again).
pub fn set_connecting(fd: c_int, started: bool) {
    if started {
        set(fd, CONNECTING, 0);
    } else {
        set(fd, 0, CONNECTING);
    }
}

/// Forget everything about `fd` (closed, or a new descriptor).
pub fn forget(fd: c_int) {
    if owner() {
        if let Some(s) = slot(fd, false) {
            s.store(0, Ordering::Relaxed);
        }
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
    if owner() {
        if let Some(s) = slot(fd, kind != 0) {
            s.store(kind, Ordering::Relaxed);
        }
    }
}

/// TCP or UDP if known (from `socket()` or [`set_proto`]); `None`: ask the kernel.
pub fn proto(fd: c_int) -> Option<Proto> {
    match bits(fd) & (TCP | UDP) {
        TCP => Some(Proto::Tcp),
        UDP => Some(Proto::Udp),
        _ => None,
    }
}

/// The kernel said what `fd` is.
pub fn set_proto(fd: c_int, proto: Proto) {
    set(fd, if proto == Proto::Tcp { TCP } else { UDP }, 0);
}

/// `to` now refers to the socket of `from` (after a dup): the shim knows of it what it knows of `from`.
pub fn copy(from: c_int, to: c_int) {
    if from == to || !owner() {
        return;
    }
    let b = bits(from);
    match slot(to, b != 0) {
        Some(t) => t.store(b, Ordering::Relaxed),
        None => forget(to),
    }
}
