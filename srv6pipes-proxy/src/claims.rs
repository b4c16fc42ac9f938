//! The claims of the proxies of one network namespace: `claims.json` in the namespace's directory
//! (`crate::namespace`), read and written only under the lock `claims.lock` beside it.
//!
//! * **Exclusive claims**, one entry per proxy (keyed by its state file, whose lock tells whether it
//!   lives): its listener port, prefixes, nftables table and ip rule. A start that conflicts with a live
//!   proxy's claim is refused.
//! * **Shared pieces** (sysctls, the fwmark ip rule, the `local ::/0` route): each lists its users and
//!   the undo of whoever installed it; the last user to leave applies that undo. A piece that was in place
//!   before the first user has no undo: no proxy removes what it did not create.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libsrv6sock::wire::prefix::Ipv6Prefix;
use serde::{Deserialize, Serialize};

use crate::datapath::{Command, DatapathConfig};
use crate::lockfile::{holder, pid_text, FileLock};
use crate::namespace::Namespace;

/// Bound on waiting for another process's work under the claims lock (an install, a takeover's
/// confirmation).
pub const LOCK_BOUND: Duration = Duration::from_secs(30);

/// What a proxy holds alone in its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Listener port.
    pub port: u16,
    /// Function prefixes.
    pub prefixes: Vec<String>,
    /// nftables table (or ip6tables chain, upper-cased).
    pub nft_table: String,
    /// Firewall mark of the ip rule.
    pub mark: u32,
    /// Routing table of the ip rule.
    pub table: u32,
    /// Priority of the ip rule.
    pub rule_pref: u32,
}

impl Claim {
    /// The claim of a datapath.
    pub fn of(cfg: &DatapathConfig) -> Claim {
        Claim {
            port: cfg.port,
            prefixes: cfg.prefixes.iter().map(|p| p.to_string()).collect(),
            nft_table: cfg.nft_table.clone(),
            mark: cfg.mark,
            table: cfg.table,
            rule_pref: cfg.rule_pref,
        }
    }

    /// What of `self` another proxy's `other` already holds, if anything.
    pub fn conflict(&self, other: &Claim) -> Option<String> {
        if self.port == other.port {
            return Some(format!("port {}", self.port));
        }
        let parse = |v: &[String]| v.iter().filter_map(|p| p.parse::<Ipv6Prefix>().ok()).collect::<Vec<_>>();
        for a in parse(&self.prefixes) {
            if let Some(b) = parse(&other.prefixes).into_iter().find(|b| a.contains(b.addr()) || b.contains(a.addr())) {
                return Some(format!("prefix {a} (overlaps {b})"));
            }
        }
        if self.nft_table.eq_ignore_ascii_case(&other.nft_table) {
            return Some(format!("nft table {} (ip6tables chain {})", self.nft_table, self.nft_table.to_uppercase()));
        }
        // The same rule is shared; a different one at the same priority or for the same mark is not.
        let rule = (self.mark, self.table, self.rule_pref);
        if rule != (other.mark, other.table, other.rule_pref)
            && (self.mark == other.mark || self.rule_pref == other.rule_pref)
        {
            return Some(format!(
                "ip rule (fwmark {} lookup {} pref {} there: fwmark {} lookup {} pref {})",
                self.mark, self.table, self.rule_pref, other.mark, other.table, other.rule_pref
            ));
        }
        None
    }
}

/// A piece of the datapath shared by the proxies of the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// What it is (a step of the plan, as printed).
    pub piece: String,
    /// The state files of its users.
    pub users: BTreeSet<PathBuf>,
    /// What removes it once it has no user (nothing if it was there before the first).
    pub undo: Vec<Command>,
}

/// The content of `claims.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The namespace (inode) it describes.
    pub netns: Option<u64>,
    /// Its cookie.
    pub netns_cookie: Option<u64>,
    /// Each proxy's claim, by state file.
    pub owners: BTreeMap<PathBuf, Claim>,
    /// Shared pieces, in installation order.
    pub shared: Vec<Share>,
}

/// Why the claims cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClaimsError {
    /// The lock or the file failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: io::Error,
    },
    /// Another process kept the lock too long.
    #[error("{} stayed locked for {LOCK_BOUND:?} (by process {})", path.display(), pid_text(*.pid))]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// Its holder.
        pid: Option<u32>,
    },
    /// The file is not valid.
    #[error("{} is not valid ({error}); check what it lists and remove it", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        error: serde_json::Error,
    },
}

/// The claims of this process's namespace, locked; [`Claims::save`] writes them back.
#[derive(Debug)]
pub struct Claims {
    lock: FileLock,
    file: PathBuf,
    /// The content.
    pub ledger: Ledger,
}

impl Claims {
    /// Lock and read the claims of namespace `ns` (waiting at most [`LOCK_BOUND`]). A file left by an
    /// earlier namespace with the same inode is ignored.
    pub fn lock(ns: &Namespace) -> Result<Claims, ClaimsError> {
        let dir = ns.dir();
        let lock_path = dir.join("claims.lock");
        let io = |error| ClaimsError::Io { path: lock_path.clone(), error };
        let lock = FileLock::lock(&lock_path, true, LOCK_BOUND)
            .map_err(io)?
            .ok_or_else(|| ClaimsError::Busy { path: lock_path.clone(), pid: holder(&lock_path) })?;
        let file = dir.join("claims.json");
        let ledger = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice::<Ledger>(&bytes)
                .map_err(|error| ClaimsError::Parse { path: file.clone(), error })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ledger::default(),
            Err(error) => return Err(ClaimsError::Io { path: file, error }),
        };
        let ledger = if ns.is(ledger.netns, ledger.netns_cookie) {
            ledger
        } else {
            tracing::warn!("{}: left by a namespace that is gone: ignored", file.display());
            Ledger::default()
        };
        Ok(Claims { lock, file, ledger: Ledger { netns: Some(ns.inode), netns_cookie: ns.cookie, ..ledger } })
    }

    /// The live proxy (other than `me`) whose claim `claim` conflicts with, and on what.
    pub fn conflict(&self, me: &Path, claim: &Claim) -> Option<(PathBuf, String)> {
        self.ledger
            .owners
            .iter()
            .filter(|(who, _)| who.as_path() != me)
            .find_map(|(who, theirs)| claim.conflict(theirs).map(|what| (who.clone(), what)))
    }

    /// Write them back (the file goes once empty).
    pub fn save(&self) -> Result<(), ClaimsError> {
        let io = |error| ClaimsError::Io { path: self.file.clone(), error };
        if self.ledger.owners.is_empty() && self.ledger.shared.is_empty() {
            return match std::fs::remove_file(&self.file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io(e)),
                _ => Ok(()),
            };
        }
        let mut tmp = self.file.clone().into_os_string();
        tmp.push(".tmp");
        // Strings and numbers always serialize.
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.ledger).unwrap_or_default()).map_err(io)?;
        std::fs::rename(&tmp, &self.file).map_err(io)
    }

    /// Remove `who` from every piece it uses and from the owners; returns the undo of the pieces left
    /// without a user, newest first (to be applied by the caller).
    pub fn leave(&mut self, who: &Path) -> Vec<Command> {
        self.ledger.owners.remove(who);
        let mut undo = Vec::new();
        for s in &mut self.ledger.shared {
            s.users.remove(who);
        }
        let (gone, kept) = std::mem::take(&mut self.ledger.shared).into_iter().partition(|s| s.users.is_empty());
        self.ledger.shared = kept;
        for s in Vec::<Share>::into_iter(gone).rev() {
            undo.extend(s.undo);
        }
        undo
    }

    /// Unlock; the lock file and the namespace's directory go too when nothing is claimed any more (the
    /// directory only once empty: a default state file or control socket may still be there).
    pub fn unlock(self) {
        if self.ledger.owners.is_empty() && self.ledger.shared.is_empty() && !self.file.exists() {
            let dir = self.file.parent().map(Path::to_path_buf);
            self.lock.remove();
            if let Some(dir) = dir {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(port: u16, prefix: &str, table: &str) -> Claim {
        Claim { port, prefixes: vec![prefix.into()], nft_table: table.into(), mark: 1, table: 100, rule_pref: 100 }
    }

    #[test]
    fn conflicts() {
        let a = claim(5001, "fc00:f1::/80", "a");
        assert!(a.conflict(&claim(5002, "fc00:f2::/80", "b")).is_none());
        assert!(a.conflict(&claim(5001, "fc00:f2::/80", "b")).unwrap().contains("port 5001"));
        assert!(a.conflict(&claim(5002, "fc00:f1::/64", "b")).unwrap().contains("prefix"));
        assert!(a.conflict(&claim(5002, "fc00:f2::/80", "A")).unwrap().contains("nft table"));
        let other_rule = Claim { table: 101, ..claim(5002, "fc00:f2::/80", "b") };
        assert!(a.conflict(&other_rule).unwrap().contains("ip rule"));
        let own_rule = Claim { mark: 2, table: 101, rule_pref: 101, ..claim(5002, "fc00:f2::/80", "b") };
        assert!(a.conflict(&own_rule).is_none());
    }

    #[test]
    fn the_last_user_undoes_newest_first() {
        let ns = Namespace { inode: u64::MAX - u64::from(std::process::id()), cookie: None };
        let mut c = Claims::lock(&ns).unwrap();
        let cmd = |v: &str| Command::Sysctl { key: "k".into(), value: v.into() };
        let users = |v: &[&str]| v.iter().map(PathBuf::from).collect::<BTreeSet<_>>();
        c.ledger.shared = vec![
            Share { piece: "one".into(), users: users(&["/a", "/b"]), undo: vec![cmd("1")] },
            Share { piece: "two".into(), users: users(&["/a", "/b"]), undo: vec![cmd("2")] },
            Share { piece: "three".into(), users: users(&["/b"]), undo: vec![] },
        ];
        c.ledger.owners.insert("/a".into(), claim(1, "fc00::/64", "a"));
        assert_eq!(c.leave(Path::new("/a")), vec![]);
        c.save().unwrap();
        c.unlock();
        let mut c = Claims::lock(&ns).unwrap();
        assert_eq!(c.ledger.shared.len(), 3);
        assert_eq!(c.leave(Path::new("/b")), vec![cmd("2"), cmd("1")]);
        c.save().unwrap();
        c.unlock();
        assert!(!ns.dir().exists());
    }
}
