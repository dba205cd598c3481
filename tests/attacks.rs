//! Attacks from issue 9, each run against the real binary in network namespaces: a neighbour on
//! a peer's IP trying to take its traffic, forged and replayed keepalives, a lying hosts server,
//! a hung resolver, and signals while the first table is still loading. Each test failed on the
//! code before the defence (RELIABILITY.md, "Attacks", has the figures).

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{HttpServer, Lab, Reply, listen_in, wait_until};
use udptun::keepalive::{self, Key};

/// Packets received by `ping -c COUNT` as it reports them.
fn ping_received(lab: &Lab, ns: &str, addr: &str, count: u32) -> u32 {
    let out = lab.output(ns, &["ping", "-c", &count.to_string(), "-i", "0.1", "-W", "1", addr]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split(", ")
        .find_map(|part| part.strip_suffix(" received")?.parse().ok())
        .unwrap_or_else(|| panic!("no ping summary in: {text}"))
}

/// From `ns`, bound to `bind`, sends each of `datagrams` to `target` every 20 ms until stopped,
/// counting the datagrams that come back to it (traffic it took from the real peer).
struct Intruder {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<u64>,
}

impl Intruder {
    fn start(ns: &str, bind: &'static str, target: &'static str, datagrams: Vec<Vec<u8>>) -> Intruder {
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, flag) = (ns.to_string(), stop.clone());
        let thread = thread::spawn(move || {
            common::in_netns(&ns, move || {
                let socket = UdpSocket::bind(bind).unwrap();
                socket.set_nonblocking(true).unwrap();
                let mut captured = 0;
                let mut buffer = [0u8; 2048];
                while !flag.load(Ordering::Relaxed) {
                    for datagram in &datagrams {
                        socket.send_to(datagram, target).unwrap();
                    }
                    while socket.recv_from(&mut buffer).is_ok() {
                        captured += 1;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                captured
            })
        });
        Intruder { stop, thread }
    }

    /// Stops it; returns how many datagrams it captured.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A packet with b's tunnel address as its inner source: passes the source check from b's IP.
fn packet_from_b() -> Vec<u8> {
    common::ipv4_packet([192, 168, 100, 2], [192, 168, 100, 1], 17, &[0, 9, 0, 9, 0, 8, 0, 0])
}

#[test]
fn a_neighbour_on_the_peers_ip_cannot_take_its_traffic() {
    let Some(mut lab) = Lab::new("a_neighbour_on_the_peers_ip_cannot_take_its_traffic") else { return };
    let metrics = "127.0.0.1:9110";
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    let a_args =
        ["-A", "10.100.0.2", "-d", "udptun", "--address", "192.168.100.1/24", "--metrics-listen", metrics];
    let da = lab.udptun(&a, &a_args);
    lab.spoke(&b, 2, &["--keepalive", "3"]);
    lab.wait_device(&a, "udptun");
    lab.wait_device(&b, "udptun");
    lab.assert_ping(&a, "192.168.100.2");

    // Another process on b's host: an empty datagram and a packet with b's inner source,
    // every 20 ms, from port 40000.
    let intruder = Intruder::start(&b, "10.100.0.2:40000", "10.100.0.1:7777", vec![vec![], packet_from_b()]);
    thread::sleep(Duration::from_millis(300));
    let received = ping_received(&lab, &a, "192.168.100.2", 35);
    assert!(lab.scrape(&a, metrics, "udptun_roaming_refused_total") > 50, "refused moves are counted");
    // a restarts while the neighbour keeps at it: its datagrams arrive long before b's next
    // keepalive (up to 3 s away), and still move nothing.
    lab.stop(da);
    lab.udptun(&a, &a_args);
    lab.wait_device(&a, "udptun");
    lab.assert_ping(&a, "192.168.100.2");
    let after_restart = ping_received(&lab, &a, "192.168.100.2", 20);
    let captured = intruder.stop();
    assert_eq!(
        (captured, received, after_restart),
        (0, 35, 20),
        "captured by the neighbour, pings received before and after a restart; logs:\n{}",
        lab.all_logs()
    );
}

#[test]
fn a_peer_that_moves_to_a_new_port_is_followed_once_the_hold_is_over() {
    let Some(mut lab) = Lab::new("a_peer_that_moves_is_followed_after_the_hold") else { return };
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    let da = lab.udptun(
        &a,
        &["-A", "10.100.0.2", "-d", "udptun", "--address", "192.168.100.1/24", "--roam-hold", "3"],
    );
    let b_extra = ["--keepalive", "0.5"];
    let db = lab.spoke(&b, 2, &b_extra);
    lab.wait_device(&a, "udptun");
    lab.wait_device(&b, "udptun");
    lab.assert_ping(&a, "192.168.100.2");

    // b restarts on another port (as after a NAT rebinding): silent at the old one from now on.
    // Taken before the stop, which returns some milliseconds after b fell silent.
    let silent_since = Instant::now();
    lab.stop(db);
    lab.spoke(&b, 2, &[&b_extra[..], &["-p", "7779"]].concat());
    let moved = "is now reached at 10.100.0.2:7779";
    assert!(wait_until(Duration::from_secs(10), || lab.log(da).contains(moved)), "{}", lab.all_logs());
    let followed_after = silent_since.elapsed();
    assert!(
        followed_after >= Duration::from_millis(2_400) && followed_after <= Duration::from_millis(5_500),
        "followed after {followed_after:?}, not within the 3 s hold plus one keepalive"
    );
    assert!(lab.log(da).contains("did not move the peer at 10.100.0.2:7777"), "{}", lab.log(da));
    lab.assert_ping(&a, "192.168.100.2");
}

#[test]
fn with_a_key_only_the_peer_moves_itself_and_at_once() {
    let Some(mut lab) = Lab::new("with_a_key_only_the_peer_moves_itself") else { return };
    let generated = std::process::Command::new(common::UDPTUN).arg("genkey").output().unwrap();
    assert!(generated.status.success());
    let key_text = String::from_utf8(generated.stdout).unwrap();
    let key = Key::parse(&key_text).unwrap();
    let key_file = lab.file("udptun.key", &key_text);
    let metrics = "127.0.0.1:9111";
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    let da = lab.udptun(
        &a,
        &[
            "-A",
            "10.100.0.2",
            "-d",
            "udptun",
            "--address",
            "192.168.100.1/24",
            "--key",
            &key_file,
            "--metrics-listen",
            metrics,
            "--roam-hold",
            "60",
        ],
    );
    let b_extra = ["--key", key_file.as_str(), "--keepalive", "0.5"];
    let db = lab.spoke(&b, 2, &b_extra);
    lab.wait_device(&a, "udptun");
    lab.wait_device(&b, "udptun");
    lab.assert_ping(&a, "192.168.100.2");
    let heard = wait_until(Duration::from_secs(5), || {
        lab.scrape(&a, metrics, "udptun_keepalives_received_total") >= 2
    });
    assert!(heard, "b's keepalives do not arrive: {}", lab.all_logs());

    // From b's host: plain keepalives, data, a keepalive under another key, and an old one
    // (a counter below what b has sent: what a captured keepalive is by the time it is replayed).
    let sender = "192.168.100.2".parse().unwrap();
    let forged = keepalive::seal(&Key::from_bytes([7; keepalive::KEY_LEN]), sender, u64::MAX).to_vec();
    let replayed = keepalive::seal(&key, sender, 1).to_vec();
    let intruder = Intruder::start(
        &b,
        "10.100.0.2:40000",
        "10.100.0.1:7777",
        vec![vec![], packet_from_b(), forged, replayed],
    );
    thread::sleep(Duration::from_millis(300));
    let received = ping_received(&lab, &a, "192.168.100.2", 20);
    let captured = intruder.stop();
    assert_eq!((captured, received), (0, 20), "captured, pings received; logs:\n{}", lab.all_logs());
    let refused = |reason: &str| {
        lab.scrape(&a, metrics, &format!("udptun_keepalives_refused_total{{reason=\"{reason}\"}}"))
    };
    assert!(refused("forged") > 20 && refused("replayed") > 20, "refusals are counted by reason");
    assert!(lab.scrape(&a, metrics, "udptun_roaming_refused_total") > 20, "data and plain keepalives");

    // b moves to another port: its first authenticated keepalive moves it, long before the
    // 60 s hold.
    lab.stop(db);
    let restarted = Instant::now();
    lab.spoke(&b, 2, &[&b_extra[..], &["-p", "7779"]].concat());
    let moved = "is now reached at 10.100.0.2:7779 (authenticated)";
    assert!(wait_until(Duration::from_secs(5), || lab.log(da).contains(moved)), "{}", lab.all_logs());
    assert!(restarted.elapsed() < Duration::from_secs(3), "followed after {:?}", restarted.elapsed());
    lab.assert_ping(&a, "192.168.100.2");
}

#[test]
fn one_deadline_covers_a_fetch_and_its_redirects() {
    let Some(mut lab) = Lab::new("one_deadline_covers_a_fetch_and_its_redirects") else { return };
    let web = lab.host("web", "10.100.0.80/24");
    let server = HttpServer::start(listen_in(&web, "10.100.0.80:8080"), None);
    // Five hops of 0.8 s each: every hop is within a 2 s timeout, the whole is not.
    for hop in 0..5 {
        server.set(
            &format!("/{hop}"),
            Reply::redirect(&format!("/{}", hop + 1)).delayed(Duration::from_millis(800)),
        );
    }
    server.set("/5", Reply::ok(&common::hosts_doc(&[1])));
    let a = lab.host("a", "10.100.0.1/24");
    let started = Instant::now();
    // --hosts-url-interval 2 gives each fetch 2 s.
    let da = lab.udptun(
        &a,
        &["--hosts-url", "http://10.100.0.80:8080/0", "--hosts-url-interval", "2", "-d", "udptun"],
    );
    // EX_TEMPFAIL: the server may answer next time.
    assert_eq!(lab.wait_exit(da, Duration::from_secs(10)), Some(75), "{}", lab.log(da));
    assert!(started.elapsed() < Duration::from_millis(3_500), "gave up after {:?}", started.elapsed());
    assert!(lab.log(da).contains("timed out"), "{}", lab.log(da));
    // And the plain-http warning came first.
    assert!(
        lab.log(da).contains("plain http: anyone on the path can rewrite the peer table"),
        "{}",
        lab.log(da)
    );
}

#[test]
fn a_304_to_the_first_fetch_is_a_clear_error() {
    let Some(mut lab) = Lab::new("a_304_to_the_first_fetch_is_a_clear_error") else { return };
    let web = lab.host("web", "10.100.0.80/24");
    let server = HttpServer::start(listen_in(&web, "10.100.0.80:8080"), None);
    server.set("/hosts.json", Reply::status(304));
    let a = lab.host("a", "10.100.0.1/24");
    let da = lab.udptun(&a, &["--hosts-url", "http://10.100.0.80:8080/hosts.json", "-d", "udptun"]);
    assert_eq!(lab.wait_exit(da, Duration::from_secs(10)), Some(75), "{}", lab.log(da));
    let log = lab.log(da);
    assert!(log.contains("HTTP 304 Not Modified to a request that named no version"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// nginx serving the files of `root` on `listen` in `ns`, with its ETag and Last-Modified and
/// its 304s: the real thing a hosts document is served with.
fn nginx(lab: &mut Lab, ns: &str, listen: &str, root: &std::path::Path) -> usize {
    let dir = lab.dir.join("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let config = format!(
        "daemon off; master_process off; user root; pid {d}/nginx.pid; error_log stderr;\n\
         events {{}}\n\
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
         server {{ listen {listen}; root {}; }} }}\n",
        root.display()
    );
    let config_file = lab.file("nginx.conf", &config);
    let index = lab.spawn(ns, &["nginx", "-p", &dir.display().to_string(), "-c", &config_file], &[]);
    assert!(wait_until(Duration::from_secs(10), || common::can_connect(ns, listen)), "{}", lab.log(index));
    index
}

#[test]
fn a_document_that_failed_once_is_applied_once_it_works() {
    let Some(mut lab) = Lab::new("a_document_that_failed_once_is_applied") else { return };
    let web = lab.host("web", "10.100.0.80/24");
    let root = lab.dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    let document = root.join("hosts.json");
    std::fs::write(&document, common::hosts_doc(&[1, 2])).unwrap();
    nginx(&mut lab, &web, "10.100.0.80:8080", &root);
    let a = lab.host("h1", "10.100.0.1/24");
    let b = lab.host("h2", "10.100.0.2/24");
    let c = lab.host("h3", "10.100.0.3/24");
    // late.test resolves only once it is added to /etc/hosts; DNS answers at once, with an error.
    lab.etc_hosts(&a, "127.0.0.1 localhost\n");
    std::fs::write(format!("/etc/netns/{a}/resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    let metrics = "127.0.0.1:9112";
    let da = lab.udptun(
        &a,
        &[
            "--hosts-url",
            "http://10.100.0.80:8080/hosts.json",
            "--hosts-url-interval",
            "0.5",
            "-d",
            "udptun",
            "--address",
            "192.168.100.1/24",
            "--metrics-listen",
            metrics,
        ],
    );
    lab.spoke(&b, 2, &[]);
    lab.spoke(&c, 3, &[]);
    lab.wait_device(&a, "udptun");
    lab.assert_ping(&a, "192.168.100.2");
    let conditional = wait_until(Duration::from_secs(5), || lab.log(da).contains("unchanged"));
    assert!(conditional, "nginx answers 304 to the fetches that name the version: {}", lab.log(da));

    // The new document names a host that does not resolve yet: it fails, again and again.
    let late = "{ nodes: { \"192.168.100.2\": { host: \"10.100.0.2\" }, \"192.168.100.3\": { host: \"late.test\" } } }";
    std::fs::write(&document, late).unwrap();
    assert!(wait_until(Duration::from_secs(5), || lab.log(da).contains("`late.test` does not resolve")));
    let stamp = || lab.scrape(&a, metrics, "udptun_hosts_last_success_timestamp_seconds");
    let during_failures = stamp();
    thread::sleep(Duration::from_millis(2_500));
    assert_eq!(stamp(), during_failures, "the success time must not move while the document fails");
    assert!(
        lab.scrape(&a, metrics, "udptun_hosts_load_failures_total") >= 3,
        "refetched whole, failing each time"
    );

    // Once the name resolves, the document is applied, though nginx has served it unchanged.
    lab.etc_hosts(&a, "127.0.0.1 localhost\n10.100.0.3 late.test\n");
    lab.assert_ping(&a, "192.168.100.3");
    assert!(stamp() > during_failures);
}

#[test]
fn a_hosts_file_that_failed_once_is_applied_once_it_works() {
    let Some(mut lab) = Lab::new("a_hosts_file_that_failed_once_is_applied") else { return };
    let hosts = lab.file("hosts.json", &common::hosts_doc(&[1, 2]));
    let a = lab.host("h1", "10.100.0.1/24");
    let b = lab.host("h2", "10.100.0.2/24");
    let c = lab.host("h3", "10.100.0.3/24");
    lab.etc_hosts(&a, "127.0.0.1 localhost\n");
    std::fs::write(format!("/etc/netns/{a}/resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    let da = lab.udptun(
        &a,
        &[
            "--hosts-file",
            &hosts,
            "--resolve-interval",
            "0.5",
            "-d",
            "udptun",
            "--address",
            "192.168.100.1/24",
        ],
    );
    lab.spoke(&b, 2, &[]);
    lab.spoke(&c, 3, &[]);
    lab.wait_device(&a, "udptun");
    lab.assert_ping(&a, "192.168.100.2");

    // The file changes once, to name a host that does not resolve yet, and then stays as it is.
    let late = "{ nodes: { \"192.168.100.2\": { host: \"10.100.0.2\" }, \"192.168.100.3\": { host: \"late.test\" } } }";
    std::fs::write(&hosts, late).unwrap();
    assert!(wait_until(Duration::from_secs(5), || lab.log(da).contains("`late.test` does not resolve")));
    lab.etc_hosts(&a, "127.0.0.1 localhost\n10.100.0.3 late.test\n");
    lab.assert_ping(&a, "192.168.100.3");
}

#[test]
fn keepalives_leave_on_time_while_the_resolver_hangs() {
    let Some(mut lab) = Lab::new("keepalives_leave_on_time_while_dns_hangs") else { return };
    let metrics = "127.0.0.1:9113";
    let a = lab.host("a", "10.100.0.1/24");
    let b = lab.host("b", "10.100.0.2/24");
    // A resolver that takes every question and answers none.
    let dns = lab.host("dns", "10.100.0.53/24");
    let silent = common::in_netns(&dns, || UdpSocket::bind("10.100.0.53:53").unwrap());
    lab.etc_hosts(&b, "10.100.0.1 peer-a.test\n");
    std::fs::write(format!("/etc/netns/{b}/resolv.conf"), "nameserver 10.100.0.53\noptions timeout:5\n")
        .unwrap();
    lab.udptun(
        &a,
        &["-A", "10.100.0.2", "-d", "udptun", "--address", "192.168.100.1/24", "--metrics-listen", metrics],
    );
    let db = lab.udptun(
        &b,
        &[
            "-A",
            "peer-a.test",
            "-d",
            "udptun",
            "--address",
            "192.168.100.2/24",
            "--keepalive",
            "1",
            "--resolve-interval",
            "1",
            "--resolve-timeout",
            "2",
        ],
    );
    lab.wait_device(&a, "udptun");
    lab.wait_device(&b, "udptun");
    lab.assert_ping(&a, "192.168.100.2");

    // From now on every lookup of peer-a.test goes to the silent resolver.
    lab.etc_hosts(&b, "127.0.0.1 localhost\n");
    let keepalives = || lab.scrape(&a, metrics, "udptun_keepalives_received_total");
    thread::sleep(Duration::from_secs(1));
    let before = keepalives();
    thread::sleep(Duration::from_secs(12));
    let sent = keepalives() - before;
    assert!(sent >= 11, "{sent} keepalives in 12 s while DNS hung; logs:\n{}", lab.all_logs());
    assert!(lab.log(db).contains("no answer within 2 s"), "{}", lab.log(db));
    // The last address stayed in force.
    lab.assert_ping(&a, "192.168.100.2");
    drop(silent);
}

#[test]
fn signals_during_the_first_fetch_are_handled() {
    let Some(mut lab) = Lab::new("signals_during_the_first_fetch") else { return };
    let web = lab.host("web", "10.100.0.80/24");
    let server = HttpServer::start(listen_in(&web, "10.100.0.80:8080"), None);
    server.set("/hosts.json", Reply::body(common::Body::Hang));
    let a = lab.host("a", "10.100.0.1/24");
    let da = lab.udptun(&a, &["--hosts-url", "http://10.100.0.80:8080/hosts.json", "-d", "udptun"]);
    assert!(wait_until(Duration::from_secs(10), || server.hits("/hosts.json") > 0));
    // SIGHUP while the first fetch hangs: queued, not fatal.
    lab.signal(da, libc::SIGHUP);
    thread::sleep(Duration::from_millis(500));
    assert!(lab.running(da), "SIGHUP killed it: {}", lab.log(da));
    // SIGTERM ends it at once, cleanly.
    lab.signal(da, libc::SIGTERM);
    assert_eq!(lab.wait_exit(da, Duration::from_secs(2)), Some(0), "{}", lab.log(da));
    assert!(lab.log(da).contains("during start-up: exiting"), "{}", lab.log(da));
}

/// A minisign key pair made by the minisign CLI, without a password, in the lab's directory:
/// the paths of the public and the secret key.
fn minisign_keys(lab: &Lab, name: &str) -> (String, String) {
    let public = lab.dir.join(format!("{name}.pub")).display().to_string();
    let secret = lab.dir.join(format!("{name}.key")).display().to_string();
    common::sh(&["minisign", "-G", "-W", "-p", &public, "-s", &secret]);
    (public, secret)
}

/// A document and its detached signature, as the minisign CLI made it.
struct Signed {
    document: String,
    signature: String,
    /// The `timestamp:` of its trusted comment.
    at: u64,
}

/// Writes `document` as `name` in the lab's directory and signs it with `secret` (`minisign
/// -S`), with `comment` as its trusted comment if given (minisign's own otherwise).
fn minisign_sign(lab: &Lab, secret: &str, name: &str, document: &str, comment: Option<&str>) -> Signed {
    let path = lab.file(name, document);
    let mut args = vec!["minisign", "-S", "-s", secret, "-m", &path];
    args.extend(comment.iter().flat_map(|comment| ["-t", comment]));
    common::sh(&args);
    let signature = std::fs::read_to_string(format!("{path}.minisig")).unwrap();
    let trusted = signature.lines().find_map(|l| l.strip_prefix("trusted comment: ")).unwrap();
    let digits = trusted.split("timestamp:").nth(1).unwrap();
    let at = digits[..digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len())].parse().unwrap();
    Signed { document: document.to_string(), signature, at }
}

/// Replaces `name` in `dir` at once (a rename), as a careful publisher does.
fn put(dir: &std::path::Path, name: &str, contents: &str) {
    let staged = dir.join(format!(".{name}.new"));
    std::fs::write(&staged, contents).unwrap();
    std::fs::rename(staged, dir.join(name)).unwrap();
}

/// Serves `signed` as `hosts.json` and `hosts.json.minisig` in `dir`.
fn publish(dir: &std::path::Path, signed: &Signed) {
    put(dir, "hosts.json", &signed.document);
    put(dir, "hosts.json.minisig", &signed.signature);
}

#[test]
fn a_signed_document_is_applied_and_a_changed_or_older_one_is_not() {
    let Some(mut lab) = Lab::new("a_signed_document_is_applied") else { return };
    let (public, secret) = minisign_keys(&lab, "hosts");
    let web = lab.host("web", "10.100.0.80/24");
    let root = lab.dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    let v1 = minisign_sign(&lab, &secret, "v1.json", &common::hosts_doc(&[1, 2]), None);
    publish(&root, &v1);
    nginx(&mut lab, &web, "10.100.0.80:8080", &root);
    let a = lab.host("h1", "10.100.0.1/24");
    let b = lab.host("h2", "10.100.0.2/24");
    let c = lab.host("h3", "10.100.0.3/24");
    let metrics = "127.0.0.1:9114";
    let da = lab.udptun(
        &a,
        &[
            "--hosts-url",
            "http://10.100.0.80:8080/hosts.json",
            "--hosts-url-interval",
            "0.5",
            "--hosts-pubkey",
            &public,
            "-d",
            "udptun",
            "--address",
            "192.168.100.1/24",
            "--metrics-listen",
            metrics,
        ],
    );
    lab.spoke(&b, 2, &[]);
    lab.spoke(&c, 3, &[]);
    lab.wait_device(&a, "udptun");
    // The signed overlay comes up, over plain http with no warning: the signature protects it.
    lab.assert_ping(&a, "192.168.100.2");
    assert!(!lab.log(da).contains("plain http"), "{}", lab.log(da));
    let signed_at = || lab.scrape(&a, metrics, "udptun_hosts_signed_timestamp_seconds");
    assert_eq!(signed_at(), v1.at);
    let refused =
        |reason: &str| lab.scrape(&a, metrics, &format!("udptun_hosts_refused_total{{reason=\"{reason}\"}}"));

    // The document changes on the server without a new signature: refused, the table stays.
    // (Each version has its own size: nginx's ETag is the size and the second of the change.)
    put(&root, "hosts.json", &common::hosts_doc(&[1, 2, 3]));
    // The refusal is counted, then logged: once the line is there, so is the count.
    let refusal = "hosts.json: refused: signature http://10.100.0.80:8080/hosts.json.minisig: does \
                   not verify under --hosts-pubkey";
    assert!(wait_until(Duration::from_secs(5), || lab.log(da).contains(refusal)), "{}", lab.log(da));
    assert!(refused("signature") > 0);
    assert!(!lab.ping(&a, "192.168.100.3"), "the changed document was applied");
    lab.assert_ping(&a, "192.168.100.2");

    // Signed again (a second later, so its timestamp is later): applied.
    thread::sleep(Duration::from_millis(1_100));
    let v2 = minisign_sign(&lab, &secret, "v2.json", &format!("{}\n", common::hosts_doc(&[1, 3])), None);
    assert!(v2.at > v1.at, "{} then {}", v1.at, v2.at);
    publish(&root, &v2);
    lab.assert_ping(&a, "192.168.100.3");
    assert!(wait_until(Duration::from_secs(5), || signed_at() == v2.at), "{}", lab.log(da));
    assert!(lab.log(da).contains(&format!("loaded, signed at {}", v2.at)), "{}", lab.log(da));

    // The older genuine document and its signature, served again: refused, the newer table stays.
    publish(&root, &v1);
    let rollback = format!("signed at {}, {} s before the table in force", v1.at, v2.at - v1.at);
    assert!(wait_until(Duration::from_secs(5), || lab.log(da).contains(&rollback)), "{}", lab.log(da));
    assert!(refused("rollback") > 0);
    thread::sleep(Duration::from_secs(1));
    lab.assert_ping(&a, "192.168.100.3");
    assert!(!lab.ping(&a, "192.168.100.2"), "the older document was applied");
    assert_eq!(signed_at(), v2.at);
    let shown = lab.output(&a, &[common::UDPTUN, "show", "udptun", "--json"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains(&format!("\"signed\":{},", v2.at)), "{shown}");
    assert_eq!(refused("stale"), 0);
}

#[test]
fn an_unsigned_document_one_by_another_key_or_signed_long_ago_is_refused_at_start() {
    let Some(mut lab) = Lab::new("a_document_by_another_key_is_refused_at_start") else { return };
    let (public, secret) = minisign_keys(&lab, "trusted");
    let (_, other_secret) = minisign_keys(&lab, "other");
    let web = lab.host("web", "10.100.0.80/24");
    let server = HttpServer::start(listen_in(&web, "10.100.0.80:8080"), None);
    let by_other = minisign_sign(&lab, &other_secret, "other.json", &common::hosts_doc(&[1, 2]), None);
    server.set("/hosts.json", Reply::ok(&by_other.document));
    server.set("/hosts.json.minisig", Reply::ok(&by_other.signature));
    let a = lab.host("a", "10.100.0.1/24");
    let url = "http://10.100.0.80:8080/hosts.json";
    let da = lab.udptun(&a, &["--hosts-url", url, "--hosts-pubkey", &public, "-d", "udptun"]);
    // EX_TEMPFAIL: the server can be mended.
    assert_eq!(lab.wait_exit(da, Duration::from_secs(10)), Some(75), "{}", lab.log(da));
    let expected =
        format!("{url}: refused: signature {url}.minisig: made by another key than --hosts-pubkey's");
    assert!(lab.log(da).contains(&expected), "{}", lab.log(da));

    // A hosts file: no signature, then one two hours old with --hosts-max-age 3600 (EX_CONFIG:
    // the file must be signed again), then a fresh one: only that starts.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let file = lab.file("hosts.json", &common::hosts_doc(&[1, 2]));
    let args = ["--hosts-file", &file, "--hosts-pubkey", &public, "--hosts-max-age", "3600", "-d", "udptun"];
    let unsigned = lab.udptun(&a, &args);
    assert_eq!(lab.wait_exit(unsigned, Duration::from_secs(10)), Some(78), "{}", lab.log(unsigned));
    assert!(
        lab.log(unsigned).contains(&format!("refused: no signature at {file}.minisig")),
        "{}",
        lab.log(unsigned)
    );
    let comment = format!("timestamp:{} file:hosts.json", now - 7200);
    let old = minisign_sign(&lab, &secret, "hosts.json", &common::hosts_doc(&[1, 2]), Some(&comment));
    assert_eq!(old.at, now - 7200);
    let stale = lab.udptun(&a, &args);
    assert_eq!(lab.wait_exit(stale, Duration::from_secs(10)), Some(78), "{}", lab.log(stale));
    let log = lab.log(stale);
    let age: u64 = log
        .split(&format!("{file}: refused: signed "))
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no age in: {log}"));
    assert!((7200..7210).contains(&age), "{log}");
    let expected = format!("s ago (at {}), longer ago than --hosts-max-age 3600 s", old.at);
    assert!(log.contains(&expected), "{log}");
    minisign_sign(&lab, &secret, "hosts.json", &common::hosts_doc(&[1, 2]), None);
    let fresh = lab.udptun(&a, &args);
    lab.wait_started(fresh);
    assert!(lab.running(fresh), "{}", lab.log(fresh));
}
