//! `srv6reply`: host-wide reply steering (`srv6reply(8)`). Attaches the reply-steering programs to the
//! given devices, so that every server on the host — static binaries included, no preload — answers each
//! flow along the return path its SYN carried; logs refusals and evictions as the counters show them, and
//! prints the final counters as JSON on exit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use libsrv6sock::wire::prefix::Ipv6Prefix;
use srv6pipes_steer::reply::{DEFAULT_FLOWS, DEFAULT_LOCATOR_LEN};
use srv6pipes_steer::{ReplyCounters, ReplySettings, ReplySteer};
use tokio::signal::unix::{signal, SignalKind};

/// Steer the replies of every server on this host along the return path (TLV 124) of each flow's SYN.
#[derive(Debug, Parser)]
#[command(name = "srv6reply", version)]
struct Cli {
    /// Devices whose received SYNs are read and whose sent replies are steered (repeat, or comma-separated).
    #[arg(long, short = 'd', value_name = "DEV", value_delimiter = ',', required = true)]
    dev: Vec<String>,
    /// Flows steered at once; more evict the least recently used (counted, logged).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_FLOWS)]
    flows: u32,
    /// Bits a waypoint must share with a segment the SYN carried (its locator).
    #[arg(long, value_name = "BITS", default_value_t = DEFAULT_LOCATOR_LEN, value_parser = clap::value_parser!(u8).range(0..=128))]
    locator_len: u8,
    /// Also accept waypoints in this prefix, whatever the SYN carried (repeat, or comma-separated).
    #[arg(long, value_name = "PREFIX", value_delimiter = ',')]
    reply_allow: Vec<Ipv6Prefix>,
    /// Leave the SYN's MSS alone (replies longer than the MTU by the SRH are then dropped on the way).
    #[arg(long)]
    no_mss_clamp: bool,
    /// Seconds between two readings of the counters (changes are logged).
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    interval: u64,
    /// Write the counters as JSON to this file at every reading (replaced atomically).
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
    /// More log output (repeat for more).
    #[arg(long, short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("srv6reply: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let settings = ReplySettings {
        flows: cli.flows,
        locator_len: cli.locator_len,
        allow: cli.reply_allow.clone(),
        own: Vec::new(),
        mss_clamp: !cli.no_mss_clamp,
    };
    let steer = ReplySteer::attach(&cli.dev, &settings).context("attaching the reply-steering programs")?;
    tracing::info!(devices = ?cli.dev, flows = cli.flows, locator_len = cli.locator_len, allow = ?cli.reply_allow, "srv6reply ready");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("the runtime")?;
    let last = rt.block_on(watch(&steer, &cli))?;
    println!("{}", serde_json::to_string(&last)?);
    Ok(())
}

/// Read the counters every `--interval` until SIGTERM or SIGINT; the last reading.
async fn watch(steer: &ReplySteer, cli: &Cli) -> Result<ReplyCounters> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut tick = tokio::time::interval(Duration::from_secs(cli.interval.max(1)));
    let mut before = ReplyCounters::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                before = reading(steer, &before, cli.stats.as_deref())?;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let now = reading(steer, &before, cli.stats.as_deref())?;
    tracing::info!(?now, "srv6reply stopping: the programs are detached");
    Ok(now)
}

/// One reading: log what changed since `before`, write `stats`.
fn reading(steer: &ReplySteer, before: &ReplyCounters, stats: Option<&Path>) -> Result<ReplyCounters> {
    let now = steer.log_changes(before).context("reading the counters")?;
    if let Some(path) = stats {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&now)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    }
    Ok(now)
}
