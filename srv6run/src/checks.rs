//! `--explain`'s checks of what the real run would meet: a program the preload cannot reach, no route to a
//! path's first waypoint, too little MTU left after the SRH, `seg6_enabled` off where SRH packets must be
//! received. Each check is `ok`, `warning` (the run goes on, something may not work) or `fail` (the run, or
//! every connection on that path, would fail).

use std::net::Ipv6Addr;
use std::process::Command;

use libsrv6sock::policy::Policy;
use serde_json::{json, Value};

use crate::program;

/// Bytes of the IPv6 and TCP headers around the SRH.
const IPV6_TCP_HEADERS: usize = 40 + 20;
/// The MSS below which a path is worth a warning (RFC 9293's default MSS).
const SMALL_MSS: usize = 536;

fn check(what: &str, status: &str, detail: String) -> Value {
    json!({"check": what, "status": status, "detail": detail})
}

/// Whether the program can be run with the shim preloaded, as the real run decides.
pub fn program(name: &str) -> Value {
    let found = program::locate(name, std::env::var("PATH").ok().as_deref())
        .and_then(|p| program::check_preloadable(&p).map(|()| p));
    match found {
        Ok(p) => check("program", "ok", format!("{} can be preloaded", p.display())),
        Err(e) => check("program", "fail", format!("{e:#}")),
    }
}

/// The route to `addr`: (device, MTU), or why there is none.
fn route(addr: Ipv6Addr) -> Result<(String, Option<usize>), String> {
    let out = Command::new("ip")
        .args(["-j", "-6", "route", "get", &addr.to_string()])
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().trim_start_matches("RTNETLINK answers: ").to_string());
    }
    let routes: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("ip route get: {e}"))?;
    let r = &routes[0];
    let dev = r["dev"].as_str().ok_or("ip route get gave no device")?.to_string();
    if matches!(r["type"].as_str(), Some("unreachable" | "prohibit" | "blackhole")) {
        return Err(format!("the route is {}", r["type"].as_str().unwrap_or("")));
    }
    let route_mtu = r["metrics"].as_array().into_iter().flatten().find_map(|m| m["mtu"].as_u64());
    let mtu = route_mtu.map(|m| m as usize).or_else(|| sysfs_number(&format!("/sys/class/net/{dev}/mtu")));
    Ok((dev, mtu))
}

fn sysfs_number(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `net.ipv6.conf.DEV.seg6_enabled`.
fn seg6_enabled(dev: &str) -> Option<bool> {
    sysfs_number(&format!("/proc/sys/net/ipv6/conf/{dev}/seg6_enabled")).map(|v| v != 0)
}

/// Checks of one path: a route to its first waypoint, the MTU left after the SRH, and, when replies may come
/// back with an SRH (the path has a return path), `seg6_enabled` on `all` and on the route's device.
pub fn path(label: &str, first: Ipv6Addr, srh_len: usize, return_path: bool) -> Vec<Value> {
    let (dev, mtu) = match route(first) {
        Ok(r) => r,
        Err(e) => {
            return vec![check(
                "route",
                "fail",
                format!("{label}: no route to the first waypoint {first} ({e}): connect() would fail with ENETUNREACH"),
            )]
        }
    };
    let mut out = vec![check("route", "ok", format!("{label}: first waypoint {first} via {dev}"))];
    if let Some(mtu) = mtu {
        let left = mtu.saturating_sub(IPV6_TCP_HEADERS + srh_len);
        let (status, why) = match left {
            0 => ("fail", ": no TCP data fits in a packet"),
            l if l < SMALL_MSS => ("warning", ": small segments, slow transfers"),
            _ => ("ok", ""),
        };
        out.push(check(
            "mtu",
            status,
            format!("{label}: MTU {mtu} on {dev}, {srh_len}-byte SRH: {left} bytes of TCP data per packet{why}"),
        ));
    }
    if return_path {
        let off: Vec<&str> = ["all", dev.as_str()].into_iter().filter(|d| seg6_enabled(d) == Some(false)).collect();
        if off.is_empty() {
            out.push(check("seg6_enabled", "ok", format!("{label}: replies with an SRH are accepted on {dev}")));
        } else {
            out.push(check(
                "seg6_enabled",
                "warning",
                format!(
                    "{label}: seg6_enabled is 0 on {}: replies that come back with an SRH (off-path proxies) would \
                     be dropped; sysctl net.ipv6.conf.all.seg6_enabled=1 net.ipv6.conf.{dev}.seg6_enabled=1",
                    off.join(" and ")
                ),
            ));
        }
    }
    out
}

/// With `--reply-path`, the program receives SYNs with an SRH: `all` and every device need `seg6_enabled`.
pub fn reply_path() -> Value {
    let mut off: Vec<String> = Vec::new();
    if seg6_enabled("all") == Some(false) {
        off.push("all".into());
    }
    for entry in std::fs::read_dir("/proc/sys/net/ipv6/conf").into_iter().flatten().flatten() {
        let dev = entry.file_name().to_string_lossy().into_owned();
        if !["all", "default", "lo"].contains(&dev.as_str()) && seg6_enabled(&dev) == Some(false) {
            off.push(dev);
        }
    }
    if off.is_empty() {
        check("seg6_enabled", "ok", "--reply-path: SYNs with an SRH are accepted".into())
    } else {
        // The kernel takes the minimum of `all` and the device: `all` off drops them everywhere.
        let status = if off.iter().any(|d| d == "all") { "fail" } else { "warning" };
        check(
            "seg6_enabled",
            status,
            format!(
                "--reply-path: seg6_enabled is 0 on {}: SYNs with an SRH arriving there are dropped; set \
                 net.ipv6.conf.all.seg6_enabled=1 and on the receiving devices",
                off.join(", ")
            ),
        )
    }
}

/// Every check of a run of `program` under `policy`, and the paths DNS gave the destinations (`dns_paths`:
/// (label, first waypoint, SRH bytes, has a return path)).
pub fn all(program_name: &str, policy: &Policy, dns_paths: &[(String, Ipv6Addr, usize, bool)], reply: bool) -> Value {
    let mut checks = vec![program(program_name)];
    for rule in &policy.rules {
        let Some(&first) = rule.path.segments.first() else { continue };
        let srh_len = rule.path.srh(Ipv6Addr::UNSPECIFIED).ok().and_then(|s| s.buffer_len().ok()).unwrap_or(0);
        let return_path = rule.path.return_waypoints().next().is_some();
        checks.extend(path(&rule.origin, first, srh_len, return_path));
    }
    for (label, first, len, rp) in dns_paths {
        checks.extend(path(label, *first, *len, *rp));
    }
    if reply {
        checks.push(reply_path());
    }
    Value::Array(checks)
}
