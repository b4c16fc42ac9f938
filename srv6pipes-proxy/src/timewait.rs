//! Destroy the TIME_WAIT sockets the proxy leaves behind when it closed a leg first.
//!
//! Why: when the server closes first (HTTP `Connection: close`), the proxy forwards the FIN to the client
//! and becomes the active closer of the client-facing socket, which then sits in TIME_WAIT as
//! `server:port ↔ client:port`. A new SYN from the client reusing that port reaches the listener through
//! TPROXY, but its lookup used the SID, not the server address, so TPROXY cannot recycle the TIME_WAIT
//! socket as it does for ordinary transparent proxies; the kernel then drops the SYN silently because the
//! 4-tuple is taken, and the client stalls for a SYN retransmission (1 s). The proxy therefore removes
//! its own TIME_WAIT sockets with `SOCK_DESTROY` (sock_diag, what `ss -K` uses) right after the flow ends.
//! Same for the outbound leg when the client closed first. A leg whose FIN crossed the peer's enters
//! TIME_WAIT only once its FIN is acknowledged: [`reap`] reads the leg's state and retries a moment later.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddrV6;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// `NETLINK_SOCK_DIAG`.
const NETLINK_SOCK_DIAG: libc::c_int = 4;
/// `SOCK_DESTROY` message type.
const SOCK_DESTROY: u16 = 21;
/// `TCP_TIME_WAIT` state number.
const TCP_TIME_WAIT: u32 = 6;

/// Set once the kernel said it cannot destroy sockets (no CONFIG_INET_DIAG_DESTROY): stop trying.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static NETLINK: RefCell<Option<OwnedFd>> = const { RefCell::new(None) };
}

fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the descriptor is owned by the returned OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open this thread's sock_diag socket now (a worker does at start), so that the proxy's descriptors do
/// not grow with its first flow.
pub fn prepare() {
    NETLINK.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            match open() {
                Ok(fd) => *cell = Some(fd),
                Err(e) => tracing::debug!("sock_diag socket: {e}"),
            }
        }
    });
}

/// The `SOCK_DESTROY` request for the TIME_WAIT socket `local ↔ remote`.
fn request(local: SocketAddrV6, remote: SocketAddrV6, seq: u32) -> [u8; 72] {
    let mut m = [0u8; 72];
    // struct nlmsghdr
    m[0..4].copy_from_slice(&72u32.to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DESTROY.to_ne_bytes());
    m[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // struct inet_diag_req_v2
    m[16] = libc::AF_INET6 as u8;
    m[17] = libc::IPPROTO_TCP as u8;
    m[20..24].copy_from_slice(&(1u32 << TCP_TIME_WAIT).to_ne_bytes());
    // struct inet_diag_sockid: the socket's own side is "src".
    m[24..26].copy_from_slice(&local.port().to_be_bytes());
    m[26..28].copy_from_slice(&remote.port().to_be_bytes());
    m[28..44].copy_from_slice(&local.ip().octets());
    m[44..60].copy_from_slice(&remote.ip().octets());
    // idiag_if = 0, cookie = INET_DIAG_NOCOOKIE
    m[64..72].copy_from_slice(&[0xff; 8]);
    m
}

/// Destroy the TIME_WAIT socket `local ↔ remote` if there is one. Best effort: errors are logged at
/// debug level; "no such socket" is the normal outcome when the peer closed first.
pub fn destroy(local: SocketAddrV6, remote: SocketAddrV6) {
    let _ = destroy_one(local, remote);
}

/// [`destroy`], telling whether a socket was destroyed.
fn destroy_one(local: SocketAddrV6, remote: SocketAddrV6) -> io::Result<()> {
    if UNSUPPORTED.load(Relaxed) {
        return Ok(());
    }
    let result = NETLINK.with(|cell| -> io::Result<()> {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(open()?);
        }
        let fd = cell.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
        let msg = request(local, remote, 1);
        // SAFETY: sends `msg`, a live buffer of its own length, on our netlink socket (kernel as peer).
        let n = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // The kernel handles the request inside send() and queues its answer (an nlmsgerr) at once.
        let mut ack = [0u8; 256];
        // SAFETY: receives into a live buffer of its own length.
        let n = unsafe { libc::recv(fd, ack.as_mut_ptr().cast(), ack.len(), libc::MSG_DONTWAIT) };
        if n >= 20 && u16::from_ne_bytes([ack[4], ack[5]]) == libc::NLMSG_ERROR as u16 {
            let err = -i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]);
            if err != 0 {
                return Err(io::Error::from_raw_os_error(err));
            }
        }
        Ok(())
    });
    match &result {
        Ok(()) => tracing::trace!(%local, %remote, "TIME_WAIT socket destroyed"),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EPERM) | Some(libc::EACCES)) => {
            UNSUPPORTED.store(true, Relaxed);
            tracing::warn!("cannot destroy TIME_WAIT sockets ({e}); clients reusing a port may see a 1 s SYN retry");
        }
        Err(e) => tracing::debug!(%local, %remote, "SOCK_DESTROY: {e}"),
    }
    result
}

/// `TCP_CLOSE`: what a socket's own state becomes once its TIME_WAIT twin exists.
const TCP_CLOSE: u8 = 7;
/// `TCP_FIN_WAIT1` and `TCP_CLOSING`: our FIN is not acknowledged yet; TIME_WAIT comes once it is.
const TCP_FIN_WAIT1: u8 = 4;
const TCP_CLOSING: u8 = 11;

/// The kernel's TCP state of `s` (`tcpi_state`), if it can be read.
fn tcp_state(s: &impl AsRawFd) -> Option<u8> {
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, a live struct of that size.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(info.tcpi_state)
}

/// After a graceful close of a flow, for one leg still open as `local ↔ remote`: destroy its TIME_WAIT
/// twin now if it is there, or a moment later if the leg is still waiting for the ACK of its FIN (the
/// FINs crossed); a leg the peer closed first leaves none and costs only the state read.
pub fn reap(s: &impl AsRawFd, local: SocketAddrV6, remote: SocketAddrV6) {
    match tcp_state(s) {
        Some(TCP_CLOSE) => destroy(local, remote),
        Some(TCP_FIN_WAIT1 | TCP_CLOSING) => {
            tokio::task::spawn_local(async move {
                for wait in [200, 1000, 5000] {
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                    if destroy_one(local, remote).is_ok() {
                        return;
                    }
                }
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let l: SocketAddrV6 = "[fc00:4::2]:80".parse().unwrap();
        let r: SocketAddrV6 = "[fc00:1::1]:40000".parse().unwrap();
        let m = request(l, r, 7);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 72);
        assert_eq!(&m[24..28], &[0, 80, 0x9c, 0x40]);
        assert_eq!(&m[28..30], &[0xfc, 0x00]);
        assert_eq!(m[20], 1 << 6);
    }
}
