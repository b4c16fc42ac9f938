//! Independent decoders of the same pcap file, to check ours (`srv6pipes_capture`) against:
//! tshark (SRH fields, not TLVs; also TCP checksum validation) and scapy (SRH and TLVs, through
//! `tests/scripts/pcap_json.py`). [`cross_check`] runs all three and requires them to agree field by field.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;

use crate::process::Cmd;
use libsrv6sock::wire::tlv::TlvRepr;
use srv6pipes_capture::{read_pcap, Packet};

/// Decoding a capture of a few thousand packets takes tshark/scapy a few seconds.
const DECODE_TIMEOUT: Duration = Duration::from_secs(120);
/// Debian's interpreter, where python3-scapy is installed (a `python3` earlier on PATH may lack it).
const PYTHON: &str = "/usr/bin/python3";

/// Only TCP packets, and not the TCP header quoted in an ICMPv6 error.
const TSHARK_FILTER: &str = "tcp && !icmpv6";

/// The tshark fields read, in order.
const TSHARK_FIELDS: [&str; 13] = [
    "frame.number",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "tcp.len",
    "ipv6.routing.type",
    "ipv6.routing.segleft",
    "ipv6.routing.srh.last_entry",
    "ipv6.routing.srh.flags",
    "ipv6.routing.srh.tag",
    "ipv6.routing.srh.addr",
];

/// tshark's decoding of the TCP packets (SRH without TLVs: tshark 4.0 does not decode them).
pub fn tshark(path: &Path) -> Result<Vec<View>> {
    let mut cmd = Cmd::new(["tshark", "-n", "-r"])
        .arg(path)
        .args(["-Y", TSHARK_FILTER, "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"])
        .timeout(DECODE_TIMEOUT);
    for f in TSHARK_FIELDS {
        cmd = cmd.args(["-e", f]);
    }
    let out = cmd.run()?;
    out.stdout.lines().map(|l| tshark_line(l).with_context(|| format!("tshark line {l:?}"))).collect()
}

fn tshark_line(line: &str) -> Result<View> {
    let f: Vec<&str> = line.split('\t').collect();
    ensure!(f.len() == TSHARK_FIELDS.len(), "{} fields, expected {}", f.len(), TSHARK_FIELDS.len());
    let srh = match f[7] {
        "" => None,
        "4" => Some(SrhView {
            segments_left: f[8].parse()?,
            last_entry: f[9].parse()?,
            flags: hex(f[10])?.try_into()?,
            tag: bytes_field(f[11])?,
            segments: f[12].split(',').map(str::parse).collect::<Result<_, _>>()?,
            tlvs: None,
        }),
        other => bail!("routing header type {other}"),
    };
    Ok(View {
        frame: f[0].parse()?,
        src: f[1].parse()?,
        dst: f[2].parse()?,
        src_port: f[3].parse()?,
        dst_port: f[4].parse()?,
        tcp_flags: (hex(f[5])? & 0xff) as u8,
        payload_len: f[6].parse()?,
        srh,
    })
}

/// tshark prints the tag (a bytes field) as hex digits, possibly `:`-separated.
fn bytes_field(s: &str) -> Result<u16> {
    let bytes = unhex(&s.replace(':', ""))?;
    let pair: [u8; 2] = bytes.try_into().map_err(|b| anyhow::anyhow!("tag {b:?} is not 2 bytes"))?;
    Ok(u16::from_be_bytes(pair))
}

/// tshark prints flags fields as `0x…`.
fn hex(s: &str) -> Result<u32> {
    let digits = s.strip_prefix("0x").with_context(|| format!("{s:?} is not 0x-prefixed hex"))?;
    Ok(u32::from_str_radix(digits, 16)?)
}

/// Frame numbers of TCP packets whose checksum tshark finds wrong. Only meaningful for packets sent with
/// tx checksum offload off (with offload on, captures hold partial checksums). 0xffff where tshark computes
/// 0x0000 is not wrong: both are zero in ones' complement (RFC 1624), and the kernel's software checksum
/// (`skb_checksum_help`) writes 0xffff for a zero result.
pub fn tshark_bad_tcp_checksums(path: &Path) -> Result<Vec<usize>> {
    let out = Cmd::new(["tshark", "-n", "-o", "tcp.check_checksum:TRUE", "-r"])
        .arg(path)
        .args([
            "-Y",
            "tcp.checksum.status == 0 && !icmpv6 && !(tcp.checksum == 0xffff && tcp.checksum_calculated == 0x0000)",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ])
        .timeout(DECODE_TIMEOUT)
        .run()?;
    out.stdout.lines().map(|l| l.trim().parse().with_context(|| format!("tshark frame number {l:?}"))).collect()
}

/// The scapy script's path.
fn scapy_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pcap_json.py")
}

#[derive(Deserialize)]
struct ScapyPacket {
    frame: usize,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload_len: usize,
    srh: Option<ScapySrh>,
}

#[derive(Deserialize)]
struct ScapySrh {
    segleft: u8,
    lastentry: u8,
    flags: u8,
    tag: u16,
    segments: Vec<Ipv6Addr>,
    tlvs: Vec<ScapyTlv>,
}

#[derive(Deserialize)]
struct ScapyTlv {
    #[serde(rename = "type")]
    tlv_type: u8,
    value: String,
    return_path: Option<Vec<Ipv6Addr>>,
}

/// scapy's decoding of the TCP packets, SRH TLVs included.
pub fn scapy(path: &Path) -> Result<Vec<View>> {
    let out = Cmd::new([PYTHON]).arg(scapy_script()).arg(path).timeout(DECODE_TIMEOUT).run()?;
    out.stdout
        .lines()
        .map(|l| {
            let p: ScapyPacket = serde_json::from_str(l).with_context(|| format!("scapy line {l:?}"))?;
            Ok(View {
                frame: p.frame,
                src: p.src,
                dst: p.dst,
                src_port: p.sport,
                dst_port: p.dport,
                tcp_flags: p.flags,
                payload_len: p.payload_len,
                srh: p.srh.map(scapy_srh).transpose()?,
            })
        })
        .collect()
}

fn scapy_srh(s: ScapySrh) -> Result<SrhView> {
    let tlvs = s
        .tlvs
        .into_iter()
        .map(|t| Ok(TlvView { tlv_type: t.tlv_type, value: unhex(&t.value)?, return_path: t.return_path }))
        .collect::<Result<_>>()?;
    Ok(SrhView {
        segments_left: s.segleft,
        last_entry: s.lastentry,
        flags: s.flags,
        tag: s.tag,
        segments: s.segments,
        tlvs: Some(tlvs),
    })
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    ensure!(s.len() % 2 == 0, "odd-length hex {s:?}");
    (0..s.len()).step_by(2).map(|i| Ok(u8::from_str_radix(&s[i..i + 2], 16)?)).collect()
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

/// Our decoding of a TCP packet as [`View`]: wire fields from the SRH's checked view, TLVs (without padding,
/// which decoders show differently) decoded by libsrv6sock.
fn view(p: &Packet) -> Option<View> {
    let tcp = p.tcp()?;
    let srh = p.srh.as_ref().map(|captured| {
        let srh = captured.view();
        let tlvs = srh
            .tlvs()
            .filter_map(|t| {
                let t = t.ok()?;
                let parsed = TlvRepr::parse(&t, srh.tlv_offset()).ok()??;
                let return_path = match parsed {
                    TlvRepr::ReturnPath(p) => Some(p),
                    _ => None,
                };
                Some(TlvView { tlv_type: t.tlv_type, value: t.value.to_vec(), return_path })
            })
            .collect();
        SrhView {
            segments_left: srh.segments_left(),
            last_entry: srh.last_entry(),
            flags: srh.flags(),
            tag: srh.tag(),
            segments: srh.segments().collect(),
            tlvs: Some(tlvs),
        }
    });
    Some(View {
        frame: p.frame,
        src: p.src,
        dst: p.dst,
        src_port: tcp.src_port,
        dst_port: tcp.dst_port,
        tcp_flags: tcp.flags,
        payload_len: tcp.payload_len,
        srh,
    })
}

/// Decode `path` with libsrv6sock, tshark and scapy; an error naming the first field on which they
/// disagree. Returns our decoding (every IPv6 frame) for the test's own assertions.
pub fn cross_check(path: &Path) -> Result<Vec<Packet>> {
    let ours = read_pcap(path)?;
    let our_views: Vec<View> = ours.iter().filter_map(view).collect();
    for (name, theirs) in [("tshark", tshark(path)?), ("scapy", scapy(path)?)] {
        compare(&our_views, &theirs, name)
            .with_context(|| format!("libsrv6sock and {name} disagree on {}", path.display()))?;
    }
    Ok(ours)
}

/// Compare two decodings field by field. TLVs are compared only when `theirs` decodes them.
fn compare(ours: &[View], theirs: &[View], name: &str) -> Result<()> {
    let frames = |v: &[View]| v.iter().map(|p| p.frame).collect::<Vec<_>>();
    ensure!(
        frames(ours) == frames(theirs),
        "different TCP frames: libsrv6sock {:?}, {name} {:?}",
        frames(ours),
        frames(theirs)
    );
    for (a, b) in ours.iter().zip(theirs) {
        let frame = a.frame;
        macro_rules! same {
            ($what:expr, $x:expr, $y:expr) => {
                ensure!($x == $y, "frame {frame}: {}: libsrv6sock {:?}, {name} {:?}", $what, $x, $y)
            };
        }
        same!("IPv6 source", a.src, b.src);
        same!("IPv6 destination", a.dst, b.dst);
        same!("TCP source port", a.src_port, b.src_port);
        same!("TCP destination port", a.dst_port, b.dst_port);
        same!("TCP flags", a.tcp_flags, b.tcp_flags);
        same!("TCP payload length", a.payload_len, b.payload_len);
        same!("SRH presence", a.srh.is_some(), b.srh.is_some());
        let (Some(x), Some(y)) = (&a.srh, &b.srh) else { continue };
        same!("SRH segments left", x.segments_left, y.segments_left);
        same!("SRH last entry", x.last_entry, y.last_entry);
        same!("SRH flags", x.flags, y.flags);
        same!("SRH tag", x.tag, y.tag);
        same!("SRH segments", x.segments, y.segments);
        if let (Some(tx), Some(ty)) = (&x.tlvs, &y.tlvs) {
            same!("SRH TLV count", tx.len(), ty.len());
            for (i, (t, u)) in tx.iter().zip(ty).enumerate() {
                same!(format!("TLV {i} type"), t.tlv_type, u.tlv_type);
                same!(format!("TLV {i} value"), t.value, u.value);
                same!(format!("TLV {i} return path"), t.return_path, u.return_path);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(frame: usize, segments_left: u8) -> View {
        View {
            frame,
            src: "fc00::1".parse().unwrap(),
            dst: "fc00::2".parse().unwrap(),
            src_port: 1,
            dst_port: 2,
            tcp_flags: 0x02,
            payload_len: 0,
            srh: Some(SrhView {
                segments_left,
                last_entry: 2,
                flags: 0,
                tag: 0,
                segments: vec![],
                tlvs: Some(vec![TlvView { tlv_type: 124, value: vec![0, 0], return_path: Some(vec![]) }]),
            }),
        }
    }

    #[test]
    fn compare_names_the_differing_field() {
        assert!(compare(&[view(1, 2)], &[view(1, 2)], "x").is_ok());
        let err = compare(&[view(1, 2)], &[view(1, 1)], "x").unwrap_err().to_string();
        assert!(err.contains("frame 1: SRH segments left: libsrv6sock 2, x 1"), "{err}");
        assert!(compare(&[view(1, 2)], &[view(2, 2)], "x").is_err());
    }

    #[test]
    fn tlvs_are_compared_only_when_both_decode_them() {
        let mut blind = view(1, 2);
        blind.srh.as_mut().unwrap().tlvs = None;
        assert!(compare(&[view(1, 2)], &[blind], "tshark").is_ok());
        let mut other = view(1, 2);
        other.srh.as_mut().unwrap().tlvs.as_mut().unwrap()[0].value = vec![0, 1];
        assert!(compare(&[view(1, 2)], &[other], "scapy").is_err());
    }

    #[test]
    fn tshark_lines_parse() {
        let line =
            "3\tfc00:1::1\tfc00:f1::1\t40000\t8080\t0x0002\t0\t4\t2\t2\t0x00\t0102\tfc00:5::1,fc00:f2::1,fc00:f1::1";
        let v = tshark_line(line).unwrap();
        assert_eq!(v.frame, 3);
        assert_eq!(v.tcp_flags, 0x02);
        let srh = v.srh.unwrap();
        assert_eq!((srh.segments_left, srh.last_entry, srh.segments.len()), (2, 2, 3));
        assert_eq!(srh.tag, 0x0102);
        assert!(srh.tlvs.is_none());
    }
}
