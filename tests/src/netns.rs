//! A built topology: network namespaces, veths, addresses, sysctls, routes and SIDs, torn down on drop.
//!
//! Namespace names are `s6t-TAG-PID-N-HOST`: unique per process (PID), per [`Net`] within the process (N,
//! since tests of one binary run in parallel threads) and readable (TAG, HOST). A crashed run (SIGKILL,
//! power loss) leaves namespaces behind; [`Net::build`] removes those whose PID is no longer alive, and any
//! namespace with exactly its own names, before building.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::capture::Capture;
use crate::process::{wait_until, Cmd, Output, Proc};
use crate::topology::Topology;

/// Prefix of every namespace this harness creates.
const PREFIX: &str = "s6t-";
/// Timeout of the commands that build and tear down a topology.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Panic (loudly, never skip) unless we are root: namespaces, veths and captures need it.
pub fn require_root() {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the end-to-end tests build network namespaces and must run as root (euid is {euid}); \
         run them as root, e.g. `sudo -E cargo test -p srv6pipes-tests`"
    );
}

/// Build `topology`, run a test body in it, panic with the whole error chain if it fails. The panic
/// happens while the net still exists, so its directory (logs, captures) is kept for inspection.
pub fn with_net<T>(topology: &str, tag: &str, body: impl FnOnce(&Net) -> Result<T>) -> T {
    let net = Net::build(topology, tag).unwrap_or_else(|e| panic!("{e:?}"));
    match body(&net) {
        Ok(v) => v,
        Err(e) => panic!("{e:?}"),
    }
}

/// A running topology. Dropping it kills the processes left in its namespaces and deletes them.
pub struct Net {
    topology: Topology,
    /// Namespace name per host, in the topology's host order.
    namespaces: Vec<(String, String)>,
    /// Where [`Net::dir`] points; `dir` owns it until a failing test keeps it.
    dir_path: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Net {
    /// Build `tests/topologies/TOPOLOGY.toml`. `tag` (a few letters naming the test) makes the namespace
    /// names readable in `ip netns list`.
    pub fn build(topology: &str, tag: &str) -> Result<Net> {
        require_root();
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let topo = Topology::load(topology)?;
        let tag: String = tag.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
        let run = format!("{PREFIX}{tag}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let namespaces = topo.hosts.keys().map(|h| (h.clone(), format!("{run}-{h}"))).collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{run}-"))
            .tempdir()
            .context("creating the test's temporary directory")?;
        let net = Net { topology: topo, namespaces, dir_path: dir.path().to_owned(), dir: Some(dir) };
        remove_stale_namespaces()?;
        for (_, ns) in &net.namespaces {
            delete_namespace(ns);
        }
        net.setup().with_context(|| format!("building topology {topology:?}"))?;
        Ok(net)
    }

    fn setup(&self) -> Result<()> {
        let topo = &self.topology;
        for (host, ns) in &self.namespaces {
            root(["ip", "netns", "add", ns])?;
            self.ip(ns, ["link", "set", "lo", "up"])?;
            // No duplicate address detection on the interfaces created next: a tentative link-local address
            // holds back neighbour discovery, so the first packets of a test would wait a second or more.
            self.cmd(
                host,
                ["sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"],
            )
            .timeout(SETUP_TIMEOUT)
            .run()?;
        }
        for link in &topo.links {
            let (a, b) = (&link.a, &link.b);
            let (ns_a, ns_b) = (self.ns(&a.host)?, self.ns(&b.host)?);
            // Created directly inside the namespaces: names only need to be unique per namespace.
            self.ip(ns_a, ["link", "add", &a.dev, "type", "veth", "peer", "name", &b.dev, "netns", ns_b])?;
            for (ns, end) in [(ns_a, a), (ns_b, b)] {
                if let Some(addr) = &end.addr {
                    // nodad: no duplicate address detection delay before the address is usable.
                    self.ip(ns, ["-6", "addr", "add", addr, "dev", &end.dev, "nodad"])?;
                }
                if !end.tx_offload {
                    self.cmd(&end.host, ["ethtool", "-K", &end.dev, "tx", "off"]).timeout(SETUP_TIMEOUT).run()?;
                }
                self.ip(ns, ["link", "set", &end.dev, "up"])?;
            }
        }
        for (name, host) in &topo.hosts {
            let ns = self.ns(name)?;
            for addr in &host.loopback {
                self.ip(ns, ["-6", "addr", "add", addr, "dev", "lo", "nodad"])?;
            }
            let assignments = topo.sysctl_assignments(name)?;
            if !assignments.is_empty() {
                let mut argv = vec!["sysctl", "-q", "-w"];
                argv.extend(assignments.iter().map(String::as_str));
                self.cmd(name, argv).timeout(SETUP_TIMEOUT).run()?;
            }
        }
        // Routes last: their gateways must be on links that are up.
        for (name, host) in &topo.hosts {
            let ns = self.ns(name)?;
            for route in &host.routes {
                let mut argv = vec!["-6", "route", "add"];
                argv.extend(route.split_whitespace());
                self.ip(ns, argv)?;
            }
            for sid in &host.sids {
                let sid_addr = format!("{}/128", sid.sid);
                let mut argv = vec!["-6", "route", "add", &sid_addr, "encap", "seg6local", "action"];
                argv.extend(sid.action.split_whitespace());
                argv.extend(["dev", &sid.dev]);
                self.ip(ns, argv)?;
            }
        }
        Ok(())
    }

    fn ip<'a>(&self, ns: &str, args: impl IntoIterator<Item = &'a str>) -> Result<Output> {
        Cmd::new(["ip", "-n", ns]).args(args).timeout(SETUP_TIMEOUT).run()
    }

    /// The namespace name of `host`.
    pub fn ns(&self, host: &str) -> Result<&str> {
        self.namespaces
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, ns)| ns.as_str())
            .with_context(|| format!("no host {host:?} in this topology"))
    }

    /// The topology this net was built from.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The test's temporary directory (logs, captures, configs). Kept, and printed, when the test panics.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// A fresh path in [`Net::dir`] named after `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        self.dir().join(format!("{}-{name}", SEQ.fetch_add(1, Ordering::Relaxed)))
    }

    /// The address of `host` on `dev` (`lo` for its first loopback address), from the topology.
    pub fn addr(&self, host: &str, dev: &str) -> Result<Ipv6Addr> {
        self.topology.addr(host, dev)
    }

    /// The first SID of `host`, from the topology.
    pub fn sid(&self, host: &str) -> Result<Ipv6Addr> {
        self.topology.sid(host)
    }

    /// Write `/etc/netns/NS/NAME`, which `ip netns exec` bind-mounts over `/etc/NAME` for the programs run
    /// in `host` (e.g. `hosts`, `resolv.conf`). Removed with the namespace.
    pub fn etc_file(&self, host: &str, name: &str, content: &str) -> Result<()> {
        let dir = etc_dir(self.ns(host)?);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(name);
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))
    }

    /// A command to run in `host`; finish it with [`Cmd::run`], [`Cmd::output`] or [`Cmd::spawn`].
    pub fn cmd<I, S>(&self, host: &str, argv: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        // An unknown host is reported when the command runs: `ip netns exec` fails on the bad name. (Tests
        // chain builder calls; a Result here would only add noise.)
        let ns = self.ns(host).unwrap_or(host);
        Cmd::new(argv).netns(ns).log_dir(self.dir())
    }

    /// Run in `host` with the default timeout; an error unless it exits successfully.
    pub fn run<I, S>(&self, host: &str, argv: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.ns(host)?;
        self.cmd(host, argv).run()
    }

    /// Start in `host` in the background; killed when the returned guard is dropped.
    pub fn spawn<I, S>(&self, host: &str, argv: I) -> Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.ns(host)?;
        self.cmd(host, argv).spawn()
    }

    /// Wait (at most `timeout`) until something listens on TCP `port` in `host`.
    pub fn wait_for_tcp_port(&self, host: &str, port: u16, timeout: Duration) -> Result<()> {
        let filter = format!("sport = :{port}");
        wait_until(&format!("TCP port {port} to listen in {host}"), timeout, || {
            let out = self.cmd(host, ["ss", "-H", "-l", "-t", "-n", &filter]).timeout(SETUP_TIMEOUT).run()?;
            Ok(!out.stdout.trim().is_empty())
        })
    }

    /// Start capturing all IPv6 packets on `host`'s `dev`; returns once tcpdump really captures.
    pub fn capture(&self, host: &str, dev: &str) -> Result<Capture> {
        Capture::start(self, host, dev, "ip6")
    }

    /// Like [`Net::capture`] with a pcap-filter(7) expression, to keep bulk traffic out of the file.
    pub fn capture_filtered(&self, host: &str, dev: &str, filter: &str) -> Result<Capture> {
        Capture::start(self, host, dev, filter)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (_, ns) in &self.namespaces {
            delete_namespace(ns);
        }
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("test failed: logs and captures kept in {}", dir.keep().display());
            }
        }
    }
}

/// Kill what still runs in `ns` (a spawned server the test forgot, a timed-out command's child), then
/// delete it and its `/etc/netns` files. Best effort: used on teardown and on leftovers.
fn delete_namespace(ns: &str) {
    if let Ok(out) = root(["ip", "netns", "pids", ns]) {
        for pid in out.stdout.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: kill(2) has no memory-safety preconditions; these pids live in our own namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    // What srv6pipes-proxy keeps for the namespace (a proxy killed above leaves it): it is named after the
    // inode, which the next namespace may get.
    if let Ok(m) = std::fs::metadata(format!("/run/netns/{ns}")) {
        use std::os::unix::fs::MetadataExt;
        let _ = std::fs::remove_dir_all(format!("/run/srv6pipes/netns-{}", m.ino()));
    }
    let _ = Cmd::new(["ip", "netns", "del", ns]).timeout(SETUP_TIMEOUT).output();
    let _ = std::fs::remove_dir_all(etc_dir(ns));
}

/// The per-namespace `/etc` overlay directory of `ip netns exec`.
fn etc_dir(ns: &str) -> PathBuf {
    Path::new("/etc/netns").join(ns)
}

/// Delete namespaces (and `/etc/netns` directories) named by a harness process that no longer exists.
fn remove_stale_namespaces() -> Result<()> {
    let list = root(["ip", "netns", "list"])?;
    let mut names: Vec<String> =
        list.stdout.lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect();
    if let Ok(entries) = std::fs::read_dir("/etc/netns") {
        names.extend(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()));
    }
    for name in &names {
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        // s6t-TAG-PID-N-HOST: the PID is the second dash-separated field.
        let Some(pid) = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            delete_namespace(name);
        }
    }
    Ok(())
}

fn root<'a>(argv: impl IntoIterator<Item = &'a str>) -> Result<Output> {
    Cmd::new(argv).timeout(SETUP_TIMEOUT).run()
}
