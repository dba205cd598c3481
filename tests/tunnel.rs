//! The original udptun's use cases, run with the real binary in network namespaces.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

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
    let out = lab.output(&ns, &["ping", "-c", "2", "-i", "0.2", "-W", "1", "192.168.100.9"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("From 192.168.100.9 icmp_seq=1 Destination Host Unreachable"), "{stdout}");
    let log = lab.stop(daemon);
    assert!(log.contains("dropped no_mapping=2"), "{log}");
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

#[test]
fn malformed_datagrams_are_dropped_and_counted_and_the_tunnel_keeps_working() {
    let Some(mut lab) = Lab::new("malformed_datagrams_are_dropped_and_counted") else { return };
    let (a, b, _, db) = one_to_one(&mut lab, &[]);
    lab.assert_ping(&a, "192.168.100.2");
    // From a's underlay address (so they pass any source check) to b's tunnel port.
    let sent = in_netns(&a, || {
        let socket = UdpSocket::bind("10.100.0.1:0").unwrap();
        let mut sent = 0u64;
        for i in 0..3000u32 {
            let junk: Vec<u8> = match i % 6 {
                0 => vec![],                                    // empty
                1 => vec![0x45; 10],                            // IPv4, too short
                2 => vec![0x45; 100],                           // IPv4, wrong total length
                3 => vec![0x60; 30],                            // IPv6, too short
                4 => (0..200).map(|n| (n * i) as u8).collect(), // noise
                _ => vec![0x4f; 20],                            // header length 60 > 20
            };
            socket.send_to(&junk, "10.100.0.2:7777").unwrap();
            sent += 1;
        }
        sent
    });
    lab.assert_ping(&a, "192.168.100.2");
    lab.assert_ping(&b, "192.168.100.1");
    let log = lab.stop(db);
    let malformed: u64 = log
        .split("dropped malformed=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no malformed counter in {log}"));
    assert!(malformed > sent / 2 && malformed <= sent, "malformed={malformed} of {sent}");
    let warnings = log.matches("dropped a datagram from").count();
    assert!((1..=20).contains(&warnings), "{warnings} log lines for {sent} bad datagrams");
}

#[test]
fn hosts_url_is_refreshed_and_redirects_are_followed() {
    let Some(mut lab) = Lab::new("hosts_url_is_refreshed_and_redirects_are_followed") else { return };
    let server_ns = lab.host("web", "10.100.0.80/24");
    let server = HttpServer::start(listen_in(&server_ns, "10.100.0.80:8080"), None);
    server.set("/hosts.json", Reply::ok(&hosts_doc(&[1, 2])));
    server.set("/old", Reply::redirect("/hosts.json"));

    let (mut namespaces, mut daemons) = (Vec::new(), Vec::new());
    for i in 1..=3u8 {
        let ns = lab.host(&format!("h{i}"), &format!("10.100.0.{i}/24"));
        let url = if i == 1 { "http://10.100.0.80:8080/old" } else { "http://10.100.0.80:8080/hosts.json" };
        daemons.push(lab.udptun(&ns, &["--hosts-url", url, "--hosts-url-interval", "0.2", "-d", "udptun"]));
        namespaces.push(ns);
    }
    for (i, ns) in namespaces.iter().enumerate() {
        lab.tunnel_up(ns, "udptun", &format!("192.168.100.{}/24", i + 1));
    }
    lab.assert_ping(&namespaces[0], "192.168.100.2");
    assert!(server.hits("/old") >= 1, "the redirect was not used");
    assert!(!lab.ping(&namespaces[0], "192.168.100.3"), "host 3 is not in the document yet");

    server.set("/hosts.json", Reply::ok(&hosts_doc(&[1, 2, 3])));
    lab.assert_ping(&namespaces[0], "192.168.100.3");
    lab.assert_ping(&namespaces[2], "192.168.100.1");

    // Validators go back to the server, and a 304 leaves the table as it is.
    let mut tagged = Reply::ok(&hosts_doc(&[1, 2, 3]));
    tagged.headers.push(("ETag".into(), "\"v7\"".into()));
    server.set("/hosts.json", tagged);
    let revalidated = || server.requests_with("/hosts.json", "If-None-Match: \"v7\"");
    assert!(wait_until(Duration::from_secs(5), || revalidated() > 0), "no If-None-Match sent");
    let loads_before = lab.log(daemons[1]).matches("loaded:").count();
    server.set("/hosts.json", Reply::status(304));
    let seen = revalidated();
    assert!(wait_until(Duration::from_secs(5), || revalidated() > seen + 3));
    let log = lab.log(daemons[1]);
    assert_eq!(log.matches("loaded:").count(), loads_before, "a 304 must not reload: {log}");
    assert!(!log.contains("keeping the previous table"), "a 304 is no error: {log}");
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

    // The same CA, but the URL names a host the certificate is not for.
    let refused =
        lab.udptun(&a, &["--hosts-url", "https://other.test:8443/hosts.json", "--ca-file", &ca, "-d", "x"]);
    assert_eq!(lab.wait_exit(refused, Duration::from_secs(10)), Some(1));
    let log = lab.log(refused);
    assert!(log.contains("other.test") && log.contains("certificate"), "{log}");

    // A CA that did not sign the server's certificate.
    let stranger = lab.file("stranger.pem", &TestPki::new(&["hosts.test"]).ca_pem);
    let untrusted = lab.udptun(&a, &["--hosts-url", url, "--ca-file", &stranger, "-d", "y"]);
    assert_eq!(lab.wait_exit(untrusted, Duration::from_secs(10)), Some(1));
    assert!(lab.log(untrusted).contains("certificate"), "{}", lab.log(untrusted));
}

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
    let status = common::daemon_status(&a);
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.contains("65534")), "{status}");
    assert!(status.contains("CapEff:\t0000000000001000"), "only CAP_NET_ADMIN: {status}");
    assert!(lab.log(da).contains("device udptun"), "{}", lab.log(da));
}
