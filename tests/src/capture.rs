//! Packet captures with tcpdump inside a topology's namespaces.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{wait_until, Proc};
use crate::Net;
use srv6pipes_capture::{read_pcap, Packet};

/// Capture ring size (KiB).
const RING_KIB: &str = "32768";
/// How long tcpdump gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running tcpdump writing a pcap file in the test's directory. Stop it with [`Capture::stop`]; dropping
/// it kills tcpdump.
pub struct Capture {
    proc: Proc,
    path: PathBuf,
}

impl Capture {
    /// Start tcpdump on `host`'s `dev` with a pcap-filter(7) expression (e.g. `ip6`, `ip6 src host
    /// fc00::1`) and wait until it reports that it is listening.
    pub fn start(net: &Net, host: &str, dev: &str, filter: &str) -> Result<Capture> {
        let path = net.path(&format!("{host}-{dev}.pcap"));
        let path_arg = path.to_str().context("non-UTF-8 temporary path")?;
        // -U and --immediate-mode: every packet reaches the file as it is seen, so a test can read the file
        // while tcpdump runs and nothing is left in a ring buffer block when it stops. -Z root: do not drop
        // privileges (the temporary directory is root's). -s 0: whole packets, even GSO frames of 64 KiB;
        // libpcap then sizes each ring slot for such a frame, and its default 2 MiB ring holds about 30 of
        // them: -B gives room for bursts of a few hundred packets.
        let mut proc = net
            .cmd(host, ["tcpdump", "-i", dev, "-n", "-U", "--immediate-mode", "-Z", "root", "-s", "0"])
            .args(["-B", RING_KIB, "-w", path_arg, filter])
            .spawn()?;
        proc.wait_until(&format!("tcpdump on {host}:{dev} to listen"), START_TIMEOUT, |p| {
            Ok(p.stderr().contains("listening on"))
        })?;
        Ok(Capture { proc, path })
    }

    /// The pcap file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wait (at most `timeout`) until the packets captured so far satisfy `done`, e.g. "the client's FIN is
    /// in": a program's exit does not mean its last packets have crossed the topology yet.
    pub fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&[Packet]) -> bool) -> Result<()> {
        // The file may end in a half-written record: an error here just means "not yet".
        wait_until(&format!("capture {} to show {what}", self.path.display()), timeout, || {
            Ok(read_pcap(&self.path).is_ok_and(|p| done(&p)))
        })
    }

    /// Stop tcpdump and return the pcap file; an error if the kernel dropped packets (the capture would
    /// not show everything that crossed the interface).
    pub fn stop(self) -> Result<PathBuf> {
        let out = self.proc.stop()?;
        let dropped = out
            .stderr
            .lines()
            .find_map(|l| l.strip_suffix(" packets dropped by kernel"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .with_context(|| format!("tcpdump did not report its statistics: {out}"))?;
        if dropped > 0 {
            bail!("tcpdump: the kernel dropped {dropped} packets of {}", self.path.display());
        }
        Ok(self.path)
    }
}
