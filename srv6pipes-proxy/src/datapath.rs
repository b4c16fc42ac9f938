//! The proxy host's datapath (DESIGN §4): sysctls, a policy-routing rule, a `local ::/0` route and one
//! nftables table (ip6tables chain as fallback). [`install`] applies it and records how to undo exactly
//! what it changed; [`Datapath::teardown`] (also run on drop) undoes it in reverse order.

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

use libsrv6sock::wire::prefix::Ipv6Prefix;

/// Packet-filter backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// nftables when `nft` works, ip6tables otherwise.
    Auto,
    Nft,
    Iptables,
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
    pub prefixes: Vec<Ipv6Prefix>,
    pub port: u16,
    pub ingress: Vec<String>,
    pub mark: u32,
    pub table: u32,
    /// Priority of the `ip -6 rule`.
    pub rule_pref: u32,
    /// Name of the nftables table (ip6 family); the ip6tables chain is the same name upper-cased.
    pub nft_table: String,
    pub backend: Backend,
}

/// One command of the datapath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write a sysctl (shown as `sysctl -w KEY=VALUE`, done through /proc/sys).
    Sysctl { key: String, value: String },
    /// Run a program, optionally feeding it `stdin`.
    Run { argv: Vec<String>, stdin: Option<String> },
    /// Teardown of the ip6tables backend on an nf_tables-based ip6tables: delete the `ip6 mangle` table
    /// that creating our chain made appear, if it holds no rule any more.
    DropEmptyMangle,
}

fn run(argv: &[&str]) -> Step {
    Step::Run { argv: argv.iter().map(|s| s.to_string()).collect(), stdin: None }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Sysctl { key, value } => write!(f, "sysctl -w {key}={value}"),
            Step::Run { argv, stdin: None } => write!(f, "{}", argv.join(" ")),
            Step::Run { argv, stdin: Some(s) } => write!(f, "{} <<'EOF'\n{}EOF", argv.join(" "), s),
            Step::DropEmptyMangle => write!(f, "nft delete table ip6 mangle  # created by ip6tables-nft, now empty"),
        }
    }
}

/// Why the datapath could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("`{step}` failed: {reason}")]
    Step { step: String, reason: String },
    #[error("no packet filter: neither `nft` nor `ip6tables` works ({0})")]
    NoBackend(String),
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

    fn sysctls(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("net.ipv6.conf.all.forwarding".to_string(), "1".to_string()),
            ("net.ipv6.conf.all.seg6_enabled".to_string(), "1".to_string()),
        ];
        for d in &self.ingress {
            v.push((format!("net.ipv6.conf.{d}.seg6_enabled"), "1".into()));
        }
        v
    }

    fn rule_args(&self) -> Vec<String> {
        ["fwmark", &self.mark.to_string(), "lookup", &self.table.to_string(), "pref", &self.rule_pref.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn route_args(&self) -> Vec<String> {
        ["local", "::/0", "dev", "lo", "table", &self.table.to_string()].iter().map(|s| s.to_string()).collect()
    }

    /// The nftables ruleset (DESIGN §4).
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

    fn chain(&self) -> String {
        self.nft_table.to_uppercase()
    }

    fn iptables_rules(&self) -> Vec<Vec<String>> {
        let c = self.chain();
        let m = self.mark.to_string();
        let mut v: Vec<Vec<String>> = vec![
            vec!["-p", "tcp", "-m", "socket", "--transparent", "-j", "MARK", "--set-mark", &m],
            vec!["-p", "tcp", "-m", "socket", "--transparent", "-j", "ACCEPT"],
        ]
        .into_iter()
        .map(|r| r.into_iter().map(String::from).collect())
        .collect();
        for p in &self.prefixes {
            let p = p.to_string();
            let port = self.port.to_string();
            let mk = format!("{m}/{m}");
            v.push(
                ["-d", &p, "-p", "tcp", "--syn", "-j", "TPROXY", "--on-port", &port, "--tproxy-mark", &mk]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            );
        }
        for p in &self.prefixes {
            let p = p.to_string();
            v.push(["-d", &p, "-j", "MARK", "--set-mark", &m].iter().map(|s| s.to_string()).collect());
        }
        for r in &mut v {
            let mut full: Vec<String> =
                ["ip6tables", "-w", "-t", "mangle", "-A", &c].iter().map(|s| s.to_string()).collect();
            full.append(r);
            *r = full;
        }
        v
    }

    /// Every command [`install`] would run with `backend` (for `setup --print`).
    pub fn plan(&self, backend: Backend) -> Result<Vec<Step>, DatapathError> {
        self.check()?;
        let mut steps: Vec<Step> = self.sysctls().into_iter().map(|(key, value)| Step::Sysctl { key, value }).collect();
        let mut rule = vec!["ip".to_string(), "-6".into(), "rule".into(), "add".into()];
        rule.extend(self.rule_args());
        steps.push(Step::Run { argv: rule, stdin: None });
        let mut route = vec!["ip".to_string(), "-6".into(), "route".into(), "add".into()];
        route.extend(self.route_args());
        steps.push(Step::Run { argv: route, stdin: None });
        match backend {
            Backend::Nft | Backend::Auto => steps
                .push(Step::Run { argv: vec!["nft".into(), "-f".into(), "-".into()], stdin: Some(self.nft_ruleset()) }),
            Backend::Iptables => {
                let c = self.chain();
                steps.push(run(&["ip6tables", "-w", "-t", "mangle", "-N", &c]));
                for r in self.iptables_rules() {
                    steps.push(Step::Run { argv: r, stdin: None });
                }
                steps.push(run(&["ip6tables", "-w", "-t", "mangle", "-I", "PREROUTING", "-j", &c]));
            }
        }
        Ok(steps)
    }

    /// The commands that undo [`DatapathConfig::plan`] (what `teardown` runs when it owns everything).
    pub fn plan_teardown(&self, backend: Backend) -> Vec<Step> {
        let mut v = vec![];
        match backend {
            Backend::Nft | Backend::Auto => v.push(run(&["nft", "delete", "table", "ip6", &self.nft_table])),
            Backend::Iptables => {
                let c = self.chain();
                v.push(run(&["ip6tables", "-w", "-t", "mangle", "-D", "PREROUTING", "-j", &c]));
                v.push(run(&["ip6tables", "-w", "-t", "mangle", "-F", &c]));
                v.push(run(&["ip6tables", "-w", "-t", "mangle", "-X", &c]));
            }
        }
        let mut route = vec!["ip".to_string(), "-6".into(), "route".into(), "del".into()];
        route.extend(self.route_args());
        v.push(Step::Run { argv: route, stdin: None });
        let mut rule = vec!["ip".to_string(), "-6".into(), "rule".into(), "del".into()];
        rule.extend(self.rule_args());
        v.push(Step::Run { argv: rule, stdin: None });
        v
    }
}

fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

fn read_sysctl(key: &str) -> Result<String, DatapathError> {
    std::fs::read_to_string(sysctl_path(key))
        .map(|s| s.trim().to_string())
        .map_err(|e| DatapathError::Step { step: format!("sysctl {key}"), reason: e.to_string() })
}

fn write_sysctl(key: &str, value: &str) -> Result<(), DatapathError> {
    std::fs::write(sysctl_path(key), value)
        .map_err(|e| DatapathError::Step { step: format!("sysctl -w {key}={value}"), reason: e.to_string() })
}

/// Run one step; the error carries the program's stderr.
pub fn apply(step: &Step) -> Result<(), DatapathError> {
    match step {
        Step::DropEmptyMangle => {
            let rules = Command::new("ip6tables").args(["-w", "-t", "mangle", "-S"]).output();
            let empty = rules.is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).lines().all(|l| l.starts_with("-P "))
            });
            if empty {
                apply(&run(&["nft", "delete", "table", "ip6", "mangle"]))?;
            }
            Ok(())
        }
        Step::Sysctl { key, value } => write_sysctl(key, value),
        Step::Run { argv, stdin } => {
            let fail = |reason: String| DatapathError::Step { step: step.to_string(), reason };
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]).stdout(Stdio::null()).stderr(Stdio::piped());
            cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
            let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
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

fn works(argv: &[&str]) -> Result<(), String> {
    match Command::new(argv[0]).args(&argv[1..]).stdout(Stdio::null()).stderr(Stdio::piped()).output() {
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

/// An installed datapath: the undo steps of what was changed, run by [`Datapath::teardown`] or on drop.
#[derive(Debug)]
pub struct Datapath {
    undo: Vec<Step>,
}

/// Install the datapath; on failure, undo what was already done.
pub fn install(cfg: &DatapathConfig) -> Result<Datapath, DatapathError> {
    cfg.check()?;
    let backend = resolve_backend(cfg.backend)?;
    let mut dp = Datapath { undo: Vec::new() };
    // Everything applied so far is undone by `dp`'s drop if a later step fails.
    for (key, value) in cfg.sysctls() {
        let old = read_sysctl(&key)?;
        if old != value {
            write_sysctl(&key, &value)?;
            tracing::info!("sysctl {key}={value} (was {old})");
            dp.undo.push(Step::Sysctl { key, value: old });
        }
    }
    let rule_args = cfg.rule_args();
    let listed = Command::new("ip")
        .args(["-6", "rule", "list"])
        .args(&rule_args[..4])
        .output()
        .map_err(|e| DatapathError::Step { step: "ip -6 rule list".into(), reason: e.to_string() })?;
    if String::from_utf8_lossy(&listed.stdout).trim().is_empty() {
        let mut add = vec!["ip".to_string(), "-6".into(), "rule".into(), "add".into()];
        add.extend(rule_args.iter().cloned());
        let step = Step::Run { argv: add, stdin: None };
        apply(&step)?;
        tracing::info!("{step}");
        let mut del = vec!["ip".to_string(), "-6".into(), "rule".into(), "del".into()];
        del.extend(rule_args);
        dp.undo.push(Step::Run { argv: del, stdin: None });
    } else {
        tracing::info!("ip -6 rule fwmark {} lookup {} already present: left as is", cfg.mark, cfg.table);
    }
    let mut add = vec!["ip".to_string(), "-6".into(), "route".into(), "add".into()];
    add.extend(cfg.route_args());
    let step = Step::Run { argv: add, stdin: None };
    match apply(&step) {
        Ok(()) => {
            tracing::info!("{step}");
            let mut del = vec!["ip".to_string(), "-6".into(), "route".into(), "del".into()];
            del.extend(cfg.route_args());
            dp.undo.push(Step::Run { argv: del, stdin: None });
        }
        Err(DatapathError::Step { reason, .. }) if reason.contains("File exists") => {
            tracing::info!("route local ::/0 table {} already present: left as is", cfg.table);
        }
        Err(e) => return Err(e),
    }
    match backend {
        Backend::Nft | Backend::Auto => {
            if works(&["nft", "list", "table", "ip6", &cfg.nft_table]).is_ok() {
                tracing::warn!("nft table ip6 {} exists (stale?): replacing it", cfg.nft_table);
                apply(&run(&["nft", "delete", "table", "ip6", &cfg.nft_table]))?;
            }
            let step = Step::Run { argv: vec!["nft".into(), "-f".into(), "-".into()], stdin: Some(cfg.nft_ruleset()) };
            apply(&step)?;
            tracing::info!("nft table ip6 {} installed", cfg.nft_table);
            dp.undo.push(run(&["nft", "delete", "table", "ip6", &cfg.nft_table]));
        }
        Backend::Iptables => {
            let c = cfg.chain();
            // ip6tables-nft creates the nftables table `ip6 mangle` on first use: remove it again at exit
            // if it did not exist before and nothing else uses it then.
            let nft_based = Command::new("ip6tables")
                .arg("-V")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("nf_tables"));
            if nft_based && works(&["nft", "list", "table", "ip6", "mangle"]).is_err() {
                dp.undo.push(Step::DropEmptyMangle);
            }
            if works(&["ip6tables", "-w", "-t", "mangle", "-S", &c]).is_ok() {
                tracing::warn!("ip6tables chain {c} exists (stale?): replacing it");
                while works(&["ip6tables", "-w", "-t", "mangle", "-D", "PREROUTING", "-j", &c]).is_ok() {}
                apply(&run(&["ip6tables", "-w", "-t", "mangle", "-F", &c]))?;
                apply(&run(&["ip6tables", "-w", "-t", "mangle", "-X", &c]))?;
            }
            apply(&run(&["ip6tables", "-w", "-t", "mangle", "-N", &c]))?;
            dp.undo.push(run(&["ip6tables", "-w", "-t", "mangle", "-X", &c]));
            dp.undo.push(run(&["ip6tables", "-w", "-t", "mangle", "-F", &c]));
            for r in cfg.iptables_rules() {
                apply(&Step::Run { argv: r, stdin: None })?;
            }
            apply(&run(&["ip6tables", "-w", "-t", "mangle", "-I", "PREROUTING", "-j", &c]))?;
            dp.undo.push(run(&["ip6tables", "-w", "-t", "mangle", "-D", "PREROUTING", "-j", &c]));
            tracing::info!("ip6tables mangle chain {c} installed");
        }
    }
    Ok(dp)
}

impl Datapath {
    /// Undo everything [`install`] changed, newest first. Idempotent.
    pub fn teardown(&mut self) {
        while let Some(step) = self.undo.pop() {
            match apply(&step) {
                Ok(()) => tracing::info!("teardown: {step}"),
                Err(e) => tracing::warn!("teardown: {e}"),
            }
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
        }
    }

    #[test]
    fn nft_plan_matches_design() {
        let steps = cfg().plan(Backend::Nft).unwrap();
        let text: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
        assert_eq!(text[0], "sysctl -w net.ipv6.conf.all.forwarding=1");
        assert_eq!(text[2], "sysctl -w net.ipv6.conf.eth0.seg6_enabled=1");
        assert_eq!(text[3], "ip -6 rule add fwmark 1 lookup 100 pref 100");
        assert_eq!(text[4], "ip -6 route add local ::/0 dev lo table 100");
        assert!(text[5].contains(
            "ip6 daddr fc00:f1::/80 tcp flags & (syn | ack) == syn tproxy to :5001 meta mark set 0x1 accept"
        ));
        assert!(text[5].contains("meta l4proto tcp socket transparent 1 meta mark set 0x1 accept"));
    }

    #[test]
    fn iptables_plan_and_bad_names() {
        let text: Vec<String> = cfg().plan(Backend::Iptables).unwrap().iter().map(|s| s.to_string()).collect();
        assert!(text.iter().any(
            |l| l.ends_with("-A SRV6PIPES -d fc00:f1::/80 -p tcp --syn -j TPROXY --on-port 5001 --tproxy-mark 1/1")
        ));
        assert!(text.last().unwrap().ends_with("-I PREROUTING -j SRV6PIPES"));
        let mut c = cfg();
        c.ingress = vec!["../x".into()];
        assert!(c.plan(Backend::Nft).is_err());
        let mut c = cfg();
        c.prefixes.clear();
        assert!(c.plan(Backend::Nft).is_err());
    }
}
