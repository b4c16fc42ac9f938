//! The return path, honoured (issue 8): topology `offpath` (client — r — server, with p1, p2 and the End
//! router r2 each hanging off r by their own link). Nothing but an SRH brings a packet to p1, p2 or r2, so
//! captures on their links show which replies followed the return-path TLV.
//!
//! * The server runs under `srv6run --reply-path` (nginx, the python upload sink): its accepted
//!   connections send with the SRH of their SYN's TLV.
//! * The proxies run with `--reply-path`: the client-facing socket sends with the waypoints that follow the
//!   proxy's return SID, the last proxy passes the TLV to the server, the MSS is clamped.
//! * The kernel sends a SYN-ACK before `accept()` returns, so it cannot carry a per-flow SRH: where a proxy
//!   is off the routed path back, its outbound connect only completes if the SYN-ACK reaches it. The chained
//!   tests give the replying hosts (server, p2) a static SYN-ACK route ([`steer_syn_acks`]), as
//!   `srv6pipes-proxy(8)` documents.
//! * The last test runs `--reply-path` on the on-path chain (`proxy-chain`), which must keep working.

use std::net::Ipv6Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use srv6pipes_capture::{read_pcap, Packet};
use srv6pipes_tests::http::{random_file, sha256_file, HttpServer, UploadSink};
use srv6pipes_tests::proxy::Proxy;
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

/// SYN-ACKs that `host` sends to the client's prefix go through `via` (any address of the previous proxy's
/// locator), with an SRH inserted by a route: nftables marks them, an `ip rule` picks the route.
fn steer_syn_acks(net: &Net, host: &str, via: &str, gateway: &str) -> Result<()> {
    let rules = net.path(&format!("synack-{host}.nft"));
    std::fs::write(
        &rules,
        "table ip6 synack {\n chain out {\n  type route hook output priority mangle; policy accept;\n  \
         ip6 daddr fc00:1::/64 tcp flags & (syn | ack) == syn | ack meta mark set 0x20\n }\n}\n",
    )?;
    net.cmd(host, ["nft", "-f"]).arg(&rules).run()?;
    net.run(host, ["ip", "-6", "rule", "add", "fwmark", "0x20", "lookup", "200", "pref", "50"])?;
    let route = ["fc00:1::/64", "encap", "seg6", "mode", "inline", "segs", via, "via", gateway, "dev", "eth0"];
    net.cmd(host, ["ip", "-6", "route", "add"]).args(route).args(["table", "200"]).run()?;
    Ok(())
}

/// Both proxies with `--reply-path` (ingress: their one link), SYN-ACKs of the server and of p2 steered.
fn proxies(net: &Net) -> Result<(Proxy, Proxy)> {
    let p1 = Proxy::start_on(net, "p1", "fc00:f1::/80", 5001, "eth0", &["--reply-path"])?;
    let p2 = Proxy::start_on(net, "p2", "fc00:f2::/80", 5002, "eth0", &["--reply-path"])?;
    steer_syn_acks(net, "server", P2_COPY, "fc00:3::1")?;
    steer_syn_acks(net, "p2", P1_COPY, "fc00:b::1")?;
    Ok((p1, p2))
}

/// `srv6run ARGS -- curl …` in the client: GET `name` into a file; the output of curl (which may fail).
fn curl(
    net: &Net,
    srv6run_args: &[&str],
    name: &str,
    max_time: u64,
) -> Result<(srv6pipes_tests::Output, std::path::PathBuf)> {
    let out = net.path(&format!("got-{name}"));
    let url = format!("http://[{SERVER}]:{HTTP_PORT}/{name}");
    let result = net
        .cmd("client", [srv6run()?])
        .args(srv6run_args)
        .args(["--", "curl", "-sS", "-g", "--noproxy", "*", "--max-time", &max_time.to_string(), "-o"])
        .arg(&out)
        .arg(url)
        .timeout(Duration::from_secs(max_time + 10))
        .output()?;
    Ok((result, out))
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

/// Packets from the server's HTTP port (the downstream direction) in a capture.
fn downstream(packets: &[Packet]) -> Vec<&Packet> {
    packets.iter().filter(|p| p.src == a(SERVER) && p.tcp().is_some_and(|t| t.src_port == HTTP_PORT)).collect()
}

/// Stop a capture after the transfer's packets are in, and decode it.
fn packets_of(cap: srv6pipes_tests::Capture) -> Result<(std::path::PathBuf, Vec<Packet>)> {
    std::thread::sleep(Duration::from_millis(300));
    let pcap = cap.stop()?;
    let packets = read_pcap(&pcap)?;
    Ok((pcap, packets))
}

/// Every downstream data packet of `packets` sent to `dst` carries an SRH with `segments` (SRH order), and
/// there are some; scapy decodes the same segments for every one of them.
fn assert_reply_srh(pcap: &Path, packets: &[Packet], dst: &str, segments: &[&str], at: &str) -> Result<()> {
    let want: Vec<Ipv6Addr> = segments.iter().map(|s| a(s)).collect();
    let data: Vec<&Packet> = downstream(packets)
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
        assert_reply_srh(&pcap, &packets, R2_END, &[CLIENT, R2_END], "r2")?;
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
        ensure!(downstream(&packets).is_empty(), "replies crossed r2 without --reply-path");
        Ok(())
    })
}

#[test]
fn off_path_proxies_xor_both_ways_with_the_return_srh() {
    with_net("offpath", "rpxor", |net| {
        let (p1, p2) = proxies(net)?;
        let wrapper = reply_wrapper(&[])?;
        let http = HttpServer::start_under(net, "server", HTTP_PORT, &wrapper)?;
        let _sink = UploadSink::start_under(net, "server", UPLOAD_PORT, &wrapper)?;
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
        assert_reply_srh(&pcap2, &on_p2, P2_XOR, &[CLIENT, P1_XOR, P2_XOR], "p2's link, from the server")?;
        assert_reply_srh(&pcap1, &on_p1, P1_XOR, &[CLIENT, P1_XOR], "p1's link, from p2")?;
        let last: Vec<&Packet> = downstream(&on_p1).into_iter().filter(|p| p.dst == a(CLIENT)).collect();
        ensure!(!last.is_empty() && last.iter().all(|p| p.srh.is_none()), "p1 → client: missing, or with an SRH");
        for p in [&p1, &p2] {
            let s = p.stats(net)?;
            ensure!(s.refused == 0, "{} refused flows: {s:?}", p.host());
        }
        Ok(())
    })
}

#[test]
fn off_path_proxies_without_the_server_shim_stall() {
    with_net("offpath", "rpnoshim", |net| {
        let (_p1, _p2) = proxies(net)?;
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        http.add_random_file("1m.bin", MIB)?;
        let cap2 = net.capture("p2", "eth0")?;
        let segs = format!("{P1_XOR},{P2_XOR}");
        let (out, _) = curl(net, &["--segs", &segs], "1m.bin", FAIL_T.as_secs())?;
        // The documented failure: the server answers the client directly, past p2 and p1; the client's
        // connection (terminated by p1) never gets the response, curl times out.
        ensure!(!out.status.success(), "the download succeeded without the server side: {out}");
        let (_, on_p2) = packets_of(cap2)?;
        let data = downstream(&on_p2).into_iter().filter(|p| p.tcp().is_some_and(|t| t.payload_len > 0)).count();
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
        let http = HttpServer::start_under(net, "server", HTTP_PORT, &reply_wrapper(&[])?)?;
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
        let (_p1, _p2) = proxies(net)?;
        // Lower the MTU of the server's route and of r's route to the client: 10 MiB must still cross.
        net.run(
            "server",
            ["ip", "-6", "route", "change", "default", "via", "fc00:3::1", "dev", "eth0", "mtu", "1400"],
        )?;
        net.run("r", ["ip", "-6", "route", "replace", "fc00:1::/64", "dev", "eth0", "mtu", "1400"])?;
        let wrapper = reply_wrapper(&[])?;
        let http = HttpServer::start_under(net, "server", HTTP_PORT, &wrapper)?;
        let _sink = UploadSink::start_under(net, "server", UPLOAD_PORT, &wrapper)?;
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
        assert_reply_srh(&pcap, &packets, R2_END, &[CLIENT, P1_XOR, R2_END], "r2's link")?;
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
        // Outside --reply-allow; then a multicast waypoint (malformed for any server).
        for back in [R2_END, "ff02::1"] {
            let (out, _) = curl(net, &["--segs", R2_END, "--return-path", back], "1k.bin", 10)?;
            ensure!(!out.status.success(), "a refused return path ({back}) still served the file: {out}");
        }
        let text = std::fs::read_to_string(&log)?;
        let refused: Vec<&str> = text.lines().filter(|l| l.contains("\"action\":\"reply-refused\"")).collect();
        ensure!(refused.len() >= 2, "the shim logged {} refusals:\n{text}", refused.len());
        ensure!(refused.iter().any(|l| l.contains("\"refused\":2")), "refusals are not counted:\n{text}");
        ensure!(refused[0].contains("fc00:e2::1"), "the refusal does not name the waypoint: {}", refused[0]);
        ensure!(refused.iter().any(|l| l.contains("multicast")), "the multicast waypoint was not refused:\n{text}");
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
