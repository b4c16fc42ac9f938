//! Example srv6pipes-proxy module written in Rust (srv6pipes-module(3)): `rot13`, function 13, rotates
//! the letters of both directions by 13 places and leaves every other byte alone.
//!
//! ROT13 is its own inverse, so a chain rot13(P1) → rot13(P2) is transparent end to end while the
//! P1–P2 link carries rotated text (`GET /a.bin` crosses it as `TRG /n.ova`).
//!
//! Build: `cargo build -p srv6pipes-module-rot13` (`target/debug/libsrv6pipes_module_rot13.so`);
//! load: `srv6pipes-proxy ctl load target/debug/libsrv6pipes_module_rot13.so`.

use std::ffi::CStr;

use srv6pipes_api::abi::{Direction, FlowInfo};
use srv6pipes_api::function::{Failure, Function, Progress};

/// Per-flow state of `rot13`: none is needed.
pub struct Rot13;

/// Rotate an ASCII letter by 13 places.
pub fn rot13(b: u8) -> u8 {
    match b {
        b'a'..=b'z' => (b - b'a' + 13) % 26 + b'a',
        b'A'..=b'Z' => (b - b'A' + 13) % 26 + b'A',
        _ => b,
    }
}

impl Function for Rot13 {
    const ID: u64 = 13;
    const NAME: &'static CStr = c"rot13";
    const DIRECTIONS: &'static [Direction] = &Direction::BOTH;

    fn spawn(_flow: &FlowInfo, _argument: u64) -> Result<Self, Failure> {
        Ok(Rot13)
    }

    fn process(&mut self, _dir: Direction, input: &[u8], output: &mut [u8], _eof: bool) -> Result<Progress, Failure> {
        let n = input.len().min(output.len());
        for (o, i) in output.iter_mut().zip(&input[..n]) {
            *o = rot13(*i);
        }
        Ok(Progress { consumed: n, produced: n, more: n < input.len() })
    }
}

srv6pipes_api::srv6pipes_module!(name: c"rot13", version: c"1.0", functions: [Rot13]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_letters_only_and_is_its_own_inverse() {
        let mut out = [0u8; 16];
        let p = Rot13.process(Direction::Up, b"GET /a.bin 1.1", &mut out, false).unwrap();
        assert_eq!(p, Progress { consumed: 14, produced: 14, more: false });
        assert_eq!(&out[..14], b"TRG /n.ova 1.1");
        let all: Vec<u8> = (0..=255).collect();
        assert!(all.iter().all(|&b| rot13(rot13(b)) == b));
        // A full output buffer asks to be called again.
        let p = Rot13.process(Direction::Down, &[b'a'; 20], &mut out, true).unwrap();
        assert_eq!(p, Progress { consumed: 16, produced: 16, more: true });
    }
}
