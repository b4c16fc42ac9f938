//! Drawing: a pure function of [`App`] and the clock, so that every screen can be snapshot-tested with
//! ratatui's `TestBackend`. Selection and the active segment are shown by modifiers (reverse, bold), not
//! by colour alone, so the screen reads the same in monochrome.

use std::net::Ipv6Addr;
use std::time::Duration;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use crate::app::{App, View};
use crate::flows::{Flow, PacketRow};
use crate::format::{addr_port, bytes, duration, flags, proxy_function, rate, segments_in_visit_order};
use libsrv6sock::wire::srh::SrhRepr;
use libsrv6sock::wire::tlv::{TlvRepr, TYPE_PAD1};

/// Key help, as the overlay shows it.
pub const HELP: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit"),
    ("↑ ↓, j k", "select a flow (scroll the packet and proxy lists)"),
    ("PgUp PgDn Home End", "move by a page, to the first or last"),
    ("1 2 3, Tab", "flows, packets, proxies"),
    ("s / S", "next sort column / reverse the order"),
    ("/", "filter: words that must all match an address, port, SID, function or state; Enter applies"),
    ("Esc", "clear the filter"),
    ("space, p", "pause the display (capture goes on)"),
    ("?, h", "this help; any key closes it"),
];

/// Draw the whole screen. `now` is the clock rates and ages are computed against.
pub fn draw(f: &mut Frame, app: &App, now: Duration) {
    let [header, body, footer] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0), Constraint::Length(1)]).areas(f.area());
    f.render_widget(Paragraph::new(header_line(app)), header);
    match app.view {
        View::Flows => draw_flows(f, app, now, body),
        View::Packets => draw_packets(f, app, body),
        View::Proxies => draw_proxies(f, app, body),
    }
    f.render_widget(Paragraph::new(footer_line(app)), footer);
    if app.help {
        draw_help(f, app, f.area());
    }
}

fn style(app: &App, color: Color) -> Style {
    if app.color {
        Style::default().fg(color)
    } else {
        Style::default()
    }
}

fn header_line(app: &App) -> Line<'static> {
    let t = app.shown().totals();
    let mut spans = vec![
        Span::styled("srv6top ", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!("{} │ {} flows │ {} pkts, {} SRv6", app.source.label, app.shown().len(), t.ipv6, t.srv6)),
    ];
    if t.malformed + t.undecodable > 0 {
        spans.push(Span::styled(
            format!(", {} malformed", t.malformed + t.undecodable),
            style(app, Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    if app.losses.dropped + app.losses.kernel > 0 {
        spans.push(Span::styled(
            format!(" │ DROPPED {} (monitor) {} (kernel)", app.losses.dropped, app.losses.kernel),
            style(app, Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    if t.evicted_flows > 0 {
        spans.push(Span::raw(format!(" │ {} old flows evicted", t.evicted_flows)));
    }
    if app.paused() {
        spans.push(Span::styled(" │ PAUSED", Style::default().add_modifier(Modifier::REVERSED)));
    }
    if let Some(e) = &app.ended {
        spans.push(Span::raw(format!(" │ {e}")));
    }
    Line::from(spans)
}

fn footer_line(app: &App) -> Line<'static> {
    if let Some(text) = &app.editing {
        return Line::from(vec![
            Span::styled("filter: ", Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{text}_")),
            Span::raw("   (Enter apply, Esc cancel)"),
        ]);
    }
    let order = if app.ascending { "↑" } else { "↓" };
    let mut s = format!("sort: {}{order}", app.sort.name());
    if !app.filter.is_empty() {
        s.push_str(&format!(" │ filter: {}", app.filter));
    }
    s.push_str(" │ ? help  q quit  / filter  s sort  space pause  1 flows 2 packets 3 proxies");
    Line::from(s)
}

/// The flow table's columns: header and width. Addresses and waypoints share what the counters leave.
const FLOW_COLUMNS: [(&str, Constraint); 12] = [
    ("PROTO", Constraint::Length(5)),
    ("CLIENT", Constraint::Fill(3)),
    ("SERVER", Constraint::Fill(3)),
    ("WAYPOINTS (* active)", Constraint::Fill(6)),
    ("SL", Constraint::Length(3)),
    ("FUNCTIONS", Constraint::Fill(2)),
    ("RETURN", Constraint::Length(6)),
    ("PKTS ↑/↓", Constraint::Length(9)),
    ("BYTES ↑/↓", Constraint::Length(13)),
    ("RATE ↑/↓", Constraint::Length(15)),
    ("STATE", Constraint::Length(9)),
    ("AGE", Constraint::Length(6)),
];

fn draw_flows(f: &mut Frame, app: &App, now: Duration, area: Rect) {
    let rows = app.rows(now);
    let selected = app.selected_index(&rows);
    let detail_height = if area.height >= 16 { area.height / 2 } else { 0 };
    let [table_area, detail_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(detail_height)]).areas(area);
    let header =
        Row::new(FLOW_COLUMNS.iter().map(|(h, _)| Cell::from(*h))).style(Style::default().add_modifier(Modifier::BOLD));
    let body = rows.iter().map(|flow| {
        let (segs, sl) = match flow.srh() {
            Some(srh) => (waypoint_text(srh, flow.active_segment), srh.segments_left.to_string()),
            None => (String::from("-"), String::from("-")),
        };
        let calls: Vec<String> = flow
            .srh()
            .into_iter()
            .flat_map(|s| s.segments.iter())
            .filter_map(|sid| app.functions.call(*sid))
            .map(|c| c.to_string())
            .collect();
        let ret = match (flow.return_path(), flow.return_srh()) {
            (Some(_), _) if flow.steered_via().is_some() => {
                format!("steered:{}", flow.steered_via().map_or(0, <[Ipv6Addr]>::len))
            }
            (Some(p), _) => format!("tlv:{}", p.len()),
            (None, Some(_)) => String::from("srh"),
            (None, None) => String::from("-"),
        };
        Row::new(vec![
            Cell::from(flow.key.proto.to_string()),
            Cell::from(addr_port(flow.key.client)),
            Cell::from(addr_port(flow.key.server)),
            Cell::from(segs),
            Cell::from(sl),
            Cell::from(if calls.is_empty() { String::from("-") } else { calls.join(",") }),
            Cell::from(ret),
            Cell::from(format!("{}/{}", flow.up.packets, flow.down.packets)),
            Cell::from(format!("{}/{}", bytes(flow.up.bytes), bytes(flow.down.bytes))),
            Cell::from(format!("{}/{}", rate(flow.up.rate.per_second(now)), rate(flow.down.rate.per_second(now)))),
            Cell::from(flow.state.to_string()),
            Cell::from(duration(now.saturating_sub(flow.first_seen))),
        ])
    });
    let table = Table::new(body, FLOW_COLUMNS.iter().map(|(_, w)| *w))
        .header(header)
        .block(Block::default().borders(Borders::TOP).title(format!(" flows ({}) ", rows.len())))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .column_spacing(1);
    let mut state = TableState::default().with_selected(selected);
    f.render_stateful_widget(table, table_area, &mut state);
    if detail_height > 0 {
        let flow = selected.map(|i| rows[i]);
        f.render_widget(detail(app, flow, now), detail_area);
    }
}

/// The waypoints in the order visited (the final destination is the SERVER column), the active segment
/// marked with `*`; `dst*` when the final destination itself is active.
fn waypoint_text(srh: &SrhRepr, active: Option<Ipv6Addr>) -> String {
    let mark = |s: &Ipv6Addr| if Some(*s) == active { format!("{s}*") } else { s.to_string() };
    let segments = segments_in_visit_order(srh);
    let (waypoints, _) = segments.split_at(segments.len().saturating_sub(1));
    let mut text: Vec<String> = waypoints.iter().map(mark).collect();
    if srh.segments_left == 0 {
        text.push(String::from("dst*"));
    }
    text.join(" ")
}

fn detail<'a>(app: &'a App, flow: Option<&'a Flow>, now: Duration) -> Paragraph<'a> {
    let block = Block::default().borders(Borders::TOP).title(" selected flow ");
    let Some(flow) = flow else {
        return Paragraph::new("no flow yet").block(block);
    };
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut lines = vec![Line::from(vec![
        Span::styled(
            format!("{} {} → {}", flow.key.proto, addr_port(flow.key.client), addr_port(flow.key.server)),
            bold,
        ),
        Span::raw(format!(
            "  {}  age {}  idle {}",
            flow.state,
            duration(now.saturating_sub(flow.first_seen)),
            duration(now.saturating_sub(flow.last_seen))
        )),
    ])];
    for (name, captured) in [("forward SRH", &flow.forward), ("return SRH", &flow.reply)] {
        let Some(captured) = captured else { continue };
        let srh = &captured.repr;
        lines.push(Line::from(format!(
            "{name}: segments left {}, last entry {}, flags {:#04x}, tag {}",
            srh.segments_left,
            srh.segments.len().saturating_sub(1),
            srh.flags,
            srh.tag
        )));
        for (i, sid) in srh.segments.iter().enumerate().rev() {
            let mark = if i == usize::from(srh.segments_left) { "▶" } else { " " };
            let call = app.functions.call(*sid).map(|c| format!("  {c} on {}", c.locator)).unwrap_or_default();
            let text = format!("  {mark} [{i}] {sid}{call}");
            let style = if mark == "▶" { bold } else { Style::default() };
            lines.push(Line::styled(text, style));
        }
        // Every TLV as on the wire, padding included (the decoded header keeps only the others).
        let view = captured.view();
        for tlv in view.tlvs().flatten() {
            let text = match TlvRepr::parse(&tlv, view.tlv_offset()) {
                Ok(Some(t)) => crate::format::tlv(&t),
                Ok(None) if tlv.tlv_type == TYPE_PAD1 => String::from("0 Pad1"),
                Ok(None) => format!("{} PadN, {} bytes", tlv.tlv_type, tlv.value.len()),
                Err(e) => format!("{}: {e}", tlv.tlv_type),
            };
            lines.push(Line::from(format!("    TLV at byte {}: {text}", view.tlv_offset() + tlv.offset)));
        }
    }
    for (socket, p) in app.proxies.joined(&flow.key) {
        lines.push(Line::from(format!(
            "proxy {}: flow {} {} via {} {}, in {}/{} out {}/{}",
            socket.display(),
            p.id,
            p.state,
            p.sid,
            proxy_function(p),
            bytes(p.bytes_up),
            bytes(p.bytes_down),
            bytes(p.bytes_up_out),
            bytes(p.bytes_down_out)
        )));
    }
    lines.push(Line::styled("first packets:", bold));
    lines.extend(flow.first_packets.iter().map(|p| Line::from(packet_text(p, flow.first_seen))));
    Paragraph::new(lines).block(block).wrap(Wrap { trim: false })
}

fn packet_text(p: &PacketRow, since: Duration) -> String {
    let ports = match p.ports {
        Some((proto, s, d)) => format!("{proto} {s} → {d} {}", flags(p.flags)),
        None => String::from("-"),
    };
    let srh = p.srh.map(|(sl, n)| format!(" SRH sl {sl}/{n}")).unwrap_or_default();
    let bad = p.malformed.as_ref().map(|m| format!(" MALFORMED: {m}")).unwrap_or_default();
    format!(
        "  #{:<6} +{:<8} {} → {} {ports} len {} payload {}{srh}{bad}",
        p.frame,
        duration(p.timestamp.saturating_sub(since)),
        p.src,
        p.dst,
        p.wire_len,
        p.payload_len
    )
}

fn draw_packets(f: &mut Frame, app: &App, area: Rect) {
    let packets = app.shown().packets();
    let since = packets.front().map_or(Duration::ZERO, |p| p.timestamp);
    let height = usize::from(area.height.saturating_sub(1));
    let start = app.scroll.min(packets.len().saturating_sub(height));
    let lines: Vec<Line> = packets
        .iter()
        .skip(start)
        .take(height)
        .map(|p| {
            let text = packet_text(p, since);
            if p.malformed.is_some() {
                Line::styled(text, style(app, Color::Red).add_modifier(Modifier::BOLD))
            } else {
                Line::from(text)
            }
        })
        .collect();
    let title = format!(" packets (last {} of {}) ", packets.len(), app.shown().totals().ipv6);
    f.render_widget(Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(title)), area);
}

fn draw_proxies(f: &mut Frame, app: &App, area: Rect) {
    let mut lines = Vec::new();
    if app.proxies.proxies.is_empty() {
        lines.push(Line::from("no proxy watched: start srv6top with --proxy SOCKET (a proxy's control socket)"));
    }
    for p in &app.proxies.proxies {
        lines.push(Line::styled(p.socket.display().to_string(), Style::default().add_modifier(Modifier::BOLD)));
        if let Some(e) = &p.error {
            lines.push(Line::styled(format!("  unreachable: {e}"), style(app, Color::Red)));
        }
        if let Some(s) = &p.stats {
            lines.push(Line::from(format!(
                "  {} flows active, {} accepted, {} refused, {} connect failed, in {}↑ {}↓",
                s.flows_active,
                s.accepted,
                s.refused,
                s.connect_failed,
                bytes(s.bytes_up),
                bytes(s.bytes_down)
            )));
        }
        for fl in &p.flows {
            let captured = app.shown().flows().any(|c| app.proxies.joined(&c.key).iter().any(|(_, j)| j.id == fl.id));
            lines.push(Line::from(format!(
                "  #{} [{}]:{} → [{}]:{} {} {} in {}/{} out {}/{}{}",
                fl.id,
                fl.client.ip(),
                fl.client.port(),
                fl.server.ip(),
                fl.server.port(),
                proxy_function(fl),
                fl.state,
                bytes(fl.bytes_up),
                bytes(fl.bytes_down),
                bytes(fl.bytes_up_out),
                bytes(fl.bytes_down_out),
                if captured { "  (captured)" } else { "" }
            )));
        }
    }
    let lines: Vec<Line> = lines.into_iter().skip(app.scroll).collect();
    f.render_widget(Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(" proxies ")), area);
}

fn draw_help(f: &mut Frame, app: &App, area: Rect) {
    let width = area.width.min(90);
    let height = area.height.min(HELP.len() as u16 + 6);
    let popup = Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:>20}  "), Style::default().add_modifier(Modifier::BOLD)),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from("columns: SL segments left, RETURN the return path (tlv:N addresses, or an SRH seen back)"));
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::default().borders(Borders::ALL).title(" srv6top help ").border_style(style(app, Color::Cyan)))
            .wrap(Wrap { trim: false }),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{Key, SourceInfo};
    use crate::flows::tests::{tcp, with_srh};
    use crate::flows::FlowTable;
    use crate::functions::Functions;
    use crate::proxies::{Proxies, ProxyState};
    use libsrv6sock::capture::{tcp_flags, DecodeError, Frame};
    use libsrv6sock::wire::sid::SidLayout;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    const SEGS: [&str; 3] = ["fc00:4::2", "fc00:f2::2:0:5a", "fc00:f1::2:0:5a"];
    const RP: [&str; 2] = ["fc00:f1::2:0:5a", "fc00:f2::2:0:5a"];

    /// A steered xor/xor download, a plain flow and a malformed packet, as a capture on the client's link
    /// would show them.
    fn app() -> App {
        let mut t = FlowTable::new(100);
        let up = |t: u64, flags, payload| {
            Frame::Ipv6(with_srh(tcp(t, "fc00:1::1", 40000, "::", 8080, flags, payload), &SEGS, 2, &RP))
        };
        let down = |t: u64, flags, payload| Frame::Ipv6(tcp(t, "fc00:4::2", 8080, "fc00:1::1", 40000, flags, payload));
        t.observe(up(100, tcp_flags::SYN, 0));
        t.observe(down(100, tcp_flags::SYN | tcp_flags::ACK, 0));
        t.observe(up(100, tcp_flags::ACK, 80));
        for s in 100..103 {
            t.observe(down(s, tcp_flags::ACK, 60_000));
        }
        t.observe(Frame::Ipv6(tcp(102, "fc00:1::1", 50000, "fc00:4::2", 22, tcp_flags::ACK, 10)));
        let mut bad = tcp(102, "fc00:1::1", 1, "fc00:f1::2:0:5a", 2, 0, 0);
        bad.transport = None;
        bad.malformed =
            Some(DecodeError::Srh { offset: 40, source: libsrv6sock::wire::Error::TlvTruncated { offset: 64 } });
        t.observe(Frame::Ipv6(bad));
        let functions = Functions::new(
            SidLayout::default(),
            vec!["fc00:f1::/80".parse().unwrap(), "fc00:f2::/80".parse().unwrap()],
            [],
        );
        let source = SourceInfo { label: "chain.pcap".into(), live: false };
        App::new(t, functions, Proxies::default(), source, false)
    }

    fn screen(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let now = app.table.latest();
        terminal.draw(|f| draw(f, app, now)).unwrap();
        terminal
    }

    #[test]
    fn flows_view() {
        insta::assert_snapshot!(screen(&app(), 160, 34).backend());
    }

    #[test]
    fn packets_view_marks_malformed_packets() {
        let mut app = app();
        app.on_key(Key::Char('2'), Duration::ZERO);
        insta::assert_snapshot!(screen(&app, 140, 12).backend());
    }

    #[test]
    fn help_overlay() {
        let mut app = app();
        app.on_key(Key::Char('?'), Duration::ZERO);
        insta::assert_snapshot!(screen(&app, 100, 20).backend());
    }

    #[test]
    fn proxies_view_joins_the_proxy_flow() {
        let mut app = app();
        app.proxies = Proxies {
            proxies: vec![ProxyState {
                socket: "/run/p1.sock".into(),
                flows: vec![srv6pipes_api::control::Flow {
                    id: 7,
                    worker: 0,
                    client: "[fc00:1::1]:40000".parse().unwrap(),
                    server: "[fc00:4::2]:8080".parse().unwrap(),
                    sid: "fc00:f1::2:0:5a".parse().unwrap(),
                    module: "builtin".into(),
                    function: "xor".into(),
                    function_id: 2,
                    argument: 0x5a,
                    state: srv6pipes_api::control::FlowState::Established,
                    age_ms: 1500,
                    bytes_up: 80,
                    bytes_down: 180_000,
                    bytes_up_out: 80,
                    bytes_down_out: 180_000,
                    downstream: Some(srv6pipes_api::control::Downstream {
                        sid: "fc00:f1::1:0:0".parse().unwrap(),
                        function: "copy".into(),
                        function_id: 1,
                        argument: 0,
                    }),
                }],
                stats: None,
                error: None,
            }],
        };
        app.on_key(Key::Char('3'), Duration::ZERO);
        insta::assert_snapshot!(screen(&app, 120, 8).backend());
    }

    #[test]
    fn selection_reads_in_monochrome_and_any_size_draws() {
        let app = app();
        let t = screen(&app, 160, 34);
        let buf = t.backend().buffer();
        // Row 3 is the first flow (header line, table title, column header): selected, shown reversed.
        assert!(buf[(0, 3)].modifier.contains(Modifier::REVERSED), "{:?}", buf[(0, 3)]);
        assert!(buf.content().iter().all(|c| c.fg == Color::Reset), "colour used with colours off");
        for (w, h) in [(1, 1), (20, 5), (40, 10), (80, 24), (300, 80)] {
            screen(&app, w, h);
        }
    }
}
