//! How long a flow may last without progress, after HAProxy's `timeout tunnel`, `client-fin` and
//! `server-fin` (srv6pipes-proxy(8), TIMEOUTS), and the kernel's bound on unacknowledged data
//! (`TCP_USER_TIMEOUT`) on both legs.
//!
//! Progress is bytes moving, read or written, either way: a flow blocked writing to a peer whose window
//! stays closed makes none. The bound in force follows the flow's state: the idle (tunnel) timeout while
//! both directions are open, the server-fin timeout once the client has finished sending (the server is
//! expected to finish), the client-fin timeout once the server has. The clock restarts at every state change.

use std::time::Duration;

use socket2::SockRef;
use srv6pipes_api::control::FlowState;
use tokio::time::Instant;

use crate::stats::FlowEntry;

/// Default idle (tunnel) timeout.
pub const DEFAULT_IDLE_S: u64 = 3600;
/// Default client-fin and server-fin timeouts.
pub const DEFAULT_FIN_S: u64 = 30;
/// Default bound on unacknowledged data (`TCP_USER_TIMEOUT`).
pub const DEFAULT_USER_S: u64 = 30;

/// The bounds (`None`: unbounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// No byte moved while both directions are open.
    pub idle: Option<Duration>,
    /// No byte moved after the client finished sending.
    pub server_fin: Option<Duration>,
    /// No byte moved after the server finished sending.
    pub client_fin: Option<Duration>,
    /// Data sent and left unacknowledged (or a closed window, or keepalive probes unanswered) this long
    /// aborts the leg (`TCP_USER_TIMEOUT`).
    pub user: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            idle: Some(Duration::from_secs(DEFAULT_IDLE_S)),
            server_fin: Some(Duration::from_secs(DEFAULT_FIN_S)),
            client_fin: Some(Duration::from_secs(DEFAULT_FIN_S)),
            user: Some(Duration::from_secs(DEFAULT_USER_S)),
        }
    }
}

/// Which bound a flow exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The idle (tunnel) timeout.
    Idle,
    /// The server-fin timeout.
    ServerFin,
    /// The client-fin timeout.
    ClientFin,
}

impl Expired {
    /// The option that sets it, for logs.
    pub const fn option(self) -> &'static str {
        match self {
            Expired::Idle => "--idle-timeout",
            Expired::ServerFin => "--server-fin-timeout",
            Expired::ClientFin => "--client-fin-timeout",
        }
    }
}

impl Timeouts {
    /// The bound in force in `state`, and what exceeding it is.
    fn bound(&self, state: FlowState) -> Option<(Duration, Expired)> {
        let idle = self.idle.map(|d| (d, Expired::Idle));
        match state {
            FlowState::ClientClosed => self.server_fin.map(|d| (d, Expired::ServerFin)).or(idle),
            FlowState::ServerClosed => self.client_fin.map(|d| (d, Expired::ClientFin)).or(idle),
            FlowState::Connecting | FlowState::Established | FlowState::Closing => idle,
        }
    }

    /// Resolves when the flow of `entry` made no progress for the bound of its state (between one and two
    /// bounds after its last byte). One timer per flow, nothing on the data path.
    pub async fn expired(&self, entry: &FlowEntry) -> Expired {
        let mut last = entry.progress();
        let mut since = Instant::now();
        loop {
            let changed = entry.state_changed();
            let bound = self.bound(entry.state());
            let deadline = async {
                match bound {
                    Some((d, _)) => tokio::time::sleep_until(since + d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = changed => {
                    last = entry.progress();
                    since = Instant::now();
                }
                () = deadline => {
                    let now = entry.progress();
                    if now == last {
                        if let Some((_, why)) = bound {
                            return why;
                        }
                    }
                    last = now;
                    since = Instant::now();
                }
            }
        }
    }

    /// Bound unacknowledged data on a leg (best effort: a failure is logged).
    pub fn apply(&self, s: SockRef<'_>) {
        if let Some(t) = self.user {
            if let Err(e) = s.set_tcp_user_timeout(Some(t)) {
                tracing::debug!("TCP_USER_TIMEOUT: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_follows_the_state() {
        let s = |n| Some(Duration::from_secs(n));
        let t = Timeouts { idle: s(60), server_fin: s(2), client_fin: s(3), user: None };
        assert_eq!(t.bound(FlowState::Established), Some((Duration::from_secs(60), Expired::Idle)));
        assert_eq!(t.bound(FlowState::ClientClosed), Some((Duration::from_secs(2), Expired::ServerFin)));
        assert_eq!(t.bound(FlowState::ServerClosed), Some((Duration::from_secs(3), Expired::ClientFin)));
        let no_fin = Timeouts { server_fin: None, client_fin: None, ..t };
        assert_eq!(no_fin.bound(FlowState::ClientClosed), Some((Duration::from_secs(60), Expired::Idle)));
        let never = Timeouts { idle: None, ..no_fin };
        assert_eq!(never.bound(FlowState::ServerClosed), None);
    }
}
