//! Writes that cannot hurt the host program: no `std::io` (which panics on a closed or full standard
//! error), no SIGPIPE (a broken pipe would kill a program that never asked for our output), errno kept.
//!
//! Every error means "message lost"; nothing here fails a call of the host.

use libc::c_int;

/// Write all of `bytes` to `fd` with `write(2)`; returns whether everything was written.
///
/// SIGPIPE is blocked in this thread for the duration, and a SIGPIPE this write raised is consumed before
/// the mask is restored; one that was already pending stays pending for the program. Async-signal-safe.
pub fn write_all(fd: c_int, mut bytes: &[u8]) -> bool {
    // SAFETY: __errno_location returns this thread's errno slot.
    let saved_errno = unsafe { *libc::__errno_location() };
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    let mut pipe: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the sets are valid, writable sigset_t values of this stack frame.
    let blocked = unsafe {
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut old) == 0
    };
    let pending_before = blocked && sigpipe_pending();
    let mut complete = true;
    let mut broke_pipe = false;
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live slice; write reads at most its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = bytes.get(n as usize..).unwrap_or_default();
            continue;
        }
        // SAFETY: as above.
        let errno = unsafe { *libc::__errno_location() };
        if n < 0 && errno == libc::EINTR {
            continue;
        }
        broke_pipe = n < 0 && errno == libc::EPIPE;
        complete = false;
        break;
    }
    if blocked {
        if broke_pipe && !pending_before {
            let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `pipe` holds SIGPIPE, which is blocked: sigtimedwait takes it off the pending set
            // without delivering it (a zero timeout never sleeps).
            unsafe { libc::sigtimedwait(&pipe, std::ptr::null_mut(), &zero) };
        }
        // SAFETY: `old` is the mask pthread_sigmask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
    complete
}

fn sigpipe_pending() -> bool {
    // SAFETY: sigset_t is plain data; sigpending fills it.
    let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `pending` is a valid, writable sigset_t.
    unsafe { libc::sigpending(&mut pending) == 0 && libc::sigismember(&pending, libc::SIGPIPE) == 1 }
}

/// Whether `fd` is an open descriptor.
pub fn is_open(fd: c_int) -> bool {
    file_id(fd).is_some()
}

/// Device and inode of the file open on `fd`, `None` if it is not open; errno is kept. Async-signal-safe.
pub fn file_id(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: __errno_location returns this thread's errno slot.
    let saved_errno = unsafe { *libc::__errno_location() };
    // SAFETY: `stat` is plain data that fstat fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
    ok.then_some((st.st_dev, st.st_ino))
}

/// Say `message` (one line) on standard error if it is open; for the constructor only, before the program
/// runs and could have put a file of its own on descriptor 2.
pub fn say(message: &str) {
    if is_open(libc::STDERR_FILENO) {
        let line = format!("libsrv6sock: {message}\n");
        write_all(libc::STDERR_FILENO, line.as_bytes());
    }
}
