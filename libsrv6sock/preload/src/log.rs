//! The decision log: one JSON object per line, written with a single `write(2)` from a stack buffer so that
//! hooks allocate nothing and lines from several processes or threads do not interleave. Every line starts
//! with the time (UTC, RFC 3339 with milliseconds), the program's name (its `argv[0]` without directories)
//! and its process id.
//!
//! The log is written only while its descriptor still refers to the file it was opened on: once the program
//! closes it or puts another file on its number (seen in `close()`/`dup2()`, or by the file's identity
//! changing, for ways the shim does not see such as `fclose(stderr)` inside the C library), the log is off,
//! so lines never land in a file of the program.

use std::fmt::{self, Write};
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use libc::c_int;
use libsrv6sock::policy::{FailMode, Proto, Rule};

use crate::{fds, output};
use libsrv6sock::wire::srh::Srh;

/// The log's descriptor; -1 when there is no log.
static LOG_FD: AtomicI32 = AtomicI32::new(-1);
/// Device and inode of the log's file when it was opened.
static LOG_FILE: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Descriptors below this are the program's standard streams: a log file opened while they are closed is
/// moved above them, so the program's next `open()` does not get our file as its standard error.
const FIRST_PRIVATE_FD: c_int = 3;

/// The program's name for the log lines, set once by [`open`].
static PROGRAM: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The program's name: `argv[0]` without directories, else the kernel's `comm`.
fn program_name() -> String {
    let from_args = std::env::args_os().next().and_then(|a| {
        std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
    });
    from_args
        .or_else(|| std::fs::read_to_string("/proc/self/comm").ok().map(|c| c.trim_end().to_string()))
        .unwrap_or_default()
}

/// Start logging to `target`: `stderr` (if open) or a file, appended. Called once, from the constructor.
pub fn open(target: &str) -> Result<(), String> {
    let _ = PROGRAM.set(program_name());
    if target == "stderr" {
        // With standard error closed, descriptor 2 is free for the program's next file: not ours to write.
        if let Some(id) = output::file_id(libc::STDERR_FILENO) {
            start(libc::STDERR_FILENO, id);
        }
        return Ok(());
    }
    let path = std::ffi::CString::new(target).map_err(|_| "path contains a NUL byte".to_string())?;
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC;
    // SAFETY: `path` is a valid C string; the descriptor is the shim's for the life of the process.
    let fd = unsafe { libc::open(path.as_ptr(), flags, 0o644) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let fd = if fd < FIRST_PRIVATE_FD {
        // SAFETY: `fd` is the descriptor just opened; F_DUPFD_CLOEXEC copies it to a free number >= 3.
        let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, FIRST_PRIVATE_FD) };
        // SAFETY: closing our own descriptor, which nothing else uses yet.
        unsafe { libc::close(fd) };
        if moved < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        moved
    } else {
        fd
    };
    start(fd, output::file_id(fd).ok_or_else(|| std::io::Error::last_os_error().to_string())?);
    Ok(())
}

fn start(fd: c_int, (dev, ino): (u64, u64)) {
    LOG_FILE[0].store(dev, Ordering::Relaxed);
    LOG_FILE[1].store(ino, Ordering::Relaxed);
    LOG_FD.store(fd, Ordering::Relaxed);
}

/// The program is closing `fd` or putting another file on it: if it is the log's, the log ends (not for a
/// `vfork()` child's close, which leaves the parent's descriptor open: see [`fds::owner`]).
pub fn closed(fd: c_int) {
    if fds::owner() {
        let _ = LOG_FD.compare_exchange(fd, -1, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The current time as `YYYY-MM-DDTHH:MM:SS.mmmZ` (no allocation, no time-zone files).
struct Now;

impl fmt::Display for Now {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        let secs = ts.tv_sec.max(0);
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
        let ms = ts.tv_nsec / 1_000_000;
        write!(f, "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
    }
}

/// A line being built; text past its capacity is cut (the line still ends with a newline).
struct Line {
    buf: [u8; 2048],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - 1 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// A string written as JSON string content.
struct Json<'a>(&'a str);

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn emit(fill: impl FnOnce(&mut Line) -> fmt::Result) {
    let fd = LOG_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let opened = (LOG_FILE[0].load(Ordering::Relaxed), LOG_FILE[1].load(Ordering::Relaxed));
    if output::file_id(fd) != Some(opened) {
        closed(fd);
        return;
    }
    let mut line = Line { buf: [0; 2048], len: 0 };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let program = PROGRAM.get().map_or("", String::as_str);
    let _ = write!(line, "{{\"time\":\"{Now}\",\"program\":\"{}\",\"pid\":{pid},", Json(program))
        .and_then(|_| fill(&mut line));
    line.buf[line.len] = b'\n';
    output::write_all(fd, line.buf.get(..=line.len).unwrap_or_default());
}

/// The text of `errno`, written into `buf` (no allocation).
fn strerror(errno: i32, buf: &mut [u8; 128]) -> &str {
    // SAFETY: the XSI strerror_r writes a NUL-terminated string of at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::strerror_r(errno, buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(0);
    if rc != 0 {
        return "unknown error";
    }
    std::str::from_utf8(&buf[..len]).unwrap_or("unknown error")
}

/// Log that the shim is loaded, with how many rules and which failure policy.
pub fn init(rules: usize, fail: FailMode) {
    let fail = match fail {
        FailMode::Open => "open",
        FailMode::Closed => "closed",
    };
    emit(|l| write!(l, "\"event\":\"init\",\"rules\":{rules},\"fail\":\"{fail}\"}}"));
}

/// Log a panic inside the shim (the call it happened in went on unsteered).
pub fn internal_error(location: Option<&std::panic::Location<'_>>) {
    emit(|l| {
        l.write_str("\"event\":\"internal-error\"")?;
        if let Some(at) = location {
            write!(l, ",\"at\":\"{}:{}\"", Json(at.file()), at.line())?;
        }
        l.write_str("}")
    });
}

/// What the shim did with one call.
#[derive(Clone, Copy)]
pub enum Action {
    /// The rule's SRH was attached.
    Attached,
    /// No rule matched: nothing done.
    NoMatch,
    /// The program had set a routing header itself: left alone.
    ProgramSrh,
    /// Attaching failed; the call went on without SRH.
    FailedOpen(i32),
    /// Attaching failed; the call was refused.
    Refused(i32),
    /// The configuration is broken and the failure policy is closed.
    RefusedBrokenConfig,
}

/// An action's name in the log and its errno (0: none).
fn action_name(action: Action) -> (&'static str, i32) {
    match action {
        Action::Attached => ("attached", 0),
        Action::NoMatch => ("no-match", 0),
        Action::ProgramSrh => ("program-srh", 0),
        Action::FailedOpen(e) => ("failed-open", e),
        Action::Refused(e) => ("refused", e),
        Action::RefusedBrokenConfig => ("refused-broken-config", libc::EINVAL),
    }
}

/// Log one decision.
pub fn decision(call: &str, proto: Proto, dst: Ipv6Addr, port: u16, rule: Option<&Rule>, action: Action) {
    emit(|l| {
        let proto = proto.name();
        write!(l, "\"event\":\"{call}\",\"proto\":\"{proto}\",\"dst\":\"{dst}\",\"port\":{port},")?;
        let (name, errno) = action_name(action);
        write!(l, "\"action\":\"{name}\"")?;
        if errno != 0 {
            write!(l, ",\"errno\":{errno},\"error\":\"{}\"", Json(strerror(errno, &mut [0; 128])))?;
        }
        if let Some(r) = rule {
            write!(l, ",\"rule\":\"{}\",\"segments\":[", Json(&r.origin))?;
            for (i, s) in r.path.segments.iter().enumerate() {
                write!(l, "{}\"{s}\"", if i == 0 { "" } else { "," })?;
            }
            write!(l, "],\"return_path\":[")?;
            for (i, s) in r.path.return_waypoints().enumerate() {
                write!(l, "{}\"{s}\"", if i == 0 { "" } else { "," })?;
            }
            l.write_str("]")?;
        }
        l.write_str("}")
    });
}

/// Why the resolver agent gave no answer.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// The socket could not be reached (errno).
    Unreachable(c_int),
    /// No complete answer within the timeout.
    Timeout,
    /// The answer was malformed (offset of the fault).
    Garbage(usize),
    /// The agent's DNS lookup failed.
    LookupFailed,
}

/// Log what the resolver agent taught about `name`: how many of its addresses have a path, and how many
/// addresses libc returned past those the agent can be asked about (`not_asked`: they get no path).
pub fn agent_answer(name: &str, paths: usize, not_asked: usize) {
    emit(|l| {
        write!(l, "\"event\":\"dns-paths\",\"name\":\"{}\",\"paths\":{paths}", Json(name))?;
        if not_asked > 0 {
            write!(l, ",\"not_asked\":{not_asked}")?;
        }
        l.write_str("}")
    });
}

/// Log that learning a name's paths evicted `evicted` live paths of other names from the table of `slots`
/// (`SRV6_PATHS`): connections to them fail under the closed failure policy, and go unsteered otherwise.
pub fn paths_overflow(evicted: usize, slots: usize) {
    emit(|l| write!(l, "\"event\":\"paths-overflow\",\"evicted\":{evicted},\"slots\":{slots}}}"));
}

/// Log that the agent gave no usable answer for `name`, and what follows from the failure policy.
pub fn agent_failure(name: &str, failure: Failure, closed: bool) {
    emit(|l| {
        write!(l, "\"event\":\"dns-paths\",\"name\":\"{}\",\"action\":", Json(name))?;
        l.write_str(if closed { "\"refused\"" } else { "\"failed-open\"" })?;
        match failure {
            Failure::Unreachable(e) => {
                write!(l, ",\"error\":\"agent unreachable: {}\",\"errno\":{e}", Json(strerror(e, &mut [0; 128])))?
            }
            Failure::Timeout => l.write_str(",\"error\":\"agent timed out\"")?,
            Failure::Garbage(at) => write!(l, ",\"error\":\"malformed agent reply at offset {at}\"")?,
            Failure::LookupFailed => l.write_str(",\"error\":\"DNS lookup failed\"")?,
        }
        l.write_str("}")
    });
}

/// Why a path from DNS is missing for a connection that should have one.
#[derive(Clone, Copy)]
pub enum Missing {
    /// The agent gave no answer for the name (failure logged with the `dns-paths` event).
    AgentFailed,
    /// The path's TTL ran out and asking the agent again failed.
    Lapsed,
    /// The path was evicted from the shim's table (`SRV6_PATHS` too small for the names in use).
    Evicted,
    /// The name's path record is malformed.
    MalformedRecord,
}

impl Missing {
    fn name(self) -> &'static str {
        match self {
            Missing::AgentFailed => "agent-failed",
            Missing::Lapsed => "path-lapsed",
            Missing::Evicted => "path-evicted",
            Missing::MalformedRecord => "malformed-record",
        }
    }
}

/// Log one decision taken from a path learned from DNS (`srh`: the SRH attached, or empty; `reason`: why
/// there is none).
pub fn dns_decision(
    call: &str,
    proto: Proto,
    dst: Ipv6Addr,
    port: u16,
    srh: &[u8],
    action: Action,
    reason: Option<Missing>,
) {
    emit(|l| {
        write!(l, "\"event\":\"{call}\",\"proto\":\"{}\",\"dst\":\"{dst}\",\"port\":{port},", proto.name())?;
        let (name, errno) = action_name(action);
        write!(l, "\"action\":\"{name}\"")?;
        if errno != 0 {
            write!(l, ",\"errno\":{errno},\"error\":\"{}\"", Json(strerror(errno, &mut [0; 128])))?;
        }
        if let Some(r) = reason {
            write!(l, ",\"reason\":\"{}\"", r.name())?;
        }
        l.write_str(",\"rule\":\"dns\",\"segments\":[")?;
        let view = Srh::new_unchecked(srh);
        // SRH order after the destination, backwards: the order they are visited.
        for (i, s) in (1..view.segment_count()).rev().filter_map(|i| view.segment(i)).enumerate() {
            write!(l, "{}\"{s}\"", if i == 0 { "" } else { "," })?;
        }
        l.write_str("]}")
    });
}

/// What the shim did with an accepted connection's return path (`SRV6_REPLY`).
#[derive(Clone, Copy)]
pub enum Reply<'a> {
    /// The reply SRH (segments in SRH order, the client first) was installed.
    Installed(&'a [u8]),
    /// The return path was refused and the connection reset; `refused` counts refusals so far.
    Refused {
        /// Why.
        reason: &'a dyn fmt::Display,
        /// Refusals by this process so far.
        refused: u64,
    },
    /// Installing failed (errno); the connection goes on without SRH.
    Failed(i32),
}

/// Log the return-path decision for a connection accepted from `[peer]:port`.
pub fn reply(peer: Ipv6Addr, port: u16, what: Reply<'_>) {
    emit(|l| {
        write!(l, "\"event\":\"accept\",\"peer\":\"{peer}\",\"port\":{port},")?;
        match what {
            Reply::Installed(srh) => {
                l.write_str("\"action\":\"reply-path\",\"segments\":[")?;
                let view = libsrv6sock::wire::srh::Srh::new_unchecked(srh);
                for (i, s) in view.segments().enumerate() {
                    write!(l, "{}\"{s}\"", if i == 0 { "" } else { "," })?;
                }
                l.write_str("]}")
            }
            Reply::Refused { reason, refused } => {
                let mut text = Line { buf: [0; 2048], len: 0 };
                let _ = write!(text, "{reason}");
                let text = std::str::from_utf8(&text.buf[..text.len]).unwrap_or("?");
                write!(l, "\"action\":\"reply-refused\",\"reason\":\"{}\",\"refused\":{refused}}}", Json(text))
            }
            Reply::Failed(errno) => write!(
                l,
                "\"action\":\"reply-failed\",\"errno\":{errno},\"error\":\"{}\"}}",
                Json(strerror(errno, &mut [0; 128]))
            ),
        }
    });
}
