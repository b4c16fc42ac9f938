//! Text forms shared by the screen and the text report: addresses, sizes, rates, durations, TCP flags,
//! segment lists and TLVs.

use std::net::Ipv6Addr;
use std::time::Duration;

use libsrv6sock::wire::srh::SrhRepr;
use libsrv6sock::wire::tlv::TlvRepr;
use srv6pipes_capture::tcp_flags;

use crate::flows::Endpoint;

/// `[addr]:port`.
pub fn addr_port((addr, port): Endpoint) -> String {
    format!("[{addr}]:{port}")
}

/// A byte count with a binary unit: `512B`, `1.5K`, `20.0M`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

/// A rate in bits per second, as network people read rates: `0`, `850kb/s`, `1.2Gb/s`.
pub fn rate(bytes_per_second: u64) -> String {
    if bytes_per_second == 0 {
        return String::from("0");
    }
    let bits = bytes_per_second as f64 * 8.0;
    match bits {
        b if b < 1e3 => format!("{b:.0}b/s"),
        b if b < 1e6 => format!("{:.0}kb/s", b / 1e3),
        b if b < 1e9 => format!("{:.1}Mb/s", b / 1e6),
        b => format!("{:.1}Gb/s", b / 1e9),
    }
}

/// A duration: `850ms`, `12.3s`, `4m05s`, `2h10m`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{:.1}s", d.as_secs_f64()),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// TCP flags as letters, tcpdump style: `[S]`, `[S.]`, `[F.]`, `[R]`, `[P.]`.
pub fn flags(f: u8) -> String {
    let mut s = String::from("[");
    for (bit, c) in [
        (tcp_flags::SYN, 'S'),
        (tcp_flags::FIN, 'F'),
        (tcp_flags::RST, 'R'),
        (tcp_flags::PSH, 'P'),
        (tcp_flags::ACK, '.'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    s.push(']');
    s
}

/// A proxy flow's function as called: `xor(0x5a)`, or with asymmetric processing
/// `xor(0x5a) up, copy(0x0) down`.
pub fn proxy_function(f: &srv6pipes_api::control::Flow) -> String {
    match &f.downstream {
        Some(d) => format!("{}({:#x}) up, {}({:#x}) down", f.function, f.argument, d.function, d.argument),
        None => format!("{}({:#x})", f.function, f.argument),
    }
}

/// The segments in the order a packet visits them (the SRH lists them backwards).
pub fn segments_in_visit_order(srh: &SrhRepr) -> Vec<Ipv6Addr> {
    srh.segments.iter().rev().copied().collect()
}

/// A TLV in one line.
pub fn tlv(t: &TlvRepr) -> String {
    match t {
        TlvRepr::ReturnPath(p) => {
            format!("124 return path: {}", p.iter().map(ToString::to_string).collect::<Vec<_>>().join(" → "))
        }
        TlvRepr::Hmac { d_flag, key_id, digest } => {
            format!("5 HMAC key {key_id}{} digest {} bytes", if *d_flag { " (D)" } else { "" }, digest.len())
        }
        TlvRepr::Unknown { tlv_type, value } => format!("{tlv_type} unknown, {} bytes", value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(
            (bytes(0), bytes(1023), bytes(1536), bytes(20 << 20)),
            ("0B".into(), "1023B".into(), "1.5K".into(), "20.0M".into())
        );
        assert_eq!(
            (rate(0), rate(100), rate(125_000), rate(150_000_000)),
            ("0".into(), "800b/s".into(), "1.0Mb/s".into(), "1.2Gb/s".into())
        );
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(flags(tcp_flags::SYN | tcp_flags::ACK), "[S.]");
    }
}
