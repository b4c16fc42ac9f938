//! The project's own programs, as built by cargo next to the test binary.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Path of a binary or library the workspace builds (`srv6run`, `srv6pipes-proxy`, `libsrv6sock.so`…).
///
/// A test binary lives in `<target>/<profile>/deps/`, the workspace's programs in `<target>/<profile>/`.
/// `cargo test -p srv6pipes-tests` does not build other packages' programs: build them first.
pub fn path(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .with_context(|| format!("test binary {} is not in <target>/<profile>/deps", exe.display()))?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!("{} does not exist: run `cargo build --workspace` first (same profile and target dir as the tests)", path.display());
    }
    Ok(path)
}
