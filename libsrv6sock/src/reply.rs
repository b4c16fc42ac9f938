//! Replying along the return path: what a server under the shim trusts from the return-path TLV of a
//! SYN, and how an operator restricts it (`SRV6_REPLY*`, `srv6run --reply-path`, `libsrv6sock(7)`).
//!
//! A server trusts a TLV only as a list of unicast waypoints ([`crate::wire::reply`] refuses the others).
//! The operator may also require every waypoint to lie in given prefixes ([`ENV_REPLY_ALLOW`]), and bounds
//! the SRH by the MSS clamp ([`ENV_REPLY_MSS`]): the room the clamp leaves in a 1500-byte packet is the
//! longest SRH a reply may carry. A refused flow is reset, logged and counted.

use std::net::Ipv6Addr;

use crate::policy::PolicyError;
use crate::wire::prefix::Ipv6Prefix;
use crate::wire::reply::ReturnPath;

/// Environment variable: `1` (or `on`, `yes`, `true`) makes the shim reply along the return-path TLV of each
/// SYN; `0`, `off`, `no`, `false` or unset: not.
pub const ENV_REPLY: &str = "SRV6_REPLY";
/// Environment variable: comma-separated prefixes every return waypoint must lie in (default: any).
pub const ENV_REPLY_ALLOW: &str = "SRV6_REPLY_ALLOW";
/// Environment variable: the MSS (`TCP_MAXSEG`) set on listening sockets (default [`DEFAULT_MSS`]).
pub const ENV_REPLY_MSS: &str = "SRV6_REPLY_MSS";
/// Default MSS clamp: leaves 240 bytes of a 1500-byte packet for the SRH (14 waypoints and the client).
pub const DEFAULT_MSS: u16 = 1200;
/// MSS of a 1500-byte IPv6 packet without extension headers (1500 - 40 - 20).
const MSS_AT_1500: usize = 1440;

/// How a server replies along return paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyPolicy {
    /// Prefixes every waypoint must lie in; empty: any unicast waypoint.
    pub allow: Vec<Ipv6Prefix>,
    /// `TCP_MAXSEG` for listening sockets.
    pub mss: u16,
}

/// Why a return path is not installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyRefusal {
    /// A waypoint outside the allowed prefixes.
    #[error("waypoint {0} is not in the allowed prefixes")]
    NotAllowed(Ipv6Addr),
    /// The SRH would not fit in the room the MSS clamp leaves.
    #[error("a reply SRH of {len} bytes does not fit the {room} bytes the MSS clamp leaves")]
    TooLong {
        /// Bytes of the reply SRH.
        len: usize,
        /// Bytes the clamp leaves.
        room: usize,
    },
}

impl ReplyPolicy {
    /// Read `SRV6_REPLY*` (`get` looks one up); `None` when replying along return paths is off.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<ReplyPolicy>, PolicyError> {
        let env_err = |var, value: &str, reason: String| PolicyError::Env { var, value: value.to_string(), reason };
        // The words clap's boolish parser takes, so that srv6run and the shim read the variable alike.
        match get(ENV_REPLY).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "0" | "off" | "no" | "n" | "false") => return Ok(None),
            Some("1" | "on" | "yes" | "y" | "true") => {}
            Some(other) => return Err(env_err(ENV_REPLY, other, "use 1 (reply along the return path) or 0".into())),
        }
        let allow = match get(ENV_REPLY_ALLOW).filter(|s| !s.trim().is_empty()) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|p| p.trim().parse::<Ipv6Prefix>().map_err(|e| env_err(ENV_REPLY_ALLOW, &list, e.to_string())))
                .collect::<Result<_, _>>()?,
        };
        let mss = match get(ENV_REPLY_MSS).filter(|s| !s.trim().is_empty()) {
            None => DEFAULT_MSS,
            Some(m) => m
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|v| (536..=1440).contains(v))
                .ok_or_else(|| env_err(ENV_REPLY_MSS, &m, "an MSS from 536 to 1440".into()))?,
        };
        Ok(Some(ReplyPolicy { allow, mss }))
    }

    /// Bytes of a 1500-byte packet the MSS clamp leaves for the SRH.
    pub fn room(&self) -> usize {
        MSS_AT_1500.saturating_sub(self.mss as usize)
    }

    /// Whether the reply SRH for `path` (all its waypoints and the client) may be installed. Allocates nothing.
    pub fn check(&self, path: &ReturnPath<'_>) -> Result<(), ReplyRefusal> {
        if !self.allow.is_empty() {
            if let Some(w) = path.iter().find(|w| !self.allow.iter().any(|p| p.contains(*w))) {
                return Err(ReplyRefusal::NotAllowed(w));
            }
        }
        let len = 8 + 16 * (path.len() + 1);
        if len > self.room() {
            return Err(ReplyRefusal::TooLong { len, room: self.room() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::srh::SrhRepr;
    use crate::wire::tlv::TlvRepr;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn env_and_checks() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(ReplyPolicy::from_env(env(&[])).unwrap(), None);
        assert!(ReplyPolicy::from_env(env(&[(ENV_REPLY, "tlv")])).is_err());
        assert!(ReplyPolicy::from_env(env(&[(ENV_REPLY, "Off")])).unwrap().is_none());
        assert!(ReplyPolicy::from_env(env(&[(ENV_REPLY, "1"), (ENV_REPLY_MSS, "100")])).is_err());
        assert!(ReplyPolicy::from_env(env(&[(ENV_REPLY, "1"), (ENV_REPLY_ALLOW, "fc00::/ 7x")])).is_err());
        let p = ReplyPolicy::from_env(env(&[(ENV_REPLY, "1"), (ENV_REPLY_ALLOW, "fc00:f1::/64, fc00:e1::/64")]))
            .unwrap()
            .unwrap();
        assert_eq!((p.mss, p.allow.len(), p.room()), (DEFAULT_MSS, 2, 240));
        let syn = |back: Vec<Ipv6Addr>| {
            let mut s = SrhRepr::for_path(a("fc00:4::2"), &[a("fc00:e1::1")]).unwrap();
            s.tlvs.push(TlvRepr::ReturnPath(back));
            s.to_bytes().unwrap()
        };
        let ok = syn(vec![a("fc00:f1::1"), a("fc00:e1::1")]);
        assert_eq!(p.check(&ReturnPath::find(&ok).unwrap().unwrap()), Ok(()));
        let out = syn(vec![a("fc00:f9::1")]);
        assert_eq!(p.check(&ReturnPath::find(&out).unwrap().unwrap()), Err(ReplyRefusal::NotAllowed(a("fc00:f9::1"))));
        let tight = ReplyPolicy { allow: vec![], mss: 1400 };
        assert_eq!(
            tight.check(&ReturnPath::find(&ok).unwrap().unwrap()),
            Err(ReplyRefusal::TooLong { len: 56, room: 40 })
        );
    }
}
