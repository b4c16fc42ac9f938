//! The wire layer: SRv6 codecs with no dependency heavier than `thiserror` (and `serde`, optionally, for
//! reading prefixes from configuration files).
//!
//! Every codec follows smoltcp's `wire` discipline: a zero-copy checked view over a byte slice plus an owned,
//! validated representation whose `parse`/`emit` round-trip. Parsers never panic: malformed input yields a
//! typed [`Error`] naming what was wrong and at which offset.
//!
//! * [`srh`]: the Segment Routing Header (RFC 8754): [`srh::Srh`] (view) and [`srh::SrhRepr`] (owned).
//! * [`tlv`]: SRH TLVs: Pad1, PadN, HMAC, the SRv6Pipes return-path TLV (type 124) and unknown ones (kept).
//! * [`hmac`]: the HMAC TLV as Linux places, finds and authenticates it (`ip sr hmac`).
//! * [`reply`]: the SRH of a reply, built from a received SRH's return-path TLV without allocating.
//! * [`sid`]: SID layout LOC:FUNCT:ARG (RFC 8986) with configurable widths.
//! * [`prefix`]: IPv6 prefixes (locators, policy destinations).
//! * [`agent`]: the messages between the shim and the resolver agent.
//! * [`path`]: path records served by DNS (type 65300, SRN's 65280; `srv6-path(5)`).

pub mod agent;
pub mod hmac;
pub mod path;
pub mod prefix;
pub mod reply;
pub mod sid;
pub mod srh;
pub mod tlv;

mod error;
pub use error::{Error, WaypointFault};
