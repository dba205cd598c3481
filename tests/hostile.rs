//! A hostile hosts server: huge and endless bodies, a server that never answers, redirect loops,
//! a downgrade to http, errors, garbage, a very large document and one padded to near the cap.
//! Each time the last good table stays in force (or the new one loads), memory stays bounded,
//! the tunnel keeps working, and the log says why.

mod common;

use std::time::{Duration, Instant};

use common::{Body, HttpServer, Lab, Reply, TestPki, listen_in, wait_until};

/// Peak resident memory of the udptun running in `ns`, in MiB.
fn peak_rss_mib(ns: &str) -> u64 {
    let status = common::daemon_status(ns);
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in status");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse::<u64>().ok()).expect("a number") / 1024
}

/// The first line daemon `index` logged after its log was `start` bytes long that contains each
/// of `needles`, waiting up to `timeout` for one.
fn logged_after(
    lab: &Lab,
    index: usize,
    start: usize,
    needles: &[&str],
    timeout: Duration,
) -> Option<String> {
    let mut found = None;
    wait_until(timeout, || {
        let log = lab.log(index);
        let new = log.get(start..).unwrap_or_default();
        found = new.lines().find(|l| needles.iter().all(|n| l.contains(n))).map(String::from);
        found.is_some()
    });
    found
}

#[test]
fn a_hostile_hosts_server_changes_nothing_but_the_log() {
    let Some(mut lab) = Lab::new("a_hostile_hosts_server_changes_nothing_but_the_log") else { return };
    let web = lab.host("web", "10.100.0.80/24");
    let server = HttpServer::start(listen_in(&web, "10.100.0.80:8080"), None);
    // Host 4 is in the good table only: no hostile document, were it applied, maps it.
    server.set("/hosts.json", Reply::ok(&common::hosts_doc(&[1, 2, 4])));
    server.set("/loop", Reply::redirect("/loop"));
    let a = lab.host("h1", "10.100.0.1/24");
    let b = lab.host("h2", "10.100.0.2/24");
    let d = lab.host("h4", "10.100.0.4/24");
    let url = "http://10.100.0.80:8080/hosts.json";
    let metrics = "127.0.0.1:9100";
    let da = lab.udptun(
        &a,
        &[
            "--hosts-url",
            url,
            "--hosts-url-interval",
            "0.3",
            "-d",
            "udptun",
            "--address",
            "192.168.100.1/24",
            "--metrics-listen",
            metrics,
        ],
    );
    lab.spoke(&b, 2, &[]);
    lab.spoke(&d, 4, &[]);
    lab.wait_device(&a, "udptun");
    lab.assert_ping(&a, "192.168.100.2");
    lab.assert_ping(&a, "192.168.100.4");
    let counter = |series: &str| lab.scrape(&a, metrics, series);

    // The body cap has a test of its own (below): with this interval the 1 s fetch timeout
    // would bound a huge body too. The good table loaded again and again until now (the server
    // sends no validators); the first failure ends that, and no table may be published after.
    let cases: Vec<(&str, Reply, &str)> = vec![
        ("a server that never answers", Reply::body(Body::Hang), "hosts.json: timed out"),
        ("a redirect loop", Reply::redirect("/loop"), "hosts.json: more than 10 redirects"),
        ("HTTP 500", Reply::status(500), "hosts.json: HTTP 500"),
        (
            "a document followed by garbage",
            Reply::ok(&(common::hosts_doc(&[1, 2, 3]) + " }{ garbage")),
            "hosts.json: line 1 column 146: Text cannot contain more than one JSON value",
        ),
    ];
    let mut loads = None;
    for (what, reply, expected) in cases {
        // Only what is logged from now on counts.
        let start = lab.log(da).len();
        server.set("/hosts.json", reply);
        // The messages differ from case to case, so no case can pass on another's line.
        let needles = [expected, "keeping the previous table"];
        let logged = logged_after(&lab, da, start, &needles, Duration::from_secs(15)).is_some();
        assert!(logged, "{what}: the log does not say `{expected}`:\n{}", &lab.log(da)[start..]);
        // Fetches are sequential: after a failure no 200 of the good document is on its way.
        let now = counter("udptun_hosts_loads_total");
        assert_eq!(*loads.get_or_insert(now), now, "{what}: a table was published:\n{}", lab.log(da));
        lab.assert_ping(&a, "192.168.100.4");
        let rss = peak_rss_mib(&a);
        assert!(rss < 128, "{what}: peak RSS {rss} MiB");
    }
    assert!(counter("udptun_hosts_load_failures_total") >= 4, "the failures are counted");

    // 100,000 entries load, within bounded memory. They map host 2, not host 4.
    let mut big: Vec<String> = (0..100_000u32)
        .map(|i| {
            format!(
                "\"10.{}.{}.{}\": {{ host: \"172.16.{}.{}\" }}",
                i >> 16,
                (i >> 8) & 255,
                i & 255,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect();
    big.push("\"192.168.100.2\": { host: \"10.100.0.2\" }".into());
    let start = lab.log(da).len();
    server.set("/hosts.json", Reply::ok(&format!("{{ nodes: {{ {} }} }}", big.join(",\n"))));
    let loaded = logged_after(&lab, da, start, &["loaded: 100001 entries"], Duration::from_secs(30));
    assert!(loaded.is_some(), "{}", &lab.log(da)[start..]);
    assert!(counter("udptun_hosts_loads_total") > loads.unwrap(), "the loads counter counts loads");
    lab.assert_ping(&a, "192.168.100.2");
    assert!(!lab.ping(&a, "192.168.100.4"), "a new table is in force, without host 4");
    let rss = peak_rss_mib(&a);
    assert!(rss < 128, "100,000 entries: peak RSS {rss} MiB");
}

#[test]
fn the_body_cap_refuses_huge_documents_long_before_the_timeout() {
    let Some(mut lab) = Lab::new("the_body_cap_refuses_huge_documents_long_before_the_timeout") else {
        return;
    };
    let web = lab.host("web", "10.100.0.80/24");
    let server = HttpServer::start(listen_in(&web, "10.100.0.80:8080"), None);
    server.set("/hosts.json", Reply::ok(&common::hosts_doc(&[1, 2])));
    let a = lab.host("h1", "10.100.0.1/24");
    // A 600 s interval: a fetch may take 30 s (`control::fetch_timeout`), and no fetch comes
    // but those SIGHUP asks for.
    let timeout = Duration::from_secs(30);
    let da = lab.udptun(
        &a,
        &["--hosts-url", "http://10.100.0.80:8080/hosts.json", "--hosts-url-interval", "600", "-d", "udptun"],
    );
    // The first fetch must be done before the document turns huge, or it is refused at the cap
    // and the daemon, with no table, exits.
    lab.wait_started(da);

    let cap = "document larger than 33554432 bytes; keeping the previous table";
    for (what, body) in [("a 1 GiB body", Body::Zeros(1 << 30)), ("a body that never ends", Body::Endless)] {
        server.set("/hosts.json", Reply::body(body));
        for _ in 0..2 {
            let start = lab.log(da).len();
            let began = Instant::now();
            lab.signal(da, libc::SIGHUP);
            let line = logged_after(&lab, da, start, &["keeping the previous table"], timeout * 2);
            let took = began.elapsed();
            let line = line.unwrap_or_else(|| panic!("{what}: no fetch failed:\n{}", lab.log(da)));
            assert!(line.contains(cap) && !line.contains("timed out"), "{what}: not the cap: {line}");
            assert!(took < timeout / 4, "{what}: refused after {took:?}, the timeout being {timeout:?}");
        }
        let rss = peak_rss_mib(&a);
        assert!(rss < 128, "{what}: peak RSS {rss} MiB");
    }
}

/// A hosts document of about `size` bytes: the nodes of `common::hosts_doc(hosts)` after a
/// field the parser ignores, `"pad"`, an array of zeros.
fn padded_doc(hosts: &[u8], size: usize) -> String {
    let nodes = common::hosts_doc(hosts);
    let zeros = size.saturating_sub(nodes.len() + 16) / 2;
    // `nodes` is `{ "nodes": ... }`: the padding goes in after its opening brace.
    format!("{{ \"pad\": [{}0], {}", "0,".repeat(zeros), &nodes[2..])
}

#[test]
fn a_document_padded_to_near_the_cap_loads_in_bounded_memory() {
    let Some(mut lab) = Lab::new("a_document_padded_to_near_the_cap_loads_in_bounded_memory") else {
        return;
    };
    let web = lab.host("web", "10.100.0.80/24");
    let server = HttpServer::start(listen_in(&web, "10.100.0.80:8080"), None);
    server.set("/hosts.json", Reply::ok(&common::hosts_doc(&[1])));
    let a = lab.host("h1", "10.100.0.1/24");
    let b = lab.host("h2", "10.100.0.2/24");
    let da = lab.udptun(
        &a,
        &[
            "--hosts-url",
            "http://10.100.0.80:8080/hosts.json",
            "--hosts-url-interval",
            "600",
            "-d",
            "udptun",
            "--address",
            "192.168.100.1/24",
        ],
    );
    lab.spoke(&b, 2, &[]);
    // Started, so addressed: the ping below fails for want of a mapping, not of an address.
    lab.wait_started(da);
    assert!(!lab.ping(&a, "192.168.100.2"), "host 2 is not in the first table");

    // 30 MiB, under the 32 MiB cap: what the parser keeps of it is two entries.
    let doc = padded_doc(&[1, 2], 30 << 20);
    let size_mib = doc.len() as f64 / f64::from(1 << 20);
    server.set("/hosts.json", Reply::ok(&doc));
    drop(doc);
    let start = lab.log(da).len();
    lab.signal(da, libc::SIGHUP);
    let loaded = logged_after(&lab, da, start, &["loaded: 2 entries"], Duration::from_secs(60));
    assert!(loaded.is_some(), "{size_mib:.1} MiB document not loaded:\n{}", &lab.log(da)[start..]);
    lab.assert_ping(&a, "192.168.100.2");
    let rss = peak_rss_mib(&a);
    eprintln!("{size_mib:.1} MiB document: peak RSS {rss} MiB");
    assert!(
        rss < 256 && (rss as f64) < 8.0 * size_mib,
        "{size_mib:.1} MiB document: peak RSS {rss} MiB (at most 256 MiB and 8 times the document)"
    );
}

#[test]
fn a_redirect_from_https_to_http_is_refused() {
    let Some(mut lab) = Lab::new("a_redirect_from_https_to_http_is_refused") else { return };
    let web = lab.host("web", "10.100.0.80/24");
    let pki = TestPki::new(&["hosts.test"]);
    let tls = HttpServer::start(listen_in(&web, "10.100.0.80:8443"), Some(pki.server.clone()));
    tls.set("/hosts.json", Reply::redirect("http://10.100.0.80:8080/hosts.json"));
    let plain = HttpServer::start(listen_in(&web, "10.100.0.80:8080"), None);
    plain.set("/hosts.json", Reply::ok(&common::hosts_doc(&[1, 2])));
    let ca = lab.file("ca.pem", &pki.ca_pem);
    let a = lab.host("h1", "10.100.0.1/24");
    lab.etc_hosts(&a, "10.100.0.80 hosts.test\n");
    let da = lab
        .udptun(&a, &["--hosts-url", "https://hosts.test:8443/hosts.json", "--ca-file", &ca, "-d", "udptun"]);
    // EX_TEMPFAIL: the server can be mended without touching this node.
    assert_eq!(lab.wait_exit(da, Duration::from_secs(10)), Some(75));
    assert!(
        lab.log(da).contains("refused redirect from https to http://10.100.0.80:8080/hosts.json"),
        "{}",
        lab.log(da)
    );
    assert_eq!(plain.hits("/hosts.json"), 0, "the http URL must not even be fetched");
}
