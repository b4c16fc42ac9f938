//! The control protocol of `srv6pipes-proxy` (srv6pipes-proxy(8), CONTROL PROTOCOL).
//!
//! Wire format: a Unix stream socket; each request is one line (a JSON object with a `cmd` member, or
//! the bare command such as `flows` or `load /x.so`), each reply one line of JSON: `{"ok":true, …data}`
//! or `{"ok":false,"error":"…"}`. Replies are typed per request ([`FlowsReply`] for [`Request::Flows`]…):
//! a client decodes the reply of the request it sent with [`decode_reply`], and a member missing (say,
//! renamed by a newer proxy) is an error, never a silent zero. Members a client does not know are
//! ignored, so a proxy may add some.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::abi::Direction;

/// Longest request line a server needs to accept.
pub const MAX_LINE: usize = 64 * 1024;

/// Why talking to the control socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Connecting, writing or reading failed.
    #[error("control socket {}: {error}", path.display())]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The proxy closed the connection before replying.
    #[error("control socket {}: closed without a reply", path.display())]
    NoReply {
        /// The socket's path.
        path: PathBuf,
    },
    /// A line is not the expected JSON message (missing or mistyped member, not JSON…).
    #[error("malformed control message: {0}")]
    Malformed(serde_json::Error),
    /// A request line names no known command.
    #[error("unknown request {0:?}: flows, stats, modules, version, load PATH, unload NAME, drain [SECS], kill ID")]
    UnknownRequest(String),
    /// The proxy answered `"ok":false`.
    #[error("{0}")]
    Refused(String),
}

impl From<serde_json::Error> for ControlError {
    fn from(e: serde_json::Error) -> Self {
        ControlError::Malformed(e)
    }
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Live flows: [`FlowsReply`].
    Flows,
    /// Counters: [`StatsReply`].
    Stats,
    /// Loaded modules: [`ModulesReply`].
    Modules,
    /// Versions: [`VersionReply`].
    Version,
    /// Load a module: [`LoadReply`].
    Load {
        /// Absolute path of the shared object (the proxy resolves it in its own working directory).
        path: PathBuf,
    },
    /// Unload a module: [`UnloadReply`].
    Unload {
        /// Module name.
        name: String,
    },
    /// Drain: refuse new flows, let open ones finish until the deadline, then stop: [`DrainReply`].
    Drain {
        /// Deadline in seconds from now (`None`: the proxy's `--drain-timeout`).
        #[serde(default)]
        timeout_s: Option<u64>,
        /// A newer proxy took the datapath over (`--takeover`): close the listeners too, so that it gets
        /// every new flow, and leave the datapath in place at exit.
        #[serde(default)]
        handover: bool,
    },
    /// End a live flow: both legs are reset: [`KillReply`].
    Kill {
        /// The flow's id (as in [`Flow::id`]).
        id: u64,
    },
}

impl Request {
    /// Parse a request line: a JSON object, or `WORD [ARG]`.
    pub fn parse(line: &str) -> Result<Request, ControlError> {
        let line = line.trim();
        if line.starts_with('{') {
            return Ok(serde_json::from_str(line)?);
        }
        let (word, arg) = line.split_once(char::is_whitespace).map(|(w, a)| (w, a.trim())).unwrap_or((line, ""));
        match (word, arg) {
            ("flows", "") => Ok(Request::Flows),
            ("stats", "") => Ok(Request::Stats),
            ("modules", "") => Ok(Request::Modules),
            ("version", "") => Ok(Request::Version),
            ("load", p) if !p.is_empty() => Ok(Request::Load { path: p.into() }),
            ("unload", n) if !n.is_empty() => Ok(Request::Unload { name: n.into() }),
            ("drain", "") => Ok(Request::Drain { timeout_s: None, handover: false }),
            ("drain", t) => match t.parse() {
                Ok(t) => Ok(Request::Drain { timeout_s: Some(t), handover: false }),
                Err(_) => Err(ControlError::UnknownRequest(line.into())),
            },
            ("kill", id) => match id.parse() {
                Ok(id) => Ok(Request::Kill { id }),
                Err(_) => Err(ControlError::UnknownRequest(line.into())),
            },
            _ => Err(ControlError::UnknownRequest(line.into())),
        }
    }

    /// Whether the request only reads (flows, counters, modules, versions): what a member of the
    /// proxy's `--control-group` may send; the others are root's.
    pub const fn read_only(&self) -> bool {
        matches!(self, Request::Flows | Request::Stats | Request::Modules | Request::Version)
    }

    /// The request as one line of JSON, newline included.
    pub fn to_line(&self) -> String {
        // A request is a tagged enum of strings and paths: serializing cannot fail.
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Flow states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowState {
    /// Outbound leg connecting.
    Connecting,
    /// Both legs up, relaying.
    Established,
    /// The client finished sending (FIN forwarded); replies still flow.
    ClientClosed,
    /// The server finished sending; the client may still send.
    ServerClosed,
    /// Tearing down.
    Closing,
}

impl FlowState {
    /// Name on the wire and in `ctl flows`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FlowState::Connecting => "connecting",
            FlowState::Established => "established",
            FlowState::ClientClosed => "client-closed",
            FlowState::ServerClosed => "server-closed",
            FlowState::Closing => "closing",
        }
    }
}

impl fmt::Display for FlowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One live flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Unique per proxy process (also given to the function's spawn).
    pub id: u64,
    /// Worker thread running it.
    pub worker: u32,
    /// The client (also the source of the outbound leg).
    pub client: SocketAddrV6,
    /// The final destination.
    pub server: SocketAddrV6,
    /// The proxy's SID that steered the flow.
    pub sid: Ipv6Addr,
    /// Module providing the function.
    pub module: String,
    /// Function name.
    pub function: String,
    /// Function number (function bits of the SID).
    pub function_id: u64,
    /// Argument bits of the SID.
    pub argument: u64,
    /// State.
    pub state: FlowState,
    /// Milliseconds since accept.
    pub age_ms: u64,
    /// Bytes read from the client.
    pub bytes_up: u64,
    /// Bytes read from the server.
    pub bytes_down: u64,
    /// Bytes written to the server (after the function).
    pub bytes_up_out: u64,
    /// Bytes written to the client (after the function).
    pub bytes_down_out: u64,
    /// The function of server → client bytes when the return path names another one for this proxy
    /// (asymmetric processing); `null`: [`Flow::function`] handles both directions.
    #[serde(deserialize_with = "Option::deserialize")]
    pub downstream: Option<Downstream>,
}

/// The function a flow's return path names for this proxy, when it differs from the forward one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downstream {
    /// The proxy's SID in the return-path TLV.
    pub sid: Ipv6Addr,
    /// Function name.
    pub function: String,
    /// Function number (function bits of the SID).
    pub function_id: u64,
    /// Argument bits of the SID.
    pub argument: u64,
}

/// Counters since start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Seconds since start.
    pub uptime_s: u64,
    /// Worker threads.
    pub workers: u64,
    /// Live flows.
    pub flows_active: u64,
    /// Flows accepted.
    pub accepted: u64,
    /// Flows refused (the sum of the `refused_*` counters).
    pub refused: u64,
    /// Refused: the SYN had no SRH.
    pub refused_no_srh: u64,
    /// Refused: the SRH did not parse.
    pub refused_malformed: u64,
    /// Refused: no segment in this proxy's prefixes.
    pub refused_not_ours: u64,
    /// Refused: no loaded function has the SID's function number.
    pub refused_unknown_function: u64,
    /// Refused: the function's spawn or a socket call failed.
    pub refused_spawn: u64,
    /// Refused: the next segment (or the destination, segments left 0) is one of the proxy's own SIDs.
    pub refused_own_sid: u64,
    /// Refused: the proxy was draining or stopping.
    pub refused_draining: u64,
    /// Refused: at the limit of concurrent flows or of open descriptors.
    pub refused_limit: u64,
    /// Refused: the client is outside the allowed client prefixes (`--allow-clients`, `[[access]]`).
    #[serde(default)]
    pub refused_client: u64,
    /// Refused: the next segment or destination is outside the allowed prefixes (`--allow-next`).
    #[serde(default)]
    pub refused_next: u64,
    /// Refused (`--require-hmac`): the SRH carries no HMAC TLV.
    #[serde(default)]
    pub refused_hmac_missing: u64,
    /// Refused (`--require-hmac`): the HMAC TLV's key id is not in the key file.
    #[serde(default)]
    pub refused_hmac_key: u64,
    /// Refused (`--require-hmac`): the HMAC does not verify (segment list altered, another secret).
    #[serde(default)]
    pub refused_hmac_wrong: u64,
    /// Flows reset after staying idle longer than the idle timeout.
    pub idle_timeouts: u64,
    /// Flows reset because the client finished sending and the server moved no byte for the
    /// server-fin timeout.
    pub server_fin_timeouts: u64,
    /// Flows reset because the server finished sending and the client moved no byte for the
    /// client-fin timeout.
    pub client_fin_timeouts: u64,
    /// Flows reset because a peer left data unacknowledged (or its window closed) for the user timeout
    /// (`TCP_USER_TIMEOUT`, or keepalive probes unanswered).
    pub peer_timeouts: u64,
    /// Outbound connections that timed out (also counted in `connect_failed`).
    pub connect_timeouts: u64,
    /// Flows ended by `ctl kill`.
    pub flows_killed: u64,
    /// Flows reset because the proxy stopped (SIGTERM, or the end of a drain's deadline).
    pub flows_stopped: u64,
    /// Outbound connections that failed (the client got a reset).
    pub connect_failed: u64,
    /// Flows ended by FINs.
    pub flows_closed: u64,
    /// Flows ended by a reset.
    pub flows_reset: u64,
    /// Bytes read from clients, live flows included.
    pub bytes_up: u64,
    /// Bytes read from servers, live flows included.
    pub bytes_down: u64,
}

/// What the flows of one SID or one function did, since start (live flows included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Live flows.
    pub flows_active: u64,
    /// Flows accepted.
    pub accepted: u64,
    /// Flows that ended with a reset.
    pub flows_reset: u64,
    /// Bytes read from clients.
    pub bytes_up: u64,
    /// Bytes read from servers.
    pub bytes_down: u64,
    /// Flows refused, by reason (the names of the `refused_*` counters without the prefix).
    pub refused: BTreeMap<String, u64>,
}

/// The counters of one of the proxy's SIDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidStats {
    /// The SID.
    pub sid: Ipv6Addr,
    /// Its flows.
    #[serde(flatten)]
    pub usage: Usage,
}

/// The counters of one function (by number: flows of a SID naming it, its forward function).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionStats {
    /// Function number.
    pub function_id: u64,
    /// Its name when a loaded module provided it (empty for refusals of an unknown function).
    pub function: String,
    /// Its flows.
    #[serde(flatten)]
    pub usage: Usage,
}

/// As its JSON object, one line (what `ctl --json stats` shows under `stats`).
impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

/// A function of a loaded module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionInfo {
    /// Function number.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Directions it transforms (none: a pure relay).
    pub directions: Vec<Direction>,
}

/// A loaded module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// Module name.
    pub name: String,
    /// Its free-form version, if it gives one.
    #[serde(deserialize_with = "Option::deserialize")]
    pub version: Option<String>,
    /// The file it was loaded from; `None` for a built-in module.
    #[serde(deserialize_with = "Option::deserialize")]
    pub path: Option<PathBuf>,
    /// Built into the proxy (cannot be unloaded).
    pub builtin: bool,
    /// Flows using it right now.
    pub flows: u64,
    /// Its functions.
    pub functions: Vec<FunctionInfo>,
}

/// Reply to [`Request::Flows`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsReply {
    /// Live flows, oldest first.
    pub flows: Vec<Flow>,
}

/// Reply to [`Request::Stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    /// The counters.
    pub stats: Stats,
    /// Per SID, ordered by SID.
    pub sids: Vec<SidStats>,
    /// Per function, ordered by number.
    pub functions: Vec<FunctionStats>,
}

/// Reply to [`Request::Modules`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModulesReply {
    /// Loaded modules, built-in ones first.
    pub modules: Vec<ModuleInfo>,
}

/// Reply to [`Request::Version`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionReply {
    /// The proxy's version.
    pub version: String,
    /// The module ABI version it implements.
    pub abi_version: u32,
}

/// Reply to [`Request::Load`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReply {
    /// Name of the module loaded.
    pub module: String,
}

/// Reply to [`Request::Unload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnloadReply {
    /// Name of the module unloaded.
    pub module: String,
    /// Flows still using it (it is released when the last one ends).
    pub flows_still_using: u64,
}

/// Reply to [`Request::Kill`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillReply {
    /// The flow being reset.
    pub id: u64,
}

/// Reply to [`Request::Drain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReply {
    /// Flows open when the drain was asked for.
    pub flows_active: u64,
    /// Milliseconds until the flows still open are reset (0: stopping now).
    pub deadline_ms: u64,
}

#[derive(Serialize)]
struct Success<'a, T> {
    ok: bool,
    #[serde(flatten)]
    data: &'a T,
}

#[derive(Serialize, Deserialize)]
struct Failure<'a> {
    ok: bool,
    error: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct Head {
    ok: bool,
}

/// Encode a reply as one line, newline included: `data` with `"ok":true`, or the error with `"ok":false`.
pub fn encode_reply<T: Serialize>(reply: Result<&T, &str>) -> String {
    let line = match reply {
        Ok(data) => serde_json::to_string(&Success { ok: true, data }),
        Err(error) => serde_json::to_string(&Failure { ok: false, error: error.into() }),
    };
    // The reply types are structs of strings, numbers and addresses: serializing them cannot fail, but
    // should it, the client still gets a well-formed failure.
    let mut line = line.unwrap_or_else(|e| format!(r#"{{"ok":false,"error":"encoding the reply: {e}"}}"#));
    line.push('\n');
    line
}

/// Decode the reply to a request: its data, or [`ControlError::Refused`] when the proxy said `"ok":false`.
pub fn decode_reply<T: DeserializeOwned>(line: &str) -> Result<T, ControlError> {
    let head: Head = serde_json::from_str(line)?;
    if head.ok {
        Ok(serde_json::from_str(line)?)
    } else {
        let f: Failure<'_> = serde_json::from_str(line)?;
        Err(ControlError::Refused(f.error.into_owned()))
    }
}

/// Send `request` to the control socket at `path` and return the reply line (not decoded, so that a
/// caller may print it as it came).
pub fn exchange(path: &Path, request: &Request, timeout: Duration) -> Result<String, ControlError> {
    let io = |error| ControlError::Socket { path: path.into(), error };
    let mut s = UnixStream::connect(path).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    s.write_all(request.to_line().as_bytes()).map_err(io)?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).map_err(io)?;
    if line.is_empty() {
        return Err(ControlError::NoReply { path: path.into() });
    }
    Ok(line)
}

/// Send `request` and decode its reply as `T`.
pub fn call<T: DeserializeOwned>(path: &Path, request: &Request, timeout: Duration) -> Result<T, ControlError> {
    decode_reply(&exchange(path, request, timeout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            id: 3,
            worker: 1,
            client: "[fc00:1::1]:34200".parse().unwrap(),
            server: "[fc00:4::2]:8080".parse().unwrap(),
            sid: "fc00:f1::2:0:5a".parse().unwrap(),
            module: "builtin".into(),
            function: "xor".into(),
            function_id: 2,
            argument: 0x5a,
            state: FlowState::ClientClosed,
            age_ms: 1042,
            bytes_up: 86,
            bytes_down: 1 << 20,
            bytes_up_out: 85,
            bytes_down_out: (1 << 20) - 1,
            downstream: None,
        }
    }

    fn stats() -> Stats {
        Stats {
            uptime_s: 1,
            workers: 2,
            flows_active: 3,
            accepted: 4,
            refused: 33,
            refused_no_srh: 1,
            refused_malformed: 2,
            refused_not_ours: 3,
            refused_unknown_function: 4,
            refused_spawn: 5,
            refused_own_sid: 11,
            refused_draining: 7,
            refused_limit: 0,
            refused_client: 0,
            refused_next: 0,
            refused_hmac_missing: 0,
            refused_hmac_key: 0,
            refused_hmac_wrong: 0,
            idle_timeouts: 1,
            server_fin_timeouts: 2,
            client_fin_timeouts: 3,
            peer_timeouts: 4,
            connect_timeouts: 5,
            flows_killed: 6,
            flows_stopped: 2,
            connect_failed: 6,
            flows_closed: 7,
            flows_reset: 8,
            bytes_up: 9,
            bytes_down: 10,
        }
    }

    fn stats_reply() -> StatsReply {
        let usage = Usage {
            flows_active: 1,
            accepted: 2,
            flows_reset: 1,
            bytes_up: 3,
            bytes_down: 4,
            refused: [("own_sid".to_string(), 1)].into(),
        };
        StatsReply {
            stats: stats(),
            sids: vec![SidStats { sid: "fc00:f1::2:0:5a".parse().unwrap(), usage: usage.clone() }],
            functions: vec![FunctionStats { function_id: 2, function: "xor".into(), usage }],
        }
    }

    fn modules() -> Vec<ModuleInfo> {
        vec![
            ModuleInfo {
                name: "builtin".into(),
                version: Some("1".into()),
                path: None,
                builtin: true,
                flows: 0,
                functions: vec![
                    FunctionInfo { id: 1, name: "copy".into(), directions: vec![] },
                    FunctionInfo { id: 2, name: "xor".into(), directions: Direction::BOTH.to_vec() },
                ],
            },
            ModuleInfo {
                name: "hex".into(),
                version: None,
                path: Some("/x/hex.so".into()),
                builtin: false,
                flows: 2,
                functions: vec![FunctionInfo { id: 16, name: "hexenc".into(), directions: vec![Direction::Up] }],
            },
        ]
    }

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(data: T) {
        let line = encode_reply(Ok(&data));
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "{line:?}");
        assert!(line.starts_with(r#"{"ok":true"#), "{line}");
        assert_eq!(decode_reply::<T>(&line).unwrap(), data, "{line}");
    }

    #[test]
    fn every_request_round_trips() {
        for req in [
            Request::Flows,
            Request::Stats,
            Request::Modules,
            Request::Version,
            Request::Load { path: "/x.so".into() },
            Request::Unload { name: "hex".into() },
            Request::Drain { timeout_s: Some(5), handover: true },
            Request::Drain { timeout_s: None, handover: false },
            Request::Kill { id: 42 },
        ] {
            let line = req.to_line();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert_eq!(Request::parse(&line).unwrap(), req, "{line}");
        }
        assert_eq!(Request::Load { path: "/x.so".into() }.to_line(), "{\"cmd\":\"load\",\"path\":\"/x.so\"}\n");
    }

    #[test]
    fn bare_word_requests() {
        assert_eq!(Request::parse("flows\n").unwrap(), Request::Flows);
        assert_eq!(Request::parse("unload hex").unwrap(), Request::Unload { name: "hex".into() });
        assert_eq!(Request::parse(" load /x.so ").unwrap(), Request::Load { path: "/x.so".into() });
        assert!(matches!(Request::parse("load"), Err(ControlError::UnknownRequest(_))));
        assert_eq!(Request::parse("drain 7").unwrap(), Request::Drain { timeout_s: Some(7), handover: false });
        assert_eq!(Request::parse(r#"{"cmd":"drain"}"#).unwrap(), Request::Drain { timeout_s: None, handover: false });
        assert!(matches!(Request::parse("drain soon"), Err(ControlError::UnknownRequest(_))));
        assert_eq!(Request::parse("kill 12").unwrap(), Request::Kill { id: 12 });
        assert!(matches!(Request::parse("kill"), Err(ControlError::UnknownRequest(_))));
        assert!(matches!(Request::parse("kill all"), Err(ControlError::UnknownRequest(_))));
        assert!(Request::Stats.read_only() && !Request::Kill { id: 1 }.read_only());
        assert!(matches!(Request::parse("stats now"), Err(ControlError::UnknownRequest(_))));
        assert!(matches!(Request::parse(r#"{"cmd":"nope"}"#), Err(ControlError::Malformed(_))));
        assert!(matches!(Request::parse(r#"{"cmd":"load"}"#), Err(ControlError::Malformed(_))));
    }

    #[test]
    fn every_reply_round_trips() {
        round_trip(FlowsReply { flows: vec![flow(), Flow { state: FlowState::Connecting, ..flow() }] });
        let copy_down =
            Downstream { sid: "fc00:f1::1:0:0".parse().unwrap(), function: "copy".into(), function_id: 1, argument: 0 };
        round_trip(FlowsReply { flows: vec![Flow { downstream: Some(copy_down), ..flow() }] });
        round_trip(FlowsReply { flows: vec![] });
        round_trip(stats_reply());
        round_trip(KillReply { id: 9 });
        assert!(stats().to_string().starts_with(r#"{"uptime_s":1,"workers":2,"#), "{}", stats());
        round_trip(ModulesReply { modules: modules() });
        round_trip(VersionReply { version: "0.1.0".into(), abi_version: 1 });
        round_trip(LoadReply { module: "hex".into() });
        round_trip(UnloadReply { module: "hex".into(), flows_still_using: 2 });
        round_trip(DrainReply { flows_active: 3, deadline_ms: 30_000 });
        for s in [
            FlowState::Connecting,
            FlowState::Established,
            FlowState::ClientClosed,
            FlowState::ServerClosed,
            FlowState::Closing,
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            round_trip(FlowsReply { flows: vec![Flow { state: s, ..flow() }] });
        }
    }

    #[test]
    fn failures_round_trip() {
        let line = encode_reply::<LoadReply>(Err("module name \"hex\" is already loaded"));
        assert_eq!(line, "{\"ok\":false,\"error\":\"module name \\\"hex\\\" is already loaded\"}\n");
        match decode_reply::<LoadReply>(&line) {
            Err(ControlError::Refused(e)) => assert_eq!(e, "module name \"hex\" is already loaded"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_client_sends_a_line_and_decodes_the_reply() {
        let dir = std::env::temp_dir().join(format!("srv6pipes-api-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let mut got = vec![];
            for reply in [encode_reply(Ok(&UnloadReply { module: "hex".into(), flows_still_using: 1 })), String::new()]
            {
                let (s, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                got.push(line);
                (&s).write_all(reply.as_bytes()).unwrap();
            }
            got
        });
        let t = Duration::from_secs(10);
        let req = Request::Unload { name: "hex".into() };
        let r: UnloadReply = call(&path, &req, t).unwrap();
        assert_eq!(r, UnloadReply { module: "hex".into(), flows_still_using: 1 });
        assert!(matches!(call::<UnloadReply>(&path, &req, t), Err(ControlError::NoReply { .. })));
        assert_eq!(server.join().unwrap(), [req.to_line(), req.to_line()]);
        std::fs::remove_dir_all(&dir).unwrap();
        let gone = call::<UnloadReply>(&path, &req, t).unwrap_err();
        assert!(matches!(gone, ControlError::Socket { .. }) && gone.to_string().contains("c.sock"), "{gone}");
    }

    #[test]
    fn a_missing_or_renamed_member_is_an_error() {
        let line = encode_reply(Ok(&stats_reply()));
        let renamed = line.replace("\"flows_reset\"", "\"flows_rst\"");
        assert!(matches!(decode_reply::<StatsReply>(&renamed), Err(ControlError::Malformed(_))), "{renamed}");
        let e = decode_reply::<StatsReply>(&renamed).unwrap_err().to_string();
        assert!(e.contains("missing field `flows_reset`"), "{e}");
        // Optional members must be present too (as null): a renamed one is not silently `None`.
        let line = encode_reply(Ok(&ModulesReply { modules: modules() }));
        let renamed = line.replacen("\"version\"", "\"release\"", 1);
        assert!(decode_reply::<ModulesReply>(&renamed).is_err(), "{renamed}");
        // A reply without "ok" is not a reply.
        assert!(decode_reply::<LoadReply>(r#"{"module":"hex"}"#).is_err());
        // Unknown members are ignored: a newer proxy may add some.
        let extra = encode_reply(Ok(&LoadReply { module: "hex".into() })).replace('}', ",\"new\":1}");
        assert_eq!(decode_reply::<LoadReply>(&extra).unwrap(), LoadReply { module: "hex".into() });
    }
}
