//! The flow table without the TUI: JSON for scripts (`--json`) and a text table (`--report`), built from
//! the same rows the screen shows.

use std::fmt::Write as _;
use std::net::Ipv6Addr;
use std::time::Duration;

use serde::Serialize;

use crate::app::App;
use crate::flows::{Direction, Flow, Proto, TcpState, Totals};
use crate::format::{addr_port, bytes, rate};

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// Where the packets came from.
    pub source: &'a str,
    /// Counters over everything seen.
    pub totals: Totals,
    /// Packets the monitor dropped because it could not keep up.
    pub dropped: u64,
    /// Packets the kernel dropped.
    pub kernel_dropped: u64,
    /// Flows, largest first.
    pub flows: Vec<FlowReport>,
    /// The proxies watched.
    pub proxies: Vec<ProxyReport>,
}

/// One flow.
#[derive(Debug, Serialize)]
pub struct FlowReport {
    /// tcp or udp.
    pub proto: Proto,
    /// Client address.
    pub client: Ipv6Addr,
    /// Client port.
    pub client_port: u16,
    /// Server (final destination) address.
    pub server: Ipv6Addr,
    /// Server port.
    pub server_port: u16,
    /// The forward SRH's segments in SRH order (`[0]` is the final destination), if one was seen.
    pub segments: Option<Vec<Ipv6Addr>>,
    /// Segments left in the last forward packet.
    pub segments_left: Option<u8>,
    /// The active segment of the last forward packet.
    pub active_segment: Option<Ipv6Addr>,
    /// Segments that are proxy functions.
    pub functions: Vec<FunctionReport>,
    /// The return-path TLV's addresses.
    pub return_path: Option<Vec<Ipv6Addr>>,
    /// The SRH seen on replies, in SRH order.
    pub return_segments: Option<Vec<Ipv6Addr>>,
    /// The waypoints replies are steered along (the reply SRH carries the return path), SRH order.
    pub steered_via: Option<Vec<Ipv6Addr>>,
    /// Client to server.
    pub up: DirReport,
    /// Server to client.
    pub down: DirReport,
    /// TCP state from the flags seen.
    pub state: TcpState,
    /// Seconds since the first packet.
    pub age_s: f64,
    /// What the proxies say about this flow.
    pub proxies: Vec<ProxyFlowReport>,
}

/// A function SID of a flow.
#[derive(Debug, Serialize)]
pub struct FunctionReport {
    /// The SID.
    pub sid: Ipv6Addr,
    /// Its locator.
    pub locator: String,
    /// Function number.
    pub function: u64,
    /// Function name, if known.
    pub name: Option<String>,
    /// Argument bits.
    pub argument: u64,
}

/// One direction of a flow.
#[derive(Debug, Serialize)]
pub struct DirReport {
    /// Packets.
    pub packets: u64,
    /// Bytes on the wire.
    pub bytes: u64,
    /// Transport payload bytes.
    pub payload: u64,
    /// Wire bytes per second over the last second.
    pub rate: u64,
}

/// A proxy's entry for a captured flow.
#[derive(Debug, Serialize)]
pub struct ProxyFlowReport {
    /// The proxy's control socket.
    pub socket: String,
    /// The proxy's flow id.
    pub id: u64,
    /// The proxy's flow state.
    pub state: String,
    /// Function name.
    pub function: String,
    /// The function of server → client bytes, when the return path names another one.
    pub function_down: Option<String>,
    /// Bytes read from the client.
    pub bytes_up: u64,
    /// Bytes read from the server.
    pub bytes_down: u64,
    /// Bytes written to the server.
    pub bytes_up_out: u64,
    /// Bytes written to the client.
    pub bytes_down_out: u64,
}

/// A proxy watched.
#[derive(Debug, Serialize)]
pub struct ProxyReport {
    /// Its control socket.
    pub socket: String,
    /// Live flows.
    pub flows: usize,
    /// Why it could not be read, if it could not.
    pub error: Option<String>,
}

/// The report of what `app` shows, as of `now`.
pub fn build(app: &App, now: Duration) -> Report<'_> {
    let table = app.shown();
    let flows = app.rows(now).into_iter().map(|f| flow(app, f, now)).collect();
    let proxies = app
        .proxies
        .proxies
        .iter()
        .map(|p| ProxyReport { socket: p.socket.display().to_string(), flows: p.flows.len(), error: p.error.clone() })
        .collect();
    Report {
        source: &app.source.label,
        totals: table.totals(),
        dropped: app.losses.dropped,
        kernel_dropped: app.losses.kernel,
        flows,
        proxies,
    }
}

fn flow(app: &App, f: &Flow, now: Duration) -> FlowReport {
    let dir = |d: Direction| {
        let s = if d == Direction::Up { &f.up } else { &f.down };
        DirReport { packets: s.packets, bytes: s.bytes, payload: s.payload, rate: s.rate.per_second(now) }
    };
    let functions = f
        .srh()
        .into_iter()
        .flat_map(|s| s.segments.iter())
        .filter_map(|sid| {
            app.functions.call(*sid).map(|c| FunctionReport {
                sid: *sid,
                locator: c.locator.to_string(),
                function: c.function,
                name: c.name,
                argument: c.argument,
            })
        })
        .collect();
    FlowReport {
        proto: f.key.proto,
        client: f.key.client.0,
        client_port: f.key.client.1,
        server: f.key.server.0,
        server_port: f.key.server.1,
        segments: f.srh().map(|s| s.segments.clone()),
        segments_left: f.srh().map(|s| s.segments_left),
        active_segment: f.active_segment,
        functions,
        return_path: f.return_path().map(<[Ipv6Addr]>::to_vec),
        return_segments: f.return_srh().map(|s| s.segments.clone()),
        steered_via: f.steered_via().map(<[Ipv6Addr]>::to_vec),
        up: dir(Direction::Up),
        down: dir(Direction::Down),
        state: f.state,
        age_s: now.saturating_sub(f.first_seen).as_secs_f64(),
        proxies: app
            .proxies
            .joined(&f.key)
            .into_iter()
            .map(|(socket, p)| ProxyFlowReport {
                socket: socket.display().to_string(),
                id: p.id,
                state: p.state.to_string(),
                function: p.function.clone(),
                function_down: p.downstream.as_ref().map(|d| d.function.clone()),
                bytes_up: p.bytes_up,
                bytes_down: p.bytes_down,
                bytes_up_out: p.bytes_up_out,
                bytes_down_out: p.bytes_down_out,
            })
            .collect(),
    }
}

/// The report as a plain text table, one flow per line.
pub fn text(report: &Report<'_>) -> String {
    let t = &report.totals;
    let mut out = format!(
        "{}: {} flows, {} IPv6 packets, {} with an SRH, {} malformed, {} undecodable, {} dropped, {} dropped by the kernel\n",
        report.source,
        report.flows.len(),
        t.ipv6,
        t.srv6,
        t.malformed,
        t.undecodable,
        report.dropped,
        report.kernel_dropped
    );
    let _ = writeln!(
        out,
        "{:<5} {:<28} {:<28} {:<3} {:<24} {:>11} {:>15} {:>17} {:<9} SEGMENTS (visit order)",
        "PROTO", "CLIENT", "SERVER", "SL", "FUNCTIONS", "PKTS ↑/↓", "BYTES ↑/↓", "RATE ↑/↓", "STATE"
    );
    for f in &report.flows {
        let segments = f
            .segments
            .as_ref()
            .map(|s| s.iter().rev().map(ToString::to_string).collect::<Vec<_>>().join(" → "))
            .unwrap_or_else(|| String::from("-"));
        let functions: Vec<String> = f
            .functions
            .iter()
            .map(|c| format!("{}({:#x})", c.name.clone().unwrap_or_else(|| format!("f{}", c.function)), c.argument))
            .collect();
        let _ = writeln!(
            out,
            "{:<5} {:<28} {:<28} {:<3} {:<24} {:>11} {:>15} {:>17} {:<9} {segments}",
            f.proto.to_string(),
            addr_port((f.client, f.client_port)),
            addr_port((f.server, f.server_port)),
            f.segments_left.map_or_else(|| String::from("-"), |s| s.to_string()),
            if functions.is_empty() { String::from("-") } else { functions.join(",") },
            format!("{}/{}", f.up.packets, f.down.packets),
            format!("{}/{}", bytes(f.up.bytes), bytes(f.down.bytes)),
            format!("{}/{}", rate(f.up.rate), rate(f.down.rate)),
            f.state.to_string(),
        );
    }
    out
}
