//! The SRH of a reply, built from the return-path TLV (type 124) of a received SRH (paper §IV-E), without
//! allocating: the `LD_PRELOAD` shim calls this inside `accept()`.
//!
//! The TLV lists the waypoints a reply visits, in SRH order (the last one before the client first); the
//! client is not listed. A host that replies along it sends with the SRH
//! `[client, tlv[0], …, tlv[upto-1]]`, `segments_left = upto`: a server takes every waypoint
//! (`upto = len`), a proxy the ones after its own SID (`upto` = the index of its SID in the TLV).
//!
//! What a replying host trusts from a TLV: only that the listed addresses are unicast waypoints. A
//! waypoint that is unspecified, loopback, multicast, link-local or IPv4-mapped is refused
//! ([`Error::ReturnPathAddress`]); which waypoints are acceptable beyond that is the caller's policy.

use std::net::Ipv6Addr;

use super::srh::{Srh, FIXED_LEN, NEXT_HEADER_NONE, ROUTING_TYPE_SRH};
use super::tlv::TYPE_RETURN_PATH;
use super::{Error, WaypointFault};

/// Bytes before the addresses in the TLV value (reserved).
const RESERVED: usize = 2;
/// Most waypoints a return-path TLV can list (its value is at most 255 bytes).
pub const MAX_WAYPOINTS: usize = (255 - RESERVED) / 16;
/// Largest reply SRH: the client plus [`MAX_WAYPOINTS`] waypoints.
pub const MAX_REPLY_LEN: usize = FIXED_LEN + 16 * (MAX_WAYPOINTS + 1);

/// The return path of a received SRH: a view of its TLV's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnPath<'a> {
    addrs: &'a [u8],
}

impl<'a> ReturnPath<'a> {
    /// The first return-path TLV of the SRH at the start of `srh`; `None` if it has none. An SRH or a TLV
    /// that does not parse, or a waypoint no reply may visit, is an error.
    pub fn find(srh: &'a [u8]) -> Result<Option<ReturnPath<'a>>, Error> {
        let view = Srh::new_checked(srh)?;
        let base = view.tlv_offset();
        for tlv in view.tlvs() {
            let tlv = tlv?;
            if tlv.tlv_type != TYPE_RETURN_PATH {
                continue;
            }
            let addrs = tlv.value.get(RESERVED..).filter(|a| a.len() % 16 == 0).ok_or(Error::TlvValue {
                offset: base.saturating_add(tlv.offset),
                tlv_type: TYPE_RETURN_PATH,
                reason: "return-path TLV value is not 2 reserved bytes plus 16-byte addresses",
            })?;
            // The value came out of the checked view, so it is tied to `srh`'s lifetime.
            let start = base + tlv.offset + 2 + RESERVED;
            let addrs = srh.get(start..start + addrs.len()).unwrap_or_default();
            let path = ReturnPath { addrs };
            path.validate()?;
            return Ok(Some(path));
        }
        Ok(None)
    }

    /// Number of waypoints.
    pub fn len(&self) -> usize {
        self.addrs.len() / 16
    }

    /// Whether the TLV lists no waypoint.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Waypoint `i` in SRH order (`0` is the last one visited before the client).
    pub fn get(&self, i: usize) -> Option<Ipv6Addr> {
        let bytes: [u8; 16] = self.addrs.get(16 * i..16 * i + 16)?.try_into().ok()?;
        Some(Ipv6Addr::from(bytes))
    }

    /// The waypoints in SRH order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Ipv6Addr> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// The index of the waypoint a reply visits first among those `own` accepts (the highest index).
    pub fn position(&self, own: impl Fn(Ipv6Addr) -> bool) -> Option<usize> {
        (0..self.len()).rev().find(|&i| self.get(i).is_some_and(&own))
    }

    fn validate(&self) -> Result<(), Error> {
        for (index, addr) in self.iter().enumerate() {
            let Some(reason) = WaypointFault::of(addr) else { continue };
            // At most MAX_WAYPOINTS (15) waypoints: the index fits.
            return Err(Error::ReturnPathAddress { index: index as u8, addr, reason });
        }
        Ok(())
    }

    /// Write into `buf` the SRH that sends a reply to `peer` through waypoints `0..upto` (the last one
    /// visited first, as in the TLV); returns its length, or 0 when `upto` is 0 (no SRH needed). The SRH
    /// carries no TLV. `upto` past the list is [`Error::SegmentIndex`].
    pub fn emit_srh(&self, upto: usize, peer: Ipv6Addr, buf: &mut [u8]) -> Result<usize, Error> {
        if upto > self.len() {
            return Err(Error::SegmentIndex { index: upto, count: self.len() });
        }
        if upto == 0 {
            return Ok(0);
        }
        let total = FIXED_LEN + 16 * (upto + 1);
        let available = buf.len();
        let out = buf.get_mut(..total).ok_or(Error::BufferTooSmall { needed: total, available })?;
        // upto <= MAX_WAYPOINTS, so every count fits a byte.
        out[..FIXED_LEN].copy_from_slice(&[
            NEXT_HEADER_NONE,
            ((total - FIXED_LEN) / 8) as u8,
            ROUTING_TYPE_SRH,
            upto as u8,
            upto as u8,
            0,
            0,
            0,
        ]);
        out[FIXED_LEN..FIXED_LEN + 16].copy_from_slice(&peer.octets());
        out[FIXED_LEN + 16..].copy_from_slice(&self.addrs[..16 * upto]);
        Ok(total)
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

    fn syn(back: Vec<Ipv6Addr>) -> Vec<u8> {
        let mut srh = SrhRepr::for_path(a("fc00:4::2"), &[a("fc00:f1::2:0:5a"), a("fc00:f2::2:0:5a")]).unwrap();
        srh.tlvs.push(TlvRepr::Unknown { tlv_type: 125, value: vec![1, 2, 3] });
        srh.tlvs.push(TlvRepr::ReturnPath(back));
        srh.segments_left = 0;
        srh.to_bytes().unwrap()
    }

    #[test]
    fn reply_srh_visits_the_waypoints_then_the_peer() {
        let (p1, e, p2) = (a("fc00:f1::1:0:0"), a("fc00:e1::1"), a("fc00:f2::1:0:0"));
        // Visit order back: p2, e, p1 -> SRH order p1, e, p2.
        let bytes = syn(vec![p1, e, p2]);
        let rp = ReturnPath::find(&bytes).unwrap().unwrap();
        assert_eq!(rp.iter().collect::<Vec<_>>(), vec![p1, e, p2]);
        assert_eq!(rp.position(|x| x.segments()[1] == 0xf2), Some(2));
        assert_eq!(rp.position(|x| x.segments()[1] == 0xf9), None);
        let mut buf = [0u8; MAX_REPLY_LEN];
        let client = a("fc00:1::1");
        // The server: every waypoint.
        let n = rp.emit_srh(3, client, &mut buf).unwrap();
        let srh = SrhRepr::from_bytes(&buf[..n]).unwrap();
        assert_eq!(srh.segments, vec![client, p1, e, p2]);
        assert_eq!((srh.segments_left, srh.active_segment()), (3, Some(p2)));
        assert_eq!(SrhRepr::from_bytes(&buf[..n]).unwrap().to_bytes().unwrap(), buf[..n].to_vec());
        // p2 (index 2): the waypoints after it.
        let n = rp.emit_srh(2, client, &mut buf).unwrap();
        assert_eq!(SrhRepr::from_bytes(&buf[..n]).unwrap().segments, vec![client, p1, e]);
        // p1 (index 0): straight to the client.
        assert_eq!(rp.emit_srh(0, client, &mut buf), Ok(0));
        assert_eq!(rp.emit_srh(4, client, &mut buf), Err(Error::SegmentIndex { index: 4, count: 3 }));
        assert!(matches!(rp.emit_srh(3, client, &mut buf[..20]), Err(Error::BufferTooSmall { .. })));
    }

    #[test]
    fn refusals() {
        let none = SrhRepr::for_path(a("fc00:4::2"), &[a("fc00:e1::1")]).unwrap().to_bytes().unwrap();
        assert_eq!(ReturnPath::find(&none), Ok(None));
        assert!(matches!(ReturnPath::find(&none[..7]), Err(Error::Truncated { .. })));
        for (bad, reason) in [
            ("::", WaypointFault::Unspecified),
            ("::1", WaypointFault::Loopback),
            ("ff02::1", WaypointFault::Multicast),
            ("fe80::1", WaypointFault::LinkLocal),
            ("::ffff:10.0.0.1", WaypointFault::V4Mapped),
        ] {
            let bytes = syn(vec![a("fc00:f1::1"), a(bad)]);
            assert_eq!(
                ReturnPath::find(&bytes),
                Err(Error::ReturnPathAddress { index: 1, addr: a(bad), reason }),
                "{bad}"
            );
        }
        // A TLV value that is not 2 + 16n bytes.
        let mut bytes = syn(vec![a("fc00:f1::1")]);
        let at = bytes.iter().position(|&b| b == TYPE_RETURN_PATH).unwrap();
        bytes[at + 1] = 17;
        assert!(ReturnPath::find(&bytes).is_err());
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut bytes = syn(vec![a("fc00:f1::1"), a("fc00:f2::1")]);
        for i in 0..bytes.len() {
            for v in [0u8, 1, 0x7c, 0xff] {
                let old = bytes[i];
                bytes[i] = v;
                let mut buf = [0u8; MAX_REPLY_LEN];
                if let Ok(Some(rp)) = ReturnPath::find(&bytes) {
                    let _ = rp.emit_srh(rp.len(), a("fc00:1::1"), &mut buf);
                }
                bytes[i] = old;
            }
        }
    }
}
