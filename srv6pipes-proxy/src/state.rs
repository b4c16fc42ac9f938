//! The state file (default `/run/srv6pipes-proxy.state`): which process owns the datapath and the undo
//! of every step it installed ([`crate::datapath::Datapath`]'s undo list, derived from the plan), kept up
//! to date after each step installed or removed and deleted once everything is removed.
//!
//! * a start that finds the file of a dead process (a crash, `kill -9`) removes that run's leftovers with
//!   the recorded undo (sysctls back to the values found before it) and installs afresh;
//! * a start that finds a live owner refuses, unless `--takeover`: then it adopts the record, writes its
//!   own pid and asks the owner to drain; the old owner, seeing another pid in the file at exit, leaves
//!   the datapath in place;
//! * `setup --teardown` applies the recorded undo by hand.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::datapath::{Command, OnChange};

/// The file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The process owning the datapath.
    pub pid: u32,
    /// Its network namespace (inode of `/proc/self/ns/net`): the datapath is there, and a record of
    /// another namespace (a state path shared by proxies in several namespaces) is not ours to undo.
    #[serde(default)]
    pub netns: Option<u64>,
    /// The undo of each installed step, oldest first (applied newest first).
    pub undo: Vec<Vec<Command>>,
}

impl Record {
    /// This process's record of `undo`.
    pub fn ours(undo: Vec<Vec<Command>>) -> Record {
        Record { pid: std::process::id(), netns: current_netns(), undo }
    }

    /// Whether it describes this process's network namespace (a record without one is taken as such).
    pub fn here(&self) -> bool {
        self.netns.is_none() || self.netns == current_netns()
    }
}

/// The inode of this process's network namespace.
pub fn current_netns() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino())
}

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing or removing it failed.
    #[error("state file {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: io::Error,
    },
    /// It is not a state file of this program.
    #[error("state file {} is not valid ({error}); check what it lists and remove it", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        error: serde_json::Error,
    },
}

/// The state file at a path.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The file at `path` (not touched yet).
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self) -> impl FnOnce(io::Error) -> StateError + '_ {
        |error| StateError::Io { path: self.path.clone(), error }
    }

    /// The record, if the file exists.
    pub fn load(&self) -> Result<Option<Record>, StateError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|error| StateError::Parse { path: self.path.clone(), error }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io()(e)),
        }
    }

    /// Write `record` (atomically: a temporary file renamed over it), or remove the file when the record
    /// lists nothing to undo.
    pub fn store(&self, record: &Record) -> Result<(), StateError> {
        if record.undo.is_empty() {
            return self.remove();
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(self.io())?;
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        // A record of strings and numbers always serializes.
        let text = serde_json::to_vec_pretty(record).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(self.io())?;
        std::fs::rename(&tmp, &self.path).map_err(self.io())
    }

    /// Remove the file (absent is fine).
    pub fn remove(&self) -> Result<(), StateError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.io()(e)),
            _ => Ok(()),
        }
    }

    /// A [`crate::datapath::Datapath`] hook that records its undo list here under this process.
    pub fn recorder(self) -> OnChange {
        Box::new(move |undo| {
            if let Err(e) = self.store(&Record::ours(undo.to_vec())) {
                tracing::warn!("{e}");
            }
        })
    }

    /// The owner recorded now, if any (an unreadable file counts as no owner).
    pub fn owner(&self) -> Option<u32> {
        self.load().ok().flatten().map(|r| r.pid)
    }
}

/// Whether process `pid` exists (another process than this one).
pub fn alive(pid: u32) -> bool {
    if pid == std::process::id() || pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_remove() {
        let dir = std::env::temp_dir().join(format!("srv6pipes-proxy-state-{}", std::process::id()));
        let f = StateFile::new(dir.join("sub/p.state"));
        assert_eq!(f.load().unwrap(), None);
        let rec = Record {
            pid: 42,
            netns: current_netns(),
            undo: vec![
                vec![Command::Sysctl { key: "net.ipv6.conf.all.forwarding".into(), value: "0".into() }],
                vec![Command::Run { argv: vec!["nft".into(), "delete".into()], stdin: None }, Command::DropEmptyMangle],
            ],
        };
        f.store(&rec).unwrap();
        assert_eq!(f.load().unwrap(), Some(rec.clone()));
        assert_eq!(f.owner(), Some(42));
        assert!(rec.here() && !Record { netns: Some(1), ..rec.clone() }.here());
        f.store(&Record { undo: vec![], ..rec }).unwrap();
        assert!(!f.path().exists());
        std::fs::write(f.path(), "{not json").unwrap();
        assert!(matches!(f.load(), Err(StateError::Parse { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!alive(std::process::id()) && !alive(0));
        assert!(alive(1));
    }
}
