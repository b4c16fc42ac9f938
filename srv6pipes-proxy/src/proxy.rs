//! Process lifecycle: listeners, datapath, workers, control socket, signals, teardown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::ProxyConfig;
use crate::flow::{self, Shared};
use crate::module::Registry;
use crate::stats::FlowTable;
use crate::{builtin, control, datapath};

fn worker(idx: usize, listener: std::net::TcpListener, shared: Arc<Shared>) -> anyhow::Result<()> {
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
pub fn run(cfg: ProxyConfig) -> anyhow::Result<()> {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_main(cfg))
}

async fn run_main(cfg: ProxyConfig) -> anyhow::Result<()> {
    // Signal handlers first, so a signal during setup still leads to teardown.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;

    let registry = Registry::default();
    registry.add_builtin(&builtin::MODULE).context("the built-in module")?;
    for m in &cfg.modules {
        registry.load(m).with_context(|| format!("loading module {}", m.display()))?;
    }
    let shared = Arc::new(Shared { cfg: cfg.flow.clone(), registry, flows: FlowTable::new(cfg.workers) });

    // Listeners before the datapath: steered SYNs must find a socket.
    let mut listeners = Vec::with_capacity(cfg.workers);
    for _ in 0..cfg.workers {
        listeners.push(
            flow::listener(cfg.datapath.port, cfg.backlog)
                .with_context(|| format!("listener on [::]:{}", cfg.datapath.port))?,
        );
    }
    let _datapath = if cfg.setup {
        Some(
            datapath::install(&cfg.datapath)
                .context("installing the datapath (use --no-setup to manage it yourself)")?,
        )
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
        std::thread::Builder::new().name(format!("worker-{idx}")).spawn(move || {
            let why = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker(idx, l, shared))) {
                Ok(Ok(())) => "returned".to_string(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(_) => "panicked".to_string(),
            };
            let _ = died.send((idx, why));
        })?;
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
                break Err(anyhow::anyhow!("worker {idx} died: {why}"));
            }
        }
    };
    // `_datapath` and `_ctl_file` drop here: rules removed, socket file deleted. Worker threads are
    // detached; the process exits right after, closing every flow.
    result
}
