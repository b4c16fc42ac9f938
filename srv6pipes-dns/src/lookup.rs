//! A name's addresses and path records, asked with hickory-resolver.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{ResolveError, TokioResolver};
use libsrv6sock::wire::path::{self, PathRecord, RecordError};

/// Why a lookup failed (a name with no record of a type is not a failure).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The resolver configuration (`/etc/resolv.conf`) could not be read.
    #[error("resolver configuration: {0}")]
    Config(#[source] ResolveError),
    /// A query failed: timeout, server failure, unreachable server.
    #[error("{rr_type} query for {name}: {source}")]
    Query {
        /// The name asked for.
        name: String,
        /// The record type asked for.
        rr_type: String,
        /// hickory's error.
        #[source]
        source: ResolveError,
    },
}

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct LookupConfig {
    /// A DNS server to ask instead of those of `/etc/resolv.conf`.
    pub server: Option<SocketAddr>,
    /// How long one query may take before it is given up.
    pub timeout: Duration,
}

impl Default for LookupConfig {
    fn default() -> Self {
        LookupConfig { server: None, timeout: Duration::from_secs(2) }
    }
}

/// A DNS server given as `ADDR` (port 53) or `[ADDR]:PORT`.
pub fn parse_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse().map_err(|_| format!("{s:?} is neither an address nor [address]:port"))
}

/// One path record of an answer, with its raw RDATA and what it decodes to.
#[derive(Debug, Clone)]
pub struct FoundRecord {
    /// The RR type: [`path::RR_TYPE`] or [`path::SRN_RR_TYPE`].
    pub rr_type: u16,
    /// The RDATA as served.
    pub rdata: Vec<u8>,
    /// The decoded record, or why it was refused.
    pub decoded: Result<PathRecord, RecordError>,
}

/// What DNS says about a name.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The IPv6 addresses (AAAA).
    pub addrs: Vec<Ipv6Addr>,
    /// Seconds the addresses stay valid (0 without addresses).
    pub addr_ttl: u32,
    /// The path records of both types, in answer order.
    pub records: Vec<FoundRecord>,
    /// Seconds the path records stay valid; `None` when the name has none (an absent record's negative
    /// TTL says how long its absence may be cached, not how long a path lives).
    pub path_ttl: Option<u32>,
}

impl Answer {
    /// The well-formed records.
    pub fn valid_records(&self) -> Vec<PathRecord> {
        self.records.iter().filter_map(|r| r.decoded.as_ref().ok().cloned()).collect()
    }

    /// The record a client applies for `addr` (see [`path::best_for`]).
    pub fn path_for(&self, addr: Ipv6Addr) -> Option<PathRecord> {
        path::best_for(&self.valid_records(), addr).cloned()
    }

    /// Seconds until the answer as a whole must be asked again: the smallest TTL of the records it has
    /// (addresses and path records); a name with neither is asked again after [`NEGATIVE_TTL`].
    pub fn ttl(&self) -> u32 {
        match (self.addrs.is_empty(), self.path_ttl) {
            (false, Some(p)) => self.addr_ttl.min(p),
            (false, None) => self.addr_ttl,
            (true, Some(p)) => p,
            (true, None) => NEGATIVE_TTL,
        }
    }
}

/// Asks a name's addresses and path records, with hickory-resolver's cache.
pub struct PathLookup {
    resolver: TokioResolver,
}

/// Seconds a name without addresses nor path records is kept before it is asked again.
pub const NEGATIVE_TTL: u32 = 30;

impl PathLookup {
    /// A resolver per `config`; must be called inside a tokio runtime.
    pub fn new(config: &LookupConfig) -> Result<PathLookup, LookupError> {
        let provider = TokioConnectionProvider::default();
        let mut builder = match config.server {
            Some(server) => {
                let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
                TokioResolver::builder_with_config(ResolverConfig::from_parts(None, vec![], servers), provider)
            }
            None => TokioResolver::builder(provider).map_err(LookupError::Config)?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        // One try of `timeout` per query: hickory's `attempts` counts the tries after the first.
        opts.timeout = config.timeout;
        opts.attempts = 0;
        // No cache here: the agent keeps each answer for its TTL itself, and its refresh before expiry must
        // reach the DNS server, not get the cached records back with their TTL almost gone.
        opts.cache_size = 0;
        Ok(PathLookup { resolver: builder.build() })
    }

    /// Ask AAAA and both path types for `name`, in parallel.
    pub async fn lookup(&self, name: &str) -> Result<Answer, LookupError> {
        let (aaaa, ours, srn) = tokio::join!(
            self.resolver.lookup(name, RecordType::AAAA),
            self.resolver.lookup(name, RecordType::Unknown(path::RR_TYPE)),
            self.resolver.lookup(name, RecordType::Unknown(path::SRN_RR_TYPE)),
        );
        let mut answer = Answer::default();
        match aaaa {
            Ok(l) => {
                answer.addr_ttl = ttl_of(&l);
                answer.addrs = l.record_iter().filter_map(|r| r.data().as_aaaa().map(|a| a.0)).collect();
            }
            Err(e) if e.is_no_records_found() => {}
            Err(source) => return Err(query_error(name, "AAAA", source)),
        }
        for (result, rr_type) in [(ours, path::RR_TYPE), (srn, path::SRN_RR_TYPE)] {
            match result {
                Ok(l) => {
                    let ttl = ttl_of(&l);
                    answer.path_ttl = Some(answer.path_ttl.map_or(ttl, |t| t.min(ttl)));
                    for r in l.record_iter() {
                        if let RData::Unknown { code, rdata } = r.data() {
                            if u16::from(*code) != rr_type {
                                continue;
                            }
                            let bytes = rdata.anything().to_vec();
                            let decoded = if rr_type == path::RR_TYPE {
                                PathRecord::from_bytes(&bytes)
                            } else {
                                PathRecord::from_srn(&bytes)
                            };
                            answer.records.push(FoundRecord { rr_type, rdata: bytes, decoded });
                        }
                    }
                }
                Err(e) if e.is_no_records_found() => {}
                Err(source) => return Err(query_error(name, &format!("TYPE{rr_type}"), source)),
            }
        }
        Ok(answer)
    }
}

fn ttl_of(l: &hickory_resolver::lookup::Lookup) -> u32 {
    // Rounded up: a record with 0.7 s left is still valid now.
    let left = l.valid_until().saturating_duration_since(std::time::Instant::now());
    u32::try_from(left.as_millis().div_ceil(1000)).unwrap_or(u32::MAX)
}

fn query_error(name: &str, rr_type: &str, source: ResolveError) -> LookupError {
    LookupError::Query { name: name.to_string(), rr_type: rr_type.to_string(), source }
}
