//! The `exec` hooks: a steered program that starts a program the preload cannot reach (statically linked: no
//! dynamic loader; setuid or setgid: the loader ignores `LD_PRELOAD`) would have it run unsteered without a
//! word. The hooks look at the file first: the decision log says so, and under `--fail closed` the exec fails
//! with `EACCES`. Nothing is allocated (a vfork child runs these too): the file's first page is read into a
//! stack buffer, `PATH` searched in another.
//!
//! `execl*` and `posix_spawn*` reach the kernel inside the C library without passing through these hooks.

use std::ffi::CStr;

use libc::{c_char, c_int};
use libsrv6sock::elf;
use libsrv6sock::policy::FailMode;

use crate::hooks::{guarded, real_fn, set_errno, Outcome};
use crate::log;
use crate::real;
use crate::state::{self, State};

/// Bytes read from the start of a program: the ELF and program headers are there.
const HEAD: usize = 4096;
/// Longest path built while searching `PATH`.
const MAX_PATH: usize = 4096;

/// Why the preload cannot follow into a program.
#[derive(Clone, Copy)]
enum Unreachable {
    Static,
    Setuid,
}

impl Unreachable {
    fn reason(self) -> &'static str {
        match self {
            Unreachable::Static => "statically linked: no dynamic loader to preload the shim",
            Unreachable::Setuid => "setuid or setgid: the dynamic loader ignores LD_PRELOAD",
        }
    }
}

/// What the file at `path` is, reading its first page; follows one `#!` interpreter.
fn unreachable(path: &CStr, follow_script: bool) -> Option<Unreachable> {
    // SAFETY: `path` is a NUL-terminated string; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: stat is plain data, filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let mut head = [0u8; HEAD];
    // SAFETY: `st` and `head` are writable buffers of the sizes given.
    let (stat_rc, n) = unsafe { (libc::fstat(fd, &mut st), libc::read(fd, head.as_mut_ptr().cast(), HEAD)) };
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    if stat_rc == 0 && st.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
        return Some(Unreachable::Setuid);
    }
    let head = head.get(..usize::try_from(n).ok()?)?;
    if let Some(line) = head.strip_prefix(b"#!") {
        if !follow_script {
            return None;
        }
        let line = line.split(|&b| b == b'\n').next()?;
        let interp = line.split(|b| b.is_ascii_whitespace()).find(|w| !w.is_empty())?;
        let mut buf = [0u8; MAX_PATH];
        let interp = CStr::from_bytes_with_nul(join(&mut buf, &[interp])?).ok()?;
        return unreachable(interp, false);
    }
    match elf::has_interpreter(head) {
        Some(false) => Some(Unreachable::Static),
        _ => None,
    }
}

/// `parts` concatenated into `buf` with a NUL at the end, or `None` if it does not fit or holds a NUL.
fn join<'a>(buf: &'a mut [u8; MAX_PATH], parts: &[&[u8]]) -> Option<&'a [u8]> {
    let mut len = 0;
    for p in parts {
        if p.contains(&0) {
            return None;
        }
        buf.get_mut(len..len + p.len())?.copy_from_slice(p);
        len += p.len();
    }
    *buf.get_mut(len)? = 0;
    Some(&buf[..=len])
}

/// The check every hook makes before the real exec of `path` (`file`: searched in `PATH` first, as `execvp`).
fn check(call: &str, name: *const c_char, search_path: bool) -> Outcome {
    let Some(State::Ready(shim)) = state::get() else { return Outcome::Proceed };
    if name.is_null() {
        return Outcome::Proceed;
    }
    // SAFETY: exec's contract: a NUL-terminated file name.
    let name = unsafe { CStr::from_ptr(name) };
    let mut buf = [0u8; MAX_PATH];
    let path = if search_path && !name.to_bytes().contains(&b'/') {
        match search(name.to_bytes(), &mut buf) {
            Some(p) => p,
            None => return Outcome::Proceed,
        }
    } else {
        name
    };
    let Some(why) = unreachable(path, true) else { return Outcome::Proceed };
    let closed = shim.fail() == FailMode::Closed;
    log::exec(call, &path.to_string_lossy(), why.reason(), closed.then_some(libc::EACCES));
    if closed {
        Outcome::Fail(libc::EACCES)
    } else {
        Outcome::Proceed
    }
}

/// The first executable `dir/file` of `PATH` (as `execvp` searches it), built in `buf`.
fn search<'a>(file: &[u8], buf: &'a mut [u8; MAX_PATH]) -> Option<&'a CStr> {
    // SAFETY: getenv returns null or a NUL-terminated string owned by the environment.
    let var = unsafe { libc::getenv(c"PATH".as_ptr()) };
    let dirs: &[u8] = if var.is_null() {
        b"/bin:/usr/bin"
    } else {
        // SAFETY: checked non-null above.
        unsafe { CStr::from_ptr(var) }.to_bytes()
    };
    let found = dirs.split(|&b| b == b':').find(|dir| {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let mut probe = [0u8; MAX_PATH];
        join(&mut probe, &[dir, b"/", file])
            .and_then(|p| CStr::from_bytes_with_nul(p).ok())
            // SAFETY: a NUL-terminated path.
            .is_some_and(|p| unsafe { libc::access(p.as_ptr(), libc::X_OK) } == 0)
    })?;
    let dir: &[u8] = if found.is_empty() { b"." } else { found };
    CStr::from_bytes_with_nul(join(buf, &[dir, b"/", file])?).ok()
}

type ExecveFn = unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
type ExecvFn = unsafe extern "C" fn(*const c_char, *const *const c_char) -> c_int;

/// Fail the exec if the check says so.
macro_rules! refuse_if_unreachable {
    ($call:expr, $name:expr, $search:expr) => {
        if let Outcome::Fail(e) = guarded(|| check($call, $name, $search)) {
            set_errno(e);
            return -1;
        }
    };
}

/// `execve(2)`: a program the shim cannot follow into is logged, and refused under `--fail closed`.
///
/// # Safety
/// The caller upholds `execve(2)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    let real = real_fn!(real::EXECVE, ExecveFn);
    refuse_if_unreachable!("execve", path, false);
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real(path, argv, envp) }
}

/// `execv(3)`: as [`execve`].
///
/// # Safety
/// The caller upholds `execv(3)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    let real = real_fn!(real::EXECV, ExecvFn);
    refuse_if_unreachable!("execv", path, false);
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real(path, argv) }
}

/// `execvp(3)`: as [`execve`], for the program `PATH` gives.
///
/// # Safety
/// The caller upholds `execvp(3)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    let real = real_fn!(real::EXECVP, ExecvFn);
    refuse_if_unreachable!("execvp", file, true);
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real(file, argv) }
}

/// `execvpe(3)`: as [`execvp`].
///
/// # Safety
/// The caller upholds `execvpe(3)`'s contract.
#[no_mangle]
pub unsafe extern "C" fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    let real = real_fn!(real::EXECVPE, ExecveFn);
    refuse_if_unreachable!("execvpe", file, true);
    // SAFETY: the caller's arguments, unchanged.
    unsafe { real(file, argv, envp) }
}
