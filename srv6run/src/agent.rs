//! `--dns-paths`: start the resolver agent that answers the shim (`srv6pipes_dns::agent`) before PROGRAM is
//! exec'd.
//!
//! The agent is a grandchild (reparented, so PROGRAM never sees or reaps an unknown child), in its own
//! session (a ^C for PROGRAM does not end it first). It lives as long as PROGRAM's process tree: PROGRAM
//! inherits the write end of a pipe whose read end only the agent holds, every descendant inherits it in
//! turn, and the agent exits when the last holder is gone (end of file). Its socket is abstract (nothing to
//! clean up) and named in `SRV6_AGENT`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

use anyhow::{bail, Context, Result};
use srv6pipes_dns::lookup::LookupConfig;

/// Start the agent; returns the value of `SRV6_AGENT` for PROGRAM. Must be called while srv6run has a
/// single thread (it forks).
pub fn launch(config: &LookupConfig) -> Result<String> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos());
    let name = format!("srv6run-agent-{}-{}", std::process::id(), nanos.unwrap_or(0));
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).context("agent socket name")?;
    let listener = UnixListener::bind_addr(&addr).context("binding the agent's socket")?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe for the agent's lifetime");
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (life_r, life_w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // SAFETY: srv6run is single-threaded here; the child only forks again and exits.
    match unsafe { libc::fork() } {
        -1 => return Err(std::io::Error::last_os_error()).context("fork for the agent"),
        0 => {
            // SAFETY: as above; the intermediate child exits at once so the agent is reparented.
            if unsafe { libc::fork() } == 0 {
                drop(life_w);
                serve(listener, life_r, config);
            }
            // SAFETY: _exit ends the intermediate child without running srv6run's exit handlers.
            unsafe { libc::_exit(0) };
        }
        child => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(child, &mut status, 0) };
        }
    }
    drop(listener);
    drop(life_r);
    // PROGRAM (and every process it starts) inherits the write end.
    // SAFETY: clearing FD_CLOEXEC on our own descriptor.
    if unsafe { libc::fcntl(life_w.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
        bail!("cannot pass the agent's lifetime pipe to the program: {}", std::io::Error::last_os_error());
    }
    std::mem::forget(life_w);
    Ok(format!("@{name}"))
}

/// The agent process: detach, silence standard streams, serve until the program's tree is gone.
fn serve(listener: UnixListener, life: OwnedFd, config: &LookupConfig) -> ! {
    // SAFETY: setsid and the descriptor juggling below only affect this new process.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
    let code = i32::from(srv6pipes_dns::agent::run(listener, Some(life), config).is_err());
    // SAFETY: ending the agent without running inherited exit handlers.
    unsafe { libc::_exit(code) }
}
