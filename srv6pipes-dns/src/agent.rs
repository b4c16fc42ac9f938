//! The resolver agent: answers `libsrv6sock.so` over a Unix stream socket with the addresses of a name and
//! the pre-built SRH of each (from the best path record covering it), with TTLs. One request and one reply
//! per connection, each ended by closing its direction (message format: [`libsrv6sock::wire::agent`]).
//!
//! The agent owns the only DNS code: the shim in the host program asks it from `getaddrinfo()` with a
//! bounded timeout and never resolves anything itself. hickory-resolver's cache keeps answers for their TTL.

use std::net::Ipv6Addr;
use std::os::fd::OwnedFd;
use std::rc::Rc;

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
/// hold) reports end of file: the program's whole process tree is gone. Blocks; builds its own
/// current-thread runtime.
pub fn run(listener: std::os::unix::net::UnixListener, life: OwnedFd, config: &LookupConfig) -> Result<(), AgentError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        let lookup = Rc::new(PathLookup::new(config)?);
        let mut life = tokio::fs::File::from_std(std::fs::File::from(life));
        let mut byte = [0u8; 1];
        loop {
            tokio::select! {
                // EOF (or an error): every process that held the write end has exited.
                _ = life.read(&mut byte) => return Ok(()),
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::task::spawn_local(answer(stream, Rc::clone(&lookup)));
                    }
                }
            }
        }
    })
}

/// Read one request, answer it, close. Errors only end this connection (the shim then applies its
/// failure policy).
async fn answer(mut stream: UnixStream, lookup: Rc<PathLookup>) {
    let mut req = [0u8; MAX_REQUEST + 1];
    let mut len = 0;
    while len < req.len() {
        match stream.read(&mut req[len..]).await {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return,
        }
    }
    let mut reply = vec![0u8; MAX_REPLY];
    let n = match agent::parse_request(&req[..len]) {
        Err(_) => agent::emit_reply(agent::STATUS_BAD_REQUEST, &[], &mut reply),
        Ok(name) => match lookup.lookup(name).await {
            Ok(a) => agent::emit_reply(agent::STATUS_OK, &entries(&a), &mut reply),
            Err(_) => agent::emit_reply(agent::STATUS_LOOKUP_FAILED, &[], &mut reply),
        },
    };
    if let Ok(n) = n {
        let _ = stream.write_all(&reply[..n]).await;
        let _ = stream.shutdown().await;
    }
}
