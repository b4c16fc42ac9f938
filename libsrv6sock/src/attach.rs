//! Attach an SRH to a socket and read it back (docs/ARCHITECTURE.md §5).
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

/// Find the data of the control message `(level, ty)` in a control buffer (as `recvmsg(2)` or
/// `IPV6_2292PKTOPTIONS` fill it); `None` if absent or if the buffer is malformed.
///
/// The walk is the one of `CMSG_FIRSTHDR`/`CMSG_NXTHDR`/`CMSG_DATA`, with the platform's header size and
/// alignment taken from `CMSG_LEN`/`CMSG_SPACE`; headers are read by copy, so `control` needs no alignment.
pub fn find_cmsg(control: &[u8], level: libc::c_int, ty: libc::c_int) -> Option<std::ops::Range<usize>> {
    // SAFETY: CMSG_LEN and CMSG_SPACE are pure arithmetic on their argument.
    let (data_offset, space_of_header) = unsafe { (libc::CMSG_LEN(0) as usize, libc::CMSG_SPACE(0) as usize) };
    // CMSG_ALIGN(n), which libc does not export: CMSG_SPACE(n) is CMSG_ALIGN(n) + CMSG_ALIGN(header).
    let align = |n: usize| -> Option<usize> {
        // SAFETY: as above.
        Some(unsafe { libc::CMSG_SPACE(u32::try_from(n).ok()?) } as usize - space_of_header)
    };
    let header_len = std::mem::size_of::<libc::cmsghdr>();
    let mut pos = 0usize;
    while let Some(header) = control.get(pos..pos.checked_add(header_len)?) {
        // SAFETY: `header` holds size_of::<cmsghdr>() bytes; read_unaligned copies them without alignment needs,
        // and every bit pattern is a valid cmsghdr (integers only).
        let cmsg = unsafe { std::ptr::read_unaligned(header.as_ptr().cast::<libc::cmsghdr>()) };
        // size_t on glibc, u32 on musl.
        let len = cmsg.cmsg_len as usize;
        let end = pos.checked_add(len)?;
        if len < data_offset || end > control.len() {
            return None;
        }
        if cmsg.cmsg_level == level && cmsg.cmsg_type == ty {
            return Some(pos + data_offset..end);
        }
        pos = pos.checked_add(align(len)?)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control buffer laid out by the C library's own macros: a 3-byte message, then an `IPV6_RTHDR`.
    #[test]
    fn finds_what_the_cmsg_macros_laid_out() {
        let rthdr = [0xabu8; 24];
        // SAFETY: CMSG_SPACE is arithmetic.
        let space = unsafe { libc::CMSG_SPACE(3) + libc::CMSG_SPACE(rthdr.len() as u32) } as usize;
        // u64 elements: aligned for cmsghdr, as the macros require.
        let mut storage = vec![0u64; space.div_ceil(8)];
        let control = storage.as_mut_ptr().cast::<u8>();
        // SAFETY: a zeroed msghdr is valid; only its control fields are used.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_control = control.cast();
        msg.msg_controllen = space as _;
        // SAFETY: the macros walk `storage` (`space` bytes, aligned) through `msg`; each message is written
        // inside the space CMSG_SPACE reserved for it.
        let (first_data, rthdr_data) = unsafe {
            let first = libc::CMSG_FIRSTHDR(&msg);
            (*first).cmsg_level = libc::SOL_SOCKET;
            (*first).cmsg_type = 99;
            (*first).cmsg_len = libc::CMSG_LEN(3) as _;
            let second = libc::CMSG_NXTHDR(&msg, first);
            assert!(!second.is_null(), "room for the second message");
            (*second).cmsg_level = libc::IPPROTO_IPV6;
            (*second).cmsg_type = IPV6_RTHDR;
            (*second).cmsg_len = libc::CMSG_LEN(rthdr.len() as u32) as _;
            let data = libc::CMSG_DATA(second);
            std::ptr::copy_nonoverlapping(rthdr.as_ptr(), data, rthdr.len());
            (libc::CMSG_DATA(first).offset_from(control) as usize, data.offset_from(control) as usize)
        };
        // SAFETY: `storage` holds `space` initialised bytes.
        let bytes = unsafe { std::slice::from_raw_parts(control, space) }.to_vec();
        let found = find_cmsg(&bytes, libc::IPPROTO_IPV6, IPV6_RTHDR).expect("IPV6_RTHDR found");
        assert_eq!(found, rthdr_data..rthdr_data + rthdr.len());
        assert_eq!(&bytes[found], &rthdr);
        assert_eq!(find_cmsg(&bytes, libc::SOL_SOCKET, 99), Some(first_data..first_data + 3));
        assert_eq!(find_cmsg(&bytes, libc::IPPROTO_IPV6, 1), None);
        // Same bytes at an odd address: found by copy, no alignment needed.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(find_cmsg(&shifted[1..], libc::IPPROTO_IPV6, IPV6_RTHDR), Some(rthdr_data..rthdr_data + 24));
        // Cut inside the second message: malformed, not found, no panic.
        assert_eq!(find_cmsg(&bytes[..rthdr_data + 4], libc::IPPROTO_IPV6, IPV6_RTHDR), None);
    }
}
