//! Command-line definition (clap derive); `man/srv6path.1` is checked against it by a test.

use std::net::Ipv6Addr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use libsrv6sock::wire::prefix::Ipv6Prefix;

/// Write SRv6 path records (DNS type 65300, srv6-path(5)) as zone-file lines, and show a name's addresses
/// and decoded paths.
#[derive(Debug, Parser)]
#[command(name = "srv6path", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The path record options of `record` and `update`.
#[derive(Debug, Args)]
pub struct PathArgs {
    /// Waypoints in the order they are visited, comma-separated (function SIDs with their arguments).
    #[arg(short, long, value_name = "SID,…")]
    pub segs: Option<String>,
    /// One binding SID instead of --segs; the router that owns it inserts the segment list.
    #[arg(short, long, value_name = "SID")]
    pub bsid: Option<Ipv6Addr>,
    /// Return path: reverse (the --segs backwards; the default with --segs), none (the default with
    /// --bsid), or the waypoints a reply visits, in order, comma-separated.
    #[arg(short, long, value_name = "reverse|none|SID,…")]
    pub return_path: Option<String>,
    /// The answer addresses the path applies to.
    #[arg(short, long, value_name = "PREFIX", default_value = "::/0", value_parser = crate::parse_prefix)]
    pub covers: Ipv6Prefix,
    /// Priority: among the records covering an address, clients take the lowest.
    #[arg(short, long, value_name = "N", default_value_t = 10)]
    pub priority: u16,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the zone-file line (RFC 3597 generic syntax) of a path record for NAME.
    Record {
        /// The owner name, as it goes in the zone (`www`, `www.example.test.`).
        name: String,
        /// The path.
        #[command(flatten)]
        path: PathArgs,
        /// TTL to write in the line (default: the zone's).
        #[arg(short, long, value_name = "SECONDS")]
        ttl: Option<u32>,
    },
    /// Publish or withdraw NAME's path records on its zone's primary: an RFC 2136 dynamic update signed with
    /// TSIG, which the primary passes on to its secondaries (NOTIFY, IXFR). Publishing replaces the name's
    /// path records with this one (--add keeps them).
    Update {
        /// The owner name, fully qualified (www.example.test).
        name: String,
        /// The zone NAME is in.
        #[arg(short, long, value_name = "ZONE")]
        zone: String,
        /// The zone's primary, ADDR or [ADDR]:PORT.
        #[arg(short = 'S', long, value_name = "ADDR")]
        server: String,
        /// The TSIG key: a file with BIND's key statement, as tsig-keygen writes it.
        #[arg(short, long, value_name = "FILE")]
        key_file: std::path::PathBuf,
        /// The path.
        #[command(flatten)]
        path: PathArgs,
        /// The record's TTL: how long resolvers may keep the old path after a change.
        #[arg(short, long, value_name = "SECONDS", default_value_t = 300)]
        ttl: u32,
        /// Add the record to the name's path records instead of replacing them.
        #[arg(long, conflicts_with = "withdraw")]
        add: bool,
        /// Remove all of NAME's path records instead of publishing one.
        #[arg(long, conflicts_with_all = ["segs", "bsid", "return_path"])]
        withdraw: bool,
        /// How long to wait for the primary, in milliseconds.
        #[arg(long, value_name = "MS", default_value = "5000", value_parser = crate::parse_millis)]
        timeout: Duration,
    },
    /// Run the system-wide resolver agent: answer libsrv6sock.so in programs preloaded by hand (without
    /// srv6run --dns-paths) with the paths DNS gives their names.
    Agent {
        /// The socket to listen on (created mode 0666; an existing one is replaced).
        #[arg(short = 'S', long, value_name = "PATH", default_value = libsrv6sock::wire::agent::SYSTEM_SOCKET)]
        socket: std::path::PathBuf,
        /// The DNS server to ask (ADDR or [ADDR]:PORT) instead of those of /etc/resolv.conf.
        #[arg(long, value_name = "ADDR")]
        server: Option<String>,
        /// How long each DNS query may take, in milliseconds (keep it below the shim's
        /// SRV6_AGENT_TIMEOUT_MS, 500 by default).
        #[arg(long, value_name = "MS", default_value = "250", value_parser = crate::parse_millis)]
        timeout: Duration,
    },
    /// Ask NAME's AAAA and path records and print the addresses with the path each gets.
    Query {
        /// The name to look up.
        name: String,
        /// The DNS server to ask (ADDR or [ADDR]:PORT) instead of those of /etc/resolv.conf.
        #[arg(short = 'S', long, value_name = "ADDR")]
        server: Option<String>,
        /// How long each query may take, in milliseconds.
        #[arg(long, value_name = "MS", default_value = "2000", value_parser = crate::parse_millis)]
        timeout: Duration,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

const AFTER_HELP: &str = "\
Examples:
  srv6path record www --segs fc00:f1::2:0:5a,fc00:f2::1:0:0 --covers fc00:4::/64 --priority 10
  srv6path record www --bsid fc00:b6::1
  srv6path query www.example.test --server fc00:d1::1
  srv6path update www.example.test --zone example.test --server fc00:d1::1 --key-file update.key \\
      --segs fc00:f1::2:0:5a --ttl 60
  srv6path agent            (system-wide agent, see srv6pipes-agent.service)

Exit status of query: 0, 1 if a record was invalid, 2 on errors; of update: 0, 1 if the primary refused
it, 2 on other errors.
See srv6path(1) and srv6-path(5).";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The man page documents every option of every subcommand, long and short forms.
    #[test]
    fn man_page_matches_the_definitions() {
        let page = include_str!("../../man/srv6path.1");
        for sub in Cli::command().get_subcommands() {
            assert!(page.contains(&format!(".Ss {}", sub.get_name())), "man/srv6path.1 lacks {}", sub.get_name());
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                let form = match arg.get_short() {
                    Some(short) => format!(".It Fl {short} , Fl -{long}"),
                    None => format!(".It Fl -{long}"),
                };
                assert!(page.contains(&form), "man/srv6path.1 lacks {form:?}");
            }
        }
    }
}
