//! Paths from DNS, with a real BIND 9 (topology `dns`): named serves path records (`srv6-path(5)`, type
//! 65300) written by `srv6path record`, with one view per client prefix, so that the same name gives
//! students and staff two different chains. `dig` sees the records in generic syntax, `srv6path query`
//! decodes them, and `srv6run --dns-paths curl http://www.example.test/` follows them (captures on the
//! routers' links show the SRH). A name without a record is not steered; a resolver that is down, silent or
//! answering garbage never makes the program hang or crash, and the failure policy decides; when the TTL
//! runs out, the next lookup asks DNS again.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use libsrv6sock::capture::{read_pcap, tcp_flags as flags, Packet};
use serde_json::Value;
use srv6pipes_tests::dns::{zone_file, Bind, View};
use srv6pipes_tests::http::HttpServer;
use srv6pipes_tests::{binaries, with_net, Capture, Net, Output};

const ZONE: &str = "example.test";
const TTL: u32 = 60;
/// TTL of the name `short`, for the expiry test.
const SHORT_TTL: u32 = 2;
const PORT: u16 = 8080;
const FILE: &str = "hello.bin";
/// Bound on one curl run (a real one takes well under a second).
const CURL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on waiting for a flow's last packets to reach a capture after curl exits.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The binding SID r1 owns (topology `dns`), and the proxy function SID it expands into.
const BSID: &str = "fc00:b6::1";
const PROXY_SID: &str = "fc00:e2::1:0:0";
/// Names resolved at once by the multi-threaded program.
const MANY: usize = 12;
/// How long the shim waits for the agent in the failure tests.
const AGENT_TIMEOUT_MS: u64 = 300;

/// The lab: named on the server with the students' and the staff's views.
struct Lab<'a> {
    net: &'a Net,
    bind: Bind,
    _http: HttpServer,
    sha256: String,
    dns: Ipv6Addr,
    service: Ipv6Addr,
    r1: Ipv6Addr,
    r2: Ipv6Addr,
}

/// `srv6path record ARGS…`'s zone line.
fn record_line(args: &[&str]) -> Result<String> {
    let srv6path = binaries::path("srv6path")?;
    let out = srv6pipes_tests::Cmd::new([srv6path]).arg("record").args(args).run()?;
    Ok(out.stdout.trim().to_string())
}

impl<'a> Lab<'a> {
    fn start(net: &'a Net) -> Result<Lab<'a>> {
        let dns = "fc00:5::53".parse()?;
        let service = "fc00:5::1".parse()?;
        let (r1, r2) = (net.sid("r1")?, net.sid("r2")?);
        let students_path = format!("{r1},{r2}");
        let mut students = vec![
            format!("www IN AAAA {service}"),
            record_line(&["www", "--segs", &students_path, "--covers", "fc00:5::/64", "--priority", "10"])?,
            // A lower-priority record for other addresses only: never chosen for www's address.
            record_line(&["www", "--segs", &r2.to_string(), "--covers", "fc00:6::/64", "--priority", "1"])?,
            format!("plain IN AAAA {service}"),
            // A record for other addresses only.
            format!("other IN AAAA {service}"),
            record_line(&["other", "--segs", &students_path, "--covers", "fc00:6::/64"])?,
            format!("short {SHORT_TTL} IN AAAA {service}"),
            record_line(&["short", "--segs", &students_path, "--ttl", &SHORT_TTL.to_string()])?,
            format!("bad IN AAAA {service}"),
            // Version 1, but N = 3 segments announced with room for one only.
            format!("bad IN TYPE65300 \\# 40 0100000A00030000{}{}01", "00".repeat(16), "00".repeat(15)),
        ];
        // A binding SID: r1 expands it into the proxy chain.
        students.push(format!("bsid IN AAAA {service}"));
        students.push(record_line(&["bsid", "--bsid", BSID])?);
        // Names for the multi-threaded program: each with its own path record.
        let many = record_line(&["many", "--segs", &students_path])?;
        for i in 0..MANY {
            students.push(format!("n{i} IN AAAA {service}"));
            students.push(many.replacen("many", &format!("n{i}"), 1));
        }
        let staff = vec![
            format!("www IN AAAA {service}"),
            record_line(&["www", "--segs", &r1.to_string(), "--return-path", "none"])?,
            format!("plain IN AAAA {service}"),
        ];
        let views = [
            View { name: "students", match_clients: "fc00:1::/64;", zone: zone_file(TTL, dns, &students) },
            View { name: "staff", match_clients: "any;", zone: zone_file(TTL, dns, &staff) },
        ];
        let bind = Bind::start(net, "server", dns, ZONE, &views)?;
        for host in ["students", "staff"] {
            net.etc_file(host, "resolv.conf", &format!("nameserver {dns}\noptions timeout:2 attempts:2\n"))?;
        }
        let http = HttpServer::start(net, "server", PORT)?;
        let sha256 = http.add_random_file(FILE, 100_000)?;
        Ok(Lab { net, bind, _http: http, sha256, dns, service, r1, r2 })
    }

    fn dig(&self, host: &str, name: &str, rr_type: &str) -> Result<String> {
        let server = format!("@{}", self.dns);
        let fqdn = format!("{name}.{ZONE}");
        let out = self.net.cmd(host, ["dig", "+short", "+time=2", "+tries=1", &server, &fqdn, rr_type]).run()?;
        Ok(out.stdout.trim().to_string())
    }

    /// `srv6path query --json` from `host`; its exit code and JSON.
    fn query(&self, host: &str, name: &str) -> Result<(i32, Value)> {
        let srv6path = binaries::path("srv6path")?;
        let fqdn = format!("{name}.{ZONE}");
        let out = self
            .net
            .cmd(host, [srv6path])
            .args(["query", "--json", "--server", &self.dns.to_string(), &fqdn])
            .output()?;
        let json = serde_json::from_str(&out.stdout)
            .with_context(|| format!("srv6path query output is not JSON: {}\n{}", out.stdout, out.stderr))?;
        Ok((out.status.code().unwrap_or(-1), json))
    }
}

impl Lab<'_> {
    /// `srv6run ARGS -- curl http://NAME.example.test:8080/hello.bin` in `host` with `env`; the output, the
    /// shim's decision log (JSON lines) and how long it took. The download is checked when curl succeeds.
    fn curl(
        &self,
        host: &str,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(Output, Vec<Value>, Duration)> {
        let srv6run = binaries::path("srv6run")?;
        let (log, out) = (self.net.path("shim.log"), self.net.path("download"));
        let url = format!("http://{name}.{ZONE}:{PORT}/{FILE}");
        let mut cmd = self.net.cmd(host, [srv6run]).args(args).arg("--log").arg(&log).arg("--");
        cmd = cmd.args(["curl", "-sS", "--noproxy", "*", "--max-time", "10", "-o"]).arg(&out).arg(url);
        for (k, v) in env {
            cmd = cmd.env(*k, *v);
        }
        let started = Instant::now();
        let output = cmd.timeout(CURL_TIMEOUT).output()?;
        let took = started.elapsed();
        if output.status.success() {
            let got = srv6pipes_tests::http::sha256_file(&out)?;
            ensure!(got == self.sha256, "downloaded sha256 {got}, served {}", self.sha256);
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<Value>, _>>()
            .with_context(|| format!("decision log is not JSON lines:\n{text}"))?;
        Ok((output, lines, took))
    }

    /// The client's forward packets of the HTTP flow in a capture.
    fn forward<'p>(&self, packets: &'p [Packet], src: Ipv6Addr) -> Vec<&'p Packet> {
        packets.iter().filter(|p| p.src == src && p.tcp().is_some_and(|t| t.dst_port == PORT)).collect()
    }

    fn settle(&self, c: &Capture, src: Ipv6Addr) -> Result<()> {
        c.wait_for("the client's FIN", SETTLE_TIMEOUT, |ps| {
            self.forward(ps, src).iter().any(|p| p.has_flags(flags::FIN))
        })
    }
}

/// The decision-log events of `kind` (`connect`, `dns-paths`).
fn events<'v>(log: &'v [Value], kind: &str) -> Vec<&'v Value> {
    log.iter().filter(|l| l["event"] == kind).collect()
}

fn segs_of(v: &Value) -> Vec<String> {
    v["segs"].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

#[test]
fn bind_serves_path_records_per_client_prefix() {
    with_net("dns", "dnsv", |net| {
        let lab = Lab::start(net)?;
        // dig shows the records, in RFC 3597 generic syntax only.
        let students = lab.dig("students", "www", "TYPE65300")?;
        let staff = lab.dig("staff", "www", "TYPE65300")?;
        ensure!(students.lines().count() == 2 && students.contains("\\# 56 "), "students' dig: {students}");
        ensure!(staff.lines().count() == 1 && staff.starts_with("\\# 40 "), "staff's dig: {staff}");
        ensure!(lab.dig("students", "www", "AAAA")? == lab.service.to_string());

        // srv6path decodes them, and picks the record covering the address.
        let (code, s) = lab.query("students", "www")?;
        ensure!(code == 0, "srv6path query exit {code}: {s}");
        let addr = &s["addrs"][0];
        ensure!(addr["addr"] == lab.service.to_string(), "students' answer: {s}");
        ensure!(segs_of(&addr["path"]) == [lab.r1.to_string(), lab.r2.to_string()], "students' path: {s}");
        ensure!(addr["path"]["return_path"] == serde_json::json!([lab.r2.to_string(), lab.r1.to_string()]));
        ensure!(s["records"].as_array().map(Vec::len) == Some(2), "students' records: {s}");
        ensure!(s["path_ttl"].as_u64().is_some_and(|t| t > 0 && t <= TTL as u64), "TTL: {s}");

        let (code, f) = lab.query("staff", "www")?;
        ensure!(code == 0, "srv6path query exit {code}: {f}");
        ensure!(segs_of(&f["addrs"][0]["path"]) == [lab.r1.to_string()], "staff's path: {f}");
        ensure!(f["addrs"][0]["path"]["return_path"] == serde_json::json!([]), "staff's return path: {f}");

        // A name without a path record: its address, no path.
        let (code, p) = lab.query("students", "plain")?;
        ensure!(code == 0 && p["records"] == serde_json::json!([]) && p["addrs"][0]["path"].is_null(), "plain: {p}");

        // A malformed record: reported with what is wrong and where, exit 1, the address gets no path.
        let (code, b) = lab.query("students", "bad")?;
        let err = b["records"][0]["error"].as_str().unwrap_or_default();
        ensure!(code == 1 && err.contains("needed"), "bad record: exit {code}, {b}");
        ensure!(b["addrs"][0]["path"].is_null(), "a bad record steers nothing: {b}");
        ensure!(!lab.bind.log().contains("not loaded due to errors"), "named refused a zone:\n{}", lab.bind.log());
        Ok(())
    });
}

#[test]
fn curl_follows_the_chain_dns_gives_each_client_prefix() {
    with_net("dns", "dnsc", |net| {
        let lab = Lab::start(net)?;
        let students = net.addr("students", "eth0")?;
        let staff = net.addr("staff", "eth0")?;

        // Students: through r1 and r2, as their view says.
        let on_r2 = net.capture("r2", "eth0")?;
        let (out, log, _) = lab.curl("students", "www", &["--dns-paths"], &[])?;
        ensure!(out.status.success(), "{out}");
        lab.settle(&on_r2, students)?;
        let packets = read_pcap(&on_r2.stop()?)?;
        let fwd = lab.forward(&packets, students);
        ensure!(fwd.iter().any(|p| p.has_flags(flags::SYN)) && fwd.iter().any(|p| p.has_payload()), "r2 saw {fwd:#?}");
        for p in &fwd {
            let srh = p.srh_repr().with_context(|| format!("frame {} on r2 has no SRH", p.frame))?;
            ensure!(srh.segments == [lab.service, lab.r2, lab.r1], "frame {}: segments {:?}", p.frame, srh.segments);
            ensure!(
                srh.return_path() == Some(&[lab.r1, lab.r2][..]),
                "frame {}: return path {:?}",
                p.frame,
                srh.return_path()
            );
        }
        let connects = events(&log, "connect");
        ensure!(connects.iter().any(|c| c["action"] == "attached" && c["rule"] == "dns"), "shim log: {log:?}");
        ensure!(events(&log, "dns-paths").iter().any(|e| e["paths"] == 1), "shim log: {log:?}");

        // Staff: the same name, their view's chain: r1 only, then the direct link; nothing crosses r2.
        let on_r2 = net.capture("r2", "eth0")?;
        let direct = net.capture_filtered("server", "eth1", &format!("ip6 src host {staff}"))?;
        let (out, _, _) = lab.curl("staff", "www", &["--dns-paths"], &[])?;
        ensure!(out.status.success(), "{out}");
        lab.settle(&direct, staff)?;
        let packets = read_pcap(&direct.stop()?)?;
        let fwd = lab.forward(&packets, staff);
        ensure!(fwd.iter().any(|p| p.has_flags(flags::SYN)), "staff's flow not on the direct link: {fwd:#?}");
        for p in &fwd {
            let srh = p.srh_repr().with_context(|| format!("staff frame {} has no SRH", p.frame))?;
            ensure!(srh.segments == [lab.service, lab.r1], "staff frame {}: segments {:?}", p.frame, srh.segments);
            ensure!(srh.return_path().is_none(), "staff's record has no return path");
        }
        let crossed = read_pcap(&on_r2.stop()?)?;
        ensure!(lab.forward(&crossed, staff).is_empty(), "staff's flow crossed r2");
        Ok(())
    });
}

#[test]
fn a_name_without_a_path_for_its_address_gets_none_or_the_policy_rule() {
    with_net("dns", "dnsn", |net| {
        let lab = Lab::start(net)?;
        let students = net.addr("students", "eth0")?;
        // No record at all; a record that covers other addresses only.
        for name in ["plain", "other"] {
            let direct = net.capture_filtered("server", "eth1", &format!("ip6 src host {students}"))?;
            let (out, log, _) = lab.curl("students", name, &["--dns-paths"], &[])?;
            ensure!(out.status.success(), "{name}: {out}");
            lab.settle(&direct, students)?;
            let packets = read_pcap(&direct.stop()?)?;
            let fwd = lab.forward(&packets, students);
            ensure!(!fwd.is_empty() && fwd.iter().all(|p| p.srh.is_none()), "{name}'s flow: {fwd:#?}");
            ensure!(events(&log, "connect").iter().all(|c| c["action"] == "no-match"), "{name}: shim log: {log:?}");
            ensure!(events(&log, "dns-paths").iter().any(|e| e["paths"] == 0), "{name}: shim log: {log:?}");
        }
        // With a policy file: its rule steers the name without a path; a path from DNS comes before it.
        let policy = net.path("policy.toml");
        std::fs::write(&policy, format!("[[rule]]\ndst = \"{}/128\"\nsegments = [\"{}\"]\n", lab.service, lab.r1))?;
        let policy = policy.display().to_string();
        for (name, rule) in [("plain", format!("{policy} rule #1")), ("www", "dns".to_string())] {
            let (out, log, _) = lab.curl("students", name, &["--dns-paths", "--policy", &policy], &[])?;
            ensure!(out.status.success(), "{name}: {out}");
            let connects = events(&log, "connect");
            ensure!(connects.iter().all(|c| c["action"] == "attached" && c["rule"] == rule), "{name}: {log:?}");
        }
        Ok(())
    });
}

/// A fake agent in `host` on abstract socket `name`: `silent` accepts and never answers, `garbage` answers
/// the hex bytes `reply` to every request.
fn fake_agent(net: &Net, host: &str, name: &str, mode: &str, reply: &str) -> Result<srv6pipes_tests::Proc> {
    let script = r#"
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0" + sys.argv[1]); s.listen(64)
held = []
while True:
    c, _ = s.accept()
    if sys.argv[2] == "silent":
        held.append(c)
        continue
    c.recv(1024); c.sendall(bytes.fromhex(sys.argv[3])); c.close()
"#;
    let mut p = net.spawn(host, ["python3", "-c", script, name, mode, reply])?;
    p.wait_until("the fake agent to listen", Duration::from_secs(10), |_| {
        let ss = net.cmd(host, ["ss", "-H", "-l", "-x"]).output()?;
        Ok(ss.stdout.contains(name))
    })?;
    Ok(p)
}

#[test]
fn a_failing_agent_never_hangs_the_program_and_the_failure_policy_decides() {
    with_net("dns", "dnsf", |net| {
        let lab = Lab::start(net)?;
        let timeout = AGENT_TIMEOUT_MS.to_string();
        // Truncated (one entry announced, none there), an absurd count, an SRH length that lies.
        let cases = [
            ("gone", "none", ""),
            ("silent", "silent", ""),
            ("truncated", "garbage", "02000100"),
            ("count", "garbage", "0200ff00"),
            ("srhlen", "garbage", &format!("02000100{}0000003c00ff0000{}", "00".repeat(16), "00".repeat(24))),
        ];
        for (name, mode, reply) in cases {
            let _agent = if mode == "none" { None } else { Some(fake_agent(net, "students", name, mode, reply)?) };
            let socket = format!("@{name}");
            let env = [("SRV6_AGENT", socket.as_str()), ("SRV6_AGENT_TIMEOUT_MS", timeout.as_str())];
            // Open: the download works, unsteered, and the log says why.
            let (out, log, took) = lab.curl("students", "www", &["--fail", "open"], &env)?;
            ensure!(out.status.success(), "{name}, open: {out}");
            ensure!(took < Duration::from_millis(AGENT_TIMEOUT_MS) + Duration::from_secs(2), "{name}: took {took:?}");
            let failed = events(&log, "dns-paths");
            ensure!(failed.iter().any(|e| e["action"] == "failed-open"), "{name}, open: shim log {log:?}");
            ensure!(events(&log, "connect").iter().all(|c| c["action"] == "no-match"), "{name}: {log:?}");
            // Closed: the connection fails with EHOSTUNREACH, said in the log; the program exits normally.
            let (out, log, took) = lab.curl("students", "www", &["--fail", "closed"], &env)?;
            ensure!(out.status.code() == Some(7), "{name}, closed: curl should fail to connect: {out}");
            ensure!(took < Duration::from_millis(AGENT_TIMEOUT_MS) + Duration::from_secs(2), "{name}: took {took:?}");
            ensure!(events(&log, "dns-paths").iter().any(|e| e["action"] == "refused"), "{name}: {log:?}");
            let refused = events(&log, "connect");
            ensure!(
                refused.iter().any(|c| c["action"] == "refused" && c["errno"] == libc::EHOSTUNREACH),
                "{name}: {log:?}"
            );
        }
        Ok(())
    });
}

#[test]
fn a_dns_server_that_is_down_fails_open_or_closed() {
    with_net("dns", "dnsd", |net| {
        let lab = Lab::start(net)?;
        // Nothing listens there: the agent's lookup fails, glibc's (resolv.conf) still works.
        let args = |fail| ["--dns-paths", "--dns-server", "fc00:5::99", "--dns-timeout", "400", "--fail", fail];
        let (out, log, _) = lab.curl("students", "www", &args("open"), &[])?;
        ensure!(out.status.success(), "open: {out}");
        // The agent says the lookup failed, or the shim stops waiting first: either way, no path, logged.
        let failed = events(&log, "dns-paths");
        ensure!(failed.iter().any(|e| e["action"] == "failed-open" && e["error"].is_string()), "open: {log:?}");
        let (out, log, _) = lab.curl("students", "www", &args("closed"), &[])?;
        ensure!(out.status.code() == Some(7), "closed: {out}");
        ensure!(events(&log, "connect").iter().any(|c| c["action"] == "refused"), "closed: {log:?}");
        Ok(())
    });
}

#[test]
fn ttl_expiry_makes_the_agent_ask_again() {
    with_net("dns", "dnst", |net| {
        let lab = Lab::start(net)?;
        let fqdn = format!("short.{ZONE}");
        let url = format!("http://{fqdn}:{PORT}/{FILE}");
        let srv6run = binaries::path("srv6run")?;
        // One agent, two lookups within the TTL, then one after it: the second is served from the agent's
        // cache; DNS is asked again before the TTL runs out (the name is in use) or after it: 2 or 3 times.
        let script = format!(
            "curl -sS -o /dev/null {url} && curl -sS -o /dev/null {url} && sleep {} && curl -sS -o /dev/null {url}",
            SHORT_TTL + 1
        );
        let before = lab.bind.queries(&fqdn, "TYPE65300");
        let log = net.path("shim.log");
        net.cmd("students", [srv6run])
            .args(["--dns-paths", "--log"])
            .arg(&log)
            .args(["--", "sh", "-c", &script])
            .timeout(CURL_TIMEOUT)
            .run()?;
        let asked = lab.bind.queries(&fqdn, "TYPE65300") - before;
        ensure!(
            (2..=3).contains(&asked),
            "named got {asked} TYPE65300 queries for {fqdn}, want 2 or 3 (cache, refresh or expiry)\n{}",
            lab.bind.log()
        );
        let text = std::fs::read_to_string(&log)?;
        let attached = text.lines().filter(|l| l.contains("\"rule\":\"dns\"") && l.contains("attached")).count();
        ensure!(attached == 3, "all three connections follow the path:\n{text}");
        Ok(())
    });
}

#[test]
fn explain_shows_the_path_dns_gives_and_what_comes_first() {
    with_net("dns", "dnse", |net| {
        let lab = Lab::start(net)?;
        let srv6run = binaries::path("srv6run")?;
        let url = format!("http://www.{ZONE}:{PORT}/");
        let explain = |extra: &[&str]| -> Result<Value> {
            let out = net
                .cmd("students", [&srv6run])
                .args(["--explain", "--json", "--dns-paths"])
                .args(extra)
                .args(["--", "curl", &url])
                .run()?;
            serde_json::from_str(&out.stdout).with_context(|| format!("not JSON: {out}"))
        };
        let e = explain(&[])?;
        let d = &e["destinations"][0];
        ensure!(d["rule"] == "dns" && d["address"] == lab.service.to_string(), "explain: {e}");
        let want = [lab.service, lab.r2, lab.r1].map(|a| a.to_string());
        ensure!(d["srh"]["segments"] == serde_json::json!(want), "explain: {e}");
        // --segs comes before DNS.
        let e = explain(&["--segs", &lab.r1.to_string()])?;
        ensure!(e["destinations"][0]["rule"] == "SRV6_SEGS", "explain with --segs: {e}");
        Ok(())
    });
}

#[test]
fn the_agent_lives_as_long_as_the_programs_process_tree() {
    with_net("dns", "dnsl", |net| {
        let _lab = Lab::start(net)?;
        let srv6run = binaries::path("srv6run")?;
        let agents = || -> Result<usize> {
            let ss = net.cmd("students", ["ss", "-H", "-l", "-x"]).run()?;
            Ok(ss.stdout.lines().filter(|l| l.contains("@srv6run-agent-")).count())
        };
        // The program exits at once but leaves a child behind: the agent stays for the child.
        net.cmd("students", [&srv6run]).args(["--dns-paths", "--", "sh", "-c", "sleep 3 >/dev/null 2>&1 &"]).run()?;
        ensure!(agents()? == 1, "no agent while the program's child lives");
        srv6pipes_tests::wait_until("the agent to exit after the program's tree", Duration::from_secs(10), || {
            Ok(agents()? == 0)
        })?;
        Ok(())
    });
}

#[test]
fn a_multi_threaded_program_resolving_many_names_at_once_follows_every_path() {
    with_net("dns", "dnsm", |net| {
        let lab = Lab::start(net)?;
        let srv6run = binaries::path("srv6run")?;
        // Python's urllib: getaddrinfo() then connect(), from 12 threads at once.
        let script = format!(
            r#"
import concurrent.futures, urllib.request
def get(i):
    with urllib.request.urlopen("http://n%d.{ZONE}:{PORT}/{FILE}" % i, timeout=10) as r:
        return len(r.read())
with concurrent.futures.ThreadPoolExecutor({MANY}) as ex:
    print(sorted(set(ex.map(get, range({MANY})))))
"#
        );
        let log = net.path("shim.log");
        let out = net
            .cmd("students", [srv6run])
            .args(["--dns-paths", "--log"])
            .arg(&log)
            .args(["--", "python3", "-c", &script])
            .timeout(CURL_TIMEOUT)
            .run()?;
        ensure!(out.stdout.trim() == "[100000]", "every download complete: {out}");
        let text = std::fs::read_to_string(&log)?;
        let lines: Vec<Value> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        let learned = events(&lines, "dns-paths").iter().filter(|e| e["paths"] == 1).count();
        ensure!(learned == MANY, "{learned} of {MANY} names learned a path:\n{text}");
        let want = serde_json::json!([lab.r1.to_string(), lab.r2.to_string()]);
        let connects = events(&lines, "connect");
        let steered =
            connects.iter().filter(|c| c["action"] == "attached" && c["rule"] == "dns" && c["segments"] == want);
        ensure!(steered.count() == connects.len() && connects.len() >= MANY, "connections:\n{text}");
        Ok(())
    });
}

#[test]
fn a_binding_sid_from_dns_is_expanded_by_the_access_router_through_a_proxy() {
    with_net("dns", "dnsb", |net| {
        let lab = Lab::start(net)?;
        let students = net.addr("students", "eth0")?;
        let (bsid, proxy_sid): (Ipv6Addr, Ipv6Addr) = (BSID.parse()?, PROXY_SID.parse()?);
        let proxy = srv6pipes_tests::proxy::Proxy::start(net, "r2", "fc00:e2::/80", 5001, &[])?;
        let at_client = net.capture("r1", "eth0")?;
        let past_r1 = net.capture("r1", "eth1")?;
        let (out, log, _) = lab.curl("students", "bsid", &["--dns-paths"], &[])?;
        ensure!(out.status.success(), "{out}\nproxy:\n{}", proxy.stderr());
        lab.settle(&at_client, students)?;
        lab.settle(&past_r1, students)?;
        // The client only knows the binding SID.
        let packets = read_pcap(&at_client.stop()?)?;
        let fwd = lab.forward(&packets, students);
        ensure!(!fwd.is_empty(), "no flow from the client");
        for p in &fwd {
            let srh = p.srh_repr().with_context(|| format!("client frame {} has no SRH", p.frame))?;
            ensure!(srh.segments == [lab.service, bsid], "client frame {}: {:?}", p.frame, srh.segments);
        }
        ensure!(events(&log, "connect").iter().any(|c| c["rule"] == "dns" && c["action"] == "attached"), "{log:?}");
        // Past r1 the SYN goes to the proxy's function SID: End.B6 put the chain in front.
        let packets = read_pcap(&past_r1.stop()?)?;
        let syn =
            lab.forward(&packets, students).into_iter().find(|p| p.has_flags(flags::SYN)).context("no SYN past r1")?;
        ensure!(syn.dst == proxy_sid, "the SYN past r1 goes to {}, not the proxy {proxy_sid}", syn.dst);
        let stats = proxy.stats(net)?;
        ensure!(stats.accepted >= 1, "the proxy accepted no flow: {stats:?}\n{}", proxy.stderr());
        Ok(())
    });
}

#[test]
fn the_system_wide_agent_serves_a_program_preloaded_by_hand() {
    with_net("dns", "dnsa", |net| {
        let lab = Lab::start(net)?;
        let students = net.addr("students", "eth0")?;
        let socket = net.path("agent.sock");
        let mut agent =
            net.cmd("students", [binaries::path("srv6path")?]).arg("agent").arg("--socket").arg(&socket).spawn()?;
        agent.wait_until("the agent's socket", Duration::from_secs(10), |_| Ok(socket.exists()))?;
        let on_r2 = net.capture("r2", "eth0")?;
        let log = net.path("shim.log");
        let url = format!("http://www.{ZONE}:{PORT}/{FILE}");
        // No srv6run: the shim preloaded by hand, told where the agent is.
        let out = net
            .cmd("students", ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null", &url])
            .env("LD_PRELOAD", binaries::path("libsrv6sock.so")?)
            .env("SRV6_AGENT", &socket)
            .env("SRV6_LOG", &log)
            .timeout(CURL_TIMEOUT)
            .run()?;
        lab.settle(&on_r2, students)?;
        let packets = read_pcap(&on_r2.stop()?)?;
        let fwd = lab.forward(&packets, students);
        ensure!(!fwd.is_empty(), "nothing crossed r2: {out}");
        for p in &fwd {
            let srh = p.srh_repr().with_context(|| format!("frame {} on r2 has no SRH", p.frame))?;
            ensure!(srh.segments == [lab.service, lab.r2, lab.r1], "frame {}: {:?}", p.frame, srh.segments);
        }
        let text = std::fs::read_to_string(&log)?;
        ensure!(text.contains("\"rule\":\"dns\"") && text.contains("\"attached\""), "shim log:\n{text}");
        agent.ensure_running()?;
        Ok(())
    });
}
