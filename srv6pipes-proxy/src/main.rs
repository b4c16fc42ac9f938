//! `srv6pipes-proxy`: run the proxy, print its datapath, or talk to a running one.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::de::DeserializeOwned;
use srv6pipes_api::control::{
    decode_reply, exchange, ControlError, DrainReply, FlowsReply, KillReply, LoadReply, ModulesReply, Request,
    StatsReply, UnloadReply, Usage, VersionReply,
};
use srv6pipes_proxy::config::ProxyArgs;
use srv6pipes_proxy::datapath::{self, Step};
use srv6pipes_proxy::namespace;
use srv6pipes_proxy::ownership::{self, OwnershipError};
use srv6pipes_proxy::proxy::RunError;

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
    /// Print the datapath commands, or remove a crashed proxy's datapath (--teardown).
    Setup {
        /// Print the commands instead of applying anything.
        #[arg(long)]
        print: bool,
        /// With --print, also print the commands that remove the datapath; alone, remove what the state
        /// file records (the datapath of a proxy that crashed) and the file, and release the shared
        /// pieces of every dead proxy of the namespace.
        #[arg(long)]
        teardown: bool,
        #[command(flatten)]
        proxy: Box<ProxyArgs>,
    },
    /// Talk to a running proxy through its control socket.
    Ctl {
        /// Control socket path [default: /run/srv6pipes/netns-INODE/proxy.sock, INODE: this network
        /// namespace's].
        #[arg(long, short = 's', value_name = "PATH")]
        control: Option<PathBuf>,
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: CtlCmd,
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
    Load {
        /// The shared object.
        path: PathBuf,
    },
    /// Unload a module by name; flows using it keep it until they end.
    Unload {
        /// Module name.
        name: String,
    },
    /// Proxy and ABI version.
    Version,
    /// End a live flow: both legs are reset.
    Kill {
        /// The flow's id (as `ctl flows` shows it).
        id: u64,
    },
    /// Refuse new flows, let open ones finish until the deadline, then stop (as SIGQUIT).
    Drain {
        /// Deadline in seconds [default: the proxy's --drain-timeout].
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
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

/// Print the reply `line` to the request: raw, or decoded as `T` and shown by `show`. A refusal is
/// reported on stderr and makes the exit status 1; a reply that does not decode is an error.
fn reply<T: DeserializeOwned>(line: &str, raw: bool, show: impl FnOnce(T)) -> anyhow::Result<ExitCode> {
    if raw {
        print!("{line}");
    }
    match decode_reply::<T>(line) {
        Ok(r) => {
            if !raw {
                show(r);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ControlError::Refused(e)) => {
            if !raw {
                eprintln!("srv6pipes-proxy ctl: {e}");
            }
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e).context("the proxy's reply"),
    }
}

fn print_flows(r: FlowsReply) {
    println!(
        "{:>6} {:<30} {:<30} {:<26} {:<10} {:>10} {:>9} {:>9} {:<14} {:>8}",
        "ID", "CLIENT", "SERVER", "SID", "FUNCTION", "ARG", "UP", "DOWN", "STATE", "AGE"
    );
    for f in &r.flows {
        // Asymmetric processing: the forward function, then the one the return path names.
        let function = match &f.downstream {
            Some(d) => format!("{}/{}", f.function, d.function),
            None => f.function.clone(),
        };
        println!(
            "{:>6} {:<30} {:<30} {:<26} {:<10} {:>#10x} {:>9} {:>9} {:<14} {:>7.1}s",
            f.id,
            f.client.to_string(),
            f.server.to_string(),
            f.sid.to_string(),
            function,
            f.argument,
            human_bytes(f.bytes_up),
            human_bytes(f.bytes_down),
            f.state.as_str(),
            f.age_ms as f64 / 1000.0
        );
    }
    println!("{} flow(s)", r.flows.len());
}

fn print_stats(r: StatsReply) {
    // The counters' names are their field names (sorted: JSON objects are maps here).
    if let Ok(serde_json::Value::Object(counters)) = serde_json::to_value(&r.stats) {
        for (name, value) in counters {
            println!("{name:<26} {value}");
        }
    }
    let row = |what: String, u: &Usage| {
        let refused: Vec<String> = u.refused.iter().map(|(r, n)| format!("{r}={n}")).collect();
        println!(
            "{what:<34} {:>7} {:>9} {:>7} {:>9} {:>9}  {}",
            u.flows_active,
            u.accepted,
            u.flows_reset,
            human_bytes(u.bytes_up),
            human_bytes(u.bytes_down),
            refused.join(",")
        );
    };
    let head = |first: &str| {
        println!("\n{first:<34} {:>7} {:>9} {:>7} {:>9} {:>9}  REFUSED", "ACTIVE", "ACCEPTED", "RESET", "UP", "DOWN")
    };
    head("SID");
    for s in &r.sids {
        row(s.sid.to_string(), &s.usage);
    }
    head("FUNCTION");
    for f in &r.functions {
        let name = if f.function.is_empty() { "?" } else { &f.function };
        row(format!("{} ({name})", f.function_id), &f.usage);
    }
}

fn print_modules(r: ModulesReply) {
    for m in r.modules {
        let path = m.path.map(|p| p.display().to_string()).unwrap_or_else(|| "built-in".into());
        println!("{} {} ({path}) flows={}", m.name, m.version.as_deref().unwrap_or("-"), m.flows);
        for f in m.functions {
            let dirs: Vec<&str> = f.directions.iter().map(|d| d.as_str()).collect();
            let dirs = if dirs.is_empty() { "relay".to_string() } else { dirs.join("+") };
            println!("  {:>5}  {:<16} {dirs}", f.id, f.name);
        }
    }
}

fn ctl(control: Option<PathBuf>, raw: bool, cmd: CtlCmd) -> anyhow::Result<ExitCode> {
    let control = control.unwrap_or_else(namespace::default_control);
    let req = match &cmd {
        CtlCmd::Flows => Request::Flows,
        CtlCmd::Stats => Request::Stats,
        CtlCmd::Modules => Request::Modules,
        CtlCmd::Version => Request::Version,
        // The proxy resolves paths in its own working directory: send an absolute one.
        CtlCmd::Load { path } => {
            Request::Load { path: std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))? }
        }
        CtlCmd::Unload { name } => Request::Unload { name: name.clone() },
        CtlCmd::Drain { timeout } => Request::Drain { timeout_s: *timeout, handover: false },
        CtlCmd::Kill { id } => Request::Kill { id: *id },
    };
    let line = exchange(&control, &req, Duration::from_secs(10)).context("talking to the proxy")?;
    match cmd {
        CtlCmd::Flows => reply(&line, raw, print_flows),
        CtlCmd::Stats => reply(&line, raw, print_stats),
        CtlCmd::Modules => reply(&line, raw, print_modules),
        CtlCmd::Load { .. } => reply(&line, raw, |r: LoadReply| println!("loaded {}", r.module)),
        CtlCmd::Unload { .. } => reply(&line, raw, |r: UnloadReply| {
            println!("unloaded {} ({} flow(s) still using it)", r.module, r.flows_still_using)
        }),
        CtlCmd::Drain { .. } => reply(&line, raw, |r: DrainReply| {
            println!(
                "draining: {} flow(s) open, reset in {:.1}s at the latest",
                r.flows_active,
                r.deadline_ms as f64 / 1000.0
            )
        }),
        CtlCmd::Kill { .. } => reply(&line, raw, |r: KillReply| println!("flow {} reset", r.id)),
        CtlCmd::Version => reply(&line, raw, |r: VersionReply| {
            println!("srv6pipes-proxy {} (module ABI {})", r.version, r.abi_version)
        }),
    }
}

/// `setup --print [--teardown]`: the commands of the plan's steps, then those removing them, newest first.
fn print_setup(proxy: &ProxyArgs, teardown: bool) -> anyhow::Result<ExitCode> {
    let cfg = proxy.resolve().context("configuration")?;
    let backend = datapath::resolve_backend(cfg.datapath.backend).unwrap_or(datapath::Backend::Nft);
    let steps = cfg.datapath.plan(backend)?;
    for cmd in steps.iter().flat_map(Step::install) {
        println!("{cmd}");
    }
    if teardown {
        println!("# teardown (sysctls go back to the values the proxy found)");
        for cmd in steps.iter().rev().flat_map(Step::remove) {
            println!("{cmd}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `setup --teardown`: remove what the proxy of the state file left (sysctls back to the values found
/// before the first proxy of the namespace started), then the file; also what every other dead proxy of
/// the namespace left. Refused while the state file's owner runs.
fn teardown(proxy: &ProxyArgs) -> anyhow::Result<ExitCode> {
    let path = proxy.state_path().context("configuration")?;
    if ownership::teardown(&path)? {
        // The dead proxy's control socket (nobody answers on it), then the namespace's directory if empty.
        let control = proxy.control_path().context("configuration")?;
        let socket = std::fs::symlink_metadata(&control).is_ok_and(|m| m.file_type().is_socket());
        if socket && std::os::unix::net::UnixStream::connect(&control).is_err() {
            let _ = std::fs::remove_file(&control);
        }
        if let Ok(ns) = namespace::Namespace::current() {
            let _ = std::fs::remove_dir(ns.dir());
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "srv6pipes-proxy: nothing recorded in {} nor by a dead proxy of this network namespace; \
         `setup --print --teardown` shows the removal commands",
        path.display()
    );
    Ok(ExitCode::FAILURE)
}

/// Run the proxy until a signal.
fn run(args: &ProxyArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.resolve().context("configuration")?;
    srv6pipes_proxy::proxy::run(cfg)?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Ctl { control, json, cmd }) => ctl(control, json, cmd),
        Some(Cmd::Setup { print, teardown, proxy }) => {
            init_logs(cli.verbose);
            match (print, teardown) {
                (true, _) => print_setup(&proxy, teardown),
                (false, true) => self::teardown(&proxy),
                (false, false) => Err(anyhow::anyhow!(
                    "`setup` prints (--print) or removes leftovers (--teardown); running the proxy installs the datapath"
                )),
            }
        }
        None => {
            init_logs(cli.verbose);
            run(&cli.proxy)
        }
    };
    match result {
        Ok(c) => c,
        Err(e) => {
            eprintln!("srv6pipes-proxy: {e:#}");
            let taken = e.downcast_ref::<OwnershipError>().or(match e.downcast_ref::<RunError>() {
                Some(RunError::Ownership(o)) => Some(o),
                _ => None,
            });
            // Another live proxy holds what was asked for: a status of its own for scripts.
            if taken.is_some_and(OwnershipError::is_taken) {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
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
