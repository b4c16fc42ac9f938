//! Path lookups for SRv6Pipes programs: a name's IPv6 addresses and its path records (`srv6-path(5)`),
//! asked with hickory-resolver, and the resolver agent that answers `libsrv6sock.so` for programs run by
//! `srv6run`.
//!
//! * [`lookup`]: [`lookup::PathLookup`] asks AAAA and the path types (65300, SRN's 65280) in parallel and
//!   decodes the records.
//! * [`agent`]: the agent's server side: a Unix stream socket answering name queries with the addresses
//!   and pre-built SRHs ([`libsrv6sock::wire::agent`] is the message format).

pub mod agent;
pub mod lookup;
