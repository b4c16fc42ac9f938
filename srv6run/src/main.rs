//! srv6run: run a program with libsrv6sock.so preloaded so that its sockets follow an SRv6 steering policy.

mod agent;
mod checks;
mod cli;
mod explain;
mod hmac;
mod kernel;
mod policy_file;
mod preload;
mod program;
mod run_cgroup;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use libsrv6sock::policy::{self, FailMode, Policy};
use libsrv6sock::reply::{self, ReplyPolicy};
use libsrv6sock::wire::agent as wire_agent;
use srv6pipes_dns::lookup::{parse_server, LookupConfig, PathLookup};

use cli::{Cli, Via};

/// Exit status when srv6run itself refuses (bad options or policy).
const EXIT_USAGE: u8 = 2;
/// Exit status when the program is found but cannot be run (as shells use).
const EXIT_CANNOT_RUN: u8 = 126;
/// Exit status when the program is not found (as shells use).
const EXIT_NOT_FOUND: u8 = 127;

fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|e| usage_error(e));
    match run(cli) {
        Ok(code) => code,
        Err((code, e)) => {
            eprintln!("srv6run: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// Exit on a command-line error; an unknown option is said plainly, with the option clap finds closest.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::UnknownArgument {
        if let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) {
            let hint = match e.get(ContextKind::SuggestedArg) {
                Some(ContextValue::String(s)) => format!("; did you mean {s}?"),
                _ => String::new(),
            };
            eprintln!("srv6run: unknown option {arg}{hint} (srv6run's options go before PROGRAM; see srv6run --help)");
            std::process::exit(EXIT_USAGE.into());
        }
    }
    e.exit()
}

/// The `SRV6_*` settings of the command line, as the variables they override.
fn cli_env(cli: &Cli) -> Result<HashMap<&'static str, String>> {
    let mut env = HashMap::new();
    if let Some(s) = &cli.segs {
        env.insert(policy::ENV_SEGS, s.clone());
    }
    if let Some(r) = &cli.return_path {
        env.insert(policy::ENV_RETURN_PATH, r.clone());
    }
    if let Some(p) = cli.proto {
        env.insert(policy::ENV_PROTO, p.name().to_string());
    }
    if let Some(p) = &cli.policy {
        let abs = std::path::absolute(p).with_context(|| format!("policy file {}", p.display()))?;
        env.insert(policy::ENV_POLICY, abs.display().to_string());
    }
    if let Some(f) = cli.fail {
        env.insert(policy::ENV_FAIL, if f == FailMode::Closed { "closed" } else { "open" }.to_string());
    }
    if cli.reply_path {
        env.insert(reply::ENV_REPLY, "1".to_string());
    }
    if let Some(a) = &cli.reply_allow {
        env.insert(reply::ENV_REPLY_ALLOW, a.clone());
    }
    if let Some(m) = cli.reply_mss {
        env.insert(reply::ENV_REPLY_MSS, m.to_string());
    }
    if let Some(k) = &cli.hmac_key {
        env.insert(policy::ENV_HMAC_KEY, k.id.to_string());
    }
    if let Some(l) = &cli.log {
        // The program may change directory: give the shim an absolute path.
        let target = if l == "stderr" { l.clone() } else { std::path::absolute(l)?.display().to_string() };
        env.insert(policy::ENV_LOG, target);
    }
    Ok(env)
}

/// The variables the program gets: the whole policy compiled (the shim reads no policy file: it has no TOML
/// parser), the failure policy again (what the shim does if it cannot use the compiled policy), the reply and
/// log settings.
fn shim_env(cli: HashMap<&'static str, String>, policy: &Policy) -> Result<HashMap<&'static str, String>> {
    let mut env: HashMap<_, _> = cli
        .into_iter()
        .filter(|(k, _)| {
            ![policy::ENV_SEGS, policy::ENV_RETURN_PATH, policy::ENV_PROTO, policy::ENV_POLICY, policy::ENV_HMAC_KEY]
                .contains(k)
        })
        .collect();
    env.insert(policy::ENV_COMPILED_POLICY, policy.to_hex()?);
    if policy.fail == FailMode::Closed {
        env.insert(policy::ENV_FAIL, "closed".to_string());
    }
    Ok(env)
}

/// The agent's resolver settings: its DNS queries time out before the shim stops waiting for it, so that a
/// slow server gives the shim an answer ("lookup failed") rather than a timeout.
fn dns_config(cli: &Cli) -> Result<LookupConfig> {
    let server =
        cli.dns_server.as_deref().map(parse_server).transpose().map_err(anyhow::Error::msg).context("--dns-server")?;
    Ok(LookupConfig { server, timeout: Duration::from_millis((cli.dns_timeout / 2).max(1)) })
}

/// For `--explain --dns-paths`: the path lookups of the command's host names, with the agent's code and
/// settings.
fn explain_lookups(cli: &Cli) -> Result<explain::DnsAnswers> {
    let config = dns_config(cli)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let lookup = PathLookup::new(&config)?;
        let mut answers = explain::DnsAnswers::new();
        for t in explain::targets(&cli.command[1..]) {
            if t.host.parse::<std::net::IpAddr>().is_err() && !answers.contains_key(&t.host) {
                let a = lookup.lookup(&t.host).await.map_err(|e| e.to_string());
                answers.insert(t.host, a);
            }
        }
        Ok(answers)
    })
}

/// How the SRH gets into PROGRAM's packets, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Preload,
    Kernel,
}

/// The mode `--via` and PROGRAM give, with the reason; an error when PROGRAM cannot be steered.
fn choose_mode(cli: &Cli, policy: &Policy, program: &std::path::Path) -> Result<(Mode, String)> {
    let preloadable = program::check_preloadable(program);
    match cli.via {
        Via::Preload => preloadable.map(|()| (Mode::Preload, "--via preload".to_string())),
        Via::Kernel => match kernel::unsupported(cli, policy) {
            Some(why) => anyhow::bail!("--via kernel: {why}"),
            None => Ok((Mode::Kernel, "--via kernel".to_string())),
        },
        Via::Auto => match preloadable {
            Ok(()) => Ok((Mode::Preload, "the shim reaches a dynamically linked program's sockets".to_string())),
            Err(e) => {
                let blocker = kernel::unsupported(cli, policy).or_else(kernel::missing_privilege);
                match blocker {
                    Some(why) => Err(e.context(format!("kernel mode is not possible either: {why}"))),
                    None => Ok((Mode::Kernel, format!("the shim cannot reach it: {}", e.root_cause()))),
                }
            }
        },
    }
}

fn run(cli: Cli) -> Result<ExitCode, (u8, anyhow::Error)> {
    let usage = |e: anyhow::Error| (EXIT_USAGE, e);
    let options = cli_env(&cli).map_err(usage)?;
    let lookup = |k: &str| options.get(k).cloned().or_else(|| std::env::var(k).ok());
    let policy = policy_file::load(lookup).map_err(|e| usage(e.into()))?;
    let replies = ReplyPolicy::from_env(lookup).map_err(|e| usage(e.into()))?;
    let env = shim_env(options, &policy).map_err(usage)?;
    let preload = preload::find(cli.preload.as_deref()).map_err(usage)?;

    if cli.explain {
        let dns = if cli.dns_paths { Some(explain_lookups(&cli).map_err(usage)?) } else { None };
        let mut e = explain::explain(&policy, &preload.display().to_string(), &cli.command[1..], dns.as_ref());
        e["checks"] = checks::all(&cli.command[0], &policy, &explain::dns_paths(&e), cli.reply_path);
        let mode = program::locate(&cli.command[0], std::env::var("PATH").ok().as_deref())
            .and_then(|path| choose_mode(&cli, &policy, &path));
        match mode {
            Ok((m, why)) => {
                e["mode"] = (if m == Mode::Kernel { "kernel" } else { "preload" }).into();
                e["mode_reason"] = why.into();
            }
            Err(err) => e["mode_error"] = format!("{err:#}").into(),
        }
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&e).expect("JSON values always serialize"));
        } else {
            print!("{}", explain::to_text(&e));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if policy.rules.is_empty() && replies.is_none() && !cli.dns_paths {
        eprintln!("srv6run: warning: no --segs and no policy rules: {} runs unsteered", cli.command[0]);
    }

    if let Some(key) = &cli.hmac_key {
        hmac::ensure_key(key).map_err(|e| (EXIT_CANNOT_RUN, e))?;
    }
    let name = &cli.command[0];
    let path = program::locate(name, std::env::var("PATH").ok().as_deref()).map_err(|e| (EXIT_NOT_FOUND, e))?;
    let (mode, _) = choose_mode(&cli, &policy, &path).map_err(|e| (EXIT_CANNOT_RUN, e))?;

    let mut cmd = Command::new(&path);
    cmd.arg0(name).args(&cli.command[1..]);
    if mode == Mode::Kernel {
        return kernel::run(cmd, &policy).map_err(|e| (EXIT_CANNOT_RUN, e.context("kernel mode")));
    }
    cmd.envs(&env);
    if cli.dns_paths {
        let config = dns_config(&cli).map_err(usage)?;
        let socket = agent::launch(&config).map_err(|e| (EXIT_CANNOT_RUN, e))?;
        cmd.env(wire_agent::ENV_AGENT, socket).env(wire_agent::ENV_AGENT_TIMEOUT, cli.dns_timeout.to_string());
    }
    cmd.env("LD_PRELOAD", preload::ld_preload_value(std::env::var("LD_PRELOAD").ok().as_deref(), &preload));
    let err = cmd.exec();
    let code = if err.kind() == std::io::ErrorKind::NotFound { EXIT_NOT_FOUND } else { EXIT_CANNOT_RUN };
    Err((code, anyhow::Error::new(err).context(format!("cannot run {}", path.display()))))
}
