//! The command line; tests/tests/man_pages.rs checks srv6top(8) against its `--help`.

use std::path::PathBuf;

use clap::Parser;
use libsrv6sock::wire::prefix::Ipv6Prefix;

/// Watch SRv6 traffic: flows, their segment lists and functions, and the proxies' own flow state.
#[derive(Debug, Clone, Parser)]
#[command(name = "srv6top", version, after_help = "Keys in the monitor: press ? (see srv6top(8)).")]
pub struct Cli {
    /// Capture live on IFACE (repeatable, or a comma-separated list; `any` for every interface).
    #[arg(short = 'i', long = "interface", value_name = "IFACE", value_delimiter = ',', conflicts_with = "read")]
    pub interfaces: Vec<String>,

    /// Read packets from a pcap file instead of capturing.
    #[arg(short = 'r', long = "read", value_name = "FILE")]
    pub read: Option<PathBuf>,

    /// Capture only what matches this pcap-filter(7) expression.
    #[arg(short = 'f', long, value_name = "EXPR", default_value = "ip6")]
    pub filter: String,

    /// Also write every captured packet to FILE (pcap); needs a single interface.
    #[arg(short = 'w', long = "write", value_name = "FILE", requires = "interfaces")]
    pub write: Option<PathBuf>,

    /// Bytes kept of each packet: enough for the headers and a long SRH.
    #[arg(long, value_name = "BYTES", default_value_t = 1024, value_parser = clap::value_parser!(i32).range(128..=262_144))]
    pub snaplen: i32,

    /// A proxy locator: SIDs in it are shown as function(argument) (repeatable; learnt from --proxy too).
    #[arg(short = 'l', long = "locator", value_name = "PREFIX")]
    pub locators: Vec<Ipv6Prefix>,

    /// SID layout: bits of locator, function and argument.
    #[arg(long, value_name = "LOC/FUNCT/ARG", default_value = "80/16/32")]
    pub sid_layout: String,

    /// Name a function number (repeatable), e.g. `7=hex`; 1=copy and 2=xor are known.
    #[arg(long = "function", value_name = "ID=NAME")]
    pub functions: Vec<String>,

    /// A srv6pipes-proxy control socket to read flows and counters from (repeatable).
    #[arg(short = 'p', long = "proxy", value_name = "SOCKET")]
    pub proxies: Vec<PathBuf>,

    /// Print the flow table as JSON and exit, without the monitor.
    #[arg(long, conflicts_with = "report")]
    pub json: bool,

    /// Print the flow table as text and exit, without the monitor.
    #[arg(long)]
    pub report: bool,

    /// With --json or --report on a live capture: capture this many seconds, then print.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub duration: f64,

    /// Keep at most this many flows; the least recently active go first beyond it.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_flows: usize,

    /// Screen refreshes per second.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub refresh: u32,

    /// No colours (also when NO_COLOR is set): selection and marks stay readable by their style.
    #[arg(long)]
    pub no_color: bool,
}
