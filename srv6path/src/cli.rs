//! Command-line definition (clap derive); `man/srv6path.1` is checked against it by a test.

use std::net::Ipv6Addr;
use std::time::Duration;

use clap::{Parser, Subcommand};
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

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the zone-file line (RFC 3597 generic syntax) of a path record for NAME.
    Record {
        /// The owner name, as it goes in the zone (`www`, `www.example.test.`).
        name: String,
        /// Waypoints in the order they are visited, comma-separated (function SIDs with their arguments).
        #[arg(short, long, value_name = "SID,…")]
        segs: Option<String>,
        /// One binding SID instead of --segs; the router that owns it inserts the segment list.
        #[arg(short, long, value_name = "SID")]
        bsid: Option<Ipv6Addr>,
        /// Return path: reverse (the --segs backwards; the default with --segs), none (the default with
        /// --bsid), or the waypoints a reply visits, in order, comma-separated.
        #[arg(short, long, value_name = "reverse|none|SID,…")]
        return_path: Option<String>,
        /// The answer addresses the path applies to.
        #[arg(short, long, value_name = "PREFIX", default_value = "::/0", value_parser = crate::parse_prefix)]
        covers: Ipv6Prefix,
        /// Priority: among the records covering an address, clients take the lowest.
        #[arg(short, long, value_name = "N", default_value_t = 10)]
        priority: u16,
        /// TTL to write in the line (default: the zone's).
        #[arg(short, long, value_name = "SECONDS")]
        ttl: Option<u32>,
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
  srv6path agent            (system-wide agent, see srv6pipes-agent.service)

Exit status of query: 0, 1 if a record was invalid, 2 on errors.
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
