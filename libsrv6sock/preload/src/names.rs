//! Which host name an address was resolved from, learned in the `getaddrinfo()` hook, for rules with `name`.
//!
//! A fixed ring of slots written and read with atomics only: `connect()` may run in a signal handler or a
//! forked child, where a lock could deadlock. A slot torn by two concurrent writers holds an address nobody
//! connects to, so it can only miss, never steer the wrong flow.

use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const SLOTS: usize = 256;

struct Slot {
    hi: AtomicU64,
    lo: AtomicU64,
    /// Bit `i` set: rule `i` names the host this address was resolved from. 0 = empty slot.
    rules: AtomicU64,
}

static TABLE: [Slot; SLOTS] =
    [const { Slot { hi: AtomicU64::new(0), lo: AtomicU64::new(0), rules: AtomicU64::new(0) } }; SLOTS];
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Remember that `addr` was resolved from a name that the rules in the bit set `rules` ask for.
pub fn remember(addr: Ipv6Addr, rules: u64) {
    let v = u128::from(addr);
    let slot = &TABLE[NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS];
    slot.rules.store(0, Ordering::Release);
    slot.hi.store((v >> 64) as u64, Ordering::Release);
    slot.lo.store(v as u64, Ordering::Release);
    slot.rules.store(rules, Ordering::Release);
}

/// The name rules (bit set) that `addr` was resolved for; 0 if none.
pub fn rules_for(addr: Ipv6Addr) -> u64 {
    let v = u128::from(addr);
    let (hi, lo) = ((v >> 64) as u64, v as u64);
    TABLE
        .iter()
        .filter(|s| s.hi.load(Ordering::Acquire) == hi && s.lo.load(Ordering::Acquire) == lo)
        .fold(0, |acc, s| acc | s.rules.load(Ordering::Acquire))
}
