//! SRv6 building blocks shared by every SRv6Pipes component, in layers (each one uses only those above it):
//!
//! * [`wire`]: the codecs (SRH, TLVs, SIDs, prefixes, path records, the compiled policy). Depends on nothing
//!   heavier than `thiserror`.
//! * [`policy`]: rules mapping a destination to a path, from the compiled policy, the command line or the
//!   environment (the TOML file is `srv6run`'s: the shim never parses TOML).
//! * [`reply`]: what a server replying along return-path TLVs accepts (`SRV6_REPLY*`).
//! * [`hmac_keys`]: HMAC key files (key id → secret), read by `srv6run --hmac-key` and the proxy's
//!   `--require-hmac`.
//! * [`elf`]: whether an executable has a program interpreter; the shim's marker section.
//! * [`attach`]: put an SRH on a socket (`IPV6_RTHDR`), read it back, read the SYN's SRH on a proxy socket.
//!
//! The crate has no features: `libsrv6sock.so` links it, and must be the same library whatever else a
//! workspace build compiles. Capture and decoding is `srv6pipes-capture`.

pub mod wire;

pub mod hmac_keys;

pub mod attach;
pub mod elf;
pub mod policy;
pub mod reply;
