//! srv6top: a terminal monitor of SRv6 traffic. It captures live (pcap) or reads a pcap file, decodes the
//! outer layers with etherparse and the Segment Routing Header with libsrv6sock, aggregates flows, names the
//! function SIDs of known proxy locators, and joins what srv6pipes-proxy instances say about their flows.
//!
//! Layout: [`cli`] the command line; [`source`] capture threads; [`flows`] the flow table (pure);
//! [`functions`] SID naming; [`proxies`] the proxies' control sockets; [`app`] the monitor's state and keys;
//! [`ui`] drawing (pure); [`report`] JSON and text output; [`format`] text forms.

mod app;
mod cli;
mod flows;
mod format;
mod functions;
mod proxies;
mod report;
mod source;
mod ui;

use std::io::Write;
use std::process::ExitCode;
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Parser;
use libsrv6sock::wire::sid::SidLayout;
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};

use crate::app::{App, Key, Losses, SourceInfo};
use crate::cli::Cli;
use crate::flows::FlowTable;
use crate::functions::Functions;
use crate::proxies::Proxies;
use crate::source::{Event, Feed, LiveOptions};

/// How long the monitor takes in frames before it looks at the keyboard again: keys are answered within
/// this plus one drawing.
const DRAIN_BUDGET: Duration = Duration::from_millis(20);
/// How often the proxies are asked.
const PROXY_INTERVAL: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped reading (`srv6top --json | head`) is not an error.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("srv6top: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let layout = parse_layout(&cli.sid_layout)?;
    let names = cli.functions.iter().map(|f| parse_function(f)).collect::<Result<Vec<_>>>()?;
    let functions = Functions::new(layout, cli.locators.clone(), names);
    let (feed, source) = match &cli.read {
        Some(path) => {
            let feed = source::open_file(path).with_context(|| format!("reading {}", path.display()))?;
            (feed, SourceInfo { label: path.display().to_string(), live: false })
        }
        None if cli.interfaces.is_empty() => {
            bail!("nothing to watch: capture live with -i IFACE (e.g. -i eth0, -i any) or read a file with -r FILE")
        }
        None => {
            let opts = LiveOptions {
                interfaces: cli.interfaces.clone(),
                filter: cli.filter.clone(),
                snaplen: cli.snaplen,
                write: cli.write.clone(),
            };
            (
                source::open_live(&opts)?,
                SourceInfo { label: format!("{} (live)", cli.interfaces.join(", ")), live: true },
            )
        }
    };
    let color = !cli.no_color && std::env::var_os("NO_COLOR").is_none();
    let app = App::new(FlowTable::new(cli.max_flows), functions, Proxies::new(&cli.proxies), source, color);
    if cli.json || cli.report {
        one_shot(app, feed, cli)
    } else {
        monitor(app, feed, cli)
    }
}

/// `LOC/FUNCT/ARG` bit widths.
fn parse_layout(s: &str) -> Result<SidLayout> {
    let bits: Vec<u8> = s
        .split('/')
        .map(|b| b.trim().parse::<u8>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--sid-layout {s:?}: expected three bit counts LOC/FUNCT/ARG, e.g. 80/16/32"))?;
    let [loc, funct, arg] = bits[..] else {
        bail!("--sid-layout {s:?}: expected three bit counts LOC/FUNCT/ARG, e.g. 80/16/32");
    };
    SidLayout::new(loc, funct, arg).with_context(|| format!("--sid-layout {s:?}"))
}

/// `ID=NAME`.
fn parse_function(s: &str) -> Result<(u64, String)> {
    let (id, name) = s.split_once('=').with_context(|| format!("--function {s:?}: expected ID=NAME, e.g. 7=hex"))?;
    let id = id.trim().parse().with_context(|| format!("--function {s:?}: {id:?} is not a function number"))?;
    Ok((id, name.trim().to_string()))
}

/// The clock: the wall clock when live, the newest packet's time when reading a file (so that a recorded
/// capture shows the rates and ages it had).
fn now(app: &App) -> Duration {
    if app.source.live {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
    } else {
        app.table.latest()
    }
}

/// Take in what the capture threads sent, for at most `budget`; false once the source has ended.
fn drain(app: &mut App, feed: &Feed, budget: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < budget {
        match feed.events.try_recv() {
            Ok(Event::Frames(frames)) => frames.into_iter().for_each(|f| app.table.observe(f)),
            Ok(Event::Ended(r)) => {
                app.ended = Some(match r {
                    Ok(()) => String::from("end of file"),
                    Err(e) => format!("capture stopped: {e}"),
                });
                return false;
            }
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
    app.losses = Losses { dropped: feed.dropped(), kernel: feed.kernel_dropped() };
    true
}

fn one_shot(mut app: App, mut feed: Feed, cli: &Cli) -> Result<()> {
    let until = Instant::now() + Duration::from_secs_f64(cli.duration.max(0.0));
    loop {
        if !drain(&mut app, &feed, DRAIN_BUDGET) {
            break;
        }
        if app.source.live && Instant::now() >= until {
            // What was captured up to now, and only that, goes into the report (and into -w's file).
            feed.stop_capture();
            // The threads have ended and dropped their senders: this ends once the channel is empty.
            while drain(&mut app, &feed, DRAIN_BUDGET) {}
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for update in Proxies::poll_now(&cli.proxies) {
        app.proxies.apply(update, &mut app.functions);
    }
    feed.stop();
    if let Some(e) = app.ended.as_deref().filter(|e| e.starts_with("capture stopped")) {
        eprintln!("srv6top: {e}; reporting what was read before");
    }
    let now = now(&app);
    let report = report::build(&app, now);
    // Formatted first, so that every write error is an io::Error (a closed pipe ends quietly, see main).
    let text = if cli.json { serde_json::to_string_pretty(&report)? + "\n" } else { report::text(&report) };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

fn monitor(mut app: App, feed: Feed, cli: &Cli) -> Result<()> {
    let poller = (!cli.proxies.is_empty()).then(|| proxies::spawn_poller(cli.proxies.clone(), PROXY_INTERVAL));
    let tick = Duration::from_secs(1) / cli.refresh;
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let result = (|| -> Result<()> {
        let mut last_draw: Option<Instant> = None;
        let mut running = true;
        while !app.quit {
            if running {
                running = drain(&mut app, &feed, DRAIN_BUDGET);
            }
            if let Some(rx) = &poller {
                while let Ok(update) = rx.try_recv() {
                    app.proxies.apply(update, &mut app.functions);
                }
            }
            let mut redraw = last_draw.is_none_or(|t| t.elapsed() >= tick);
            if event::poll(Duration::from_millis(10))? {
                match event::read()? {
                    TermEvent::Key(k) if k.kind != KeyEventKind::Release => {
                        if let Some(key) = map_key(k.code, k.modifiers) {
                            app.on_key(key, now(&app));
                        }
                        redraw = true;
                    }
                    TermEvent::Resize(..) => redraw = true,
                    _ => {}
                }
            }
            if redraw {
                let now = now(&app);
                terminal.draw(|f| ui::draw(f, &app, now))?;
                last_draw = Some(Instant::now());
            }
        }
        Ok(())
    })();
    ratatui::restore();
    feed.stop();
    result
}

fn map_key(code: KeyCode, modifiers: KeyModifiers) -> Option<Key> {
    Some(match code {
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Tab => Key::Tab,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        _ => return None,
    })
}
