//! srv6pipes-proxy: the transparent SR-aware TCP proxy of SRv6Pipes (docs/ARCHITECTURE.md §5–§6).
//!
//! * [`datapath`]: the kernel datapath as a plan of steps (sysctls, ip rule/route, nftables or ip6tables),
//!   installed and removed.
//! * [`flow`]: per-flow setup from the SYN's SRH; outbound leg spoofing the client; [`access`]: who may
//!   use a SID towards where, and the SRH HMAC check, at admission.
//! * [`relay`]: both directions through the function, splice for untransformed ones.
//! * [`module`]: the loader and registry of modules (C ABI of `srv6pipes_api::abi`); [`builtin`]: `copy`
//!   and `xor`.
//! * [`control`]: the control socket's server (protocol of `srv6pipes_api::control`); [`stats`]: flow table
//!   and counters.
//! * [`replysteer`]: with `--reply-path`, the kernel's per-flow reply steering on the ingress devices.
//! * [`config`]: flags over a TOML file over defaults; [`timewait`]: removal of our TIME_WAIT sockets;
//!   [`timeouts`]: bounds on flows that make no progress.
//! * [`proxy`]: workers and the process lifecycle (signals, stop, drain, takeover, teardown);
//!   [`lifecycle`]: the phase shared with workers and flows, admission and limits; [`state`]: the state
//!   file of the installed datapath (crash recovery, takeover); [`metrics`]: the Prometheus endpoint.
//! * [`ownership`]: who owns which part of a namespace's datapath (start, exit, takeover, teardown), over
//!   [`lockfile`] (flock), [`claims`] (the namespace's claims and shared pieces) and [`namespace`] (the
//!   namespace's identity and directory, the default paths).

pub mod access;
pub mod builtin;
pub mod claims;
pub mod config;
pub mod control;
pub mod datapath;
pub mod flow;
pub mod lifecycle;
pub mod lockfile;
pub mod metrics;
pub mod module;
pub mod namespace;
pub mod ownership;
pub mod proxy;
pub mod relay;
pub mod replysteer;
pub mod retpath;
pub mod state;
pub mod stats;
pub mod timeouts;
pub mod timewait;
