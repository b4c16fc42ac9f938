//! The network namespace a proxy runs in, and its directory under `/run/srv6pipes/`.
//!
//! `/run` is shared by every network namespace (`ip netns exec` does not remount it), so everything a
//! proxy keeps there is per namespace: `/run/srv6pipes/netns-INODE/`, INODE being the inode number of
//! the namespace (`stat -L -c %i /proc/self/ns/net`, what `ip netns identify` compares). It holds the
//! default state file and control socket and the namespace's claims (`claims.json`). Inode numbers are
//! reused once a namespace is gone; the namespace's cookie (`SO_NETNS_COOKIE`, never reused while the
//! system runs) recorded in the files there tells a dead namespace's leftovers from ours.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Where the namespaces' directories are.
pub const RUN_DIR: &str = "/run/srv6pipes";

/// `SO_NETNS_COOKIE` (Linux 5.14) as in asm-generic (x86, arm, riscv…); the libc crate lacks it.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// A network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace {
    /// Inode of its `/proc/PID/ns/net`.
    pub inode: u64,
    /// Its cookie, when the kernel tells it.
    pub cookie: Option<u64>,
}

impl Namespace {
    /// The namespace of this process.
    pub fn current() -> std::io::Result<Namespace> {
        let inode = std::fs::metadata("/proc/self/ns/net")?.ino();
        Ok(Namespace { inode, cookie: cookie() })
    }

    /// Its directory.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(RUN_DIR).join(format!("netns-{}", self.inode))
    }

    /// Whether a file recording namespace `inode`/`cookie` describes this one (a record without a cookie
    /// is taken by its inode alone).
    pub fn is(&self, inode: Option<u64>, cookie: Option<u64>) -> bool {
        inode.is_none_or(|i| i == self.inode) && (cookie.is_none() || self.cookie.is_none() || cookie == self.cookie)
    }
}

/// The cookie of this process's network namespace.
fn cookie() -> Option<u64> {
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::DGRAM, None).ok()?;
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    use std::os::fd::AsRawFd;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, a live u64.
    let r = unsafe {
        libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, SO_NETNS_COOKIE, (&mut value as *mut u64).cast(), &mut len)
    };
    (r == 0 && len as usize == std::mem::size_of::<u64>()).then_some(value)
}

/// The default of a file in this namespace's directory (the namespace's root's when unknown).
fn default_path(name: &str) -> PathBuf {
    match Namespace::current() {
        Ok(ns) => ns.dir().join(name),
        Err(_) => PathBuf::from(RUN_DIR).join(name),
    }
}

/// The default state file: `/run/srv6pipes/netns-INODE/proxy.state`.
pub fn default_state() -> PathBuf {
    default_path("proxy.state")
}

/// The default control socket: `/run/srv6pipes/netns-INODE/proxy.sock`.
pub fn default_control() -> PathBuf {
    default_path("proxy.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_of_this_namespace() {
        let ns = Namespace::current().unwrap();
        assert_eq!(Namespace::current().unwrap(), ns);
        assert!(ns.cookie.is_some(), "SO_NETNS_COOKIE needs Linux 5.14");
        assert!(ns.is(Some(ns.inode), ns.cookie) && ns.is(None, None) && ns.is(Some(ns.inode), None));
        assert!(!ns.is(Some(ns.inode + 1), ns.cookie) && !ns.is(Some(ns.inode), ns.cookie.map(|c| c + 1)));
        assert_eq!(default_state(), ns.dir().join("proxy.state"));
        assert!(default_control().starts_with(RUN_DIR));
    }
}
