//! Finding libsrv6sock.so and composing `LD_PRELOAD`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libsrv6sock::elf::{self, SHIM_MARKER_PREFIX, SHIM_SECTION};

/// The shim's file name.
pub const SHIM: &str = "libsrv6sock.so";
/// Installed locations searched after the ones beside srv6run.
const SYSTEM_DIRS: [&str; 2] = ["/usr/local/lib/srv6pipes", "/usr/lib/srv6pipes"];

/// The shim to preload: `explicit` (which must exist and be the shim of this version), else beside srv6run,
/// `../lib/srv6pipes/`, then the system directories. Returned absolute, as the loader needs.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        let path = p.canonicalize().with_context(|| format!("preload library {}", p.display()))?;
        check_shim(&path)?;
        return Ok(path);
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

/// Refuse a library that is not `libsrv6sock.so` of srv6run's own version (its marker section says which):
/// another library would leave the program unsteered without a word, an older shim would misread the
/// compiled policy.
pub fn check_shim(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("preload library {}", path.display()))?;
    let want = format!("{SHIM_MARKER_PREFIX}{}", env!("CARGO_PKG_VERSION"));
    match elf::section(&bytes, SHIM_SECTION) {
        Some(marker) if marker == want.as_bytes() => Ok(()),
        Some(marker) => bail!(
            "--preload {}: it is {:?}, srv6run is version {}: use the libsrv6sock.so built with this srv6run",
            path.display(),
            String::from_utf8_lossy(marker),
            env!("CARGO_PKG_VERSION")
        ),
        None => bail!(
            "--preload {}: not libsrv6sock.so (no {SHIM_SECTION} section): the program would run unsteered. \
             Give the shim's path, or leave --preload out to use the one beside srv6run",
            path.display()
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
