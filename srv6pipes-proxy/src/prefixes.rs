//! Prefixes in the configuration file, written as strings (`"fc00:f1::/80"`) and read with `Ipv6Prefix`'s
//! `FromStr`: libsrv6sock has no serde (the shim links it, and must not carry what the proxy needs).

use libsrv6sock::wire::prefix::Ipv6Prefix;
use serde::{Deserialize, Deserializer};

/// One prefix.
pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv6Prefix, D::Error> {
    String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
}

/// An optional list of prefixes (use with `#[serde(default)]`).
pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Ipv6Prefix>>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    list.iter().map(|s| s.parse().map_err(serde::de::Error::custom)).collect::<Result<_, _>>().map(Some)
}
