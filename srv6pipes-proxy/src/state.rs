//! The state file (default `/run/srv6pipes/netns-INODE/proxy.state`, `crate::namespace`): the undo of
//! every step of the datapath its owner installed for itself alone ([`crate::datapath::Datapath`]'s undo
//! list), kept up to date after each step installed or removed and deleted once everything is removed.
//! The pieces shared with other proxies of the namespace are in `crate::claims`.
//!
//! Its owner is the process holding the lock file beside it (`STATE.lock`, [`crate::lockfile`]); only the
//! owner writes the file. srv6pipes-proxy(8), OWNERSHIP, says what a start, a takeover, an exit and
//! `setup --teardown` do with it.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::datapath::{Command, OnChange};
use crate::namespace::Namespace;

/// The file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The process owning the datapath.
    pub pid: u32,
    /// Its network namespace (inode of `/proc/self/ns/net`): the datapath is there, and a record of
    /// another namespace (a state path shared by proxies in several namespaces) is not ours to undo.
    #[serde(default)]
    pub netns: Option<u64>,
    /// That namespace's cookie (inodes are reused once a namespace is gone).
    #[serde(default)]
    pub netns_cookie: Option<u64>,
    /// The undo of each installed step, oldest first (applied newest first).
    pub undo: Vec<Vec<Command>>,
}

impl Record {
    /// This process's record of `undo`.
    pub fn ours(undo: Vec<Vec<Command>>) -> Record {
        let ns = Namespace::current().ok();
        Record { pid: std::process::id(), netns: ns.map(|n| n.inode), netns_cookie: ns.and_then(|n| n.cookie), undo }
    }

    /// Whether it describes this process's network namespace (a record without one is taken as such).
    pub fn here(&self) -> bool {
        Namespace::current().map_or(true, |ns| ns.is(self.netns, self.netns_cookie))
    }
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

    /// The path of its lock file: the file's owner holds it.
    pub fn lock_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".lock");
        p.into()
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
            netns: Namespace::current().ok().map(|n| n.inode),
            netns_cookie: None,
            undo: vec![
                vec![Command::Sysctl { key: "net.ipv6.conf.all.forwarding".into(), value: "0".into() }],
                vec![Command::Run { argv: vec!["nft".into(), "delete".into()], stdin: None }, Command::DropEmptyMangle],
            ],
        };
        f.store(&rec).unwrap();
        assert_eq!(f.load().unwrap(), Some(rec.clone()));
        assert_eq!(f.lock_path(), dir.join("sub/p.state.lock"));
        assert!(rec.here() && !Record { netns: Some(1), ..rec.clone() }.here());
        f.store(&Record { undo: vec![], ..rec }).unwrap();
        assert!(!f.path().exists());
        std::fs::write(f.path(), "{not json").unwrap();
        assert!(matches!(f.load(), Err(StateError::Parse { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
