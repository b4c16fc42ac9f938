//! `srv6run --via kernel`: programs the LD_PRELOAD shim cannot reach (static busybox, a static Go
//! client, io_uring) steered by the cgroup-steering eBPF programs, in the `steering` topology (client —
//! r1 — r2 — server, plus a direct client — server link that plain routing prefers): a capture on r2
//! proves the steering and holds the SRH and return-path TLV, decoded by libsrv6sock, tshark and scapy.
//! Kernel mode keeps the source address the route to the destination gives (the direct link's).

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use libsrv6sock::wire::tlv::TYPE_RETURN_PATH;
use srv6pipes_capture::{tcp_flags as flags, Packet};
use srv6pipes_tests::http::{sha256_file, HttpServer};
use srv6pipes_tests::{binaries, oracle, with_net, Net};

const PORT: u16 = 8080;
const FILE: &str = "blob.bin";
const FILE_SIZE: u64 = 4 << 20;
/// Bound on one download (the real one takes well under a second).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on waiting for a flow's last packets to reach a capture after the client exits.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

struct Kernel<'a> {
    net: &'a Net,
    sha256: String,
    _server: HttpServer,
    /// The client's address on the direct link: the source of every connection to the service.
    client: Ipv6Addr,
    service: Ipv6Addr,
    r1: Ipv6Addr,
    r2: Ipv6Addr,
}

impl<'a> Kernel<'a> {
    fn start(net: &'a Net) -> Result<Kernel<'a>> {
        let server = HttpServer::start(net, "server", PORT)?;
        let sha256 = server.add_random_file(FILE, FILE_SIZE)?;
        Ok(Kernel {
            net,
            sha256,
            _server: server,
            client: net.addr("client", "eth1")?,
            service: net.addr("server", "lo")?,
            r1: net.sid("r1")?,
            r2: net.sid("r2")?,
        })
    }

    fn url(&self) -> String {
        format!("http://[{}]:{PORT}/{FILE}", self.service)
    }

    fn segs(&self) -> String {
        format!("{},{}", self.r1, self.r2)
    }

    /// `srv6run ARGS -- busybox wget -q -O OUT URL` (busybox is statically linked).
    fn wget(&self, srv6run_args: &[&str], out: &str) -> Result<(Vec<String>, PathBuf)> {
        let out = self.net.path(out);
        let mut argv = vec![binaries::path("srv6run")?.display().to_string()];
        argv.extend(srv6run_args.iter().map(|s| s.to_string()));
        argv.extend(["--", "busybox", "wget", "-q", "-O"].map(String::from));
        argv.extend([out.display().to_string(), self.url()]);
        Ok((argv, out))
    }

    fn check(&self, out: &std::path::Path) -> Result<()> {
        let got = sha256_file(out)?;
        ensure!(got == self.sha256, "{}: sha256 {got}, served {}", out.display(), self.sha256);
        Ok(())
    }

    fn forward<'p>(&self, packets: &'p [Packet]) -> Vec<&'p Packet> {
        packets.iter().filter(|p| p.src == self.client && p.tcp().is_some_and(|t| t.dst_port == PORT)).collect()
    }

    fn fin_seen(&self) -> impl Fn(&[Packet]) -> bool + '_ {
        move |packets| self.forward(packets).iter().any(|p| p.has_flags(flags::FIN))
    }

    /// Every client → server packet at r2 carries SRH [service, r2, r1] with segments left 1 and the
    /// default return path; the flow is complete. Returns the flows' client ports.
    fn check_steered(&self, packets: &[Packet], at: &str) -> Result<Vec<u16>> {
        let forward = self.forward(packets);
        ensure!(forward.iter().any(|p| p.has_flags(flags::SYN)), "{at}: no SYN");
        ensure!(forward.iter().any(|p| p.has_payload()), "{at}: no request data");
        ensure!(forward.iter().any(|p| p.has_flags(flags::FIN)), "{at}: no FIN");
        for p in &forward {
            let f = p.frame;
            let srh = p.srh_repr().with_context(|| format!("{at}: frame {f} has no SRH"))?;
            ensure!(srh.segments == [self.service, self.r2, self.r1], "{at}: frame {f}: segments {:?}", srh.segments);
            ensure!(srh.segments_left == 1, "{at}: frame {f}: segments left {}", srh.segments_left);
            ensure!(p.dst == self.r2, "{at}: frame {f}: destination {}", p.dst);
            ensure!(
                srh.tlvs.iter().filter(|t| t.tlv_type() == TYPE_RETURN_PATH).count() == 1,
                "{at}: frame {f}: not exactly one return-path TLV: {:?}",
                srh.tlvs
            );
            ensure!(
                srh.return_path() == Some(&[self.r1, self.r2][..]),
                "{at}: frame {f}: return path {:?}",
                srh.return_path()
            );
        }
        let mut ports: Vec<u16> = forward.iter().filter_map(|p| p.tcp().map(|t| t.src_port)).collect();
        ports.sort_unstable();
        ports.dedup();
        Ok(ports)
    }
}

#[test]
fn static_busybox_wget_is_steered_and_a_plain_one_beside_it_is_not() {
    with_net("steering", "kbusybox", |net| {
        let s = Kernel::start(net)?;
        let on_r2 = net.capture("r2", "eth0")?;
        let direct = net.capture_filtered("server", "eth1", &format!("ip6 src host {}", s.client))?;
        // The unsteered process (a plain curl, slowed down) runs at the same time as the steered one.
        let plain_out = net.path("plain");
        let plain = net
            .cmd("client", ["curl", "-sS", "-g", "--noproxy", "*", "--limit-rate", "1M", "-o"])
            .arg(&plain_out)
            .arg(s.url())
            .log_dir(net.dir())
            .spawn()?;
        let (argv, out) = s.wget(&["--via", "kernel", "--segs", &s.segs()], "steered")?;
        net.cmd("client", argv).timeout(RUN_TIMEOUT).run()?;
        s.check(&out)?;
        plain.wait(RUN_TIMEOUT)?;
        on_r2.wait_for("the steered flow's FIN", SETTLE_TIMEOUT, s.fin_seen())?;
        direct.wait_for("the plain flow's FIN", SETTLE_TIMEOUT, s.fin_seen())?;

        let pcap = on_r2.stop()?;
        let packets = oracle::cross_check(&pcap)?;
        let steered = s.check_steered(&packets, "r2")?;
        ensure!(steered.len() == 1, "r2: flows from client ports {steered:?}, expected the steered one only");
        let bad = oracle::tshark_bad_tcp_checksums(&pcap)?;
        ensure!(bad.is_empty(), "r2: tshark finds bad TCP checksums in frames {bad:?}");

        let direct = srv6pipes_capture::read_pcap(&direct.stop()?)?;
        let plain = s.forward(&direct);
        ensure!(plain.iter().any(|p| p.has_flags(flags::SYN)), "direct link: the plain flow is missing");
        ensure!(plain.iter().all(|p| p.srh.is_none()), "direct link: a plain packet carries an SRH");
        ensure!(
            plain.iter().all(|p| p.tcp().is_some_and(|t| !steered.contains(&t.src_port))),
            "direct link: a packet of the steered flow went the plain way"
        );
        s.check(&plain_out)?;
        Ok(())
    })
}

/// A static HTTP client built from `src` (Go, standard library only) with Debian's Go, `CGO_ENABLED=0`.
fn build_go_client(dir: &std::path::Path) -> Result<PathBuf> {
    let src = dir.join("client.go");
    std::fs::write(
        &src,
        r#"package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
)

func main() {
	client := &http.Client{Transport: &http.Transport{}} // no proxy from the environment
	resp, err := client.Get(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	out, err := os.Create(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := out.Close(); err != nil {
		os.Exit(1)
	}
}
"#,
    )?;
    let bin = dir.join("goclient");
    let out = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(&src)
        .current_dir(dir)
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("HOME", dir)
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .output()
        .context("go build (golang-go)")?;
    ensure!(out.status.success(), "go build: {}", String::from_utf8_lossy(&out.stderr));
    Ok(bin)
}

#[test]
fn a_static_go_client_is_steered() {
    with_net("steering", "kgo", |net| {
        let s = Kernel::start(net)?;
        let build = tempfile::tempdir()?;
        let go = build_go_client(build.path())?;
        let head = std::fs::read(&go)?;
        ensure!(head.starts_with(b"\x7fELF"), "go built no ELF file");
        let on_r2 = net.capture("r2", "eth0")?;
        let out = net.path("go.out");
        let srv6run = binaries::path("srv6run")?;
        // --via auto: the static program gets kernel mode by itself.
        net.cmd("client", [srv6run])
            .args(["--segs", &s.segs(), "--"])
            .arg(&go)
            .arg(s.url())
            .arg(&out)
            .timeout(RUN_TIMEOUT)
            .run()?;
        s.check(&out)?;
        on_r2.wait_for("the Go client's FIN", SETTLE_TIMEOUT, s.fin_seen())?;
        let packets = oracle::cross_check(&on_r2.stop()?)?;
        s.check_steered(&packets, "r2")?;
        Ok(())
    })
}

/// A client that makes its socket and its connection with io_uring (IORING_OP_SOCKET, IORING_OP_CONNECT;
/// raw system calls, no liburing), then sends an HTTP/1.0 request and copies the answer to stdout.
const URING_CLIENT: &str = r#"
#include <arpa/inet.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static int ring_fd;
static unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
static struct io_uring_sqe *sqes;
static struct io_uring_cqe *cqes;

/* Submit one SQE and wait for its completion; returns its result. */
static int run(struct io_uring_sqe *tmpl)
{
	unsigned tail = *sq_tail, idx = tail & *sq_mask;
	sqes[idx] = *tmpl;
	sq_array[idx] = idx;
	__atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, ring_fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) {
		perror("io_uring_enter");
		exit(2);
	}
	unsigned head = __atomic_load_n(cq_head, __ATOMIC_ACQUIRE);
	if (head == __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE)) {
		fprintf(stderr, "no completion\n");
		exit(2);
	}
	int res = cqes[head & *cq_mask].res;
	__atomic_store_n(cq_head, head + 1, __ATOMIC_RELEASE);
	return res;
}

int main(int argc, char **argv)
{
	struct io_uring_params p;
	struct sockaddr_in6 sa;
	struct io_uring_sqe sqe;
	char buf[65536], req[512];
	ssize_t n;

	if (argc != 4)
		return 2;
	memset(&p, 0, sizeof(p));
	ring_fd = syscall(__NR_io_uring_setup, 4, &p);
	if (ring_fd < 0) {
		perror("io_uring_setup");
		return 2;
	}
	char *sq = mmap(0, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_SQ_RING);
	char *cq = mmap(0, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe), PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_CQ_RING);
	sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
		    ring_fd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED)
		return 2;
	sq_tail = (unsigned *)(sq + p.sq_off.tail);
	sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	sq_array = (unsigned *)(sq + p.sq_off.array);
	cq_head = (unsigned *)(cq + p.cq_off.head);
	cq_tail = (unsigned *)(cq + p.cq_off.tail);
	cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);

	memset(&sqe, 0, sizeof(sqe));
	sqe.opcode = IORING_OP_SOCKET;
	sqe.fd = AF_INET6;
	sqe.off = SOCK_STREAM;
	int fd = run(&sqe);
	if (fd < 0) {
		fprintf(stderr, "IORING_OP_SOCKET: %s\n", strerror(-fd));
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sin6_family = AF_INET6;
	sa.sin6_port = htons(atoi(argv[2]));
	if (inet_pton(AF_INET6, argv[1], &sa.sin6_addr) != 1)
		return 2;
	memset(&sqe, 0, sizeof(sqe));
	sqe.opcode = IORING_OP_CONNECT;
	sqe.fd = fd;
	sqe.addr = (unsigned long)&sa;
	sqe.off = sizeof(sa);
	int rc = run(&sqe);
	if (rc < 0) {
		fprintf(stderr, "IORING_OP_CONNECT: %s\n", strerror(-rc));
		return 1;
	}
	snprintf(req, sizeof(req), "GET /%s HTTP/1.0\r\n\r\n", argv[3]);
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
		return 1;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		if (fwrite(buf, 1, n, stdout) != (size_t)n)
			return 1;
	return n < 0;
}
"#;

#[test]
fn an_io_uring_client_is_steered() {
    with_net("steering", "kuring", |net| {
        let s = Kernel::start(net)?;
        let build = tempfile::tempdir()?;
        let src = build.path().join("uring.c");
        std::fs::write(&src, URING_CLIENT)?;
        let bin = build.path().join("uring");
        let out = std::process::Command::new("cc").arg("-O2").arg("-o").arg(&bin).arg(&src).output().context("cc")?;
        ensure!(out.status.success(), "cc: {}", String::from_utf8_lossy(&out.stderr));

        let on_r2 = net.capture("r2", "eth0")?;
        let srv6run = binaries::path("srv6run")?;
        let answer = net.path("uring.http");
        let cmd = format!(
            "exec {} --via kernel --segs {} -- {} {} {PORT} {FILE} > {}",
            srv6run.display(),
            s.segs(),
            bin.display(),
            s.service,
            answer.display()
        );
        net.cmd("client", ["sh", "-c", &cmd]).timeout(RUN_TIMEOUT).run()?;
        let http = std::fs::read(&answer)?;
        let body_at = http.windows(4).position(|w| w == b"\r\n\r\n").context("no HTTP header in the answer")? + 4;
        let body = net.path("uring.body");
        std::fs::write(&body, &http[body_at..])?;
        s.check(&body)?;
        on_r2.wait_for("the io_uring client's FIN", SETTLE_TIMEOUT, s.fin_seen())?;
        let packets = oracle::cross_check(&on_r2.stop()?)?;
        s.check_steered(&packets, "r2")?;
        Ok(())
    })
}

#[test]
fn a_static_child_of_a_shell_is_steered_under_fail_closed() {
    with_net("steering", "kshell", |net| {
        let s = Kernel::start(net)?;
        let on_r2 = net.capture("r2", "eth0")?;
        let out = net.path("shell.out");
        let srv6run = binaries::path("srv6run")?;
        let script = format!("busybox wget -q -O {} {} && echo done", out.display(), s.url());
        let run = net
            .cmd("client", [srv6run])
            .args(["--via", "kernel", "--fail", "closed", "--segs", &s.segs(), "--", "sh", "-c", &script])
            .timeout(RUN_TIMEOUT)
            .run()?;
        ensure!(run.stdout.contains("done"), "the shell did not finish: {run}");
        s.check(&out)?;
        on_r2.wait_for("the static child's FIN", SETTLE_TIMEOUT, s.fin_seen())?;
        let packets = oracle::cross_check(&on_r2.stop()?)?;
        s.check_steered(&packets, "r2")?;
        Ok(())
    })
}

#[test]
fn explain_says_which_mode_and_why() -> Result<()> {
    srv6pipes_tests::netns::require_root();
    let srv6run = binaries::path("srv6run")?;
    let explain = |via: &str| -> Result<serde_json::Value> {
        let out = std::process::Command::new(&srv6run)
            .args([
                "--explain",
                "--json",
                "--via",
                via,
                "--segs",
                "fc00::1",
                "--",
                "busybox",
                "wget",
                "http://[fc00::2]/",
            ])
            .output()?;
        ensure!(out.status.success(), "srv6run --explain: {}", String::from_utf8_lossy(&out.stderr));
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let auto = explain("auto")?;
    ensure!(auto["mode"] == "kernel", "auto for static busybox: {auto}");
    ensure!(auto["mode_reason"].as_str().is_some_and(|r| r.contains("statically linked")), "reason: {auto}");
    let preload = explain("preload")?;
    ensure!(preload["mode"].is_null(), "preload for static busybox: {preload}");
    ensure!(preload["mode_error"].as_str().is_some_and(|r| r.contains("statically linked")), "error: {preload}");
    let dynamic = std::process::Command::new(&srv6run)
        .args(["--explain", "--segs", "fc00::1", "--", "curl", "http://[fc00::2]/"])
        .output()?;
    let text = String::from_utf8_lossy(&dynamic.stdout);
    ensure!(text.starts_with("mode: preload"), "curl: {text}");
    Ok(())
}

/// The cgroup2 mount point of this (the test's) mount namespace.
fn cgroup2_root() -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next()? == "cgroup2").then(|| left.split(' ').nth(4).map(PathBuf::from))?
        })
        .context("no cgroup2 mount")
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether process `pid` is gone (or a zombie waiting for its parent).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
}

#[test]
fn a_run_killed_during_a_transfer_is_cleaned_by_the_next_run() {
    with_net("steering", "kkill", |net| {
        let s = Kernel::start(net)?;
        const STREAM_PORT: u16 = 9000;
        let _stream = net
            .cmd("server", ["socat", &format!("TCP6-LISTEN:{STREAM_PORT},reuseaddr,fork"), "OPEN:/dev/zero,rdonly"])
            .log_dir(net.dir())
            .spawn()?;
        net.wait_for_tcp_port("server", STREAM_PORT, Duration::from_secs(10))?;
        let on_r2 = net.capture_filtered("r2", "eth0", &format!("ip6 src host {}", s.client))?;
        let srv6run = binaries::path("srv6run")?;
        // nc's standard input stays open (an end of file would make it close its side, and socat the stream).
        let nc = format!("sleep 600 | busybox nc {} {STREAM_PORT} > /dev/null", s.service);
        let first = net
            .cmd("client", [srv6run.clone()])
            .args(["--via", "kernel", "--segs", &s.segs(), "--", "sh", "-c", &nc])
            .log_dir(net.dir())
            .spawn()?;
        // The transfer runs, steered: the client's ACKs cross r2.
        let streaming = |p: &[Packet]| {
            p.iter().filter(|p| p.srh.is_some() && p.tcp().is_some_and(|t| t.dst_port == STREAM_PORT)).count() > 20
        };
        on_r2.wait_for("the steered stream", SETTLE_TIMEOUT, streaming)?;
        on_r2.stop()?;
        let srv6run_pid = first.pid();
        let sh = *children(srv6run_pid).first().context("srv6run has no child")?;
        let nc_pid = children(sh)
            .into_iter()
            .find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "busybox"))
            .context("sh has no busybox child")?;
        let cgroup = std::fs::read_to_string(format!("/proc/{sh}/cgroup"))?;
        let name = cgroup.trim().rsplit('/').next().context("no cgroup")?.to_string();
        ensure!(name.starts_with("srv6run-"), "the program runs in cgroup {cgroup}");
        let dir = cgroup2_root()?.join(&name);
        let record = PathBuf::from("/run/srv6pipes/srv6run").join(&name);
        ensure!(dir.is_dir() && record.is_file(), "{} or {} missing while it runs", dir.display(), record.display());

        // Not Proc::wait: it would kill srv6run's whole process group, busybox nc included.
        first.signal(libc::SIGKILL)?;
        srv6pipes_tests::process::wait_until("srv6run to die", SETTLE_TIMEOUT, || Ok(gone(srv6run_pid)))?;
        // The program dies with srv6run; its child (busybox nc) outlives it, in the cgroup, and its packets
        // leave unsteered: the eBPF programs, maps and links went with srv6run.
        srv6pipes_tests::process::wait_until("sh to die with srv6run", SETTLE_TIMEOUT, || Ok(gone(sh)))?;
        ensure!(!gone(nc_pid), "busybox nc died too early: the test cannot show the next run cleans it");
        let direct = net.capture_filtered("server", "eth1", &format!("ip6 src host {}", s.client))?;
        let plain = |p: &[Packet]| {
            p.iter().filter(|p| p.srh.is_none() && p.tcp().is_some_and(|t| t.dst_port == STREAM_PORT)).count() > 20
        };
        direct.wait_for("the stream, unsteered once srv6run is gone", SETTLE_TIMEOUT, plain)?;
        let after = srv6pipes_capture::read_pcap(&direct.stop()?)?;
        // A zombie's other threads may hold its links a moment longer: once a packet left unsteered, none
        // may be steered again.
        let first_plain = after.iter().position(|p| p.srh.is_none()).context("no unsteered packet")?;
        ensure!(
            after[first_plain..].iter().all(|p| p.srh.is_none()),
            "a packet still got an SRH after srv6run was killed and its links were gone"
        );
        ensure!(dir.is_dir() && record.is_file(), "the killed run's cgroup and record stay until the next run");

        // The next kernel-mode run (any program) removes what the killed one left.
        let out = net
            .cmd("client", [srv6run])
            .args(["--via", "kernel", "--segs", &s.segs(), "--", "true"])
            .timeout(RUN_TIMEOUT)
            .run()?;
        ensure!(out.stderr.contains(&name), "the next run does not say it removed {name}: {out}");
        ensure!(!dir.exists(), "{} is still there", dir.display());
        ensure!(!record.exists(), "{} is still there", record.display());
        srv6pipes_tests::process::wait_until("busybox nc to be killed", SETTLE_TIMEOUT, || Ok(gone(nc_pid)))?;
        drop(first);
        Ok(())
    })
}

#[test]
fn full_size_uploads_fit_the_mtu() {
    with_net("steering", "kupload", |net| {
        let s = Kernel::start(net)?;
        let mut sink = srv6pipes_tests::http::UploadSink::start(net, "server", 8081)?;
        let file = net.path("upload.bin");
        // 1 MiB: enough full-size segments, few enough for tcpdump on a loaded machine.
        let upload_size = 1 << 20;
        let sha256 = srv6pipes_tests::http::random_file(&file, upload_size)?;
        let snmp = |field: &str| -> Result<u64> {
            let out = net.run("client", ["cat", "/proc/net/snmp6"])?;
            out.stdout
                .lines()
                .find_map(|l| l.strip_prefix(field).map(|v| v.trim().parse::<u64>()))
                .with_context(|| format!("no {field} in /proc/net/snmp6"))?
                .map_err(Into::into)
        };
        let too_big = snmp("Icmp6OutPktTooBigs")?;
        let frag_fails = snmp("Ip6FragFails")?;
        let on_r2 = net.capture_filtered("r2", "eth0", &format!("ip6 src host {}", s.client))?;
        let url = format!("http://[{}]:8081/up", s.service);
        let srv6run = binaries::path("srv6run")?;
        // A dynamic curl in kernel mode: the shim plays no part, the kernel inserts the header.
        net.cmd("client", [srv6run])
            .args(["--via", "kernel", "--segs", &s.segs(), "--", "curl", "-sS", "-g", "--noproxy", "*", "-T"])
            .arg(&file)
            .arg(&url)
            .timeout(RUN_TIMEOUT)
            .run()?;
        let log = sink.log()?;
        ensure!(log.contains(&sha256), "the sink received something else: {log}");
        ensure!(log.starts_with(&format!("{} ", s.client)), "the sink saw another peer: {log}");
        // No segment was too big for the client's own device once the header was in.
        ensure!(snmp("Icmp6OutPktTooBigs")? == too_big, "the client refused its own oversized packets");
        ensure!(snmp("Ip6FragFails")? == frag_fails, "the client failed to send oversized packets");
        let fin =
            |p: &[Packet]| p.iter().any(|p| p.has_flags(flags::FIN) && p.tcp().is_some_and(|t| t.dst_port == 8081));
        on_r2.wait_for("the upload's FIN", SETTLE_TIMEOUT, fin)?;
        let packets = srv6pipes_capture::read_pcap(&on_r2.stop()?)?;
        let upload: Vec<&Packet> = packets.iter().filter(|p| p.tcp().is_some_and(|t| t.dst_port == 8081)).collect();
        let sent: usize = upload.iter().filter_map(|p| p.tcp()).map(|t| t.payload_len).sum();
        ensure!(sent as u64 >= upload_size, "r2 saw {sent} bytes of TCP payload, less than the file");
        ensure!(upload.iter().all(|p| p.srh.is_some()), "an upload packet crossed r2 without an SRH");
        Ok(())
    })
}

#[test]
fn static_busybox_wget_goes_through_a_proxy_chain() {
    with_net("proxy-chain", "kchain", |net| {
        use srv6pipes_tests::proxy::Proxy;
        // xor (key 0x5a) on p1 and on p2: the bytes between them are XORed, the ends see the original.
        const XOR_CHAIN: &str = "fc00:f1::2:0:5a,fc00:f2::2:0:5a";
        let server = HttpServer::start(net, "server", PORT)?;
        let sha256 = server.add_random_file(FILE, FILE_SIZE)?;
        let p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
        let p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &[])?;
        let client = net.addr("client", "eth0")?;
        let service = net.addr("server", "eth0")?;
        let on_p1 = net.capture_filtered("p1", "eth0", &format!("ip6 src host {client}"))?;
        let out = net.path("chain.out");
        let srv6run = binaries::path("srv6run")?;
        net.cmd("client", [srv6run])
            .args(["--segs", XOR_CHAIN, "--fail", "closed", "--", "busybox", "wget", "-q", "-O"])
            .arg(&out)
            .arg(format!("http://[{service}]:{PORT}/{FILE}"))
            .timeout(RUN_TIMEOUT)
            .run()?;
        let got = sha256_file(&out)?;
        ensure!(got == sha256, "through the chain: sha256 {got}, served {sha256}");
        let (s1, s2) = (p1.stats(net)?, p2.stats(net)?);
        ensure!(s1.accepted >= 1 && s2.accepted >= 1, "the proxies did not relay the flow: {s1:?} {s2:?}");
        let fin =
            |p: &[Packet]| p.iter().any(|p| p.has_flags(flags::FIN) && p.tcp().is_some_and(|t| t.dst_port == PORT));
        on_p1.wait_for("the client's FIN", SETTLE_TIMEOUT, fin)?;
        let packets = oracle::cross_check(&on_p1.stop()?)?;
        let forward: Vec<&Packet> = packets.iter().filter(|p| p.tcp().is_some_and(|t| t.dst_port == PORT)).collect();
        ensure!(forward.iter().any(|p| p.has_flags(flags::SYN)), "p1: no SYN from the client");
        let (w1, w2): (Ipv6Addr, Ipv6Addr) = ("fc00:f1::2:0:5a".parse()?, "fc00:f2::2:0:5a".parse()?);
        for p in forward {
            let srh = p.srh_repr().with_context(|| format!("p1: frame {} has no SRH", p.frame))?;
            ensure!(srh.segments == [service, w2, w1], "p1: frame {}: segments {:?}", p.frame, srh.segments);
            ensure!(
                srh.return_path() == Some(&[w1, w2][..]),
                "p1: frame {}: return path {:?}",
                p.frame,
                srh.return_path()
            );
        }
        Ok(())
    })
}

#[test]
fn kernel_mode_refuses_what_it_cannot_steer_and_says_why() {
    with_net("steering", "krefuse", |net| {
        let srv6run = binaries::path("srv6run")?;
        let marker = net.path("ran");
        let touch = format!("touch {}", marker.display());
        // No route to the first waypoint: refused before the program runs, never sent unsteered.
        let out = net
            .cmd("client", [srv6run.clone()])
            .args(["--via", "kernel", "--segs", "fc00:dead::1", "--", "sh", "-c", &touch])
            .output()?;
        ensure!(out.status.code() == Some(126), "no route: {out}");
        ensure!(out.stderr.contains("no route to the first waypoint fc00:dead::1"), "no route: {out}");
        // Paths from DNS need the shim.
        let out = net
            .cmd("client", [srv6run.clone()])
            .args(["--via", "kernel", "--dns-paths", "--", "sh", "-c", &touch])
            .output()?;
        ensure!(out.status.code() == Some(126) && out.stderr.contains("--dns-paths needs the shim"), "dns: {out}");
        // Without CAP_NET_ADMIN.
        let out = net
            .cmd("client", ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"])
            .arg(&srv6run)
            .args(["--via", "kernel", "--segs", "fc00:f1::1", "--", "sh", "-c", &touch])
            .output()?;
        ensure!(
            out.status.code() == Some(126) && out.stderr.contains("needs root, or CAP_NET_ADMIN"),
            "unprivileged: {out}"
        );
        ensure!(!marker.exists(), "a refused program ran");
        Ok(())
    })
}
