//! The module ABI: a Rust mirror of `include/srv6pipes_module.h` (srv6pipes-module(3)).
//!
//! The layouts are asserted at compile time below, and `tests/abi_layout.rs` compiles a C program
//! against the header and compares every size and offset with these types, so the two cannot drift.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::fmt;
use std::mem::{align_of, offset_of, size_of};

use serde::{Deserialize, Serialize};

/// `SRV6PIPES_ABI_VERSION`: the ABI version this mirror implements.
pub const ABI_VERSION: u32 = 1;
/// `SRV6PIPES_MODULE_SYMBOL`: the symbol every module exports.
pub const MODULE_SYMBOL: &CStr = c"srv6pipes_module";

/// `SRV6PIPES_UP`: client → server, the direction of the SYN.
pub const UP: c_int = 0;
/// `SRV6PIPES_DOWN`: server → client.
pub const DOWN: c_int = 1;
/// `SRV6PIPES_DIR_UP`: `directions` bit of [`UP`].
pub const DIR_UP: u32 = 1 << UP;
/// `SRV6PIPES_DIR_DOWN`: `directions` bit of [`DOWN`].
pub const DIR_DOWN: u32 = 1 << DOWN;
/// `SRV6PIPES_DIR_BOTH`.
pub const DIR_BOTH: u32 = DIR_UP | DIR_DOWN;
/// `SRV6PIPES_EOF`: `process()` flag, the input is the last of its direction.
pub const FLAG_EOF: u32 = 1;
/// `SRV6PIPES_OK`: success; from `process()`, progress made (at EOF: everything flushed).
pub const OK: c_int = 0;
/// `SRV6PIPES_MORE`: from `process()`, the output buffer is full, call again.
pub const MORE: c_int = 1;
/// `SRV6PIPES_ERROR`: failure; the load fails, or the flow is reset.
pub const ERROR: c_int = -1;

/// A direction of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Client → server ([`UP`]).
    Up,
    /// Server → client ([`DOWN`]).
    Down,
}

impl Direction {
    /// Both directions, [`Direction::Up`] first.
    pub const BOTH: [Direction; 2] = [Direction::Up, Direction::Down];

    /// The C value ([`UP`] or [`DOWN`]).
    pub const fn to_c(self) -> c_int {
        match self {
            Direction::Up => UP,
            Direction::Down => DOWN,
        }
    }

    /// From the C value; `None` for anything but [`UP`] and [`DOWN`].
    pub const fn from_c(dir: c_int) -> Option<Direction> {
        match dir {
            UP => Some(Direction::Up),
            DOWN => Some(Direction::Down),
            _ => None,
        }
    }

    /// Its bit in `srv6pipes_func.directions`.
    pub const fn bit(self) -> u32 {
        1 << self.to_c()
    }

    /// Lower-case name, as in the control protocol.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `struct srv6pipes_flow`: what a function learns about a flow at spawn time. Addresses in network
/// byte order, ports in host byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    /// `sizeof(struct srv6pipes_flow)` as filled by the proxy.
    pub size: u32,
    /// Index of the worker thread running the flow.
    pub worker: u32,
    /// Unique per proxy process, as in `ctl flows`.
    pub flow_id: u64,
    /// Client address.
    pub client: [u8; 16],
    /// Final destination.
    pub server: [u8; 16],
    /// Client port.
    pub client_port: u16,
    /// Server port.
    pub server_port: u16,
    /// Reserved, 0.
    pub reserved: u32,
    /// The proxy's SID in the SRH.
    pub sid: [u8; 16],
    /// Function bits of the SID.
    pub function: u64,
    /// Argument bits of the SID.
    pub argument: u64,
}

/// `int (*init)(void)`.
pub type InitFn = unsafe extern "C" fn() -> c_int;
/// `int (*spawn)(const struct srv6pipes_flow *flow, uint64_t argument, void **state)`.
pub type SpawnFn = unsafe extern "C" fn(*const FlowInfo, u64, *mut *mut c_void) -> c_int;
/// `int (*process)(void *state, int dir, const uint8_t *in, size_t in_len, size_t *consumed,
/// uint8_t *out, size_t out_cap, size_t *produced, uint32_t flags)`.
pub type ProcessFn =
    unsafe extern "C" fn(*mut c_void, c_int, *const u8, usize, *mut usize, *mut u8, usize, *mut usize, u32) -> c_int;
/// `void (*despawn)(void *state)`.
pub type DespawnFn = unsafe extern "C" fn(*mut c_void);
/// `void (*deinit)(void)`.
pub type DeinitFn = unsafe extern "C" fn();

/// `struct srv6pipes_func`: one function of a module.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FuncDesc {
    /// Function number: the function bits of the SIDs selecting it.
    pub id: u64,
    /// NUL-terminated name.
    pub name: *const c_char,
    /// `DIR_*` bits: the directions `process` transforms.
    pub directions: u32,
    /// Reserved, 0.
    pub flags: u32,
    /// Once at load. Optional.
    pub init: Option<InitFn>,
    /// Once per flow. Optional.
    pub spawn: Option<SpawnFn>,
    /// The transform; may be `None` when `directions` is 0.
    pub process: Option<ProcessFn>,
    /// Once per spawned flow, at its end. Optional.
    pub despawn: Option<DespawnFn>,
    /// Once after unload, when no flow uses the module. Optional.
    pub deinit: Option<DeinitFn>,
}

/// `struct srv6pipes_module`: the descriptor a module exports as [`MODULE_SYMBOL`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleDesc {
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// Entries in `funcs`.
    pub nfuncs: u32,
    /// NUL-terminated module name.
    pub name: *const c_char,
    /// NUL-terminated free-form version, may be NULL.
    pub version: *const c_char,
    /// The functions (`all_funcs[]`).
    pub funcs: *const FuncDesc,
}

// SAFETY: a descriptor is never written after it is built; its pointers lead to read-only strings, an
// array of descriptors and functions that the ABI requires to be callable from any thread. Sharing
// references across threads is what a `static` descriptor (a Rust module's export) needs.
unsafe impl Sync for FuncDesc {}
// SAFETY: as for `FuncDesc`.
unsafe impl Sync for ModuleDesc {}

const _: () = {
    assert!(size_of::<FlowInfo>() == 88 && align_of::<FlowInfo>() == 8);
    assert!(offset_of!(FlowInfo, flow_id) == 8);
    assert!(offset_of!(FlowInfo, client) == 16 && offset_of!(FlowInfo, server) == 32);
    assert!(offset_of!(FlowInfo, client_port) == 48 && offset_of!(FlowInfo, server_port) == 50);
    assert!(offset_of!(FlowInfo, reserved) == 52 && offset_of!(FlowInfo, sid) == 56);
    assert!(offset_of!(FlowInfo, function) == 72 && offset_of!(FlowInfo, argument) == 80);
};

#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<FuncDesc>() == 64 && align_of::<FuncDesc>() == 8);
    assert!(offset_of!(FuncDesc, name) == 8 && offset_of!(FuncDesc, directions) == 16);
    assert!(offset_of!(FuncDesc, flags) == 20 && offset_of!(FuncDesc, init) == 24);
    assert!(offset_of!(FuncDesc, spawn) == 32 && offset_of!(FuncDesc, process) == 40);
    assert!(offset_of!(FuncDesc, despawn) == 48 && offset_of!(FuncDesc, deinit) == 56);
    assert!(size_of::<ModuleDesc>() == 32 && align_of::<ModuleDesc>() == 8);
    assert!(offset_of!(ModuleDesc, nfuncs) == 4 && offset_of!(ModuleDesc, name) == 8);
    assert!(offset_of!(ModuleDesc, version) == 16 && offset_of!(ModuleDesc, funcs) == 24);
    // Function pointers in `Option` stay one nullable pointer, as in C.
    assert!(size_of::<Option<ProcessFn>>() == 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_match_the_c_values() {
        for d in Direction::BOTH {
            assert_eq!(Direction::from_c(d.to_c()), Some(d));
            assert_eq!(d.bit() & DIR_BOTH, d.bit());
        }
        assert_eq!(Direction::from_c(2), None);
        assert_eq!(Direction::Down.to_string(), "down");
        assert_eq!(serde_json::to_string(&Direction::Up).unwrap(), "\"up\"");
    }
}
