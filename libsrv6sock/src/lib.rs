//! SRv6 building blocks shared by every SRv6Pipes component.
//!
//! * [`srh`]: the Segment Routing Header (RFC 8754): a zero-copy checked view ([`srh::Srh`]) and an owned,
//!   validated representation ([`srh::SrhRepr`]) whose `parse`/`emit` round-trip.
//! * [`tlv`]: SRH TLVs: Pad1, PadN, HMAC, the SRv6Pipes return-path TLV (type 124) and unknown ones (kept).
//! * [`sid`]: SID layout LOC:FUNCT:ARG (RFC 8986) with configurable widths.
//! * [`policy`]: rules mapping a destination to a path, read from TOML, the command line or the environment.
//! * [`attach`]: put an SRH on a socket (`IPV6_RTHDR`), read it back, read the SYN's SRH on a proxy socket.
//!
//! Parsers never panic: malformed input yields a typed [`Error`] naming what was wrong and at which offset.

pub mod attach;
pub mod policy;
pub mod prefix;
pub mod sid;
pub mod srh;
pub mod tlv;

mod error;
pub use error::Error;
