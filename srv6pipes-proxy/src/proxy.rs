//! Process lifecycle: listeners, datapath, workers, control socket, signals, teardown.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use srv6pipes_api::control::{DrainReply, Request};

use crate::config::ProxyConfig;
use crate::control::BindError;
use crate::datapath::{Datapath, DatapathError};
use crate::flow::{self, Shared};
use crate::lifecycle::{Lifecycle, Phase};
use crate::module::{ModuleError, Registry};
use crate::state::{self, StateError, StateFile};
use crate::stats::FlowTable;
use crate::{builtin, control, datapath, metrics, relay, timewait};

/// Why the proxy could not start, or stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The main runtime or the signal handlers could not be set up.
    #[error("runtime: {0}")]
    Runtime(io::Error),
    /// The built-in module was refused (a bug).
    #[error("the built-in module: {0}")]
    Builtin(ModuleError),
    /// A `--module` did not load.
    #[error("loading module {}", path.display())]
    Module {
        /// The module file.
        path: PathBuf,
        /// Why.
        source: ModuleError,
    },
    /// A worker's listener could not be set up.
    #[error("listener on [::]:{port}")]
    Listener {
        /// The port.
        port: u16,
        /// Why.
        source: io::Error,
    },
    /// The datapath could not be installed (what was installed is removed).
    #[error("installing the datapath (use --no-setup to manage it yourself)")]
    Datapath(#[from] DatapathError),
    /// The control socket could not be bound.
    #[error(transparent)]
    Control(#[from] BindError),
    /// A worker thread could not be started.
    #[error("starting a worker thread: {0}")]
    Thread(io::Error),
    /// The state file cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// Another live proxy owns the datapath of the state file.
    #[error("process {pid} owns the datapath recorded in {}: stop it, or start with --takeover", path.display())]
    Owned {
        /// Its pid.
        pid: u32,
        /// The state file.
        path: PathBuf,
    },
    /// A live proxy of another network namespace uses the state file.
    #[error("process {pid} of another network namespace uses the state file {}: give --state", path.display())]
    OtherNamespace {
        /// Its pid.
        pid: u32,
        /// The state file.
        path: PathBuf,
    },
    /// `--takeover` found no live proxy to take over from.
    #[error("--takeover: no running proxy recorded in {}", .0.display())]
    NothingToTakeOver(PathBuf),
    /// The proxy taken over from did not accept to drain.
    #[error("--takeover: asking the running proxy to drain: {0}")]
    Handover(String),
    /// The metrics endpoint could not be bound.
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A worker thread ended.
    #[error("worker {idx} died: {why}")]
    WorkerDied {
        /// The worker.
        idx: usize,
        /// Its error, or that it panicked.
        why: String,
    },
}

/// Period of the release of pooled relay buffers and pipes left unused.
const POOL_TRIM: Duration = Duration::from_secs(1);

/// How long a stop waits for the flows' resets before it removes the datapath anyway.
const STOP_BOUND: Duration = Duration::from_secs(3);

fn worker(idx: usize, listener: std::net::TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let l = tokio::net::TcpListener::from_std(listener)?;
        timewait::prepare();
        let live = shared.clone();
        tokio::task::spawn_local(relay::trim_pools(POOL_TRIM, move || live.life.live()));
        let mut phase = shared.life.subscribe();
        // Kept to be closed when accept fails for want of descriptors, so that the flow can be refused.
        let mut spare = std::fs::File::open("/dev/null").ok();
        let closing = |p: &Phase| matches!(p, Phase::Stopping | Phase::Draining { handover: true, .. });
        loop {
            tokio::select! {
                r = l.accept() => match r {
                    Ok((s, peer)) => flow::accept(s, peer, idx, &shared),
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) && spare.is_some() => {
                        // Out of descriptors: free one, take the connection and reset it, rather than
                        // leaving the client waiting in the queue.
                        // (accept fails before it looks at the queue: it may be empty, so never wait here.)
                        drop(spare.take());
                        let once = std::future::poll_fn(|cx| std::task::Poll::Ready(l.poll_accept(cx))).await;
                        match once {
                            std::task::Poll::Ready(Ok((s, _))) => {
                                flow::reset(&s);
                                let at = crate::stats::Refused { worker: idx, ..Default::default() };
                                shared.flows.refused(crate::stats::Reason::Limit, at);
                                tracing::warn!(worker = idx, "accept: {e}: flow refused");
                            }
                            // Another thread took the descriptor: do not spin.
                            std::task::Poll::Ready(Err(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
                            // Nothing queued: the readiness is cleared, the next accept waits.
                            std::task::Poll::Pending => {}
                        }
                        spare = std::fs::File::open("/dev/null").ok();
                    }
                    Err(e) => {
                        // ENOBUFS, or no spare descriptor: back off instead of spinning; the kernel keeps the queue.
                        tracing::warn!(worker = idx, "accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if spare.is_none() {
                            spare = std::fs::File::open("/dev/null").ok();
                        }
                    }
                },
                _ = phase.wait_for(closing) => break,
            }
        }
        drop(l);
        tracing::debug!(worker = idx, "listener closed; flows run on");
        std::future::pending::<io::Result<()>>().await
    })
}

/// Raise the soft limit on open files to the hard limit: each flow holds two sockets and up to two pipes.
/// Returns the limit in force.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write a live rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            let mut raised = lim;
            raised.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                tracing::debug!("open files limit raised from {old} to {}", raised.rlim_cur);
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// Run the proxy until SIGINT or SIGTERM (or the end of a drain); the datapath is removed on every exit
/// path, after the open flows were reset, unless a newer proxy took it over.
pub fn run(cfg: ProxyConfig) -> Result<(), RunError> {
    let nofile = raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RunError::Runtime)?;
    // Each flow holds two sockets and up to two pipes; keep some descriptors for the rest.
    rt.block_on(run_main(cfg, nofile.saturating_sub(64) / 4))
}

/// Set up the datapath as the state file says: adopt a live owner's (takeover), remove a dead one's
/// leftovers, then install.
fn datapath_from_state(cfg: &ProxyConfig) -> Result<(Datapath, Option<u32>), RunError> {
    let file = StateFile::new(&cfg.state);
    let previous = match file.load()? {
        Some(rec) if !rec.here() => {
            if state::alive(rec.pid) {
                return Err(RunError::OtherNamespace { pid: rec.pid, path: cfg.state.clone() });
            }
            tracing::warn!(pid = rec.pid, "the state file describes another network namespace: ignored");
            None
        }
        other => other,
    };
    match previous {
        Some(rec) if state::alive(rec.pid) => {
            if !cfg.takeover {
                return Err(RunError::Owned { pid: rec.pid, path: cfg.state.clone() });
            }
            tracing::info!(pid = rec.pid, "taking over the datapath of the running proxy");
            Ok((Datapath::adopt(rec.undo, file.recorder()), Some(rec.pid)))
        }
        _ if cfg.takeover => Err(RunError::NothingToTakeOver(cfg.state.clone())),
        Some(rec) => {
            tracing::warn!(
                pid = rec.pid,
                state = %cfg.state.display(),
                "a proxy that is gone left its datapath: removing its leftovers"
            );
            Datapath::adopt(rec.undo, file.clone().recorder()).teardown();
            Ok((datapath::install(&cfg.datapath, file.recorder())?, None))
        }
        None => Ok((datapath::install(&cfg.datapath, file.recorder())?, None)),
    }
}

/// Ask the proxy answering on `control` to drain and leave the datapath to us.
fn hand_over(control: &std::path::Path, drain: Duration) -> Result<DrainReply, RunError> {
    let req = Request::Drain { timeout_s: Some(drain.as_secs()), handover: true };
    srv6pipes_api::control::call(control, &req, Duration::from_secs(10)).map_err(|e| RunError::Handover(e.to_string()))
}

/// Resolves once a drain is over: no flow left, or its deadline passed.
async fn drained(shared: &Shared) {
    let mut rx = shared.life.subscribe();
    let deadline = match rx.wait_for(|p| matches!(p, Phase::Draining { .. })).await.map(|p| *p) {
        Ok(Phase::Draining { deadline, .. }) => deadline,
        _ => return std::future::pending().await,
    };
    while shared.life.live() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_main(cfg: ProxyConfig, default_max_flows: u64) -> Result<(), RunError> {
    // Signal handlers first, so a signal during setup still leads to teardown.
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Runtime)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Runtime)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(RunError::Runtime)?;
    let mut sigquit = signal(SignalKind::quit()).map_err(RunError::Runtime)?;

    let registry = Registry::default();
    registry.add_builtin(&builtin::MODULE).map_err(RunError::Builtin)?;
    for m in &cfg.modules {
        registry.load(m).map_err(|source| RunError::Module { path: m.clone(), source })?;
    }
    let life = Lifecycle::new(cfg.limits(default_max_flows), cfg.drain_timeout);
    let shared = Arc::new(Shared { cfg: cfg.flow.clone(), registry, flows: FlowTable::new(cfg.workers), life });

    let group = cfg.control_group.as_deref().map(control::group_id).transpose()?;
    // Listeners before the datapath: steered SYNs must find a socket. In a takeover they join the
    // running proxy's SO_REUSEPORT group, so the datapath always has a listener.
    let mut listeners = Vec::with_capacity(cfg.workers);
    for _ in 0..cfg.workers {
        let port = cfg.datapath.port;
        listeners.push(
            flow::listener(port, cfg.backlog, cfg.flow.reply.as_ref().map(|r| r.mss))
                .map_err(|source| RunError::Listener { port, source })?,
        );
    }
    let metrics = match cfg.metrics {
        Some(addr) => Some(metrics::listener(addr).map_err(|source| RunError::Metrics { addr, source })?),
        None => None,
    };
    let (mut dp, previous_owner) = if cfg.setup {
        let (dp, owner) = datapath_from_state(&cfg)?;
        (Some(dp), owner)
    } else {
        tracing::info!("--no-setup: datapath left to the operator");
        (None, None)
    };
    if previous_owner.is_some() {
        let r = hand_over(&cfg.control, cfg.drain_timeout)?;
        tracing::info!(flows = r.flows_active, "the previous proxy drains its flows");
    }

    // The control socket appears last: once it exists, the proxy is ready (tests and scripts wait for it).
    let ctl = control::bind(&cfg.control, previous_owner.is_some(), group)?;
    let _ctl_file = control::RemoveOnDrop::new(&cfg.control);

    let (died_tx, mut died_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    for (idx, l) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let died = died_tx.clone();
        std::thread::Builder::new()
            .name(format!("worker-{idx}"))
            .spawn(move || {
                let why = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker(idx, l, shared))) {
                    Ok(Ok(())) => "returned".to_string(),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(_) => "panicked".to_string(),
                };
                let _ = died.send((idx, why));
            })
            .map_err(RunError::Thread)?;
    }
    tokio::spawn(control::serve(ctl, shared.clone()));
    if let Some(l) = metrics {
        tokio::spawn(metrics::serve(l, shared.clone()));
    }
    tracing::info!(
        port = cfg.datapath.port,
        prefixes = ?cfg.datapath.prefixes.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        workers = cfg.workers,
        control = %cfg.control.display(),
        splice = cfg.flow.relay.splice,
        max_flows = shared.life.limits.max_flows,
        "srv6pipes-proxy ready"
    );

    let result = loop {
        tokio::select! {
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break Ok(()); }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break Ok(()); }
            _ = sigquit.recv() => {
                tracing::info!(flows = shared.life.live(), "SIGQUIT: draining within {:?}", cfg.drain_timeout);
                shared.life.drain(cfg.drain_timeout, false);
            }
            _ = sighup.recv() => { tracing::info!("SIGHUP ignored (use the control socket to load modules)"); }
            () = drained(&shared) => { tracing::info!(flows = shared.life.live(), "drain over: stopping"); break Ok(()); }
            Some((idx, why)) = died_rx.recv() => {
                tracing::error!(worker = idx, "worker died: {why}");
                break Err(RunError::WorkerDied { idx, why });
            }
        }
    };
    // End every flow (both legs reset) while the datapath still carries the resets, then remove it.
    shared.life.stop();
    let until = std::time::Instant::now() + STOP_BOUND;
    while shared.life.live() > 0 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match shared.life.live() {
        0 => tracing::info!("every flow ended"),
        n => tracing::warn!("{n} flow(s) still open after {STOP_BOUND:?}"),
    }
    if let Some(dp) = dp.take() {
        match StateFile::new(&cfg.state).owner() {
            Some(pid) if pid != std::process::id() => {
                tracing::info!(pid, "the datapath belongs to a newer proxy now: left in place");
                dp.release();
            }
            _ => drop(dp),
        }
    }
    // `_ctl_file` drops here: the socket file is deleted if it is still ours. Worker threads are detached.
    result
}
