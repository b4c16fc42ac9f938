//! Functions written in Rust: implement [`Function`] and export it with [`srv6pipes_module!`](crate::srv6pipes_module!)
//! from a `cdylib`; the proxy loads the result like a C module (srv6pipes-module(3)).
//!
//! ```
//! use srv6pipes_api::function::{Failure, Function, Progress};
//! use srv6pipes_api::abi::{Direction, FlowInfo};
//!
//! struct Upper;
//! impl Function for Upper {
//!     const ID: u64 = 32;
//!     const NAME: &'static std::ffi::CStr = c"upper";
//!     const DIRECTIONS: &'static [Direction] = &[Direction::Up];
//!     fn spawn(_: &FlowInfo, _: u64) -> Result<Self, Failure> { Ok(Upper) }
//!     fn process(&mut self, _: Direction, input: &[u8], output: &mut [u8], _: bool) -> Result<Progress, Failure> {
//!         let n = input.len().min(output.len());
//!         for (o, i) in output.iter_mut().zip(&input[..n]) { *o = i.to_ascii_uppercase(); }
//!         Ok(Progress { consumed: n, produced: n, more: n < input.len() })
//!     }
//! }
//! srv6pipes_api::srv6pipes_module!(name: c"upper", version: c"1", functions: [Upper]);
//! ```
//!
//! The generated C entry points check their pointers, and catch panics: a panic never unwinds into the
//! proxy, it becomes `SRV6PIPES_ERROR` (the load fails or the flow is reset).

use std::ffi::{c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::abi::{Direction, FlowInfo, FuncDesc, DIR_BOTH, ERROR, FLAG_EOF, MORE, OK};

/// A function failed: at `init`, the module does not load; at `spawn` or `process`, the flow is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("function failed")]
pub struct Failure;

/// What one `process` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes consumed (the rest is offered again, with more appended).
    pub consumed: usize,
    /// Output bytes written at the start of the output buffer.
    pub produced: usize,
    /// The output buffer is full and more output is pending: call again.
    pub more: bool,
}

/// A bytestream function; one value of the type is the state of one flow.
///
/// All calls for one flow happen on one thread, never concurrently; different flows may run on
/// different threads at once, so state shared between flows (statics) must be thread-safe.
pub trait Function: Sized + 'static {
    /// Function number: the function bits of the SIDs that select it.
    const ID: u64;
    /// Name, unique among loaded functions: 1–64 letters, digits, `-` or `_`.
    const NAME: &'static CStr;
    /// Directions `process` transforms; the others are relayed unchanged. Empty: a pure relay.
    const DIRECTIONS: &'static [Direction];

    /// Once when the module is loaded.
    fn init() -> Result<(), Failure> {
        Ok(())
    }

    /// Once when the module is unloaded and no flow uses it any more.
    fn deinit() {}

    /// A new flow, with the argument bits of its SID: its state, or [`Failure`] to refuse it.
    fn spawn(flow: &FlowInfo, argument: u64) -> Result<Self, Failure>;

    /// Transform bytes of direction `dir`: read from `input`, write to `output`. With `eof`, `input` is the
    /// last of the direction: return `more` until everything is flushed, then consume all input.
    fn process(&mut self, dir: Direction, input: &[u8], output: &mut [u8], eof: bool) -> Result<Progress, Failure>;
}

/// Run `f` at the FFI edge: its result, or `ERROR` on failure or panic.
fn guard(f: impl FnOnce() -> Result<c_int, Failure>) -> c_int {
    // A panic may leave the flow's state half-updated: the proxy resets the flow and only drops it.
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(Failure)).unwrap_or(ERROR)
}

unsafe extern "C" fn init_c<F: Function>() -> c_int {
    guard(|| F::init().map(|()| OK))
}

unsafe extern "C" fn deinit_c<F: Function>() {
    let _ = catch_unwind(F::deinit);
}

unsafe extern "C" fn spawn_c<F: Function>(flow: *const FlowInfo, argument: u64, state: *mut *mut c_void) -> c_int {
    if flow.is_null() || state.is_null() {
        return ERROR;
    }
    // SAFETY: the proxy passes a live flow descriptor (non-NULL, checked) for the duration of the call.
    let flow = unsafe { &*flow };
    guard(|| {
        let st = Box::into_raw(Box::new(F::spawn(flow, argument)?));
        // SAFETY: `state` is the proxy's valid out-pointer (non-NULL, checked).
        unsafe { *state = st.cast() };
        Ok(OK)
    })
}

#[allow(clippy::too_many_arguments)] // The C signature of `process`.
unsafe extern "C" fn process_c<F: Function>(
    state: *mut c_void,
    dir: c_int,
    input: *const u8,
    in_len: usize,
    consumed: *mut usize,
    output: *mut u8,
    out_cap: usize,
    produced: *mut usize,
    flags: u32,
) -> c_int {
    let Some(dir) = Direction::from_c(dir) else { return ERROR };
    if state.is_null()
        || consumed.is_null()
        || produced.is_null()
        || (in_len > 0 && input.is_null())
        || (out_cap > 0 && output.is_null())
    {
        return ERROR;
    }
    // SAFETY: `state` is the Box that spawn_c made for this flow; the proxy never calls one flow
    // concurrently, so this is the only reference.
    let st = unsafe { &mut *state.cast::<F>() };
    let input: &[u8] = if in_len == 0 {
        &[]
    } else {
        // SAFETY: the proxy passes a live buffer of `in_len` bytes (non-NULL, checked).
        unsafe { std::slice::from_raw_parts(input, in_len) }
    };
    let output: &mut [u8] = if out_cap == 0 {
        &mut []
    } else {
        // SAFETY: the proxy passes a live buffer of `out_cap` bytes, not overlapping `input`.
        unsafe { std::slice::from_raw_parts_mut(output, out_cap) }
    };
    guard(|| {
        let p = st.process(dir, input, output, flags & FLAG_EOF != 0)?;
        if p.consumed > in_len || p.produced > out_cap {
            return Err(Failure);
        }
        // SAFETY: valid out-pointers (non-NULL, checked).
        unsafe {
            *consumed = p.consumed;
            *produced = p.produced;
        }
        Ok(if p.more { MORE } else { OK })
    })
}

unsafe extern "C" fn despawn_c<F: Function>(state: *mut c_void) {
    if !state.is_null() {
        // SAFETY: the Box that spawn_c made for this flow; the proxy despawns once, after the last process.
        let st = unsafe { Box::from_raw(state.cast::<F>()) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(st)));
    }
}

/// `SRV6PIPES_DIR_*` bits of a list of directions.
pub const fn direction_bits(dirs: &[Direction]) -> u32 {
    let mut bits = 0;
    let mut i = 0;
    while i < dirs.len() {
        bits |= dirs[i].bit();
        i += 1;
    }
    bits & DIR_BOTH
}

/// The C descriptor of `F`: its C entry points call the trait's methods (what [`srv6pipes_module!`](crate::srv6pipes_module!) lists).
pub const fn describe<F: Function>() -> FuncDesc {
    let directions = direction_bits(F::DIRECTIONS);
    FuncDesc {
        id: F::ID,
        name: F::NAME.as_ptr(),
        directions,
        flags: 0,
        init: Some(init_c::<F>),
        spawn: Some(spawn_c::<F>),
        process: if directions == 0 { None } else { Some(process_c::<F>) },
        despawn: Some(despawn_c::<F>),
        deinit: Some(deinit_c::<F>),
    }
}

/// Export types implementing [`Function`] as a module: defines the `srv6pipes_module` symbol of a
/// `cdylib` (srv6pipes-module(3)).
///
/// ```ignore
/// srv6pipes_api::srv6pipes_module!(name: c"rot13", version: c"1.0", functions: [Rot13]);
/// ```
#[macro_export]
macro_rules! srv6pipes_module {
    (name: $name:expr, version: $version:expr, functions: [$($func:ty),+ $(,)?] $(,)?) => {
        /// The module descriptor the proxy looks up (srv6pipes-module(3)).
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static srv6pipes_module: $crate::abi::ModuleDesc = {
            const FUNCS: &[$crate::abi::FuncDesc] = &[$($crate::function::describe::<$func>()),+];
            const NAME: &::std::ffi::CStr = $name;
            const VERSION: &::std::ffi::CStr = $version;
            $crate::abi::ModuleDesc {
                abi_version: $crate::abi::ABI_VERSION,
                nfuncs: FUNCS.len() as u32,
                name: NAME.as_ptr(),
                version: VERSION.as_ptr(),
                funcs: FUNCS.as_ptr(),
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{ModuleDesc, ABI_VERSION, DIR_UP, DOWN, UP};

    /// Upper-cases what the client sends; panics on a `!` (to prove the panic is caught); fails on `?`.
    struct Upper {
        calls: u32,
    }

    impl Function for Upper {
        const ID: u64 = 32;
        const NAME: &'static CStr = c"upper";
        const DIRECTIONS: &'static [Direction] = &[Direction::Up];

        fn spawn(_flow: &FlowInfo, argument: u64) -> Result<Self, Failure> {
            if argument == 7 {
                return Err(Failure);
            }
            Ok(Upper { calls: 0 })
        }

        fn process(&mut self, _: Direction, input: &[u8], output: &mut [u8], _: bool) -> Result<Progress, Failure> {
            self.calls += 1;
            assert!(!input.contains(&b'!'), "a test panic");
            if input.contains(&b'?') {
                return Err(Failure);
            }
            let n = input.len().min(output.len());
            for (o, i) in output.iter_mut().zip(&input[..n]) {
                *o = i.to_ascii_uppercase();
            }
            Ok(Progress { consumed: n, produced: n, more: n < input.len() })
        }
    }

    crate::srv6pipes_module!(name: c"test", version: c"0", functions: [Upper]);

    fn flow() -> FlowInfo {
        FlowInfo {
            size: size_of::<FlowInfo>() as u32,
            worker: 0,
            flow_id: 1,
            client: [0; 16],
            server: [0; 16],
            client_port: 1,
            server_port: 2,
            reserved: 0,
            sid: [0; 16],
            function: 32,
            argument: 0,
        }
    }

    /// Call `process` of the exported descriptor the way the proxy does.
    fn process(f: &FuncDesc, state: *mut c_void, dir: c_int, input: &[u8], out: &mut [u8]) -> (c_int, usize, usize) {
        let (mut consumed, mut produced) = (0, 0);
        let p = f.process.unwrap();
        // SAFETY: live buffers of the given lengths and a state from spawn, as the ABI requires.
        let code = unsafe {
            p(state, dir, input.as_ptr(), input.len(), &mut consumed, out.as_mut_ptr(), out.len(), &mut produced, 0)
        };
        (code, consumed, produced)
    }

    #[test]
    fn the_exported_descriptor_drives_the_trait_and_contains_panics() {
        let m: &ModuleDesc = &srv6pipes_module;
        assert_eq!((m.abi_version, m.nfuncs), (ABI_VERSION, 1));
        // SAFETY: the macro's descriptor points to 'static C strings and a 'static array of `nfuncs`.
        let (name, f) = unsafe { (CStr::from_ptr(m.name), &*m.funcs) };
        assert_eq!(name, c"test");
        assert_eq!((f.id, f.directions), (32, DIR_UP));
        // SAFETY: as above.
        assert_eq!(unsafe { CStr::from_ptr(f.name) }, c"upper");
        // SAFETY: init takes no arguments.
        assert_eq!(unsafe { f.init.unwrap()() }, OK);

        let mut state = std::ptr::null_mut();
        // SAFETY: a live flow descriptor and out-pointer.
        assert_eq!(unsafe { f.spawn.unwrap()(&flow(), 0, &mut state) }, OK);
        assert!(!state.is_null());
        let mut out = [0u8; 4];
        assert_eq!(process(f, state, UP, b"get /", &mut out), (MORE, 4, 4));
        assert_eq!(&out, b"GET ");
        assert_eq!(process(f, state, DOWN, b"/", &mut out), (OK, 1, 1));
        assert_eq!(process(f, state, 5, b"/", &mut out).0, ERROR, "unknown direction");
        assert_eq!(process(f, state, UP, b"a?", &mut out).0, ERROR, "Failure");
        assert_eq!(process(f, state, UP, b"a!", &mut out).0, ERROR, "panic");
        // The state survived the panic (it is only dropped by despawn); the bad direction never reached it.
        // SAFETY: `state` is the live Box of this flow.
        assert_eq!(unsafe { &*state.cast::<Upper>() }.calls, 4);
        // SAFETY: once, after the last process.
        unsafe { f.despawn.unwrap()(state) };

        let mut refused = std::ptr::null_mut();
        // SAFETY: as above; argument 7 makes spawn fail.
        assert_eq!(unsafe { f.spawn.unwrap()(&flow(), 7, &mut refused) }, ERROR);
        assert!(refused.is_null());
        // SAFETY: NULL pointers must be refused, not dereferenced.
        assert_eq!(unsafe { f.spawn.unwrap()(std::ptr::null(), 0, &mut refused) }, ERROR);
    }

    #[test]
    fn a_relay_has_no_process() {
        struct Relay;
        impl Function for Relay {
            const ID: u64 = 1;
            const NAME: &'static CStr = c"relay";
            const DIRECTIONS: &'static [Direction] = &[];
            fn spawn(_: &FlowInfo, _: u64) -> Result<Self, Failure> {
                Ok(Relay)
            }
            fn process(&mut self, _: Direction, _: &[u8], _: &mut [u8], _: bool) -> Result<Progress, Failure> {
                Err(Failure)
            }
        }
        let d = describe::<Relay>();
        assert_eq!(d.directions, 0);
        assert!(d.process.is_none());
        assert_eq!(direction_bits(&Direction::BOTH), DIR_BOTH);
    }
}
