use thiserror::Error;

/// Everything that can be wrong with SRv6 wire data or with a request to build it.
///
/// Offsets are byte offsets from the first byte of the SRH.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// Fewer bytes than the header needs.
    #[error("SRH truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// More bytes than the header's length field says (a caller handed a buffer that is not exactly one SRH).
    #[error("SRH length field says {expected} bytes but {available} were given")]
    TrailingBytes {
        /// Length from the header's length field.
        expected: usize,
        /// Bytes given.
        available: usize,
    },
    /// Routing type other than 4 (Segment Routing).
    #[error("routing type {0} at offset 2 is not 4 (Segment Routing Header)")]
    RoutingType(u8),
    /// `segments_left` points beyond the segment list.
    #[error("segments left {segments_left} exceeds last entry {last_entry}")]
    SegmentsLeft {
        /// The segments-left value.
        segments_left: u8,
        /// Index of the last segment.
        last_entry: u8,
    },
    /// The segment list does not fit in the header length.
    #[error("last entry {last_entry} needs {needed} bytes of segments but the header holds {available}")]
    SegmentListOverrun {
        /// Index of the last segment.
        last_entry: u8,
        /// Bytes the segment list needs.
        needed: usize,
        /// Bytes the header has after its fixed part.
        available: usize,
    },
    /// A segment index past the end of the segment list.
    #[error("segment {index} does not exist: the list has {count} segments")]
    SegmentIndex {
        /// The index asked for.
        index: usize,
        /// Segments in the list.
        count: usize,
    },
    /// A TLV's length runs past the end of the header.
    #[error("TLV type {tlv_type} at offset {offset} has length {length} and runs past the end of the SRH ({end})")]
    TlvOverrun {
        /// Offset of the TLV's type byte.
        offset: usize,
        /// TLV type.
        tlv_type: u8,
        /// The TLV's length field.
        length: usize,
        /// Offset of the end of the header.
        end: usize,
    },
    /// A TLV header cut in half at the end of the header.
    #[error("TLV at offset {offset} is truncated: only its type byte fits")]
    TlvTruncated {
        /// Offset of the TLV's type byte.
        offset: usize,
    },
    /// A known TLV whose value has the wrong shape.
    #[error("TLV type {tlv_type} at offset {offset}: {reason}")]
    TlvValue {
        /// Offset of the TLV's type byte.
        offset: usize,
        /// TLV type.
        tlv_type: u8,
        /// What is wrong with the value.
        reason: &'static str,
    },
    /// A path with no segment, or more than an SRH can carry.
    #[error("a segment list must hold 1 to 128 segments, got {0}")]
    SegmentCount(usize),
    /// The TLVs make the header longer than the 2048 bytes the length field can describe.
    #[error("SRH would be {0} bytes, more than the 2048 the length field can describe")]
    TooLong(usize),
    /// A TLV value too long for its one-byte length field.
    #[error("TLV type {tlv_type} value of {length} bytes exceeds 255")]
    TlvTooLong {
        /// TLV type.
        tlv_type: u8,
        /// Length of the value.
        length: usize,
    },
    /// Padding of exactly one byte: only a Pad1 fits, which Linux rejects at the end of an SRH.
    #[error("1 byte of padding cannot be written: Linux rejects a trailing Pad1 and a PadN takes 2 bytes")]
    PaddingLength,
    /// The output buffer is too small for `emit`.
    #[error("output buffer of {available} bytes is too small for the {needed}-byte SRH")]
    BufferTooSmall {
        /// Bytes to write.
        needed: usize,
        /// Bytes in the buffer.
        available: usize,
    },
    /// A return-path waypoint that no reply may be sent to.
    #[error("return-path waypoint {index} ({addr}) is not a unicast address a reply may visit: {reason}")]
    ReturnPathAddress {
        /// Index of the waypoint in the TLV (SRH order; a TLV holds at most 15).
        index: u8,
        /// The waypoint.
        addr: std::net::Ipv6Addr,
        /// Why it is refused.
        reason: WaypointFault,
    },
    /// A SID layout or value that does not fit 128 bits.
    #[error("SID layout: {0}")]
    SidLayout(String),
}

/// Why a return-path waypoint is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WaypointFault {
    /// `::`.
    #[error("unspecified")]
    Unspecified,
    /// `::1`.
    #[error("loopback")]
    Loopback,
    /// `ff00::/8`.
    #[error("multicast")]
    Multicast,
    /// `fe80::/10`.
    #[error("link-local")]
    LinkLocal,
    /// `::ffff:0:0/96`.
    #[error("IPv4-mapped")]
    V4Mapped,
}

impl WaypointFault {
    /// Why `addr` cannot be a waypoint (a segment or a return waypoint), or `None` for a unicast address
    /// that a packet can be routed to.
    pub fn of(addr: std::net::Ipv6Addr) -> Option<WaypointFault> {
        if addr.is_unspecified() {
            Some(WaypointFault::Unspecified)
        } else if addr.is_loopback() {
            Some(WaypointFault::Loopback)
        } else if addr.is_multicast() {
            Some(WaypointFault::Multicast)
        } else if addr.segments()[0] & 0xffc0 == 0xfe80 {
            Some(WaypointFault::LinkLocal)
        } else if addr.to_ipv4_mapped().is_some() {
            Some(WaypointFault::V4Mapped)
        } else {
            None
        }
    }
}
