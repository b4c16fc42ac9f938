//! Settings: command-line flags over a TOML file over defaults.
//!
//! ```toml
//! prefixes = ["fc00:f1::/80"]      # function prefixes (locators) this proxy answers for
//! port = 5001                      # listener port the SYNs are steered to
//! ingress = ["eth0", "eth1"]       # devices receiving SRH packets (seg6_enabled)
//! workers = 2                      # default: one per CPU
//! sid_layout = "80/16/32"          # locator/function/argument bits
//! control = "/run/srv6pipes/netns-INODE/proxy.sock"   # default: per network namespace
//! modules = ["/usr/lib/srv6pipes/hex.so"]
//! setup = true                     # install/remove the datapath (false = --no-setup)
//! backend = "auto"                 # auto | nft | iptables
//! mark = 1
//! table = 100
//! rule_pref = 100
//! nft_table = "srv6pipes"
//! connect_timeout_ms = 5000
//! buffer_size = 65536
//! splice = true
//! pipe_size = 262144
//! keep_client_port = true
//! backlog = 4096
//! state = "/run/srv6pipes/netns-INODE/proxy.state"   # what it installed (crash recovery, takeover)
//! drain_timeout_s = 30             # a drain's deadline (SIGQUIT, ctl drain, takeover)
//! max_flows = 100000               # default: from the open-files limit
//! idle_timeout_s = 3600            # reset flows that move no byte this long; 0: never
//! server_fin_timeout_s = 30        # … once the client finished sending; 0: as idle_timeout_s
//! client_fin_timeout_s = 30        # … once the server finished sending; 0: as idle_timeout_s
//! user_timeout_s = 30              # TCP_USER_TIMEOUT of both legs; 0: the kernel's (~15 minutes)
//! control_group = "srv6mon"        # group that may read flows and counters on the control socket
//! metrics = "[::1]:9101"           # Prometheus text endpoint (none by default)
//! reply_path = false               # as --reply-path
//! reply_mss = 1200
//! reply_allow = ["fc00:e2::/64"]   # as --reply-allow
//! allow_clients = ["fc00:1::/64"]  # as --allow-clients (default: any client)
//! allow_next = ["fc00:f2::/80", "fc00:4::/64"]   # as --allow-next (default: anywhere)
//! require_hmac = "/etc/srv6pipes/hmac.keys"      # as --require-hmac
//!
//! [[access]]                       # per SID prefix (a locator, a function's SIDs); first match wins
//! sids = "fc00:f1::2:0:0/96"       # function 2 of locator fc00:f1::/80
//! allow_clients = ["fc00:1::/64"]  # lists not given here are the proxy's
//! allow_next = ["fc00:f2::/80"]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use libsrv6sock::hmac_keys::HmacKeys;
use libsrv6sock::reply::ReplyPolicy;
use libsrv6sock::wire::prefix::Ipv6Prefix;
use libsrv6sock::wire::sid::SidLayout;
use serde::Deserialize;

use crate::access::{Access, Allow, SidRule};
use crate::datapath::{Backend, DatapathConfig};
use crate::flow::FlowConfig;
use crate::lifecycle::Limits;
use crate::namespace;
use crate::relay::RelayConfig;
use crate::timeouts::{Timeouts, DEFAULT_FIN_S, DEFAULT_IDLE_S, DEFAULT_USER_S};

/// Default deadline of a drain, in seconds.
pub const DEFAULT_DRAIN_TIMEOUT_S: u64 = 30;

/// Flags shared by the proxy and `setup --print`.
#[derive(Debug, Clone, Default, Args)]
pub struct ProxyArgs {
    /// Function prefix (locator) of this proxy, e.g. fc00:f1::/80; repeat or separate with commas.
    #[arg(long = "prefix", value_name = "PREFIX", value_delimiter = ',')]
    pub prefixes: Vec<Ipv6Prefix>,
    /// Listener port that SYNs to the prefixes are steered to (TPROXY).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Interface receiving SRH packets (gets seg6_enabled=1); repeat or separate with commas.
    #[arg(long, value_name = "DEV", value_delimiter = ',')]
    pub ingress: Vec<String>,
    /// Worker threads, each with its own SO_REUSEPORT listener [default: one per CPU].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// TOML configuration file (flags override it).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Do not install or remove the datapath (sysctls, ip rule/route, nftables): the operator does.
    #[arg(long)]
    pub no_setup: bool,
    /// SID layout as LOCATOR/FUNCTION/ARGUMENT bits [default: 80/16/32].
    #[arg(long, value_name = "L/F/A")]
    pub sid_layout: Option<String>,
    /// Control socket path [default: /run/srv6pipes/netns-INODE/proxy.sock, INODE: the network namespace's].
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Module (.so) to load at start; repeatable.
    #[arg(long = "module", value_name = "FILE")]
    pub modules: Vec<PathBuf>,
    /// Packet filter for the datapath: auto, nft or iptables [default: auto].
    #[arg(long, value_name = "B")]
    pub backend: Option<Backend>,
    /// Firewall mark of packets delivered locally [default: 1].
    #[arg(long, value_name = "MARK")]
    pub mark: Option<u32>,
    /// Routing table holding `local ::/0` [default: 100].
    #[arg(long, value_name = "TABLE")]
    pub table: Option<u32>,
    /// nftables table name (ip6 family; the ip6tables chain is its upper-case) [default: srv6pipes].
    #[arg(long, value_name = "NAME")]
    pub nft_table: Option<String>,
    /// Timeout of the outbound connect, in milliseconds [default: 5000].
    #[arg(long, value_name = "MS")]
    pub connect_timeout_ms: Option<u64>,
    /// Relay buffer size in bytes [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub buffer_size: Option<usize>,
    /// Copy untransformed directions through user space instead of splice(2).
    #[arg(long)]
    pub no_splice: bool,
    /// State file recording the datapath this proxy installed; its lock file says who owns it [default:
    /// /run/srv6pipes/netns-INODE/proxy.state].
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Take over from the proxy that owns the state file: once it agreed to hand over, take its datapath,
    /// let it drain, serve the new flows (a failure leaves it serving, untouched).
    #[arg(long)]
    pub takeover: bool,
    /// Deadline of a drain (SIGQUIT, `ctl drain`, takeover), in seconds [default: 30].
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<u64>,
    /// Most concurrent flows; more are refused [default: from the open-files limit].
    #[arg(long, value_name = "N")]
    pub max_flows: Option<u64>,
    /// Reset flows that move no byte (read or written) for this long while both directions are open, in
    /// seconds; 0: never [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<u64>,
    /// Once the client finished sending (FIN), reset the flow if no byte moves for this long, in seconds;
    /// 0: the idle timeout applies [default: 30].
    #[arg(long, value_name = "SECS")]
    pub server_fin_timeout: Option<u64>,
    /// Once the server finished sending (FIN), reset the flow if no byte moves for this long, in seconds;
    /// 0: the idle timeout applies [default: 30].
    #[arg(long, value_name = "SECS")]
    pub client_fin_timeout: Option<u64>,
    /// Abort a leg whose peer leaves data unacknowledged (or its window closed, or keepalive probes
    /// unanswered) this long, in seconds (TCP_USER_TIMEOUT); 0: the kernel's default [default: 30].
    #[arg(long, value_name = "SECS")]
    pub user_timeout: Option<u64>,
    /// Group (name or number) whose members may read flows and counters on the control socket (mode
    /// 0660); other requests stay root's.
    #[arg(long, value_name = "GROUP")]
    pub control_group: Option<String>,
    /// Serve the counters in the Prometheus text format on this address (GET /metrics).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Honour the return path off the routed path: client-facing sockets send with the SRH of the
    /// return-path TLV (the waypoints after this proxy's SID), their MSS is clamped, and the last proxy
    /// passes the TLV on to the server.
    #[arg(long)]
    pub reply_path: bool,
    /// With --reply-path: MSS of accepted flows (TCP_MAXSEG on the listeners); 1440 minus it is the longest
    /// reply SRH accepted [default: 1200].
    #[arg(long, value_name = "BYTES", requires = "reply_path")]
    pub reply_mss: Option<u16>,
    /// With --reply-path: also steer replies through waypoints in this prefix, whatever the SYN carried
    /// (by default each must share its /64 with a segment of the SYN); repeat, or comma-separated.
    #[arg(long, value_name = "PREFIX", value_delimiter = ',', requires = "reply_path")]
    pub reply_allow: Vec<Ipv6Prefix>,
    /// Serve only clients in these prefixes, comma-separated [default: any client].
    #[arg(long, value_name = "PREFIX,…", value_delimiter = ',')]
    pub allow_clients: Vec<Ipv6Prefix>,
    /// Relay only towards next segments (or final destinations) in these prefixes, comma-separated
    /// [default: anywhere but this proxy's own SIDs].
    #[arg(long, value_name = "PREFIX,…", value_delimiter = ',')]
    pub allow_next: Vec<Ipv6Prefix>,
    /// Refuse SYNs whose SRH lacks a valid HMAC TLV (RFC 8754, as Linux computes it) under a key of
    /// KEYFILE (lines of KEYID SECRET); the ingress devices get seg6_require_hmac=-1.
    #[arg(long, value_name = "KEYFILE")]
    pub require_hmac: Option<PathBuf>,
}

/// Why the settings are not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file cannot be read.
    #[error("{}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The configuration file is not valid.
    #[error("{}: {error}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        error: toml::de::Error,
    },
    /// No function prefix given.
    #[error("no function prefix: give --prefix (e.g. --prefix fc00:f1::/80) or `prefixes` in the config file")]
    NoPrefix,
    /// No listener port given.
    #[error("no listener port: give --port or `port`")]
    NoPort,
    /// Port 0.
    #[error("port 0 is not a listener port")]
    PortZero,
    /// The SID layout does not parse or does not fit.
    #[error("SID layout {layout:?}: {reason}")]
    Layout {
        /// As given.
        layout: String,
        /// Why.
        reason: String,
    },
    /// Worker count out of range.
    #[error("workers must be 1 to 1024")]
    Workers,
    /// Buffer size out of range.
    #[error("buffer size must be 1 KiB to 64 MiB")]
    BufferSize,
    /// Reply MSS out of range.
    #[error("reply MSS must be 536 to 1440")]
    ReplyMss,
    /// The HMAC key file is unusable.
    #[error(transparent)]
    Keys(#[from] libsrv6sock::hmac_keys::KeyFileError),
}

/// The TOML file (keys as in the module's example; flags override them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// As `--prefix`.
    pub prefixes: Option<Vec<Ipv6Prefix>>,
    /// As `--port`.
    pub port: Option<u16>,
    /// As `--ingress`.
    pub ingress: Option<Vec<String>>,
    /// As `--workers`.
    pub workers: Option<usize>,
    /// As `--sid-layout`.
    pub sid_layout: Option<String>,
    /// As `--control`.
    pub control: Option<PathBuf>,
    /// As `--module`, loaded before those.
    pub modules: Option<Vec<PathBuf>>,
    /// `false` as `--no-setup`.
    pub setup: Option<bool>,
    /// As `--backend`.
    pub backend: Option<Backend>,
    /// As `--mark`.
    pub mark: Option<u32>,
    /// As `--table`.
    pub table: Option<u32>,
    /// Priority of the `ip -6 rule` [default: 100].
    pub rule_pref: Option<u32>,
    /// As `--nft-table`.
    pub nft_table: Option<String>,
    /// As `--connect-timeout-ms`.
    pub connect_timeout_ms: Option<u64>,
    /// As `--buffer-size`.
    pub buffer_size: Option<usize>,
    /// `false` as `--no-splice`.
    pub splice: Option<bool>,
    /// Pipe size for splice(2) [default: 262144].
    pub pipe_size: Option<usize>,
    /// Bind the outbound leg to the client's port [default: true].
    pub keep_client_port: Option<bool>,
    /// Listen backlog [default: 4096].
    pub backlog: Option<i32>,
    /// As `--state`.
    pub state: Option<PathBuf>,
    /// As `--drain-timeout`.
    pub drain_timeout_s: Option<u64>,
    /// As `--max-flows`.
    pub max_flows: Option<u64>,
    /// As `--idle-timeout`.
    pub idle_timeout_s: Option<u64>,
    /// As `--server-fin-timeout`.
    pub server_fin_timeout_s: Option<u64>,
    /// As `--client-fin-timeout`.
    pub client_fin_timeout_s: Option<u64>,
    /// As `--user-timeout`.
    pub user_timeout_s: Option<u64>,
    /// As `--control-group`.
    pub control_group: Option<String>,
    /// As `--metrics`.
    pub metrics: Option<SocketAddr>,
    /// As `--reply-path`.
    pub reply_path: Option<bool>,
    /// As `--reply-mss`.
    pub reply_mss: Option<u16>,
    /// As `--reply-allow`.
    pub reply_allow: Option<Vec<Ipv6Prefix>>,
    /// As `--allow-clients`.
    pub allow_clients: Option<Vec<Ipv6Prefix>>,
    /// As `--allow-next`.
    pub allow_next: Option<Vec<Ipv6Prefix>>,
    /// As `--require-hmac`.
    pub require_hmac: Option<PathBuf>,
    /// Access rules per SID prefix.
    pub access: Option<Vec<SidRule>>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// What the datapath needs.
    pub datapath: DatapathConfig,
    /// What each flow needs.
    pub flow: FlowConfig,
    /// Worker threads.
    pub workers: usize,
    /// Control socket path.
    pub control: PathBuf,
    /// Modules to load at start.
    pub modules: Vec<PathBuf>,
    /// Install and remove the datapath.
    pub setup: bool,
    /// Listen backlog of each worker's listener.
    pub backlog: i32,
    /// State file of the installed datapath.
    pub state: PathBuf,
    /// Take over from the running proxy that owns the state file.
    pub takeover: bool,
    /// Deadline of a drain.
    pub drain_timeout: Duration,
    /// Most concurrent flows (`None`: from the open-files limit, at start).
    pub max_flows: Option<u64>,
    /// Group that may read the control socket.
    pub control_group: Option<String>,
    /// Address of the Prometheus endpoint.
    pub metrics: Option<SocketAddr>,
}

impl ProxyConfig {
    /// The flow limits, `default_max_flows` unless a limit was given.
    pub fn limits(&self, default_max_flows: u64) -> Limits {
        Limits { max_flows: self.max_flows.unwrap_or(default_max_flows) }
    }
}

/// Parse `80/16/32` (also `80,16,32`).
pub fn parse_layout(s: &str) -> Result<SidLayout, ConfigError> {
    let bad = |reason: String| ConfigError::Layout { layout: s.into(), reason };
    let parts: Vec<&str> = s.split(['/', ',', ':']).map(str::trim).collect();
    let [l, f, a] = parts.as_slice() else {
        return Err(bad("expected LOCATOR/FUNCTION/ARGUMENT bits, e.g. 80/16/32".into()));
    };
    let n = |x: &str| x.parse::<u8>().map_err(|_| bad(format!("{x:?} is not a bit count")));
    SidLayout::new(n(l)?, n(f)?, n(a)?).map_err(|e| bad(e.to_string()))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.into(), error })?;
    toml::from_str(&text).map_err(|error| ConfigError::Parse { path: path.into(), error })
}

impl ProxyArgs {
    /// The state file's path (flag over config file over default), without the rest of the settings:
    /// removing a crashed run's datapath needs nothing else.
    pub fn state_path(&self) -> Result<PathBuf, ConfigError> {
        self.path_setting(&self.state, |f| f.state, namespace::default_state)
    }

    /// The control socket's path, as [`ProxyArgs::state_path`] (to remove a crashed run's socket).
    pub fn control_path(&self) -> Result<PathBuf, ConfigError> {
        self.path_setting(&self.control, |f| f.control, namespace::default_control)
    }

    fn path_setting(
        &self,
        flag: &Option<PathBuf>,
        in_file: impl FnOnce(FileConfig) -> Option<PathBuf>,
        default: fn() -> PathBuf,
    ) -> Result<PathBuf, ConfigError> {
        let file = match (flag, &self.config) {
            (Some(p), _) => return Ok(p.clone()),
            (None, Some(c)) => in_file(read_file(c)?),
            (None, None) => None,
        };
        Ok(file.unwrap_or_else(default))
    }

    /// Merge flags over the config file over defaults.
    pub fn resolve(&self) -> Result<ProxyConfig, ConfigError> {
        let file = match &self.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let prefixes = if self.prefixes.is_empty() { file.prefixes.unwrap_or_default() } else { self.prefixes.clone() };
        if prefixes.is_empty() {
            return Err(ConfigError::NoPrefix);
        }
        let port = self.port.or(file.port).ok_or(ConfigError::NoPort)?;
        if port == 0 {
            return Err(ConfigError::PortZero);
        }
        let ingress = if self.ingress.is_empty() { file.ingress.unwrap_or_default() } else { self.ingress.clone() };
        let layout = match self.sid_layout.as_deref().or(file.sid_layout.as_deref()) {
            Some(s) => parse_layout(s)?,
            None => SidLayout::default(),
        };
        for p in &prefixes {
            if p.prefix_len() > layout.locator_bits() {
                tracing::warn!("prefix {p} is longer than the /{} locator of the SID layout", layout.locator_bits());
            }
        }
        let workers = self
            .workers
            .or(file.workers)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        if workers == 0 || workers > 1024 {
            return Err(ConfigError::Workers);
        }
        let buffer_size = self.buffer_size.or(file.buffer_size).unwrap_or(65536);
        if !(1024..=64 << 20).contains(&buffer_size) {
            return Err(ConfigError::BufferSize);
        }
        let reply = (self.reply_path || file.reply_path.unwrap_or(false))
            .then(|| self.reply_mss.or(file.reply_mss).unwrap_or(libsrv6sock::reply::DEFAULT_MSS))
            .map(|mss| match mss {
                536..=1440 => Ok(ReplyPolicy {
                    allow: if self.reply_allow.is_empty() {
                        file.reply_allow.clone().unwrap_or_default()
                    } else {
                        self.reply_allow.clone()
                    },
                    mss,
                }),
                _ => Err(ConfigError::ReplyMss),
            })
            .transpose()?;
        let secs = |flag: Option<u64>, key: Option<u64>, default: u64| match flag.or(key).unwrap_or(default) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        let timeouts = Timeouts {
            idle: secs(self.idle_timeout, file.idle_timeout_s, DEFAULT_IDLE_S),
            server_fin: secs(self.server_fin_timeout, file.server_fin_timeout_s, DEFAULT_FIN_S),
            client_fin: secs(self.client_fin_timeout, file.client_fin_timeout_s, DEFAULT_FIN_S),
            user: secs(self.user_timeout, file.user_timeout_s, DEFAULT_USER_S),
        };
        let list = |flag: &Vec<Ipv6Prefix>, file: Option<Vec<Ipv6Prefix>>| {
            if flag.is_empty() {
                file
            } else {
                Some(flag.clone())
            }
        };
        let hmac_keys = self.require_hmac.clone().or(file.require_hmac);
        let access = Access {
            allow: Allow {
                clients: list(&self.allow_clients, file.allow_clients),
                next: list(&self.allow_next, file.allow_next),
            },
            rules: file.access.unwrap_or_default(),
            hmac: hmac_keys.as_deref().map(HmacKeys::from_file).transpose()?,
        };
        let mut modules = file.modules.unwrap_or_default();
        modules.extend(self.modules.iter().cloned());
        Ok(ProxyConfig {
            datapath: DatapathConfig {
                prefixes: prefixes.clone(),
                port,
                ingress,
                mark: self.mark.or(file.mark).unwrap_or(1),
                table: self.table.or(file.table).unwrap_or(100),
                rule_pref: file.rule_pref.unwrap_or(100),
                nft_table: self.nft_table.clone().or(file.nft_table).unwrap_or_else(|| "srv6pipes".into()),
                backend: self.backend.or(file.backend).unwrap_or(Backend::Auto),
                require_hmac: access.hmac.is_some(),
            },
            flow: FlowConfig {
                prefixes,
                layout,
                connect_timeout: Duration::from_millis(
                    self.connect_timeout_ms.or(file.connect_timeout_ms).unwrap_or(5000),
                ),
                timeouts,
                keep_client_port: file.keep_client_port.unwrap_or(true),
                relay: RelayConfig {
                    buffer_size,
                    splice: !self.no_splice && file.splice.unwrap_or(true),
                    pipe_size: file.pipe_size.unwrap_or(256 * 1024),
                },
                reply,
                access,
            },
            workers,
            control: self.control.clone().or(file.control).unwrap_or_else(namespace::default_control),
            modules,
            setup: !self.no_setup && file.setup.unwrap_or(true),
            backlog: file.backlog.unwrap_or(4096),
            state: self.state.clone().or(file.state).unwrap_or_else(namespace::default_state),
            takeover: self.takeover,
            drain_timeout: Duration::from_secs(
                self.drain_timeout.or(file.drain_timeout_s).unwrap_or(DEFAULT_DRAIN_TIMEOUT_S),
            ),
            max_flows: self.max_flows.or(file.max_flows),
            control_group: self.control_group.clone().or(file.control_group),
            metrics: self.metrics.or(file.metrics),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("srv6pipes-proxy-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.toml");
        std::fs::write(&f, "prefixes = [\"fc00:f1::/80\"]\nport = 5001\ningress = [\"a\", \"b\"]\nsid_layout = \"64/16/48\"\nsplice = false\n").unwrap();
        let args = ProxyArgs { config: Some(f.clone()), port: Some(6000), ..Default::default() };
        let c = args.resolve().unwrap();
        assert_eq!(c.datapath.port, 6000);
        assert_eq!(c.datapath.ingress, vec!["a", "b"]);
        assert_eq!(c.flow.layout.locator_bits(), 64);
        assert!(!c.flow.relay.splice);
        assert_eq!(c.flow.timeouts, Timeouts::default());
        let t = ProxyArgs { idle_timeout: Some(0), server_fin_timeout: Some(2), ..args.clone() }.resolve().unwrap();
        assert_eq!((t.flow.timeouts.idle, t.flow.timeouts.server_fin), (None, Some(Duration::from_secs(2))));
        assert_eq!(args.state_path().unwrap(), namespace::default_state());
        std::fs::write(&f, "state = \"/tmp/x.state\"\n").unwrap();
        assert_eq!(args.state_path().unwrap(), PathBuf::from("/tmp/x.state"));
        let flag = ProxyArgs { state: Some("/y".into()), ..args.clone() };
        assert_eq!(flag.state_path().unwrap(), PathBuf::from("/y"));
        std::fs::write(&f, "prefixes = [\"fc00:f1::/80\"]\nbogus = 1\n").unwrap();
        assert!(args.resolve().is_err());
        let reply = ProxyArgs { reply_path: true, ..args.clone() };
        std::fs::write(&f, "prefixes = [\"fc00:f1::/80\"]\nreply_mss = 1300\n").unwrap();
        assert_eq!(reply.resolve().unwrap().flow.reply.map(|r| r.mss), Some(1300));
        std::fs::write(&f, "prefixes = [\"fc00:f1::/80\"]\nreply_mss = 100\n").unwrap();
        assert!(matches!(reply.resolve(), Err(ConfigError::ReplyMss)));
        assert!(args.resolve().unwrap().flow.reply.is_none());
        let keys = dir.join("hmac.keys");
        std::fs::write(&keys, "7 s3cret\n").unwrap();
        std::fs::write(
            &f,
            format!(
                "prefixes = [\"fc00:f1::/80\"]\nallow_clients = [\"fc00:1::/64\"]\nrequire_hmac = {keys:?}\n\
                 [[access]]\nsids = \"fc00:f1::2:0:0/96\"\nallow_next = [\"fc00:f2::/80\"]\n"
            ),
        )
        .unwrap();
        let c = args.resolve().unwrap();
        let access = &c.flow.access;
        assert_eq!(access.allow.clients, Some(vec!["fc00:1::/64".parse().unwrap()]));
        assert_eq!((access.rules.len(), access.hmac.as_ref().and_then(|k| k.get(7))), (1, Some(&b"s3cret"[..])));
        assert!(c.datapath.require_hmac);
        let flags = ProxyArgs { allow_clients: vec!["fc00:9::/64".parse().unwrap()], ..args.clone() };
        assert_eq!(flags.resolve().unwrap().flow.access.allow.clients, Some(vec!["fc00:9::/64".parse().unwrap()]));
        std::fs::write(&keys, "seven s3cret\n").unwrap();
        assert!(matches!(args.resolve(), Err(ConfigError::Keys(_))));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(parse_layout("80/16").is_err());
        assert!(parse_layout("80/16/40").is_err());
    }
}
