//! The proxies' own view: their flow tables and counters, read over their control sockets with the typed
//! protocol of `srv6pipes-api`, and joined with the captured flows by client and server address.

use std::net::SocketAddrV6;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use libsrv6sock::wire::prefix::Ipv6Prefix;
use srv6pipes_api::control::{call, FlowsReply, Request, Stats, StatsReply};

use crate::flows::{FlowKey, Proto};
use crate::functions::Functions;

/// How long one control request may take before the proxy counts as unreachable for this round.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// What one proxy said last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyState {
    /// Its control socket.
    pub socket: PathBuf,
    /// Its live flows, as of the last answer.
    pub flows: Vec<srv6pipes_api::control::Flow>,
    /// Its counters, as of the last answer.
    pub stats: Option<Stats>,
    /// Why the last request failed, if it did.
    pub error: Option<String>,
}

/// Every proxy watched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    /// One per `--proxy` socket, in command-line order.
    pub proxies: Vec<ProxyState>,
}

/// One poll of one proxy, sent by the poller to the monitor.
pub type Update = (usize, Result<(FlowsReply, StatsReply), String>);

impl Proxies {
    /// Watch these sockets (nothing known yet).
    pub fn new(sockets: &[PathBuf]) -> Proxies {
        Proxies {
            proxies: sockets
                .iter()
                .map(|s| ProxyState { socket: s.clone(), flows: Vec::new(), stats: None, error: None })
                .collect(),
        }
    }

    /// Ask every proxy once, in this thread.
    pub fn poll_now(sockets: &[PathBuf]) -> Vec<Update> {
        sockets.iter().enumerate().map(|(i, s)| (i, ask(s))).collect()
    }

    /// Take in an answer, and learn the proxies' function names and locators for SID naming.
    pub fn apply(&mut self, (i, update): Update, functions: &mut Functions) {
        let Some(p) = self.proxies.get_mut(i) else { return };
        match update {
            Ok((flows, stats)) => {
                for f in &flows.flows {
                    functions.name_function(f.function_id, &f.function);
                    if let Ok(locator) = Ipv6Prefix::new(f.sid, functions.layout().locator_bits()) {
                        functions.add_locator(locator);
                    }
                }
                p.flows = flows.flows;
                p.stats = Some(stats.stats);
                p.error = None;
            }
            Err(e) => p.error = Some(e),
        }
    }

    /// The proxies' entries for a captured TCP flow: (proxy socket, its flow).
    pub fn joined(&self, key: &FlowKey) -> Vec<(&Path, &srv6pipes_api::control::Flow)> {
        if key.proto != Proto::Tcp {
            return Vec::new();
        }
        let client = SocketAddrV6::new(key.client.0, key.client.1, 0, 0);
        let server = SocketAddrV6::new(key.server.0, key.server.1, 0, 0);
        self.proxies
            .iter()
            .flat_map(|p| p.flows.iter().map(move |f| (p.socket.as_path(), f)))
            .filter(|(_, f)| same(f.client, client) && same(f.server, server))
            .collect()
    }
}

/// Addresses equal, scope ids aside.
fn same(a: SocketAddrV6, b: SocketAddrV6) -> bool {
    a.ip() == b.ip() && a.port() == b.port()
}

fn ask(socket: &Path) -> Result<(FlowsReply, StatsReply), String> {
    let flows = call::<FlowsReply>(socket, &Request::Flows, CALL_TIMEOUT).map_err(|e| e.to_string())?;
    let stats = call::<StatsReply>(socket, &Request::Stats, CALL_TIMEOUT).map_err(|e| e.to_string())?;
    Ok((flows, stats))
}

/// Poll every proxy each `interval` in a thread of its own, so that a slow proxy never stalls the screen;
/// stops when the monitor drops the receiver.
pub fn spawn_poller(sockets: Vec<PathBuf>, interval: Duration) -> Receiver<Update> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || poll_loop(&sockets, interval, &tx));
    rx
}

fn poll_loop(sockets: &[PathBuf], interval: Duration, tx: &Sender<Update>) {
    loop {
        for update in Proxies::poll_now(sockets) {
            if tx.send(update).is_err() {
                return;
            }
        }
        std::thread::sleep(interval);
    }
}
