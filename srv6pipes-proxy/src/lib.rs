//! srv6pipes-proxy: the transparent SR-aware TCP proxy of SRv6Pipes (DESIGN §4–§5).
//!
//! * [`datapath`]: install/remove the kernel datapath (sysctls, ip rule/route, nftables or ip6tables).
//! * [`flow`]: per-flow setup from the SYN's SRH; outbound leg spoofing the client.
//! * [`relay`]: both directions through the function, splice for untransformed ones.
//! * [`module`]: the C module ABI, loader and registry; [`builtin`]: `copy` and `xor`.
//! * [`control`]: the JSON control socket; [`stats`]: flow table and counters.
//! * [`proxy`]: workers and the process lifecycle (signals, teardown).

pub mod builtin;
pub mod config;
pub mod control;
pub mod datapath;
pub mod flow;
pub mod module;
pub mod proxy;
pub mod relay;
pub mod stats;
pub mod timewait;
