//! Where packets come from: live interfaces (one capture thread each, decoding as it goes) or a pcap file.
//! Frames reach the monitor through a bounded channel; when the monitor cannot keep up, live captures drop
//! and count rather than queue without end, so the screen never lags behind the wire.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use srv6pipes_capture::{decode_packet, Frame, LinkType, PcapFile};

/// Frames handed over at once: one channel operation per batch, not per packet.
const BATCH: usize = 512;
/// Batches in flight between the capture threads and the monitor (about 64 Ki frames).
const CHANNEL_BATCHES: usize = 128;
/// The longest a live frame waits in a partial batch, so that a trickle of packets is shown promptly.
const BATCH_DELAY: Duration = Duration::from_millis(20);
/// How long a capture thread waits for a packet before it checks whether to stop.
const READ_TIMEOUT_MS: i32 = 100;
/// How often a live capture reads the kernel's drop counter.
const STATS_INTERVAL: Duration = Duration::from_millis(500);

/// What a capture thread tells the monitor.
#[derive(Debug)]
pub enum Event {
    /// Decoded frames, in capture order.
    Frames(Vec<Frame>),
    /// The source ended: a file was read to its end, or a capture failed (the reason).
    Ended(Result<(), String>),
}

/// Live capture settings.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Interfaces to capture on (`any` for all).
    pub interfaces: Vec<String>,
    /// pcap-filter(7) expression.
    pub filter: String,
    /// Bytes kept per packet.
    pub snaplen: i32,
    /// Write what is captured to this pcap file.
    pub write: Option<PathBuf>,
}

/// The running source: frames to read and the losses so far.
pub struct Feed {
    /// Frames and the end of the source.
    pub events: Receiver<Event>,
    dropped: Arc<AtomicU64>,
    kernel_dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Feed {
    /// Frames the monitor could not take in time (live captures only).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Packets the kernel dropped before libpcap got them.
    pub fn kernel_dropped(&self) -> u64 {
        self.kernel_dropped.load(Ordering::Relaxed)
    }

    /// Stop capturing and wait for the live capture threads; what they captured stays in `events`, so that a
    /// report covers exactly what `-w` wrote. Only for live captures or a file read to its end: a file reader
    /// blocked on a full channel would never finish.
    pub fn stop_capture(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Stop the capture threads and wait for them (the pcap file being written is complete after this).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.events);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Why capturing could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The capture needs privileges the process lacks.
    #[error(
        "capturing on {interface} is not permitted: {reason}\n\
         srv6top needs CAP_NET_RAW to capture (CAP_NET_ADMIN too for promiscuous mode): run it as root, or give \
         the binary the capability once with `setcap cap_net_raw+ep {exe}`"
    )]
    Permission {
        /// The interface.
        interface: String,
        /// libpcap's message.
        reason: String,
        /// This program's path, for the setcap command.
        exe: String,
    },
    /// Any other libpcap failure (no such interface, bad filter…).
    #[error("{interface}: {reason}")]
    Pcap {
        /// The interface.
        interface: String,
        /// libpcap's message.
        reason: String,
    },
    /// The interface's link layer is not one the decoder reads.
    #[error("{interface}: link type {linktype} is not Ethernet, Linux cooked or raw IP")]
    LinkType {
        /// The interface.
        interface: String,
        /// The DLT number.
        linktype: i32,
    },
    /// `-w` with several interfaces of different link types (one pcap file has one link type).
    #[error("-w needs one interface (or `-i any`): a pcap file has a single link type")]
    WriteSeveral,
    /// The capture file.
    #[error(transparent)]
    File(#[from] srv6pipes_capture::CaptureError),
}

/// Read `path` in a thread; the file is never sampled: the thread waits when the monitor is busy.
pub fn open_file(path: &Path) -> Result<Feed, SourceError> {
    let file = PcapFile::open(path)?;
    let (tx, rx) = sync_channel(CHANNEL_BATCHES);
    let thread = std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(BATCH);
        for frame in file {
            match frame {
                Ok(f) => batch.push(f),
                Err(e) => {
                    let _ = tx.send(Event::Frames(batch));
                    let _ = tx.send(Event::Ended(Err(e.to_string())));
                    return;
                }
            }
            if batch.len() == BATCH
                && tx.send(Event::Frames(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))).is_err()
            {
                return;
            }
        }
        let _ = tx.send(Event::Frames(batch));
        let _ = tx.send(Event::Ended(Ok(())));
    });
    Ok(Feed {
        events: rx,
        dropped: Arc::default(),
        kernel_dropped: Arc::default(),
        stop: Arc::default(),
        threads: vec![thread],
    })
}

/// Start capturing on every interface of `opts`.
pub fn open_live(opts: &LiveOptions) -> Result<Feed, SourceError> {
    if opts.write.is_some() && opts.interfaces.len() > 1 {
        return Err(SourceError::WriteSeveral);
    }
    let (tx, rx) = sync_channel(CHANNEL_BATCHES);
    let dropped = Arc::new(AtomicU64::new(0));
    let kernel_dropped = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Open every capture before starting any thread, so that an error leaves nothing running.
    let captures = opts.interfaces.iter().map(|i| open_interface(i, opts)).collect::<Result<Vec<_>, _>>()?;
    let threads = captures
        .into_iter()
        .map(|c| {
            let shared = Shared {
                tx: tx.clone(),
                dropped: dropped.clone(),
                kernel_dropped: kernel_dropped.clone(),
                stop: stop.clone(),
            };
            std::thread::spawn(move || capture_loop(c, &shared))
        })
        .collect();
    Ok(Feed { events: rx, dropped, kernel_dropped, stop, threads })
}

/// An open live capture.
struct Interface {
    name: String,
    capture: pcap::Capture<pcap::Active>,
    link: LinkType,
    save: Option<pcap::Savefile>,
}

/// What the capture threads share with the monitor.
struct Shared {
    tx: SyncSender<Event>,
    dropped: Arc<AtomicU64>,
    kernel_dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

fn open_interface(name: &str, opts: &LiveOptions) -> Result<Interface, SourceError> {
    let pcap_error = |e: pcap::Error| {
        let reason = e.to_string();
        if reason.contains("permission") || reason.contains("not permitted") {
            let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "srv6top".into());
            SourceError::Permission { interface: name.to_string(), reason, exe }
        } else {
            SourceError::Pcap { interface: name.to_string(), reason }
        }
    };
    let mut capture = pcap::Capture::from_device(name)
        .map_err(pcap_error)?
        .snaplen(opts.snaplen)
        .immediate_mode(true)
        .timeout(READ_TIMEOUT_MS)
        .buffer_size(16 << 20)
        .open()
        .map_err(pcap_error)?;
    capture.filter(&opts.filter, true).map_err(pcap_error)?;
    let linktype = capture.get_datalink().0;
    let link = LinkType::from_pcap(linktype).ok_or(SourceError::LinkType { interface: name.to_string(), linktype })?;
    let save = match &opts.write {
        Some(path) => Some(capture.savefile(path).map_err(pcap_error)?),
        None => None,
    };
    Ok(Interface { name: name.to_string(), capture, link, save })
}

fn capture_loop(mut c: Interface, shared: &Shared) {
    let mut frame = 0;
    let mut last_stats = Instant::now();
    let mut kernel_seen = 0;
    let mut batch = Vec::with_capacity(BATCH);
    let mut batch_started = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        match c.capture.next_packet() {
            Ok(p) => {
                frame += 1;
                if let Some(save) = &mut c.save {
                    save.write(&p);
                }
                if batch.is_empty() {
                    batch_started = Instant::now();
                }
                batch.push(decode_packet(c.link, frame, &p));
            }
            Err(pcap::Error::TimeoutExpired) => {}
            Err(e) => {
                let _ = shared.tx.send(Event::Frames(batch));
                let _ = shared.tx.send(Event::Ended(Err(format!("{}: {e}", c.name))));
                return;
            }
        }
        if batch.len() == BATCH || (!batch.is_empty() && batch_started.elapsed() >= BATCH_DELAY) {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            let n = full.len() as u64;
            match shared.tx.try_send(Event::Frames(full)) {
                Ok(()) => {}
                // The monitor is behind: drop and count rather than queue without end.
                Err(TrySendError::Full(_)) => {
                    shared.dropped.fetch_add(n, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        if last_stats.elapsed() >= STATS_INTERVAL {
            last_stats = Instant::now();
            if let Ok(s) = c.capture.stats() {
                let now = u64::from(s.dropped) + u64::from(s.if_dropped);
                shared.kernel_dropped.fetch_add(now.saturating_sub(kernel_seen), Ordering::Relaxed);
                kernel_seen = now;
            }
            if let Some(save) = &mut c.save {
                let _ = save.flush();
            }
        }
    }
    let n = batch.len() as u64;
    if n > 0 && shared.tx.try_send(Event::Frames(batch)).is_err() {
        shared.dropped.fetch_add(n, Ordering::Relaxed);
    }
    if let Some(save) = &mut c.save {
        let _ = save.flush();
    }
}
