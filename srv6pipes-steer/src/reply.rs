//! Per-flow reply steering (`bpf/reply.bpf.c`): the replies of a flow — SYN-ACK and its retransmissions,
//! data, FIN, RST — carry the SRH of the return path (TLV 124) that the flow's SYN carried.
//!
//! Both programs come from one object loaded once, so they share the flow table (no pinning). What a
//! return path may ask ([`ReplySettings`]): each waypoint a reply visits must share its locator (the first
//! `locator_len` bits) with a segment the SYN itself carried — the client cannot name hosts its forward
//! path did not visit — or lie in an `allow` prefix. An empty return path means the routed path. A refused
//! flow is counted and its replies take the routed path.
//!
//! The flow table is an LRU hash sized by [`ReplySettings::flows`]: an entry goes when its flow ends (RST,
//! or the ACK after both FINs) or, when the table is full, by eviction, which silently unsteers that flow.
//! Evictions are counted as `stored − deleted − present` ([`ReplyCounters::evicted`]): every new entry is
//! stored once (a retransmitted SYN replaces, and is counted apart), every deletion by the programs is
//! counted once (only the delete that succeeds counts), so whatever else left the table was evicted.

use std::net::Ipv6Addr;

use aya::maps::{Array, HashMap, LpmTrie, MapData};
use aya::{Ebpf, EbpfLoader};
use libsrv6sock::wire::prefix::Ipv6Prefix;

use crate::tcx::{self, Hook, SteerError};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/reply.bpf.o"));
const INGRESS: &str = "reply_ingress";
const EGRESS: &str = "reply_egress";
const FLOWS: &str = "reply_flows";
const CFG: &str = "reply_cfg";
const STATS: &str = "reply_stats";
const ALLOW: &str = "reply_allow";
const OWN: &str = "reply_own";
/// Entries of `reply_allow` and `reply_own` (the object's `max_entries`).
const MAX_PREFIXES: usize = 64;
/// `struct flow_key`: client, server, client port, server port.
const KEY_LEN: usize = 36;
/// `struct flow`: created_ns, steered, first, srh_len, mss_cut, state, srh[8 + 16 * 16].
const FLOW_LEN: usize = 304;
const CFG_NO_MSS_CLAMP: u32 = 1;

/// Default size of the flow table.
pub const DEFAULT_FLOWS: u32 = 65_536;
/// Default locator length: a waypoint must share its /64 with a segment of the SYN.
pub const DEFAULT_LOCATOR_LEN: u8 = 64;

/// What the programs accept and how big their table is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplySettings {
    /// Flows the table holds at once; more evict the least recently used.
    pub flows: u32,
    /// Bits a waypoint must share with a segment of the SYN (0: any waypoint; 128: only those segments).
    pub locator_len: u8,
    /// Waypoints accepted whatever the SYN carried.
    pub allow: Vec<Ipv6Prefix>,
    /// This host's own prefixes (a proxy's): replies take only the waypoints after its own one.
    pub own: Vec<Ipv6Prefix>,
    /// Lower each steered SYN's MSS by the reply SRH's length, so that replies still fit the MTU.
    pub mss_clamp: bool,
}

impl Default for ReplySettings {
    fn default() -> Self {
        ReplySettings {
            flows: DEFAULT_FLOWS,
            locator_len: DEFAULT_LOCATOR_LEN,
            allow: Vec::new(),
            own: Vec::new(),
            mss_clamp: true,
        }
    }
}

/// The programs' counters, and what the loader derives from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplyCounters {
    /// New flows stored from a SYN's return path.
    pub stored: u64,
    /// Entries replaced by a retransmitted SYN.
    pub replaced: u64,
    /// SYNs whose MSS was lowered.
    pub mss_clamped: u64,
    /// Packets that got a reply SRH.
    pub steered: u64,
    /// Entries deleted by an RST.
    pub deleted_rst: u64,
    /// Entries deleted after both FINs.
    pub deleted_fin: u64,
    /// SYNs whose return path leaves nothing to steer here (empty, or this host is its last waypoint).
    pub routed: u64,
    /// SYNs refused: a waypoint off the SYN's locators and outside the allowed prefixes.
    pub refused_locator: u64,
    /// SYNs refused: a return-path TLV that does not parse, or a waypoint that is not unicast.
    pub refused_malformed: u64,
    /// Entries that could not be stored, or packets whose SRH could not be written (dropped).
    pub err_store: u64,
    /// Packets the kernel could not make room in (sent unsteered).
    pub err_adjust: u64,
    /// Packets too long for an SRH (sent unsteered).
    pub skip_too_long: u64,
    /// Entries in the table now.
    pub present: u64,
    /// Entries that left the table without their flow ending: those flows are no longer steered.
    pub evicted: u64,
}

impl ReplyCounters {
    /// All refused SYNs.
    pub fn refused(&self) -> u64 {
        self.refused_locator + self.refused_malformed
    }
}

/// One steered flow in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyFlow {
    /// The client's address and port.
    pub client: (Ipv6Addr, u16),
    /// The server's address and port (the SYN's final destination).
    pub server: (Ipv6Addr, u16),
    /// The reply SRH's waypoints in SRH order (the last one is visited first); the client follows them.
    pub waypoints: Vec<Ipv6Addr>,
    /// Packets steered so far.
    pub steered: u64,
}

/// The reply-steering programs, attached to devices until dropped.
pub struct ReplySteer {
    ebpf: Ebpf,
}

impl std::fmt::Debug for ReplySteer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplySteer").finish_non_exhaustive()
    }
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> SteerError {
    move |source| SteerError::Map { map, source: Box::new(source) }
}

fn prefix_key(p: &Ipv6Prefix) -> aya::maps::lpm_trie::Key<[u8; 16]> {
    aya::maps::lpm_trie::Key::new(u32::from(p.prefix_len()), p.addr().octets())
}

/// The `struct reply_cfg` value: flags, padding, the locator mask in network order.
fn cfg_value(s: &ReplySettings) -> Result<[u8; 24], SteerError> {
    if s.locator_len > 128 {
        return Err(SteerError::Setting { what: "locator length", why: format!("{} is over 128", s.locator_len) });
    }
    let mut v = [0u8; 24];
    let flags = if s.mss_clamp { 0 } else { CFG_NO_MSS_CLAMP };
    v[..4].copy_from_slice(&flags.to_ne_bytes());
    let mask = u128::MAX.checked_shl(128 - u32::from(s.locator_len)).unwrap_or(0);
    v[8..].copy_from_slice(&mask.to_be_bytes());
    Ok(v)
}

impl ReplySteer {
    /// Load the programs with `settings` and attach them to each of `devices` (ingress and egress).
    pub fn attach(devices: &[String], settings: &ReplySettings) -> Result<Self, SteerError> {
        tcx::require_tcx()?;
        if settings.flows == 0 {
            return Err(SteerError::Setting { what: "flow table size", why: "0 flows".into() });
        }
        for (what, list) in [("allowed prefixes", &settings.allow), ("own prefixes", &settings.own)] {
            if list.len() > MAX_PREFIXES {
                return Err(SteerError::Setting { what, why: format!("{} is over {MAX_PREFIXES}", list.len()) });
            }
        }
        let cfg = cfg_value(settings)?;
        let mut ebpf = EbpfLoader::new()
            .set_max_entries(FLOWS, settings.flows)
            .load(OBJECT)
            .map_err(|e| SteerError::Load { object: "reply.bpf.o", source: Box::new(e) })?;
        {
            let mut c: Array<&mut MapData, [u8; 24]> =
                Array::try_from(ebpf.map_mut(CFG).ok_or(SteerError::NoMap(CFG))?).map_err(map_err(CFG))?;
            c.set(0, cfg, 0).map_err(map_err(CFG))?;
        }
        for (name, list) in [(ALLOW, &settings.allow), (OWN, &settings.own)] {
            let mut t: LpmTrie<&mut MapData, [u8; 16], u8> =
                LpmTrie::try_from(ebpf.map_mut(name).ok_or(SteerError::NoMap(name))?).map_err(map_err(name))?;
            for p in list {
                t.insert(&prefix_key(p), 1, 0).map_err(map_err(name))?;
            }
        }
        tcx::load(&mut ebpf, INGRESS)?;
        tcx::load(&mut ebpf, EGRESS)?;
        for dev in devices {
            tcx::attach(&mut ebpf, INGRESS, dev, Hook::Ingress)?;
            tcx::attach(&mut ebpf, EGRESS, dev, Hook::Egress)?;
        }
        Ok(ReplySteer { ebpf })
    }

    fn table(&self) -> Result<HashMap<&MapData, [u8; KEY_LEN], [u8; FLOW_LEN]>, SteerError> {
        HashMap::try_from(self.ebpf.map(FLOWS).ok_or(SteerError::NoMap(FLOWS))?).map_err(map_err(FLOWS))
    }

    /// The counters now. `present` walks the table (one system call per entry).
    pub fn counters(&self) -> Result<ReplyCounters, SteerError> {
        let stats: Array<&MapData, u64> =
            Array::try_from(self.ebpf.map(STATS).ok_or(SteerError::NoMap(STATS))?).map_err(map_err(STATS))?;
        let mut v = [0u64; 12];
        for (i, slot) in (0u32..).zip(v.iter_mut()) {
            *slot = stats.get(&i, 0).map_err(map_err(STATS))?;
        }
        let [stored, replaced, mss_clamped, steered, deleted_rst, deleted_fin, routed, refused_locator, refused_malformed, err_store, err_adjust, skip_too_long] =
            v;
        let present = self.table()?.keys().filter(|k| k.is_ok()).count() as u64;
        let evicted = stored.saturating_sub(deleted_rst + deleted_fin + present);
        Ok(ReplyCounters {
            stored,
            replaced,
            mss_clamped,
            steered,
            deleted_rst,
            deleted_fin,
            routed,
            refused_locator,
            refused_malformed,
            err_store,
            err_adjust,
            skip_too_long,
            present,
            evicted,
        })
    }

    /// Read the counters and log (warn) what went wrong since `before`: refusals, evictions, packets that
    /// could not be steered. Returns the reading.
    pub fn log_changes(&self, before: &ReplyCounters) -> Result<ReplyCounters, SteerError> {
        let now = self.counters()?;
        if now.refused_locator > before.refused_locator {
            tracing::warn!(
                refused = now.refused_locator - before.refused_locator,
                "return paths refused: a waypoint shares no locator with the SYN's segments and is not allowed (replies take the routed path)"
            );
        }
        if now.refused_malformed > before.refused_malformed {
            tracing::warn!(
                refused = now.refused_malformed - before.refused_malformed,
                "return paths refused: malformed TLV or a waypoint that is not unicast (replies take the routed path)"
            );
        }
        if now.evicted > before.evicted {
            tracing::warn!(
                evicted = now.evicted - before.evicted,
                flows = now.present,
                "flows evicted from a full table are no longer steered: make the table bigger"
            );
        }
        let errors = |c: &ReplyCounters| c.err_store + c.err_adjust + c.skip_too_long;
        if errors(&now) > errors(before) {
            tracing::warn!(?now, "packets could not be steered");
        }
        if now != *before {
            tracing::debug!(?now, "reply steering counters");
        }
        Ok(now)
    }

    /// The flows in the table now.
    pub fn flows(&self) -> Result<Vec<ReplyFlow>, SteerError> {
        Ok(self.table()?.iter().filter_map(Result::ok).filter_map(|(k, v)| decode(&k, &v)).collect())
    }
}

fn addr(b: &[u8]) -> Option<Ipv6Addr> {
    Some(Ipv6Addr::from(<[u8; 16]>::try_from(b.get(..16)?).ok()?))
}

fn port(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

/// A table entry: `struct flow_key` and `struct flow` (see `bpf/reply.bpf.c`).
fn decode(k: &[u8; KEY_LEN], v: &[u8; FLOW_LEN]) -> Option<ReplyFlow> {
    let steered = u64::from_ne_bytes(v.get(8..16)?.try_into().ok()?);
    let srh = v.get(40..)?;
    let last = usize::from(*srh.get(4)?);
    let waypoints = (1..=last).map(|i| addr(srh.get(8 + 16 * i..)?)).collect::<Option<Vec<_>>>()?;
    Some(ReplyFlow {
        client: (addr(&k[..16])?, port(&k[32..])?),
        server: (addr(&k[16..])?, port(&k[34..])?),
        waypoints,
        steered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_locator_mask_keeps_the_first_bits() {
        let mut s = ReplySettings { locator_len: 64, ..Default::default() };
        assert_eq!(cfg_value(&s).unwrap()[8..], [[0xff; 8], [0; 8]].concat()[..]);
        s.locator_len = 0;
        assert_eq!(cfg_value(&s).unwrap()[8..], [0; 16]);
        s.locator_len = 128;
        assert_eq!(cfg_value(&s).unwrap()[8..], [0xff; 16]);
        s.locator_len = 129;
        assert!(cfg_value(&s).is_err());
        s = ReplySettings { mss_clamp: false, ..Default::default() };
        assert_eq!(cfg_value(&s).unwrap()[..4], CFG_NO_MSS_CLAMP.to_ne_bytes());
    }

    #[test]
    fn an_entry_decodes() {
        let mut k = [0u8; KEY_LEN];
        k[..16].copy_from_slice(&"fc00:1::1".parse::<Ipv6Addr>().unwrap().octets());
        k[16..32].copy_from_slice(&"fc00:3::2".parse::<Ipv6Addr>().unwrap().octets());
        k[32..34].copy_from_slice(&40000u16.to_be_bytes());
        k[34..36].copy_from_slice(&80u16.to_be_bytes());
        let mut v = [0u8; FLOW_LEN];
        v[8..16].copy_from_slice(&7u64.to_ne_bytes());
        v[40 + 4] = 2;
        let (p1, p2): (Ipv6Addr, Ipv6Addr) = ("fc00:f1::1".parse().unwrap(), "fc00:f2::1".parse().unwrap());
        v[40 + 24..40 + 40].copy_from_slice(&p1.octets());
        v[40 + 40..40 + 56].copy_from_slice(&p2.octets());
        let f = decode(&k, &v).unwrap();
        assert_eq!((f.client.1, f.server.1, f.steered, f.waypoints), (40000, 80, 7, vec![p1, p2]));
    }
}
