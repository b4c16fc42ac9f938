//! `srv6pipes-proxy`: run the proxy, print its datapath, or talk to a running one.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use srv6pipes_proxy::config::{ProxyArgs, DEFAULT_CONTROL};
use srv6pipes_proxy::{control, datapath};

/// Transparent SR-aware TCP proxy: terminates flows steered to its function SIDs, runs the function on
/// the bytestream and opens the next leg as the client.
#[derive(Debug, Parser)]
#[command(name = "srv6pipes-proxy", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    proxy: ProxyArgs,
    /// More logs (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show the datapath commands (sysctls, ip rule/route, nftables) without applying them.
    Setup {
        /// Print the commands (required: applying is what running the proxy does).
        #[arg(long)]
        print: bool,
        /// Also print the commands that remove it.
        #[arg(long)]
        teardown: bool,
        #[command(flatten)]
        proxy: ProxyArgs,
    },
    /// Talk to a running proxy through its control socket.
    Ctl {
        /// Control socket path.
        #[arg(long, short = 's', value_name = "PATH", default_value = DEFAULT_CONTROL)]
        control: PathBuf,
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        req: CtlCmd,
    },
}

#[derive(Debug, Subcommand)]
enum CtlCmd {
    /// Live flows: 5-tuple, SID, function, argument, bytes each way, state, age.
    Flows,
    /// Counters.
    Stats,
    /// Loaded modules and their functions.
    Modules,
    /// Load a module (.so) at run time.
    Load { path: PathBuf },
    /// Unload a module by name; flows using it keep it until they end.
    Unload { name: String },
    /// Proxy and ABI version.
    Version,
}

fn init_logs(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn human_bytes(v: u64) -> String {
    match v {
        v if v >= 1 << 30 => format!("{:.1}G", v as f64 / (1u64 << 30) as f64),
        v if v >= 1 << 20 => format!("{:.1}M", v as f64 / (1u64 << 20) as f64),
        v if v >= 1 << 10 => format!("{:.1}K", v as f64 / 1024.0),
        v => v.to_string(),
    }
}

fn print_reply(req: &CtlCmd, v: &Value) {
    let s = |x: &Value| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string());
    let u = |x: &Value| x.as_u64().unwrap_or(0);
    match req {
        CtlCmd::Flows => {
            let flows = v["flows"].as_array().cloned().unwrap_or_default();
            println!(
                "{:>6} {:<30} {:<30} {:<26} {:<10} {:>10} {:>9} {:>9} {:<14} {:>8}",
                "ID", "CLIENT", "SERVER", "SID", "FUNCTION", "ARG", "UP", "DOWN", "STATE", "AGE"
            );
            for f in &flows {
                println!(
                    "{:>6} {:<30} {:<30} {:<26} {:<10} {:>#10x} {:>9} {:>9} {:<14} {:>7.1}s",
                    u(&f["id"]),
                    s(&f["client"]),
                    s(&f["server"]),
                    s(&f["sid"]),
                    s(&f["function"]),
                    u(&f["argument"]),
                    human_bytes(u(&f["bytes_up"])),
                    human_bytes(u(&f["bytes_down"])),
                    s(&f["state"]),
                    u(&f["age_ms"]) as f64 / 1000.0
                );
            }
            println!("{} flow(s)", flows.len());
        }
        CtlCmd::Stats => {
            if let Some(o) = v["stats"].as_object() {
                for (k, val) in o {
                    println!("{k:<26} {val}");
                }
            }
        }
        CtlCmd::Modules => {
            for m in v["modules"].as_array().cloned().unwrap_or_default() {
                println!(
                    "{} {} ({}) flows={}",
                    s(&m["name"]),
                    m["version"].as_str().unwrap_or("-"),
                    m["path"].as_str().unwrap_or("built-in"),
                    u(&m["flows"])
                );
                for f in m["functions"].as_array().cloned().unwrap_or_default() {
                    let dirs: Vec<String> =
                        f["directions"].as_array().cloned().unwrap_or_default().iter().map(s).collect();
                    let dirs = if dirs.is_empty() { "relay".to_string() } else { dirs.join("+") };
                    println!("  {:>5}  {:<16} {}", u(&f["id"]), s(&f["name"]), dirs);
                }
            }
        }
        CtlCmd::Load { .. } => println!("loaded {}", s(&v["module"])),
        CtlCmd::Unload { .. } => {
            println!("unloaded {} ({} flow(s) still using it)", s(&v["module"]), u(&v["flows_still_using"]))
        }
        CtlCmd::Version => println!("srv6pipes-proxy {} (module ABI {})", s(&v["version"]), u(&v["abi_version"])),
    }
}

fn ctl(control: PathBuf, raw: bool, req: CtlCmd) -> anyhow::Result<ExitCode> {
    let msg = match &req {
        CtlCmd::Flows => json!({"cmd": "flows"}),
        CtlCmd::Stats => json!({"cmd": "stats"}),
        CtlCmd::Modules => json!({"cmd": "modules"}),
        CtlCmd::Version => json!({"cmd": "version"}),
        CtlCmd::Load { path } => {
            let abs = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
            json!({"cmd": "load", "path": abs})
        }
        CtlCmd::Unload { name } => json!({"cmd": "unload", "name": name}),
    };
    let reply = control::request(&control, &msg)?;
    let ok = reply["ok"].as_bool().unwrap_or(false);
    if raw {
        println!("{reply}");
    } else if ok {
        print_reply(&req, &reply);
    } else {
        eprintln!("srv6pipes-proxy ctl: {}", reply["error"].as_str().unwrap_or("error"));
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Ctl { control, json, req }) => ctl(control, json, req),
        Some(Cmd::Setup { print, teardown, proxy }) => {
            init_logs(cli.verbose);
            (|| {
                if !print {
                    anyhow::bail!("`setup` only prints (--print); running the proxy installs the datapath");
                }
                let cfg = proxy.resolve()?;
                let backend = datapath::resolve_backend(cfg.datapath.backend).unwrap_or(datapath::Backend::Nft);
                for step in cfg.datapath.plan(backend)? {
                    println!("{step}");
                }
                if teardown {
                    println!("# teardown");
                    for step in cfg.datapath.plan_teardown(backend) {
                        println!("{step}");
                    }
                }
                Ok(ExitCode::SUCCESS)
            })()
        }
        None => {
            init_logs(cli.verbose);
            cli.proxy.resolve().and_then(srv6pipes_proxy::proxy::run).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(c) => c,
        Err(e) => {
            eprintln!("srv6pipes-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// man/srv6pipes-proxy.8 documents every long option of every (sub)command.
    #[test]
    fn man_page_documents_every_option() {
        let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../man/srv6pipes-proxy.8")).unwrap();
        let mut cmds = vec![Cli::command()];
        let mut checked = 0;
        while let Some(cmd) = cmds.pop() {
            for arg in cmd.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if long == "help" || long == "version" {
                    continue;
                }
                let escaped = format!("Fl \\-{}", long.replace('-', "\\-"));
                assert!(page.contains(&escaped), "man/srv6pipes-proxy.8 does not document --{long} ({escaped})");
                checked += 1;
            }
            cmds.extend(cmd.get_subcommands().cloned());
        }
        assert!(checked > 20);
    }
}
