//! Beyond the original: one-command set-up, prefixes, IPv6, NAT, the source check, reloads,
//! re-resolution, privilege drop, metrics and the config file, with the real binary in
//! network namespaces.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::{Lab, in_netns, metric, wait_until};

#[test]
fn one_command_sets_up_addresses_mtu_and_routes() {
    let Some(mut lab) = Lab::new("one_command_sets_up_addresses_mtu_and_routes") else { return };
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    lab.enable_ipv6(&a);
    lab.enable_ipv6(&b);
    let common = ["-d", "udptun", "--mtu", "1400", "--route", "10.99.0.0/24"];
    let da = lab.udptun(
        &a,
        &[&["-A", "10.100.0.2", "--address", "192.168.100.1/24", "--address", "fd00::1/64"], &common[..]]
            .concat(),
    );
    lab.udptun(
        &b,
        &[&["-A", "10.100.0.1", "--address", "192.168.100.2/24", "--address", "fd00::2/64"], &common[..]]
            .concat(),
    );
    lab.wait_device(&a, "udptun");
    assert!(
        wait_until(Duration::from_secs(5), || lab.log(da).contains("device udptun")),
        "{}",
        lab.all_logs()
    );

    let link = lab.exec(&a, &["ip", "link", "show", "udptun"]);
    assert!(link.contains("mtu 1400") && link.contains(",UP"), "{link}");
    let addresses = lab.exec(&a, &["ip", "addr", "show", "udptun"]);
    assert!(
        addresses.contains("inet 192.168.100.1/24") && addresses.contains("inet6 fd00::1/64"),
        "{addresses}"
    );
    let routes = lab.exec(&a, &["ip", "route", "show", "dev", "udptun"]);
    assert!(routes.contains("10.99.0.0/24"), "{routes}");

    lab.assert_ping(&a, "192.168.100.2");
    lab.assert_ping(&a, "fd00::2");

    // The kernel's reason comes through: the address is already there.
    let again = lab.udptun(
        &a,
        &[
            "-A",
            "10.100.0.2",
            "-p",
            "7778",
            "-d",
            "udptun2",
            "--address",
            "192.168.100.1/24",
            "--route",
            "192.168.100.0/24",
        ],
    );
    assert_eq!(lab.wait_exit(again, Duration::from_secs(5)), Some(1));
    assert!(lab.log(again).contains("--route 192.168.100.0/24: File exists"), "{}", lab.log(again));
}

/// Hosts document for a, the gateway gw and the subnet behind gw.
const GATEWAY_HOSTS: &str = r#"{ nodes : {
    "192.168.100.1" : { host : "10.100.0.1" },
    "192.168.100.2" : { host : "10.100.0.2" },
    "10.77.0.0/24"  : { host : "10.100.0.2" } } }"#;

#[test]
fn a_prefix_entry_routes_a_subnet_through_a_gateway() {
    let Some(mut lab) = Lab::new("a_prefix_entry_routes_a_subnet_through_a_gateway") else { return };
    let hosts = lab.file("hosts.json", GATEWAY_HOSTS);
    let a = lab.host("a", "10.100.0.1/24");
    let gw = lab.host("gw", "10.100.0.2/24");
    let lan = lab.host_behind(&gw, "lan", "10.77.0");
    lab.udptun(
        &a,
        &["--hosts-file", &hosts, "-d", "udptun", "--address", "192.168.100.1/24", "--route", "10.77.0.0/24"],
    );
    lab.udptun(&gw, &["--hosts-file", &hosts, "-d", "udptun", "--address", "192.168.100.2/24"]);
    lab.wait_device(&a, "udptun");
    lab.wait_device(&gw, "udptun");
    lab.assert_ping(&a, "10.77.0.2");
    lab.assert_ping(&lan, "192.168.100.1");
}

#[test]
fn ipv6_inside_and_outside() {
    let Some(mut lab) = Lab::new("ipv6_inside_and_outside") else { return };
    let hosts = lab.file(
        "hosts.json",
        r#"{ nodes : {
            "fd00::1" : { host : "fd01::1" }, "192.168.100.1" : { host : "fd01::1" },
            "fd00::2" : { host : "fd01::2" }, "192.168.100.2" : { host : "fd01::2" } } }"#,
    );
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    for (ns, n) in [(&a, 1), (&b, 2)] {
        lab.enable_ipv6(ns);
        lab.exec(ns, &["ip", "addr", "add", &format!("fd01::{n}/64"), "dev", "eth0", "nodad"]);
        lab.udptun(
            ns,
            &[
                "-a",
                "::",
                "--hosts-file",
                &hosts,
                "-d",
                "udptun",
                "--address",
                &format!("fd00::{n}/64"),
                "--address",
                &format!("192.168.100.{n}/24"),
            ],
        );
        lab.wait_device(ns, "udptun");
    }
    let mtu = lab.exec(&a, &["ip", "link", "show", "udptun"]);
    assert!(mtu.contains("mtu 1452"), "an IPv6 underlay leaves 1452 bytes: {mtu}");
    lab.assert_ping(&a, "fd00::2");
    lab.assert_ping(&b, "192.168.100.1");
    let out = lab.output(&a, &["ping", "-c", "1", "-W", "1", "fd00::9"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Destination unreachable: Address unreachable"), "{stdout}");
}

#[test]
fn a_host_behind_nat_without_port_forwarding_is_reachable() {
    let Some(mut lab) = Lab::new("a_host_behind_nat_without_port_forwarding") else { return };
    let hosts = lab.file(
        "hosts.json",
        r#"{ nodes : { "192.168.100.1" : { host : "10.100.0.1" }, "192.168.100.2" : { host : "10.100.0.254" } } }"#,
    );
    let public = lab.host("pub", "10.100.0.1/24");
    let router = lab.host("nat", "10.100.0.254/24");
    let inside = lab.host_behind(&router, "in", "10.88.0");
    let rules = lab.file(
        "nat.nft",
        "table ip nat {\n chain post {\n  type nat hook postrouting priority 100;\n  \
         oifname \"eth0\" meta l4proto udp masquerade to :20000-29999\n }\n}\n",
    );
    lab.exec(&router, &["nft", "-f", &rules]);

    // A peer behind NAT is followed once the roaming hold (1 s here) has passed since the
    // table was published.
    let dp = lab.udptun(
        &public,
        &["--hosts-file", &hosts, "-d", "udptun", "--address", "192.168.100.1/24", "--roam-hold", "1"],
    );
    let di = lab.udptun(
        &inside,
        &["--hosts-file", &hosts, "-d", "udptun", "--address", "192.168.100.2/24", "--keepalive", "0.5"],
    );
    lab.wait_device(&public, "udptun");
    lab.wait_device(&inside, "udptun");
    // The public host starts the conversation: only the keepalives told it the NAT's port.
    lab.assert_ping(&public, "192.168.100.2");
    let log = lab.log(dp);
    assert!(log.contains("peer 10.100.0.254:7777 is now reached at 10.100.0.254:2"), "{log}");
    let log = lab.stop(di);
    assert!(log.contains("dropped malformed=0"), "keepalives must not count as malformed: {log}");
}

#[test]
fn spoofed_datagrams_are_dropped_and_counted_and_metrics_move() {
    let Some(mut lab) = Lab::new("spoofed_datagrams_are_dropped_and_counted") else { return };
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    let attacker = lab.host("x", "10.100.0.66/24");
    lab.udptun(&a, &["-A", "10.100.0.2", "-d", "udptun", "--address", "192.168.100.1/24"]);
    lab.udptun(
        &b,
        &[
            "-A",
            "10.100.0.1",
            "-d",
            "udptun",
            "--address",
            "192.168.100.2/24",
            "--metrics-listen",
            "127.0.0.1:9101",
        ],
    );
    lab.wait_device(&b, "udptun");
    lab.assert_ping(&a, "192.168.100.2");
    lab.wait_metrics(&b, "127.0.0.1:9101");
    let before = lab.http_get(&b, "127.0.0.1:9101", "/metrics");
    assert!(before.starts_with("HTTP/1.1 200"), "{before}");

    // A well-formed packet "from 192.168.100.1", but sent by another host.
    in_netns(&attacker, || {
        let socket = UdpSocket::bind("10.100.0.66:7777").unwrap();
        let packet =
            common::ipv4_packet([192, 168, 100, 1], [192, 168, 100, 2], 1, &[8, 0, 0xf7, 0xfe, 0, 1, 0, 0]);
        for _ in 0..5 {
            socket.send_to(&packet, "10.100.0.2:7777").unwrap();
        }
    });
    lab.assert_ping(&a, "192.168.100.2");
    let after = lab.http_get(&b, "127.0.0.1:9101", "/metrics");
    let dropped = "udptun_dropped_packets_total{reason=\"source_check\"}";
    assert_eq!(metric(&before, dropped), 0);
    assert_eq!(metric(&after, dropped), 5, "{after}");
    let rx = "udptun_packets_total{direction=\"rx\"}";
    assert!(metric(&after, rx) > metric(&before, rx), "rx counter did not move");
    assert!(metric(&after, "udptun_bytes_total{direction=\"tx\"}") > 0);
    assert_eq!(metric(&after, "udptun_peers"), 1);
    assert!(lab.http_get(&b, "127.0.0.1:9101", "/other").starts_with("HTTP/1.1 404"));
}

/// A TCP connection to `addr` made inside `ns` (the socket stays there, whatever thread uses it).
fn connect_in(ns: &str, addr: &'static str) -> TcpStream {
    in_netns(ns, move || TcpStream::connect(addr).unwrap())
}

/// How long after `since` the server closed `stream`, sending it one byte of `dribble` (if any)
/// a second meanwhile; `None` if it was still open after `limit`.
fn closed_after(mut stream: TcpStream, dribble: &[u8], since: Instant, limit: Duration) -> Option<Duration> {
    stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut bytes = dribble.iter();
    let mut buf = [0u8; 4096];
    while since.elapsed() < limit {
        if let Some(&byte) = bytes.next()
            && stream.write_all(&[byte]).is_err()
        {
            return Some(since.elapsed());
        }
        match stream.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok(0) | Err(_) => return Some(since.elapsed()),
            Ok(n) => panic!("an answer to an unfinished request: {}", String::from_utf8_lossy(&buf[..n])),
        }
    }
    None
}

/// Scrapes `/metrics` at `addr` inside `ns`, waiting at most 3 s: how long it took, and the
/// response (or why there was none).
fn timed_scrape(ns: &str, addr: &'static str) -> (Duration, String) {
    in_netns(ns, move || {
        let start = Instant::now();
        let response = (|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect(addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(3)))?;
            stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })();
        (start.elapsed(), response.unwrap_or_else(|e| format!("no answer: {e}")))
    })
}

#[test]
fn slow_metrics_clients_neither_hold_off_a_scrape_nor_keep_their_connection() {
    let _timed = common::measures_time();
    let Some(mut lab) = Lab::new("slow_metrics_clients_neither_hold_off_a_scrape") else { return };
    let a = lab.host("a", "10.100.0.1/24");
    let metrics = "127.0.0.1:9100";
    lab.udptun(&a, &["-A", "10.100.0.2", "-d", "udptun", "--metrics-listen", metrics]);
    lab.wait_metrics(&a, metrics);

    // One client sends nothing; another sends a byte a second and never ends its headers.
    let start = Instant::now();
    let (silent, slow) = (connect_in(&a, metrics), connect_in(&a, metrics));
    let request = [&b"GET /metrics HTTP/1.1\r\nX-Slow: "[..], &[b'a'; 20]].concat();
    let limit = Duration::from_secs(10);
    let silent = thread::spawn(move || closed_after(silent, b"", start, limit));
    let slow = thread::spawn(move || closed_after(slow, &request, start, limit));
    thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        let (took, response) = timed_scrape(&a, metrics);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(took < Duration::from_secs(1), "a scrape beside two slow clients took {took:?}");
        thread::sleep(Duration::from_millis(300));
    }
    // Each is cut off when its 5 s are up, not before.
    for (who, client) in [("silent", silent), ("slow", slow)] {
        let closed = client.join().unwrap();
        let in_time =
            closed.is_some_and(|t| t >= Duration::from_millis(4500) && t < Duration::from_millis(6500));
        assert!(in_time, "the {who} client was disconnected after {closed:?} (expected about 5 s)");
    }

    // Eight connections take every place: a ninth is closed at once, and once they go, scrapes
    // are answered again.
    let idle: Vec<TcpStream> = (0..8).map(|_| connect_in(&a, metrics)).collect();
    thread::sleep(Duration::from_millis(200));
    let closed = closed_after(connect_in(&a, metrics), b"", Instant::now(), Duration::from_secs(3));
    assert!(
        closed.is_some_and(|t| t < Duration::from_millis(500)),
        "a ninth connection: closed after {closed:?}"
    );
    drop(idle);
    let answered =
        wait_until(Duration::from_secs(2), || timed_scrape(&a, metrics).1.starts_with("HTTP/1.1 200"));
    assert!(answered, "no scrape answered after the eight connections closed");
}

#[test]
fn the_hosts_file_reloads_on_change_and_on_sighup_and_a_bad_file_keeps_the_old_table() {
    let Some(mut lab) = Lab::new("the_hosts_file_reloads") else { return };
    let hosts = lab.file("hosts.json", &common::hosts_doc(&[1, 2]));
    let full = lab.file("full.json", &common::hosts_doc(&[1, 2, 3]));
    let mut namespaces = Vec::new();
    let mut daemons = Vec::new();
    for i in 1..=3u8 {
        let ns = lab.host(&format!("h{i}"), &format!("10.100.0.{i}/24"));
        let file = if i == 1 { &hosts } else { &full };
        daemons.push(lab.udptun(
            &ns,
            &["--hosts-file", file, "-d", "udptun", "--address", &format!("192.168.100.{i}/24")],
        ));
        namespaces.push(ns);
    }
    for ns in &namespaces {
        lab.wait_device(ns, "udptun");
    }
    lab.assert_ping(&namespaces[0], "192.168.100.2");
    assert!(!lab.ping(&namespaces[0], "192.168.100.3"));

    // Rewritten in place: the watcher sees it within a second or two.
    std::fs::write(&hosts, common::hosts_doc(&[1, 2, 3])).unwrap();
    lab.assert_ping(&namespaces[0], "192.168.100.3");

    // A broken file: logged with its line, the old table stays.
    std::fs::write(&hosts, "{ nodes: {\n \"192.168.100.2\": { host: \"10.100.0.2\" },\n oops } }").unwrap();
    assert!(wait_until(Duration::from_secs(5), || lab
        .log(daemons[0])
        .contains("keeping the previous table")));
    assert!(lab.log(daemons[0]).contains("line 3"), "{}", lab.log(daemons[0]));
    lab.assert_ping(&namespaces[0], "192.168.100.3");

    // Replaced by rename, as editors and config managers do: a new inode.
    let staged = lab.file("hosts.json.new", &common::hosts_doc(&[1, 2]));
    std::fs::rename(&staged, &hosts).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !lab.ping(&namespaces[0], "192.168.100.3")));
    lab.assert_ping(&namespaces[0], "192.168.100.2");

    // An edit the watcher cannot see (same length, same inode, the old modification time put
    // back): only SIGHUP applies it.
    let modified = std::fs::metadata(&hosts).unwrap().modified().unwrap();
    let swapped = common::hosts_doc(&[1, 3]);
    assert_eq!(swapped.len(), common::hosts_doc(&[1, 2]).len());
    let mut file = std::fs::OpenOptions::new().write(true).open(&hosts).unwrap();
    std::io::Write::write_all(&mut file, swapped.as_bytes()).unwrap();
    file.set_modified(modified).unwrap();
    drop(file);
    std::thread::sleep(Duration::from_millis(2500)); // two rounds of the watcher
    assert!(!lab.ping(&namespaces[0], "192.168.100.3"), "the watcher saw an edit it cannot see");
    lab.signal(daemons[0], libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(5), || lab.log(daemons[0]).contains("SIGHUP: reloading")));
    lab.assert_ping(&namespaces[0], "192.168.100.3");
    assert!(!lab.ping(&namespaces[0], "192.168.100.2"), "192.168.100.2 left the table");
}

#[test]
fn sighup_refetches_the_hosts_url_at_once() {
    let Some(mut lab) = Lab::new("sighup_refetches_the_hosts_url_at_once") else { return };
    let web = lab.host("web", "10.100.0.80/24");
    let server = common::HttpServer::start(common::listen_in(&web, "10.100.0.80:8080"), None);
    server.set("/hosts.json", common::Reply::ok(&common::hosts_doc(&[1, 3])));
    let (h1, h3) = (lab.host("h1", "10.100.0.1/24"), lab.host("h3", "10.100.0.3/24"));
    let url = "http://10.100.0.80:8080/hosts.json";
    let d1 = lab.udptun(
        &h1,
        &[
            "--hosts-url",
            url,
            "--hosts-url-interval",
            "3600",
            "-d",
            "udptun",
            "--address",
            "192.168.100.1/24",
        ],
    );
    lab.spoke(&h3, 3, &[]);
    lab.wait_device(&h3, "udptun");
    lab.wait_started(d1);
    assert_eq!(server.hits("/hosts.json"), 1);
    // Not in the document yet; the next fetch is an hour away.
    lab.exec(&h1, &["ip", "route", "add", "10.99.0.0/24", "dev", "udptun"]);
    assert!(!lab.ping(&h1, "10.99.0.1"));

    server.set(
        "/hosts.json",
        common::Reply::ok("{ nodes: { \"192.168.100.3\": { host: \"10.100.0.3\" }, \"10.99.0.0/24\": { host: \"10.100.0.3\" } } }"),
    );
    lab.signal(d1, libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(5), || lab.log(d1).contains("SIGHUP: reloading")));
    lab.exec(&h3, &["ip", "addr", "add", "10.99.0.1/32", "dev", "lo"]);
    lab.assert_ping(&h1, "10.99.0.1");
    assert_eq!(server.hits("/hosts.json"), 2, "one fetch at start, one for the SIGHUP");
}

#[test]
fn a_peer_whose_address_changes_is_found_again() {
    let Some(mut lab) = Lab::new("a_peer_whose_address_changes_is_found_again") else { return };
    let hosts = lab.file(
        "hosts.json",
        r#"{ nodes : { "192.168.100.1" : { host : "10.100.0.1" }, "192.168.100.2" : { host : "peer.test" } } }"#,
    );
    let a = lab.host("a", "10.100.0.1/24");
    let old = lab.host("old", "10.100.0.2/24");
    let new = lab.host("new", "10.100.0.3/24");
    lab.etc_hosts(&a, "10.100.0.2 peer.test\n");
    let da = lab.udptun(
        &a,
        &[
            "--hosts-file",
            &hosts,
            "-d",
            "udptun",
            "--address",
            "192.168.100.1/24",
            "--resolve-interval",
            "0.5",
        ],
    );
    let first = lab.spoke(&old, 2, &[]);
    lab.wait_device(&a, "udptun");
    lab.assert_ping(&a, "192.168.100.2");

    // The peer moves to another address; DNS (here /etc/hosts) follows.
    lab.stop(first);
    lab.spoke(&new, 2, &[]);
    lab.etc_hosts(&a, "10.100.0.3 peer.test\n");
    lab.assert_ping(&a, "192.168.100.2");

    // The name stops resolving: the last address stays in use.
    lab.etc_hosts(&a, "# peer.test is gone\n");
    assert!(
        wait_until(Duration::from_secs(5), || lab.log(da).contains("does not resolve")
            && lab.log(da).contains("keeping 10.100.0.3:7777")),
        "{}",
        lab.log(da)
    );
    lab.assert_ping(&a, "192.168.100.2");
}

#[test]
fn privileges_are_dropped_and_reloads_still_work() {
    let Some(mut lab) = Lab::new("privileges_are_dropped_and_reloads_still_work") else { return };
    let hosts = lab.file("hosts.json", &common::hosts_doc(&[1]));
    let a = lab.host("h1", "10.100.0.1/24");
    let b = lab.host("h2", "10.100.0.2/24");
    let da = lab.udptun(
        &a,
        &[
            "--hosts-file",
            &hosts,
            "-d",
            "udptun",
            "--address",
            "192.168.100.1/24",
            "--user",
            "nobody",
            "--group",
            "nogroup",
        ],
    );
    lab.spoke(&b, 2, &[]);
    // Started: privileges dropped, capabilities cleared and the resolver threads running.
    lab.wait_started(da);
    assert!(lab.log(da).contains("now running as uid 65534"), "{}", lab.log(da));
    let status = common::daemon_status(&a);
    assert!(status.lines().any(|l| l.starts_with("Uid:\t65534\t65534\t65534")), "{status}");
    common::assert_no_capabilities(lab.pid(da));

    assert!(!lab.ping(&a, "192.168.100.2"));
    std::fs::write(&hosts, common::hosts_doc(&[1, 2])).unwrap();
    lab.signal(da, libc::SIGHUP);
    lab.assert_ping(&a, "192.168.100.2");

    // The hosts file is first read after the switch: one only root may read is refused.
    let secret = lab.file("secret.json", &common::hosts_doc(&[1]));
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let c = lab.host("h3", "10.100.0.3/24");
    let dc = lab.udptun(&c, &["--hosts-file", &secret, "-d", "udptun", "--user", "nobody"]);
    // EX_CONFIG: no restart makes it readable.
    assert_eq!(lab.wait_exit(dc, Duration::from_secs(10)), Some(78), "{}", lab.log(dc));
    assert!(lab.log(dc).contains("Permission denied"), "{}", lab.log(dc));
}

#[test]
fn a_config_file_sets_flags_and_the_command_line_wins() {
    let Some(mut lab) = Lab::new("a_config_file_sets_flags") else { return };
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    let config = lab.file(
        "udptun.toml",
        "# test config\nremote-address = \"10.100.0.2\"\ndevice = \"udptun\"\nmtu = 1300\n\
         address = [\"192.168.100.1/24\"]\nresolve-interval = 30\naccept-any-source = false\n",
    );
    lab.udptun(&a, &["--config", &config, "--mtu", "1280"]);
    lab.spoke(&b, 2, &[]);
    lab.wait_device(&a, "udptun");
    lab.assert_ping(&a, "192.168.100.2");
    let link = lab.exec(&a, &["ip", "link", "show", "udptun"]);
    assert!(link.contains("mtu 1280"), "the command line overrides the file: {link}");
}

/// A config file for h1 of the `[nodes]` test: its settings, then a node for each of `hosts`.
fn config_with_nodes(mtu: u16, hosts: &[u8]) -> String {
    let nodes: String = hosts
        .iter()
        .map(|i| format!("\n[nodes.\"192.168.100.{i}\"]\nhost = \"10.100.0.{i}\"\nport = 7777\n"))
        .collect();
    format!("device = \"udptun\"\naddress = [\"192.168.100.1/24\"]\nmtu = {mtu}\n{nodes}")
}

#[test]
fn nodes_in_the_config_file_reload_live_and_other_settings_need_a_restart() {
    let Some(mut lab) = Lab::new("nodes_in_the_config_file_reload_live") else { return };
    let config = lab.file("udptun.toml", &config_with_nodes(1400, &[1, 2]));
    let full = lab.file("full.json", &common::hosts_doc(&[1, 2, 3]));
    let h1 = lab.host("h1", "10.100.0.1/24");
    let d1 = lab.udptun(&h1, &["--config", &config]);
    let mut others = Vec::new();
    for i in 2..=3u8 {
        let ns = lab.host(&format!("h{i}"), &format!("10.100.0.{i}/24"));
        lab.udptun(
            &ns,
            &["--hosts-file", &full, "-d", "udptun", "--address", &format!("192.168.100.{i}/24")],
        );
        others.push(ns);
    }
    lab.wait_device(&h1, "udptun");
    lab.assert_ping(&h1, "192.168.100.2");
    lab.assert_ping(&others[1], "192.168.100.2");
    assert!(!lab.ping(&h1, "192.168.100.3"), "192.168.100.3 is not in h1's [nodes] yet");

    // A node added, one removed and the MTU changed (the file replaced whole, as a config
    // manager does): the peers change at once, the MTU only at a restart, which the log says.
    let replace = |text: String| {
        let staged = lab.file("udptun.toml.new", &text);
        std::fs::rename(staged, &config).unwrap();
    };
    replace(config_with_nodes(1300, &[1, 3]));
    lab.assert_ping(&h1, "192.168.100.3");
    assert!(!lab.ping(&h1, "192.168.100.2"), "192.168.100.2 left h1's [nodes]");
    let warning = format!("`mtu` changed in {config}: takes effect after a restart");
    assert!(wait_until(Duration::from_secs(5), || lab.log(d1).contains(&warning)), "{}", lab.log(d1));
    assert_eq!(lab.log(d1).matches("takes effect after a restart").count(), 1, "{}", lab.log(d1));
    let link = lab.exec(&h1, &["ip", "link", "show", "udptun"]);
    assert!(link.contains("mtu 1400"), "the MTU changes only at a restart: {link}");

    // A broken edit: logged with its line and key, the old table stays.
    replace(config_with_nodes(1300, &[1, 3]).replacen("port = 7777", "port = 77777", 1));
    assert!(wait_until(Duration::from_secs(5), || lab.log(d1).contains("keeping the previous table")));
    let error = format!("{config}: line 7 column 8: `192.168.100.1`: port must be 1-65535");
    assert!(lab.log(d1).contains(&error), "{}", lab.log(d1));
    lab.assert_ping(&h1, "192.168.100.3");

    // An edit the watcher cannot see (same length, same inode, the old modification time put
    // back): only SIGHUP applies it. The MTU is back as it was at start: no longer reported.
    let modified = std::fs::metadata(&config).unwrap().modified().unwrap();
    let back = config_with_nodes(1400, &[1, 2]).replacen("mtu = ", "mtu =  ", 1);
    assert_eq!(back.len(), std::fs::metadata(&config).unwrap().len() as usize);
    let mut file = std::fs::OpenOptions::new().write(true).open(&config).unwrap();
    file.write_all(back.as_bytes()).unwrap();
    file.set_modified(modified).unwrap();
    drop(file);
    thread::sleep(Duration::from_millis(2500)); // two rounds of the watcher
    assert!(!lab.ping(&h1, "192.168.100.2"), "the watcher saw an edit it cannot see");
    lab.signal(d1, libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(5), || lab.log(d1).contains("SIGHUP: reloading")));
    lab.assert_ping(&h1, "192.168.100.2");
    assert!(!lab.ping(&h1, "192.168.100.3"), "192.168.100.3 left h1's [nodes]");
    assert_eq!(lab.log(d1).matches("takes effect after a restart").count(), 1, "{}", lab.log(d1));
}

#[test]
fn after_dropping_privileges_fetches_lookups_and_metrics_keep_working() {
    let Some(mut lab) = Lab::new("after_dropping_privileges_fetches_and_lookups") else { return };
    let web = lab.host("web", "10.100.0.80/24");
    let server = common::HttpServer::start(common::listen_in(&web, "10.100.0.80:8080"), None);
    let document = |extra: &str| {
        format!(
            "{{ nodes: {{ \"192.168.100.1\": {{ host: \"10.100.0.1\" }}, \
             \"192.168.100.2\": {{ host: \"peer.test\" }} {extra} }} }}"
        )
    };
    server.set("/hosts.json", common::Reply::ok(&document("")));
    let a = lab.host("a", "10.100.0.1/24");
    let old = lab.host("old", "10.100.0.2/24");
    let new = lab.host("new", "10.100.0.3/24");
    lab.etc_hosts(&a, "10.100.0.2 peer.test\n");
    let metrics = "127.0.0.1:9103";
    // --user without --group: the user's own group.
    let da = lab.udptun(
        &a,
        &[
            "--hosts-url",
            "http://10.100.0.80:8080/hosts.json",
            "--hosts-url-interval",
            "0.3",
            "--resolve-interval",
            "0.3",
            "--user",
            "nobody",
            "-d",
            "udptun",
            "--address",
            "192.168.100.1/24",
            "--metrics-listen",
            metrics,
        ],
    );
    let first = lab.spoke(&old, 2, &["--keepalive", "0.2"]);
    lab.wait_device(&a, "udptun");
    assert!(wait_until(Duration::from_secs(5), || lab.log(da).contains("now running as uid 65534")));
    let status = common::daemon_status(&a);
    let nobody_gid = common::sh(&["id", "-g", "nobody"]);
    let gid_line = format!("Gid:\t{0}\t{0}\t{0}", nobody_gid.trim());
    assert!(status.lines().any(|l| l.starts_with(&gid_line)), "{gid_line} in {status}");
    lab.assert_ping(&a, "192.168.100.2");
    lab.wait_metrics(&a, metrics);
    let scrape = |lab: &Lab, series: &str| lab.scrape(&a, metrics, series);
    assert_eq!(scrape(&lab, "udptun_table_entries"), 2);
    assert!(wait_until(Duration::from_secs(5), || scrape(&lab, "udptun_keepalives_received_total") >= 3));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let stamp = scrape(&lab, "udptun_hosts_last_success_timestamp_seconds");
    assert!(stamp.abs_diff(now) < 30, "last success {stamp}, now {now}");

    // Re-resolution as uid 65534: the peer moves, its name follows.
    lab.stop(first);
    lab.spoke(&new, 2, &[]);
    lab.etc_hosts(&a, "10.100.0.3 peer.test\n");
    lab.assert_ping(&a, "192.168.100.2");

    // Fetching as uid 65534: a failure is counted, a new document loads and is counted.
    let (loads, failures) =
        (scrape(&lab, "udptun_hosts_loads_total"), scrape(&lab, "udptun_hosts_load_failures_total"));
    server.set("/hosts.json", common::Reply::status(500));
    assert!(
        wait_until(Duration::from_secs(5), || scrape(&lab, "udptun_hosts_load_failures_total") > failures)
    );
    server.set("/hosts.json", common::Reply::ok(&document(", \"192.168.100.4\": { host: \"10.100.0.4\" }")));
    assert!(
        wait_until(Duration::from_secs(5), || scrape(&lab, "udptun_table_entries") == 3),
        "{}",
        lab.log(da)
    );
    assert!(scrape(&lab, "udptun_hosts_loads_total") > loads);
}
