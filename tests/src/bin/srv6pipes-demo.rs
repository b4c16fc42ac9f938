//! The SRv6Pipes demo (README's first command): builds network namespaces, runs an unmodified curl under
//! `srv6run` and shows, decoded from captures at each hop, the Segment Routing Header it was given and how
//! the path changes it. Everything it creates is removed when it ends.

use std::net::Ipv6Addr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use libsrv6sock::wire::sid::SidLayout;
use srv6pipes_capture::{read_pcap, tcp_flags as flags, Packet};
use srv6pipes_tests::http::{sha256_file, HttpServer};
use srv6pipes_tests::proxy::Proxy;
use srv6pipes_tests::{binaries, Capture, Net};

const PORT: u16 = 8080;
const FILE: &str = "demo.bin";
const FILE_SIZE: u64 = 1 << 20;
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(10);

/// Function number of the proxy's built-in `xor` (srv6pipes-proxy(8)).
const XOR: u64 = 2;
/// Its argument: key 0x5a, one pass. Two xors with the same key give the bytes back.
const XOR_KEY: u64 = 0x5a;

fn main() {
    if let Err(e) = steering().and_then(|()| chain()) {
        eprintln!("demo failed: {e:#}");
        std::process::exit(1);
    }
}

fn srv6run() -> Result<String> {
    Ok(binaries::path("srv6run")?.display().to_string())
}

/// One line per packet kind: where it was seen and the SRH it carried.
fn describe(what: &str, packets: &[Packet]) {
    let first = |f: &dyn Fn(&Packet) -> bool| packets.iter().find(|p| f(p));
    let syn = first(&|p| p.has_flags(flags::SYN) && !p.has_flags(flags::ACK));
    let data = first(&|p| p.has_payload() && p.srh.is_some());
    println!("  {what}: {} packets captured", packets.len());
    for (kind, p) in [("SYN ", syn), ("data", data)] {
        let Some(p) = p else { continue };
        match p.srh_repr() {
            Some(s) => println!(
                "    {kind} {} -> {}  SRH segments {:?} segments left {}  return-path TLV {:?}",
                p.src,
                p.dst,
                s.segments,
                s.segments_left,
                s.return_path().unwrap_or_default()
            ),
            None => println!("    {kind} {} -> {}  (no SRH)", p.src, p.dst),
        }
    }
}

fn stop(capture: Capture, done: impl Fn(&[Packet]) -> bool) -> Result<Vec<Packet>> {
    // A best-effort wait: the last packets of a flow may still be crossing when curl exits.
    let _ = capture.wait_for("the flow's FIN", SETTLE, done);
    Ok(read_pcap(&capture.stop()?)?)
}

fn steering() -> Result<()> {
    println!("== SRv6 steering of an unmodified curl (topology tests/topologies/steering.toml)");
    println!("   client -- r1 (End) -- r2 (End) -- server, plus a direct client -- server link");
    let net = Net::build("steering", "demo")?;
    let server = HttpServer::start(&net, "server", PORT)?;
    let want = server.add_random_file(FILE, FILE_SIZE)?;
    let service: Ipv6Addr = net.addr("server", "lo")?;
    let (r1, r2) = (net.sid("r1")?, net.sid("r2")?);
    let url = format!("http://[{service}]:{PORT}/{FILE}");
    let segs = format!("{r1},{r2}");

    println!("\n$ srv6run --segs {segs} --explain -- curl {url}");
    let explain = net.run(
        "client",
        [srv6run()?, "--segs".into(), segs.clone(), "--explain".into(), "--".into(), "curl".into(), url.clone()],
    )?;
    print!("{}", explain.stdout);

    for steered in [true, false] {
        let at_r1 = net.capture("r1", "eth0")?;
        let at_r2 = net.capture("r2", "eth0")?;
        let out = net.path("download");
        let curl = ["curl", "-sS", "-g", "--noproxy", "*", "-o", out.to_str().context("path")?, &url].map(String::from);
        let mut argv: Vec<String> =
            if steered { vec![srv6run()?, "--segs".into(), segs.clone(), "--".into()] } else { vec![] };
        argv.extend(curl);
        println!("\n$ {}", argv.join(" ").replace(&srv6run()?, "srv6run"));
        net.cmd("client", argv).timeout(RUN_TIMEOUT).run()?;
        let got = sha256_file(&out)?;
        ensure!(got == want, "downloaded file differs: sha256 {got}, served {want}");
        println!("  downloaded {FILE_SIZE} bytes, sha256 matches the server's file");
        let fin = |p: &[Packet]| p.iter().any(|p| p.has_flags(flags::FIN));
        describe("at r1 (ingress)", &stop(at_r1, fin)?);
        let r2_packets = stop(at_r2, |p| !steered || fin(p))?;
        describe("at r2 (ingress)", &r2_packets);
        if !steered {
            ensure!(r2_packets.iter().all(|p| p.tcp().is_none()), "unsteered traffic should not cross r2");
            println!("  plain curl takes the direct link: r2 saw none of its packets");
        }
    }
    Ok(())
}

/// The first client → server payload bytes in a capture, as tshark shows them (hex).
fn first_payload(pcap: &std::path::Path) -> Result<String> {
    let out = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(pcap)
        .args(["-Y", &format!("tcp.len > 0 && tcp.dstport == {PORT}"), "-T", "fields", "-e", "tcp.payload"])
        .output()
        .context("running tshark")?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().chars().take(32).collect())
}

fn chain() -> Result<()> {
    println!("\n== A chain of bytestream functions (topology tests/topologies/proxy-chain.toml)");
    println!("   client -- p1 (srv6pipes-proxy: xor) -- p2 (srv6pipes-proxy: xor) -- server (nginx)");
    let net = Net::build("proxy-chain", "demochn")?;
    let mut server = HttpServer::start(&net, "server", PORT)?;
    let want = server.add_random_file(FILE, FILE_SIZE)?;
    let p1 = Proxy::start(&net, "p1", "fc00:f1::/80", 5001, &[])?;
    let _p2 = Proxy::start(&net, "p2", "fc00:f2::/80", 5002, &[])?;
    let layout = SidLayout::default();
    let p1_xor = layout.build("fc00:f1::/80".parse()?, XOR, XOR_KEY)?;
    let p2_xor = layout.build("fc00:f2::/80".parse()?, XOR, XOR_KEY)?;
    let service = net.addr("server", "eth0")?;
    let url = format!("http://[{service}]:{PORT}/{FILE}");
    let hops = [("client -> p1", "p1", "eth0"), ("p1 -> p2", "p1", "eth1"), ("p2 -> server", "p2", "eth1")];
    let captures = hops.iter().map(|(_, h, d)| net.capture(h, d)).collect::<Result<Vec<_>>>()?;

    let out = net.path("download");
    let argv = [srv6run()?, "--segs".into(), format!("{p1_xor},{p2_xor}"), "--".into()]
        .into_iter()
        .chain(["curl", "-sS", "-g", "--noproxy", "*", "-o", out.to_str().context("path")?, &url].map(String::from));
    let argv: Vec<String> = argv.collect();
    println!("\n$ {}", argv.join(" ").replace(&srv6run()?, "srv6run"));
    net.cmd("client", argv).timeout(RUN_TIMEOUT).run()?;
    let got = sha256_file(&out)?;
    ensure!(got == want, "downloaded file differs: sha256 {got}, served {want}");
    println!("  downloaded {FILE_SIZE} bytes through xor(0x5a) twice, sha256 matches the server's file");
    for ((what, _, _), capture) in hops.iter().zip(captures) {
        let fin = |p: &[Packet]| p.iter().any(|p| p.has_flags(flags::FIN));
        let _ = capture.wait_for("the flow's FIN", SETTLE, fin);
        let pcap = capture.stop()?;
        describe(what, &read_pcap(&pcap)?);
        println!("    first request bytes: {} (\"GET \" is 47455420, xor 0x5a: 1d1f0e7a)", first_payload(&pcap)?);
    }
    println!("  server's access log (it sees the client's address):\n    {}", server.access_log()?.trim());
    let stats = p1.stats(&net)?;
    println!("  p1 control socket, stats: {stats}");
    println!("\ndone: namespaces, proxies and their datapath rules are removed now");
    Ok(())
}
