//! Start-up errors: a bad configuration is a clear message and a non-zero exit. Flags and the
//! config file are checked before any device or socket exists (so those tests need no
//! privileges); the hosts document, names and the first fetch only once set-up is done and every
//! privilege dropped, so those tests run as root in a network namespace of their own
//! (`unshare --net`), which the device and socket vanish with.
//!
//! Every run has a deadline: a bad configuration that were accepted would start the daemon (as
//! root, in the host's namespace), and the test must then fail, not hang.

mod common;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const UDPTUN: &str = env!("CARGO_BIN_EXE_udptun");
/// Far longer than any of these runs takes (resolving a `.invalid` name included).
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs udptun with `args`; fails the test if it is still running after [`DEADLINE`] (and
/// kills it).
fn run(args: &[&str]) -> Output {
    run_program(&[UDPTUN], args)
}

/// Runs udptun with `args` in a network namespace of its own, as root: for errors found after
/// set-up. `None` when the namespace tests cannot run here (and the user opted out).
fn run_after_setup(test: &str, args: &[&str]) -> Option<Output> {
    common::can_run(test).then(|| run_program(&["unshare", "--net", "--", UDPTUN], args))
}

fn run_program(program: &[&str], args: &[&str]) -> Output {
    let mut child = Command::new(program[0])
        .args(&program[1..])
        .args(args)
        .env_remove("RUST_LOG")
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
    let cases = [
        (
            "syntax.json",
            "{ nodes : {\n  \"10.0.0.1\" : { host : \"a\" },\n  \"10.0.0.2\" : { host : \"b\" ] } }",
            "line 3",
        ),
        (
            "key.json",
            "{ nodes : {\n  \"10.0.0.1\" : { host : \"127.0.0.1\" },\n  \"vps3\" : { host : \"b\" } } }",
            "line 3 column 3: `vps3` is not an IP address",
        ),
        (
            "port.json",
            "{ nodes : {\n  \"10.0.0.1\" : { host : \"127.0.0.1\", port : 99999 } } }",
            "line 2 column 45: `10.0.0.1`: port must be 1-65535",
        ),
        (
            "resolve.json",
            "{ nodes : {\n  \"10.0.0.1\" : { host : \"no-such-host.invalid\" } } }",
            "line 2: `10.0.0.1`: host `no-such-host.invalid` does not resolve",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let Some(out) = run_after_setup("a_bad_hosts_file", &["--hosts-file", path.to_str().unwrap()]) else {
            return;
        };
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = stderr(&out);
        assert!(err.contains(path.to_str().unwrap()) && err.contains(expected), "{name}: {err}");
    }
    let missing = run_after_setup("a_bad_hosts_file", &["--hosts-file", "/nonexistent/hosts.json"]).unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("/nonexistent/hosts.json: No such file"), "{}", stderr(&missing));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_remote_that_does_not_resolve_is_an_error() {
    let Some(out) = run_after_setup("a_remote_that_does_not_resolve", &["-A", "no-such-host.invalid"]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("-A no-such-host.invalid: does not resolve"), "{}", stderr(&out));
}

#[test]
fn exactly_one_peer_source_is_required() {
    for args in
        [&[][..], &["-A", "x", "--hosts-file", "h.json"], &["--hosts-file", "h", "--hosts-url", "http://x/"]]
    {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains("Usage:"), "{}", stderr(&out));
    }
}

#[test]
fn an_unreachable_hosts_url_at_start_is_an_error() {
    let Some(out) =
        run_after_setup("an_unreachable_hosts_url", &["--hosts-url", "http://127.0.0.1:9/hosts.json"])
    else {
        return;
    };
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("http://127.0.0.1:9/hosts.json"), "{}", stderr(&out));
    let out = run(&["--hosts-url", "ftp://example.org/hosts.json", "-d", "never"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("only http and https"), "{}", stderr(&out));
}

#[test]
fn help_and_version_describe_the_tool() {
    let help = run(&["--help"]);
    assert!(help.status.success());
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
    let version = run(&["--version"]);
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
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(path.to_str().unwrap()) && err.contains(expected), "{name}: {err}");
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
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("{}: {expected}", path.display())), "{name}: {err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn man_page_and_completions_come_from_the_cli_definition() {
    let man = run(&["--generate-man"]);
    assert!(man.status.success());
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(text.contains(".TH udptun") && text.contains("hosts\\-url\\-interval"), "{text}");
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
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("--key {}: expected 64 hex digits", path.display())),
        "{}",
        stderr(&out)
    );
    let out = run(&["-A", "127.0.0.1", "--key", "/nonexistent/udptun.key", "-d", "never"]);
    assert!(stderr(&out).contains("--key /nonexistent/udptun.key: No such file"), "{}", stderr(&out));
    std::fs::remove_dir_all(dir).unwrap();
}
