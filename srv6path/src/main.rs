//! `srv6path`: write SRv6 path records as zone-file lines, query a name's addresses and decoded paths, and
//! run the system-wide resolver agent (`srv6path(1)`, `srv6-path(5)`).

use std::net::Ipv6Addr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use libsrv6sock::policy::{parse_addrs, ReturnPath};
use libsrv6sock::wire::path::{PathRecord, Route, RR_TYPE};
use libsrv6sock::wire::prefix::Ipv6Prefix;
use srv6pipes_dns::lookup::{parse_server, Answer, LookupConfig, PathLookup};

mod cli;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("srv6path: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Record { name, segs, bsid, return_path, covers, priority, ttl } => {
            let route = match (segs, bsid) {
                (Some(s), None) => Route::Segments(parse_addrs(&s).map_err(anyhow::Error::msg).context("--segs")?),
                (None, Some(b)) => Route::Binding(b),
                _ => bail!("give exactly one of --segs and --bsid"),
            };
            let rp: ReturnPath = return_path
                .as_deref()
                .unwrap_or(match route {
                    Route::Segments(_) => "reverse",
                    Route::Binding(_) => "none",
                })
                .parse()
                .map_err(anyhow::Error::msg)
                .context("--return-path")?;
            let return_path = match (rp, &route) {
                (ReturnPath::None, _) => vec![],
                (ReturnPath::Explicit(v), _) => v,
                (ReturnPath::Reverse, Route::Segments(s)) => s.iter().rev().copied().collect(),
                (ReturnPath::Reverse, Route::Binding(_)) => {
                    bail!("--return-path reverse makes no sense with --bsid: give none or the waypoints")
                }
            };
            let record = PathRecord { priority, covers, route, return_path };
            println!("{}", zone_line(&name, ttl, &record)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent { socket, server, timeout } => {
            let server =
                server.map(|s| parse_server(&s)).transpose().map_err(anyhow::Error::msg).context("--server")?;
            match std::fs::remove_file(&socket) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing the old {}", socket.display()))
                }
                _ => {}
            }
            let listener = std::os::unix::net::UnixListener::bind(&socket)
                .with_context(|| format!("listening on {}", socket.display()))?;
            // Any user's programs may ask: the answers are what DNS tells anyone.
            std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
            srv6pipes_dns::agent::run(listener, None, &LookupConfig { server, timeout })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Query { name, server, timeout, json } => {
            let server =
                server.map(|s| parse_server(&s)).transpose().map_err(anyhow::Error::msg).context("--server")?;
            let config = LookupConfig { server, timeout };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let answer = rt.block_on(async { PathLookup::new(&config)?.lookup(&name).await })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer_json(&name, &answer))?);
            } else {
                print_answer(&name, &answer);
            }
            let bad = answer.records.iter().any(|r| r.decoded.is_err());
            Ok(if bad { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}

/// `NAME [TTL] IN TYPE65300 \# LEN HEX`, RFC 3597's generic syntax that any DNS server loads unchanged.
fn zone_line(name: &str, ttl: Option<u32>, record: &PathRecord) -> Result<String> {
    let bytes = record.to_bytes()?;
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    let ttl = ttl.map(|t| format!("{t} ")).unwrap_or_default();
    Ok(format!("{name} {ttl}IN TYPE{RR_TYPE} \\# {} {hex}", bytes.len()))
}

fn describe(r: &PathRecord) -> String {
    let list = |v: &[Ipv6Addr]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    let route = match &r.route {
        Route::Segments(s) => format!("segs {}", list(s)),
        Route::Binding(b) => format!("bsid {b}"),
    };
    let back = if r.return_path.is_empty() { "none".to_string() } else { list(&r.return_path) };
    format!("priority {} covers {} {route} return-path {back}", r.priority, r.covers)
}

fn print_answer(name: &str, answer: &Answer) {
    let path_ttl = answer.path_ttl.map(|t| format!(", TTL {t}s")).unwrap_or_default();
    println!(
        "{name}: {} address(es), TTL {}s; {} path record(s){path_ttl}",
        answer.addrs.len(),
        answer.addr_ttl,
        answer.records.len(),
    );
    for r in &answer.records {
        match &r.decoded {
            Ok(rec) => println!("  record TYPE{}: {}", r.rr_type, describe(rec)),
            Err(e) => println!("  record TYPE{}: invalid: {e}", r.rr_type),
        }
    }
    for a in &answer.addrs {
        match answer.path_for(*a) {
            Some(rec) => println!("  {a} -> {}", describe(&rec)),
            None => println!("  {a} -> no path"),
        }
    }
}

fn record_json(r: &PathRecord) -> serde_json::Value {
    let (segs, bsid) = match &r.route {
        Route::Segments(s) => (s.iter().map(|a| a.to_string()).collect::<Vec<_>>(), None),
        Route::Binding(b) => (vec![], Some(b.to_string())),
    };
    serde_json::json!({
        "priority": r.priority,
        "covers": r.covers.to_string(),
        "segs": segs,
        "bsid": bsid,
        "return_path": r.return_path.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    })
}

fn answer_json(name: &str, answer: &Answer) -> serde_json::Value {
    let records: Vec<_> = answer
        .records
        .iter()
        .map(|r| {
            let hex: String = r.rdata.iter().map(|b| format!("{b:02X}")).collect();
            match &r.decoded {
                Ok(rec) => serde_json::json!({"type": r.rr_type, "rdata": hex, "record": record_json(rec)}),
                Err(e) => serde_json::json!({"type": r.rr_type, "rdata": hex, "error": e.to_string()}),
            }
        })
        .collect();
    let addrs: Vec<_> = answer
        .addrs
        .iter()
        .map(|a| serde_json::json!({"addr": a.to_string(), "path": answer.path_for(*a).as_ref().map(record_json)}))
        .collect();
    serde_json::json!({
        "name": name,
        "addr_ttl": answer.addr_ttl,
        "path_ttl": answer.path_ttl,
        "addrs": addrs,
        "records": records,
    })
}

/// A prefix argument.
fn parse_prefix(s: &str) -> Result<Ipv6Prefix, String> {
    s.parse().map_err(|e: libsrv6sock::wire::prefix::PrefixError| e.to_string())
}

/// A timeout in milliseconds.
fn parse_millis(s: &str) -> Result<Duration, String> {
    s.parse::<u64>().map(Duration::from_millis).map_err(|e| e.to_string())
}
