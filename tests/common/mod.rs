//! Test lab: network namespaces joined by a bridge, the real udptun binary running in them, and
//! cleanup that happens even when a test fails (the `Lab` is dropped while unwinding).
#![allow(dead_code)] // each test binary uses a different part of this module

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

pub const UDPTUN: &str = env!("CARGO_BIN_EXE_udptun");

/// The daemon the lab runs: this build, or the one `UDPTUN_BINARY` names (to show that a test
/// fails on an older build: `UDPTUN_BINARY=/old/udptun cargo test --test attacks`).
pub fn udptun_binary() -> String {
    std::env::var("UDPTUN_BINARY").unwrap_or_else(|_| UDPTUN.to_string())
}

static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

/// The commands the namespace tests run, with their packages: `scripts/tools.list`, the list
/// `scripts/deps.sh test` installs from.
const TOOLS_LIST: &str = include_str!("../../scripts/tools.list");

/// Set to run the other tests on a machine without root or `/dev/net/tun`: the namespace tests
/// then skip, each with a line saying so. Ignored under CI=true, which must run them.
const SKIP_VARIABLE: &str = "UDPTUN_SKIP_NAMESPACE_TESTS";

/// What this machine lacks for the namespace tests (root, `/dev/net/tun`, the commands in
/// `scripts/tools.list`), checked once per test binary; `None` when it has everything.
fn missing_for_namespace_tests() -> Option<&'static str> {
    static MISSING: OnceLock<Option<String>> = OnceLock::new();
    MISSING
        .get_or_init(|| {
            let mut missing = Vec::new();
            if unsafe { libc::geteuid() } != 0 {
                missing.push("root".to_string());
            }
            if !Path::new("/dev/net/tun").exists() {
                missing.push("/dev/net/tun".to_string());
            }
            for line in TOOLS_LIST.lines().filter(|l| !l.starts_with('#')) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if let [tool, package, needed_by @ ..] = &fields[..]
                    && needed_by.contains(&"test")
                    && !on_path(tool)
                {
                    missing.push(format!("the command `{tool}` (Debian package {package})"));
                }
            }
            (!missing.is_empty()).then(|| {
                format!(
                    "the namespace tests need {}: run them as root with `scripts/test.sh`, which \
                     installs missing packages, or set {SKIP_VARIABLE}=1 to skip them",
                    missing.join(", ")
                )
            })
        })
        .as_deref()
}

/// Whether `tool` is an executable file in a directory of `$PATH`.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join(tool)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Whether this test can run. When the machine lacks something, the test fails with one message
/// naming what is missing, unless the user opted out with UDPTUN_SKIP_NAMESPACE_TESTS=1 (never
/// under CI=true): a skipped namespace test must not look like a passed one by accident.
pub fn can_run(test: &str) -> bool {
    let Some(missing) = missing_for_namespace_tests() else { return true };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !ci && std::env::var_os(SKIP_VARIABLE).is_some_and(|v| !v.is_empty()) {
        eprintln!("SKIPPED {test}: {SKIP_VARIABLE} is set");
        return false;
    }
    panic!("{test}: {missing}");
}

/// Tests in one binary run in parallel. Those whose property is a time (a restart within a
/// second, an exit within a second) hold this exclusively; those that load the machine (bulk
/// transfers) hold it shared; so no timing is measured while a sibling pushes gigabytes.
static MACHINE: RwLock<()> = RwLock::new(());

/// Held by a test that loads the machine: timed tests wait until it is done.
pub fn loads_the_machine() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Held by a test that measures time: no loading test of its binary runs meanwhile.
pub fn measures_time() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let output = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(output.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A set of namespaces on one bridge (in a namespace of its own), torn down on drop.
pub struct Lab {
    pub name: String,
    switch: String,
    namespaces: Vec<String>,
    daemons: Vec<Child>,
    pub dir: PathBuf,
    next_port: usize,
}

impl Lab {
    /// A new empty lab; `None` (test skipped) when the user opted out of namespace tests on a
    /// machine that cannot run them.
    pub fn new(test: &str) -> Option<Lab> {
        if !can_run(test) {
            return None;
        }
        let name = format!("ut{}x{}", std::process::id(), NEXT_LAB.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(format!("udptun-{name}"));
        fs::create_dir_all(&dir).unwrap();
        let switch = format!("{name}-sw");
        let mut lab = Lab {
            name,
            switch: switch.clone(),
            namespaces: Vec::new(),
            daemons: Vec::new(),
            dir,
            next_port: 0,
        };
        lab.add_namespace(&switch);
        lab.exec(&switch, &["ip", "link", "add", "br0", "type", "bridge"]);
        lab.exec(&switch, &["ip", "link", "set", "br0", "up"]);
        Some(lab)
    }

    fn add_namespace(&mut self, ns: &str) {
        sh(&["ip", "netns", "add", ns]);
        self.namespaces.push(ns.to_string());
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        // Keep router solicitations and DAD from the tests' way.
        let _ = Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
            .status();
    }

    /// Turns IPv6 on in `ns`, without duplicate address detection (addresses usable at once).
    pub fn enable_ipv6(&self, ns: &str) {
        for setting in [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.default.disable_ipv6=0",
        ] {
            self.exec(ns, &["sysctl", "-qw", setting]);
        }
    }

    /// Fetches `path` from an HTTP server at `addr` inside `ns`; returns the body.
    pub fn http_get(&self, ns: &str, addr: &str, path: &str) -> String {
        let (addr, request) = (addr.to_string(), format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        in_netns(ns, move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        })
    }

    /// The namespace name of host `host`.
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.name)
    }

    /// Adds a host on the bridge with `eth0` at `cidr` (e.g. "10.0.0.1/24"); returns its namespace.
    pub fn host(&mut self, host: &str, cidr: &str) -> String {
        let ns = self.ns(host);
        self.add_namespace(&ns);
        let port = format!("p{}", self.next_port);
        self.next_port += 1;
        sh(&[
            "ip",
            "link",
            "add",
            "eth0",
            "netns",
            &ns,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch,
        ]);
        self.exec(&self.switch.clone(), &["ip", "link", "set", &port, "master", "br0", "up"]);
        self.exec(&ns, &["ip", "addr", "add", cidr, "dev", "eth0"]);
        self.exec(&ns, &["ip", "link", "set", "eth0", "up"]);
        ns
    }

    /// Adds host `host` on a LAN behind `router`: `SUBNET.2/24` on its `eth0`, `SUBNET.1/24` on
    /// the router's `lan0`, the router as its default route, forwarding on in the router.
    pub fn host_behind(&mut self, router: &str, host: &str, subnet: &str) -> String {
        let ns = self.ns(host);
        self.add_namespace(&ns);
        sh(&[
            "ip", "link", "add", "lan0", "netns", router, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ]);
        for (side, dev, last) in [(router, "lan0", 1), (ns.as_str(), "eth0", 2)] {
            self.exec(side, &["ip", "addr", "add", &format!("{subnet}.{last}/24"), "dev", dev]);
            self.exec(side, &["ip", "link", "set", dev, "up"]);
        }
        self.exec(&ns, &["ip", "route", "add", "default", "via", &format!("{subnet}.1")]);
        self.exec(router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        ns
    }

    /// Runs a command in a namespace; panics if it fails; returns stdout.
    pub fn exec(&self, ns: &str, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs a command in a namespace and returns its output, whatever its status.
    pub fn output(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", ns]).args(args).output().unwrap()
    }

    /// Starts udptun in `ns` with `args`; stderr goes to a log file. Returns an index for
    /// [`Lab::log`] and [`Lab::stop`].
    pub fn udptun(&mut self, ns: &str, args: &[&str]) -> usize {
        self.spawn(ns, &[&udptun_binary()], args)
    }

    /// Starts a spoke in `ns`: a one-to-one udptun (plus `extra` flags) toward the hub at
    /// 10.100.0.1, as device `udptun` with the address 192.168.100.`host`/24.
    pub fn spoke(&mut self, ns: &str, host: u8, extra: &[&str]) -> usize {
        let address = format!("192.168.100.{host}/24");
        self.udptun(ns, &[&["-A", "10.100.0.1", "-d", "udptun", "--address", &address], extra].concat())
    }

    /// Starts udptun in `ns` with `args` and the environment variables `env`.
    pub fn udptun_env(&mut self, ns: &str, env: &[(&str, &str)], args: &[&str]) -> usize {
        self.spawn_env(ns, env, &[&udptun_binary()], args)
    }

    /// Starts udptun in `ns` with `args` as systemd starts a service whose stderr is the journal:
    /// `JOURNAL_STREAM` names its stderr (here its log file) by device and inode, in decimal.
    pub fn udptun_journal(&mut self, ns: &str, args: &[&str]) -> usize {
        use std::os::unix::fs::MetadataExt;
        // The log file `spawn_env` truncates keeps the inode made here.
        let meta = fs::File::create(self.log_path(self.daemons.len())).unwrap().metadata().unwrap();
        let stream = format!("{}:{}", meta.dev(), meta.ino());
        self.udptun_env(ns, &[("JOURNAL_STREAM", &stream)], args)
    }

    /// Starts `prefix` + `args` in `ns` as a daemon of the lab.
    pub fn spawn(&mut self, ns: &str, prefix: &[&str], args: &[&str]) -> usize {
        self.spawn_env(ns, &[], prefix, args)
    }

    /// Starts `prefix` + `args` in `ns`, with the environment variables `env`, as a daemon.
    pub fn spawn_env(&mut self, ns: &str, env: &[(&str, &str)], prefix: &[&str], args: &[&str]) -> usize {
        let index = self.daemons.len();
        let log = fs::File::create(self.log_path(index)).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(prefix)
            .args(args)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemons.push(child);
        index
    }

    fn log_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("daemon-{index}.log"))
    }

    /// What daemon `index` has logged so far.
    pub fn log(&self, index: usize) -> String {
        fs::read_to_string(self.log_path(index)).unwrap_or_default()
    }

    /// Waits for daemon `index` to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, index: usize, timeout: Duration) -> Option<i32> {
        let child = &mut self.daemons[index];
        let mut code = None;
        wait_until(timeout, || match child.try_wait() {
            Ok(Some(status)) => {
                code = status.code();
                true
            }
            _ => false,
        });
        code
    }

    /// Whether daemon `index` is still running (not exited, not killed by a signal).
    pub fn running(&mut self, index: usize) -> bool {
        matches!(self.daemons[index].try_wait(), Ok(None))
    }

    /// Sends `signal` to daemon `index`.
    pub fn signal(&self, index: usize, signal: i32) {
        unsafe { libc::kill(self.daemons[index].id() as i32, signal) };
    }

    /// Stops daemon `index` with SIGTERM and returns its log.
    pub fn stop(&mut self, index: usize) -> String {
        self.signal(index, libc::SIGTERM);
        assert!(self.wait_exit(index, Duration::from_secs(5)).is_some(), "daemon {index} did not stop");
        self.log(index)
    }

    /// Waits until `dev` exists in `ns`.
    pub fn wait_device(&self, ns: &str, dev: &str) {
        let appeared = wait_until(Duration::from_secs(10), || {
            Command::new("ip")
                .args(["-n", ns, "link", "show", dev])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        assert!(appeared, "{dev} did not appear in {ns}; logs: {}", self.all_logs());
    }

    /// Waits until daemon `index` has logged its start-up line ("... listening on ..."): its
    /// first table is loaded, its addresses set, its privileges dropped and its threads running;
    /// a signal from then on gets a clean shutdown with the summary. The device appears
    /// before all that, so [`Lab::wait_device`] alone does not say the daemon is ready.
    pub fn wait_started(&self, index: usize) {
        let started = wait_until(Duration::from_secs(10), || self.log(index).contains("listening on"));
        assert!(started, "daemon {index} did not start:\n{}", self.log(index));
    }

    /// Waits for `dev` in `ns`, then addresses it with `cidr` and sets it up.
    pub fn tunnel_up(&self, ns: &str, dev: &str, cidr: &str) {
        self.wait_device(ns, dev);
        self.exec(ns, &["ip", "addr", "add", cidr, "dev", dev]);
        self.exec(ns, &["ip", "link", "set", dev, "up"]);
    }

    /// Hosts a (10.100.0.1) and b (10.100.0.2) on the bridge, each with a one-to-one udptun
    /// (plus `extra` flags) that sets up 192.168.100.1/.2 itself; returns once ping crosses.
    pub fn pair(&mut self, extra: &[&str]) -> (String, String, usize, usize) {
        let a = self.host("a", "10.100.0.1/24");
        let b = self.host("b", "10.100.0.2/24");
        let da = self.udptun(
            &a,
            &[&["-A", "10.100.0.2", "-d", "udptun", "--address", "192.168.100.1/24"], extra].concat(),
        );
        let db = self.spoke(&b, 2, extra);
        // Started, not only pingable: a signal before the start-up line ends a daemon at once.
        self.wait_started(da);
        self.wait_started(db);
        self.assert_ping(&a, "192.168.100.2");
        (a, b, da, db)
    }

    /// Whether `ns` can ping `addr` (3 tries, one must answer).
    pub fn ping(&self, ns: &str, addr: &str) -> bool {
        self.output(ns, &["ping", "-c", "3", "-i", "0.2", "-W", "1", addr])
            .stdout
            .windows(4)
            .any(|w| w == b" 0% " || w == b"ttl=")
    }

    /// Asserts that `ns` reaches `addr`, with logs on failure.
    pub fn assert_ping(&self, ns: &str, addr: &str) {
        let ok = wait_until(Duration::from_secs(5), || self.ping(ns, addr));
        assert!(ok, "{ns} cannot ping {addr}; logs:\n{}", self.all_logs());
    }

    /// A counter of `dev` in `ns` from /sys/class/net/DEV/statistics (`rx_packets`, `tx_bytes`...).
    /// On a TUN device, `tx` is what the kernel routed into the tunnel, `rx` what udptun wrote.
    pub fn device_counter(&self, ns: &str, dev: &str, counter: &str) -> u64 {
        let path = format!("/sys/class/net/{dev}/statistics/{counter}");
        let text = self.exec(ns, &["cat", &path]);
        text.trim().parse().unwrap_or_else(|_| panic!("{path} in {ns}: {text:?}"))
    }

    /// The metric `series` (name and labels, as exposed) of the daemon in `ns` that serves
    /// metrics on `addr`.
    pub fn scrape(&self, ns: &str, addr: &str, series: &str) -> u64 {
        let page = self.http_get(ns, addr, "/metrics");
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        metric(&page, series)
    }

    /// Waits until the daemon in `ns` serves metrics on `addr`.
    pub fn wait_metrics(&self, ns: &str, addr: &str) {
        let up = wait_until(Duration::from_secs(10), || can_connect(ns, addr));
        assert!(up, "no metrics on {addr} in {ns}; logs:\n{}", self.all_logs());
    }

    /// Process id of daemon `index` (the `ip netns exec` wrapper execs the program, keeping it).
    pub fn pid(&self, index: usize) -> u32 {
        self.daemons[index].id()
    }

    /// Every daemon's log, for failure messages.
    pub fn all_logs(&self) -> String {
        (0..self.daemons.len()).map(|i| format!("--- daemon {i}:\n{}", self.log(i))).collect()
    }

    /// Writes a file in the lab's directory and returns its path.
    pub fn file(&self, name: &str, contents: &str) -> String {
        let path = self.dir.join(name);
        fs::write(&path, contents).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// Gives `ns` its own /etc/hosts (ip netns exec bind-mounts /etc/netns/NS/hosts).
    pub fn etc_hosts(&self, ns: &str, contents: &str) {
        let dir = Path::new("/etc/netns").join(ns);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("hosts"), contents).unwrap();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            // Deleting a namespace does not stop what runs in it.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A hosts document in the original format mapping 192.168.100.N to 10.100.0.N for each N.
pub fn hosts_doc(hosts: &[u8]) -> String {
    let entries: Vec<String> =
        hosts.iter().map(|i| format!("\"192.168.100.{i}\": {{ \"host\": \"10.100.0.{i}\" }}")).collect();
    format!("{{ \"nodes\": {{ {} }} }}", entries.join(", "))
}

/// `/proc/PID/status` of the udptun running in `ns`.
pub fn daemon_status(ns: &str) -> String {
    sh(&["ip", "netns", "pids", ns])
        .split_whitespace()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .find(|status| status.starts_with("Name:\tudptun"))
        .unwrap_or_else(|| panic!("no udptun runs in {ns}"))
}

/// Runs `f` on a thread that has entered namespace `ns`; sockets it creates live there.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    thread::spawn(move || {
        let file = fs::File::open(&path).unwrap();
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// What a canned response sends as its body.
#[derive(Clone)]
pub enum Body {
    /// These bytes, with their Content-Length.
    Bytes(Vec<u8>),
    /// A Content-Length of this many bytes, and zeros streamed until the client stops reading.
    Zeros(u64),
    /// No Content-Length: zeros until the client goes away.
    Endless,
    /// Nothing at all, not even the status line: the connection is held open.
    Hang,
}

/// One canned HTTP response.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// How long the server waits before it answers.
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply::body(Body::Bytes(body.as_bytes().to_vec()))
    }
    pub fn status(status: u16) -> Reply {
        Reply { status, ..Reply::body(Body::Bytes(b"error".to_vec())) }
    }
    pub fn redirect(location: &str) -> Reply {
        Reply {
            status: 302,
            headers: vec![("Location".into(), location.into())],
            ..Reply::body(Body::Bytes(vec![]))
        }
    }
    pub fn body(body: Body) -> Reply {
        Reply { status: 200, headers: vec![], body, delay: Duration::ZERO }
    }
    /// The same reply, sent after `delay`.
    pub fn delayed(self, delay: Duration) -> Reply {
        Reply { delay, ..self }
    }
}

/// A tiny HTTP/1.1 server (optionally TLS) with replies the test changes while it runs.
pub struct HttpServer {
    pub routes: Arc<Mutex<Vec<(String, Reply)>>>,
    pub hits: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    /// Serves on `listener` (bound inside a namespace with [`in_netns`]).
    pub fn start(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> HttpServer {
        let routes: Arc<Mutex<Vec<(String, Reply)>>> = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, h) = (routes.clone(), hits.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, h, tls) = (r.clone(), h.clone(), tls.clone());
                thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    match tls {
                        Some(config) => {
                            let Ok(conn) = rustls::ServerConnection::new(config) else { return };
                            let mut stream = stream;
                            let mut tls_stream = rustls::StreamOwned::new(conn, &mut stream);
                            serve_one(&mut tls_stream, &r, &h);
                        }
                        None => serve_one(&mut { stream }, &r, &h),
                    }
                });
            }
        });
        HttpServer { routes, hits }
    }

    pub fn set(&self, path: &str, reply: Reply) {
        let mut routes = self.routes.lock().unwrap();
        routes.retain(|(p, _)| p != path);
        routes.push((path.to_string(), reply));
    }

    /// Requests for `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.requests_with(path, "")
    }

    /// Requests for `path` so far whose text contains `needle` (a header, say; any case).
    pub fn requests_with(&self, path: &str, needle: &str) -> usize {
        let needle = needle.to_lowercase();
        self.requests(path).iter().filter(|r| r.contains(&needle)).count()
    }

    /// The text of each request for `path` so far, in order, in lower case.
    pub fn requests(&self, path: &str) -> Vec<String> {
        let request_line = format!(" {path} ");
        let requests = self.hits.lock().unwrap();
        requests.iter().filter(|r| r.contains(&request_line)).map(|r| r.to_lowercase()).collect()
    }
}

fn serve_one<S: Read + Write>(
    stream: &mut S,
    routes: &Mutex<Vec<(String, Reply)>>,
    hits: &Mutex<Vec<String>>,
) {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => request.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    hits.lock().unwrap().push(text.to_string());
    let reply = routes.lock().unwrap().iter().find(|(p, _)| *p == path).map(|(_, r)| r.clone());
    let reply = reply.unwrap_or(Reply::status(404));
    thread::sleep(reply.delay);
    let length = match &reply.body {
        Body::Bytes(bytes) => Some(bytes.len() as u64),
        Body::Zeros(n) => Some(*n),
        Body::Endless => None,
        Body::Hang => {
            thread::sleep(Duration::from_secs(3600));
            return;
        }
    };
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    if let Some(length) = length {
        head += &format!("Content-Length: {length}\r\n");
    }
    for (k, v) in &reply.headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    let _ = stream.write_all(head.as_bytes());
    match &reply.body {
        Body::Bytes(bytes) => drop(stream.write_all(bytes)),
        _ => {
            let zeros = vec![0u8; 1 << 16];
            while stream.write_all(&zeros).is_ok() {}
        }
    }
    let _ = stream.flush();
}

/// Binds a TCP listener on `addr` inside `ns`.
pub fn listen_in(ns: &str, addr: &str) -> TcpListener {
    let addr = addr.to_string();
    in_netns(ns, move || TcpListener::bind(addr).unwrap())
}

/// A test CA and a server certificate it signed for `names` (DNS names or IP addresses).
pub struct TestPki {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

impl TestPki {
    pub fn new(names: &[&str]) -> TestPki {
        use rcgen::{CertificateParams, KeyPair};
        let (ca_params, ca_key, ca_cert) = test_ca("udptun test CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let server_params = CertificateParams::new(names).unwrap();
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .unwrap();
        TestPki { ca_pem: ca_cert.pem(), server: Arc::new(config) }
    }
}

/// A fresh self-signed CA called `name`: its parameters, key and certificate.
pub fn test_ca(name: &str) -> (rcgen::CertificateParams, rcgen::KeyPair, rcgen::Certificate) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (params, key, cert)
}

/// Connects to `addr` from inside `ns` (for checks that a server is up).
pub fn can_connect(ns: &str, addr: &str) -> bool {
    let addr = addr.to_string();
    in_netns(ns, move || TcpStream::connect(addr).is_ok())
}

/// Deterministic pseudo-random bytes (xorshift64*) from a seed, so both ends can produce the same
/// stream.
pub struct Stream(pub u64);

impl Stream {
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let word = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Sends `total` bytes from `client_ns` to a listener in `server_ns` over TCP through the
/// tunnel; the receiver compares every byte with the stream it expects. Returns the bytes
/// that arrived intact.
pub fn transfer(server_ns: &str, client_ns: &str, server_addr: &'static str, total: u64) -> u64 {
    checked_transfer(server_ns, client_ns, server_addr, total, None)
}

/// [`transfer`], given up once no byte has moved for `stall` (the path swallows the
/// segments): returns the bytes that arrived intact by then.
pub fn transfer_unless_stalled(
    server_ns: &str,
    client_ns: &str,
    server_addr: &'static str,
    total: u64,
    stall: Duration,
) -> u64 {
    checked_transfer(server_ns, client_ns, server_addr, total, Some(stall))
}

fn checked_transfer(
    server_ns: &str,
    client_ns: &str,
    server_addr: &'static str,
    total: u64,
    stall: Option<Duration>,
) -> u64 {
    let listener: TcpListener = listen_in(server_ns, server_addr);
    let receiver = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(stall).unwrap();
        let mut expected = Stream(0x9e37_79b9_7f4a_7c15);
        let (mut got, mut want) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
        let mut pending = 0; // bytes of `want` not yet matched
        let mut offset = 0;
        let mut intact = 0u64;
        loop {
            let n = match conn.read(&mut got) {
                Ok(n) => n,
                Err(e)
                    if stall.is_some() && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return intact;
                }
                Err(e) => panic!("receiving: {e}"),
            };
            if n == 0 {
                return intact;
            }
            let mut done = 0;
            while done < n {
                if pending == 0 {
                    expected.fill(&mut want);
                    pending = want.len();
                    offset = 0;
                }
                let take = (n - done).min(pending);
                assert!(
                    got[done..done + take] == want[offset..offset + take],
                    "corrupt data at byte {}",
                    intact
                );
                intact += take as u64;
                done += take;
                offset += take;
                pending -= take;
            }
        }
    });
    in_netns(client_ns, move || {
        let mut conn = TcpStream::connect(server_addr).unwrap();
        conn.set_write_timeout(stall).unwrap();
        let mut source = Stream(0x9e37_79b9_7f4a_7c15);
        let mut buf = vec![0u8; 1 << 16];
        let mut sent = 0u64;
        while sent < total {
            source.fill(&mut buf);
            let take = (total - sent).min(buf.len() as u64) as usize;
            if let Err(e) = conn.write_all(&buf[..take]) {
                assert!(stall.is_some(), "sending: {e}");
                return;
            }
            sent += take as u64;
        }
    });
    receiver.join().unwrap()
}

/// The value of a metric line (`name{labels} value`) in a Prometheus text page.
pub fn metric(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{page}")) as u64
}

/// An IPv4 packet from `src` to `dst` carrying `payload` as protocol `protocol`, with a valid
/// header checksum (what udptun checks on arrival).
pub fn ipv4_packet(src: [u8; 4], dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut packet = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, protocol, 0, 0];
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&src);
    packet.extend_from_slice(&dst);
    let sum = !packet.chunks(2).fold(0u32, |s, w| {
        let s = s + u32::from(u16::from_be_bytes([w[0], w[1]]));
        (s & 0xffff) + (s >> 16)
    }) as u16;
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// Asserts that every thread of process `pid` holds no capability (effective, permitted,
/// inheritable, ambient) and cannot gain one (no-new-privileges), naming the thread that does.
pub fn assert_no_capabilities(pid: u32) {
    let tasks: Vec<_> =
        std::fs::read_dir(format!("/proc/{pid}/task")).expect("task list").flatten().collect();
    assert!(tasks.len() > 3, "expected the daemon's threads, found {}", tasks.len());
    for task in tasks {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let name = status.lines().next().unwrap_or_default().to_string();
        for field in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
            let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_default();
            assert!(line.ends_with("0000000000000000"), "thread {name}: {line}");
        }
        assert!(status.contains("NoNewPrivs:\t1"), "thread {name}: no-new-privileges is off");
    }
}
