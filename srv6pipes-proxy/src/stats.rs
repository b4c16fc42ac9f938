//! Live flow table and counters, read by the control socket (`flows`, `stats`) and the metrics endpoint.
//!
//! Counters never go backwards: a flow's bytes are counted live while it runs and move into its shard's
//! totals when it ends, under the shard's lock, so a reader (which sums each shard under its lock) sees
//! them exactly once, either way.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use srv6pipes_api::control::{Downstream, Flow, FlowState, FunctionStats, SidStats, Stats, StatsReply};
use tokio::sync::Notify;

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
    /// Woken (all waiters) when the state changes.
    state_changed: Notify,
    /// Woken once by `ctl kill`.
    kill: Notify,
}

impl FlowEntry {
    /// Record the flow's new state.
    pub fn set_state(&self, s: FlowState) {
        if self.state.swap(s as u8, Relaxed) != s as u8 {
            self.state_changed.notify_waiters();
        }
    }

    /// The flow's state.
    pub fn state(&self) -> FlowState {
        STATES.get(usize::from(self.state.load(Relaxed))).copied().unwrap_or(FlowState::Closing)
    }

    /// Resolves at the next state change after the call (create it before reading the state).
    pub fn state_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.state_changed.notified()
    }

    /// Resolves once the flow was killed (`ctl kill`).
    pub async fn killed(&self) {
        self.kill.notified().await
    }

    /// Bytes moved so far, read and written, both ways: grows while the flow makes progress.
    pub fn progress(&self) -> u64 {
        [&self.up_in, &self.up_out, &self.down_in, &self.down_out].iter().map(|c| c.load(Relaxed)).sum()
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

/// Why a flow was refused, as counted per SID and function and named in metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No SRH.
    NoSrh,
    /// Malformed SRH or return path.
    Malformed,
    /// No SID of ours.
    NotOurs,
    /// Unknown function.
    UnknownFunction,
    /// Spawn or socket failure.
    Spawn,
    /// The next segment is ours.
    OwnSid,
    /// Draining or stopping.
    Draining,
    /// At the flow or descriptor limit.
    Limit,
    /// Client outside the allowed prefixes.
    Client,
    /// Next segment or destination outside the allowed prefixes.
    Next,
    /// No HMAC TLV.
    HmacMissing,
    /// HMAC key id not in the key file.
    HmacKey,
    /// HMAC does not verify.
    HmacWrong,
}

impl Reason {
    /// Every reason, in the order of [`Reason::index`].
    pub const ALL: [Reason; 13] = [
        Reason::NoSrh,
        Reason::Malformed,
        Reason::NotOurs,
        Reason::UnknownFunction,
        Reason::Spawn,
        Reason::OwnSid,
        Reason::Draining,
        Reason::Limit,
        Reason::Client,
        Reason::Next,
        Reason::HmacMissing,
        Reason::HmacKey,
        Reason::HmacWrong,
    ];

    /// The name: the `refused_*` counter without its prefix, and the metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::NoSrh => "no_srh",
            Reason::Malformed => "malformed",
            Reason::NotOurs => "not_ours",
            Reason::UnknownFunction => "unknown_function",
            Reason::Spawn => "spawn",
            Reason::OwnSid => "own_sid",
            Reason::Draining => "draining",
            Reason::Limit => "limit",
            Reason::Client => "client",
            Reason::Next => "next",
            Reason::HmacMissing => "hmac_missing",
            Reason::HmacKey => "hmac_key",
            Reason::HmacWrong => "hmac_wrong",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Counters since start, each reported by the field of the same name in [`Stats`].
#[derive(Debug, Default)]
pub struct Counters {
    /// Flows accepted.
    pub accepted: AtomicU64,
    /// Refused, by [`Reason::index`].
    refused: [AtomicU64; Reason::ALL.len()],
    /// Flows reset after the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Flows reset after the server-fin timeout.
    pub server_fin_timeouts: AtomicU64,
    /// Flows reset after the client-fin timeout.
    pub client_fin_timeouts: AtomicU64,
    /// Flows reset after a peer's user timeout (unacknowledged data, closed window, keepalive).
    pub peer_timeouts: AtomicU64,
    /// Outbound connects that timed out.
    pub connect_timeouts: AtomicU64,
    /// Flows ended by `ctl kill`.
    pub flows_killed: AtomicU64,
    /// Flows reset because the proxy stopped.
    pub flows_stopped: AtomicU64,
    /// Outbound connections that failed.
    pub connect_failed: AtomicU64,
    /// Flows ended by FINs.
    pub flows_closed: AtomicU64,
    /// Flows ended by a reset.
    pub flows_reset: AtomicU64,
}

/// What the ended flows (and refusals) of one SID or function add up to.
#[derive(Debug, Default, Clone)]
struct Tally {
    accepted: u64,
    reset: u64,
    up: u64,
    down: u64,
    refused: [u64; Reason::ALL.len()],
}

impl Tally {
    fn usage(&self, live: &[&FlowEntry]) -> srv6pipes_api::control::Usage {
        srv6pipes_api::control::Usage {
            flows_active: live.len() as u64,
            accepted: self.accepted,
            flows_reset: self.reset,
            bytes_up: self.up + live.iter().map(|f| f.up_in.load(Relaxed)).sum::<u64>(),
            bytes_down: self.down + live.iter().map(|f| f.down_in.load(Relaxed)).sum::<u64>(),
            refused: Reason::ALL
                .iter()
                .filter(|r| self.refused[r.index()] > 0)
                .map(|r| (r.as_str().to_string(), self.refused[r.index()]))
                .collect(),
        }
    }

    fn add(&mut self, o: &Tally) {
        self.accepted += o.accepted;
        self.reset += o.reset;
        self.up += o.up;
        self.down += o.down;
        for (a, b) in self.refused.iter_mut().zip(o.refused) {
            *a += b;
        }
    }
}

/// SIDs, and functions, a worker counts separately; the rest add up under [`OTHER_SID`] and
/// [`OTHER_FUNCTION`]: clients choose the SIDs (arguments), so their number must not grow memory and
/// metrics without bound.
pub const MAX_ROWS: usize = 1024;
/// Where the SIDs beyond [`MAX_ROWS`] are counted.
pub const OTHER_SID: Ipv6Addr = Ipv6Addr::UNSPECIFIED;
/// Where the functions beyond [`MAX_ROWS`] are counted (named `other`).
pub const OTHER_FUNCTION: u64 = u64::MAX;

/// One worker's live flows and what its ended ones add up to.
#[derive(Default)]
struct Shard {
    flows: HashMap<u64, Arc<FlowEntry>>,
    /// Bytes of ended flows.
    up: u64,
    down: u64,
    by_sid: HashMap<Ipv6Addr, Tally>,
    /// By function number, with its name.
    by_function: HashMap<u64, (Arc<str>, Tally)>,
}

impl Shard {
    /// The row `sid` is counted in.
    fn sid_key(&self, sid: Ipv6Addr) -> Ipv6Addr {
        if self.by_sid.contains_key(&sid) || self.by_sid.len() < MAX_ROWS {
            sid
        } else {
            OTHER_SID
        }
    }

    fn sid_row(&mut self, sid: Ipv6Addr) -> &mut Tally {
        let key = self.sid_key(sid);
        self.by_sid.entry(key).or_default()
    }

    /// The row function `id` is counted in.
    fn function_key(&self, id: u64) -> u64 {
        if self.by_function.contains_key(&id) || self.by_function.len() < MAX_ROWS {
            id
        } else {
            OTHER_FUNCTION
        }
    }

    /// The row of function `id`, named `name` when created (empty: not known).
    fn function_row(&mut self, id: u64, name: &Arc<str>) -> &mut Tally {
        let key = self.function_key(id);
        let name = if key == OTHER_FUNCTION { "other".into() } else { name.clone() };
        let (known, tally) = self.by_function.entry(key).or_insert_with(|| (name.clone(), Tally::default()));
        if known.is_empty() {
            *known = name;
        }
        tally
    }
}

/// Live flows, one shard per worker so workers do not contend.
pub struct FlowTable {
    next_id: AtomicU64,
    shards: Vec<Mutex<Shard>>,
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

/// Where a refusal is counted besides the global counter: the SID and function number, when known.
#[derive(Debug, Clone, Copy, Default)]
pub struct Refused {
    /// The worker that refused it.
    pub worker: usize,
    /// Our SID in the SYN's SRH.
    pub sid: Option<Ipv6Addr>,
    /// The SID's function number.
    pub function: Option<u64>,
}

impl FlowTable {
    /// An empty table with one shard per worker.
    pub fn new(workers: usize) -> FlowTable {
        FlowTable {
            next_id: AtomicU64::new(1),
            shards: (0..workers.max(1)).map(|_| Mutex::new(Shard::default())).collect(),
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
            state_changed: Notify::new(),
            kill: Notify::new(),
        });
        let mut shard = self.shard(worker);
        shard.flows.insert(id, e.clone());
        shard.sid_row(e.meta.sid).accepted += 1;
        shard.function_row(e.meta.function_id, &e.meta.function).accepted += 1;
        drop(shard);
        self.counters.accepted.fetch_add(1, Relaxed);
        e
    }

    fn shard(&self, worker: usize) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[worker % self.shards.len()].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remove a finished flow and fold its bytes into the totals, in one step under its shard's lock.
    pub fn remove(&self, e: &FlowEntry, reset: bool) {
        let (up, down) = (e.up_in.load(Relaxed), e.down_in.load(Relaxed));
        let ended = Tally { reset: reset.into(), up, down, ..Tally::default() };
        let mut shard = self.shard(e.meta.worker);
        if shard.flows.remove(&e.id).is_none() {
            return;
        }
        shard.up += up;
        shard.down += down;
        shard.sid_row(e.meta.sid).add(&ended);
        shard.function_row(e.meta.function_id, &e.meta.function).add(&ended);
        drop(shard);
        let c = &self.counters;
        if reset { &c.flows_reset } else { &c.flows_closed }.fetch_add(1, Relaxed);
    }

    /// Count a refusal for `reason`, and for its SID and function when known.
    pub fn refused(&self, reason: Reason, at: Refused) {
        self.counters.refused[reason.index()].fetch_add(1, Relaxed);
        if at.sid.is_none() && at.function.is_none() {
            return;
        }
        let mut shard = self.shard(at.worker);
        if let Some(sid) = at.sid {
            shard.sid_row(sid).refused[reason.index()] += 1;
        }
        if let Some(f) = at.function {
            shard.function_row(f, &"".into()).refused[reason.index()] += 1;
        }
    }

    /// Ask the flow `id` to end (both legs reset); false if there is no such flow.
    pub fn kill(&self, id: u64) -> bool {
        for s in &self.shards {
            if let Some(f) = s.lock().unwrap_or_else(|e| e.into_inner()).flows.get(&id) {
                f.kill.notify_one();
                return true;
            }
        }
        false
    }

    /// Snapshot of the live flows, oldest first.
    pub fn flows(&self) -> Vec<Flow> {
        let mut v: Vec<Flow> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.lock().unwrap_or_else(|e| e.into_inner()).flows.values().map(|f| Flow::from(&**f)).collect::<Vec<_>>()
            })
            .collect();
        v.sort_by_key(|f| f.id);
        v
    }

    /// Counters, live flows' bytes included.
    pub fn stats(&self) -> Stats {
        let (mut active, mut up, mut down) = (0, 0, 0);
        for s in &self.shards {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            active += s.flows.len();
            up += s.up;
            down += s.down;
            for f in s.flows.values() {
                up += f.up_in.load(Relaxed);
                down += f.down_in.load(Relaxed);
            }
        }
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Relaxed);
        let r = |reason: Reason| g(&c.refused[reason.index()]);
        Stats {
            uptime_s: self.started.elapsed().as_secs(),
            workers: self.shards.len() as u64,
            flows_active: active as u64,
            accepted: g(&c.accepted),
            refused: Reason::ALL.into_iter().map(r).sum(),
            refused_no_srh: r(Reason::NoSrh),
            refused_malformed: r(Reason::Malformed),
            refused_not_ours: r(Reason::NotOurs),
            refused_unknown_function: r(Reason::UnknownFunction),
            refused_spawn: r(Reason::Spawn),
            refused_own_sid: r(Reason::OwnSid),
            refused_draining: r(Reason::Draining),
            refused_limit: r(Reason::Limit),
            refused_client: r(Reason::Client),
            refused_next: r(Reason::Next),
            refused_hmac_missing: r(Reason::HmacMissing),
            refused_hmac_key: r(Reason::HmacKey),
            refused_hmac_wrong: r(Reason::HmacWrong),
            idle_timeouts: g(&c.idle_timeouts),
            server_fin_timeouts: g(&c.server_fin_timeouts),
            client_fin_timeouts: g(&c.client_fin_timeouts),
            peer_timeouts: g(&c.peer_timeouts),
            connect_timeouts: g(&c.connect_timeouts),
            flows_killed: g(&c.flows_killed),
            flows_stopped: g(&c.flows_stopped),
            connect_failed: g(&c.connect_failed),
            flows_closed: g(&c.flows_closed),
            flows_reset: g(&c.flows_reset),
            bytes_up: up,
            bytes_down: down,
        }
    }

    /// The counters with those per SID and per function (each shard read once, under its lock).
    pub fn report(&self) -> StatsReply {
        let stats = self.stats();
        /// Ended flows and refusals, and the live flows.
        type Sum = (Tally, Vec<Arc<FlowEntry>>);
        let mut sids: HashMap<Ipv6Addr, Sum> = HashMap::new();
        let mut funcs: HashMap<u64, (Arc<str>, Sum)> = HashMap::new();
        for s in &self.shards {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            for (sid, t) in &s.by_sid {
                sids.entry(*sid).or_default().0.add(t);
            }
            for (id, (name, t)) in &s.by_function {
                let (known, (sum, _)) = funcs.entry(*id).or_insert_with(|| (name.clone(), Sum::default()));
                if known.is_empty() {
                    *known = name.clone();
                }
                sum.add(t);
            }
            // A live flow is in the rows its accept counted it in.
            for f in s.flows.values() {
                sids.entry(s.sid_key(f.meta.sid)).or_default().1.push(f.clone());
                let (_, (_, live)) = funcs
                    .entry(s.function_key(f.meta.function_id))
                    .or_insert_with(|| (f.meta.function.clone(), Sum::default()));
                live.push(f.clone());
            }
        }
        fn refs(v: &[Arc<FlowEntry>]) -> Vec<&FlowEntry> {
            v.iter().map(|f| &**f).collect()
        }
        let mut sids: Vec<SidStats> =
            sids.into_iter().map(|(sid, (t, live))| SidStats { sid, usage: t.usage(&refs(&live)) }).collect();
        sids.sort_by_key(|s| s.sid);
        let mut functions: Vec<FunctionStats> = funcs
            .into_iter()
            .map(|(id, (name, (t, live)))| FunctionStats {
                function_id: id,
                function: name.to_string(),
                usage: t.usage(&refs(&live)),
            })
            .collect();
        functions.sort_by_key(|f| f.function_id);
        StatsReply { stats, sids, functions }
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
        let live = t.report();
        assert_eq!((live.stats.bytes_up, live.sids[0].usage.bytes_up, live.sids[0].usage.flows_active), (10, 10, 1));
        t.remove(&e, true);
        // Removing twice (a guard and an explicit end) counts once.
        t.remove(&e, true);
        t.refused(Reason::UnknownFunction, Refused { worker: 0, sid: Some(e.meta.sid), function: Some(9) });
        let r = t.report();
        let st = &r.stats;
        assert_eq!((st.accepted, st.flows_reset, st.flows_active, st.bytes_up), (1, 1, 0, 10));
        assert_eq!(st.refused_unknown_function, 1);
        let sid = &r.sids[0];
        assert_eq!((sid.usage.accepted, sid.usage.flows_reset, sid.usage.bytes_up), (1, 1, 10));
        assert_eq!(sid.usage.refused.get("unknown_function"), Some(&1));
        let names: Vec<(u64, &str)> = r.functions.iter().map(|f| (f.function_id, f.function.as_str())).collect();
        assert_eq!(names, [(2, "xor"), (9, "")]);
        // SIDs chosen by clients do not grow the table without bound.
        for i in 0..(MAX_ROWS as u32 + 10) {
            let sid = Ipv6Addr::from(0xfc00_00f1_0000_0000_0000_0002_0000_0000u128 | u128::from(i));
            t.refused(Reason::Spawn, Refused { worker: 0, sid: Some(sid), function: Some(u64::from(i) + 100) });
        }
        let r = t.report();
        assert_eq!((r.sids.len(), r.functions.len()), (MAX_ROWS + 1, MAX_ROWS + 1));
        assert_eq!(r.sids[0].sid, OTHER_SID);
        let other = r.functions.last().unwrap();
        assert_eq!((other.function_id, other.function.as_str()), (OTHER_FUNCTION, "other"));
        assert_eq!(r.sids.iter().map(|s| s.usage.refused.values().sum::<u64>()).sum::<u64>(), MAX_ROWS as u64 + 11);
    }
}
