//! Our packet decoder: pcap files read with the `pcap` crate, Ethernet/IPv6/TCP with `etherparse`, the
//! routing header with `libsrv6sock`. [`View`] is the decoder-neutral summary that [`crate::oracle`]
//! compares with tshark's and scapy's decoding of the same file.

use std::net::Ipv6Addr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use etherparse::{Ipv6ExtensionSlice, NetSlice, SlicedPacket, TransportSlice};
use libsrv6sock::wire::srh::{Srh, SrhRepr, ROUTING_TYPE_SRH};
use libsrv6sock::wire::tlv::TlvRepr;

/// TCP flag bits (low byte of the flags field).
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// One IPv6 frame of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// 1-based position in the file (tshark's `frame.number`).
    pub frame: usize,
    /// IPv6 header source.
    pub src: Ipv6Addr,
    /// IPv6 header destination (the active segment when there is an SRH).
    pub dst: Ipv6Addr,
    /// The SRH, decoded by libsrv6sock.
    pub srh: Option<SrhRepr>,
    /// The SRH as [`View`] shows it: wire fields [`SrhRepr`] does not keep (last entry, raw TLV values).
    srh_view: Option<SrhView>,
    /// The TCP segment, if the packet carries one.
    pub tcp: Option<Tcp>,
}

/// The TCP fields the tests look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Flags byte (see [`flags`]).
    pub flags: u8,
    /// Payload bytes.
    pub payload_len: usize,
}

impl Packet {
    /// TCP with all `bits` set.
    pub fn has_flags(&self, bits: u8) -> bool {
        self.tcp.is_some_and(|t| t.flags & bits == bits)
    }

    /// TCP with a payload.
    pub fn has_payload(&self) -> bool {
        self.tcp.is_some_and(|t| t.payload_len > 0)
    }

    /// The decoder-neutral summary, for TCP packets.
    pub fn view(&self) -> Option<View> {
        let tcp = self.tcp?;
        Some(View {
            frame: self.frame,
            src: self.src,
            dst: self.dst,
            src_port: tcp.src_port,
            dst_port: tcp.dst_port,
            tcp_flags: tcp.flags,
            payload_len: tcp.payload_len,
            srh: self.srh_view.clone(),
        })
    }
}

/// A TCP packet as any decoder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// 1-based frame number.
    pub frame: usize,
    /// IPv6 header source.
    pub src: Ipv6Addr,
    /// IPv6 header destination.
    pub dst: Ipv6Addr,
    /// TCP source port.
    pub src_port: u16,
    /// TCP destination port.
    pub dst_port: u16,
    /// TCP flags byte.
    pub tcp_flags: u8,
    /// TCP payload bytes.
    pub payload_len: usize,
    /// The SRH, if any.
    pub srh: Option<SrhView>,
}

/// An SRH as any decoder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrhView {
    /// Segments left.
    pub segments_left: u8,
    /// Last entry.
    pub last_entry: u8,
    /// Flags byte.
    pub flags: u8,
    /// Tag.
    pub tag: u16,
    /// Segments in SRH order.
    pub segments: Vec<Ipv6Addr>,
    /// Non-padding TLVs in wire order; `None` when the decoder cannot see TLVs (tshark).
    pub tlvs: Option<Vec<TlvView>>,
}

/// A non-padding TLV as any decoder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlvView {
    /// Type byte.
    pub tlv_type: u8,
    /// Value bytes.
    pub value: Vec<u8>,
    /// For the return-path TLV (type 124): its addresses, decoded by this decoder.
    pub return_path: Option<Vec<Ipv6Addr>>,
}

/// Decode every IPv6 frame of an Ethernet pcap file (other frames are skipped but keep their number).
pub fn read_pcap(path: &Path) -> Result<Vec<Packet>> {
    let mut cap = pcap::Capture::from_file(path).with_context(|| format!("opening {}", path.display()))?;
    if cap.get_datalink() != pcap::Linktype::ETHERNET {
        bail!("{}: link type {:?}, expected Ethernet", path.display(), cap.get_datalink());
    }
    let mut out = Vec::new();
    let mut frame = 0;
    loop {
        let data = match cap.next_packet() {
            Ok(p) => p.data,
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => bail!("{}: after frame {frame}: {e}", path.display()),
        };
        frame += 1;
        if let Some(p) = decode_frame(frame, data).with_context(|| format!("{}: frame {frame}", path.display()))? {
            out.push(p);
        }
    }
    Ok(out)
}

fn decode_frame(frame: usize, data: &[u8]) -> Result<Option<Packet>> {
    let sliced = SlicedPacket::from_ethernet(data).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(NetSlice::Ipv6(ip)) = &sliced.net else { return Ok(None) };
    let header = ip.header();
    let mut srh = None;
    let mut srh_view = None;
    for ext in ip.extensions().clone() {
        if let Ipv6ExtensionSlice::Routing(rh) = ext {
            let bytes = rh.slice();
            if bytes.get(2) == Some(&ROUTING_TYPE_SRH) {
                let (repr, view) = decode_srh(bytes).context("SRH")?;
                srh = Some(repr);
                srh_view = Some(view);
            }
        }
    }
    let tcp = match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => Some(Tcp {
            src_port: t.source_port(),
            dst_port: t.destination_port(),
            flags: t.header_slice()[13],
            payload_len: t.payload().len(),
        }),
        _ => None,
    };
    Ok(Some(Packet { frame, src: header.source_addr(), dst: header.destination_addr(), srh, srh_view, tcp }))
}

/// libsrv6sock's decoding of an SRH: the owned representation and the wire-level view.
fn decode_srh(bytes: &[u8]) -> Result<(SrhRepr, SrhView)> {
    let srh = Srh::new_checked(bytes)?;
    let repr = SrhRepr::parse(&srh)?;
    let mut tlvs = Vec::new();
    for tlv in srh.tlvs() {
        let tlv = tlv?;
        // Padding is not content: decoders differ in how they show it.
        let Some(parsed) = TlvRepr::parse(&tlv, srh.tlv_offset())? else { continue };
        let return_path = match parsed {
            TlvRepr::ReturnPath(p) => Some(p),
            _ => None,
        };
        tlvs.push(TlvView { tlv_type: tlv.tlv_type, value: tlv.value.to_vec(), return_path });
    }
    let view = SrhView {
        segments_left: srh.segments_left(),
        last_entry: srh.last_entry(),
        flags: srh.flags(),
        tag: srh.tag(),
        segments: srh.segments().collect(),
        tlvs: Some(tlvs),
    };
    Ok((repr, view))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + IPv6 (next header 43) + an SRH with a return-path TLV + a TCP SYN with 3 payload bytes.
    fn frame(srh: &SrhRepr) -> Vec<u8> {
        let active = srh.active_segment().unwrap();
        let srh = srh.to_bytes().unwrap();
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&8080u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags::SYN;
        tcp.extend_from_slice(b"abc");
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&((srh.len() + tcp.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[43, 64]);
        f.extend_from_slice(&"fc00:1::1".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&active.octets());
        f.extend_from_slice(&srh);
        f.extend_from_slice(&tcp);
        f
    }

    #[test]
    fn decodes_srh_tlvs_and_tcp() {
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let mut repr = SrhRepr::for_path(a("fc00:5::1"), &[a("fc00:f1::1"), a("fc00:f2::1")]).unwrap();
        repr.next_header = 6;
        repr.tlvs.push(TlvRepr::ReturnPath(vec![a("fc00:f1::1"), a("fc00:f2::1")]));
        let p = decode_frame(7, &frame(&repr)).unwrap().unwrap();
        assert_eq!((p.frame, p.src, p.dst), (7, a("fc00:1::1"), a("fc00:f1::1")));
        assert_eq!(p.srh.as_ref(), Some(&repr));
        assert!(p.has_flags(flags::SYN) && !p.has_flags(flags::ACK) && p.has_payload());
        let v = p.view().unwrap();
        let srh = v.srh.unwrap();
        assert_eq!((srh.segments_left, srh.last_entry), (2, 2));
        let tlvs = srh.tlvs.unwrap();
        assert_eq!(tlvs.len(), 1, "padding is not listed");
        assert_eq!(tlvs[0].tlv_type, 124);
        assert_eq!(tlvs[0].value.len(), 2 + 32);
        assert_eq!(tlvs[0].return_path.as_deref(), Some(&[a("fc00:f1::1"), a("fc00:f2::1")][..]));
    }
}
