//! Paths at scale, distributed by DNS itself (topology `dns`): `srv6path update` publishes, changes and
//! withdraws a name's path record on a BIND primary (the server's namespace) with RFC 2136 updates signed with
//! TSIG; the primary NOTIFYs a BIND secondary (the staff's namespace), which transfers the zone (IXFR from the
//! journal); a client in a third namespace resolving through the secondary sees each change once the old
//! record's TTL ran out. An update signed with a wrong secret is refused, said clearly, and changes nothing.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use srv6pipes_tests::dns::{zone_file, Bind};
use srv6pipes_tests::{binaries, with_net, Net, Output};

const ZONE: &str = "example.test";
const NAME: &str = "www.example.test";
/// The path record's TTL: how long a client may keep the old path after a change.
const TTL: u32 = 2;
/// Bound on a change reaching the client through the secondary: the TTL, NOTIFY, the transfer, on a loaded
/// machine.
const PROPAGATION: Duration = Duration::from_secs(30);
const KEY_NAME: &str = "srv6-update";
/// 32 bytes, base64.
const SECRET: &str = "c3J2NnBpcGVzIHRlc3Qga2V5IGZvciB1cGRhdGVzISE=";
const WRONG_SECRET: &str = "d3JvbmcgdGVzdCBrZXkgZm9yIHVwZGF0ZXMgISEhISE=";

fn key_statement(secret: &str) -> String {
    format!("key \"{KEY_NAME}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n")
}

struct Lab<'a> {
    net: &'a Net,
    primary: Ipv6Addr,
    secondary: Ipv6Addr,
    _primary: Bind,
    _secondary: Bind,
}

impl<'a> Lab<'a> {
    fn start(net: &'a Net) -> Result<Lab<'a>> {
        let primary: Ipv6Addr = "fc00:5::53".parse()?;
        let secondary: Ipv6Addr = "fc00:11::1".parse()?;
        let dir = net.path("named-primary");
        let zone_path = dir.join(format!("{ZONE}.zone"));
        let zone = zone_file(TTL, primary, &["www IN AAAA fc00:5::1".to_string()]);
        let conf = format!(
            "{}zone \"{ZONE}\" {{ type primary; file \"{}\"; allow-update {{ key {KEY_NAME}; }};\n  notify explicit; \
             also-notify {{ {secondary}; }}; allow-transfer {{ any; }}; }};",
            key_statement(SECRET),
            zone_path.display()
        );
        // NOTIFY must come from the address the secondary knows as its primary.
        let options = format!("notify-source-v6 {primary};");
        let files = [(zone_path, zone)];
        let primary_bind = Bind::start_with(net, "server", &dir, primary, ZONE, &options, &conf, &files)?;
        let dir = net.path("named-secondary");
        let copy = dir.join(format!("{ZONE}.copy"));
        let conf =
            format!("zone \"{ZONE}\" {{ type secondary; file \"{}\"; primaries {{ {primary}; }}; }};", copy.display());
        let secondary_bind = Bind::start_with(net, "staff", &dir, secondary, ZONE, "", &conf, &[])?;
        Ok(Lab { net, primary, secondary, _primary: primary_bind, _secondary: secondary_bind })
    }

    /// `srv6path update NAME ARGS…` from the students' host with `secret` in its key file.
    fn update(&self, secret: &str, args: &[&str]) -> Result<Output> {
        let key = self.net.path(&format!("update-{}.key", &secret[..8]));
        std::fs::write(&key, key_statement(secret))?;
        let mut argv = vec![binaries::path("srv6path")?.display().to_string(), "update".into(), NAME.into()];
        let server = self.primary.to_string();
        let fixed = ["--zone", ZONE, "--server", &server, "--key-file", key.to_str().context("path")?];
        argv.extend(fixed.iter().chain(args).map(|s| s.to_string()));
        self.net.cmd("students", argv).output()
    }

    /// The path records the client (students) gets through the secondary: each record's segments.
    fn paths(&self) -> Result<Vec<Vec<String>>> {
        let srv6path = binaries::path("srv6path")?;
        let out = self
            .net
            .cmd("students", [srv6path])
            .args(["query", "--json", "--timeout", "2000", "--server", &self.secondary.to_string(), NAME])
            .output()?;
        let json: Value = serde_json::from_str(&out.stdout).with_context(|| format!("srv6path query: {out}"))?;
        let records = json["records"].as_array().with_context(|| format!("records in {json}"))?;
        Ok(records
            .iter()
            .map(|r| {
                let segs = r["record"]["segs"].as_array().into_iter().flatten();
                segs.filter_map(Value::as_str).map(str::to_string).collect()
            })
            .collect())
    }

    /// Wait until the client sees `want`; returns how long it took.
    fn wait_for(&self, what: &str, want: &[Vec<String>]) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let got = self.paths()?;
            if got == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > PROPAGATION {
                bail!("{what}: the client still sees {got:?} after {PROPAGATION:?}, want {want:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn segs(list: &[&str]) -> Vec<Vec<String>> {
    vec![list.iter().map(|s| s.to_string()).collect()]
}

#[test]
fn srv6path_update_publishes_changes_and_withdraws_a_path_through_a_secondary() {
    with_net("dns", "dnsup", |net| {
        let lab = Lab::start(net)?;
        ensure!(lab.paths()?.is_empty(), "no path record before the first update");

        let ttl = TTL.to_string();
        let out = lab.update(SECRET, &["--segs", "fc00:f1::1", "--ttl", &ttl])?;
        ensure!(out.status.success(), "publish: {out}");
        lab.wait_for("published", &segs(&["fc00:f1::1"]))?;

        // A change replaces the record (one record, the new path), not a second one next to it.
        let out = lab.update(SECRET, &["--segs", "fc00:f2::1,fc00:f1::1", "--ttl", &ttl])?;
        ensure!(out.status.success(), "change: {out}");
        lab.wait_for("changed", &segs(&["fc00:f2::1", "fc00:f1::1"]))?;

        // A wrong secret: refused, said so, and nothing changes on the primary nor the secondary.
        let out = lab.update(WRONG_SECRET, &["--segs", "fc00:f9::1", "--ttl", &ttl])?;
        ensure!(out.status.code() == Some(1), "a wrong key is a refusal, exit status 1: {out}");
        ensure!(
            out.stderr.contains(&format!("refused TSIG key {KEY_NAME}"))
                && out.stderr.contains("wrong secret")
                && out.stderr.lines().count() == 1,
            "the refusal names the key and the likely cause on one line: {out}"
        );
        std::thread::sleep(Duration::from_secs(u64::from(TTL) + 1));
        ensure!(lab.paths()? == segs(&["fc00:f2::1", "fc00:f1::1"]), "the wrong key changed nothing");

        let out = lab.update(SECRET, &["--withdraw"])?;
        ensure!(out.status.success(), "withdraw: {out}");
        lab.wait_for("withdrawn", &[])?;
        Ok(())
    });
}
