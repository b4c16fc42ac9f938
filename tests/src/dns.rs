//! A real BIND 9 (`named`) authoritative for a test zone, with one view per client prefix.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::{Net, Proc};

/// How long named may take to load its zones and answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The Debian package's binary.
const NAMED: &str = "/usr/sbin/named";

/// A view: the clients it matches (`any`, a prefix) and its zone file's text.
pub struct View<'a> {
    /// The view's name.
    pub name: &'a str,
    /// The `match-clients` element list, e.g. `fc00:1::/64;` or `any;`.
    pub match_clients: &'a str,
    /// The zone file (`$TTL`, SOA, NS and the records).
    pub zone: String,
}

/// `named` running in a host, stopped on drop.
pub struct Bind {
    proc: Proc,
    dir: std::path::PathBuf,
}

impl Bind {
    /// Start named in `host`, listening on its IPv6 addresses, authoritative for `zone` in each of `views`
    /// (matched in order), without recursion. Returns once it answers the zone's SOA on `addr`.
    pub fn start(net: &Net, host: &str, addr: std::net::Ipv6Addr, zone: &str, views: &[View<'_>]) -> Result<Bind> {
        let dir = net.path(&format!("named-{host}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let d = dir.display();
        let mut conf = format!(
            "options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; listen-on-v6 {{ any; }}; listen-on {{ none; }};\n  recursion no; dnssec-validation no; querylog yes; }};\n"
        );
        for v in views {
            let file = dir.join(format!("{}.zone", v.name));
            std::fs::write(&file, &v.zone).with_context(|| format!("writing {}", file.display()))?;
            conf += &format!(
                "view \"{}\" {{ match-clients {{ {} }}; zone \"{zone}\" {{ type primary; file \"{}\"; }}; }};\n",
                v.name,
                v.match_clients,
                file.display()
            );
        }
        let conf_path = dir.join("named.conf");
        std::fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
        let mut proc = net.cmd(host, [NAMED, "-u", "root", "-g", "-c"]).arg(&conf_path).spawn()?;
        let server = format!("@{addr}");
        proc.wait_until(&format!("named in {host} to answer for {zone}"), START_TIMEOUT, |_| {
            let out = net.cmd(host, ["dig", "+short", "+time=1", "+tries=1", &server, zone, "SOA"]).output()?;
            Ok(!out.stdout.trim().is_empty())
        })?;
        Ok(Bind { proc, dir })
    }

    /// Replace view `view`'s zone file with `zone` and make named load it (SIGHUP). It answers from the new
    /// zone soon after; callers wait for an answer that shows it.
    pub fn replace_zone(&self, view: &str, zone: &str) -> Result<()> {
        let file = self.dir.join(format!("{view}.zone"));
        std::fs::write(&file, zone).with_context(|| format!("writing {}", file.display()))?;
        self.proc.signal(libc::SIGHUP)
    }

    /// What named logged so far (every query: `querylog yes`).
    pub fn log(&self) -> String {
        self.proc.stderr()
    }

    /// How many queries for `name` (fully qualified, no trailing dot) of type `rr_type` named received.
    pub fn queries(&self, name: &str, rr_type: &str) -> usize {
        let needle = format!("query: {name} IN {rr_type} ");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }
}

/// A zone for `zone` with its SOA and NS (the name server at `ns`), a default TTL and `records`.
pub fn zone_file(ttl: u32, ns: std::net::Ipv6Addr, records: &[String]) -> String {
    let mut z = format!("$TTL {ttl}\n@ IN SOA ns admin 1 60 60 600 {ttl}\n@ IN NS ns\nns IN AAAA {ns}\n");
    for r in records {
        z += r;
        z.push('\n');
    }
    z
}
