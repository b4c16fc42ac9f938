//! Finding PROGRAM and refusing the programs a preload cannot reach (setuid/setgid, statically linked).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What to do instead of a preload, said when a program is refused.
const INSTEAD: &str = "steer it in the kernel with srv6run --via kernel (as root), or with a route, e.g.\n  \
    ip -6 route add DST/128 encap seg6 mode inline segs SID1,SID2 dev DEV";

/// The path `exec` will run: `name` itself if it has a slash, else the first executable match in `PATH`.
/// An error means "not found" (exit status 127); a file that exists but cannot run is for `exec` to say.
pub fn locate(name: &str, path_var: Option<&str>) -> Result<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        // Following symbolic links, as exec does: a dangling one is not found either.
        return match path.metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("{name}: no such file"),
            _ => Ok(path),
        };
    }
    path_var
        .unwrap_or("/usr/local/bin:/usr/bin:/bin")
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .with_context(|| format!("{name}: command not found in PATH"))
}

/// Refuse programs the dynamic loader will not preload into; follows one `#!` interpreter.
pub fn check_preloadable(program: &Path) -> Result<()> {
    check_one(program, true)
}

fn check_one(program: &Path, follow_script: bool) -> Result<()> {
    let meta = program.metadata().with_context(|| format!("cannot run {}", program.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o6000 != 0 {
        let which = if mode & 0o4000 != 0 { "setuid" } else { "setgid" };
        bail!(
            "{} is {which}: the dynamic loader ignores LD_PRELOAD for it (secure-execution mode), so no SRH \
             could be attached. Run a copy without the {which} bit, or {INSTEAD}",
            program.display()
        );
    }
    let mut head = Vec::with_capacity(4096);
    File::open(program)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .with_context(|| format!("cannot read {}", program.display()))?;
    if let Some(line) = head.strip_prefix(b"#!") {
        if !follow_script {
            return Ok(());
        }
        let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
        let interp = String::from_utf8_lossy(line);
        let Some(interp) = interp.split_whitespace().next() else { return Ok(()) };
        return check_one(Path::new(interp), false)
            .with_context(|| format!("{} is a script run by {interp}", program.display()));
    }
    match libsrv6sock::elf::has_interpreter(&head) {
        Some(false) => bail!(
            "{} is statically linked: it has no dynamic loader, so LD_PRELOAD cannot work. Build it \
             dynamically, or {INSTEAD}",
            program.display()
        ),
        // Dynamically linked, or not an ELF file we can read: let exec decide.
        Some(true) | None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_system_binary_is_preloadable() {
        assert!(check_preloadable(Path::new("/bin/sh")).is_ok());
    }

    #[test]
    fn locate_searches_path() {
        assert_eq!(locate("sh", Some("/nonexistent:/bin")).unwrap(), PathBuf::from("/bin/sh"));
        assert!(locate("no-such-program-xyz", Some("/bin")).unwrap_err().to_string().contains("not found"));
        assert!(locate("/nonexistent/prog", None).unwrap_err().to_string().contains("no such file"));
        assert_eq!(locate("/bin/sh", None).unwrap(), PathBuf::from("/bin/sh"));
    }
}
