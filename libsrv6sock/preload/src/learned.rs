//! Paths learned from the resolver agent, per (name, address), until the DNS answer's TTL runs out; and which
//! name each thread last resolved to an address.
//!
//! The table: a fixed number of slots (`SRV6_PATHS`, allocated zeroed once by the constructor), each guarded
//! by a sequence lock made of atomics: `getaddrinfo()` writes, `connect()` reads, in any thread, a signal
//! handler or a forked child, without a lock or an allocation. A new entry takes an empty or expired slot
//! first, else the one expiring soonest (an eviction, which [`store`] reports so that it is logged). A
//! writer that finds a slot busy (another writer) gives up: the entry is then missing, which `connect()`
//! treats like an eviction. A reader retries a few times and otherwise sees nothing.
//!
//! Which name an address came from: two names may resolve to one address (virtual hosts, CDNs) with
//! different paths. The rule: `connect()` takes the name this thread's most recent `getaddrinfo()` (of the
//! last [`RECENT`]) returned the address for; failing that (a connection made in another thread than the
//! lookup, or more than [`RECENT`] lookups ago), the name whose answer for the address was learned last by
//! any thread.

use std::cell::RefCell;
use std::net::Ipv6Addr;
use std::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

use libsrv6sock::wire::agent::MAX_NAME;
use libsrv6sock::wire::srh;

const WORDS: usize = srh::MAX_LEN / 8;
const NAME_WORDS: usize = MAX_NAME.div_ceil(8);
/// Reads of a slot under concurrent writes before giving up.
const READ_TRIES: usize = 4;
/// Lookups per thread remembered for choosing the name of an address.
pub const RECENT: usize = 8;
/// Addresses per remembered lookup (as many as the agent is asked about).
const RECENT_ADDRS: usize = libsrv6sock::wire::agent::MAX_ADDRS;

/// What the table says about a (name, address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Nothing: never learned (the policy decides), or evicted when the thread resolved it from a name.
    Unknown,
    /// DNS gives this SRH, of this many bytes (copied to the caller's buffer).
    Path(usize),
    /// DNS gave the name but no path for this address: the policy decides.
    NoPath,
    /// The path record for this address is malformed.
    Malformed,
    /// The agent failed for this address's name and the failure policy is closed: refuse.
    Refuse,
    /// The entry's TTL ran out; the name (this many bytes) was copied to the caller's buffer, to ask again.
    Expired(usize),
}

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A path: the SRH given to [`store`].
    Path,
    /// No path for the address.
    NoPath,
    /// A malformed record: no path.
    Malformed,
    /// Connections are refused (agent failure under the closed failure policy).
    Refuse,
}

const KIND_EMPTY: u8 = 0;

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Path => 1,
            Kind::NoPath => 2,
            Kind::Malformed => 3,
            Kind::Refuse => 4,
        }
    }
}

struct Slot {
    /// Odd while a writer is in the slot.
    seq: AtomicU32,
    /// The name's hash ([`name_hash`]).
    name: AtomicU64,
    hi: AtomicU64,
    lo: AtomicU64,
    /// CLOCK_MONOTONIC milliseconds after which the slot is void.
    expires: AtomicU64,
    /// Order of learning: larger is more recent.
    stamp: AtomicU64,
    kind: AtomicU8,
    len: AtomicU16,
    name_len: AtomicU16,
    srh: [AtomicU64; WORDS],
    name_bytes: [AtomicU64; NAME_WORDS],
}

static TABLE: OnceLock<&'static [Slot]> = OnceLock::new();
static STAMP: AtomicU64 = AtomicU64::new(1);

/// Allocate the table of `slots` entries; called once by the constructor.
pub fn init(slots: usize) {
    let _ = TABLE.get_or_init(|| {
        let Ok(layout) = std::alloc::Layout::array::<Slot>(slots.max(1)) else { return &[] };
        // SAFETY: the layout has a non-zero size (a Slot is not empty, at least one slot).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Slot>();
        if ptr.is_null() {
            return &[];
        }
        // SAFETY: `ptr` holds `slots` zeroed Slots, valid values (atomics only: zero is an empty slot), and is
        // never freed: the table lives as long as the process. Zeroed pages are not touched until used.
        unsafe { std::slice::from_raw_parts(ptr, slots.max(1)) }
    });
}

fn table() -> &'static [Slot] {
    TABLE.get().copied().unwrap_or_default()
}

/// How many slots the table has.
pub fn capacity() -> usize {
    table().len()
}

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

/// FNV-1a of the name in lower case (DNS names compare case-insensitively); never 0 (an empty slot's).
pub fn name_hash(name: &[u8]) -> u64 {
    let h = name
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x100_0000_01b3));
    h.max(1)
}

fn pack(words: &[AtomicU64], bytes: &[u8]) {
    for (word, chunk) in words.iter().zip(bytes.chunks(8)) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        word.store(u64::from_ne_bytes(w), Ordering::Relaxed);
    }
}

fn unpack(words: &[AtomicU64], out: &mut [u8]) {
    for (chunk, word) in out.chunks_mut(8).zip(words) {
        let w = word.load(Ordering::Relaxed).to_ne_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

/// Remember `kind` (and `srh` for a path) for (`name`, `addr`) for `ttl_ms` milliseconds; returns whether a
/// live entry of another (name, address) was evicted for it.
pub fn store(name: &[u8], addr: Ipv6Addr, ttl_ms: u64, kind: Kind, srh: &[u8]) -> bool {
    if srh.len() > srh::MAX_LEN || name.len() > MAX_NAME {
        return false;
    }
    let table = table();
    let (hash, (hi, lo)) = (name_hash(name), split(addr));
    let now = now_ms();
    let same = |s: &Slot| {
        s.name.load(Ordering::Relaxed) == hash
            && s.hi.load(Ordering::Relaxed) == hi
            && s.lo.load(Ordering::Relaxed) == lo
    };
    let (slot, evicted) = match table.iter().find(|s| same(s)) {
        Some(s) => (s, false),
        None => match table.iter().min_by_key(|s| s.expires.load(Ordering::Relaxed)) {
            Some(s) => (s, s.kind.load(Ordering::Relaxed) != KIND_EMPTY && s.expires.load(Ordering::Relaxed) > now),
            None => return false,
        },
    };
    let seq = slot.seq.load(Ordering::Relaxed);
    if seq % 2 == 1
        || slot.seq.compare_exchange(seq, seq.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed).is_err()
    {
        return false;
    }
    fence(Ordering::Release);
    slot.name.store(hash, Ordering::Relaxed);
    slot.hi.store(hi, Ordering::Relaxed);
    slot.lo.store(lo, Ordering::Relaxed);
    slot.expires.store(now.saturating_add(ttl_ms), Ordering::Relaxed);
    slot.stamp.store(STAMP.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
    slot.kind.store(kind.code(), Ordering::Relaxed);
    slot.len.store(srh.len() as u16, Ordering::Relaxed);
    slot.name_len.store(name.len() as u16, Ordering::Relaxed);
    pack(&slot.srh, srh);
    pack(&slot.name_bytes, name);
    slot.seq.store(seq.wrapping_add(2), Ordering::Release);
    evicted
}

/// What is known about `addr` resolved from the name of hash `name` (`None`: the name learned last for the
/// address). A path's SRH is copied into `out`, an expired entry's name into `name_out`.
pub fn get(name: Option<u64>, addr: Ipv6Addr, out: &mut [u8; srh::MAX_LEN], name_out: &mut [u8; MAX_NAME]) -> Learned {
    let (hi, lo) = split(addr);
    let wanted = |s: &Slot| {
        s.hi.load(Ordering::Relaxed) == hi
            && s.lo.load(Ordering::Relaxed) == lo
            && s.kind.load(Ordering::Relaxed) != KIND_EMPTY
            && name.is_none_or(|h| s.name.load(Ordering::Relaxed) == h)
    };
    let Some(slot) = table().iter().filter(|s| wanted(s)).max_by_key(|s| s.stamp.load(Ordering::Relaxed)) else {
        return Learned::Unknown;
    };
    let now = now_ms();
    for _ in 0..READ_TRIES {
        let before = slot.seq.load(Ordering::Acquire);
        if before % 2 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let still = wanted(slot);
        let expires = slot.expires.load(Ordering::Relaxed);
        let kind = slot.kind.load(Ordering::Relaxed);
        let len = (slot.len.load(Ordering::Relaxed) as usize).min(srh::MAX_LEN);
        let name_len = (slot.name_len.load(Ordering::Relaxed) as usize).min(MAX_NAME);
        unpack(&slot.srh, &mut out[..len]);
        unpack(&slot.name_bytes, &mut name_out[..name_len]);
        fence(Ordering::Acquire);
        if slot.seq.load(Ordering::Relaxed) != before {
            continue;
        }
        if !still {
            break;
        }
        if now >= expires {
            return Learned::Expired(name_len);
        }
        return match kind {
            1 => Learned::Path(len),
            2 => Learned::NoPath,
            3 => Learned::Malformed,
            4 => Learned::Refuse,
            _ => Learned::Unknown,
        };
    }
    Learned::Unknown
}

/// One remembered lookup of this thread.
#[derive(Clone, Copy)]
struct Lookup {
    name: u64,
    count: usize,
    addrs: [Ipv6Addr; RECENT_ADDRS],
}

/// This thread's last [`RECENT`] lookups that the agent answered, oldest overwritten first.
struct Recent {
    lookups: [Lookup; RECENT],
    next: usize,
}

thread_local! {
    static THREAD_RECENT: RefCell<Recent> = const {
        RefCell::new(Recent {
            lookups: [Lookup { name: 0, count: 0, addrs: [Ipv6Addr::UNSPECIFIED; RECENT_ADDRS] }; RECENT],
            next: 0,
        })
    };
}

/// This thread resolved `name` to `addrs` (at most as many as the agent is asked about).
pub fn resolved(name: &[u8], addrs: &[Ipv6Addr]) {
    let hash = name_hash(name);
    let _ = THREAD_RECENT.try_with(|r| {
        // A signal handler interrupting this very update: skip it (the other thread rule still applies).
        if let Ok(mut r) = r.try_borrow_mut() {
            let at = r.next % RECENT;
            let mut lookup = Lookup { name: hash, count: addrs.len().min(RECENT_ADDRS), addrs: r.lookups[at].addrs };
            lookup.addrs[..lookup.count].copy_from_slice(&addrs[..lookup.count]);
            r.lookups[at] = lookup;
            r.next = r.next.wrapping_add(1);
        }
    });
}

/// The hash of the name this thread's most recent remembered lookup returned `addr` for.
pub fn name_for(addr: Ipv6Addr) -> Option<u64> {
    THREAD_RECENT
        .try_with(|r| {
            let r = r.try_borrow().ok()?;
            (1..=RECENT)
                .map(|back| &r.lookups[r.next.wrapping_sub(back) % RECENT])
                .find(|l| l.name != 0 && l.addrs[..l.count].contains(&addr))
                .map(|l| l.name)
        })
        .ok()
        .flatten()
}
