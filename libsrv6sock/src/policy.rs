//! Steering policy: rules that map a destination to a path.
//!
//! The rules themselves and their compiled form are data in [`crate::wire::policy`]; this module matches them
//! and builds them from the environment. A policy comes from a TOML file (read by `srv6run` only, which hands
//! the shim the compiled form in `SRV6_COMPILED_POLICY`), from the command line (`srv6run --segs …`) or from
//! the environment the shim reads (`SRV6_SEGS`, …). Rules are tried in order; the first that matches wins,
//! and a `--segs` path from the command line or environment goes before the file's rules.

use std::net::Ipv6Addr;
use std::str::FromStr;

use crate::wire::policy::CompiledPolicyError;
pub use crate::wire::policy::{FailMode, Path, Policy, Proto, ReturnPath, Rule};
use crate::wire::prefix::Ipv6Prefix;
use crate::wire::reply::MAX_WAYPOINTS;
use crate::wire::{Error as WireError, WaypointFault};

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
/// Environment variable: the policy file (TOML), which `srv6run` reads and compiles; the shim refuses it.
pub const ENV_POLICY: &str = "SRV6_POLICY";
/// Environment variable: the whole policy, compiled by `srv6run` (hex of [`crate::wire::policy`]'s
/// encoding); when set, the shim reads nothing else of the policy.
pub const ENV_COMPILED_POLICY: &str = "SRV6_COMPILED_POLICY";
/// Environment variable: failure policy, `open` or `closed`.
pub const ENV_FAIL: &str = "SRV6_FAIL";
/// Environment variable: decision log, `stderr` or a file path (JSON lines).
pub const ENV_LOG: &str = "SRV6_LOG";
/// System-wide policy file, the last place `srv6run` searches.
pub const SYSTEM_POLICY: &str = "/etc/srv6pipes/policy.toml";

/// Why a policy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
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
    /// `SRV6_COMPILED_POLICY` cannot be decoded.
    #[error("{ENV_COMPILED_POLICY}: {0}")]
    Compiled(#[source] CompiledPolicyError),
    /// `SRV6_POLICY` names a TOML file but nothing compiled it (the shim preloaded by hand).
    #[error(
        "{ENV_POLICY}={path:?}: libsrv6sock.so does not read policy files; run the program under srv6run \
         (srv6run --policy {path} -- PROGRAM), which compiles the policy into {ENV_COMPILED_POLICY}"
    )]
    NotCompiled {
        /// The file.
        path: String,
    },
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

impl Policy {
    /// The first rule covering a `proto` socket to `[addr]:port` resolved from `name`, with its index.
    pub fn lookup(&self, proto: Proto, addr: Ipv6Addr, port: u16, name: Option<&str>) -> Option<(usize, &Rule)> {
        self.rules.iter().enumerate().find(|(_, r)| r.matches(proto, addr, port, name))
    }

    /// The policy the shim follows, from its environment (`get` looks a variable up): the compiled policy
    /// (`SRV6_COMPILED_POLICY`, complete: srv6run put every rule and the failure policy in it), else the
    /// `SRV6_SEGS` rule and `SRV6_FAIL`. A policy file (`SRV6_POLICY`) with nothing compiled is an error: the
    /// shim has no TOML parser (`libsrv6sock(7)`).
    pub fn for_shim(get: impl Fn(&str) -> Option<String>) -> Result<Policy, PolicyError> {
        if let Some(compiled) = get(ENV_COMPILED_POLICY).filter(|s| !s.is_empty()) {
            return Policy::from_hex(&compiled).map_err(PolicyError::Compiled);
        }
        if let Some(path) = get(ENV_POLICY).filter(|s| !s.is_empty()) {
            return Err(PolicyError::NotCompiled { path });
        }
        Policy::default().with_env(get)
    }

    /// This policy with the environment's settings on top (`get` looks a variable up): the `SRV6_SEGS` rule
    /// (with `SRV6_PROTO` and `SRV6_RETURN_PATH`) first, `SRV6_HMAC_KEY` on every rule, and `SRV6_FAIL`.
    pub fn with_env(mut self, get: impl Fn(&str) -> Option<String>) -> Result<Policy, PolicyError> {
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
            self.rules.insert(0, rule);
        }
        if let Some(k) = get(ENV_HMAC_KEY).filter(|s| !s.is_empty()) {
            let key_id = k.parse().map_err(|_| PolicyError::Env {
                var: ENV_HMAC_KEY,
                value: k.clone(),
                reason: "not a key id (0 to 4294967295)".into(),
            })?;
            for r in &mut self.rules {
                r.path.hmac_key = Some(key_id);
            }
        }
        if let Some(f) = get(ENV_FAIL).filter(|s| !s.is_empty()) {
            self.fail = f.parse().map_err(|reason| PolicyError::Env { var: ENV_FAIL, value: f.clone(), reason })?;
        }
        Ok(self)
    }
}

/// Most waypoints of a path: an SRH holds 128 segments, one of them the destination.
pub const MAX_SEGMENTS: usize = 127;

impl Rule {
    /// Check that the rule's path can be used: every waypoint a routable unicast address, and the SRH
    /// encodable (128 segments, 2 KiB, a return path of at most 15 waypoints). The reasons say what to change.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |reason: String| PolicyError::Rule { origin: self.origin.clone(), reason };
        let segments = &self.path.segments;
        if segments.is_empty() {
            return Err(bad("segments is empty: give at least one waypoint".into()));
        }
        let explicit: &[Ipv6Addr] = match &self.path.return_path {
            ReturnPath::Explicit(v) => v,
            _ => &[],
        };
        for (what, list) in [("waypoint", &segments[..]), ("return waypoint", explicit)] {
            for (i, &addr) in list.iter().enumerate() {
                if let Some(fault) = WaypointFault::of(addr) {
                    return Err(bad(format!(
                        "{what} {} ({addr}) is {} {fault} address: a SID must be a unicast address a packet can be \
                         routed to (global or unique local)",
                        i + 1,
                        if matches!(fault, WaypointFault::Unspecified) { "the" } else { "a" },
                    )));
                }
            }
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(bad(format!(
                "{} waypoints: an SRH holds at most {MAX_SEGMENTS} (128 segments with the destination)",
                segments.len()
            )));
        }
        match &self.path.return_path {
            ReturnPath::Reverse if segments.len() > MAX_WAYPOINTS => {
                return Err(bad(format!(
                    "{} waypoints with a return path: at most {MAX_WAYPOINTS} waypoints with a return path (its TLV \
                     holds {MAX_WAYPOINTS} addresses); use fewer waypoints, or no return path (--return-path none, \
                     return-path = \"none\")",
                    segments.len()
                )))
            }
            ReturnPath::Explicit(v) if v.len() > MAX_WAYPOINTS => {
                return Err(bad(format!(
                    "a return path of {} waypoints: at most {MAX_WAYPOINTS} (its TLV holds {MAX_WAYPOINTS} addresses)",
                    v.len()
                )))
            }
            _ => {}
        }
        let srh = self.path.srh(Ipv6Addr::UNSPECIFIED).map_err(|e| bad(wire_reason(e)))?;
        srh.buffer_len().map_err(|e| bad(wire_reason(e)))?;
        Ok(())
    }
}

/// A codec error as a reason to change the path.
fn wire_reason(e: WireError) -> String {
    match e {
        WireError::TooLong(n) => format!("the SRH would be {n} bytes, more than 2048: use fewer waypoints"),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn environment_rule_goes_first_and_overrides_fail() {
        let env = |k: &str| match k {
            ENV_SEGS => Some("fc00:e1::1, fc00:e2::1".to_string()),
            ENV_RETURN_PATH => Some("none".to_string()),
            ENV_FAIL => Some("closed".to_string()),
            _ => None,
        };
        let p = Policy::default().with_env(env).unwrap();
        assert_eq!(p.fail, FailMode::Closed);
        assert_eq!(p.rules[0].origin, ENV_SEGS);
        assert_eq!(p.rules[0].path.segments, vec![a("fc00:e1::1"), a("fc00:e2::1")]);
        assert_eq!(p.rules[0].path.return_path, ReturnPath::None);
        let bad = Policy::default().with_env(|k| (k == ENV_SEGS).then(|| "fc00::1,nope".to_string())).unwrap_err();
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
        let e = Policy::default().with_env(env).unwrap_err().to_string();
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
        let udp = Policy::default().with_env(env("udp")).unwrap();
        assert!(udp.lookup(Proto::Udp, a("fc00:4::2"), 53, None).is_some());
        assert!(udp.lookup(Proto::Tcp, a("fc00:4::2"), 80, None).is_none());
        let any = Policy::default().with_env(env("any")).unwrap();
        assert!(any.lookup(Proto::Tcp, a("fc00:4::2"), 80, None).is_some());
        let e = Policy::default().with_env(env("sctp")).unwrap_err().to_string();
        assert!(e.contains("SRV6_PROTO") && e.contains("tcp, udp or any"), "{e}");
    }

    #[test]
    fn waypoints_must_be_routable_unicast() {
        let e = Policy::default().with_env(|k| (k == ENV_SEGS).then(|| "ff02::1,::1".to_string())).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("waypoint 1 (ff02::1) is a multicast address") && e.contains("unicast"), "{e}");
        let e = Policy::default().with_env(|k| (k == ENV_SEGS).then(|| "fc00::1,::1".to_string())).unwrap_err();
        assert!(e.to_string().contains("waypoint 2 (::1) is a loopback address"), "{e}");
    }

    #[test]
    fn too_many_waypoints_say_the_limit_and_the_fix() {
        let segs = |n: usize| (1..=n).map(|i| format!("fc00:e{i:x}::1")).collect::<Vec<_>>().join(",");
        let with = |n: usize, rp: &'static str| {
            let list = segs(n);
            Policy::default().with_env(move |k| match k {
                ENV_SEGS => Some(list.clone()),
                ENV_RETURN_PATH => Some(rp.to_string()),
                _ => None,
            })
        };
        assert!(with(15, "reverse").is_ok());
        let e = with(16, "reverse").unwrap_err().to_string();
        assert!(e.contains("at most 15 waypoints with a return path") && e.contains("--return-path none"), "{e}");
        assert!(with(16, "none").is_ok(), "without a return path 16 waypoints fit");
        let e = with(128, "none").unwrap_err().to_string();
        assert!(e.contains("at most 127"), "{e}");
    }

    #[test]
    fn the_shim_reads_the_compiled_policy_and_refuses_a_file() {
        let segs = |k: &str| (k == ENV_SEGS).then(|| "fc00:e1::1".to_string());
        let p = Policy::default().with_env(segs).unwrap();
        let hex = p.to_hex().unwrap();
        let env = |k: &str| match k {
            ENV_COMPILED_POLICY => Some(hex.clone()),
            ENV_POLICY => Some("/etc/p.toml".to_string()),
            _ => None,
        };
        assert_eq!(Policy::for_shim(env).unwrap(), p, "the compiled policy wins over the file");
        let e = Policy::for_shim(|k| (k == ENV_POLICY).then(|| "/etc/p.toml".to_string())).unwrap_err();
        assert!(matches!(e, PolicyError::NotCompiled { .. }) && e.to_string().contains("srv6run"), "{e}");
        let e = Policy::for_shim(|k| (k == ENV_COMPILED_POLICY).then(|| "53".to_string())).unwrap_err();
        assert!(e.to_string().starts_with(ENV_COMPILED_POLICY), "{e}");
        assert_eq!(Policy::for_shim(segs).unwrap(), p, "SRV6_SEGS alone needs no compiling");
    }

    #[test]
    fn hmac_key_makes_the_kernel_sign_every_rule() {
        use crate::wire::hmac;
        let env = |k: &str| match k {
            ENV_SEGS => Some("fc00:e1::1".to_string()),
            ENV_HMAC_KEY => Some("7".to_string()),
            _ => None,
        };
        let p = Policy::default().with_env(env).unwrap();
        let bytes = p.rules[0].path.srh(a("fc00:4::2")).unwrap().to_bytes().unwrap();
        let srh = crate::wire::srh::Srh::new_checked(&bytes[..]).unwrap();
        let tlv = hmac::find(&srh).expect("an HMAC TLV where Linux fills it in");
        assert_eq!((tlv.key_id(), tlv.digest()), (7, &[0u8; hmac::DIGEST_LEN][..]));
        assert_eq!(Policy::from_hex(&p.to_hex().unwrap()).unwrap(), p, "the key id is compiled too");
        let bad = Policy::default().with_env(|k| match k {
            ENV_HMAC_KEY => Some("x".to_string()),
            _ => env(k),
        });
        assert!(matches!(bad, Err(PolicyError::Env { var: ENV_HMAC_KEY, .. })));
    }
}
