//! Attach an SRH to a socket and read it back (DESIGN §4).
//!
//! These calls allocate nothing, so the `LD_PRELOAD` shim can use them inside its hooks.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `IPV6_RTHDR` (Linux): the routing header a socket sends with.
pub const IPV6_RTHDR: libc::c_int = 57;
/// `IPV6_RECVRTHDR`: latch the routing header of received packets (a proxy listener sets it).
pub const IPV6_RECVRTHDR: libc::c_int = 56;
/// `IPV6_TRANSPARENT`: bind to and accept for addresses that are not local (a transparent proxy's sockets).
pub const IPV6_TRANSPARENT: libc::c_int = 75;
/// `IPV6_2292PKTOPTIONS`: read the latched options (the SYN's SRH) on an accepted socket.
pub const IPV6_2292PKTOPTIONS: libc::c_int = 6;

fn setsockopt_bytes(fd: BorrowedFd<'_>, opt: libc::c_int, value: &[u8]) -> io::Result<()> {
    // SAFETY: `value` is a live slice; the kernel reads at most `value.len()` bytes from it.
    let rc = unsafe {
        libc::setsockopt(fd.as_raw_fd(), libc::IPPROTO_IPV6, opt, value.as_ptr().cast(), value.len() as libc::socklen_t)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn getsockopt_bytes(fd: BorrowedFd<'_>, opt: libc::c_int, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf` and stores the length it wrote in `len`.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::IPPROTO_IPV6, opt, buf.as_mut_ptr().cast(), &mut len) };
    if rc == 0 {
        Ok(len as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Make `fd` send every packet with the SRH `srh` (bytes as emitted by [`crate::wire::srh::SrhRepr::emit`]).
/// Set it before `connect()` so the SYN carries it; Linux then rewrites `segments[0]` with the peer address.
pub fn set_srh(fd: BorrowedFd<'_>, srh: &[u8]) -> io::Result<()> {
    setsockopt_bytes(fd, IPV6_RTHDR, srh)
}

/// Remove the SRH from `fd`.
pub fn clear_srh(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_bytes(fd, IPV6_RTHDR, &[])
}

/// Copy the SRH set on `fd` into `buf` (2048 bytes hold any SRH); returns its length, 0 if none.
pub fn get_srh(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    getsockopt_bytes(fd, IPV6_RTHDR, buf)
}

/// On a listener: latch the routing header of incoming SYNs so [`syn_srh`] can read it after `accept()`.
pub fn enable_syn_srh(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_bytes(fd, IPV6_RECVRTHDR, &1i32.to_ne_bytes())
}

/// Make `fd` transparent (`IPV6_TRANSPARENT`, needs CAP_NET_ADMIN): a proxy's listener receives flows for
/// other hosts' addresses, and its outbound sockets bind to the client's address.
pub fn set_transparent(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_bytes(fd, IPV6_TRANSPARENT, &1i32.to_ne_bytes())
}

/// On an accepted socket whose listener had [`enable_syn_srh`]: the routing header of the SYN, copied into
/// `buf` (give it 2048 + 64 bytes). Returns the header's byte range in `buf`, or `None` if the SYN had none.
/// Read it right after `accept()`: a later packet with options replaces it.
pub fn syn_srh(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<std::ops::Range<usize>>> {
    let len = getsockopt_bytes(fd, IPV6_2292PKTOPTIONS, buf)?;
    Ok(find_cmsg(&buf[..len], libc::IPPROTO_IPV6, IPV6_RTHDR))
}

/// Find the data of the control message `(level, ty)` in a control buffer, by bytes (no alignment needed).
pub fn find_cmsg(control: &[u8], level: libc::c_int, ty: libc::c_int) -> Option<std::ops::Range<usize>> {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    const ALIGN: usize = std::mem::size_of::<usize>();
    let mut pos = 0;
    while pos + HDR <= control.len() {
        let word = |at: usize, n: usize| control.get(pos + at..pos + at + n);
        let cmsg_len = usize::from_ne_bytes(word(0, 8)?.try_into().ok()?);
        let cmsg_level = i32::from_ne_bytes(word(8, 4)?.try_into().ok()?);
        let cmsg_type = i32::from_ne_bytes(word(12, 4)?.try_into().ok()?);
        if cmsg_len < HDR || pos + cmsg_len > control.len() {
            return None;
        }
        if cmsg_level == level && cmsg_type == ty {
            return Some(pos + HDR..pos + cmsg_len);
        }
        pos += cmsg_len.div_ceil(ALIGN) * ALIGN;
    }
    None
}
