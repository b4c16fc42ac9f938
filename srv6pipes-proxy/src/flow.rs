//! Per-flow setup: read the SYN's SRH from the accepted socket, find this proxy's SID in it, pick the
//! function, and open the outbound leg (transparent bind to the client, remaining segments re-attached).

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use libsrv6sock::attach;
use libsrv6sock::reply::ReplyPolicy;
use libsrv6sock::wire::prefix::Ipv6Prefix;
use libsrv6sock::wire::sid::SidLayout;
use libsrv6sock::wire::srh::{Srh, SrhRepr, NEXT_HEADER_NONE};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use srv6pipes_api::abi::Direction;
use srv6pipes_api::control::{Downstream, FlowState};

use crate::access::{Access, Denied};
use crate::lifecycle::{Lifecycle, Refused};
use crate::module::{self, Function, Instance, ModuleError, Registry};
use crate::relay::{self, Instances, RelayConfig, RelayError};
use crate::retpath::{self, ReturnError, ReturnPlan};
use crate::stats::{self, FlowEntry, FlowMeta, FlowTable, LogLimit, Reason};
use crate::timeouts::{Expired, Timeouts};
use crate::timewait;

/// Settings the data path needs.
#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// Function prefixes (locators) of this proxy.
    pub prefixes: Vec<Ipv6Prefix>,
    /// How SIDs split into locator, function and argument.
    pub layout: SidLayout,
    /// Bound on the outbound connect.
    pub connect_timeout: Duration,
    /// Bounds on flows without progress, and on unacknowledged data.
    pub timeouts: Timeouts,
    /// Bind the outbound leg to the client's port too (falls back to an ephemeral port if taken).
    pub keep_client_port: bool,
    /// Buffers and splice.
    pub relay: RelayConfig,
    /// `--reply-path`: reply SRHs on client-facing sockets, the MSS clamp, the TLV to the server.
    pub reply: Option<ReplyPolicy>,
    /// Allowed clients and next segments, required HMAC.
    pub access: Access,
}

/// Everything the workers share.
pub struct Shared {
    /// Settings.
    pub cfg: FlowConfig,
    /// Loaded modules.
    pub registry: Registry,
    /// Live flows and counters.
    pub flows: FlowTable,
    /// Phase (running, draining, stopping) and limits.
    pub life: Lifecycle,
}

/// Why a flow was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The SYN carried no SRH.
    #[error("the SYN carried no SRH")]
    NoSrh,
    /// The SRH did not parse.
    #[error("malformed SRH: {0}")]
    Malformed(#[from] libsrv6sock::wire::Error),
    /// No segment in our prefixes.
    #[error("no segment of the SRH is in this proxy's prefixes")]
    NotOurs,
    /// The segment after ours (or the final destination) is in our own prefixes: the next leg would
    /// connect to this proxy itself.
    #[error("the next segment {next} is one of this proxy's own SIDs")]
    OwnSid {
        /// The offending next segment.
        next: Ipv6Addr,
    },
    /// The proxy is draining or stopping: it takes no new flow.
    #[error("draining: no new flows")]
    Draining,
    /// The limit on concurrent flows (or on open descriptors) is reached.
    #[error("at the limit of {0} concurrent flows")]
    Full(u64),
    /// No loaded function has the SID's function number.
    #[error("SID {sid} names function {function}, which no loaded module provides")]
    UnknownFunction {
        /// The SID.
        sid: Ipv6Addr,
        /// Its function bits.
        function: u64,
    },
    /// The function's spawn failed.
    #[error(transparent)]
    Spawn(#[from] ModuleError),
    /// The access policy denies it.
    #[error("access denied: {0}")]
    Denied(#[from] Denied),
    /// The return-path TLV is malformed or too long (counted as malformed).
    #[error(transparent)]
    ReturnPath(#[from] ReturnError),
    /// Reading the SRH failed.
    #[error("socket: {0}")]
    Socket(#[from] io::Error),
}

impl Refusal {
    /// How it is counted.
    pub fn reason(&self) -> Reason {
        match self {
            Refusal::NoSrh => Reason::NoSrh,
            Refusal::Malformed(_) | Refusal::ReturnPath(_) => Reason::Malformed,
            Refusal::NotOurs => Reason::NotOurs,
            Refusal::OwnSid { .. } => Reason::OwnSid,
            Refusal::Draining => Reason::Draining,
            Refusal::Full(_) => Reason::Limit,
            Refusal::UnknownFunction { .. } => Reason::UnknownFunction,
            Refusal::Spawn(_) | Refusal::Socket(_) => Reason::Spawn,
            Refusal::Denied(d) => match d {
                Denied::Client { .. } => Reason::Client,
                Denied::Next { .. } => Reason::Next,
                Denied::HmacMissing => Reason::HmacMissing,
                Denied::HmacKey(_) => Reason::HmacKey,
                Denied::HmacWrong(_) => Reason::HmacWrong,
            },
        }
    }
}

impl From<Refused> for Refusal {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Draining => Refusal::Draining,
            Refused::Full(n) => Refusal::Full(n),
        }
    }
}

/// Where a flow goes, decoded from its SYN's SRH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// This proxy's SID.
    pub sid: Ipv6Addr,
    /// Function bits of the SID.
    pub function: u64,
    /// Argument bits of the SID.
    pub argument: u64,
    /// SRH for the outbound leg (every segment, the ones visited included, segments left on the one below
    /// our SID, TLVs kept), `None` when only the final destination remains. The visited segments stay so
    /// that the hosts further on can check a return path against the forward path (reply steering).
    pub out_srh: Option<Vec<u8>>,
}

/// Decode the SYN's SRH: our SID is the segment nearest to the start of the path (highest index above 0)
/// that lies in one of `prefixes`; the SRH goes on with segments left on the segment below it. A next segment in our own
/// prefixes (a final destination included) is refused: the next leg would loop back to this proxy.
pub fn route(srh: Option<&[u8]>, prefixes: &[Ipv6Prefix], layout: &SidLayout) -> Result<Route, Refusal> {
    let bytes = srh.ok_or(Refusal::NoSrh)?;
    let srh = SrhRepr::from_bytes(bytes)?;
    let ours = |a: Ipv6Addr| prefixes.iter().any(|p| p.contains(a));
    let me = (1..srh.segments.len()).rev().find(|&i| ours(srh.segments[i]));
    let me = match (me, srh.segments.first()) {
        (Some(me), _) if ours(srh.segments[me - 1]) => return Err(Refusal::OwnSid { next: srh.segments[me - 1] }),
        (Some(me), _) => me,
        // Segments left 0 on one of our SIDs: the destination itself is ours.
        (None, Some(&dst)) if ours(dst) => return Err(Refusal::OwnSid { next: dst }),
        (None, _) => return Err(Refusal::NotOurs),
    };
    let sid = srh.segments[me];
    let parts = layout.split(sid);
    let out_srh = if me > 1 {
        let mut out = SrhRepr {
            next_header: NEXT_HEADER_NONE,
            segments_left: (me - 1) as u8,
            flags: srh.flags,
            tag: srh.tag,
            segments: srh.segments.clone(),
            tlvs: srh.tlvs.clone(),
        };
        // The HMAC covered the whole list: it was checked here (`access`) and would not verify downstream.
        out.strip_hmac();
        Some(out.to_bytes()?)
    } else {
        None
    };
    Ok(Route { sid, function: parts.function, argument: parts.argument, out_srh })
}

/// One worker's listener: transparent, latching the SYN's SRH, in the SO_REUSEPORT group of `port`; `mss`
/// clamps the MSS of accepted flows (room for a reply SRH set after the handshake, see `retpath`).
pub fn listener(port: u16, backlog: i32, mss: Option<u16>) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    attach::set_transparent(s.as_fd())?;
    attach::enable_syn_srh(s.as_fd())?;
    s.set_nodelay(true)?;
    if let Some(mss) = mss {
        s.set_mss(mss.into())?;
    }
    s.bind(&SocketAddr::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)).into())?;
    s.listen(backlog)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

fn v6(a: SocketAddr) -> io::Result<SocketAddrV6> {
    match a {
        SocketAddr::V6(a) => Ok(a),
        SocketAddr::V4(_) => Err(io::Error::new(io::ErrorKind::InvalidInput, "IPv4 flow")),
    }
}

/// TCP keepalive on both legs, so that flows whose peer vanished are eventually reaped.
fn keepalive(s: SockRef<'_>) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(120))
        .with_interval(Duration::from_secs(15))
        .with_retries(4);
    if let Err(e) = s.set_tcp_keepalive(&ka) {
        tracing::debug!("keepalive: {e}");
    }
}

/// Close `s` with a reset.
pub fn reset(s: &TcpStream) {
    let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// Handle one accepted connection: decide synchronously (the SRH must be read before any other packet
/// can replace it), then relay in a task of this worker.
pub fn accept(stream: TcpStream, peer: SocketAddr, worker: usize, shared: &Arc<Shared>) {
    let server = stream.local_addr().and_then(v6);
    let client = v6(peer);
    let (client, server) = match (client, server) {
        (Ok(c), Ok(s)) => (c, s),
        (c, s) => {
            tracing::warn!(peer = %peer, "refused: cannot read the flow's addresses ({:?} {:?})", c.err(), s.err());
            reset(&stream);
            return;
        }
    };
    let id = shared.flows.next_id();
    keepalive(SockRef::from(&stream));
    shared.cfg.timeouts.apply(SockRef::from(&stream));
    // Where a refusal is counted: set once the SRH named our SID.
    let mut at = stats::Refused { worker, ..Default::default() };
    let admitted = shared.life.admit().map_err(Refusal::from);
    match admitted.and_then(|()| {
        prepare(&stream, client, server, worker, id, shared, &mut at).inspect_err(|_| shared.life.release())
    }) {
        Ok((route, func, insts, downstream)) => {
            let entry = shared.flows.insert(
                id,
                FlowMeta {
                    worker,
                    client,
                    server,
                    sid: route.sid,
                    function: func.name.as_str().into(),
                    module: func.module_name().into(),
                    function_id: route.function,
                    argument: route.argument,
                    downstream,
                },
            );
            tracing::debug!(flow = id, %client, %server, sid = %route.sid, function = %func.name, argument = route.argument, "flow accepted");
            let guard = FlowGuard { entry, shared: shared.clone(), reset: true };
            tokio::task::spawn_local(async move {
                let mut g = guard;
                g.reset = run(stream, client, server, route, insts, &g.entry, &g.shared).await;
            });
        }
        Err(r) => {
            shared.flows.refused(r.reason(), at);
            static LIMIT: LogLimit = LogLimit::new(20);
            if let Some(suppressed) = LIMIT.allow() {
                tracing::warn!(%client, %server, suppressed, "flow refused: {r}");
            }
            reset(&stream);
        }
    }
}

/// A live flow's row and `--max-flows` slot, both given back when the flow's task ends, however it ends
/// (a panic included: the task's future is dropped).
struct FlowGuard {
    entry: Arc<FlowEntry>,
    shared: Arc<Shared>,
    /// Counted as ended by a reset (a panic is).
    reset: bool,
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        self.shared.flows.remove(&self.entry, self.reset);
        self.shared.life.release();
    }
}

fn prepare(
    stream: &TcpStream,
    client: SocketAddrV6,
    server: SocketAddrV6,
    worker: usize,
    id: u64,
    shared: &Shared,
    at: &mut stats::Refused,
) -> Result<(Route, Arc<Function>, Instances, Option<Downstream>), Refusal> {
    let mut buf = [0u8; 2048 + 128];
    let range = attach::syn_srh(stream.as_fd(), &mut buf)?;
    let srh = range.map(|r| &buf[r]);
    let mut route = route(srh, &shared.cfg.prefixes, &shared.cfg.layout)?;
    (at.sid, at.function) = (Some(route.sid), Some(route.function));
    let cfg = &shared.cfg;
    // The next leg's destination: the segment after ours, or the final destination.
    let next = route.out_srh.as_deref().and_then(|b| Srh::new_checked(b).ok()?.active_segment());
    cfg.access.check(srh.unwrap_or_default(), *client.ip(), route.sid, next.unwrap_or(*server.ip()))?;
    let back = match srh {
        Some(srh) => retpath::plan(srh, *client.ip(), &cfg.prefixes, &cfg.layout, cfg.reply.as_ref())?,
        None => None,
    };
    if let (Some(srh), Some(_), None) = (srh, &cfg.reply, &route.out_srh) {
        route.out_srh = retpath::server_srh(srh, *server.ip())?;
    }
    let spawn = |sid, function, argument| -> Result<(Arc<Function>, Instance), Refusal> {
        let func = shared.registry.get(function).ok_or(Refusal::UnknownFunction { sid, function })?;
        let info = module::flow_info(id, worker as u32, client, server, sid, function, argument);
        Ok((func.clone(), Instance::spawn(func, &info)?))
    };
    let (func, inst) = spawn(route.sid, route.function, route.argument)?;
    let active =
        |f: &Function, inst: Instance, dirs: &[Direction]| dirs.iter().any(|&d| f.transforms(d)).then_some(inst);
    let (insts, downstream) = match &back {
        Some(ReturnPlan { sid, function, argument, .. })
            if (*function, *argument) != (route.function, route.argument) =>
        {
            let (down_func, down) = spawn(*sid, *function, *argument)?;
            tracing::debug!(flow = id, up = %func.name, down = %down_func.name, "asymmetric functions");
            let downstream = Downstream {
                sid: *sid,
                function: down_func.name.as_str().into(),
                function_id: *function,
                argument: *argument,
            };
            let insts = Instances::Split {
                up: active(&func, inst, &[Direction::Up]),
                down: active(&down_func, down, &[Direction::Down]),
            };
            (insts, Some(downstream))
        }
        _ => (Instances::Shared(active(&func, inst, &Direction::BOTH)), None),
    };
    if let Some(reply) = back.as_ref().and_then(|b| b.srh.as_deref()) {
        attach::set_srh(stream.as_fd(), reply)?;
    }
    Ok((route, func, insts, downstream))
}

/// Open the outbound leg: source = the client, SRH = the remaining segments, destination = the server.
pub async fn connect_out(
    client: SocketAddrV6,
    server: SocketAddrV6,
    srh: Option<&[u8]>,
    cfg: &FlowConfig,
) -> io::Result<TcpStream> {
    let mut port = if cfg.keep_client_port { client.port() } else { 0 };
    loop {
        let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
        attach::set_transparent(s.as_fd())?;
        s.set_reuse_address(true)?;
        s.set_nodelay(true)?;
        keepalive(SockRef::from(&s));
        cfg.timeouts.apply(SockRef::from(&s));
        match s.bind(&SocketAddr::from(SocketAddrV6::new(*client.ip(), port, 0, 0)).into()) {
            Err(e) if port != 0 && e.raw_os_error() == Some(libc::EADDRINUSE) => {
                port = 0;
                continue;
            }
            r => r?,
        }
        if let Some(srh) = srh {
            attach::set_srh(s.as_fd(), srh)?;
        }
        s.set_nonblocking(true)?;
        let sock = TcpSocket::from_std_stream(s.into());
        match tokio::time::timeout(cfg.connect_timeout, sock.connect(SocketAddr::V6(server))).await {
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            Ok(Err(e)) if port != 0 && e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                port = 0;
                continue;
            }
            Ok(r) => return r,
        }
    }
}

/// Why the proxy ends a flow itself (its peers did not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    /// The proxy stops.
    Stop,
    /// `ctl kill`.
    Killed,
    /// A bound on progress was exceeded.
    Expired(Expired),
}

/// Resolves when the proxy ends the flow of `entry`: it stops, the flow is killed, or (once `bounded`,
/// when both legs are up) a timeout expires.
async fn interrupted(entry: &FlowEntry, shared: &Shared, bounded: bool) -> Interrupt {
    let expired = async {
        if bounded {
            shared.cfg.timeouts.expired(entry).await
        } else {
            std::future::pending().await
        }
    };
    tokio::select! {
        () = shared.life.stopping() => Interrupt::Stop,
        () = entry.killed() => Interrupt::Killed,
        why = expired => Interrupt::Expired(why),
    }
}

/// Count and log a flow the proxy ends itself (the caller resets its sockets).
fn count_interrupt(why: Interrupt, entry: &FlowEntry, shared: &Shared) {
    let c = &shared.flows.counters;
    let counter = match why {
        Interrupt::Stop => &c.flows_stopped,
        Interrupt::Killed => &c.flows_killed,
        Interrupt::Expired(Expired::Idle) => &c.idle_timeouts,
        Interrupt::Expired(Expired::ServerFin) => &c.server_fin_timeouts,
        Interrupt::Expired(Expired::ClientFin) => &c.client_fin_timeouts,
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match why {
        Interrupt::Stop => tracing::debug!(flow = entry.id, "flow reset: the proxy stops"),
        Interrupt::Killed => tracing::info!(flow = entry.id, client = %entry.meta.client, "flow reset: ctl kill"),
        Interrupt::Expired(e) => {
            static LIMIT: LogLimit = LogLimit::new(20);
            if let Some(suppressed) = LIMIT.allow() {
                tracing::info!(
                    flow = entry.id,
                    client = %entry.meta.client,
                    server = %entry.meta.server,
                    state = %entry.state(),
                    suppressed,
                    "flow reset: no progress within {}",
                    e.option()
                );
            }
        }
    }
}

/// Whether a relay ended because a peer left data unacknowledged past the user timeout (or did not
/// answer keepalive probes): the kernel aborts the leg with ETIMEDOUT.
fn peer_timed_out(e: &RelayError) -> Option<&'static str> {
    match e {
        RelayError::Io { side, err } if err.raw_os_error() == Some(libc::ETIMEDOUT) => Some(side),
        _ => None,
    }
}

/// A fault hook of debug builds, for the tests of flow cleanup: a flow to the server port named by
/// `SRV6PIPES_PROXY_PANIC_PORT` panics in its task.
#[cfg(debug_assertions)]
fn fault_hook(server: SocketAddrV6) {
    if std::env::var("SRV6PIPES_PROXY_PANIC_PORT").is_ok_and(|p| p == server.port().to_string()) {
        panic!("fault hook: a flow to port {} panics", server.port());
    }
}

/// A leg closed with a reset when dropped, unless the flow ended cleanly: a flow cut short in any way
/// (a panic of its task included) resets its peers instead of leaving them a FIN.
struct ResetOnDrop {
    stream: TcpStream,
    clean: bool,
}

impl ResetOnDrop {
    fn new(stream: TcpStream) -> ResetOnDrop {
        ResetOnDrop { stream, clean: false }
    }
}

impl std::ops::Deref for ResetOnDrop {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.stream
    }
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if !self.clean {
            reset(&self.stream);
        }
    }
}

/// Connect, relay, close. Returns whether the flow ended with a reset (both legs are reset, on drop,
/// unless it ended cleanly).
async fn run(
    inbound: TcpStream,
    client: SocketAddrV6,
    server: SocketAddrV6,
    route: Route,
    insts: Instances,
    entry: &FlowEntry,
    shared: &Shared,
) -> bool {
    let mut inbound = ResetOnDrop::new(inbound);
    let connect = connect_out(client, server, route.out_srh.as_deref(), &shared.cfg);
    let connected = tokio::select! {
        r = connect => r,
        why = interrupted(entry, shared, false) => {
            count_interrupt(why, entry, shared);
            return true;
        }
    };
    let mut outbound = match connected {
        Ok(s) => ResetOnDrop::new(s),
        Err(e) => {
            // Out of descriptors for the outbound leg: a refusal at the limit, not a failure of the next hop.
            let c = &shared.flows.counters;
            if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                shared.flows.refused(Reason::Limit, stats::Refused::default());
            } else {
                c.connect_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if e.kind() == io::ErrorKind::TimedOut {
                    c.connect_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            static LIMIT: LogLimit = LogLimit::new(20);
            if let Some(suppressed) = LIMIT.allow() {
                tracing::warn!(flow = entry.id, %client, %server, suppressed, "outbound leg failed (next hop unreachable?), resetting the client: {e}");
            }
            return true;
        }
    };
    entry.set_state(FlowState::Established);
    #[cfg(debug_assertions)]
    fault_hook(server);
    let result = tokio::select! {
        r = relay::relay(&inbound, &outbound, insts, entry, &shared.cfg.relay) => r,
        why = interrupted(entry, shared, true) => {
            count_interrupt(why, entry, shared);
            return true;
        }
    };
    entry.set_state(FlowState::Closing);
    match result {
        Ok(()) => {
            tracing::debug!(
                flow = entry.id,
                up = entry.up_in.load(std::sync::atomic::Ordering::Relaxed),
                down = entry.down_in.load(std::sync::atomic::Ordering::Relaxed),
                "flow closed"
            );
            (inbound.clean, outbound.clean) = (true, true);
            // A leg we closed first is in TIME_WAIT now (or once our FIN is acknowledged): remove it so
            // the client can reuse its port at once (see `timewait`).
            timewait::reap(&*inbound, server, client);
            if let Some(local) = outbound.local_addr().ok().and_then(|a| v6(a).ok()) {
                timewait::reap(&*outbound, local, server);
            }
            false
        }
        Err(e) => {
            match peer_timed_out(&e) {
                Some(side) => {
                    shared.flows.counters.peer_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    static LIMIT: LogLimit = LogLimit::new(20);
                    if let Some(suppressed) = LIMIT.allow() {
                        tracing::info!(
                            flow = entry.id, %client, %server, side, suppressed,
                            "flow reset: the {side} left data unacknowledged (or did not answer) within --user-timeout"
                        );
                    }
                }
                None => tracing::debug!(flow = entry.id, "flow reset: {e}"),
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libsrv6sock::wire::tlv::TlvRepr;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn route_finds_our_sid_and_keeps_the_rest() {
        let p1: Ipv6Prefix = "fc00:f1::/80".parse().unwrap();
        let layout = SidLayout::default();
        let sid1 = a("fc00:f1::2:0:5a");
        let sid2 = a("fc00:f2::2:0:5a");
        let mut srh = SrhRepr::for_path(a("fc00:4::2"), &[sid1, sid2]).unwrap();
        srh.tlvs.push(TlvRepr::ReturnPath(vec![sid2, sid1]));
        srh.segments_left = 0;
        let bytes = srh.to_bytes().unwrap();
        let r = route(Some(&bytes), &[p1], &layout).unwrap();
        assert_eq!((r.sid, r.function, r.argument), (sid1, 2, 0x5a));
        let out = SrhRepr::from_bytes(r.out_srh.as_deref().unwrap()).unwrap();
        assert_eq!(out.segments, vec![a("fc00:4::2"), sid2, sid1]);
        assert_eq!(out.segments_left, 1);
        assert_eq!(out.return_path(), Some(&[sid2, sid1][..]));
        // Last proxy: no SRH on the outbound leg.
        let p2: Ipv6Prefix = "fc00:f2::/80".parse().unwrap();
        let r = route(Some(out.to_bytes().unwrap().as_slice()), &[p2], &layout).unwrap();
        assert_eq!(r.out_srh, None);
        assert_eq!(r.sid, sid2);
    }

    #[test]
    fn route_refusals() {
        let p1: Ipv6Prefix = "fc00:f1::/80".parse().unwrap();
        let l = SidLayout::default();
        assert!(matches!(route(None, &[p1], &l), Err(Refusal::NoSrh)));
        assert!(matches!(route(Some(&[0, 0, 4]), &[p1], &l), Err(Refusal::Malformed(_))));
        let other = SrhRepr::for_path(a("fc00:4::2"), &[a("fc00:f9::1")]).unwrap().to_bytes().unwrap();
        assert!(matches!(route(Some(&other), &[p1], &l), Err(Refusal::NotOurs)));
        // A final destination inside our prefix: connecting there would loop back to us.
        let direct = SrhRepr::for_path(a("fc00:f1::9"), &[a("fc00:f9::1")]).unwrap().to_bytes().unwrap();
        assert!(matches!(route(Some(&direct), &[p1], &l), Err(Refusal::OwnSid { .. })));
        // Our SID as the destination with segments left 0, and our SID right after our SID.
        let sid = a("fc00:f1::2:0:5a");
        let mut own = SrhRepr::for_path(sid, &[sid]).unwrap();
        own.segments_left = 0;
        let own = own.to_bytes().unwrap();
        assert!(matches!(route(Some(&own), &[p1], &l), Err(Refusal::OwnSid { next }) if next == sid));
        let twice = SrhRepr::for_path(a("fc00:4::2"), &[sid, a("fc00:f1::1:0:0")]).unwrap().to_bytes().unwrap();
        assert!(matches!(route(Some(&twice), &[p1], &l), Err(Refusal::OwnSid { .. })));
        let only = SrhRepr::for_path(sid, &[]).unwrap().to_bytes().unwrap();
        assert!(matches!(route(Some(&only), &[p1], &l), Err(Refusal::OwnSid { .. })));
    }
}
