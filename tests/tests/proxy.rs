//! srv6pipes-proxy end to end (issue 3): topology `proxy-chain` (client — p1 — p2 — server), both proxies
//! real processes that install and remove their own datapath, clients run under `srv6run`.
//!
//! SIDs: p1's locator is fc00:f1::/80 and p2's fc00:f2::/80 (layout 80/16/32); function 1 is `copy`,
//! 2 is `xor` (argument: key in bits 0–7), 16/17 are `hexenc`/`hexdec` of the C example module, 13 is
//! `rot13` of the example module written in Rust.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use libsrv6sock::capture::{read_pcap, tcp_flags, Packet};
use srv6pipes_api::abi::Direction;
use srv6pipes_api::control::{DrainReply, LoadReply, UnloadReply};
use srv6pipes_tests::http::{random_file, sha256_file, HttpServer, UploadSink};
use srv6pipes_tests::proxy::{snapshot, Proxy};
use srv6pipes_tests::{binaries, wait_until, with_net, Net};

const HTTP_PORT: u16 = 8080;
const UPLOAD_PORT: u16 = 8081;
const TCP_PORT: u16 = 9000;
const CLIENT: &str = "fc00:1::1";
const SERVER: &str = "fc00:4::2";
/// xor with key 0x5a on p1 then on p2: the bytes between them are XORed, the ends see the original.
const XOR_CHAIN: &str = "fc00:f1::2:0:5a,fc00:f2::2:0:5a";
const COPY_CHAIN: &str = "fc00:f1::1:0:0,fc00:f2::1:0:0";
/// hexenc on p1, hexdec on p2 (modules/hex.c).
const HEX_CHAIN: &str = "fc00:f1::10:0:0,fc00:f2::11:0:0";
/// rot13 on p1 and on p2 (modules/rot13, a Rust cdylib).
const ROT13_CHAIN: &str = "fc00:f1::d:0:0,fc00:f2::d:0:0";
const T: Duration = Duration::from_secs(30);
/// Bound on a 100 MiB transfer through two proxies in a debug build.
const BIG_T: Duration = Duration::from_secs(180);
const MIB: u64 = 1 << 20;

fn proxy_bin() -> Result<PathBuf> {
    binaries::path("srv6pipes-proxy")
}

/// The chain: nginx on the server, both proxies up.
struct Chain<'a> {
    net: &'a Net,
    http: HttpServer,
    p1: Proxy,
    p2: Proxy,
}

impl<'a> Chain<'a> {
    fn start(net: &'a Net) -> Result<Chain<'a>> {
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        let p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
        let p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &[])?;
        Ok(Chain { net, http, p1, p2 })
    }

    /// `srv6run --segs SEGS -- ARGV…` in the client.
    fn srv6run(&self, segs: &str, argv: &[&str]) -> Result<srv6pipes_tests::Cmd> {
        srv6run(self.net, segs, argv)
    }

    fn curl_args(&self, out: &Path, name: &str, extra: &[&str]) -> Vec<String> {
        curl_args(out, name, extra)
    }

    /// Download `name` through `segs`; the sha256 must be `want`.
    fn download(&self, segs: &str, name: &str, want: &str) -> Result<()> {
        download(self.net, segs, name, want)
    }
}

/// `srv6run --segs SEGS -- ARGV…` in the client.
fn srv6run(net: &Net, segs: &str, argv: &[&str]) -> Result<srv6pipes_tests::Cmd> {
    Ok(net.cmd("client", [binaries::path("srv6run")?]).args(["--segs", segs, "--fail", "closed", "--"]).args(argv))
}

/// curl's arguments to fetch `name` from the server's nginx into `out`.
fn curl_args(out: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> =
        ["curl", "-sS", "-g", "--noproxy", "*", "--max-time", "170", "-o"].iter().map(|s| s.to_string()).collect();
    v.push(out.display().to_string());
    v.extend(extra.iter().map(|s| s.to_string()));
    v.push(format!("http://[{SERVER}]:{HTTP_PORT}/{name}"));
    v
}

/// Download `name` through `segs`; the sha256 must be `want`.
fn download(net: &Net, segs: &str, name: &str, want: &str) -> Result<()> {
    let out = net.path("download");
    let args = curl_args(&out, name, &[]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    srv6run(net, segs, &argv)?.timeout(BIG_T).run()?;
    let got = sha256_file(&out)?;
    ensure!(got == want, "{name} through {segs}: sha256 {got}, served {want}");
    std::fs::remove_file(&out)?;
    Ok(())
}

/// The TCP payloads captured in a pcap to (`to_port`) or from (`!to_port`) `port`, as hex strings (tshark).
fn payloads(net: &Net, pcap: &Path, port: u16, to_port: bool) -> Result<Vec<String>> {
    let field = if to_port { "tcp.dstport" } else { "tcp.srcport" };
    let out = net
        .cmd("client", ["tshark", "-r"])
        .arg(pcap)
        .args(["-Y", &format!("{field} == {port} && tcp.len > 0"), "-T", "fields", "-e", "tcp.payload"])
        .timeout(T)
        .run()?;
    Ok(out.stdout.lines().map(|l| l.trim().replace(':', "")).filter(|l| !l.is_empty()).collect())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn xor_chain_downloads_and_uploads_with_identical_sha256() {
    with_net("proxy-chain", "pxxor", |net| {
        let mut c = Chain::start(net)?;
        let small = c.http.add_random_file("1m.bin", MIB)?;
        let big = c.http.add_random_file("100m.bin", 100 * MIB)?;

        // 1 MiB down, with the p1 — p2 link captured: the bytes there must be the XORed ones.
        // No port filter: BPF cannot see past the SRH that the p1 → p2 packets carry.
        let cap = net.capture("p1", "eth1")?;
        c.download(XOR_CHAIN, "1m.bin", &small)?;
        std::thread::sleep(Duration::from_millis(300));
        let pcap = cap.stop()?;
        let sent = payloads(net, &pcap, HTTP_PORT, true)?;
        let plain = hex(b"GET /1m.bin");
        let xored = hex(&b"GET /1m.bin".iter().map(|b| b ^ 0x5a).collect::<Vec<u8>>());
        ensure!(sent.iter().any(|p| p.starts_with(&xored)), "no XORed request between p1 and p2: {sent:?}");
        ensure!(!sent.iter().any(|p| p.contains(&plain)), "the plain request crossed the p1 — p2 link");

        // 100 MiB down.
        c.download(XOR_CHAIN, "100m.bin", &big)?;

        // The server saw the client's address, not a proxy's.
        let log = c.http.access_log()?;
        let lines: Vec<&str> = log.lines().collect();
        ensure!(lines.len() >= 2, "nginx logged {} requests:\n{log}", lines.len());
        ensure!(
            lines.iter().all(|l| l.starts_with(&format!("{CLIENT} ")) && l.contains(" 200 ")),
            "nginx saw other peers or errors:\n{log}"
        );

        // Uploads of 1 MiB and 100 MiB.
        let mut sink = UploadSink::start(net, "server", UPLOAD_PORT)?;
        for size in [MIB, 100 * MIB] {
            let file = net.path("upload.bin");
            let sha = random_file(&file, size)?;
            let url = format!("http://[{SERVER}]:{UPLOAD_PORT}/up");
            let file_s = file.display().to_string();
            let out = c
                .srv6run(XOR_CHAIN, &["curl", "-sS", "-g", "--noproxy", "*", "--max-time", "170", "-T", &file_s, &url])?
                .timeout(BIG_T)
                .run()?;
            ensure!(out.stdout.trim() == format!("{sha} {size}"), "upload of {size} bytes: the sink got {out}");
            std::fs::remove_file(&file)?;
        }
        let log = sink.log()?;
        ensure!(
            log.lines().count() == 2 && log.lines().all(|l| l.starts_with(&format!("{CLIENT} "))),
            "sink log:\n{log}"
        );

        // The proxies counted it all.
        let s1 = c.p1.stats(net)?;
        ensure!(s1.accepted >= 4, "p1 stats: {s1:?}");
        ensure!(s1.bytes_down > 101 * MIB && s1.bytes_up > 101 * MIB, "p1 stats: {s1:?}");
        ensure!(s1.refused == 0 && s1.flows_reset == 0, "p1 stats: {s1:?}");
        let s2 = c.p2.stats(net)?;
        ensure!(s2.accepted >= 4, "p2 stats: {s2:?}");
        Ok(())
    });
}

#[test]
fn half_close_and_resets_cross_the_chain() {
    with_net("proxy-chain", "pxtcp", |net| {
        let c = Chain::start(net)?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tcp_semantics.py");
        let script_s = script.display().to_string();
        let mut server =
            net.cmd("server", ["/usr/bin/python3"]).arg(&script).args(["serve", &TCP_PORT.to_string()]).spawn()?;
        wait_until("the TCP server", T, || Ok(server.stdout().contains("listening")))?;
        let port = TCP_PORT.to_string();
        for segs in [XOR_CHAIN, COPY_CHAIN] {
            // Half-close: the client's FIN reaches the server, which still answers.
            let out = c
                .srv6run(segs, &["/usr/bin/python3", &script_s, "halfclose", SERVER, &port, "300000"])?
                .timeout(T)
                .run()?;
            let reply = out.stdout.lines().find_map(|l| l.strip_prefix("reply ")).context("no reply")?.to_string();
            let expect = out.stdout.lines().find_map(|l| l.strip_prefix("expect ")).context("no expect")?.to_string();
            ensure!(reply == expect, "half-close through {segs}: server answered {reply:?}, expected {expect:?}");

            // The server resets: the client sees a reset.
            let out = c.srv6run(segs, &["/usr/bin/python3", &script_s, "reset", SERVER, &port])?.timeout(T).run()?;
            ensure!(out.stdout.contains("client-saw-reset"), "server reset through {segs}: {out}");

            // The client resets: the server sees a reset.
            let before = server.stdout().matches("peer-reset").count();
            let out = c.srv6run(segs, &["/usr/bin/python3", &script_s, "abort", SERVER, &port])?.timeout(T).run()?;
            ensure!(out.stdout.contains("client-reset-sent"), "{out}");
            wait_until("the server to see the client's reset", T, || {
                server.ensure_running()?;
                Ok(server.stdout().matches("peer-reset").count() > before)
            })?;
        }
        ensure!(!server.stdout().contains("peer-eof"), "a reset arrived as a FIN:\n{}", server.stdout());
        ensure!(
            server
                .stdout()
                .lines()
                .filter(|l| l.starts_with("peer "))
                .all(|l| l.starts_with(&format!("peer {CLIENT} "))),
            "{}",
            server.stdout()
        );
        let s1 = c.p1.stats(net)?;
        ensure!(s1.flows_reset >= 4, "p1 counted the resets: {s1:?}");
        Ok(())
    });
}

#[test]
fn next_hop_down_resets_the_client_and_others_still_work() {
    with_net("proxy-chain", "pxdown", |net| {
        let c = Chain::start(net)?;
        let sha = c.http.add_random_file("1m.bin", MIB)?;
        let url = |port: u16| format!("http://[{SERVER}]:{port}/1m.bin");
        // Nothing listens on the server's port 9999: p2's connect is refused, the client gets a reset.
        let started = Instant::now();
        let out = c.srv6run(XOR_CHAIN, &["curl", "-sS", "-g", "--max-time", "20", &url(9999)])?.timeout(T).output()?;
        ensure!(!out.status.success(), "curl to a closed port succeeded: {out}");
        ensure!(started.elapsed() < Duration::from_secs(10), "the refusal took {:?}", started.elapsed());
        // A next segment with no route from p1: its connect fails at once.
        let out = c
            .srv6run("fc00:f1::1:0:0,fc00:f9::1", &["curl", "-sS", "-g", "--max-time", "20", &url(HTTP_PORT)])?
            .timeout(T)
            .output()?;
        ensure!(!out.status.success(), "curl through an unroutable segment succeeded: {out}");
        let (s1, s2) = (c.p1.stats(net)?, c.p2.stats(net)?);
        ensure!(s2.connect_failed >= 1, "p2: {s2:?}");
        ensure!(s1.connect_failed >= 1, "p1: {s1:?}");
        // The proxies keep serving.
        c.download(XOR_CHAIN, "1m.bin", &sha)?;
        Ok(())
    });
}

#[test]
fn bad_flows_are_refused_while_good_flows_continue() {
    with_net("proxy-chain", "pxbad", |net| {
        let c = Chain::start(net)?;
        let sha = c.http.add_random_file("100m.bin", 100 * MIB)?;
        let out = net.path("download");
        // A long download (rate-limited to ~5 s) runs while bad flows come in.
        let args = c.curl_args(&out, "100m.bin", &["--limit-rate", "20M"]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut good = c.srv6run(XOR_CHAIN, &argv)?.timeout(BIG_T).spawn()?;
        wait_until("the good flow", T, || Ok(!c.p1.flows(net)?.is_empty()))?;

        let curl = |segs: Option<&str>, url: &str| -> Result<srv6pipes_tests::Output> {
            let argv = ["curl", "-sS", "-g", "--max-time", "10", url];
            match segs {
                Some(s) => c.srv6run(s, &argv)?.timeout(T).output(),
                None => net.cmd("client", argv).timeout(T).output(),
            }
        };
        let page = format!("http://[{SERVER}]:{HTTP_PORT}/100m.bin");
        // Function 7: no module provides it.
        let o = curl(Some("fc00:f1::7:0:0,fc00:f2::2:0:5a"), &page)?;
        ensure!(!o.status.success(), "unknown function served: {o}");
        // No SRH: a plain connection to a SID of p1.
        let o = curl(None, &format!("http://[fc00:f1::2:0:5a]:{HTTP_PORT}/"))?;
        ensure!(!o.status.success(), "SRH-less flow served: {o}");
        // Malformed SRH: a return-path TLV with a 3-byte value.
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tcp_semantics.py");
        let o = net
            .cmd("client", ["/usr/bin/python3"])
            .arg(&script)
            .args(["badsrh", SERVER, &HTTP_PORT.to_string(), "fc00:f1::2:0:5a"])
            .timeout(T)
            .run()?;
        ensure!(o.stdout.trim() == "refused", "malformed SRH: {o}");

        let s1 = c.p1.stats(net)?;
        for (k, n) in [
            ("refused_unknown_function", s1.refused_unknown_function),
            ("refused_no_srh", s1.refused_no_srh),
            ("refused_malformed", s1.refused_malformed),
        ] {
            ensure!(n >= 1, "p1 did not count {k}: {s1:?}");
        }
        let log = c.p1.stderr();
        ensure!(log.contains("flow refused: malformed SRH"), "p1 did not log the malformed SRH:\n{log}");

        // The good flow was not disturbed.
        wait_until("the good download to finish", BIG_T, || Ok(good.ensure_running().is_err()))?;
        let done = good.stop()?;
        ensure!(done.status.success(), "the good download failed: {done}");
        ensure!(sha256_file(&out)? == sha, "the good download is corrupt");
        Ok(())
    });
}

#[test]
fn c_module_hot_load_and_unload_during_a_transfer() {
    with_net("proxy-chain", "pxmod", |net| {
        let c = Chain::start(net)?;
        let sha = c.http.add_random_file("100m.bin", 100 * MIB)?;
        let small = c.http.add_random_file("1m.bin", MIB)?;
        // Compile the example module against the shipped header.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let so = net.path("hex.so");
        srv6pipes_tests::Cmd::new(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-I"])
            .arg(root.join("srv6pipes-api/include"))
            .arg("-o")
            .arg(&so)
            .arg(root.join("srv6pipes-proxy/modules/hex.c"))
            .timeout(T)
            .run()?;
        let so_s = so.display().to_string();
        for p in [&c.p1, &c.p2] {
            let r = p.ctl::<LoadReply>(net, &["load", &so_s])?;
            ensure!(r.as_ref().is_ok_and(|r| r.module == "hex"), "load on {}: {r:?}", p.host());
        }
        c.download(HEX_CHAIN, "1m.bin", &small)?;

        // A long transfer through hexenc/hexdec, then unload the module under it.
        let out = net.path("download");
        let args = c.curl_args(&out, "100m.bin", &["--limit-rate", "20M"]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut xfer = c.srv6run(HEX_CHAIN, &argv)?.timeout(BIG_T).spawn()?;
        let mut flow = None;
        wait_until("the hex flow to move bytes", T, || {
            flow = c.p1.flows(net)?.into_iter().find(|f| f.function == "hexenc");
            Ok(flow.as_ref().is_some_and(|f| f.bytes_down > 4 * MIB))
        })?;
        let flow = flow.context("no hexenc flow")?;
        // hexenc decodes the replies at p1: twice as many bytes in from p2 as out to the client.
        let (down_in, down_out) = (flow.bytes_down, flow.bytes_down_out);
        // (Up to one relay buffer of input may be inside the proxy when the counters are read.)
        ensure!(down_out > 0 && (down_in as i64 - 2 * down_out as i64).abs() <= 2 * 65536 + 1, "hexenc flow: {flow:?}");
        ensure!(flow.client.ip().to_string() == CLIENT && flow.module == "hex", "{flow:?}");

        for p in [&c.p1, &c.p2] {
            let r = p.ctl::<UnloadReply>(net, &["unload", "hex"])?;
            ensure!(r.as_ref().is_ok_and(|r| r.flows_still_using >= 1), "unload on {}: {r:?}", p.host());
        }
        // New flows naming the module are refused now...
        let o = c
            .srv6run(
                HEX_CHAIN,
                &["curl", "-sS", "-g", "--max-time", "10", &format!("http://[{SERVER}]:{HTTP_PORT}/1m.bin")],
            )?
            .timeout(T)
            .output()?;
        ensure!(!o.status.success(), "a flow reached an unloaded module: {o}");
        let mods = c.p1.modules(net)?;
        ensure!(!mods.iter().any(|m| m.name == "hex"), "hex still listed: {mods:?}");
        // ...while the running transfer completes intact.
        wait_until("the transfer to finish", BIG_T, || Ok(xfer.ensure_running().is_err()))?;
        let done = xfer.stop()?;
        ensure!(done.status.success(), "the transfer failed: {done}");
        ensure!(sha256_file(&out)? == sha, "the transfer through the unloaded module is corrupt");
        ensure!(c.p1.stderr().contains("module released module=hex"), "p1 never released hex:\n{}", c.p1.stderr());

        // Load again: the module works again.
        for p in [&c.p1, &c.p2] {
            ensure!(p.ctl::<LoadReply>(net, &["load", &so_s])?.is_ok(), "reload on {}", p.host());
        }
        c.download(HEX_CHAIN, "1m.bin", &small)?;
        // Loading it twice is refused (same module name, same function ids).
        let again = c.p1.ctl::<LoadReply>(net, &["load", &so_s])?;
        ensure!(again.as_ref().is_err_and(|e| e.contains("already")), "double load: {again:?}");
        Ok(())
    });
}

#[test]
fn rust_module_hot_load_transforms_the_bytes_between_proxies() {
    with_net("proxy-chain", "pxrust", |net| {
        let c = Chain::start(net)?;
        let small = c.http.add_random_file("1m.bin", MIB)?;
        // The module crate is built by `cargo build --workspace`, like the proxy.
        let so = binaries::path("libsrv6pipes_module_rot13.so")?;
        let so_s = so.display().to_string();
        for p in [&c.p1, &c.p2] {
            let r = p.ctl::<LoadReply>(net, &["load", &so_s])?;
            ensure!(r.as_ref().is_ok_and(|r| r.module == "rot13"), "load on {}: {r:?}", p.host());
        }
        let mods = c.p1.modules(net)?;
        let rot = mods.iter().find(|m| m.name == "rot13").context("rot13 not listed")?;
        ensure!(
            !rot.builtin
                && rot.version.as_deref() == Some("1.0")
                && rot.path.as_deref() == Some(so.as_path())
                && rot.functions.len() == 1
                && rot.functions[0].id == 13
                && rot.functions[0].directions == Direction::BOTH,
            "{rot:?}"
        );

        // Download through rot13 on p1 and p2 with the link between them captured: both directions
        // cross it rotated, the ends see the original bytes.
        let cap = net.capture("p1", "eth1")?;
        c.download(ROT13_CHAIN, "1m.bin", &small)?;
        std::thread::sleep(Duration::from_millis(300));
        let pcap = cap.stop()?;
        let up = payloads(net, &pcap, HTTP_PORT, true)?;
        ensure!(up.iter().any(|p| p.starts_with(&hex(b"TRG /1z.ova UGGC/1.1"))), "no rotated request: {up:?}");
        ensure!(!up.iter().any(|p| p.contains(&hex(b"GET /1m.bin"))), "the plain request crossed p1 — p2");
        let down = payloads(net, &pcap, HTTP_PORT, false)?;
        ensure!(
            down.iter().any(|p| p.starts_with(&hex(b"UGGC/1.1 200 BX"))),
            "no rotated status line: {:?}",
            down.iter().map(|p| &p[..p.len().min(40)]).collect::<Vec<_>>()
        );
        ensure!(!down.iter().any(|p| p.starts_with(&hex(b"HTTP/1.1"))), "a plain reply crossed p2 — p1");

        // Unloaded with no flow left, it is released at once, and the chain refuses new flows.
        for p in [&c.p1, &c.p2] {
            let r = p.ctl::<UnloadReply>(net, &["unload", "rot13"])?;
            ensure!(r.as_ref().is_ok_and(|r| r.flows_still_using == 0), "unload on {}: {r:?}", p.host());
        }
        wait_until("p1 to release rot13", T, || Ok(c.p1.stderr().contains("module released module=rot13")))?;
        let o = c
            .srv6run(
                ROT13_CHAIN,
                &["curl", "-sS", "-g", "--max-time", "10", &format!("http://[{SERVER}]:{HTTP_PORT}/1m.bin")],
            )?
            .timeout(T)
            .output()?;
        ensure!(!o.status.success(), "a flow reached the unloaded rot13: {o}");
        Ok(())
    });
}

#[test]
fn datapath_is_installed_and_removed_exactly() {
    with_net("proxy-chain", "pxdp", |net| {
        let before = snapshot(net, "p1")?;
        // nftables (the default).
        let p = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
        let during = snapshot(net, "p1")?;
        for want in [
            "table ip6 srv6pipes",
            "socket transparent 1 meta mark set 0x00000001 accept",
            "ip6 daddr fc00:f1::/80 tcp flags syn / syn,ack tproxy to :5001 meta mark set 0x00000001 accept",
            "fwmark 0x1 lookup 100",
            "local default dev lo table 100",
            "net.ipv6.conf.all.seg6_enabled = 1",
            "net.ipv6.conf.eth0.seg6_enabled = 1",
        ] {
            ensure!(during.contains(want), "{want:?} missing while the proxy runs:\n{during}");
        }
        let control = p.control().to_path_buf();
        let out = p.stop()?;
        ensure!(out.status.success(), "SIGTERM exit: {out}");
        ensure!(!control.exists(), "the control socket was left behind");
        ensure!(
            snapshot(net, "p1")? == before,
            "the proxy left changes behind:\n{}\n---- before ----\n{before}",
            snapshot(net, "p1")?
        );

        // ip6tables fallback.
        let p = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &["--backend", "iptables"])?;
        wait_until("the ip6tables chain", T, || {
            Ok(snapshot(net, "p1")?.contains("-A SRV6PIPES -d fc00:f1::/80 -p tcp"))
        })?;
        let during = snapshot(net, "p1")?;
        ensure!(during.contains("-A PREROUTING -j SRV6PIPES") && during.contains("TPROXY --on-port 5001"), "{during}");
        let out = p.stop()?;
        ensure!(out.status.success(), "SIGTERM exit: {out}");
        ensure!(snapshot(net, "p1")? == before, "the ip6tables datapath was left behind:\n{}", snapshot(net, "p1")?);

        // --no-setup installs nothing; SIGINT works too.
        let p = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &["--no-setup"])?;
        ensure!(snapshot(net, "p1")? == before, "--no-setup changed the datapath");
        drop(p);

        // setup --print shows the commands and applies nothing.
        let out = net.run(
            "p1",
            [
                proxy_bin()?.display().to_string().as_str(),
                "setup",
                "--print",
                "--prefix",
                "fc00:f1::/80",
                "--port",
                "5001",
                "--ingress",
                "eth0",
            ],
        )?;
        for want in [
            "sysctl -w net.ipv6.conf.eth0.seg6_enabled=1",
            "ip -6 rule add fwmark 1 lookup 100",
            "ip -6 route add local ::/0 dev lo table 100",
            "tproxy to :5001",
        ] {
            ensure!(out.stdout.contains(want), "setup --print lacks {want:?}:\n{out}");
        }
        ensure!(snapshot(net, "p1")? == before, "setup --print changed the datapath");
        Ok(())
    });
}

#[test]
fn a_client_reusing_its_port_is_not_stalled_by_time_wait() {
    // The server closes first, so each proxy closes its client-facing leg first and would keep a
    // TIME_WAIT socket for the 4-tuple; the proxy destroys it, so the next connection from the same client
    // port is accepted at once instead of its SYN being dropped until the TIME_WAIT socket expires.
    with_net("proxy-chain", "pxtw", |net| {
        let c = Chain::start(net)?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tcp_semantics.py");
        let script_s = script.display().to_string();
        let server =
            net.cmd("server", ["/usr/bin/python3"]).arg(&script).args(["serve", &TCP_PORT.to_string()]).spawn()?;
        wait_until("the TCP server", T, || Ok(server.stdout().contains("listening")))?;
        let out = c
            .srv6run(
                XOR_CHAIN,
                &["/usr/bin/python3", &script_s, "reuse", SERVER, &TCP_PORT.to_string(), "40123", "10"],
            )?
            .timeout(T)
            .run()?;
        ensure!(out.stdout.contains("reuse-ok 10"), "{out}");
        for p in [&c.p1, &c.p2] {
            let tw = net.run(p.host(), ["ss", "-H", "-tan", "state", "time-wait"])?;
            ensure!(
                !tw.stdout.contains(":40123"),
                "{} kept a TIME_WAIT socket for the client's port:\n{}",
                p.host(),
                tw.stdout
            );
        }
        Ok(())
    });
}

/// Bound on a client noticing that the proxy ended its flow.
const PROMPT: Duration = Duration::from_secs(5);

/// `curl` of `url` through `segs`, at most 10 s.
fn curl_through(net: &Net, segs: &str, url: &str) -> Result<srv6pipes_tests::Output> {
    srv6run(net, segs, &["curl", "-sS", "-g", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null", url])?
        .timeout(T)
        .output()
}

#[test]
fn own_sid_as_next_segment_is_refused_and_counted() {
    with_net("proxy-chain", "pxown", |net| {
        let c = Chain::start(net)?;
        let sha = c.http.add_random_file("1m.bin", MIB)?;
        // Segments left 0 on p1's own SID (the SID is the destination), then p1's SID right after p1's SID.
        let cases = [("fc00:f1::2:0:5a", "fc00:f1::2:0:5a"), ("fc00:f1::2:0:5a,fc00:f1::1:0:0", SERVER)];
        let cap = net.capture("p1", "eth0")?;
        for (segs, dst) in cases {
            let url = format!("http://[{dst}]:{HTTP_PORT}/1m.bin");
            let started = Instant::now();
            let o = curl_through(net, segs, &url)?;
            ensure!(!o.status.success(), "a flow through {segs} to {url} was served: {o}");
            ensure!(started.elapsed() < PROMPT, "the refusal took {:?}", started.elapsed());
        }
        // Each refusal is a reset on the wire, from the address the client connected to. (curl words it as
        // "connection reset" or, when the RST beats its connect check, "couldn't connect": the wire decides.)
        let client: Ipv6Addr = CLIENT.parse()?;
        let reset_from = |p: &[Packet], dst: Ipv6Addr| {
            p.iter().any(|p| p.src == dst && p.dst == client && p.has_flags(tcp_flags::RST))
        };
        let dsts: Vec<Ipv6Addr> = cases.iter().map(|(_, dst)| dst.parse()).collect::<Result<_, _>>()?;
        // A bounded wait, then the check on what was captured: the capture may trail the client's exit.
        let _ = cap.wait_for("both resets", PROMPT, |p| dsts.iter().all(|d| reset_from(p, *d)));
        let packets = read_pcap(&cap.stop()?)?;
        for ((segs, _), dst) in cases.iter().zip(dsts) {
            ensure!(reset_from(&packets, dst), "no reset from {dst} to the client for {segs}");
        }
        let s1 = c.p1.stats(net)?;
        ensure!(s1.refused_own_sid == 2 && s1.refused == 2, "p1 did not count the own-SID refusals: {s1:?}");
        ensure!(s1.connect_failed == 0 && s1.accepted == 0, "p1 tried to connect: {s1:?}");
        let log = c.p1.stderr();
        ensure!(log.contains("is one of this proxy's own SIDs"), "p1 did not log the refusal:\n{log}");
        c.download(XOR_CHAIN, "1m.bin", &sha)?;
        Ok(())
    });
}

#[test]
fn sigterm_resets_open_flows_then_removes_the_datapath() {
    with_net("proxy-chain", "pxterm", |net| {
        let before = snapshot(net, "p1")?;
        let Chain { http, p1, p2, .. } = Chain::start(net)?;
        http.add_random_file("100m.bin", 100 * MIB)?;
        let _sink = UploadSink::start(net, "server", UPLOAD_PORT)?;
        let up = net.path("upload.bin");
        random_file(&up, 100 * MIB)?;
        // A rate-limited download and upload, as an operator would notice them hang.
        let args = curl_args(&net.path("download"), "100m.bin", &["--limit-rate", "2M"]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut down = srv6run(net, XOR_CHAIN, &argv)?.timeout(BIG_T).spawn()?;
        let url = format!("http://[{SERVER}]:{UPLOAD_PORT}/up");
        let up_s = up.display().to_string();
        let mut upload = srv6run(
            net,
            XOR_CHAIN,
            &["curl", "-sS", "-g", "--noproxy", "*", "--max-time", "170", "--limit-rate", "2M", "-T", &up_s, &url],
        )?
        .timeout(BIG_T)
        .spawn()?;
        wait_until("both flows to move bytes through p1", T, || {
            let f = p1.flows(net)?;
            Ok(f.len() == 2 && f.iter().all(|f| f.bytes_up + f.bytes_down > 256 * 1024))
        })?;
        let started = Instant::now();
        let out = p1.stop()?;
        let stopped_in = started.elapsed();
        ensure!(out.status.success(), "SIGTERM exit: {out}");
        ensure!(stopped_in < PROMPT, "p1 took {stopped_in:?} to stop");
        ensure!(out.stderr.contains("every flow ended"), "p1 left flows open:\n{}", out.stderr);
        // Both clients see their flow end at once (a reset), rather than hang until their own timeout.
        wait_until("curl to see the flows end", PROMPT, || {
            Ok(down.ensure_running().is_err() && upload.ensure_running().is_err())
        })?;
        for (what, o) in [("download", down.stop()?), ("upload", upload.stop()?)] {
            ensure!(!o.status.success(), "the {what} succeeded through a stopped proxy: {o}");
            ensure!(o.stderr.to_lowercase().contains("reset"), "the {what} did not end with a reset: {o}");
        }
        ensure!(snapshot(net, "p1")? == before, "p1 left its datapath:\n{}", snapshot(net, "p1")?);
        // p2 saw the resets too and holds no flow.
        wait_until("p2 to drop its flows", PROMPT, || Ok(p2.flows(net)?.is_empty()))?;
        Ok(())
    });
}

#[test]
fn drain_finishes_open_flows_and_refuses_new_ones() {
    with_net("proxy-chain", "pxdrain", |net| {
        let before = snapshot(net, "p1")?;
        let Chain { http, p1, p2: _p2, .. } = Chain::start(net)?;
        let sha = http.add_random_file("20m.bin", 20 * MIB)?;
        let out = net.path("drained");
        let args = curl_args(&out, "20m.bin", &["--limit-rate", "5M"]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut xfer = srv6run(net, XOR_CHAIN, &argv)?.timeout(BIG_T).spawn()?;
        wait_until("the download to move bytes", T, || Ok(p1.flows(net)?.iter().any(|f| f.bytes_down > 0)))?;
        let r = p1.ctl::<DrainReply>(net, &["drain", "--timeout", "120"])?;
        ensure!(r.as_ref().is_ok_and(|r| r.flows_active == 1 && r.deadline_ms > 100_000), "ctl drain: {r:?}");
        // A new flow is refused at once.
        let started = Instant::now();
        let o = curl_through(net, XOR_CHAIN, &format!("http://[{SERVER}]:{HTTP_PORT}/20m.bin"))?;
        ensure!(!o.status.success() && started.elapsed() < PROMPT, "a new flow during the drain: {o}");
        ensure!(p1.stats(net)?.refused_draining == 1, "{:?}", p1.stats(net)?);
        // The open one finishes intact, then p1 exits by itself and removes its datapath.
        wait_until("the download to finish", BIG_T, || Ok(xfer.ensure_running().is_err()))?;
        let done = xfer.stop()?;
        ensure!(done.status.success(), "the download failed during the drain: {done}");
        ensure!(sha256_file(&out)? == sha, "the download is corrupt");
        let exit = p1.wait(T)?;
        ensure!(exit.status.success() && exit.stderr.contains("drain over"), "p1 after the drain: {exit}");
        ensure!(snapshot(net, "p1")? == before, "p1 left its datapath:\n{}", snapshot(net, "p1")?);
        // SIGQUIT drains too: with no flow open, the proxy exits at once.
        let p = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
        p.signal(libc::SIGQUIT)?;
        let exit = p.wait(T)?;
        ensure!(exit.status.success(), "SIGQUIT: {exit}");
        ensure!(snapshot(net, "p1")? == before, "after SIGQUIT:\n{}", snapshot(net, "p1")?);
        Ok(())
    });
}

#[test]
fn a_crashed_proxys_datapath_is_adopted_or_removed_by_hand() {
    with_net("proxy-chain", "pxcrash", |net| {
        let before = snapshot(net, "p1")?;
        let p = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
        let state = p.state().to_path_buf();
        let during = snapshot(net, "p1")?;
        // A second proxy with the same state file is refused while the first runs.
        let again = net
            .cmd("p1", [proxy_bin()?])
            .args(["--prefix", "fc00:f1::/80", "--port", "5001", "--control"])
            .arg(net.path("other.sock"))
            .arg("--state")
            .arg(&state)
            .timeout(T)
            .output()?;
        ensure!(!again.status.success() && again.stderr.contains("--takeover"), "second proxy: {again}");
        p.signal(libc::SIGKILL)?;
        let _ = p.wait(T)?;
        ensure!(snapshot(net, "p1")? == during && state.exists(), "kill -9 should leave the datapath and state");

        // The next start removes the crashed run's leftovers and installs afresh; its exit removes all.
        let p = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
        ensure!(p.stderr().contains("removing its leftovers"), "{}", p.stderr());
        ensure!(snapshot(net, "p1")? == during, "after adoption:\n{}", snapshot(net, "p1")?);
        let out = p.stop()?;
        ensure!(out.status.success(), "{out}");
        ensure!(snapshot(net, "p1")? == before, "leftovers after a clean exit:\n{}", snapshot(net, "p1")?);
        ensure!(!state.exists(), "the state file stayed");

        // Crash again; `setup --teardown` removes it by hand.
        let p = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
        p.signal(libc::SIGKILL)?;
        let _ = p.wait(T)?;
        let state_s = state.display().to_string();
        let bin = proxy_bin()?.display().to_string();
        net.cmd("p1", [bin.as_str()]).args(["setup", "--teardown", "--state", &state_s]).timeout(T).run()?;
        ensure!(snapshot(net, "p1")? == before, "setup --teardown left:\n{}", snapshot(net, "p1")?);
        ensure!(!state.exists(), "setup --teardown left the state file");
        Ok(())
    });
}

#[test]
fn takeover_restarts_without_dropping_flows() {
    with_net("proxy-chain", "pxtake", |net| {
        let before = snapshot(net, "p1")?;
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        let metrics = ["--metrics", "[::1]:9101"];
        let old = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &metrics)?;
        let _p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &[])?;
        let sha = http.add_random_file("30m.bin", 30 * MIB)?;
        let small = http.add_random_file("1m.bin", MIB)?;
        let out = net.path("long");
        let args = curl_args(&out, "30m.bin", &["--limit-rate", "6M"]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut xfer = srv6run(net, XOR_CHAIN, &argv)?.timeout(BIG_T).spawn()?;
        wait_until("the download to move bytes", T, || Ok(old.flows(net)?.iter().any(|f| f.bytes_down > 0)))?;
        // New flows during the handover go to the new process; the old one keeps its download.
        let new = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &["--takeover", metrics[0], metrics[1]])?;
        let mut served = 0;
        for _ in 0..3 {
            download(net, XOR_CHAIN, "1m.bin", &small)?;
            served += 1;
        }
        ensure!(new.stats(net)?.accepted == served, "the new proxy: {:?}", new.stats(net)?);
        // The metrics endpoint is the new proxy's now.
        let page = net
            .cmd("p1", ["curl", "-sS", "-g", "--fail", "--max-time", "10", "http://[::1]:9101/metrics"])
            .timeout(T)
            .run()?;
        let want = format!("\nsrv6pipes_proxy_flows_accepted_total {served}\n");
        ensure!(page.stdout.contains(&want), "metrics after the takeover:\n{}", page.stdout);
        wait_until("the long download to finish", BIG_T, || Ok(xfer.ensure_running().is_err()))?;
        let done = xfer.stop()?;
        ensure!(done.status.success(), "the download across the restart failed: {done}");
        ensure!(sha256_file(&out)? == sha, "the download across the restart is corrupt");
        let exit = old.wait(T)?;
        ensure!(exit.status.success() && exit.stderr.contains("left in place"), "the old proxy: {exit}");
        ensure!(snapshot(net, "p1")?.contains("table ip6 srv6pipes"), "the old proxy removed the datapath");
        download(net, XOR_CHAIN, "1m.bin", &small)?;
        let out = new.stop()?;
        ensure!(out.status.success(), "{out}");
        ensure!(snapshot(net, "p1")? == before, "after the new proxy's exit:\n{}", snapshot(net, "p1")?);
        Ok(())
    });
}

/// A strict reading of the Prometheus text format: HELP and TYPE before a metric's samples, each name
/// described once, every sample `name{labels} value` of a declared metric; returns the samples.
fn parse_prometheus(text: &str) -> Result<Vec<(String, f64)>> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut typed = std::collections::HashMap::new();
    let mut helped = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').context(line.to_string())?;
            ensure!(name_ok(name) && !help.is_empty() && helped.insert(name.to_string()), "bad HELP: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').context(line.to_string())?;
            ensure!(["counter", "gauge"].contains(&kind), "bad TYPE: {line}");
            ensure!(typed.insert(name.to_string(), kind.to_string()).is_none(), "TYPE twice: {line}");
        } else {
            ensure!(!line.starts_with('#') && !line.is_empty(), "stray line: {line:?}");
            let (series, value) = line.rsplit_once(' ').context(line.to_string())?;
            let name = series.split('{').next().unwrap_or_default();
            ensure!(name_ok(name) && typed.contains_key(name) && helped.contains(name), "undeclared: {line}");
            if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).context(line.to_string())?;
                for pair in inner.split(',') {
                    let (k, v) = pair.split_once('=').context(line.to_string())?;
                    ensure!(name_ok(k) && v.len() >= 2 && v.starts_with('"') && v.ends_with('"'), "label: {line}");
                }
            }
            let v: f64 = value.parse().with_context(|| format!("value of {line}"))?;
            ensure!(typed[name] != "counter" || (name.ends_with("_total") && v >= 0.0), "counter: {line}");
            samples.push((series.to_string(), v));
        }
    }
    Ok(samples)
}

#[test]
fn metrics_endpoint_serves_the_counters_to_prometheus() {
    with_net("proxy-chain", "pxmet", |net| {
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        let sha = http.add_random_file("1m.bin", MIB)?;
        let p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &["--metrics", "[::1]:9101"])?;
        let _p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &[])?;
        download(net, XOR_CHAIN, "1m.bin", &sha)?;
        let _ = curl_through(net, "fc00:f1::7:0:0,fc00:f2::2:0:5a", &format!("http://[{SERVER}]:{HTTP_PORT}/"))?;
        let page = net.path("metrics.txt");
        net.cmd("p1", ["curl", "-sS", "-g", "--fail", "--max-time", "10", "-o"])
            .arg(&page)
            .arg("http://[::1]:9101/metrics")
            .timeout(T)
            .run()?;
        let text = std::fs::read_to_string(&page)?;
        // Prometheus's own checker (Debian's `prometheus` package), then our strict reading.
        let lint =
            srv6pipes_tests::Cmd::new(["sh", "-c", "promtool check metrics < \"$0\"", &page.display().to_string()])
                .timeout(T)
                .output()?;
        ensure!(lint.status.success() && lint.stdout.trim().is_empty(), "promtool check metrics: {lint}\n{text}");
        let samples = parse_prometheus(&text)?;
        let get = |s: &str| samples.iter().find(|(n, _)| n == s).map(|(_, v)| *v as u64);
        let stats = p1.stats(net)?;
        ensure!(get("srv6pipes_proxy_flows_accepted_total") == Some(stats.accepted), "{text}");
        ensure!(stats.accepted == 1, "{stats:?}");
        ensure!(get("srv6pipes_proxy_flows_refused_total{reason=\"unknown_function\"}") == Some(1), "{text}");
        ensure!(get("srv6pipes_proxy_bytes_down_total").is_some_and(|b| b > MIB), "{text}");
        let missing = net.cmd("p1", ["curl", "-sS", "-g", "--fail", "--max-time", "10", "http://[::1]:9101/nope"]);
        ensure!(!missing.timeout(T).output()?.status.success(), "/nope answered");
        Ok(())
    });
}

/// Concurrent flows of the resource test, and the bytes each moves before it idles. Each xor flow takes
/// two descriptors in each proxy: 10 000 flows would need 20 000 and a few, above this machine's hard limit
/// of open files (20 000, which the tests cannot raise), so the test runs 9 500 with `--max-flows` above
/// that (the default limit counts four descriptors per flow, for splice's pipes).
const IDLE_FLOWS: usize = 9_500;
const IDLE_FLOW_BYTES: usize = 32 * 1024;
const IDLE_PORT: u16 = 9100;

/// A `/proc/PID/status` field in KiB (VmRSS, VmHWM).
fn proc_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field} for {pid}"))?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// Open descriptors of `pid`.
fn fd_count(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// TIME_WAIT sockets in `host`'s namespace.
fn time_wait(net: &Net, host: &str) -> Result<Vec<String>> {
    let out = net.run(host, ["ss", "-H", "-tan", "state", "time-wait"])?;
    Ok(out.stdout.lines().map(str::to_string).filter(|l| !l.trim().is_empty()).collect())
}

#[test]
fn idle_flows_cost_a_few_kib_and_leave_nothing_behind() {
    with_net("proxy-chain", "pxidle", |net| {
        let limit = ["--max-flows", "9600"];
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        let c = Chain {
            net,
            p1: Proxy::start(net, "p1", "fc00:f1::/80", 5001, &limit)?,
            p2: Proxy::start(net, "p2", "fc00:f2::/80", 5002, &limit)?,
            http,
        };
        let sha = c.http.add_random_file("1m.bin", MIB)?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/idle_flows.py");
        let script_s = script.display().to_string();
        let server =
            net.cmd("server", ["/usr/bin/python3"]).arg(&script).args(["serve", &IDLE_PORT.to_string()]).spawn()?;
        wait_until("the idle-flows server", T, || Ok(server.stdout().contains("listening")))?;
        c.download(XOR_CHAIN, "1m.bin", &sha)?;
        std::thread::sleep(Duration::from_millis(500));
        let pid = c.p1.pid();
        let (idle_rss, idle_fds) = (proc_kib(pid, "VmRSS:")?, fd_count(pid)?);

        let until = net.path("close-now");
        let (n, size) = (IDLE_FLOWS.to_string(), IDLE_FLOW_BYTES.to_string());
        let port = IDLE_PORT.to_string();
        let until_s = until.display().to_string();
        let started = Instant::now();
        let mut client =
            srv6run(net, XOR_CHAIN, &["/usr/bin/python3", &script_s, "client", SERVER, &port, &n, &size, &until_s])?
                .spawn()?;
        client.wait_until("the flows to move their data", Duration::from_secs(300), |p| {
            Ok(p.stdout().contains("moved"))
        })?;
        let moved_in = started.elapsed();
        std::thread::sleep(Duration::from_secs(1));
        let busy = c.p1.stats(net)?;
        ensure!(busy.flows_active == IDLE_FLOWS as u64, "p1 holds {} flows, not {IDLE_FLOWS}", busy.flows_active);
        let (rss, peak) = (proc_kib(pid, "VmRSS:")?, proc_kib(pid, "VmHWM:")?);
        let per_flow = (rss.saturating_sub(idle_rss) * 1024) / IDLE_FLOWS as u64;
        eprintln!(
            "{IDLE_FLOWS} idle xor flows of {IDLE_FLOW_BYTES} bytes each (moved in {moved_in:?}): p1 RSS idle \
             {idle_rss} KiB, with the flows idle {rss} KiB ({per_flow} bytes per flow), peak {peak} KiB, fds {}",
            fd_count(pid)?
        );
        ensure!(per_flow <= 16 * 1024, "p1 holds {per_flow} bytes per idle flow");
        // curl works while they idle.
        c.download(XOR_CHAIN, "1m.bin", &sha)?;

        std::fs::write(&until, "")?;
        client.wait_until("the flows to close", T, |p| Ok(p.stdout().contains("closed")))?;
        let out = client.wait(T)?;
        ensure!(out.status.success(), "the client: {out}");
        wait_until("the proxies to end the flows", T, || {
            Ok(c.p1.stats(net)?.flows_active == 0 && c.p2.stats(net)?.flows_active == 0)
        })?;
        // Deferred TIME_WAIT removals retry for up to 6 s.
        wait_until("no TIME_WAIT socket in the proxies", Duration::from_secs(10), || {
            Ok(time_wait(net, "p1")?.is_empty() && time_wait(net, "p2")?.is_empty())
        })
        .with_context(|| format!("p1: {:?}\np2: {:?}", time_wait(net, "p1"), time_wait(net, "p2")))?;
        // Pooled buffers left unused are released within two trim periods (2 s).
        let near_idle = idle_rss + (rss - idle_rss) / 4;
        let settled = wait_until("p1 to return near its idle size", Duration::from_secs(5), || {
            Ok(proc_kib(pid, "VmRSS:")? <= near_idle && fd_count(pid)? == idle_fds)
        });
        let (after_rss, after_fds) = (proc_kib(pid, "VmRSS:")?, fd_count(pid)?);
        eprintln!("after closing: p1 RSS {after_rss} KiB, fds {after_fds} (idle: {idle_rss} KiB, {idle_fds} fds)");
        settled
            .with_context(|| format!("p1 RSS {after_rss} KiB (idle {idle_rss}, with flows {rss}), fds {after_fds}"))?;
        let s1 = c.p1.stats(net)?;
        ensure!(s1.refused == 0 && s1.flows_reset == 0, "{s1:?}");
        c.download(XOR_CHAIN, "1m.bin", &sha)?;
        Ok(())
    });
}

#[test]
fn idle_timeout_and_flow_limit_reset_flows_and_are_counted() {
    with_net("proxy-chain", "pxlimit", |net| {
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        let sha = http.add_random_file("1m.bin", MIB)?;
        let p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &["--max-flows", "2", "--idle-timeout", "1"])?;
        let p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &[])?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/idle_flows.py");
        let script_s = script.display().to_string();
        let server =
            net.cmd("server", ["/usr/bin/python3"]).arg(&script).args(["serve", &IDLE_PORT.to_string()]).spawn()?;
        wait_until("the idle-flows server", T, || Ok(server.stdout().contains("listening")))?;
        let port = IDLE_PORT.to_string();
        let hold = |secs: &str| srv6run(net, XOR_CHAIN, &["/usr/bin/python3", &script_s, "hold", SERVER, &port, secs]);
        // Two idle flows fill p1's limit: a third is refused at once.
        let mut holders = vec![hold("10")?.spawn()?, hold("10")?.spawn()?];
        for h in &mut holders {
            h.wait_until("the flow to idle", T, |p| Ok(p.stdout().contains("idle")))?;
        }
        let started = Instant::now();
        let o = curl_through(net, XOR_CHAIN, &format!("http://[{SERVER}]:{HTTP_PORT}/1m.bin"))?;
        ensure!(!o.status.success() && started.elapsed() < PROMPT, "a flow over the limit: {o}");
        ensure!(p1.stats(net)?.refused_limit == 1, "{:?}", p1.stats(net)?);
        // Idle for a second or two, the flows are reset (both legs: p2 drops them too).
        for h in holders {
            let out = h.wait(T)?;
            ensure!(out.status.success() && out.stdout.contains("reset"), "an idle flow: {out}");
        }
        let s1 = p1.stats(net)?;
        ensure!(s1.idle_timeouts == 2 && s1.flows_active == 0, "{s1:?}");
        wait_until("p2 to drop the flows", PROMPT, || Ok(p2.flows(net)?.is_empty()))?;
        // Below the limit again, flows are served.
        download(net, XOR_CHAIN, "1m.bin", &sha)?;
        Ok(())
    });
}

#[test]
fn at_the_descriptor_limit_flows_are_reset_and_counted() {
    with_net("proxy-chain", "pxfds", |net| {
        let c = Chain::start(net)?;
        let sha = c.http.add_random_file("1m.bin", MIB)?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/idle_flows.py");
        let script_s = script.display().to_string();
        let server =
            net.cmd("server", ["/usr/bin/python3"]).arg(&script).args(["serve", &IDLE_PORT.to_string()]).spawn()?;
        wait_until("the idle-flows server", T, || Ok(server.stdout().contains("listening")))?;
        // 64 descriptors for p1: room for a score of flows (two sockets each), far below its flow limit.
        let pid = c.p1.pid().to_string();
        srv6pipes_tests::Cmd::new(["prlimit", "--pid", &pid, "--nofile=64:64"]).timeout(T).run()?;
        let until = net.path("never");
        let until_s = until.display().to_string();
        let port = IDLE_PORT.to_string();
        let started = Instant::now();
        let out =
            srv6run(net, XOR_CHAIN, &["/usr/bin/python3", &script_s, "client", SERVER, &port, "60", "1000", &until_s])?
                .timeout(T)
                .output()?;
        ensure!(!out.status.success(), "60 flows through a proxy with 64 descriptors: {out}");
        ensure!(started.elapsed() < Duration::from_secs(10), "the refusal took {:?}: {out}", started.elapsed());
        let s1 = c.p1.stats(net)?;
        ensure!(s1.refused_limit >= 1 && s1.connect_failed == 0, "p1 did not count the refusal: {s1:?}");
        ensure!(s1.accepted >= 10, "p1 accepted only {} flows", s1.accepted);
        // Once the client's flows are gone, the proxy serves again.
        // Once the client's flows are gone, including those still queued on p1's listeners when the client
        // gave up (accepted, then ended, one by one), the proxy serves again.
        wait_until("p1 to work through its listen queues", T, || {
            let queued: u64 = net
                .run("p1", ["ss", "-Hltn", "sport = :5001"])?
                .stdout
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
            Ok(queued == 0 && c.p1.stats(net)?.flows_active == 0)
        })?;
        c.download(XOR_CHAIN, "1m.bin", &sha)?;
        Ok(())
    });
}
