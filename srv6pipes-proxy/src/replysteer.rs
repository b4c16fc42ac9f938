//! With `--reply-path`: the kernel's per-flow reply steering (`srv6pipes-steer`) on the ingress devices, so
//! that every reply of a client-facing leg — the SYN-ACK the kernel sends before `accept()` included —
//! follows the waypoints of the return path after this proxy's own SID. No static SYN-ACK route is needed.

use std::sync::Arc;
use std::time::Duration;

use libsrv6sock::wire::prefix::Ipv6Prefix;
use srv6pipes_steer::{ReplyCounters, ReplySettings, ReplySteer, SteerError};

use crate::datapath::DatapathConfig;

/// How often the counters are read and what went wrong is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Attach the programs to `dp`'s ingress devices, this proxy's prefixes as its own waypoints, `allow` as
/// the waypoints accepted whatever the SYN carried; log their counters' changes every few seconds (on the
/// current tokio runtime) until the returned value drops.
pub fn attach(dp: &DatapathConfig, allow: &[Ipv6Prefix]) -> Result<Arc<ReplySteer>, SteerError> {
    let settings = ReplySettings { own: dp.prefixes.clone(), allow: allow.to_vec(), ..ReplySettings::default() };
    let steer = Arc::new(ReplySteer::attach(&dp.ingress, &settings)?);
    tracing::info!(devices = ?dp.ingress, "reply steering attached");
    let weak = Arc::downgrade(&steer);
    tokio::spawn(async move {
        let mut before = ReplyCounters::default();
        loop {
            tokio::time::sleep(LOG_EVERY).await;
            let Some(steer) = weak.upgrade() else { return };
            match steer.log_changes(&before) {
                Ok(now) => before = now,
                Err(e) => tracing::warn!("reading the reply-steering counters: {e}"),
            }
        }
    });
    Ok(steer)
}
