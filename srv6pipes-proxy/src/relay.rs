//! Relay both directions of a flow between the inbound (client) and outbound (server) sockets.
//!
//! Each direction is a pump: untransformed directions move bytes with splice(2) through a pipe (no copy
//! to user space) or a plain buffer; transformed ones read into a per-flow input buffer, run the
//! function's `process`, and write its output. Buffers are allocated once per flow, never per read.
//!
//! TCP semantics: a direction that reads EOF flushes its function (`SRV6PIPES_EOF`) and shuts down the
//! write side of the other socket, so half-close crosses the proxy; the other direction keeps flowing.
//! Any error (a reset, a failed write, a function error) ends both directions and the caller resets both
//! sockets, so a reset crosses the proxy too.

use std::cell::RefCell;
use std::ffi::c_int;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::flow::FlowConfig;
use crate::module::{self, Instance, ModuleError};
use crate::stats::{FlowEntry, FlowState};

/// Why a relay ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{side}: {err}")]
    Io { side: &'static str, err: io::Error },
    #[error("{0}")]
    Module(#[from] ModuleError),
    #[error("function {0} stalled: no progress (input buffer full, or MORE without output)")]
    Stalled(String),
}

fn io_err(side: &'static str) -> impl FnOnce(io::Error) -> RelayError {
    move |err| RelayError::Io { side, err }
}

/// Buffer of an untransformed direction before it switches to splice.
const SMALL_COPY: usize = 16 * 1024;

/// A pipe for splice.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

thread_local! {
    /// Empty pipes kept for reuse by this worker's flows.
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    fn get(size: usize) -> io::Result<Pipe> {
        if let Some(p) = PIPES.with(|p| p.borrow_mut().pop()) {
            return Ok(p);
        }
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let p = unsafe { Pipe { r: OwnedFd::from_raw_fd(fds[0]), w: OwnedFd::from_raw_fd(fds[1]) } };
        // SAFETY: plain fcntl on our own descriptor; failure only leaves the default size.
        unsafe { libc::fcntl(p.w.as_raw_fd(), libc::F_SETPIPE_SZ, size as c_int) };
        Ok(p)
    }

    /// Give back a pipe known to be empty.
    fn put(self) {
        PIPES.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < 256 {
                p.push(self);
            }
        });
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice between two descriptors this flow owns, no offsets (NULL: both are a socket or pipe).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Read what is there. A read shorter than `buf` drained the receive queue, so the socket's readiness is
/// cleared at once: the next wait goes straight to epoll instead of costing a read that fails with EAGAIN
/// (one syscall per message saved, which is what small requests are made of).
///
/// This is sound because the readiness is cleared synchronously, with no reactor turn since the read (the
/// worker is a current-thread runtime): anything arriving after the read produces a new edge-triggered
/// event. A pending FIN or error is never lost: tokio never clears the read-closed/error readiness.
async fn read(src: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match src.try_read(buf) {
            Ok(n) => {
                if n > 0 && n < buf.len() {
                    let _ = src.try_io(Interest::READABLE, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
                }
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => src.readable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(dst: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match dst.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Names of the two sides for errors: reading side, writing side.
type Sides = (&'static str, &'static str);

/// Copy through `buf`. With `splice_when_bulk`, a read that fills the whole buffer (a bulk transfer)
/// switches the direction to splice(2) for the rest of the flow: small messages stay on read/write, which
/// costs fewer syscalls than two splices, and bulk data stops being copied to user space.
#[allow(clippy::too_many_arguments)]
async fn pump_copy(
    src: &TcpStream,
    dst: &TcpStream,
    buf: &mut [u8],
    splice_when_bulk: bool,
    cfg: &FlowConfig,
    ctr_in: &AtomicU64,
    ctr_out: &AtomicU64,
    sides: Sides,
) -> Result<(), RelayError> {
    loop {
        let n = read(src, buf).await.map_err(io_err(sides.0))?;
        if n == 0 {
            return Ok(());
        }
        ctr_in.fetch_add(n as u64, Relaxed);
        write_all(dst, &buf[..n]).await.map_err(io_err(sides.1))?;
        ctr_out.fetch_add(n as u64, Relaxed);
        if splice_when_bulk && n == buf.len() {
            return pump_splice(src, dst, cfg, ctr_in, ctr_out, sides).await;
        }
    }
}

async fn pump_splice(
    src: &TcpStream,
    dst: &TcpStream,
    cfg: &FlowConfig,
    ctr_in: &AtomicU64,
    ctr_out: &AtomicU64,
    sides: Sides,
) -> Result<(), RelayError> {
    let pipe = Pipe::get(cfg.pipe_size).map_err(io_err("pipe"))?;
    let (sfd, dfd) = (src.as_raw_fd(), dst.as_raw_fd());
    let (pr, pw) = (pipe.r.as_raw_fd(), pipe.w.as_raw_fd());
    // While bytes sit in the pipe, the pipe must not go back to the pool: it is dropped on error instead.
    loop {
        let n = loop {
            match src.try_io(Interest::READABLE, || splice(sfd, pw, cfg.pipe_size)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => src.readable().await.map_err(io_err(sides.0))?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RelayError::Io { side: sides.0, err: e }),
            }
        };
        if n == 0 {
            pipe.put();
            return Ok(());
        }
        ctr_in.fetch_add(n as u64, Relaxed);
        let mut left = n;
        while left > 0 {
            match dst.try_io(Interest::WRITABLE, || splice(pr, dfd, left)) {
                Ok(m) => {
                    left -= m;
                    ctr_out.fetch_add(m as u64, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await.map_err(io_err(sides.1))?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RelayError::Io { side: sides.1, err: e }),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn pump_func(
    src: &TcpStream,
    dst: &TcpStream,
    inst: &RefCell<Instance>,
    dir: c_int,
    inbuf: &mut [u8],
    outbuf: &mut [u8],
    ctr_in: &AtomicU64,
    ctr_out: &AtomicU64,
    sides: Sides,
) -> Result<(), RelayError> {
    let mut have = 0usize;
    let mut eof = false;
    loop {
        if !eof {
            let n = read(src, &mut inbuf[have..]).await.map_err(io_err(sides.0))?;
            if n == 0 {
                eof = true;
            } else {
                ctr_in.fetch_add(n as u64, Relaxed);
                have += n;
            }
        }
        // Run the function until it wants more input (or, at EOF, until it has flushed everything).
        loop {
            // The RefCell borrow never crosses an await: both directions share the instance.
            let step = inst.borrow_mut().process(dir, &inbuf[..have], outbuf, eof)?;
            if step.consumed > 0 {
                inbuf.copy_within(step.consumed..have, 0);
                have -= step.consumed;
            }
            if step.produced > 0 {
                write_all(dst, &outbuf[..step.produced]).await.map_err(io_err(sides.1))?;
                ctr_out.fetch_add(step.produced as u64, Relaxed);
            }
            if step.more {
                if step.consumed == 0 && step.produced == 0 {
                    return Err(RelayError::Stalled(inst.borrow().function().name.clone()));
                }
                continue;
            }
            if eof {
                if have > 0 {
                    return Err(RelayError::Module(ModuleError::Contract {
                        name: inst.borrow().function().name.clone(),
                        reason: "returned OK at EOF without consuming all input",
                    }));
                }
                return Ok(());
            }
            if step.consumed == 0 && step.produced == 0 && have == inbuf.len() {
                return Err(RelayError::Stalled(inst.borrow().function().name.clone()));
            }
            break;
        }
    }
}

enum Pump<'a> {
    Copy(&'a mut [u8]),
    Func(&'a mut [u8], &'a mut [u8]),
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    how: Pump<'_>,
    inst: Option<&RefCell<Instance>>,
    dir: c_int,
    cfg: &FlowConfig,
    ctr_in: &AtomicU64,
    ctr_out: &AtomicU64,
) -> Result<(), RelayError> {
    let sides = if dir == module::UP { ("client", "server") } else { ("server", "client") };
    match (how, inst) {
        (Pump::Func(i, o), Some(inst)) => pump_func(src, dst, inst, dir, i, o, ctr_in, ctr_out, sides).await?,
        (Pump::Copy(b), _) | (Pump::Func(b, _), None) => {
            pump_copy(src, dst, b, cfg.splice, cfg, ctr_in, ctr_out, sides).await?
        }
    }
    // Half-close: our peer finished sending, so finish sending to the other side.
    SockRef::from(dst).shutdown(Shutdown::Write).map_err(io_err(sides.1))
}

/// Which side of a cleanly closed flow the proxy closed first (so that side of the proxy holds the
/// TIME_WAIT socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstFin {
    /// The client finished first: the proxy sent the first FIN to the server (outbound leg).
    ToServer,
    /// The server finished first: the proxy sent the first FIN to the client (inbound leg).
    ToClient,
}

/// Relay until both directions are finished (Ok) or one fails (Err: the caller resets both sockets).
pub async fn relay(
    client: &TcpStream,
    server: &TcpStream,
    inst: Option<Instance>,
    entry: &FlowEntry,
    cfg: &FlowConfig,
) -> Result<FirstFin, RelayError> {
    let transforms = |dir| inst.as_ref().is_some_and(|i| i.function().transforms(dir));
    let (t_up, t_down) = (transforms(module::UP), transforms(module::DOWN));
    // Untransformed directions that may switch to splice only need a buffer for small messages.
    let copy_size = if cfg.splice { cfg.buffer_size.min(SMALL_COPY) } else { cfg.buffer_size };
    let need = |t: bool| if t { 2 * cfg.buffer_size } else { copy_size };
    let mut mem = vec![0u8; need(t_up) + need(t_down)];
    let (up_mem, down_mem) = mem.split_at_mut(need(t_up));
    fn mk<'a>(t: bool, m: &'a mut [u8], cfg: &FlowConfig) -> Pump<'a> {
        if t {
            let (i, o) = m.split_at_mut(cfg.buffer_size);
            Pump::Func(i, o)
        } else {
            Pump::Copy(m)
        }
    }
    let inst = inst.map(RefCell::new);
    let up = pump(client, server, mk(t_up, up_mem, cfg), inst.as_ref(), module::UP, cfg, &entry.up_in, &entry.up_out);
    let down = pump(
        server,
        client,
        mk(t_down, down_mem, cfg),
        inst.as_ref(),
        module::DOWN,
        cfg,
        &entry.down_in,
        &entry.down_out,
    );
    let (mut up, mut down) = (pin!(up), pin!(down));
    let (mut up_done, mut down_done) = (false, false);
    let mut first = None;
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => {
                r?;
                up_done = true;
                first.get_or_insert(FirstFin::ToServer);
                entry.set_state(if down_done { FlowState::Closing } else { FlowState::ClientClosed });
            }
            r = &mut down, if !down_done => {
                r?;
                down_done = true;
                first.get_or_insert(FirstFin::ToClient);
                entry.set_state(if up_done { FlowState::Closing } else { FlowState::ServerClosed });
            }
        }
    }
    Ok(first.unwrap_or(FirstFin::ToServer))
}
