//! Process lifecycle: listeners, datapath, workers, control socket, signals, teardown.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::ProxyConfig;
use crate::control::BindError;
use crate::datapath::DatapathError;
use crate::flow::{self, Shared};
use crate::module::{ModuleError, Registry};
use crate::stats::FlowTable;
use crate::{builtin, control, datapath};

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
    /// A worker thread ended.
    #[error("worker {idx} died: {why}")]
    WorkerDied {
        /// The worker.
        idx: usize,
        /// Its error, or that it panicked.
        why: String,
    },
}

fn worker(idx: usize, listener: std::net::TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let l = tokio::net::TcpListener::from_std(listener)?;
        loop {
            match l.accept().await {
                Ok((s, peer)) => flow::accept(s, peer, idx, &shared),
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: back off instead of spinning; the kernel keeps the queue.
                    tracing::warn!(worker = idx, "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// Raise the soft limit on open files to the hard limit: each flow holds two sockets and up to two pipes.
fn raise_nofile() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write a live rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::debug!("open files limit raised from {old} to {}", lim.rlim_max);
            }
        }
    }
}

/// Run the proxy until SIGINT or SIGTERM; the datapath is removed on every exit path.
pub fn run(cfg: ProxyConfig) -> Result<(), RunError> {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RunError::Runtime)?;
    rt.block_on(run_main(cfg))
}

async fn run_main(cfg: ProxyConfig) -> Result<(), RunError> {
    // Signal handlers first, so a signal during setup still leads to teardown.
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Runtime)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Runtime)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(RunError::Runtime)?;

    let registry = Registry::default();
    registry.add_builtin(&builtin::MODULE).map_err(RunError::Builtin)?;
    for m in &cfg.modules {
        registry.load(m).map_err(|source| RunError::Module { path: m.clone(), source })?;
    }
    let shared = Arc::new(Shared { cfg: cfg.flow.clone(), registry, flows: FlowTable::new(cfg.workers) });

    // Listeners before the datapath: steered SYNs must find a socket.
    let mut listeners = Vec::with_capacity(cfg.workers);
    for _ in 0..cfg.workers {
        let port = cfg.datapath.port;
        listeners.push(
            flow::listener(port, cfg.backlog, cfg.flow.reply.as_ref().map(|r| r.mss))
                .map_err(|source| RunError::Listener { port, source })?,
        );
    }
    let _datapath = if cfg.setup {
        Some(datapath::install(&cfg.datapath)?)
    } else {
        tracing::info!("--no-setup: datapath left to the operator");
        None
    };

    // The control socket appears last: once it exists, the proxy is ready (tests and scripts wait for it).
    let ctl = control::bind(&cfg.control)?;
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _ctl_file = RemoveOnDrop(cfg.control.clone());

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
    tracing::info!(
        port = cfg.datapath.port,
        prefixes = ?cfg.datapath.prefixes.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        workers = cfg.workers,
        control = %cfg.control.display(),
        splice = cfg.flow.relay.splice,
        "srv6pipes-proxy ready"
    );

    let result = loop {
        tokio::select! {
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break Ok(()); }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break Ok(()); }
            _ = sighup.recv() => { tracing::info!("SIGHUP ignored (use the control socket to load modules)"); }
            Some((idx, why)) = died_rx.recv() => {
                tracing::error!(worker = idx, "worker died: {why}");
                break Err(RunError::WorkerDied { idx, why });
            }
        }
    };
    // `_datapath` and `_ctl_file` drop here: rules removed, socket file deleted. Worker threads are
    // detached; the process exits right after, closing every flow.
    result
}
