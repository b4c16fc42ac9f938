//! Addresses of the `bench` topology (tests/topologies/bench.toml) that the bench's programs use.

use std::net::Ipv6Addr;

/// srv6pipes-proxy's function prefix on m1.
pub const PROXY_PREFIX: &str = "fc00:f1::/80";
/// The server's address (wrk's destination).
pub const SERVER: Ipv6Addr = Ipv6Addr::new(0xfc00, 2, 0, 0, 0, 0, 0, 1);
/// m1's End SID.
pub const END_SID: Ipv6Addr = Ipv6Addr::new(0xfc00, 0xe1, 0, 0, 0, 0, 0, 1);
