//! The shim's configuration, built once in the constructor and read-only afterwards.

use std::os::fd::RawFd;
use std::sync::OnceLock;

use libsrv6sock::policy::{FailMode, Policy, ENV_FAIL, ENV_LOG};

/// A ready shim: the policy and every rule's SRH, pre-built.
pub struct Shim {
    /// The policy, rules in match order.
    pub policy: Policy,
    /// `srhs[i]` is rule `i`'s SRH with `segments[0]` to be filled with the destination.
    pub srhs: Vec<Vec<u8>>,
    /// Bit `i` set: rule `i` (of the first 64) matches on a host name.
    pub name_rules: u64,
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
static LOG_FD: OnceLock<RawFd> = OnceLock::new();

/// The state, or `None` before the constructor ran (hooks then pass calls through).
pub fn get() -> Option<&'static State> {
    STATE.get()
}

/// The decision-log descriptor, if `SRV6_LOG` is set.
pub fn log_fd() -> Option<RawFd> {
    LOG_FD.get().copied()
}

fn open_log(target: &str) -> Result<RawFd, String> {
    if target == "stderr" {
        return Ok(libc::STDERR_FILENO);
    }
    let path = std::ffi::CString::new(target).map_err(|_| "path contains a NUL byte".to_string())?;
    // SAFETY: `path` is a valid C string; the returned descriptor is owned by the shim for the process life.
    let fd =
        unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(fd)
}

fn build(policy: Policy) -> Result<Shim, String> {
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
    Ok(Shim { policy, srhs, name_rules })
}

/// Read the environment and the policy file; called once from the library constructor.
pub fn init() {
    let env = |k: &str| std::env::var(k).ok();
    if let Some(target) = env(ENV_LOG).filter(|t| !t.is_empty()) {
        match open_log(&target) {
            Ok(fd) => {
                let _ = LOG_FD.set(fd);
            }
            Err(e) => eprintln!("libsrv6sock: cannot open decision log {target:?}: {e}; logging disabled"),
        }
    }
    let state = match Policy::from_env(env).map_err(|e| e.to_string()).and_then(build) {
        Ok(shim) => {
            crate::log::init(&shim);
            State::Ready(shim)
        }
        Err(e) => {
            let closed = env(ENV_FAIL).as_deref() == Some("closed");
            let what = if closed { "IPv6 connections will fail (SRV6_FAIL=closed)" } else { "no SRH will be attached" };
            eprintln!("libsrv6sock: {e}; {what}");
            State::Broken { closed }
        }
    };
    let _ = STATE.set(state);
}

impl Shim {
    /// The failure policy.
    pub fn fail(&self) -> FailMode {
        self.policy.fail
    }
}
