//! The Segment Routing Header (RFC 8754 §2), in the style of smoltcp's `wire` module.
//!
//! ```text
//!  0                   1                   2                   3
//! | Next Header   |  Hdr Ext Len  | Routing Type=4| Segments Left |
//! |  Last Entry   |     Flags     |              Tag              |
//! |            Segment List[0] (128 bits, the final destination)  |
//! |            ...                                                |
//! |            Segment List[Last Entry] (the first segment)       |
//! |            TLVs (optional), padded to 8 octets                 |
//! ```
//!
//! [`Srh`] is a checked zero-copy view over bytes (a packet may continue after the header); [`SrhRepr`] is
//! the owned form. `SrhRepr::parse(view)` then `emit` gives back a header Linux accepts in `IPV6_RTHDR`.

use std::net::Ipv6Addr;

use super::tlv::{self, TlvIter, TlvRepr};
use super::Error;

/// Routing type of the Segment Routing Header.
pub const ROUTING_TYPE_SRH: u8 = 4;
/// The H flag (RFC 8754 §2): Linux adds an HMAC TLV on send when it is set (`ip sr hmac`).
pub const FLAG_HMAC: u8 = 1 << 3;
/// Size of the fixed part before the segment list.
pub const FIXED_LEN: usize = 8;
/// Largest SRH the 8-bit length field can describe.
pub const MAX_LEN: usize = FIXED_LEN + 255 * 8;
/// IPv6 next-header value for "no next header"; Linux fills in the real one on send.
pub const NEXT_HEADER_NONE: u8 = 59;

mod field {
    pub const NEXT_HEADER: usize = 0;
    pub const HDR_EXT_LEN: usize = 1;
    pub const ROUTING_TYPE: usize = 2;
    pub const SEGMENTS_LEFT: usize = 3;
    pub const LAST_ENTRY: usize = 4;
    pub const FLAGS: usize = 5;
    pub const TAG: std::ops::Range<usize> = 6..8;
}

/// A view of a Segment Routing Header over a byte buffer.
///
/// No method panics, whatever the buffer holds. On a view from [`Srh::new_checked`] every field is the
/// header's; on an unchecked one, bytes past the end of the buffer read as 0.
#[derive(Debug, Clone, Copy)]
pub struct Srh<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Srh<T> {
    /// Wrap a buffer without checking it: fields of a malformed one read as garbage (never a panic).
    pub const fn new_unchecked(buffer: T) -> Self {
        Srh { buffer }
    }

    /// Wrap a buffer after [`Srh::check`]: every accessor is then in bounds.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let srh = Srh::new_unchecked(buffer);
        srh.check()?;
        Ok(srh)
    }

    /// Validate everything the accessors rely on and what Linux validates on `IPV6_RTHDR`: length,
    /// routing type 4, `segments_left <= last_entry`, a segment list that fits, TLVs that tile the rest exactly.
    pub fn check(&self) -> Result<(), Error> {
        let data = self.buffer.as_ref();
        if data.len() < FIXED_LEN {
            return Err(Error::Truncated { needed: FIXED_LEN, available: data.len() });
        }
        let total = self.header_len();
        if data.len() < total {
            return Err(Error::Truncated { needed: total, available: data.len() });
        }
        if self.routing_type() != ROUTING_TYPE_SRH {
            return Err(Error::RoutingType(self.routing_type()));
        }
        let (segments_left, last_entry) = (self.segments_left(), self.last_entry());
        let needed = 16 * (last_entry as usize + 1);
        if FIXED_LEN + needed > total {
            return Err(Error::SegmentListOverrun { last_entry, needed, available: total - FIXED_LEN });
        }
        if segments_left > last_entry {
            return Err(Error::SegmentsLeft { segments_left, last_entry });
        }
        for tlv in self.tlvs() {
            tlv?;
        }
        Ok(())
    }

    /// Byte `i` of the buffer; 0 past its end.
    fn byte(&self, i: usize) -> u8 {
        self.buffer.as_ref().get(i).copied().unwrap_or(0)
    }

    /// Consume the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Next header (the protocol after the SRH).
    pub fn next_header(&self) -> u8 {
        self.byte(field::NEXT_HEADER)
    }

    /// Header length in 8-octet units, not counting the first 8 octets.
    pub fn hdr_ext_len(&self) -> u8 {
        self.byte(field::HDR_EXT_LEN)
    }

    /// Length of the whole header in bytes.
    pub fn header_len(&self) -> usize {
        FIXED_LEN + 8 * self.hdr_ext_len() as usize
    }

    /// Routing type (4 for an SRH).
    pub fn routing_type(&self) -> u8 {
        self.byte(field::ROUTING_TYPE)
    }

    /// Index of the active segment.
    pub fn segments_left(&self) -> u8 {
        self.byte(field::SEGMENTS_LEFT)
    }

    /// Index of the last element of the segment list (the first segment of the path).
    pub fn last_entry(&self) -> u8 {
        self.byte(field::LAST_ENTRY)
    }

    /// Flags byte.
    pub fn flags(&self) -> u8 {
        self.byte(field::FLAGS)
    }

    /// Tag.
    pub fn tag(&self) -> u16 {
        u16::from_be_bytes([self.byte(field::TAG.start), self.byte(field::TAG.start + 1)])
    }

    /// Number of segments in the list.
    pub fn segment_count(&self) -> usize {
        self.last_entry() as usize + 1
    }

    /// Segment `i` in SRH order (`0` is the final destination); `None` past the list.
    pub fn segment(&self, i: usize) -> Option<Ipv6Addr> {
        if i >= self.segment_count() {
            return None;
        }
        let start = FIXED_LEN + 16 * i;
        let bytes: [u8; 16] = self.buffer.as_ref().get(start..start + 16)?.try_into().ok()?;
        Some(Ipv6Addr::from(bytes))
    }

    /// The segments in SRH order.
    pub fn segments(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        (0..self.segment_count()).map_while(|i| self.segment(i))
    }

    /// The active segment, `segments[segments_left]`.
    pub fn active_segment(&self) -> Option<Ipv6Addr> {
        self.segment(self.segments_left() as usize)
    }

    /// Offset of the TLV area from the start of the header.
    pub fn tlv_offset(&self) -> usize {
        FIXED_LEN + 16 * self.segment_count()
    }

    /// The raw TLV area (possibly empty).
    pub fn tlv_bytes(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = self.header_len().min(data.len());
        data.get(self.tlv_offset().min(end)..end).unwrap_or(&[])
    }

    /// Iterate over the TLVs, padding included.
    pub fn tlvs(&self) -> TlvIter<'_> {
        TlvIter::new(self.tlv_bytes(), self.tlv_offset())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Srh<T> {
    /// Set segments left; an error, and nothing written, if `value` is past the last entry or the buffer is
    /// shorter than the fixed header.
    pub fn set_segments_left(&mut self, value: u8) -> Result<(), Error> {
        let last_entry = self.last_entry();
        if value > last_entry {
            return Err(Error::SegmentsLeft { segments_left: value, last_entry });
        }
        let available = self.buffer.as_ref().len();
        let byte = self
            .buffer
            .as_mut()
            .get_mut(field::SEGMENTS_LEFT)
            .ok_or(Error::Truncated { needed: FIXED_LEN, available })?;
        *byte = value;
        Ok(())
    }

    /// Overwrite segment `i`, as Linux does with `segments[0]` on `connect()`; an error, and nothing written,
    /// if `i` is past the segment list or the list past the buffer.
    pub fn set_segment(&mut self, i: usize, addr: Ipv6Addr) -> Result<(), Error> {
        let count = self.segment_count();
        if i >= count {
            return Err(Error::SegmentIndex { index: i, count });
        }
        let start = FIXED_LEN + 16 * i;
        let available = self.buffer.as_ref().len();
        let slot = self
            .buffer
            .as_mut()
            .get_mut(start..start + 16)
            .ok_or(Error::Truncated { needed: start + 16, available })?;
        slot.copy_from_slice(&addr.octets());
        Ok(())
    }
}

/// An owned, validated Segment Routing Header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SrhRepr {
    /// Next header; Linux overwrites it on send, so senders may leave [`NEXT_HEADER_NONE`].
    pub next_header: u8,
    /// Index of the active segment.
    pub segments_left: u8,
    /// Flags byte.
    pub flags: u8,
    /// Tag.
    pub tag: u16,
    /// Segments in SRH order: `[0]` is the final destination, the last one is the first segment visited.
    pub segments: Vec<Ipv6Addr>,
    /// TLVs other than padding, in wire order.
    pub tlvs: Vec<TlvRepr>,
}

impl SrhRepr {
    /// A header that steers to `destination` through `waypoints` (in the order they are visited), with the
    /// first waypoint active. `segments[0]` is the destination; Linux rewrites it with the `connect()` address.
    pub fn for_path(destination: Ipv6Addr, waypoints: &[Ipv6Addr]) -> Result<SrhRepr, Error> {
        let mut segments = Vec::with_capacity(waypoints.len() + 1);
        segments.push(destination);
        segments.extend(waypoints.iter().rev());
        if segments.len() > 128 {
            return Err(Error::SegmentCount(segments.len()));
        }
        Ok(SrhRepr {
            next_header: NEXT_HEADER_NONE,
            segments_left: (segments.len() - 1) as u8,
            flags: 0,
            tag: 0,
            segments,
            tlvs: Vec::new(),
        })
    }

    /// Parse a checked view.
    pub fn parse<T: AsRef<[u8]>>(srh: &Srh<T>) -> Result<SrhRepr, Error> {
        srh.check()?;
        Ok(SrhRepr {
            next_header: srh.next_header(),
            segments_left: srh.segments_left(),
            flags: srh.flags(),
            tag: srh.tag(),
            segments: srh.segments().collect(),
            tlvs: TlvRepr::parse_all(srh.tlv_bytes(), srh.tlv_offset())?,
        })
    }

    /// Parse the header at the start of `bytes` (which may continue with a payload).
    pub fn from_bytes(bytes: &[u8]) -> Result<SrhRepr, Error> {
        SrhRepr::parse(&Srh::new_checked(bytes)?)
    }

    fn unpadded_len(&self) -> Result<usize, Error> {
        let count = self.segments.len();
        if count == 0 || count > 128 {
            return Err(Error::SegmentCount(count));
        }
        let mut len = FIXED_LEN + 16 * count;
        for t in &self.tlvs {
            len += t.wire_len()?;
        }
        Ok(len)
    }

    /// Bytes [`SrhRepr::emit`] writes, padding included.
    pub fn buffer_len(&self) -> Result<usize, Error> {
        let len = self.unpadded_len()?;
        let total = len + tlv::padding_len(len);
        if total > MAX_LEN {
            return Err(Error::TooLong(total));
        }
        Ok(total)
    }

    /// Write the header into the start of `buf`; returns the bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let total = self.buffer_len()?;
        let last_entry = (self.segments.len() - 1) as u8;
        if self.segments_left > last_entry {
            return Err(Error::SegmentsLeft { segments_left: self.segments_left, last_entry });
        }
        let available = buf.len();
        let out = buf.get_mut(..total).ok_or(Error::BufferTooSmall { needed: total, available })?;
        out[field::NEXT_HEADER] = self.next_header;
        out[field::HDR_EXT_LEN] = ((total - FIXED_LEN) / 8) as u8;
        out[field::ROUTING_TYPE] = ROUTING_TYPE_SRH;
        out[field::SEGMENTS_LEFT] = self.segments_left;
        out[field::LAST_ENTRY] = last_entry;
        out[field::FLAGS] = self.flags;
        out[field::TAG].copy_from_slice(&self.tag.to_be_bytes());
        let mut pos = FIXED_LEN;
        for s in &self.segments {
            out[pos..pos + 16].copy_from_slice(&s.octets());
            pos += 16;
        }
        // Linux finds an HMAC TLV only in the header's last 40 bytes: a trailing one goes after the padding.
        let (tlvs, hmac) = match self.tlvs.split_last() {
            Some((last @ TlvRepr::Hmac { .. }, rest)) => (rest, Some(last)),
            _ => (&self.tlvs[..], None),
        };
        for t in tlvs {
            pos += t.emit(&mut out[pos..])?;
        }
        let hmac_len = hmac.map(TlvRepr::wire_len).transpose()?.unwrap_or(0);
        tlv::emit_padding(&mut out[pos..], total - pos - hmac_len)?;
        if let Some(h) = hmac {
            h.emit(&mut out[total - hmac_len..])?;
        }
        Ok(total)
    }

    /// The emitted header as a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0; self.buffer_len()?];
        self.emit(&mut buf)?;
        Ok(buf)
    }

    /// The active segment, `segments[segments_left]`.
    pub fn active_segment(&self) -> Option<Ipv6Addr> {
        self.segments.get(self.segments_left as usize).copied()
    }

    /// The final destination, `segments[0]`.
    pub fn destination(&self) -> Option<Ipv6Addr> {
        self.segments.first().copied()
    }

    /// Remove the HMAC TLVs and the H flag: a hop that changes the segment list re-attaches the rest
    /// unsigned rather than with a digest that no longer verifies.
    pub fn strip_hmac(&mut self) {
        self.flags &= !FLAG_HMAC;
        self.tlvs.retain(|t| !matches!(t, TlvRepr::Hmac { .. }));
    }

    /// The addresses of the first return-path TLV, in SRH order, if there is one.
    pub fn return_path(&self) -> Option<&[Ipv6Addr]> {
        self.tlvs.iter().find_map(|t| match t {
            TlvRepr::ReturnPath(p) => Some(p.as_slice()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn for_path_orders_segments_like_linux_expects() {
        let r = SrhRepr::for_path(a("fc00:4::2"), &[a("fc00:f1::1"), a("fc00:f2::1")]).unwrap();
        assert_eq!(r.segments, vec![a("fc00:4::2"), a("fc00:f2::1"), a("fc00:f1::1")]);
        assert_eq!(r.active_segment(), Some(a("fc00:f1::1")));
        let bytes = r.to_bytes().unwrap();
        assert_eq!(bytes.len(), 56);
        assert_eq!(&bytes[..8], &[59, 6, 4, 2, 2, 0, 0, 0]);
    }

    #[test]
    fn one_missing_byte_is_padded_with_two_padn() {
        // 8 + 16 + 7-byte unknown TLV = 31 bytes: one short of 32, so 9 bytes of padding.
        let mut r = SrhRepr::for_path(a("::1"), &[]).unwrap();
        r.tlvs.push(TlvRepr::Unknown { tlv_type: 125, value: vec![1; 5] });
        let bytes = r.to_bytes().unwrap();
        assert_eq!(bytes.len(), 40);
        assert_eq!(&bytes[31..], &[4, 5, 0, 0, 0, 0, 0, 4, 0]);
        assert_eq!(SrhRepr::from_bytes(&bytes).unwrap(), r);
    }

    #[test]
    fn setters_refuse_what_is_not_in_the_list() {
        let mut bytes = SrhRepr::for_path(a("::1"), &[a("::2")]).unwrap().to_bytes().unwrap();
        let mut view = Srh::new_checked(&mut bytes[..]).unwrap();
        assert_eq!(view.set_segment(2, a("::9")), Err(Error::SegmentIndex { index: 2, count: 2 }));
        assert_eq!(view.set_segments_left(2), Err(Error::SegmentsLeft { segments_left: 2, last_entry: 1 }));
        view.set_segment(0, a("::9")).unwrap();
        view.set_segments_left(0).unwrap();
        assert_eq!((view.segment(0), view.segments_left()), (Some(a("::9")), 0));
        // An unchecked view over a short buffer: errors, no panic.
        let mut short = [59u8, 0, 4];
        let mut view = Srh::new_unchecked(&mut short[..]);
        assert_eq!((view.routing_type(), view.last_entry(), view.tag()), (4, 0, 0));
        assert_eq!(view.set_segment(0, a("::9")), Err(Error::Truncated { needed: 24, available: 3 }));
        assert_eq!(view.set_segments_left(0), Err(Error::Truncated { needed: 8, available: 3 }));
    }

    #[test]
    fn typed_errors() {
        assert_eq!(SrhRepr::from_bytes(&[0, 0, 4]), Err(Error::Truncated { needed: 8, available: 3 }));
        let mut b = SrhRepr::for_path(a("::1"), &[a("::2")]).unwrap().to_bytes().unwrap();
        b[2] = 0;
        assert_eq!(SrhRepr::from_bytes(&b), Err(Error::RoutingType(0)));
        b[2] = 4;
        b[3] = 2;
        assert_eq!(SrhRepr::from_bytes(&b), Err(Error::SegmentsLeft { segments_left: 2, last_entry: 1 }));
        b[3] = 1;
        b[4] = 2;
        assert!(matches!(SrhRepr::from_bytes(&b), Err(Error::SegmentListOverrun { .. })));
        b[4] = 1;
        assert!(matches!(SrhRepr::from_bytes(&b[..20]), Err(Error::Truncated { needed: 40, available: 20 })));
    }
}
