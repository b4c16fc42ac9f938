//! Access control at flow admission: which clients may use a SID, towards which next segments (or final
//! destinations), and whether the SYN's SRH must carry a valid HMAC TLV.
//!
//! Lists are per proxy (`--allow-clients`, `--allow-next`) and per SID prefix (`[[access]]` in the
//! configuration file: a locator, or a function's SIDs such as `fc00:f1::2:0:0/96`); the first `[[access]]`
//! rule whose prefix holds the flow's SID decides, a list it does not give falling back to the proxy's.
//! An absent list allows every address: by default the proxy relays any client to any next segment
//! except its own SIDs, and says so at start.
//!
//! HMAC (`--require-hmac KEYFILE`) follows Linux (`net/ipv6/seg6_hmac.c`, see `libsrv6sock::wire::hmac`):
//! the TLV counts only with the H flag and in the SRH's last 40 bytes, and its digest is HMAC-SHA256 over
//! the client's address, last entry, flags, key id and every segment. The proxy strips the TLV from the
//! SRH it re-attaches (`flow::route`): the next hops see an unsigned SRH.

use std::net::Ipv6Addr;

use hmac::{Hmac, Mac};
use libsrv6sock::hmac_keys::HmacKeys;
use libsrv6sock::wire::hmac as hmac_tlv;
use libsrv6sock::wire::prefix::Ipv6Prefix;
use libsrv6sock::wire::srh::Srh;
use serde::Deserialize;
use sha2::Sha256;

/// Allowed addresses; `None`: any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow {
    /// Client (source) prefixes.
    pub clients: Option<Vec<Ipv6Prefix>>,
    /// Prefixes of the next leg's destination: the segment after this proxy's SID, or the final destination.
    pub next: Option<Vec<Ipv6Prefix>>,
}

/// One `[[access]]` rule of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidRule {
    /// The SIDs it covers.
    pub sids: Ipv6Prefix,
    /// Client prefixes allowed to use them (default: the proxy's list).
    pub allow_clients: Option<Vec<Ipv6Prefix>>,
    /// Next-segment or destination prefixes allowed after them (default: the proxy's list).
    pub allow_next: Option<Vec<Ipv6Prefix>>,
}

/// The access policy of a proxy.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The proxy-wide lists.
    pub allow: Allow,
    /// Per SID prefix, first match wins.
    pub rules: Vec<SidRule>,
    /// Keys a SYN's HMAC TLV must verify with; `None`: no HMAC required (nor checked).
    pub hmac: Option<HmacKeys>,
}

/// Why access was denied; each is counted apart (`refused_client`, `refused_next`, `refused_hmac_*`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The client is outside the allowed client prefixes.
    #[error("client {client} is not allowed to use SID {sid}")]
    Client {
        /// The client.
        client: Ipv6Addr,
        /// The SID.
        sid: Ipv6Addr,
    },
    /// The next segment or destination is outside the allowed prefixes.
    #[error("next segment {next} is not allowed after SID {sid}")]
    Next {
        /// The next leg's destination.
        next: Ipv6Addr,
        /// The SID.
        sid: Ipv6Addr,
    },
    /// No HMAC TLV (as Linux finds one: H flag set, TLV in the SRH's last 40 bytes).
    #[error("the SRH carries no HMAC TLV (H flag and a type 5 TLV in its last 40 bytes)")]
    HmacMissing,
    /// The key id is not in the key file.
    #[error("HMAC key id {0} is not in the key file")]
    HmacKey(u32),
    /// The digest does not verify.
    #[error("HMAC with key id {0} does not verify (segment list, flags or source altered, or another secret)")]
    HmacWrong(u32),
}

impl Access {
    /// Whether any client may use any SID towards anywhere (no list, no HMAC).
    pub fn is_open(&self) -> bool {
        let rule_open = |r: &SidRule| r.allow_clients.is_none() && r.allow_next.is_none();
        self.allow == Allow::default() && self.rules.iter().all(rule_open) && self.hmac.is_none()
    }

    /// Admit a flow of `client` through our `sid` whose next leg goes to `next`; `srh` is the SYN's SRH.
    pub fn check(&self, srh: &[u8], client: Ipv6Addr, sid: Ipv6Addr, next: Ipv6Addr) -> Result<(), Denied> {
        if let Some(keys) = &self.hmac {
            verify_hmac(keys, srh, client)?;
        }
        let rule = self.rules.iter().find(|r| r.sids.contains(sid));
        let clients = rule.and_then(|r| r.allow_clients.as_ref()).or(self.allow.clients.as_ref());
        let nexts = rule.and_then(|r| r.allow_next.as_ref()).or(self.allow.next.as_ref());
        let allowed = |list: Option<&Vec<Ipv6Prefix>>, a| list.is_none_or(|l| l.iter().any(|p| p.contains(a)));
        if !allowed(clients, client) {
            return Err(Denied::Client { client, sid });
        }
        if !allowed(nexts, next) {
            return Err(Denied::Next { next, sid });
        }
        Ok(())
    }
}

/// Check the HMAC TLV of `srh` (from `source`) against `keys`, as Linux's `seg6_hmac_validate_skb` does.
pub fn verify_hmac(keys: &HmacKeys, srh: &[u8], source: Ipv6Addr) -> Result<(), Denied> {
    let view = Srh::new_checked(srh).map_err(|_| Denied::HmacMissing)?;
    let tlv = hmac_tlv::find(&view).ok_or(Denied::HmacMissing)?;
    let key_id = tlv.key_id();
    let secret = keys.get(key_id).ok_or(Denied::HmacKey(key_id))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Denied::HmacKey(key_id))?;
    mac.update(&hmac_tlv::text(&view, source, key_id));
    // SHA-256 gives exactly the 32 bytes of the field: compared whole, in constant time.
    mac.verify_slice(tlv.digest()).map_err(|_| Denied::HmacWrong(key_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use libsrv6sock::wire::srh::{SrhRepr, FLAG_HMAC};
    use libsrv6sock::wire::tlv::TlvRepr;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn p(s: &str) -> Ipv6Prefix {
        s.parse().unwrap()
    }

    /// An SRH signed as `ip sr hmac` signs it (the digest checked against Linux's in tests/proxy_access.rs).
    fn signed(keys: &HmacKeys, key_id: u32, source: Ipv6Addr) -> Vec<u8> {
        let mut r = SrhRepr::for_path(a("fc00:4::2"), &[a("fc00:f1::1:0:0"), a("fc00:f2::1:0:0")]).unwrap();
        r.flags = FLAG_HMAC;
        r.tlvs.push(TlvRepr::Hmac { d_flag: false, key_id, digest: vec![0; 32] });
        let mut bytes = r.to_bytes().unwrap();
        let text = hmac_tlv::text(&Srh::new_checked(&bytes[..]).unwrap(), source, key_id);
        let mut mac = Hmac::<Sha256>::new_from_slice(keys.get(key_id).unwrap_or(b"other")).unwrap();
        mac.update(&text);
        let n = bytes.len();
        let mut tlv = hmac_tlv::HmacTlv::new_checked(&mut bytes[n - hmac_tlv::TLV_LEN..]).unwrap();
        tlv.set_digest(&mac.finalize().into_bytes().into());
        bytes
    }

    #[test]
    fn hmac_missing_unknown_wrong_and_right() {
        let keys = HmacKeys::parse("7 s3cret\n", "k").unwrap();
        let client = a("fc00:1::1");
        let good = signed(&keys, 7, client);
        assert_eq!(verify_hmac(&keys, &good, client), Ok(()));
        assert_eq!(verify_hmac(&keys, &good, a("fc00:1::9")), Err(Denied::HmacWrong(7)), "another source");
        let mut tampered = good.clone();
        tampered[8 + 16 + 11] ^= 1;
        assert_eq!(verify_hmac(&keys, &tampered, client), Err(Denied::HmacWrong(7)));
        assert_eq!(verify_hmac(&keys, &signed(&keys, 8, client), client), Err(Denied::HmacKey(8)));
        let plain = SrhRepr::for_path(a("fc00:4::2"), &[a("fc00:f1::1:0:0")]).unwrap().to_bytes().unwrap();
        assert_eq!(verify_hmac(&keys, &plain, client), Err(Denied::HmacMissing));
        let mut no_flag = good;
        no_flag[5] = 0;
        assert_eq!(verify_hmac(&keys, &no_flag, client), Err(Denied::HmacMissing));
    }

    #[test]
    fn sid_rules_override_the_proxy_lists() {
        let access = Access {
            allow: Allow { clients: Some(vec![p("fc00:1::/64")]), next: None },
            rules: vec![SidRule {
                sids: p("fc00:f1::2:0:0/96"),
                allow_clients: Some(vec![p("fc00:9::/64")]),
                allow_next: Some(vec![p("fc00:f2::/80")]),
            }],
            hmac: None,
        };
        let (me, other) = (a("fc00:1::1"), a("fc00:9::1"));
        let (copy, xor) = (a("fc00:f1::1:0:0"), a("fc00:f1::2:0:5a"));
        assert_eq!(access.check(&[], me, copy, a("fc00:4::2")), Ok(()));
        assert_eq!(access.check(&[], other, copy, a("fc00:4::2")), Err(Denied::Client { client: other, sid: copy }));
        assert_eq!(access.check(&[], me, xor, a("fc00:f2::1:0:0")), Err(Denied::Client { client: me, sid: xor }));
        assert_eq!(access.check(&[], other, xor, a("fc00:f2::1:0:0")), Ok(()));
        let dst = a("fc00:4::2");
        assert_eq!(access.check(&[], other, xor, dst), Err(Denied::Next { next: dst, sid: xor }));
        assert!(!access.is_open());
        assert!(Access::default().is_open());
    }
}
