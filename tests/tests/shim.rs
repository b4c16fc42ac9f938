//! The shim inside real programs (topology `steering`): multi-threaded and forking programs, the failure
//! policies against a real kernel refusal, rules matched on host names, UDP (dig), and the programs
//! `srv6run` must refuse (static, setuid).

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use libsrv6sock::capture::{read_pcap, tcp_flags as flags, Packet};
use serde_json::Value;
use srv6pipes_tests::http::HttpServer;
use srv6pipes_tests::{binaries, with_net, Net};

const PORT: u16 = 8080;
const SMALL: &str = "small.bin";
const PYTHON: &str = "/usr/bin/python3";
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections in the thread and fork tests.
const FLOWS: usize = 6;

/// N threads of one process each fetch the file over a fresh connection; prints how many got a 200.
const THREADS_PY: &str = r#"
import socket, sys, threading
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = []
def get():
    with socket.create_connection((host, port), timeout=20) as s:
        s.sendall(b"GET /small.bin HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    ok.append(data.startswith(b"HTTP/1.1 200"))
threads = [threading.Thread(target=get) for _ in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print(sum(ok))
"#;

/// A process with a helper thread forks N children (no exec) that each fetch the file; prints how many
/// children exited 0.
const FORK_PY: &str = r#"
import os, socket, sys, threading, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
kids = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        with socket.create_connection((host, port), timeout=20) as s:
            s.sendall(b"GET /small.bin HTTP/1.0\r\n\r\n")
            ok = s.recv(12).startswith(b"HTTP/1.1 200")
        os._exit(0 if ok else 1)
    kids.append(pid)
print(sum(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) == 0 for p in kids))
"#;

/// One TCP Fast Open connection: the request leaves with the SYN through `sendto(MSG_FASTOPEN)`, the call
/// the shim must steer since there is no `connect()`; prints the status line.
const FASTOPEN_PY: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
    # Blocking until connected: a timeout would make the socket non-blocking (EINPROGRESS).
    s.sendto(b"GET /small.bin HTTP/1.0\r\n\r\n", socket.MSG_FASTOPEN, (host, port))
    s.settimeout(20)
    print(s.recv(12).decode())
"#;

struct Env {
    _server: HttpServer,
    service: Ipv6Addr,
    r1: Ipv6Addr,
    r2: Ipv6Addr,
}

impl Env {
    fn start(net: &Net) -> Result<Env> {
        let server = HttpServer::start(net, "server", PORT)?;
        server.add_random_file(SMALL, 4096)?;
        Ok(Env { _server: server, service: net.addr("server", "lo")?, r1: net.sid("r1")?, r2: net.sid("r2")? })
    }

    fn srv6run(&self, opts: &[&str], program: &[&str]) -> Vec<String> {
        let mut argv = vec![binaries::path("srv6run").expect("srv6run is built").display().to_string()];
        argv.extend(opts.iter().map(|s| s.to_string()));
        argv.push("--".into());
        argv.extend(program.iter().map(|s| s.to_string()));
        argv
    }

    fn segs(&self) -> String {
        format!("{},{}", self.r1, self.r2)
    }

    /// Packets seen on r2 that carry the path's SRH to the service.
    fn steered_syns(&self, packets: &[Packet]) -> usize {
        packets
            .iter()
            .filter(|p| p.has_flags(flags::SYN) && !p.has_flags(flags::ACK))
            .filter(|p| p.srh_repr().is_some_and(|s| s.segments == [self.service, self.r2, self.r1]))
            .count()
    }
}

/// The decision log's lines as JSON.
fn log_events(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("decision log {}", path.display()))?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("log line {l:?}"))).collect()
}

fn attached(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["action"] == "attached").collect()
}

/// Run a Python program with `FLOWS` connections under srv6run; check that each got its answer, its own
/// logged decision, and its own steered SYN on r2. Returns the decisions.
fn run_flows(net: &Net, program: &str, tag: &str) -> Result<Vec<Value>> {
    let env = Env::start(net)?;
    let log = net.path(&format!("{tag}.jsonl"));
    let capture = net.capture("r2", "eth0")?;
    let argv = env.srv6run(
        &["--segs", &env.segs(), "--log", log.to_str().context("path")?],
        &[PYTHON, "-c", program, &env.service.to_string(), &PORT.to_string(), &FLOWS.to_string()],
    );
    let out = net.cmd("client", argv).timeout(RUN_TIMEOUT).run()?;
    ensure!(out.stdout.trim() == FLOWS.to_string(), "{FLOWS} fetches should succeed: {out}");
    capture.wait_for("every steered SYN", SETTLE_TIMEOUT, |p| env.steered_syns(p) >= FLOWS)?;
    let packets = read_pcap(&capture.stop()?)?;
    ensure!(env.steered_syns(&packets) == FLOWS, "r2 should see exactly {FLOWS} steered SYNs");
    let events = log_events(&log)?;
    ensure!(attached(&events).len() == FLOWS, "one attach per connection: {events:?}");
    Ok(events)
}

#[test]
fn multi_threaded_program_steers_every_connection() {
    with_net("steering", "thread", |net| {
        let events = run_flows(net, THREADS_PY, "threads")?;
        let pids: std::collections::HashSet<_> = attached(&events).iter().map(|e| e["pid"].clone()).collect();
        ensure!(pids.len() == 1, "all threads share one process: {pids:?}");
        Ok(())
    });
}

#[test]
fn forked_children_steer_their_connections() {
    with_net("steering", "fork", |net| {
        let events = run_flows(net, FORK_PY, "fork")?;
        let pids: std::collections::HashSet<_> = attached(&events).iter().map(|e| e["pid"].clone()).collect();
        ensure!(pids.len() == FLOWS, "each child decides in its own process: {pids:?}");
        Ok(())
    });
}

#[test]
fn tcp_fast_open_is_steered() {
    with_net("steering", "tfo", |net| {
        let env = Env::start(net)?;
        let log = net.path("tfo.jsonl");
        let capture = net.capture("r2", "eth0")?;
        let argv = env.srv6run(
            &["--segs", &env.segs(), "--log", log.to_str().context("path")?],
            &[PYTHON, "-c", FASTOPEN_PY, &env.service.to_string(), &PORT.to_string()],
        );
        let out = net.cmd("client", argv).timeout(RUN_TIMEOUT).run()?;
        ensure!(out.stdout.starts_with("HTTP/1.1 200"), "the Fast Open request is answered: {out}");
        capture.wait_for("the steered SYN", SETTLE_TIMEOUT, |p| env.steered_syns(p) >= 1)?;
        let events = log_events(&log)?;
        ensure!(
            events.iter().any(|e| e["event"] == "sendto" && e["action"] == "attached"),
            "sendto steered: {events:?}"
        );
        Ok(())
    });
}

/// Make the kernel refuse the SRH for real: a socket option larger than the namespace's
/// `net.core.optmem_max` fails with ENOBUFS.
fn starve_option_memory(net: &Net) -> Result<()> {
    net.run("client", ["sysctl", "-qw", "net.core.optmem_max=128"])?;
    Ok(())
}

/// Ten waypoints: an SRH of 360 bytes, over the starved limit. Only r1 and r2 are real; the header never
/// leaves the host anyway.
fn long_segs(env: &Env) -> String {
    let mut segs = vec![env.r1.to_string(), env.r2.to_string()];
    segs.extend((3..=10).map(|i| format!("fc00:e{i}::1")));
    segs.join(",")
}

fn curl(url: &str, out: &Path) -> Vec<String> {
    ["curl", "-sS", "-g", "--noproxy", "*", "--max-time", "20", "-o", out.to_str().unwrap_or_default(), url]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// curl under srv6run with `--fail MODE` while the kernel refuses the SRH: curl's result, whether the
/// file arrived, and the decision log.
fn curl_starved(net: &Net, mode: &str) -> Result<(srv6pipes_tests::Output, bool, Vec<Value>)> {
    let env = Env::start(net)?;
    starve_option_memory(net)?;
    let log = net.path("decisions.jsonl");
    let download = net.path("download");
    let url = format!("http://[{}]:{PORT}/{SMALL}", env.service);
    let argv = env.srv6run(&["--segs", &long_segs(&env), "--fail", mode, "--log", log.to_str().context("path")?], &[]);
    let argv: Vec<String> = argv.into_iter().chain(curl(&url, &download)).collect();
    let out = net.cmd("client", argv).timeout(RUN_TIMEOUT).output()?;
    let arrived = download.metadata().is_ok_and(|m| m.len() == 4096);
    Ok((out, arrived, log_events(&log)?))
}

#[test]
fn fail_open_goes_on_without_srh_and_logs_the_error() {
    with_net("steering", "failopen", |net| {
        let (out, arrived, events) = curl_starved(net, "open")?;
        ensure!(out.status.success() && arrived, "the download works unsteered: {out}");
        let failed: Vec<_> = events.iter().filter(|e| e["action"] == "failed-open").collect();
        ensure!(failed.len() == 1 && failed[0]["errno"] == libc::ENOBUFS, "one failed-open with ENOBUFS: {events:?}");
        Ok(())
    });
}

#[test]
fn fail_closed_refuses_the_connection_with_the_kernels_errno() {
    with_net("steering", "failclsd", |net| {
        let (out, arrived, events) = curl_starved(net, "closed")?;
        // curl's exit code 7: failed to connect.
        ensure!(out.status.code() == Some(7) && !arrived, "curl must fail to connect: {out}");
        ensure!(
            events.iter().any(|e| e["action"] == "refused" && e["errno"] == libc::ENOBUFS),
            "refusal logged: {events:?}"
        );
        Ok(())
    });
}

#[test]
fn name_rule_steers_only_connections_to_that_name() {
    with_net("steering", "name", |net| {
        let env = Env::start(net)?;
        // `ip netns exec` mounts the namespace's own hosts file over /etc/hosts.
        net.etc_file("client", "hosts", &format!("{} www.srv6.test\n", env.service))?;
        let policy = net.path("policy.toml");
        std::fs::write(
            &policy,
            format!("[[rule]]\nname = \"www.srv6.test\"\nsegments = [\"{}\", \"{}\"]\n", env.r1, env.r2),
        )?;
        let capture = net.capture("r2", "eth0")?;
        for (url, tag) in [
            (format!("http://www.srv6.test:{PORT}/{SMALL}"), "by-name"),
            (format!("http://[{}]:{PORT}/{SMALL}", env.service), "by-addr"),
        ] {
            let download = net.path(tag);
            let argv = env.srv6run(&["--policy", policy.to_str().context("path")?], &[]);
            let argv: Vec<String> = argv.into_iter().chain(curl(&url, &download)).collect();
            let out = net.cmd("client", argv).timeout(RUN_TIMEOUT).run()?;
            ensure!(std::fs::metadata(&download)?.len() == 4096, "{tag} download: {out}");
        }
        capture.wait_for("the steered SYN", SETTLE_TIMEOUT, |p| env.steered_syns(p) >= 1)?;
        let packets = read_pcap(&capture.stop()?)?;
        ensure!(env.steered_syns(&packets) == 1, "only the connection made by name is steered");
        Ok(())
    });
}

#[test]
fn udp_rule_steers_dig_queries() {
    with_net("steering", "udp", |net| {
        let env = Env::start(net)?;
        let policy = net.path("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "[[rule]]\ndst = \"{}\"\nport = 53\nproto = \"udp\"\nsegments = [\"{}\", \"{}\"]\n",
                env.service, env.r1, env.r2
            ),
        )?;
        let capture = net.capture("r2", "eth0")?;
        // No DNS server answers: dig times out after one try; the query crossing r2 is what counts.
        let argv = env.srv6run(
            &["--policy", policy.to_str().context("path")?],
            &["dig", "+tries=1", "+time=1", &format!("@{}", env.service), "srv6.test", "AAAA"],
        );
        net.cmd("client", argv).timeout(RUN_TIMEOUT).output()?;
        let udp_steered = |p: &[Packet]| {
            p.iter()
                .any(|p| p.tcp().is_none() && p.srh_repr().is_some_and(|s| s.segments == [env.service, env.r2, env.r1]))
        };
        capture.wait_for("a steered DNS query", SETTLE_TIMEOUT, udp_steered)?;
        Ok(())
    });
}

/// Build a tiny C program (`static`: linked statically) that would create `marker` if it ran.
fn build_c_program(dir: &Path, name: &str, static_link: bool, marker: &Path) -> Result<PathBuf> {
    let src = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    std::fs::write(
        &src,
        format!("#include <stdio.h>\nint main(void) {{ return fopen(\"{}\", \"w\") ? 0 : 1; }}\n", marker.display()),
    )?;
    let mut gcc = std::process::Command::new("gcc");
    if static_link {
        gcc.arg("-static");
    }
    let status = gcc.arg("-o").arg(&bin).arg(&src).status().context("gcc")?;
    ensure!(status.success(), "gcc failed to build {name}");
    Ok(bin)
}

fn run_srv6run(program: &Path) -> Result<std::process::Output> {
    Ok(std::process::Command::new(binaries::path("srv6run")?)
        .args(["--segs", "fc00::1", "--"])
        .arg(program)
        .output()?)
}

#[test]
fn static_and_setuid_programs_are_refused_and_not_run() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("ran");
    let static_bin = build_c_program(dir.path(), "static", true, &marker)?;
    let out = run_srv6run(&static_bin)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(126) && stderr.contains("statically linked"), "static refused: {stderr}");
    ensure!(stderr.contains("encap seg6"), "the refusal says what to do instead: {stderr}");

    let setuid_bin = build_c_program(dir.path(), "setuid", false, &marker)?;
    std::fs::set_permissions(&setuid_bin, std::os::unix::fs::PermissionsExt::from_mode(0o4755))?;
    let out = run_srv6run(&setuid_bin)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(126) && stderr.contains("setuid"), "setuid refused: {stderr}");
    ensure!(!marker.exists(), "a refused program must not run");

    // The same dynamic program without the setuid bit runs, with its exit status passed through.
    std::fs::set_permissions(&setuid_bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let out = run_srv6run(&setuid_bin)?;
    ensure!(out.status.success() && marker.exists(), "a dynamic program runs: {out:?}");
    Ok(())
}
