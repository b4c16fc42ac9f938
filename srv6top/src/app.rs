//! The monitor's state: what was captured, what the proxies say, and what the user chose to see (view,
//! selection, sort, filter, pause). Keys change it through [`App::on_key`]; the screen is drawn from it alone.

use std::cmp::Reverse;
use std::time::Duration;

use crate::flows::{Flow, FlowKey, FlowTable};
use crate::functions::Functions;
use crate::proxies::Proxies;

/// The screens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The flow table and the selected flow's detail.
    Flows,
    /// The most recent packets.
    Packets,
    /// The proxies' own flow tables.
    Proxies,
}

/// The flow table's sort orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Wire bytes, both ways.
    Bytes,
    /// Bytes per second, both ways.
    Rate,
    /// Packets, both ways.
    Packets,
    /// Time since the first packet.
    Age,
    /// Client address and port.
    Client,
    /// Server address and port.
    Server,
    /// TCP state.
    State,
}

impl SortKey {
    const ALL: [SortKey; 7] = [
        SortKey::Bytes,
        SortKey::Rate,
        SortKey::Packets,
        SortKey::Age,
        SortKey::Client,
        SortKey::Server,
        SortKey::State,
    ];

    fn next(self) -> SortKey {
        let i = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    /// The name shown in the header.
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Bytes => "bytes",
            SortKey::Rate => "rate",
            SortKey::Packets => "packets",
            SortKey::Age => "age",
            SortKey::Client => "client",
            SortKey::Server => "server",
            SortKey::State => "state",
        }
    }
}

/// A key press, independent of the terminal library (so that tests can drive the app).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A printable character.
    Char(char),
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// Tab.
    Tab,
    /// Arrow up.
    Up,
    /// Arrow down.
    Down,
    /// Page up.
    PageUp,
    /// Page down.
    PageDown,
    /// Home.
    Home,
    /// End.
    End,
    /// Ctrl-C.
    Interrupt,
}

/// Where the packets come from, as the header says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// "eth0, eth1 (live)" or "capture.pcap".
    pub label: String,
    /// Live capture (the clock is the wall clock) or a file (the clock is the last packet's time).
    pub live: bool,
}

/// Losses the capture reported: the monitor says so instead of lagging.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Losses {
    /// Packets the monitor dropped because it could not keep up.
    pub dropped: u64,
    /// Packets the kernel dropped before libpcap saw them.
    pub kernel: u64,
}

/// The whole state of the monitor.
pub struct App {
    /// Captured flows and packets.
    pub table: FlowTable,
    /// The table as it was when the user paused, shown instead of the live one.
    pub frozen: Option<FlowTable>,
    /// SID naming.
    pub functions: Functions,
    /// The proxies' flow tables.
    pub proxies: Proxies,
    /// The source.
    pub source: SourceInfo,
    /// Capture losses.
    pub losses: Losses,
    /// Why the capture ended, if it did.
    pub ended: Option<String>,
    /// The screen shown.
    pub view: View,
    /// The flow table's sort order.
    pub sort: SortKey,
    /// Sort ascending instead of descending.
    pub ascending: bool,
    /// The filter applied (words that must all match a flow).
    pub filter: String,
    /// The filter being typed, while the user types it.
    pub editing: Option<String>,
    /// The selected flow.
    pub selected: Option<FlowKey>,
    /// The selected row in the packet and proxy lists.
    pub scroll: usize,
    /// The help overlay is shown.
    pub help: bool,
    /// Colours on (off for `--no-color`/`NO_COLOR`).
    pub color: bool,
    /// The user asked to quit.
    pub quit: bool,
}

impl App {
    /// A monitor with an empty table.
    pub fn new(table: FlowTable, functions: Functions, proxies: Proxies, source: SourceInfo, color: bool) -> App {
        App {
            table,
            frozen: None,
            functions,
            proxies,
            source,
            losses: Losses::default(),
            ended: None,
            view: View::Flows,
            sort: SortKey::Bytes,
            ascending: false,
            filter: String::new(),
            editing: None,
            selected: None,
            scroll: 0,
            help: false,
            color,
            quit: false,
        }
    }

    /// The table shown: frozen while paused.
    pub fn shown(&self) -> &FlowTable {
        self.frozen.as_ref().unwrap_or(&self.table)
    }

    /// True while paused.
    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    /// The flows shown, filtered and sorted.
    pub fn rows(&self, now: Duration) -> Vec<&Flow> {
        let words: Vec<String> = self.filter.split_whitespace().map(str::to_lowercase).collect();
        let mut rows: Vec<&Flow> = self.shown().flows().filter(|f| words.iter().all(|w| self.matches(f, w))).collect();
        match self.sort {
            SortKey::Bytes => rows.sort_by_key(|f| (Reverse(f.bytes()), f.key)),
            SortKey::Rate => rows.sort_by_key(|f| (Reverse(f.rate(now)), f.key)),
            SortKey::Packets => rows.sort_by_key(|f| (Reverse(f.up.packets + f.down.packets), f.key)),
            SortKey::Age => rows.sort_by_key(|f| (f.first_seen, f.key)),
            SortKey::Client => rows.sort_by_key(|f| (f.key.client, f.key.server)),
            SortKey::Server => rows.sort_by_key(|f| (f.key.server, f.key.client)),
            SortKey::State => rows.sort_by_key(|f| (f.state, f.key)),
        }
        if self.ascending {
            rows.reverse();
        }
        rows
    }

    /// A flow matches a filter word if its addresses, ports, segments, function names or state contain it.
    fn matches(&self, f: &Flow, word: &str) -> bool {
        let has = |s: String| s.to_lowercase().contains(word);
        has(format!("{} [{}]:{} [{}]:{}", f.key.proto, f.key.client.0, f.key.client.1, f.key.server.0, f.key.server.1))
            || has(f.state.to_string())
            || f.srh()
                .into_iter()
                .chain(f.return_srh())
                .flat_map(|s| &s.segments)
                .any(|sid| has(sid.to_string()) || self.functions.call(*sid).is_some_and(|c| has(c.to_string())))
    }

    /// The index of the selected flow among `rows` (the first row when nothing, or a vanished flow, is).
    pub fn selected_index(&self, rows: &[&Flow]) -> Option<usize> {
        if rows.is_empty() {
            return None;
        }
        Some(self.selected.and_then(|k| rows.iter().position(|f| f.key == k)).unwrap_or(0))
    }

    /// Apply a key press; `now` orders rows by rate the way the screen shows them.
    pub fn on_key(&mut self, key: Key, now: Duration) {
        if let Some(text) = &mut self.editing {
            match key {
                Key::Enter => {
                    self.filter = std::mem::take(text);
                    self.editing = None;
                }
                Key::Esc => self.editing = None,
                Key::Backspace => {
                    text.pop();
                }
                Key::Char(c) => text.push(c),
                Key::Interrupt => self.quit = true,
                _ => {}
            }
            return;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            self.quit = matches!(key, Key::Char('q') | Key::Interrupt);
            return;
        }
        match key {
            Key::Char('q') | Key::Interrupt => self.quit = true,
            Key::Char('?') | Key::Char('h') => self.help = true,
            Key::Char('/') => self.editing = Some(self.filter.clone()),
            Key::Esc => self.filter.clear(),
            Key::Char(' ') | Key::Char('p') => {
                self.frozen = if self.frozen.is_some() { None } else { Some(self.table.clone()) };
            }
            Key::Char('s') => self.sort = self.sort.next(),
            Key::Char('S') => self.ascending = !self.ascending,
            Key::Char('1') => self.view = View::Flows,
            Key::Char('2') => self.view = View::Packets,
            Key::Char('3') => self.view = View::Proxies,
            Key::Tab => {
                self.view = match self.view {
                    View::Flows => View::Packets,
                    View::Packets => View::Proxies,
                    View::Proxies => View::Flows,
                };
                self.scroll = 0;
            }
            Key::Up | Key::Char('k') => self.move_selection(-1, now),
            Key::Down | Key::Char('j') => self.move_selection(1, now),
            Key::PageUp => self.move_selection(-20, now),
            Key::PageDown => self.move_selection(20, now),
            Key::Home => self.move_selection(isize::MIN / 2, now),
            Key::End => self.move_selection(isize::MAX / 2, now),
            _ => {}
        }
    }

    fn move_selection(&mut self, by: isize, now: Duration) {
        if self.view != View::Flows {
            self.scroll = self.scroll.saturating_add_signed(by);
            return;
        }
        let rows = self.rows(now);
        let Some(i) = self.selected_index(&rows) else { return };
        let j = i.saturating_add_signed(by).min(rows.len() - 1);
        self.selected = Some(rows[j].key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::tests::tcp;
    use libsrv6sock::wire::sid::SidLayout;
    use srv6pipes_capture::{tcp_flags, Frame};

    fn app() -> App {
        let mut table = FlowTable::new(100);
        for (port, payload) in [(40001u16, 10usize), (40002, 3000), (40003, 500)] {
            table.observe(Frame::Ipv6(tcp(5, "fc00:1::1", port, "fc00:4::2", 80, tcp_flags::ACK, payload)));
        }
        let functions = Functions::new(SidLayout::default(), vec![], []);
        let source = SourceInfo { label: "test".into(), live: false };
        App::new(table, functions, Proxies::default(), source, false)
    }

    fn ports(app: &App) -> Vec<u16> {
        app.rows(Duration::ZERO).iter().map(|f| f.key.client.1).collect()
    }

    #[test]
    fn sort_filter_select_and_pause() {
        let mut app = app();
        assert_eq!(ports(&app), [40002, 40003, 40001], "bytes, largest first");
        app.on_key(Key::Char('S'), Duration::ZERO);
        assert_eq!(ports(&app), [40001, 40003, 40002]);
        app.on_key(Key::Down, Duration::ZERO);
        assert_eq!(app.selected.map(|k| k.client.1), Some(40003));
        for c in "/]:40002 ".chars() {
            app.on_key(Key::Char(c), Duration::ZERO);
        }
        assert_eq!(ports(&app), [40001, 40003, 40002], "not applied before Enter");
        app.on_key(Key::Enter, Duration::ZERO);
        assert_eq!(app.filter, "]:40002 ");
        assert_eq!(ports(&app), [40002]);
        app.on_key(Key::Esc, Duration::ZERO);
        assert_eq!(ports(&app).len(), 3);
        app.on_key(Key::Char(' '), Duration::ZERO);
        app.table.observe(Frame::Ipv6(tcp(6, "fc00:1::1", 40009, "fc00:4::2", 80, tcp_flags::ACK, 1)));
        assert_eq!(ports(&app).len(), 3, "paused: the new flow is not shown");
        app.on_key(Key::Char('p'), Duration::ZERO);
        assert_eq!(ports(&app).len(), 4);
        app.on_key(Key::Char('?'), Duration::ZERO);
        assert!(app.help);
        app.on_key(Key::Char('x'), Duration::ZERO);
        assert!(!app.help && !app.quit);
        app.on_key(Key::Char('q'), Duration::ZERO);
        assert!(app.quit);
    }
}
