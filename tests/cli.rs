//! Start-up errors: a bad configuration is a clear message and exit status 78 (EX_CONFIG), a
//! failure that may pass 75 (EX_TEMPFAIL). Flags, the environment and the config file are
//! checked before any device or socket exists (so those tests need no privileges); the hosts
//! document, names and the first fetch only once set-up is done and every privilege dropped, so
//! those tests run as root in a network namespace of their own (`unshare --net`), which the
//! device and socket vanish with.
//!
//! Every run has a deadline: a bad configuration that were accepted would start the daemon (as
//! root, in the host's namespace), and the test must then fail, not hang.

mod common;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const UDPTUN: &str = env!("CARGO_BIN_EXE_udptun");
/// Far longer than any of these runs takes (resolving a `.invalid` name included).
const DEADLINE: Duration = Duration::from_secs(10);
/// EX_CONFIG: the configuration is wrong.
const CONFIG: i32 = 78;
/// EX_TEMPFAIL: a start-up failure that may pass.
const TEMPFAIL: i32 = 75;

/// Runs udptun with `args`; fails the test if it is still running after [`DEADLINE`] (and
/// kills it).
fn run(args: &[&str]) -> Output {
    run_program(&[UDPTUN], &[], args)
}

/// Runs udptun with `args` and the environment variables `env`.
fn run_env(env: &[(&str, &str)], args: &[&str]) -> Output {
    run_program(&[UDPTUN], env, args)
}

/// Runs udptun with `args` in a network namespace of its own, as root: for errors found after
/// set-up. `None` when the namespace tests cannot run here (and the user opted out).
fn run_after_setup(test: &str, args: &[&str]) -> Option<Output> {
    common::can_run(test).then(|| run_program(&["unshare", "--net", "--", UDPTUN], &[], args))
}

fn run_program(program: &[&str], env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut child = Command::new(program[0])
        .args(&program[1..])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes while waiting, so that a chatty child cannot block on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).unwrap();
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!("udptun {args:?} still running after {DEADLINE:?} (killed); stderr:\n{stderr}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_hosts_file_names_the_file_the_line_and_the_problem() {
    let dir = std::env::temp_dir().join(format!("udptun-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A document that does not parse is configuration (78); a name that does not resolve may
    // resolve later (75).
    let cases = [
        (
            "syntax.json",
            "{ nodes : {\n  \"10.0.0.1\" : { host : \"a\" },\n  \"10.0.0.2\" : { host : \"b\" ] } }",
            "line 3",
            CONFIG,
        ),
        (
            "key.json",
            "{ nodes : {\n  \"10.0.0.1\" : { host : \"127.0.0.1\" },\n  \"vps3\" : { host : \"b\" } } }",
            "line 3 column 3: `vps3` is not an IP address",
            CONFIG,
        ),
        (
            "port.json",
            "{ nodes : {\n  \"10.0.0.1\" : { host : \"127.0.0.1\", port : 99999 } } }",
            "line 2 column 45: `10.0.0.1`: port must be 1-65535",
            CONFIG,
        ),
        (
            "resolve.json",
            "{ nodes : {\n  \"10.0.0.1\" : { host : \"no-such-host.invalid\" } } }",
            "line 2: `10.0.0.1`: host `no-such-host.invalid` does not resolve",
            TEMPFAIL,
        ),
        (
            "family.json",
            "{ nodes : {\n  \"10.0.0.1\" : { host : \"fd00::1\" } } }",
            "line 2: `10.0.0.1`: host `fd00::1` does not resolve: an IPv6 peer needs an IPv6 socket",
            CONFIG,
        ),
    ];
    for (name, text, expected, status) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let Some(out) = run_after_setup("a_bad_hosts_file", &["--hosts-file", path.to_str().unwrap()]) else {
            return;
        };
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(status), "{name}: {err}");
        assert!(err.contains(path.to_str().unwrap()) && err.contains(expected), "{name}: {err}");
    }
    let missing = run_after_setup("a_bad_hosts_file", &["--hosts-file", "/nonexistent/hosts.json"]).unwrap();
    assert_eq!(missing.status.code(), Some(CONFIG), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("/nonexistent/hosts.json: No such file"), "{}", stderr(&missing));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_remote_that_does_not_resolve_may_pass_and_one_of_the_wrong_family_cannot() {
    let Some(out) = run_after_setup("a_remote_that_does_not_resolve", &["-A", "no-such-host.invalid"]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(TEMPFAIL), "{}", stderr(&out));
    assert!(stderr(&out).contains("-A no-such-host.invalid: does not resolve"), "{}", stderr(&out));
    // An IPv6 address with an IPv4 socket: no restart changes that.
    let out = run_after_setup("a_remote_of_the_wrong_family", &["-A", "fd00::1"]).unwrap();
    assert_eq!(out.status.code(), Some(CONFIG), "{}", stderr(&out));
    assert!(stderr(&out).contains("an IPv6 peer needs an IPv6 socket"), "{}", stderr(&out));
}

#[test]
fn exactly_one_peer_source_is_required() {
    for args in
        [&[][..], &["-A", "x", "--hosts-file", "h.json"], &["--hosts-file", "h", "--hosts-url", "http://x/"]]
    {
        let out = run(args);
        assert_eq!(out.status.code(), Some(CONFIG), "{args:?}");
        assert!(stderr(&out).contains("Usage:"), "{}", stderr(&out));
    }
}

#[test]
fn an_unreachable_hosts_url_at_start_may_pass_and_a_bad_one_cannot() {
    let Some(out) =
        run_after_setup("an_unreachable_hosts_url", &["--hosts-url", "http://127.0.0.1:9/hosts.json"])
    else {
        return;
    };
    assert_eq!(out.status.code(), Some(TEMPFAIL), "{}", stderr(&out));
    assert!(stderr(&out).contains("http://127.0.0.1:9/hosts.json"), "{}", stderr(&out));
    let out = run(&["--hosts-url", "ftp://example.org/hosts.json", "-d", "never"]);
    assert_eq!(out.status.code(), Some(CONFIG), "{}", stderr(&out));
    assert!(stderr(&out).contains("only http and https"), "{}", stderr(&out));
}

#[test]
fn help_and_version_describe_the_tool() {
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--local-address",
        "--local-port",
        "--remote-address",
        "--remote-port",
        "--hosts-file",
        "--hosts-url",
        "--hosts-url-interval",
        "--ca-file",
        "--ca-path",
        "--device",
        "1472",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    // Every flag's variable, and the order of precedence.
    assert!(
        text.contains("[env: UDPTUN_LOCAL_PORT=]") && text.contains("[env: HOSTS_URL_INTERVAL="),
        "{text}"
    );
    assert!(
        text.contains("The command line wins over the environment, the environment over the config file"),
        "{text}"
    );
    let version = run(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("udptun "));
}

#[test]
fn a_bad_config_file_names_the_file_the_line_and_the_key() {
    let dir = std::env::temp_dir().join(format!("udptun-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("unknown.toml", "remote-address = \"x\"\nmtuu = 1400\n", "line 2: `mtuu`: no such setting"),
        ("value.toml", "remote-address = \"x\"\nmtu = 70000\n", "line 2: `mtu`: invalid value '70000'"),
        ("type.toml", "no-offload = \"yes\"\n", "line 1: `no-offload`: expected true or false"),
        ("list.toml", "mtu = [1, 2]\n", "line 1: `mtu`: takes one value, not a list"),
        ("syntax.toml", "mtu = \n", "line 1"),
        ("nested.toml", "config = \"other.toml\"\n", "`config`: cannot be set in a config file"),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = run(&["--config", path.to_str().unwrap(), "-A", "127.0.0.1", "-d", "never"]);
        assert_eq!(out.status.code(), Some(CONFIG), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(path.to_str().unwrap()) && err.contains(expected), "{name}: {err}");
    }
    // Missing, from the command line or the environment.
    let missing = dir.join("missing.toml");
    let missing = missing.to_str().unwrap();
    for out in [
        run(&["--config", missing, "-A", "127.0.0.1", "-d", "never"]),
        run_env(&[("UDPTUN_CONFIG", missing)], &["-A", "127.0.0.1", "-d", "never"]),
    ] {
        assert_eq!(out.status.code(), Some(CONFIG), "{}", stderr(&out));
        assert!(stderr(&out).contains(&format!("--config {missing}: No such file")), "{}", stderr(&out));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_nodes_in_a_config_file_name_the_file_the_line_and_the_key() {
    let dir = std::env::temp_dir().join(format!("udptun-nodes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let node = "[nodes.\"192.168.100.2\"]\nhost = \"10.100.0.2\"\n";
    let cases: [(&str, String, &[&str], &str); 6] = [
        (
            "port.toml",
            format!("mtu = 1400\n{node}port = 99999\n"),
            &[],
            "line 4 column 8: `192.168.100.2`: port must be 1-65535",
        ),
        (
            "host.toml",
            "[nodes.\"192.168.100.2\"]\nhost = \"\"\n".into(),
            &[],
            "line 2 column 8: `192.168.100.2`: `host` must be a non-empty string",
        ),
        (
            "key.toml",
            "[nodes.vps2]\nhost = \"b\"\n".into(),
            &[],
            "line 1 column 8: `vps2` is not an IP address",
        ),
        (
            "field.toml",
            format!("{node}mtu = 1400\n"),
            &[],
            "line 3 column 1: `192.168.100.2`: no such field `mtu`",
        ),
        (
            "two.toml",
            format!("hosts-url = \"http://x/\"\n{node}"),
            &[],
            "line 1 column 1: `hosts-url`: the peers come from the `[nodes]` tables on line 2",
        ),
        (
            "flag.toml",
            node.into(),
            &["--hosts-file", "h.json"],
            "line 1: `nodes`: the peers come from these tables or from --hosts-file, not both",
        ),
    ];
    for (name, text, extra, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = run(&[&["--config", path.to_str().unwrap(), "-d", "never"], extra].concat());
        assert_eq!(out.status.code(), Some(CONFIG), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("{}: {expected}", path.display())), "{name}: {err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn man_page_and_completions_come_from_the_cli_definition() {
    // (Whatever the environment sets.)
    let man = run_env(&[("UDPTUN_REMOTE_ADDRESS", "x"), ("UDPTUN_MTU", "1400")], &["--generate-man"]);
    assert!(man.status.success(), "{}", stderr(&man));
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(text.contains(".TH udptun") && text.contains("hosts\\-url\\-interval"), "{text}");
    // It stands alone: the flags with their variables, and what else an operator needs.
    for section in [
        ".SH OPTIONS",
        ".SH \"HOSTS DOCUMENT\"",
        ".SH ENVIRONMENT",
        ".SH FILES",
        ".SH SIGNALS",
        ".SH \"EXIT STATUS\"",
        ".SH EXAMPLES",
    ] {
        assert!(text.lines().any(|l| l == section), "no {section} in:\n{text}");
    }
    let section = |title: &str| {
        let start = text.find(title).unwrap();
        let end = text[start + 1..].find("\n.SH ").map_or(text.len(), |i| start + 1 + i);
        text[start..end].to_string()
    };
    assert!(text.contains("UDPTUN_LOCAL_PORT"), "no variable in OPTIONS");
    assert!(
        section(".SH \"HOSTS DOCUMENT\"")
            .contains(r#""192.168.100.2": { "host": "vps2.example.org", "port": 7777 }"#)
    );
    let environment = section(".SH ENVIRONMENT");
    assert!(environment.contains("The command line wins over the environment"), "{environment}");
    assert!(environment.contains("JOURNAL_STREAM") && environment.contains("RUST_LOG"), "{environment}");
    let status = section(".SH \"EXIT STATUS\"");
    for code in ["75 (EX_TEMPFAIL)", "78 (EX_CONFIG)", "RestartPreventExitStatus=78"] {
        assert!(status.contains(code), "{code} not in {status}");
    }
    let signals = section(".SH SIGNALS");
    assert!(signals.contains("SIGHUP") && signals.contains("SIGTERM, SIGINT"), "{signals}");
    let bash = run(&["--generate-completions", "bash"]);
    assert!(String::from_utf8_lossy(&bash.stdout).contains("--hosts-file"));
}

#[test]
fn genkey_prints_a_new_key_each_time() {
    let keys: Vec<String> = (0..2)
        .map(|_| {
            let out = run(&["genkey"]);
            assert!(out.status.success(), "{}", stderr(&out));
            String::from_utf8(out.stdout).unwrap()
        })
        .collect();
    for key in &keys {
        assert!(key.len() == 65 && key.ends_with('\n'), "{key:?}");
        assert!(key.trim_end().bytes().all(|b| b.is_ascii_hexdigit()), "{key:?}");
    }
    assert_ne!(keys[0], keys[1]);
}

#[test]
fn a_bad_key_file_is_an_error_before_set_up() {
    let dir = std::env::temp_dir().join(format!("udptun-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("short.key");
    std::fs::write(&path, "abcd\n").unwrap();
    let out = run(&["-A", "127.0.0.1", "--key", path.to_str().unwrap(), "-d", "never"]);
    assert_eq!(out.status.code(), Some(CONFIG), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("--key {}: expected 64 hex digits", path.display())),
        "{}",
        stderr(&out)
    );
    let out = run(&["-A", "127.0.0.1", "--key", "/nonexistent/udptun.key", "-d", "never"]);
    assert_eq!(out.status.code(), Some(CONFIG), "{}", stderr(&out));
    assert!(stderr(&out).contains("--key /nonexistent/udptun.key: No such file"), "{}", stderr(&out));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bad_hosts_pubkey_is_an_error_before_set_up() {
    let dir = std::env::temp_dir().join(format!("udptun-pubkey-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.pub");
    std::fs::write(&bad, "untrusted comment: x\nnot base64\n").unwrap();
    let url = "http://127.0.0.1:9/hosts.json";
    let out = run(&["--hosts-url", url, "--hosts-pubkey", bad.to_str().unwrap(), "-d", "never"]);
    assert_eq!(out.status.code(), Some(CONFIG), "{}", stderr(&out));
    let expected = format!("--hosts-pubkey {}: not a minisign public key", bad.display());
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    let out = run(&["--hosts-url", url, "--hosts-pubkey", "/nonexistent/hosts.pub", "-d", "never"]);
    assert_eq!(out.status.code(), Some(CONFIG), "{}", stderr(&out));
    assert!(stderr(&out).contains("--hosts-pubkey /nonexistent/hosts.pub: No such file"), "{}", stderr(&out));
    // A key, but nothing it could sign.
    let good = dir.join("good.pub");
    std::fs::write(
        &good,
        "untrusted comment: minisign public key 95480C7DBB34C917\nRWQXyTS7fQxIld4HebWKrr1K6Wqa3/X1izG68R1rxEA+4YD/gf9Fux8s\n",
    )
    .unwrap();
    let out = run(&["-A", "127.0.0.1", "--hosts-pubkey", good.to_str().unwrap(), "-d", "never"]);
    assert_eq!(out.status.code(), Some(CONFIG), "{}", stderr(&out));
    assert!(stderr(&out).contains("--hosts-pubkey: only a hosts document is signed"), "{}", stderr(&out));
    let out = run(&["--hosts-url", url, "--hosts-max-age", "60", "-d", "never"]);
    assert_eq!(out.status.code(), Some(CONFIG), "{}", stderr(&out));
    assert!(stderr(&out).contains("--hosts-pubkey"), "{}", stderr(&out));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bad_value_is_a_configuration_error_naming_where_it_came_from() {
    let out = run(&["-A", "127.0.0.1", "--mtu", "10", "-d", "never"]);
    assert_eq!(out.status.code(), Some(CONFIG), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid value '10' for '--mtu <BYTES>'"), "{}", stderr(&out));
    let cases = [
        ("UDPTUN_MTU", "abc", "UDPTUN_MTU: invalid value 'abc' for '--mtu <BYTES>'"),
        (
            "UDPTUN_NO_OFFLOAD",
            "1",
            "UDPTUN_NO_OFFLOAD: invalid value '1' for '--no-offload' [possible values: true, false]",
        ),
        (
            "UDPTUN_ADDRESS",
            "10.0.0.1/24,nonsense",
            "UDPTUN_ADDRESS: invalid value 'nonsense' for '--address <CIDR>'",
        ),
        (
            "HOSTS_URL_INTERVAL",
            "0",
            "HOSTS_URL_INTERVAL: invalid value '0' for '--hosts-url-interval <SECS>'",
        ),
        ("UDPTUN_LOG_FORMAT", "xml", "UDPTUN_LOG_FORMAT: invalid value 'xml' for '--log-format <FORMAT>'"),
    ];
    for (variable, value, expected) in cases {
        let out = run_env(&[(variable, value)], &["-A", "127.0.0.1", "-d", "never"]);
        assert_eq!(out.status.code(), Some(CONFIG), "{variable}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{variable}: {}", stderr(&out));
    }
    // The command line wins: a bad variable it overrides is not read.
    let out = run_env(&[("UDPTUN_MTU", "abc")], &["-A", "127.0.0.1", "--mtu", "10", "-d", "never"]);
    assert!(!stderr(&out).contains("UDPTUN_MTU"), "{}", stderr(&out));
}

#[test]
fn errors_before_logging_carry_the_error_priority_when_stderr_is_the_journal() {
    let dir = std::env::temp_dir().join(format!("udptun-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("stderr");
    for (env, args) in [
        (vec![], vec!["-A", "127.0.0.1", "--mtu", "10"]),
        (vec![("UDPTUN_MTU", "abc")], vec!["-A", "127.0.0.1"]),
    ] {
        let file = std::fs::File::create(&log).unwrap();
        let meta = file.metadata().unwrap();
        // As systemd sets it: stderr's device and inode, in decimal.
        let stream = format!("{}:{}", meta.dev(), meta.ino());
        let status = Command::new(UDPTUN)
            .args(&args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .env("JOURNAL_STREAM", &stream)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(CONFIG));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("invalid value"), "{text}");
        assert!(text.lines().all(|l| l.starts_with("<3>")), "{args:?}: {text}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
