//! The README's promises about flags and signals, end to end with the real binary: ports other
//! than 7777, the default device name, an IPv6 socket with IPv4 peers, outer fragmentation, the
//! source check in one-to-many mode and `--accept-any-source`, environment variables, SIGINT.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{HttpServer, Lab, Reply, in_netns, wait_until};

/// A UDP socket bound at `addr` inside `ns`, reading with a short timeout.
fn listener(ns: &str, addr: &'static str) -> UdpSocket {
    in_netns(ns, move || {
        let socket = UdpSocket::bind(addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        socket
    })
}

/// Datagrams `socket` receives until it has been quiet for a while (200 ms reads, 1 s in all
/// after the first quiet read).
fn received(socket: &UdpSocket) -> usize {
    let (mut count, mut quiet) = (0, 0);
    let mut buf = [0u8; 256];
    while quiet < 5 {
        match socket.recv(&mut buf) {
            Ok(_) => count += 1,
            Err(_) => quiet += 1,
        }
    }
    count
}

/// Sends `count` tunnel datagrams from `from` (an underlay `IP:PORT` in `ns`) to `to`, each an
/// IPv4 UDP packet from `inner_src` to `inner_dst` port 5004.
fn inject(ns: &str, from: &str, to: &str, inner_src: [u8; 4], inner_dst: [u8; 4], count: usize) {
    let (from, to) = (from.to_string(), to.to_string());
    in_netns(ns, move || {
        let socket = UdpSocket::bind(from).unwrap();
        let udp = [0x13, 0x8c, 0x13, 0x8c, 0, 12, 0, 0, b'p', b'i', b'n', b'g'];
        let packet = common::ipv4_packet(inner_src, inner_dst, 17, &udp);
        for _ in 0..count {
            socket.send_to(&packet, &to).unwrap();
        }
    });
}

#[test]
fn ports_other_than_7777_work_end_to_end() {
    let Some(mut lab) = Lab::new("ports_other_than_7777_work_end_to_end") else { return };
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    // a: an overlay whose entries carry their ports; b: one-to-one with -p and -P.
    let hosts = lab.file(
        "hosts.json",
        r#"{ nodes: { "192.168.100.1": { host: "10.100.0.1", port: 7001 },
                      "192.168.100.2": { host: "10.100.0.2", port: 7002 } } }"#,
    );
    lab.udptun(&a, &["--hosts-file", &hosts, "-p", "7001", "-d", "udptun", "--address", "192.168.100.1/24"]);
    lab.udptun(
        &b,
        &["-A", "10.100.0.1", "-P", "7001", "-p", "7002", "-d", "udptun", "--address", "192.168.100.2/24"],
    );
    lab.wait_device(&a, "udptun");
    lab.wait_device(&b, "udptun");
    lab.assert_ping(&a, "192.168.100.2");
    lab.assert_ping(&b, "192.168.100.1");
    let sockets = lab.exec(&a, &["ss", "-uln"]);
    assert!(sockets.contains(":7001") && !sockets.contains(":7777"), "{sockets}");
}

#[test]
fn the_default_device_name_is_the_first_free_tun_n() {
    let Some(mut lab) = Lab::new("the_default_device_name_is_the_first_free_tun_n") else { return };
    let a = lab.host("a", "10.100.0.1/24");
    lab.exec(&a, &["ip", "tuntap", "add", "dev", "tun0", "mode", "tun"]);
    let da = lab.udptun(&a, &["-A", "10.100.0.2"]);
    lab.wait_device(&a, "tun1");
    assert!(
        wait_until(Duration::from_secs(5), || lab.log(da).contains("device tun1 (mtu 1472)")),
        "{}",
        lab.log(da)
    );
}

#[test]
fn an_ipv6_socket_reaches_ipv4_peers() {
    let Some(mut lab) = Lab::new("an_ipv6_socket_reaches_ipv4_peers") else { return };
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    lab.enable_ipv6(&a);
    let da =
        lab.udptun(&a, &["-a", "::", "-A", "10.100.0.2", "-d", "udptun", "--address", "192.168.100.1/24"]);
    lab.udptun(&b, &["-A", "10.100.0.1", "-d", "udptun", "--address", "192.168.100.2/24"]);
    lab.wait_device(&a, "udptun");
    lab.wait_device(&b, "udptun");
    assert!(lab.log(da).contains("listening on [::]:7777"), "{}", lab.log(da));
    lab.assert_ping(&a, "192.168.100.2");
    lab.assert_ping(&b, "192.168.100.1");
}

/// `Ip: FragCreates` of `ns`: outgoing fragments its kernel made.
fn fragments_created(lab: &Lab, ns: &str) -> u64 {
    let snmp = lab.exec(ns, &["cat", "/proc/net/snmp"]);
    let mut ip_lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip_lines.next().unwrap(), ip_lines.next().unwrap());
    let column = names.split_whitespace().position(|n| n == "FragCreates").unwrap();
    values.split_whitespace().nth(column).unwrap().parse().unwrap()
}

#[test]
fn a_tunnel_mtu_above_the_underlay_fragments_the_outer_datagrams() {
    let Some(mut lab) = Lab::new("a_tunnel_mtu_above_the_underlay_fragments") else { return };
    let (a, _, _, _) = lab.pair(&["--mtu", "4000"]);
    let before = fragments_created(&lab, &a);
    // 3,528-byte inner packets, not fragmented inside (-M do): they fit the 4000-byte tunnel.
    let ping = lab
        .output(&a, &["ping", "-c", "3", "-i", "0.2", "-W", "2", "-M", "do", "-s", "3500", "192.168.100.2"]);
    let stdout = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.status.success(), "{stdout}{}", String::from_utf8_lossy(&ping.stderr));
    assert!(stdout.contains("3508 bytes from 192.168.100.2"), "{stdout}");
    // Each 3,556-byte outer datagram leaves a's 1500-byte underlay in three fragments.
    let fragments = fragments_created(&lab, &a) - before;
    assert!(fragments >= 9, "{fragments} outer fragments for 3 large pings");
}

#[test]
fn in_an_overlay_one_peer_cannot_speak_for_another() {
    let Some(mut lab) = Lab::new("in_an_overlay_one_peer_cannot_speak_for_another") else { return };
    let hosts = lab.file("hosts.json", &common::hosts_doc(&[1, 2, 3]));
    let a = lab.host("h1", "10.100.0.1/24");
    let c = lab.host("h3", "10.100.0.3/24");
    let metrics = "127.0.0.1:9102";
    lab.udptun(
        &a,
        &[
            "--hosts-file",
            &hosts,
            "-d",
            "udptun",
            "--address",
            "192.168.100.1/24",
            "--metrics-listen",
            metrics,
        ],
    );
    lab.wait_device(&a, "udptun");
    lab.wait_metrics(&a, metrics);
    let socket = listener(&a, "192.168.100.1:5004");
    let source_check = "udptun_dropped_packets_total{reason=\"source_check\"}";

    // Host 3 sends as host 2: refused, counted.
    inject(&c, "10.100.0.3:7777", "10.100.0.1:7777", [192, 168, 100, 2], [192, 168, 100, 1], 10);
    assert_eq!(received(&socket), 0, "a datagram in host 2's name was delivered");
    assert_eq!(lab.scrape(&a, metrics, source_check), 10);
    // As itself, it is heard.
    inject(&c, "10.100.0.3:7777", "10.100.0.1:7777", [192, 168, 100, 3], [192, 168, 100, 1], 10);
    assert_eq!(received(&socket), 10);
}

#[test]
fn accept_any_source_delivers_what_the_source_check_drops() {
    let Some(mut lab) = Lab::new("accept_any_source_delivers_what_the_source_check_drops") else { return };
    let (_, b, _, _) = lab.pair(&["--accept-any-source"]);
    let stranger = lab.host("x", "10.100.0.66/24");
    let socket = listener(&b, "192.168.100.2:5004");
    inject(&stranger, "10.100.0.66:40000", "10.100.0.2:7777", [192, 168, 100, 1], [192, 168, 100, 2], 10);
    assert_eq!(received(&socket), 10, "--accept-any-source must let them through");
}

#[test]
fn environment_variables_set_options_below_the_config_file_and_the_command_line() {
    let Some(mut lab) = Lab::new("environment_variables_set_options") else { return };
    let web = lab.host("web", "10.100.0.80/24");
    let server = HttpServer::start(common::listen_in(&web, "10.100.0.80:8080"), None);
    for path in ["/env", "/config", "/cli"] {
        server.set(path, Reply::ok(&common::hosts_doc(&[1, 2])));
    }
    let env = [("HOSTS_URL_INTERVAL", "0.2")];
    let a = lab.host("a", "10.100.0.1/24");
    let slow = lab.file("slow.toml", "hosts-url-interval = 3600\n");
    // Only the environment: fetched every 0.2 s.
    lab.udptun_env(&a, &env, &["--hosts-url", "http://10.100.0.80:8080/env", "-p", "7001", "-d", "t1"]);
    // The config file (3600 s) wins over the environment.
    lab.udptun_env(
        &a,
        &env,
        &["--config", &slow, "--hosts-url", "http://10.100.0.80:8080/config", "-p", "7002", "-d", "t2"],
    );
    // The command line (0.2 s) wins over both.
    lab.udptun_env(
        &a,
        &[("HOSTS_URL_INTERVAL", "3600")],
        &[
            "--config",
            &slow,
            "--hosts-url-interval",
            "0.2",
            "--hosts-url",
            "http://10.100.0.80:8080/cli",
            "-p",
            "7003",
            "-d",
            "t3",
        ],
    );
    for dev in ["t1", "t2", "t3"] {
        lab.wait_device(&a, dev);
    }
    assert!(wait_until(Duration::from_secs(10), || server.hits("/env") >= 5 && server.hits("/cli") >= 5));
    assert_eq!(server.hits("/config"), 1, "the config file's interval must win over the environment");

    // CA_FILE names the CA for HTTPS (a file that is not PEM is refused, naming it).
    let not_pem = lab.file("not-a-ca.pem", "no certificates here");
    let refused = lab.udptun_env(
        &a,
        &[("CA_FILE", &not_pem)],
        &["--hosts-url", "https://10.100.0.80:8443/x", "-p", "7004", "-d", "t4"],
    );
    assert_eq!(lab.wait_exit(refused, Duration::from_secs(10)), Some(1));
    assert!(lab.log(refused).contains("not-a-ca.pem"), "{}", lab.log(refused));
}

#[test]
fn sigint_ends_it_cleanly_and_removes_the_device() {
    let Some(mut lab) = Lab::new("sigint_ends_it_cleanly_and_removes_the_device") else { return };
    let (a, _, da, _) = lab.pair(&[]);
    lab.signal(da, libc::SIGINT);
    assert_eq!(lab.wait_exit(da, Duration::from_secs(10)), Some(0), "{}", lab.log(da));
    assert!(lab.log(da).contains("signal 2: shutting down"), "{}", lab.log(da));
    let gone = wait_until(Duration::from_secs(5), || {
        !lab.output(&a, &["ip", "link", "show", "udptun"]).status.success()
    });
    assert!(gone, "the device outlived the process");
}
