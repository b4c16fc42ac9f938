//! The flow table: captured packets aggregated per connection, each direction counted, the segment lists
//! seen each way, TCP state from the flags. A pure model fed one frame at a time, so that it can be tested
//! and benchmarked without a capture.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::Ipv6Addr;
use std::time::Duration;

use libsrv6sock::capture::{tcp_flags, CapturedSrh, Frame, Packet, Transport};
use libsrv6sock::wire::srh::SrhRepr;
use serde::Serialize;

/// Packets kept for the packet list.
pub const PACKET_HISTORY: usize = 2000;
/// Packets kept per flow for the detail pane.
pub const FLOW_FIRST_PACKETS: usize = 8;

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// A transport endpoint.
pub type Endpoint = (Ipv6Addr, u16);

/// A connection: the client (who sent the first SYN, or the first packet seen) and the server (the final
/// destination: the SRH's `segments[0]`, not the active segment in the IPv6 header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// TCP or UDP.
    pub proto: Proto,
    /// The client's address and port.
    pub client: Endpoint,
    /// The server's address and port.
    pub server: Endpoint,
}

/// Which way a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// TCP state as the flags seen on the wire tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpState {
    /// Not TCP.
    None,
    /// Joined after the handshake.
    Midstream,
    /// The client's SYN seen.
    SynSent,
    /// The server's SYN-ACK seen.
    SynReceived,
    /// Data may flow.
    Established,
    /// One side sent FIN.
    Closing,
    /// Both sides sent FIN.
    Closed,
    /// A RST was seen.
    Reset,
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcpState::None => "-",
            TcpState::Midstream => "MIDSTREAM",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynReceived => "SYN_RCVD",
            TcpState::Established => "ESTAB",
            TcpState::Closing => "CLOSING",
            TcpState::Closed => "CLOSED",
            TcpState::Reset => "RESET",
        })
    }
}

/// Bytes per second over the last whole second, kept in two one-second buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rate {
    second: u64,
    current: u64,
    previous: u64,
}

impl Rate {
    fn add(&mut self, at: Duration, bytes: u64) {
        let s = at.as_secs();
        if s == self.second {
            self.current += bytes;
        } else if s > self.second {
            self.previous = if s == self.second + 1 { self.current } else { 0 };
            self.current = bytes;
            self.second = s;
        }
    }

    /// Bytes per second in the last whole second before `now`.
    pub fn per_second(&self, now: Duration) -> u64 {
        match now.as_secs().checked_sub(self.second) {
            Some(0) => self.previous,
            Some(1) => self.current,
            _ => 0,
        }
    }
}

/// One direction's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Packets.
    pub packets: u64,
    /// Bytes on the wire (IPv6 header included).
    pub bytes: u64,
    /// Transport payload bytes.
    pub payload: u64,
    /// Wire bytes per second.
    pub rate: Rate,
}

impl DirStats {
    fn add(&mut self, at: Duration, wire: u64, payload: u64) {
        self.packets += 1;
        self.bytes += wire;
        self.payload += payload;
        self.rate.add(at, wire);
    }
}

/// A packet as the packet list and the detail pane show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketRow {
    /// 1-based frame number.
    pub frame: usize,
    /// Capture time.
    pub timestamp: Duration,
    /// IPv6 source.
    pub src: Ipv6Addr,
    /// IPv6 destination.
    pub dst: Ipv6Addr,
    /// Transport protocol and ports, if decoded.
    pub ports: Option<(Proto, u16, u16)>,
    /// TCP flags.
    pub flags: u8,
    /// Bytes on the wire.
    pub wire_len: u32,
    /// Payload bytes.
    pub payload_len: usize,
    /// SRH: segments left and segment count.
    pub srh: Option<(u8, usize)>,
    /// Why the packet is malformed, if it is.
    pub malformed: Option<String>,
    /// Its flow's direction, when it belongs to a flow.
    pub direction: Option<Direction>,
}

/// A connection and what was seen of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// The connection.
    pub key: FlowKey,
    /// Time of the first packet.
    pub first_seen: Duration,
    /// Time of the last packet.
    pub last_seen: Duration,
    /// Client to server.
    pub up: DirStats,
    /// Server to client.
    pub down: DirStats,
    /// The last SRH seen client to server, as captured.
    pub forward: Option<CapturedSrh>,
    /// The last SRH seen server to client, as captured.
    pub reply: Option<CapturedSrh>,
    /// The last active segment seen client to server (the IPv6 destination).
    pub active_segment: Option<Ipv6Addr>,
    /// TCP state.
    pub state: TcpState,
    /// The first packets, for the detail pane.
    pub first_packets: Vec<PacketRow>,
    fin_up: bool,
    fin_down: bool,
}

impl Flow {
    /// The last forward SRH, decoded.
    pub fn srh(&self) -> Option<&SrhRepr> {
        self.forward.as_ref().map(|c| &c.repr)
    }

    /// The last reply SRH, decoded.
    pub fn return_srh(&self) -> Option<&SrhRepr> {
        self.reply.as_ref().map(|c| &c.repr)
    }

    /// The return path: the TLV's addresses from the forward SRH, if it carries one.
    pub fn return_path(&self) -> Option<&[Ipv6Addr]> {
        self.srh().and_then(SrhRepr::return_path)
    }

    /// The waypoints the replies are steered along (SRH order), when the last reply SRH carries the return
    /// path as a replying host steers it: the client first, then the TLV's first waypoints (a proxy sends
    /// only those after its own SID). `None`: replies not seen with such an SRH.
    pub fn steered_via(&self) -> Option<&[Ipv6Addr]> {
        let path = self.return_path()?;
        let (client, waypoints) = self.return_srh()?.segments.split_first()?;
        (*client == self.key.client.0 && !waypoints.is_empty() && path.starts_with(waypoints)).then_some(waypoints)
    }

    /// Wire bytes both ways.
    pub fn bytes(&self) -> u64 {
        self.up.bytes + self.down.bytes
    }

    /// Bytes per second both ways.
    pub fn rate(&self, now: Duration) -> u64 {
        self.up.rate.per_second(now) + self.down.rate.per_second(now)
    }

    fn new(key: FlowKey, at: Duration, is_tcp: bool) -> Flow {
        Flow {
            key,
            first_seen: at,
            last_seen: at,
            up: DirStats::default(),
            down: DirStats::default(),
            forward: None,
            reply: None,
            active_segment: None,
            state: if is_tcp { TcpState::Midstream } else { TcpState::None },
            first_packets: Vec::new(),
            fin_up: false,
            fin_down: false,
        }
    }

    fn track_tcp(&mut self, dir: Direction, flags: u8) {
        let has = |bit| flags & bit == bit;
        if has(tcp_flags::RST) {
            self.state = TcpState::Reset;
            return;
        }
        if self.state == TcpState::Reset {
            return;
        }
        if has(tcp_flags::SYN) {
            self.state = if has(tcp_flags::ACK) { TcpState::SynReceived } else { TcpState::SynSent };
            (self.fin_up, self.fin_down) = (false, false);
            return;
        }
        if has(tcp_flags::FIN) {
            match dir {
                Direction::Up => self.fin_up = true,
                Direction::Down => self.fin_down = true,
            }
        }
        self.state = match (self.fin_up, self.fin_down) {
            (true, true) => TcpState::Closed,
            (true, false) | (false, true) => TcpState::Closing,
            _ if matches!(self.state, TcpState::SynReceived | TcpState::SynSent) => TcpState::Established,
            _ => self.state,
        };
    }
}

/// Whether the first packet seen of a connection comes from its server: a SYN-ACK does, a SYN does not;
/// joined in the middle, the server is the side with the lower port (services listen on low or well-known
/// ports, clients take ephemeral ones).
fn server_sent(proto: Proto, flags: u8, sport: u16, dport: u16) -> bool {
    if proto == Proto::Tcp && flags & tcp_flags::SYN != 0 {
        return flags & tcp_flags::ACK != 0;
    }
    sport < dport
}

/// Counters over everything seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Frames seen.
    pub frames: u64,
    /// IPv6 packets.
    pub ipv6: u64,
    /// IPv6 packets with an SRH.
    pub srv6: u64,
    /// Packets with a malformed layer (SRH, TLV, transport).
    pub malformed: u64,
    /// Frames whose IPv6 header could not be read.
    pub undecodable: u64,
    /// Flows dropped from the table to stay within its size.
    pub evicted_flows: u64,
}

/// All flows, the recent packets, the counters.
#[derive(Debug, Clone)]
pub struct FlowTable {
    flows: HashMap<FlowKey, Flow>,
    packets: VecDeque<PacketRow>,
    max_flows: usize,
    totals: Totals,
    latest: Duration,
}

impl FlowTable {
    /// An empty table that keeps at most `max_flows` flows (the least recently active go first).
    pub fn new(max_flows: usize) -> FlowTable {
        FlowTable {
            flows: HashMap::new(),
            packets: VecDeque::with_capacity(PACKET_HISTORY),
            max_flows: max_flows.max(1),
            totals: Totals::default(),
            latest: Duration::ZERO,
        }
    }

    /// The flows, in no particular order.
    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values()
    }

    /// The number of flows.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// The most recent packets, oldest first.
    pub fn packets(&self) -> &VecDeque<PacketRow> {
        &self.packets
    }

    /// Counters over everything seen.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The timestamp of the newest packet seen.
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// Account one decoded frame.
    pub fn observe(&mut self, frame: Frame) {
        self.totals.frames += 1;
        match frame {
            Frame::Ipv6(p) => self.observe_ipv6(p),
            Frame::NotIpv6 => {}
            Frame::Undecodable { .. } => self.totals.undecodable += 1,
        }
    }

    fn observe_ipv6(&mut self, p: Packet) {
        self.totals.ipv6 += 1;
        self.latest = self.latest.max(p.timestamp);
        if p.srh.is_some() {
            self.totals.srv6 += 1;
        }
        if p.malformed.is_some() {
            self.totals.malformed += 1;
        }
        let mut row = PacketRow {
            frame: p.frame,
            timestamp: p.timestamp,
            src: p.src,
            dst: p.dst,
            ports: None,
            flags: 0,
            wire_len: p.wire_len,
            payload_len: 0,
            srh: p.srh.as_ref().map(|s| (s.repr.segments_left, s.repr.segments.len())),
            malformed: p.malformed.as_ref().map(ToString::to_string),
            direction: None,
        };
        let (proto, sport, dport, flags, payload) = match p.transport {
            Some(Transport::Tcp(t)) => (Proto::Tcp, t.src_port, t.dst_port, t.flags, t.payload_len),
            Some(Transport::Udp(u)) => (Proto::Udp, u.src_port, u.dst_port, 0, u.payload_len),
            None => {
                self.push_packet(row);
                return;
            }
        };
        row.ports = Some((proto, sport, dport));
        row.flags = flags;
        row.payload_len = payload;
        let srh = p.srh;
        let final_dst = srh.as_ref().and_then(|s| s.repr.destination()).unwrap_or(p.dst);
        let (here, there) = ((p.src, sport), (final_dst, dport));
        let up = FlowKey { proto, client: here, server: there };
        let down = FlowKey { proto, client: there, server: here };
        let (key, dir) = if self.flows.contains_key(&up) {
            (up, Direction::Up)
        } else if self.flows.contains_key(&down) || server_sent(proto, flags, sport, dport) {
            (down, Direction::Down)
        } else {
            (up, Direction::Up)
        };
        if !self.flows.contains_key(&key) && self.flows.len() >= self.max_flows {
            self.evict();
        }
        let flow = self.flows.entry(key).or_insert_with(|| Flow::new(key, p.timestamp, proto == Proto::Tcp));
        flow.last_seen = flow.last_seen.max(p.timestamp);
        let stats = match dir {
            Direction::Up => &mut flow.up,
            Direction::Down => &mut flow.down,
        };
        stats.add(p.timestamp, u64::from(p.wire_len), payload as u64);
        if proto == Proto::Tcp {
            flow.track_tcp(dir, flags);
        }
        if let Some(srh) = srh {
            match dir {
                Direction::Up => {
                    flow.active_segment = Some(p.dst);
                    flow.forward = Some(srh);
                }
                Direction::Down => flow.reply = Some(srh),
            }
        }
        row.direction = Some(dir);
        if flow.first_packets.len() < FLOW_FIRST_PACKETS {
            flow.first_packets.push(row.clone());
        }
        self.push_packet(row);
    }

    fn push_packet(&mut self, row: PacketRow) {
        if self.packets.len() == PACKET_HISTORY {
            self.packets.pop_front();
        }
        self.packets.push_back(row);
    }

    /// Make room: drop the least recently active tenth of the table (in one pass, so that a flood of new
    /// flows costs a sort per tenth, not a scan per packet).
    fn evict(&mut self) {
        let mut by_age: Vec<(Duration, FlowKey)> = self.flows.values().map(|f| (f.last_seen, f.key)).collect();
        by_age.sort_unstable();
        let n = (self.max_flows / 10).max(1);
        for (_, key) in by_age.into_iter().take(n) {
            self.flows.remove(&key);
        }
        self.totals.evicted_flows += n as u64;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use libsrv6sock::capture::Tcp;
    use libsrv6sock::wire::tlv::TlvRepr;

    pub fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// A TCP packet at second `t` from `src`:`sport` to `dst`:`dport`, with `srh` if given.
    pub fn tcp(t: u64, src: &str, sport: u16, dst: &str, dport: u16, flags: u8, payload: usize) -> Packet {
        Packet {
            frame: 0,
            timestamp: Duration::from_secs(t),
            wire_len: 60 + payload as u32,
            src: a(src),
            dst: a(dst),
            hop_limit: 64,
            srh: None,
            transport: Some(Transport::Tcp(Tcp {
                src_port: sport,
                dst_port: dport,
                flags,
                seq: 0,
                payload_len: payload,
            })),
            malformed: None,
        }
    }

    /// `p` with an SRH steering to `segments` (final destination first), `left` segments left.
    pub fn with_srh(mut p: Packet, segments: &[&str], left: u8, return_path: &[&str]) -> Packet {
        let segments: Vec<Ipv6Addr> = segments.iter().map(|s| a(s)).collect();
        let mut repr =
            SrhRepr::for_path(segments[0], &segments[1..].iter().rev().copied().collect::<Vec<_>>()).unwrap();
        repr.segments_left = left;
        repr.next_header = 6;
        if !return_path.is_empty() {
            repr.tlvs.push(TlvRepr::ReturnPath(return_path.iter().map(|s| a(s)).collect()));
        }
        p.dst = repr.segments[usize::from(left)];
        p.srh = Some(CapturedSrh { bytes: repr.to_bytes().unwrap(), repr });
        p
    }

    const SYN: u8 = tcp_flags::SYN;
    const SYNACK: u8 = tcp_flags::SYN | tcp_flags::ACK;
    const ACK: u8 = tcp_flags::ACK;
    const FINACK: u8 = tcp_flags::FIN | tcp_flags::ACK;

    #[test]
    fn a_steered_connection_is_one_flow_keyed_by_its_final_destination() {
        let mut t = FlowTable::new(100);
        let segs = ["fc00:4::2", "fc00:f2::2:0:5a", "fc00:f1::2:0:5a"];
        let rp = ["fc00:f1::2:0:5a", "fc00:f2::2:0:5a"];
        t.observe(Frame::Ipv6(with_srh(tcp(10, "fc00:1::1", 40000, "::", 80, SYN, 0), &segs, 2, &rp)));
        t.observe(Frame::Ipv6(tcp(10, "fc00:4::2", 80, "fc00:1::1", 40000, SYNACK, 0)));
        t.observe(Frame::Ipv6(with_srh(tcp(10, "fc00:1::1", 40000, "::", 80, ACK, 100), &segs, 2, &rp)));
        t.observe(Frame::Ipv6(tcp(11, "fc00:4::2", 80, "fc00:1::1", 40000, ACK, 1000)));
        assert_eq!(t.len(), 1);
        let f = t.flows().next().unwrap();
        assert_eq!(f.key.client, (a("fc00:1::1"), 40000));
        assert_eq!(f.key.server, (a("fc00:4::2"), 80));
        assert_eq!((f.up.packets, f.up.payload, f.down.packets, f.down.payload), (2, 100, 2, 1000));
        assert_eq!(f.state, TcpState::Established);
        assert_eq!(f.active_segment, Some(a("fc00:f1::2:0:5a")));
        assert_eq!(f.srh().unwrap().segments_left, 2);
        assert_eq!(f.return_path().unwrap(), &[a("fc00:f1::2:0:5a"), a("fc00:f2::2:0:5a")]);
        assert_eq!(f.first_packets.len(), 4);
        assert_eq!(t.totals().srv6, 2);
        assert_eq!(f.steered_via(), None);
    }

    #[test]
    fn replies_carrying_the_return_path_are_steered() {
        let mut t = FlowTable::new(100);
        let segs = ["fc00:4::2", "fc00:f2::2:0:5a", "fc00:f1::2:0:5a"];
        let rp = ["fc00:f1::2:0:5a", "fc00:f2::2:0:5a"];
        t.observe(Frame::Ipv6(with_srh(tcp(10, "fc00:1::1", 40000, "::", 80, SYN, 0), &segs, 2, &rp)));
        // The server's SYN-ACK with [client, p1, p2], towards p2.
        let back = ["fc00:1::1", "fc00:f1::2:0:5a", "fc00:f2::2:0:5a"];
        let mut synack = with_srh(tcp(10, "fc00:4::2", 80, "::", 40000, SYNACK, 0), &back, 2, &[]);
        synack.src = a("fc00:4::2");
        t.observe(Frame::Ipv6(synack));
        assert_eq!(t.len(), 1);
        let f = t.flows().next().unwrap();
        assert_eq!(f.steered_via().unwrap(), &[a("fc00:f1::2:0:5a"), a("fc00:f2::2:0:5a")]);
        // An SRH that is not the return path is not steering.
        let mut other = with_srh(tcp(11, "fc00:4::2", 80, "::", 40000, ACK, 10), &["fc00:1::1", "fc00:e2::1"], 1, &[]);
        other.src = a("fc00:4::2");
        t.observe(Frame::Ipv6(other));
        assert_eq!(t.flows().next().unwrap().steered_via(), None);
    }

    #[test]
    fn tcp_state_follows_the_flags() {
        let mut t = FlowTable::new(100);
        let seq = [
            ("fc00::1", 1, "fc00::2", 2, SYN, TcpState::SynSent),
            ("fc00::2", 2, "fc00::1", 1, SYNACK, TcpState::SynReceived),
            ("fc00::1", 1, "fc00::2", 2, ACK, TcpState::Established),
            ("fc00::2", 2, "fc00::1", 1, FINACK, TcpState::Closing),
            ("fc00::1", 1, "fc00::2", 2, FINACK, TcpState::Closed),
            ("fc00::2", 2, "fc00::1", 1, tcp_flags::RST, TcpState::Reset),
        ];
        for (src, sp, dst, dp, flags, want) in seq {
            t.observe(Frame::Ipv6(tcp(1, src, sp, dst, dp, flags, 0)));
            assert_eq!(t.flows().next().unwrap().state, want, "after flags {flags:#x}");
        }
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn joined_midstream_the_server_is_the_side_with_the_lower_port() {
        let mut t = FlowTable::new(100);
        let segs = ["fc00:4::2", "fc00:f2::2:0:5a"];
        // A reply first, then the client's steered packet: one flow, the client on the ephemeral port.
        t.observe(Frame::Ipv6(tcp(1, "fc00:4::2", 8080, "fc00:1::1", 59634, ACK, 1000)));
        t.observe(Frame::Ipv6(with_srh(tcp(1, "fc00:1::1", 59634, "::", 8080, ACK, 0), &segs, 1, &[])));
        assert_eq!(t.len(), 1);
        let f = t.flows().next().unwrap();
        assert_eq!((f.key.client, f.key.server), ((a("fc00:1::1"), 59634), (a("fc00:4::2"), 8080)));
        assert_eq!((f.up.packets, f.down.packets, f.state), (1, 1, TcpState::Midstream));
        assert_eq!(f.srh().map(|s| s.segments_left), Some(1));
    }

    #[test]
    fn rate_is_the_last_whole_second() {
        let mut r = Rate::default();
        r.add(Duration::from_millis(5_100), 100);
        r.add(Duration::from_millis(5_900), 50);
        r.add(Duration::from_millis(6_200), 10);
        assert_eq!(r.per_second(Duration::from_millis(6_500)), 150);
        assert_eq!(r.per_second(Duration::from_millis(7_000)), 10);
        assert_eq!(r.per_second(Duration::from_millis(9_000)), 0);
    }

    #[test]
    fn the_table_stays_within_its_size() {
        let mut t = FlowTable::new(50);
        for port in 0..200u16 {
            t.observe(Frame::Ipv6(tcp(u64::from(port), "fc00::1", port, "fc00::2", 80, SYN, 0)));
        }
        assert!(t.len() <= 50);
        assert!(t.totals().evicted_flows >= 150);
        // The newest flows stay.
        assert!(t.flows().any(|f| f.key.client.1 == 199));
    }

    #[test]
    fn malformed_packets_are_counted_and_listed() {
        let mut t = FlowTable::new(10);
        let mut p = tcp(1, "fc00::1", 1, "fc00::2", 2, SYN, 0);
        p.transport = None;
        p.malformed = Some(libsrv6sock::capture::DecodeError::Srh {
            offset: 40,
            source: libsrv6sock::wire::Error::RoutingType(9),
        });
        t.observe(Frame::Ipv6(p));
        assert_eq!((t.totals().malformed, t.len()), (1, 0));
        assert!(t.packets()[0].malformed.as_deref().unwrap().contains("SRH at byte 40"));
    }
}
