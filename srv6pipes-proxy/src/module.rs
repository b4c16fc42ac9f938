//! Bytestream functions as modules: the C ABI of `include/srv6pipes_module.h` (see srv6pipes-module(3)),
//! the loader (`dlopen`) and the registry that maps function numbers to loaded functions.
//!
//! Lifetimes: the registry holds an `Arc<Module>`; each flow holds an `Arc<Function>`, which holds its
//! module. Unloading removes the module from the registry (new flows can no longer select its functions);
//! the functions' `deinit` and `dlclose` run when the last flow using the module ends.
//!
//! The loader calls `dlopen`/`dlsym`/`dlclose` through `libc` rather than the `libloading` crate: four
//! calls are all it needs, `libc` is already a dependency, and the registry owns the handle's lifetime.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// ABI version this proxy implements (`SRV6PIPES_ABI_VERSION`).
pub const ABI_VERSION: u32 = 1;
/// Symbol every module exports.
pub const MODULE_SYMBOL: &CStr = c"srv6pipes_module";

/// Direction client → server.
pub const UP: c_int = 0;
/// Direction server → client.
pub const DOWN: c_int = 1;
/// `directions` bit for [`UP`].
pub const DIR_UP: u32 = 1 << UP;
/// `directions` bit for [`DOWN`].
pub const DIR_DOWN: u32 = 1 << DOWN;
/// `process()` flag: last input of the direction.
pub const FLAG_EOF: u32 = 1;
/// `process()` result: progress / flushed.
pub const OK: c_int = 0;
/// `process()` result: output full, call again.
pub const MORE: c_int = 1;
/// Result: failure.
pub const ERROR: c_int = -1;

/// `struct srv6pipes_flow`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FlowInfoC {
    pub size: u32,
    pub worker: u32,
    pub flow_id: u64,
    pub client: [u8; 16],
    pub server: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    pub reserved: u32,
    pub sid: [u8; 16],
    pub function: u64,
    pub argument: u64,
}

/// `int (*init)(void)`.
pub type InitFn = unsafe extern "C" fn() -> c_int;
/// `int (*spawn)(const struct srv6pipes_flow *, uint64_t, void **)`.
pub type SpawnFn = unsafe extern "C" fn(*const FlowInfoC, u64, *mut *mut c_void) -> c_int;
/// `int (*process)(...)`.
pub type ProcessFn =
    unsafe extern "C" fn(*mut c_void, c_int, *const u8, usize, *mut usize, *mut u8, usize, *mut usize, u32) -> c_int;
/// `void (*despawn)(void *)`.
pub type DespawnFn = unsafe extern "C" fn(*mut c_void);
/// `void (*deinit)(void)`.
pub type DeinitFn = unsafe extern "C" fn();

/// `struct srv6pipes_func`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FuncC {
    pub id: u64,
    pub name: *const c_char,
    pub directions: u32,
    pub flags: u32,
    pub init: Option<InitFn>,
    pub spawn: Option<SpawnFn>,
    pub process: Option<ProcessFn>,
    pub despawn: Option<DespawnFn>,
    pub deinit: Option<DeinitFn>,
}

/// `struct srv6pipes_module`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleC {
    pub abi_version: u32,
    pub nfuncs: u32,
    pub name: *const c_char,
    pub version: *const c_char,
    pub funcs: *const FuncC,
}

/// Why a module could not be loaded or unloaded, or a function failed.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("dlopen {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: no symbol {symbol}: {reason}")]
    Symbol { path: PathBuf, symbol: &'static str, reason: String },
    #[error("module {module}: ABI version {found}, this proxy implements {ABI_VERSION}")]
    AbiVersion { module: String, found: u32 },
    #[error("module {module}: {reason}")]
    Invalid { module: String, reason: String },
    #[error("module name {0:?} is already loaded")]
    DuplicateModule(String),
    #[error("function {id} ({name}) of module {module} is already provided by {other}")]
    DuplicateFunction { module: String, id: u64, name: String, other: String },
    #[error("function {name} of module {module}: init failed ({code})")]
    Init { module: String, name: String, code: c_int },
    #[error("no module named {0:?} is loaded")]
    NotLoaded(String),
    #[error("module {0:?} is built in and cannot be unloaded")]
    BuiltIn(String),
    #[error("function {name}: spawn failed ({code})")]
    Spawn { name: String, code: c_int },
    #[error("function {name}: process failed ({code})")]
    Process { name: String, code: c_int },
    #[error("function {name}: process broke the ABI contract: {reason}")]
    Contract { name: String, reason: &'static str },
}

/// A `dlopen` handle, closed on drop.
struct Library(*mut c_void);

// SAFETY: a dlopen handle is a process-global token; dlsym/dlclose may be called from any thread.
unsafe impl Send for Library {}
// SAFETY: as above; the handle is never mutated after dlopen.
unsafe impl Sync for Library {}

fn dlerror_string() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call on this thread;
    // we copy it at once.
    let p = unsafe { libc::dlerror() };
    if p.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-NULL, NUL-terminated (see above).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

impl Library {
    fn open(path: &Path) -> Result<Library, ModuleError> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| ModuleError::Open { path: path.into(), reason: "path contains a NUL byte".into() })?;
        // SAFETY: `c` is a valid C string; dlopen runs the library's constructors, which is what loading
        // a module means (only root can ask for it through the control socket).
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            return Err(ModuleError::Open { path: path.into(), reason: dlerror_string() });
        }
        Ok(Library(h))
    }

    fn symbol(&self, name: &CStr) -> Option<*mut c_void> {
        // SAFETY: self.0 is a live handle from dlopen and `name` a valid C string.
        let p = unsafe { libc::dlsym(self.0, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: the handle came from dlopen and is closed once; every function pointer taken from it is
        // owned by the `Module` being dropped, after which nothing can call it.
        unsafe { libc::dlclose(self.0) };
    }
}

/// One function of a loaded module.
pub struct Function {
    pub id: u64,
    pub name: String,
    pub directions: u32,
    raw: FuncC,
    module: Arc<ModuleCore>,
}

// SAFETY: `raw` holds function pointers into a library that `module` keeps loaded; the name pointer is
// never dereferenced after load. The ABI requires module functions to be callable from any thread.
unsafe impl Send for Function {}
// SAFETY: as above; `raw` is never mutated.
unsafe impl Sync for Function {}

impl Function {
    /// Module providing this function.
    pub fn module_name(&self) -> &str {
        &self.module.name
    }

    /// Whether direction `dir` is transformed (otherwise relayed unchanged).
    pub fn transforms(&self, dir: c_int) -> bool {
        self.raw.process.is_some() && self.directions & (1 << dir) != 0
    }
}

/// What must outlive every flow that uses a module: the deinit hooks and the library handle.
struct ModuleCore {
    name: String,
    /// Live instances (flows) of the module's functions.
    active: std::sync::atomic::AtomicUsize,
    /// Functions whose init succeeded: their deinit runs on drop.
    deinits: Vec<DeinitFn>,
    /// Dropped last (field order): dlclose after the deinits.
    _lib: Option<Library>,
}

impl Drop for ModuleCore {
    fn drop(&mut self) {
        for d in &self.deinits {
            // SAFETY: deinit of a function whose init succeeded, called once, with the library still
            // loaded (`_lib` drops after this body), and no flow left (we hold the last reference).
            unsafe { d() };
        }
        tracing::info!(module = %self.name, "module released");
    }
}

/// A loaded module as the registry keeps it.
pub struct Module {
    pub name: String,
    pub version: Option<String>,
    pub path: Option<PathBuf>,
    pub functions: Vec<Arc<Function>>,
    core: Arc<ModuleCore>,
}

impl Module {
    /// Flows still holding this module's functions (beyond the registry's own references).
    pub fn users(&self) -> usize {
        self.core.active.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Read a module descriptor, validate it, run the inits.
///
/// # Safety
/// `desc` must point to a `struct srv6pipes_module` whose pointers are valid for as long as `lib` stays
/// loaded (or forever when `lib` is `None`).
unsafe fn from_descriptor(
    desc: *const ModuleC,
    lib: Option<Library>,
    path: Option<PathBuf>,
    registry_ids: &HashMap<u64, Arc<Function>>,
) -> Result<Module, ModuleError> {
    let label = path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(built-in)".into());
    let invalid = |reason: String| ModuleError::Invalid { module: label.clone(), reason };
    if desc.is_null() {
        return Err(invalid("descriptor is NULL".into()));
    }
    // SAFETY: non-NULL and valid per the caller's contract.
    let d = unsafe { *desc };
    if d.abi_version != ABI_VERSION {
        return Err(ModuleError::AbiVersion { module: label, found: d.abi_version });
    }
    let cstr = |p: *const c_char, what: &str| -> Result<String, ModuleError> {
        if p.is_null() {
            return Err(invalid(format!("{what} is NULL")));
        }
        // SAFETY: a non-NULL string pointer of the descriptor, NUL-terminated per the ABI.
        let s = unsafe { CStr::from_ptr(p) };
        let s = s.to_str().map_err(|_| invalid(format!("{what} is not UTF-8")))?;
        if s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(invalid(format!("{what} {s:?} must be 1-64 letters, digits, '-' or '_'")));
        }
        Ok(s.to_string())
    };
    let name = cstr(d.name, "module name")?;
    let version = if d.version.is_null() {
        None
    } else {
        // SAFETY: non-NULL string of the descriptor.
        Some(unsafe { CStr::from_ptr(d.version) }.to_string_lossy().into_owned())
    };
    if d.nfuncs == 0 || d.nfuncs > 4096 || d.funcs.is_null() {
        return Err(invalid(format!("{} functions at {:?}: need 1 to 4096", d.nfuncs, d.funcs)));
    }
    // SAFETY: `funcs` points to `nfuncs` entries per the ABI.
    let raws = unsafe { std::slice::from_raw_parts(d.funcs, d.nfuncs as usize) }.to_vec();
    let mut seen: HashMap<u64, String> = HashMap::new();
    let mut named = Vec::with_capacity(raws.len());
    for raw in &raws {
        let fname = cstr(raw.name, "function name")?;
        if raw.directions & !(DIR_UP | DIR_DOWN) != 0 {
            return Err(invalid(format!("function {fname}: unknown direction bits {:#x}", raw.directions)));
        }
        if raw.directions != 0 && raw.process.is_none() {
            return Err(invalid(format!(
                "function {fname}: transforms directions {:#x} but process is NULL",
                raw.directions
            )));
        }
        if let Some(other) = seen.insert(raw.id, fname.clone()) {
            return Err(invalid(format!("functions {other} and {fname} share id {}", raw.id)));
        }
        if let Some(f) = registry_ids.get(&raw.id) {
            return Err(ModuleError::DuplicateFunction {
                module: name.clone(),
                id: raw.id,
                name: fname,
                other: format!("{}:{}", f.module_name(), f.name),
            });
        }
        named.push(fname);
    }
    let mut deinits = Vec::new();
    for (raw, fname) in raws.iter().zip(&named) {
        if let Some(init) = raw.init {
            // SAFETY: module-provided init, called once per load before any spawn.
            let code = unsafe { init() };
            if code != OK {
                for d in deinits.iter().rev() {
                    // SAFETY: undo the inits that succeeded, in reverse order.
                    unsafe { (d as &DeinitFn)() };
                }
                return Err(ModuleError::Init { module: name, name: fname.clone(), code });
            }
        }
        if let Some(deinit) = raw.deinit {
            deinits.push(deinit);
        }
    }
    let core = Arc::new(ModuleCore { name: name.clone(), active: Default::default(), deinits, _lib: lib });
    let functions = raws
        .iter()
        .zip(named)
        .map(|(raw, fname)| {
            Arc::new(Function { id: raw.id, name: fname, directions: raw.directions, raw: *raw, module: core.clone() })
        })
        .collect();
    Ok(Module { name, version, path, functions, core })
}

/// Per-flow instance of a function: the state returned by `spawn`, despawned on drop.
pub struct Instance {
    func: Arc<Function>,
    state: *mut c_void,
}

/// What one `process()` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub consumed: usize,
    pub produced: usize,
    /// The module has more output pending (`SRV6PIPES_MORE`).
    pub more: bool,
}

impl Instance {
    /// Call the function's `spawn` for a new flow.
    pub fn spawn(func: Arc<Function>, flow: &FlowInfoC) -> Result<Instance, ModuleError> {
        let mut state: *mut c_void = std::ptr::null_mut();
        if let Some(spawn) = func.raw.spawn {
            // SAFETY: module spawn with a valid flow descriptor and a valid out-pointer; the module stays
            // loaded while `func` lives.
            let code = unsafe { spawn(flow, flow.argument, &mut state) };
            if code != OK {
                return Err(ModuleError::Spawn { name: func.name.clone(), code });
            }
        }
        func.module.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Instance { func, state })
    }

    /// The function this instance runs.
    pub fn function(&self) -> &Arc<Function> {
        &self.func
    }

    /// Feed `input` of direction `dir` and collect output into `output`.
    pub fn process(&mut self, dir: c_int, input: &[u8], output: &mut [u8], eof: bool) -> Result<Step, ModuleError> {
        let Some(process) = self.func.raw.process else {
            return Err(ModuleError::Contract { name: self.func.name.clone(), reason: "process is NULL" });
        };
        let (mut consumed, mut produced) = (0usize, 0usize);
        // SAFETY: `input` and `output` are live, non-overlapping slices whose lengths are passed along;
        // `state` is what spawn returned for this flow; calls for one flow never run concurrently
        // (`&mut self`).
        let code = unsafe {
            process(
                self.state,
                dir,
                input.as_ptr(),
                input.len(),
                &mut consumed,
                output.as_mut_ptr(),
                output.len(),
                &mut produced,
                if eof { FLAG_EOF } else { 0 },
            )
        };
        if code != OK && code != MORE {
            return Err(ModuleError::Process { name: self.func.name.clone(), code });
        }
        if consumed > input.len() || produced > output.len() {
            return Err(ModuleError::Contract {
                name: self.func.name.clone(),
                reason: "consumed or produced more bytes than the buffers hold",
            });
        }
        Ok(Step { consumed, produced, more: code == MORE })
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(despawn) = self.func.raw.despawn {
            // SAFETY: once per spawned flow, after its last process call; the library is still loaded.
            unsafe { despawn(self.state) };
        }
        self.func.module.active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Build the flow descriptor handed to `spawn`.
pub fn flow_info(
    flow_id: u64,
    worker: u32,
    client: SocketAddrV6,
    server: SocketAddrV6,
    sid: Ipv6Addr,
    function: u64,
    argument: u64,
) -> FlowInfoC {
    FlowInfoC {
        size: std::mem::size_of::<FlowInfoC>() as u32,
        worker,
        flow_id,
        client: client.ip().octets(),
        server: server.ip().octets(),
        client_port: client.port(),
        server_port: server.port(),
        reserved: 0,
        sid: sid.octets(),
        function,
        argument,
    }
}

/// JSON view of a loaded module.
#[derive(Debug, Serialize)]
pub struct ModuleInfo {
    pub name: String,
    pub version: Option<String>,
    pub path: Option<String>,
    pub builtin: bool,
    /// Flows using the module right now.
    pub flows: usize,
    pub functions: Vec<FunctionInfo>,
}

/// JSON view of a function.
#[derive(Debug, Serialize)]
pub struct FunctionInfo {
    pub id: u64,
    pub name: String,
    pub directions: Vec<&'static str>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<u64, Arc<Function>>,
    modules: Vec<Module>,
}

/// The loaded modules and the function numbers they provide.
#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

impl Registry {
    /// A registry holding the built-in modules (see [`crate::builtin`]).
    pub fn with_builtins() -> Registry {
        let r = Registry::default();
        for desc in crate::builtin::descriptors() {
            // SAFETY: built-in descriptors point to 'static data and functions of this binary.
            let m = {
                let inner = r.inner.read().unwrap_or_else(|e| e.into_inner());
                unsafe { from_descriptor(&desc.module, None, None, &inner.by_id) }
            };
            match m {
                Ok(m) => r.insert(m),
                Err(e) => tracing::error!("built-in module refused: {e}"),
            }
        }
        r
    }

    fn insert(&self, m: Module) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for f in &m.functions {
            inner.by_id.insert(f.id, f.clone());
        }
        tracing::info!(module = %m.name, functions = ?m.functions.iter().map(|f| (f.id, f.name.as_str())).collect::<Vec<_>>(), "module loaded");
        inner.modules.push(m);
    }

    /// Load the module at `path`.
    pub fn load(&self, path: &Path) -> Result<String, ModuleError> {
        let path =
            std::fs::canonicalize(path).map_err(|e| ModuleError::Open { path: path.into(), reason: e.to_string() })?;
        let lib = Library::open(&path)?;
        let sym = lib.symbol(MODULE_SYMBOL).ok_or_else(|| ModuleError::Symbol {
            path: path.clone(),
            symbol: "srv6pipes_module",
            reason: dlerror_string(),
        })?;
        // Hold the write lock across validation and insertion so two loads cannot claim the same id.
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        // SAFETY: `sym` is the module's exported descriptor; its pointers live as long as `lib`, which the
        // returned module owns.
        let m = unsafe { from_descriptor(sym as *const ModuleC, Some(lib), Some(path), &inner.by_id)? };
        if inner.modules.iter().any(|x| x.name == m.name) {
            return Err(ModuleError::DuplicateModule(m.name.clone()));
        }
        let name = m.name.clone();
        for f in &m.functions {
            inner.by_id.insert(f.id, f.clone());
        }
        tracing::info!(module = %m.name, path = ?m.path, functions = ?m.functions.iter().map(|f| (f.id, f.name.as_str())).collect::<Vec<_>>(), "module loaded");
        inner.modules.push(m);
        Ok(name)
    }

    /// Unload module `name`: its functions stop matching new flows at once; flows using it keep it alive.
    /// Returns how many flows still use it.
    pub fn unload(&self, name: &str) -> Result<usize, ModuleError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let idx =
            inner.modules.iter().position(|m| m.name == name).ok_or_else(|| ModuleError::NotLoaded(name.into()))?;
        if inner.modules[idx].path.is_none() {
            return Err(ModuleError::BuiltIn(name.into()));
        }
        let m = inner.modules.remove(idx);
        for f in &m.functions {
            inner.by_id.remove(&f.id);
        }
        let users = m.users();
        tracing::info!(module = %name, flows_still_using = users, "module unloaded");
        Ok(users)
    }

    /// The function selected by function number `id`.
    pub fn get(&self, id: u64) -> Option<Arc<Function>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).by_id.get(&id).cloned()
    }

    /// JSON view of the loaded modules.
    pub fn list(&self) -> Vec<ModuleInfo> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .modules
            .iter()
            .map(|m| ModuleInfo {
                name: m.name.clone(),
                version: m.version.clone(),
                path: m.path.as_ref().map(|p| p.display().to_string()),
                builtin: m.path.is_none(),
                flows: m.users(),
                functions: m
                    .functions
                    .iter()
                    .map(|f| FunctionInfo {
                        id: f.id,
                        name: f.name.clone(),
                        directions: [(DIR_UP, "up"), (DIR_DOWN, "down")]
                            .into_iter()
                            .filter(|(b, _)| f.transforms(b.trailing_zeros() as c_int))
                            .map(|(_, n)| n)
                            .collect(),
                    })
                    .collect(),
            })
            .collect()
    }
}
