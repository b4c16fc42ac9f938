//! `srv6reply` in a host (host-wide reply steering) and its counters.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{binaries, Net, Proc};

/// Bound on the daemon coming up (the verifier runs then).
const TIMEOUT: Duration = Duration::from_secs(30);

/// A srv6reply process (stopped, and its programs detached, when dropped).
pub struct ReplyDaemon {
    proc: Proc,
    stats: PathBuf,
}

impl ReplyDaemon {
    /// Start `srv6reply --dev DEVS EXTRA…` in `host`, counters written every second; returns once it is
    /// attached.
    pub fn start(net: &Net, host: &str, devs: &str, extra: &[&str]) -> Result<ReplyDaemon> {
        let stats = net.path(&format!("srv6reply-{host}.json"));
        let mut proc = net
            .cmd(host, [binaries::path("srv6reply")?])
            .args(["--dev", devs, "--interval", "1", "--stats"])
            .arg(&stats)
            .args(extra)
            .spawn()?;
        proc.wait_until(&format!("srv6reply in {host} to attach"), TIMEOUT, |p| {
            Ok(p.stderr().contains("srv6reply ready") && stats.exists())
        })?;
        Ok(ReplyDaemon { proc, stats })
    }

    /// The counters of the last reading (at most about a second old), by name.
    pub fn counters(&mut self) -> Result<serde_json::Value> {
        self.proc.ensure_running()?;
        let text = std::fs::read_to_string(&self.stats).with_context(|| format!("reading {}", self.stats.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: {text}", self.stats.display()))
    }

    /// One counter of the last reading.
    pub fn counter(&mut self, name: &str) -> Result<u64> {
        let c = self.counters()?;
        c.get(name).and_then(|v| v.as_u64()).with_context(|| format!("no counter {name} in {c}"))
    }

    /// What the daemon logged so far.
    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }
}
