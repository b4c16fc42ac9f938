//! The cgroup v2 a kernel-mode run puts PROGRAM in, and its ownership record.
//!
//! Each run creates `srv6run-PID-NANOS` directly under the cgroup2 mount and records it in
//! `/run/srv6pipes/srv6run/` under the same name; srv6run holds an exclusive flock on the record for as
//! long as it lives (the descriptor is close-on-exec: PROGRAM does not inherit it). A record whose lock
//! can be taken belongs to a run that is gone (killed, or the host crashed before /run was emptied): the
//! next kernel-mode run kills what is left in its cgroup, removes the cgroup, then the record. Nothing
//! else is ever removed: only names this module made, only when their owner is provably gone.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where the ownership records live.
pub const RECORD_DIR: &str = "/run/srv6pipes/srv6run";
const PREFIX: &str = "srv6run-";
/// A record is written under this prefix and renamed once locked, so that a cleanup never takes a record
/// whose owner has not locked it yet.
const TEMP_PREFIX: &str = ".new-";
/// How long a cleanup waits for a killed cgroup's processes to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The run's cgroup; removed (with whatever still runs in it) on drop.
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
    record: PathBuf,
    /// Holds the lock: the record is ours while this is open.
    _lock: File,
}

/// The cgroup2 mount point: from /proc/self/mountinfo; when there is none in this mount namespace (under
/// `ip netns exec`, which mounts a fresh /sys), srv6run mounts cgroup2 in a mount namespace of its own
/// (the mount goes when srv6run and PROGRAM are gone; the cgroups themselves are the host's).
pub fn cgroup2_root() -> Result<PathBuf> {
    if let Some(p) = mounted_cgroup2()? {
        return Ok(p);
    }
    let target = Path::new("/sys/fs/cgroup");
    // SAFETY: plain system calls on constant, NUL-terminated strings; failures are checked.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error()).context("no cgroup2 mount: unshare(CLONE_NEWNS)");
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context("making / a slave mount");
        }
        if libc::mount(c"cgroup2".as_ptr(), c"/sys/fs/cgroup".as_ptr(), c"cgroup2".as_ptr(), 0, std::ptr::null()) != 0 {
            return Err(std::io::Error::last_os_error()).context("mounting cgroup2 on /sys/fs/cgroup");
        }
    }
    Ok(target.to_path_buf())
}

fn mounted_cgroup2() -> Result<Option<PathBuf>> {
    let info = fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount = left.split(' ').nth(4)?;
        (right.split(' ').next()? == "cgroup2").then(|| PathBuf::from(mount))
    }))
}

impl RunCgroup {
    /// Clean what runs that are gone left, then create this run's cgroup and record under `root`.
    pub fn create(root: &Path) -> Result<RunCgroup> {
        fs::create_dir_all(RECORD_DIR).with_context(|| format!("creating {RECORD_DIR}"))?;
        clean_stale(root);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos());
        let name = format!("{PREFIX}{}-{}", std::process::id(), nanos.unwrap_or(0));
        let temp = Path::new(RECORD_DIR).join(format!("{TEMP_PREFIX}{name}"));
        let record = Path::new(RECORD_DIR).join(&name);
        let mut lock = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .with_context(|| format!("creating {}", temp.display()))?;
        if !try_lock(&lock) {
            bail!("{} is locked by another process", temp.display());
        }
        writeln!(lock, "pid {}", std::process::id()).context("writing the ownership record")?;
        fs::rename(&temp, &record).with_context(|| format!("renaming {}", temp.display()))?;
        let dir = root.join(&name);
        if let Err(e) = fs::create_dir(&dir) {
            let _ = fs::remove_file(&record);
            return Err(e).with_context(|| format!("creating the cgroup {}", dir.display()));
        }
        Ok(RunCgroup { dir, record, _lock: lock })
    }

    /// The cgroup's id as `bpf_skb_cgroup_id()` gives it: its directory's inode number.
    pub fn id(&self) -> Result<u64> {
        Ok(fs::metadata(&self.dir).with_context(|| format!("{}", self.dir.display()))?.ino())
    }

    /// Its `cgroup.procs`: a process writing "0" to it moves itself in.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        match remove_cgroup(&self.dir) {
            Ok(()) => {
                let _ = fs::remove_file(&self.record);
            }
            // The record stays, so that the next run tries again.
            Err(e) => eprintln!("srv6run: warning: {e:#}"),
        }
    }
}

fn try_lock(f: &File) -> bool {
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Kill what still runs in `dir`, wait (bounded) until it is empty, remove it.
fn remove_cgroup(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    fs::write(dir.join("cgroup.kill"), "1").with_context(|| format!("killing the processes of {}", dir.display()))?;
    let start = Instant::now();
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < KILL_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).with_context(|| format!("removing the cgroup {}", dir.display())),
        }
    }
}

/// Remove the cgroups and records of runs that are gone: records nobody holds the lock of.
fn clean_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(RECORD_DIR) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let temp = name.strip_prefix(TEMP_PREFIX);
        if !name.starts_with(PREFIX) && temp.is_none() {
            continue;
        }
        let Ok(f) = File::open(entry.path()) else { continue };
        if !try_lock(&f) {
            continue; // its run is alive
        }
        // A temporary record is its owner's until locked; one left by a run killed at that moment is old.
        if temp.is_some()
            && f.metadata().and_then(|m| m.modified()).map_or(true, |t| t.elapsed().is_ok_and(|e| e < KILL_WAIT))
        {
            continue;
        }
        // The record's name is the cgroup's, relative to the cgroup2 root (mounted anywhere).
        let cgroup = root.join(temp.unwrap_or(&name));
        match remove_cgroup(&cgroup) {
            Ok(()) => {
                let _ = fs::remove_file(entry.path());
                eprintln!("srv6run: removed {} left by a run that is gone", cgroup.display());
            }
            Err(e) => eprintln!("srv6run: warning: a run that is gone left {}: {e:#}", cgroup.display()),
        }
    }
}
