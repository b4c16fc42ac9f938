//! The return path, honoured (issue 8): topology `offpath` (client — r — server, with p1, p2 and the End
//! router r2 each hanging off r by their own link). Nothing but an SRH brings a packet to p1, p2 or r2, so
//! captures on their links show which replies followed the return-path TLV.
//!
//! * Servers behind a chain run unmodified (nginx, python, a static busybox) under `srv6reply` (the
//!   kernel's per-flow reply steering, host-wide): every reply of a flow, its SYN-ACK first, carries the
//!   SRH of its SYN's TLV. One test runs a server under `srv6run --reply-path` (the shim) instead.
//! * The proxies run with `--reply-path`: the same kernel steering on their ingress devices sends each
//!   client-facing leg's replies, SYN-ACK included, along the waypoints that follow the proxy's return
//!   SID; the last proxy passes the TLV (and the forward segments) to the server. No static route anywhere.
//! * The last test runs `--reply-path` on the on-path chain (`proxy-chain`), which must keep working.

use std::net::Ipv6Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use srv6pipes_capture::{read_pcap, Packet};
use srv6pipes_tests::http::{random_file, sha256_file, HttpServer, UploadSink};
use srv6pipes_tests::proxy::Proxy;
use srv6pipes_tests::reply::ReplyDaemon;
use srv6pipes_tests::{binaries, oracle, wait_until, with_net, Net};

const HTTP_PORT: u16 = 8080;
const UPLOAD_PORT: u16 = 8081;
const CLIENT: &str = "fc00:1::1";
const SERVER: &str = "fc00:3::2";
const R2_END: &str = "fc00:e2::1";
/// xor (function 2) with key 0x5a on p1 then on p2.
const P1_XOR: &str = "fc00:f1::2:0:5a";
const P2_XOR: &str = "fc00:f2::2:0:5a";
/// copy (function 1) on p1 and p2.
const P1_COPY: &str = "fc00:f1::1:0:0";
const P2_COPY: &str = "fc00:f2::1:0:0";
const MIB: u64 = 1 << 20;
/// Bound on one transfer of 10 MiB through two proxies in a debug build.
const T: Duration = Duration::from_secs(90);
/// Bound on a transfer expected to fail.
const FAIL_T: Duration = Duration::from_secs(30);

fn a(s: &str) -> Ipv6Addr {
    s.parse().expect("a valid address literal")
}

fn srv6run() -> Result<String> {
    Ok(binaries::path("srv6run")?.display().to_string())
}

/// `srv6run --reply-path [EXTRA…] --`, the wrapper of a server that replies along return paths.
fn reply_wrapper(extra: &[&str]) -> Result<Vec<String>> {
    let mut v = vec![srv6run()?, "--reply-path".into()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v.push("--".into());
    Ok(v)
}

/// Both proxies with `--reply-path` (ingress: their one link).
fn proxies(net: &Net) -> Result<(Proxy, Proxy)> {
    let p1 = Proxy::start_on(net, "p1", "fc00:f1::/80", 5001, "eth0", &["--reply-path"])?;
    let p2 = Proxy::start_on(net, "p2", "fc00:f2::/80", 5002, "eth0", &["--reply-path"])?;
    Ok((p1, p2))
}

/// Host-wide reply steering on the server, default settings.
fn steering_server(net: &Net) -> Result<ReplyDaemon> {
    ReplyDaemon::start(net, "server", "eth0", &[])
}

/// `srv6run ARGS -- curl …` in the client: GET `name` from nginx into a file; curl's output (which may fail).
fn curl(
    net: &Net,
    srv6run_args: &[&str],
    name: &str,
    max_time: u64,
) -> Result<(srv6pipes_tests::Output, std::path::PathBuf)> {
    get(net, srv6run_args, HTTP_PORT, name, max_time)
}

/// Download `name` (sha256 `want`) and upload `size` random bytes through `segs`; both must arrive intact.
fn download_and_upload(net: &Net, segs: &[&str], name: &str, want: &str, size: u64) -> Result<()> {
    let (out, file) = curl(net, segs, name, T.as_secs())?;
    ensure!(out.status.success(), "download of {name} failed: {out}");
    let got = sha256_file(&file)?;
    ensure!(got == want, "{name}: sha256 {got}, served {want}");
    let up = net.path("upload.bin");
    let sha = random_file(&up, size)?;
    let url = format!("http://[{SERVER}]:{UPLOAD_PORT}/up");
    let out = net
        .cmd("client", [srv6run()?])
        .args(segs)
        .args(["--", "curl", "-sS", "-g", "--noproxy", "*", "--max-time", &T.as_secs().to_string(), "-T"])
        .arg(&up)
        .arg(url)
        .timeout(T + Duration::from_secs(10))
        .run()?;
    ensure!(out.stdout.trim() == format!("{sha} {size}"), "the sink received something else: {out}");
    Ok(())
}

/// Packets from the server's `port` (the downstream direction) in a capture.
fn downstream(packets: &[Packet], port: u16) -> Vec<&Packet> {
    packets.iter().filter(|p| p.src == a(SERVER) && p.tcp().is_some_and(|t| t.src_port == port)).collect()
}

/// Stop a capture after the transfer's packets are in, and decode it.
fn packets_of(cap: srv6pipes_tests::Capture) -> Result<(std::path::PathBuf, Vec<Packet>)> {
    std::thread::sleep(Duration::from_millis(300));
    let pcap = cap.stop()?;
    let packets = read_pcap(&pcap)?;
    Ok((pcap, packets))
}

/// Every downstream data packet (from the server's `port`) of `packets` sent to `dst` carries an SRH with `segments` (SRH order), and
/// there are some; scapy decodes the same segments for every one of them.
fn assert_reply_srh(pcap: &Path, packets: &[Packet], port: u16, dst: &str, segments: &[&str], at: &str) -> Result<()> {
    let want: Vec<Ipv6Addr> = segments.iter().map(|s| a(s)).collect();
    let data: Vec<&Packet> = downstream(packets, port)
        .into_iter()
        .filter(|p| p.dst == a(dst) && p.tcp().is_some_and(|t| t.payload_len > 0))
        .collect();
    ensure!(!data.is_empty(), "{at}: no downstream data packet to {dst}");
    for p in &data {
        let srh = p.srh_repr().with_context(|| format!("{at}: frame {} to {dst} has no SRH", p.frame))?;
        ensure!(srh.segments == want, "{at}: frame {}: segments {:?}, want {want:?}", p.frame, srh.segments);
        ensure!(srh.active_segment() == Some(p.dst), "{at}: frame {}: dst is not the active segment", p.frame);
    }
    // Independent decoder: scapy sees the same SRH on the same frames.
    let frames: Vec<usize> = data.iter().map(|p| p.frame).collect();
    let theirs = oracle::scapy(pcap)?;
    let mut checked = 0;
    for v in theirs.iter().filter(|v| frames.contains(&v.frame)) {
        let srh = v.srh.as_ref().with_context(|| format!("{at}: scapy sees no SRH in frame {}", v.frame))?;
        ensure!(srh.segments == want, "{at}: scapy: frame {}: segments {:?}", v.frame, srh.segments);
        checked += 1;
    }
    ensure!(checked == frames.len(), "{at}: scapy decoded {checked} of the {} frames", frames.len());
    Ok(())
}

#[test]
fn server_replies_through_an_off_path_end_sid() {
    with_net("offpath", "rpend", |net| {
        let log = net.path("shim.log");
        let wrapper = reply_wrapper(&["--log", &log.display().to_string()])?;
        let mut http = HttpServer::start_under(net, "server", HTTP_PORT, &wrapper)?;
        let sha = http.add_random_file("1m.bin", MIB)?;
        let cap = net.capture("r2", "eth0")?;
        let (out, file) = curl(net, &["--segs", R2_END], "1m.bin", 30)?;
        ensure!(out.status.success(), "download failed: {out}");
        ensure!(sha256_file(&file)? == sha, "the download differs");
        let (pcap, packets) = packets_of(cap)?;
        // The replies visit r2: [client, r2] with r2 active.
        assert_reply_srh(&pcap, &packets, HTTP_PORT, R2_END, &[CLIENT, R2_END], "r2")?;
        ensure!(http.access_log()?.starts_with(&format!("{CLIENT} ")), "nginx saw another peer");
        let installed = || -> Result<usize> {
            Ok(std::fs::read_to_string(&log)?.lines().filter(|l| l.contains("\"action\":\"reply-path\"")).count())
        };
        ensure!(installed()? == 1, "the shim did not log the reply path once:\n{}", std::fs::read_to_string(&log)?);
        // A SYN with an SRH but no return-path TLV leaves the connection untouched.
        let (out, file) = curl(net, &["--segs", R2_END, "--return-path", "none"], "1m.bin", 30)?;
        ensure!(out.status.success() && sha256_file(&file)? == sha, "download without a TLV failed: {out}");
        ensure!(installed()? == 1, "a reply path was installed without a TLV");

        // Control: the same server without --reply-path answers straight, nothing crosses r2 downstream.
        drop(http);
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        http.add_random_file("1m.bin", MIB)?;
        let cap = net.capture("r2", "eth0")?;
        let (out, _) = curl(net, &["--segs", R2_END], "1m.bin", 30)?;
        ensure!(out.status.success(), "download without --reply-path failed: {out}");
        let (_, packets) = packets_of(cap)?;
        ensure!(downstream(&packets, HTTP_PORT).is_empty(), "replies crossed r2 without --reply-path");
        Ok(())
    })
}

#[test]
fn off_path_proxies_xor_both_ways_with_the_return_srh() {
    with_net("offpath", "rpxor", |net| {
        let (p1, p2) = proxies(net)?;
        let _steer = steering_server(net)?;
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        let _sink = UploadSink::start(net, "server", UPLOAD_PORT)?;
        let small = http.add_random_file("1m.bin", MIB)?;
        let sha = http.add_random_file("10m.bin", 10 * MIB)?;
        let segs = format!("{P1_XOR},{P2_XOR}");
        // Captured: 1 MiB down (a capture of 10 MiB both ways would lose packets on a loaded machine).
        let (cap1, cap2) = (net.capture("p1", "eth0")?, net.capture("p2", "eth0")?);
        let (out, file) = curl(net, &["--segs", &segs], "1m.bin", T.as_secs())?;
        ensure!(out.status.success() && sha256_file(&file)? == small, "1 MiB download failed: {out}");
        let (pcap2, on_p2) = packets_of(cap2)?;
        let (pcap1, on_p1) = packets_of(cap1)?;
        // 10 MiB each way, 1500-byte MTU everywhere.
        download_and_upload(net, &["--segs", &segs], "10m.bin", &sha, 10 * MIB)?;
        // TLV (reverse of the forward path): [p1, p2] in SRH order. The server sends [client, p1, p2]
        // towards p2; p2 sends [client, p1] towards p1; p1 sends to the client without SRH.
        assert_reply_srh(&pcap2, &on_p2, HTTP_PORT, P2_XOR, &[CLIENT, P1_XOR, P2_XOR], "p2's link, from the server")?;
        assert_reply_srh(&pcap1, &on_p1, HTTP_PORT, P1_XOR, &[CLIENT, P1_XOR], "p1's link, from p2")?;
        let last: Vec<&Packet> = downstream(&on_p1, HTTP_PORT).into_iter().filter(|p| p.dst == a(CLIENT)).collect();
        ensure!(!last.is_empty() && last.iter().all(|p| p.srh.is_none()), "p1 → client: missing, or with an SRH");
        for p in [&p1, &p2] {
            let s = p.stats(net)?;
            ensure!(s.refused == 0, "{} refused flows: {s:?}", p.host());
        }
        Ok(())
    })
}

#[test]
fn off_path_proxies_without_steering_on_the_server_stall() {
    with_net("offpath", "rpnoshim", |net| {
        let (_p1, _p2) = proxies(net)?;
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        http.add_random_file("1m.bin", MIB)?;
        let cap2 = net.capture("p2", "eth0")?;
        let segs = format!("{P1_XOR},{P2_XOR}");
        let (out, _) = curl(net, &["--segs", &segs], "1m.bin", FAIL_T.as_secs())?;
        // Without reply steering on the server, it answers the client directly, past p2 and p1: p2's
        // outbound connect never completes, the client gets no response.
        ensure!(!out.status.success(), "the download succeeded without the server side: {out}");
        let (_, on_p2) = packets_of(cap2)?;
        let data =
            downstream(&on_p2, HTTP_PORT).into_iter().filter(|p| p.tcp().is_some_and(|t| t.payload_len > 0)).count();
        ensure!(data == 0, "{data} response packets reached p2 without the server shim");
        Ok(())
    })
}

/// Hex of the TCP payloads from the server's port towards `dst` (tshark).
fn payloads_to(net: &Net, pcap: &Path, dst: &str) -> Result<Vec<String>> {
    let out = net
        .cmd("client", ["tshark", "-r"])
        .arg(pcap)
        .args(["-Y", &format!("ipv6.dst == {dst} && tcp.srcport == {HTTP_PORT} && tcp.len > 0")])
        .args(["-T", "fields", "-e", "tcp.payload"])
        .timeout(Duration::from_secs(60))
        .run()?;
    Ok(out.stdout.lines().map(|l| l.trim().replace(':', "")).filter(|l| !l.is_empty()).collect())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn asymmetric_functions_xor_up_copy_down() {
    with_net("offpath", "rpasym", |net| {
        let (p1, _p2) = proxies(net)?;
        let _steer = steering_server(net)?;
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        let sha = http.add_random_file("1m.bin", MIB)?;
        let plain = hex(b"HTTP/1.1 200");
        let xored = hex(&b"HTTP/1.1 200".iter().map(|b| b ^ 0x5a).collect::<Vec<u8>>());
        let segs = format!("{P1_XOR},{P2_XOR}");
        for (return_path, down_between_proxies, at_p1) in [
            // Symmetric (reverse): xor down too, so the response crosses p2 → p1 XORed.
            ("reverse", &xored, P1_XOR),
            // Back through copy SIDs: the response crosses p2 → p1 in clear.
            (&*format!("{P2_COPY},{P1_COPY}"), &plain, P1_COPY),
        ] {
            let cap1 = net.capture("p1", "eth0")?;
            let (out, file) = curl(net, &["--segs", &segs, "--return-path", return_path], "1m.bin", 30)?;
            ensure!(out.status.success(), "download with return path {return_path} failed: {out}");
            ensure!(sha256_file(&file)? == sha, "return path {return_path}: the download differs");
            let (pcap, _) = packets_of(cap1)?;
            let down = payloads_to(net, &pcap, at_p1)?;
            ensure!(
                down.iter().any(|p| p.starts_with(down_between_proxies.as_str())),
                "return path {return_path}: the response p2 → p1 does not start with {down_between_proxies}: {:?}",
                down.iter().map(|p| &p[..p.len().min(24)]).collect::<Vec<_>>()
            );
        }
        // The proxy's flow table says which function each direction takes (a slow download to look at).
        let back = format!("{P2_COPY},{P1_COPY}");
        let url = format!("http://[{SERVER}]:{HTTP_PORT}/1m.bin");
        let mut slow = net
            .cmd("client", [srv6run()?])
            .args(["--segs", &segs, "--return-path", &back, "--", "curl", "-sS", "-g", "--noproxy", "*"])
            .args(["--limit-rate", "100K", "--max-time", "60", "-o", "/dev/null", &url])
            .spawn()?;
        wait_until("p1 to relay the slow download", FAIL_T, || Ok(!p1.flows(net)?.is_empty()))?;
        slow.ensure_running()?;
        let flows = p1.flows(net)?;
        let flow = flows.first().context("p1's flow ended")?;
        let down = flow.downstream.as_ref().with_context(|| format!("p1 shows no downstream function: {flow:?}"))?;
        ensure!(
            (flow.function.as_str(), down.function.as_str(), down.function_id, down.sid.to_string())
                == ("xor", "copy", 1, P1_COPY.to_string()),
            "p1's flow: {flow:?}"
        );
        slow.stop()?;
        Ok(())
    })
}

#[test]
fn return_path_with_a_routers_end_sid_and_lowered_mtu() {
    with_net("offpath", "rpmtu", |net| {
        // r2's End SID is not on the forward path: the server and p2 (which sends towards it) allow it.
        let _p1 = Proxy::start_on(net, "p1", "fc00:f1::/80", 5001, "eth0", &["--reply-path"])?;
        let _p2 = Proxy::start_on(
            net,
            "p2",
            "fc00:f2::/80",
            5002,
            "eth0",
            &["--reply-path", "--reply-allow", "fc00:e2::/64"],
        )?;
        // Lower the MTU of the server's route and of r's route to the client: 10 MiB must still cross.
        net.run(
            "server",
            ["ip", "-6", "route", "change", "default", "via", "fc00:3::1", "dev", "eth0", "mtu", "1400"],
        )?;
        net.run("r", ["ip", "-6", "route", "replace", "fc00:1::/64", "dev", "eth0", "mtu", "1400"])?;
        let _steer = ReplyDaemon::start(net, "server", "eth0", &["--reply-allow", "fc00:e2::/64"])?;
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        let _sink = UploadSink::start(net, "server", UPLOAD_PORT)?;
        let small = http.add_random_file("1m.bin", MIB)?;
        let sha = http.add_random_file("10m.bin", 10 * MIB)?;
        // Back: p2 (xor), then r2's End SID, then p1 (xor).
        let segs = format!("{P1_XOR},{P2_XOR}");
        let back = format!("{P2_XOR},{R2_END},{P1_XOR}");
        let args = ["--segs", &segs, "--return-path", &back];
        let cap = net.capture("r2", "eth0")?;
        let (out, file) = curl(net, &args, "1m.bin", T.as_secs())?;
        ensure!(out.status.success() && sha256_file(&file)? == small, "1 MiB download failed: {out}");
        let (pcap, packets) = packets_of(cap)?;
        download_and_upload(net, &args, "10m.bin", &sha, 10 * MIB)?;
        // p2 sends [client, p1, r2] with r2 active.
        assert_reply_srh(&pcap, &packets, HTTP_PORT, R2_END, &[CLIENT, P1_XOR, R2_END], "r2's link")?;
        Ok(())
    })
}

#[test]
fn a_return_path_outside_the_allowed_prefixes_is_refused() {
    with_net("offpath", "rprefuse", |net| {
        let log = net.path("shim.log");
        let log_s = log.display().to_string();
        let wrapper = reply_wrapper(&["--reply-allow", "fc00:f1::/32,fc00:f2::/32", "--log", &log_s])?;
        let http = HttpServer::start_under(net, "server", HTTP_PORT, &wrapper)?;
        http.add_random_file("1k.bin", 1024)?;
        // Outside --reply-allow: the server's shim refuses it.
        let (out, _) = curl(net, &["--segs", R2_END, "--return-path", R2_END], "1k.bin", 10)?;
        ensure!(!out.status.success(), "a refused return path ({R2_END}) still served the file: {out}");
        // A multicast waypoint is malformed for any server: srv6run refuses it before the program runs.
        let (out, _) = curl(net, &["--segs", R2_END, "--return-path", "ff02::1"], "1k.bin", 10)?;
        ensure!(out.status.code() == Some(2), "srv6run did not refuse a multicast return waypoint: {out}");
        ensure!(out.stderr.contains("multicast"), "the refusal does not say why: {out}");
        let text = std::fs::read_to_string(&log)?;
        let refused: Vec<&str> = text.lines().filter(|l| l.contains("\"action\":\"reply-refused\"")).collect();
        ensure!(refused.len() == 1, "the shim logged {} refusals:\n{text}", refused.len());
        ensure!(refused[0].contains("\"refused\":1"), "refusals are not counted:\n{text}");
        ensure!(refused[0].contains("fc00:e2::1"), "the refusal does not name the waypoint: {}", refused[0]);
        ensure!(!text.contains("\"action\":\"reply-path\""), "a refused return path was installed:\n{text}");
        Ok(())
    })
}

#[test]
fn a_return_sid_naming_no_loaded_function_is_refused_by_the_proxy() {
    with_net("offpath", "rpunk", |net| {
        let p1 = Proxy::start_on(net, "p1", "fc00:f1::/80", 5001, "eth0", &["--reply-path"])?;
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        http.add_random_file("1k.bin", 1024)?;
        // Forward through p1's xor; back through a SID of p1's locator whose function (0x99) is not loaded.
        let (out, _) = curl(net, &["--segs", P1_XOR, "--return-path", "fc00:f1::99:0:0"], "1k.bin", 10)?;
        ensure!(!out.status.success(), "a return SID naming no function was accepted: {out}");
        let s = p1.stats(net)?;
        ensure!(s.refused_unknown_function == 1 && s.refused == 1, "p1 did not count the refusal: {s:?}");
        ensure!(p1.stderr().contains("flow refused"), "p1 did not log the refusal:\n{}", p1.stderr());
        Ok(())
    })
}

#[test]
fn on_path_proxies_with_reply_path_keep_working() {
    // Topology proxy-chain: client — p1 — p2 — server (fc00:4::2), everything on the routed path.
    with_net("proxy-chain", "rponpath", |net| {
        let _p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &["--reply-path"])?;
        let _p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &["--reply-path"])?;
        let http = HttpServer::start_under(net, "server", HTTP_PORT, &reply_wrapper(&[])?)?;
        let get = |name: &str, sha: &str| -> Result<()> {
            let out = net.path("got");
            let result = net
                .cmd("client", [srv6run()?])
                .args(["--segs", &format!("{P1_XOR},{P2_XOR}"), "--", "curl", "-sS", "-g", "--noproxy", "*"])
                .args(["--max-time", &T.as_secs().to_string(), "-o"])
                .arg(&out)
                .arg(format!("http://[fc00:4::2]:{HTTP_PORT}/{name}"))
                .timeout(T + Duration::from_secs(10))
                .run()?;
            ensure!(sha256_file(&out)? == sha, "{name} through on-path proxies with --reply-path differs: {result}");
            Ok(())
        };
        let small = http.add_random_file("1m.bin", MIB)?;
        let big = http.add_random_file("10m.bin", 10 * MIB)?;
        let cap = net.capture("p2", "eth0")?;
        get("1m.bin", &small)?;
        // p2 → p1 replies carry [client, p1] even on the routed path.
        let (_, packets) = packets_of(cap)?;
        let to_p1 = packets.iter().filter(|p| p.dst == a(P1_XOR) && p.tcp().is_some_and(|t| t.payload_len > 0));
        ensure!(to_p1.count() > 0, "no reply from p2 to p1's SID on their link");
        get("10m.bin", &big)
    })
}

/// `srv6run ARGS -- curl …` in the client: GET `http://[SERVER]:port/name` into a file; curl's output.
fn get(
    net: &Net,
    args: &[&str],
    port: u16,
    name: &str,
    max_time: u64,
) -> Result<(srv6pipes_tests::Output, std::path::PathBuf)> {
    let out = net.path(&format!("got-{port}-{name}"));
    let url = format!("http://[{SERVER}]:{port}/{name}");
    let result = net
        .cmd("client", [srv6run()?])
        .args(args)
        .args(["--", "curl", "-sS", "-g", "--noproxy", "*", "--max-time", &max_time.to_string(), "-o"])
        .arg(&out)
        .arg(url)
        .timeout(Duration::from_secs(max_time + 10))
        .output()?;
    Ok((result, out))
}

/// GET that must deliver `want` (sha256).
fn get_intact(net: &Net, args: &[&str], port: u16, name: &str, want: &str) -> Result<()> {
    let (out, file) = get(net, args, port, name, T.as_secs())?;
    ensure!(out.status.success(), "GET :{port}/{name} with {args:?} failed: {out}");
    let got = sha256_file(&file)?;
    ensure!(got == want, ":{port}/{name} with {args:?}: sha256 {got}, served {want}");
    Ok(())
}

/// A SYN-ACK from `SERVER:port` to `dst` whose SRH has `segments`, in `packets`.
fn steered_syn_ack(packets: &[Packet], port: u16, dst: &str, segments: &[&str]) -> bool {
    let want: Vec<Ipv6Addr> = segments.iter().map(|s| a(s)).collect();
    packets.iter().any(|p| {
        p.src == a(SERVER)
            && p.dst == a(dst)
            && p.tcp().is_some_and(|t| t.src_port == port && t.flags & 0x12 == 0x12)
            && p.srh_repr().is_some_and(|s| s.segments == want)
    })
}

/// python's http.server from a directory of its own, unmodified; the directory.
fn python_http(net: &Net, port: u16) -> Result<(srv6pipes_tests::Proc, std::path::PathBuf)> {
    let dir = net.path(&format!("py-{port}"));
    std::fs::create_dir_all(&dir)?;
    let proc = net
        .cmd("server", ["python3", "-m", "http.server", &port.to_string(), "--bind", "::", "--directory"])
        .arg(&dir)
        .spawn()?;
    net.wait_for_tcp_port("server", port, FAIL_T)?;
    Ok((proc, dir))
}

/// The static busybox's httpd from a directory of its own; the directory.
fn busybox_http(net: &Net, port: u16) -> Result<(srv6pipes_tests::Proc, std::path::PathBuf)> {
    let dir = net.path(&format!("bb-{port}"));
    std::fs::create_dir_all(&dir)?;
    let proc = net.cmd("server", ["busybox", "httpd", "-f", "-p", &port.to_string(), "-h"]).arg(&dir).spawn()?;
    net.wait_for_tcp_port("server", port, FAIL_T)?;
    Ok((proc, dir))
}

const PY_PORT: u16 = 8090;
const BB_PORT: u16 = 8091;
const NC_PORT: u16 = 8092;

#[test]
fn unmodified_and_static_servers_reply_through_the_chain() {
    with_net("offpath", "rpsteer", |net| {
        let (p1, p2) = proxies(net)?;
        let mut steer = steering_server(net)?;
        let (_py, py_dir) = python_http(net, PY_PORT)?;
        let (_bb, bb_dir) = busybox_http(net, BB_PORT)?;
        let _sink = UploadSink::start(net, "server", UPLOAD_PORT)?;
        let small = random_file(&py_dir.join("1m.bin"), MIB)?;
        let big = random_file(&py_dir.join("10m.bin"), 10 * MIB)?;
        std::fs::copy(py_dir.join("10m.bin"), bb_dir.join("10m.bin"))?;
        let segs = format!("{P1_XOR},{P2_XOR}");
        let chain = ["--segs", segs.as_str()];

        // 1 MiB captured on both proxies' links: the SYN-ACK and the data visit p2, then p1.
        let (cap1, cap2) = (net.capture("p1", "eth0")?, net.capture("p2", "eth0")?);
        get_intact(net, &chain, PY_PORT, "1m.bin", &small)?;
        let (pcap2, on_p2) = packets_of(cap2)?;
        let (pcap1, on_p1) = packets_of(cap1)?;
        ensure!(steered_syn_ack(&on_p2, PY_PORT, P2_XOR, &[CLIENT, P1_XOR, P2_XOR]), "no steered SYN-ACK at p2");
        ensure!(steered_syn_ack(&on_p1, PY_PORT, P1_XOR, &[CLIENT, P1_XOR]), "no steered SYN-ACK from p2 at p1");
        assert_reply_srh(&pcap2, &on_p2, PY_PORT, P2_XOR, &[CLIENT, P1_XOR, P2_XOR], "p2's link")?;
        assert_reply_srh(&pcap1, &on_p1, PY_PORT, P1_XOR, &[CLIENT, P1_XOR], "p1's link")?;

        // 10 MiB each way: python down, the python sink up; the static busybox down, its nc up.
        get_intact(net, &chain, PY_PORT, "10m.bin", &big)?;
        let up = net.path("upload.bin");
        let sha = random_file(&up, 10 * MIB)?;
        let out = net
            .cmd("client", [srv6run()?])
            .args(chain)
            .args(["--", "curl", "-sS", "-g", "--noproxy", "*", "--max-time", &T.as_secs().to_string(), "-T"])
            .arg(&up)
            .arg(format!("http://[{SERVER}]:{UPLOAD_PORT}/up"))
            .timeout(T + Duration::from_secs(10))
            .run()?;
        ensure!(out.stdout.trim() == format!("{sha} {}", 10 * MIB), "the python sink received something else: {out}");
        get_intact(net, &chain, BB_PORT, "10m.bin", &big)?;
        let got = net.path("nc.got");
        let nc = net
            .cmd("server", ["sh", "-c", &format!("exec busybox nc -l -p {NC_PORT} </dev/null >{}", got.display())])
            .spawn()?;
        net.wait_for_tcp_port("server", NC_PORT, FAIL_T)?;
        net.cmd("client", [srv6run()?])
            .args(chain)
            .args(["--", "socat", "-u"])
            .arg(&up)
            .arg(format!("TCP6:[{SERVER}]:{NC_PORT}"))
            .timeout(T)
            .run()?;
        let out = nc.wait(T)?;
        ensure!(sha256_file(&got)? == sha, "busybox nc received something else: {out}");

        // Five flows steered (the counters are read every second), none refused or evicted.
        wait_until("the server's counters to show five flows", FAIL_T, || Ok(steer.counter("stored")? >= 5))?;
        let c = steer.counters()?;
        ensure!(c["refused_locator"] == 0 && c["evicted"] == 0 && c["err_store"] == 0, "server: {c}");
        for p in [&p1, &p2] {
            let s = p.stats(net)?;
            ensure!(s.refused == 0, "{} refused flows: {s:?}", p.host());
        }
        Ok(())
    })
}

#[test]
fn unsteered_clients_and_two_chains_of_one_prefix_work_at_once() {
    with_net("offpath", "rptwo", |net| {
        let (_p1, _p2) = proxies(net)?;
        let _steer = steering_server(net)?;
        let (_py, dir) = python_http(net, PY_PORT)?;
        let sha = random_file(&dir.join("10m.bin"), 10 * MIB)?;
        let long = format!("{P1_XOR},{P2_XOR}");
        let url = format!("http://[{SERVER}]:{PY_PORT}/10m.bin");
        // Three clients of fc00:1::/64 at once: through p1 and p2 (xor twice), through p1 alone (copy), and no
        // SRH at all.
        let mut running = Vec::new();
        for (i, args) in [vec!["--segs", long.as_str()], vec!["--segs", P1_COPY], vec![]].into_iter().enumerate() {
            let file = net.path(&format!("two-{i}"));
            let mut cmd = if args.is_empty() {
                net.cmd("client", ["curl"])
            } else {
                net.cmd("client", [srv6run()?]).args(&args).arg("--").arg("curl")
            };
            cmd = cmd
                .args([
                    "-sS",
                    "-g",
                    "--noproxy",
                    "*",
                    "--limit-rate",
                    "5M",
                    "--max-time",
                    &T.as_secs().to_string(),
                    "-o",
                ])
                .arg(&file)
                .arg(&url);
            running.push((args, file, cmd.spawn()?));
        }
        for (args, file, proc) in running {
            let out = proc.wait(T + Duration::from_secs(10))?;
            ensure!(out.status.success(), "client {args:?} failed: {out}");
            ensure!(sha256_file(&file)? == sha, "client {args:?}: the download differs");
        }
        Ok(())
    })
}

#[test]
fn a_lost_syn_ack_is_resent_steered_and_a_refusal_resets_through_the_chain() {
    with_net("offpath", "rplost", |net| {
        let (_p1, _p2) = proxies(net)?;
        let mut steer = steering_server(net)?;
        let (_py, dir) = python_http(net, PY_PORT)?;
        let sha = random_file(&dir.join("1m.bin"), MIB)?;
        // r drops the server's first SYN-ACK (only the first: 1 per hour, burst 1).
        let rules = net.path("drop-synack.nft");
        std::fs::write(
            &rules,
            "table inet dropsa {\n chain fw {\n  type filter hook forward priority 0; policy accept;\n  \
             iifname \"eth1\" tcp flags & (syn | ack) == syn | ack limit rate 1/hour burst 1 packets counter drop\n }\n}\n",
        )?;
        net.cmd("r", ["nft", "-f"]).arg(&rules).run()?;
        let segs = format!("{P1_XOR},{P2_XOR}");
        let cap2 = net.capture("p2", "eth0")?;
        get_intact(net, &["--segs", &segs], PY_PORT, "1m.bin", &sha)?;
        let (_, on_p2) = packets_of(cap2)?;
        let dropped = net.run("r", ["nft", "list", "table", "inet", "dropsa"])?.stdout;
        ensure!(dropped.contains("packets 1 "), "r did not drop the first SYN-ACK: {dropped}");
        ensure!(
            steered_syn_ack(&on_p2, PY_PORT, P2_XOR, &[CLIENT, P1_XOR, P2_XOR]),
            "the resent SYN-ACK is not steered"
        );

        // Nothing listens on port 9: the server's RST goes back through p2 and p1, the client sees it at once.
        let cap2 = net.capture("p2", "eth0")?;
        let started = std::time::Instant::now();
        let (out, _) = get(net, &["--segs", &segs], 9, "x", FAIL_T.as_secs())?;
        let took = started.elapsed();
        let (_, on_p2) = packets_of(cap2)?;
        ensure!(!out.status.success(), "a refused connection succeeded: {out}");
        // Bound for a loaded CI machine; without the steered RST the client waited for curl's --max-time.
        ensure!(took < Duration::from_secs(10), "the refusal took {took:?} to reach the client: {out}");
        let rst = on_p2.iter().any(|p| {
            p.src == a(SERVER) && p.dst == a(P2_XOR) && p.tcp().is_some_and(|t| t.src_port == 9 && t.flags & 0x04 != 0)
        });
        ensure!(rst, "the server's RST did not go to p2 with the return SRH");
        wait_until("the server's counters to show the RST", FAIL_T, || Ok(steer.counter("deleted_rst")? >= 1))?;
        Ok(())
    })
}

#[test]
fn a_client_cannot_send_the_replies_to_a_host_its_syn_did_not_visit() {
    with_net("offpath", "rpvictim", |net| {
        let mut steer = steering_server(net)?;
        let (_py, dir) = python_http(net, PY_PORT)?;
        let sha = random_file(&dir.join("1m.bin"), MIB)?;
        // Forward through r2's End SID, the return path naming p2 (the victim): refused, replies routed.
        let cap = net.capture("p2", "eth0")?;
        get_intact(net, &["--segs", R2_END, "--return-path", "fc00:b::2"], PY_PORT, "1m.bin", &sha)?;
        let (_, on_p2) = packets_of(cap)?;
        let from_server = on_p2.iter().filter(|p| p.src == a(SERVER)).count();
        ensure!(from_server == 0, "the victim received {from_server} packets of the flow");
        wait_until("the refusal to be counted", FAIL_T, || Ok(steer.counter("refused_locator")? == 1))?;
        wait_until("the refusal to be logged", FAIL_T, || Ok(steer.stderr().contains("return paths refused")))?;
        // A waypoint the SYN did visit is honoured; --reply-allow would widen the check.
        let cap = net.capture("r2", "eth0")?;
        get_intact(net, &["--segs", R2_END], PY_PORT, "1m.bin", &sha)?;
        let (_, on_r2) = packets_of(cap)?;
        ensure!(
            on_r2.iter().any(|p| p.src == a(SERVER) && p.tcp().is_some_and(|t| t.payload_len > 0)),
            "the replies did not visit r2"
        );
        Ok(())
    })
}

#[test]
fn ten_thousand_short_flows_leave_only_live_flows_in_the_table() {
    with_net("offpath", "rpmany", |net| {
        let mut steer = steering_server(net)?;
        // An echo-and-close server; a client opening 10 000 connections with an SRH through r2 and TLV [r2].
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/short_flows.py");
        let _srv = net.cmd("server", ["python3"]).arg(&script).args(["serve", "9000"]).spawn()?;
        net.wait_for_tcp_port("server", 9000, FAIL_T)?;
        let out = net
            .cmd("client", ["python3"])
            .arg(&script)
            .args(["connect", SERVER, "9000", R2_END, "10000"])
            .timeout(Duration::from_secs(300))
            .run()?;
        ensure!(out.stdout.trim() == "10000", "not every short flow completed: {out}");
        wait_until("the table to hold no ended flow", FAIL_T, || {
            let c = steer.counters()?;
            Ok(c["stored"].as_u64() >= Some(10_000) && c["present"] == 0)
        })?;
        let c = steer.counters()?;
        ensure!(
            c["evicted"] == 0
                && c["deleted_fin"].as_u64().unwrap_or(0) + c["deleted_rst"].as_u64().unwrap_or(0) >= 10_000,
            "{c}"
        );
        Ok(())
    })
}
