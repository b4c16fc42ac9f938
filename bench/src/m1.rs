//! What m1 runs in each mode, and switching between modes.
//!
//! Only one relay exists at a time, so the router modes see a bare m1 (no nftables table, no policy rule):
//! HAProxy is started with its tproxy rules when a HAProxy mode begins and stopped, rules removed, when it
//! ends; srv6pipes-proxy is started for the proxy modes and installs and removes its own datapath.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use srv6pipes_api::control::{decode_reply, Stats, StatsReply};
use srv6pipes_tests::{Net, Proc};

use crate::measure::pids_named;
use crate::mode::Mode;
use crate::topology::{PROXY_PREFIX, SERVER};

const T: Duration = Duration::from_secs(10);
/// HAProxy's listener (the nft tproxy target), as in the baseline.
const HAPROXY_PORT: u16 = 8080;
/// srv6pipes-proxy's listener.
pub const PROXY_PORT: u16 = 5001;

/// The relay process a mode needs on m1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// Plain forwarding (also the End SID mode: the kernel's seg6local route is always installed).
    None,
    Haproxy,
    Proxy {
        splice: bool,
    },
}

impl Relay {
    pub fn of(mode: Mode) -> Relay {
        match mode {
            Mode::Router | Mode::RouterSrh => Relay::None,
            Mode::Haproxy => Relay::Haproxy,
            Mode::ProxyCopy | Mode::ProxyXor => Relay::Proxy { splice: true },
            Mode::ProxyCopyNosplice => Relay::Proxy { splice: false },
        }
    }
}

/// m1's current state.
pub struct M1<'a> {
    net: &'a Net,
    proxy_bin: Option<PathBuf>,
    workers: usize,
    relay: Relay,
    proc: Option<Proc>,
    pids: Vec<i32>,
    control: PathBuf,
}

impl<'a> M1<'a> {
    pub fn new(net: &'a Net, proxy_bin: Option<PathBuf>, workers: usize) -> M1<'a> {
        let control = net.dir().join("proxy.sock");
        M1 { net, proxy_bin, workers, relay: Relay::None, proc: None, pids: Vec::new(), control }
    }

    /// The relay's processes (empty for the router modes).
    pub fn pids(&self) -> &[i32] {
        &self.pids
    }

    /// Error (with its log) if the relay died.
    pub fn ensure_running(&mut self) -> Result<()> {
        match &mut self.proc {
            Some(p) => p.ensure_running(),
            None => Ok(()),
        }
    }

    /// The relay's standard error so far (for messages).
    pub fn relay_log(&self) -> String {
        self.proc.as_ref().map(|p| p.stderr()).unwrap_or_default()
    }

    /// Put m1 in the state `mode` needs (nothing to do when the relay is already the right one).
    pub fn enter(&mut self, mode: Mode) -> Result<()> {
        let want = Relay::of(mode);
        if want == self.relay && (want == Relay::None || self.proc.is_some()) {
            return self.ensure_running();
        }
        self.leave()?;
        match want {
            Relay::None => {}
            Relay::Haproxy => self.start_haproxy().context("starting HAProxy on m1")?,
            Relay::Proxy { splice } => self.start_proxy(splice).context("starting srv6pipes-proxy on m1")?,
        }
        self.relay = want;
        Ok(())
    }

    /// Stop the relay and remove its rules; m1 is a plain router afterwards (checked).
    pub fn leave(&mut self) -> Result<()> {
        let relay = std::mem::replace(&mut self.relay, Relay::None);
        self.pids.clear();
        let mut problems = Vec::new();
        if relay == Relay::Haproxy {
            for argv in [
                vec!["nft", "delete", "table", "ip6", "bench_haproxy"],
                vec!["ip", "-6", "rule", "del", "fwmark", "1", "lookup", "100", "pref", "100"],
                vec!["ip", "-6", "route", "del", "local", "::/0", "dev", "lo", "table", "100"],
            ] {
                if let Err(e) = self.net.cmd("m1", argv).timeout(T).run() {
                    problems.push(format!("{e:#}"));
                }
            }
        }
        if let Some(p) = self.proc.take() {
            let out = p.stop()?;
            // srv6pipes-proxy exits 0 on SIGTERM after removing its datapath; HAProxy exits on SIGTERM too.
            if matches!(relay, Relay::Proxy { .. }) && !out.status.success() {
                problems.push(format!("srv6pipes-proxy did not exit cleanly: {out}"));
            }
        }
        // m1 must be bare now: no nft table, no policy rule to table 100.
        let tables = self.net.cmd("m1", ["nft", "list", "tables"]).timeout(T).run()?.stdout;
        if !tables.trim().is_empty() {
            problems.push(format!("nftables tables left on m1 after {relay:?}: {}", tables.trim()));
        }
        let rules = self.net.cmd("m1", ["ip", "-6", "rule", "list", "fwmark", "1"]).timeout(T).run()?.stdout;
        if !rules.trim().is_empty() {
            problems.push(format!("policy rule left on m1 after {relay:?}: {}", rules.trim()));
        }
        if !problems.is_empty() {
            bail!("leaving {relay:?}: {}", problems.join("\n"));
        }
        Ok(())
    }

    fn start_haproxy(&mut self) -> Result<()> {
        let net = self.net;
        let cfg_path = net.dir().join("haproxy.cfg");
        // The pre-project baseline's HAProxy configuration (copy mode), in the foreground.
        let cfg = format!(
            "global\n    nbthread {w}\n    maxconn 4000\n    log stderr format short local0 warning\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
             listen tproxy_copy\n    bind :::{HAPROXY_PORT} transparent\n    source [::] usesrc clientip\n    \
             server s1 ipv6@{SERVER}:80\n",
            w = self.workers
        );
        std::fs::write(&cfg_path, cfg)?;
        net.cmd("m1", ["haproxy", "-c", "-q", "-f"]).arg(&cfg_path).timeout(T).run()?;
        // Recorded first so that `leave` removes the rules and table even if the start fails below.
        self.relay = Relay::Haproxy;
        net.cmd("m1", ["ip", "-6", "rule", "add", "fwmark", "1", "lookup", "100", "pref", "100"]).timeout(T).run()?;
        net.cmd("m1", ["ip", "-6", "route", "add", "local", "::/0", "dev", "lo", "table", "100"]).timeout(T).run()?;
        let rules = format!(
            "table ip6 bench_haproxy {{\n  chain pre {{\n    type filter hook prerouting priority mangle; policy accept;\n    \
             meta l4proto tcp socket transparent 1 meta mark set 0x1 accept\n    \
             ip6 daddr {SERVER} tcp dport 80 tproxy to :{HAPROXY_PORT} meta mark set 0x1 accept\n  }}\n}}\n"
        );
        let rules_path = net.dir().join("haproxy.nft");
        std::fs::write(&rules_path, rules)?;
        net.cmd("m1", ["nft", "-f"]).arg(&rules_path).timeout(T).run()?;
        let mut proc = net.cmd("m1", ["haproxy", "-db", "-f"]).arg(&cfg_path).spawn()?;
        proc.wait_until("haproxy to listen", T, |_| {
            Ok(net.wait_for_tcp_port("m1", HAPROXY_PORT, Duration::ZERO).is_ok())
        })?;
        self.proc = Some(proc);
        self.pids = pids_named(net, "m1", "haproxy")?;
        if self.pids.is_empty() {
            bail!("no haproxy process found in m1");
        }
        Ok(())
    }

    fn start_proxy(&mut self, splice: bool) -> Result<()> {
        let net = self.net;
        let bin = self.proxy_bin.clone().context("no srv6pipes-proxy binary (see --bin-dir)")?;
        let mut cmd = net
            .cmd("m1", [bin.as_os_str()])
            .args(["--prefix", PROXY_PREFIX, "--port", &PROXY_PORT.to_string(), "--ingress", "eth0,eth1"])
            .args(["--workers", &self.workers.to_string()])
            .arg("--control")
            .arg(&self.control)
            .env("RUST_LOG", "warn,srv6pipes_proxy=info");
        if !splice {
            cmd = cmd.arg("--no-splice");
        }
        self.relay = Relay::Proxy { splice };
        let mut proc = cmd.spawn()?;
        let control = self.control.clone();
        proc.wait_until("srv6pipes-proxy to come up", T, |_| {
            Ok(control.exists()
                && net.wait_for_tcp_port("m1", PROXY_PORT, Duration::ZERO).is_ok()
                && nft_has_table(net, "srv6pipes"))
        })?;
        self.proc = Some(proc);
        let name: String = bin.file_name().map(|n| n.to_string_lossy().chars().take(15).collect()).unwrap_or_default();
        self.pids = pids_named(net, "m1", &name)?;
        if self.pids.is_empty() {
            bail!("no {name} process found in m1");
        }
        Ok(())
    }

    /// The proxy's counters (`ctl stats --json`) as `{"stats":{…}}`, if it runs and answers with the
    /// counters of `srv6pipes_api::control::Stats`: the reply is decoded as that type, so a renamed
    /// counter is no answer rather than a silent 0.
    pub fn proxy_stats(&self) -> Option<Stats> {
        let bin = self.proxy_bin.as_ref()?;
        if !matches!(self.relay, Relay::Proxy { .. }) {
            return None;
        }
        let out = self
            .net
            .cmd("m1", [bin.as_os_str()])
            .args(["ctl", "--json", "-s"])
            .arg(&self.control)
            .arg("stats")
            .timeout(T)
            .run()
            .ok()?;
        decode_reply::<StatsReply>(&out.stdout).ok().map(|r| r.stats)
    }
}

impl Drop for M1<'_> {
    fn drop(&mut self) {
        // Best effort; the namespaces go away with the Net anyway.
        let _ = self.leave();
    }
}

fn nft_has_table(net: &Net, name: &str) -> bool {
    net.cmd("m1", ["nft", "list", "tables"]).timeout(T).run().is_ok_and(|o| o.stdout.contains(name))
}

/// A program in the workspace's build directory, if it exists.
pub fn program(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = dir.join(name);
    p.is_file().then_some(p)
}
