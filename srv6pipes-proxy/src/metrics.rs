//! The counters of `ctl stats` in the Prometheus text exposition format (version 0.0.4), served over
//! HTTP on `--metrics ADDR` (`GET /metrics`; any other path is 404).
//!
//! Every member of [`Stats`] is one metric `srv6pipes_proxy_<member>`: counters get the `_total` suffix,
//! gauges (uptime, workers, live flows) keep their name. The `refused_*` counters become one counter with
//! a `reason` label, the `*_timeouts` one counter with a `reason` label. Per SID and per function:
//! `srv6pipes_proxy_sid_*` and `srv6pipes_proxy_function_*` with `sid`, `function` and `id` labels.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use srv6pipes_api::control::{StatsReply, Usage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::flow::Shared;
use crate::lifecycle::Phase;

/// The Prometheus kind of a metric.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// The exposition of `r`.
pub fn render(r: &StatsReply) -> String {
    let s = &r.stats;
    let mut out = String::with_capacity(4096);
    let mut one = |name: &str, kind: Kind, help: &str, samples: &[(&str, u64)]| {
        let (kind, name) = match kind {
            Kind::Counter => ("counter", format!("srv6pipes_proxy_{name}_total")),
            Kind::Gauge => ("gauge", format!("srv6pipes_proxy_{name}")),
        };
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    one("uptime_seconds", Kind::Gauge, "Seconds since the proxy started.", &[("", s.uptime_s)]);
    one("workers", Kind::Gauge, "Worker threads.", &[("", s.workers)]);
    one("flows_active", Kind::Gauge, "Live flows.", &[("", s.flows_active)]);
    one("flows_accepted", Kind::Counter, "Flows accepted.", &[("", s.accepted)]);
    one(
        "flows_refused",
        Kind::Counter,
        "Flows refused (reset), by reason.",
        &[
            ("{reason=\"no_srh\"}", s.refused_no_srh),
            ("{reason=\"malformed\"}", s.refused_malformed),
            ("{reason=\"not_ours\"}", s.refused_not_ours),
            ("{reason=\"unknown_function\"}", s.refused_unknown_function),
            ("{reason=\"spawn\"}", s.refused_spawn),
            ("{reason=\"own_sid\"}", s.refused_own_sid),
            ("{reason=\"draining\"}", s.refused_draining),
            ("{reason=\"limit\"}", s.refused_limit),
            ("{reason=\"client\"}", s.refused_client),
            ("{reason=\"next\"}", s.refused_next),
            ("{reason=\"hmac_missing\"}", s.refused_hmac_missing),
            ("{reason=\"hmac_key\"}", s.refused_hmac_key),
            ("{reason=\"hmac_wrong\"}", s.refused_hmac_wrong),
        ],
    );
    one("connect_failed", Kind::Counter, "Outbound connections that failed.", &[("", s.connect_failed)]);
    one("flows_closed", Kind::Counter, "Flows ended by FINs.", &[("", s.flows_closed)]);
    one("flows_reset", Kind::Counter, "Flows ended by a reset.", &[("", s.flows_reset)]);
    one(
        "timeouts",
        Kind::Counter,
        "Flows reset by a timeout, by reason (connect timeouts are also connect failures).",
        &[
            ("{reason=\"idle\"}", s.idle_timeouts),
            ("{reason=\"server_fin\"}", s.server_fin_timeouts),
            ("{reason=\"client_fin\"}", s.client_fin_timeouts),
            ("{reason=\"peer\"}", s.peer_timeouts),
            ("{reason=\"connect\"}", s.connect_timeouts),
        ],
    );
    one("flows_killed", Kind::Counter, "Flows reset by ctl kill.", &[("", s.flows_killed)]);
    one("flows_stopped", Kind::Counter, "Flows reset because the proxy stopped.", &[("", s.flows_stopped)]);
    one("bytes_up", Kind::Counter, "Bytes read from clients.", &[("", s.bytes_up)]);
    one("bytes_down", Kind::Counter, "Bytes read from servers.", &[("", s.bytes_down)]);
    let sids: Vec<(String, &Usage)> = r.sids.iter().map(|x| (format!("sid=\"{}\"", x.sid), &x.usage)).collect();
    let funcs: Vec<(String, &Usage)> = r
        .functions
        .iter()
        .map(|f| (format!("function=\"{}\",id=\"{}\"", escape(&f.function), f.function_id), &f.usage))
        .collect();
    for (what, rows) in [("sid", &sids), ("function", &funcs)] {
        let per = |field: fn(&Usage) -> u64| -> Vec<(String, u64)> {
            rows.iter().map(|(l, u)| (format!("{{{l}}}"), field(u))).collect()
        };
        let mut series = |name: &str, kind: Kind, help: &str, samples: Vec<(String, u64)>| {
            let samples: Vec<(&str, u64)> = samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
            one(&format!("{what}_{name}"), kind, &format!("{help}, per {what}."), &samples);
        };
        series("flows_active", Kind::Gauge, "Live flows", per(|u| u.flows_active));
        series("flows_accepted", Kind::Counter, "Flows accepted", per(|u| u.accepted));
        series("flows_reset", Kind::Counter, "Flows ended by a reset", per(|u| u.flows_reset));
        series("bytes_up", Kind::Counter, "Bytes read from clients", per(|u| u.bytes_up));
        series("bytes_down", Kind::Counter, "Bytes read from servers", per(|u| u.bytes_down));
        let refused = rows
            .iter()
            .flat_map(|(l, u)| u.refused.iter().map(move |(reason, n)| (format!("{{{l},reason=\"{reason}\"}}"), *n)))
            .collect();
        series("flows_refused", Kind::Counter, "Flows refused, by reason", refused);
    }
    out
}

/// A label value: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The endpoint's listener, in a SO_REUSEPORT group so that a successor (`--takeover`) can bind the same
/// address while this proxy still serves it.
pub fn listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    s.set_nonblocking(true)?;
    TcpListener::from_std(s.into())
}

/// Serve `GET /metrics` until the proxy hands over to a successor (which serves it then) or stops.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut phase = shared.life.subscribe();
    let over = |p: &Phase| matches!(p, Phase::Stopping | Phase::Draining { handover: true, .. });
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = phase.wait_for(over) => return,
        };
        match accepted {
            Ok((s, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), answer(s, &shared)).await {
                        Ok(Err(e)) => tracing::debug!("metrics connection: {e}"),
                        Err(_) => tracing::debug!("metrics connection: timed out"),
                        Ok(Ok(())) => {}
                    }
                });
            }
            Err(e) => {
                tracing::warn!("metrics accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Read one request head (at most 8 KiB) and answer it; the connection is closed after.
async fn answer(mut s: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 || head.len() + n > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, ctype, body) = match (method, path) {
        (b"GET", b"/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(&shared.flows.report())),
        (b"GET", _) => ("404 Not Found", "text/plain", "not found: try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_string()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(reply.as_bytes()).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use srv6pipes_api::control::{FunctionStats, SidStats, Stats};

    #[test]
    fn every_counter_is_exposed_once_with_help_and_type() {
        let stats = Stats {
            uptime_s: 1,
            workers: 2,
            flows_active: 3,
            accepted: 4,
            refused: 0,
            refused_no_srh: 5,
            refused_malformed: 6,
            refused_not_ours: 7,
            refused_unknown_function: 8,
            refused_spawn: 9,
            refused_own_sid: 10,
            refused_draining: 11,
            refused_limit: 12,
            refused_client: 20,
            refused_next: 21,
            refused_hmac_missing: 22,
            refused_hmac_key: 23,
            refused_hmac_wrong: 24,
            idle_timeouts: 13,
            server_fin_timeouts: 25,
            client_fin_timeouts: 26,
            peer_timeouts: 27,
            connect_timeouts: 28,
            flows_killed: 29,
            flows_stopped: 14,
            connect_failed: 15,
            flows_closed: 16,
            flows_reset: 17,
            bytes_up: 18,
            bytes_down: 19,
        };
        let text = render(&StatsReply { stats, sids: vec![], functions: vec![] });
        // Every value but the `refused` sum appears as a sample.
        let values: Vec<u64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        let mut sorted = values.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=29).collect::<Vec<u64>>(), "{text}");
        assert!(text.contains("# TYPE srv6pipes_proxy_flows_refused_total counter\n"));
        assert!(text.contains("srv6pipes_proxy_flows_refused_total{reason=\"own_sid\"} 10\n"));
        assert!(text.contains("# TYPE srv6pipes_proxy_flows_active gauge\nsrv6pipes_proxy_flows_active 3\n"));
        assert_eq!(text.matches("# HELP ").count(), text.matches("# TYPE ").count());
    }

    #[test]
    fn per_sid_and_per_function_series_carry_their_labels() {
        let usage =
            Usage { accepted: 3, bytes_up: 7, refused: [("own_sid".to_string(), 2)].into(), ..Usage::default() };
        let stats = Stats {
            uptime_s: 0,
            workers: 1,
            flows_active: 0,
            accepted: 3,
            refused: 2,
            refused_no_srh: 0,
            refused_malformed: 0,
            refused_not_ours: 0,
            refused_unknown_function: 0,
            refused_spawn: 0,
            refused_own_sid: 2,
            refused_draining: 0,
            refused_limit: 0,
            refused_client: 0,
            refused_next: 0,
            refused_hmac_missing: 0,
            refused_hmac_key: 0,
            refused_hmac_wrong: 0,
            idle_timeouts: 0,
            server_fin_timeouts: 0,
            client_fin_timeouts: 0,
            peer_timeouts: 0,
            connect_timeouts: 0,
            flows_killed: 0,
            flows_stopped: 0,
            connect_failed: 0,
            flows_closed: 3,
            flows_reset: 0,
            bytes_up: 7,
            bytes_down: 0,
        };
        let r = StatsReply {
            stats,
            sids: vec![SidStats { sid: "fc00:f1::2:0:5a".parse().unwrap(), usage: usage.clone() }],
            functions: vec![FunctionStats { function_id: 2, function: "x\"or".into(), usage }],
        };
        let text = render(&r);
        assert!(text.contains("srv6pipes_proxy_sid_bytes_up_total{sid=\"fc00:f1::2:0:5a\"} 7\n"), "{text}");
        assert!(
            text.contains("srv6pipes_proxy_sid_flows_refused_total{sid=\"fc00:f1::2:0:5a\",reason=\"own_sid\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("srv6pipes_proxy_function_flows_accepted_total{function=\"x\\\"or\",id=\"2\"} 3\n"),
            "{text}"
        );
        assert_eq!(text.matches("# HELP ").count(), text.matches("# TYPE ").count());
    }
}
