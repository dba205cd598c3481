//! A hostile hosts server: huge and endless bodies, a server that never answers, redirect loops,
//! a downgrade to http, errors, garbage, and a very large document. Each time the last good
//! table stays in force, memory stays bounded, the tunnel keeps working, and the log says why.

mod common;

use std::time::Duration;

use common::{Body, HttpServer, Lab, Reply, TestPki, listen_in, wait_until};

/// Peak resident memory of the udptun running in `ns`, in MiB.
fn peak_rss_mib(ns: &str) -> u64 {
    let status = common::daemon_status(ns);
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in status");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse::<u64>().ok()).expect("a number") / 1024
}

#[test]
fn a_hostile_hosts_server_changes_nothing_but_the_log() {
    let Some(mut lab) = Lab::new("a_hostile_hosts_server_changes_nothing_but_the_log") else { return };
    let web = lab.host("web", "10.100.0.80/24");
    let server = HttpServer::start(listen_in(&web, "10.100.0.80:8080"), None);
    server.set("/hosts.json", Reply::ok(&common::hosts_doc(&[1, 2])));
    server.set("/loop", Reply::redirect("/loop"));
    let a = lab.host("h1", "10.100.0.1/24");
    let b = lab.host("h2", "10.100.0.2/24");
    let url = "http://10.100.0.80:8080/hosts.json";
    let da = lab.udptun(
        &a,
        &["--hosts-url", url, "--hosts-url-interval", "0.3", "-d", "udptun", "--address", "192.168.100.1/24"],
    );
    lab.udptun(&b, &["-A", "10.100.0.1", "-d", "udptun", "--address", "192.168.100.2/24"]);
    lab.wait_device(&a, "udptun");
    lab.assert_ping(&a, "192.168.100.2");

    let cases: Vec<(&str, Reply, &str)> = vec![
        ("a 1 GiB body", Reply::body(Body::Zeros(1 << 30)), "document larger than 33554432 bytes"),
        ("a body that never ends", Reply::body(Body::Endless), "document larger than 33554432 bytes"),
        ("a server that never answers", Reply::body(Body::Hang), "timed out"),
        ("a redirect loop", Reply::redirect("/loop"), "more than 10 redirects"),
        ("HTTP 500", Reply::status(500), "HTTP 500"),
        (
            "a document followed by garbage",
            Reply::ok(&(common::hosts_doc(&[1, 2, 3]) + " }{ garbage")),
            "line 1",
        ),
    ];
    for (what, reply, expected) in cases {
        let before = lab.log(da).matches("keeping the previous table").count();
        server.set("/hosts.json", reply);
        let logged = wait_until(Duration::from_secs(15), || {
            let log = lab.log(da);
            log.matches("keeping the previous table").count() > before && log.contains(expected)
        });
        assert!(logged, "{what}: the log does not say `{expected}`:\n{}", lab.log(da));
        lab.assert_ping(&a, "192.168.100.2");
        let rss = peak_rss_mib(&a);
        assert!(rss < 128, "{what}: peak RSS {rss} MiB");
    }

    // 100,000 entries load, within bounded memory.
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
    server.set("/hosts.json", Reply::ok(&format!("{{ nodes: {{ {} }} }}", big.join(",\n"))));
    let loaded = wait_until(Duration::from_secs(30), || lab.log(da).contains("loaded: 100001 entries"));
    assert!(loaded, "{}", lab.log(da));
    lab.assert_ping(&a, "192.168.100.2");
    let rss = peak_rss_mib(&a);
    assert!(rss < 128, "100,000 entries: peak RSS {rss} MiB");
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
    assert_eq!(lab.wait_exit(da, Duration::from_secs(10)), Some(1));
    assert!(
        lab.log(da).contains("refused redirect from https to http://10.100.0.80:8080/hosts.json"),
        "{}",
        lab.log(da)
    );
    assert_eq!(plain.hits("/hosts.json"), 0, "the http URL must not even be fetched");
}
