//! The original udptun's use cases, run with the real binary in network namespaces.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{HttpServer, Lab, Reply, TestPki, hosts_doc, in_netns, listen_in, wait_until};

/// Two hosts on one bridge, each running a one-to-one udptun towards the other.
fn one_to_one(lab: &mut Lab, extra: &[&str]) -> (String, String, usize, usize) {
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    let mut args_a = vec!["-A", "10.100.0.2", "-d", "udptun"];
    let mut args_b = vec!["-A", "10.100.0.1", "-d", "udptun"];
    args_a.extend_from_slice(extra);
    args_b.extend_from_slice(extra);
    let da = lab.udptun(&a, &args_a);
    let db = lab.udptun(&b, &args_b);
    lab.tunnel_up(&a, "udptun", "192.168.100.1/24");
    lab.tunnel_up(&b, "udptun", "192.168.100.2/24");
    // A signal before the start-up line ends a daemon at once, without its summary.
    lab.wait_started(da);
    lab.wait_started(db);
    (a, b, da, db)
}

#[test]
fn one_to_one_tunnel_carries_ping_both_ways() {
    let Some(mut lab) = Lab::new("one_to_one_tunnel_carries_ping_both_ways") else { return };
    let (a, b, da, _) = one_to_one(&mut lab, &[]);
    lab.assert_ping(&a, "192.168.100.2");
    lab.assert_ping(&b, "192.168.100.1");
    // Larger than the tunnel MTU: the inner stack fragments, every fragment crosses.
    let big = lab.output(&a, &["ping", "-c", "2", "-s", "4000", "-W", "2", "192.168.100.2"]);
    assert!(String::from_utf8_lossy(&big.stdout).contains(" 0% packet loss"), "{}", lab.all_logs());
    let log = lab.stop(da);
    assert!(log.contains("device udptun"), "start-up line names the device: {log}");
    assert!(log.contains("listening on 0.0.0.0:7777"), "start-up line names the address: {log}");
}

#[test]
fn device_goes_away_with_the_process() {
    let Some(mut lab) = Lab::new("device_goes_away_with_the_process") else { return };
    let (a, _, da, _) = one_to_one(&mut lab, &[]);
    let log = lab.stop(da);
    assert!(log.contains("shutting down"), "{log}");
    let gone = wait_until(Duration::from_secs(2), || {
        !lab.output(&a, &["ip", "link", "show", "udptun"]).status.success()
    });
    assert!(gone, "the device outlived the process");
}

const THREE_HOSTS: &str = r#"{ nodes : {
    "192.168.100.1" : { "host" : "10.100.0.1" },
    "192.168.100.2" : { "host" : "10.100.0.2", "port" : 7777 },
    "192.168.100.3" : { host : "10.100.0.3", port : 7777 } } }"#;

#[test]
fn three_hosts_with_a_hosts_file_reach_every_pair() {
    let Some(mut lab) = Lab::new("three_hosts_with_a_hosts_file_reach_every_pair") else { return };
    let hosts = lab.file("hosts.json", THREE_HOSTS);
    let mut namespaces = Vec::new();
    for i in 1..=3 {
        let ns = lab.host(&format!("h{i}"), &format!("10.100.0.{i}/24"));
        lab.udptun(&ns, &["--hosts-file", &hosts, "-d", "udptun"]);
        namespaces.push(ns);
    }
    for (i, ns) in namespaces.iter().enumerate() {
        lab.tunnel_up(ns, "udptun", &format!("192.168.100.{}/24", i + 1));
    }
    for (i, ns) in namespaces.iter().enumerate() {
        for j in 1..=3 {
            if j != i + 1 {
                lab.assert_ping(ns, &format!("192.168.100.{j}"));
            }
        }
    }
}

#[test]
fn unmapped_destination_answers_destination_host_unreachable() {
    let Some(mut lab) = Lab::new("unmapped_destination_answers_destination_host_unreachable") else { return };
    let hosts = lab.file("hosts.json", THREE_HOSTS);
    let ns = lab.host("h1", "10.100.0.1/24");
    let daemon = lab.udptun(&ns, &["--hosts-file", &hosts, "-d", "udptun"]);
    lab.tunnel_up(&ns, "udptun", "192.168.100.1/24");
    lab.wait_started(daemon);
    let out = lab.output(&ns, &["ping", "-c", "2", "-i", "0.2", "-W", "1", "192.168.100.9"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("From 192.168.100.9 icmp_seq=1 Destination Host Unreachable"), "{stdout}");
    let log = lab.stop(daemon);
    assert!(log.contains("dropped no_mapping=2"), "{log}");
}

#[test]
fn a_flood_to_an_unmapped_address_draws_icmp_errors_at_the_rate_limit_only() {
    let _timed = common::measures_time();
    let Some(mut lab) = Lab::new("a_flood_to_an_unmapped_address_draws_icmp_errors") else { return };
    let hosts = lab.file("hosts.json", THREE_HOSTS);
    let ns = lab.host("h1", "10.100.0.1/24");
    let metrics = "127.0.0.1:9100";
    lab.udptun(&ns, &["--hosts-file", &hosts, "-d", "udptun", "--metrics-listen", metrics]);
    lab.tunnel_up(&ns, "udptun", "192.168.100.1/24");
    // Room for 4 s of the flood: a daemon held off the CPU by a sibling test for more than 100
    // ms would otherwise lose datagrams in the TUN's queue (500 by default), not in udptun.
    lab.exec(&ns, &["ip", "link", "set", "udptun", "txqueuelen", "20000"]);
    lab.wait_metrics(&ns, metrics);
    let no_mapping = "udptun_dropped_packets_total{reason=\"no_mapping\"}";
    let suppressed = "udptun_icmp_errors_suppressed_total";
    let count = |series: &str| lab.scrape(&ns, metrics, series);
    // With no peer traffic, all udptun writes into the TUN (its rx) are ICMP errors.
    let written = || lab.device_counter(&ns, "udptun", "rx_packets");
    let (no_mapping_before, suppressed_before, written_before) =
        (count(no_mapping), count(suppressed), written());
    let routed_before = lab.device_counter(&ns, "udptun", "tx_packets");

    // 5,000 UDP datagrams to an unmapped address, 5 every millisecond for a second.
    let start = Instant::now();
    in_netns(&ns, move || {
        let socket = UdpSocket::bind("192.168.100.1:0").unwrap();
        for ms in 1..=1000 {
            for _ in 0..5 {
                socket.send_to(b"flood", "192.168.100.9:9").unwrap();
            }
            let due = start + Duration::from_millis(ms);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    });
    let flood = start.elapsed();
    // What udptun took from the TUN, and what of it it counted as unmapped.
    let routed = || lab.device_counter(&ns, "udptun", "tx_packets") - routed_before;
    let offered = || count(no_mapping) - no_mapping_before;
    let settled = wait_until(Duration::from_secs(5), || offered() == routed());
    // udptun handled the whole flood within this time, so no more tokens than this were due.
    let window = start.elapsed();
    assert!(
        settled && offered() >= 4900,
        "udptun took {} of the 5000 datagrams, {} unmapped",
        routed(),
        offered()
    );
    let replies = written() - written_before;
    let held_back = count(suppressed) - suppressed_before;
    let most = 50 + (1000.0 * window.as_secs_f64()).ceil() as u64;
    println!("flood {flood:?}, handled within {window:?}: {replies} ICMP errors, {held_back} held back");
    assert!(replies <= most, "{replies} ICMP errors in {window:?} (at most {most})");
    assert!(
        replies >= 500,
        "{replies} ICMP errors in {flood:?}: the limit should let about 1000 a second through"
    );
    assert_eq!(replies + held_back, offered(), "each datagram got an error or was counted as held back");

    // A moment later, a ping to an unmapped address gets its answer again.
    std::thread::sleep(Duration::from_millis(100));
    let out = lab.output(&ns, &["ping", "-c", "1", "-W", "1", "192.168.100.9"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("From 192.168.100.9 icmp_seq=1 Destination Host Unreachable"), "{stdout}");
}

#[test]
fn gateway_joins_a_subnet_behind_a_router() {
    let Some(mut lab) = Lab::new("gateway_joins_a_subnet_behind_a_router") else { return };
    // Host a and router gw are on the internet (the bridge); lan sits behind gw on 10.77.0.0/24.
    let a = lab.host("a", "10.100.0.1/24");
    let gw = lab.host("gw", "10.100.0.2/24");
    let lan = lab.host_behind(&gw, "lan", "10.77.0");

    lab.udptun(&a, &["-A", "10.100.0.2", "-d", "udptun"]);
    lab.udptun(&gw, &["-A", "10.100.0.1", "-d", "udptun"]);
    lab.tunnel_up(&a, "udptun", "192.168.100.1/24");
    lab.tunnel_up(&gw, "udptun", "192.168.100.2/24");
    lab.exec(&a, &["ip", "route", "add", "10.77.0.0/24", "dev", "udptun"]);

    lab.assert_ping(&a, "10.77.0.2");
    lab.assert_ping(&lan, "192.168.100.1");
}

/// The kernel's packet counters of `dev` in `ns` (rx/tx packets, bytes, drops and errors).
fn device_counters(lab: &Lab, ns: &str, dev: &str) -> Vec<(&'static str, u64)> {
    ["rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped", "rx_errors", "tx_errors"]
        .into_iter()
        .map(|name| (name, lab.device_counter(ns, dev, name)))
        .collect()
}

#[test]
fn malformed_datagrams_are_dropped_and_counted_and_the_tunnel_keeps_working() {
    let Some(mut lab) = Lab::new("malformed_datagrams_are_dropped_and_counted") else { return };
    let metrics = "127.0.0.1:9100";
    let (a, b, _, db) = one_to_one(&mut lab, &["--metrics-listen", metrics]);
    lab.assert_ping(&a, "192.168.100.2");
    lab.wait_metrics(&b, metrics);
    let malformed = "udptun_dropped_packets_total{reason=\"malformed\"}";
    let keepalives = "udptun_keepalives_received_total";
    let received = "udptun_packets_total{direction=\"rx\"}";
    let count = |series: &str| lab.scrape(&b, metrics, series);
    let (malformed_before, received_before) = (count(malformed), count(received));
    assert_eq!(count(keepalives), 0, "a one-to-one tunnel without --keepalive sends none");
    // The far TUN is quiet now (the ping is over, IPv6 is off): nothing may move it until the
    // next ping, least of all the junk.
    let tun_before = device_counters(&lab, &b, "udptun");

    // What an inner packet from a looks like, so that each class is wrong in one way only.
    let mut bad_checksum = common::ipv4_packet([192, 168, 100, 1], [192, 168, 100, 2], 17, &[0; 8]);
    bad_checksum[10] ^= 0xff;
    let mut v6_wrong_length = vec![0x60, 0, 0, 0, 0, 40, 17, 64];
    v6_wrong_length.resize(40 + 8, 0);
    let mut noise = vec![0u8; 200];
    common::Stream(0x9e37_79b9_7f4a_7c15).fill(&mut noise);
    noise[0] = 0x91; // IP version 9
    let classes: Vec<(&str, Vec<u8>)> = vec![
        ("empty (a keepalive)", vec![]),
        ("IPv4, shorter than its header", vec![0x45; 10]),
        ("IPv4, total length not the datagram's", vec![0x45; 100]),
        ("IPv4, header length 60 > 20 bytes", vec![0x4f; 20]),
        ("IPv4, bad header checksum", bad_checksum),
        ("IPv6, shorter than its header", vec![0x60; 30]),
        ("IPv6, payload length not the datagram's", v6_wrong_length),
        ("noise (IP version 9)", noise),
    ];
    const EACH: u64 = 300;
    let (mut expected_malformed, mut expected_keepalives) = (malformed_before, 0);
    for (what, junk) in classes {
        // From a's underlay address (so they pass any source check) to b's tunnel port.
        let datagram = junk.clone();
        in_netns(&a, move || {
            let socket = UdpSocket::bind("10.100.0.1:0").unwrap();
            for _ in 0..EACH {
                socket.send_to(&datagram, "10.100.0.2:7777").unwrap();
            }
        });
        if junk.is_empty() {
            expected_keepalives += EACH;
        } else {
            expected_malformed += EACH;
        }
        let (series, expected) =
            if junk.is_empty() { (keepalives, expected_keepalives) } else { (malformed, expected_malformed) };
        wait_until(Duration::from_secs(5), || count(series) >= expected);
        // Were a datagram lost on the way, the UDP counters of b would say so.
        let snmp = lab.exec(&b, &["cat", "/proc/net/snmp"]);
        let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
        assert_eq!(count(malformed), expected_malformed, "{what}: malformed counter (UDP: {udp:?})");
        assert_eq!(count(keepalives), expected_keepalives, "{what}: keepalive counter (UDP: {udp:?})");
        assert_eq!(count(received), received_before, "{what}: a datagram was taken for a packet");
    }
    assert_eq!(device_counters(&lab, &b, "udptun"), tun_before, "junk reached the far TUN");

    lab.assert_ping(&a, "192.168.100.2");
    lab.assert_ping(&b, "192.168.100.1");
    assert!(count(received) > received_before, "the pings after the junk crossed");
    let log = lab.stop(db);
    let dropped = format!("dropped malformed={expected_malformed},");
    assert!(log.contains(&dropped), "the summary says `{dropped}`: {log}");
    let warnings = log.matches("dropped a datagram from").count();
    assert!((1..=20).contains(&warnings), "{warnings} log lines for {expected_malformed} bad datagrams");
}

#[test]
fn hosts_url_is_refreshed_and_redirects_are_followed() {
    let Some(mut lab) = Lab::new("hosts_url_is_refreshed_and_redirects_are_followed") else { return };
    let server_ns = lab.host("web", "10.100.0.80/24");
    let server = HttpServer::start(listen_in(&server_ns, "10.100.0.80:8080"), None);
    // h2 fetches the same document from a path of its own, so that its requests can be told
    // from the others'.
    let serve = |reply: Reply| {
        server.set("/hosts.json", reply.clone());
        server.set("/h2.json", reply);
    };
    serve(Reply::ok(&hosts_doc(&[1, 2])));
    server.set("/old", Reply::redirect("/hosts.json"));

    let metrics = "127.0.0.1:9100";
    let (mut namespaces, mut daemons) = (Vec::new(), Vec::new());
    for i in 1..=3u8 {
        let ns = lab.host(&format!("h{i}"), &format!("10.100.0.{i}/24"));
        let url = match i {
            1 => "http://10.100.0.80:8080/old",
            2 => "http://10.100.0.80:8080/h2.json",
            _ => "http://10.100.0.80:8080/hosts.json",
        };
        let args =
            ["--hosts-url", url, "--hosts-url-interval", "0.2", "-d", "udptun", "--metrics-listen", metrics];
        daemons.push(lab.udptun(&ns, &args));
        namespaces.push(ns);
    }
    for (i, ns) in namespaces.iter().enumerate() {
        lab.tunnel_up(ns, "udptun", &format!("192.168.100.{}/24", i + 1));
    }
    lab.assert_ping(&namespaces[0], "192.168.100.2");
    assert!(server.hits("/old") >= 1, "the redirect was not used");
    assert!(!lab.ping(&namespaces[0], "192.168.100.3"), "host 3 is not in the document yet");

    serve(Reply::ok(&hosts_doc(&[1, 2, 3])));
    lab.assert_ping(&namespaces[0], "192.168.100.3");
    lab.assert_ping(&namespaces[2], "192.168.100.1");

    // Validators go back to the server: Last-Modified as If-Modified-Since, ETag as
    // If-None-Match, each with the value the last 200 carried.
    let h2 = namespaces[1].clone();
    lab.wait_metrics(&h2, metrics);
    let counter = |series: &str| lab.scrape(&h2, metrics, series);
    let h2_requests = || server.requests("/h2.json");
    let last_requests = || -> Vec<String> { h2_requests().into_iter().rev().take(3).collect() };
    let first_request_with = |needle: &str| -> Option<String> {
        let needle = needle.to_lowercase();
        let mut found = None;
        wait_until(Duration::from_secs(5), || {
            found = h2_requests().into_iter().find(|r| r.contains(&needle));
            found.is_some()
        });
        found
    };
    let loads_at_first = counter("udptun_hosts_loads_total");
    let date = "Wed, 21 Oct 2015 07:28:00 GMT";
    let mut dated = Reply::ok(&hosts_doc(&[1, 2, 3]));
    dated.headers.push(("Last-Modified".into(), date.into()));
    serve(dated);
    let request = first_request_with(&format!("If-Modified-Since: {date}\r\n"))
        .unwrap_or_else(|| panic!("no If-Modified-Since: {date} sent: {:?}", last_requests()));
    assert!(!request.contains("if-none-match"), "no ETag was given, yet: {request}");

    let later = "Thu, 22 Oct 2015 08:00:00 GMT";
    let mut tagged = Reply::ok(&hosts_doc(&[1, 2, 3]));
    tagged.headers.push(("ETag".into(), "\"v7\"".into()));
    tagged.headers.push(("Last-Modified".into(), later.into()));
    serve(tagged);
    let request = first_request_with("If-None-Match: \"v7\"\r\n")
        .unwrap_or_else(|| panic!("no If-None-Match: \"v7\" sent: {:?}", last_requests()));
    assert!(request.contains(&format!("if-modified-since: {later}\r\n").to_lowercase()), "{request}");
    // The test server ignores validators: every 200 so far was a load, and the counter saw them.
    assert!(counter("udptun_hosts_loads_total") > loads_at_first, "the loads counter does not count loads");

    // A 304 (to requests that carry the validators) leaves the table as it is: no load, no failure.
    serve(Reply::status(304));
    let seen = server.hits("/h2.json");
    // h2 fetches one request at a time: once it has sent request seen+2 it is done with the
    // replies to all before it, the last 200's load included, and seen+1 got a 304.
    assert!(wait_until(Duration::from_secs(5), || server.hits("/h2.json") >= seen + 2));
    let (loads, failures) =
        (counter("udptun_hosts_loads_total"), counter("udptun_hosts_load_failures_total"));
    // Four more 304s, each handled before the request after it was sent.
    assert!(wait_until(Duration::from_secs(5), || server.hits("/h2.json") >= seen + 6));
    assert_eq!(counter("udptun_hosts_loads_total"), loads, "a 304 must not reload:\n{}", lab.log(daemons[1]));
    assert_eq!(counter("udptun_hosts_load_failures_total"), failures, "a 304 is no error");
    assert_eq!(failures, 0, "no fetch failed:\n{}", lab.log(daemons[1]));
    let answered_304 = &h2_requests()[seen..];
    assert!(answered_304.iter().all(|r| r.contains("if-none-match: \"v7\"\r\n")), "{answered_304:?}");
    lab.assert_ping(&namespaces[1], "192.168.100.3");
}

#[test]
fn hosts_url_over_https_trusts_the_given_ca_and_refuses_other_names() {
    let Some(mut lab) = Lab::new("hosts_url_over_https") else { return };
    let server_ns = lab.host("web", "10.100.0.80/24");
    let good = TestPki::new(&["hosts.test"]);
    let server = HttpServer::start(listen_in(&server_ns, "10.100.0.80:8443"), Some(good.server.clone()));
    server.set("/hosts.json", Reply::ok(&hosts_doc(&[1, 2])));
    let ca = lab.file("ca.pem", &good.ca_pem);

    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    for ns in [&a, &b] {
        lab.etc_hosts(ns, "10.100.0.80 hosts.test\n10.100.0.80 other.test\n");
    }
    let url = "https://hosts.test:8443/hosts.json";
    lab.udptun(&a, &["--hosts-url", url, "--ca-file", &ca, "-d", "udptun"]);
    // b trusts the same CA through a directory (--ca-path), which also holds a non-certificate.
    let ca_dir = lab.dir.join("ca.d");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::write(ca_dir.join("test-ca.pem"), &good.ca_pem).unwrap();
    std::fs::write(ca_dir.join("README"), "not a certificate").unwrap();
    lab.udptun(&b, &["--hosts-url", url, "--ca-path", ca_dir.to_str().unwrap(), "-d", "udptun"]);
    lab.tunnel_up(&a, "udptun", "192.168.100.1/24");
    lab.tunnel_up(&b, "udptun", "192.168.100.2/24");
    lab.assert_ping(&a, "192.168.100.2");
    lab.assert_ping(&b, "192.168.100.1");

    // Each refused daemon runs alone in a fresh namespace (its port and device name free), so
    // the certificate is the only thing that can stop it.
    // A CA of another name, and one that bears the right CA's name but not its key.
    let stranger = lab.file("stranger.pem", &common::test_ca("another test CA").2.pem());
    let impostor = lab.file("impostor.pem", &TestPki::new(&["hosts.test"]).ca_pem);
    let refusals = [
        // The same CA, but the URL names a host the certificate is not for.
        (
            "c",
            "10.100.0.3/24",
            "https://other.test:8443/hosts.json",
            ca.as_str(),
            "invalid peer certificate: certificate not valid for name \"other.test\"; \
             certificate is only valid for DnsName(\"hosts.test\")",
        ),
        // CAs that did not sign the server's certificate.
        ("d", "10.100.0.4/24", url, stranger.as_str(), "invalid peer certificate: UnknownIssuer"),
        ("e", "10.100.0.5/24", url, impostor.as_str(), "invalid peer certificate: BadSignature"),
    ];
    for (host, cidr, url, ca_file, reason) in refusals {
        let ns = lab.host(host, cidr);
        lab.etc_hosts(&ns, "10.100.0.80 hosts.test\n10.100.0.80 other.test\n");
        let refused = lab.udptun(&ns, &["--hosts-url", url, "--ca-file", ca_file, "-d", "udptun"]);
        // EX_TEMPFAIL: the server's certificate can change without touching this node.
        assert_eq!(lab.wait_exit(refused, Duration::from_secs(10)), Some(75), "{}", lab.log(refused));
        let log = lab.log(refused);
        let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert!(
            matches!(errors[..], [line] if line.contains(&format!(" ERROR {url}: ")) && line.contains(reason)),
            "{url} with {ca_file}: the one error is not `{reason}`:\n{log}"
        );
    }
}

/// Running without root with CAP_NET_ADMIN alone works, and set-up is the only time it is held.
#[test]
fn runs_as_an_unprivileged_user_with_cap_net_admin_alone() {
    let Some(mut lab) = Lab::new("runs_with_cap_net_admin_alone") else { return };
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    // Distributions make /dev/net/tun world-accessible (0666); this machine may not, so give the
    // daemon its own node with the usual mode over /dev/net/tun in a private mount namespace.
    let node = lab.dir.join("tun");
    let path = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(10, 200)) }, 0);
    std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let bind_mount = format!("mount --bind {} /dev/net/tun && exec \"$@\"", node.display());
    let unprivileged = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &bind_mount,
        "sh",
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all,+net_admin",
        "--ambient-caps=-all,+net_admin",
        "--bounding-set=-all,+net_admin",
        common::UDPTUN,
    ];
    let da = lab.spawn(&a, &unprivileged, &["-A", "10.100.0.2", "-d", "udptun"]);
    lab.udptun(&b, &["-A", "10.100.0.1", "-d", "udptun"]);
    lab.tunnel_up(&a, "udptun", "192.168.100.1/24");
    lab.tunnel_up(&b, "udptun", "192.168.100.2/24");
    lab.assert_ping(&b, "192.168.100.1");
    lab.wait_started(da);
    let status = common::daemon_status(&a);
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.contains("65534")), "{status}");
    assert!(lab.log(da).contains("device udptun"), "{}", lab.log(da));
    // Even CAP_NET_ADMIN is given up once the device is set up, by every thread.
    common::assert_no_capabilities(lab.pid(da));
}
