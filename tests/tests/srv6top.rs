//! srv6top end to end: recorded and live captures of real `srv6run` traffic through the xor/xor proxy
//! chain (topology `proxy-chain`), every field of its flow table checked against scapy's decoding of the
//! same packets; the proxies' state joined; malformed packets crafted with scapy; the monitor driven in a
//! real terminal (tmux); capture with a file capability instead of root.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde::Deserialize;
use srv6pipes_tests::http::HttpServer;
use srv6pipes_tests::oracle::{self, View};
use srv6pipes_tests::proxy::Proxy;
use srv6pipes_tests::{binaries, wait_until, with_net, Cmd, Net};

const HTTP_PORT: u16 = 8080;
const CLIENT: &str = "fc00:1::1";
const SERVER: &str = "fc00:4::2";
const XOR_CHAIN: &str = "fc00:f1::2:0:5a,fc00:f2::2:0:5a";
const LOCATORS: [&str; 4] = ["-l", "fc00:f1::/80", "-l", "fc00:f2::/80"];
const T: Duration = Duration::from_secs(30);
/// Debian's interpreter, where python3-scapy is installed.
const PYTHON: &str = "/usr/bin/python3";

/// The part of `srv6top --json` the tests read; a field missing from the output is an error.
#[derive(Debug, Deserialize)]
struct Report {
    totals: Totals,
    flows: Vec<FlowRow>,
}

#[derive(Debug, Deserialize)]
struct Totals {
    ipv6: u64,
    srv6: u64,
    malformed: u64,
}

#[derive(Debug, Deserialize)]
struct FlowRow {
    proto: String,
    client: Ipv6Addr,
    client_port: u16,
    server: Ipv6Addr,
    server_port: u16,
    segments: Option<Vec<Ipv6Addr>>,
    segments_left: Option<u8>,
    functions: Vec<FunctionRow>,
    return_path: Option<Vec<Ipv6Addr>>,
    up: DirRow,
    down: DirRow,
    proxies: Vec<ProxyRow>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
struct FunctionRow {
    sid: Ipv6Addr,
    locator: String,
    function: u64,
    name: Option<String>,
    argument: u64,
}

#[derive(Debug, Deserialize)]
struct DirRow {
    packets: u64,
    payload: u64,
}

#[derive(Debug, Deserialize)]
struct ProxyRow {
    function: String,
    bytes_down: u64,
}

fn srv6top() -> Result<PathBuf> {
    binaries::path("srv6top")
}

/// `srv6top ARGS --json` in `host`, its report decoded.
fn report(net: &Net, host: &str, args: &[&str]) -> Result<Report> {
    let out = net.cmd(host, [srv6top()?]).args(args).arg("--json").timeout(T).run()?;
    serde_json::from_str(&out.stdout).with_context(|| format!("srv6top {args:?} --json: {out}"))
}

/// The flow of `client_port` → SERVER:HTTP_PORT in a report.
fn flow(report: &Report, client_port: u16) -> Result<&FlowRow> {
    report
        .flows
        .iter()
        .find(|f| f.client_port == client_port && f.server_port == HTTP_PORT)
        .with_context(|| format!("no flow from port {client_port} in {report:#?}"))
}

/// What scapy says of one connection: the expected flow row, computed independently.
#[derive(Debug)]
struct Expected {
    client_port: u16,
    up_packets: u64,
    up_payload: u64,
    down_packets: u64,
    down_payload: u64,
    segments: Vec<Ipv6Addr>,
    segments_left: u8,
    return_path: Option<Vec<Ipv6Addr>>,
}

/// The HTTP connection from CLIENT to SERVER:HTTP_PORT as scapy decodes the capture: forward packets are
/// those from the client whose final destination (`segments[0]`) is the server.
fn expected(views: &[View]) -> Result<Expected> {
    let client: Ipv6Addr = CLIENT.parse()?;
    let server: Ipv6Addr = SERVER.parse()?;
    let up: Vec<&View> = views
        .iter()
        .filter(|v| v.src == client && v.dst_port == HTTP_PORT)
        .filter(|v| v.srh.as_ref().map_or(v.dst, |s| s.segments[0]) == server)
        .collect();
    let last = up.last().context("scapy sees no packet from the client")?;
    let srh = last.srh.as_ref().context("the client's last packet has no SRH")?;
    let client_port = last.src_port;
    let down: Vec<&View> =
        views.iter().filter(|v| v.src == server && v.src_port == HTTP_PORT && v.dst_port == client_port).collect();
    let return_path = srh.tlvs.as_ref().and_then(|t| t.iter().find_map(|t| t.return_path.clone()));
    Ok(Expected {
        client_port,
        up_packets: up.len() as u64,
        up_payload: up.iter().map(|v| v.payload_len as u64).sum(),
        down_packets: down.len() as u64,
        down_payload: down.iter().map(|v| v.payload_len as u64).sum(),
        segments: srh.segments.clone(),
        segments_left: srh.segments_left,
        return_path,
    })
}

/// The function rows a SID list should give, computed from the addresses' bits (layout 80/16/32).
fn functions_of(segments: &[Ipv6Addr]) -> Vec<FunctionRow> {
    segments
        .iter()
        .filter(|s| s.segments()[0] == 0xfc00 && matches!(s.segments()[1], 0xf1 | 0xf2))
        .map(|s| {
            let bits = u128::from(*s);
            let function = ((bits >> 32) & 0xffff) as u64;
            FunctionRow {
                sid: *s,
                locator: format!("fc00:{:x}::/80", s.segments()[1]),
                function,
                name: match function {
                    1 => Some("copy".into()),
                    2 => Some("xor".into()),
                    _ => None,
                },
                argument: (bits & 0xffff_ffff) as u64,
            }
        })
        .collect()
}

/// srv6top's row and scapy's decoding agree on every field.
fn compare(row: &FlowRow, want: &Expected, at: &str) -> Result<()> {
    let same = |what: &str, ok: bool, got: String, exp: String| -> Result<()> {
        ensure!(ok, "{at}: {what}: srv6top {got}, scapy {exp}");
        Ok(())
    };
    same("proto", row.proto == "tcp", row.proto.clone(), "tcp".into())?;
    same("client", row.client.to_string() == CLIENT, row.client.to_string(), CLIENT.into())?;
    same("server", row.server.to_string() == SERVER, row.server.to_string(), SERVER.into())?;
    same(
        "client port",
        row.client_port == want.client_port,
        row.client_port.to_string(),
        want.client_port.to_string(),
    )?;
    let counts = |d: &DirRow| (d.packets, d.payload);
    same(
        "packets/payload up",
        counts(&row.up) == (want.up_packets, want.up_payload),
        format!("{:?}", counts(&row.up)),
        format!("{:?}", (want.up_packets, want.up_payload)),
    )?;
    same(
        "packets/payload down",
        counts(&row.down) == (want.down_packets, want.down_payload),
        format!("{:?}", counts(&row.down)),
        format!("{:?}", (want.down_packets, want.down_payload)),
    )?;
    same(
        "segments",
        row.segments.as_ref() == Some(&want.segments),
        format!("{:?}", row.segments),
        format!("{:?}", want.segments),
    )?;
    same(
        "segments left",
        row.segments_left == Some(want.segments_left),
        format!("{:?}", row.segments_left),
        want.segments_left.to_string(),
    )?;
    same(
        "return path",
        row.return_path == want.return_path,
        format!("{:?}", row.return_path),
        format!("{:?}", want.return_path),
    )?;
    let functions = functions_of(&want.segments);
    same("functions", row.functions == functions, format!("{:?}", row.functions), format!("{functions:?}"))
}

/// nginx on the server and both proxies up.
fn chain(net: &Net) -> Result<(HttpServer, Proxy, Proxy)> {
    let http = HttpServer::start(net, "server", HTTP_PORT)?;
    let p1 = Proxy::start(net, "p1", "fc00:f1::/80", 5001, &[])?;
    let p2 = Proxy::start(net, "p2", "fc00:f2::/80", 5002, &[])?;
    Ok((http, p1, p2))
}

/// `srv6run --segs XOR_CHAIN -- curl … URL` in the client.
fn curl(net: &Net, name: &str, extra: &[&str]) -> Result<Cmd> {
    Ok(net
        .cmd("client", [binaries::path("srv6run")?])
        .args(["--segs", XOR_CHAIN, "--fail", "closed", "--", "curl", "-sS", "-g", "--noproxy", "*", "-o", "/dev/null"])
        .args(extra)
        .arg(format!("http://[{SERVER}]:{HTTP_PORT}/{name}")))
}

#[test]
fn recorded_chain_traffic_decodes_as_scapy_decodes_it() {
    with_net("proxy-chain", "toprec", |net| {
        let (http, _p1, _p2) = chain(net)?;
        http.add_random_file("1m.bin", 1 << 20)?;
        let on_client = net.capture("client", "eth0")?;
        let between = net.capture("p1", "eth1")?;
        curl(net, "1m.bin", &[])?.timeout(T).run()?;
        let fin = |p: &[srv6pipes_capture::Packet]| {
            p.iter().any(|p| {
                p.has_flags(srv6pipes_capture::tcp_flags::FIN) && p.tcp().is_some_and(|t| t.src_port == HTTP_PORT)
            })
        };
        on_client.wait_for("the server's FIN", T, fin)?;
        between.wait_for("the server's FIN", T, fin)?;
        for (at, pcap, segments_left) in [("client — p1", on_client.stop()?, 2), ("p1 — p2", between.stop()?, 1)] {
            let pcap_s = pcap.to_str().context("temporary path")?;
            let mut args = vec!["-r", pcap_s];
            args.extend(LOCATORS);
            let report = report(net, "client", &args)?;
            let want = expected(&oracle::scapy(&pcap)?)?;
            ensure!(want.segments_left == segments_left, "{at}: scapy sees segments left {}", want.segments_left);
            compare(flow(&report, want.client_port)?, &want, at)?;
            ensure!(report.totals.malformed == 0, "{at}: malformed packets in a clean capture: {:?}", report.totals);
            ensure!(
                report.totals.srv6 == want.up_packets,
                "{at}: {} SRv6 packets, scapy {}",
                report.totals.srv6,
                want.up_packets
            );
        }
        Ok(())
    })
}

#[test]
fn live_capture_on_a_proxy_link_joins_the_proxies_counters() {
    with_net("proxy-chain", "toplive", |net| {
        let (http, p1, _p2) = chain(net)?;
        http.add_random_file("16m.bin", 16 << 20)?;
        // About 16 s at 1 MiB/s: srv6top watches the middle of the download.
        let mut download = curl(net, "16m.bin", &["--limit-rate", "1M", "--max-time", "60"])?.spawn()?;
        wait_until("p1 to relay the download", T, || Ok(!p1.flows(net)?.is_empty()))?;
        let written = net.path("live.pcap");
        let socket = p1.control().to_str().context("temporary path")?.to_string();
        let written_s = written.to_str().context("temporary path")?;
        let mut args = vec!["-i", "eth1", "--duration", "3", "-p", &socket, "-w", written_s];
        args.extend(LOCATORS);
        let live = report(net, "p1", &args)?;
        download.ensure_running().context("the download ended before srv6top finished watching")?;
        let row = live.flows.iter().find(|f| f.server_port == HTTP_PORT).with_context(|| format!("{live:#?}"))?;
        let server: Ipv6Addr = SERVER.parse()?;
        let xor2: Ipv6Addr = "fc00:f2::2:0:5a".parse()?;
        let xor1: Ipv6Addr = "fc00:f1::2:0:5a".parse()?;
        ensure!(row.client.to_string() == CLIENT && row.server == server, "live row {row:?}");
        // p1 sends the whole list on, the segment it consumed included, with p2's SID active.
        let segments = [server, xor2, xor1];
        ensure!(row.segments.as_deref() == Some(&segments[..]), "segments on p1 — p2: {:?}", row.segments);
        ensure!(row.segments_left == Some(1), "segments left on p1 — p2: {:?}", row.segments_left);
        ensure!(row.functions == functions_of(&[xor2, xor1]), "functions: {:?}", row.functions);
        ensure!(row.down.payload > 0, "no download bytes seen in 3 s: {row:?}");
        // The proxy's own entry for this flow: its function and its counters, which have moved.
        let proxy = row.proxies.first().with_context(|| format!("p1's flow not joined: {row:?}"))?;
        ensure!(proxy.function == "xor" && proxy.bytes_down > 0, "p1 says {proxy:?}");
        // -w wrote what was captured: read back, the same connection is there.
        let back = report(net, "p1", &["-r", written_s])?;
        let again = flow(&back, row.client_port)?;
        ensure!(
            again.up.packets == row.up.packets,
            "-w file: {} packets up, live {}",
            again.up.packets,
            row.up.packets
        );
        download.stop()?;
        Ok(())
    })
}

/// The crafted capture of `tests/scripts/craft_srv6.py` (two steered connections, three malformed SRHs).
fn crafted(net: &Net) -> Result<PathBuf> {
    let path = net.path("crafted.pcap");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/craft_srv6.py");
    Cmd::new([PYTHON]).arg(script).arg(&path).timeout(T).run()?;
    Ok(path)
}

#[test]
fn malformed_packets_crafted_with_scapy_are_counted_and_shown() {
    with_net("proxy-chain", "topbad", |net| {
        let pcap = crafted(net)?;
        let pcap_s = pcap.to_str().context("temporary path")?;
        let mut args = vec!["-r", pcap_s];
        args.extend(LOCATORS);
        let report = report(net, "client", &args)?;
        ensure!(report.totals.malformed == 3, "malformed: {:?}", report.totals);
        ensure!(report.totals.ipv6 == 14, "IPv6 packets: {:?}", report.totals);
        let good = flow(&report, 40000)?;
        ensure!((good.up.packets, good.up.payload) == (5, 300), "the good connection up: {good:?}");
        ensure!((good.down.packets, good.down.payload) == (4, 2000), "the good connection down: {good:?}");
        // The packet list names each defect.
        let text = net.cmd("client", [srv6top()?]).args(["-r", pcap_s, "--report"]).timeout(T).run()?;
        ensure!(text.stdout.contains("3 malformed"), "text report: {text}");
        // A reader that stops early (`| head`) ends the report quietly, with status 0.
        let cut = format!("set -o pipefail; {} -r {pcap_s} --json | head -n 1", srv6top()?.display());
        let cut = net.cmd("client", ["bash", "-c", &cut]).timeout(T).output()?;
        ensure!(cut.status.success() && cut.stderr.is_empty(), "srv6top --json | head: {cut}");
        Ok(())
    })
}

/// A tmux server of its own (`-L`), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, width: u16, height: u16, argv: &str) -> Result<Tmux> {
        let socket = format!("s6t-{name}-{}", std::process::id());
        let t = Tmux { socket };
        t.cmd(&["new-session", "-d", "-s", "top", "-x", &width.to_string(), "-y", &height.to_string(), argv])?;
        Ok(t)
    }

    fn cmd(&self, args: &[&str]) -> Result<String> {
        Ok(Cmd::new(["tmux", "-L", &self.socket]).args(args).timeout(T).run()?.stdout)
    }

    fn screen(&self) -> Result<String> {
        self.cmd(&["capture-pane", "-p", "-t", "top"])
    }

    fn keys(&self, keys: &[&str]) -> Result<()> {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend(keys);
        self.cmd(&args).map(drop)
    }

    /// Wait until the screen shows `text`.
    fn wait_for(&self, text: &str) -> Result<String> {
        let mut last = String::new();
        let shown = wait_until(&format!("the screen to show {text:?}"), T, || {
            last = self.screen()?;
            Ok(last.contains(text))
        });
        shown.with_context(|| format!("screen:\n{last}"))?;
        Ok(last)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Cmd::new(["tmux", "-L", &self.socket, "kill-server"]).timeout(T).run();
    }
}

#[test]
fn the_monitor_answers_keys_in_a_real_terminal() {
    with_net("proxy-chain", "toptmux", |net| {
        let pcap = crafted(net)?;
        let argv = format!("{} -r {} -l fc00:f1::/80 -l fc00:f2::/80", srv6top()?.display(), pcap.display());
        let tmux = Tmux::start("tui", 160, 40, &argv)?;
        let s = tmux.wait_for("end of file")?;
        ensure!(s.contains("2 flows") && s.contains("3 malformed"), "header:\n{s}");
        ensure!(s.contains("xor(0x5a)") && s.contains("copy(0x0)"), "functions:\n{s}");
        // Sort by the next column, then reverse.
        tmux.keys(&["s"])?;
        tmux.wait_for("sort: rate↓")?;
        tmux.keys(&["S"])?;
        tmux.wait_for("sort: rate↑")?;
        // Filter on a function name: only the copy connection stays.
        tmux.keys(&["/", "copy", "Enter"])?;
        let s = tmux.wait_for("flows (1)")?;
        ensure!(s.contains("[fc00:4::2]:22") && !s.contains("[fc00:4::2]:8080 "), "filtered:\n{s}");
        tmux.keys(&["Escape"])?;
        tmux.wait_for("flows (2)")?;
        // Back to the descending order (equal rates: by address and port), select the second flow: the
        // detail pane follows.
        tmux.keys(&["S"])?;
        tmux.wait_for("sort: rate↓")?;
        tmux.keys(&["Down"])?;
        tmux.wait_for("tcp [fc00:1::1]:40001 → [fc00:4::2]:22")?;
        // The packet list marks the malformed packets; help; quit.
        tmux.keys(&["2"])?;
        tmux.wait_for("MALFORMED: SRH")?;
        tmux.keys(&["?"])?;
        tmux.wait_for("srv6top help")?;
        tmux.keys(&["q"])?;
        wait_until("srv6top to quit", T, || Ok(tmux.cmd(&["has-session", "-t", "top"]).is_err()))?;
        Ok(())
    })
}

#[test]
fn capture_without_root_needs_only_cap_net_raw_and_says_so() {
    with_net("proxy-chain", "topcap", |net| {
        // A copy nobody can run: the workspace's target directory may not be theirs to enter.
        let dir = tempfile_dir(net, "bin")?;
        let exe = dir.join("srv6top");
        std::fs::copy(srv6top()?, &exe)?;
        let exe_s = exe.to_str().context("temporary path")?;
        let as_nobody = |net: &Net| {
            net.cmd("client", ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", exe_s])
                .args(["-i", "eth0", "--json", "--duration", "1"])
                .timeout(T)
        };
        // Some traffic to see: connection attempts to a closed port of the server (each answered by a RST).
        let traffic = "for i in $(seq 30); do curl -s -g -m 1 http://[fc00:4::2]:9/; sleep 0.1; done";
        let pokes = net.cmd("client", ["sh", "-c", traffic]).spawn()?;
        let refused = as_nobody(net).output()?;
        ensure!(!refused.status.success(), "captured as nobody without a capability: {refused}");
        ensure!(
            refused.stderr.contains("not permitted")
                && refused.stderr.contains("CAP_NET_RAW")
                && refused.stderr.contains("setcap"),
            "the refusal does not say what is missing: {refused}"
        );
        Cmd::new(["setcap", "cap_net_raw+ep", exe_s]).timeout(T).run()?;
        let out = as_nobody(net).run()?;
        let report: Report = serde_json::from_str(&out.stdout).with_context(|| format!("{out}"))?;
        ensure!(report.totals.ipv6 > 0, "nothing captured with cap_net_raw: {report:?}");
        pokes.stop()?;
        Ok(())
    })
}

/// A directory in the test's directory that every user may enter.
fn tempfile_dir(net: &Net, name: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = net.path(name);
    std::fs::create_dir_all(&dir)?;
    for d in dir.ancestors().take_while(|d| d.starts_with(std::env::temp_dir()) && *d != std::env::temp_dir()) {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(dir)
}
