//! Finding libsrv6sock.so and composing `LD_PRELOAD`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The shim's file name.
pub const SHIM: &str = "libsrv6sock.so";
/// Installed locations searched after the ones beside srv6run.
const SYSTEM_DIRS: [&str; 2] = ["/usr/local/lib/srv6pipes", "/usr/lib/srv6pipes"];

/// The shim to preload: `explicit` (which must exist), else beside srv6run, `../lib/srv6pipes/`, then the
/// system directories. Returned absolute, as the loader needs.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return p.canonicalize().with_context(|| format!("preload library {}", p.display()));
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.canonicalize().ok())
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(d) = &exe_dir {
        candidates.push(d.join(SHIM));
        candidates.push(d.join("../lib/srv6pipes").join(SHIM));
    }
    candidates.extend(SYSTEM_DIRS.iter().map(|d| Path::new(d).join(SHIM)));
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.canonicalize()?),
        None => bail!(
            "cannot find {SHIM}; looked in: {}. Build it (cargo build -p srv6sock-preload) or pass --preload PATH",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// `LD_PRELOAD` with the shim appended to what the environment already preloads (once).
pub fn ld_preload_value(existing: Option<&str>, shim: &Path) -> String {
    let shim = shim.display().to_string();
    match existing.map(str::trim).filter(|s| !s.is_empty()) {
        None => shim,
        Some(e) if e.split([':', ' ']).any(|p| p == shim) => e.to_string(),
        Some(e) => format!("{e}:{shim}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_once() {
        let s = Path::new("/x/libsrv6sock.so");
        assert_eq!(ld_preload_value(None, s), "/x/libsrv6sock.so");
        assert_eq!(ld_preload_value(Some("/a.so"), s), "/a.so:/x/libsrv6sock.so");
        assert_eq!(ld_preload_value(Some("/a.so /x/libsrv6sock.so"), s), "/a.so /x/libsrv6sock.so");
    }
}
