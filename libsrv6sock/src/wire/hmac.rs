//! The SRH HMAC TLV (RFC 8754 §2.1.2) as Linux writes and checks it (`net/ipv6/seg6_hmac.c`).
//!
//! ```text
//! |  Type = 5     |  Length = 38  |D|        Reserved             |
//! |                      HMAC Key ID (4 octets)                   |
//! |                      HMAC (32 octets)                         |
//! ```
//!
//! Linux looks for the TLV only when the SRH's H flag (`1 << 3`, [`super::srh::FLAG_HMAC`]) is set, and
//! only in the SRH's last 40 bytes: a TLV elsewhere, or without the flag, is not an HMAC TLV to it. It
//! computes HMAC(key, text) with [`text`]: source address, last entry, flags, key id and every segment,
//! the digest truncated (or zero-padded) to 32 bytes. [`find`] and [`text`] follow that, so an SRH that a
//! Linux host signed with `ip sr hmac` verifies here and the other way round. The hash itself is not in
//! this module (the wire layer has no crypto dependency).

use std::net::Ipv6Addr;

use super::srh::{Srh, FLAG_HMAC};
use super::tlv::TYPE_HMAC;
use super::Error;

/// Bytes of the digest field.
pub const DIGEST_LEN: usize = 32;
/// Bytes of the whole TLV (type, length, value).
pub const TLV_LEN: usize = 40;
/// The length byte Linux requires.
const LENGTH: u8 = (TLV_LEN - 2) as u8;

mod field {
    pub const TYPE: usize = 0;
    pub const LENGTH: usize = 1;
    pub const FLAGS: usize = 2;
    pub const KEY_ID: std::ops::Range<usize> = 4..8;
    pub const DIGEST: std::ops::Range<usize> = 8..40;
}

/// A view of an HMAC TLV over a byte buffer (starting at the TLV's type byte).
#[derive(Debug, Clone, Copy)]
pub struct HmacTlv<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HmacTlv<T> {
    /// Wrap a buffer after checking that it holds a type 5 TLV of length 38 (what Linux requires).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let data = buffer.as_ref();
        if data.len() < TLV_LEN {
            return Err(Error::Truncated { needed: TLV_LEN, available: data.len() });
        }
        if data[field::TYPE] != TYPE_HMAC || data[field::LENGTH] != LENGTH {
            return Err(Error::TlvValue {
                offset: 0,
                tlv_type: data[field::TYPE],
                reason: "not an HMAC TLV of length 38 (type 5, 32-byte digest)",
            });
        }
        Ok(HmacTlv { buffer })
    }

    /// The D flag: destination address verification disabled.
    pub fn d_flag(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & 0x80 != 0
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::KEY_ID];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The digest.
    pub fn digest(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DIGEST]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> HmacTlv<T> {
    /// Overwrite the digest.
    pub fn set_digest(&mut self, digest: &[u8; DIGEST_LEN]) {
        self.buffer.as_mut()[field::DIGEST].copy_from_slice(digest);
    }
}

/// An HMAC TLV, owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HmacRepr {
    /// The D flag.
    pub d_flag: bool,
    /// The key id.
    pub key_id: u32,
    /// The digest.
    pub digest: [u8; DIGEST_LEN],
}

impl HmacRepr {
    /// Parse a checked view.
    pub fn parse<T: AsRef<[u8]>>(tlv: &HmacTlv<T>) -> HmacRepr {
        let mut digest = [0; DIGEST_LEN];
        digest.copy_from_slice(tlv.digest());
        HmacRepr { d_flag: tlv.d_flag(), key_id: tlv.key_id(), digest }
    }

    /// Write the TLV at the start of `buf` (at least [`TLV_LEN`] bytes).
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let available = buf.len();
        let out = buf.get_mut(..TLV_LEN).ok_or(Error::BufferTooSmall { needed: TLV_LEN, available })?;
        out[field::TYPE] = TYPE_HMAC;
        out[field::LENGTH] = LENGTH;
        out[field::FLAGS] = if self.d_flag { 0x80 } else { 0 };
        out[field::FLAGS + 1] = 0;
        out[field::KEY_ID].copy_from_slice(&self.key_id.to_be_bytes());
        out[field::DIGEST].copy_from_slice(&self.digest);
        Ok(())
    }
}

/// The HMAC TLV of a checked SRH as Linux finds it: H flag set, the TLV in the header's last 40 bytes,
/// after the segment list. `None`: the SRH carries no HMAC (to Linux, and so here).
pub fn find<T: AsRef<[u8]>>(srh: &Srh<T>) -> Option<HmacTlv<&[u8]>> {
    let area = srh.tlv_bytes();
    if srh.flags() & FLAG_HMAC == 0 || area.len() < TLV_LEN {
        return None;
    }
    HmacTlv::new_checked(&area[area.len() - TLV_LEN..]).ok()
}

/// The text Linux authenticates (`seg6_hmac_compute`): the packet's source address, last entry, flags,
/// key id (big endian) and every segment, `[0]` (the final destination) first.
pub fn text<T: AsRef<[u8]>>(srh: &Srh<T>, source: Ipv6Addr, key_id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(22 + 16 * (srh.last_entry() as usize + 1));
    out.extend_from_slice(&source.octets());
    out.push(srh.last_entry());
    out.push(srh.flags());
    out.extend_from_slice(&key_id.to_be_bytes());
    for s in srh.segments() {
        out.extend_from_slice(&s.octets());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::srh::SrhRepr;
    use crate::wire::tlv::TlvRepr;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn signed_srh() -> Vec<u8> {
        let mut r = SrhRepr::for_path(a("fc00:4::2"), &[a("fc00:f1::1"), a("fc00:f2::1")]).unwrap();
        r.flags = FLAG_HMAC;
        r.tlvs.push(TlvRepr::ReturnPath(vec![a("fc00:f1::1")]));
        r.tlvs.push(TlvRepr::Hmac { d_flag: false, key_id: 7, digest: vec![0xab; DIGEST_LEN] });
        r.to_bytes().unwrap()
    }

    #[test]
    fn round_trip_and_found_where_linux_looks() {
        let bytes = signed_srh();
        let srh = Srh::new_checked(&bytes[..]).unwrap();
        let tlv = find(&srh).expect("HMAC TLV in the last 40 bytes");
        let repr = HmacRepr::parse(&tlv);
        assert_eq!(repr, HmacRepr { d_flag: false, key_id: 7, digest: [0xab; DIGEST_LEN] });
        let mut buf = [0u8; TLV_LEN];
        repr.emit(&mut buf).unwrap();
        assert_eq!(&buf[..], &bytes[bytes.len() - TLV_LEN..]);
        assert_eq!(HmacRepr::parse(&HmacTlv::new_checked(&buf[..]).unwrap()), repr);
        assert_eq!(repr.emit(&mut [0u8; 39]), Err(Error::BufferTooSmall { needed: 40, available: 39 }));
    }

    #[test]
    fn no_h_flag_or_misplaced_tlv_is_no_hmac() {
        let mut bytes = signed_srh();
        bytes[5] = 0;
        assert!(find(&Srh::new_checked(&bytes[..]).unwrap()).is_none());
        let mut r = SrhRepr::for_path(a("fc00:4::2"), &[a("fc00:f1::1")]).unwrap();
        r.flags = FLAG_HMAC;
        assert!(find(&Srh::new_checked(&r.to_bytes().unwrap()[..]).unwrap()).is_none());
        assert!(HmacTlv::new_checked(&[5u8, 30, 0][..]).is_err());
        assert!(HmacTlv::new_checked(&[4u8; 40][..]).is_err());
    }

    #[test]
    fn text_is_linux_layout() {
        let bytes = signed_srh();
        let srh = Srh::new_checked(&bytes[..]).unwrap();
        let t = text(&srh, a("fc00:1::1"), 7);
        assert_eq!(t.len(), 16 + 1 + 1 + 4 + 3 * 16);
        assert_eq!(&t[..16], &a("fc00:1::1").octets());
        assert_eq!(&t[16..22], &[2, FLAG_HMAC, 0, 0, 0, 7]);
        assert_eq!(&t[22..38], &a("fc00:4::2").octets());
        assert_eq!(&t[54..], &a("fc00:f1::1").octets());
    }
}
