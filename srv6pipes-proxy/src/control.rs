//! Control socket: a Unix stream socket (mode 0600, peers must be uid 0) speaking one JSON object per
//! line each way. Requests: `{"cmd":"flows"}`, `{"cmd":"stats"}`, `{"cmd":"modules"}`,
//! `{"cmd":"load","path":"/x.so"}`, `{"cmd":"unload","name":"x"}`, `{"cmd":"version"}`; a bare word
//! (`flows`, `load /x.so`) is accepted too. Replies: `{"ok":true,...}` or `{"ok":false,"error":"..."}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::flow::Shared;

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// A control request.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Flows,
    Stats,
    Modules,
    Version,
    Load { path: PathBuf },
    Unload { name: String },
}

/// Parse a request line: JSON, or `WORD [ARG]`.
pub fn parse_request(line: &str) -> Result<Request, String> {
    let line = line.trim();
    if line.starts_with('{') {
        return serde_json::from_str(line).map_err(|e| format!("bad request: {e}"));
    }
    let (word, arg) = line.split_once(char::is_whitespace).map(|(w, a)| (w, a.trim())).unwrap_or((line, ""));
    match (word, arg) {
        ("flows", "") => Ok(Request::Flows),
        ("stats", "") => Ok(Request::Stats),
        ("modules", "") => Ok(Request::Modules),
        ("version", "") => Ok(Request::Version),
        ("load", p) if !p.is_empty() => Ok(Request::Load { path: p.into() }),
        ("unload", n) if !n.is_empty() => Ok(Request::Unload { name: n.into() }),
        _ => Err(format!("unknown request {line:?}: flows, stats, modules, version, load PATH, unload NAME")),
    }
}

/// Answer one request.
pub fn answer(req: Request, shared: &Shared) -> Value {
    match req {
        Request::Flows => json!({"ok": true, "flows": shared.flows.flows()}),
        Request::Stats => json!({"ok": true, "stats": shared.flows.stats()}),
        Request::Modules => json!({"ok": true, "modules": shared.registry.list()}),
        Request::Version => {
            json!({"ok": true, "version": env!("CARGO_PKG_VERSION"), "abi_version": crate::module::ABI_VERSION})
        }
        Request::Load { path } => match shared.registry.load(&path) {
            Ok(name) => json!({"ok": true, "module": name}),
            Err(e) => {
                tracing::warn!("control: load {}: {e}", path.display());
                json!({"ok": false, "error": e.to_string()})
            }
        },
        Request::Unload { name } => match shared.registry.unload(&name) {
            Ok(users) => json!({"ok": true, "module": name, "flows_still_using": users}),
            Err(e) => json!({"ok": false, "error": e.to_string()}),
        },
    }
}

/// Bind the control socket: refuse if another process answers on it, replace a stale file.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("control socket {} is in use by another process", path.display());
        }
        std::fs::remove_file(path).map_err(|e| anyhow::anyhow!("removing stale {}: {e}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let l = UnixListener::bind(path).map_err(|e| anyhow::anyhow!("control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
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

async fn client(s: UnixStream, shared: &Shared) -> std::io::Result<()> {
    let uid = s.peer_cred()?.uid();
    let (r, mut w) = s.into_split();
    if uid != 0 {
        tracing::warn!(uid, "control connection refused: not root");
        let msg = json!({"ok": false, "error": "permission denied: the control socket is root-only"});
        w.write_all(format!("{msg}\n").as_bytes()).await?;
        return Ok(());
    }
    let mut r = tokio::io::BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut r).take(MAX_LINE as u64).read_line(&mut line).await?;
        if n == 0 {
            return Ok(());
        }
        let reply = if !line.ends_with('\n') && n >= MAX_LINE {
            let reply = json!({"ok": false, "error": "request line too long"});
            w.write_all(format!("{reply}\n").as_bytes()).await?;
            return Ok(());
        } else if line.trim().is_empty() {
            continue;
        } else {
            match parse_request(&line) {
                Ok(req) => answer(req, shared),
                Err(e) => json!({"ok": false, "error": e}),
            }
        };
        w.write_all(format!("{reply}\n").as_bytes()).await?;
    }
}

use tokio::io::AsyncReadExt as _;

/// Client side (`srv6pipes-proxy ctl`): send one request, return the reply.
pub fn request(path: &Path, req: &Value) -> anyhow::Result<Value> {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| anyhow::anyhow!("control socket {}: {e}", path.display()))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    s.write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    if line.is_empty() {
        anyhow::bail!("control socket {} closed without a reply", path.display());
    }
    Ok(serde_json::from_str(&line)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(parse_request("flows\n"), Ok(Request::Flows));
        assert_eq!(parse_request(r#"{"cmd":"load","path":"/x.so"}"#), Ok(Request::Load { path: "/x.so".into() }));
        assert_eq!(parse_request("unload hex"), Ok(Request::Unload { name: "hex".into() }));
        assert!(parse_request("load").is_err());
        assert!(parse_request(r#"{"cmd":"nope"}"#).is_err());
    }
}
