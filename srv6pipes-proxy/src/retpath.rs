//! The return path at a proxy (paper §IV-E; ARCHITECTURE §5 "Return traffic"): what the return-path TLV
//! of a flow's SYN asks of this proxy.
//!
//! * **Downstream function**: the TLV's waypoint that lies in this proxy's prefixes (the one a reply
//!   visits first, if several) is this proxy's *return SID*; its function and argument process the
//!   server → client bytes, and may differ from the forward SID's (asymmetric processing). A TLV that does
//!   not name this proxy keeps the forward function for both directions.
//! * **Reply SRH** (with `--reply-path`): the client-facing socket sends with the SRH of the waypoints
//!   that follow the return SID, then the client, so that an upstream proxy off the routed path still sees
//!   the replies. When the return SID is the last waypoint (the first proxy), none is needed.
//! * **The TLV for the server** (with `--reply-path`): the last proxy keeps the SYN's SRH, segments left 0,
//!   on its outbound leg when the SYN carried a return path, so that the server (under `srv6reply` or
//!   `srv6run --reply-path`) learns it; the segments stay so that the server sees which locators the
//!   forward path visited (the return path's waypoints must share one, see `srv6reply(8)`).
//!
//! A TLV that does not parse, names a waypoint no reply may visit, or would need a longer SRH than the
//! MSS clamp leaves room for is refused: the flow is reset and counted as malformed.

use std::net::Ipv6Addr;

use libsrv6sock::reply::{ReplyPolicy, ReplyRefusal};
use libsrv6sock::wire::prefix::Ipv6Prefix;
use libsrv6sock::wire::reply::{ReturnPath, MAX_REPLY_LEN};
use libsrv6sock::wire::sid::SidLayout;
use libsrv6sock::wire::srh::{SrhRepr, NEXT_HEADER_NONE};

/// Why a return path is refused.
#[derive(Debug, thiserror::Error)]
pub enum ReturnError {
    /// The TLV does not parse or lists a waypoint no reply may visit.
    #[error("return path: {0}")]
    Malformed(#[from] libsrv6sock::wire::Error),
    /// The reply SRH does not fit the MSS clamp.
    #[error("return path: {0}")]
    Refused(#[from] ReplyRefusal),
}

/// This proxy's part of a flow's return path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnPlan {
    /// This proxy's SID in the TLV.
    pub sid: Ipv6Addr,
    /// Function bits of that SID: the downstream function.
    pub function: u64,
    /// Argument bits of that SID.
    pub argument: u64,
    /// SRH for the client-facing socket (`None`: none needed, or `--reply-path` is off).
    pub srh: Option<Vec<u8>>,
}

/// Read the return path of the SYN's SRH `syn` for a flow from `client`. `Ok(None)`: no TLV, or it does not
/// name this proxy. `reply`: `--reply-path`'s policy (the reply SRH is built only with it).
pub fn plan(
    syn: &[u8],
    client: Ipv6Addr,
    prefixes: &[Ipv6Prefix],
    layout: &SidLayout,
    reply: Option<&ReplyPolicy>,
) -> Result<Option<ReturnPlan>, ReturnError> {
    let Some(path) = ReturnPath::find(syn)? else { return Ok(None) };
    let Some(me) = path.position(|w| prefixes.iter().any(|p| p.contains(w))) else { return Ok(None) };
    let Some(sid) = path.get(me) else { return Ok(None) };
    let parts = layout.split(sid);
    let srh = match reply {
        None => None,
        Some(policy) => {
            let mut buf = [0u8; MAX_REPLY_LEN];
            let len = path.emit_srh(me, client, &mut buf)?;
            if len > policy.room() {
                return Err(ReplyRefusal::TooLong { len, room: policy.room() }.into());
            }
            (len > 0).then(|| buf[..len].to_vec())
        }
    };
    Ok(Some(ReturnPlan { sid, function: parts.function, argument: parts.argument, srh }))
}

/// For the last proxy of a path: the SRH of the outbound leg that carries the SYN's TLVs to `server`
/// (the SYN's segments with `server` first, segments left 0), or `None` when the SYN had no return path.
pub fn server_srh(syn: &[u8], server: Ipv6Addr) -> Result<Option<Vec<u8>>, ReturnError> {
    let mut srh = SrhRepr::from_bytes(syn)?;
    srh.strip_hmac();
    if srh.return_path().is_none() {
        return Ok(None);
    }
    let mut segments = srh.segments;
    match segments.first_mut() {
        Some(first) => *first = server,
        None => segments.push(server),
    }
    let out = SrhRepr {
        next_header: NEXT_HEADER_NONE,
        segments_left: 0,
        flags: srh.flags,
        tag: srh.tag,
        segments,
        tlvs: srh.tlvs,
    };
    Ok(Some(out.to_bytes()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use libsrv6sock::wire::tlv::TlvRepr;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn syn(back: Vec<Ipv6Addr>) -> Vec<u8> {
        let mut srh = SrhRepr::for_path(a("fc00:4::2"), &[a("fc00:f1::2:0:5a"), a("fc00:f2::2:0:5a")]).unwrap();
        srh.tlvs.push(TlvRepr::ReturnPath(back));
        srh.segments_left = 0;
        srh.to_bytes().unwrap()
    }

    #[test]
    fn each_proxy_takes_its_part() {
        let (p1, p2, e) = (a("fc00:f1::1:0:0"), a("fc00:f2::2:0:33"), a("fc00:e1::1"));
        // Back: p2 (xor 0x33), then the router's End SID, then p1 (copy).
        let bytes = syn(vec![p1, e, p2]);
        let l = SidLayout::default();
        let policy = ReplyPolicy { allow: vec![], mss: 1200 };
        let client = a("fc00:1::1");
        let pf1: Ipv6Prefix = "fc00:f1::/80".parse().unwrap();
        let pf2: Ipv6Prefix = "fc00:f2::/80".parse().unwrap();
        let at2 = plan(&bytes, client, &[pf2], &l, Some(&policy)).unwrap().unwrap();
        assert_eq!((at2.sid, at2.function, at2.argument), (p2, 2, 0x33));
        let srh = SrhRepr::from_bytes(at2.srh.as_deref().unwrap()).unwrap();
        assert_eq!((srh.segments, srh.segments_left), (vec![client, p1, e], 2));
        let at1 = plan(&bytes, client, &[pf1], &l, Some(&policy)).unwrap().unwrap();
        assert_eq!((at1.function, at1.srh), (1, None));
        // Without --reply-path: the function only.
        assert_eq!(plan(&bytes, client, &[pf2], &l, None).unwrap().unwrap().srh, None);
        // Not named: symmetric.
        let other: Ipv6Prefix = "fc00:f9::/80".parse().unwrap();
        assert_eq!(plan(&bytes, client, &[other], &l, Some(&policy)).unwrap(), None);
        // Too long for the clamp.
        let tight = ReplyPolicy { allow: vec![], mss: 1400 };
        assert!(matches!(plan(&bytes, client, &[pf2], &l, Some(&tight)), Err(ReturnError::Refused(_))));
        // A waypoint no reply may visit.
        assert!(matches!(
            plan(&syn(vec![a("ff02::1"), p2]), client, &[pf2], &l, Some(&policy)),
            Err(ReturnError::Malformed(_))
        ));
    }

    #[test]
    fn the_server_gets_the_tlv() {
        let bytes = syn(vec![a("fc00:f1::1"), a("fc00:f2::1")]);
        let out = SrhRepr::from_bytes(&server_srh(&bytes, a("fc00:4::2")).unwrap().unwrap()).unwrap();
        let forward = [a("fc00:4::2"), a("fc00:f2::2:0:5a"), a("fc00:f1::2:0:5a")];
        assert_eq!((&out.segments[..], out.segments_left), (&forward[..], 0));
        assert_eq!(out.return_path(), Some(&[a("fc00:f1::1"), a("fc00:f2::1")][..]));
        let plain = SrhRepr::for_path(a("fc00:4::2"), &[a("fc00:f1::1")]).unwrap().to_bytes().unwrap();
        assert_eq!(server_srh(&plain, a("fc00:4::2")).unwrap(), None);
    }
}
