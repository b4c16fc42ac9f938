//! Loading a clang-built object and attaching its programs to devices with TCX links.

use aya::programs::tc::{SchedClassifier, TcAttachOptions, TcAttachType};
use aya::programs::LinkOrder;
use aya::util::KernelVersion;
use aya::Ebpf;

/// Why steering could not be set up or read.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// The kernel has no TCX links (before Linux 6.6).
    #[error("kernel {0} has no TCX links (Linux 6.6 or later is needed)")]
    NoTcx(String),
    /// The object was refused by the kernel or by the loader.
    #[error("loading the eBPF object {object}: {source}")]
    Load {
        /// The object's name.
        object: &'static str,
        /// What the loader said.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A program of the object is missing, or the verifier refused it.
    #[error("eBPF program {program}: {source}")]
    Program {
        /// The program's name.
        program: &'static str,
        /// What the loader said.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A program could not be attached to a device.
    #[error("attaching {program} to {dev} ({hook:?}): {source}")]
    Attach {
        /// The program's name.
        program: &'static str,
        /// The device.
        dev: String,
        /// The hook.
        hook: Hook,
        /// What the kernel said.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map of the object is missing, or reading/writing it failed.
    #[error("eBPF map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// What the loader said.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A map is not in the object.
    #[error("eBPF map {0} is not in the object")]
    NoMap(&'static str),
    /// A setting out of range.
    #[error("setting {what}: {why}")]
    Setting {
        /// Which setting.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

/// The hook of a device a program runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Packets the device received.
    Ingress,
    /// Packets the device sends.
    Egress,
}

/// Fail early, with the reason, on a kernel without TCX links.
pub fn require_tcx() -> Result<(), SteerError> {
    let v = KernelVersion::current().map_err(|e| SteerError::NoTcx(format!("(unknown: {e})")))?;
    if v < KernelVersion::new(6, 6, 0) {
        return Err(SteerError::NoTcx(format!("{v:?}")));
    }
    Ok(())
}

/// The tc classifier `program` of `ebpf`.
fn classifier<'a>(ebpf: &'a mut Ebpf, program: &str) -> Result<&'a mut SchedClassifier, aya::programs::ProgramError> {
    ebpf.program_mut(program).ok_or(aya::programs::ProgramError::UnexpectedProgramType)?.try_into()
}

/// Load the program `program` of `ebpf` into the kernel (the verifier runs here).
pub fn load(ebpf: &mut Ebpf, program: &'static str) -> Result<(), SteerError> {
    let err = |source| SteerError::Program { program, source: Box::new(source) };
    let prog = classifier(ebpf, program).map_err(err)?;
    prog.load().map_err(err)
}

/// Attach the loaded program `program` to `dev`'s `hook`, after the programs already there. The link lives
/// as long as `ebpf`.
pub fn attach(ebpf: &mut Ebpf, program: &'static str, dev: &str, hook: Hook) -> Result<(), SteerError> {
    let err = |source| SteerError::Attach { program, dev: dev.to_string(), hook, source: Box::new(source) };
    let prog = classifier(ebpf, program).map_err(err)?;
    let kind = match hook {
        Hook::Ingress => TcAttachType::Ingress,
        Hook::Egress => TcAttachType::Egress,
    };
    prog.attach_with_options(dev, kind, TcAttachOptions::TcxOrder(LinkOrder::default())).map_err(err)?;
    Ok(())
}
