//! End-to-end test harness: topologies of network namespaces declared as data, real programs in them,
//! packet captures decoded by three independent decoders.
//!
//! * [`topology`]: the TOML topology format (`tests/topologies/*.toml`; documented in `steering.toml`).
//! * [`netns`]: [`Net`] builds a topology with unique namespace names and tears it down on drop, even when
//!   the test panics; [`with_net`] runs a test body in one; [`require_root`] fails loudly when not root.
//! * [`process`]: [`Cmd`] runs a program (in a namespace) with a timeout; [`Proc`] is a background program
//!   killed on drop.
//! * [`capture`]: tcpdump in a namespace, started for real before the test goes on.
//! * [`oracle`]: tshark and scapy decoding the same file as `srv6pipes_capture`; [`oracle::cross_check`]
//!   requires agreement.
//! * [`dns`]: a real BIND 9 (`named`) with views, authoritative for a test zone.
//! * [`http`]: nginx serving random files, an upload sink answering the sha256 of uploads.
//! * [`proxy`]: a `srv6pipes-proxy` process in a host and its control socket.
//! * [`reply`]: a `srv6reply` process (host-wide reply steering) and its counters.
//! * [`binaries`]: the workspace's programs (`srv6run`, `srv6pipes-proxy`, `libsrv6sock.so`).
//!
//! The tests need root (namespaces, veths, captures) and the workspace's binaries built first:
//! `cargo build --workspace && cargo test -p srv6pipes-tests`.

pub mod binaries;
pub mod capture;
pub mod dns;
pub mod http;
pub mod netns;
pub mod oracle;
pub mod process;
pub mod proxy;
pub mod reply;
pub mod topology;

pub use capture::Capture;
pub use netns::{require_root, with_net, Net};
pub use process::{wait_until, Cmd, Output, Proc};
