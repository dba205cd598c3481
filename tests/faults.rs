//! Faults: a peer that restarts, a lossy underlay, a device or an address that vanishes,
//! SIGTERM under load, and a second instance on the same device or port.

mod common;

use std::time::{Duration, Instant};

use common::{Lab, transfer, wait_until};

#[test]
fn traffic_resumes_within_a_second_of_the_peer_coming_back() {
    let Some(mut lab) = Lab::new("traffic_resumes_when_the_peer_comes_back") else { return };
    let _timed = common::measures_time();
    let (a, b, _, db) = lab.pair(&[]);
    lab.signal(db, libc::SIGKILL);
    let dead = wait_until(Duration::from_secs(10), || {
        !lab.output(&b, &["ip", "link", "show", "udptun"]).status.success()
    });
    assert!(dead, "the killed peer's device is still there");
    assert!(!lab.ping(&a, "192.168.100.2"));

    let restarted = lab.spoke(&b, 2, &[]);
    // Measured from the moment the restarted peer says it is listening (device set up).
    lab.wait_started(restarted);
    let back = Instant::now();
    let resumed = wait_until(Duration::from_secs(1), || {
        lab.output(&a, &["ping", "-c", "1", "-W", "0.2", "192.168.100.2"]).status.success()
    });
    assert!(resumed, "no reply within 1 s of the peer being back ({:?})", back.elapsed());
}

#[test]
fn a_hundred_megabytes_cross_an_underlay_that_drops_five_percent() {
    let Some(mut lab) = Lab::new("a_hundred_megabytes_cross_a_lossy_underlay") else { return };
    let _load = common::loads_the_machine();
    let (a, b, _, db) = lab.pair(&[]);
    let rules = lab.file(
        "loss.nft",
        "table inet loss {\n chain input {\n  type filter hook input priority 0;\n  \
         udp dport 7777 numgen random mod 100 < 5 counter drop\n }\n}\n",
    );
    lab.exec(&b, &["nft", "-f", &rules]);
    lab.exec(&a, &["nft", "-f", &rules]);
    assert_eq!(transfer(&b, &a, "192.168.100.2:5001", 100_000_000), 100_000_000);
    let dropped = lab.exec(&b, &["nft", "list", "table", "inet", "loss"]);
    // The rule sees what GRO merged on the underlay (one datagram or many), so count bytes:
    // 5 % of 100 MB, and not less than 1 % whatever the merging.
    let bytes: u64 = dropped
        .split(" bytes ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(bytes > 1_000_000, "the underlay dropped only {bytes} bytes:\n{dropped}");
    let log = lab.stop(db);
    assert!(log.contains("dropped malformed=0"), "{log}");
}

#[test]
fn a_deleted_device_is_a_clear_error_and_an_exit() {
    let Some(mut lab) = Lab::new("a_deleted_device_is_a_clear_error") else { return };
    let (a, _, da, _) = lab.pair(&[]);
    lab.exec(&a, &["ip", "link", "del", "udptun"]);
    assert_eq!(lab.wait_exit(da, Duration::from_secs(10)), Some(1), "{}", lab.log(da));
    assert!(lab.log(da).contains("the TUN device is gone"), "{}", lab.log(da));
}

#[test]
fn a_vanished_local_address_is_a_clear_error_and_an_exit() {
    let Some(mut lab) = Lab::new("a_vanished_local_address_is_a_clear_error") else { return };
    let a = lab.host("a", "10.100.0.1/24");
    let da = lab.udptun(&a, &["-a", "10.100.0.1", "-A", "10.100.0.2", "-d", "udptun"]);
    lab.wait_device(&a, "udptun");
    lab.exec(&a, &["ip", "addr", "del", "10.100.0.1/24", "dev", "eth0"]);
    assert_eq!(lab.wait_exit(da, Duration::from_secs(10)), Some(1), "{}", lab.log(da));
    assert!(lab.log(da).contains("the local address 10.100.0.1 is gone"), "{}", lab.log(da));
}

#[test]
fn sigterm_under_load_exits_within_a_second_and_removes_the_device() {
    let Some(mut lab) = Lab::new("sigterm_under_load_exits_within_a_second") else { return };
    let _timed = common::measures_time();
    let (a, b, da, _) = lab.pair(&[]);
    let (a2, b2) = (a.clone(), b.clone());
    // Load that outlives the daemon: the transfer fails when the tunnel goes, so ignore it.
    let load = std::thread::spawn(move || {
        let _ = std::panic::catch_unwind(|| transfer(&b2, &a2, "192.168.100.2:5001", 50_000_000_000));
    });
    // Under load means bytes are crossing the device right now.
    let sent = || lab.device_counter(&a, "udptun", "tx_bytes");
    assert!(wait_until(Duration::from_secs(20), || sent() > 20_000_000), "the transfer did not start");
    let before = sent();
    assert!(wait_until(Duration::from_secs(5), || sent() > before + 1_000_000), "the transfer stalled");

    let start = Instant::now();
    lab.signal(da, libc::SIGTERM);
    let code = lab.wait_exit(da, Duration::from_secs(5));
    let took = start.elapsed();
    assert_eq!(code, Some(0), "no clean exit ({took:?}):\n{}", lab.log(da));
    assert!(took < Duration::from_secs(1), "exit took {took:?}");
    let gone = wait_until(Duration::from_secs(5), || {
        !lab.output(&a, &["ip", "link", "show", "udptun"]).status.success()
    });
    assert!(gone, "the device outlived the process");
    // The transfer's threads end with errors once the namespaces are gone; nobody waits for them.
    drop(load);
}

#[test]
fn a_second_instance_on_the_same_device_or_port_says_so_and_exits() {
    let Some(mut lab) = Lab::new("a_second_instance_says_so") else { return };
    let (a, _, _, _) = lab.pair(&[]);
    let same_device = lab.udptun(&a, &["-A", "10.100.0.2", "-p", "7778", "-d", "udptun"]);
    assert_eq!(lab.wait_exit(same_device, Duration::from_secs(5)), Some(1));
    assert!(lab.log(same_device).contains("device udptun already exists"), "{}", lab.log(same_device));
    let same_port = lab.udptun(&a, &["-A", "10.100.0.2", "-d", "other"]);
    assert_eq!(lab.wait_exit(same_port, Duration::from_secs(5)), Some(1));
    assert!(
        lab.log(same_port).contains("UDP port 0.0.0.0:7777: Address already in use"),
        "{}",
        lab.log(same_port)
    );
    lab.assert_ping(&a, "192.168.100.2");
}

#[test]
fn the_old_table_serves_while_the_hosts_server_is_away_and_the_new_one_applies_on_return() {
    let Some(mut lab) = Lab::new("the_old_table_serves_while_the_hosts_server_is_away") else { return };
    let web = lab.host("web", "10.100.0.80/24");
    let server = common::HttpServer::start(common::listen_in(&web, "10.100.0.80:8080"), None);
    server.set("/hosts.json", common::Reply::ok(&common::hosts_doc(&[1, 2])));
    let url = "http://10.100.0.80:8080/hosts.json";
    let mut namespaces = Vec::new();
    let mut daemons = Vec::new();
    for i in 1..=3u8 {
        let ns = lab.host(&format!("h{i}"), &format!("10.100.0.{i}/24"));
        let args = ["--hosts-url", url, "--hosts-url-interval", "0.3", "-d", "udptun"];
        daemons.push(lab.udptun(&ns, &[&args[..], &["--address", &format!("192.168.100.{i}/24")]].concat()));
        namespaces.push(ns);
    }
    // Each daemon's first fetch must succeed before the server goes away, or it exits.
    for daemon in &daemons {
        lab.wait_started(*daemon);
    }
    lab.assert_ping(&namespaces[0], "192.168.100.2");

    lab.exec(&web, &["ip", "link", "set", "eth0", "down"]);
    server.set("/hosts.json", common::Reply::ok(&common::hosts_doc(&[1, 2, 3])));
    assert!(
        wait_until(Duration::from_secs(10), || lab.log(daemons[0]).contains("keeping the previous table")),
        "{}",
        lab.log(daemons[0])
    );
    lab.assert_ping(&namespaces[0], "192.168.100.2");
    assert!(!lab.ping(&namespaces[0], "192.168.100.3"));

    lab.exec(&web, &["ip", "link", "set", "eth0", "up"]);
    lab.assert_ping(&namespaces[0], "192.168.100.3");
}
