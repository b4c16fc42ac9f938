//! The steering policy as data, and its compiled form: what `srv6run` hands the shim so that no host program
//! ever runs a TOML parser (`libsrv6sock(7)`, `SRV6_COMPILED_POLICY`).
//!
//! [`Policy`] is the owned representation (matching and the environment are in the `policy` module);
//! [`CompiledPolicy`] is the checked view of its encoding, which [`Policy::parse`] and [`Policy::emit`]
//! read and write. All integers are big-endian:
//!
//! ```text
//! header:  magic "S6PL" (4) | version (1) | fail (1: 0 open, 1 closed) | rule count (u16)
//! rule:    proto (1: 0 tcp, 1 udp, 2 any) | has port (1: 0 or 1) | port (u16) | dst (16) | prefix length (1)
//!          | return path (1: 0 reverse, 1 none, 2 explicit) | tag (u16) | SRH flags (1)
//!          | has HMAC key (1: 0 or 1) | HMAC key id (u32)
//!          | segment count (1) | return waypoint count (1) | name length (1: 0 no name) | origin length (1)
//!          | segments (16 each) | return waypoints (16 each) | name | origin
//! ```
//!
//! The environment carries it as lowercase hex ([`Policy::to_hex`], [`Policy::from_hex`]).

use std::net::Ipv6Addr;
use std::str::FromStr;

use super::hmac;
use super::prefix::Ipv6Prefix;
use super::srh::{SrhRepr, FLAG_HMAC};
use super::tlv::TlvRepr;

/// What to do when a matching path cannot be attached to a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Log and let the call go on without an SRH.
    #[default]
    Open,
    /// Fail the call with the error of the attach, and log.
    Closed,
}

impl FromStr for FailMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(FailMode::Open),
            "closed" => Ok(FailMode::Closed),
            _ => Err(format!("{s:?} is not a failure policy: use open or closed")),
        }
    }
}

/// Which sockets a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    /// TCP sockets only.
    #[default]
    Tcp,
    /// UDP sockets only.
    Udp,
    /// Both.
    Any,
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "any" => Ok(Proto::Any),
            _ => Err(format!("{s:?} is not a protocol: use tcp, udp or any")),
        }
    }
}

impl Proto {
    /// The name used in policy files, `SRV6_PROTO` and logs.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Any => "any",
        }
    }

    /// Whether a socket of protocol `p` (`Tcp` or `Udp`) is covered.
    pub fn covers(self, p: Proto) -> bool {
        self == Proto::Any || self == p
    }
}

/// The return path of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnPath {
    /// The forward waypoints, backwards.
    Reverse,
    /// No return-path TLV.
    None,
    /// These waypoints, in the order a reply visits them.
    Explicit(Vec<Ipv6Addr>),
}

/// A path: the waypoints to visit and what to put in the SRH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// Waypoints in the order they are visited; the final destination is the address the program connects to.
    pub segments: Vec<Ipv6Addr>,
    /// The return path carried in the return-path TLV.
    pub return_path: ReturnPath,
    /// SRH tag.
    pub tag: u16,
    /// SRH flags.
    pub flags: u8,
    /// Key id of an HMAC TLV: the SRH gets the H flag and a zero digest that Linux computes on send.
    pub hmac_key: Option<u32>,
}

impl Path {
    /// The return waypoints in the order a reply visits them (none: no return-path TLV). Allocates nothing.
    pub fn return_waypoints(&self) -> impl DoubleEndedIterator<Item = Ipv6Addr> + '_ {
        let (backwards, explicit): (&[Ipv6Addr], &[Ipv6Addr]) = match &self.return_path {
            ReturnPath::Reverse => (&self.segments, &[]),
            ReturnPath::None => (&[], &[]),
            ReturnPath::Explicit(v) => (&[], v),
        };
        backwards.iter().rev().chain(explicit).copied()
    }

    /// The SRH that steers a connection to `destination` along this path.
    pub fn srh(&self, destination: Ipv6Addr) -> Result<SrhRepr, super::Error> {
        let mut srh = SrhRepr::for_path(destination, &self.segments)?;
        srh.tag = self.tag;
        srh.flags = self.flags;
        // The TLV lists the reply's waypoints in SRH order: the last one visited first.
        let back: Vec<Ipv6Addr> = self.return_waypoints().rev().collect();
        if !back.is_empty() {
            srh.tlvs.push(TlvRepr::ReturnPath(back));
        }
        if let Some(key_id) = self.hmac_key {
            srh.flags |= FLAG_HMAC;
            srh.tlvs.push(TlvRepr::Hmac { d_flag: false, key_id, digest: vec![0; hmac::DIGEST_LEN] });
        }
        Ok(srh)
    }
}

/// One policy rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Where the rule came from, for logs and `--explain`.
    pub origin: String,
    /// Destination prefix.
    pub dst: Ipv6Prefix,
    /// Destination port, if the rule is limited to one.
    pub port: Option<u16>,
    /// Host name the program resolved, if the rule is limited to one (compared without case).
    pub name: Option<String>,
    /// Socket protocols covered.
    pub proto: Proto,
    /// The path.
    pub path: Path,
}

/// A whole policy: ordered rules and a failure mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Rules, tried in order.
    pub rules: Vec<Rule>,
    /// Failure policy.
    pub fail: FailMode,
}

/// The first bytes of a compiled policy.
pub const MAGIC: [u8; 4] = *b"S6PL";
/// Version of the encoding.
pub const VERSION: u8 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 8;
/// Bytes of a rule before its variable part.
pub const RULE_FIXED: usize = 34;
/// Most rules a compiled policy holds.
pub const MAX_RULES: usize = u16::MAX as usize;

/// What is wrong with a compiled policy; offsets count from its first byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompiledPolicyError {
    /// Fewer bytes than the encoding needs.
    #[error("compiled policy truncated at offset {offset}: {needed} bytes needed, {available} available")]
    Truncated {
        /// Where the missing part starts.
        offset: usize,
        /// Bytes needed from there.
        needed: usize,
        /// Bytes available from there.
        available: usize,
    },
    /// Not a compiled policy, or one of another version.
    #[error("not a compiled policy of version {VERSION} (magic S6PL)")]
    Header,
    /// Bytes after the last rule.
    #[error("compiled policy has {extra} bytes after its last rule at offset {offset}")]
    TrailingBytes {
        /// Where the policy should end.
        offset: usize,
        /// Bytes past it.
        extra: usize,
    },
    /// A field with a value out of range.
    #[error("compiled policy field at offset {offset}: {reason}")]
    Field {
        /// Offset of the field.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A policy that cannot be encoded (too many rules, waypoints, or too long a name).
    #[error("cannot compile the policy: {0}")]
    TooLarge(String),
    /// Not an even number of hex digits.
    #[error("compiled policy is not hex: {0}")]
    Hex(&'static str),
}

/// A checked view of a compiled policy: the header is valid and every rule lies within the buffer.
#[derive(Debug, Clone, Copy)]
pub struct CompiledPolicy<T: AsRef<[u8]>> {
    buffer: T,
}

/// Reads a compiled policy front to back, every read bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CompiledPolicyError> {
        let available = self.bytes.len() - self.offset;
        let out = self.bytes.get(self.offset..self.offset + n).ok_or(CompiledPolicyError::Truncated {
            offset: self.offset,
            needed: n,
            available,
        })?;
        self.offset += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, CompiledPolicyError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, CompiledPolicyError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn addr(&mut self) -> Result<Ipv6Addr, CompiledPolicyError> {
        let b: [u8; 16] = self.take(16)?.try_into().map_err(|_| self.field(16, "address"))?;
        Ok(Ipv6Addr::from(b))
    }

    fn addrs(&mut self, n: u8) -> Result<Vec<Ipv6Addr>, CompiledPolicyError> {
        (0..n).map(|_| self.addr()).collect()
    }

    fn text(&mut self, n: u8, what: &'static str) -> Result<String, CompiledPolicyError> {
        let start = self.offset;
        let b = self.take(usize::from(n))?;
        String::from_utf8(b.to_vec()).map_err(|_| CompiledPolicyError::Field { offset: start, reason: what })
    }

    /// An error about the field that ended `back` bytes ago.
    fn field(&self, back: usize, reason: &'static str) -> CompiledPolicyError {
        CompiledPolicyError::Field { offset: self.offset - back, reason }
    }
}

impl<T: AsRef<[u8]>> CompiledPolicy<T> {
    /// Check `buffer` (header, every rule's bounds and fields, nothing after the last rule) and wrap it.
    pub fn new_checked(buffer: T) -> Result<Self, CompiledPolicyError> {
        let view = CompiledPolicy { buffer };
        view.read()?;
        Ok(view)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn read(&self) -> Result<Policy, CompiledPolicyError> {
        let mut r = Reader { bytes: self.buffer.as_ref(), offset: 0 };
        if r.take(4)? != MAGIC || r.u8()? != VERSION {
            return Err(CompiledPolicyError::Header);
        }
        let fail = match r.u8()? {
            0 => FailMode::Open,
            1 => FailMode::Closed,
            _ => return Err(r.field(1, "failure policy must be 0 (open) or 1 (closed)")),
        };
        let count = r.u16()?;
        let rules = (0..count).map(|_| read_rule(&mut r)).collect::<Result<_, _>>()?;
        let extra = r.bytes.len() - r.offset;
        if extra > 0 {
            return Err(CompiledPolicyError::TrailingBytes { offset: r.offset, extra });
        }
        Ok(Policy { rules, fail })
    }
}

fn read_rule(r: &mut Reader<'_>) -> Result<Rule, CompiledPolicyError> {
    let proto = match r.u8()? {
        0 => Proto::Tcp,
        1 => Proto::Udp,
        2 => Proto::Any,
        _ => return Err(r.field(1, "protocol must be 0 (tcp), 1 (udp) or 2 (any)")),
    };
    let has_port = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(r.field(1, "port flag must be 0 or 1")),
    };
    let port = r.u16()?;
    let dst = r.addr()?;
    let len = r.u8()?;
    let dst = Ipv6Prefix::new(dst, len).map_err(|_| r.field(1, "prefix length must be at most 128"))?;
    let return_kind = r.u8()?;
    if return_kind > 2 {
        return Err(r.field(1, "return path must be 0 (reverse), 1 (none) or 2 (explicit)"));
    }
    let tag = r.u16()?;
    let flags = r.u8()?;
    let has_hmac = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(r.field(1, "HMAC key flag must be 0 or 1")),
    };
    let key = r.take(4)?;
    let hmac_key = has_hmac.then(|| u32::from_be_bytes([key[0], key[1], key[2], key[3]]));
    let (segments, returns, name_len, origin_len) = (r.u8()?, r.u8()?, r.u8()?, r.u8()?);
    if return_kind != 2 && returns != 0 {
        return Err(r.field(3, "return waypoints given for a reverse or empty return path"));
    }
    let segments = r.addrs(segments)?;
    let explicit = r.addrs(returns)?;
    let name = if name_len == 0 { None } else { Some(r.text(name_len, "name is not UTF-8")?) };
    let origin = r.text(origin_len, "origin is not UTF-8")?;
    let return_path = match return_kind {
        0 => ReturnPath::Reverse,
        1 => ReturnPath::None,
        _ => ReturnPath::Explicit(explicit),
    };
    Ok(Rule {
        origin,
        dst,
        port: has_port.then_some(port),
        name,
        proto,
        path: Path { segments, return_path, tag, flags, hmac_key },
    })
}

/// A length that must fit a one-byte field.
fn byte_len(n: usize, what: &str) -> Result<u8, CompiledPolicyError> {
    u8::try_from(n).map_err(|_| CompiledPolicyError::TooLarge(format!("{what}: {n} is more than 255")))
}

impl Policy {
    /// The policy a checked view holds.
    pub fn parse<T: AsRef<[u8]>>(view: &CompiledPolicy<T>) -> Result<Policy, CompiledPolicyError> {
        view.read()
    }

    /// The policy compiled (at most 65 535 rules, 255 waypoints each way, names and origins of 255 bytes).
    pub fn emit(&self) -> Result<Vec<u8>, CompiledPolicyError> {
        let count = u16::try_from(self.rules.len())
            .map_err(|_| CompiledPolicyError::TooLarge(format!("{} rules, more than {MAX_RULES}", self.rules.len())))?;
        let mut out = Vec::with_capacity(HEADER_LEN + self.rules.len() * (RULE_FIXED + 64));
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(u8::from(self.fail == FailMode::Closed));
        out.extend_from_slice(&count.to_be_bytes());
        for rule in &self.rules {
            let what = |field: &str| format!("{} {field}", rule.origin);
            let (kind, explicit): (u8, &[Ipv6Addr]) = match &rule.path.return_path {
                ReturnPath::Reverse => (0, &[]),
                ReturnPath::None => (1, &[]),
                ReturnPath::Explicit(v) => (2, v),
            };
            let name = rule.name.as_deref().unwrap_or_default();
            if rule.name.as_deref() == Some("") {
                return Err(CompiledPolicyError::TooLarge(format!("{}: an empty name", rule.origin)));
            }
            out.push(match rule.proto {
                Proto::Tcp => 0,
                Proto::Udp => 1,
                Proto::Any => 2,
            });
            out.push(u8::from(rule.port.is_some()));
            out.extend_from_slice(&rule.port.unwrap_or(0).to_be_bytes());
            out.extend_from_slice(&rule.dst.addr().octets());
            out.push(rule.dst.prefix_len());
            out.push(kind);
            out.extend_from_slice(&rule.path.tag.to_be_bytes());
            out.push(rule.path.flags);
            out.push(u8::from(rule.path.hmac_key.is_some()));
            out.extend_from_slice(&rule.path.hmac_key.unwrap_or(0).to_be_bytes());
            out.push(byte_len(rule.path.segments.len(), &what("waypoints"))?);
            out.push(byte_len(explicit.len(), &what("return waypoints"))?);
            out.push(byte_len(name.len(), &what("name length"))?);
            out.push(byte_len(rule.origin.len(), "rule origin length")?);
            for a in rule.path.segments.iter().chain(explicit) {
                out.extend_from_slice(&a.octets());
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(rule.origin.as_bytes());
        }
        Ok(out)
    }

    /// The compiled policy as lowercase hex, for an environment variable.
    pub fn to_hex(&self) -> Result<String, CompiledPolicyError> {
        Ok(self.emit()?.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The policy from [`Policy::to_hex`]'s text.
    pub fn from_hex(text: &str) -> Result<Policy, CompiledPolicyError> {
        let digits = text.trim().as_bytes();
        if digits.len() % 2 != 0 {
            return Err(CompiledPolicyError::Hex("an odd number of digits"));
        }
        let nibble = |c: u8| (c as char).to_digit(16).ok_or(CompiledPolicyError::Hex("a character is not a hex digit"));
        let bytes = digits
            .chunks_exact(2)
            .map(|p| Ok((nibble(p[0])? << 4 | nibble(p[1])?) as u8))
            .collect::<Result<Vec<u8>, CompiledPolicyError>>()?;
        Policy::parse(&CompiledPolicy::new_checked(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn sample() -> Policy {
        let rule = |origin: &str, return_path, name: Option<&str>, port| Rule {
            origin: origin.to_string(),
            dst: "fc00:4::/64".parse().unwrap(),
            port,
            name: name.map(str::to_string),
            proto: Proto::Any,
            path: Path {
                segments: vec![a("fc00:e1::1"), a("fc00:e2::1")],
                return_path,
                tag: 7,
                flags: 8,
                hmac_key: port.map(u32::from),
            },
        };
        Policy {
            rules: vec![
                rule("SRV6_SEGS", ReturnPath::Reverse, None, None),
                rule("p.toml rule #1", ReturnPath::None, Some("www.example.net"), Some(80)),
                rule("p.toml rule #2", ReturnPath::Explicit(vec![a("fc00:e9::1")]), None, Some(0)),
            ],
            fail: FailMode::Closed,
        }
    }

    #[test]
    fn round_trips() {
        let p = sample();
        let bytes = p.emit().unwrap();
        assert_eq!(Policy::parse(&CompiledPolicy::new_checked(&bytes[..]).unwrap()).unwrap(), p);
        assert_eq!(Policy::from_hex(&p.to_hex().unwrap()).unwrap(), p);
        assert_eq!(Policy::from_hex(&Policy::default().to_hex().unwrap()).unwrap(), Policy::default());
    }

    #[test]
    fn every_truncation_and_extension_is_an_error() {
        let bytes = sample().emit().unwrap();
        for n in 0..bytes.len() {
            let e = CompiledPolicy::new_checked(&bytes[..n]).unwrap_err();
            assert!(matches!(e, CompiledPolicyError::Truncated { .. } | CompiledPolicyError::Header), "{n}: {e}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let e = CompiledPolicy::new_checked(&longer[..]).unwrap_err();
        assert_eq!(e, CompiledPolicyError::TrailingBytes { offset: bytes.len(), extra: 1 });
    }

    #[test]
    fn bad_fields_say_where() {
        let bytes = sample().emit().unwrap();
        let set = |i: usize, v: u8| {
            let mut b = bytes.clone();
            b[i] = v;
            CompiledPolicy::new_checked(b).unwrap_err()
        };
        assert_eq!(set(4, 2), CompiledPolicyError::Header);
        assert!(matches!(set(5, 9), CompiledPolicyError::Field { offset: 5, .. }));
        assert!(matches!(set(HEADER_LEN, 3), CompiledPolicyError::Field { offset: HEADER_LEN, .. }));
        assert!(matches!(set(HEADER_LEN + 20, 129), CompiledPolicyError::Field { offset: 28, .. }));
        assert!(matches!(Policy::from_hex("0"), Err(CompiledPolicyError::Hex(_))));
        assert!(matches!(Policy::from_hex("zz"), Err(CompiledPolicyError::Hex(_))));
    }

    #[test]
    fn what_does_not_fit_is_refused_when_compiling() {
        let mut p = sample();
        p.rules[0].path.segments = vec![a("fc00::1"); 256];
        assert!(matches!(p.emit(), Err(CompiledPolicyError::TooLarge(_))));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Every byte value at every position of a valid policy, and a walk of pseudo-random buffers.
        let bytes = sample().emit().unwrap();
        for i in 0..bytes.len() {
            for v in [0, 1, 2, 3, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = CompiledPolicy::new_checked(&b[..]).map(|v| Policy::parse(&v));
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200 {
            let mut b = MAGIC.to_vec();
            b.extend([VERSION, 0]);
            b.extend((0..len).map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            }));
            let _ = CompiledPolicy::new_checked(&b[..]);
        }
    }
}
