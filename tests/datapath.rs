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
    let _load = common::loads_the_machine();
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
    let _load = common::loads_the_machine();
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
        let Some(frame) = pcap.get(at + 16..at + 16 + caplen) else { break }; // a truncated last record
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
    let _load = common::loads_the_machine();
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
    let status = lab.wait_exit(capture, Duration::from_secs(10));
    assert_eq!(status, Some(0), "tcpdump failed:\n{}", lab.log(capture));

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

/// CPU time (ns) each data-plane thread (`queue-N`) of process `pid` has used so far, once
/// `count` of them run (the device exists before its threads have all started), at most 5 s on.
fn queue_threads_started(pid: u32, count: usize) -> Vec<(String, u64)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let threads = queue_thread_runtimes(pid);
        if threads.len() >= count || std::time::Instant::now() > deadline {
            return threads;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// CPU time (ns) each data-plane thread (`queue-N`) of process `pid` has used so far.
fn queue_thread_runtimes(pid: u32) -> Vec<(String, u64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("queue-") {
            continue;
        }
        let schedstat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let runtime = schedstat.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        threads.push((comm.trim().to_string(), runtime));
    }
    threads.sort();
    threads
}

#[test]
fn threads_get_a_multiqueue_device_and_share_the_traffic_of_several_peers() {
    let Some(mut lab) = Lab::new("threads_get_a_multiqueue_device") else { return };
    // It counts loss and per-thread CPU time, which a sibling's bulk transfer would disturb.
    let _alone = common::measures_time();
    // Twelve peers, each its own underlay address: the kernel spreads their flows over the three
    // SO_REUSEPORT sockets by the outer addresses (all on one socket: 3^-11, about 6 in 10^6).
    let peers: Vec<u8> = (10..22).collect();
    let mut entries = vec!["\"192.168.100.1\": { host: \"10.100.0.1\" }".to_string()];
    entries.extend(peers.iter().map(|i| format!("\"192.168.100.{i}\": {{ host: \"10.100.0.{i}\" }}")));
    let hosts = lab.file("hosts.json", &format!("{{ nodes: {{ {} }} }}", entries.join(", ")));
    let a = lab.host("a", "10.100.0.1/24");
    let senders = lab.host("peers", "10.100.0.10/24");
    for i in &peers[1..] {
        lab.exec(&senders, &["ip", "addr", "add", &format!("10.100.0.{i}/24"), "dev", "eth0"]);
    }
    let da = lab.udptun(
        &a,
        &["--hosts-file", &hosts, "-d", "udptun", "--threads", "3", "--address", "192.168.100.1/24"],
    );
    // The receiver binds to the tunnel address, which the daemon sets after creating the device.
    lab.wait_started(da);
    let before = queue_threads_started(lab.pid(da), 3);
    assert_eq!(before.len(), 3, "{before:?}");
    // Every queue is attached before the threads start.
    let queues = lab.exec(&a, &["ls", "/sys/class/net/udptun/queues"]);
    assert_eq!(queues.split_whitespace().filter(|q| q.starts_with("tx-")).count(), 3, "{queues}");
    let receiver = receiver_in(&a, "192.168.100.1:5003");

    const PER_PEER: u32 = 700;
    let peers_moved = peers.clone();
    common::in_netns(&senders, move || {
        for i in peers_moved {
            let socket = std::net::UdpSocket::bind(format!("10.100.0.{i}:7777")).unwrap();
            // UDP to 192.168.100.1:5003, checksum 0 (none), inside the tunnel's format.
            let udp = [0x13, 0x88, 0x13, 0x8b, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
            let packet = common::ipv4_packet([192, 168, 100, i], [192, 168, 100, 1], 17, &udp);
            for n in 0..PER_PEER {
                socket.send_to(&packet, "10.100.0.1:7777").unwrap();
                if n % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(1)); // about 20,000 a second
                }
            }
        }
    });
    let expected = PER_PEER * peers.len() as u32;
    let got = receive(&receiver, expected);
    assert!(got >= expected * 99 / 100, "{got} of {expected} arrived:\n{}", lab.log(da));
    let after = queue_thread_runtimes(lab.pid(da));
    let busy = busy_threads(&before, &after);
    assert!(busy.len() >= 2, "only {busy:?} carried traffic: {before:?} then {after:?}");
}

/// A UDP socket with a big buffer bound to `addr` in `ns`, reading with a 100 ms timeout.
fn receiver_in(ns: &str, addr: &str) -> std::net::UdpSocket {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    common::in_netns(ns, move || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        socket.set_recv_buffer_size(32 << 20).unwrap();
        socket.bind(&addr.into()).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        std::net::UdpSocket::from(socket)
    })
}

/// Reads datagrams from `receiver` until `expected` arrived or 20 s passed; returns how many.
fn receive(receiver: &std::net::UdpSocket, expected: u32) -> u32 {
    let mut got = 0;
    let mut buf = [0u8; 64];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got < expected && std::time::Instant::now() < deadline {
        if receiver.recv(&mut buf).is_ok() {
            got += 1;
        }
    }
    got
}

/// The queue threads that did at least a tenth of the work of all queue threads between two
/// `queue_thread_runtimes`. A share rather than a fixed amount of CPU time, since a fast machine
/// handles a thousand datagrams in well under a millisecond; a thread with no traffic sleeps in
/// poll() and does next to nothing.
fn busy_threads(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<String> {
    let used: Vec<u64> =
        before.iter().zip(after).map(|((_, was), (_, is))| is.saturating_sub(*was)).collect();
    let total: u64 = used.iter().sum();
    assert!(total > 0, "no queue thread ran at all: {before:?} then {after:?}");
    after
        .iter()
        .zip(&used)
        .filter(|(_, used)| **used * 10 >= total)
        .map(|((name, _), _)| name.clone())
        .collect()
}

#[test]
fn one_peers_flows_spread_over_the_threads_by_the_inner_packet() {
    let Some(mut lab) = Lab::new("one_peers_flows_spread_over_threads") else { return };
    let _alone = common::measures_time();
    // One peer, one outer address and port: without the reuseport program the kernel's hash of
    // the outer 4-tuple puts every datagram on one socket, so one thread.
    let a = lab.host("a", "10.100.0.1/24");
    let peer = lab.host("peer", "10.100.0.2/24");
    let da = lab
        .udptun(&a, &["-A", "10.100.0.2", "-d", "udptun", "--threads", "2", "--address", "192.168.100.1/24"]);
    // The receiver binds to the tunnel address, which the daemon sets after creating the device.
    lab.wait_started(da);
    let receiver = receiver_in(&a, "192.168.100.1:5003");
    let before = queue_threads_started(lab.pid(da), 2);
    assert_eq!(before.len(), 2, "{before:?}");
    const PER_FLOW: u32 = 1000;
    common::in_netns(&peer, move || {
        let socket = std::net::UdpSocket::bind("10.100.0.2:7777").unwrap();
        // Two flows whose inner source ports differ in the lowest bit, which steer.rs's unit
        // tests show the program puts on different sockets of two. One flow after the other, so
        // that no GRO batch on the way mixes them.
        for source_port in [40_000u16, 40_001] {
            let [hi, lo] = source_port.to_be_bytes();
            let udp = [hi, lo, 0x13, 0x8b, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
            let packet = common::ipv4_packet([192, 168, 100, 2], [192, 168, 100, 1], 17, &udp);
            for n in 0..PER_FLOW {
                socket.send_to(&packet, "10.100.0.1:7777").unwrap();
                if n % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let got = receive(&receiver, 2 * PER_FLOW);
    assert!(got >= 2 * PER_FLOW * 99 / 100, "{got} of {} arrived:\n{}", 2 * PER_FLOW, lab.log(da));
    let after = queue_thread_runtimes(lab.pid(da));
    let busy = busy_threads(&before, &after);
    assert_eq!(busy.len(), 2, "only {busy:?} carried the two flows: {before:?} then {after:?}");
}

#[test]
fn bursts_of_small_udp_packets_are_written_to_the_tun_without_loss() {
    let Some(mut lab) = Lab::new("bursts_of_small_udp_packets") else { return };
    // What this test counts is loss, which a sibling's gigabyte transfer could cause by
    // keeping the sending daemon off the CPU; so it runs alone.
    let _alone = common::measures_time();
    let (a, b, da, db) = lab.pair(&[]);
    // The sending TUN's queue (500 packets by default) would drop a whole burst if the sending
    // daemon were descheduled for two bursts; that loss is the kernel's, not what this tests.
    lab.exec(&a, &["ip", "link", "set", "udptun", "txqueuelen", "20000"]);
    // The receiver gets a big buffer, so that whatever is lost is lost in the tunnel.
    let receiver = common::in_netns(&b, || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        socket.set_recv_buffer_size(32 << 20).unwrap();
        socket.bind(&"192.168.100.2:5002".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        std::net::UdpSocket::from(socket)
    });
    const SENT: u32 = 20_000;
    let sender_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = sender_done.clone();
    // Counts until all arrived, or 5 s after the last was sent (what is late by then is lost).
    let counting = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut got = 0u32;
        let mut deadline = None;
        while got < SENT && deadline.is_none_or(|d| std::time::Instant::now() < d) {
            if receiver.recv(&mut buf).is_ok() {
                got += 1;
            }
            if deadline.is_none() && done.load(std::sync::atomic::Ordering::Relaxed) {
                deadline = Some(std::time::Instant::now() + Duration::from_secs(5));
            }
        }
        got
    });
    common::in_netns(&a, || {
        let socket = std::net::UdpSocket::bind("192.168.100.1:0").unwrap();
        for _ in 0..SENT / 500 {
            for _ in 0..500 {
                socket.send_to(&[7u8; 64], "192.168.100.2:5002").unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    sender_done.store(true, std::sync::atomic::Ordering::Relaxed);
    let got = counting.join().unwrap();
    let queue_drops = lab.device_counter(&a, "udptun", "tx_dropped");
    let sender_log = lab.stop(da);
    let log = lab.stop(db);
    assert!(log.contains("dropped tun_write_error=0"), "{log}");
    assert_eq!(counter(&sender_log, "dropped tun_read_error"), 0, "{sender_log}");
    // GRO coalesces these bursts into UDP super-packets written to the TUN in one go; before
    // writes were capped at 64 packets the kernel refused whole super-packets.
    assert!(
        got >= SENT * 99 / 100,
        "{got} of {SENT} arrived; {queue_drops} dropped by the sending TUN's queue\nsender:\n{sender_log}\nreceiver:\n{log}"
    );
}

#[test]
fn udp_gso_falls_back_to_one_datagram_per_send_when_the_path_mtu_refuses_it() {
    let Some(mut lab) = Lab::new("udp_gso_falls_back") else { return };
    let _load = common::loads_the_machine();
    let (a, b, da, _) = lab.pair(&[]);
    // A route MTU below the tunnel's datagrams: the kernel refuses GSO sends of that size
    // (EMSGSIZE); they go one by one, and the kernel fragments each on the way out.
    lab.exec(&a, &["ip", "route", "add", "10.100.0.2/32", "dev", "eth0", "mtu", "1200"]);
    assert_eq!(transfer(&b, &a, "192.168.100.2:5001", 20_000_000), 20_000_000);
    let log = lab.stop(da);
    assert!(log.contains("UDP GSO: datagrams of 1472 bytes or more are sent one by one"), "{log}");
    assert_eq!(counter(&log, "dropped send_error"), 0, "{log}");
}
