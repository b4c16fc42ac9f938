//! Paths learned from the resolver agent: address → SRH, until the DNS answer's TTL runs out.
//!
//! A fixed table of slots, each guarded by a sequence lock made of atomics: `getaddrinfo()` writes,
//! `connect()` reads, in any thread, a signal handler or a forked child, without a lock or an allocation.
//! A writer that finds a slot busy (another writer) gives up: the table is a cache, a lost entry only means
//! no path for that address. A reader retries a few times and otherwise sees nothing.

use std::net::Ipv6Addr;
use std::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use libsrv6sock::wire::srh;

const SLOTS: usize = 64;
const WORDS: usize = srh::MAX_LEN / 8;
/// Reads of a slot under concurrent writes before giving up.
const READ_TRIES: usize = 4;

/// What the table says about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Nothing (never learned, or expired): the policy decides.
    Unknown,
    /// DNS gives this SRH, of this many bytes (copied to the caller's buffer).
    Path(usize),
    /// DNS gave the name but no path for this address: the policy decides.
    NoPath,
    /// The agent failed for this address's name and the failure policy is closed: refuse.
    Refuse,
}

const KIND_EMPTY: u8 = 0;
const KIND_PATH: u8 = 1;
const KIND_NO_PATH: u8 = 2;
const KIND_REFUSE: u8 = 3;

struct Slot {
    /// Odd while a writer is in the slot.
    seq: AtomicU32,
    hi: AtomicU64,
    lo: AtomicU64,
    /// CLOCK_MONOTONIC milliseconds after which the slot is void.
    expires: AtomicU64,
    kind: AtomicU8,
    len: AtomicU16,
    srh: [AtomicU64; WORDS],
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    seq: AtomicU32::new(0),
    hi: AtomicU64::new(0),
    lo: AtomicU64::new(0),
    expires: AtomicU64::new(0),
    kind: AtomicU8::new(KIND_EMPTY),
    len: AtomicU16::new(0),
    srh: [const { AtomicU64::new(0) }; WORDS],
};

static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// CLOCK_MONOTONIC in milliseconds (vDSO: no system call).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000).saturating_add(ts.tv_nsec as u64 / 1_000_000)
}

fn split(addr: Ipv6Addr) -> (u64, u64) {
    let v = u128::from(addr);
    ((v >> 64) as u64, v as u64)
}

fn store(addr: Ipv6Addr, expires: u64, kind: u8, bytes: &[u8]) {
    if bytes.len() > srh::MAX_LEN {
        return;
    }
    let (hi, lo) = split(addr);
    let slot = TABLE
        .iter()
        .find(|s| s.hi.load(Ordering::Relaxed) == hi && s.lo.load(Ordering::Relaxed) == lo)
        .unwrap_or_else(|| &TABLE[NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS]);
    let seq = slot.seq.load(Ordering::Relaxed);
    if seq % 2 == 1
        || slot.seq.compare_exchange(seq, seq.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed).is_err()
    {
        return;
    }
    fence(Ordering::Release);
    slot.hi.store(hi, Ordering::Relaxed);
    slot.lo.store(lo, Ordering::Relaxed);
    slot.expires.store(expires, Ordering::Relaxed);
    slot.kind.store(kind, Ordering::Relaxed);
    slot.len.store(bytes.len() as u16, Ordering::Relaxed);
    for (word, chunk) in slot.srh.iter().zip(bytes.chunks(8)) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        word.store(u64::from_ne_bytes(w), Ordering::Relaxed);
    }
    slot.seq.store(seq.wrapping_add(2), Ordering::Release);
}

/// Remember `srh` for `addr` for `ttl_ms` milliseconds.
pub fn remember_path(addr: Ipv6Addr, ttl_ms: u64, srh: &[u8]) {
    store(addr, now_ms().saturating_add(ttl_ms), KIND_PATH, srh);
}

/// Remember that DNS gives `addr` no path, for `ttl_ms` milliseconds.
pub fn remember_no_path(addr: Ipv6Addr, ttl_ms: u64) {
    store(addr, now_ms().saturating_add(ttl_ms), KIND_NO_PATH, &[]);
}

/// Remember, for `ttl_ms` milliseconds, that connections to `addr` must be refused.
pub fn remember_refuse(addr: Ipv6Addr, ttl_ms: u64) {
    store(addr, now_ms().saturating_add(ttl_ms), KIND_REFUSE, &[]);
}

/// What is known about `addr` now; a path's SRH is copied into `out`.
pub fn get(addr: Ipv6Addr, out: &mut [u8; srh::MAX_LEN]) -> Learned {
    let (hi, lo) = split(addr);
    let now = now_ms();
    for slot in &TABLE {
        if slot.hi.load(Ordering::Relaxed) != hi || slot.lo.load(Ordering::Relaxed) != lo {
            continue;
        }
        for _ in 0..READ_TRIES {
            let before = slot.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let same = slot.hi.load(Ordering::Relaxed) == hi && slot.lo.load(Ordering::Relaxed) == lo;
            let expires = slot.expires.load(Ordering::Relaxed);
            let kind = slot.kind.load(Ordering::Relaxed);
            let len = (slot.len.load(Ordering::Relaxed) as usize).min(srh::MAX_LEN);
            if kind == KIND_PATH {
                for (chunk, word) in out[..len].chunks_mut(8).zip(&slot.srh) {
                    let w = word.load(Ordering::Relaxed).to_ne_bytes();
                    chunk.copy_from_slice(&w[..chunk.len()]);
                }
            }
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) != before {
                continue;
            }
            if !same || now >= expires {
                break;
            }
            return match kind {
                KIND_PATH => Learned::Path(len),
                KIND_NO_PATH => Learned::NoPath,
                KIND_REFUSE => Learned::Refuse,
                _ => Learned::Unknown,
            };
        }
    }
    Learned::Unknown
}
