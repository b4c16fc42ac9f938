//! The shim inside real programs (topology `steering`): multi-threaded and forking programs, the failure
//! policies against a real kernel refusal, rules matched on host names, UDP (dig), the programs `srv6run`
//! must refuse (static, setuid) and its exit statuses. The shim never takes its host down: a closed or
//! broken standard error, a descriptor number reused by a socket with the program's own routing header; and
//! the built `libsrv6sock.so` links only the C library and exports only its hooks.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use srv6pipes_capture::{read_pcap, tcp_flags as flags, Packet};
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

/// Opens the file `argv[3]` (with standard error closed it gets descriptor 2), fetches the file over one
/// connection, writes `fd N: STATUS` to its file and exits 3: a status the shim must leave alone. With
/// `argv[4]` = `close-stderr`, it first closes its standard error itself, with `os.closerange` (the
/// `close_range` call where the C library has it).
const FETCH_TO_FILE_PY: &str = r#"
import os, socket, sys
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if sys.argv[4:] == ["close-stderr"]:
    os.closerange(2, 3)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
with socket.create_connection((host, port), timeout=20) as s:
    s.sendall(b"GET /small.bin HTTP/1.0\r\n\r\n")
    status = s.recv(12)
os.write(fd, b"fd %d: %s\n" % (fd, status))
sys.exit(3)
"#;

/// Runs `argv[2:]` with a standard error that cannot take a write and prints the child's return code
/// (negative: killed by that signal). `argv[1]`: `broken`, a pipe whose reader is gone, with SIGPIPE at its
/// default action (death); `full`, a non-blocking pipe filled up, that nobody reads.
const BAD_STDERR_PY: &str = r#"
import fcntl, os, subprocess, sys
r, w = os.pipe()
if sys.argv[1] == "broken":
    os.close(r)
else:
    fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
    try:
        while True:
            os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
print(subprocess.run(sys.argv[2:], stderr=w, restore_signals=True).returncode)
"#;

/// Connects a first socket (the shim attaches its SRH) and closes it, with `close()` or, when `argv[5]` is
/// `closerange`, with `os.closerange` (`close_range()`, which the shim does not see); a second socket gets
/// the same descriptor number, sets its own SRH (segments `[dst, r2, r1]`, tag 0x5a5a) and connects. Prints
/// the two descriptor numbers, whether the second socket still holds exactly the program's header after
/// connect, and the second answer's status line.
const REUSED_FD_PY: &str = r#"
import os, socket, sys
host, port, r1, r2, how = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
IPV6_RTHDR = 57
def fetch(s):
    s.sendall(b"GET /small.bin HTTP/1.0\r\n\r\n")
    return s.recv(12).decode()
first = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
first.settimeout(20)
first_fd = first.fileno()
first.connect((host, port))
fetch(first)
if how == "closerange":
    os.closerange(first_fd, first_fd + 1)
    first.detach()
else:
    first.close()
second = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
second.settimeout(20)
segments = b"".join(socket.inet_pton(socket.AF_INET6, a) for a in (host, r2, r1))
# next header, hdr ext len (6 x 8 bytes after the first 8), routing type 4, segments left 2, last entry 2,
# flags 0, tag 0x5a5a
srh = bytes([0, 6, 4, 2, 2, 0, 0x5A, 0x5A]) + segments
second.setsockopt(socket.IPPROTO_IPV6, IPV6_RTHDR, srh)
second.connect((host, port))
kept = second.getsockopt(socket.IPPROTO_IPV6, IPV6_RTHDR, 1024) == srh
print(first_fd, second.fileno(), kept, fetch(second))
"#;

/// Tag of the routing header [`REUSED_FD_PY`] sets itself.
const PROGRAM_TAG: u16 = 0x5a5a;

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

    /// SYNs seen on r2 whose SRH has exactly these segments (SRH order) and this tag.
    fn syns_with(&self, packets: &[Packet], segments: &[Ipv6Addr], tag: u16) -> usize {
        packets
            .iter()
            .filter(|p| p.has_flags(flags::SYN) && !p.has_flags(flags::ACK))
            .filter(|p| p.srh_repr().is_some_and(|s| s.segments == segments && s.tag == tag))
            .count()
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
        .args(["--via", "preload", "--segs", "fc00::1", "--"])
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
    ensure!(
        stderr.contains("--via kernel") && stderr.contains("encap seg6"),
        "the refusal says what to do instead: {stderr}"
    );

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

fn shim() -> Result<PathBuf> {
    binaries::path("libsrv6sock.so")
}

/// `sh -c 'exec PROGRAM… 2>&-'`: PROGRAM starts with standard error closed. (srv6run cannot be in between:
/// Rust's runtime reopens a closed standard error on /dev/null before main.)
fn with_stderr_closed(program: &[&str]) -> Vec<String> {
    ["sh", "-c", "exec \"$@\" 2>&-", "sh"].iter().chain(program).map(|s| s.to_string()).collect()
}

#[test]
fn program_with_stderr_closed_runs_and_its_files_get_nothing_of_the_shim() {
    with_net("steering", "nostderr", |net| {
        let env = Env::start(net)?;
        let shim = shim()?;
        let capture = net.capture("r2", "eth0")?;
        let (service, port, segs) = (env.service.to_string(), PORT.to_string(), env.segs());
        let log = [("SRV6_SEGS", segs.as_str()), ("SRV6_LOG", "stderr")];
        let missing = net.path("missing.toml").display().to_string();
        // Standard error closed at start, with decisions to log (`SRV6_LOG=stderr`) or a complaint to make (a
        // missing policy file); then standard error open at start, where the shim logs, until the program
        // closes it ("closed-later", under srv6run, so that only the program has the shim).
        for tag in ["log", "broken", "closed-later"] {
            let file = net.path(tag);
            let file_arg = file.display().to_string();
            let program = [PYTHON, "-c", FETCH_TO_FILE_PY, &service, &port, &file_arg];
            let cmd = match tag {
                "closed-later" => {
                    let argv = env.srv6run(&["--segs", &segs, "--log", "stderr"], &program);
                    net.cmd("client", argv).arg("close-stderr")
                }
                _ => {
                    let vars: &[(&str, &str)] = if tag == "log" { &log } else { &[("SRV6_POLICY", &missing)] };
                    let cmd = net.cmd("client", with_stderr_closed(&program)).env("LD_PRELOAD", &shim);
                    vars.iter().fold(cmd, |cmd, (k, v)| cmd.env(k, v))
                }
            };
            let out = cmd.timeout(RUN_TIMEOUT).output()?;
            ensure!(out.status.code() == Some(3), "{tag}: the program's own exit status: {out}");
            // The program's first file took descriptor 2, the number of the closed standard error: it holds
            // the program's line and nothing the shim wrote.
            let written = std::fs::read_to_string(&file)?;
            ensure!(written == "fd 2: HTTP/1.1 200\n", "{tag}: the program's file holds {written:?}");
            if tag == "closed-later" {
                let events: Vec<&str> = out.stderr.lines().collect();
                ensure!(
                    events.len() == 1 && events[0].contains("\"event\":\"init\""),
                    "the log was on stderr until the program closed it (the connect came after): {out}"
                );
            }
        }
        // The shim did steer the first run: it was working, just silent.
        capture.wait_for("the steered SYN", SETTLE_TIMEOUT, |p| env.steered_syns(p) >= 1)?;
        Ok(())
    });
}

#[test]
fn program_with_a_broken_or_full_stderr_is_not_killed_by_the_shims_writes() {
    with_net("steering", "sigpipe", |net| {
        let env = Env::start(net)?;
        let shim = shim()?.display().to_string();
        let (service, port) = (env.service.to_string(), PORT.to_string());
        let missing = format!("SRV6_POLICY={}", net.path("missing.toml").display());
        for mode in ["broken", "full"] {
            let file = net.path(mode);
            let program = [PYTHON, "-c", FETCH_TO_FILE_PY, &service, &port, file.to_str().context("path")?];
            let child = match mode {
                // The shim logs its first line in its constructor, before Python can ignore SIGPIPE.
                "broken" => env.srv6run(&["--segs", &env.segs(), "--log", "stderr"], &program),
                // Both things the shim writes: its complaint about the configuration (srv6run would refuse
                // the missing file, so the shim is preloaded by hand) and the log. `env` has the shim too.
                _ => ["env", &format!("LD_PRELOAD={shim}"), &missing, "SRV6_LOG=stderr"]
                    .iter()
                    .chain(&program)
                    .map(|s| s.to_string())
                    .collect(),
            };
            let argv: Vec<String> =
                [PYTHON, "-c", BAD_STDERR_PY, mode].iter().map(|s| s.to_string()).chain(child).collect();
            let out = net.cmd("client", argv).timeout(RUN_TIMEOUT).run()?;
            ensure!(out.stdout.trim() == "3", "{mode}: the program's own exit status, not a signal: {out}");
            let written = std::fs::read_to_string(&file)?;
            ensure!(written.ends_with(": HTTP/1.1 200\n"), "{mode}: the program ran to the end: {written:?}");
        }
        Ok(())
    });
}

#[test]
fn reused_descriptor_keeps_the_routing_header_the_program_set() {
    with_net("steering", "reusefd", |net| {
        let env = Env::start(net)?;
        let capture = net.capture("r2", "eth0")?;
        let closes = ["close", "closerange"];
        for how in closes {
            let log = net.path(&format!("{how}.jsonl"));
            // The shim's path goes via r1 only; the program's own header via r1 and r2, with a tag.
            let (service, port, r1, r2) =
                (env.service.to_string(), PORT.to_string(), env.r1.to_string(), env.r2.to_string());
            let argv = env.srv6run(
                &["--segs", &r1, "--log", log.to_str().context("path")?],
                &[PYTHON, "-c", REUSED_FD_PY, &service, &port, &r1, &r2, how],
            );
            let out = net.cmd("client", argv).timeout(RUN_TIMEOUT).run()?;
            let fields: Vec<&str> = out.stdout.split_whitespace().collect();
            ensure!(fields.len() == 5 && fields[0] == fields[1], "{how}: the second socket reuses the number: {out}");
            ensure!(fields[2] == "True", "{how}: after connect, the socket holds exactly the program's header: {out}");
            ensure!(fields[3..] == ["HTTP/1.1", "200"], "{how}: the second fetch is answered: {out}");
            let events = log_events(&log)?;
            let actions: Vec<&Value> =
                events.iter().filter(|e| e["event"] == "connect").map(|e| &e["action"]).collect();
            ensure!(actions == ["attached", "program-srh"], "{how}: decisions of the two connects: {actions:?}");
        }

        // Per run, the first socket's SYN carries the shim's header and the second's the program's own.
        let program_path = [env.service, env.r2, env.r1];
        let shim_path = [env.service, env.r1];
        let runs = closes.len();
        capture.wait_for("every SYN", SETTLE_TIMEOUT, |p| {
            env.syns_with(p, &shim_path, 0) >= runs && env.syns_with(p, &program_path, PROGRAM_TAG) >= runs
        })?;
        let packets = read_pcap(&capture.stop()?)?;
        ensure!(env.syns_with(&packets, &shim_path, 0) == runs, "one SYN with the shim's header per run");
        ensure!(env.syns_with(&packets, &program_path, PROGRAM_TAG) == runs, "one SYN with the program's per run");
        Ok(())
    });
}

#[test]
fn proto_udp_steers_dig_queries_and_the_default_does_not() {
    with_net("steering", "protoudp", |net| {
        let env = Env::start(net)?;
        let capture = net.capture("r2", "eth0")?;
        // No DNS server answers: dig times out after one try; the query crossing r2 (or not) is what counts.
        let dig = ["dig", "+tries=1", "+time=1", &format!("@{}", env.service), "srv6.test", "AAAA"];
        for proto in [None, Some("udp")] {
            let mut opts = vec!["--segs".to_string(), env.segs()];
            opts.extend(proto.iter().flat_map(|p| ["--proto".to_string(), p.to_string()]));
            let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
            net.cmd("client", env.srv6run(&opts, &dig)).timeout(RUN_TIMEOUT).output()?;
        }
        // The query, steered (an SRH) or not (towards the service): not neighbour discovery and the like.
        let udp_on_r2 = |p: &[Packet]| {
            p.iter()
                .filter(|p| p.tcp().is_none() && (p.srh.is_some() || p.dst == env.service))
                .cloned()
                .collect::<Vec<_>>()
        };
        let steered = |p: &Packet| p.srh_repr().is_some_and(|s| s.segments == [env.service, env.r2, env.r1]);
        capture.wait_for("a steered DNS query", SETTLE_TIMEOUT, |p| udp_on_r2(p).iter().any(steered))?;
        let udp = udp_on_r2(&read_pcap(&capture.stop()?)?);
        // Only the --proto udp run's single query crossed r2: the default (tcp) run went the direct way.
        ensure!(udp.len() == 1 && steered(&udp[0]), "exactly one steered query on r2: {udp:#?}");
        Ok(())
    });
}

/// `srv6run` with these arguments, not in a namespace (nothing is steered).
fn srv6run_plain(args: &[&str]) -> Result<std::process::Output> {
    Ok(std::process::Command::new(binaries::path("srv6run")?).args(args).output()?)
}

/// Standard error as lines, for "said once" checks.
fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr).lines().map(str::to_string).collect()
}

#[test]
fn srv6run_exit_statuses_are_the_shells() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let not_executable = dir.path().join("data.txt");
    std::fs::write(&not_executable, "not a program\n")?;
    let cases = [
        ("not in PATH", "no-such-program-srv6", 127),
        ("no such file", "/nonexistent/srv6/program", 127),
        ("not executable", not_executable.to_str().context("path")?, 126),
        ("a directory", dir.path().to_str().context("path")?, 126),
    ];
    for (what, program, want) in cases {
        let out = srv6run_plain(&["--segs", "fc00::1", "--", program])?;
        let shell = std::process::Command::new("sh").arg("-c").arg("\"$0\" 2>/dev/null").arg(program).status()?;
        ensure!(shell.code() == Some(want), "{what}: sh says {shell}, expected {want}");
        ensure!(out.status.code() == Some(want), "{what}: srv6run exits {:?}, sh {want}", out.status.code());
        let lines = stderr_lines(&out);
        ensure!(lines.len() == 1 && lines[0].starts_with("srv6run: "), "{what}: one line of error: {lines:?}");
    }
    Ok(())
}

#[test]
fn srv6run_says_each_error_once_and_refuses_empty_list_elements() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let missing = dir.path().join("missing.toml");
    let cases: [(&[&str], &str); 4] = [
        (&["--policy", missing.to_str().context("path")?], "No such file or directory"),
        (&["--segs", "fc00::1,,"], "is empty"),
        (&["--segs", ",fc00::1"], "is empty"),
        (&["--segs", "fc00::1", "--return-path", "fc00::2,"], "is empty"),
    ];
    for (opts, reason) in cases {
        let args: Vec<&str> = opts.iter().copied().chain(["--", "sh", "-c", &touch]).collect();
        let out = srv6run_plain(&args)?;
        let lines = stderr_lines(&out);
        ensure!(out.status.code() == Some(2), "{opts:?}: exit status 2 for a bad option: {lines:?}");
        ensure!(
            lines.len() == 1 && lines[0].matches(reason).count() == 1,
            "{opts:?}: one line saying {reason:?} once: {lines:?}"
        );
        ensure!(!marker.exists(), "{opts:?}: the program must not run");
    }
    Ok(())
}

/// What `libsrv6sock.so` may need at run time: the C library and what rustc's std itself links (the
/// dynamic loader, `ld-linux-*`, is also allowed).
const ALLOWED_NEEDED: [&str; 6] =
    ["libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "libgcc_s.so.1"];
/// Everything `libsrv6sock.so` exports: its hooks. A cdylib exports nothing else of Rust's.
const HOOKS: [&str; 17] = [
    "accept",
    "accept4",
    "close",
    "connect",
    "dup",
    "dup2",
    "dup3",
    "execv",
    "execve",
    "execvp",
    "execvpe",
    "getaddrinfo",
    "listen",
    "sendmsg",
    "sendto",
    "setsockopt",
    "socket",
];
/// Crates the shim must never contain: they bring threads, sockets or heavy state into every program, or
/// parse TOML in it (srv6run compiles the policy for the shim).
const FORBIDDEN_CRATES: [&str; 9] =
    ["hickory", "ratatui", "pcap", "tokio", "etherparse", "toml", "serde", "winnow", "srv6pipes_capture"];

fn tool(argv: &[&str], file: &Path) -> Result<String> {
    let out = std::process::Command::new(argv[0]).args(&argv[1..]).arg(file).output().context(argv[0].to_string())?;
    ensure!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn shim_links_only_the_c_library_and_exports_only_its_hooks() -> Result<()> {
    let so = shim()?;
    let dynamic = tool(&["readelf", "-dW"], &so)?;
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    ensure!(needed.contains(&"libc.so.6"), "readelf finds the C library among {needed:?}");
    let extra: Vec<_> = needed.iter().filter(|n| !ALLOWED_NEEDED.contains(n) && !n.starts_with("ld-linux")).collect();
    ensure!(extra.is_empty(), "libsrv6sock.so needs {extra:?} beyond the C library");

    let exported = tool(&["nm", "-D", "--defined-only"], &so)?;
    let mut exported: Vec<(&str, &str)> = exported
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().rev();
            Some((f.next()?, f.next()?))
        })
        .collect();
    exported.sort();
    let want: Vec<(&str, &str)> = HOOKS.iter().map(|h| (*h, "T")).collect();
    ensure!(exported == want, "exported symbols (name, type) {exported:?}, want exactly the hooks {want:?}");

    // The full symbol table, demangled: every crate linked in shows up in its symbols' paths.
    let symbols = tool(&["nm", "--demangle"], &so)?;
    let crates: std::collections::BTreeSet<&str> = symbols
        .lines()
        .filter_map(|l| l.splitn(3, ' ').nth(2))
        .flat_map(|name| name.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')))
        .filter_map(|path| path.split_once("::").map(|(krate, _)| krate))
        .collect();
    ensure!(crates.contains("libsrv6sock"), "the symbol table lists the crates linked in: {crates:?}");
    let forbidden: Vec<_> = crates.iter().filter(|c| FORBIDDEN_CRATES.iter().any(|f| c.starts_with(f))).collect();
    ensure!(forbidden.is_empty(), "libsrv6sock.so contains {forbidden:?}");
    Ok(())
}

/// The guard against `panic = "abort"` is a compile_error! in the shim; this checks the artifact: its panics
/// unwind (the `panic_unwind` runtime is linked, `panic_abort` is not), so the hooks' catch_unwind works.
#[test]
fn shim_is_built_to_unwind() -> Result<()> {
    let symbols = tool(&["nm", "--demangle"], &shim()?)?;
    ensure!(symbols.contains(" panic_unwind::"), "libsrv6sock.so lacks the unwinding panic runtime");
    ensure!(!symbols.contains(" panic_abort::"), "libsrv6sock.so is built with panic = \"abort\"");
    Ok(())
}

/// `cargo tree` of the shim as `cargo build ARGS` would build it: every crate with its features, one a line.
fn shim_tree(args: &[&str]) -> Result<std::collections::BTreeSet<String>> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--no-dedupe",
            "-e",
            "normal,build,no-proc-macro",
            "--prefix",
            "depth",
            "-f",
            "{p} [{f}]",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .args(args)
        .output()?;
    ensure!(out.status.success(), "cargo tree {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    // `--workspace` prints every member's tree, each from depth 0: keep the shim's.
    let text = String::from_utf8(out.stdout)?;
    let mut in_shim = false;
    let mut lines = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with('0') {
            in_shim = line.starts_with("0srv6sock-preload ");
        }
        if in_shim {
            lines.insert(line.trim_start_matches(|c: char| c.is_ascii_digit()).to_string());
        }
    }
    ensure!(!lines.is_empty(), "cargo tree {args:?} lists the shim");
    Ok(lines)
}

/// Cargo unifies features across the packages of one build: the shim must be built from the same crates with
/// the same features whether it is built alone or with the whole workspace (which also builds the TOML
/// parser, pcap, tokio, …), so that the same sources give the same library.
#[test]
fn shim_is_built_from_the_same_crates_and_features_alone_or_in_the_workspace() -> Result<()> {
    let alone = shim_tree(&["-p", "srv6sock-preload"])?;
    let workspace = shim_tree(&["--workspace"])?;
    ensure!(alone == workspace, "the shim alone: {alone:#?}\nin the workspace: {workspace:#?}");
    let names: Vec<&str> = alone.iter().filter_map(|l| l.split(' ').next()).collect();
    ensure!(names.contains(&"libsrv6sock") && names.contains(&"libc"), "the tree lists the shim's crates: {names:?}");
    let heavy: Vec<_> = names.iter().filter(|n| FORBIDDEN_CRATES.iter().any(|f| n.starts_with(f))).collect();
    ensure!(heavy.is_empty(), "the shim depends on {heavy:?}");
    Ok(())
}

/// A steered shell starts a statically linked program (busybox), which the preload cannot reach: the decision
/// log says so at its exec; with `--fail closed` the exec fails with EACCES (the shell says "Permission
/// denied", status 126), with `open` it runs, unsteered.
#[test]
fn static_child_of_a_steered_program_is_logged_and_refused_when_closed() {
    with_net("steering", "static-child", |net| {
        let env = Env::start(net)?;
        let script = format!("busybox wget -q -O /dev/null http://[{}]:{PORT}/{SMALL}; echo wget=$?", env.service);
        for (fail, status, action) in [("open", "wget=0", "unsteered"), ("closed", "wget=126", "refused")] {
            let log = net.path(&format!("static-child-{fail}.jsonl"));
            let argv = env.srv6run(
                &["--segs", &env.segs(), "--fail", fail, "--log", log.to_str().context("path")?],
                &["sh", "-c", &script],
            );
            let out = net.cmd("client", argv).timeout(RUN_TIMEOUT).output()?;
            ensure!(out.stdout.trim() == status, "--fail {fail}: {status}: {out}");
            let events = log_events(&log)?;
            let execs: Vec<&Value> = events
                .iter()
                .filter(|e| e["event"] == "execve" && e["path"].as_str().is_some_and(|p| p.ends_with("/busybox")))
                .collect();
            ensure!(!execs.is_empty(), "--fail {fail}: the exec of busybox is logged: {events:?}");
            for e in &execs {
                ensure!(
                    e["action"] == action && e["reason"].as_str().is_some_and(|r| r.contains("statically linked")),
                    "--fail {fail}: {e}"
                );
            }
            if fail == "closed" {
                ensure!(out.stderr.contains("Permission denied"), "the shell says why: {out}");
                ensure!(execs.iter().all(|e| e["errno"] == libc::EACCES), "logged with its errno: {execs:?}");
            }
        }
        Ok(())
    });
}

/// Connect, start a child whose standard error is /dev/null (Python's subprocess makes it with vfork(), and
/// the child calls dup2() onto descriptor 2 before exec), connect again.
const VFORK_PY: &str = r#"
import socket, subprocess, sys
host, port = sys.argv[1], int(sys.argv[2])
def fetch():
    with socket.create_connection((host, port), timeout=20) as s:
        s.sendall(b"GET /small.bin HTTP/1.0\r\n\r\n")
        s.recv(12)
fetch()
subprocess.run(["true"], stderr=subprocess.DEVNULL, check=True)
fetch()
print("done")
"#;

#[test]
fn a_vfork_childs_dup2_leaves_the_parents_state_alone() {
    with_net("steering", "vfork", |net| {
        let env = Env::start(net)?;
        // The log on standard error: the child's dup2 onto descriptor 2 must not end the parent's log.
        let argv = env.srv6run(
            &["--segs", &env.segs(), "--log", "stderr"],
            &[PYTHON, "-c", VFORK_PY, &env.service.to_string(), &PORT.to_string()],
        );
        let out = net.cmd("client", argv).timeout(RUN_TIMEOUT).run()?;
        ensure!(out.stdout.trim() == "done", "{out}");
        let attached = out.stderr.lines().filter(|l| l.contains("\"attached\"")).count();
        ensure!(attached == 2, "both connections logged by the parent, {attached} seen:\n{}", out.stderr);
        Ok(())
    });
}
