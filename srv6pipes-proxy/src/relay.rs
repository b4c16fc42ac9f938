//! Relay both directions of a flow between the inbound (client) and outbound (server) sockets.
//!
//! Each direction is a `Leg`: untransformed directions move bytes with splice(2) through a pipe (no copy
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

use srv6pipes_api::abi::Direction;
use srv6pipes_api::control::FlowState;

use crate::module::{Instance, ModuleError};
use crate::stats::FlowEntry;

/// Why a relay ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A socket or pipe call failed.
    #[error("{side}: {err}")]
    Io {
        /// Which: `client`, `server` or `pipe`.
        side: &'static str,
        /// The error.
        err: io::Error,
    },
    /// The function failed or broke the ABI contract.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// The function made no progress.
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

/// Settings of the relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Bytes per relay buffer (each transformed direction has an input and an output buffer).
    pub buffer_size: usize,
    /// Relay untransformed directions with splice(2) once they carry bulk data.
    pub splice: bool,
    /// Pipe size for splice.
    pub pipe_size: usize,
}

/// The buffers of one direction.
enum Buffers<'a> {
    /// Relayed unchanged.
    Copy(&'a mut [u8]),
    /// Through the function: input and output.
    Transform(&'a mut [u8], &'a mut [u8]),
}

/// One direction of a flow: where its bytes come from and go to, and the counters they add to.
struct Leg<'a> {
    dir: Direction,
    src: &'a TcpStream,
    dst: &'a TcpStream,
    /// Bytes read from `src`.
    counted_in: &'a AtomicU64,
    /// Bytes written to `dst`.
    counted_out: &'a AtomicU64,
    cfg: &'a RelayConfig,
}

impl Leg<'_> {
    /// Name of the reading side, for errors.
    fn src_side(&self) -> &'static str {
        match self.dir {
            Direction::Up => "client",
            Direction::Down => "server",
        }
    }

    /// Name of the writing side, for errors.
    fn dst_side(&self) -> &'static str {
        match self.dir {
            Direction::Up => "server",
            Direction::Down => "client",
        }
    }

    /// Relay until the source's EOF, then half-close the destination.
    async fn run(&self, buffers: Buffers<'_>, inst: Option<&RefCell<Instance>>) -> Result<(), RelayError> {
        match (buffers, inst) {
            (Buffers::Transform(input, output), Some(inst)) => self.transform(inst, input, output).await?,
            (Buffers::Copy(buf), _) | (Buffers::Transform(buf, _), None) => self.copy(buf).await?,
        }
        // Half-close: our peer finished sending, so finish sending to the other side.
        SockRef::from(self.dst).shutdown(Shutdown::Write).map_err(io_err(self.dst_side()))
    }

    /// Copy through `buf`. With splice enabled, a read that fills the whole buffer (a bulk transfer)
    /// switches the direction to splice(2) for the rest of the flow: small messages stay on read/write,
    /// which costs fewer syscalls than two splices, and bulk data stops being copied to user space.
    async fn copy(&self, buf: &mut [u8]) -> Result<(), RelayError> {
        loop {
            let n = read(self.src, buf).await.map_err(io_err(self.src_side()))?;
            if n == 0 {
                return Ok(());
            }
            self.counted_in.fetch_add(n as u64, Relaxed);
            write_all(self.dst, &buf[..n]).await.map_err(io_err(self.dst_side()))?;
            self.counted_out.fetch_add(n as u64, Relaxed);
            if self.cfg.splice && n == buf.len() {
                return self.splice().await;
            }
        }
    }

    async fn splice(&self) -> Result<(), RelayError> {
        let size = self.cfg.pipe_size;
        let pipe = Pipe::get(size).map_err(io_err("pipe"))?;
        let (src, dst) = (self.src, self.dst);
        let (sfd, dfd) = (src.as_raw_fd(), dst.as_raw_fd());
        let (pr, pw) = (pipe.r.as_raw_fd(), pipe.w.as_raw_fd());
        // While bytes sit in the pipe, the pipe must not go back to the pool: it is dropped on error instead.
        loop {
            let n = loop {
                match src.try_io(Interest::READABLE, || splice(sfd, pw, size)) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        src.readable().await.map_err(io_err(self.src_side()))?
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(RelayError::Io { side: self.src_side(), err: e }),
                }
            };
            if n == 0 {
                pipe.put();
                return Ok(());
            }
            self.counted_in.fetch_add(n as u64, Relaxed);
            let mut left = n;
            while left > 0 {
                match dst.try_io(Interest::WRITABLE, || splice(pr, dfd, left)) {
                    Ok(m) => {
                        left -= m;
                        self.counted_out.fetch_add(m as u64, Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        dst.writable().await.map_err(io_err(self.dst_side()))?
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(RelayError::Io { side: self.dst_side(), err: e }),
                }
            }
        }
    }

    /// Read into `inbuf`, run the function, write what it produced from `outbuf`.
    async fn transform(&self, inst: &RefCell<Instance>, inbuf: &mut [u8], outbuf: &mut [u8]) -> Result<(), RelayError> {
        let mut have = 0usize;
        let mut eof = false;
        let name = || inst.borrow().function().name.clone();
        loop {
            if !eof {
                let n = read(self.src, &mut inbuf[have..]).await.map_err(io_err(self.src_side()))?;
                if n == 0 {
                    eof = true;
                } else {
                    self.counted_in.fetch_add(n as u64, Relaxed);
                    have += n;
                }
            }
            // Run the function until it wants more input (or, at EOF, until it has flushed everything).
            loop {
                // The RefCell borrow never crosses an await: both directions share the instance.
                let step = inst.borrow_mut().process(self.dir, &inbuf[..have], outbuf, eof)?;
                if step.consumed > 0 {
                    inbuf.copy_within(step.consumed..have, 0);
                    have -= step.consumed;
                }
                if step.produced > 0 {
                    write_all(self.dst, &outbuf[..step.produced]).await.map_err(io_err(self.dst_side()))?;
                    self.counted_out.fetch_add(step.produced as u64, Relaxed);
                }
                if step.more {
                    if step.consumed == 0 && step.produced == 0 {
                        return Err(RelayError::Stalled(name()));
                    }
                    continue;
                }
                if eof {
                    if have > 0 {
                        return Err(RelayError::Module(ModuleError::Contract {
                            name: name(),
                            reason: "returned OK at EOF without consuming all input",
                        }));
                    }
                    return Ok(());
                }
                if step.consumed == 0 && step.produced == 0 && have == inbuf.len() {
                    return Err(RelayError::Stalled(name()));
                }
                break;
            }
        }
    }
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

/// The function instances of a flow (`None`: that direction is relayed unchanged).
pub enum Instances {
    /// One instance sees both directions: the forward SID's function.
    Shared(Option<Instance>),
    /// Each direction has its own: the return path names another function for this proxy.
    Split {
        /// The forward SID's function, for client → server bytes.
        up: Option<Instance>,
        /// The return SID's function, for server → client bytes.
        down: Option<Instance>,
    },
}

/// Relay until both directions are finished (Ok) or one fails (Err: the caller resets both sockets).
pub async fn relay(
    client: &TcpStream,
    server: &TcpStream,
    insts: Instances,
    entry: &FlowEntry,
    cfg: &RelayConfig,
) -> Result<FirstFin, RelayError> {
    let (both, up_only, down_only) = match insts {
        Instances::Shared(i) => (i.map(RefCell::new), None, None),
        Instances::Split { up, down } => (None, up.map(RefCell::new), down.map(RefCell::new)),
    };
    let up_inst = both.as_ref().or(up_only.as_ref());
    let down_inst = both.as_ref().or(down_only.as_ref());
    let transforms = |i: Option<&RefCell<Instance>>, dir| i.is_some_and(|i| i.borrow().function().transforms(dir));
    let (t_up, t_down) = (transforms(up_inst, Direction::Up), transforms(down_inst, Direction::Down));
    // Untransformed directions that may switch to splice only need a buffer for small messages.
    let copy_size = if cfg.splice { cfg.buffer_size.min(SMALL_COPY) } else { cfg.buffer_size };
    let need = |t: bool| if t { 2 * cfg.buffer_size } else { copy_size };
    let mut mem = vec![0u8; need(t_up) + need(t_down)];
    let (up_mem, down_mem) = mem.split_at_mut(need(t_up));
    fn buffers<'a>(transforms: bool, mem: &'a mut [u8], cfg: &RelayConfig) -> Buffers<'a> {
        if transforms {
            let (i, o) = mem.split_at_mut(cfg.buffer_size);
            Buffers::Transform(i, o)
        } else {
            Buffers::Copy(mem)
        }
    }
    let up_leg =
        Leg { dir: Direction::Up, src: client, dst: server, counted_in: &entry.up_in, counted_out: &entry.up_out, cfg };
    let down_leg = Leg {
        dir: Direction::Down,
        src: server,
        dst: client,
        counted_in: &entry.down_in,
        counted_out: &entry.down_out,
        cfg,
    };
    let up = up_leg.run(buffers(t_up, up_mem, cfg), up_inst);
    let down = down_leg.run(buffers(t_down, down_mem, cfg), down_inst);
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
