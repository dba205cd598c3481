//! `udptun show` and the per-peer metrics, with the real binary in network namespaces.

mod common;

use std::time::Duration;

use common::{Lab, UDPTUN, metric, wait_until};
use jsonc_parser::JsonValue;

/// An overlay of three nodes, of which `c` never runs.
const HOSTS: &str = r#"{ "nodes": {
    "192.168.100.1": { "host": "10.100.0.1" },
    "192.168.100.2": { "host": "10.100.0.2" },
    "192.168.100.3": { "host": "10.100.0.3", "port": 7000 },
    "10.77.0.0/24": { "host": "10.100.0.3", "port": 7000 } } }"#;

/// Runs `udptun show ARGS` in `ns` and returns its output; panics unless it succeeds.
fn show(lab: &Lab, ns: &str, args: &[&str]) -> String {
    let output = lab.output(ns, &[&[UDPTUN, "show"], args].concat());
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "udptun show {args:?}: {stderr}\n{stdout}");
    stdout.into_owned()
}

fn number(object: &jsonc_parser::JsonObject, key: &str) -> f64 {
    match object.get(key) {
        Some(JsonValue::Number(n)) => n.parse().unwrap(),
        other => panic!("{key}: {other:?}"),
    }
}

fn text<'a>(object: &'a jsonc_parser::JsonObject, key: &str) -> &'a str {
    object.get_string(key).unwrap_or_else(|| panic!("no string {key}"))
}

#[test]
fn show_lists_peers_with_their_traffic_as_a_table_and_as_json() {
    let Some(mut lab) = Lab::new("show_lists_peers") else { return };
    let hosts = lab.file("hosts.json", HOSTS);
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    let da = lab
        .udptun(&a, &["--hosts-file", &hosts, "-d", "sa", "--address", "192.168.100.1/24", "--threads", "1"]);
    let db = lab.udptun(&b, &["--hosts-file", &hosts, "-d", "sb", "--address", "192.168.100.2/24"]);
    // Started, so addressed: the ping below must not fail (its counts are asserted exactly).
    lab.wait_started(da);
    lab.wait_started(db);
    lab.exec(&a, &["ping", "-c", "5", "-i", "0.2", "-W", "2", "192.168.100.2"]);

    let table = show(&lab, &a, &[]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("device sa: listening on 0.0.0.0:7777, 1 thread(s)"), "{table}");
    assert!(lines[1].starts_with(&format!("table: file {hosts}, loaded ")), "{table}");
    assert!(lines[1].ends_with("4 entries, 3 peers"), "{table}");
    assert!(lines.iter().all(|l| l.chars().count() <= 100), "wider than 100 columns:\n{table}");
    let row = |inner: &str| {
        lines.iter().find(|l| l.starts_with(inner)).unwrap_or_else(|| panic!("no {inner} row:\n{table}"))
    };
    let b_row: Vec<&str> = row("192.168.100.2 ").split_whitespace().collect();
    // INNER ENDPOINT REACHED-AT HEARD(2 words) RX TX: 5 echo requests out, 5 replies in.
    assert_eq!(b_row[1], "10.100.0.2:7777", "{table}");
    assert_eq!(b_row[2], "-", "{table}");
    assert_eq!(b_row[b_row.len() - 2], "5/420B", "{table}");
    assert_eq!(b_row[b_row.len() - 1], "5/420B", "{table}");
    let c_row = row("10.77.0.0/24 +1");
    assert!(c_row.contains("10.100.0.3:7000") && c_row.contains("never"), "{table}");

    // The JSON has the same, and the unrounded figures.
    let json = show(&lab, &a, &["sa", "--json"]);
    let Ok(Some(JsonValue::Object(status))) = jsonc_parser::parse_to_value(&json, &Default::default()) else {
        panic!("not a JSON object: {json}")
    };
    assert_eq!(text(&status, "device"), "sa");
    assert_eq!(text(&status, "listen"), "0.0.0.0:7777");
    let origin = status.get_object("table").unwrap();
    assert_eq!((text(origin, "source"), text(origin, "location")), ("file", hosts.as_str()));
    assert_eq!((number(origin, "entries"), number(origin, "peers")), (4.0, 3.0));
    let peers: Vec<&JsonValue> = status.get_array("peers").unwrap().iter().collect();
    assert_eq!(peers.len(), 3, "{json}");
    let JsonValue::Object(b_peer) = peers[1] else { panic!("{json}") };
    assert_eq!(text(b_peer, "endpoint"), "10.100.0.2:7777");
    assert_eq!(text(b_peer, "current"), "10.100.0.2:7777");
    for (key, value) in [("rx_packets", 5.0), ("tx_packets", 5.0), ("rx_bytes", 420.0), ("tx_bytes", 420.0)] {
        assert_eq!(number(b_peer, key), value, "{key}: {json}");
    }
    let heard = number(b_peer, "last_received");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - 30.0..=now + 1.0).contains(&heard), "last_received {heard}, now {now}");
    let JsonValue::Object(c_peer) = peers[2] else { panic!("{json}") };
    assert_eq!(c_peer.get("last_received"), Some(&JsonValue::Null));
    let inner: Vec<_> = c_peer.get_array("inner").unwrap().iter().collect();
    assert_eq!(inner.len(), 2, "{json}");

    // Without a device: every daemon of the namespace, as an array.
    let all = show(&lab, &b, &["--json"]);
    assert!(all.starts_with("[{\"device\":\"sb\""), "{all}");
}

#[test]
fn show_refuses_other_users_and_says_when_no_daemon_runs() {
    let Some(mut lab) = Lab::new("show_refuses_other_users") else { return };
    let a = lab.host("a", "10.100.0.1/24");
    let nothing = lab.output(&a, &[UDPTUN, "show"]);
    assert!(!nothing.status.success());
    let said = String::from_utf8_lossy(&nothing.stderr);
    assert!(said.contains("no udptun daemon runs in this network namespace"), "{said}");

    let daemon = lab.udptun(&a, &["-A", "10.100.0.2", "-d", "sr"]);
    lab.wait_started(daemon);
    assert!(show(&lab, &a, &["sr"]).starts_with("device sr"));
    let refused = lab.output(
        &a,
        &["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", UDPTUN, "show", "sr"],
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("permission denied"), "{said}");
    assert!(wait_until(Duration::from_secs(5), || lab
        .log(daemon)
        .contains("refused a client with uid 65534")));
}

#[test]
fn per_peer_metrics_count_each_peer_and_turn_off_above_a_thousand_peers() {
    let Some(mut lab) = Lab::new("per_peer_metrics") else { return };
    let hosts = lab.file("hosts.json", HOSTS);
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    lab.udptun(
        &a,
        &[
            "--hosts-file",
            &hosts,
            "-d",
            "ma",
            "--address",
            "192.168.100.1/24",
            "--metrics-listen",
            "127.0.0.1:9477",
        ],
    );
    lab.udptun(&b, &["--hosts-file", &hosts, "-d", "mb", "--address", "192.168.100.2/24"]);
    lab.wait_device(&a, "ma");
    lab.wait_device(&b, "mb");
    lab.wait_metrics(&a, "127.0.0.1:9477");
    lab.exec(&a, &["ping", "-c", "3", "-i", "0.2", "-W", "2", "192.168.100.2"]);
    let page = lab.http_get(&a, "127.0.0.1:9477", "/metrics");
    let peer = |name: &str, peer: &str| metric(&page, &format!("{name}{{peer=\"{peer}\"}}"));
    assert_eq!(peer("udptun_peer_sent_packets_total", "10.100.0.2:7777"), 3, "{page}");
    assert_eq!(peer("udptun_peer_received_packets_total", "10.100.0.2:7777"), 3, "{page}");
    assert_eq!(peer("udptun_peer_sent_bytes_total", "10.100.0.2:7777"), 252, "{page}");
    assert_eq!(peer("udptun_peer_received_bytes_total", "10.100.0.2:7777"), 252, "{page}");
    assert_eq!(peer("udptun_peer_sent_packets_total", "10.100.0.3:7000"), 0, "{page}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let heard = peer("udptun_peer_last_received_timestamp_seconds", "10.100.0.2:7777");
    assert!((now - 30..=now + 1).contains(&heard), "heard at {heard}, now {now}");
    assert!(
        !page.contains("udptun_peer_last_received_timestamp_seconds{peer=\"10.100.0.3:7000\"}"),
        "{page}"
    );
    assert_eq!(metric(&page, &format!("udptun_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), 1);

    // 1,001 peers: off by default, with a line in the log; on when forced.
    let mut many = String::from("{ \"nodes\": {");
    for i in 0..1001 {
        many += &format!(
            "{}\"10.200.{}.{}\": {{ \"host\": \"10.101.{}.{}\" }}",
            if i > 0 { "," } else { "" },
            i / 250,
            i % 250 + 1,
            i / 250,
            i % 250 + 1
        );
    }
    many += "} }";
    let many = lab.file("many.json", &many);
    let c = lab.host("c", "10.100.0.3/24");
    let by_default =
        lab.udptun(&c, &["--hosts-file", &many, "-d", "mc", "--metrics-listen", "127.0.0.1:9477"]);
    lab.udptun(
        &c,
        &[
            "--hosts-file",
            &many,
            "-d",
            "md",
            "-p",
            "7001",
            "--metrics-listen",
            "127.0.0.1:9478",
            "--metrics-per-peer",
            "on",
        ],
    );
    lab.wait_metrics(&c, "127.0.0.1:9477");
    lab.wait_metrics(&c, "127.0.0.1:9478");
    let off = lab.http_get(&c, "127.0.0.1:9477", "/metrics");
    assert!(off.contains("udptun_peers 1001") && !off.contains("udptun_peer_sent_packets_total{"), "{off}");
    assert!(wait_until(Duration::from_secs(5), || lab.log(by_default).contains("per-peer series are off")));
    let on = lab.http_get(&c, "127.0.0.1:9478", "/metrics");
    assert_eq!(on.matches("udptun_peer_sent_packets_total{").count(), 1001);
}

/// A status line as a daemon sends it, with an escape sequence (clear the screen) in the device.
const HOSTILE_STATUS: &str = r#"{"device":"x\u001b[2J","listen":"0.0.0.0:7777","threads":1,"offloads":{},"version":"v","table":{"source":"file","location":"l","loaded":0,"etag":null,"entries":0,"peers":0}}"#;

#[test]
fn a_process_holding_the_show_socket_neither_stops_the_tunnel_nor_reaches_the_terminal() {
    use std::io::Write;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};

    let Some(mut lab) = Lab::new("show_socket_squatted") else { return };
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    // Any user of the namespace may bind the name before the daemon starts.
    let squatter = common::in_netns(&a, || {
        UnixListener::bind_addr(&SocketAddr::from_abstract_name("udptun/sq").unwrap()).unwrap()
    });
    let daemon = lab.udptun(&a, &["-A", "10.100.0.2", "-d", "sq", "--address", "192.168.100.1/24"]);
    lab.udptun(&b, &["-A", "10.100.0.1", "-d", "sq", "--address", "192.168.100.2/24"]);
    lab.wait_device(&a, "sq");
    lab.wait_device(&b, "sq");
    lab.assert_ping(&a, "192.168.100.2");
    assert!(
        lab.log(daemon).contains("udptun show will not work: its socket @udptun/sq is taken"),
        "{}",
        lab.log(daemon)
    );

    // What the squatter answers reaches the terminal without its control characters, and one
    // that never finishes its answer costs the client its read timeout, not forever.
    let serve = std::thread::spawn(move || {
        let (mut first, _) = squatter.accept().unwrap();
        writeln!(first, "{HOSTILE_STATUS}").unwrap();
        drop(first);
        let (mut second, _) = squatter.accept().unwrap();
        write!(second, "{HOSTILE_STATUS}").unwrap();
        std::thread::sleep(Duration::from_secs(20));
    });
    let shown = show(&lab, &a, &["sq"]);
    assert!(shown.starts_with("device x?[2J: listening") && !shown.contains('\u{1b}'), "{shown:?}");
    let started = std::time::Instant::now();
    let mut client = std::process::Command::new("ip")
        .args(["netns", "exec", &a, UDPTUN, "show", "sq"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ended = wait_until(Duration::from_secs(12), || client.try_wait().unwrap().is_some());
    if !ended {
        let _ = client.kill();
    }
    let output = client.wait_with_output().unwrap();
    assert!(ended, "udptun show still waits for an answer after 12 s");
    assert!(!output.status.success() && started.elapsed() >= Duration::from_secs(4));
    assert!(String::from_utf8_lossy(&output.stderr).contains("device sq"), "{output:?}");
    drop(serve);
}
