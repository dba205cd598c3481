//! The fast datapath keeps the wire format and loses nothing: bulk transfers arrive byte for
//! byte with and without offloads, every datagram on the underlay is one IP packet within the
//! MTU, and several threads get a multiqueue device.

mod common;

use std::time::Duration;

use common::{Lab, transfer, wait_until};

const GIGABYTE: u64 = 1_000_000_000;

fn counter(log: &str, name: &str) -> u64 {
    log.split(&format!("{name}="))
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {log}"))
}

#[test]
fn a_gigabyte_arrives_intact_with_offloads() {
    let Some(mut lab) = Lab::new("a_gigabyte_arrives_intact_with_offloads") else { return };
    let (a, b, da, db) = lab.pair(&[]);
    assert!(lab.log(da).contains("offloads: tun true, gso true, gro true"), "{}", lab.log(da));
    assert_eq!(transfer(&b, &a, "192.168.100.2:5001", GIGABYTE), GIGABYTE);
    assert_eq!(transfer(&a, &b, "192.168.100.1:5001", GIGABYTE / 4), GIGABYTE / 4);
    for daemon in [da, db] {
        let log = lab.stop(daemon);
        assert_eq!(counter(&log, "dropped malformed"), 0, "{log}");
        assert_eq!(counter(&log, "dropped send_error"), 0, "{log}");
    }
}

#[test]
fn a_gigabyte_arrives_intact_without_offloads() {
    let Some(mut lab) = Lab::new("a_gigabyte_arrives_intact_without_offloads") else { return };
    let (a, b, da, _) = lab.pair(&["--no-offload", "--threads", "1"]);
    assert!(lab.log(da).contains("offloads: tun false, gso false, gro false"), "{}", lab.log(da));
    assert_eq!(transfer(&b, &a, "192.168.100.2:5001", GIGABYTE), GIGABYTE);
}

/// Reads a pcap file (Ethernet link type) and returns each UDP payload on `port` with the IP
/// total length of its outer packet.
fn udp_payloads(pcap: &[u8], port: u16) -> Vec<Vec<u8>> {
    assert!(pcap.len() >= 24 && pcap[..4] == [0xd4, 0xc3, 0xb2, 0xa1], "not a little-endian pcap");
    let mut payloads = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..at + 16 + caplen];
        at += 16 + caplen;
        if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let header = usize::from(ip[0] & 0x0f) * 4;
        if ip[9] != 17 {
            continue;
        }
        let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
        assert_eq!(fragment, 0, "outer packet fragmented");
        let udp = &ip[header..];
        let (src, dst) = (u16::from_be_bytes([udp[0], udp[1]]), u16::from_be_bytes([udp[2], udp[3]]));
        if src != port && dst != port {
            continue;
        }
        let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        assert_eq!(udp_len, udp.len(), "UDP length field disagrees with the captured packet");
        payloads.push(udp[8..].to_vec());
    }
    payloads
}

#[test]
fn every_datagram_on_the_wire_is_one_ip_packet_within_the_mtu() {
    let Some(mut lab) = Lab::new("every_datagram_on_the_wire_is_one_ip_packet") else { return };
    let mtu = 1400;
    let (a, b, _, _) = lab.pair(&["--mtu", "1400"]);
    // Make the kernel cut our GSO sends before the capture point, as a real NIC does on the
    // wire (veth would otherwise carry the unsegmented super-datagram to the peer).
    for ns in [&a, &b] {
        lab.exec(ns, &["ethtool", "-K", "eth0", "tx-udp-segmentation", "off"]);
    }
    let pcap = lab.dir.join("wire.pcap");
    let capture = lab.spawn(
        &a,
        &["tcpdump", "-i", "eth0", "-n", "-U", "-B", "65536", "-w", pcap.to_str().unwrap()],
        &["udp", "port", "7777"],
    );
    assert!(
        wait_until(Duration::from_secs(10), || lab.log(capture).contains("listening on")),
        "{}",
        lab.log(capture)
    );
    assert_eq!(transfer(&b, &a, "192.168.100.2:5001", 50_000_000), 50_000_000);
    lab.signal(capture, libc::SIGINT);
    lab.wait_exit(capture, Duration::from_secs(10));

    let payloads = udp_payloads(&std::fs::read(&pcap).unwrap(), 7777);
    assert!(payloads.len() > 20_000, "only {} datagrams captured", payloads.len());
    let mut full_size = 0;
    for payload in &payloads {
        assert!(payload[0] >> 4 == 4, "payload is not an IPv4 packet");
        let total = usize::from(u16::from_be_bytes([payload[2], payload[3]]));
        assert_eq!(total, payload.len(), "a datagram holds more or less than one IP packet");
        assert!(total <= mtu, "a {total}-byte packet exceeds the {mtu}-byte tunnel MTU");
        full_size += usize::from(total == mtu);
    }
    // TCP super-packets from the TUN were split at the MTU, not sent whole.
    assert!(full_size > payloads.len() / 2, "{full_size} of {} at the MTU", payloads.len());
}

#[test]
fn threads_get_a_multiqueue_device_and_carry_traffic() {
    let Some(mut lab) = Lab::new("threads_get_a_multiqueue_device") else { return };
    let (a, b, _, _) = lab.pair(&["--threads", "3"]);
    let queues = lab.exec(&a, &["ls", "/sys/class/net/udptun/queues"]);
    assert_eq!(queues.split_whitespace().filter(|q| q.starts_with("tx-")).count(), 3, "{queues}");
    assert_eq!(transfer(&b, &a, "192.168.100.2:5001", 100_000_000), 100_000_000);
}

#[test]
fn bursts_of_small_udp_packets_are_written_to_the_tun_without_loss() {
    let Some(mut lab) = Lab::new("bursts_of_small_udp_packets") else { return };
    let (a, b, _, db) = lab.pair(&[]);
    // The receiver gets a big buffer, so that whatever is lost is lost in the tunnel.
    let receiver = common::in_netns(&b, || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        socket.set_recv_buffer_size(32 << 20).unwrap();
        socket.bind(&"192.168.100.2:5002".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        std::net::UdpSocket::from(socket)
    });
    let counting = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut got = 0u32;
        while receiver.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    });
    let sent = common::in_netns(&a, || {
        let socket = std::net::UdpSocket::bind("192.168.100.1:0").unwrap();
        for _ in 0..40 {
            for _ in 0..500 {
                socket.send_to(&[7u8; 64], "192.168.100.2:5002").unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        20_000u32
    });
    let got = counting.join().unwrap();
    let log = lab.stop(db);
    assert!(log.contains("dropped tun_write_error=0"), "{log}");
    // GRO coalesces these bursts into UDP super-packets written to the TUN in one go; before
    // writes were capped at 64 packets the kernel refused whole super-packets.
    assert!(got >= sent * 99 / 100, "{got} of {sent} arrived");
}
