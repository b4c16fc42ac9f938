//! Access control of srv6pipes-proxy (issue 15, part 5): allowed clients and next segments, the SRH HMAC
//! (`srv6run --hmac-key`, the proxy's `--require-hmac`), and the edge recipe of srv6pipes-proxy(8) on an
//! access router. Topology `proxy-access` (client — acc — p1 — p2 — server); SIDs as in tests/proxy.rs:
//! function 1 is `copy`, 2 is `xor`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use srv6pipes_api::control::Stats;
use srv6pipes_tests::http::{sha256_file, HttpServer};
use srv6pipes_tests::proxy::Proxy;
use srv6pipes_tests::{binaries, with_net, Net, Output};

const HTTP_PORT: u16 = 8080;
const SERVER: &str = "fc00:4::2";
const COPY_CHAIN: &str = "fc00:f1::1:0:0,fc00:f2::1:0:0";
const XOR_CHAIN: &str = "fc00:f1::2:0:5a,fc00:f2::2:0:5a";
const T: Duration = Duration::from_secs(60);
/// Bound on a refused client seeing its reset (curl waits 10 s at most).
const PROMPT: Duration = Duration::from_secs(8);
const MIB: u64 = 1 << 20;

/// `srv6run --segs SEGS [OPTS] -- curl URL` in the client: download `name` into a file, 10 s at most.
fn curl(net: &Net, segs: &str, opts: &[&str], name: &str) -> Result<(Output, PathBuf)> {
    let out = net.path("download");
    let _ = std::fs::remove_file(&out);
    let url = format!("http://[{SERVER}]:{HTTP_PORT}/{name}");
    let o = net
        .cmd("client", [binaries::path("srv6run")?])
        .args(["--segs", segs, "--fail", "closed"])
        .args(opts)
        .arg("--")
        .args(["curl", "-sS", "-g", "--noproxy", "*", "--max-time", "10", "-o"])
        .arg(&out)
        .arg(url)
        .timeout(T)
        .output()?;
    Ok((o, out))
}

/// The download through `segs` is served and its bytes are the server's.
fn served(net: &Net, segs: &str, opts: &[&str], sha: &str) -> Result<()> {
    let (o, file) = curl(net, segs, opts, "1m.bin")?;
    ensure!(o.status.success(), "not served through {segs} {opts:?}: {o}");
    let got = sha256_file(&file)?;
    ensure!(got == sha, "through {segs} {opts:?}: sha256 {got}, served {sha}");
    Ok(())
}

/// The flow through `segs` is reset promptly (curl: 7 "couldn't connect" when the reset beats its connect
/// check, 56 "connection reset"; a silent drop would be 28, a timeout) and `counter` of p1 went up by one.
fn refused(net: &Net, p1: &Proxy, segs: &str, opts: &[&str], counter: fn(&Stats) -> u64, why: &str) -> Result<()> {
    let before = p1.stats(net)?;
    let started = Instant::now();
    let (o, _) = curl(net, segs, opts, "1m.bin")?;
    let took = started.elapsed();
    ensure!(matches!(o.status.code(), Some(7 | 56)), "{why}: not reset: {o}");
    ensure!(took < PROMPT, "{why}: the refusal took {took:?}");
    let after = p1.stats(net)?;
    ensure!(
        counter(&after) == counter(&before) + 1 && after.refused == before.refused + 1,
        "{why}: not counted once by p1: before {before:?}, after {after:?}"
    );
    ensure!(after.accepted == before.accepted, "{why}: p1 accepted the flow: {after:?}");
    Ok(())
}

#[test]
fn clients_and_next_segments_outside_the_allowed_prefixes_are_reset_and_counted() {
    with_net("proxy-access", "paacl", |net| {
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        let sha = http.add_random_file("1m.bin", MIB)?;
        // Proxy-wide: the client's prefix, towards p2 only; xor's SIDs: only clients of fc00:9::/64.
        let conf = net.path("p1.toml");
        std::fs::write(
            &conf,
            "allow_clients = [\"fc00:1::/64\"]\nallow_next = [\"fc00:f2::/80\"]\n\n\
             [[access]]\nsids = \"fc00:f1::2:0:0/96\"\nallow_clients = [\"fc00:9::/64\"]\n",
        )?;
        let conf = conf.display().to_string();
        let p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &["-c", &conf])?;
        let p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &["--allow-clients", "fc00:1::/64"])?;
        served(net, COPY_CHAIN, &[], &sha)?;
        refused(net, &p1, XOR_CHAIN, &[], |s| s.refused_client, "client outside xor's prefixes")?;
        // p1's next leg would go straight to the server, outside fc00:f2::/80.
        refused(net, &p1, "fc00:f1::1:0:0", &[], |s| s.refused_next, "destination outside the allowed")?;
        let log = p1.stderr();
        ensure!(log.contains("client fc00:1::1 is not allowed to use SID fc00:f1::2:0:5a"), "no reason logged:\n{log}");
        ensure!(log.contains("next segment fc00:4::2 is not allowed after SID fc00:f1::1:0:0"), "{log}");
        ensure!(p2.stats(net)?.refused == 0, "p2 refused a flow: {:?}", p2.stats(net)?);
        // The proxy-wide list given as a flag: p2 restarted for other clients refuses this one.
        p2.stop()?;
        let p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &["--allow-clients", "fc00:9::/64"])?;
        let (o, _) = curl(net, COPY_CHAIN, &[], "1m.bin")?;
        ensure!(!o.status.success(), "p2 served a client outside its prefixes: {o}");
        let s2 = p2.stats(net)?;
        ensure!(s2.refused_client == 1 && s2.accepted == 0, "p2 did not count it: {s2:?}");
        Ok(())
    });
}

#[test]
fn hmac_missing_wrong_or_tampered_is_reset_and_the_right_key_is_served() {
    with_net("proxy-access", "pahmac", |net| {
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        let sha = http.add_random_file("1m.bin", MIB)?;
        // Key 7 is shared; the client's key 8 has another secret than the proxy's; key 9 is the client's only.
        let client_keys = net.path("client.keys");
        std::fs::write(&client_keys, "7 right-secret\n8 client-secret\n9 unknown-to-p1\n")?;
        let proxy_keys = net.path("p1.keys");
        std::fs::write(&proxy_keys, "# KEYID SECRET\n7 right-secret\n8 proxy-secret\n")?;
        let p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &["--require-hmac", &proxy_keys.display().to_string()])?;
        let _p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &[])?;
        // The proxy verifies; the kernel must not drop what it cannot verify itself (no `ip sr hmac` keys).
        for dev in ["eth0", "eth1"] {
            let v = net.run("p1", ["sysctl", "-n", &format!("net.ipv6.conf.{dev}.seg6_require_hmac")])?;
            ensure!(v.stdout.trim() == "-1", "p1 {dev}: seg6_require_hmac {}", v.stdout.trim());
        }
        let key = |id: u32| format!("{id}:{}", client_keys.display());
        // srv6run configures the client namespace's keys from the file (ip sr hmac set).
        served(net, COPY_CHAIN, &["--hmac-key", &key(7)], &sha)?;
        let shown = net.run("client", ["ip", "sr", "hmac", "show"])?.stdout;
        ensure!(shown.contains("hmac 7 algo sha256"), "key 7 not configured in the client: {shown}");
        refused(net, &p1, COPY_CHAIN, &[], |s| s.refused_hmac_missing, "no HMAC")?;
        refused(net, &p1, COPY_CHAIN, &["--hmac-key", &key(8)], |s| s.refused_hmac_wrong, "wrong secret")?;
        refused(net, &p1, COPY_CHAIN, &["--hmac-key", &key(9)], |s| s.refused_hmac_key, "unknown key id")?;
        // Tampered in flight: the client's own output hook rewrites p2's SID (segments[1], bytes 64–79 of
        // the packet after the IPv6 header's 40; byte 75 is the low byte of its function) from copy to xor
        // after the kernel computed the HMAC.
        let tamper = net.path("tamper.nft");
        std::fs::write(
            &tamper,
            "table ip6 tamper {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    \
             rt type 4 tcp dport 8080 @nh,600,8 set 0x02 counter\n  }\n}\n",
        )?;
        net.cmd("client", ["nft", "-f"]).arg(&tamper).run()?;
        let r = refused(net, &p1, COPY_CHAIN, &["--hmac-key", &key(7)], |s| s.refused_hmac_wrong, "tampered");
        let rules = net.run("client", ["nft", "list", "table", "ip6", "tamper"])?.stdout;
        net.run("client", ["nft", "delete", "table", "ip6", "tamper"])?;
        r?;
        ensure!(!rules.contains("packets 0 "), "the tamper rule matched nothing:\n{rules}");
        let log = p1.stderr();
        for reason in ["carries no HMAC TLV", "key id 9 is not in the key file", "with key id 8 does not verify"] {
            ensure!(log.contains(reason), "p1 did not log {reason:?}:\n{log}");
        }
        // Untampered again: served, p2 (no key, kernel default) accepted the SRH p1 re-attached unsigned.
        served(net, COPY_CHAIN, &["--hmac-key", &key(7)], &sha)?;
        // Stopped, p1 gives its devices back the kernel's HMAC check it found.
        p1.stop()?;
        for dev in ["eth0", "eth1"] {
            let v = net.run("p1", ["sysctl", "-n", &format!("net.ipv6.conf.{dev}.seg6_require_hmac")])?;
            ensure!(v.stdout.trim() == "0", "p1 {dev}: seg6_require_hmac {} after stop", v.stdout.trim());
        }
        Ok(())
    });
}

/// The edge recipe's nft ruleset, as srv6pipes-proxy(8) prints it (the literal block naming `srv6edge`).
fn edge_recipe() -> Result<String> {
    let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../man/srv6pipes-proxy.8"))?;
    let start = man.find("table ip6 srv6edge").context("no edge recipe in srv6pipes-proxy(8)")?;
    let end = start + man[start..].find("\n.Ed").context("edge recipe block not closed")?;
    // mdoc escapes: `\e` is a backslash.
    Ok(man[start..end].replace("\\e", "\\") + "\n")
}

#[test]
fn access_router_drops_srhs_whose_first_segment_is_not_a_binding_sid() {
    with_net("proxy-access", "paedge", |net| {
        let http = HttpServer::start(net, "server", HTTP_PORT)?;
        let sha = http.add_random_file("1m.bin", MIB)?;
        let p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
        let _p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &[])?;
        // The man page's example: the only known binding SID is copy on p1 (fc00:f1::1:0:0); eth0 faces
        // the clients.
        let file = net.path("edge.nft");
        std::fs::write(&file, edge_recipe()?)?;
        net.cmd("acc", ["nft", "-f"]).arg(&file).run()?;
        served(net, COPY_CHAIN, &[], &sha)?;
        let (o, _) = curl(net, XOR_CHAIN, &[], "1m.bin")?;
        ensure!(o.status.code() == Some(28), "an SRH to xor's SID was not dropped (curl should time out): {o}");
        let rules = net.run("acc", ["nft", "list", "table", "ip6", "srv6edge"])?.stdout;
        ensure!(!rules.contains("packets 0 "), "the drop rule counted nothing:\n{rules}");
        let s1 = p1.stats(net)?;
        ensure!(s1.accepted == 1 && s1.refused == 0, "p1 saw the dropped flow: {s1:?}");
        // Plain traffic (no SRH) still passes the access router.
        let out = net.path("plain");
        net.cmd("client", ["curl", "-sS", "-g", "--noproxy", "*", "--max-time", "10", "-o"])
            .arg(&out)
            .arg(format!("http://[{SERVER}]:{HTTP_PORT}/1m.bin"))
            .timeout(T)
            .run()?;
        ensure!(sha256_file(&out)? == sha, "plain download corrupted");
        Ok(())
    });
}
