//! Which descriptors hold an SRH the shim put there itself (as opposed to one the program set).
//!
//! One bit per descriptor below 65536, updated with atomics only (the hooks may run in signal handlers and
//! forked children). The bit follows the descriptor number: cleared by `socket()` and `close()`, copied by
//! `dup()`/`dup2()`/`dup3()`, so a number reused by a new socket never inherits it, even after a close the
//! shim does not see (`close_range()`). Not followed: copies made by `fcntl(F_DUPFD)` (variadic, not
//! hooked) and descriptors received or inherited; their bit is clear, so an SRH on them counts as the
//! program's and is left alone.

use std::sync::atomic::{AtomicU64, Ordering};

use libc::c_int;

static ATTACHED: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];

fn bit(fd: c_int) -> Option<(&'static AtomicU64, u64)> {
    let fd = usize::try_from(fd).ok()?;
    Some((ATTACHED.get(fd / 64)?, 1 << (fd % 64)))
}

/// Whether the SRH on `fd` is the shim's.
pub fn is_ours(fd: c_int) -> bool {
    bit(fd).is_some_and(|(word, bit)| word.load(Ordering::Relaxed) & bit != 0)
}

/// Record that the shim put the SRH on `fd`.
pub fn set_ours(fd: c_int) {
    if let Some((word, bit)) = bit(fd) {
        word.fetch_or(bit, Ordering::Relaxed);
    }
}

/// Forget `fd` (closed, or the shim took its SRH off); returns whether the shim's SRH was on it.
pub fn forget(fd: c_int) -> bool {
    bit(fd).is_some_and(|(word, bit)| word.fetch_and(!bit, Ordering::Relaxed) & bit != 0)
}

/// `to` now refers to the socket of `from` (after a dup): it holds the shim's SRH exactly when `from` does.
pub fn copy(from: c_int, to: c_int) {
    if from == to {
        return;
    }
    if is_ours(from) {
        set_ours(to);
    } else {
        forget(to);
    }
}
