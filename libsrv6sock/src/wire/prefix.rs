//! IPv6 prefixes (`fc00:f1::/64`), as used by policies, SID locators and proxy function prefixes.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// An IPv6 prefix; the address is stored with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Prefix {
    addr: Ipv6Addr,
    len: u8,
}

/// Why a prefix string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The address part is not an IPv6 address.
    #[error("{0:?} is not an IPv6 address")]
    Address(String),
    /// The length part is not a number from 0 to 128.
    #[error("prefix length {0:?} is not a number from 0 to 128")]
    Length(String),
}

impl Ipv6Prefix {
    /// The prefix of length `len` (at most 128) containing `addr`.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 128 {
            return Err(PrefixError::Length(len.to_string()));
        }
        Ok(Ipv6Prefix { addr: Ipv6Addr::from(u128::from(addr) & mask(len)), len })
    }

    /// The prefix of length `len` containing `addr`, a length over 128 taken as 128 (for lengths already
    /// checked, such as a SID layout's).
    pub(crate) fn clamped(addr: Ipv6Addr, len: u8) -> Self {
        let len = len.min(128);
        Ipv6Prefix { addr: Ipv6Addr::from(u128::from(addr) & mask(len)), len }
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `addr` lies inside the prefix.
    pub fn contains(&self, addr: Ipv6Addr) -> bool {
        u128::from(addr) & mask(self.len) == u128::from(self.addr)
    }
}

/// The netmask of a prefix length as a 128-bit integer.
pub(crate) fn mask(len: u8) -> u128 {
    match len {
        0 => 0,
        l => u128::MAX << (128 - l.min(128) as u32),
    }
}

impl FromStr for Ipv6Prefix {
    type Err = PrefixError;

    /// `ADDR/LEN`, or a bare address (a /128).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s.split_once('/').unwrap_or((s, "128"));
        let addr: Ipv6Addr = a.trim().parse().map_err(|_| PrefixError::Address(a.to_string()))?;
        let len: u8 = l.trim().parse().ok().filter(|l| *l <= 128).ok_or_else(|| PrefixError::Length(l.to_string()))?;
        Ipv6Prefix::new(addr, len)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contains() {
        let p: Ipv6Prefix = "fc00:f1::5/64".parse().unwrap();
        assert_eq!(p.to_string(), "fc00:f1::/64");
        assert!(p.contains("fc00:f1::1234".parse().unwrap()));
        assert!(!p.contains("fc00:f2::1".parse().unwrap()));
        assert!("::/0".parse::<Ipv6Prefix>().unwrap().contains("2001:db8::1".parse().unwrap()));
        assert_eq!("fc00::1".parse::<Ipv6Prefix>().unwrap().prefix_len(), 128);
        assert!(matches!("fc00::/129".parse::<Ipv6Prefix>(), Err(PrefixError::Length(_))));
        assert!(matches!("fc00:::/64".parse::<Ipv6Prefix>(), Err(PrefixError::Address(_))));
    }
}
