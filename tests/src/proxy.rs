//! A running `srv6pipes-proxy` in a host of a topology, and its control socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{binaries, Net, Output, Proc};

/// Bound on the proxy coming up and on one control request.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A srv6pipes-proxy process (stopped, and its datapath removed, when dropped).
pub struct Proxy {
    host: String,
    control: PathBuf,
    proc: Proc,
}

impl Proxy {
    /// Start the proxy in `host` for the function prefix `prefix`, its listener on `port`, ingress on eth0
    /// and eth1, two workers, plus `extra` options; returns once its control socket exists (the listeners
    /// and the datapath are up by then).
    pub fn start(net: &Net, host: &str, prefix: &str, port: u16, extra: &[&str]) -> Result<Proxy> {
        let control = net.path(&format!("{host}.sock"));
        let mut proc = net
            .cmd(host, [binaries::path("srv6pipes-proxy")?])
            .args(["--prefix", prefix, "--port", &port.to_string(), "--ingress", "eth0,eth1", "--workers", "2"])
            .arg("--control")
            .arg(&control)
            .args(extra)
            .env("RUST_LOG", "debug")
            .spawn()?;
        // The control socket appears once the listeners and the datapath are up.
        proc.wait_until(&format!("srv6pipes-proxy in {host} to come up"), TIMEOUT, |_| Ok(control.exists()))?;
        Ok(Proxy { host: host.to_string(), control, proc })
    }

    /// `srv6pipes-proxy ctl --json ARGS` against this proxy.
    pub fn ctl(&self, net: &Net, args: &[&str]) -> Result<Value> {
        let out = net
            .cmd(&self.host, [binaries::path("srv6pipes-proxy")?])
            .args(["ctl", "--json", "-s"])
            .arg(&self.control)
            .args(args)
            .timeout(TIMEOUT)
            .output()?;
        serde_json::from_str(out.stdout.trim()).with_context(|| format!("ctl {args:?}: {out}"))
    }

    /// The `stats` object of the control socket.
    pub fn stats(&self, net: &Net) -> Result<Value> {
        Ok(self.ctl(net, &["stats"])?["stats"].clone())
    }

    /// The host it runs in.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The control socket's path.
    pub fn control(&self) -> &Path {
        &self.control
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
