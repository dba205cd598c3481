//! MTU black holes: TCP between two LANs (MTU 1500) joined by two udptun gateways (tunnel MTU
//! 1472) that drop the ICMP errors which would tell the hosts of the smaller MTU, with the
//! real binary in network namespaces.

mod common;

use std::time::{Duration, Instant};

use common::{Lab, transfer_unless_stalled, wait_until};

/// Bytes sent from one LAN to the other.
const TOTAL: u64 = 20_000_000;
/// How long a transfer may go without a byte arriving before it counts as stalled.
const STALL: Duration = Duration::from_secs(5);
const METRICS: &str = "127.0.0.1:9101";
const CLAMPED: &str = "udptun_mss_clamped_total";

/// Drops (and counts) the ICMP errors that tell a sender of a smaller path MTU, whether the
/// gateway originates them or forwards them.
const NO_PATH_MTU_ERRORS: &str = "table inet blackhole {
  chain output {
    type filter hook output priority 0;
    icmp type destination-unreachable counter drop
    icmpv6 type packet-too-big counter drop
  }
  chain forward {
    type filter hook forward priority 0;
    icmp type destination-unreachable counter drop
    icmpv6 type packet-too-big counter drop
  }
}
";

/// Two sites: gateway gw1 with host h1 (10.71.0.2) behind it, gw2 with h2 (10.72.0.2); the
/// gateways meet on the bridge (10.100.0.1 and .2) and drop path MTU errors.
struct Sites {
    lab: Lab,
    gw1: String,
    gw2: String,
    h1: String,
    h2: String,
}

impl Sites {
    fn new(test: &str) -> Option<Sites> {
        let mut lab = Lab::new(test)?;
        let gw1 = lab.host("gw1", "10.100.0.1/24");
        let gw2 = lab.host("gw2", "10.100.0.2/24");
        let h1 = lab.host_behind(&gw1, "h1", "10.71.0");
        let h2 = lab.host_behind(&gw2, "h2", "10.72.0");
        let rules = lab.file("blackhole.nft", NO_PATH_MTU_ERRORS);
        for gw in [&gw1, &gw2] {
            lab.exec(gw, &["nft", "-f", &rules]);
        }
        Some(Sites { lab, gw1, gw2, h1, h2 })
    }

    /// Starts a udptun on each gateway, with device `dev` and the extra flags of each, routing
    /// the other site's LAN through the tunnel; returns once h1 pings h2 across it.
    fn tunnel(&mut self, dev: &str, gw1_flags: &[&str], gw2_flags: &[&str]) -> (usize, usize) {
        let (gw1, gw2) = (self.gw1.clone(), self.gw2.clone());
        let mut start = |ns: &str, peer: &str, address: &str, route: &str, flags: &[&str]| {
            let base =
                ["-A", peer, "-d", dev, "--address", address, "--route", route, "--metrics-listen", METRICS];
            self.lab.udptun(ns, &[&base[..], flags].concat())
        };
        let d1 = start(&gw1, "10.100.0.2", "192.168.100.1/24", "10.72.0.0/24", gw1_flags);
        let d2 = start(&gw2, "10.100.0.1", "192.168.100.2/24", "10.71.0.0/24", gw2_flags);
        self.lab.wait_device(&gw1, dev);
        self.lab.wait_device(&gw2, dev);
        self.lab.assert_ping(&self.h1, "10.72.0.2");
        self.lab.wait_metrics(&gw1, METRICS);
        self.lab.wait_metrics(&gw2, METRICS);
        (d1, d2)
    }

    /// SYNs whose MSS a gateway's udptun lowered so far.
    fn clamped(&self, gw: &str) -> u64 {
        self.lab.scrape(gw, METRICS, CLAMPED)
    }

    /// Starts tcpdump in `ns` for one TCP segment with exactly the flags `flags` (`tcp-syn`, or
    /// `tcp-syn|tcp-ack`), verbose (the MSS and whether the checksum is correct); returns its
    /// daemon index once it listens.
    fn capture_one(&mut self, ns: &str, flags: &str) -> usize {
        let filter = format!("tcp[tcpflags] & (tcp-syn|tcp-ack) == ({flags})");
        let capture = self.lab.spawn(ns, &["tcpdump", "-i", "eth0", "-n", "-v", "-l", "-c", "1"], &[&filter]);
        let listening =
            wait_until(Duration::from_secs(10), || self.lab.log(capture).contains("listening on"));
        assert!(listening, "{}", self.lab.log(capture));
        capture
    }

    /// What the capture `index` saw, once it has its packet.
    fn captured(&mut self, index: usize) -> String {
        assert_eq!(self.lab.wait_exit(index, Duration::from_secs(10)), Some(0), "{}", self.lab.log(index));
        self.lab.log(index)
    }

    /// ICMP errors the gateway `gw` dropped so far.
    fn errors_dropped(&self, gw: &str) -> u64 {
        let table = self.lab.exec(gw, &["nft", "list", "table", "inet", "blackhole"]);
        let counted = table.split("counter packets ").skip(1);
        counted
            .map(|rest| rest.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0))
            .sum()
    }
}

/// The MSS option of the one segment tcpdump printed.
fn mss(tcpdump: &str) -> u16 {
    let at = tcpdump.find("mss ").unwrap_or_else(|| panic!("no MSS in: {tcpdump}")) + 4;
    let digits: String = tcpdump[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no MSS in: {tcpdump}"))
}

#[test]
fn tcp_crosses_a_tunnel_whose_path_mtu_errors_are_dropped() {
    let Some(mut sites) = Sites::new("tcp_crosses_a_tunnel_whose_path_mtu_errors_are_dropped") else {
        return;
    };
    let _load = common::loads_the_machine();
    let (h1, h2, gw1, gw2) = (sites.h1.clone(), sites.h2.clone(), sites.gw1.clone(), sites.gw2.clone());

    // By default each gateway clamps what it sends: gw1 h1's SYN, gw2 h2's SYN-ACK. Each end
    // sees the other's MSS lowered to 1472 - 40, with a TCP checksum that verifies.
    let (d1, d2) = sites.tunnel("mss0", &[], &[]);
    let syn = sites.capture_one(&h2, "tcp-syn");
    let syn_ack = sites.capture_one(&h1, "tcp-syn|tcp-ack");
    let started = Instant::now();
    let arrived = transfer_unless_stalled(&h2, &h1, "10.72.0.2:5001", TOTAL, STALL);
    assert_eq!(arrived, TOTAL, "{}", sites.lab.all_logs());
    let took = started.elapsed();
    for (capture, seen_on) in [(syn, "h2"), (syn_ack, "h1")] {
        let segment = sites.captured(capture);
        assert_eq!(mss(&segment), 1432, "on {seen_on}: {segment}");
        eprintln!(
            "seen on {seen_on}: {}",
            segment.lines().find(|l| l.contains("mss")).unwrap_or_default().trim()
        );
        assert!(segment.contains("(correct)"), "the checksum verifies on {seen_on}: {segment}");
    }
    assert_eq!((sites.clamped(&gw1), sites.clamped(&gw2)), (1, 1));
    eprintln!("{TOTAL} bytes with clamping: {took:?}");
    sites.lab.stop(d1);
    sites.lab.stop(d2);

    // Only gw1 clamps: it lowers the SYN it sends and the SYN-ACK it receives (which sets the
    // size of h1's segments).
    let (d1, d2) = sites.tunnel("mss1", &[], &["--no-clamp-mss"]);
    let arrived = transfer_unless_stalled(&h2, &h1, "10.72.0.2:5002", TOTAL, STALL);
    assert_eq!(arrived, TOTAL, "{}", sites.lab.all_logs());
    assert_eq!((sites.clamped(&gw1), sites.clamped(&gw2)), (2, 0));
    sites.lab.stop(d1);
    sites.lab.stop(d2);

    // The same the other way, and without offloads (one packet per datagram and per write):
    // only gw2 clamps, and h2 sends.
    let (d1, d2) = sites.tunnel("mss2", &["--no-clamp-mss"], &["--no-offload"]);
    let arrived = transfer_unless_stalled(&h1, &h2, "10.71.0.2:5003", TOTAL, STALL);
    assert_eq!(arrived, TOTAL, "{}", sites.lab.all_logs());
    assert_eq!((sites.clamped(&gw1), sites.clamped(&gw2)), (0, 2));
    sites.lab.stop(d1);
    sites.lab.stop(d2);

    // Neither clamps: h1's full-size segments do not fit the tunnel, gw1 says so in ICMP errors
    // that its firewall drops, and the transfer stalls.
    let dropped_before = sites.errors_dropped(&gw1);
    sites.tunnel("mss3", &["--no-clamp-mss"], &["--no-clamp-mss"]);
    let arrived = transfer_unless_stalled(&h2, &h1, "10.72.0.2:5004", TOTAL, STALL);
    assert!(arrived < TOTAL, "the transfer completed without clamping: the test shows nothing");
    assert!(sites.errors_dropped(&gw1) > dropped_before, "no ICMP error was dropped");
    assert_eq!((sites.clamped(&gw1), sites.clamped(&gw2)), (0, 0));
    eprintln!("without clamping, {arrived} of {TOTAL} bytes before a {STALL:?} stall");
}
