//! `--explain`: which path each destination named in the command would get, decided by the same policy code
//! the shim runs.

use std::net::{Ipv6Addr, ToSocketAddrs};

use std::collections::HashMap;

use libsrv6sock::policy::{FailMode, Policy, Proto, Rule, ENV_SEGS};
use libsrv6sock::wire::srh::SrhRepr;
use serde_json::{json, Value};
use srv6pipes_dns::lookup::Answer;

/// A destination found in the command's arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The argument it came from.
    pub arg: String,
    /// Host name or address literal.
    pub host: String,
    /// Port (from the URL, its scheme's default, or 0 when unknown).
    pub port: u16,
}

fn scheme_port(scheme: &str) -> u16 {
    match scheme {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        "ftp" => 21,
        "ssh" | "sftp" => 22,
        "telnet" => 23,
        _ => 0,
    }
}

/// Split `host[:port]` or `[v6]:port`.
fn host_port(s: &str, default: u16) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').map_or(Some(default), |p| p.parse().ok())?;
        return Some((host.to_string(), port));
    }
    if s.parse::<Ipv6Addr>().is_ok() {
        return Some((s.to_string(), default));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((s.to_string(), default)),
    }
}

/// Destinations in program arguments: URLs (`scheme://host[:port]/…`), `[addr]:port` and IPv6 literals.
pub fn targets(args: &[String]) -> Vec<Target> {
    args.iter()
        .filter_map(|arg| {
            let (host, port) = if let Some((scheme, rest)) = arg.split_once("://") {
                let authority = rest.split(['/', '?', '#']).next()?;
                let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
                host_port(authority, scheme_port(&scheme.to_ascii_lowercase()))?
            } else if arg.starts_with('[') || arg.parse::<Ipv6Addr>().is_ok() {
                host_port(arg, 0)?
            } else {
                return None;
            };
            (!host.is_empty()).then(|| Target { arg: arg.clone(), host, port })
        })
        .collect()
}

fn rule_json(r: &Rule) -> Value {
    json!({
        "origin": r.origin,
        "dst": r.dst.to_string(),
        "port": r.port,
        "name": r.name,
        "proto": r.proto.name(),
        "segments": r.path.segments.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "return_path": r.path.return_waypoints().map(|a| a.to_string()).collect::<Vec<_>>(),
        "tag": r.path.tag,
        "flags": r.path.flags,
    })
}

/// What the agent's lookup gave for each host name of the command (with `--dns-paths`): the answer, or the
/// error the shim would meet (and then apply its failure policy).
pub type DnsAnswers = HashMap<String, Result<Answer, String>>;

/// The SRH as JSON.
fn srh_json(s: &SrhRepr) -> Value {
    json!({
        "segments": s.segments.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "segments_left": s.segments_left,
        "return_path_tlv": s.return_path().map(|p| p.iter().map(ToString::to_string).collect::<Vec<_>>()),
        "bytes": s.buffer_len().ok(),
    })
}

/// The whole explanation as JSON (the text form is printed from it). `dns` holds the path lookups of the
/// command's host names when paths come from DNS (`--dns-paths`), `None` otherwise. Precedence, as in the
/// shim: the `--segs` rule, then a path from DNS for the address (TCP), then the policy's rules.
pub fn explain(policy: &Policy, preload: &str, args: &[String], dns: Option<&DnsAnswers>) -> Value {
    let mut dests = Vec::new();
    for t in targets(args) {
        let addrs: Result<Vec<Ipv6Addr>, String> = match t.host.parse::<Ipv6Addr>() {
            Ok(a) => Ok(vec![a]),
            Err(_) => (t.host.as_str(), t.port)
                .to_socket_addrs()
                .map(|it| {
                    it.filter_map(|sa| match sa.ip() {
                        std::net::IpAddr::V6(a) => Some(a),
                        std::net::IpAddr::V4(_) => None,
                    })
                    .collect()
                })
                .map_err(|e| e.to_string()),
        };
        match addrs {
            Err(e) => dests.push(json!({"arg": t.arg, "host": t.host, "port": t.port, "error": e})),
            Ok(v) if v.is_empty() => dests.push(json!({"arg": t.arg, "host": t.host, "port": t.port,
                "error": "no IPv6 address: the connection will use IPv4 and is not steered"})),
            Ok(v) => {
                for addr in v {
                    let name = (t.host.parse::<Ipv6Addr>().is_err()).then_some(t.host.as_str());
                    let hit = policy.lookup(Proto::Tcp, addr, t.port, name);
                    let answer = dns.and_then(|d| d.get(&t.host));
                    let from_dns = answer.and_then(|a| a.as_ref().ok()).and_then(|a| a.path_for(addr));
                    let segs_first = hit.is_some_and(|(_, r)| r.origin == ENV_SEGS);
                    let (rule, srh) = match (&from_dns, segs_first) {
                        (Some(rec), false) => (Some("dns".to_string()), rec.srh(addr).ok()),
                        _ => (hit.map(|(_, r)| r.origin.clone()), hit.and_then(|(_, r)| r.path.srh(addr).ok())),
                    };
                    let mut d = json!({"arg": t.arg, "host": t.host, "address": addr.to_string(), "port": t.port,
                        "rule": rule, "srh": srh.as_ref().map(srh_json)});
                    if let Some(Err(e)) = answer {
                        d["dns_error"] = json!(e);
                    }
                    dests.push(d);
                }
            }
        }
    }
    json!({
        "preload": preload,
        "dns_paths": dns.is_some(),
        "fail": match policy.fail { FailMode::Open => "open", FailMode::Closed => "closed" },
        "rules": policy.rules.iter().map(rule_json).collect::<Vec<_>>(),
        "destinations": dests,
    })
}

/// The paths DNS gave the destinations of an explanation: (label, first waypoint, SRH bytes, whether it has
/// a return path), for [`crate::checks`].
pub fn dns_paths(e: &Value) -> Vec<(String, Ipv6Addr, usize, bool)> {
    let dests = e["destinations"].as_array().into_iter().flatten();
    dests
        .filter(|d| d["rule"] == "dns")
        .filter_map(|d| {
            let srh = &d["srh"];
            // SRH order: the first waypoint visited is the last segment.
            let first = srh["segments"].as_array()?.last()?.as_str()?.parse().ok()?;
            let label = format!("DNS path of {}", d["host"].as_str().unwrap_or(""));
            Some((label, first, srh["bytes"].as_u64()? as usize, !srh["return_path_tlv"].is_null()))
        })
        .collect()
}

fn list(v: &Value) -> String {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

/// The explanation for people.
pub fn to_text(e: &Value) -> String {
    let mut out = match (e["mode"].as_str(), e["mode_error"].as_str()) {
        (Some(m), _) => format!("mode: {m} ({})\n", e["mode_reason"].as_str().unwrap_or("")),
        (None, Some(err)) => format!("mode: none: {err}\n"),
        (None, None) => String::new(),
    };
    out += &format!(
        "preload: {}\nfailure policy: {}\nrules (first match wins):\n",
        e["preload"].as_str().unwrap_or(""),
        e["fail"].as_str().unwrap_or("")
    );
    if e["dns_paths"] == true {
        out.push_str("paths from DNS: on; precedence: --segs, then the path DNS gives the address, then the rules\n");
    }
    let rules = e["rules"].as_array().cloned().unwrap_or_default();
    if rules.is_empty() {
        out.push_str("  (none: nothing will be steered)\n");
    }
    for (i, r) in rules.iter().enumerate() {
        let mut sel = format!("dst {}", r["dst"].as_str().unwrap_or(""));
        if let Some(p) = r["port"].as_u64() {
            sel += &format!(" port {p}");
        }
        if let Some(n) = r["name"].as_str() {
            sel += &format!(" name {n}");
        }
        out += &format!(
            "  {}. {} ({}, {}): via {}; return via {}\n",
            i + 1,
            r["origin"].as_str().unwrap_or(""),
            sel,
            r["proto"].as_str().unwrap_or(""),
            list(&r["segments"]),
            if r["return_path"].as_array().is_some_and(|a| a.is_empty()) {
                "(no TLV)".to_string()
            } else {
                list(&r["return_path"])
            }
        );
    }
    out.push_str("destinations in the command:\n");
    let dests = e["destinations"].as_array().cloned().unwrap_or_default();
    if dests.is_empty() {
        out.push_str("  (none found: give URLs or [addr]:port arguments)\n");
    }
    for d in dests {
        let what = format!(
            "{} -> [{}]:{}",
            d["arg"].as_str().unwrap_or(""),
            d["address"].as_str().unwrap_or(d["host"].as_str().unwrap_or("")),
            d["port"]
        );
        if let Some(err) = d["error"].as_str() {
            out += &format!("  {what}: {err}\n");
        } else if let Some(err) = d["dns_error"].as_str().filter(|_| d["rule"].is_null()) {
            out += &format!("  {what}: DNS paths failed ({err}): the failure policy applies\n");
        } else if d["rule"].is_null() {
            out += &format!("  {what}: no rule matches: sent without SRH\n");
        } else {
            let srh = &d["srh"];
            out += &format!(
                "  {what}: {}: SRH segments [{}] segments left {}, return-path TLV [{}], {} bytes\n",
                d["rule"].as_str().unwrap_or(""),
                list(&srh["segments"]),
                srh["segments_left"],
                list(&srh["return_path_tlv"]),
                srh["bytes"]
            );
        }
    }
    let checks = e["checks"].as_array().cloned().unwrap_or_default();
    if !checks.is_empty() {
        out.push_str("checks (what the run would meet):\n");
    }
    for c in &checks {
        let status = match c["status"].as_str() {
            Some("fail") => "WOULD FAIL",
            Some("warning") => "warning",
            _ => "ok",
        };
        out += &format!("  {status}: {}: {}\n", c["check"].as_str().unwrap_or(""), c["detail"].as_str().unwrap_or(""));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_destinations_in_arguments() {
        let args: Vec<String> = [
            "-sS",
            "http://[fc00:4::2]:8080/x",
            "https://user@www.example.net/a?b",
            "[fc00::1]:22",
            "fc00::9",
            "out.bin",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let t = targets(&args);
        let got: Vec<_> = t.iter().map(|t| (t.host.as_str(), t.port)).collect();
        assert_eq!(got, vec![("fc00:4::2", 8080), ("www.example.net", 443), ("fc00::1", 22), ("fc00::9", 0)]);
    }

    #[test]
    fn explains_the_shims_decision() {
        let policy = crate::policy_file::from_toml(
            "[[rule]]\ndst = \"fc00:4::/64\"\nport = 80\nsegments = [\"fc00:e1::1\"]\n",
            "p.toml",
        )
        .unwrap();
        let e =
            explain(&policy, "/x/libsrv6sock.so", &["http://[fc00:4::2]/".into(), "http://[fc00:5::2]/".into()], None);
        assert_eq!(e["destinations"][0]["rule"], "p.toml rule #1");
        assert_eq!(e["destinations"][0]["srh"]["segments"], json!(["fc00:4::2", "fc00:e1::1"]));
        assert_eq!(e["destinations"][0]["srh"]["return_path_tlv"], json!(["fc00:e1::1"]));
        assert!(e["destinations"][1]["rule"].is_null());
        assert!(to_text(&e).contains("no rule matches"));
    }
}
