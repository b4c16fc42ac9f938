//! The shim's configuration, built once in the constructor and read-only afterwards.

use std::sync::OnceLock;

use libsrv6sock::policy::{FailMode, Policy, ENV_FAIL, ENV_LOG};
use libsrv6sock::reply::ReplyPolicy;
use libsrv6sock::wire::agent;

use crate::{fds, learned, log, output};

/// A ready shim: the policy and every rule's SRH, pre-built.
pub struct Shim {
    /// The policy, rules in match order.
    pub policy: Policy,
    /// `srhs[i]` is rule `i`'s SRH with `segments[0]` to be filled with the destination.
    pub srhs: Vec<Vec<u8>>,
    /// Bit `i` set: rule `i` (of the first 64) matches on a host name.
    pub name_rules: u64,
    /// Replying along the return-path TLV of accepted connections (`SRV6_REPLY`), when on.
    pub reply: Option<ReplyPolicy>,
    /// The resolver agent to ask for the paths of names (`SRV6_AGENT`), if any.
    pub agent: Option<Box<AgentAddr>>,
}

/// The resolver agent's socket address, built once.
pub struct AgentAddr {
    /// The Unix socket address (abstract when `SRV6_AGENT` starts with `@`).
    pub addr: libc::sockaddr_un,
    /// Its length.
    pub len: libc::socklen_t,
    /// How long a lookup may wait for the agent, in milliseconds.
    pub timeout_ms: u64,
}

/// The agent's address from `SRV6_AGENT` (unset: the system-wide agent's socket if it exists; empty: none)
/// and `SRV6_AGENT_TIMEOUT_MS`.
fn agent_addr(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Box<AgentAddr>>, String> {
    let name = match env(agent::ENV_AGENT) {
        Some(n) if n.is_empty() => return Ok(None),
        Some(n) => n,
        None if std::path::Path::new(agent::SYSTEM_SOCKET).exists() => agent::SYSTEM_SOCKET.to_string(),
        None => return Ok(None),
    };
    let slots = match env(agent::ENV_PATHS) {
        None => agent::DEFAULT_PATHS,
        Some(n) => n
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{}={n:?} is not a positive number of paths", agent::ENV_PATHS))?,
    };
    learned::init(slots);
    let timeout_ms = match env(agent::ENV_AGENT_TIMEOUT) {
        None => agent::DEFAULT_TIMEOUT_MS,
        Some(t) => {
            t.parse().map_err(|_| format!("{}={t:?} is not a number of milliseconds", agent::ENV_AGENT_TIMEOUT))?
        }
    };
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid (empty) value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (bytes, abstract_name) = match name.strip_prefix('@') {
        Some(n) => (n.as_bytes(), true),
        None => (name.as_bytes(), false),
    };
    let start = usize::from(abstract_name);
    if start + bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(format!("{}={name:?} is not a usable Unix socket name", agent::ENV_AGENT));
    }
    for (dst, src) in addr.sun_path[start..].iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let path_len = start + bytes.len() + usize::from(!abstract_name);
    let len = (std::mem::size_of::<libc::sa_family_t>() + path_len) as libc::socklen_t;
    Ok(Some(Box::new(AgentAddr { addr, len, timeout_ms })))
}

/// What the constructor made of the environment.
pub enum State {
    /// Steering per the policy.
    Ready(Shim),
    /// The configuration was unusable (said once on stderr); `closed` makes every IPv6 connect fail.
    Broken {
        /// The failure policy read from `SRV6_FAIL`.
        closed: bool,
    },
}

static STATE: OnceLock<State> = OnceLock::new();

/// The state, or `None` before the constructor ran (hooks then pass calls through).
pub fn get() -> Option<&'static State> {
    STATE.get()
}

fn build(policy: Policy, reply: Option<ReplyPolicy>, agent: Option<Box<AgentAddr>>) -> Result<Shim, String> {
    let srhs = policy
        .rules
        .iter()
        .map(|r| {
            r.path
                .srh(std::net::Ipv6Addr::UNSPECIFIED)
                .and_then(|s| s.to_bytes())
                .map_err(|e| format!("{}: {e}", r.origin))
        })
        .collect::<Result<_, _>>()?;
    let name_rules =
        policy.rules.iter().take(64).enumerate().filter(|(_, r)| r.name.is_some()).fold(0, |m, (i, _)| m | 1 << i);
    Ok(Shim { policy, srhs, name_rules, reply, agent })
}

/// Read the environment and the policy file; called once from the library constructor.
pub fn init() {
    fds::init();
    let env = |k: &str| std::env::var(k).ok();
    if let Some(target) = env(ENV_LOG).filter(|t| !t.is_empty()) {
        if let Err(e) = log::open(&target) {
            output::say(&format!("cannot open decision log {target:?}: {e}; logging disabled"));
        }
    }
    let reply = ReplyPolicy::from_env(env).map_err(|e| error_chain(&e));
    let built = Policy::from_env(env).map_err(|e| error_chain(&e)).and_then(|p| build(p, reply?, agent_addr(&env)?));
    let state = match built {
        Ok(shim) => {
            log::init(shim.policy.rules.len(), shim.fail());
            State::Ready(shim)
        }
        Err(e) => {
            let closed = env(ENV_FAIL).as_deref() == Some("closed");
            let what = if closed { "IPv6 connections will fail (SRV6_FAIL=closed)" } else { "no SRH will be attached" };
            output::say(&format!("{e}; {what}"));
            State::Broken { closed }
        }
    };
    let _ = STATE.set(state);
}

/// An error and its causes, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text += &format!(": {c}");
        cause = c.source();
    }
    text
}

impl Shim {
    /// The failure policy.
    pub fn fail(&self) -> FailMode {
        self.policy.fail
    }
}
