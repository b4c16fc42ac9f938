//! Lock files (flock(2)): who holds one is alive, because the kernel drops the lock when its holder
//! dies (`kill -9` included, before the parent reaps it); a reused pid proves nothing.
//!
//! A lock file holds its holder's pid (for messages only). It may be removed by its holder while held: a
//! process that locked the file just before the removal sees that the path now names another file (or
//! none) and tries again, so two processes never both hold "the" lock of a path.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held lock; released when dropped (the file stays unless [`FileLock::remove`]).
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

/// How long [`FileLock::try_lock_past_exit`] waits for an exiting holder to let go.
pub const EXIT_BOUND: Duration = Duration::from_secs(5);

/// Tries of [`FileLock::try_lock`] when the file is replaced under it (each replacement is a holder's
/// removal: few in a row).
const REOPEN_TRIES: usize = 16;

impl FileLock {
    /// Lock `path` (created if missing, its directory too when `create_dir`) without waiting: `None` when
    /// another open file holds it (another process, or another `FileLock` of this one).
    pub fn try_lock(path: &Path, create_dir: bool) -> io::Result<Option<FileLock>> {
        for _ in 0..REOPEN_TRIES {
            if create_dir {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
            }
            // Only its owner's user may open it: flock(2) needs no more than a read-only descriptor, and
            // anyone holding the lock would look like a live proxy.
            let file = match File::options().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)
            {
                Ok(f) => f,
                // The directory was removed by the last user of the namespace as it left: make it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && create_dir => continue,
                Err(e) => return Err(e),
            };
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Ok(None);
                }
                return Err(e);
            }
            let held = file.metadata()?;
            match std::fs::metadata(path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Some(FileLock { file, path: path.into() }));
                }
                // Removed by its holder between our open and our lock: lock the file there now.
                _ => continue,
            }
        }
        Err(io::Error::other(format!("{}: replaced while being locked, {REOPEN_TRIES} times", path.display())))
    }

    /// [`FileLock::try_lock`], except that a holder already exiting (killed: a zombie not yet reaped, or
    /// gone) is waited for up to [`EXIT_BOUND`]: its other threads may hold its files a moment longer.
    pub fn try_lock_past_exit(path: &Path, create_dir: bool) -> io::Result<Option<FileLock>> {
        if let Some(l) = FileLock::try_lock(path, create_dir)? {
            return Ok(Some(l));
        }
        match holder(path) {
            Some(pid) if exiting(pid) => FileLock::lock(path, create_dir, EXIT_BOUND),
            _ => Ok(None),
        }
    }

    /// [`FileLock::try_lock`] until it succeeds or `bound` passes (`None` then).
    pub fn lock(path: &Path, create_dir: bool, bound: Duration) -> io::Result<Option<FileLock>> {
        let until = Instant::now() + bound;
        loop {
            if let Some(l) = FileLock::try_lock(path, create_dir)? {
                return Ok(Some(l));
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Write this process's pid into the file (what [`holder`] reads).
    pub fn write_pid(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(format!("{}\n", std::process::id()).as_bytes())
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the file, then release the lock.
    pub fn remove(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!("{}: {e}", self.path.display());
        }
    }
}

/// The pid written in the lock file at `path` by its holder, if any.
pub fn holder(path: &Path) -> Option<u32> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// Whether process `pid` is gone or exiting (its thread-group leader a zombie, `Z`, or dead, `X`).
fn exiting(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold any character.
        Ok(stat) => {
            stat.rsplit(')').next().is_some_and(|rest| matches!(rest.trim_start().chars().next(), Some('Z' | 'X')))
        }
        Err(_) => true,
    }
}

/// A holder's pid for a message ("?" when unknown).
pub fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "?".into(), |p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_removal_is_safe() {
        let dir = std::env::temp_dir().join(format!("srv6pipes-lock-{}", std::process::id()));
        let path = dir.join("sub/x.lock");
        let mut a = FileLock::try_lock(&path, true).unwrap().unwrap();
        a.write_pid().unwrap();
        assert_eq!(holder(&path), Some(std::process::id()));
        // flock(2) locks belong to open files: a second open in the same process is refused too.
        assert!(FileLock::try_lock(&path, false).unwrap().is_none());
        assert!(FileLock::lock(&path, false, Duration::from_millis(30)).unwrap().is_none());
        a.remove();
        assert!(!path.exists());
        let b = FileLock::try_lock(&path, false).unwrap().unwrap();
        drop(b);
        assert!(FileLock::try_lock(&path, false).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
