//! The process's phase (running, draining, stopping) and the admission of new flows (drain, limits),
//! shared by the workers, the flows, the control socket and the main loop.
//!
//! * **Stop** (SIGTERM, SIGINT, the end of a drain): the workers close their listeners and every open flow
//!   is reset on both legs; the main loop waits (bounded) for the flows to be gone and only then removes
//!   the datapath, because the flows' sockets use the peers' addresses and need it to send their resets
//!   (ARCHITECTURE §8, "Removing the datapath strands open flows").
//! * **Drain** (SIGQUIT or `ctl drain`): new flows are refused (RST, counted as `refused_draining`), open
//!   ones run on until they end or until the drain's deadline, then the proxy stops as above. In a
//!   **handover** (a newer process took the datapath over, `--takeover`) the listeners are closed
//!   instead, so that the newer process's listeners in the same SO_REUSEPORT group get every new SYN.
//!   A request to hand over changes nothing by itself: it waits for the main loop, which drains only
//!   once the successor holds the datapath (srv6pipes-proxy(8), STOP, DRAIN AND RESTART).
//! * **Limits**: at `max_flows` live flows a new one is refused (RST, `refused_limit`). (A flow's own
//!   bounds are in `timeouts`.)

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What the process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Taking new flows.
    Running,
    /// Refusing new flows (or, after a handover, not listening), open ones finish until `deadline`.
    Draining {
        /// When the flows still open are reset.
        deadline: Instant,
        /// A newer process owns the datapath and takes the new flows.
        handover: bool,
    },
    /// Resetting every flow and exiting.
    Stopping,
}

/// Limits on flows.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Live flows at most; further ones are refused.
    pub max_flows: u64,
}

/// The shared phase and limits.
#[derive(Debug)]
pub struct Lifecycle {
    phase: watch::Sender<Phase>,
    /// A hand-over asked for and not yet taken up by the main loop: its drain's timeout.
    handover: watch::Sender<Option<Duration>>,
    /// The limits.
    pub limits: Limits,
    /// Deadline of a drain when none is given.
    pub drain_timeout: Duration,
    live: AtomicU64,
}

impl Lifecycle {
    /// Running, with `limits` and a default drain deadline.
    pub fn new(limits: Limits, drain_timeout: Duration) -> Lifecycle {
        Lifecycle {
            phase: watch::Sender::new(Phase::Running),
            handover: watch::Sender::new(None),
            limits,
            drain_timeout,
            live: AtomicU64::new(0),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// A receiver of phase changes.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Start draining until `timeout` from now (a running drain keeps the earlier deadline), or, for a
    /// `handover`, ask the main loop to offer the datapath to a successor ([`Lifecycle::handover_asked`]):
    /// the phase changes only once the successor holds it ([`Lifecycle::hand_over`]). Returns the phase
    /// now in force.
    pub fn drain(&self, timeout: Duration, handover: bool) -> Phase {
        if handover {
            self.handover.send_replace(Some(timeout));
            return self.phase();
        }
        self.set_draining(timeout, false)
    }

    /// Resolves with the drain timeout of a hand-over asked for ([`Lifecycle::drain`]), once per request.
    pub async fn handover_asked(&self) -> Duration {
        let mut rx = self.handover.subscribe();
        let timeout = match rx.wait_for(Option::is_some).await {
            Ok(t) => *t,
            Err(_) => None,
        };
        self.handover.send_replace(None);
        match timeout {
            Some(t) => t,
            None => std::future::pending().await,
        }
    }

    /// Drain as a hand-over: a successor holds the datapath; a hand-over is never undone.
    pub fn hand_over(&self, timeout: Duration) -> Phase {
        self.set_draining(timeout, true)
    }

    fn set_draining(&self, timeout: Duration, handover: bool) -> Phase {
        let deadline = Instant::now() + timeout;
        self.phase.send_modify(|p| {
            *p = match *p {
                Phase::Running => Phase::Draining { deadline, handover },
                Phase::Draining { deadline: d, handover: h } => {
                    Phase::Draining { deadline: d.min(deadline), handover: h || handover }
                }
                Phase::Stopping => Phase::Stopping,
            }
        });
        self.phase()
    }

    /// Stop: listeners close, every flow is reset.
    pub fn stop(&self) {
        self.phase.send_replace(Phase::Stopping);
    }

    /// Live flows (admitted and not yet ended).
    pub fn live(&self) -> u64 {
        self.live.load(Relaxed)
    }

    /// Admit a new flow, or say why not. An admitted flow must be [`Lifecycle::release`]d when it ends.
    pub fn admit(&self) -> Result<(), Refused> {
        if self.phase() != Phase::Running {
            return Err(Refused::Draining);
        }
        let n = self.live.fetch_add(1, Relaxed);
        if n >= self.limits.max_flows {
            self.live.fetch_sub(1, Relaxed);
            return Err(Refused::Full(self.limits.max_flows));
        }
        Ok(())
    }

    /// An admitted flow ended.
    pub fn release(&self) {
        self.live.fetch_sub(1, Relaxed);
    }

    /// Resolves when the proxy stops (every flow is then reset).
    pub async fn stopping(&self) {
        let mut rx = self.subscribe();
        if rx.wait_for(|p| *p == Phase::Stopping).await.is_err() {
            // The sender lives as long as `self`: never reached while borrowed.
            std::future::pending::<()>().await;
        }
    }
}

/// Why [`Lifecycle::admit`] refused a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Draining or stopping.
    Draining,
    /// At the limit of this many flows.
    Full(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_follows_the_phase_and_the_limit() {
        let l = Lifecycle::new(Limits { max_flows: 2 }, Duration::from_secs(1));
        assert_eq!((l.admit(), l.admit(), l.admit()), (Ok(()), Ok(()), Err(Refused::Full(2))));
        l.release();
        assert_eq!(l.admit(), Ok(()));
        assert_eq!(l.live(), 2);
        let Phase::Draining { deadline, handover: false } = l.drain(Duration::from_secs(30), false) else {
            panic!("not draining: {:?}", l.phase())
        };
        assert_eq!(l.admit(), Err(Refused::Draining));
        // A hand-over asked for changes nothing until the main loop hands over.
        assert_eq!(l.drain(Duration::from_secs(60), true), Phase::Draining { deadline, handover: false });
        // A second drain keeps the earlier deadline and may turn it into a handover.
        assert_eq!(l.hand_over(Duration::from_secs(60)), Phase::Draining { deadline, handover: true });
        l.stop();
        assert_eq!(l.drain(Duration::from_secs(1), false), Phase::Stopping);
    }
}
