//! Control socket, server side: a Unix stream socket speaking the line-based JSON protocol of
//! `srv6pipes_api::control` (srv6pipes-proxy(8), CONTROL PROTOCOL). Mode 0600, root only; with a
//! control group, mode 0660 and that group's members may send the read-only requests.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use srv6pipes_api::abi::ABI_VERSION;
use srv6pipes_api::control::{
    encode_reply, DrainReply, FlowsReply, KillReply, LoadReply, ModulesReply, Request, UnloadReply, VersionReply,
    MAX_LINE,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::flow::Shared;
use crate::lifecycle::Phase;

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process answers on the path.
    #[error("control socket {} is in use by another process", .0.display())]
    InUse(std::path::PathBuf),
    /// The control group does not exist.
    #[error("control group {0:?}: no such group")]
    NoGroup(String),
    /// Removing a stale socket, creating its directory, binding or setting its mode failed.
    #[error("control socket {}: {error}", path.display())]
    Io {
        /// The socket's path.
        path: std::path::PathBuf,
        /// What failed.
        error: std::io::Error,
    },
}

/// Answer one request line with one reply line (newline included).
pub fn answer(line: &str, shared: &Shared) -> String {
    let req = match Request::parse(line) {
        Ok(req) => req,
        Err(e) => return encode_reply::<()>(Err(&format!("bad request: {e}"))),
    };
    match req {
        Request::Flows => encode_reply(Ok(&FlowsReply { flows: shared.flows.flows() })),
        Request::Stats => encode_reply(Ok(&shared.flows.report())),
        Request::Modules => encode_reply(Ok(&ModulesReply { modules: shared.registry.list() })),
        Request::Version => {
            encode_reply(Ok(&VersionReply { version: env!("CARGO_PKG_VERSION").into(), abi_version: ABI_VERSION }))
        }
        Request::Load { path } => match shared.registry.load(&path) {
            Ok(module) => encode_reply(Ok(&LoadReply { module })),
            Err(e) => {
                tracing::warn!("control: load {}: {e}", path.display());
                encode_reply::<LoadReply>(Err(&e.to_string()))
            }
        },
        Request::Kill { id } => match shared.flows.kill(id) {
            true => encode_reply(Ok(&KillReply { id })),
            false => encode_reply::<KillReply>(Err(&format!("no live flow {id}"))),
        },
        Request::Unload { name } => match shared.registry.unload(&name) {
            Ok(users) => encode_reply(Ok(&UnloadReply { module: name, flows_still_using: users as u64 })),
            Err(e) => encode_reply::<UnloadReply>(Err(&e.to_string())),
        },
        Request::Drain { timeout_s, handover } => {
            let timeout = timeout_s.map(std::time::Duration::from_secs).unwrap_or(shared.life.drain_timeout);
            let phase = shared.life.drain(timeout, handover);
            tracing::info!(handover, "control: drain within {timeout:?}");
            let deadline_ms = match phase {
                Phase::Draining { deadline, .. } => {
                    deadline.saturating_duration_since(std::time::Instant::now()).as_millis() as u64
                }
                Phase::Running | Phase::Stopping => 0,
            };
            encode_reply(Ok(&DrainReply { flows_active: shared.life.live(), deadline_ms }))
        }
    }
}

/// The group id of `group`, a name or a number.
pub fn group_id(group: &str) -> Result<u32, BindError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group).map_err(|_| BindError::NoGroup(group.into()))?;
    // SAFETY: `struct group` is plain data (integers and pointers): all zeroes is a valid value.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r writes into `grp` and `buf` (of the length given) and sets `found`; all outlive it.
    let rc = unsafe { libc::getgrnam_r(name.as_ptr(), &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return Err(BindError::NoGroup(group.into()));
    }
    Ok(grp.gr_gid)
}

/// Bind the control socket: refuse if another process answers on it (unless `replace`: a takeover),
/// replace a stale file. With `group`, the socket is that group's too (mode 0660).
pub fn bind(path: &Path, replace: bool, group: Option<u32>) -> Result<UnixListener, BindError> {
    let io = |error| BindError::Io { path: path.into(), error };
    if path.exists() {
        if !replace && std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse(path.into()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
    }
    let l = UnixListener::bind(path).map_err(io)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io)?;
    }
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok(l)
}

/// Removes the control socket file when dropped, if it is still the one bound at creation (after a
/// takeover the path holds the newer proxy's socket).
pub struct RemoveOnDrop {
    path: std::path::PathBuf,
    inode: Option<u64>,
}

impl RemoveOnDrop {
    /// Guard the socket file just bound at `path`.
    pub fn new(path: &Path) -> RemoveOnDrop {
        use std::os::unix::fs::MetadataExt;
        RemoveOnDrop { path: path.into(), inode: std::fs::symlink_metadata(path).ok().map(|m| m.ino()) }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if self.inode.is_some() && std::fs::symlink_metadata(&self.path).ok().map(|m| m.ino()) == self.inode {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Serve control connections forever.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = client(s, &shared).await {
                        tracing::debug!("control connection: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("control accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serve one connection. A peer other than root got in through the control group (the socket's mode
/// keeps others out): it may only read.
async fn client(s: UnixStream, shared: &Arc<Shared>) -> std::io::Result<()> {
    let uid = s.peer_cred()?.uid();
    let (r, mut w) = s.into_split();
    let mut r = tokio::io::BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut r).take(MAX_LINE as u64).read_line(&mut line).await?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && n >= MAX_LINE {
            return w.write_all(encode_reply::<()>(Err("request line too long")).as_bytes()).await;
        }
        if line.trim().is_empty() {
            continue;
        }
        let reply = match Request::parse(&line) {
            Ok(req) if uid != 0 && !req.read_only() => {
                tracing::warn!(uid, "control: {req:?} refused: not root");
                encode_reply::<()>(Err(
                    "permission denied: only root may change the proxy (members of the control group may read)",
                ))
            }
            // dlopen and the module's init may take their time: off the runtime's thread.
            Ok(Request::Load { .. }) => {
                let (shared, line) = (shared.clone(), line.clone());
                tokio::task::spawn_blocking(move || answer(&line, &shared))
                    .await
                    .unwrap_or_else(|e| encode_reply::<()>(Err(&format!("load: {e}"))))
            }
            _ => answer(&line, shared),
        };
        w.write_all(reply.as_bytes()).await?;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use srv6pipes_api::abi::Direction;
    use srv6pipes_api::control::{decode_reply, ControlError, StatsReply};

    use super::*;
    use crate::flow::FlowConfig;
    use crate::module::Registry;
    use crate::relay::RelayConfig;
    use crate::stats::FlowTable;

    fn shared() -> Shared {
        let registry = Registry::default();
        registry.add_builtin(&crate::builtin::MODULE).unwrap();
        Shared {
            cfg: FlowConfig {
                prefixes: vec!["fc00:f1::/80".parse().unwrap()],
                layout: Default::default(),
                connect_timeout: Duration::from_secs(1),
                timeouts: Default::default(),
                keep_client_port: true,
                relay: RelayConfig { buffer_size: 4096, splice: true, pipe_size: 65536 },
                reply: None,
                access: Default::default(),
            },
            registry,
            flows: FlowTable::new(2),
            life: crate::lifecycle::Lifecycle::new(crate::lifecycle::Limits { max_flows: 10 }, Duration::from_secs(30)),
        }
    }

    #[test]
    fn answers_decode_as_the_reply_types() {
        let sh = shared();
        let v: VersionReply = decode_reply(&answer("version", &sh)).unwrap();
        assert_eq!((v.version.as_str(), v.abi_version), (env!("CARGO_PKG_VERSION"), ABI_VERSION));
        let m: ModulesReply = decode_reply(&answer(r#"{"cmd":"modules"}"#, &sh)).unwrap();
        let b = &m.modules[0];
        assert!(b.builtin && b.name == "builtin" && b.path.is_none());
        let dirs: Vec<(&str, &[Direction])> =
            b.functions.iter().map(|f| (f.name.as_str(), &f.directions[..])).collect();
        assert_eq!(dirs, [("copy", &[][..]), ("xor", &Direction::BOTH[..])]);
        let s: StatsReply = decode_reply(&answer("stats", &sh)).unwrap();
        assert_eq!((s.stats.workers, s.stats.accepted), (2, 0));
        let f: FlowsReply = decode_reply(&answer("flows", &sh)).unwrap();
        assert!(f.flows.is_empty());
        for (line, want) in [
            ("unload builtin", "built in"),
            ("unload nope", "no module named"),
            ("load /nonexistent.so", "/nonexistent.so"),
            ("dance", "bad request"),
            ("drain soon", "bad request"),
            ("kill 7", "no live flow 7"),
        ] {
            match decode_reply::<UnloadReply>(&answer(line, &sh)) {
                Err(ControlError::Refused(e)) => assert!(e.contains(want), "{line}: {e}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }
}
