//! `srv6pipes-bench`: the paper's Fig. 6 on this machine (issue 3, item 7).
//!
//! Topology `bench` (tests/topologies/bench.toml): client (wrk) — m1 — server (nginx). m1 is, per mode, a
//! plain router, a router processing an SRH at an End SID, HAProxy as a transparent relay (`usesrc
//! clientip`, nft tproxy), or srv6pipes-proxy with the `copy` or `xor` function reached through an SRH
//! (`srv6run --segs SID -- wrk …`). Modes × object sizes × repetitions run interleaved; each run records
//! wrk's requests/s and bytes, the relay's CPU seconds (`/proc/PID/stat`), system-wide CPU (`/proc/stat`),
//! wrk's and the server's CPU. A second phase shapes every veth egress (tc tbf, 1 Gbit/s) and compares
//! CPU per Gbit/s. Results: CSV (one row per run), Markdown tables and an SVG plot; see bench/README.md.
//!
//! Run it through `bench/run` (builds --release first). Needs root.

mod m1;
mod measure;
mod mode;
mod report;
mod settings;
mod topology;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use srv6pipes_tests::{http, Cmd, Net, Proc};

use crate::m1::M1;
use crate::measure::{children_cpu_s, parse_wrk, peak_rss_kb, proc_ticks, reset_peak_rss, rx_bytes, CpuStat};
use crate::mode::Mode;
use crate::report::{Meta, Sample};
use crate::settings::{Settings, Size};
use crate::topology::SERVER;

/// Reproduce the paper's Fig. 6 here: router vs HAProxy vs srv6pipes-proxy (copy, xor), 1 KB … 10 MB.
#[derive(Debug, Clone, Parser)]
#[command(name = "srv6pipes-bench", version)]
pub struct Opts {
    /// Development run: 3 s runs, 1 repetition, 1 s warm-up; results go to bench/results/dev/.
    #[arg(long)]
    quick: bool,
    /// Seconds per wrk run [default: 10; --quick: 3].
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Interleaved repetitions per mode and size (tables show the median) [default: 3; --quick: 1].
    #[arg(long, value_name = "N")]
    reps: Option<usize>,
    /// Warm-up seconds per mode at the start of each phase [default: 3; --quick: 1].
    #[arg(long, value_name = "SECS")]
    warmup: Option<u64>,
    /// Pause between runs, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pause: f64,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// wrk connections (keep-alive).
    #[arg(long, default_value_t = 50)]
    connections: u32,
    /// Object sizes of the unshaped phase (k = KiB, m = MiB).
    #[arg(long, value_delimiter = ',', default_value = "1k,100k,10m")]
    sizes: Vec<Size>,
    /// Modes of the unshaped phase, in run order.
    #[arg(long, value_delimiter = ',', default_value = "router,router-srh,haproxy,proxy-copy,proxy-xor")]
    modes: Vec<Mode>,
    /// Object sizes of the shaped phase.
    #[arg(long, value_delimiter = ',', default_value = "100k,10m")]
    shaped_sizes: Vec<Size>,
    /// Modes of the shaped phase.
    #[arg(long, value_delimiter = ',', default_value = "router,haproxy,proxy-copy,proxy-xor")]
    shaped_modes: Vec<Mode>,
    /// Rate of the shaped phase (tc tbf syntax), on the egress of all four veth ends.
    #[arg(long, default_value = "1gbit")]
    rate: String,
    /// Skip the unshaped phase.
    #[arg(long)]
    no_unshaped: bool,
    /// Skip the shaped phase.
    #[arg(long)]
    no_shaped: bool,
    /// XOR passes of the proxy-xor mode (the key is 0: every byte is processed, the stream is unchanged).
    #[arg(long, default_value_t = 1)]
    xor_passes: u8,
    /// Threads of every relay and of the server (srv6pipes-proxy --workers, HAProxy nbthread, nginx
    /// worker_processes).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Where results go [default: bench/results, --quick: bench/results/dev].
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Base name of the result files [default: the date, YYYY-MM-DD-HHMM].
    #[arg(long)]
    name: Option<String>,
    /// Directory holding srv6run, libsrv6sock.so and srv6pipes-proxy [default: this program's directory].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Do not measure: rebuild the Markdown and SVG from a CSV this program wrote.
    #[arg(long, value_name = "CSV")]
    render: Option<PathBuf>,
}

/// Set by SIGINT/SIGTERM/SIGHUP: stop after the current run, tear everything down.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted: stopping and tearing the topology down");
    }
    Ok(())
}

/// The workspace's programs the bench runs.
struct Bins {
    srv6run: PathBuf,
    proxy: Option<PathBuf>,
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    install_signal_handlers();
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("srv6pipes-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| ".".into())
}

fn run(opts: Opts) -> Result<()> {
    if let Some(csv) = &opts.render {
        let (samples, meta) = report::read_csv(csv)?;
        let md = report::write_reports(&samples, &meta, csv)?;
        println!("{}", md.display());
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark builds network namespaces and must run as root");
    }
    let set = Settings {
        duration: opts.duration.unwrap_or(if opts.quick { 3 } else { 10 }).max(1),
        reps: opts.reps.unwrap_or(if opts.quick { 1 } else { 3 }).max(1),
        warmup: opts.warmup.unwrap_or(if opts.quick { 1 } else { 3 }),
        pause: Duration::from_secs_f64(opts.pause.clamp(0.0, 60.0)),
        threads: opts.threads.max(1),
        connections: opts.connections.max(1),
        workers: opts.workers.clamp(1, 64),
        xor_passes: opts.xor_passes.max(1),
        rate: opts.rate.clone(),
        quick: opts.quick,
    };
    let mut phases: Vec<(&str, Vec<Size>, Vec<Mode>)> = Vec::new();
    if !opts.no_unshaped {
        phases.push(("unshaped", opts.sizes.clone(), dedup(&opts.modes)));
    }
    if !opts.no_shaped {
        phases.push(("shaped", opts.shaped_sizes.clone(), dedup(&opts.shaped_modes)));
    }
    if phases.iter().all(|(_, s, m)| s.is_empty() || m.is_empty()) {
        bail!("nothing to run (no sizes or no modes)");
    }
    for (_, _, modes) in &phases {
        if !modes.contains(&Mode::Router) {
            bail!("every phase needs the router mode: the results are ratios to it");
        }
    }
    let bin_dir = match &opts.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("locating this program's directory")?.to_path_buf(),
    };
    let bins = Bins {
        srv6run: m1::program(&bin_dir, "srv6run")
            .with_context(|| format!("no srv6run in {}: cargo build --release --workspace", bin_dir.display()))?,
        proxy: m1::program(&bin_dir, "srv6pipes-proxy"),
    };
    if !bin_dir.join("libsrv6sock.so").is_file() {
        bail!("no libsrv6sock.so in {}: cargo build --release --workspace", bin_dir.display());
    }
    let wants_proxy = phases.iter().any(|(_, _, m)| m.iter().any(|m| m.uses_proxy()));
    if wants_proxy {
        let proxy = bins.proxy.as_ref().with_context(|| {
            format!(
                "no srv6pipes-proxy in {}; build it, or leave the proxy modes out (--modes router,router-srh,haproxy \
                 --shaped-modes router,haproxy)",
                bin_dir.display()
            )
        })?;
        Cmd::new([proxy.as_os_str()])
            .arg("--help")
            .timeout(Duration::from_secs(10))
            .run()
            .context("srv6pipes-proxy --help")?;
    }
    for tool in ["wrk", "nginx", "haproxy", "nft", "tc", "curl", "ip"] {
        Cmd::new(["sh", "-c", &format!("command -v {tool}")])
            .timeout(Duration::from_secs(5))
            .run()
            .with_context(|| format!("{tool} is not installed"))?;
    }

    let out_dir = opts.out_dir.clone().unwrap_or_else(|| {
        let r = workspace_root().join("bench/results");
        if set.quick {
            r.join("dev")
        } else {
            r
        }
    });
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => Cmd::new(["date", "+%Y-%m-%d-%H%M"]).run()?.stdout.trim().to_string(),
    };
    let csv_path = out_dir.join(format!("{name}.csv"));

    let mut meta = Meta::collect(&set, bins.proxy.as_deref(), &workspace_root());
    eprintln!("srv6pipes-bench: machine busy {:.1} % while idle (2 s sample)", {
        meta.idle_busy_before = measure::idle_busy_pct(Duration::from_secs(2))?;
        meta.idle_busy_before
    });
    let total_runs: usize = phases.iter().map(|(_, s, m)| s.len() * m.len() * set.reps).sum();
    let per_run = set.duration as f64 + set.pause.as_secs_f64() + 1.0;
    eprintln!(
        "srv6pipes-bench: {total_runs} runs of {} s (+ warm-ups), about {:.0} min; results: {}",
        set.duration,
        (total_runs as f64 * per_run
            + phases.iter().map(|(_, _, m)| m.len() as f64 * (set.warmup as f64 + 3.0)).sum::<f64>())
            / 60.0,
        csv_path.display()
    );
    let started = Instant::now();

    let samples = {
        let net = Net::build("bench", "bench")?;
        let result = measure_all(&net, &set, &bins, &phases, &csv_path, &mut meta);
        if result.is_err() {
            keep_logs(net.dir(), &out_dir.join(format!("{name}-logs")));
        }
        result?
        // `net` drops here: every process in the namespaces is killed and the namespaces are deleted.
    };
    meta.wall_s = started.elapsed().as_secs_f64();
    meta.idle_busy_after = measure::idle_busy_pct(Duration::from_secs(2))?;
    report::append_meta(&csv_path, &meta)?;
    let md = report::write_reports(&samples, &meta, &csv_path)?;
    if !set.quick && opts.out_dir.is_none() {
        report::write_latest(&md, &out_dir.join("latest.md"))?;
    }
    println!("{}", std::fs::read_to_string(&md)?);
    eprintln!("srv6pipes-bench: wrote {} (+ .csv, .svg)", md.display());
    Ok(())
}

fn dedup(modes: &[Mode]) -> Vec<Mode> {
    let mut v: Vec<Mode> = Vec::new();
    for m in modes {
        if !v.contains(m) {
            v.push(*m);
        }
    }
    v
}

/// The server: nginx like the baseline's (workers = --workers, no access log, sendfile, long keep-alive).
struct Server {
    _proc: Proc,
    pids: Vec<i32>,
    sha100k: String,
}

fn start_server(net: &Net, set: &Settings, sizes: &[Size]) -> Result<Server> {
    let dir = net.dir().join("nginx");
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    let mut sha100k = String::new();
    let mut all: Vec<Size> = sizes.to_vec();
    all.push("100k".parse().map_err(anyhow::Error::msg)?);
    for s in &all {
        let path = www.join(format!("{}.bin", s.label));
        if !path.exists() {
            let sha = http::random_file(&path, s.bytes)?;
            if s.label == "100k" {
                sha100k = sha;
            }
        }
    }
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process on;
worker_processes {w};
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 10000000;
    default_type application/octet-stream;
    server {{
        listen [::]:80 backlog=4096;
        root {d}/www;
    }}
}}
"#,
        w = set.workers
    );
    let proc = http::spawn_nginx(net, "server", &dir, &conf, 80)?;
    // Master and workers (the workers are forked right after the listener opens).
    let mut pids = Vec::new();
    for _ in 0..100 {
        pids = measure::pids_named(net, "server", "nginx")?;
        if pids.len() > set.workers {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Server { _proc: proc, pids, sha100k })
}

/// `tc tbf` on the egress of all four veth ends (both directions of both links), or remove it.
fn shape(net: &Net, rate: Option<&str>) -> Result<()> {
    for (host, dev) in [("client", "eth0"), ("m1", "eth0"), ("m1", "eth1"), ("server", "eth0")] {
        match rate {
            Some(r) => {
                net.cmd(
                    host,
                    [
                        "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", r, "burst", "128kb", "latency",
                        "10ms",
                    ],
                )
                .timeout(Duration::from_secs(10))
                .run()?;
            }
            None => {
                let _ =
                    net.cmd(host, ["tc", "qdisc", "del", "dev", dev, "root"]).timeout(Duration::from_secs(10)).output();
            }
        }
    }
    Ok(())
}

/// The client command for a mode: wrk (or curl) directly, or under `srv6run --segs SID`.
fn client_cmd(net: &Net, bins: &Bins, set: &Settings, mode: Mode, argv: &[String]) -> Result<Cmd> {
    let mut cmd = match mode.segment(set.xor_passes)? {
        Some(sid) => {
            net.cmd("client", [bins.srv6run.as_os_str()]).args(["--segs", &sid.to_string(), "--fail", "closed", "--"])
        }
        None => net.cmd("client", Vec::<String>::new()),
    };
    cmd = cmd.args(argv);
    Ok(cmd)
}

fn url(size: &str) -> String {
    format!("http://[{SERVER}]/{size}.bin")
}

/// One download through `mode` must return the exact file (the xor mode's key 0 keeps it unchanged) and,
/// for relay modes, must have cost the relay CPU (proof that the relay carried it).
fn sanity_check(net: &Net, bins: &Bins, set: &Settings, m1: &mut M1, server: &Server, mode: Mode) -> Result<()> {
    let out = net.path(&format!("check-{mode}.bin"));
    let argv: Vec<String> =
        ["curl", "-sS", "--max-time", "20", "-o", &out.to_string_lossy(), &url("100k")].map(String::from).to_vec();
    client_cmd(net, bins, set, mode, &argv)?
        .timeout(Duration::from_secs(30))
        .run()
        .with_context(|| format!("a download through mode {mode} failed; relay log:\n{}", m1.relay_log()))?;
    let sha = http::sha256_file(&out)?;
    if sha != server.sha100k {
        bail!("mode {mode}: the downloaded 100k.bin differs from the server's ({sha} vs {})", server.sha100k);
    }
    let _ = std::fs::remove_file(&out);
    Ok(())
}

fn measure_all(
    net: &Net,
    set: &Settings,
    bins: &Bins,
    phases: &[(&str, Vec<Size>, Vec<Mode>)],
    csv_path: &Path,
    meta: &mut Meta,
) -> Result<Vec<Sample>> {
    let all_sizes: Vec<Size> = phases.iter().flat_map(|(_, s, _)| s.clone()).collect();
    let server = start_server(net, set, &all_sizes)?;
    let lua = net.dir().join("report.lua");
    std::fs::write(&lua, measure::REPORT_LUA)?;
    let mut m1 = M1::new(net, bins.proxy.clone(), set.workers);
    let mut csv = std::fs::File::create(csv_path).with_context(|| format!("creating {}", csv_path.display()))?;
    writeln!(csv, "{}", Sample::CSV_HEADER)?;
    let mut samples = Vec::new();
    let total: usize = phases.iter().map(|(_, s, m)| s.len() * m.len() * set.reps).sum();
    let mut done = 0;
    for (phase, sizes, modes) in phases {
        let shaped = *phase == "shaped";
        shape(net, shaped.then_some(set.rate.as_str()))?;
        // Warm-up per mode, after a correctness check of the mode's path.
        for &mode in modes {
            check_stop()?;
            m1.enter(mode)?;
            sanity_check(net, bins, set, &mut m1, &server, mode)?;
            if set.warmup > 0 {
                let pids = m1.pids().to_vec();
                let before = proc_ticks(&pids);
                let argv = wrk_argv(set, set.warmup, &lua, "100k");
                let out =
                    client_cmd(net, bins, set, mode, &argv)?.timeout(Duration::from_secs(set.warmup + 40)).output()?;
                if !out.status.success() {
                    bail!("warm-up of {mode} failed: {out}\nrelay log:\n{}", m1.relay_log());
                }
                if !pids.is_empty() && proc_ticks(&pids) == before {
                    bail!("mode {mode}: the relay used no CPU during the warm-up: is the traffic bypassing it?");
                }
            }
        }
        for rep in 1..=set.reps {
            for size in sizes {
                for &mode in modes {
                    check_stop()?;
                    done += 1;
                    let mut s = run_one(net, bins, set, &mut m1, &server, &lua, phase, rep, size, mode)?;
                    if let Some(st) = m1.proxy_stats() {
                        let bad = st.refused + st.connect_failed;
                        let json = serde_json::to_string(&st)?;
                        if bad > 0 {
                            eprintln!(
                                "srv6pipes-bench: srv6pipes-proxy refused or failed {bad} flow(s) so far: {json}"
                            );
                        }
                        meta.proxy_stats_sample = Some(json);
                    }
                    // The pause doubles as a noise probe: nothing of ours runs, so what is busy is foreign.
                    let settle = Duration::from_millis(200).min(set.pause);
                    std::thread::sleep(settle);
                    s.noise_pct = measure::idle_busy_pct(set.pause - settle)?;
                    eprintln!(
                        "[{done}/{total}] {phase} rep {rep} {:>4} {:<20} {:>9.1} req/s {:>7.0} Mb/s relay {:>5.2} cpu-s \
                         busy {:>5.1} % noise {:>4.1} %{}",
                        size.label,
                        mode.name(),
                        s.rps,
                        s.goodput_mbps,
                        s.relay_cpu_s,
                        s.busy_pct,
                        s.noise_pct,
                        if s.errors > 0.0 { format!(" ERRORS {}", s.errors) } else { String::new() }
                    );
                    writeln!(csv, "{}", s.to_csv())?;
                    csv.flush()?;
                    samples.push(s);
                }
            }
        }
        m1.leave()?;
        if shaped {
            shape(net, None)?;
        }
    }
    m1.leave()?;
    Ok(samples)
}

fn wrk_argv(set: &Settings, secs: u64, lua: &Path, size: &str) -> Vec<String> {
    vec![
        "wrk".into(),
        format!("-t{}", set.threads),
        format!("-c{}", set.connections),
        format!("-d{secs}s"),
        "--timeout".into(),
        "30s".into(),
        "-s".into(),
        lua.to_string_lossy().into_owned(),
        url(size),
    ]
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    net: &Net,
    bins: &Bins,
    set: &Settings,
    m1: &mut M1,
    server: &Server,
    lua: &Path,
    phase: &str,
    rep: usize,
    size: &Size,
    mode: Mode,
) -> Result<Sample> {
    m1.enter(mode)?;
    let pids = m1.pids().to_vec();
    let argv = wrk_argv(set, set.duration, lua, &size.label);
    let cmd = client_cmd(net, bins, set, mode, &argv)?.timeout(Duration::from_secs(set.duration + 60));
    reset_peak_rss(&pids);
    let rx0 = rx_bytes(net, "client", "eth0")?;
    let (relay0, srv0) = (proc_ticks(&pids), proc_ticks(&server.pids));
    let ch0 = children_cpu_s();
    let cpu0 = CpuStat::read()?;
    let out = cmd.output()?;
    let cpu1 = CpuStat::read()?;
    let ch1 = children_cpu_s();
    let (relay1, srv1) = (proc_ticks(&pids), proc_ticks(&server.pids));
    let rx1 = rx_bytes(net, "client", "eth0")?;
    let rss = peak_rss_kb(&pids);
    m1.ensure_running().with_context(|| format!("the relay of {mode} died during a run"))?;
    if !out.status.success() {
        bail!("wrk through {mode} failed: {out}\nrelay log:\n{}", m1.relay_log());
    }
    let w = parse_wrk(&out.stdout).with_context(|| format!("{out}"))?;
    if w.requests == 0.0 {
        bail!("wrk through {mode} completed no request: {out}\nrelay log:\n{}", m1.relay_log());
    }
    let cpu = cpu0.delta(&cpu1);
    let tck = measure::clk_tck();
    let d = w.duration_s.max(1e-3);
    Ok(Sample {
        phase: phase.to_string(),
        rep,
        size: size.label.clone(),
        mode: mode.name().to_string(),
        requests: w.requests,
        dur_s: d,
        rps: w.requests / d,
        goodput_mbps: w.bytes * 8.0 / d / 1e6,
        wire_mbps: (rx1.saturating_sub(rx0)) as f64 * 8.0 / d / 1e6,
        p50_ms: w.p50_ms,
        p99_ms: w.p99_ms,
        errors: w.errors,
        busy_pct: cpu.busy_pct,
        user_pct: cpu.user_pct,
        sys_pct: cpu.sys_pct,
        softirq_pct: cpu.softirq_pct,
        steal_pct: cpu.steal_pct,
        busy_cpu_s: cpu.busy_cpu_s,
        softirq_cpu_s: cpu.softirq_cpu_s,
        relay_cpu_s: relay1.saturating_sub(relay0) as f64 / tck,
        relay_rss_kb: rss as f64,
        wrk_cpu_s: ch1 - ch0,
        server_cpu_s: srv1.saturating_sub(srv0) as f64 / tck,
        noise_pct: f64::NAN,
    })
}

/// Copy the small files of the run's directory (configs, program logs) before the Net deletes it.
fn keep_logs(from: &Path, to: &Path) {
    let mut stack = vec![from.to_path_buf()];
    let mut copied = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() && stack.len() < 64 {
                stack.push(p);
            } else if md.is_file() && md.len() < (1 << 20) && copied < 200 {
                let rel = p.strip_prefix(from).unwrap_or(&p);
                let dst = to.join(rel.to_string_lossy().replace('/', "_"));
                if std::fs::create_dir_all(to).is_ok() && std::fs::copy(&p, &dst).is_ok() {
                    copied += 1;
                }
            }
        }
    }
    eprintln!("srv6pipes-bench: failed; {copied} log/config files kept in {}", to.display());
}
