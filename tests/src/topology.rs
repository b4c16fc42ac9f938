//! Topologies as data: the TOML files in `tests/topologies/`.
//!
//! A topology declares hosts (one network namespace each), veth links between them with their addresses,
//! and per host: loopback addresses, sysctls, routes and seg6local SIDs. The format is documented at the
//! top of `tests/topologies/steering.toml`; this module only reads and checks it. [`crate::Net`] builds it.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// Where the topology files live.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies")
}

/// A parsed topology file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Hosts by name; the name is also the key used by every [`crate::Net`] method.
    pub hosts: BTreeMap<String, Host>,
    /// Veth pairs.
    #[serde(default)]
    pub links: Vec<Link>,
}

/// One host (network namespace).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Addresses with prefix length put on `lo`.
    #[serde(default)]
    pub loopback: Vec<String>,
    /// `sysctl` keys and values, applied in key order; a `*` path component means `all`, `default` and
    /// every device of the host.
    #[serde(default)]
    pub sysctls: BTreeMap<String, toml::Value>,
    /// Arguments of `ip -6 route add`.
    #[serde(default)]
    pub routes: Vec<String>,
    /// seg6local SIDs this host serves.
    #[serde(default)]
    pub sids: Vec<Sid>,
}

/// A seg6local SID: `ip -6 route add SID/128 encap seg6local action ACTION dev DEV`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sid {
    /// The SID address.
    pub sid: Ipv6Addr,
    /// The action and its parameters, e.g. `End` or `End.X nh6 fc00::1`.
    pub action: String,
    /// The device the route is attached to.
    pub dev: String,
}

/// A veth pair.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// One end.
    pub a: Endpoint,
    /// The other end.
    pub b: Endpoint,
}

/// One end of a veth pair.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Host name.
    pub host: String,
    /// Interface name inside the host's namespace (each namespace has its own names, so `eth0` is fine).
    pub dev: String,
    /// Address with prefix length, e.g. `fc00:1::1/64`.
    pub addr: Option<String>,
    /// `false`: turn tx checksum offload off so that captured packets carry real checksums.
    #[serde(default = "yes")]
    pub tx_offload: bool,
}

fn yes() -> bool {
    true
}

impl Topology {
    /// Load `tests/topologies/NAME.toml`.
    pub fn load(name: &str) -> Result<Topology> {
        let path = dir().join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading topology {}", path.display()))?;
        Topology::parse(&text).with_context(|| format!("in topology {}", path.display()))
    }

    /// Parse and check a topology text.
    pub fn parse(text: &str) -> Result<Topology> {
        let topo: Topology = toml::from_str(text)?;
        topo.check()?;
        Ok(topo)
    }

    fn check(&self) -> Result<()> {
        let mut devs = std::collections::BTreeSet::new();
        for end in self.links.iter().flat_map(|l| [&l.a, &l.b]) {
            if !self.hosts.contains_key(&end.host) {
                bail!("link end {}:{} names an undeclared host", end.host, end.dev);
            }
            // Linux caps interface names at 15 bytes.
            if end.dev.is_empty() || end.dev.len() > 15 || end.dev == "lo" {
                bail!("bad device name {:?} on host {}", end.dev, end.host);
            }
            if !devs.insert((end.host.as_str(), end.dev.as_str())) {
                bail!("device {}:{} declared twice", end.host, end.dev);
            }
            if let Some(addr) = &end.addr {
                parse_cidr(addr).with_context(|| format!("address of {}:{}", end.host, end.dev))?;
            }
        }
        for (name, host) in &self.hosts {
            for addr in &host.loopback {
                parse_cidr(addr).with_context(|| format!("loopback address of {name}"))?;
            }
            for sid in &host.sids {
                if sid.action.split_whitespace().next().is_none() {
                    bail!("SID {} of {name} has an empty action", sid.sid);
                }
            }
            for value in host.sysctls.values() {
                sysctl_value(value).with_context(|| format!("sysctls of {name}"))?;
            }
        }
        Ok(())
    }

    /// The host's interfaces declared by links (not `lo`), in declaration order.
    pub fn devices(&self, host: &str) -> Vec<&str> {
        self.links.iter().flat_map(|l| [&l.a, &l.b]).filter(|e| e.host == host).map(|e| e.dev.as_str()).collect()
    }

    /// The address (without prefix length) of `host`'s device `dev`; `dev` may be `lo` for the first
    /// loopback address.
    pub fn addr(&self, host: &str, dev: &str) -> Result<Ipv6Addr> {
        let h = self.hosts.get(host).with_context(|| format!("no host {host:?} in topology"))?;
        let cidr = if dev == "lo" {
            h.loopback.first()
        } else {
            self.links
                .iter()
                .flat_map(|l| [&l.a, &l.b])
                .find(|e| e.host == host && e.dev == dev)
                .and_then(|e| e.addr.as_ref())
        };
        let cidr = cidr.with_context(|| format!("host {host} has no address on {dev}"))?;
        Ok(parse_cidr(cidr)?.0)
    }

    /// The host's first SID.
    pub fn sid(&self, host: &str) -> Result<Ipv6Addr> {
        let h = self.hosts.get(host).with_context(|| format!("no host {host:?} in topology"))?;
        h.sids.first().map(|s| s.sid).with_context(|| format!("host {host} has no SID"))
    }

    /// `sysctl -w` arguments for a host, with `*` expanded over `all`, `default`, `lo` and its devices.
    pub fn sysctl_assignments(&self, host: &str) -> Result<Vec<String>> {
        let h = self.hosts.get(host).with_context(|| format!("no host {host:?} in topology"))?;
        let mut targets = vec!["all", "default", "lo"];
        targets.extend(self.devices(host));
        let mut out = Vec::new();
        for (key, value) in &h.sysctls {
            let value = sysctl_value(value)?;
            if key.split('.').any(|c| c == "*") {
                for t in &targets {
                    let k: Vec<&str> = key.split('.').map(|c| if c == "*" { t } else { c }).collect();
                    out.push(format!("{}={value}", k.join(".")));
                }
            } else {
                out.push(format!("{key}={value}"));
            }
        }
        Ok(out)
    }
}

/// `ADDR/LEN` → address and prefix length.
fn parse_cidr(s: &str) -> Result<(Ipv6Addr, u8)> {
    let (addr, len) = s.split_once('/').with_context(|| format!("{s:?} lacks a /prefix-length"))?;
    let addr: Ipv6Addr = addr.parse().with_context(|| format!("{s:?}: bad IPv6 address"))?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 128).with_context(|| format!("{s:?}: bad prefix length"))?;
    Ok((addr, len))
}

fn sysctl_value(v: &toml::Value) -> Result<String> {
    match v {
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Boolean(b) => Ok(u8::from(*b).to_string()),
        other => bail!("sysctl value {other} is not an integer, string or boolean"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_topology_parses() {
        let mut seen = 0;
        for entry in std::fs::read_dir(dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let name = path.file_stem().unwrap().to_str().unwrap();
                Topology::load(name).unwrap();
                seen += 1;
            }
        }
        assert!(seen > 0, "no topology files found in {}", dir().display());
    }

    #[test]
    fn star_expands_over_all_default_lo_and_devices() {
        let t = Topology::parse(
            r#"
            [hosts.a]
            sysctls = { "net.ipv6.conf.*.seg6_enabled" = 1, "net.ipv6.conf.all.forwarding" = true }
            [hosts.b]
            [[links]]
            a = { host = "a", dev = "eth0", addr = "fc00::1/64" }
            b = { host = "b", dev = "eth0" }
            "#,
        )
        .unwrap();
        assert_eq!(
            t.sysctl_assignments("a").unwrap(),
            [
                "net.ipv6.conf.all.seg6_enabled=1",
                "net.ipv6.conf.default.seg6_enabled=1",
                "net.ipv6.conf.lo.seg6_enabled=1",
                "net.ipv6.conf.eth0.seg6_enabled=1",
                "net.ipv6.conf.all.forwarding=1",
            ]
        );
        assert_eq!(t.addr("a", "eth0").unwrap(), "fc00::1".parse::<Ipv6Addr>().unwrap());
        assert!(t.addr("b", "eth0").is_err());
    }

    #[test]
    fn rejects_links_to_unknown_hosts_and_bad_addresses() {
        let unknown = r#"
            [hosts.a]
            [[links]]
            a = { host = "a", dev = "eth0" }
            b = { host = "nope", dev = "eth0" }
        "#;
        assert!(Topology::parse(unknown).is_err());
        let bad_addr = r#"
            [hosts.a]
            [hosts.b]
            [[links]]
            a = { host = "a", dev = "eth0", addr = "fc00::1" }
            b = { host = "b", dev = "eth0" }
        "#;
        assert!(Topology::parse(bad_addr).is_err());
    }
}
