//! SRH TLVs (RFC 8754 §2.1): a zero-copy iterator over the TLV area and an owned representation.
//!
//! Padding (Pad1, PadN) is parsed and skipped by [`TlvRepr::parse_all`]; [`emit_padding`] writes the padding
//! that Linux accepts and RFC 8754 allows: never a trailing Pad1 (Linux rejects it), PadN values of at most 5
//! bytes, so one missing byte becomes two PadNs (7 + 2 bytes).

use std::net::Ipv6Addr;

use super::Error;

/// TLV type of Pad1 (a single zero byte, no length).
pub const TYPE_PAD1: u8 = 0;
/// TLV type of PadN.
pub const TYPE_PADN: u8 = 4;
/// TLV type of the HMAC TLV.
pub const TYPE_HMAC: u8 = 5;
/// TLV type of the SRv6Pipes return-path TLV (experimental range, RFC 8754 §8.2; does not change en route).
pub const TYPE_RETURN_PATH: u8 = 124;

/// Largest PadN value RFC 8754 allows.
const PADN_MAX_VALUE: usize = 5;
/// Bytes before the addresses in a return-path TLV value (reserved, zero on send, ignored on receipt).
const RETURN_PATH_RESERVED: usize = 2;
/// Bytes before the digest in an HMAC TLV value: D flag + reserved (2), key id (4).
const HMAC_FIXED: usize = 6;

/// One TLV as it sits in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// Offset of the type byte from the start of the TLV area.
    pub offset: usize,
    /// TLV type.
    pub tlv_type: u8,
    /// The value (empty for Pad1).
    pub value: &'a [u8],
}

impl Tlv<'_> {
    /// Bytes this TLV occupies on the wire.
    pub fn wire_len(&self) -> usize {
        if self.tlv_type == TYPE_PAD1 {
            1
        } else {
            2 + self.value.len()
        }
    }
}

/// Iterator over the TLVs of a TLV area; yields an error (and then stops) on a TLV that overruns the area.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    area: &'a [u8],
    pos: usize,
    /// Offset of the TLV area inside the SRH, so errors name SRH offsets.
    base: usize,
    failed: bool,
}

impl<'a> TlvIter<'a> {
    /// Iterate over `area`, which starts at byte `base` of its SRH.
    pub fn new(area: &'a [u8], base: usize) -> Self {
        TlvIter { area, pos: 0, base, failed: false }
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.area.len() {
            return None;
        }
        let offset = self.pos;
        let tlv_type = self.area[offset];
        if tlv_type == TYPE_PAD1 {
            self.pos += 1;
            return Some(Ok(Tlv { offset, tlv_type, value: &[] }));
        }
        let Some(&len) = self.area.get(offset + 1) else {
            self.failed = true;
            return Some(Err(Error::TlvTruncated { offset: self.base.saturating_add(offset) }));
        };
        let end = offset + 2 + len as usize;
        if end > self.area.len() {
            self.failed = true;
            return Some(Err(Error::TlvOverrun {
                offset: self.base.saturating_add(offset),
                tlv_type,
                length: len as usize,
                end: self.base.saturating_add(self.area.len()),
            }));
        }
        self.pos = end;
        Some(Ok(Tlv { offset, tlv_type, value: &self.area[offset + 2..end] }))
    }
}

/// An owned, validated TLV.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TlvRepr {
    /// HMAC TLV (type 5): D flag, key id, digest (RFC 8754 §2.1.2).
    Hmac {
        /// The D flag: destination address verification disabled.
        d_flag: bool,
        /// HMAC key id.
        key_id: u32,
        /// The digest (up to 32 bytes, a multiple of 8 on the wire).
        digest: Vec<u8>,
    },
    /// SRv6Pipes return path (type 124): the waypoints a reply traverses back to the client, in SRH order
    /// (the last waypoint before the client first). The client itself is not listed: the replying kernel
    /// writes the peer address into `segments[0]`.
    ReturnPath(Vec<Ipv6Addr>),
    /// Any other TLV, kept as it came.
    Unknown {
        /// TLV type.
        tlv_type: u8,
        /// Raw value.
        value: Vec<u8>,
    },
}

impl TlvRepr {
    /// Parse one non-padding TLV view. `base` is the offset of the TLV area in the SRH (for error messages).
    pub fn parse(tlv: &Tlv<'_>, base: usize) -> Result<Option<TlvRepr>, Error> {
        let offset = base.saturating_add(tlv.offset);
        let bad = |reason| Error::TlvValue { offset, tlv_type: tlv.tlv_type, reason };
        Ok(Some(match tlv.tlv_type {
            TYPE_PAD1 | TYPE_PADN => {
                if tlv.value.len() > PADN_MAX_VALUE {
                    return Err(bad("PadN longer than 5 bytes (RFC 8754 §2.1.1.2)"));
                }
                return Ok(None);
            }
            TYPE_HMAC => {
                if tlv.value.len() < HMAC_FIXED {
                    return Err(bad("HMAC TLV shorter than its 6 fixed bytes"));
                }
                TlvRepr::Hmac {
                    d_flag: tlv.value[0] & 0x80 != 0,
                    key_id: u32::from_be_bytes([tlv.value[2], tlv.value[3], tlv.value[4], tlv.value[5]]),
                    digest: tlv.value[HMAC_FIXED..].to_vec(),
                }
            }
            TYPE_RETURN_PATH => {
                let addrs = tlv
                    .value
                    .get(RETURN_PATH_RESERVED..)
                    .filter(|a| a.len() % 16 == 0)
                    .ok_or_else(|| bad("return-path TLV value is not 2 reserved bytes plus 16-byte addresses"))?;
                TlvRepr::ReturnPath(
                    addrs
                        .chunks_exact(16)
                        .map(|c| Ipv6Addr::from(<[u8; 16]>::try_from(c).unwrap_or_default()))
                        .collect(),
                )
            }
            tlv_type => TlvRepr::Unknown { tlv_type, value: tlv.value.to_vec() },
        }))
    }

    /// Parse a whole TLV area, skipping padding. `base` is the area's offset in the SRH.
    pub fn parse_all(area: &[u8], base: usize) -> Result<Vec<TlvRepr>, Error> {
        let mut out = Vec::new();
        for tlv in TlvIter::new(area, base) {
            if let Some(repr) = TlvRepr::parse(&tlv?, base)? {
                out.push(repr);
            }
        }
        Ok(out)
    }

    /// The TLV type byte.
    pub fn tlv_type(&self) -> u8 {
        match self {
            TlvRepr::Hmac { .. } => TYPE_HMAC,
            TlvRepr::ReturnPath(_) => TYPE_RETURN_PATH,
            TlvRepr::Unknown { tlv_type, .. } => *tlv_type,
        }
    }

    fn value_len(&self) -> usize {
        match self {
            TlvRepr::Hmac { digest, .. } => HMAC_FIXED + digest.len(),
            TlvRepr::ReturnPath(addrs) => RETURN_PATH_RESERVED + 16 * addrs.len(),
            TlvRepr::Unknown { value, .. } => value.len(),
        }
    }

    /// Bytes on the wire (type, length, value); an error if the value does not fit the length byte.
    pub fn wire_len(&self) -> Result<usize, Error> {
        let length = self.value_len();
        if length > u8::MAX as usize {
            return Err(Error::TlvTooLong { tlv_type: self.tlv_type(), length });
        }
        Ok(2 + length)
    }

    /// Write the TLV at the start of `buf` (which must hold [`Self::wire_len`] bytes); returns bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.wire_len()?;
        let available = buf.len();
        let out = buf.get_mut(..len).ok_or(Error::BufferTooSmall { needed: len, available })?;
        out[0] = self.tlv_type();
        out[1] = (len - 2) as u8;
        let value = &mut out[2..];
        match self {
            TlvRepr::Hmac { d_flag, key_id, digest } => {
                value[0] = if *d_flag { 0x80 } else { 0 };
                value[1] = 0;
                value[2..6].copy_from_slice(&key_id.to_be_bytes());
                value[HMAC_FIXED..].copy_from_slice(digest);
            }
            TlvRepr::ReturnPath(addrs) => {
                value[..RETURN_PATH_RESERVED].fill(0);
                for (chunk, addr) in value[RETURN_PATH_RESERVED..].chunks_exact_mut(16).zip(addrs) {
                    chunk.copy_from_slice(&addr.octets());
                }
            }
            TlvRepr::Unknown { value: v, .. } => value.copy_from_slice(v),
        }
        Ok(len)
    }
}

/// Bytes of padding needed after `len` bytes to reach a multiple of 8 (0, or 2 to 9: never 1).
pub fn padding_len(len: usize) -> usize {
    match (8 - len % 8) % 8 {
        1 => 9,
        n => n,
    }
}

/// Write `n` bytes of PadN padding (`n` from [`padding_len`]) at the start of `buf`. `n` = 1 is an error
/// ([`Error::PaddingLength`]): that byte could only be a Pad1, which Linux rejects.
pub fn emit_padding(buf: &mut [u8], n: usize) -> Result<(), Error> {
    if n == 1 {
        return Err(Error::PaddingLength);
    }
    let available = buf.len();
    let out = buf.get_mut(..n).ok_or(Error::BufferTooSmall { needed: n, available })?;
    out.fill(0);
    let mut pos = 0;
    while pos < n {
        let chunk = (n - pos).min(2 + PADN_MAX_VALUE);
        // Leave at least 2 bytes for the last PadN: a single trailing byte could only be a Pad1.
        let chunk = if n - pos - chunk == 1 { chunk - 1 } else { chunk };
        out[pos] = TYPE_PADN;
        out[pos + 1] = (chunk - 2) as u8;
        pos += chunk;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_never_uses_pad1_and_respects_padn_max() {
        for len in 0..64 {
            let n = padding_len(len);
            assert_eq!((len + n) % 8, 0);
            let mut buf = [0xffu8; 16];
            emit_padding(&mut buf, n).unwrap();
            let tlvs: Vec<_> = TlvIter::new(&buf[..n], 0).collect::<Result<_, _>>().unwrap();
            assert!(tlvs.iter().all(|t| t.tlv_type == TYPE_PADN && t.value.len() <= PADN_MAX_VALUE));
            assert_eq!(tlvs.iter().map(Tlv::wire_len).sum::<usize>(), n);
        }
    }

    #[test]
    fn one_byte_of_padding_is_an_error() {
        let mut buf = [0xffu8; 4];
        assert_eq!(emit_padding(&mut buf, 1), Err(Error::PaddingLength));
        assert_eq!(buf, [0xff; 4], "nothing written");
        assert_eq!(emit_padding(&mut buf, 5), Err(Error::BufferTooSmall { needed: 5, available: 4 }));
    }

    #[test]
    fn return_path_with_odd_length_is_rejected_with_offset() {
        let area = [TYPE_RETURN_PATH, 5, 0, 0, 1, 2, 3, 4, 0, 0];
        let err = TlvRepr::parse_all(&area[..7], 40).unwrap_err();
        assert!(matches!(err, Error::TlvValue { offset: 40, tlv_type: 124, .. }), "{err}");
    }

    #[test]
    fn overrun_names_offset() {
        let area = [4, 0, 9, 10, 1, 2];
        let err = TlvRepr::parse_all(&area, 24).unwrap_err();
        assert_eq!(err, Error::TlvOverrun { offset: 26, tlv_type: 9, length: 10, end: 30 });
    }

    #[test]
    fn hmac_round_trip() {
        let t = TlvRepr::Hmac { d_flag: true, key_id: 0xdead_beef, digest: vec![7; 32] };
        let mut buf = [0u8; 40];
        let n = t.emit(&mut buf).unwrap();
        assert_eq!(n, 40);
        assert_eq!(TlvRepr::parse_all(&buf, 0).unwrap(), vec![t]);
    }
}
