//! The decision log: one JSON object per line, written with a single `write(2)` from a stack buffer so that
//! hooks allocate nothing and lines from several processes or threads do not interleave.

use std::fmt::{self, Write};
use std::net::Ipv6Addr;

use libsrv6sock::policy::{Proto, Rule};

use crate::state::{self, Shim};

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
    let Some(fd) = state::log_fd() else { return };
    let mut line = Line { buf: [0; 2048], len: 0 };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let _ = write!(line, "{{\"pid\":{pid},").and_then(|_| fill(&mut line));
    line.buf[line.len] = b'\n';
    // SAFETY: writes `len + 1` initialised bytes of a live stack buffer.
    unsafe { libc::write(fd, line.buf.as_ptr().cast(), line.len + 1) };
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

/// Log that the shim is loaded and how many rules it has.
pub fn init(shim: &Shim) {
    let fail = match shim.fail() {
        libsrv6sock::policy::FailMode::Open => "open",
        libsrv6sock::policy::FailMode::Closed => "closed",
    };
    emit(|l| write!(l, "\"event\":\"init\",\"rules\":{},\"fail\":\"{fail}\"}}", shim.policy.rules.len()));
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

/// Log one decision.
pub fn decision(call: &str, proto: Proto, dst: Ipv6Addr, port: u16, rule: Option<&Rule>, action: Action) {
    emit(|l| {
        let proto = if proto == Proto::Udp { "udp" } else { "tcp" };
        write!(l, "\"event\":\"{call}\",\"proto\":\"{proto}\",\"dst\":\"{dst}\",\"port\":{port},")?;
        let (name, errno) = match action {
            Action::Attached => ("attached", 0),
            Action::NoMatch => ("no-match", 0),
            Action::ProgramSrh => ("program-srh", 0),
            Action::FailedOpen(e) => ("failed-open", e),
            Action::Refused(e) => ("refused", e),
            Action::RefusedBrokenConfig => ("refused-broken-config", libc::EINVAL),
        };
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
