//! Live flow table and counters, read by the control socket (`flows`, `stats`).

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use srv6pipes_api::control::{Downstream, Flow, FlowState, Stats};

/// Flow states by their number (`state as u8`, the declaration order), as [`FlowEntry`] stores them.
const STATES: [FlowState; 5] = [
    FlowState::Connecting,
    FlowState::Established,
    FlowState::ClientClosed,
    FlowState::ServerClosed,
    FlowState::Closing,
];

/// One live flow.
#[derive(Debug)]
pub struct FlowEntry {
    /// Flow id.
    pub id: u64,
    /// What the flow is.
    pub meta: FlowMeta,
    /// When it was accepted.
    pub started: Instant,
    /// Bytes read from the client.
    pub up_in: AtomicU64,
    /// Bytes written to the server.
    pub up_out: AtomicU64,
    /// Bytes read from the server.
    pub down_in: AtomicU64,
    /// Bytes written to the client.
    pub down_out: AtomicU64,
    state: AtomicU8,
}

impl FlowEntry {
    /// Record the flow's new state.
    pub fn set_state(&self, s: FlowState) {
        self.state.store(s as u8, Relaxed);
    }

    /// The flow's state.
    pub fn state(&self) -> FlowState {
        STATES.get(usize::from(self.state.load(Relaxed))).copied().unwrap_or(FlowState::Closing)
    }
}

impl From<&FlowEntry> for Flow {
    fn from(f: &FlowEntry) -> Self {
        let m = &f.meta;
        Flow {
            id: f.id,
            worker: m.worker as u32,
            client: m.client,
            server: m.server,
            sid: m.sid,
            module: m.module.to_string(),
            function: m.function.to_string(),
            function_id: m.function_id,
            argument: m.argument,
            downstream: m.downstream.clone(),
            state: f.state(),
            age_ms: f.started.elapsed().as_millis() as u64,
            bytes_up: f.up_in.load(Relaxed),
            bytes_down: f.down_in.load(Relaxed),
            bytes_up_out: f.up_out.load(Relaxed),
            bytes_down_out: f.down_out.load(Relaxed),
        }
    }
}

/// Counters since start.
/// Counters since start, each reported by the field of the same name in [`Stats`].
#[derive(Debug, Default)]
pub struct Counters {
    /// Flows accepted.
    pub accepted: AtomicU64,
    /// Refused: no SRH.
    pub refused_no_srh: AtomicU64,
    /// Refused: malformed SRH.
    pub refused_malformed: AtomicU64,
    /// Refused: no SID of ours.
    pub refused_not_ours: AtomicU64,
    /// Refused: unknown function.
    pub refused_unknown_function: AtomicU64,
    /// Refused: spawn or socket failure.
    pub refused_spawn: AtomicU64,
    /// Refused: the next segment is one of our own SIDs.
    pub refused_own_sid: AtomicU64,
    /// Refused: draining or stopping.
    pub refused_draining: AtomicU64,
    /// Refused: at the flow or descriptor limit.
    pub refused_limit: AtomicU64,
    /// Refused: client outside the allowed prefixes.
    pub refused_client: AtomicU64,
    /// Refused: next segment or destination outside the allowed prefixes.
    pub refused_next: AtomicU64,
    /// Refused: no HMAC TLV.
    pub refused_hmac_missing: AtomicU64,
    /// Refused: HMAC key id not in the key file.
    pub refused_hmac_key: AtomicU64,
    /// Refused: HMAC does not verify.
    pub refused_hmac_wrong: AtomicU64,
    /// Flows reset after the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Flows reset because the proxy stopped.
    pub flows_stopped: AtomicU64,
    /// Outbound connections that failed.
    pub connect_failed: AtomicU64,
    /// Flows ended by FINs.
    pub flows_closed: AtomicU64,
    /// Flows ended by a reset.
    pub flows_reset: AtomicU64,
    /// Bytes read from clients by closed flows (live flows are added when read).
    pub bytes_up: AtomicU64,
    /// Bytes read from servers by closed flows.
    pub bytes_down: AtomicU64,
}

/// Live flows, one shard per worker so workers do not contend.
pub struct FlowTable {
    next_id: AtomicU64,
    shards: Vec<Mutex<HashMap<u64, Arc<FlowEntry>>>>,
    /// Counters since start.
    pub counters: Counters,
    started: Instant,
}

/// What a flow is: its worker, addresses, SID and function.
#[derive(Debug)]
pub struct FlowMeta {
    /// Worker thread running it.
    pub worker: usize,
    /// The client.
    pub client: SocketAddrV6,
    /// The final destination.
    pub server: SocketAddrV6,
    /// Our SID that steered it.
    pub sid: Ipv6Addr,
    /// Function name.
    pub function: Arc<str>,
    /// Module providing the function.
    pub module: Arc<str>,
    /// Function number.
    pub function_id: u64,
    /// Argument bits of the SID.
    pub argument: u64,
    /// The return path's function for server → client bytes, when it is another one.
    pub downstream: Option<Downstream>,
}

impl FlowTable {
    /// An empty table with one shard per worker.
    pub fn new(workers: usize) -> FlowTable {
        FlowTable {
            next_id: AtomicU64::new(1),
            shards: (0..workers.max(1)).map(|_| Mutex::new(HashMap::new())).collect(),
            counters: Counters::default(),
            started: Instant::now(),
        }
    }

    /// A fresh flow id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }

    /// Register a live flow under `id`.
    pub fn insert(&self, id: u64, meta: FlowMeta) -> Arc<FlowEntry> {
        let worker = meta.worker;
        let e = Arc::new(FlowEntry {
            id,
            meta,
            started: Instant::now(),
            up_in: AtomicU64::new(0),
            up_out: AtomicU64::new(0),
            down_in: AtomicU64::new(0),
            down_out: AtomicU64::new(0),
            state: AtomicU8::new(0),
        });
        self.shard(worker).insert(id, e.clone());
        self.counters.accepted.fetch_add(1, Relaxed);
        e
    }

    fn shard(&self, worker: usize) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<FlowEntry>>> {
        self.shards[worker % self.shards.len()].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remove a finished flow and fold its bytes into the totals.
    pub fn remove(&self, e: &FlowEntry, reset: bool) {
        self.shard(e.meta.worker).remove(&e.id);
        let c = &self.counters;
        c.bytes_up.fetch_add(e.up_in.load(Relaxed), Relaxed);
        c.bytes_down.fetch_add(e.down_in.load(Relaxed), Relaxed);
        if reset { &c.flows_reset } else { &c.flows_closed }.fetch_add(1, Relaxed);
    }

    /// Snapshot of the live flows, oldest first.
    pub fn flows(&self) -> Vec<Flow> {
        let mut v: Vec<Flow> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.lock().unwrap_or_else(|e| e.into_inner()).values().map(|f| Flow::from(&**f)).collect::<Vec<_>>()
            })
            .collect();
        v.sort_by_key(|f| f.id);
        v
    }

    /// Counters, live flows' bytes included.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let (mut active, mut up, mut down) = (0, 0, 0);
        for s in &self.shards {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            active += s.len();
            for f in s.values() {
                up += f.up_in.load(Relaxed);
                down += f.down_in.load(Relaxed);
            }
        }
        let g = |a: &AtomicU64| a.load(Relaxed);
        Stats {
            uptime_s: self.started.elapsed().as_secs(),
            workers: self.shards.len() as u64,
            flows_active: active as u64,
            accepted: g(&c.accepted),
            refused: g(&c.refused_no_srh)
                + g(&c.refused_malformed)
                + g(&c.refused_not_ours)
                + g(&c.refused_unknown_function)
                + g(&c.refused_spawn)
                + g(&c.refused_own_sid)
                + g(&c.refused_draining)
                + g(&c.refused_limit)
                + g(&c.refused_client)
                + g(&c.refused_next)
                + g(&c.refused_hmac_missing)
                + g(&c.refused_hmac_key)
                + g(&c.refused_hmac_wrong),
            refused_no_srh: g(&c.refused_no_srh),
            refused_malformed: g(&c.refused_malformed),
            refused_not_ours: g(&c.refused_not_ours),
            refused_unknown_function: g(&c.refused_unknown_function),
            refused_spawn: g(&c.refused_spawn),
            refused_own_sid: g(&c.refused_own_sid),
            refused_draining: g(&c.refused_draining),
            refused_limit: g(&c.refused_limit),
            refused_client: g(&c.refused_client),
            refused_next: g(&c.refused_next),
            refused_hmac_missing: g(&c.refused_hmac_missing),
            refused_hmac_key: g(&c.refused_hmac_key),
            refused_hmac_wrong: g(&c.refused_hmac_wrong),
            idle_timeouts: g(&c.idle_timeouts),
            flows_stopped: g(&c.flows_stopped),
            connect_failed: g(&c.connect_failed),
            flows_closed: g(&c.flows_closed),
            flows_reset: g(&c.flows_reset),
            bytes_up: g(&c.bytes_up) + up,
            bytes_down: g(&c.bytes_down) + down,
        }
    }
}

/// A log rate limit: at most `per_second` messages per second; the rest are counted and reported with
/// the next message let through, so a flood of bad flows cannot flood the log.
pub struct LogLimit {
    per_second: u32,
    second: AtomicU64,
    used: std::sync::atomic::AtomicU32,
    suppressed: AtomicU64,
}

impl LogLimit {
    /// A limit of `per_second` messages.
    pub const fn new(per_second: u32) -> LogLimit {
        LogLimit {
            per_second,
            second: AtomicU64::new(0),
            used: std::sync::atomic::AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if a message may be logged now, `n` being how many were suppressed since the last one.
    pub fn allow(&self) -> Option<u64> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if self.second.swap(now, Relaxed) != now {
            self.used.store(0, Relaxed);
        }
        if self.used.fetch_add(1, Relaxed) < self.per_second {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_states_survive_the_atomic() {
        let t = FlowTable::new(1);
        let meta = FlowMeta {
            worker: 0,
            client: "[fc00:1::1]:1000".parse().unwrap(),
            server: "[fc00:4::2]:80".parse().unwrap(),
            sid: "fc00:f1::2:0:5a".parse().unwrap(),
            function: "xor".into(),
            module: "builtin".into(),
            function_id: 2,
            argument: 0x5a,
            downstream: None,
        };
        let e = t.insert(7, meta);
        assert_eq!(t.flows()[0].state, FlowState::Connecting);
        for s in STATES {
            e.set_state(s);
            assert_eq!(t.flows()[0].state, s);
        }
        e.up_in.fetch_add(10, Relaxed);
        t.remove(&e, true);
        let st = t.stats();
        assert_eq!((st.accepted, st.flows_reset, st.flows_active, st.bytes_up), (1, 1, 0, 10));
    }
}
