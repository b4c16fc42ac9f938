//! Path records served by DNS (`srv6-path(5)`): the SRv6Pipes record (private-use RR type 65300) and SRN's
//! binding-SID record (type 65280), read only.
//!
//! SRv6Pipes record, RDATA version 1 (all integers big-endian):
//!
//! ```text
//!  offset  size  field
//!  0       1     version (1)
//!  1       1     flags: 0x80 B = the one segment is a binding SID; other bits zero
//!  2       2     priority (lower is preferred, as in MX records)
//!  4       1     covers: prefix length (0 to 128)
//!  5       1     N: segments (1 to 127; exactly 1 with B)
//!  6       1     M: return-path waypoints (0 to 15)
//!  7       1     reserved (zero)
//!  8       16    covers: prefix address (host bits zero)
//!  24      16*N  segments, in the order they are visited (function SIDs carry their argument, RFC 8986)
//!  ..      16*M  return path, in the order a reply visits them
//! ```
//!
//! The RDATA is exactly `24 + 16 * (N + M)` bytes. A record applies to the answer addresses inside `covers`;
//! a name may have several, and a client takes the best priority among those that cover the address
//! ([`best_for`]). SRN's record is 35 bytes: priority (2), prefix (16), prefix length (1), binding SID (16).
//!
//! [`PathRecordView`] is a checked zero-copy view; [`PathRecord`] the owned form whose `parse`/`emit`
//! round-trip. Errors are [`RecordError`]s with offsets from the first byte of the RDATA.

use std::net::Ipv6Addr;

use super::prefix::Ipv6Prefix;
use super::srh::SrhRepr;
use super::tlv::TlvRepr;

/// DNS RR type of the SRv6Pipes path record (private use, RFC 6895 §3.1).
pub const RR_TYPE: u16 = 65300;
/// DNS RR type of SRN's binding-SID record.
pub const SRN_RR_TYPE: u16 = 65280;
/// RDATA version this module reads and writes.
pub const VERSION: u8 = 1;
/// Flag: the single segment is a binding SID, expanded by the network.
pub const FLAG_BINDING: u8 = 0x80;
/// Size of the fixed part of the RDATA.
pub const FIXED_LEN: usize = 24;
/// Most segments a record may list (an SRH holds 128 entries, one of them the destination).
pub const MAX_SEGMENTS: usize = 127;
/// Most return-path waypoints (the return-path TLV's value must fit its one-byte length).
pub const MAX_RETURN: usize = 15;
/// Size of SRN's binding-SID record.
pub const SRN_LEN: usize = 35;
/// Largest RDATA of a valid record.
pub const MAX_LEN: usize = FIXED_LEN + 16 * (MAX_SEGMENTS + MAX_RETURN);

mod field {
    pub const VERSION: usize = 0;
    pub const FLAGS: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const PREFIX_LEN: usize = 4;
    pub const SEGMENTS: usize = 5;
    pub const RETURN: usize = 6;
    pub const RESERVED: usize = 7;
    pub const PREFIX: usize = 8;
}

/// What is wrong with a path record; offsets count from the first byte of the RDATA.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the record needs.
    #[error("path record truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the record needs (the fixed part, or what its counts announce).
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// More bytes than the counts announce.
    #[error("path record has {available} bytes but its counts announce {expected}")]
    TrailingBytes {
        /// Length from the counts.
        expected: usize,
        /// Bytes given.
        available: usize,
    },
    /// A version this decoder does not know.
    #[error("path record version {0} at offset 0 is not 1")]
    Version(u8),
    /// Flag bits that are not defined, or a reserved byte that is not zero.
    #[error("path record byte at offset {offset} has undefined bits set ({value:#04x})")]
    Reserved {
        /// Offset of the byte.
        offset: usize,
        /// Its value.
        value: u8,
    },
    /// A prefix length over 128.
    #[error("prefix length {length} at offset {offset} exceeds 128")]
    PrefixLength {
        /// Offset of the length byte.
        offset: usize,
        /// The length.
        length: u8,
    },
    /// A prefix address with bits set past its length.
    #[error("prefix at offset {offset} has host bits set past /{length}")]
    PrefixHostBits {
        /// Offset of the address.
        offset: usize,
        /// The prefix length.
        length: u8,
    },
    /// A segment count out of range (0, over 127, or not 1 with a binding SID).
    #[error("segment count {count} at offset 5: {reason}")]
    SegmentCount {
        /// The count.
        count: usize,
        /// The allowed range.
        reason: &'static str,
    },
    /// A return-path count over 15.
    #[error("return-path count {0} at offset 6 exceeds 15")]
    ReturnCount(usize),
    /// The output buffer is too small for `emit`.
    #[error("output buffer of {available} bytes is too small for the {needed}-byte record")]
    BufferTooSmall {
        /// Bytes to write.
        needed: usize,
        /// Bytes in the buffer.
        available: usize,
    },
}

/// Read 16 bytes at `at` as an address; `None` past the end.
fn addr_at(data: &[u8], at: usize) -> Option<Ipv6Addr> {
    let bytes: [u8; 16] = data.get(at..at.checked_add(16)?)?.try_into().ok()?;
    Some(Ipv6Addr::from(bytes))
}

/// A checked zero-copy view of an SRv6Pipes path record's RDATA.
///
/// No method panics; on a view from [`PathRecordView::new_checked`] every accessor returns the record's value.
#[derive(Debug, Clone, Copy)]
pub struct PathRecordView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> PathRecordView<T> {
    /// Wrap `buffer` after [`PathRecordView::check`].
    pub fn new_checked(buffer: T) -> Result<Self, RecordError> {
        let v = PathRecordView { buffer };
        v.check()?;
        Ok(v)
    }

    fn byte(&self, i: usize) -> u8 {
        self.buffer.as_ref().get(i).copied().unwrap_or(0)
    }

    /// Validate the whole record: version, flags, counts, exact length, the prefix.
    pub fn check(&self) -> Result<(), RecordError> {
        let data = self.buffer.as_ref();
        if data.len() < FIXED_LEN {
            return Err(RecordError::Truncated { needed: FIXED_LEN, available: data.len() });
        }
        if self.version() != VERSION {
            return Err(RecordError::Version(self.version()));
        }
        if self.flags() & !FLAG_BINDING != 0 {
            return Err(RecordError::Reserved { offset: field::FLAGS, value: self.flags() });
        }
        if self.byte(field::RESERVED) != 0 {
            return Err(RecordError::Reserved { offset: field::RESERVED, value: self.byte(field::RESERVED) });
        }
        let length = self.byte(field::PREFIX_LEN);
        if length > 128 {
            return Err(RecordError::PrefixLength { offset: field::PREFIX_LEN, length });
        }
        let (n, m) = (self.segment_count(), self.return_count());
        if n == 0 || n > MAX_SEGMENTS {
            return Err(RecordError::SegmentCount { count: n, reason: "must be 1 to 127" });
        }
        if self.is_binding() && n != 1 {
            return Err(RecordError::SegmentCount { count: n, reason: "must be 1 with a binding SID" });
        }
        if m > MAX_RETURN {
            return Err(RecordError::ReturnCount(m));
        }
        let expected = FIXED_LEN + 16 * (n + m);
        if data.len() < expected {
            return Err(RecordError::Truncated { needed: expected, available: data.len() });
        }
        if data.len() > expected {
            return Err(RecordError::TrailingBytes { expected, available: data.len() });
        }
        let addr = addr_at(data, field::PREFIX).unwrap_or(Ipv6Addr::UNSPECIFIED);
        if Ipv6Prefix::new(addr, length).map(|p| p.addr()) != Ok(addr) {
            return Err(RecordError::PrefixHostBits { offset: field::PREFIX, length });
        }
        Ok(())
    }

    /// The version byte.
    pub fn version(&self) -> u8 {
        self.byte(field::VERSION)
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.byte(field::FLAGS)
    }

    /// Whether the one segment is a binding SID.
    pub fn is_binding(&self) -> bool {
        self.flags() & FLAG_BINDING != 0
    }

    /// The priority (lower is preferred).
    pub fn priority(&self) -> u16 {
        u16::from_be_bytes([self.byte(field::PRIORITY), self.byte(field::PRIORITY + 1)])
    }

    /// The answer addresses the record covers (a length over 128 on an unchecked view reads as 128).
    pub fn covers(&self) -> Ipv6Prefix {
        let addr = addr_at(self.buffer.as_ref(), field::PREFIX).unwrap_or(Ipv6Addr::UNSPECIFIED);
        Ipv6Prefix::clamped(addr, self.byte(field::PREFIX_LEN))
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.byte(field::SEGMENTS) as usize
    }

    /// Number of return-path waypoints.
    pub fn return_count(&self) -> usize {
        self.byte(field::RETURN) as usize
    }

    /// Segment `i` in visit order; `None` past the list or the buffer.
    pub fn segment(&self, i: usize) -> Option<Ipv6Addr> {
        (i < self.segment_count()).then(|| addr_at(self.buffer.as_ref(), FIXED_LEN + 16 * i)).flatten()
    }

    /// Return-path waypoint `i` in the order a reply visits them; `None` past the list or the buffer.
    pub fn return_waypoint(&self, i: usize) -> Option<Ipv6Addr> {
        let at = FIXED_LEN + 16 * (self.segment_count() + i);
        (i < self.return_count()).then(|| addr_at(self.buffer.as_ref(), at)).flatten()
    }
}

/// How a record says to reach the covered addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// Waypoints in the order they are visited (function SIDs with their arguments, End SIDs).
    Segments(Vec<Ipv6Addr>),
    /// One binding SID; the router that owns it inserts the real segment list (`seg6local End.B6`).
    Binding(Ipv6Addr),
}

impl Route {
    /// The segments a client puts in its SRH, in visit order.
    pub fn waypoints(&self) -> &[Ipv6Addr] {
        match self {
            Route::Segments(s) => s,
            Route::Binding(b) => std::slice::from_ref(b),
        }
    }
}

/// An owned, validated path record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathRecord {
    /// Priority; lower is preferred.
    pub priority: u16,
    /// The answer addresses this record applies to.
    pub covers: Ipv6Prefix,
    /// The segments, or a binding SID.
    pub route: Route,
    /// The return path, in the order a reply visits it (empty: no return-path TLV).
    pub return_path: Vec<Ipv6Addr>,
}

impl PathRecord {
    /// Parse a checked view.
    pub fn parse<T: AsRef<[u8]>>(view: &PathRecordView<T>) -> Result<PathRecord, RecordError> {
        view.check()?;
        let segments: Vec<Ipv6Addr> = (0..view.segment_count()).filter_map(|i| view.segment(i)).collect();
        let route = match (view.is_binding(), segments.as_slice()) {
            (true, [bsid]) => Route::Binding(*bsid),
            _ => Route::Segments(segments),
        };
        Ok(PathRecord {
            priority: view.priority(),
            covers: view.covers(),
            route,
            return_path: (0..view.return_count()).filter_map(|i| view.return_waypoint(i)).collect(),
        })
    }

    /// Parse an RDATA.
    pub fn from_bytes(rdata: &[u8]) -> Result<PathRecord, RecordError> {
        PathRecord::parse(&PathRecordView::new_checked(rdata)?)
    }

    /// Bytes [`PathRecord::emit`] writes, or why the record cannot be written.
    pub fn buffer_len(&self) -> Result<usize, RecordError> {
        let n = self.route.waypoints().len();
        if n == 0 || n > MAX_SEGMENTS {
            return Err(RecordError::SegmentCount { count: n, reason: "must be 1 to 127" });
        }
        if self.return_path.len() > MAX_RETURN {
            return Err(RecordError::ReturnCount(self.return_path.len()));
        }
        Ok(FIXED_LEN + 16 * (n + self.return_path.len()))
    }

    /// Write the RDATA at the start of `buf`; returns the bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, RecordError> {
        let total = self.buffer_len()?;
        let available = buf.len();
        let out = buf.get_mut(..total).ok_or(RecordError::BufferTooSmall { needed: total, available })?;
        let segs = self.route.waypoints();
        out[field::VERSION] = VERSION;
        out[field::FLAGS] = if matches!(self.route, Route::Binding(_)) { FLAG_BINDING } else { 0 };
        out[field::PRIORITY..field::PRIORITY + 2].copy_from_slice(&self.priority.to_be_bytes());
        out[field::PREFIX_LEN] = self.covers.prefix_len();
        out[field::SEGMENTS] = segs.len() as u8;
        out[field::RETURN] = self.return_path.len() as u8;
        out[field::RESERVED] = 0;
        out[field::PREFIX..FIXED_LEN].copy_from_slice(&self.covers.addr().octets());
        for (chunk, a) in out[FIXED_LEN..].chunks_exact_mut(16).zip(segs.iter().chain(&self.return_path)) {
            chunk.copy_from_slice(&a.octets());
        }
        Ok(total)
    }

    /// The RDATA as a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, RecordError> {
        let mut buf = vec![0; self.buffer_len()?];
        self.emit(&mut buf)?;
        Ok(buf)
    }

    /// Decode SRN's 35-byte binding-SID record (type 65280): a record with a binding SID and no return path.
    pub fn from_srn(rdata: &[u8]) -> Result<PathRecord, RecordError> {
        if rdata.len() < SRN_LEN {
            return Err(RecordError::Truncated { needed: SRN_LEN, available: rdata.len() });
        }
        if rdata.len() > SRN_LEN {
            return Err(RecordError::TrailingBytes { expected: SRN_LEN, available: rdata.len() });
        }
        let length = rdata[18];
        if length > 128 {
            return Err(RecordError::PrefixLength { offset: 18, length });
        }
        let prefix = addr_at(rdata, 2).unwrap_or(Ipv6Addr::UNSPECIFIED);
        let bsid = addr_at(rdata, 19).unwrap_or(Ipv6Addr::UNSPECIFIED);
        Ok(PathRecord {
            priority: u16::from_be_bytes([rdata[0], rdata[1]]),
            // SRN did not require clear host bits: take the prefix the address lies in.
            covers: Ipv6Prefix::new(prefix, length).map_err(|_| RecordError::PrefixLength { offset: 18, length })?,
            route: Route::Binding(bsid),
            return_path: Vec::new(),
        })
    }

    /// The SRH a client attaches to reach `destination` (an address this record covers) along this path.
    pub fn srh(&self, destination: Ipv6Addr) -> Result<SrhRepr, super::Error> {
        let mut srh = SrhRepr::for_path(destination, self.route.waypoints())?;
        if !self.return_path.is_empty() {
            // The TLV lists the reply's waypoints in SRH order: the last one visited first.
            srh.tlvs.push(TlvRepr::ReturnPath(self.return_path.iter().rev().copied().collect()));
        }
        Ok(srh)
    }
}

/// The record a client applies for `addr`: the lowest priority among those that cover it; on a tie, the
/// longest covering prefix, then the first in `records`.
pub fn best_for(records: &[PathRecord], addr: Ipv6Addr) -> Option<&PathRecord> {
    records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.covers.contains(addr))
        .min_by_key(|(i, r)| (r.priority, u8::MAX - r.covers.prefix_len(), *i))
        .map(|(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn rec(priority: u16, covers: &str, segs: &[&str]) -> PathRecord {
        PathRecord {
            priority,
            covers: covers.parse().unwrap(),
            route: Route::Segments(segs.iter().map(|s| a(s)).collect()),
            return_path: vec![a("fc00:f1::1:0:0")],
        }
    }

    #[test]
    fn layout_is_the_documented_one() {
        let r = rec(10, "fc00:4::/64", &["fc00:f1::2:0:5a", "fc00:f2::1:0:a"]);
        let b = r.to_bytes().unwrap();
        assert_eq!(b.len(), 24 + 16 * 3);
        assert_eq!(&b[..8], &[1, 0, 0, 10, 64, 2, 1, 0]);
        assert_eq!(&b[8..24], &a("fc00:4::").octets());
        assert_eq!(&b[24..40], &a("fc00:f1::2:0:5a").octets());
        assert_eq!(PathRecord::from_bytes(&b).unwrap(), r);
    }

    #[test]
    fn srh_carries_segments_and_return_path() {
        let r = rec(1, "::/0", &["fc00:f1::2:0:5a", "fc00:f2::1:0:a"]);
        let srh = r.srh(a("fc00:4::2")).unwrap();
        assert_eq!(srh.segments, vec![a("fc00:4::2"), a("fc00:f2::1:0:a"), a("fc00:f1::2:0:5a")]);
        assert_eq!(srh.return_path(), Some(&[a("fc00:f1::1:0:0")][..]));
    }

    #[test]
    fn typed_errors_with_offsets() {
        let good = rec(1, "fc00::/16", &["fc00:f1::1"]).to_bytes().unwrap();
        let with = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            PathRecord::from_bytes(&b)
        };
        assert_eq!(PathRecord::from_bytes(&good[..10]), Err(RecordError::Truncated { needed: 24, available: 10 }));
        assert_eq!(with(0, 2), Err(RecordError::Version(2)));
        assert_eq!(with(1, 1), Err(RecordError::Reserved { offset: 1, value: 1 }));
        assert_eq!(with(7, 9), Err(RecordError::Reserved { offset: 7, value: 9 }));
        assert_eq!(with(4, 200), Err(RecordError::PrefixLength { offset: 4, length: 200 }));
        assert_eq!(with(4, 4), Err(RecordError::PrefixHostBits { offset: 8, length: 4 }));
        assert!(matches!(with(5, 0), Err(RecordError::SegmentCount { count: 0, .. })));
        assert!(matches!(with(5, 200), Err(RecordError::SegmentCount { count: 200, .. })));
        assert_eq!(with(6, 16), Err(RecordError::ReturnCount(16)));
        assert_eq!(with(5, 3), Err(RecordError::Truncated { needed: 24 + 16 * 4, available: 56 }));
        assert_eq!(with(6, 0), Err(RecordError::TrailingBytes { expected: 40, available: 56 }));
        let mut two = rec(1, "::/0", &["::1", "::2"]).to_bytes().unwrap();
        two[1] = FLAG_BINDING;
        assert!(matches!(PathRecord::from_bytes(&two), Err(RecordError::SegmentCount { count: 2, .. })));
    }

    #[test]
    fn binding_sid_round_trip() {
        let r = PathRecord {
            priority: 5,
            covers: "fc00:4::2/128".parse().unwrap(),
            route: Route::Binding(a("fc00:b6::1")),
            return_path: vec![],
        };
        let b = r.to_bytes().unwrap();
        assert_eq!(b[1], FLAG_BINDING);
        assert_eq!(PathRecord::from_bytes(&b).unwrap(), r);
        assert_eq!(r.srh(a("fc00:4::2")).unwrap().segments, vec![a("fc00:4::2"), a("fc00:b6::1")]);
    }

    #[test]
    fn srn_binding_sid_record() {
        let mut b = vec![0, 7];
        b.extend_from_slice(&a("fc00:4::").octets());
        b.push(48);
        b.extend_from_slice(&a("fc00:b6::1").octets());
        let r = PathRecord::from_srn(&b).unwrap();
        assert_eq!(
            (r.priority, r.covers.to_string(), r.route.clone()),
            (7, "fc00:4::/48".into(), Route::Binding(a("fc00:b6::1")))
        );
        assert_eq!(PathRecord::from_srn(&b[..34]), Err(RecordError::Truncated { needed: 35, available: 34 }));
        b.push(0);
        assert_eq!(PathRecord::from_srn(&b), Err(RecordError::TrailingBytes { expected: 35, available: 36 }));
        b.pop();
        b[18] = 129;
        assert_eq!(PathRecord::from_srn(&b), Err(RecordError::PrefixLength { offset: 18, length: 129 }));
    }

    #[test]
    fn best_priority_among_covering_records() {
        let rs = [
            rec(1, "fc00:5::/64", &["::1"]),
            rec(20, "::/0", &["::2"]),
            rec(10, "fc00:4::/64", &["::3"]),
            rec(10, "fc00:4::2/128", &["::4"]),
        ];
        assert_eq!(best_for(&rs, a("fc00:4::2")).map(|r| r.route.waypoints()[0]), Some(a("::4")));
        assert_eq!(best_for(&rs, a("fc00:4::3")).map(|r| r.route.waypoints()[0]), Some(a("::3")));
        assert_eq!(best_for(&rs, a("fc00:9::1")).map(|r| r.route.waypoints()[0]), Some(a("::2")));
        assert_eq!(best_for(&rs[..1], a("fc00:9::1")), None);
    }
}
