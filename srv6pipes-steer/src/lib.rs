//! SRv6 steering in the kernel datapath: eBPF programs written in C (`bpf/`, built by clang at build time)
//! attached to network devices with TCX links, and their loaders.
//!
//! * [`reply`]: per-flow reply steering on a replying host (a server, a proxy's client-facing legs): the
//!   replies of a flow follow the return path its SYN carried.
//! * [`cgroup`]: steering of one cgroup's sockets on a client host (`srv6run --via kernel`): the
//!   programs an LD_PRELOAD shim cannot reach.
//! * [`tcx`]: how every program of this crate is attached. TCX (Linux ≥ 6.6) keeps several programs on
//!   one hook in order, so other steering programs (e.g. a client-side egress program keyed by
//!   `bpf_skb_cgroup_id()`) can sit beside these ones; links belong to the process that made them and go
//!   when it exits, and no qdisc is created or removed.

pub mod cgroup;
pub mod reply;
pub mod tcx;

pub use cgroup::{CgroupCounters, CgroupSteer, RunRule};
pub use reply::{ReplyCounters, ReplyFlow, ReplySettings, ReplySteer};
pub use tcx::{Hook, SteerError};
