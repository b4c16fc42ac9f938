//! Relay both directions of a flow between the inbound (client) and outbound (server) sockets.
//!
//! Each direction is a `Leg`: untransformed directions move bytes with splice(2) through a pipe (no copy
//! to user space) or a plain buffer; transformed ones read into an input buffer, run the function's
//! `process`, and write its output.
//!
//! Buffers and pipes are taken from a per-worker pool when data moves and given back as soon as the
//! direction has drained its socket (and the function holds no unconsumed input), so an idle flow holds
//! none (ARCHITECTURE §8, "Buffers per flow"): thousands of idle keep-alive flows cost a few KiB each,
//! not two or four buffers. The pool keeps a bounded number for reuse (no allocation per read in steady
//! state); buffers are mapped pages, so those beyond the pool go back to the system at once.
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

/// Buffers of each size, and pipes, that a worker keeps for reuse.
const POOL_KEEP: usize = 128;

/// A relay buffer: anonymous mapped pages, unmapped when dropped (so memory goes back to the system).
struct Buf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

impl Buf {
    fn map(len: usize) -> io::Result<Buf> {
        // SAFETY: an anonymous private mapping of `len` bytes; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(Buf { ptr, len })
    }
}

impl std::ops::Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` writable bytes owned by `self` alone, borrowed mutably here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made by `Buf::map`, which nothing references any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Free buffers or pipes kept for reuse, at most [`POOL_KEEP`]; those that stayed unused for a whole
/// trim period are released by [`trim_pools`], so an idle proxy goes back to its idle size.
struct Pool<T> {
    free: Vec<T>,
    /// The fewest free items since the last trim: that many were not needed.
    low: usize,
}

impl<T> Pool<T> {
    const fn new() -> Pool<T> {
        Pool { free: Vec::new(), low: 0 }
    }

    fn take(&mut self) -> Option<T> {
        let t = self.free.pop();
        self.low = self.low.min(self.free.len());
        t
    }

    fn give(&mut self, t: T) {
        if self.free.len() < POOL_KEEP {
            self.free.push(t);
        }
    }

    /// Release the items unused since the last trim.
    fn trim(&mut self) {
        let unused = self.low.min(self.free.len());
        self.free.truncate(self.free.len() - unused);
        self.low = self.free.len();
    }
}

thread_local! {
    /// Free buffers of this worker, by size.
    static BUFS: RefCell<Vec<(usize, Pool<Buf>)>> = const { RefCell::new(Vec::new()) };
}

/// Release, every `period`, the pooled buffers and pipes of this worker that stayed unused during the
/// whole previous period, and, when `live` (this process's live flows) fell to half of what it was at
/// the previous release or less, the memory the allocator keeps from the flows that ended. Runs for the
/// worker's life.
pub async fn trim_pools(period: std::time::Duration, live: impl Fn() -> u64) {
    let mut high = 0;
    loop {
        tokio::time::sleep(period).await;
        BUFS.with(|b| b.borrow_mut().iter_mut().for_each(|(_, p)| p.trim()));
        PIPES.with(|p| p.borrow_mut().trim());
        let now = live();
        high = high.max(now);
        if high >= 64 && now <= high / 2 {
            release_free_memory();
            high = now;
        }
    }
}

/// Give the allocator's free memory back to the system (glibc keeps the freed memory of ended flows in
/// its arenas otherwise).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's arenas; it takes their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A direction's buffer, taken from the pool when first used and given back by `release`.
struct Lazy {
    size: usize,
    buf: Option<Buf>,
}

impl Lazy {
    const fn new(size: usize) -> Lazy {
        Lazy { size, buf: None }
    }

    /// The buffer, taken from the pool (or mapped) if not held.
    fn get(&mut self) -> io::Result<&mut [u8]> {
        if self.buf.is_none() {
            let size = self.size;
            let pooled = BUFS.with(|b| b.borrow_mut().iter_mut().find(|(s, _)| *s == size).and_then(|(_, p)| p.take()));
            self.buf = Some(match pooled {
                Some(b) => b,
                None => Buf::map(size)?,
            });
        }
        Ok(self.buf.as_deref_mut().unwrap_or_default())
    }

    /// Give the buffer back (its content is no longer needed).
    fn release(&mut self) {
        if let Some(buf) = self.buf.take() {
            BUFS.with(|b| {
                let mut b = b.borrow_mut();
                match b.iter_mut().find(|(s, _)| *s == buf.len) {
                    Some((_, p)) => p.give(buf),
                    None => {
                        let mut p = Pool::new();
                        let size = buf.len;
                        p.give(buf);
                        b.push((size, p));
                    }
                }
            });
        }
    }
}

impl Drop for Lazy {
    fn drop(&mut self) {
        self.release();
    }
}

/// A pipe for splice.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

thread_local! {
    /// Empty pipes kept for reuse by this worker's flows.
    static PIPES: RefCell<Pool<Pipe>> = const { RefCell::new(Pool::new()) };
}

impl Pipe {
    fn get(size: usize) -> io::Result<Pipe> {
        if let Some(p) = PIPES.with(|p| p.borrow_mut().take()) {
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
        PIPES.with(|p| p.borrow_mut().give(self));
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

/// Read what is there into `buf`, or `None` when nothing is (the caller may then give its buffer back
/// and wait). A read shorter than `buf` drained the receive queue, so the socket's readiness is cleared
/// at once: the next wait goes straight to epoll instead of costing a read that fails with EAGAIN (one
/// syscall per message saved, which is what small requests are made of).
///
/// This is sound because the readiness is cleared synchronously, with no reactor turn since the read (the
/// worker is a current-thread runtime): anything arriving after the read produces a new edge-triggered
/// event. A pending FIN or error is never lost: tokio never clears the read-closed/error readiness.
fn try_read(src: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match src.try_read(buf) {
            Ok(n) => {
                if n > 0 && n < buf.len() {
                    let _ = src.try_io(Interest::READABLE, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
                }
                return Ok(Some(n));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
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

    /// Relay until the source's EOF, then half-close the destination. `inst` transforms this direction
    /// when given.
    async fn run(&self, inst: Option<&RefCell<Instance>>) -> Result<(), RelayError> {
        match inst {
            Some(inst) => self.transform(inst).await?,
            None => self.copy().await?,
        }
        // Half-close: our peer finished sending, so finish sending to the other side.
        SockRef::from(self.dst).shutdown(Shutdown::Write).map_err(io_err(self.dst_side()))
    }

    /// Wait until `src` is readable, holding no buffer meanwhile.
    async fn wait_readable(&self, bufs: &mut [&mut Lazy]) -> Result<(), RelayError> {
        for b in bufs {
            b.release();
        }
        self.src.readable().await.map_err(io_err(self.src_side()))
    }

    /// Copy through a buffer. With splice enabled, a read that fills the whole buffer (a bulk transfer)
    /// switches the direction to splice(2) for the rest of the flow: small messages stay on read/write,
    /// which costs fewer syscalls than two splices, and bulk data stops being copied to user space.
    async fn copy(&self) -> Result<(), RelayError> {
        let size = if self.cfg.splice { self.cfg.buffer_size.min(SMALL_COPY) } else { self.cfg.buffer_size };
        let mut buf = Lazy::new(size);
        let mut drained = false;
        loop {
            if drained {
                self.wait_readable(&mut [&mut buf]).await?;
            }
            let b = buf.get().map_err(io_err("buffer"))?;
            let Some(n) = try_read(self.src, b).map_err(io_err(self.src_side()))? else {
                drained = true;
                continue;
            };
            if n == 0 {
                return Ok(());
            }
            self.counted_in.fetch_add(n as u64, Relaxed);
            write_all(self.dst, &b[..n]).await.map_err(io_err(self.dst_side()))?;
            self.counted_out.fetch_add(n as u64, Relaxed);
            if self.cfg.splice && n == size {
                drop(buf);
                return self.splice().await;
            }
            drained = n < size;
        }
    }

    async fn splice(&self) -> Result<(), RelayError> {
        let size = self.cfg.pipe_size;
        let (src, dst) = (self.src, self.dst);
        let (sfd, dfd) = (src.as_raw_fd(), dst.as_raw_fd());
        // The pipe is empty whenever the source is waited for: it goes back to the pool then. While bytes
        // sit in it, it must not: it is dropped on error instead.
        let mut pipe = None;
        loop {
            let n = loop {
                let p = match &pipe {
                    Some(p) => p,
                    None => pipe.insert(Pipe::get(size).map_err(io_err("pipe"))?),
                };
                let pw = p.w.as_raw_fd();
                match src.try_io(Interest::READABLE, || splice(sfd, pw, size)) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Some(p) = pipe.take() {
                            p.put();
                        }
                        src.readable().await.map_err(io_err(self.src_side()))?
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(RelayError::Io { side: self.src_side(), err: e }),
                }
            };
            if n == 0 {
                if let Some(p) = pipe.take() {
                    p.put();
                }
                return Ok(());
            }
            self.counted_in.fetch_add(n as u64, Relaxed);
            let pr = pipe.as_ref().map(|p| p.r.as_raw_fd()).unwrap_or(-1);
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

    /// Read into the input buffer, run the function, write what it produced from the output buffer.
    /// Both go back to the pool while the source is waited for with no unconsumed input.
    async fn transform(&self, inst: &RefCell<Instance>) -> Result<(), RelayError> {
        let size = self.cfg.buffer_size;
        let (mut inb, mut outb) = (Lazy::new(size), Lazy::new(size));
        let mut have = 0usize;
        let mut eof = false;
        let mut drained = false;
        let name = || inst.borrow().function().name.clone();
        loop {
            if !eof {
                if drained {
                    if have == 0 {
                        self.wait_readable(&mut [&mut inb, &mut outb]).await?;
                    } else {
                        self.wait_readable(&mut [&mut outb]).await?;
                    }
                }
                let space = &mut inb.get().map_err(io_err("buffer"))?[have..];
                let room = space.len();
                match try_read(self.src, space).map_err(io_err(self.src_side()))? {
                    None => {
                        drained = true;
                        continue;
                    }
                    Some(0) => eof = true,
                    Some(n) => {
                        self.counted_in.fetch_add(n as u64, Relaxed);
                        have += n;
                        drained = n < room;
                    }
                }
            }
            let inbuf = inb.get().map_err(io_err("buffer"))?;
            let outbuf = outb.get().map_err(io_err("buffer"))?;
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
) -> Result<(), RelayError> {
    let (both, up_only, down_only) = match insts {
        Instances::Shared(i) => (i.map(RefCell::new), None, None),
        Instances::Split { up, down } => (None, up.map(RefCell::new), down.map(RefCell::new)),
    };
    let up_inst = both.as_ref().or(up_only.as_ref());
    let down_inst = both.as_ref().or(down_only.as_ref());
    let transforms = |i: Option<&RefCell<Instance>>, dir| i.is_some_and(|i| i.borrow().function().transforms(dir));
    let (t_up, t_down) = (transforms(up_inst, Direction::Up), transforms(down_inst, Direction::Down));
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
    let up = up_leg.run(up_inst.filter(|_| t_up));
    let down = down_leg.run(down_inst.filter(|_| t_down));
    let (mut up, mut down) = (pin!(up), pin!(down));
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => {
                r?;
                up_done = true;
                entry.set_state(if down_done { FlowState::Closing } else { FlowState::ClientClosed });
            }
            r = &mut down, if !down_done => {
                r?;
                down_done = true;
                entry.set_state(if up_done { FlowState::Closing } else { FlowState::ServerClosed });
            }
        }
    }
    Ok(())
}
