//! Process lifecycle: listeners, datapath, workers, control socket, signals, teardown.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::ProxyConfig;
use crate::control::BindError;
use crate::flow::{self, Shared};
use crate::lifecycle::{Lifecycle, Phase};
use crate::module::{ModuleError, Registry};
use crate::namespace::Namespace;
use crate::ownership::{self, Owned, OwnershipError, Start};
use crate::stats::FlowTable;
use crate::{builtin, control, metrics, relay, replysteer, timewait};

/// Who owns the datapath this process serves.
#[derive(Debug)]
enum Owner {
    /// This process.
    Owned(Owned),
    /// A successor took it over (`--takeover`).
    HandedOver,
    /// The operator (`--no-setup`).
    Operator,
}

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
    /// The datapath is not ours to install, or installing it failed (what was installed is removed).
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    /// The control socket could not be bound.
    #[error(transparent)]
    Control(#[from] BindError),
    /// A worker thread could not be started.
    #[error("starting a worker thread: {0}")]
    Thread(io::Error),
    /// `--reply-path`'s reply steering could not be attached.
    #[error("attaching reply steering (--reply-path)")]
    ReplySteer(#[source] srv6pipes_steer::SteerError),
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

/// Each worker's listener and the metrics endpoint's.
fn listen(cfg: &ProxyConfig) -> Result<(Vec<std::net::TcpListener>, Option<tokio::net::TcpListener>), RunError> {
    let port = cfg.datapath.port;
    let listeners = (0..cfg.workers)
        .map(|_| {
            flow::listener(port, cfg.backlog, cfg.flow.reply.as_ref().map(|r| r.mss))
                .map_err(|source| RunError::Listener { port, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metrics = match cfg.metrics {
        Some(addr) => Some(metrics::listener(addr).map_err(|source| RunError::Metrics { addr, source })?),
        None => None,
    };
    Ok((listeners, metrics))
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

    // A control group that does not exist is refused before anything is installed.
    let group = cfg.control_group.as_deref().map(control::group_id).transpose()?;
    // Ownership first: a proxy refused (port, prefix, table or rule of another live proxy) must not
    // join that proxy's SO_REUSEPORT group even briefly.
    let start = if cfg.setup {
        Some(ownership::start(&cfg)?)
    } else {
        tracing::info!("--no-setup: datapath left to the operator");
        None
    };
    // Listeners before the datapath: steered SYNs must find a socket. In a takeover they join the
    // running proxy's SO_REUSEPORT group, so the datapath always has a listener.
    let (listeners, metrics) = match listen(&cfg) {
        Ok(l) => l,
        Err(e) => {
            if let Some(Start::Owned(o)) = start {
                o.exit();
            }
            return Err(e);
        }
    };
    let takeover = matches!(start, Some(Start::Adopted(_)));
    let mut owner = match start {
        Some(Start::Owned(o)) => Owner::Owned(o),
        Some(Start::Adopted(a)) => {
            let (o, r) = a.take_over(&cfg.control, cfg.drain_timeout)?;
            tracing::info!(flows = r.flows_active, "the previous proxy drains its flows");
            Owner::Owned(o)
        }
        None => Owner::Operator,
    };

    let steer = match &cfg.flow.reply {
        Some(reply) => Some(replysteer::attach(&cfg.datapath, &reply.allow).map_err(RunError::ReplySteer)?),
        None => None,
    };
    // The control socket appears last: once it exists, the proxy is ready (tests and scripts wait for it).
    let ctl = match control::bind(&cfg.control, takeover, group) {
        Ok(c) => c,
        Err(e) => {
            if let Owner::Owned(o) = owner {
                o.exit();
            }
            return Err(e.into());
        }
    };
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
    if cfg.flow.access.is_open() {
        tracing::warn!(
            "open relay: any client may use these SIDs towards any next segment; \
             close it with --allow-clients, --allow-next or --require-hmac (srv6pipes-proxy(8), ACCESS CONTROL)"
        );
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
            timeout = shared.life.handover_asked() => {
                let mut failed = None;
                owner = match owner {
                    Owner::Owned(o) => match tokio::task::spawn_blocking(move || o.hand_over()).await {
                        Ok(Ok(())) => Owner::HandedOver,
                        Ok(Err(o)) => Owner::Owned(o),
                        // The datapath went with the task's unwinding.
                        Err(e) => {
                            failed = Some(e);
                            Owner::Operator
                        }
                    },
                    other => other,
                };
                if let Some(e) = failed {
                    break Err(RunError::Runtime(io::Error::other(format!("hand-over: {e}"))));
                }
                if !matches!(owner, Owner::Owned(_)) {
                    tracing::info!(flows = shared.life.live(), "handing over: draining within {timeout:?}");
                    shared.life.hand_over(timeout);
                }
            }
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
    // The resets are out: the replies need no steering any more.
    if let Some(steer) = steer {
        if let Ok(c) = steer.counters() {
            tracing::info!(?c, "reply steering detached");
        }
    }
    match owner {
        Owner::Owned(o) => o.exit(),
        Owner::HandedOver => tracing::info!("the datapath belongs to a newer proxy now: left in place"),
        Owner::Operator => {}
    }
    // The socket file is deleted if it is still ours, then the namespace's directory if it is empty now.
    drop(_ctl_file);
    if let Ok(ns) = Namespace::current() {
        let _ = std::fs::remove_dir(ns.dir());
    }
    // Worker threads are detached.
    result
}
