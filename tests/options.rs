//! The README's promises about flags and signals, end to end with the real binary: ports other
//! than 7777, the default device name, an IPv6 socket with IPv4 peers, outer fragmentation, the
//! source check in one-to-many mode and `--accept-any-source`, environment variables and their
//! precedence, exit statuses, log formats (the journal's, JSON), SIGINT.

mod common;

use std::net::UdpSocket;
use std::os::unix::fs::MetadataExt;
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
    lab.spoke(&b, 2, &[]);
    lab.wait_device(&b, "udptun");
    lab.wait_started(da);
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
fn environment_variables_set_options_below_the_command_line_and_above_the_config_file() {
    let Some(mut lab) = Lab::new("environment_variables_set_options") else { return };
    let web = lab.host("web", "10.100.0.80/24");
    let server = HttpServer::start(common::listen_in(&web, "10.100.0.80:8080"), None);
    for path in ["/env", "/config", "/env-over-config", "/cli-over-env", "/cli-over-env-slow"] {
        server.set(path, Reply::ok(&common::hosts_doc(&[1, 2])));
    }
    let (fast, slow) = ([("HOSTS_URL_INTERVAL", "0.2")], [("HOSTS_URL_INTERVAL", "3600")]);
    let a = lab.host("a", "10.100.0.1/24");
    let slow_file = lab.file("slow.toml", "hosts-url-interval = 3600\n");
    let url = |path: &str| format!("http://10.100.0.80:8080{path}");
    // Only the environment: fetched every 0.2 s.
    lab.udptun_env(&a, &fast, &["--hosts-url", &url("/env"), "-p", "7001", "-d", "t1"]);
    // Only the config file: once an hour.
    lab.udptun(&a, &["--config", &slow_file, "--hosts-url", &url("/config"), "-p", "7002", "-d", "t2"]);
    // The environment (0.2 s) wins over the config file.
    lab.udptun_env(
        &a,
        &fast,
        &["--config", &slow_file, "--hosts-url", &url("/env-over-config"), "-p", "7003", "-d", "t3"],
    );
    // The command line wins over the environment, both ways.
    let cli = |path: &str, interval: &str, port: &str, dev: &str| {
        let args = ["--hosts-url-interval", interval, "--hosts-url", &url(path), "-p", port, "-d", dev];
        args.map(str::to_string)
    };
    let args = cli("/cli-over-env", "0.2", "7004", "t4");
    lab.udptun_env(&a, &slow, &args.each_ref().map(String::as_str));
    let args = cli("/cli-over-env-slow", "3600", "7005", "t5");
    lab.udptun_env(&a, &fast, &args.each_ref().map(String::as_str));
    for dev in ["t1", "t2", "t3", "t4", "t5"] {
        lab.wait_device(&a, dev);
    }
    let fetched_often = wait_until(Duration::from_secs(10), || {
        ["/env", "/env-over-config", "/cli-over-env"].iter().all(|path| server.hits(path) >= 5)
    });
    assert!(fetched_often, "{:?}", server.hits.lock().unwrap());
    assert_eq!(server.hits("/config"), 1, "the config file's interval must apply");
    assert_eq!(server.hits("/cli-over-env-slow"), 1, "the command line must win over the environment");

    // UDPTUN_<LONG_NAME>: a port, an MTU over the config file's, a flag without a value, a list.
    let config = lab.file("mtu.toml", "mtu = 1400\n");
    let env = [
        ("UDPTUN_LOCAL_PORT", "7006"),
        ("UDPTUN_MTU", "1300"),
        ("UDPTUN_NO_OFFLOAD", "true"),
        ("UDPTUN_ADDRESS", "192.168.50.1/24,192.168.51.1/24"),
    ];
    let d6 = lab.udptun_env(&a, &env, &["--config", &config, "-A", "10.100.0.2", "-d", "t6"]);
    lab.wait_device(&a, "t6");
    let started = wait_until(Duration::from_secs(5), || lab.log(d6).contains("device t6"));
    assert!(started, "{}", lab.log(d6));
    assert!(lab.log(d6).contains("device t6 (mtu 1300), listening on 0.0.0.0:7006"), "{}", lab.log(d6));
    assert!(lab.log(d6).contains("offloads: tun false, gso false, gro false"), "{}", lab.log(d6));
    let link = lab.exec(&a, &["ip", "link", "show", "t6"]);
    assert!(link.contains("mtu 1300"), "{link}");
    let sockets = lab.exec(&a, &["ss", "-uln"]);
    assert!(sockets.contains("0.0.0.0:7006"), "{sockets}");
    let addresses = lab.exec(&a, &["ip", "addr", "show", "t6"]);
    assert!(addresses.contains("192.168.50.1/24") && addresses.contains("192.168.51.1/24"), "{addresses}");

    // CA_FILE names the CA for HTTPS (a file that is not PEM is refused, naming it: EX_CONFIG).
    let not_pem = lab.file("not-a-ca.pem", "no certificates here");
    let refused = lab.udptun_env(
        &a,
        &[("CA_FILE", &not_pem)],
        &["--hosts-url", "https://10.100.0.80:8443/x", "-p", "7007", "-d", "t7"],
    );
    assert_eq!(lab.wait_exit(refused, Duration::from_secs(10)), Some(78));
    assert!(lab.log(refused).contains("not-a-ca.pem"), "{}", lab.log(refused));
}

#[test]
fn exit_statuses_tell_a_supervisor_whether_a_restart_can_help() {
    let Some(mut lab) = Lab::new("exit_statuses_tell_a_supervisor") else { return };
    let web = lab.host("web", "10.100.0.80/24");
    let server = HttpServer::start(common::listen_in(&web, "10.100.0.80:8080"), None);
    server.set("/down", Reply::status(503));
    server.set("/broken", Reply::ok("{ nodes: { \"10.0.0.1\": "));
    let a = lab.host("a", "10.100.0.1/24");
    let missing = lab.dir.join("missing.json").to_string_lossy().into_owned();
    let holder = lab.udptun(&a, &["-A", "10.100.0.2", "-p", "7001", "-d", "holder"]);
    lab.wait_device(&a, "holder");
    let cases: [(&[&str], i32, &str); 6] = [
        // EX_TEMPFAIL: the server, the name may come right without a change here.
        (&["--hosts-url", "http://10.100.0.80:8080/down"], 75, "HTTP 503"),
        (&["--hosts-url", "http://10.100.0.80:8080/broken"], 75, "http://10.100.0.80:8080/broken: line 1"),
        (&["--hosts-url", "http://10.100.0.80:8081/hosts.json"], 75, "http://10.100.0.80:8081/hosts.json"),
        (&["-A", "no-such-host.invalid"], 75, "-A no-such-host.invalid: does not resolve"),
        // EX_CONFIG: only a change of configuration helps.
        (&["--hosts-file", &missing], 78, "missing.json: No such file"),
        // Anything else: 1 (the port is another daemon's).
        (&["-A", "10.100.0.2", "-p", "7001"], 1, "UDP port 0.0.0.0:7001"),
    ];
    for (index, (args, status, message)) in cases.into_iter().enumerate() {
        let device = format!("x{index}");
        let daemon = lab.udptun(&a, &[args, &["-d", &device]].concat());
        assert_eq!(
            lab.wait_exit(daemon, Duration::from_secs(10)),
            Some(status),
            "{args:?}: {}",
            lab.log(daemon)
        );
        assert!(lab.log(daemon).contains(message), "{args:?}: {}", lab.log(daemon));
    }
    assert!(lab.running(holder));
}

/// Whether `line` holds a date and time as the text format writes them (`2026-01-31T12:00`).
fn has_timestamp(line: &str) -> bool {
    let pattern = b"dddd-dd-ddTdd:dd";
    line.as_bytes()
        .windows(pattern.len())
        .any(|w| w.iter().zip(pattern).all(|(&c, &p)| if p == b'd' { c.is_ascii_digit() } else { c == p }))
}

#[test]
fn log_lines_carry_a_journal_priority_when_stderr_is_the_journal() {
    let Some(mut lab) = Lab::new("log_lines_carry_a_journal_priority") else { return };
    let a = lab.host("a", "10.100.0.1/24");
    // A warning (the keepalive is not shorter than the hold), info, and debug (RUST_LOG=debug):
    // a metrics request that is not text.
    let metrics = "127.0.0.1:9102";
    let running = lab.udptun_journal(
        &a,
        &[
            "-A",
            "10.100.0.2",
            "-d",
            "t1",
            "--keepalive",
            "20",
            "--roam-hold",
            "15",
            "--metrics-listen",
            metrics,
        ],
    );
    lab.wait_device(&a, "t1");
    lab.wait_metrics(&a, metrics);
    in_netns(&a, move || {
        let mut stream = std::net::TcpStream::connect(metrics).unwrap();
        std::io::Write::write_all(&mut stream, b"\xff\xfe\r\n\r\n").unwrap();
    });
    assert!(
        wait_until(Duration::from_secs(5), || lab.log(running).contains("metrics request")),
        "{}",
        lab.log(running)
    );
    let mut log = lab.stop(running);
    // An error, and the exit status that goes with it.
    let failed = lab.udptun_journal(&a, &["-A", "no-such-host.invalid", "-d", "t2"]);
    assert_eq!(lab.wait_exit(failed, Duration::from_secs(10)), Some(75), "{}", lab.log(failed));
    log += &lab.log(failed);
    for expected in [
        "<4>--keepalive 20 s is not shorter than --roam-hold 15 s",
        "<6>device t1 (mtu 1472), listening on 0.0.0.0:7777",
        "<6>signal 15: shutting down",
        "<3>-A no-such-host.invalid: does not resolve",
        "<7>metrics request",
    ] {
        assert!(log.lines().any(|l| l.starts_with(expected)), "no line starts with {expected}:\n{log}");
    }
    for line in log.lines() {
        let priority = line.get(..3).unwrap_or_default();
        assert!(["<3>", "<4>", "<6>", "<7>"].contains(&priority), "{line}");
        assert!(!has_timestamp(line) && !line.contains(" INFO "), "{line}");
    }
}

#[test]
fn log_lines_stay_text_unless_stderr_is_the_journal_and_json_is_one_object_a_line() {
    let Some(mut lab) = Lab::new("log_lines_stay_text") else { return };
    let a = lab.host("a", "10.100.0.1/24");
    let other = lab.file("elsewhere", "");
    let other = std::fs::metadata(&other).unwrap();
    let stream = format!("{}:{}", other.dev(), other.ino());
    // No JOURNAL_STREAM, and one inherited from a parent whose stderr was another file.
    let plain = lab.udptun(&a, &["-A", "10.100.0.2", "-p", "7001", "-d", "t1"]);
    let inherited =
        lab.udptun_env(&a, &[("JOURNAL_STREAM", &stream)], &["-A", "10.100.0.2", "-p", "7002", "-d", "t2"]);
    // JSON, asked for through the environment; with a warning.
    let json = lab.udptun_env(
        &a,
        &[("UDPTUN_LOG_FORMAT", "json")],
        &["-A", "10.100.0.2", "-p", "7003", "-d", "t3", "--keepalive", "20", "--roam-hold", "15"],
    );
    for (daemon, dev) in [(plain, "t1"), (inherited, "t2"), (json, "t3")] {
        lab.wait_device(&a, dev);
        let line = format!("device {dev} (mtu 1472)");
        assert!(
            wait_until(Duration::from_secs(5), || lab.log(daemon).contains(&line)),
            "{}",
            lab.log(daemon)
        );
    }
    for daemon in [plain, inherited] {
        let log = lab.stop(daemon);
        let device = log.lines().find(|l| l.contains("device t")).unwrap();
        assert!(has_timestamp(device) && device.contains(" INFO device t"), "{device}");
        assert!(!log.lines().any(|l| l.starts_with('<')), "{log}");
    }
    let log = lab.stop(json);
    let mut levels = Vec::new();
    for line in log.lines() {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(object["timestamp"].is_string() && object["message"].is_string(), "{line}");
        levels.push(object["level"].as_str().unwrap_or_else(|| panic!("no level: {line}")).to_string());
    }
    assert!(levels.contains(&"INFO".to_string()) && levels.contains(&"WARN".to_string()), "{levels:?}");
    assert!(log.lines().any(|l| l.contains(r#""level":"INFO","message":"device t3 (mtu 1472)"#)), "{log}");
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
