//! srv6pipes-proxy's bounds, counters and control (issue 15, parts 3, 4 and 6; issue 13, item 4): topology
//! `proxy-chain` (client — p1 — p2 — server), both proxies real processes, clients under `srv6run`.
//!
//! Flows that stop making progress (half-closed, blocked on a closed window, a next hop that black-holes
//! after the handshake) end within their bound with a reset the client sees, counted by reason; counters
//! never go backwards while flows churn; `ctl kill`; a read-only control group; a module whose init takes
//! its time does not stall accepts; a flow task that panics gives its slot and row back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use srv6pipes_api::control::{KillReply, LoadReply, StatsReply};
use srv6pipes_tests::http::HttpServer;
use srv6pipes_tests::proxy::Proxy;
use srv6pipes_tests::{binaries, wait_until, with_net, Net, Proc};

const SERVER: &str = "fc00:4::2";
const HTTP_PORT: u16 = 8080;
/// Port of `stuck_flows.py serve`.
const STUCK_PORT: u16 = 9200;
const XOR_CHAIN: &str = "fc00:f1::2:0:5a,fc00:f2::2:0:5a";
const COPY_CHAIN: &str = "fc00:f1::1:0:0,fc00:f2::1:0:0";
const T: Duration = Duration::from_secs(30);
/// What the tests accept for a 2 s bound on a loaded 2-core machine: the bound is checked between one and
/// two bounds after the last byte, plus the time for the resets to cross the chain.
const WITHIN: f64 = 10.0;

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name).display().to_string()
}

/// `srv6run --segs SEGS -- ARGV…` in the client.
fn srv6run(net: &Net, segs: &str, argv: &[&str]) -> Result<srv6pipes_tests::Cmd> {
    Ok(net.cmd("client", [binaries::path("srv6run")?]).args(["--segs", segs, "--fail", "closed", "--"]).args(argv))
}

/// `stuck_flows.py serve` in the server, on `port`.
fn stuck_server(net: &Net, port: u16) -> Result<Proc> {
    let server = net.cmd("server", ["/usr/bin/python3", &script("stuck_flows.py"), "serve", &port.to_string()]);
    let server = server.spawn()?;
    wait_until("the stuck-flows server", T, || Ok(server.stdout().contains("listening")))?;
    Ok(server)
}

/// `stuck_flows.py ARGS…` through `segs`, spawned; returns once it printed "connected".
fn stuck_client(net: &Net, segs: &str, args: &[&str]) -> Result<Proc> {
    let mut argv = vec!["/usr/bin/python3".to_string(), script("stuck_flows.py")];
    argv.extend(args.iter().map(|a| a.to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut p = srv6run(net, segs, &argv)?.spawn()?;
    p.wait_until("the client to connect", T, |p| Ok(p.stdout().contains("connected")))?;
    Ok(p)
}

/// The client's verdict ("reset", "eof", "open") and after how many seconds.
fn verdict(p: Proc) -> Result<(String, f64)> {
    let out = p.wait(Duration::from_secs(60))?;
    ensure!(out.status.success(), "the client: {out}");
    let line = out.stdout.lines().last().context("no verdict")?.to_string();
    let (what, secs) = line.split_once(' ').with_context(|| format!("verdict {line:?}: {out}"))?;
    Ok((what.to_string(), secs.parse().with_context(|| format!("verdict {line:?}"))?))
}

#[test]
fn a_half_closed_flow_ends_after_the_server_fin_timeout() {
    with_net("proxy-chain", "pxfin", |net| {
        let p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &["--server-fin-timeout", "2"])?;
        let _p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &[])?;
        let _server = stuck_server(net, STUCK_PORT)?;
        // The client sends its FIN; the server never sends nor closes.
        let client = stuck_client(net, XOR_CHAIN, &["halfclose", SERVER, &STUCK_PORT.to_string(), "40"])?;
        let (what, secs) = verdict(client)?;
        ensure!(what == "reset" && secs < WITHIN, "half-closed flow: {what} after {secs} s");
        let s = p1.stats(net)?;
        ensure!(s.server_fin_timeouts == 1 && s.flows_active == 0, "{s:?}");
        ensure!(p1.stderr().contains("no progress within --server-fin-timeout"), "p1 did not log the reason");
        Ok(())
    });
}

#[test]
fn a_flow_blocked_on_a_closed_window_ends_after_the_idle_timeout() {
    with_net("proxy-chain", "pxzwin", |net| {
        // The kernel's bound on a closed window (--user-timeout) is made long: the idle bound acts.
        let p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &["--idle-timeout", "2", "--user-timeout", "120"])?;
        let _p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &[])?;
        let _server = stuck_server(net, STUCK_PORT)?;
        // The server floods, the client never reads: p1 stays blocked writing to a zero window.
        let client = stuck_client(net, COPY_CHAIN, &["noread", SERVER, &STUCK_PORT.to_string(), "40"])?;
        wait_until("p1 to relay the flood", T, || Ok(p1.flows(net)?.iter().any(|f| f.bytes_down > 0)))?;
        let (what, secs) = verdict(client)?;
        ensure!(what == "reset" && secs < WITHIN, "zero-window flow: {what} after {secs} s");
        let s = p1.stats(net)?;
        ensure!(s.idle_timeouts == 1 && s.flows_active == 0, "{s:?}");
        ensure!(p1.stderr().contains("no progress within --idle-timeout"), "p1 did not log the reason");
        Ok(())
    });
}

#[test]
fn a_next_hop_that_blackholes_after_the_handshake_resets_the_client_in_seconds() {
    with_net("proxy-chain", "pxhole", |net| {
        let short = ["--user-timeout", "2", "--connect-timeout-ms", "2000"];
        let p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &short)?;
        let p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &short)?;
        let _server = stuck_server(net, STUCK_PORT)?;
        let port = STUCK_PORT.to_string();
        let go = net.path("go");
        let go_s = go.display().to_string();
        // Established end to end (an echo came back), then the server's replies vanish.
        let client = stuck_client(net, XOR_CHAIN, &["after", SERVER, &port, &go_s, "60"])?;
        net.run("server", ["nft", "add table ip6 blackhole"])?;
        net.run("server", ["nft", "add chain ip6 blackhole out { type filter hook output priority 0; policy drop; }"])?;
        std::fs::write(&go, "")?;
        let (what, secs) = verdict(client)?;
        ensure!(what == "reset" && secs < WITHIN, "black-holed flow: {what} after {secs} s (the kernel: ~900 s)");
        let s2 = p2.stats(net)?;
        ensure!(s2.peer_timeouts == 1, "p2: {s2:?}");
        ensure!(p2.stderr().contains("within --user-timeout"), "p2 did not log the reason");
        // A next hop that answers no SYN at all: the connect timeout resets the client.
        let client = stuck_client(net, XOR_CHAIN, &["wait", SERVER, &port, "60"])?;
        let (what, secs) = verdict(client)?;
        ensure!(what == "reset" && secs < WITHIN, "unanswered connect: {what} after {secs} s");
        let s2 = p2.stats(net)?;
        ensure!(s2.connect_timeouts == 1 && s2.connect_failed == 1, "p2: {s2:?}");
        wait_until("the proxies to drop the flows", T, || {
            Ok(p1.stats(net)?.flows_active == 0 && p2.stats(net)?.flows_active == 0)
        })?;
        Ok(())
    });
}

#[test]
fn ctl_kill_resets_the_client_and_a_control_group_member_may_only_read() {
    with_net("proxy-chain", "pxkill", |net| {
        // A group number no account uses: membership comes from setpriv, nothing on the host changes.
        let gid = (60_000 + std::process::id() % 4_000).to_string();
        let p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &["--control-group", &gid])?;
        let _p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &[])?;
        let _server = stuck_server(net, STUCK_PORT)?;
        let client = stuck_client(net, XOR_CHAIN, &["wait", SERVER, &STUCK_PORT.to_string(), "40"])?;
        let mut flow = None;
        wait_until("the flow on p1", T, || {
            flow = p1.flows(net)?.first().map(|f| f.id);
            Ok(flow.is_some())
        })?;
        let flow = flow.context("no flow on p1")?;
        let r = p1.ctl::<KillReply>(net, &["kill", &flow.to_string()])?;
        ensure!(r.as_ref().is_ok_and(|r| r.id == flow), "kill: {r:?}");
        let (what, secs) = verdict(client)?;
        ensure!(what == "reset" && secs < WITHIN, "killed flow: {what} after {secs} s");
        let s = p1.stats(net)?;
        ensure!(s.flows_killed == 1 && s.flows_active == 0 && p1.flows(net)?.is_empty(), "{s:?}");
        let again = p1.ctl::<KillReply>(net, &["kill", &flow.to_string()])?;
        ensure!(again.as_ref().is_err_and(|e| e.contains("no live flow")), "kill of a gone flow: {again:?}");

        // nobody, as a member of the group, reads the counters but may not change anything.
        let dir = net.dir();
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p1.control())?.permissions());
        ensure!(mode & 0o777 == 0o660, "control socket mode {mode:o}");
        let as_nobody = |groups: &[&str], args: &[&str]| -> Result<srv6pipes_tests::Output> {
            let mut cmd = net.cmd("p1", ["setpriv", "--reuid", "65534", "--regid", "65534"]);
            cmd = if groups.is_empty() { cmd.arg("--clear-groups") } else { cmd.args(["--groups", groups[0]]) };
            cmd.arg("--")
                .arg(binaries::path("srv6pipes-proxy")?)
                .args(["ctl", "--json", "-s"])
                .arg(p1.control())
                .args(args)
                .timeout(T)
                .output()
        };
        let out = as_nobody(&[&gid], &["stats"])?;
        let stats = srv6pipes_api::control::decode_reply::<StatsReply>(&out.stdout)
            .with_context(|| format!("stats as a group member: {out}"))?;
        ensure!(stats.stats.flows_killed == 1, "{:?}", stats.stats);
        let out = as_nobody(&[&gid], &["drain"])?;
        ensure!(!out.status.success() && out.stdout.contains("permission denied"), "drain as a group member: {out}");
        let out = as_nobody(&[], &["stats"])?;
        ensure!(!out.status.success(), "stats outside the group: {out}");
        ensure!(p1.stats(net)?.refused_draining == 0, "the proxy drains");
        Ok(())
    });
}

#[test]
fn a_module_whose_init_takes_its_time_does_not_stall_accepts() {
    with_net("proxy-chain", "pxslow", |net| {
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        http.add_random_file("1k.bin", 1024)?;
        let p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
        let _p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &[])?;
        let (started, release) = (net.path("started"), net.path("release"));
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let so = net.path("slow_init.so");
        srv6pipes_tests::Cmd::new(["cc", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-I"])
            .arg(root.join("../srv6pipes-api/include"))
            .arg(format!("-DSTARTED=\"{}\"", started.display()))
            .arg(format!("-DRELEASE=\"{}\"", release.display()))
            .arg("-o")
            .arg(&so)
            .arg(root.join("modules/slow_init.c"))
            .timeout(T)
            .run()?;
        let mut load = net
            .cmd("p1", [binaries::path("srv6pipes-proxy")?])
            .args(["ctl", "--json", "-s"])
            .arg(p1.control())
            .arg("load")
            .arg(&so)
            .timeout(T)
            .spawn()?;
        wait_until("the module's init to start", T, || Ok(started.exists()))?;
        // The init holds on until told: flows, and the control socket, are served meanwhile.
        let url = format!("http://[{SERVER}]:{HTTP_PORT}/1k.bin");
        for _ in 0..3 {
            let out = srv6run(net, XOR_CHAIN, &["curl", "-sS", "-g", "--max-time", "10", "-o", "/dev/null", &url])?
                .timeout(T)
                .output()?;
            ensure!(out.status.success(), "a flow while a module initialises: {out}");
        }
        ensure!(p1.stats(net)?.accepted == 3, "{:?}", p1.stats(net)?);
        load.ensure_running().context("the load returned before its init was released")?;
        std::fs::write(&release, "")?;
        let out = load.wait(T)?;
        let r = srv6pipes_api::control::decode_reply::<LoadReply>(&out.stdout).with_context(|| format!("{out}"))?;
        ensure!(r.module == "slow_init", "{r:?}");
        Ok(())
    });
}

#[test]
fn a_panicking_flow_task_gives_its_slot_and_row_back() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the proxy's fault hook exists in debug builds only");
        return;
    }
    with_net("proxy-chain", "pxpanic", |net| {
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        http.add_random_file("1k.bin", 1024)?;
        let panic_port = STUCK_PORT.to_string();
        let env = [("SRV6PIPES_PROXY_PANIC_PORT", panic_port.as_str())];
        let p1 = Proxy::start_env(net, "p1", "fc00:f1::/80", 5001, &["--max-flows", "2"], &env)?;
        let _p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &[])?;
        let _server = stuck_server(net, STUCK_PORT)?;
        // Five flows whose task panics, more than the two slots.
        for i in 0..5 {
            let c = stuck_client(net, XOR_CHAIN, &["wait", SERVER, &panic_port, "20"])?;
            let (what, secs) = verdict(c)?;
            ensure!(what == "reset" && secs < WITHIN, "panicking flow {i}: {what} after {secs} s");
        }
        ensure!(p1.stderr().contains("fault hook"), "no flow panicked:\n{}", p1.stderr());
        let s = p1.stats(net)?;
        ensure!(s.flows_active == 0 && s.flows_reset == 5 && s.refused_limit == 0, "{s:?}");
        ensure!(p1.flows(net)?.is_empty(), "ghost rows: {:?}", p1.flows(net)?);
        // Both slots are free: two flows at once are served, a third is refused.
        let _other = stuck_server(net, STUCK_PORT + 1)?;
        let port = (STUCK_PORT + 1).to_string();
        let holders = [
            stuck_client(net, XOR_CHAIN, &["wait", SERVER, &port, "20"])?,
            stuck_client(net, XOR_CHAIN, &["wait", SERVER, &port, "20"])?,
        ];
        wait_until("p1 to hold two flows", T, || Ok(p1.flows(net)?.len() == 2))?;
        let url = format!("http://[{SERVER}]:{HTTP_PORT}/1k.bin");
        let out = srv6run(net, XOR_CHAIN, &["curl", "-sS", "-g", "--max-time", "10", "-o", "/dev/null", &url])?
            .timeout(T)
            .output()?;
        ensure!(!out.status.success(), "a third flow with two slots: {out}");
        let s = p1.stats(net)?;
        ensure!(s.refused_limit == 1 && s.flows_active == 2, "{s:?}");
        drop(holders);
        Ok(())
    });
}

/// Every counter sample (`*_total`) of each scrape in `text` (pages after "# scrape I" lines).
fn scrapes(text: &str) -> Vec<Vec<(String, f64)>> {
    let mut pages = Vec::new();
    for line in text.lines() {
        if line.starts_with("# scrape ") {
            pages.push(Vec::new());
        } else if let (Some(page), Some((series, v))) = (pages.last_mut(), line.rsplit_once(' ')) {
            let name = series.split('{').next().unwrap_or_default();
            if !line.starts_with('#') && name.ends_with("_total") {
                if let Ok(v) = v.parse() {
                    page.push((series.to_string(), v));
                }
            }
        }
    }
    pages
}

/// Short flows of the churn test, and client processes running them at once.
const CHURN_FLOWS: usize = 20_000;
const CHURN_CLIENTS: usize = 4;
const SCRAPES: usize = 1_000;

#[test]
fn counters_never_go_backwards_while_flows_churn() {
    with_net("proxy-chain", "pxmono", |net| {
        let p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &["--metrics", "[::1]:9101"])?;
        let _p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &[])?;
        let _server = stuck_server(net, STUCK_PORT)?;
        let started = Instant::now();
        let per = (CHURN_FLOWS / CHURN_CLIENTS).to_string();
        let port = STUCK_PORT.to_string();
        let clients: Vec<Proc> = (0..CHURN_CLIENTS)
            .map(|_| {
                let argv = ["/usr/bin/python3", &script("stuck_flows.py"), "many", SERVER, &port, &per];
                srv6run(net, XOR_CHAIN, &argv)?.timeout(Duration::from_secs(600)).spawn()
            })
            .collect::<Result<_>>()?;
        let pages: PathBuf = net.path("scrapes.txt");
        let scraper = net
            .cmd("p1", ["/usr/bin/python3", &script("scrape.py"), "http://[::1]:9101/metrics"])
            .arg(SCRAPES.to_string())
            .arg("0.02")
            .arg(&pages)
            .timeout(Duration::from_secs(600))
            .spawn()?;
        let mut failed = 0;
        for c in clients {
            let out = c.wait(Duration::from_secs(600))?;
            ensure!(out.status.success(), "a churn client: {out}");
            let f: usize = out.stdout.split_whitespace().last().context("no result")?.parse()?;
            failed += f;
        }
        let churn = started.elapsed();
        let out = scraper.wait(Duration::from_secs(600))?;
        ensure!(out.status.success() && out.stdout.contains("scraped"), "the scraper: {out}");
        let text = std::fs::read_to_string(&pages)?;
        ensure!(
            !text.contains("# failed"),
            "failed scrapes: {}",
            text.lines().find(|l| l.starts_with("# failed")).unwrap_or("")
        );
        let pages = scrapes(&text);
        ensure!(pages.len() == SCRAPES, "{} scrapes", pages.len());
        let mut last: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
        for (i, page) in pages.iter().enumerate() {
            for (series, v) in page {
                if let Some(before) = last.insert(series.clone(), *v) {
                    ensure!(*v >= before, "scrape {i}: {series} went from {before} to {v}");
                }
            }
        }
        let s = p1.stats(net)?;
        eprintln!("{CHURN_FLOWS} flows in {churn:?} ({failed} failed), {SCRAPES} scrapes: {s:?}");
        ensure!(failed == 0, "{failed} flows failed");
        ensure!(s.accepted == CHURN_FLOWS as u64, "{s:?}");
        ensure!(last.get("srv6pipes_proxy_bytes_up_total").is_some_and(|b| *b > 0.0), "no bytes counted");
        Ok(())
    });
}
