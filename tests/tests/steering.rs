//! Steering end to end: `srv6run` makes an unmodified curl follow an SRv6 path through two plain End
//! routers (topology `steering`: client — r1 — r2 — server plus a direct client — server link that plain
//! routing prefers). A capture on r2 proves the steering; captures along the path prove that every packet
//! of the client → server direction carries the expected SRH and return-path TLV, as decoded by libsrv6sock,
//! tshark and scapy alike.

use std::net::Ipv6Addr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use libsrv6sock::wire::tlv::TYPE_RETURN_PATH;
use serde_json::Value;
use srv6pipes_capture::{tcp_flags as flags, Packet};
use srv6pipes_tests::http::{random_file, sha256_file, HttpServer, UploadSink};
use srv6pipes_tests::{binaries, oracle, with_net, Net};

const PORT: u16 = 8080;
const UPLOAD_PORT: u16 = 8081;
const FILE: &str = "blob.bin";
const FILE_SIZE: u64 = 1 << 20;
/// Bound on one download (the real one takes well under a second).
const CURL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on waiting for a flow's last packets to reach a capture after curl exits.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `steering` topology with nginx serving a random file on the server.
struct Steering<'a> {
    net: &'a Net,
    server: HttpServer,
    sha256: String,
    /// The client's address towards r1: the source of steered connections (the kernel picks the source
    /// from the route to the first segment).
    client_steered: Ipv6Addr,
    /// The client's address on the direct link: the source of plain connections.
    client_direct: Ipv6Addr,
    service: Ipv6Addr,
    r1: Ipv6Addr,
    r2: Ipv6Addr,
}

impl<'a> Steering<'a> {
    fn start(net: &'a Net) -> Result<Steering<'a>> {
        let server = HttpServer::start(net, "server", PORT)?;
        let sha256 = server.add_random_file(FILE, FILE_SIZE)?;
        Ok(Steering {
            net,
            server,
            sha256,
            client_steered: net.addr("client", "eth0")?,
            client_direct: net.addr("client", "eth1")?,
            service: net.addr("server", "lo")?,
            r1: net.sid("r1")?,
            r2: net.sid("r2")?,
        })
    }

    fn url(&self) -> String {
        format!("http://[{}]:{PORT}/{FILE}", self.service)
    }

    fn segs(&self) -> String {
        format!("{},{}", self.r1, self.r2)
    }

    /// curl's command line, downloading to a fresh file.
    fn curl(&self) -> (Vec<String>, std::path::PathBuf) {
        let out = self.net.path("download");
        let argv = ["curl", "-sS", "-g", "--noproxy", "*", "--max-time", "30", "-o"]
            .iter()
            .map(|s| s.to_string())
            .chain([out.display().to_string(), self.url()])
            .collect();
        (argv, out)
    }

    /// Download with `srv6run [srv6run_args] -- curl …` and check the file's sha256.
    fn download_steered(&self, srv6run_args: &[&str]) -> Result<()> {
        let (curl, out) = self.curl();
        let srv6run = binaries::path("srv6run")?;
        self.net.cmd("client", [srv6run]).args(srv6run_args).arg("--").args(curl).timeout(CURL_TIMEOUT).run()?;
        self.check_download(&out)
    }

    /// Download with plain curl and check the file's sha256.
    fn download_plain(&self) -> Result<()> {
        let (curl, out) = self.curl();
        self.net.cmd("client", curl).timeout(CURL_TIMEOUT).run()?;
        self.check_download(&out)
    }

    fn check_download(&self, out: &std::path::Path) -> Result<()> {
        let got = sha256_file(out)?;
        ensure!(got == self.sha256, "downloaded file sha256 {got}, served {}", self.sha256);
        Ok(())
    }

    /// The client → server packets of our HTTP flow from `src`.
    fn forward<'p>(&self, packets: &'p [Packet], src: Ipv6Addr) -> Vec<&'p Packet> {
        packets.iter().filter(|p| p.src == src && p.tcp().is_some_and(|t| t.dst_port == PORT)).collect()
    }

    /// True once the capture holds the client's FIN of a flow from `src`.
    fn fin_seen(&self, src: Ipv6Addr) -> impl Fn(&[Packet]) -> bool + '_ {
        move |packets| self.forward(packets, src).iter().any(|p| p.has_flags(flags::FIN))
    }
}

/// The flow is complete from the client's side: handshake, request, close.
fn assert_complete(packets: &[&Packet], at: &str) -> Result<()> {
    ensure!(packets.iter().any(|p| p.has_flags(flags::SYN)), "{at}: no SYN from the client");
    ensure!(packets.iter().any(|p| p.has_payload()), "{at}: no request data from the client");
    ensure!(packets.iter().any(|p| p.has_flags(flags::FIN)), "{at}: no FIN from the client");
    ensure!(!packets.iter().any(|p| p.has_flags(flags::RST)), "{at}: the client reset the connection");
    Ok(())
}

/// What `srv6run --explain --json` says the SRH for the URL will be: (segments, return-path TLV).
fn explained_srh(s: &Steering<'_>) -> Result<(Vec<Ipv6Addr>, Vec<Ipv6Addr>)> {
    let srv6run = binaries::path("srv6run")?;
    let out = s
        .net
        .cmd("client", [srv6run])
        .args(["--explain", "--json", "--segs", &s.segs(), "--"])
        .args(s.curl().0)
        .run()?;
    let json: Value = serde_json::from_str(&out.stdout).with_context(|| format!("srv6run --explain --json: {out}"))?;
    let srh = &json["destinations"][0]["srh"];
    let addrs = |v: &Value| -> Result<Vec<Ipv6Addr>> {
        let list = v.as_array().with_context(|| format!("not a list of addresses in {json}"))?;
        list.iter().map(|a| Ok(a.as_str().context("not a string")?.parse()?)).collect()
    };
    Ok((addrs(&srh["segments"])?, addrs(&srh["return_path_tlv"])?))
}

#[test]
fn srv6run_steers_curl_through_r2_and_plain_curl_does_not() {
    with_net("steering", "steer", |net| {
        let mut s = Steering::start(net)?;

        let on_r2 = net.capture("r2", "eth0")?;
        s.download_steered(&["--segs", &s.segs()])?;
        on_r2.wait_for("the steered flow's FIN", SETTLE_TIMEOUT, s.fin_seen(s.client_steered))?;
        let packets = srv6pipes_capture::read_pcap(&on_r2.stop()?)?;
        let steered = s.forward(&packets, s.client_steered);
        assert_complete(&steered, "r2, steered download")?;
        // The server saw the client's own address (End routers do not touch the source).
        let log = s.server.access_log()?;
        ensure!(
            log.lines().any(|l| l.starts_with(&format!("{} ", s.client_steered)) && l.contains(" 200 ")),
            "nginx did not log a 200 for {}:\n{log}",
            s.client_steered
        );

        // Plain routing takes the direct link: nothing of the flow crosses r2.
        let on_r2 = net.capture("r2", "eth0")?;
        // Only the client's packets: the download itself is bulk traffic the test does not need.
        let direct = net.capture_filtered("server", "eth1", &format!("ip6 src host {}", s.client_direct))?;
        s.download_plain()?;
        direct.wait_for("the plain flow's FIN", SETTLE_TIMEOUT, s.fin_seen(s.client_direct))?;
        let direct = srv6pipes_capture::read_pcap(&direct.stop()?)?;
        let plain = s.forward(&direct, s.client_direct);
        assert_complete(&plain, "direct link, plain download")?;
        ensure!(plain.iter().all(|p| p.srh.is_none()), "a plain packet carries an SRH");
        let r2 = srv6pipes_capture::read_pcap(&on_r2.stop()?)?;
        let crossed: Vec<_> = r2.iter().filter(|p| p.tcp().is_some()).collect();
        ensure!(crossed.is_empty(), "plain download crossed r2: {crossed:#?}");
        Ok(())
    })
}

#[test]
fn every_forward_packet_carries_the_srh_and_return_path_tlv() {
    with_net("steering", "srh", |net| {
        let s = Steering::start(net)?;
        let (segments, return_path) = explained_srh(&s)?;
        // SRH order: [0] is the final destination, the last entry the first segment visited.
        ensure!(segments == [s.service, s.r2, s.r1], "srv6run --explain segments {segments:?}");
        // Default return path: the waypoints in reverse, listed in SRH order (the last one before the
        // client first).
        ensure!(return_path == [s.r1, s.r2], "srv6run --explain return path {return_path:?}");

        // Ingress of r1, of r2, of the server: segments left 2, 1, 0; destination the active segment.
        let points = [("r1", "eth0", 2u8, s.r1), ("r2", "eth0", 1, s.r2), ("server", "eth0", 0, s.service)];
        let captures = points.iter().map(|(host, dev, ..)| net.capture(host, dev)).collect::<Result<Vec<_>>>()?;
        s.download_steered(&["--segs", &s.segs()])?;
        for ((host, dev, segments_left, dst), capture) in points.iter().zip(captures) {
            let at = format!("{host}:{dev}");
            capture.wait_for("the client's FIN", SETTLE_TIMEOUT, s.fin_seen(s.client_steered))?;
            let pcap = capture.stop()?;
            // libsrv6sock, tshark and scapy agree on every field of every TCP packet.
            let packets = oracle::cross_check(&pcap)?;
            let tcp: Vec<&Packet> = packets.iter().filter(|p| p.tcp().is_some()).collect();
            let forward = s.forward(&packets, s.client_steered);
            // Replies take the direct link: the path carries only our flow's forward direction.
            ensure!(tcp.len() == forward.len(), "{at}: TCP packets other than the flow's forward direction");
            assert_complete(&forward, &at)?;
            for p in &forward {
                let f = p.frame;
                let srh = p.srh_repr().with_context(|| format!("{at}: frame {f} has no SRH"))?;
                ensure!(srh.segments == segments, "{at}: frame {f}: segments {:?}", srh.segments);
                ensure!(srh.segments_left == *segments_left, "{at}: frame {f}: segments left {}", srh.segments_left);
                ensure!(p.dst == *dst, "{at}: frame {f}: destination {} is not the active segment {dst}", p.dst);
                ensure!(
                    srh.tlvs.iter().filter(|t| t.tlv_type() == TYPE_RETURN_PATH).count() == 1,
                    "{at}: frame {f}: not exactly one return-path TLV: {:?}",
                    srh.tlvs
                );
                ensure!(
                    srh.return_path() == Some(&return_path[..]),
                    "{at}: frame {f}: return path {:?}",
                    srh.return_path()
                );
            }
            // The client sends with tx checksum offload off: checksums on the wire are real, computed over
            // the final destination, and End routers do not change them.
            let bad = oracle::tshark_bad_tcp_checksums(&pcap)?;
            ensure!(bad.is_empty(), "{at}: tshark finds bad TCP checksums in frames {bad:?}");
        }
        Ok(())
    })
}

#[test]
fn return_path_none_sends_the_srh_without_the_tlv() {
    with_net("steering", "norp", |net| {
        let s = Steering::start(net)?;
        let on_r2 = net.capture("r2", "eth0")?;
        s.download_steered(&["--segs", &s.segs(), "--return-path", "none"])?;
        on_r2.wait_for("the client's FIN", SETTLE_TIMEOUT, s.fin_seen(s.client_steered))?;
        let packets = oracle::cross_check(&on_r2.stop()?)?;
        let forward = s.forward(&packets, s.client_steered);
        assert_complete(&forward, "r2")?;
        for p in forward {
            let srh = p.srh_repr().with_context(|| format!("frame {} has no SRH", p.frame))?;
            ensure!(srh.segments == [s.service, s.r2, s.r1], "frame {}: segments {:?}", p.frame, srh.segments);
            ensure!(srh.tlvs.is_empty(), "frame {}: TLVs {:?} despite --return-path none", p.frame, srh.tlvs);
        }
        Ok(())
    })
}

#[test]
fn srv6run_uploads_through_the_path() {
    with_net("steering", "upload", |net| {
        let s = Steering::start(net)?;
        let mut sink = UploadSink::start(net, "server", UPLOAD_PORT)?;
        let file = net.path("upload.bin");
        let sha256 = random_file(&file, FILE_SIZE)?;
        // The data now flows client → server: the SRH rides on full-size segments, whose MSS the kernel
        // lowers by the SRH's length. Only the client's packets are captured (the answer comes back direct).
        let on_r2 = net.capture_filtered("r2", "eth0", &format!("ip6 src host {}", s.client_steered))?;
        let url = format!("http://[{}]:{UPLOAD_PORT}/up", s.service);
        let srv6run = binaries::path("srv6run")?;
        let out = net
            .cmd("client", [srv6run])
            .args(["--segs", &s.segs(), "--", "curl", "-sS", "-g", "--noproxy", "*", "--max-time", "30", "-T"])
            .arg(&file)
            .arg(&url)
            .timeout(CURL_TIMEOUT)
            .run()?;
        ensure!(out.stdout.trim() == format!("{sha256} {FILE_SIZE}"), "the sink received something else: {out}");
        let log = sink.log()?;
        ensure!(log.starts_with(&format!("{} ", s.client_steered)), "the sink saw another peer: {log}");

        let fin = |p: &[Packet]| {
            p.iter().any(|p| p.has_flags(flags::FIN) && p.tcp().is_some_and(|t| t.dst_port == UPLOAD_PORT))
        };
        on_r2.wait_for("the upload's FIN", SETTLE_TIMEOUT, fin)?;
        let packets = srv6pipes_capture::read_pcap(&on_r2.stop()?)?;
        let upload: Vec<&Packet> =
            packets.iter().filter(|p| p.tcp().is_some_and(|t| t.dst_port == UPLOAD_PORT)).collect();
        assert_complete(&upload, "r2, upload")?;
        let sent: usize = upload.iter().filter_map(|p| p.tcp()).map(|t| t.payload_len).sum();
        ensure!(sent as u64 > FILE_SIZE, "r2 saw {sent} bytes of TCP payload, less than the file");
        for p in upload {
            let srh = p.srh_repr().with_context(|| format!("frame {} has no SRH", p.frame))?;
            ensure!(srh.segments == [s.service, s.r2, s.r1], "frame {}: segments {:?}", p.frame, srh.segments);
        }
        Ok(())
    })
}
