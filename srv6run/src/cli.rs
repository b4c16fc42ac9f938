//! Command-line definition (clap derive); tests/tests/man_pages.rs checks `man/srv6run.1` against `--help`.

use std::path::PathBuf;

use crate::hmac::{parse_hmac_key, HmacKey};

use clap::Parser;
use libsrv6sock::policy::{FailMode, Proto};

/// Run PROGRAM with its connections steered over SRv6 paths.
///
/// srv6run preloads libsrv6sock.so into PROGRAM, which then attaches a Segment Routing Header (with a
/// return-path TLV) to every socket whose destination matches the policy: the --segs path, then the rules of
/// the policy file. Options override the SRV6_* environment variables.
#[derive(Debug, Parser)]
#[command(name = "srv6run", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Waypoints every connection visits (TCP, or as --proto says), in order, comma-separated (SIDs:
    /// function SIDs of proxies or End SIDs of routers). The final destination is the address PROGRAM
    /// connects or sends to.
    #[arg(short, long, value_name = "SID,…", env = "SRV6_SEGS")]
    pub segs: Option<String>,

    /// Which sockets --segs steers: tcp (default), udp or any. TCP is the default because SRv6Pipes proxies
    /// relay TCP only: a UDP datagram sent to a proxy's function SID ends at the proxy. Steer UDP (DNS,
    /// QUIC) over paths of plain SRv6 routers. Needs --segs (policy file rules have their own proto).
    #[arg(long, value_name = "tcp|udp|any", env = "SRV6_PROTO", value_parser = parse_proto, requires = "segs")]
    pub proto: Option<Proto>,

    /// Return path for --segs, carried in the return-path TLV: reverse (default), none, or the waypoints a
    /// reply visits, in order, comma-separated.
    #[arg(short, long, value_name = "reverse|none|SID,…", env = "SRV6_RETURN_PATH")]
    pub return_path: Option<String>,

    /// Policy file (TOML rules; see libsrv6sock(7)). Default: $XDG_CONFIG_HOME/srv6pipes/policy.toml, then
    /// /etc/srv6pipes/policy.toml.
    #[arg(short, long, value_name = "FILE", env = "SRV6_POLICY")]
    pub policy: Option<PathBuf>,

    /// Authenticate every steered SYN with an SRH HMAC TLV (RFC 8754) under key KEYID: the SRH gets the H
    /// flag and the kernel computes the HMAC-SHA256 on send with the key `ip sr hmac` configured in this
    /// network namespace. With FILE (a key file, lines of KEYID SECRET), srv6run configures that key first
    /// if the namespace has none under KEYID (needs root; it stays configured).
    #[arg(long, value_name = "KEYID[:FILE]", value_parser = parse_hmac_key)]
    pub hmac_key: Option<HmacKey>,

    /// What a socket does when its path cannot be attached: open (go on without SRH) or closed (the call
    /// fails). Default: the policy file's, else open.
    #[arg(short, long, value_name = "open|closed", env = "SRV6_FAIL", value_parser = parse_fail)]
    pub fail: Option<FailMode>,

    /// Log every decision as a JSON line to stderr or to FILE (appended).
    #[arg(short, long, value_name = "stderr|FILE", env = "SRV6_LOG")]
    pub log: Option<String>,

    /// Reply along the return path: PROGRAM's listening sockets latch each SYN's SRH and every accepted
    /// connection sends with the SRH its return-path TLV lists (waypoints, then the client). Listening
    /// sockets get the MSS of --reply-mss. A malformed or refused return path resets the connection.
    #[arg(long, env = "SRV6_REPLY", value_parser = clap::builder::BoolishValueParser::new())]
    pub reply_path: bool,

    /// With --reply-path: accept only return paths whose waypoints all lie in these prefixes, comma-separated.
    #[arg(long, value_name = "PREFIX,…", env = "SRV6_REPLY_ALLOW", requires = "reply_path")]
    pub reply_allow: Option<String>,

    /// With --reply-path: the MSS (TCP_MAXSEG) of listening sockets; 1440 minus it is the longest reply SRH
    /// accepted [default: 1200].
    #[arg(long, value_name = "BYTES", env = "SRV6_REPLY_MSS", requires = "reply_path")]
    pub reply_mss: Option<u16>,

    /// Take paths from DNS: srv6run starts a resolver agent (gone when PROGRAM and all its children are),
    /// and the shim asks it, in each getaddrinfo(), for the path records (srv6-path(5)) of the name; a
    /// connection to an address of that name then follows its best record. --segs comes first, then paths
    /// from DNS, then the policy file's rules. TCP only.
    #[arg(short = 'D', long)]
    pub dns_paths: bool,

    /// With --dns-paths: the DNS server the agent asks, ADDR or [ADDR]:PORT. Default: /etc/resolv.conf's.
    #[arg(long, value_name = "ADDR", requires = "dns_paths")]
    pub dns_server: Option<String>,

    /// With --dns-paths: how long PROGRAM's getaddrinfo() waits for the agent, in milliseconds; past it,
    /// --fail decides (open: no path; closed: connections to that name's addresses fail with EHOSTUNREACH).
    #[arg(long, value_name = "MS", default_value_t = 500, requires = "dns_paths")]
    pub dns_timeout: u64,

    /// The shim to preload (another library is refused). Default: libsrv6sock.so next to srv6run, then
    /// ../lib/srv6pipes/ beside it, then /usr/local/lib/srv6pipes/ and /usr/lib/srv6pipes/.
    #[arg(long, value_name = "PATH", env = "SRV6RUN_PRELOAD")]
    pub preload: Option<PathBuf>,

    /// How the SRH gets in: preload (the shim, in PROGRAM's sockets), kernel (PROGRAM and every child it
    /// starts run in a cgroup of their own, and an eBPF program on the host's devices inserts the SRH into
    /// their packets: static binaries, Go, io_uring; needs root or CAP_NET_ADMIN and CAP_BPF), or auto:
    /// preload, and kernel for a program the shim cannot reach (static, setuid/setgid) when srv6run has the
    /// privileges and no option needs the shim (--dns-paths, --reply-path).
    #[arg(long, value_name = "preload|kernel|auto", value_enum, default_value_t = Via::Auto)]
    pub via: Via,

    /// Do not run PROGRAM: print the rules and the path each destination named in its arguments (URLs,
    /// [addr]:port, addresses, host names) would get, then check what the run would meet (the program, a route
    /// to each path's first waypoint, the MTU left, seg6_enabled) and say which check would fail.
    #[arg(short, long)]
    pub explain: bool,

    /// With --explain: print JSON instead of text.
    #[arg(long, requires = "explain")]
    pub json: bool,

    /// The program to run and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "PROGRAM")]
    pub command: Vec<String>,
}

/// `--via`: how the SRH gets into PROGRAM's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// LD_PRELOAD of libsrv6sock.so.
    Preload,
    /// A cgroup and an eBPF program in the kernel datapath.
    Kernel,
    /// Preload, or kernel when the shim cannot reach PROGRAM.
    Auto,
}

const AFTER_HELP: &str = "\
Examples:
  srv6run --segs fc00:e1::1,fc00:e2::1 -- curl http://[fc00:4::2]/
  srv6run --segs fc00:e1::1 --proto udp -- dig @fc00:4::53 www.example.net AAAA
  srv6run --policy paths.toml --fail closed --log stderr -- wget http://www.example.net/
  srv6run --explain --policy paths.toml -- curl http://www.example.net/
  srv6run --dns-paths -- curl http://www.example.test/
  sudo srv6run --via kernel --segs fc00:e1::1 -- busybox wget http://[fc00:4::2]/

See srv6run(1) and libsrv6sock(7).";

fn parse_fail(s: &str) -> Result<FailMode, String> {
    s.parse()
}

fn parse_proto(s: &str) -> Result<Proto, String> {
    s.parse()
}
