//! SRv6 SIDs as LOC:FUNCT:ARG (RFC 8986 §3.1) with configurable widths.
//!
//! A proxy announces a locator prefix (default /80); the next 16 bits select the function and the 32 bits
//! after that are its argument (e.g. a key). The default layout matches the original SRv6Pipes prototype
//! (function = bytes 10–11, argument = bytes 12–15). Bits after the argument, if any, are zero.

use std::net::Ipv6Addr;

use super::prefix::{mask, Ipv6Prefix};
use super::Error;

/// Widths, in bits, of the locator, function and argument parts of a SID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SidLayout {
    locator_bits: u8,
    function_bits: u8,
    argument_bits: u8,
}

impl Default for SidLayout {
    /// 80-bit locator, 16-bit function, 32-bit argument.
    fn default() -> Self {
        SidLayout { locator_bits: 80, function_bits: 16, argument_bits: 32 }
    }
}

/// A SID split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid {
    /// The locator prefix.
    pub locator: Ipv6Prefix,
    /// The function number.
    pub function: u64,
    /// The argument.
    pub argument: u64,
}

impl SidLayout {
    /// A layout; function and argument may each be up to 64 bits and all three must fit 128 bits.
    pub fn new(locator_bits: u8, function_bits: u8, argument_bits: u8) -> Result<Self, Error> {
        if function_bits > 64 || argument_bits > 64 {
            return Err(Error::SidLayout(format!(
                "function ({function_bits} bits) and argument ({argument_bits} bits) must each be at most 64 bits"
            )));
        }
        let total = locator_bits as u32 + function_bits as u32 + argument_bits as u32;
        if total > 128 {
            return Err(Error::SidLayout(format!(
                "locator {locator_bits} + function {function_bits} + argument {argument_bits} = {total} bits, more than 128"
            )));
        }
        Ok(SidLayout { locator_bits, function_bits, argument_bits })
    }

    /// Locator width in bits.
    pub fn locator_bits(&self) -> u8 {
        self.locator_bits
    }

    /// Function width in bits.
    pub fn function_bits(&self) -> u8 {
        self.function_bits
    }

    /// Argument width in bits.
    pub fn argument_bits(&self) -> u8 {
        self.argument_bits
    }

    fn function_shift(&self) -> u32 {
        128 - self.locator_bits as u32 - self.function_bits as u32
    }

    fn argument_shift(&self) -> u32 {
        self.function_shift() - self.argument_bits as u32
    }

    /// Build the SID for `function` with `argument` under `locator` (whose length must be the layout's).
    pub fn build(&self, locator: Ipv6Prefix, function: u64, argument: u64) -> Result<Ipv6Addr, Error> {
        if locator.prefix_len() != self.locator_bits {
            return Err(Error::SidLayout(format!(
                "locator {locator} is not a /{} as the layout says",
                self.locator_bits
            )));
        }
        let check = |what: &str, v: u64, bits: u8| {
            if bits < 64 && v >> bits != 0 {
                Err(Error::SidLayout(format!("{what} {v} does not fit in {bits} bits")))
            } else {
                Ok(v as u128)
            }
        };
        let f = check("function", function, self.function_bits)?;
        let a = check("argument", argument, self.argument_bits)?;
        let shl = |v: u128, s: u32| v.checked_shl(s).unwrap_or(0);
        Ok(Ipv6Addr::from(u128::from(locator.addr()) | shl(f, self.function_shift()) | shl(a, self.argument_shift())))
    }

    /// Split a SID into locator, function and argument.
    pub fn split(&self, sid: Ipv6Addr) -> Sid {
        let v = u128::from(sid);
        let field = |shift: u32, bits: u8| (v.checked_shr(shift).unwrap_or(0) & !mask(128 - bits)) as u64;
        Sid {
            locator: Ipv6Prefix::clamped(sid, self.locator_bits),
            function: field(self.function_shift(), self.function_bits),
            argument: field(self.argument_shift(), self.argument_bits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layout_matches_prototype_bytes() {
        let l = SidLayout::default();
        let loc: Ipv6Prefix = "fc00:f1::/80".parse().unwrap();
        let sid = l.build(loc, 0x0102, 0x0a0b0c0d).unwrap();
        let o = sid.octets();
        assert_eq!(&o[10..12], &[1, 2]);
        assert_eq!(&o[12..16], &[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(l.split(sid), Sid { locator: loc, function: 0x0102, argument: 0x0a0b0c0d });
    }

    #[test]
    fn other_widths_and_errors() {
        let l = SidLayout::new(64, 8, 24).unwrap();
        let loc: Ipv6Prefix = "2001:db8:1:2::/64".parse().unwrap();
        let sid = l.build(loc, 0xff, 0x123456).unwrap();
        assert_eq!(sid, "2001:db8:1:2:ff12:3456::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(l.split(sid).argument, 0x123456);
        assert!(l.build(loc, 0x100, 0).is_err());
        assert!(SidLayout::new(80, 16, 33).is_err());
        assert!(SidLayout::new(0, 64, 64).is_ok());
    }
}
