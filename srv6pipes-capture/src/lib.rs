//! Capture and decode: what the tests and `srv6top` read off the wire. A crate of its own, not a feature of
//! `libsrv6sock`, so that `libpcap` and `etherparse` never reach the shim (Cargo unifies a workspace's features).
//!
//! * [`frame`]: decode one captured frame (Ethernet, Linux cooked, raw IP) into a [`Packet`]: the outer
//!   layers with `etherparse`, the routing header with [`libsrv6sock::wire`]. Pure functions over byte slices; a
//!   malformed SRH still yields the packet's addresses, with the defect in [`Packet::malformed`].
//! * [`file`]: pcap files read with the `pcap` crate, frame by frame ([`PcapFile`]) or all at once, strictly
//!   ([`read_pcap`]).

pub mod file;
pub mod frame;

pub use file::{decode_packet, read_pcap, CaptureError, PcapFile};
pub use frame::{decode_frame, tcp_flags, CapturedSrh, DecodeError, Frame, LinkType, Packet, Tcp, Transport, Udp};
