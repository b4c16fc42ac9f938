//! Built-in module `builtin`, written against the same C ABI as loadable modules:
//!
//! | id | name | what |
//! |---|---|---|
//! | 1 | `copy` | relays both directions unchanged (no `process`: the proxy splices) |
//! | 2 | `xor`  | XORs every byte of both directions with the argument's low byte, `passes` times (argument bits 8–15, 0 = 1) |
//!
//! The xor function is the paper's CPU benchmark (§V-C): each pass touches every byte again, so the cost
//! grows with the number of passes; an even number of passes leaves the stream unchanged.

use std::ffi::{c_int, c_void};

use crate::module::{FlowInfoC, FuncC, ModuleC, ABI_VERSION, DIR_DOWN, DIR_UP, ERROR, MORE, OK};

/// Function number of `copy`.
pub const COPY_ID: u64 = 1;
/// Function number of `xor`.
pub const XOR_ID: u64 = 2;

/// A module descriptor with the storage it points to.
pub struct Descriptor {
    pub module: ModuleC,
    _funcs: Box<[FuncC]>,
}

/// The built-in modules.
pub fn descriptors() -> Vec<Descriptor> {
    let funcs: Box<[FuncC]> = Box::new([
        FuncC {
            id: COPY_ID,
            name: c"copy".as_ptr(),
            directions: 0,
            flags: 0,
            init: None,
            spawn: None,
            process: None,
            despawn: None,
            deinit: None,
        },
        FuncC {
            id: XOR_ID,
            name: c"xor".as_ptr(),
            directions: DIR_UP | DIR_DOWN,
            flags: 0,
            init: None,
            spawn: Some(xor_spawn),
            process: Some(xor_process),
            despawn: Some(xor_despawn),
            deinit: None,
        },
    ]);
    let module = ModuleC {
        abi_version: ABI_VERSION,
        nfuncs: funcs.len() as u32,
        name: c"builtin".as_ptr(),
        version: c"1".as_ptr(),
        funcs: funcs.as_ptr(),
    };
    vec![Descriptor { module, _funcs: funcs }]
}

/// Per-flow state of `xor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Xor {
    pub key: u8,
    pub passes: u32,
}

impl Xor {
    /// Key = argument bits 0–7, passes = bits 8–15 (0 means 1).
    pub fn from_argument(arg: u64) -> Xor {
        Xor { key: (arg & 0xff) as u8, passes: (((arg >> 8) & 0xff) as u32).max(1) }
    }

    /// XOR `input` into `out` (same length) `passes` times.
    pub fn apply(&self, input: &[u8], out: &mut [u8]) {
        let k = self.key;
        for (o, i) in out.iter_mut().zip(input) {
            *o = *i ^ k;
        }
        for _ in 1..self.passes {
            // Keep the optimizer from folding passes together: the benchmark wants each pass done.
            let out = std::hint::black_box(&mut *out);
            for o in out.iter_mut() {
                *o ^= k;
            }
        }
    }
}

unsafe extern "C" fn xor_spawn(_flow: *const FlowInfoC, argument: u64, state: *mut *mut c_void) -> c_int {
    if state.is_null() {
        return ERROR;
    }
    let st = Box::new(Xor::from_argument(argument));
    // SAFETY: `state` is the proxy's valid out-pointer (checked non-NULL).
    unsafe { *state = Box::into_raw(st).cast() };
    OK
}

unsafe extern "C" fn xor_process(
    state: *mut c_void,
    _dir: c_int,
    input: *const u8,
    in_len: usize,
    consumed: *mut usize,
    out: *mut u8,
    out_cap: usize,
    produced: *mut usize,
    _flags: u32,
) -> c_int {
    if state.is_null() || consumed.is_null() || produced.is_null() || (in_len > 0 && (input.is_null() || out.is_null()))
    {
        return ERROR;
    }
    // SAFETY: `state` is the Box made by xor_spawn for this flow.
    let st = unsafe { &*(state as *const Xor) };
    let n = in_len.min(out_cap);
    if n > 0 {
        // SAFETY: the proxy passes live, non-overlapping buffers of `in_len` and `out_cap` bytes.
        let (i, o) = unsafe { (std::slice::from_raw_parts(input, n), std::slice::from_raw_parts_mut(out, n)) };
        st.apply(i, o);
    }
    // SAFETY: valid out-pointers (checked non-NULL).
    unsafe {
        *consumed = n;
        *produced = n;
    }
    if n < in_len {
        MORE
    } else {
        OK
    }
}

unsafe extern "C" fn xor_despawn(state: *mut c_void) {
    if !state.is_null() {
        // SAFETY: the Box made by xor_spawn, freed once.
        drop(unsafe { Box::from_raw(state as *mut Xor) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_argument_layout_and_passes() {
        assert_eq!(Xor::from_argument(0x5a), Xor { key: 0x5a, passes: 1 });
        assert_eq!(Xor::from_argument(0x0004_035a), Xor { key: 0x5a, passes: 3 });
        let x = Xor { key: 0x5a, passes: 2 };
        let mut out = [0u8; 4];
        x.apply(b"GET ", &mut out);
        assert_eq!(&out, b"GET ");
        Xor { key: 0x5a, passes: 1 }.apply(b"GET ", &mut out);
        assert_eq!(out, [0x1d, 0x1f, 0x0e, 0x7a]);
    }
}
