//! Results: one CSV row per run, a JSON sidecar with the machine facts and settings, Markdown tables
//! (median [min–max] over the interleaved repetitions, ratios to the router) and an SVG plot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use srv6pipes_tests::Cmd;

use crate::mode::{Mode, ALL_MODES};
use crate::settings::Settings;

/// One wrk run.
#[derive(Debug, Clone)]
pub struct Sample {
    pub phase: String,
    pub rep: usize,
    pub size: String,
    pub mode: String,
    pub requests: f64,
    pub dur_s: f64,
    pub rps: f64,
    /// HTTP bytes (headers included) as wrk received them, in Mb/s (10^6 bit/s).
    pub goodput_mbps: f64,
    /// Bytes received by the client's interface (IPv6 packets with headers), in Mb/s.
    pub wire_mbps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: f64,
    pub busy_pct: f64,
    pub user_pct: f64,
    pub sys_pct: f64,
    pub softirq_pct: f64,
    pub steal_pct: f64,
    pub busy_cpu_s: f64,
    pub softirq_cpu_s: f64,
    pub relay_cpu_s: f64,
    pub relay_rss_kb: f64,
    pub wrk_cpu_s: f64,
    pub server_cpu_s: f64,
    /// Busy % of the machine in the pause after the run, when nothing of the bench runs: foreign load.
    pub noise_pct: f64,
}

impl Sample {
    pub const CSV_HEADER: &'static str = "phase,rep,size,mode,requests,dur_s,rps,goodput_mbps,wire_mbps,p50_ms,p99_ms,\
errors,busy_pct,user_pct,sys_pct,softirq_pct,steal_pct,busy_cpu_s,softirq_cpu_s,relay_cpu_s,relay_rss_kb,wrk_cpu_s,server_cpu_s,noise_pct";

    fn numbers(&self) -> [f64; 20] {
        [
            self.requests,
            self.dur_s,
            self.rps,
            self.goodput_mbps,
            self.wire_mbps,
            self.p50_ms,
            self.p99_ms,
            self.errors,
            self.busy_pct,
            self.user_pct,
            self.sys_pct,
            self.softirq_pct,
            self.steal_pct,
            self.busy_cpu_s,
            self.softirq_cpu_s,
            self.relay_cpu_s,
            self.relay_rss_kb,
            self.wrk_cpu_s,
            self.server_cpu_s,
            self.noise_pct,
        ]
    }

    pub fn to_csv(&self) -> String {
        let mut s = format!("{},{},{},{}", self.phase, self.rep, self.size, self.mode);
        for v in self.numbers() {
            let _ = write!(s, ",{}", trim_float(v));
        }
        s
    }

    fn from_csv(line: &str) -> Result<Sample> {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 24 {
            bail!("expected 24 fields, got {}: {line:?}", f.len());
        }
        let n: Vec<f64> =
            f[4..].iter().map(|x| x.parse::<f64>().with_context(|| format!("{x:?}"))).collect::<Result<_>>()?;
        Ok(Sample {
            phase: f[0].into(),
            rep: f[1].parse()?,
            size: f[2].into(),
            mode: f[3].into(),
            requests: n[0],
            dur_s: n[1],
            rps: n[2],
            goodput_mbps: n[3],
            wire_mbps: n[4],
            p50_ms: n[5],
            p99_ms: n[6],
            errors: n[7],
            busy_pct: n[8],
            user_pct: n[9],
            sys_pct: n[10],
            softirq_pct: n[11],
            steal_pct: n[12],
            busy_cpu_s: n[13],
            softirq_cpu_s: n[14],
            relay_cpu_s: n[15],
            relay_rss_kb: n[16],
            wrk_cpu_s: n[17],
            server_cpu_s: n[18],
            noise_pct: n[19],
        })
    }

    fn gbps(&self) -> f64 {
        (self.goodput_mbps / 1000.0).max(1e-9)
    }

    /// Whole-machine CPU (cores busy) per Gbit/s of goodput.
    fn sys_cores_per_gbps(&self) -> f64 {
        self.busy_cpu_s / self.dur_s / self.gbps()
    }

    /// The relay process's CPU (cores) per Gbit/s of goodput.
    fn relay_cores_per_gbps(&self) -> f64 {
        self.relay_cpu_s / self.dur_s / self.gbps()
    }

    /// The relay's CPU microseconds per request.
    fn relay_us_per_req(&self) -> f64 {
        self.relay_cpu_s / self.requests.max(1.0) * 1e6
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Machine facts and settings of a run (`NAME.meta.json` next to the CSV).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    pub date: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub memory: String,
    pub os: String,
    pub versions: Vec<(String, String)>,
    pub git: String,
    pub duration_s: u64,
    pub reps: usize,
    pub warmup_s: u64,
    pub threads: u32,
    pub connections: u32,
    pub workers: usize,
    pub xor_passes: u8,
    pub rate: String,
    pub quick: bool,
    pub idle_busy_before: f64,
    pub idle_busy_after: f64,
    pub wall_s: f64,
    pub proxy_stats_sample: Option<String>,
}

fn first_line(argv: &[&str]) -> String {
    match Cmd::new(argv).timeout(std::time::Duration::from_secs(10)).output() {
        Ok(o) => {
            let text = if o.stdout.trim().is_empty() { o.stderr } else { o.stdout };
            text.lines().find(|l| !l.trim().is_empty()).unwrap_or("?").trim().to_string()
        }
        Err(_) => "?".into(),
    }
}

/// The version number in a program's banner: the first word with a digit and a dot, without a leading
/// `name/` or `name-` (`nginx version: nginx/1.22.1` → `1.22.1`, `ip utility, iproute2-6.1.0` → `6.1.0`).
fn version(banner: &str) -> String {
    banner
        .split_whitespace()
        .map(|w| w.trim_end_matches(','))
        .find(|w| w.contains('.') && w.chars().any(|c| c.is_ascii_digit()))
        .map(|w| {
            let w = w.rsplit_once('/').map_or(w, |(_, v)| v);
            match w.split_once('-') {
                Some((name, v)) if !name.chars().next().is_some_and(|c| c.is_ascii_digit()) => v,
                _ => w,
            }
            .to_string()
        })
        .unwrap_or_else(|| banner.to_string())
}

impl Meta {
    pub fn collect(set: &Settings, proxy: Option<&Path>, root: &Path) -> Meta {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("?")
            .trim()
            .to_string();
        let mem_kb: f64 = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0);
        let os = read("/etc/os-release")
            .lines()
            .find(|l| l.starts_with("PRETTY_NAME="))
            .map(|l| l.trim_start_matches("PRETTY_NAME=").trim_matches('"').to_string())
            .unwrap_or_else(|| "?".into());
        let mut versions = vec![
            ("nginx".to_string(), version(&first_line(&["nginx", "-v"]))),
            ("haproxy".into(), version(&first_line(&["haproxy", "-v"]))),
            ("wrk".into(), version(&first_line(&["wrk", "-v"]))),
            ("nftables".into(), version(&first_line(&["nft", "--version"]))),
            ("iproute2".into(), version(&first_line(&["ip", "-V"]))),
            ("rustc".into(), version(&first_line(&["rustc", "--version"]))),
        ];
        if let Some(p) = proxy {
            let p = p.to_string_lossy();
            versions.push(("srv6pipes-proxy".into(), version(&first_line(&[&p, "--version"]))));
        }
        let root_s = root.to_string_lossy();
        let commit = first_line(&["git", "-C", &root_s, "rev-parse", "--short", "HEAD"]);
        let dirty = Cmd::new(["git", "-C", &root_s, "status", "--porcelain", "--untracked-files=no"])
            .timeout(std::time::Duration::from_secs(10))
            .output()
            .map(|o| o.stdout.lines().count())
            .unwrap_or(0);
        Meta {
            date: first_line(&["date", "+%Y-%m-%d %H:%M %Z"]),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu_model,
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            memory: format!("{:.0} GiB", mem_kb / 1024.0 / 1024.0),
            os,
            versions,
            git: if dirty > 0 { format!("{commit} + {dirty} modified file(s)") } else { commit },
            duration_s: set.duration,
            reps: set.reps,
            warmup_s: set.warmup,
            threads: set.threads,
            connections: set.connections,
            workers: set.workers,
            xor_passes: set.xor_passes,
            rate: set.rate.clone(),
            quick: set.quick,
            ..Meta::default()
        }
    }
}

fn meta_path(csv: &Path) -> PathBuf {
    csv.with_extension("meta.json")
}

/// Write the JSON sidecar of `csv`.
pub fn append_meta(csv: &Path, meta: &Meta) -> Result<()> {
    std::fs::write(meta_path(csv), serde_json::to_string_pretty(meta)? + "\n")?;
    Ok(())
}

/// Read a CSV this program wrote (and its sidecar, if any).
pub fn read_csv(path: &Path) -> Result<(Vec<Sample>, Meta)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    if lines.next() != Some(Sample::CSV_HEADER) {
        bail!("{} does not start with the expected header", path.display());
    }
    let samples = lines
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| Sample::from_csv(l).with_context(|| format!("{} line {}", path.display(), i + 2)))
        .collect::<Result<Vec<_>>>()?;
    let meta = match std::fs::read_to_string(meta_path(path)) {
        Ok(t) => serde_json::from_str(&t).context("reading the .meta.json sidecar")?,
        Err(_) => Meta::default(),
    };
    Ok((samples, meta))
}

// ── statistics ───────────────────────────────────────────────────────────────────────────────────────

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

struct Data<'a> {
    samples: &'a [Sample],
}

impl<'a> Data<'a> {
    fn cell(&self, phase: &str, size: &str, mode: Mode) -> Vec<&'a Sample> {
        self.samples.iter().filter(|s| s.phase == phase && s.size == size && s.mode == mode.name()).collect()
    }

    fn values(&self, phase: &str, size: &str, mode: Mode, f: impl Fn(&Sample) -> f64) -> Vec<f64> {
        self.cell(phase, size, mode).into_iter().map(f).collect()
    }

    fn med(&self, phase: &str, size: &str, mode: Mode, f: impl Fn(&Sample) -> f64) -> f64 {
        median(&self.values(phase, size, mode, f))
    }

    fn sizes(&self, phase: &str) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for s in self.samples.iter().filter(|s| s.phase == phase) {
            if !v.contains(&s.size) {
                v.push(s.size.clone());
            }
        }
        v
    }

    fn modes(&self, phase: &str) -> Vec<Mode> {
        ALL_MODES.into_iter().filter(|m| self.samples.iter().any(|s| s.phase == phase && s.mode == m.name())).collect()
    }

    fn reps(&self, phase: &str) -> usize {
        self.samples.iter().filter(|s| s.phase == phase).map(|s| s.rep).max().unwrap_or(0)
    }
}

fn fmt_n(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn mmm(v: &[f64]) -> String {
    if v.len() <= 1 {
        return fmt_n(median(v));
    }
    format!("{} [{}–{}]", fmt_n(median(v)), fmt_n(min(v)), fmt_n(max(v)))
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".into()
    }
}

// ── Markdown ─────────────────────────────────────────────────────────────────────────────────────────

fn markdown(samples: &[Sample], meta: &Meta, svg_name: &str) -> String {
    let d = Data { samples };
    let mut o = String::new();
    let _ = writeln!(o, "# srv6pipes benchmark (paper Fig. 6): router vs HAProxy vs srv6pipes-proxy\n");
    if meta.quick {
        let _ = writeln!(o, "**Development run (--quick): short runs, one repetition; not a result.**\n");
    }
    let _ = writeln!(
        o,
        "Date: {} · kernel {} · {} × {} · {} · {} · git {}  ",
        meta.date, meta.kernel, meta.cpus, meta.cpu_model, meta.memory, meta.os, meta.git
    );
    let v: Vec<String> = meta.versions.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(o, "Versions: {}  ", v.join(" · "));
    let _ = writeln!(
        o,
        "Load: `wrk -t{} -c{} -d{}s`, {} interleaved repetition(s) per cell (modes × sizes × reps, mode innermost), \
         {} s warm-up per mode and phase; relays and server with {} thread(s)/worker(s); proxy-xor = `xor`, key 0, \
         {} pass(es). Shaped phase: tc tbf {} on all four veth egresses.  ",
        meta.threads,
        meta.connections,
        meta.duration_s,
        meta.reps,
        meta.warmup_s,
        meta.workers,
        meta.xor_passes,
        meta.rate
    );
    let _ = writeln!(
        o,
        "Quietness: the machine was {:.1} % busy before and {:.1} % after the run, with nothing of the bench \
         running (2 s samples; near 0 = quiet). Wall time {:.1} min.\n",
        meta.idle_busy_before,
        meta.idle_busy_after,
        meta.wall_s / 60.0
    );
    let noise: Vec<f64> = samples.iter().map(|s| s.noise_pct).filter(|v| v.is_finite()).collect();
    let noisy = noise.iter().filter(|v| **v > 10.0).count();
    if !noise.is_empty() {
        let _ = writeln!(
            o,
            "Noise probe (busy % of the machine in the pause after each run, when nothing of the bench runs): \
             median {:.1} %, max {:.1} %; {noisy} of {} runs above 10 %.\n",
            median(&noise),
            max(&noise),
            noise.len()
        );
    }
    if meta.idle_busy_before > 10.0 || meta.idle_busy_after > 10.0 || noisy > 0 {
        let _ = writeln!(o, "**Warning: other work was running on the machine; these numbers are noisy.**\n");
    }
    let _ = writeln!(o, "![ratios to the router]({svg_name})\n");
    let _ = writeln!(o, "Columns are explained in bench/README.md. Cells: median [min–max] over the repetitions.\n");

    // Summary first: the Fig. 6 ratios and the goals.
    summary(&mut o, &d);

    for phase in ["unshaped", "shaped"] {
        let sizes = d.sizes(phase);
        if sizes.is_empty() {
            continue;
        }
        let modes = d.modes(phase);
        let title = if phase == "shaped" { format!("shaped to {}", meta.rate) } else { "unshaped".to_string() };
        let _ = writeln!(o, "\n## {title}: throughput (n = {} per cell)\n", d.reps(phase));
        let _ = writeln!(
            o,
            "| size | mode | req/s | goodput Mb/s | wire Mb/s | req/s ÷ router | p50 ms | p99 ms | errors | noise % (max) |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
        for size in &sizes {
            let base = d.med(phase, size, Mode::Router, |s| s.rps);
            for &m in &modes {
                let rps = d.values(phase, size, m, |s| s.rps);
                if rps.is_empty() {
                    continue;
                }
                let _ = writeln!(
                    o,
                    "| {size} | {m} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
                    mmm(&rps),
                    mmm(&d.values(phase, size, m, |s| s.goodput_mbps)),
                    fmt_n(d.med(phase, size, m, |s| s.wire_mbps)),
                    ratio(median(&rps), base),
                    fmt_n(d.med(phase, size, m, |s| s.p50_ms)),
                    fmt_n(d.med(phase, size, m, |s| s.p99_ms)),
                    d.values(phase, size, m, |s| s.errors).iter().sum::<f64>(),
                    max(&d.values(phase, size, m, |s| s.noise_pct))
                );
            }
        }
        let _ = writeln!(o, "\n## {title}: CPU (medians; % of all CPUs; CPU-s per {} s run)\n", meta.duration_s);
        let _ = writeln!(
            o,
            "| size | mode | busy % | softirq % | machine CPU-s | relay CPU-s | relay µs/req | machine cores per Gbit/s | \
             ÷ router | relay cores per Gbit/s | ÷ haproxy | wrk CPU-s | server CPU-s | relay peak RSS kB |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for size in &sizes {
            let base_sys = d.med(phase, size, Mode::Router, Sample::sys_cores_per_gbps);
            let hap_relay = d.med(phase, size, Mode::Haproxy, Sample::relay_cores_per_gbps);
            for &m in &modes {
                if d.cell(phase, size, m).is_empty() {
                    continue;
                }
                let relay = !matches!(m, Mode::Router | Mode::RouterSrh);
                let dash = |v: String| if relay { v } else { "–".to_string() };
                let sys = d.med(phase, size, m, Sample::sys_cores_per_gbps);
                let rel = d.med(phase, size, m, Sample::relay_cores_per_gbps);
                let _ = writeln!(
                    o,
                    "| {size} | {m} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    d.med(phase, size, m, |s| s.busy_pct),
                    d.med(phase, size, m, |s| s.softirq_pct),
                    fmt_n(d.med(phase, size, m, |s| s.busy_cpu_s)),
                    dash(mmm(&d.values(phase, size, m, |s| s.relay_cpu_s))),
                    dash(fmt_n(d.med(phase, size, m, Sample::relay_us_per_req))),
                    fmt_n(sys),
                    ratio(sys, base_sys),
                    dash(fmt_n(rel)),
                    dash(ratio(rel, hap_relay)),
                    fmt_n(d.med(phase, size, m, |s| s.wrk_cpu_s)),
                    fmt_n(d.med(phase, size, m, |s| s.server_cpu_s)),
                    dash(format!("{:.0}", max(&d.values(phase, size, m, |s| s.relay_rss_kb)))),
                );
            }
        }
    }
    if let Some(stats) = &meta.proxy_stats_sample {
        let _ = writeln!(o, "\nsrv6pipes-proxy counters at the end of its last run (`ctl stats`): `{stats}`");
    }
    o
}

fn summary(o: &mut String, d: &Data) {
    let relay_modes: Vec<Mode> = ALL_MODES.into_iter().filter(|m| *m != Mode::Router).collect();
    let un_modes: Vec<Mode> = d.modes("unshaped").into_iter().filter(|m| *m != Mode::Router).collect();
    let sh_modes: Vec<Mode> = d.modes("shaped").into_iter().filter(|m| *m != Mode::Router).collect();
    let cols: Vec<Mode> = relay_modes.into_iter().filter(|m| un_modes.contains(m) || sh_modes.contains(m)).collect();
    if cols.is_empty() {
        return;
    }
    let _ = writeln!(o, "## Summary: ratio to the router (medians)\n");
    let _ = write!(o, "| measure |");
    for m in &cols {
        let _ = write!(o, " {m} |");
    }
    let _ = writeln!(o, "\n|---|{}", "---|".repeat(cols.len()));
    for size in d.sizes("unshaped") {
        let base = d.med("unshaped", &size, Mode::Router, |s| s.rps);
        let _ = write!(o, "| {size} req/s, unshaped |");
        for &m in &cols {
            let _ = write!(o, " {} |", ratio(d.med("unshaped", &size, m, |s| s.rps), base));
        }
        let _ = writeln!(o);
    }
    for size in d.sizes("shaped") {
        let base = d.med("shaped", &size, Mode::Router, |s| s.goodput_mbps);
        let _ = write!(o, "| {size} goodput, shaped |");
        for &m in &cols {
            let _ = write!(o, " {} |", ratio(d.med("shaped", &size, m, |s| s.goodput_mbps), base));
        }
        let _ = writeln!(o);
        let base = d.med("shaped", &size, Mode::Router, Sample::sys_cores_per_gbps);
        let _ = write!(o, "| {size} machine CPU per Gbit/s, shaped |");
        for &m in &cols {
            let _ = write!(o, " {} |", ratio(d.med("shaped", &size, m, Sample::sys_cores_per_gbps), base));
        }
        let _ = writeln!(o);
    }

    // Goals (issue 3): beat HAProxy at every size unshaped; less CPU than HAProxy per Gbit/s shaped.
    let mut goals = String::new();
    for m in [Mode::ProxyCopy, Mode::ProxyXor, Mode::ProxyCopyNosplice] {
        for size in d.sizes("unshaped") {
            let p = d.values("unshaped", &size, m, |s| s.rps);
            let h = d.values("unshaped", &size, Mode::Haproxy, |s| s.rps);
            if p.is_empty() || h.is_empty() {
                continue;
            }
            let r = median(&p) / median(&h);
            let robust = if min(&p) > max(&h) {
                ", every repetition"
            } else if max(&p) < min(&h) {
                ", every repetition slower"
            } else {
                ", ranges overlap"
            };
            let _ = writeln!(
                goals,
                "- {} {m} vs haproxy, {size} unshaped: {r:.2}× the req/s{robust}",
                if r > 1.0 { "✅" } else { "❌" }
            );
        }
        for size in d.sizes("shaped") {
            let p = d.med("shaped", &size, m, Sample::relay_cores_per_gbps);
            let h = d.med("shaped", &size, Mode::Haproxy, Sample::relay_cores_per_gbps);
            let ps = d.med("shaped", &size, m, Sample::sys_cores_per_gbps);
            let hs = d.med("shaped", &size, Mode::Haproxy, Sample::sys_cores_per_gbps);
            if !(p.is_finite() && h.is_finite()) {
                continue;
            }
            let _ = writeln!(
                goals,
                "- {} {m} vs haproxy, {size} shaped: relay CPU per Gbit/s {:.2}× haproxy's ({} vs {} cores per \
                 Gbit/s); whole machine {:.2}×",
                if p < h { "✅" } else { "❌" },
                p / h,
                fmt_n(p),
                fmt_n(h),
                ps / hs
            );
        }
    }
    if !goals.is_empty() {
        let _ = writeln!(
            o,
            "\n### Goals (issue 3): beat HAProxy at every size unshaped; less CPU than HAProxy per Gbit/s shaped\n"
        );
        o.push_str(&goals);
    }
}

// ── SVG ──────────────────────────────────────────────────────────────────────────────────────────────

fn color(m: Mode) -> &'static str {
    match m {
        Mode::Router => "#7f7f7f",
        Mode::RouterSrh => "#bcbd22",
        Mode::Haproxy => "#d62728",
        Mode::ProxyCopy => "#1f77b4",
        Mode::ProxyXor => "#2ca02c",
        Mode::ProxyCopyNosplice => "#9467bd",
    }
}

struct Bar {
    mode: Mode,
    med: f64,
    lo: f64,
    hi: f64,
}

fn nice_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10.0 * mag
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[allow(clippy::too_many_arguments)]
fn panel(
    o: &mut String,
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    title: &str,
    ylabel: &str,
    groups: &[(String, Vec<Bar>)],
    refline: Option<f64>,
) {
    let (l, r, t, b) = (48.0, 8.0, 34.0, 28.0);
    let (pw, ph) = (w - l - r, h - t - b);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        x + 4.0,
        y + 16.0,
        esc(title)
    );
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" font-size="10" transform="rotate(-90 {} {})" text-anchor="middle">{}</text>"#,
        x + 11.0,
        y + t + ph / 2.0,
        x + 11.0,
        y + t + ph / 2.0,
        esc(ylabel)
    );
    let vmax = groups
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(|b| b.hi.max(b.med)))
        .filter(|v| v.is_finite())
        .fold(refline.unwrap_or(0.0), f64::max)
        * 1.12;
    if vmax <= 0.0 || groups.is_empty() {
        let _ = writeln!(o, r#"<text x="{}" y="{}" font-size="11">no data</text>"#, x + l, y + t + 20.0);
        return;
    }
    let step = nice_step(vmax);
    let top = (vmax / step).ceil() * step;
    let sy = |v: f64| y + t + ph - v / top * ph;
    let x0 = x + l;
    let mut v = 0.0;
    for _ in 0..20 {
        if v > top + step * 0.01 {
            break;
        }
        let yy = sy(v);
        let _ = writeln!(o, r##"<line x1="{x0}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/>"##, x0 + pw);
        let decimals =
            (0..4).find(|&d| ((step * 10f64.powi(d)).round() - step * 10f64.powi(d)).abs() < 1e-6).unwrap_or(3);
        let label = format!("{v:.*}", decimals as usize);
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{label}</text>"#,
            x0 - 4.0,
            yy + 3.0
        );
        v += step;
    }
    let _ = writeln!(o, r##"<line x1="{x0}" y1="{:.1}" x2="{x0}" y2="{:.1}" stroke="#444"/>"##, y + t, y + t + ph);
    let _ =
        writeln!(o, r##"<line x1="{x0}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#444"/>"##, sy(0.0), x0 + pw, sy(0.0));
    let gw = pw / groups.len() as f64;
    for (gi, (label, bars)) in groups.iter().enumerate() {
        let gx = x0 + gi as f64 * gw;
        let bw = (gw * 0.8 / bars.len().max(1) as f64).min(40.0);
        let start = gx + (gw - bw * bars.len() as f64) / 2.0;
        for (bi, bar) in bars.iter().enumerate() {
            if !bar.med.is_finite() {
                continue;
            }
            let bx = start + bi as f64 * bw;
            let _ = writeln!(
                o,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {:.3}</title></rect>"#,
                bx + 1.0,
                sy(bar.med),
                bw - 2.0,
                (sy(0.0) - sy(bar.med)).max(0.0),
                color(bar.mode),
                esc(label),
                bar.mode,
                bar.med
            );
            if bar.lo.is_finite() && bar.hi.is_finite() && bar.hi > bar.lo {
                let cx = bx + bw / 2.0;
                let _ = writeln!(
                    o,
                    r##"<line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="#000" stroke-width="1"/>"##,
                    sy(bar.lo),
                    sy(bar.hi)
                );
            }
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" font-size="8" text-anchor="middle">{}</text>"#,
                bx + bw / 2.0,
                sy(bar.hi.max(bar.med)) - 3.0,
                if bar.med >= 10.0 { format!("{:.0}", bar.med) } else { format!("{:.2}", bar.med) }
            );
        }
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            gx + gw / 2.0,
            sy(0.0) + 16.0,
            esc(label)
        );
    }
    if let Some(rv) = refline {
        let _ = writeln!(
            o,
            r##"<line x1="{x0}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#000" stroke-dasharray="4 3"/>"##,
            sy(rv),
            x0 + pw,
            sy(rv)
        );
    }
}

fn svg(samples: &[Sample], meta: &Meta) -> String {
    let d = Data { samples };
    // A: unshaped req/s ÷ router. B: shaped machine CPU per Gbit/s ÷ router. C: shaped relay CPU per Gbit/s.
    let ratio_bars = |phase: &str, f: fn(&Sample) -> f64, modes: &[Mode]| -> Vec<(String, Vec<Bar>)> {
        d.sizes(phase)
            .into_iter()
            .map(|size| {
                let base = d.med(phase, &size, Mode::Router, f);
                let bars = modes
                    .iter()
                    .map(|&m| {
                        let v = d.values(phase, &size, m, f);
                        Bar { mode: m, med: median(&v) / base, lo: min(&v) / base, hi: max(&v) / base }
                    })
                    .collect();
                (size, bars)
            })
            .collect()
    };
    let un_modes = d.modes("unshaped");
    let sh_modes = d.modes("shaped");
    let a = ratio_bars("unshaped", |s| s.rps, &un_modes);
    let b = ratio_bars("shaped", Sample::sys_cores_per_gbps, &sh_modes);
    let relay_modes: Vec<Mode> =
        sh_modes.iter().copied().filter(|m| !matches!(m, Mode::Router | Mode::RouterSrh)).collect();
    let c: Vec<(String, Vec<Bar>)> = d
        .sizes("shaped")
        .into_iter()
        .map(|size| {
            let bars = relay_modes
                .iter()
                .map(|&m| {
                    let v = d.values("shaped", &size, m, Sample::relay_cores_per_gbps);
                    Bar { mode: m, med: median(&v), lo: min(&v), hi: max(&v) }
                })
                .collect();
            (size, bars)
        })
        .collect();
    // (title, y label, bar groups, reference line)
    type Panel = (String, &'static str, Vec<(String, Vec<Bar>)>, Option<f64>);
    let mut panels: Vec<Panel> = Vec::new();
    if !a.is_empty() {
        panels.push(("Unshaped: requests/s ÷ router".into(), "ratio to router", a, Some(1.0)));
    }
    if !b.is_empty() {
        panels.push((format!("Shaped {}: machine CPU/Gbit ÷ router", meta.rate), "ratio to router", b, Some(1.0)));
    }
    if !c.is_empty() && !relay_modes.is_empty() {
        panels.push((format!("Shaped {}: relay CPU per Gbit/s", meta.rate), "cores per Gbit/s", c, None));
    }
    let (pw, ph) = (330.0, 330.0);
    let width = pw * panels.len().max(1) as f64 + 20.0;
    let height = ph + 70.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, (title, ylabel, groups, refline)) in panels.iter().enumerate() {
        panel(&mut o, 10.0 + i as f64 * pw, 10.0, pw, ph, title, ylabel, groups, *refline);
    }
    // Legend.
    let mut lx = 20.0;
    let ly = ph + 30.0;
    let modes: Vec<Mode> = ALL_MODES.into_iter().filter(|m| un_modes.contains(m) || sh_modes.contains(m)).collect();
    for m in modes {
        let _ = writeln!(o, r#"<rect x="{lx}" y="{ly}" width="12" height="12" fill="{}"/>"#, color(m));
        let _ = writeln!(o, r#"<text x="{}" y="{}" font-size="11">{m}</text>"#, lx + 16.0, ly + 10.0);
        lx += 30.0 + 7.0 * m.name().len() as f64;
    }
    let _ = writeln!(
        o,
        r##"<text x="20" y="{}" font-size="10" fill="#555">{} · kernel {} · {} CPU(s) · wrk -t{} -c{} -d{}s · median of {} rep(s), whiskers min–max{}</text>"##,
        ly + 30.0,
        esc(&meta.date),
        esc(&meta.kernel),
        meta.cpus,
        meta.threads,
        meta.connections,
        meta.duration_s,
        meta.reps,
        if meta.quick { " · QUICK (development) RUN" } else { "" }
    );
    let _ = writeln!(o, "</svg>");
    o
}

/// Write `NAME.md` and `NAME.svg` next to `csv`; returns the Markdown's path.
pub fn write_reports(samples: &[Sample], meta: &Meta, csv: &Path) -> Result<PathBuf> {
    let md_path = csv.with_extension("md");
    let svg_path = csv.with_extension("svg");
    let svg_name = svg_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    std::fs::write(&svg_path, svg(samples, meta)).with_context(|| format!("writing {}", svg_path.display()))?;
    std::fs::write(&md_path, markdown(samples, meta, &svg_name))
        .with_context(|| format!("writing {}", md_path.display()))?;
    Ok(md_path)
}

/// `latest.md`: the newest full run's report, with links to its files.
pub fn write_latest(md: &Path, latest: &Path) -> Result<()> {
    let name = md.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = std::fs::read_to_string(md)?;
    let head = format!(
        "<!-- generated by srv6pipes-bench: the newest full run; files {name}.csv (raw, one row per run), \
         {name}.meta.json, {name}.md, {name}.svg -->\n"
    );
    std::fs::write(latest, head + &text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(phase: &str, size: &str, mode: &str, rps: f64) -> Sample {
        Sample {
            phase: phase.into(),
            rep: 1,
            size: size.into(),
            mode: mode.into(),
            requests: rps * 10.0,
            dur_s: 10.0,
            rps,
            goodput_mbps: rps * 0.8,
            wire_mbps: rps * 0.85,
            p50_ms: 1.0,
            p99_ms: 2.0,
            errors: 0.0,
            busy_pct: 99.0,
            user_pct: 10.0,
            sys_pct: 60.0,
            softirq_pct: 29.0,
            steal_pct: 0.0,
            busy_cpu_s: 19.8,
            softirq_cpu_s: 5.8,
            relay_cpu_s: 7.5,
            relay_rss_kb: 8000.0,
            wrk_cpu_s: 5.0,
            server_cpu_s: 6.0,
            noise_pct: 0.5,
        }
    }

    #[test]
    fn csv_round_trip_and_reports() {
        let v = vec![
            s("unshaped", "1k", "router", 1000.0),
            s("unshaped", "1k", "haproxy", 900.0),
            s("unshaped", "1k", "proxy-copy", 950.0),
            s("shaped", "10m", "router", 10.0),
            s("shaped", "10m", "haproxy", 10.0),
            s("shaped", "10m", "proxy-copy", 10.0),
        ];
        for x in &v {
            let back = Sample::from_csv(&x.to_csv()).unwrap();
            assert_eq!(back.to_csv(), x.to_csv());
        }
        let md = markdown(&v, &Meta::default(), "x.svg");
        assert!(md.contains("| 1k | haproxy | 900 |"), "{md}");
        assert!(md.contains("proxy-copy vs haproxy, 1k unshaped: 1.06×"), "{md}");
        let svg = svg(&v, &Meta::default());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn versions() {
        assert_eq!(version("nginx version: nginx/1.22.1"), "1.22.1");
        assert_eq!(version("HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"), "2.6.12-1+deb12u4");
        assert_eq!(version("wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer"), "4.1.0-3+b2");
        assert_eq!(version("nftables v1.0.6 (Lester Gooch #5)"), "v1.0.6");
        assert_eq!(version("ip utility, iproute2-6.1.0, libbpf 1.1.2"), "6.1.0");
        assert_eq!(version("srv6pipes-proxy 0.1.0"), "0.1.0");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
