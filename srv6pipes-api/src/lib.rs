//! What `srv6pipes-proxy` shares with its clients and its modules, in one light crate (no async runtime):
//!
//! * [`control`]: the typed control protocol (one JSON object per line over a Unix stream socket), used
//!   by the proxy's server, its `ctl` client, the tests, the benchmark and monitors.
//! * [`abi`]: the `#[repr(C)]` mirror of `include/srv6pipes_module.h`, the module ABI of
//!   srv6pipes-module(3), checked against the header by this crate's tests.
//! * [`function`]: a safe trait for writing a function in Rust, and [`srv6pipes_module!`], which exports
//!   functions implementing it as a module (a `cdylib`).

pub mod abi;
pub mod control;
pub mod function;

/// Path of the C header of the module ABI in the source tree.
pub const HEADER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include/srv6pipes_module.h");
