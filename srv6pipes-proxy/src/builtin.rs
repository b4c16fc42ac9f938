//! Built-in module `builtin`, described through the same C ABI as loadable modules (`xor` through the
//! safe `Function` trait of srv6pipes-api, like a module written in Rust):
//!
//! | id | name | what |
//! |---|---|---|
//! | 1 | `copy` | relays both directions unchanged (no `process`: the proxy splices) |
//! | 2 | `xor`  | XORs every byte of both directions with the argument's low byte, `passes` times (argument bits 8–15, 0 = 1) |
//!
//! The xor function is the paper's CPU benchmark (§V-C): each pass touches every byte again, so the cost
//! grows with the number of passes; an even number of passes leaves the stream unchanged.

use std::ffi::CStr;

use srv6pipes_api::abi::{Direction, FlowInfo, FuncDesc, ModuleDesc, ABI_VERSION};
use srv6pipes_api::function::{describe, Failure, Function, Progress};

/// Function number of `copy`.
pub const COPY_ID: u64 = 1;
/// Function number of `xor`.
pub const XOR_ID: u64 = 2;

/// `copy` has no entry points at all: with no direction to transform, the proxy relays (splices) both.
const COPY: FuncDesc = FuncDesc {
    id: COPY_ID,
    name: c"copy".as_ptr(),
    directions: 0,
    flags: 0,
    init: None,
    spawn: None,
    process: None,
    despawn: None,
    deinit: None,
};

static FUNCS: [FuncDesc; 2] = [COPY, describe::<Xor>()];

/// The descriptor of the built-in module, as a loadable module would export it.
pub static MODULE: ModuleDesc = ModuleDesc {
    abi_version: ABI_VERSION,
    nfuncs: FUNCS.len() as u32,
    name: c"builtin".as_ptr(),
    version: c"1".as_ptr(),
    funcs: &FUNCS as *const FuncDesc,
};

/// Per-flow state of `xor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Xor {
    /// The byte XORed in.
    pub key: u8,
    /// How many times.
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

impl Function for Xor {
    const ID: u64 = XOR_ID;
    const NAME: &'static CStr = c"xor";
    const DIRECTIONS: &'static [Direction] = &Direction::BOTH;

    fn spawn(_flow: &FlowInfo, argument: u64) -> Result<Self, Failure> {
        Ok(Xor::from_argument(argument))
    }

    fn process(&mut self, _dir: Direction, input: &[u8], output: &mut [u8], _eof: bool) -> Result<Progress, Failure> {
        let n = input.len().min(output.len());
        self.apply(&input[..n], &mut output[..n]);
        Ok(Progress { consumed: n, produced: n, more: n < input.len() })
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
