//! How long a path from DNS lives, and whose it is (topology `dns`, a real BIND 9 on the server): a
//! long-lived program keeps the path of an address for as long as DNS says and past it while the record
//! stands (the agent refreshes it), and loses it once the record is gone; a connecting socket's SRH is
//! never changed; two names on one address each get their own path; a socket numbered above 65 536 is
//! steered; an evicted path or a malformed record is refused under `--fail closed`, with its reason; one
//! query timeout is one try.
//! The programs are python3 scripts reading the SRH back with `getsockopt(IPV6_RTHDR)`; captures on r2 (only
//! steered traffic crosses it) show it on the wire.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use libsrv6sock::capture::read_pcap;
use serde_json::Value;
use srv6pipes_tests::dns::{zone_file, Bind, View};
use srv6pipes_tests::http::HttpServer;
use srv6pipes_tests::{binaries, with_net, Net};

const ZONE: &str = "example.test";
/// TTL of the zone's records, but for `life`.
const TTL: u32 = 60;
/// TTL of `life`'s records: short, to keep the test short; its steps are at the same fractions of it.
const LIFE_TTL: u32 = 6;
const PORT: u16 = 8080;
const FILE: &str = "hello.bin";
/// Bound on a whole program run.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Names for the eviction test, more than [`SLOTS`].
const EVICT_NAMES: usize = 4;
/// `SRV6_PATHS` in the eviction test.
const SLOTS: usize = 2;

/// Python helpers: the SRH segments (SRH order) of a socket, read back from the kernel.
const PY_SEGS: &str = r#"
import errno, ipaddress, json, os, select, socket, sys, time
IPV6_RTHDR = 57
def segs(s):
    b = s.getsockopt(socket.IPPROTO_IPV6, IPV6_RTHDR, 1024)
    if len(b) < 8:
        return []
    return [str(ipaddress.IPv6Address(b[8 + 16 * i:24 + 16 * i])) for i in range(b[4] + 1)]
def resolve(name, port):
    return socket.getaddrinfo(name, port, socket.AF_INET6, socket.SOCK_STREAM)[0][4]
def connect(addr):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(addr)
    return s
def say(**kw):
    print(json.dumps(kw), flush=True)
"#;

/// Resolve once, keep the address, reconnect at 2/3 of the TTL, after it, and after the record was removed
/// (the test removes it when told `remove`, then touches the flag file) and the TTL ran out again. A
/// non-blocking connection opened before the removal calls connect() again after it ("until EISCONN") and
/// then sends its request.
const LIFE_PY: &str = r#"
name, port, ttl, flag = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
addr = resolve(name, port)
t0 = time.monotonic()
def at(t):
    time.sleep(max(0.0, t0 + t - time.monotonic()))
for label, when in (("start", 0), ("two-thirds", ttl * 2 / 3), ("after-ttl", ttl * 5 / 3)):
    at(when)
    s = connect(addr)
    say(step=label, segs=segs(s))
    s.close()
nb = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
nb.setblocking(False)
first = nb.connect_ex(addr)
select.select([], [nb], [], 10)
say(step="nonblocking", errno=first, segs=segs(nb), port=nb.getsockname()[1])
say(step="remove")
for _ in range(600):
    if os.path.exists(flag):
        break
    time.sleep(0.1)
time.sleep(ttl + 1)
again = nb.connect_ex(addr)
say(step="connect-again", errno=again, segs=segs(nb))
nb.setblocking(True)
nb.settimeout(10)
nb.sendall(b"GET /hello.bin HTTP/1.0\r\n\r\n")
status = nb.recv(12).decode()
nb.close()
s = connect(addr)
say(step="after-removal", segs=segs(s), status=status)
s.close()
"#;

/// Alternate between two names of one address: each connection reports its SRH.
const TWO_NAMES_PY: &str = r#"
port, a, b = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for name in (a, b, a, b):
    s = connect(resolve(name, port))
    say(name=name, segs=segs(s))
    s.close()
"#;

/// Hold 70 000 descriptors, then connect a socket numbered above them (moved there with dup2). Where the
/// hard limit on descriptors cannot be raised (no CAP_SYS_RESOURCE), the highest number allowed is used.
const MANY_FDS_PY: &str = r#"
import resource
name, port = sys.argv[1], int(sys.argv[2])
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (80000, 80000))
except (ValueError, OSError):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
held = [os.open("/dev/null", os.O_RDONLY) for _ in range(min(70000, limit - 16))]
addr = resolve(name, port)
made = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
fd = os.dup2(made.fileno(), limit - 1)
made.close()
s = socket.socket(fileno=fd)
s.settimeout(10)
s.connect(addr)
say(fd=s.fileno(), limit=limit, segs=segs(s))
"#;

/// Resolve every name given, then start a connection to the first and the last one's address.
const EVICT_PY: &str = r#"
port, names = int(sys.argv[1]), sys.argv[2:]
addrs = [resolve(n, port) for n in names]
for n, addr in ((names[0], addrs[0]), (names[-1], addrs[-1])):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setblocking(False)
    say(name=n, errno=s.connect_ex(addr))
    s.close()
"#;

struct Lab<'a> {
    net: &'a Net,
    bind: Bind,
    _http: HttpServer,
    dns: Ipv6Addr,
    service: Ipv6Addr,
    r1: Ipv6Addr,
    r2: Ipv6Addr,
}

/// `srv6path record ARGS…`'s zone line.
fn record_line(args: &[&str]) -> Result<String> {
    let out = srv6pipes_tests::Cmd::new([binaries::path("srv6path")?]).arg("record").args(args).run()?;
    Ok(out.stdout.trim().to_string())
}

/// The address of eviction test name `i` (nothing answers there: only the refusal matters).
fn evict_addr(i: usize) -> String {
    format!("fc00:5::{:x}", 0x10 + i)
}

impl<'a> Lab<'a> {
    fn start(net: &'a Net) -> Result<Lab<'a>> {
        let (dns, service) = ("fc00:5::53".parse()?, "fc00:5::1".parse()?);
        let http = HttpServer::start(net, "server", PORT)?;
        http.add_random_file(FILE, 10_000)?;
        let (r1, r2) = (net.sid("r1")?, net.sid("r2")?);
        let zone = zone_file(TTL, dns, &records(service, r1, r2, true)?);
        let bind = Bind::start(net, "server", dns, ZONE, &[View { name: "all", match_clients: "any;", zone }])?;
        net.etc_file("students", "resolv.conf", &format!("nameserver {dns}\noptions timeout:2 attempts:2\n"))?;
        Ok(Lab { net, bind, _http: http, dns, service, r1, r2 })
    }

    /// Run python3 `script` (after [`PY_SEGS`]) under `srv6run --dns-paths` with `opts`, logging to `log`;
    /// its JSON lines and the decision log's.
    fn python(
        &self,
        opts: &[&str],
        env: &[(&str, &str)],
        log: &std::path::Path,
        script: &str,
        args: &[&str],
    ) -> Result<(Vec<Value>, Vec<Value>)> {
        let mut cmd = self.net.cmd("students", [binaries::path("srv6run")?]).arg("--dns-paths").args(opts);
        cmd = cmd.arg("--log").arg(log).args(["--", "python3", "-c", &format!("{PY_SEGS}{script}")]).args(args);
        for (k, v) in env {
            cmd = cmd.env(*k, *v);
        }
        let out = cmd.timeout(RUN_TIMEOUT).run()?;
        Ok((json_lines(&out.stdout)?, json_lines(&std::fs::read_to_string(log).unwrap_or_default())?))
    }

    fn segs(&self, path: &[Ipv6Addr]) -> Value {
        let mut srh_order = vec![self.service.to_string()];
        srh_order.extend(path.iter().rev().map(|a| a.to_string()));
        serde_json::json!(srh_order)
    }
}

/// The zone's records; `life_path`: whether `life` has its path record.
fn records(service: Ipv6Addr, r1: Ipv6Addr, r2: Ipv6Addr, life_path: bool) -> Result<Vec<String>> {
    let both = format!("{r1},{r2}");
    let ttl = LIFE_TTL.to_string();
    let mut z = vec![format!("life {LIFE_TTL} IN AAAA {service}")];
    if life_path {
        z.push(record_line(&["life", "--segs", &both, "--ttl", &ttl])?);
    }
    z.push(format!("va IN AAAA {service}"));
    z.push(record_line(&["va", "--segs", &both])?);
    z.push(format!("vb IN AAAA {service}"));
    z.push(record_line(&["vb", "--segs", &r1.to_string(), "--return-path", "none"])?);
    for i in 0..EVICT_NAMES {
        z.push(format!("e{i} IN AAAA {}", evict_addr(i)));
        z.push(record_line(&[&format!("e{i}"), "--segs", &both])?);
    }
    // Version 1, but 3 segments announced with room for one only.
    z.push(format!("bad IN AAAA {}", evict_addr(EVICT_NAMES)));
    z.push(format!("bad IN TYPE65300 \\# 40 0100000A00030000{}{}01", "00".repeat(16), "00".repeat(15)));
    Ok(z)
}

fn json_lines(text: &str) -> Result<Vec<Value>> {
    text.lines().map(serde_json::from_str).collect::<Result<_, _>>().with_context(|| format!("not JSON lines:\n{text}"))
}

fn fqdn(name: &str) -> String {
    format!("{name}.{ZONE}")
}

/// The step `name` of a program's output.
fn step<'v>(out: &'v [Value], name: &str) -> Result<&'v Value> {
    out.iter().find(|v| v["step"] == name).with_context(|| format!("no step {name:?} in {out:?}"))
}

#[test]
fn a_long_lived_program_keeps_its_path_while_the_record_stands_and_loses_it_after() {
    with_net("dns", "lifet", |net| {
        let lab = Lab::start(net)?;
        let (flag, log) = (net.path("removed"), net.path("shim.log"));
        let on_r2 = net.capture("r2", "eth0")?;
        let path = lab.segs(&[lab.r1, lab.r2]);
        let (out, log) = std::thread::scope(|s| {
            let run = s.spawn(|| {
                let args = [fqdn("life"), PORT.to_string(), LIFE_TTL.to_string(), flag.display().to_string()];
                lab.python(&[], &[], &log, LIFE_PY, &args.each_ref().map(String::as_str))
            });
            // When the program says so: the path record goes, and named serves the zone without it.
            let removed = (|| -> Result<()> {
                // The program's output is read at its end: the log shows its progress (its 4th connection).
                srv6pipes_tests::wait_until("the program to reach the removal", RUN_TIMEOUT, || {
                    let attached = std::fs::read_to_string(&log).unwrap_or_default().matches("\"attached\"").count();
                    Ok(run.is_finished() || attached >= 4)
                })?;
                let zone = zone_file(TTL, lab.dns, &records(lab.service, lab.r1, lab.r2, false)?)
                    .replace("admin 1 ", "admin 2 ");
                lab.bind.replace_zone("all", &zone)?;
                let server = format!("@{}", lab.dns);
                srv6pipes_tests::wait_until("named to drop the record", Duration::from_secs(20), || {
                    let dig = net
                        .cmd("students", ["dig", "+short", "+time=1", "+tries=1", &server, &fqdn("life"), "TYPE65300"])
                        .output()?;
                    Ok(dig.status.success() && dig.stdout.trim().is_empty())
                })?;
                std::fs::write(&flag, "")?;
                Ok(())
            })();
            let result = run.join().map_err(|_| anyhow::anyhow!("the program's thread panicked"))?;
            removed?;
            result
        })?;
        // Within the TTL, after it (refreshed), on the connecting socket called again: the path.
        for label in ["start", "two-thirds", "after-ttl", "nonblocking"] {
            ensure!(step(&out, label)?["segs"] == path, "{label}: {out:?}\nlog: {log:?}");
        }
        let again = step(&out, "connect-again")?;
        // Python reports EISCONN from connect_ex() as 0: either way the kernel's answer, not the shim's.
        let kernel = again["errno"] == libc::EISCONN || again["errno"] == 0;
        ensure!(kernel && again["segs"] == path, "connect() again changed the SRH: {again}");
        // After the removal and the TTL: no path, said as such.
        let last = step(&out, "after-removal")?;
        ensure!(last["segs"] == serde_json::json!([]), "still steered after the record went: {out:?}\nlog: {log:?}");
        ensure!(
            last["status"].as_str().is_some_and(|s| s.starts_with("HTTP/1.")),
            "the kept connection's answer: {last}"
        );
        // On the wire: the kept connection's request, sent after connect() again, crossed r2 with the path.
        let port = step(&out, "nonblocking")?["port"].as_u64().context("no port")?;
        let students = net.addr("students", "eth0")?;
        on_r2.wait_for("the kept connection's request", Duration::from_secs(10), |ps| {
            ps.iter()
                .any(|p| p.src == students && p.tcp().is_some_and(|t| u64::from(t.src_port) == port) && p.has_payload())
        })?;
        let packets = read_pcap(&on_r2.stop()?)?;
        let request = packets
            .iter()
            .find(|p| p.src == students && p.tcp().is_some_and(|t| u64::from(t.src_port) == port) && p.has_payload())
            .context("the request did not cross r2")?;
        let srh = request.srh_repr().context("the request has no SRH")?;
        ensure!(srh.segments == [lab.service, lab.r2, lab.r1], "request's SRH on the wire: {:?}", srh.segments);
        // Every decision-log line has its time and the program's name (python3's lines say python3; a
        // wrapper script before it, such as pyenv's, has its own lines).
        for line in &log {
            let time = line["time"].as_str().unwrap_or_default();
            ensure!(time.len() == 24 && time.starts_with("20") && time.ends_with('Z'), "time in {line}");
            let program = line["program"].as_str().unwrap_or_default();
            ensure!(!program.is_empty(), "program in {line}");
            ensure!(line["event"] != "connect" || program == "python3", "program in {line}");
        }
        let connects: Vec<_> = log.iter().filter(|l| l["event"] == "connect").collect();
        ensure!(connects.iter().filter(|c| c["action"] == "attached").count() >= 4, "log: {log:?}");
        Ok(())
    });
}

#[test]
fn two_names_on_one_address_each_get_their_own_path() {
    with_net("dns", "lifev", |net| {
        let lab = Lab::start(net)?;
        let (out, log) =
            lab.python(&[], &[], &net.path("shim.log"), TWO_NAMES_PY, &[&PORT.to_string(), &fqdn("va"), &fqdn("vb")])?;
        let want = [lab.segs(&[lab.r1, lab.r2]), lab.segs(&[lab.r1])];
        ensure!(out.len() == 4, "{out:?}");
        for (i, got) in out.iter().enumerate() {
            ensure!(got["segs"] == want[i % 2], "connection {i} ({}): {got}\nlog: {log:?}", got["name"]);
        }
        Ok(())
    });
}

#[test]
fn a_socket_numbered_above_65536_is_steered() {
    with_net("dns", "lifef", |net| {
        let lab = Lab::start(net)?;
        let (out, log) = lab.python(&[], &[], &net.path("shim.log"), MANY_FDS_PY, &[&fqdn("va"), &PORT.to_string()])?;
        let got = out.first().context("no output")?;
        let limit = got["limit"].as_u64().context("no limit")?;
        ensure!(got["fd"].as_u64() == Some(limit - 1), "descriptor {got}");
        if limit <= 65_537 {
            // Said, not hidden: this machine cannot hold descriptors above 65 536.
            eprintln!("NOTE: RLIMIT_NOFILE cannot be raised past {limit} here: descriptor {} tested", limit - 1);
        }
        ensure!(got["segs"] == lab.segs(&[lab.r1, lab.r2]), "{got}\nlog: {log:?}");
        Ok(())
    });
}

#[test]
fn an_evicted_path_is_refused_under_fail_closed_with_its_reason() {
    with_net("dns", "lifee", |net| {
        let lab = Lab::start(net)?;
        let names: Vec<String> = (0..EVICT_NAMES).map(|i| fqdn(&format!("e{i}"))).collect();
        let mut args = vec![PORT.to_string()];
        args.extend(names.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let slots = SLOTS.to_string();
        let (out, log) =
            lab.python(&["--fail", "closed"], &[("SRV6_PATHS", &slots)], &net.path("shim.log"), EVICT_PY, &args)?;
        ensure!(out.len() == 2, "{out:?}");
        ensure!(out[0]["errno"] == libc::ENOBUFS, "the first name's path was evicted: {out:?}\nlog: {log:?}");
        ensure!(out[1]["errno"] == libc::EINPROGRESS, "the last name's path is there: {out:?}\nlog: {log:?}");
        let refused = log.iter().find(|l| l["event"] == "connect" && l["action"] == "refused").context("no refusal")?;
        ensure!(refused["reason"] == "path-evicted" && refused["dst"] == evict_addr(0), "{refused}");
        ensure!(
            log.iter().any(|l| l["event"] == "paths-overflow" && l["slots"] == SLOTS),
            "overflow not logged: {log:?}"
        );
        Ok(())
    });
}

#[test]
fn one_query_timeout_is_one_try() {
    with_net("dns", "lifeq", |net| {
        let _lab = Lab::start(net)?;
        // Nothing answers there (the server host drops what is not for it).
        let started = Instant::now();
        let out = net
            .cmd("students", [binaries::path("srv6path")?])
            .args(["query", "--server", "fc00:5::99", "--timeout", "1000", &fqdn("va")])
            .timeout(Duration::from_secs(30))
            .output()?;
        let took = started.elapsed();
        ensure!(!out.status.success(), "a query nobody answers failed: {out}");
        ensure!(took >= Duration::from_millis(900), "it waited for the timeout: {took:?} {out}");
        ensure!(took <= Duration::from_millis(1500), "one try of 1 s, not two: took {took:?}");
        Ok(())
    });
}

#[test]
fn a_malformed_record_is_refused_under_fail_closed_with_its_reason() {
    with_net("dns", "lifem", |net| {
        let lab = Lab::start(net)?;
        let args = [PORT.to_string(), fqdn("bad")];
        let args = args.each_ref().map(String::as_str);
        let log = net.path("shim.log");
        let (out, log) = lab.python(&["--fail", "closed"], &[], &log, EVICT_PY, &args)?;
        ensure!(out.first().is_some_and(|o| o["errno"] == libc::EPROTO), "{out:?}\nlog: {log:?}");
        let refused = log.iter().find(|l| l["event"] == "connect" && l["action"] == "refused").context("no refusal")?;
        ensure!(refused["reason"] == "malformed-record", "{refused}");
        // Open: the connection goes, unsteered, and the log says why.
        let (out, log) = lab.python(&["--fail", "open"], &[], &net.path("shim.log"), EVICT_PY, &args)?;
        ensure!(out.first().is_some_and(|o| o["errno"] == libc::EINPROGRESS), "{out:?}\nlog: {log:?}");
        ensure!(log.iter().any(|l| l["action"] == "failed-open" && l["reason"] == "malformed-record"), "{log:?}");
        Ok(())
    });
}
