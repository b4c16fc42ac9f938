//! Who owns which part of a namespace's datapath, from a proxy's start to its exit: the protocol between
//! proxies of one network namespace (and `setup --teardown`), over the state files' locks
//! ([`crate::state`], [`crate::lockfile`]) and the namespace's claims ([`crate::claims`]).
//!
//! * **Start** ([`start`]): under the claims lock, take the state file's lock; remove the leftovers of
//!   every proxy whose lock is free (crashed: its recorded undo, its references to shared pieces); refuse
//!   a port, prefix, nftables table or ip rule a live proxy holds; record our claim; take a reference on
//!   each shared piece (installing it if nobody has) and install our own pieces ([`Owned`]).
//! * **Exit** ([`Owned::exit`]): remove our own pieces, drop our references (the last user of a piece
//!   removes it, sysctls back to what the first user found), release the lock.
//! * **Takeover** (`--takeover`, the state file's lock held by a live proxy): nothing is touched until
//!   the running proxy handed over. [`Adopted`] has no way to a datapath but [`Adopted::take_over`],
//!   which asks the owner over its control socket to hand over and then waits for the owner's lock: the
//!   lock is the commit point. The owner ([`Owned::hand_over`]), holding the claims lock, releases its
//!   state lock and watches it: taken (the successor wrote its pid in it) within [`HANDOVER_GRACE`],
//!   the datapath is the successor's and the owner drains; still free after it (the successor gave up
//!   or was never there: a late request from a successor that timed out, a wrong `--control`), the owner
//!   takes its lock back and serves on as if nothing happened.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use srv6pipes_api::control::{DrainReply, Request};

use crate::claims::{Claim, Claims, ClaimsError, Share};
use crate::config::ProxyConfig;
use crate::datapath::{self, Datapath, DatapathError, Step};
use crate::lockfile::{holder, pid_text, FileLock};
use crate::namespace::Namespace;
use crate::state::{StateError, StateFile};

/// Bound on the running proxy's answer to a takeover's hand-over request.
pub const HANDOVER_ANSWER: Duration = Duration::from_secs(10);
/// How long a successor waits for the running proxy's lock once it agreed to hand over.
pub const TAKE_BOUND: Duration = Duration::from_secs(5);
/// How long a proxy that agreed to hand over waits for its successor to take its lock.
pub const HANDOVER_GRACE: Duration = Duration::from_secs(10);

/// Why a proxy may not own its datapath.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// Another live proxy owns the state file.
    #[error("process {} owns the datapath recorded in {} (it holds {}): stop it, or start with --takeover",
        pid_text(*.pid), path.display(), lock.display())]
    Owned {
        /// Its pid, as written in the lock file.
        pid: Option<u32>,
        /// The state file.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// Another live proxy of the namespace holds part of what this one would install.
    #[error("{what} is taken by process {} in this network namespace (state file {}): choose another or stop it",
        pid_text(*.pid), state.display())]
    Conflict {
        /// What.
        what: String,
        /// That proxy's pid.
        pid: Option<u32>,
        /// Its state file.
        state: PathBuf,
    },
    /// `--takeover` with nothing running.
    #[error("--takeover: no running proxy owns {}", .0.display())]
    NothingToTakeOver(PathBuf),
    /// `--takeover` with other settings than the running proxy's.
    #[error(
        "--takeover: the running proxy has {theirs:?}, this one {ours:?}: a successor takes the datapath as it is"
    )]
    Mismatch {
        /// The running proxy's claim.
        theirs: Box<Claim>,
        /// Ours.
        ours: Box<Claim>,
    },
    /// The running proxy did not agree to hand over.
    #[error("--takeover: asking process {} to hand over on {}: {why}; it keeps serving, its datapath untouched",
        pid_text(*.pid), control.display())]
    Handover {
        /// Its pid.
        pid: Option<u32>,
        /// The control socket asked.
        control: PathBuf,
        /// Why.
        why: String,
    },
    /// The running proxy agreed but kept its lock.
    #[error("--takeover: process {} agreed to hand over but kept {} for {TAKE_BOUND:?}; it keeps serving",
        pid_text(*.pid), lock.display())]
    NotHandedOver {
        /// Its pid.
        pid: Option<u32>,
        /// The lock file.
        lock: PathBuf,
    },
    /// The namespace cannot be identified.
    #[error("identifying the network namespace (/proc/self/ns/net): {0}")]
    Namespace(io::Error),
    /// A lock file failed.
    #[error("{}: {error}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        error: io::Error,
    },
    /// The claims file.
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    /// The state file.
    #[error(transparent)]
    State(#[from] StateError),
    /// Installing.
    #[error("installing the datapath (use --no-setup to manage it yourself)")]
    Datapath(#[from] DatapathError),
}

impl OwnershipError {
    /// Whether another live proxy holds what this one asked for (exit status 3).
    pub fn is_taken(&self) -> bool {
        matches!(self, OwnershipError::Owned { .. } | OwnershipError::Conflict { .. })
    }
}

/// The state file at `path`, made absolute: it names its owner in the claims.
fn state_file(path: &Path) -> Result<StateFile, OwnershipError> {
    let abs = std::path::absolute(path).map_err(|error| OwnershipError::Lock { path: path.into(), error })?;
    Ok(StateFile::new(abs))
}

fn lock_err(path: &Path) -> impl FnOnce(io::Error) -> OwnershipError + '_ {
    move |error| OwnershipError::Lock { path: path.into(), error }
}

/// The datapath of this process: the lock of its state file and what it installed for itself.
#[derive(Debug)]
pub struct Owned {
    ns: Namespace,
    state: StateFile,
    lock: FileLock,
    dp: Datapath,
}

/// A live proxy's datapath that this one was asked to take over; nothing of it is touched yet.
#[derive(Debug)]
pub struct Adopted {
    state: StateFile,
    pid: Option<u32>,
}

/// What [`start`] obtained.
#[derive(Debug)]
pub enum Start {
    /// The datapath is installed and ours.
    Owned(Owned),
    /// A live proxy owns it; `--takeover` was given.
    Adopted(Adopted),
}

/// Start as `cfg` says (the module's "Start").
pub fn start(cfg: &ProxyConfig) -> Result<Start, OwnershipError> {
    let ns = Namespace::current().map_err(OwnershipError::Namespace)?;
    let state = state_file(&cfg.state)?;
    let me = state.path().to_path_buf();
    let claim = Claim::of(&cfg.datapath);
    let mut claims = Claims::lock(&ns)?;
    let lock_path = state.lock_path();
    let Some(mut lock) = FileLock::try_lock_past_exit(&lock_path, true).map_err(lock_err(&lock_path))? else {
        let pid = holder(&lock_path);
        if !cfg.takeover {
            return Err(OwnershipError::Owned { pid, path: me, lock: lock_path });
        }
        if let Some(theirs) = claims.ledger.owners.get(&me).filter(|t| **t != claim) {
            return Err(OwnershipError::Mismatch { theirs: Box::new(theirs.clone()), ours: Box::new(claim) });
        }
        claims.unlock();
        tracing::info!(pid = pid_text(pid), "taking over the datapath of the running proxy");
        return Ok(Start::Adopted(Adopted { state, pid }));
    };
    if cfg.takeover {
        lock.remove();
        claims.unlock();
        return Err(OwnershipError::NothingToTakeOver(me));
    }
    lock.write_pid().map_err(lock_err(&lock_path))?;
    remove_dead(&mut claims, &me)?;
    if let Some((who, what)) = claims.conflict(&me, &claim) {
        let pid = holder(&StateFile::new(&who).lock_path());
        lock.remove();
        claims.unlock();
        return Err(OwnershipError::Conflict { what, pid, state: who });
    }
    claims.ledger.owners.insert(me.clone(), claim);
    claims.save()?;
    match install(cfg, &mut claims, &state) {
        Ok(dp) => {
            claims.unlock();
            Ok(Start::Owned(Owned { ns, state, lock, dp }))
        }
        Err(e) => {
            // What `install` put in place for us alone went with its datapath; our references go here.
            leave(&mut claims, &me);
            claims.unlock();
            lock.remove();
            Err(e)
        }
    }
}

/// Take a reference on each shared piece of the plan (installing those nobody has), then install our own.
fn install(cfg: &ProxyConfig, claims: &mut Claims, state: &StateFile) -> Result<Datapath, OwnershipError> {
    let steps = cfg.datapath.plan(datapath::resolve_backend(cfg.datapath.backend)?)?;
    let (shared, own): (Vec<Step>, Vec<Step>) = steps.into_iter().partition(Step::is_shared);
    let me = state.path().to_path_buf();
    for step in shared {
        let piece = step.to_string();
        match claims.ledger.shared.iter_mut().find(|s| s.piece == piece) {
            Some(s) => {
                tracing::info!("{piece}: shared with {} other proxy(ies)", s.users.len());
                s.users.insert(me.clone());
            }
            None => {
                let undo = step.ensure()?;
                claims.ledger.shared.push(Share { piece, users: [me.clone()].into(), undo });
            }
        }
        claims.save()?;
    }
    Ok(datapath::install(own, state.clone().recorder())?)
}

/// Drop `who`'s references; remove the pieces it was the last user of.
fn leave(claims: &mut Claims, who: &Path) {
    for cmd in claims.leave(who) {
        match datapath::apply(&cmd) {
            Ok(()) => tracing::info!("teardown: {cmd}"),
            Err(e) => tracing::warn!("teardown: {e}"),
        }
    }
    if let Err(e) = claims.save() {
        tracing::warn!("{e}");
    }
}

/// Remove what the run recorded in `state` left (its owner is gone: we hold its lock).
fn remove_leftovers(state: &StateFile) -> Result<bool, OwnershipError> {
    let Some(rec) = state.load()? else { return Ok(false) };
    let path = state.path().display();
    if rec.here() {
        tracing::warn!(pid = rec.pid, state = %path, "a proxy that is gone left its datapath: removing its leftovers");
        Datapath::adopt(rec.undo, state.clone().recorder()).teardown();
    } else {
        tracing::warn!(pid = rec.pid, state = %path, "the state file describes another network namespace: ignored");
        state.remove()?;
    }
    Ok(true)
}

/// Remove the leftovers of every recorded proxy whose lock is free, and of `me` (whose lock we hold);
/// returns whether there were any.
fn remove_dead(claims: &mut Claims, me: &Path) -> Result<bool, OwnershipError> {
    let mut any = remove_leftovers(&StateFile::new(me))?;
    let owners: Vec<PathBuf> = claims.ledger.owners.keys().cloned().collect();
    for who in owners {
        let state = StateFile::new(&who);
        let lock = if who == me {
            None
        } else {
            match FileLock::try_lock(&state.lock_path(), false) {
                Ok(Some(l)) => Some(l),
                Ok(None) => continue,
                // Its directory is gone: so is its owner.
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(lock_err(&state.lock_path())(e)),
            }
        };
        if who != me {
            remove_leftovers(&state)?;
        }
        tracing::warn!(state = %who.display(), "a proxy that is gone held shared pieces: releasing them");
        leave(claims, &who);
        if let Some(l) = lock {
            l.remove();
        }
        any = true;
    }
    Ok(any)
}

impl Owned {
    /// Remove our own pieces, drop our references to the shared ones, release the lock (the module's
    /// "Exit").
    pub fn exit(mut self) {
        let me = self.state.path().to_path_buf();
        match Claims::lock(&self.ns) {
            Ok(mut claims) => {
                self.dp.teardown();
                leave(&mut claims, &me);
                claims.unlock();
            }
            // Our own pieces go; our references stay recorded, to be released by the next start or
            // `setup --teardown` (our lock is free then).
            Err(e) => {
                tracing::warn!("{e}: shared pieces left to the next start");
                self.dp.teardown();
            }
        }
        self.lock.remove();
    }

    /// Offer the datapath to a successor (the owner's side of a takeover, see the module): `Ok` once the
    /// successor holds the lock (the datapath is its now), `Err(self)` when nobody took it.
    pub fn hand_over(self) -> Result<(), Owned> {
        let Owned { ns, state, lock, dp } = self;
        let claims = match Claims::lock(&ns) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("hand-over refused: {e}");
                return Err(Owned { ns, state, lock, dp });
            }
        };
        let path = lock.path().to_path_buf();
        drop(lock);
        let until = Instant::now() + HANDOVER_GRACE;
        let me = Some(std::process::id());
        let mut taken = false;
        while Instant::now() < until {
            // The successor writes its pid once it holds the lock.
            if holder(&path).is_some_and(|p| Some(p) != me) {
                taken = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let back = if taken { None } else { FileLock::try_lock(&path, false).ok().flatten() };
        claims.unlock();
        match back {
            None => {
                tracing::info!(successor = pid_text(holder(&path)), "the datapath was handed over");
                dp.release();
                Ok(())
            }
            Some(mut lock) => {
                if let Err(e) = lock.write_pid() {
                    tracing::warn!("{}: {e}", path.display());
                }
                tracing::warn!(
                    "hand-over cancelled: no successor took the datapath within {HANDOVER_GRACE:?}; serving on"
                );
                Err(Owned { ns, state, lock, dp })
            }
        }
    }
}

impl Adopted {
    /// Ask the running proxy on `control` to hand over (drain within `drain`), then take its lock and its
    /// datapath. On failure nothing was touched: the running proxy keeps serving.
    pub fn take_over(self, control: &Path, drain: Duration) -> Result<(Owned, DrainReply), OwnershipError> {
        let req = Request::Drain { timeout_s: Some(drain.as_secs()), handover: true };
        let reply = match srv6pipes_api::control::call::<DrainReply>(control, &req, HANDOVER_ANSWER) {
            Ok(r) => r,
            Err(e) => {
                let err = OwnershipError::Handover { pid: self.pid, control: control.into(), why: e.to_string() };
                self.release_to_owner();
                return Err(err);
            }
        };
        let lock_path = self.state.lock_path();
        let Some(mut lock) = FileLock::lock(&lock_path, false, TAKE_BOUND).map_err(lock_err(&lock_path))? else {
            let err = OwnershipError::NotHandedOver { pid: self.pid, lock: lock_path };
            self.release_to_owner();
            return Err(err);
        };
        // From here on the datapath is ours: the previous owner sees our pid and drains.
        lock.write_pid().map_err(lock_err(&lock_path))?;
        let ns = Namespace::current().map_err(OwnershipError::Namespace)?;
        let undo = self.state.load()?.map(|r| r.undo).unwrap_or_default();
        let dp = Datapath::adopt(undo, self.state.clone().recorder());
        Ok((Owned { ns, state: self.state, lock, dp }, reply))
    }

    /// Give up the takeover: the running proxy's datapath stays as it is.
    pub fn release_to_owner(self) {
        tracing::info!(pid = pid_text(self.pid), "takeover abandoned: the datapath stays with the running proxy");
    }
}

/// `setup --teardown`: remove the leftovers of the proxy of `state` (refused while it runs) and of every
/// other dead proxy of the namespace; returns whether there were any.
pub fn teardown(state: &Path) -> Result<bool, OwnershipError> {
    let ns = Namespace::current().map_err(OwnershipError::Namespace)?;
    let state = state_file(state)?;
    let mut claims = Claims::lock(&ns)?;
    let lock_path = state.lock_path();
    let lock = match FileLock::try_lock_past_exit(&lock_path, false) {
        Ok(Some(l)) => Some(l),
        Ok(None) => {
            claims.unlock();
            return Err(OwnershipError::Owned { pid: holder(&lock_path), path: state.path().into(), lock: lock_path });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(lock_err(&lock_path)(e)),
    };
    let any = remove_dead(&mut claims, state.path());
    claims.unlock();
    if let Some(l) = lock {
        l.remove();
    }
    any
}
