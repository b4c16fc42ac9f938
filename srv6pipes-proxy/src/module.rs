//! Bytestream functions as modules: the loader (`dlopen`) of the C ABI that `srv6pipes_api::abi` mirrors
//! (srv6pipes-module(3)), and the registry that maps function numbers to loaded functions.
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
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use srv6pipes_api::abi::{
    DeinitFn, Direction, FlowInfo, FuncDesc, ModuleDesc, ABI_VERSION, DIR_BOTH, FLAG_EOF, MODULE_SYMBOL, MORE, OK,
};
use srv6pipes_api::control::{FunctionInfo, ModuleInfo};
use srv6pipes_api::function::Progress;

/// Why a module could not be loaded or unloaded, or a function failed.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// `dlopen` failed.
    #[error("dlopen {}: {reason}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// `dlerror()`.
        reason: String,
    },
    /// The module does not export its descriptor.
    #[error("{}: no symbol {symbol}: {reason}", path.display())]
    Symbol {
        /// The file.
        path: PathBuf,
        /// The symbol looked up.
        symbol: &'static str,
        /// `dlerror()`.
        reason: String,
    },
    /// The module implements another ABI version.
    #[error("module {module}: ABI version {found}, this proxy implements {ABI_VERSION}")]
    AbiVersion {
        /// The module.
        module: String,
        /// Its `abi_version`.
        found: u32,
    },
    /// The descriptor breaks the ABI's rules.
    #[error("module {module}: {reason}")]
    Invalid {
        /// The module.
        module: String,
        /// Which rule.
        reason: String,
    },
    /// A module of that name is loaded.
    #[error("module name {0:?} is already loaded")]
    DuplicateModule(String),
    /// A loaded function has the same number.
    #[error("function {id} ({name}) of module {module} is already provided by {other}")]
    DuplicateFunction {
        /// The module being loaded.
        module: String,
        /// The function number.
        id: u64,
        /// The function's name.
        name: String,
        /// `module:function` that has the number.
        other: String,
    },
    /// A function's `init` failed.
    #[error("function {name} of module {module}: init failed ({code})")]
    Init {
        /// The module.
        module: String,
        /// The function.
        name: String,
        /// What `init` returned.
        code: c_int,
    },
    /// No module of that name is loaded.
    #[error("no module named {0:?} is loaded")]
    NotLoaded(String),
    /// Built-in modules stay.
    #[error("module {0:?} is built in and cannot be unloaded")]
    BuiltIn(String),
    /// A function's `spawn` refused the flow.
    #[error("function {name}: spawn failed ({code})")]
    Spawn {
        /// The function.
        name: String,
        /// What `spawn` returned.
        code: c_int,
    },
    /// A function's `process` failed.
    #[error("function {name}: process failed ({code})")]
    Process {
        /// The function.
        name: String,
        /// What `process` returned.
        code: c_int,
    },
    /// A function's `process` broke the ABI's contract.
    #[error("function {name}: process broke the ABI contract: {reason}")]
    Contract {
        /// The function.
        name: String,
        /// Which rule.
        reason: &'static str,
    },
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
    /// Function number.
    pub id: u64,
    /// Function name.
    pub name: String,
    /// `SRV6PIPES_DIR_*` bits it transforms.
    pub directions: u32,
    raw: FuncDesc,
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
    pub fn transforms(&self, dir: Direction) -> bool {
        self.raw.process.is_some() && self.directions & dir.bit() != 0
    }
}

/// What must outlive every flow that uses a module: the deinit hooks and the library handle.
struct ModuleCore {
    name: String,
    /// Live instances (flows) of the module's functions.
    active: AtomicUsize,
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
    /// Module name.
    pub name: String,
    /// Its free-form version.
    pub version: Option<String>,
    /// The file it was loaded from; `None` when built in.
    pub path: Option<PathBuf>,
    /// Its functions.
    pub functions: Vec<Arc<Function>>,
    core: Arc<ModuleCore>,
}

impl Module {
    /// Flows still holding this module's functions (beyond the registry's own references).
    pub fn users(&self) -> usize {
        self.core.active.load(Relaxed)
    }
}

/// Read a module descriptor, validate it, run the inits.
///
/// # Safety
/// `desc` must point to a `struct srv6pipes_module` whose pointers are valid for as long as `lib` stays
/// loaded (or forever when `lib` is `None`).
unsafe fn from_descriptor(
    desc: *const ModuleDesc,
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
        if raw.directions & !DIR_BOTH != 0 {
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

impl Instance {
    /// Call the function's `spawn` for a new flow.
    pub fn spawn(func: Arc<Function>, flow: &FlowInfo) -> Result<Instance, ModuleError> {
        let mut state: *mut c_void = std::ptr::null_mut();
        if let Some(spawn) = func.raw.spawn {
            // SAFETY: module spawn with a valid flow descriptor and a valid out-pointer; the module stays
            // loaded while `func` lives.
            let code = unsafe { spawn(flow, flow.argument, &mut state) };
            if code != OK {
                return Err(ModuleError::Spawn { name: func.name.clone(), code });
            }
        }
        func.module.active.fetch_add(1, Relaxed);
        Ok(Instance { func, state })
    }

    /// The function this instance runs.
    pub fn function(&self) -> &Arc<Function> {
        &self.func
    }

    /// Feed `input` of direction `dir` and collect output into `output`.
    pub fn process(
        &mut self,
        dir: Direction,
        input: &[u8],
        output: &mut [u8],
        eof: bool,
    ) -> Result<Progress, ModuleError> {
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
                dir.to_c(),
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
        Ok(Progress { consumed, produced, more: code == MORE })
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(despawn) = self.func.raw.despawn {
            // SAFETY: once per spawned flow, after its last process call; the library is still loaded.
            unsafe { despawn(self.state) };
        }
        self.func.module.active.fetch_sub(1, Relaxed);
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
) -> FlowInfo {
    FlowInfo {
        size: std::mem::size_of::<FlowInfo>() as u32,
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

#[derive(Default)]
struct Inner {
    by_id: HashMap<u64, Arc<Function>>,
    modules: Vec<Module>,
}

impl Inner {
    /// Register a validated module, unless its name or one of its function ids is taken: then it is
    /// given back, so that the caller drops it (running its deinits) after releasing the lock.
    fn insert(&mut self, m: Module) -> Result<String, Box<(ModuleError, Module)>> {
        if self.modules.iter().any(|x| x.name == m.name) {
            return Err(Box::new((ModuleError::DuplicateModule(m.name.clone()), m)));
        }
        if let Some((f, other)) = m.functions.iter().find_map(|f| Some((f, self.by_id.get(&f.id)?))) {
            let e = ModuleError::DuplicateFunction {
                module: m.name.clone(),
                id: f.id,
                name: f.name.clone(),
                other: format!("{}:{}", other.module_name(), other.name),
            };
            return Err(Box::new((e, m)));
        }
        for f in &m.functions {
            self.by_id.insert(f.id, f.clone());
        }
        let functions: Vec<_> = m.functions.iter().map(|f| (f.id, f.name.as_str())).collect();
        tracing::info!(module = %m.name, path = ?m.path, ?functions, "module loaded");
        let name = m.name.clone();
        self.modules.push(m);
        Ok(name)
    }
}

/// The loaded modules and the function numbers they provide.
#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

impl Registry {
    /// Register a module built into the proxy (it cannot be unloaded).
    pub fn add_builtin(&self, desc: &'static ModuleDesc) -> Result<String, ModuleError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        // SAFETY: a 'static descriptor of this binary: its pointers stay valid forever.
        let m = unsafe { from_descriptor(desc, None, None, &inner.by_id)? };
        inner.insert(m).map_err(|refused| refused.0)
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
        // Validation and the inits run without the lock (an init may take its time, and every accept reads
        // the registry); the write lock is held only to insert, which checks the ids again (another load
        // may have claimed one meanwhile: then this module is dropped and its deinits run).
        let ids = self.inner.read().unwrap_or_else(|e| e.into_inner()).by_id.clone();
        // SAFETY: `sym` is the module's exported descriptor; its pointers live as long as `lib`, which the
        // returned module owns.
        let m = unsafe { from_descriptor(sym as *const ModuleDesc, Some(lib), Some(path), &ids)? };
        let inserted = self.inner.write().unwrap_or_else(|e| e.into_inner()).insert(m);
        inserted.map_err(|refused| refused.0)
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

    /// The loaded modules, as the control socket shows them.
    pub fn list(&self) -> Vec<ModuleInfo> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .modules
            .iter()
            .map(|m| ModuleInfo {
                name: m.name.clone(),
                version: m.version.clone(),
                path: m.path.clone(),
                builtin: m.path.is_none(),
                flows: m.users() as u64,
                functions: m
                    .functions
                    .iter()
                    .map(|f| FunctionInfo {
                        id: f.id,
                        name: f.name.clone(),
                        directions: Direction::BOTH.into_iter().filter(|&d| f.transforms(d)).collect(),
                    })
                    .collect(),
            })
            .collect()
    }
}
