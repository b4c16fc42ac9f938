//! What one run measures: system-wide CPU (`/proc/stat`), per-process CPU (`/proc/PID/stat`), peak RSS,
//! interface byte counters, the CPU of our reaped children (wrk), and wrk's own summary.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use srv6pipes_tests::Net;

/// Clock ticks per second of the `/proc` CPU counters.
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The aggregate `cpu` line of `/proc/stat`, in ticks (all CPUs together).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuStat {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuStat {
    pub fn read() -> Result<CpuStat> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = text.lines().find(|l| l.starts_with("cpu ")).context("/proc/stat has no cpu line")?;
        let v: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap_or(0)).collect();
        let g = |i: usize| v.get(i).copied().unwrap_or(0);
        Ok(CpuStat {
            user: g(0),
            nice: g(1),
            system: g(2),
            idle: g(3),
            iowait: g(4),
            irq: g(5),
            softirq: g(6),
            steal: g(7),
        })
    }

    fn total(&self) -> u64 {
        self.user + self.nice + self.system + self.idle + self.iowait + self.irq + self.softirq + self.steal
    }

    /// The change from `self` to `later`.
    pub fn delta(&self, later: &CpuStat) -> CpuDelta {
        let d = |a: u64, b: u64| b.saturating_sub(a) as f64;
        let total = d(self.total(), later.total()).max(1.0);
        let idle = d(self.idle, later.idle) + d(self.iowait, later.iowait);
        let tck = clk_tck();
        CpuDelta {
            busy_pct: 100.0 * (total - idle) / total,
            user_pct: 100.0 * (d(self.user, later.user) + d(self.nice, later.nice)) / total,
            sys_pct: 100.0 * (d(self.system, later.system) + d(self.irq, later.irq)) / total,
            softirq_pct: 100.0 * d(self.softirq, later.softirq) / total,
            steal_pct: 100.0 * d(self.steal, later.steal) / total,
            busy_cpu_s: (total - idle) / tck,
            softirq_cpu_s: d(self.softirq, later.softirq) / tck,
        }
    }
}

/// System-wide CPU over an interval. Percentages are of all CPUs together (100 = every CPU busy).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuDelta {
    pub busy_pct: f64,
    pub user_pct: f64,
    pub sys_pct: f64,
    pub softirq_pct: f64,
    pub steal_pct: f64,
    /// CPU-seconds not idle, all CPUs together.
    pub busy_cpu_s: f64,
    /// CPU-seconds in softirq (packet processing charged to no process), all CPUs together.
    pub softirq_cpu_s: f64,
}

/// How busy the machine is while the bench does nothing: busy % of all CPUs over `over`.
pub fn idle_busy_pct(over: Duration) -> Result<f64> {
    let a = CpuStat::read()?;
    std::thread::sleep(over);
    Ok(a.delta(&CpuStat::read()?).busy_pct)
}

/// utime + stime of processes (whole thread groups), in ticks. Processes that are gone count 0.
pub fn proc_ticks(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            // Fields after the command name (which may contain spaces): state is field 3, utime 14, stime 15.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Largest `VmHWM` (peak resident set, kB) among `pids`.
pub fn peak_rss_kb(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Reset the peak RSS of `pids` (`echo 5 > /proc/PID/clear_refs`).
pub fn reset_peak_rss(pids: &[i32]) {
    for p in pids {
        let _ = std::fs::write(format!("/proc/{p}/clear_refs"), "5");
    }
}

/// The processes in `host`'s namespace whose command name is `comm`.
pub fn pids_named(net: &Net, host: &str, comm: &str) -> Result<Vec<i32>> {
    let ns = net.ns(host)?;
    let list = srv6pipes_tests::Cmd::new(["ip", "netns", "pids", ns]).timeout(Duration::from_secs(10)).run()?;
    Ok(list
        .stdout
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm))
        .collect())
}

/// Bytes received by `dev` in `host` so far.
pub fn rx_bytes(net: &Net, host: &str, dev: &str) -> Result<u64> {
    let path = format!("/sys/class/net/{dev}/statistics/rx_bytes");
    let out = net.cmd(host, ["cat", &path]).timeout(Duration::from_secs(10)).run()?;
    out.stdout.trim().parse().with_context(|| format!("{path} in {host}: {:?}", out.stdout))
}

/// User + system CPU-seconds of every child this process has reaped so far (and their reaped
/// descendants): the difference around one `Cmd::output` is that command's CPU.
pub fn children_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The wrk script that prints one machine-readable line.
pub const REPORT_LUA: &str = r#"-- srv6pipes-bench: one machine-readable summary line
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\n",
    summary.requests, summary.bytes, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"#;

/// What wrk reported.
#[derive(Debug, Clone, Copy, Default)]
pub struct WrkResult {
    pub requests: f64,
    /// HTTP bytes received (headers included).
    pub bytes: f64,
    pub duration_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Connect, read, write and timeout errors plus responses with a status of 400 or more.
    pub errors: f64,
}

/// Parse wrk's output (with [`REPORT_LUA`]).
pub fn parse_wrk(stdout: &str) -> Result<WrkResult> {
    let line = stdout.lines().find(|l| l.starts_with("RESULT ")).context("wrk printed no RESULT line")?;
    let v: Vec<f64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap_or(f64::NAN)).collect();
    if v.len() != 10 || v.iter().any(|x| x.is_nan()) {
        bail!("unexpected wrk RESULT line {line:?}");
    }
    let mut bytes = v[1];
    // Older wrk/Lua builds saturate summary.bytes at 2^31-1: fall back to "Transfer/sec" (3 digits).
    if bytes == 2_147_483_647.0 {
        if let Some(tps) = transfer_per_sec(stdout) {
            bytes = tps * v[2] / 1e6;
        }
    }
    Ok(WrkResult {
        requests: v[0],
        bytes,
        duration_s: v[2] / 1e6,
        p50_ms: v[3] / 1e3,
        p99_ms: v[4] / 1e3,
        errors: v[5] + v[6] + v[7] + v[8] + v[9],
    })
}

/// wrk's `Transfer/sec:  1.23GB` in bytes per second (1024-based units).
fn transfer_per_sec(stdout: &str) -> Option<f64> {
    let v = stdout.lines().find(|l| l.starts_with("Transfer/sec:"))?.split_whitespace().nth(1)?;
    let (num, mult) = if let Some(n) = v.strip_suffix("GB") {
        (n, 1024.0 * 1024.0 * 1024.0)
    } else if let Some(n) = v.strip_suffix("MB") {
        (n, 1024.0 * 1024.0)
    } else if let Some(n) = v.strip_suffix("KB") {
        (n, 1024.0)
    } else {
        (v.strip_suffix('B')?, 1.0)
    };
    Some(num.parse::<f64>().ok()? * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_parses() {
        let out = "Running 1s test\n  Requests/sec:   1000.00\nTransfer/sec:      1.50GB\n\
                   RESULT 1000 2147483647 2000000 1500 9000 0 1 0 2 0\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.requests, 1000.0);
        assert_eq!(r.duration_s, 2.0);
        assert_eq!(r.p50_ms, 1.5);
        assert_eq!(r.errors, 3.0);
        // saturated bytes → Transfer/sec × duration
        assert!((r.bytes - 1.5 * 1024.0 * 1024.0 * 1024.0 * 2.0).abs() < 1.0);
        assert!(parse_wrk("no result").is_err());
    }
}
