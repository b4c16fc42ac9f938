//! srv6pipes-proxy sharing a host (issue 15, parts 1 and 2): topology `proxy-chain` (client — p1 — p2 —
//! server), nginx on the server, clients under `srv6run`, proxies as real processes installing their own
//! datapath.
//!
//! A second proxy in p1 uses the prefix fc00:f3::/80, port 5003 and nftables table `second`; it shares
//! the fwmark rule, the table-100 route and the sysctls with the first (fc00:f1::/80, port 5001).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use srv6pipes_tests::http::{sha256_file, HttpServer};
use srv6pipes_tests::proxy::{namespace_dir, snapshot, Proxy};
use srv6pipes_tests::{binaries, wait_until, with_net, Net, Output};

const HTTP_PORT: u16 = 8080;
const SERVER: &str = "fc00:4::2";
/// `copy` on p1's first proxy, then the server.
const VIA_FIRST: &str = "fc00:f1::1:0:0";
/// `copy` on p1's second proxy, then the server.
const VIA_SECOND: &str = "fc00:f3::1:0:0";
/// `copy` on p1, then on p2.
const VIA_BOTH: &str = "fc00:f1::1:0:0,fc00:f2::1:0:0";
const T: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;
/// Exit status of a proxy refused because another live proxy holds what it asked for.
const TAKEN: i32 = 3;

/// nginx on the server with a 1 MiB file; its sha256.
fn server(net: &Net) -> Result<(HttpServer, String)> {
    let http = HttpServer::start(net, "server", HTTP_PORT)?;
    let sha = http.add_random_file("1m.bin", MIB)?;
    Ok((http, sha))
}

/// Fetch the 1 MiB file through `segs` with curl under srv6run in the client; its sha256 must be `want`.
fn fetch(net: &Net, segs: &str, want: &str) -> Result<()> {
    let out = net.path("fetched");
    let url = format!("http://[{SERVER}]:{HTTP_PORT}/1m.bin");
    net.cmd("client", [binaries::path("srv6run")?])
        .args(["--segs", segs, "--fail", "closed", "--", "curl", "-sS", "-g", "--noproxy", "*", "--max-time", "20"])
        .arg("-o")
        .arg(&out)
        .arg(&url)
        .timeout(T)
        .run()?;
    let got = sha256_file(&out)?;
    ensure!(got == want, "through {segs}: sha256 {got}, served {want}");
    std::fs::remove_file(&out)?;
    Ok(())
}

/// srv6pipes-proxy in `host` with `args`, expected to fail; its output.
fn proxy_fails(net: &Net, host: &str, args: &[&str]) -> Result<Output> {
    let out = net.cmd(host, [binaries::path("srv6pipes-proxy")?]).args(args).timeout(T).output()?;
    ensure!(!out.status.success(), "srv6pipes-proxy {args:?} should have failed: {out}");
    Ok(out)
}

/// The second proxy of p1 (fc00:f3::/80, port 5003, table `second`).
fn second(net: &Net, extra: &[&str]) -> Result<Proxy> {
    let args = [&["--nft-table", "second"], extra].concat();
    Proxy::start_as(net, "p1", "second", "fc00:f3::/80", 5003, "eth0,eth1", &args)
}

fn path(net: &Net, name: &str) -> String {
    net.path(name).display().to_string()
}

/// Wait (bounded) until `pid` has died but is not reaped yet (a zombie: `kill -9` done, nobody waited).
fn wait_zombie(pid: u32) -> Result<()> {
    wait_until(&format!("process {pid} to be a zombie"), T, || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        Ok(stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
    })
}

#[test]
fn a_second_proxy_on_a_taken_port_is_refused_and_the_first_serves_on() {
    with_net("proxy-chain", "owport", |net| {
        let before = snapshot(net, "p1")?;
        let (_http, sha) = server(net)?;
        let first = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
        let during = snapshot(net, "p1")?;
        let pid = format!("process {}", first.pid());
        let (sock, state) = (path(net, "other.sock"), path(net, "other.state"));
        // Another state file and control socket, another prefix and table, the same port.
        let other = ["--prefix", "fc00:f3::/80", "--port", "5001", "--nft-table", "second"];
        let paths = ["--control", sock.as_str(), "--state", state.as_str()];
        let o = proxy_fails(net, "p1", &[&other[..], &paths[..]].concat())?;
        ensure!(o.status.code() == Some(TAKEN), "exit status: {o}");
        ensure!(o.stderr.contains("port 5001") && o.stderr.contains(&pid), "not named: {o}");
        // The namespace's default paths: the same.
        let o = proxy_fails(net, "p1", &other)?;
        ensure!(o.status.code() == Some(TAKEN) && o.stderr.contains(&pid), "with default paths: {o}");
        // Another port but the first one's prefix.
        let o = proxy_fails(net, "p1", &["--prefix", "fc00:f1::/64", "--port", "5003", "--nft-table", "second"])?;
        ensure!(o.stderr.contains("prefix fc00:f1::/64") && o.stderr.contains(&pid), "overlapping prefix: {o}");
        // The first one's state file (its lock).
        let mine = first.state().display().to_string();
        let o = proxy_fails(net, "p1", &["--prefix", "fc00:f3::/80", "--port", "5003", "--state", &mine])?;
        ensure!(o.status.code() == Some(TAKEN) && o.stderr.contains("--takeover"), "same state file: {o}");
        // Nothing of the first one's was touched: it serves on.
        ensure!(snapshot(net, "p1")? == during, "after the refusals:\n{}", snapshot(net, "p1")?);
        fetch(net, VIA_FIRST, &sha)?;
        ensure!(first.stats(net)?.accepted == 1, "{:?}", first.stats(net)?);
        let out = first.stop()?;
        ensure!(out.status.success(), "{out}");
        ensure!(snapshot(net, "p1")? == before, "after the exit:\n{}", snapshot(net, "p1")?);
        Ok(())
    });
}

#[test]
fn two_proxies_in_one_namespace_stop_in_either_order_and_leave_it_as_found() {
    with_net("proxy-chain", "owtwo", |net| {
        let before = snapshot(net, "p1")?;
        let (_http, sha) = server(net)?;
        // ip6tables-nft makes an `ip6 mangle` table for the two chains: shared too.
        for (backend, first_stops) in
            [("nft", "first"), ("nft", "second"), ("iptables", "first"), ("iptables", "second")]
        {
            let a = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &["--backend", backend])?;
            let b = second(net, &["--backend", backend])?;
            fetch(net, VIA_FIRST, &sha)?;
            fetch(net, VIA_SECOND, &sha)?;
            let (gone, stays, via) = if first_stops == "first" { (a, b, VIA_SECOND) } else { (b, a, VIA_FIRST) };
            let out = gone.stop()?;
            ensure!(out.status.success(), "{out}");
            // The survivor keeps the shared pieces (rule, route, seg6_enabled) and serves.
            fetch(net, via, &sha)?;
            let now = snapshot(net, "p1")?;
            ensure!(
                now.contains("fwmark 0x1 lookup 100"),
                "{backend}: the shared rule went with the {first_stops}:\n{now}"
            );
            ensure!(now.contains("net.ipv6.conf.eth0.seg6_enabled = 1"), "seg6_enabled went:\n{now}");
            let out = stays.stop()?;
            ensure!(out.status.success(), "{out}");
            ensure!(
                snapshot(net, "p1")? == before,
                "{backend}: {first_stops} stopped first, then the other:\n{}",
                snapshot(net, "p1")?
            );
        }
        // A rule that was there before any proxy is nobody's to remove.
        net.run("p1", ["ip", "-6", "rule", "add", "fwmark", "1", "lookup", "100", "pref", "100"])?;
        let with_rule = snapshot(net, "p1")?;
        let (a, b) = (Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?, second(net, &[])?);
        fetch(net, VIA_SECOND, &sha)?;
        for p in [a, b] {
            let out = p.stop()?;
            ensure!(out.status.success(), "{out}");
        }
        ensure!(snapshot(net, "p1")? == with_rule, "with an operator's rule:\n{}", snapshot(net, "p1")?);
        Ok(())
    });
}

#[test]
fn proxies_in_two_namespaces_need_no_path_options() {
    with_net("proxy-chain", "owns", |net| {
        let (before1, before2) = (snapshot(net, "p1")?, snapshot(net, "p2")?);
        let (_http, sha) = server(net)?;
        let p1 = Proxy::start_default(net, "p1", "fc00:f1::/80", 5001, &[])?;
        let p2 = Proxy::start_default(net, "p2", "fc00:f2::/80", 5002, &[])?;
        let (dir1, dir2) = (namespace_dir(net, "p1")?, namespace_dir(net, "p2")?);
        ensure!(dir1 != dir2 && p1.control().starts_with(&dir1), "{} {}", dir1.display(), dir2.display());
        fetch(net, VIA_BOTH, &sha)?;
        // `ctl` finds its namespace's proxy with no path either.
        for (host, proxy) in [("p1", &p1), ("p2", &p2)] {
            let o = net.cmd(host, [binaries::path("srv6pipes-proxy")?]).args(["ctl", "stats"]).timeout(T).run()?;
            ensure!(o.stdout.lines().any(|l| l.split_whitespace().eq(["accepted", "1"])), "{host}: {o}");
            ensure!(proxy.stats(net)?.accepted == 1, "{host}");
        }
        for (p, host, before, dir) in [(p1, "p1", &before1, &dir1), (p2, "p2", &before2, &dir2)] {
            let out = p.stop()?;
            ensure!(out.status.success(), "{out}");
            ensure!(snapshot(net, host)? == *before, "{host} after the exit:\n{}", snapshot(net, host)?);
            ensure!(!dir.exists(), "{} stayed", dir.display());
        }
        // Killed, then `setup --teardown` with no path option either: nothing stays.
        let p1 = Proxy::start_default(net, "p1", "fc00:f1::/80", 5001, &[])?;
        p1.signal(libc::SIGKILL)?;
        wait_zombie(p1.pid())?;
        net.cmd("p1", [binaries::path("srv6pipes-proxy")?]).args(["setup", "--teardown"]).timeout(T).run()?;
        ensure!(snapshot(net, "p1")? == before1, "after setup --teardown:\n{}", snapshot(net, "p1")?);
        ensure!(!dir1.exists(), "{} stayed after setup --teardown", dir1.display());
        Ok(())
    });
}

#[test]
fn a_failed_takeover_leaves_the_running_proxy_serving() {
    with_net("proxy-chain", "owtake", |net| {
        let before = snapshot(net, "p1")?;
        let (_http, sha) = server(net)?;
        let old = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
        let during = snapshot(net, "p1")?;
        let state = old.state().display().to_string();
        let control = old.control().display().to_string();
        let pid = format!("process {}", old.pid());
        let takeover = |control: &str| -> Result<Output> {
            let args = ["--prefix", "fc00:f1::/80", "--port", "5001", "--ingress", "eth0,eth1"];
            proxy_fails(net, "p1", &[&args[..], &["--takeover", "--state", &state, "--control", control]].concat())
        };
        // A wrong control socket: nobody to hand over; nothing touched.
        let o = takeover(&path(net, "wrong.sock"))?;
        ensure!(o.stderr.contains("wrong.sock") && o.stderr.contains("keeps serving"), "wrong --control: {o}");
        ensure!(snapshot(net, "p1")? == during, "after a wrong --control:\n{}", snapshot(net, "p1")?);
        fetch(net, VIA_FIRST, &sha)?;

        // The running proxy stopped: the successor gives up within its bound (10 s for the answer).
        old.signal(libc::SIGSTOP)?;
        let started = Instant::now();
        let o = takeover(&control);
        old.signal(libc::SIGCONT)?;
        let o = o?;
        ensure!(started.elapsed() < T, "the takeover took {:?}", started.elapsed());
        ensure!(o.stderr.contains(&pid) && o.stderr.contains("keeps serving"), "stopped proxy: {o}");
        fetch(net, VIA_FIRST, &sha)?;
        // Continued, it reads the request the successor left and offers the datapath; nobody takes it.
        let cancelled = || Ok(old.stderr().contains("hand-over cancelled"));
        wait_until("the late hand-over to be cancelled", T, cancelled)?;
        fetch(net, VIA_FIRST, &sha)?;
        ensure!(old.stats(net)?.accepted == 3, "{:?}", old.stats(net)?);
        ensure!(snapshot(net, "p1")? == during, "after the failed takeover:\n{}", snapshot(net, "p1")?);
        // It still owns its datapath: `setup --teardown` refuses, naming it.
        let o = proxy_fails(net, "p1", &["setup", "--teardown", "--state", &state])?;
        ensure!(o.status.code() == Some(TAKEN) && o.stderr.contains(&pid), "setup --teardown: {o}");
        let out = old.stop()?;
        ensure!(out.status.success(), "{out}");
        ensure!(snapshot(net, "p1")? == before, "after the exit:\n{}", snapshot(net, "p1")?);
        Ok(())
    });
}

#[test]
fn right_after_kill_9_teardown_and_restart_work() {
    with_net("proxy-chain", "owkill", |net| {
        let before = snapshot(net, "p1")?;
        let (_http, sha) = server(net)?;
        let bin = binaries::path("srv6pipes-proxy")?;
        // Killed and not reaped yet: its lock is free, `setup --teardown` removes all.
        let p = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
        let state = p.state().display().to_string();
        p.signal(libc::SIGKILL)?;
        wait_zombie(p.pid())?;
        net.cmd("p1", [&bin]).args(["setup", "--teardown", "--state", &state]).timeout(T).run()?;
        ensure!(snapshot(net, "p1")? == before, "setup --teardown left:\n{}", snapshot(net, "p1")?);
        ensure!(!Path::new(&state).exists(), "the state file stayed");
        drop(p);

        // With a second proxy running: the restart removes the dead one's leftovers, not the shared
        // pieces the second one uses.
        let other = second(net, &[])?;
        let p = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
        p.signal(libc::SIGKILL)?;
        wait_zombie(p.pid())?;
        let again = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
        ensure!(again.stderr().contains("removing its leftovers"), "{}", again.stderr());
        drop(p);
        fetch(net, VIA_FIRST, &sha)?;
        fetch(net, VIA_SECOND, &sha)?;
        // Killed again; `setup --teardown` releases its references, the second proxy serves on.
        again.signal(libc::SIGKILL)?;
        wait_zombie(again.pid())?;
        net.cmd("p1", [&bin]).args(["setup", "--teardown", "--state", &state]).timeout(T).run()?;
        fetch(net, VIA_SECOND, &sha)?;
        drop(again);
        let out = other.stop()?;
        ensure!(out.status.success(), "{out}");
        ensure!(snapshot(net, "p1")? == before, "after the last exit:\n{}", snapshot(net, "p1")?);
        Ok(())
    });
}
