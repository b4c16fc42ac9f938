//! The proxy host's datapath (docs/ARCHITECTURE.md §5): sysctls, a policy-routing rule, a `local ::/0` route and one
//! nftables table (ip6tables chain as fallback).
//!
//! It is described once, by [`DatapathConfig::plan`]: a list of [`Step`]s, each knowing the commands
//! that install and remove it and how to see whether it is in place. [`install`] applies the plan and
//! keeps the undo of what it changed; [`Datapath::teardown`] (also run on drop) undoes it, newest first;
//! `setup --print` prints the same steps' commands.
//!
//! Whether a step is already in place is decided by asking the kernel first (reading the sysctl,
//! `ip -6 rule list`/`ip -6 route list` with the step's own selector, `nft list table`, `ip6tables -S`)
//! and by exit codes, never by matching the text of an error message ("File exists"), which varies with
//! the iproute2 and nft versions and the locale.

use std::fmt;
use std::io::Write;
use std::process::{Command as Process, Stdio};

use libsrv6sock::wire::prefix::Ipv6Prefix;

/// Packet-filter backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// nftables when `nft` works, ip6tables otherwise.
    Auto,
    /// nftables.
    Nft,
    /// ip6tables (mangle table).
    Iptables,
}

impl Backend {
    /// Name as on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Nft => "nft",
            Backend::Iptables => "iptables",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Backend::Auto),
            "nft" | "nftables" => Ok(Backend::Nft),
            "iptables" | "ip6tables" => Ok(Backend::Iptables),
            _ => Err(format!("unknown backend {s:?} (auto, nft, iptables)")),
        }
    }
}

/// What the datapath needs to know.
#[derive(Debug, Clone)]
pub struct DatapathConfig {
    /// Function prefixes whose SYNs go to the listener.
    pub prefixes: Vec<Ipv6Prefix>,
    /// Listener port.
    pub port: u16,
    /// Devices receiving SRH packets (`seg6_enabled`).
    pub ingress: Vec<String>,
    /// Firewall mark of the packets delivered locally.
    pub mark: u32,
    /// Routing table holding `local ::/0`.
    pub table: u32,
    /// Priority of the `ip -6 rule`.
    pub rule_pref: u32,
    /// Name of the nftables table (ip6 family); the ip6tables chain is the same name upper-cased.
    pub nft_table: String,
    /// Packet filter.
    pub backend: Backend,
    /// The proxy verifies SRH HMACs itself (`--require-hmac`): the ingress devices get
    /// `seg6_require_hmac=-1`, or the kernel would drop every SYN whose key id it has no `ip sr hmac` key for
    /// (and, with keys, drop bad ones silently instead of the proxy resetting and counting them).
    pub require_hmac: bool,
}

/// One piece of the datapath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A sysctl that must have `value`.
    Sysctl {
        /// Dotted key (`net.ipv6.conf.all.forwarding`).
        key: String,
        /// Value.
        value: String,
    },
    /// `ip -6 rule fwmark MARK lookup TABLE pref PREF`.
    Rule {
        /// Firewall mark.
        mark: u32,
        /// Routing table.
        table: u32,
        /// Priority.
        pref: u32,
    },
    /// `ip -6 route local ::/0 dev lo table TABLE`: every address is local for marked packets.
    LocalRoute {
        /// Routing table.
        table: u32,
    },
    /// The nftables table of the proxy.
    NftTable {
        /// Table name (ip6 family).
        name: String,
        /// The whole table, as `nft -f` reads it.
        ruleset: String,
    },
    /// The `ip6 mangle` table that an nf_tables-based ip6tables creates with the first chain in it: shared
    /// by the ip6tables chains of the namespace's proxies, removed (if empty) by the last one.
    IptablesMangle,
    /// The ip6tables mangle chain of the proxy, and the jump to it from `PREROUTING`.
    IptablesChain {
        /// Chain name.
        chain: String,
        /// Each rule's arguments after `-A CHAIN`.
        rules: Vec<Vec<String>>,
    },
}

/// A command that installs or removes (part of) a step. Serialized in the state file (`state`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Command {
    /// Write a sysctl (shown as `sysctl -w KEY=VALUE`, done through /proc/sys).
    Sysctl {
        /// Dotted key.
        key: String,
        /// Value.
        value: String,
    },
    /// Run a program, optionally feeding it `stdin`.
    Run {
        /// Program and arguments.
        argv: Vec<String>,
        /// Standard input.
        stdin: Option<String>,
    },
    /// Delete the `ip6 mangle` table if it holds no rule (removal of the ip6tables chain on an
    /// nf_tables-based ip6tables, which created that table when it did not exist before).
    DropEmptyMangle,
}

fn run(argv: &[&str]) -> Command {
    Command::Run { argv: argv.iter().map(|s| s.to_string()).collect(), stdin: None }
}

fn ip6tables(args: &[&str]) -> Command {
    run(&[&["ip6tables", "-w", "-t", "mangle"], args].concat())
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Sysctl { key, value } => write!(f, "sysctl -w {key}={value}"),
            Command::Run { argv, stdin: None } => write!(f, "{}", argv.join(" ")),
            Command::Run { argv, stdin: Some(s) } => write!(f, "{} <<'EOF'\n{}EOF", argv.join(" "), s),
            Command::DropEmptyMangle => write!(f, "nft delete table ip6 mangle  # created by ip6tables-nft, now empty"),
        }
    }
}

impl Step {
    /// The commands that install it.
    pub fn install(&self) -> Vec<Command> {
        match self {
            Step::Sysctl { key, value } => vec![Command::Sysctl { key: key.clone(), value: value.clone() }],
            Step::Rule { .. } | Step::LocalRoute { .. } => self.ip_command("add"),
            Step::NftTable { ruleset, .. } => {
                vec![Command::Run { argv: vec!["nft".into(), "-f".into(), "-".into()], stdin: Some(ruleset.clone()) }]
            }
            Step::IptablesMangle => vec![],
            Step::IptablesChain { chain, rules } => {
                let mut v = vec![ip6tables(&["-N", chain])];
                for r in rules {
                    let r: Vec<&str> = r.iter().map(String::as_str).collect();
                    v.push(ip6tables(&[&["-A", chain.as_str()], r.as_slice()].concat()));
                }
                v.push(ip6tables(&["-I", "PREROUTING", "-j", chain]));
                v
            }
        }
    }

    /// The commands that remove it; none for a sysctl, which [`install`] sets back to the value it found.
    pub fn remove(&self) -> Vec<Command> {
        match self {
            Step::Sysctl { .. } | Step::IptablesMangle => vec![],
            Step::Rule { .. } | Step::LocalRoute { .. } => self.ip_command("del"),
            Step::NftTable { name, .. } => vec![run(&["nft", "delete", "table", "ip6", name])],
            Step::IptablesChain { chain, .. } => vec![
                ip6tables(&["-D", "PREROUTING", "-j", chain]),
                ip6tables(&["-F", chain]),
                ip6tables(&["-X", chain]),
            ],
        }
    }

    /// `ip -6 rule|route VERB …` of a rule or route step (none for the others).
    fn ip_command(&self, verb: &str) -> Vec<Command> {
        let line = match self {
            Step::Rule { mark, table, pref } => format!("ip -6 rule {verb} fwmark {mark} lookup {table} pref {pref}"),
            Step::LocalRoute { table } => format!("ip -6 route {verb} local ::/0 dev lo table {table}"),
            _ => return vec![],
        };
        // Numbers and keywords only: splitting on spaces is exact.
        vec![Command::Run { argv: line.split(' ').map(String::from).collect(), stdin: None }]
    }

    /// Whether it is in place now.
    fn present(&self) -> Result<bool, DatapathError> {
        Ok(match self {
            Step::Sysctl { key, value } => read_sysctl(key)? == *value,
            Step::Rule { mark, table, pref } => {
                let (m, t, p) = (mark.to_string(), table.to_string(), pref.to_string());
                lists_something(&["ip", "-6", "rule", "list", "fwmark", &m, "lookup", &t, "pref", &p])?
            }
            // `ip route list` has its own selector syntax; it fails when the table does not exist yet.
            Step::LocalRoute { table } => lists_something(&[
                "ip",
                "-6",
                "route",
                "list",
                "table",
                &table.to_string(),
                "type",
                "local",
                "exact",
                "::/0",
                "dev",
                "lo",
            ])?,
            Step::NftTable { name, .. } => succeeds(&["nft", "list", "table", "ip6", name]),
            // A legacy ip6tables has a mangle table always.
            Step::IptablesMangle => !nft_based_ip6tables() || succeeds(&["nft", "list", "table", "ip6", "mangle"]),
            Step::IptablesChain { chain, .. } => succeeds(&["ip6tables", "-w", "-t", "mangle", "-S", chain]),
        })
    }

    /// Whether proxies of one namespace share it (reference-counted in the namespace's claims): a sysctl at
    /// its value, the rule or the route in place are left as they are. The others (the nftables table, the
    /// ip6tables chain) are one proxy's: a copy in place is stale (a proxy killed without teardown) and is
    /// replaced.
    pub fn is_shared(&self) -> bool {
        matches!(self, Step::Sysctl { .. } | Step::Rule { .. } | Step::LocalRoute { .. } | Step::IptablesMangle)
    }

    /// Install it unless it is in place; returns what undoes it (nothing when it was in place).
    pub fn ensure(&self) -> Result<Vec<Command>, DatapathError> {
        if self.present()? {
            tracing::info!("{self}: already in place, left as is");
            return Ok(vec![]);
        }
        self.put()
    }

    /// Install it; returns its undo. A failure removes the part already applied.
    fn put(&self) -> Result<Vec<Command>, DatapathError> {
        let undo = self.undo()?;
        for cmd in self.install() {
            if let Err(e) = apply(&cmd) {
                for cmd in &undo {
                    let _ = apply(cmd);
                }
                return Err(e);
            }
        }
        tracing::info!("{self}: installed");
        Ok(undo)
    }

    /// What undoes installing it now: [`Step::remove`], the sysctl's current value, or the cleanup of the
    /// `ip6 mangle` table that ip6tables-nft is about to create (the step is not in place: it is absent).
    fn undo(&self) -> Result<Vec<Command>, DatapathError> {
        let mut undo = self.remove();
        match self {
            Step::Sysctl { key, .. } => undo.push(Command::Sysctl { key: key.clone(), value: read_sysctl(key)? }),
            Step::IptablesMangle => undo.push(Command::DropEmptyMangle),
            _ => {}
        }
        Ok(undo)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Sysctl { key, value } => write!(f, "sysctl {key}={value}"),
            Step::Rule { mark, table, pref } => write!(f, "ip -6 rule fwmark {mark} lookup {table} pref {pref}"),
            Step::LocalRoute { table } => write!(f, "ip -6 route local ::/0 dev lo table {table}"),
            Step::NftTable { name, .. } => write!(f, "nft table ip6 {name}"),
            Step::IptablesMangle => write!(f, "ip6 mangle table of ip6tables-nft"),
            Step::IptablesChain { chain, .. } => write!(f, "ip6tables mangle chain {chain}"),
        }
    }
}

/// Why the datapath could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// A command failed.
    #[error("`{step}` failed: {reason}")]
    Step {
        /// The command.
        step: String,
        /// Its error or exit status and stderr.
        reason: String,
    },
    /// A stale copy of a step could not be removed.
    #[error("{0} exists and could not be removed")]
    Stale(String),
    /// No packet filter works.
    #[error("no packet filter: neither `nft` nor `ip6tables` works ({0})")]
    NoBackend(String),
    /// A setting is out of range.
    #[error("invalid datapath setting: {0}")]
    Config(String),
}

impl DatapathConfig {
    fn check(&self) -> Result<(), DatapathError> {
        if self.prefixes.is_empty() {
            return Err(DatapathError::Config("at least one function prefix (--prefix) is needed".into()));
        }
        let ok_name = |s: &str| {
            !s.is_empty() && s.len() <= 15 && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.@".contains(c))
        };
        for d in &self.ingress {
            if !ok_name(d) || d.contains('/') || d == "." || d == ".." {
                return Err(DatapathError::Config(format!("ingress interface name {d:?} is not valid")));
            }
        }
        if self.nft_table.is_empty()
            || self.nft_table.len() > 28
            || !self.nft_table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(DatapathError::Config(format!(
                "table name {:?}: use 1-28 letters, digits or '_'",
                self.nft_table
            )));
        }
        if self.mark == 0 || self.table == 0 || self.table >= 253 && self.table <= 255 {
            return Err(DatapathError::Config("mark must not be 0 and table must not be 0, 253, 254 or 255".into()));
        }
        Ok(())
    }

    /// The nftables ruleset (docs/ARCHITECTURE.md §5).
    pub fn nft_ruleset(&self) -> String {
        let m = format!("{:#x}", self.mark);
        let mut s = format!(
            "table ip6 {t} {{\n  chain pre {{\n    type filter hook prerouting priority mangle; policy accept;\n    \
             meta l4proto tcp socket transparent 1 meta mark set {m} accept\n",
            t = self.nft_table
        );
        for p in &self.prefixes {
            s += &format!(
                "    ip6 daddr {p} tcp flags & (syn | ack) == syn tproxy to :{port} meta mark set {m} accept\n",
                port = self.port
            );
        }
        for p in &self.prefixes {
            s += &format!("    ip6 daddr {p} meta mark set {m} accept\n");
        }
        s += "  }\n}\n";
        s
    }

    /// The same rules for ip6tables, each as the arguments after `-A CHAIN`.
    fn iptables_rules(&self) -> Vec<Vec<String>> {
        let m = self.mark.to_string();
        let mk = format!("{m}/{m}");
        let port = self.port.to_string();
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let mut v = vec![
            words(&["-p", "tcp", "-m", "socket", "--transparent", "-j", "MARK", "--set-mark", &m]),
            words(&["-p", "tcp", "-m", "socket", "--transparent", "-j", "ACCEPT"]),
        ];
        for p in &self.prefixes {
            let p = p.to_string();
            v.push(words(&["-d", &p, "-p", "tcp", "--syn", "-j", "TPROXY", "--on-port", &port, "--tproxy-mark", &mk]));
        }
        for p in &self.prefixes {
            v.push(words(&["-d", &p.to_string(), "-j", "MARK", "--set-mark", &m]));
        }
        v
    }

    /// The datapath with `backend` ([`Backend::Auto`] plans nftables), in installation order.
    pub fn plan(&self, backend: Backend) -> Result<Vec<Step>, DatapathError> {
        self.check()?;
        let mut steps = vec![
            Step::Sysctl { key: "net.ipv6.conf.all.forwarding".into(), value: "1".into() },
            Step::Sysctl { key: "net.ipv6.conf.all.seg6_enabled".into(), value: "1".into() },
        ];
        for d in &self.ingress {
            steps.push(Step::Sysctl { key: format!("net.ipv6.conf.{d}.seg6_enabled"), value: "1".into() });
            if self.require_hmac {
                steps.push(Step::Sysctl { key: format!("net.ipv6.conf.{d}.seg6_require_hmac"), value: "-1".into() });
            }
        }
        steps.push(Step::Rule { mark: self.mark, table: self.table, pref: self.rule_pref });
        steps.push(Step::LocalRoute { table: self.table });
        match backend {
            Backend::Nft | Backend::Auto => {
                steps.push(Step::NftTable { name: self.nft_table.clone(), ruleset: self.nft_ruleset() })
            }
            Backend::Iptables => steps.extend([
                Step::IptablesMangle,
                Step::IptablesChain { chain: self.nft_table.to_uppercase(), rules: self.iptables_rules() },
            ]),
        }
        // A listener closed by a proxy handing over to its successor (`--takeover`) passes the connections
        // in its accept queue to the successor's listeners of the same SO_REUSEPORT group instead of
        // resetting them (Linux 5.14 and later; older kernels lack the sysctl and only risk that race).
        if std::path::Path::new(&sysctl_path(MIGRATE_REQ)).exists() {
            steps.push(Step::Sysctl { key: MIGRATE_REQ.into(), value: "1".into() });
        }
        Ok(steps)
    }
}

/// The sysctl that migrates a closed listener's pending connections within its SO_REUSEPORT group.
const MIGRATE_REQ: &str = "net.ipv4.tcp_migrate_req";

fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

fn read_sysctl(key: &str) -> Result<String, DatapathError> {
    std::fs::read_to_string(sysctl_path(key))
        .map(|s| s.trim().to_string())
        .map_err(|e| DatapathError::Step { step: format!("sysctl {key}"), reason: e.to_string() })
}

/// Run one command; the error carries the program's exit status and stderr.
pub fn apply(cmd: &Command) -> Result<(), DatapathError> {
    match cmd {
        Command::DropEmptyMangle => {
            let rules = Process::new("ip6tables").args(["-w", "-t", "mangle", "-S"]).output();
            let empty = rules.is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).lines().all(|l| l.starts_with("-P "))
            });
            if empty {
                apply(&run(&["nft", "delete", "table", "ip6", "mangle"]))?;
            }
            Ok(())
        }
        Command::Sysctl { key, value } => std::fs::write(sysctl_path(key), value)
            .map_err(|e| DatapathError::Step { step: cmd.to_string(), reason: e.to_string() }),
        Command::Run { argv, stdin } => {
            let fail = |reason: String| DatapathError::Step { step: cmd.to_string(), reason };
            let mut p = Process::new(&argv[0]);
            p.args(&argv[1..]).stdout(Stdio::null()).stderr(Stdio::piped());
            p.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
            let mut child = p.spawn().map_err(|e| fail(e.to_string()))?;
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(text.as_bytes()).map_err(|e| fail(e.to_string()))?;
            }
            let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(fail(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())))
            }
        }
    }
}

/// Whether ip6tables is the nf_tables-based one (it makes an `ip6 mangle` nftables table).
fn nft_based_ip6tables() -> bool {
    Process::new("ip6tables").arg("-V").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("nf_tables"))
}

/// Whether `argv` exits with status 0.
fn succeeds(argv: &[&str]) -> bool {
    works(argv).is_ok()
}

/// Whether `argv` succeeds and prints something (a listing with a selector that matched).
fn lists_something(argv: &[&str]) -> Result<bool, DatapathError> {
    let out = Process::new(argv[0])
        .args(&argv[1..])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| DatapathError::Step { step: argv.join(" "), reason: e.to_string() })?;
    Ok(out.status.success() && !out.stdout.trim_ascii().is_empty())
}

fn works(argv: &[&str]) -> Result<(), String> {
    match Process::new(argv[0]).args(&argv[1..]).stdout(Stdio::null()).stderr(Stdio::piped()).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("{}: {}", argv.join(" "), String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("{}: {e}", argv[0])),
    }
}

/// Resolve [`Backend::Auto`]: nft if it can list the ruleset, ip6tables if it can list the mangle table.
pub fn resolve_backend(b: Backend) -> Result<Backend, DatapathError> {
    match b {
        Backend::Auto => match works(&["nft", "list", "tables"]) {
            Ok(()) => Ok(Backend::Nft),
            Err(e1) => match works(&["ip6tables", "-w", "-t", "mangle", "-S", "PREROUTING"]) {
                Ok(()) => {
                    tracing::warn!("nft unusable ({e1}); falling back to ip6tables");
                    Ok(Backend::Iptables)
                }
                Err(e2) => Err(DatapathError::NoBackend(format!("{e1}; {e2}"))),
            },
        },
        other => Ok(other),
    }
}

/// Told the undo list of a [`Datapath`] each time it changes (to record it in the state file).
pub type OnChange = Box<dyn FnMut(&[Vec<Command>]) + Send>;

/// An installed datapath: the undo of each step it changed, run by [`Datapath::teardown`] or on drop.
pub struct Datapath {
    undo: Vec<Vec<Command>>,
    on_change: OnChange,
}

impl fmt::Debug for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datapath").field("undo", &self.undo).finish_non_exhaustive()
    }
}

/// Install `steps` (of [`DatapathConfig::plan`]); on failure, undo what was already done. `on_change` is
/// told the undo list after every step installed or removed. Shared steps ([`Step::is_shared`]) in place
/// are left as they are, others are replaced.
pub fn install(steps: impl IntoIterator<Item = Step>, on_change: OnChange) -> Result<Datapath, DatapathError> {
    // Everything applied so far is undone by `dp`'s drop if a later step fails.
    let mut dp = Datapath { undo: Vec::new(), on_change };
    for step in steps {
        let undo = if step.is_shared() {
            step.ensure()?
        } else {
            if step.present()? {
                tracing::warn!("{step} exists (stale?): replacing it");
                // Best effort: some parts may be missing; what counts is that it is gone after.
                for cmd in step.remove() {
                    if let Err(e) = apply(&cmd) {
                        tracing::debug!("{e}");
                    }
                }
                if step.present()? {
                    return Err(DatapathError::Stale(step.to_string()));
                }
            }
            step.put()?
        };
        if !undo.is_empty() {
            dp.undo.push(undo);
            (dp.on_change)(&dp.undo);
        }
    }
    Ok(dp)
}

impl Datapath {
    /// The datapath another run installed, known by its undo list (from a state file): its teardown
    /// removes what that run changed.
    pub fn adopt(undo: Vec<Vec<Command>>, mut on_change: OnChange) -> Datapath {
        on_change(&undo);
        Datapath { undo, on_change }
    }

    /// Leave the datapath in place (another process owns it now) and forget it.
    pub fn release(mut self) {
        self.undo.clear();
    }

    /// Undo everything [`install`] changed, newest first. Idempotent.
    pub fn teardown(&mut self) {
        while let Some(undo) = self.undo.pop() {
            for cmd in undo {
                match apply(&cmd) {
                    Ok(()) => tracing::info!("teardown: {cmd}"),
                    Err(e) => tracing::warn!("teardown: {e}"),
                }
            }
            (self.on_change)(&self.undo);
        }
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DatapathConfig {
        DatapathConfig {
            prefixes: vec!["fc00:f1::/80".parse().unwrap()],
            port: 5001,
            ingress: vec!["eth0".into()],
            mark: 1,
            table: 100,
            rule_pref: 100,
            nft_table: "srv6pipes".into(),
            backend: Backend::Nft,
            require_hmac: false,
        }
    }

    fn commands(steps: &[Step], f: impl Fn(&Step) -> Vec<Command>) -> Vec<String> {
        steps.iter().flat_map(f).map(|c| c.to_string()).collect()
    }

    #[test]
    fn nft_plan_matches_design() {
        let steps = cfg().plan(Backend::Nft).unwrap();
        let text = commands(&steps, Step::install);
        assert_eq!(text[0], "sysctl -w net.ipv6.conf.all.forwarding=1");
        assert_eq!(text[2], "sysctl -w net.ipv6.conf.eth0.seg6_enabled=1");
        assert_eq!(text[3], "ip -6 rule add fwmark 1 lookup 100 pref 100");
        assert_eq!(text[4], "ip -6 route add local ::/0 dev lo table 100");
        assert!(text[5].contains(
            "ip6 daddr fc00:f1::/80 tcp flags & (syn | ack) == syn tproxy to :5001 meta mark set 0x1 accept"
        ));
        assert!(text[5].contains("meta l4proto tcp socket transparent 1 meta mark set 0x1 accept"));
        let migrate = std::path::Path::new(&sysctl_path(MIGRATE_REQ)).exists();
        assert_eq!(text.len(), 6 + usize::from(migrate));
        if migrate {
            assert_eq!(text[6], "sysctl -w net.ipv4.tcp_migrate_req=1");
        }
        // Removal mirrors installation, step by step (sysctls are restored to what install found).
        let undo: Vec<String> = commands(&steps, Step::remove).into_iter().rev().collect();
        assert_eq!(
            undo,
            [
                "nft delete table ip6 srv6pipes",
                "ip -6 route del local ::/0 dev lo table 100",
                "ip -6 rule del fwmark 1 lookup 100 pref 100",
            ]
        );
    }

    #[test]
    fn iptables_plan_and_bad_names() {
        let steps = cfg().plan(Backend::Iptables).unwrap();
        let text = commands(&steps, Step::install);
        assert!(text.iter().any(|l| l
            == "ip6tables -w -t mangle -A SRV6PIPES -d fc00:f1::/80 -p tcp --syn -j TPROXY --on-port 5001 \
                --tproxy-mark 1/1"));
        // The jump to the chain comes last in the chain's step, once the chain is complete.
        let jump = text.iter().position(|l| l == "ip6tables -w -t mangle -I PREROUTING -j SRV6PIPES").unwrap();
        assert!(text[jump - 1].contains("-A SRV6PIPES"), "{text:?}");
        assert!(text[jump + 1..].iter().all(|l| l.starts_with("sysctl")), "{text:?}");
        assert_eq!(commands(&steps, Step::remove).first().unwrap(), "ip -6 rule del fwmark 1 lookup 100 pref 100");
        assert_eq!(commands(&steps, Step::remove).last().unwrap(), "ip6tables -w -t mangle -X SRV6PIPES");
        let mut c = cfg();
        c.ingress = vec!["../x".into()];
        assert!(c.plan(Backend::Nft).is_err());
        let mut c = cfg();
        c.prefixes.clear();
        assert!(c.plan(Backend::Nft).is_err());
    }
}
