//! A running `srv6pipes-proxy` in a host of a topology, and its control socket.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use srv6pipes_api::control::{
    decode_reply, ControlError, Flow, FlowsReply, ModuleInfo, ModulesReply, Stats, StatsReply,
};

use crate::{binaries, Net, Output, Proc};

/// Bound on the proxy coming up and on one control request.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A srv6pipes-proxy process (stopped, and its datapath removed, when dropped).
pub struct Proxy {
    host: String,
    control: PathBuf,
    state: PathBuf,
    proc: Proc,
}

impl Proxy {
    /// Start the proxy in `host` for the function prefix `prefix`, its listener on `port`, ingress on eth0
    /// and eth1, two workers, its control socket and state file in the test's directory (one of each per
    /// host, so that a second proxy in the host finds the first one's), plus `extra` options; returns once
    /// it is ready (listeners, datapath and control socket up).
    pub fn start(net: &Net, host: &str, prefix: &str, port: u16, extra: &[&str]) -> Result<Proxy> {
        Proxy::start_on(net, host, prefix, port, "eth0,eth1", extra)
    }

    /// As [`Proxy::start`], with the ingress devices `ingress` (comma-separated).
    pub fn start_on(net: &Net, host: &str, prefix: &str, port: u16, ingress: &str, extra: &[&str]) -> Result<Proxy> {
        Proxy::start_as(net, host, host, prefix, port, ingress, extra)
    }

    /// As [`Proxy::start_on`], its control socket and state file named `name` (a second proxy in the host).
    pub fn start_as(
        net: &Net,
        host: &str,
        name: &str,
        prefix: &str,
        port: u16,
        ingress: &str,
        extra: &[&str],
    ) -> Result<Proxy> {
        let control = net.dir().join(format!("{name}.sock"));
        let state = net.dir().join(format!("{name}.state"));
        let paths = [OsString::from("--control"), control.clone().into(), "--state".into(), state.clone().into()];
        Proxy::spawn(net, host, prefix, port, ingress, &paths, extra, control, state, &[])
    }

    /// As [`Proxy::start`], with the environment variables `env` too.
    pub fn start_env(
        net: &Net,
        host: &str,
        prefix: &str,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Proxy> {
        let control = net.dir().join(format!("{host}.sock"));
        let state = net.dir().join(format!("{host}.state"));
        let paths = [OsString::from("--control"), control.clone().into(), "--state".into(), state.clone().into()];
        Proxy::spawn(net, host, prefix, port, "eth0,eth1", &paths, extra, control, state, env)
    }

    /// As [`Proxy::start`] with no path option: the control socket and state file are the defaults of the
    /// host's network namespace, `/run/srv6pipes/netns-INODE/proxy.{sock,state}`.
    pub fn start_default(net: &Net, host: &str, prefix: &str, port: u16, extra: &[&str]) -> Result<Proxy> {
        let dir = namespace_dir(net, host)?;
        let (control, state) = (dir.join("proxy.sock"), dir.join("proxy.state"));
        Proxy::spawn(net, host, prefix, port, "eth0,eth1", &[], extra, control, state, &[])
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        net: &Net,
        host: &str,
        prefix: &str,
        port: u16,
        ingress: &str,
        paths: &[OsString],
        extra: &[&str],
        control: PathBuf,
        state: PathBuf,
        env: &[(&str, &str)],
    ) -> Result<Proxy> {
        let mut cmd = net.cmd(host, [binaries::path("srv6pipes-proxy")?]);
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        let mut proc = cmd
            .args(["--prefix", prefix, "--port", &port.to_string(), "--ingress", ingress, "--workers", "2"])
            .args(paths)
            .args(extra)
            .env("RUST_LOG", "debug")
            .spawn()?;
        // The control socket appears once the listeners and the datapath are up; it says so last.
        proc.wait_until(&format!("srv6pipes-proxy in {host} to come up"), TIMEOUT, |p| {
            Ok(control.exists() && p.stderr().contains("srv6pipes-proxy ready"))
        })?;
        Ok(Proxy { host: host.to_string(), control, state, proc })
    }

    /// `srv6pipes-proxy ctl --json ARGS` against this proxy: the reply decoded as `T`, or the proxy's
    /// refusal ([`ControlError::Refused`]); a reply that does not decode as `T` fails the call.
    pub fn ctl<T: DeserializeOwned>(&self, net: &Net, args: &[&str]) -> Result<std::result::Result<T, String>> {
        let out = net
            .cmd(&self.host, [binaries::path("srv6pipes-proxy")?])
            .args(["ctl", "--json", "-s"])
            .arg(&self.control)
            .args(args)
            .timeout(TIMEOUT)
            .output()?;
        match decode_reply::<T>(&out.stdout) {
            Ok(reply) => Ok(Ok(reply)),
            Err(ControlError::Refused(e)) => Ok(Err(e)),
            Err(e) => Err(e).with_context(|| format!("ctl {args:?}: {out}")),
        }
    }

    /// `ctl ARGS`, which must succeed.
    fn ctl_ok<T: DeserializeOwned>(&self, net: &Net, args: &[&str]) -> Result<T> {
        self.ctl(net, args)?.map_err(|e| anyhow::anyhow!("ctl {args:?} on {}: refused: {e}", self.host))
    }

    /// The counters (`ctl stats`).
    pub fn stats(&self, net: &Net) -> Result<Stats> {
        Ok(self.ctl_ok::<StatsReply>(net, &["stats"])?.stats)
    }

    /// The live flows (`ctl flows`).
    pub fn flows(&self, net: &Net) -> Result<Vec<Flow>> {
        Ok(self.ctl_ok::<FlowsReply>(net, &["flows"])?.flows)
    }

    /// The loaded modules (`ctl modules`).
    pub fn modules(&self, net: &Net) -> Result<Vec<ModuleInfo>> {
        Ok(self.ctl_ok::<ModulesReply>(net, &["modules"])?.modules)
    }

    /// The host it runs in.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The control socket's path.
    pub fn control(&self) -> &Path {
        &self.control
    }

    /// Its state file's path.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Send it `signal` (SIGTERM, SIGQUIT, SIGKILL…).
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.proc.signal(signal)
    }

    /// Wait (bounded) for it to exit by itself and return its output.
    pub fn wait(self, timeout: Duration) -> Result<Output> {
        self.proc.wait(timeout)
    }

    /// What it logged so far.
    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    /// Stop it (SIGTERM) and return its output: the proxy removes its datapath on the way out.
    pub fn stop(self) -> Result<Output> {
        self.proc.stop()
    }
}

/// The directory of `host`'s network namespace under /run/srv6pipes (srv6pipes-proxy(8), OWNERSHIP):
/// named after the namespace's inode.
pub fn namespace_dir(net: &Net, host: &str) -> Result<PathBuf> {
    let out = net.run(host, ["stat", "-L", "-c", "%i", "/proc/self/ns/net"])?;
    Ok(PathBuf::from(format!("/run/srv6pipes/netns-{}", out.stdout.trim())))
}

/// What a proxy may change in `host`'s network namespace, as text to compare: the nftables ruleset, the ip
/// rules, every routing table (an emptied table stays: it lists nothing, as before), the ip6tables mangle
/// table and the sysctls of the datapath.
pub fn snapshot(net: &Net, host: &str) -> Result<String> {
    let mut s = String::new();
    for argv in [
        vec!["nft", "list", "ruleset"],
        vec!["ip", "-6", "rule", "list"],
        vec!["ip", "-6", "route", "show", "table", "all"],
        vec!["ip6tables-save", "-t", "mangle"],
        vec![
            "sysctl",
            "net.ipv6.conf.all.forwarding",
            "net.ipv6.conf.all.seg6_enabled",
            "net.ipv6.conf.eth0.seg6_enabled",
            "net.ipv6.conf.eth1.seg6_enabled",
            "net.ipv4.tcp_migrate_req",
        ],
    ] {
        let out = net.run(host, argv)?;
        // ip6tables-save prints a timestamp comment. Routes of `proto kernel` are the kernel's own for the
        // interfaces' addresses: it adds the link-local and multicast ones when it sees the link up,
        // which on a busy host may be in the middle of the test; the proxy never adds such routes.
        let lines: Vec<&str> =
            out.stdout.lines().filter(|l| !l.starts_with('#') && !l.contains(" proto kernel ")).collect();
        s += &lines.join("\n");
        s += "\n";
    }
    Ok(s)
}
