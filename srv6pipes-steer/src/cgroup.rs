//! Steering of one cgroup's sockets on a client host (`bpf/cgroup.bpf.c`): every TCP/UDP packet of a
//! socket created in the cgroup gets the SRH of the first [`RunRule`] covering its destination, inserted
//! below the socket layer, so it reaches programs an LD_PRELOAD shim cannot (static binaries, Go,
//! io_uring, raw system calls). The programs sit on the egress and ingress hooks of each device the loader
//! is given; the egress one sends the packet to the device of the route to its new destination (the first
//! waypoint, [`RunRule::oif`]), where the kernel finds its next hop. The
//! SYN-ACK of a steered connection has its MSS lowered by the SRH's length so that full-size segments fit.
//!
//! Everything lives as long as the [`CgroupSteer`] value (no pins): the maps, programs and links go
//! when the process that loaded them exits, however it exits.

use aya::maps::{Array, MapData};
use aya::{Ebpf, EbpfLoader};
use libsrv6sock::wire::prefix::Ipv6Prefix;
use libsrv6sock::wire::srh::SrhRepr;

use crate::tcx::{self, Hook, SteerError};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cgroup.bpf.o"));
const INGRESS: &str = "run_ingress";
const EGRESS: &str = "run_egress";
const CFG: &str = "run_cfg";
const RULES: &str = "run_rules";
const STATS: &str = "run_stats";
/// Entries of `run_rules` (the object's `MAX_RULES`).
pub const MAX_RULES: usize = 32;
/// Longest SRH a rule may insert (the object's `RULE_SRH_MAX`).
pub const MAX_SRH_LEN: usize = 512;
/// `struct run_rule`: mask, addr, port, proto, pad, srh_len, pad, oif, pad, first, srh.
const RULE_LEN: usize = 64 + MAX_SRH_LEN;
const PROTO_TCP: u8 = 1;
const PROTO_UDP: u8 = 2;
const CFG_FAIL_CLOSED: u32 = 1;

/// One steering rule, in the policy's order: the first rule covering a packet decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRule {
    /// Destination prefix.
    pub dst: Ipv6Prefix,
    /// Destination port, if the rule is limited to one.
    pub port: Option<u16>,
    /// Covers TCP packets.
    pub tcp: bool,
    /// Covers UDP packets.
    pub udp: bool,
    /// The SRH to insert (segments\[0\] is replaced by each packet's destination); `None`: the packets
    /// the rule covers go unsteered.
    pub srh: Option<SrhRepr>,
    /// The index of the device the route to the SRH's first waypoint leaves by (0 when `srh` is `None`):
    /// a steered packet is sent there, whichever device its destination's route chose.
    pub oif: u32,
}

/// The programs' counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupCounters {
    /// Packets that got an SRH.
    pub steered: u64,
    /// Packets of the cgroup no rule covers (sent as they are).
    pub unmatched: u64,
    /// SYN-ACKs whose MSS was lowered.
    pub mss_clamped: u64,
    /// Packets the kernel could not make room in.
    pub err_adjust: u64,
    /// Packets that could not be steered: no room, no route to the first waypoint, too big for its device.
    pub err_route: u64,
    /// Packets too long for an SRH.
    pub too_long: u64,
    /// Packets dropped because they could not be steered (fail closed, or a half-written header).
    pub dropped: u64,
}

/// The cgroup-steering programs, attached to devices until dropped.
pub struct CgroupSteer {
    ebpf: Ebpf,
}

impl std::fmt::Debug for CgroupSteer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgroupSteer").finish_non_exhaustive()
    }
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> SteerError {
    move |source| SteerError::Map { map, source: Box::new(source) }
}

/// The `struct run_rule` value of `rule`.
fn rule_value(rule: &RunRule) -> Result<[u8; RULE_LEN], SteerError> {
    let setting = |why: String| SteerError::Setting { what: "steering rule", why };
    let mut v = [0u8; RULE_LEN];
    let mask = u128::MAX.checked_shl(128 - u32::from(rule.dst.prefix_len())).unwrap_or(0);
    v[..16].copy_from_slice(&mask.to_be_bytes());
    v[16..32].copy_from_slice(&(u128::from(rule.dst.addr()) & mask).to_be_bytes());
    v[32..34].copy_from_slice(&rule.port.unwrap_or(0).to_be_bytes());
    v[34] = if rule.tcp { PROTO_TCP } else { 0 } | if rule.udp { PROTO_UDP } else { 0 };
    if let Some(srh) = &rule.srh {
        let first = srh
            .segments
            .get(usize::from(srh.segments_left))
            .copied()
            .filter(|_| srh.segments_left > 0)
            .ok_or_else(|| setting(format!("{} has no waypoint to visit", rule.dst)))?;
        let len = srh.emit(&mut v[64..]).map_err(|e| setting(format!("SRH for {}: {e}", rule.dst)))?;
        v[36..38].copy_from_slice(&(len as u16).to_ne_bytes());
        v[40..44].copy_from_slice(&rule.oif.to_ne_bytes());
        v[48..64].copy_from_slice(&first.octets());
    }
    Ok(v)
}

impl CgroupSteer {
    /// Steer the sockets of cgroup `cgroup_id` (its directory's inode number) by `rules`, on each of
    /// `devices`. `fail_closed`: drop a covered packet that cannot be steered instead of sending it plain.
    pub fn attach(
        devices: &[String],
        cgroup_id: u64,
        rules: &[RunRule],
        fail_closed: bool,
    ) -> Result<Self, SteerError> {
        tcx::require_tcx()?;
        if rules.len() > MAX_RULES {
            return Err(SteerError::Setting {
                what: "steering rules",
                why: format!("{} is over {MAX_RULES}", rules.len()),
            });
        }
        let values = rules.iter().map(rule_value).collect::<Result<Vec<_>, _>>()?;
        let mut ebpf = EbpfLoader::new()
            .load(OBJECT)
            .map_err(|e| SteerError::Load { object: "cgroup.bpf.o", source: Box::new(e) })?;
        {
            let mut r: Array<&mut MapData, [u8; RULE_LEN]> =
                Array::try_from(ebpf.map_mut(RULES).ok_or(SteerError::NoMap(RULES))?).map_err(map_err(RULES))?;
            for (i, v) in (0u32..).zip(values) {
                r.set(i, v, 0).map_err(map_err(RULES))?;
            }
        }
        {
            let mut cfg = [0u8; 16];
            cfg[..8].copy_from_slice(&cgroup_id.to_ne_bytes());
            cfg[8..12].copy_from_slice(&(rules.len() as u32).to_ne_bytes());
            cfg[12..].copy_from_slice(&(if fail_closed { CFG_FAIL_CLOSED } else { 0 }).to_ne_bytes());
            let mut c: Array<&mut MapData, [u8; 16]> =
                Array::try_from(ebpf.map_mut(CFG).ok_or(SteerError::NoMap(CFG))?).map_err(map_err(CFG))?;
            c.set(0, cfg, 0).map_err(map_err(CFG))?;
        }
        tcx::load(&mut ebpf, INGRESS)?;
        tcx::load(&mut ebpf, EGRESS)?;
        for dev in devices {
            tcx::attach(&mut ebpf, INGRESS, dev, Hook::Ingress)?;
            tcx::attach(&mut ebpf, EGRESS, dev, Hook::Egress)?;
        }
        Ok(CgroupSteer { ebpf })
    }

    /// The counters now.
    pub fn counters(&self) -> Result<CgroupCounters, SteerError> {
        let stats: Array<&MapData, u64> =
            Array::try_from(self.ebpf.map(STATS).ok_or(SteerError::NoMap(STATS))?).map_err(map_err(STATS))?;
        let mut v = [0u64; 7];
        for (i, slot) in (0u32..).zip(v.iter_mut()) {
            *slot = stats.get(&i, 0).map_err(map_err(STATS))?;
        }
        let [steered, unmatched, mss_clamped, err_adjust, err_route, too_long, dropped] = v;
        Ok(CgroupCounters { steered, unmatched, mss_clamped, err_adjust, err_route, too_long, dropped })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    #[test]
    fn a_rule_encodes_its_prefix_and_srh() {
        let (w1, w2): (Ipv6Addr, Ipv6Addr) = ("fc00:f1::1".parse().unwrap(), "fc00:f2::1".parse().unwrap());
        let rule = RunRule {
            dst: "fc00:5::/64".parse().unwrap(),
            port: Some(80),
            tcp: true,
            udp: false,
            srh: Some(SrhRepr::for_path(Ipv6Addr::UNSPECIFIED, &[w1, w2]).unwrap()),
            oif: 3,
        };
        let v = rule_value(&rule).unwrap();
        assert_eq!(v[..16], [[0xff; 8], [0; 8]].concat()[..]);
        assert_eq!(Ipv6Addr::from(<[u8; 16]>::try_from(&v[16..32]).unwrap()), "fc00:5::".parse::<Ipv6Addr>().unwrap());
        assert_eq!((u16::from_be_bytes([v[32], v[33]]), v[34]), (80, PROTO_TCP));
        assert_eq!(u16::from_ne_bytes([v[36], v[37]]), 56);
        assert_eq!(u32::from_ne_bytes([v[40], v[41], v[42], v[43]]), 3);
        assert_eq!(Ipv6Addr::from(<[u8; 16]>::try_from(&v[48..64]).unwrap()), w1);
        assert_eq!((v[64 + 2], v[64 + 3]), (4, 2)); // type 4, segments left 2
    }

    #[test]
    fn a_path_without_waypoints_is_refused() {
        let rule = RunRule {
            dst: "::/0".parse().unwrap(),
            port: None,
            tcp: true,
            udp: true,
            srh: Some(SrhRepr::for_path(Ipv6Addr::UNSPECIFIED, &[]).unwrap()),
            oif: 0,
        };
        assert!(rule_value(&rule).is_err());
    }
}
