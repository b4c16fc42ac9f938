//! `srv6run --via kernel`: programs the LD_PRELOAD shim cannot reach (static busybox, a static Go
//! client, io_uring) steered by the cgroup-steering eBPF programs, in the `steering` topology (client —
//! r1 — r2 — server, plus a direct client — server link that plain routing prefers): a capture on r2
//! proves the steering and holds the SRH and return-path TLV, decoded by libsrv6sock, tshark and scapy.
//! Kernel mode keeps the source address the route to the destination gives (the direct link's).

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use libsrv6sock::capture::{tcp_flags as flags, Packet};
use libsrv6sock::wire::tlv::TYPE_RETURN_PATH;
use srv6pipes_tests::http::{sha256_file, HttpServer};
use srv6pipes_tests::{binaries, oracle, with_net, Net};

const PORT: u16 = 8080;
const FILE: &str = "blob.bin";
const FILE_SIZE: u64 = 4 << 20;
/// Bound on one download (the real one takes well under a second).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on waiting for a flow's last packets to reach a capture after the client exits.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

struct Kernel<'a> {
    net: &'a Net,
    sha256: String,
    _server: HttpServer,
    /// The client's address on the direct link: the source of every connection to the service.
    client: Ipv6Addr,
    service: Ipv6Addr,
    r1: Ipv6Addr,
    r2: Ipv6Addr,
}

impl<'a> Kernel<'a> {
    fn start(net: &'a Net) -> Result<Kernel<'a>> {
        let server = HttpServer::start(net, "server", PORT)?;
        let sha256 = server.add_random_file(FILE, FILE_SIZE)?;
        Ok(Kernel {
            net,
            sha256,
            _server: server,
            client: net.addr("client", "eth1")?,
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

    /// `srv6run ARGS -- busybox wget -q -O OUT URL` (busybox is statically linked).
    fn wget(&self, srv6run_args: &[&str], out: &str) -> Result<(Vec<String>, PathBuf)> {
        let out = self.net.path(out);
        let mut argv = vec![binaries::path("srv6run")?.display().to_string()];
        argv.extend(srv6run_args.iter().map(|s| s.to_string()));
        argv.extend(["--", "busybox", "wget", "-q", "-O"].map(String::from));
        argv.extend([out.display().to_string(), self.url()]);
        Ok((argv, out))
    }

    fn check(&self, out: &std::path::Path) -> Result<()> {
        let got = sha256_file(out)?;
        ensure!(got == self.sha256, "{}: sha256 {got}, served {}", out.display(), self.sha256);
        Ok(())
    }

    fn forward<'p>(&self, packets: &'p [Packet]) -> Vec<&'p Packet> {
        packets.iter().filter(|p| p.src == self.client && p.tcp().is_some_and(|t| t.dst_port == PORT)).collect()
    }

    fn fin_seen(&self) -> impl Fn(&[Packet]) -> bool + '_ {
        move |packets| self.forward(packets).iter().any(|p| p.has_flags(flags::FIN))
    }

    /// Every client → server packet at r2 carries SRH [service, r2, r1] with segments left 1 and the
    /// default return path; the flow is complete. Returns the flows' client ports.
    fn check_steered(&self, packets: &[Packet], at: &str) -> Result<Vec<u16>> {
        let forward = self.forward(packets);
        ensure!(forward.iter().any(|p| p.has_flags(flags::SYN)), "{at}: no SYN");
        ensure!(forward.iter().any(|p| p.has_payload()), "{at}: no request data");
        ensure!(forward.iter().any(|p| p.has_flags(flags::FIN)), "{at}: no FIN");
        for p in &forward {
            let f = p.frame;
            let srh = p.srh_repr().with_context(|| format!("{at}: frame {f} has no SRH"))?;
            ensure!(srh.segments == [self.service, self.r2, self.r1], "{at}: frame {f}: segments {:?}", srh.segments);
            ensure!(srh.segments_left == 1, "{at}: frame {f}: segments left {}", srh.segments_left);
            ensure!(p.dst == self.r2, "{at}: frame {f}: destination {}", p.dst);
            ensure!(
                srh.tlvs.iter().filter(|t| t.tlv_type() == TYPE_RETURN_PATH).count() == 1,
                "{at}: frame {f}: not exactly one return-path TLV: {:?}",
                srh.tlvs
            );
            ensure!(
                srh.return_path() == Some(&[self.r1, self.r2][..]),
                "{at}: frame {f}: return path {:?}",
                srh.return_path()
            );
        }
        let mut ports: Vec<u16> = forward.iter().filter_map(|p| p.tcp().map(|t| t.src_port)).collect();
        ports.sort_unstable();
        ports.dedup();
        Ok(ports)
    }
}

#[test]
fn static_busybox_wget_is_steered_and_a_plain_one_beside_it_is_not() {
    with_net("steering", "kbusybox", |net| {
        let s = Kernel::start(net)?;
        let on_r2 = net.capture("r2", "eth0")?;
        let direct = net.capture_filtered("server", "eth1", &format!("ip6 src host {}", s.client))?;
        // The unsteered process (a plain curl, slowed down) runs at the same time as the steered one.
        let plain_out = net.path("plain");
        let plain = net
            .cmd("client", ["curl", "-sS", "-g", "--noproxy", "*", "--limit-rate", "1M", "-o"])
            .arg(&plain_out)
            .arg(s.url())
            .log_dir(net.dir())
            .spawn()?;
        let (argv, out) = s.wget(&["--via", "kernel", "--segs", &s.segs()], "steered")?;
        net.cmd("client", argv).timeout(RUN_TIMEOUT).run()?;
        s.check(&out)?;
        plain.wait(RUN_TIMEOUT)?;
        on_r2.wait_for("the steered flow's FIN", SETTLE_TIMEOUT, s.fin_seen())?;
        direct.wait_for("the plain flow's FIN", SETTLE_TIMEOUT, s.fin_seen())?;

        let pcap = on_r2.stop()?;
        let packets = oracle::cross_check(&pcap)?;
        let steered = s.check_steered(&packets, "r2")?;
        ensure!(steered.len() == 1, "r2: flows from client ports {steered:?}, expected the steered one only");
        let bad = oracle::tshark_bad_tcp_checksums(&pcap)?;
        ensure!(bad.is_empty(), "r2: tshark finds bad TCP checksums in frames {bad:?}");

        let direct = libsrv6sock::capture::read_pcap(&direct.stop()?)?;
        let plain = s.forward(&direct);
        ensure!(plain.iter().any(|p| p.has_flags(flags::SYN)), "direct link: the plain flow is missing");
        ensure!(plain.iter().all(|p| p.srh.is_none()), "direct link: a plain packet carries an SRH");
        ensure!(
            plain.iter().all(|p| p.tcp().is_some_and(|t| !steered.contains(&t.src_port))),
            "direct link: a packet of the steered flow went the plain way"
        );
        s.check(&plain_out)?;
        Ok(())
    })
}
