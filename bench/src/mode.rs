//! The modes of m1 (router, HAProxy, srv6pipes-proxy functions) and the SID each one's client visits.

use std::fmt;
use std::net::Ipv6Addr;

use anyhow::Result;
use libsrv6sock::wire::sid::SidLayout;

use crate::topology::{END_SID, PROXY_PREFIX};

/// What m1 does during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Mode {
    /// Plain IPv6 forwarding, no SRH.
    Router,
    /// Plain forwarding of SRH packets: the client's SRH visits m1's End SID (kernel seg6local).
    RouterSrh,
    /// nft tproxy → HAProxy (`usesrc clientip`, copy mode), no SRH: the relay a user would pick instead.
    Haproxy,
    /// srv6pipes-proxy, function `copy` (splice).
    ProxyCopy,
    /// srv6pipes-proxy, function `xor` (key 0, --xor-passes passes): every byte through user space.
    ProxyXor,
    /// srv6pipes-proxy, function `copy` with --no-splice (user-space copy, like HAProxy's).
    ProxyCopyNosplice,
}

/// Every mode, in report order.
pub const ALL_MODES: [Mode; 6] =
    [Mode::Router, Mode::RouterSrh, Mode::Haproxy, Mode::ProxyCopy, Mode::ProxyXor, Mode::ProxyCopyNosplice];

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Router => "router",
            Mode::RouterSrh => "router-srh",
            Mode::Haproxy => "haproxy",
            Mode::ProxyCopy => "proxy-copy",
            Mode::ProxyXor => "proxy-xor",
            Mode::ProxyCopyNosplice => "proxy-copy-nosplice",
        }
    }

    /// The SID the client's SRH visits, if the mode uses one.
    pub fn segment(self, xor_passes: u8) -> Result<Option<Ipv6Addr>> {
        let layout = SidLayout::default();
        let prefix = PROXY_PREFIX.parse().map_err(|e| anyhow::anyhow!("{PROXY_PREFIX}: {e:?}"))?;
        // srv6pipes-proxy's built-in functions (src/builtin.rs): 1 = copy; 2 = xor, argument bits 0–7 the
        // key, bits 8–15 the passes. Key 0 keeps the HTTP stream intact while every byte is still XORed.
        let sid = |function: u64, argument: u64| -> Result<Option<Ipv6Addr>> {
            Ok(Some(layout.build(prefix, function, argument).map_err(|e| anyhow::anyhow!("{e}"))?))
        };
        match self {
            Mode::Router | Mode::Haproxy => Ok(None),
            Mode::RouterSrh => Ok(Some(END_SID)),
            Mode::ProxyCopy | Mode::ProxyCopyNosplice => sid(1, 0),
            Mode::ProxyXor => sid(2, u64::from(xor_passes) << 8),
        }
    }

    pub fn uses_proxy(self) -> bool {
        matches!(self, Mode::ProxyCopy | Mode::ProxyXor | Mode::ProxyCopyNosplice)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
