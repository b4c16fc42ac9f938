//! The resolver agent: answers `libsrv6sock.so` over a Unix stream socket with the addresses of a name and
//! the pre-built SRH of each (from the best path record covering it), with TTLs. One request and one reply
//! per connection, each ended by closing its direction (message format: [`libsrv6sock::wire::agent`]).
//!
//! The agent owns the only DNS code: the shim in the host program asks it from `getaddrinfo()` with a
//! bounded timeout and never resolves anything itself. hickory-resolver's cache keeps DNS answers for their
//! TTL, and the agent keeps each name's reply entries as long (sent with the TTL left).

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

/// The reply entries for an answer: every IPv6 address with the SRH of its best path record (none if no
/// record covers it, or if the record's SRH cannot be built), all with the answer's TTL.
pub fn entries(answer: &Answer) -> Vec<EntryRepr> {
    let ttl = answer.ttl();
    answer
        .addrs
        .iter()
        .map(|addr| {
            let srh = answer
                .path_for(*addr)
                .and_then(|r| r.srh(Ipv6Addr::UNSPECIFIED).and_then(|s| s.to_bytes()).ok())
                .unwrap_or_default();
            EntryRepr { addr: *addr, ttl, srh }
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

/// A name's reply entries and until when they hold.
type CachedEntries = (Instant, Rc<[EntryRepr]>);

/// The agent's state: the resolver (with hickory's cache of DNS answers) and, per name, the reply entries
/// with their SRHs already built, until the answer's TTL runs out, so that a repeated lookup costs one map
/// access and an encoding.
struct Agent {
    lookup: PathLookup,
    answers: RefCell<HashMap<String, CachedEntries>>,
}

impl Agent {
    /// The encoded reply for `name`, from the cache while fresh (with the TTL left), else looked up
    /// (failures are not cached).
    async fn reply(&self, name: &str) -> Vec<u8> {
        let now = Instant::now();
        let cached = self.answers.borrow().get(name).filter(|(until, _)| *until > now).cloned();
        let (status, entries, until) = match cached {
            Some((until, entries)) => (agent::STATUS_OK, entries, until),
            None => match self.lookup.lookup(name).await {
                Ok(a) => {
                    let until = now + Duration::from_secs(a.ttl().into());
                    let entries: Rc<[EntryRepr]> = entries(&a).into();
                    let mut answers = self.answers.borrow_mut();
                    answers.retain(|_, (u, _)| *u > now);
                    answers.insert(name.to_string(), (until, Rc::clone(&entries)));
                    (agent::STATUS_OK, entries, until)
                }
                Err(_) => (agent::STATUS_LOOKUP_FAILED, Rc::from([]), now),
            },
        };
        // Seconds left, rounded up: an answer about to expire still steers the connection made right now.
        let left = until.saturating_duration_since(Instant::now()).as_millis().div_ceil(1000);
        let ttl = u32::try_from(left).unwrap_or(u32::MAX);
        let fresh: Vec<EntryRepr> = entries.iter().map(|e| EntryRepr { ttl, ..e.clone() }).collect();
        let mut buf = vec![0u8; MAX_REPLY];
        let n = agent::emit_reply(status, &fresh, &mut buf).unwrap_or(0);
        buf.truncate(n);
        buf
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
        Ok(name) => agent.reply(name).await,
        Err(_) => vec![agent::VERSION, agent::STATUS_BAD_REQUEST, 0, 0],
    };
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}
