//! `--via kernel`: PROGRAM runs in a cgroup of its own and `srv6pipes_steer::CgroupSteer` inserts the SRH
//! into its packets on the host's devices, so static binaries, Go programs and io_uring or raw system
//! calls are steered like the shim steers dynamic programs, by the same policy (`--segs` first, then the
//! policy file's rules, in order).
//!
//! srv6run stays PROGRAM's parent: it forwards SIGINT, SIGTERM and SIGHUP, and when PROGRAM ends it kills
//! what PROGRAM left in the cgroup, removes the cgroup and detaches the programs. PROGRAM dies with
//! srv6run (parent-death signal); a descendant of PROGRAM outliving a killed srv6run is unsteered until
//! the next kernel-mode run kills it and removes the cgroup (`run_cgroup`).

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{bail, Context, Result};
use libsrv6sock::policy::{FailMode, Policy, Proto, Rule};
use srv6pipes_steer::{CgroupSteer, RunRule};

use crate::cli::Cli;
use crate::run_cgroup::{self, RunCgroup};

/// CAP_NET_ADMIN's bit in the capability sets.
const CAP_NET_ADMIN: u32 = 12;

/// Why kernel mode cannot run here, if it cannot: the privileges it needs.
pub fn missing_privilege() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    (eff & (1 << CAP_NET_ADMIN) == 0).then(|| {
        "kernel mode needs root, or CAP_NET_ADMIN and CAP_BPF (it attaches eBPF programs to the host's devices \
         and creates a cgroup): run srv6run with sudo"
            .to_string()
    })
}

/// What kernel mode cannot do with these options and this policy, if anything.
pub fn unsupported(cli: &Cli, policy: &Policy) -> Option<String> {
    if cli.dns_paths {
        Some("--dns-paths needs the shim (paths come with getaddrinfo() answers); in kernel mode use --segs or policy rules by prefix".into())
    } else if cli.reply_path {
        Some("--reply-path needs the shim; for a server the shim cannot reach, run srv6reply(8)".into())
    } else {
        // The kernel computes the digest only when it sends a socket's own SRH.
        policy.rules.iter().find(|r| r.path.hmac_key.is_some()).map(|r| {
            format!("rule {} asks for an HMAC TLV, which the kernel fills in only for the shim's headers", r.origin)
        })
    }
}

/// The policy as kernel rules, and the rules kernel mode cannot apply (limited to a host name: the kernel
/// sees addresses only), for a warning.
pub fn rules(policy: &Policy) -> Result<(Vec<RunRule>, Vec<&Rule>)> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for r in &policy.rules {
        if r.name.is_some() {
            skipped.push(r);
            continue;
        }
        let (srh, oif) = match r.path.segments.first() {
            None => (None, 0),
            Some(&first) => (
                Some(r.path.srh(std::net::Ipv6Addr::UNSPECIFIED).with_context(|| format!("rule {}", r.origin))?),
                route_device(first).with_context(|| format!("rule {}", r.origin))?,
            ),
        };
        out.push(RunRule {
            dst: r.dst,
            port: r.port,
            tcp: r.proto.covers(Proto::Tcp),
            udp: r.proto.covers(Proto::Udp),
            srh,
            oif,
        });
    }
    Ok((out, skipped))
}

/// The index of the device the route to `addr` leaves by (`ip -6 route get`): fixed when the run starts.
fn route_device(addr: std::net::Ipv6Addr) -> Result<u32> {
    let out = Command::new("ip")
        .args(["-j", "-6", "route", "get"])
        .arg(addr.to_string())
        .output()
        .context("running ip -6 route get (iproute2)")?;
    if !out.status.success() {
        bail!("no route to the first waypoint {addr}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).context("ip -j route get output")?;
    let dev = routes[0]["dev"].as_str().with_context(|| format!("no device in the route to {addr}: {routes}"))?;
    let name = CString::new(dev).context("device name")?;
    // SAFETY: a NUL-terminated name.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(std::io::Error::last_os_error()).with_context(|| format!("device {dev}")),
        i => Ok(i),
    }
}

/// Every network device of srv6run's network namespace but the loopback.
fn devices() -> Result<Vec<String>> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array ended by a zero entry, freed with if_freenameindex.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(std::io::Error::last_os_error()).context("listing network devices");
        }
        let mut p = list;
        while (*p).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
            if name != "lo" {
                out.push(name);
            }
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(out)
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Run PROGRAM steered in kernel mode; returns its exit status (128 + N when killed by signal N).
pub fn run(mut cmd: Command, policy: &Policy) -> Result<ExitCode> {
    if let Some(why) = missing_privilege() {
        bail!("{why}");
    }
    let (rules, skipped) = rules(policy)?;
    for r in skipped {
        eprintln!(
            "srv6run: warning: kernel mode cannot apply rule {} (limited to name {}: the kernel sees addresses only)",
            r.origin,
            r.name.as_deref().unwrap_or("")
        );
    }
    let root = run_cgroup::cgroup2_root()?;
    let cgroup = RunCgroup::create(&root)?;
    let devices = devices()?;
    let steer = CgroupSteer::attach(&devices, cgroup.id()?, &rules, policy.fail == FailMode::Closed)
        .context("attaching the steering programs")?;
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.procs())
        .with_context(|| format!("{}", cgroup.procs().display()))?;
    let procs_fd = procs.as_raw_fd();
    let parent = CString::new("0").expect("no NUL");
    // SAFETY: only async-signal-safe calls between fork and exec: prctl, write.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Into the cgroup before exec: every socket PROGRAM creates belongs to it.
            if libc::write(procs_fd, parent.as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the program")?;
    drop(procs);
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only reads an atomic and calls kill.
        unsafe { libc::signal(sig, forward as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
    let status = child.wait().context("waiting for the program")?;
    let counters = steer.counters()?;
    if counters.err_route + counters.too_long + counters.dropped > 0 {
        eprintln!("srv6run: warning: packets that could not be steered: {counters:?}");
    }
    drop(steer);
    drop(cgroup);
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(ExitCode::from(code as u8))
}
