//! The messages between `libsrv6sock.so` and the resolver agent (`srv6run(1)`): one request and one reply
//! per Unix stream connection, each ended by closing its direction (`shutdown(SHUT_WR)`, then close).
//!
//! ```text
//! request:  version (2) | op (1 = paths of a name) | count | reserved | count addresses (16 each) | name
//!           (1 to 253 bytes, no NUL)
//! reply:    version (2) | status | count | reserved | count entries
//! entry:    address (16) | TTL in seconds (u32) | SRH length (u16) | flags (u16) | SRH (0: no path)
//! ```
//!
//! The request carries the addresses the program's resolver (libc) returned for the name, and the reply has
//! one entry per requested address, in order: paths are per (name, address), and an address the agent's
//! own lookup did not return still gets the path of the record covering it. With no address in the
//! request, the agent answers for the addresses it found itself.
//!
//! The shim reads replies in a stack buffer with [`AgentReply`], a checked zero-copy view: a reply from a
//! buggy or hostile agent (truncated, wrong lengths, absurd counts, an SRH Linux would refuse) is an
//! [`AgentError`] with its offset, never a panic.

use std::net::Ipv6Addr;

use super::srh::Srh;

/// Environment variable: the agent's socket, `@NAME` for an abstract one or a path; unset: the system-wide
/// agent if its socket exists ([`SYSTEM_SOCKET`]); empty: no agent.
pub const ENV_AGENT: &str = "SRV6_AGENT";
/// The system-wide agent's socket (`srv6path agent`, `srv6pipes-agent.service`), which the shim asks when
/// `SRV6_AGENT` is unset and this socket exists.
pub const SYSTEM_SOCKET: &str = "/run/srv6pipes/agent.sock";
/// Environment variable: how long the shim waits for the agent, in milliseconds.
pub const ENV_AGENT_TIMEOUT: &str = "SRV6_AGENT_TIMEOUT_MS";
/// Default of [`ENV_AGENT_TIMEOUT`].
pub const DEFAULT_TIMEOUT_MS: u64 = 500;

/// Environment variable: how many (name, address) paths from DNS the shim keeps at once.
pub const ENV_PATHS: &str = "SRV6_PATHS";
/// Default of [`ENV_PATHS`].
pub const DEFAULT_PATHS: usize = 256;

/// Protocol version.
pub const VERSION: u8 = 2;
/// Request op: the addresses and paths of a name.
pub const OP_PATHS: u8 = 1;
/// Bytes before the name in a request.
pub const REQUEST_FIXED: usize = 4;
/// Longest name in a request.
pub const MAX_NAME: usize = 253;
/// Most addresses in a request (and entries in a reply).
pub const MAX_ADDRS: usize = MAX_ENTRIES;
/// Largest request.
pub const MAX_REQUEST: usize = REQUEST_FIXED + MAX_ADDRS * 16 + MAX_NAME;
/// Bytes before the entries in a reply.
pub const REPLY_FIXED: usize = 4;
/// Bytes of an entry before its SRH.
pub const ENTRY_FIXED: usize = 24;
/// Most entries in a reply.
pub const MAX_ENTRIES: usize = 16;
/// Largest reply; the agent leaves out entries that would not fit.
pub const MAX_REPLY: usize = 8192;

/// Reply status: the lookup went through (entries may still be 0: no address).
pub const STATUS_OK: u8 = 0;
/// Reply status: DNS did not answer (timeout, server failure); the failure policy applies.
pub const STATUS_LOOKUP_FAILED: u8 = 1;
/// Reply status: the request was malformed.
pub const STATUS_BAD_REQUEST: u8 = 2;
/// Entry flag: no path because the record covering the address (or every record of the name) is malformed
/// or gives an SRH that cannot be built; the shim's closed failure policy refuses such an address.
pub const FLAG_MALFORMED: u16 = 1;

/// What is wrong with a message; offsets count from its first byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// Fewer bytes than the message needs.
    #[error("agent message truncated at offset {offset}: {needed} bytes needed, {available} available")]
    Truncated {
        /// Where the missing part starts.
        offset: usize,
        /// Bytes needed from there.
        needed: usize,
        /// Bytes available from there.
        available: usize,
    },
    /// Bytes after the last entry.
    #[error("agent message has {extra} bytes after its end at offset {offset}")]
    TrailingBytes {
        /// Where the message should end.
        offset: usize,
        /// Bytes past it.
        extra: usize,
    },
    /// A field with a value out of range.
    #[error("agent message field at offset {offset}: {reason}")]
    Field {
        /// Offset of the field.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An entry's SRH that the SRH codec refuses.
    #[error("agent reply entry at offset {offset}: bad SRH: {source}")]
    Srh {
        /// Offset of the SRH.
        offset: usize,
        /// The SRH codec's error.
        source: super::Error,
    },
    /// The output buffer is too small.
    #[error("output buffer of {available} bytes is too small for the {needed}-byte message")]
    BufferTooSmall {
        /// Bytes to write.
        needed: usize,
        /// Bytes in the buffer.
        available: usize,
    },
}

/// Write a request for `name` and the addresses the program's resolver gave for it into `buf`; returns
/// its length.
pub fn emit_request(name: &[u8], addrs: &[Ipv6Addr], buf: &mut [u8]) -> Result<usize, AgentError> {
    if name.is_empty() || name.len() > MAX_NAME || name.contains(&0) {
        return Err(AgentError::Field { offset: REQUEST_FIXED, reason: "name must be 1 to 253 bytes, no NUL" });
    }
    if addrs.len() > MAX_ADDRS {
        return Err(AgentError::Field { offset: 2, reason: "more than 16 addresses" });
    }
    let start = REQUEST_FIXED + addrs.len() * 16;
    let needed = start + name.len();
    let available = buf.len();
    let out = buf.get_mut(..needed).ok_or(AgentError::BufferTooSmall { needed, available })?;
    out[..REQUEST_FIXED].copy_from_slice(&[VERSION, OP_PATHS, addrs.len() as u8, 0]);
    for (chunk, a) in out[REQUEST_FIXED..start].chunks_mut(16).zip(addrs) {
        chunk.copy_from_slice(&a.octets());
    }
    out[start..].copy_from_slice(name);
    Ok(needed)
}

/// A request: the name and the addresses asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The name.
    pub name: &'a str,
    /// The addresses the program's resolver returned (may be empty).
    pub addrs: Vec<Ipv6Addr>,
}

/// Parse a request.
pub fn parse_request(msg: &[u8]) -> Result<Request<'_>, AgentError> {
    if msg.len() < REQUEST_FIXED + 1 {
        return Err(AgentError::Truncated { offset: 0, needed: REQUEST_FIXED + 1, available: msg.len() });
    }
    if msg[0] != VERSION {
        return Err(AgentError::Field { offset: 0, reason: "unknown version" });
    }
    if msg[1] != OP_PATHS {
        return Err(AgentError::Field { offset: 1, reason: "unknown op" });
    }
    let count = msg[2] as usize;
    if count > MAX_ADDRS {
        return Err(AgentError::Field { offset: 2, reason: "more than 16 addresses" });
    }
    let start = REQUEST_FIXED + count * 16;
    if msg.len() < start + 1 {
        return Err(AgentError::Truncated {
            offset: REQUEST_FIXED,
            needed: start + 1 - REQUEST_FIXED,
            available: msg.len() - REQUEST_FIXED,
        });
    }
    let addrs = msg[REQUEST_FIXED..start]
        .chunks(16)
        .map(|c| Ipv6Addr::from(<[u8; 16]>::try_from(c).unwrap_or_default()))
        .collect();
    let name = &msg[start..];
    if name.len() > MAX_NAME || name.contains(&0) {
        return Err(AgentError::Field { offset: start, reason: "name must be 1 to 253 bytes, no NUL" });
    }
    let name =
        std::str::from_utf8(name).map_err(|_| AgentError::Field { offset: start, reason: "name is not UTF-8" })?;
    Ok(Request { name, addrs })
}

/// One entry of a reply, borrowed from the reply's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The answer address.
    pub addr: Ipv6Addr,
    /// Seconds the entry stays valid.
    pub ttl: u32,
    /// The SRH to attach for this address (`segments[0]` to be set to it), empty when DNS gives no path.
    pub srh: &'a [u8],
    /// [`FLAG_MALFORMED`] and future flags.
    pub flags: u16,
}

/// A checked zero-copy view of a reply.
#[derive(Debug, Clone, Copy)]
pub struct AgentReply<'a> {
    data: &'a [u8],
}

impl<'a> AgentReply<'a> {
    /// Check a whole reply: header, every entry's bounds and SRH, exact length.
    pub fn new_checked(data: &'a [u8]) -> Result<Self, AgentError> {
        if data.len() < REPLY_FIXED {
            return Err(AgentError::Truncated { offset: 0, needed: REPLY_FIXED, available: data.len() });
        }
        if data[0] != VERSION {
            return Err(AgentError::Field { offset: 0, reason: "unknown version" });
        }
        if data[1] > STATUS_BAD_REQUEST {
            return Err(AgentError::Field { offset: 1, reason: "unknown status" });
        }
        if data[2] as usize > MAX_ENTRIES {
            return Err(AgentError::Field { offset: 2, reason: "more than 16 entries" });
        }
        let reply = AgentReply { data };
        let mut pos = REPLY_FIXED;
        for _ in 0..reply.count() {
            let (_, next) = reply.entry_at(pos)?;
            pos = next;
        }
        if pos != data.len() {
            return Err(AgentError::TrailingBytes { offset: pos, extra: data.len() - pos });
        }
        Ok(reply)
    }

    /// The status byte.
    pub fn status(&self) -> u8 {
        self.data[1]
    }

    /// Number of entries.
    pub fn count(&self) -> usize {
        self.data[2] as usize
    }

    fn entry_at(&self, pos: usize) -> Result<(Entry<'a>, usize), AgentError> {
        let data = self.data;
        let fixed = data.get(pos..pos + ENTRY_FIXED).ok_or(AgentError::Truncated {
            offset: pos,
            needed: ENTRY_FIXED,
            available: data.len().saturating_sub(pos),
        })?;
        let addr: [u8; 16] = fixed[..16].try_into().unwrap_or_default();
        let ttl = u32::from_be_bytes([fixed[16], fixed[17], fixed[18], fixed[19]]);
        let len = u16::from_be_bytes([fixed[20], fixed[21]]) as usize;
        let flags = u16::from_be_bytes([fixed[22], fixed[23]]);
        let start = pos + ENTRY_FIXED;
        let srh = data.get(start..start + len).ok_or(AgentError::Truncated {
            offset: start,
            needed: len,
            available: data.len().saturating_sub(start),
        })?;
        if !srh.is_empty() {
            let view = Srh::new_checked(srh).map_err(|source| AgentError::Srh { offset: start, source })?;
            if view.header_len() != len {
                return Err(AgentError::Field { offset: pos + 20, reason: "SRH length differs from its header's" });
            }
        }
        Ok((Entry { addr: Ipv6Addr::from(addr), ttl, srh, flags }, start + len))
    }

    /// The entries, in order (every one was checked by [`AgentReply::new_checked`]).
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        let mut pos = REPLY_FIXED;
        (0..self.count()).map_while(move |_| {
            let (e, next) = self.entry_at(pos).ok()?;
            pos = next;
            Some(e)
        })
    }
}

/// An owned entry, for the agent to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRepr {
    /// The answer address.
    pub addr: Ipv6Addr,
    /// Seconds the entry stays valid.
    pub ttl: u32,
    /// The emitted SRH, empty for no path.
    pub srh: Vec<u8>,
    /// [`FLAG_MALFORMED`] and future flags.
    pub flags: u16,
}

/// Write a reply into `buf`, leaving out the entries past [`MAX_ENTRIES`] or past the buffer (at most
/// [`MAX_REPLY`] bytes); returns its length.
pub fn emit_reply(status: u8, entries: &[EntryRepr], buf: &mut [u8]) -> Result<usize, AgentError> {
    let available = buf.len();
    let limit = available.min(MAX_REPLY);
    if limit < REPLY_FIXED {
        return Err(AgentError::BufferTooSmall { needed: REPLY_FIXED, available });
    }
    let mut pos = REPLY_FIXED;
    let mut count = 0u8;
    for e in entries.iter().take(MAX_ENTRIES) {
        let len = ENTRY_FIXED + e.srh.len();
        if e.srh.len() > u16::MAX as usize || pos + len > limit {
            continue;
        }
        let out = &mut buf[pos..pos + len];
        out[..16].copy_from_slice(&e.addr.octets());
        out[16..20].copy_from_slice(&e.ttl.to_be_bytes());
        out[20..22].copy_from_slice(&(e.srh.len() as u16).to_be_bytes());
        out[22..24].copy_from_slice(&e.flags.to_be_bytes());
        out[ENTRY_FIXED..].copy_from_slice(&e.srh);
        pos += len;
        count += 1;
    }
    buf[..REPLY_FIXED].copy_from_slice(&[VERSION, status, count, 0]);
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::srh::SrhRepr;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn request_round_trip_and_refusals() {
        let mut buf = [0u8; MAX_REQUEST];
        let addrs = [a("fc00:5::1"), a("fc00:5::2")];
        let n = emit_request(b"www.example.test", &addrs, &mut buf).unwrap();
        assert_eq!(parse_request(&buf[..n]), Ok(Request { name: "www.example.test", addrs: addrs.to_vec() }));
        let n = emit_request(b"www", &[], &mut buf).unwrap();
        assert_eq!(parse_request(&buf[..n]), Ok(Request { name: "www", addrs: vec![] }));
        assert!(emit_request(b"", &[], &mut buf).is_err());
        assert!(emit_request(&[b'a'; 254], &[], &mut buf).is_err());
        assert!(emit_request(b"www", &[a("::1"); 17], &mut buf).is_err());
        assert_eq!(parse_request(&[1, 1, 0, 0, b'a']), Err(AgentError::Field { offset: 0, reason: "unknown version" }));
        assert!(matches!(parse_request(&[2, 1, 0]), Err(AgentError::Truncated { .. })));
        // Two addresses announced, one there.
        assert!(matches!(parse_request(&[&[2, 1, 2, 0][..], &[0; 17]].concat()), Err(AgentError::Truncated { .. })));
    }

    #[test]
    fn reply_round_trip_and_garbage() {
        let srh = SrhRepr::for_path(a("::"), &[a("fc00:f1::1")]).unwrap().to_bytes().unwrap();
        let entries = [
            EntryRepr { addr: a("fc00:5::1"), ttl: 60, srh: srh.clone(), flags: 0 },
            EntryRepr { addr: a("fc00:5::2"), ttl: 30, srh: vec![], flags: FLAG_MALFORMED },
        ];
        let mut buf = [0u8; MAX_REPLY];
        let n = emit_reply(STATUS_OK, &entries, &mut buf).unwrap();
        let reply = AgentReply::new_checked(&buf[..n]).unwrap();
        let got: Vec<_> = reply.entries().map(|e| (e.addr, e.ttl, e.srh.to_vec(), e.flags)).collect();
        assert_eq!(got, entries.iter().map(|e| (e.addr, e.ttl, e.srh.clone(), e.flags)).collect::<Vec<_>>());
        // Truncated, trailing bytes, absurd count, a length that lies, a broken SRH.
        assert!(matches!(AgentReply::new_checked(&buf[..n - 1]), Err(AgentError::Truncated { .. })));
        assert!(matches!(AgentReply::new_checked(&buf[..n + 1]), Err(AgentError::TrailingBytes { .. })));
        let mut bad = buf;
        bad[2] = 200;
        assert_eq!(
            AgentReply::new_checked(&bad[..n]).unwrap_err(),
            AgentError::Field { offset: 2, reason: "more than 16 entries" }
        );
        let mut bad = buf;
        bad[REPLY_FIXED + 21] = 8;
        assert!(AgentReply::new_checked(&bad[..n]).is_err());
        let mut bad = buf;
        bad[REPLY_FIXED + ENTRY_FIXED + 2] = 0;
        assert!(matches!(AgentReply::new_checked(&bad[..n]), Err(AgentError::Srh { offset: 28, .. })));
    }
}
