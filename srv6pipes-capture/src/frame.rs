//! One captured frame, decoded: link layer and IPv6 with `etherparse` (lax, so that a broken inner layer
//! still leaves the addresses), the Segment Routing Header with [`libsrv6sock::wire`], then TCP or UDP.

use std::net::Ipv6Addr;
use std::time::Duration;

use etherparse::{EtherType, Ipv6ExtensionSlice, LaxNetSlice, LaxSlicedPacket, TransportSlice};

use libsrv6sock::wire::srh::{Srh, SrhRepr, ROUTING_TYPE_SRH};
use libsrv6sock::wire::Error as WireError;

/// TCP flag bits (low byte of the flags field).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// The link layer of a capture (pcap's `LINKTYPE_*`), which says where the IP packet starts in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// Ethernet II, with optional VLAN tags (`LINKTYPE_ETHERNET`, 1).
    Ethernet,
    /// Linux cooked capture v1, what `tcpdump -i any` writes (`LINKTYPE_LINUX_SLL`, 113).
    LinuxSll,
    /// Linux cooked capture v2 (`LINKTYPE_LINUX_SLL2`, 276).
    LinuxSll2,
    /// No link layer: the frame is the IP packet (`LINKTYPE_RAW`, 101).
    Raw,
}

impl LinkType {
    /// The link type of a pcap `LINKTYPE_*`/`DLT_*` number, `None` for one this decoder does not read.
    pub fn from_pcap(linktype: i32) -> Option<LinkType> {
        match linktype {
            1 => Some(LinkType::Ethernet),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            // DLT_RAW is 12 on most systems, 14 on OpenBSD; LINKTYPE_RAW in files is 101.
            12 | 14 | 101 => Some(LinkType::Raw),
            _ => None,
        }
    }
}

/// What a frame turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An IPv6 packet (possibly with a malformed inner layer, see [`Packet::malformed`]).
    Ipv6(Packet),
    /// Well-formed traffic that is not IPv6 (IPv4, ARP, …).
    NotIpv6,
    /// Not even the IPv6 header could be read.
    Undecodable {
        /// 1-based position in the capture.
        frame: usize,
        /// What was wrong.
        error: DecodeError,
    },
}

/// Why a frame, or a layer inside it, could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A layer `etherparse` could not read (truncated header, bad length, …).
    #[error("{layer}: {reason}")]
    Layer {
        /// The layer, as etherparse names it ("IPv6 Routing Header", "TCP header", …).
        layer: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The Segment Routing Header fails the RFC 8754 checks.
    #[error("SRH at byte {offset} of the IPv6 packet: {source}")]
    Srh {
        /// Offset of the SRH from the first byte of the IPv6 header.
        offset: usize,
        /// The defect, with its offset inside the SRH.
        source: WireError,
    },
    /// The frame is shorter than its link-layer header.
    #[error("{link:?} frame of {len} bytes is shorter than its {needed}-byte link header")]
    LinkTruncated {
        /// The link type.
        link: LinkType,
        /// The frame's captured length.
        len: usize,
        /// The link header's length.
        needed: usize,
    },
}

/// An IPv6 packet as captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// 1-based position in the capture (tshark's `frame.number`).
    pub frame: usize,
    /// Capture time, since the Unix epoch.
    pub timestamp: Duration,
    /// Length of the frame on the wire (may exceed what was captured).
    pub wire_len: u32,
    /// IPv6 source.
    pub src: Ipv6Addr,
    /// IPv6 destination (the active segment when there is an SRH).
    pub dst: Ipv6Addr,
    /// IPv6 hop limit.
    pub hop_limit: u8,
    /// The Segment Routing Header, if one decoded.
    pub srh: Option<CapturedSrh>,
    /// TCP or UDP, if the packet carries one that decoded.
    pub transport: Option<Transport>,
    /// The first inner layer that did not decode; the fields above hold what came before it.
    pub malformed: Option<DecodeError>,
}

/// A Segment Routing Header as captured: its bytes and its validated representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedSrh {
    /// The header's bytes, exactly as on the wire (for a checked view: [`CapturedSrh::view`]).
    pub bytes: Vec<u8>,
    /// The decoded header.
    pub repr: SrhRepr,
}

impl CapturedSrh {
    /// A view of the header's wire fields (last entry, raw TLVs and padding), already checked.
    pub fn view(&self) -> Srh<&[u8]> {
        Srh::new_unchecked(&self.bytes)
    }
}

/// The transport layer of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp(Tcp),
    /// UDP.
    Udp(Udp),
}

/// The TCP fields a flow monitor and the tests look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Flags byte (see [`tcp_flags`]).
    pub flags: u8,
    /// Sequence number.
    pub seq: u32,
    /// Payload bytes captured.
    pub payload_len: usize,
}

/// The UDP fields a flow monitor looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload bytes captured.
    pub payload_len: usize,
}

impl Packet {
    /// The TCP segment, if the packet carries one.
    pub fn tcp(&self) -> Option<&Tcp> {
        match &self.transport {
            Some(Transport::Tcp(t)) => Some(t),
            _ => None,
        }
    }

    /// The decoded SRH, if any.
    pub fn srh_repr(&self) -> Option<&SrhRepr> {
        self.srh.as_ref().map(|s| &s.repr)
    }

    /// TCP with all `bits` set.
    pub fn has_flags(&self, bits: u8) -> bool {
        self.tcp().is_some_and(|t| t.flags & bits == bits)
    }

    /// TCP with a payload.
    pub fn has_payload(&self) -> bool {
        self.tcp().is_some_and(|t| t.payload_len > 0)
    }
}

/// Linux cooked header lengths and where they keep the EtherType.
const SLL_LEN: usize = 16;
const SLL_PROTOCOL: usize = 14;
const SLL2_LEN: usize = 20;
const SLL2_PROTOCOL: usize = 0;

/// Decode frame number `frame`, captured at `timestamp` with `wire_len` bytes on the wire, from `data` (the
/// captured bytes). Never panics, whatever `data` holds.
pub fn decode_frame(link: LinkType, frame: usize, timestamp: Duration, wire_len: u32, data: &[u8]) -> Frame {
    let sliced = match link {
        LinkType::Ethernet => LaxSlicedPacket::from_ethernet(data)
            .map_err(|e| DecodeError::Layer { layer: "Ethernet header".into(), reason: e.to_string() }),
        LinkType::LinuxSll => cooked(link, data, SLL_LEN, SLL_PROTOCOL),
        LinkType::LinuxSll2 => cooked(link, data, SLL2_LEN, SLL2_PROTOCOL),
        LinkType::Raw => LaxSlicedPacket::from_ip(data)
            .map_err(|e| DecodeError::Layer { layer: "IP header".into(), reason: e.to_string() }),
    };
    let sliced = match sliced {
        Ok(s) => s,
        Err(error) => return Frame::Undecodable { frame, error },
    };
    let ip = match &sliced.net {
        Some(LaxNetSlice::Ipv6(ip)) => ip,
        Some(_) => return Frame::NotIpv6,
        None => {
            return match sliced.stop_err {
                Some((e, layer)) => Frame::Undecodable { frame, error: layer_error(layer, &e) },
                None => Frame::NotIpv6,
            }
        }
    };
    let header = ip.header();
    let mut packet = Packet {
        frame,
        timestamp,
        wire_len,
        src: header.source_addr(),
        dst: header.destination_addr(),
        hop_limit: header.hop_limit(),
        srh: None,
        transport: None,
        malformed: None,
    };
    // Extension headers are contiguous after the fixed header: track each one's offset for error messages.
    let mut offset = header.slice().len();
    for ext in ip.extensions().clone() {
        let bytes = match &ext {
            Ipv6ExtensionSlice::HopByHop(h) => h.slice(),
            Ipv6ExtensionSlice::Routing(r) => r.slice(),
            Ipv6ExtensionSlice::Fragment(f) => f.slice(),
            Ipv6ExtensionSlice::DestinationOptions(d) => d.slice(),
            Ipv6ExtensionSlice::Authentication(a) => a.slice(),
        };
        // Only the first SRH counts: with SRH insertion (End.B6) the outer one is the active path.
        if let (Ipv6ExtensionSlice::Routing(_), None) = (&ext, &packet.srh) {
            if bytes.get(2) == Some(&ROUTING_TYPE_SRH) {
                match decode_srh(bytes) {
                    Ok(srh) => packet.srh = Some(srh),
                    Err(source) => {
                        packet.malformed = Some(DecodeError::Srh { offset, source });
                        return Frame::Ipv6(packet);
                    }
                }
            }
        }
        offset += bytes.len();
    }
    if let Some((e, layer)) = &sliced.stop_err {
        packet.malformed = Some(layer_error(*layer, e));
    }
    packet.transport = match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => Some(Transport::Tcp(Tcp {
            src_port: t.source_port(),
            dst_port: t.destination_port(),
            // The flags byte is the 14th of the header (CWR … FIN); etherparse gives them one by one.
            flags: t.header_slice()[13],
            seq: t.sequence_number(),
            payload_len: t.payload().len(),
        })),
        Some(TransportSlice::Udp(u)) => Some(Transport::Udp(Udp {
            src_port: u.source_port(),
            dst_port: u.destination_port(),
            payload_len: u.payload().len(),
        })),
        _ => None,
    };
    Frame::Ipv6(packet)
}

/// Linux cooked capture: a fixed header holding the EtherType, then the network layer.
fn cooked(link: LinkType, data: &[u8], len: usize, protocol: usize) -> Result<LaxSlicedPacket<'_>, DecodeError> {
    if data.len() < len {
        return Err(DecodeError::LinkTruncated { link, len: data.len(), needed: len });
    }
    let ether_type = EtherType(u16::from_be_bytes([data[protocol], data[protocol + 1]]));
    Ok(LaxSlicedPacket::from_ether_type(ether_type, &data[len..]))
}

fn layer_error(layer: etherparse::err::Layer, e: &etherparse::err::packet::SliceError) -> DecodeError {
    DecodeError::Layer { layer: layer.to_string(), reason: e.to_string() }
}

fn decode_srh(bytes: &[u8]) -> Result<CapturedSrh, WireError> {
    let repr = SrhRepr::parse(&Srh::new_checked(bytes)?)?;
    Ok(CapturedSrh { bytes: bytes.to_vec(), repr })
}

#[cfg(test)]
mod tests {
    use super::*;
    use libsrv6sock::wire::tlv::TlvRepr;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// Ethernet + IPv6 (next header 43) + `srh` + a TCP SYN with 3 payload bytes.
    fn frame(srh: &[u8], dst: Ipv6Addr) -> Vec<u8> {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&8080u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = tcp_flags::SYN;
        tcp.extend_from_slice(b"abc");
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&((srh.len() + tcp.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[43, 64]);
        f.extend_from_slice(&a("fc00:1::1").octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(srh);
        f.extend_from_slice(&tcp);
        f
    }

    fn repr() -> SrhRepr {
        let mut repr = SrhRepr::for_path(a("fc00:5::1"), &[a("fc00:f1::1"), a("fc00:f2::1")]).unwrap();
        repr.next_header = 6;
        repr.tlvs.push(TlvRepr::ReturnPath(vec![a("fc00:f1::1"), a("fc00:f2::1")]));
        repr
    }

    fn ipv6(f: Frame) -> Packet {
        match f {
            Frame::Ipv6(p) => p,
            other => panic!("not decoded as IPv6: {other:?}"),
        }
    }

    #[test]
    fn decodes_srh_tlvs_and_tcp() {
        let repr = repr();
        let bytes = repr.to_bytes().unwrap();
        let p = ipv6(decode_frame(LinkType::Ethernet, 7, Duration::ZERO, 99, &frame(&bytes, a("fc00:f1::1"))));
        assert_eq!((p.frame, p.src, p.dst, p.hop_limit), (7, a("fc00:1::1"), a("fc00:f1::1"), 64));
        assert_eq!(p.malformed, None);
        let srh = p.srh.as_ref().unwrap();
        assert_eq!(srh.repr, repr);
        assert_eq!(srh.bytes, bytes);
        assert_eq!(srh.view().last_entry(), 2);
        assert!(p.has_flags(tcp_flags::SYN) && !p.has_flags(tcp_flags::ACK) && p.has_payload());
        assert_eq!(p.tcp().map(|t| (t.src_port, t.dst_port, t.payload_len)), Some((40000, 8080, 3)));
    }

    #[test]
    fn cooked_and_raw_frames_decode_the_same_packet() {
        let bytes = repr().to_bytes().unwrap();
        let eth = frame(&bytes, a("fc00:f1::1"));
        let ip = &eth[14..];
        let mut sll = vec![0u8; SLL_LEN];
        sll[SLL_PROTOCOL..SLL_PROTOCOL + 2].copy_from_slice(&0x86ddu16.to_be_bytes());
        sll.extend_from_slice(ip);
        let mut sll2 = vec![0u8; SLL2_LEN];
        sll2[SLL2_PROTOCOL..SLL2_PROTOCOL + 2].copy_from_slice(&0x86ddu16.to_be_bytes());
        sll2.extend_from_slice(ip);
        let want = ipv6(decode_frame(LinkType::Ethernet, 1, Duration::ZERO, 0, &eth));
        for (link, data) in [(LinkType::LinuxSll, &sll[..]), (LinkType::LinuxSll2, &sll2[..]), (LinkType::Raw, ip)] {
            assert_eq!(ipv6(decode_frame(link, 1, Duration::ZERO, 0, data)), want, "{link:?}");
        }
    }

    #[test]
    fn a_malformed_srh_keeps_the_addresses_and_names_the_defect() {
        let mut bytes = repr().to_bytes().unwrap();
        bytes[4] = 40; // last entry far beyond the segment list
        let p = ipv6(decode_frame(LinkType::Ethernet, 3, Duration::ZERO, 0, &frame(&bytes, a("fc00:f1::1"))));
        assert_eq!((p.src, p.dst), (a("fc00:1::1"), a("fc00:f1::1")));
        assert!(p.srh.is_none());
        match p.malformed {
            Some(DecodeError::Srh { offset: 40, source: WireError::SegmentsLeft { .. } })
            | Some(DecodeError::Srh { offset: 40, source: WireError::SegmentListOverrun { .. } }) => {}
            other => panic!("unexpected: {other:?}"),
        }
    }

    #[test]
    fn truncated_frames_are_reported_never_panic() {
        let srh = repr().to_bytes().unwrap();
        let eth = frame(&srh, a("fc00:f1::1"));
        let (ip_end, tcp_start) = (14 + 40, 14 + 40 + srh.len());
        for len in 0..eth.len() {
            let f = decode_frame(LinkType::Ethernet, 1, Duration::ZERO, 0, &eth[..len]);
            match (len, f) {
                (len, Frame::Undecodable { .. }) if len < ip_end => {}
                (len, Frame::Ipv6(p)) if (ip_end..tcp_start + 20).contains(&len) => {
                    assert!(p.malformed.is_some() && p.transport.is_none(), "cut at {len}: {p:?}")
                }
                (len, Frame::Ipv6(p)) if len >= tcp_start + 20 => {
                    assert_eq!(p.tcp().map(|t| t.payload_len), Some(len - tcp_start - 20), "cut at {len}")
                }
                (len, f) => panic!("cut at {len}: {f:?}"),
            }
        }
        assert!(matches!(decode_frame(LinkType::LinuxSll, 1, Duration::ZERO, 0, &[0; 5]), Frame::Undecodable { .. }));
    }

    proptest::proptest! {
        /// Whatever the bytes, every link type decodes without panicking.
        #[test]
        fn random_frames_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            for link in [LinkType::Ethernet, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::Raw] {
                let _ = decode_frame(link, 1, Duration::ZERO, 0, &data);
            }
        }

        /// A valid SRv6 frame with bytes overwritten and cut: decoded or reported, never a panic, and an SRH
        /// is only ever returned when it passes the checks.
        #[test]
        fn mutated_frames_never_panic(
            edits in proptest::collection::vec((0usize..200, proptest::num::u8::ANY), 1..8),
            cut in 0usize..200,
        ) {
            let mut eth = frame(&repr().to_bytes().unwrap(), a("fc00:f1::1"));
            for (i, b) in edits {
                let i = i % eth.len();
                eth[i] = b;
            }
            eth.truncate(eth.len() - cut % eth.len());
            if let Frame::Ipv6(p) = decode_frame(LinkType::Ethernet, 1, Duration::ZERO, 0, &eth) {
                if let Some(srh) = &p.srh {
                    proptest::prop_assert!(Srh::new_checked(&srh.bytes[..]).is_ok());
                }
            }
        }
    }
}
