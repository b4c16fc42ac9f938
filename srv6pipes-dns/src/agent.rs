//! The resolver agent: answers `libsrv6sock.so` over a Unix stream socket, for a name and the addresses the
//! program's resolver returned, with the pre-built SRH of each address (from the best path record covering
//! it) and the TTL left. One request and one reply per connection, each ended by closing its direction
//! (message format: [`libsrv6sock::wire::agent`]).
//!
//! The agent owns the only DNS code: the shim in the host program asks it from `getaddrinfo()` (and from
//! `connect()` when its copy of a path expired) with a bounded timeout and never resolves anything itself.
//! The agent keeps each name's answer for its TTL and looks it up again before expiry while programs use
//! the name ([`Agent`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use libsrv6sock::wire::agent::{self, EntryRepr, MAX_REPLY, MAX_REQUEST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::lookup::{Answer, LookupConfig, LookupError, PathLookup};

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The runtime or the socket could not be set up.
    #[error("agent setup: {0}")]
    Io(#[from] std::io::Error),
    /// The resolver could not be configured.
    #[error(transparent)]
    Lookup(#[from] LookupError),
}

/// The reply entries for `addrs` (the addresses the program's resolver returned; empty: the answer's
/// own): each with the SRH of the best path record covering it, none if no record covers it, flagged
/// [`agent::FLAG_MALFORMED`] when it has no path and a record of the name is malformed or its SRH cannot
/// be built; all with TTL `ttl`.
pub fn entries(answer: &Answer, addrs: &[Ipv6Addr], ttl: u32) -> Vec<EntryRepr> {
    let broken = answer.records.iter().any(|r| r.decoded.is_err());
    let addrs = if addrs.is_empty() { &answer.addrs[..] } else { addrs };
    addrs
        .iter()
        .map(|addr| {
            let built = answer.path_for(*addr).map(|r| r.srh(Ipv6Addr::UNSPECIFIED).and_then(|s| s.to_bytes()));
            let (srh, malformed) = match built {
                Some(Ok(srh)) => (srh, false),
                Some(Err(_)) => (vec![], true),
                None => (vec![], broken),
            };
            EntryRepr { addr: *addr, ttl, srh, flags: if malformed { agent::FLAG_MALFORMED } else { 0 } }
        })
        .collect()
}

/// Serve on `listener` until `life` (the read end of a pipe whose write end only the program's processes
/// hold) reports end of file: the program's whole process tree is gone; without `life` (the system-wide
/// agent), until the process is stopped. Blocks; builds its own current-thread runtime.
pub fn run(
    listener: std::os::unix::net::UnixListener,
    life: Option<OwnedFd>,
    config: &LookupConfig,
) -> Result<(), AgentError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        let agent = Rc::new(Agent { lookup: PathLookup::new(config)?, answers: RefCell::new(HashMap::new()) });
        let mut life = life.map(|fd| tokio::fs::File::from_std(std::fs::File::from(fd)));
        let mut byte = [0u8; 1];
        loop {
            tokio::select! {
                // EOF (or an error): every process that held the write end has exited.
                _ = async { life.as_mut()?.read(&mut byte).await.ok() }, if life.is_some() => return Ok(()),
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::task::spawn_local(answer(stream, Rc::clone(&agent)));
                    }
                }
            }
        }
    })
}

/// A name's answer and its life.
struct Cached {
    answer: Rc<Answer>,
    /// When it was looked up.
    fetched: Instant,
    /// When its TTL runs out.
    until: Instant,
    /// When a program last asked for the name.
    asked: Instant,
}

/// The agent's state: the resolver and, per name, the last answer until its TTL runs out. An answer is
/// looked up again shortly before it expires (a quarter of its TTL before) when a program asked for the
/// name during its life: a program that keeps using a name keeps its path without a gap (the shim asks
/// again when its copy expires, and gets the fresh answer at once).
struct Agent {
    lookup: PathLookup,
    answers: RefCell<HashMap<String, Cached>>,
}

impl Agent {
    /// The encoded reply for `name` about `addrs`, from the cache while fresh (with the TTL left), else
    /// looked up (failures are not cached).
    async fn reply(self: &Rc<Self>, name: &str, addrs: &[Ipv6Addr]) -> Vec<u8> {
        let now = Instant::now();
        let cached = self.answers.borrow_mut().get_mut(name).filter(|c| c.until > now).map(|c| {
            c.asked = now;
            (Rc::clone(&c.answer), c.until)
        });
        let found = match cached {
            Some(hit) => Some(hit),
            None => match self.lookup.lookup(name).await {
                Ok(a) => Some(self.store(name, a)),
                Err(_) => None,
            },
        };
        let (status, entries) = match found {
            Some((answer, until)) => {
                // Seconds left, rounded up: an answer about to expire still steers the connection made now.
                let left = until.saturating_duration_since(Instant::now()).as_millis().div_ceil(1000);
                (agent::STATUS_OK, entries(&answer, addrs, u32::try_from(left).unwrap_or(u32::MAX)))
            }
            None => (agent::STATUS_LOOKUP_FAILED, vec![]),
        };
        let mut buf = vec![0u8; MAX_REPLY];
        let n = agent::emit_reply(status, &entries, &mut buf).unwrap_or(0);
        buf.truncate(n);
        buf
    }

    /// Keep a fresh answer for `name`; starts its refresh when the name had none.
    fn store(self: &Rc<Self>, name: &str, answer: Answer) -> (Rc<Answer>, Instant) {
        let now = Instant::now();
        let until = now + Duration::from_secs(answer.ttl().into());
        let answer = Rc::new(answer);
        let mut answers = self.answers.borrow_mut();
        answers.retain(|_, c| c.until > now);
        let had = answers
            .insert(name.to_string(), Cached { answer: Rc::clone(&answer), fetched: now, until, asked: now })
            .is_some();
        if !had {
            tokio::task::spawn_local(refresh(Rc::clone(self), name.to_string()));
        }
        (answer, until)
    }
}

/// Look `name` up again a quarter of its TTL before each expiry, as long as a program asked for it during
/// the answer's life; a failed lookup leaves the old answer to expire.
async fn refresh(agent: Rc<Agent>, name: String) {
    loop {
        let Some((fetched, until)) = agent.answers.borrow().get(&name).map(|c| (c.fetched, c.until)) else { return };
        let lead = until.saturating_duration_since(fetched) / 4;
        if lead.is_zero() {
            return;
        }
        tokio::time::sleep_until((until - lead).into()).await;
        let in_use = agent.answers.borrow().get(&name).is_some_and(|c| c.fetched == fetched && c.asked >= fetched);
        if !in_use {
            return;
        }
        let Ok(answer) = agent.lookup.lookup(&name).await else { return };
        let now = Instant::now();
        let asked = agent.answers.borrow().get(&name).map_or(now, |c| c.asked);
        let until = now + Duration::from_secs(answer.ttl().into());
        // The next refresh needs a question during this new answer's life.
        agent.answers.borrow_mut().insert(name.clone(), Cached { answer: Rc::new(answer), fetched: now, until, asked });
    }
}

/// Read one request, answer it, close. Errors only end this connection (the shim then applies its
/// failure policy).
async fn answer(mut stream: UnixStream, agent: Rc<Agent>) {
    let mut req = [0u8; MAX_REQUEST + 1];
    let mut len = 0;
    while len < req.len() {
        match stream.read(&mut req[len..]).await {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return,
        }
    }
    let reply = match agent::parse_request(&req[..len]) {
        Ok(req) => agent.reply(req.name, &req.addrs).await,
        Err(_) => vec![agent::VERSION, agent::STATUS_BAD_REQUEST, 0, 0],
    };
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}
