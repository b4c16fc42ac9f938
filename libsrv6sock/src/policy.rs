//! Steering policy: rules that map a destination to a path.
//!
//! A policy comes from a TOML file, from the command line (`srv6run --segs …`) or from the environment the
//! shim reads (`SRV6_SEGS`, `SRV6_POLICY`, …). Rules are tried in order; the first that matches wins, and a
//! `--segs` path from the command line or environment goes before the file's rules. The file format:
//!
//! ```toml
//! fail = "closed"                  # optional: what to do when a path cannot be attached (open | closed)
//!
//! [[rule]]
//! dst = "fc00:4::/64"              # optional, default ::/0 (an address alone is a /128)
//! port = 80                        # optional
//! name = "www.example.net"         # optional: the host name the program resolved with getaddrinfo()
//! proto = "tcp"                    # optional: tcp (default), udp or any
//! segments = ["fc00:e1::1", "fc00:e2::1"]   # waypoints in the order they are visited
//! return-path = "reverse"          # optional: "reverse" (default), "none", or waypoints back, in visit order
//! tag = 0                          # optional SRH tag
//! flags = 0                        # optional SRH flags
//! hmac-key = 7                     # optional: key id of an HMAC TLV the kernel fills in (`ip sr hmac`)
//! ```

use std::net::Ipv6Addr;
use std::path::{Path as FsPath, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::wire::hmac;
use crate::wire::prefix::Ipv6Prefix;
use crate::wire::srh::{SrhRepr, FLAG_HMAC};
use crate::wire::tlv::TlvRepr;

/// Environment variable: comma-separated waypoints for every destination (a catch-all first rule) of the
/// sockets `SRV6_PROTO` selects.
pub const ENV_SEGS: &str = "SRV6_SEGS";
/// Environment variable: which sockets `SRV6_SEGS` steers: `tcp` (default), `udp` or `any`.
pub const ENV_PROTO: &str = "SRV6_PROTO";
/// Environment variable: return path for `SRV6_SEGS`: `reverse` (default), `none`, or waypoints back.
pub const ENV_RETURN_PATH: &str = "SRV6_RETURN_PATH";
/// Environment variable: key id of the HMAC TLV every rule's SRH carries (the H flag set, the digest filled
/// in by the kernel with the key `ip sr hmac` configured under that id).
pub const ENV_HMAC_KEY: &str = "SRV6_HMAC_KEY";
/// Environment variable: the policy file.
pub const ENV_POLICY: &str = "SRV6_POLICY";
/// Environment variable: failure policy, `open` or `closed`.
pub const ENV_FAIL: &str = "SRV6_FAIL";
/// Environment variable: decision log, `stderr` or a file path (JSON lines).
pub const ENV_LOG: &str = "SRV6_LOG";
/// System-wide policy file, the last place searched.
pub const SYSTEM_POLICY: &str = "/etc/srv6pipes/policy.toml";

/// Why a policy could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read (the OS error is the source, not repeated in the message).
    #[error("cannot read policy file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys (the message gives line and column).
    #[error("policy file {path}: {message}")]
    Syntax {
        /// The file, or `<string>`.
        path: String,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// A rule that parses but makes no sense.
    #[error("{origin}: {reason}")]
    Rule {
        /// Where the rule came from (`policy.toml rule #2`, `SRV6_SEGS`, …).
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// An environment variable with a bad value.
    #[error("{var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// What to do when a matching path cannot be attached to a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl FromStr for ReturnPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "reverse" | "" => Ok(ReturnPath::Reverse),
            "none" => Ok(ReturnPath::None),
            list => parse_addrs(list).map(ReturnPath::Explicit),
        }
    }
}

/// Parse a comma-separated list of IPv6 addresses (spaces around them allowed). An empty element
/// (`fc00::1,,fc00::2`, a trailing comma) is an error: it is a typo, not a segment to skip.
pub fn parse_addrs(list: &str) -> Result<Vec<Ipv6Addr>, String> {
    list.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, s)| {
            if s.is_empty() {
                return Err(format!("element {} of {list:?} is empty", i + 1));
            }
            s.parse().map_err(|_| format!("{s:?} is not an IPv6 address"))
        })
        .collect()
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
    pub fn srh(&self, destination: Ipv6Addr) -> Result<SrhRepr, crate::wire::Error> {
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

impl Rule {
    /// Whether the rule covers a `proto` socket to `[addr]:port` that the program resolved from `name`.
    pub fn matches(&self, proto: Proto, addr: Ipv6Addr, port: u16, name: Option<&str>) -> bool {
        self.proto.covers(proto)
            && self.dst.contains(addr)
            && self.port.is_none_or(|p| p == port)
            && self.name.as_deref().is_none_or(|want| name.is_some_and(|n| names_equal(want, n)))
    }
}

/// Host-name comparison: ASCII case-insensitive, a trailing dot ignored.
pub fn names_equal(a: &str, b: &str) -> bool {
    a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// A whole policy: ordered rules and a failure mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Rules, tried in order.
    pub rules: Vec<Rule>,
    /// Failure policy.
    pub fail: FailMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    fail: Option<FailMode>,
    #[serde(default)]
    rule: Vec<FileRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileRule {
    dst: Option<Ipv6Prefix>,
    port: Option<u16>,
    name: Option<String>,
    #[serde(default)]
    proto: Proto,
    segments: Vec<Ipv6Addr>,
    return_path: Option<FileReturnPath>,
    #[serde(default)]
    tag: u16,
    #[serde(default)]
    flags: u8,
    hmac_key: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileReturnPath {
    Keyword(String),
    List(Vec<Ipv6Addr>),
}

impl Policy {
    /// Parse a policy from TOML text; `origin` names it in errors (a file path).
    pub fn from_toml(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let file: FileFormat = toml::from_str(text)
            .map_err(|e| PolicyError::Syntax { path: origin.to_string(), message: e.to_string() })?;
        let rules = file
            .rule
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let origin = format!("{origin} rule #{}", i + 1);
                let return_path = match r.return_path {
                    None => ReturnPath::Reverse,
                    Some(FileReturnPath::List(v)) => ReturnPath::Explicit(v),
                    Some(FileReturnPath::Keyword(k)) => match k.as_str() {
                        "reverse" => ReturnPath::Reverse,
                        "none" => ReturnPath::None,
                        other => {
                            return Err(PolicyError::Rule {
                                origin,
                                reason: format!(
                                    "return-path {other:?}: use \"reverse\", \"none\" or a list of addresses"
                                ),
                            })
                        }
                    },
                };
                let rule = Rule {
                    dst: r.dst.unwrap_or(Ipv6Prefix::new(Ipv6Addr::UNSPECIFIED, 0).expect("/0 is valid")),
                    port: r.port,
                    name: r.name,
                    proto: r.proto,
                    path: Path { segments: r.segments, return_path, tag: r.tag, flags: r.flags, hmac_key: r.hmac_key },
                    origin,
                };
                rule.validate()?;
                Ok(rule)
            })
            .collect::<Result<_, _>>()?;
        Ok(Policy { rules, fail: file.fail.unwrap_or_default() })
    }

    /// Read a policy file.
    pub fn from_file(path: &FsPath) -> Result<Policy, PolicyError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PolicyError::Io { path: path.to_path_buf(), source })?;
        Policy::from_toml(&text, &path.display().to_string())
    }

    /// The first rule covering a `proto` socket to `[addr]:port` resolved from `name`, with its index.
    pub fn lookup(&self, proto: Proto, addr: Ipv6Addr, port: u16, name: Option<&str>) -> Option<(usize, &Rule)> {
        self.rules.iter().enumerate().find(|(_, r)| r.matches(proto, addr, port, name))
    }

    /// Build the settings the shim uses from environment variables (`get` looks one up), searching the policy
    /// file as documented in `libsrv6sock(7)`: `SRV6_POLICY`, then the user's, then the system's.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Policy, PolicyError> {
        let mut policy = match find_policy_file(&get)? {
            Some(path) => Policy::from_file(&path)?,
            None => Policy::default(),
        };
        if let Some(segs) = get(ENV_SEGS).filter(|s| !s.trim().is_empty()) {
            let env_err = |var, value: &str, reason| PolicyError::Env { var, value: value.to_string(), reason };
            let segments = parse_addrs(&segs).map_err(|r| env_err(ENV_SEGS, &segs, r))?;
            let rp = get(ENV_RETURN_PATH).unwrap_or_default();
            let return_path = rp.parse().map_err(|r| env_err(ENV_RETURN_PATH, &rp, r))?;
            let proto = match get(ENV_PROTO).filter(|s| !s.is_empty()) {
                Some(p) => p.parse().map_err(|r| env_err(ENV_PROTO, &p, r))?,
                None => Proto::Tcp,
            };
            let rule = Rule {
                origin: ENV_SEGS.to_string(),
                dst: Ipv6Prefix::new(Ipv6Addr::UNSPECIFIED, 0).expect("/0 is valid"),
                port: None,
                name: None,
                proto,
                path: Path { segments, return_path, tag: 0, flags: 0, hmac_key: None },
            };
            rule.validate()?;
            policy.rules.insert(0, rule);
        }
        if let Some(k) = get(ENV_HMAC_KEY).filter(|s| !s.is_empty()) {
            let key_id = k.parse().map_err(|_| PolicyError::Env {
                var: ENV_HMAC_KEY,
                value: k.clone(),
                reason: "not a key id (0 to 4294967295)".into(),
            })?;
            for r in &mut policy.rules {
                r.path.hmac_key = Some(key_id);
            }
        }
        if let Some(f) = get(ENV_FAIL).filter(|s| !s.is_empty()) {
            policy.fail = f.parse().map_err(|reason| PolicyError::Env { var: ENV_FAIL, value: f.clone(), reason })?;
        }
        Ok(policy)
    }
}

impl Rule {
    /// Check that the rule's path can be encoded (an SRH holds 128 segments and 2 KiB; a TLV 255 bytes).
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |reason: String| PolicyError::Rule { origin: self.origin.clone(), reason };
        if self.path.segments.is_empty() {
            return Err(bad("segments is empty: give at least one waypoint".into()));
        }
        let srh = self.path.srh(Ipv6Addr::UNSPECIFIED).map_err(|e| bad(e.to_string()))?;
        srh.buffer_len().map_err(|e| bad(e.to_string()))?;
        Ok(())
    }
}

/// The policy file to read: `SRV6_POLICY` (which must exist), else `$XDG_CONFIG_HOME/srv6pipes/policy.toml`
/// (or `~/.config/…`), else [`SYSTEM_POLICY`], else none.
pub fn find_policy_file(get: impl Fn(&str) -> Option<String>) -> Result<Option<PathBuf>, PolicyError> {
    if let Some(p) = get(ENV_POLICY).filter(|s| !s.is_empty()) {
        let path = PathBuf::from(p);
        return match path.metadata() {
            Ok(_) => Ok(Some(path)),
            Err(source) => Err(PolicyError::Io { path, source }),
        };
    }
    let user = get("XDG_CONFIG_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| get("HOME").filter(|s| !s.is_empty()).map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("srv6pipes/policy.toml"));
    Ok(user.into_iter().chain([PathBuf::from(SYSTEM_POLICY)]).find(|p| p.is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    const FILE: &str = r#"
fail = "closed"
[[rule]]
dst = "fc00:4::/64"
port = 80
segments = ["fc00:e1::1", "fc00:e2::1"]
tag = 7

[[rule]]
name = "db.example."
proto = "any"
segments = ["fc00:e3::1"]
return-path = "none"

[[rule]]
dst = "fc00:5::1"
segments = ["fc00:e1::1"]
return-path = ["fc00:e9::1", "fc00:e8::1"]
"#;

    #[test]
    fn file_rules_match_in_order() {
        let p = Policy::from_toml(FILE, "test.toml").unwrap();
        assert_eq!(p.fail, FailMode::Closed);
        let (i, r) = p.lookup(Proto::Tcp, a("fc00:4::2"), 80, None).unwrap();
        assert_eq!((i, r.path.tag), (0, 7));
        assert!(p.lookup(Proto::Tcp, a("fc00:4::2"), 81, None).is_none());
        assert!(p.lookup(Proto::Udp, a("fc00:4::2"), 80, None).is_none());
        assert_eq!(p.lookup(Proto::Udp, a("2001:db8::1"), 53, Some("DB.example")).unwrap().0, 1);
        assert_eq!(p.lookup(Proto::Tcp, a("fc00:5::1"), 1, None).unwrap().0, 2);
    }

    #[test]
    fn srh_carries_return_path_in_srh_order() {
        let p = Policy::from_toml(FILE, "test.toml").unwrap();
        let srh = p.rules[0].path.srh(a("fc00:4::2")).unwrap();
        assert_eq!(srh.segments, vec![a("fc00:4::2"), a("fc00:e2::1"), a("fc00:e1::1")]);
        // The reply visits e2 then e1; in SRH order the last visited comes first.
        assert_eq!(srh.return_path(), Some(&[a("fc00:e1::1"), a("fc00:e2::1")][..]));
        assert_eq!(p.rules[1].path.srh(a("::1")).unwrap().return_path(), None);
        let explicit = p.rules[2].path.srh(a("fc00:5::1")).unwrap();
        assert_eq!(explicit.return_path(), Some(&[a("fc00:e8::1"), a("fc00:e9::1")][..]));
    }

    #[test]
    fn hmac_key_makes_the_kernel_sign_every_rule() {
        let env = |k: &str| match k {
            ENV_SEGS => Some("fc00:e1::1".to_string()),
            ENV_HMAC_KEY => Some("7".to_string()),
            _ => None,
        };
        let p = Policy::from_env(env).unwrap();
        let bytes = p.rules[0].path.srh(a("fc00:4::2")).unwrap().to_bytes().unwrap();
        let srh = crate::wire::srh::Srh::new_checked(&bytes[..]).unwrap();
        let tlv = hmac::find(&srh).expect("an HMAC TLV where Linux fills it in");
        assert_eq!((tlv.key_id(), tlv.digest()), (7, &[0u8; hmac::DIGEST_LEN][..]));
        let bad = Policy::from_env(|k| match k {
            ENV_HMAC_KEY => Some("x".to_string()),
            _ => env(k),
        });
        assert!(matches!(bad, Err(PolicyError::Env { var: ENV_HMAC_KEY, .. })));
    }

    #[test]
    fn errors_say_where() {
        let e = Policy::from_toml("[[rule]]\nsegments = [\"fc00::1\"]\nport = \"x\"\n", "p.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("p.toml") && msg.contains("line 3"), "{msg}");
        let e = Policy::from_toml("[[rule]]\nsegments = []\n", "p.toml").unwrap_err();
        assert!(e.to_string().contains("p.toml rule #1"), "{e}");
        let e = Policy::from_toml("[[rule]]\nsegs = [\"fc00::1\"]\n", "p.toml").unwrap_err();
        assert!(e.to_string().contains("unknown field `segs`"), "{e}");
    }

    #[test]
    fn environment_rule_goes_first_and_overrides_fail() {
        let env = |k: &str| match k {
            ENV_SEGS => Some("fc00:e1::1, fc00:e2::1".to_string()),
            ENV_RETURN_PATH => Some("none".to_string()),
            ENV_FAIL => Some("closed".to_string()),
            _ => None,
        };
        let p = Policy::from_env(env).unwrap();
        assert_eq!(p.fail, FailMode::Closed);
        assert_eq!(p.rules[0].origin, ENV_SEGS);
        assert_eq!(p.rules[0].path.segments, vec![a("fc00:e1::1"), a("fc00:e2::1")]);
        assert_eq!(p.rules[0].path.return_path, ReturnPath::None);
        let bad = Policy::from_env(|k| (k == ENV_SEGS).then(|| "fc00::1,nope".to_string())).unwrap_err();
        assert!(bad.to_string().contains("\"nope\" is not an IPv6 address"), "{bad}");
        assert_eq!(p.rules[0].proto, Proto::Tcp, "SRV6_SEGS steers TCP unless SRV6_PROTO says otherwise");
    }

    #[test]
    fn empty_list_elements_are_errors() {
        for list in ["fc00::1,,", "fc00::1,", ",fc00::1", "fc00::1, ,fc00::2"] {
            let e = parse_addrs(list).unwrap_err();
            assert!(e.contains("is empty"), "{list:?}: {e}");
        }
        assert_eq!(parse_addrs(" fc00::1 , fc00::2 ").unwrap(), vec![a("fc00::1"), a("fc00::2")]);
        let env = |k: &str| match k {
            ENV_SEGS => Some("fc00:e1::1".to_string()),
            ENV_RETURN_PATH => Some("fc00:e1::1,,".to_string()),
            _ => None,
        };
        let e = Policy::from_env(env).unwrap_err().to_string();
        assert!(e.starts_with("SRV6_RETURN_PATH=") && e.contains("element 2"), "{e}");
    }

    #[test]
    fn proto_selects_the_sockets_of_the_environment_rule() {
        let env = |proto: &'static str| {
            move |k: &str| match k {
                ENV_SEGS => Some("fc00:e1::1".to_string()),
                ENV_PROTO => Some(proto.to_string()),
                _ => None,
            }
        };
        let udp = Policy::from_env(env("udp")).unwrap();
        assert!(udp.lookup(Proto::Udp, a("fc00:4::2"), 53, None).is_some());
        assert!(udp.lookup(Proto::Tcp, a("fc00:4::2"), 80, None).is_none());
        let any = Policy::from_env(env("any")).unwrap();
        assert!(any.lookup(Proto::Tcp, a("fc00:4::2"), 80, None).is_some());
        let e = Policy::from_env(env("sctp")).unwrap_err().to_string();
        assert!(e.contains("SRV6_PROTO") && e.contains("tcp, udp or any"), "{e}");
    }

    #[test]
    fn missing_policy_file_says_the_os_error_once() {
        let e = Policy::from_env(|k| (k == ENV_POLICY).then(|| "/nonexistent/p.toml".to_string())).unwrap_err();
        let chain = format!("{e}: {}", std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default());
        assert_eq!(chain.matches("No such file or directory").count(), 1, "{chain}");
    }
}
