//! The project's own programs, as built by cargo next to the test binary.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Path of a binary or library the workspace builds (`srv6run`, `srv6pipes-proxy`, `libsrv6sock.so`…).
///
/// Cargo puts the workspace's programs in `<target>/<profile>/`, and test binaries one level down in
/// `<target>/<profile>/deps/`; a program of this package (e.g. the demo) runs from `<target>/<profile>/`
/// itself. `cargo test -p srv6pipes-tests` does not build other packages' programs: build them first.
pub fn path(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running binary")?;
    let mut dir = exe.parent().with_context(|| format!("{} has no parent directory", exe.display()))?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().with_context(|| format!("{} has no parent directory", dir.display()))?;
    }
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} does not exist: run `cargo build --workspace` first (same profile and target dir as the tests)",
            path.display()
        );
    }
    Ok(path)
}
