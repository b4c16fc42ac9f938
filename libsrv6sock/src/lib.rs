//! SRv6 building blocks shared by every SRv6Pipes component, in layers (each one uses only those above it):
//!
//! * [`wire`]: the codecs (SRH, TLVs, SIDs, prefixes). Depends on nothing heavier than `thiserror`; build
//!   with `default-features = false` to get only this layer.
//! * [`policy`] (feature `policy`, default): rules mapping a destination to a path, read from TOML, the
//!   command line or the environment.
//! * [`reply`] (feature `policy`): what a server replying along return-path TLVs accepts (`SRV6_REPLY*`).
//! * [`hmac_keys`]: HMAC key files (key id → secret), read by `srv6run --hmac-key` and the proxy's
//!   `--require-hmac`.
//! * [`attach`] (feature `attach`, default): put an SRH on a socket (`IPV6_RTHDR`), read it back, read the
//!   SYN's SRH on a proxy socket.
//! * [`capture`] (feature `capture`): read pcap files and live interfaces and decode Ethernet/IPv6/TCP with
//!   `etherparse` and the routing header with [`wire`]; used by the tests and `srv6top`.

pub mod wire;

pub mod hmac_keys;

#[cfg(feature = "attach")]
pub mod attach;
#[cfg(feature = "capture")]
pub mod capture;
#[cfg(feature = "policy")]
pub mod policy;
#[cfg(feature = "policy")]
pub mod reply;
