//! Paths from DNS, with a real BIND 9 (topology `dns`): named serves path records (`srv6-path(5)`, type
//! 65300) written by `srv6path record`, with one view per client prefix, so that the same name gives
//! students and staff two different chains; `dig` sees the records in generic syntax and `srv6path query`
//! decodes them; a malformed record is reported with its offset.

use std::net::Ipv6Addr;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use srv6pipes_tests::dns::{zone_file, Bind, View};
use srv6pipes_tests::{binaries, with_net, Net};

const ZONE: &str = "example.test";
const TTL: u32 = 60;

/// The lab: named on the server with the students' and the staff's views.
struct Lab<'a> {
    net: &'a Net,
    bind: Bind,
    dns: Ipv6Addr,
    service: Ipv6Addr,
    r1: Ipv6Addr,
    r2: Ipv6Addr,
}

/// `srv6path record ARGS…`'s zone line.
fn record_line(args: &[&str]) -> Result<String> {
    let srv6path = binaries::path("srv6path")?;
    let out = srv6pipes_tests::Cmd::new([srv6path]).arg("record").args(args).run()?;
    Ok(out.stdout.trim().to_string())
}

impl<'a> Lab<'a> {
    fn start(net: &'a Net) -> Result<Lab<'a>> {
        let dns = "fc00:5::53".parse()?;
        let service = "fc00:5::1".parse()?;
        let (r1, r2) = (net.sid("r1")?, net.sid("r2")?);
        let students_path = format!("{r1},{r2}");
        let students = vec![
            format!("www IN AAAA {service}"),
            record_line(&["www", "--segs", &students_path, "--covers", "fc00:5::/64", "--priority", "10"])?,
            // A lower-priority record for other addresses only: never chosen for www's address.
            record_line(&["www", "--segs", &r2.to_string(), "--covers", "fc00:6::/64", "--priority", "1"])?,
            format!("plain IN AAAA {service}"),
            format!("bad IN AAAA {service}"),
            // Version 1, but N = 3 segments announced with room for one only.
            format!("bad IN TYPE65300 \\# 40 0100000A00030000{}{}01", "00".repeat(16), "00".repeat(15)),
        ];
        let staff = vec![
            format!("www IN AAAA {service}"),
            record_line(&["www", "--segs", &r1.to_string(), "--return-path", "none"])?,
            format!("plain IN AAAA {service}"),
        ];
        let views = [
            View { name: "students", match_clients: "fc00:1::/64;", zone: zone_file(TTL, dns, &students) },
            View { name: "staff", match_clients: "any;", zone: zone_file(TTL, dns, &staff) },
        ];
        let bind = Bind::start(net, "server", dns, ZONE, &views)?;
        Ok(Lab { net, bind, dns, service, r1, r2 })
    }

    fn dig(&self, host: &str, name: &str, rr_type: &str) -> Result<String> {
        let server = format!("@{}", self.dns);
        let fqdn = format!("{name}.{ZONE}");
        let out = self.net.cmd(host, ["dig", "+short", "+time=2", "+tries=1", &server, &fqdn, rr_type]).run()?;
        Ok(out.stdout.trim().to_string())
    }

    /// `srv6path query --json` from `host`; its exit code and JSON.
    fn query(&self, host: &str, name: &str) -> Result<(i32, Value)> {
        let srv6path = binaries::path("srv6path")?;
        let fqdn = format!("{name}.{ZONE}");
        let out = self
            .net
            .cmd(host, [srv6path])
            .args(["query", "--json", "--server", &self.dns.to_string(), &fqdn])
            .output()?;
        let json = serde_json::from_str(&out.stdout)
            .with_context(|| format!("srv6path query output is not JSON: {}\n{}", out.stdout, out.stderr))?;
        Ok((out.status.code().unwrap_or(-1), json))
    }
}

fn segs_of(v: &Value) -> Vec<String> {
    v["segs"].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

#[test]
fn bind_serves_path_records_per_client_prefix() {
    with_net("dns", "dnsv", |net| {
        let lab = Lab::start(net)?;
        // dig shows the records, in RFC 3597 generic syntax only.
        let students = lab.dig("students", "www", "TYPE65300")?;
        let staff = lab.dig("staff", "www", "TYPE65300")?;
        ensure!(students.lines().count() == 2 && students.contains("\\# 56 "), "students' dig: {students}");
        ensure!(staff.lines().count() == 1 && staff.starts_with("\\# 40 "), "staff's dig: {staff}");
        ensure!(lab.dig("students", "www", "AAAA")? == lab.service.to_string());

        // srv6path decodes them, and picks the record covering the address.
        let (code, s) = lab.query("students", "www")?;
        ensure!(code == 0, "srv6path query exit {code}: {s}");
        let addr = &s["addrs"][0];
        ensure!(addr["addr"] == lab.service.to_string(), "students' answer: {s}");
        ensure!(segs_of(&addr["path"]) == [lab.r1.to_string(), lab.r2.to_string()], "students' path: {s}");
        ensure!(addr["path"]["return_path"] == serde_json::json!([lab.r2.to_string(), lab.r1.to_string()]));
        ensure!(s["records"].as_array().map(Vec::len) == Some(2), "students' records: {s}");
        ensure!(s["path_ttl"].as_u64().is_some_and(|t| t > 0 && t <= TTL as u64), "TTL: {s}");

        let (code, f) = lab.query("staff", "www")?;
        ensure!(code == 0, "srv6path query exit {code}: {f}");
        ensure!(segs_of(&f["addrs"][0]["path"]) == [lab.r1.to_string()], "staff's path: {f}");
        ensure!(f["addrs"][0]["path"]["return_path"] == serde_json::json!([]), "staff's return path: {f}");

        // A name without a path record: its address, no path.
        let (code, p) = lab.query("students", "plain")?;
        ensure!(code == 0 && p["records"] == serde_json::json!([]) && p["addrs"][0]["path"].is_null(), "plain: {p}");

        // A malformed record: reported with what is wrong and where, exit 1, the address gets no path.
        let (code, b) = lab.query("students", "bad")?;
        let err = b["records"][0]["error"].as_str().unwrap_or_default();
        ensure!(code == 1 && err.contains("needed"), "bad record: exit {code}, {b}");
        ensure!(b["addrs"][0]["path"].is_null(), "a bad record steers nothing: {b}");
        ensure!(!lab.bind.log().contains("not loaded"), "named refused a zone:\n{}", lab.bind.log());
        Ok(())
    });
}
