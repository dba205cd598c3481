//! `udptun show`: what a running daemon is doing, read over its control socket.
//!
//! The daemon listens on the abstract unix socket `udptun/DEVICE`. Abstract sockets belong to a
//! network namespace, so `udptun show` finds the daemons of its own namespace (in
//! `/proc/net/unix`) and no other. Only root and the daemon's own user may connect (checked
//! with `SO_PEERCRED`); the socket is read-only. The daemon answers with JSON lines, a status
//! object and then one object per peer, written as it walks the table, so that 100,000 peers
//! stream out with no copy of the table; `udptun show` prints them as a table or as one JSON
//! document.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use jsonc_parser::JsonValue;

use crate::control::unix_now_ms;
use crate::peers::PeerTable;
use crate::stats::{RateLimit, Shared, TableOrigin, clock_ms};

/// Abstract socket names start with this, then the device name.
const SOCKET_PREFIX: &str = "udptun/";
/// A client that takes no bytes for this long is cut off.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most one answer may take, however fast its client reads: one client at a time is
/// served, and the table it shows is held until it is done.
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);
/// `udptun show` waits at most this long for the next bytes of an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest line `udptun show` reads: one peer with every prefix of a 200,000-entry table.
const MAX_LINE_BYTES: u64 = 16 << 20;

/// The abstract socket name of `device`'s daemon.
pub fn socket_name(device: &str) -> String {
    format!("{SOCKET_PREFIX}{device}")
}

/// What the daemon says about itself besides the table: fixed once it runs.
#[derive(Clone, Debug)]
pub struct Status {
    /// The TUN device's name.
    pub device: String,
    /// The address the UDP sockets are bound to.
    pub listen: SocketAddr,
    /// Data-plane threads.
    pub threads: usize,
    /// Offloads in use: TUN (TSO/GRO), UDP GSO, UDP GRO.
    pub offloads: [(&'static str, bool); 3],
}

/// Binds the control socket of `device` (during set-up: a second daemon for the same device
/// name in this namespace fails here).
pub fn bind(device: &str) -> io::Result<UnixListener> {
    UnixListener::bind_addr(&UnixAddr::from_abstract_name(socket_name(device))?)
}

/// Answers `udptun show` on `listener` from a thread of its own, one client at a time.
pub fn serve(listener: UnixListener, status: Status, shared: Arc<Shared>) -> io::Result<()> {
    // SAFETY: geteuid cannot fail.
    let own_uid = unsafe { libc::geteuid() };
    let refusals = RateLimit::new(1000);
    thread::Builder::new().name("show".into()).spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => {
                    if let Err(e) = answer(&stream, own_uid, &status, &shared, &refusals) {
                        tracing::debug!("udptun show: {e}");
                    }
                }
                // Out of descriptors, say: do not spin on it.
                Err(e) => {
                    tracing::debug!("udptun show: accept: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    })?;
    Ok(())
}

fn answer(
    stream: &UnixStream,
    own_uid: u32,
    status: &Status,
    shared: &Shared,
    refusals: &RateLimit,
) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let deadline = Instant::now() + ANSWER_DEADLINE;
    let mut out = BufWriter::with_capacity(64 * 1024, Deadline { stream, deadline });
    match peer_uid(stream)? {
        uid if uid == 0 || uid == own_uid => {
            let table = shared.table.load_full();
            let origin = shared.origin.load_full();
            write_status(&mut out, status, &origin, &table, unix_now_ms(), clock_ms())?;
        }
        uid => {
            if let Some(suppressed) = refusals.allow() {
                tracing::warn!(
                    suppressed,
                    "udptun show: refused a client with uid {uid} (only root and uid {own_uid})"
                );
            }
            writeln!(out, "{{\"error\":\"permission denied: only root and uid {own_uid} may ask\"}}")?;
        }
    }
    out.flush()
}

/// The client's end of an answer, which must be written by `deadline`.
struct Deadline<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl Write for Deadline<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if Instant::now() >= self.deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the client reads too slowly"));
        }
        self.stream.write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The uid of the process at the other end of `stream`.
fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut credentials = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `credentials` is a ucred and `len` its size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut credentials).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(credentials.uid)
}

/// Writes the answer: one line with the daemon's status and the table's origin, then one line
/// per peer. Times are Unix seconds; `now_unix_ms` and `now_clock_ms` (the data plane's clock)
/// turn the data plane's times into them.
pub fn write_status(
    out: &mut impl Write,
    status: &Status,
    origin: &TableOrigin,
    table: &PeerTable,
    now_unix_ms: u64,
    now_clock_ms: u64,
) -> io::Result<()> {
    let mut line = String::with_capacity(512);
    line.push_str("{\"device\":");
    json_string(&mut line, &status.device);
    let _ = write!(line, ",\"listen\":\"{}\",\"threads\":{},\"offloads\":{{", status.listen, status.threads);
    for (index, (name, on)) in status.offloads.iter().enumerate() {
        let _ = write!(line, "{}\"{name}\":{on}", if index > 0 { "," } else { "" });
    }
    line.push_str("},\"version\":\"");
    line.push_str(env!("CARGO_PKG_VERSION"));
    line.push_str("\",\"table\":{\"source\":\"");
    line.push_str(origin.kind);
    line.push_str("\",\"location\":");
    json_string(&mut line, &origin.location);
    let _ = write!(line, ",\"loaded\":{},\"etag\":", origin.loaded_unix);
    match &origin.etag {
        Some(etag) => json_string(&mut line, etag),
        None => line.push_str("null"),
    }
    line.push_str(",\"signed\":");
    match origin.signed_unix {
        Some(signed) => {
            let _ = write!(line, "{signed}");
        }
        None => line.push_str("null"),
    }
    let _ = writeln!(line, ",\"entries\":{},\"peers\":{}}}}}", table.entry_count(), table.peer_count());
    out.write_all(line.as_bytes())?;

    for (endpoint, prefixes) in table.peers_with_prefixes() {
        line.clear();
        line.push_str("{\"inner\":[");
        for (index, prefix) in prefixes.iter().enumerate() {
            let _ = write!(line, "{}\"{prefix}\"", if index > 0 { "," } else { "" });
        }
        let traffic = endpoint.traffic();
        let _ = write!(
            line,
            "],\"endpoint\":\"{}\",\"current\":\"{}\",\"last_received\":",
            endpoint.configured(),
            endpoint.current()
        );
        match traffic.last_received_ms.load(Relaxed) {
            0 => line.push_str("null"),
            at => {
                let unix_ms = now_unix_ms.saturating_sub(now_clock_ms.saturating_sub(at));
                let _ = write!(line, "{}.{:03}", unix_ms / 1000, unix_ms % 1000);
            }
        }
        let _ = writeln!(
            line,
            ",\"rx_packets\":{},\"rx_bytes\":{},\"tx_packets\":{},\"tx_bytes\":{}}}",
            traffic.received_packets.load(Relaxed),
            traffic.received_bytes.load(Relaxed),
            traffic.sent_packets.load(Relaxed),
            traffic.sent_bytes.load(Relaxed),
        );
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// Appends `text` as a JSON string.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `udptun show [DEVICE] [--json]`: prints what the daemon of `device`, or every daemon of
/// this network namespace, is doing. Listing every daemon, one that does not answer is said on
/// stderr and left out (the result is then an error, after the others are printed).
pub fn run(device: Option<&str>, json: bool) -> Result<()> {
    let devices = match device {
        Some(device) => vec![device.to_string()],
        None => {
            let found = daemons_in_namespace()?;
            if found.is_empty() {
                bail!("no udptun daemon runs in this network namespace");
            }
            found
        }
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let as_list = json && device.is_none();
    if as_list {
        out.write_all(b"[")?;
    }
    let mut failed = Vec::new();
    let mut shown = 0;
    for device in &devices {
        // Each answer is read whole before it is printed, so that one that fails midway leaves
        // no half a document behind.
        let mut answer = Vec::new();
        let read = connect(device).and_then(|stream| {
            let lines = answer_lines(stream);
            if json {
                print_json(lines, &mut answer)
            } else {
                print_text(lines, &mut answer, unix_now_ms())?;
                answer = printable(&answer);
                Ok(())
            }
        });
        match read {
            Ok(()) => {
                let separator: &[u8] = match (shown, json) {
                    (0, _) => b"",
                    (_, true) => b",",
                    (_, false) => b"\n",
                };
                out.write_all(separator)?;
                out.write_all(&answer)?;
                shown += 1;
            }
            Err(e) if devices.len() == 1 => return Err(e.context(format!("device {device}"))),
            Err(e) => {
                eprintln!("udptun show: device {device}: {e:#}");
                failed.push(device.as_str());
            }
        }
    }
    if as_list {
        out.write_all(b"]")?;
    }
    if json {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    if !failed.is_empty() {
        bail!("no answer from the daemon(s) of {}", failed.join(", "));
    }
    Ok(())
}

/// Connects to the daemon of `device`, with a bound on how long it may keep us waiting.
fn connect(device: &str) -> Result<UnixStream> {
    let stream = UnixStream::connect_addr(&UnixAddr::from_abstract_name(socket_name(device))?)
        .with_context(|| format!("no udptun daemon for device {device} in this network namespace"))?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    Ok(stream)
}

/// The lines of an answer, each at most [`MAX_LINE_BYTES`]: whatever holds the socket's name,
/// reading it costs bounded memory.
fn answer_lines(stream: UnixStream) -> impl Iterator<Item = io::Result<String>> {
    let mut reader = BufReader::new(stream);
    std::iter::from_fn(move || {
        let mut line = Vec::new();
        match (&mut reader).take(MAX_LINE_BYTES).read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) if line.last() != Some(&b'\n') && line.len() as u64 == MAX_LINE_BYTES => {
                Some(Err(io::Error::new(io::ErrorKind::InvalidData, "a line longer than 16 MiB")))
            }
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                Some(String::from_utf8(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)))
            }
            Err(e) => Some(Err(e)),
        }
    })
}

/// The devices of the udptun daemons listening in this network namespace: the abstract names
/// in `/proc/net/unix`, which lists this namespace's sockets only.
fn daemons_in_namespace() -> Result<Vec<String>> {
    let text = std::fs::read_to_string("/proc/net/unix").context("/proc/net/unix")?;
    Ok(devices_in_socket_list(&text))
}

fn devices_in_socket_list(text: &str) -> Vec<String> {
    let mut devices: Vec<String> = text
        .lines()
        .filter_map(|line| line.split_whitespace().nth(7)?.strip_prefix('@')?.strip_prefix(SOCKET_PREFIX))
        .map(str::to_string)
        .collect();
    devices.sort();
    devices.dedup();
    devices
}

/// The first line, refused if it is the daemon's error.
fn status_line(lines: &mut impl Iterator<Item = io::Result<String>>) -> Result<String> {
    let first = lines.next().ok_or_else(|| anyhow!("the daemon sent nothing"))??;
    if first.starts_with("{\"error\"") {
        let value = parse(&first)?;
        bail!("{}", string(&value, "error"));
    }
    Ok(first)
}

/// One JSON document: the status object with the peers as its `peers` array.
fn print_json(lines: impl Iterator<Item = io::Result<String>>, out: &mut impl Write) -> Result<()> {
    let mut lines = lines;
    let status = status_line(&mut lines)?;
    let open = status.strip_suffix('}').ok_or_else(|| anyhow!("the daemon's status is not an object"))?;
    write!(out, "{open},\"peers\":[")?;
    for (index, line) in lines.enumerate() {
        if index > 0 {
            out.write_all(b",")?;
        }
        out.write_all(line?.as_bytes())?;
    }
    out.write_all(b"]}")?;
    Ok(())
}

/// Widths of the peer table's columns: 98 characters with the spaces between them.
const COLUMNS: [(&str, usize); 6] =
    [("INNER", 18), ("ENDPOINT", 22), ("REACHED AT", 22), ("HEARD", 8), ("RX", 11), ("TX", 12)];

/// The human view: two lines about the daemon and its table, then one row per peer.
fn print_text(
    lines: impl Iterator<Item = io::Result<String>>,
    out: &mut impl Write,
    now_unix_ms: u64,
) -> Result<()> {
    let mut lines = lines;
    let first = status_line(&mut lines)?;
    let status = parse(&first)?;
    let on: Vec<&str> = ["tun", "gso", "gro"]
        .into_iter()
        .filter(|name| {
            status.get_object("offloads").and_then(|o| o.get(name)) == Some(&JsonValue::Boolean(true))
        })
        .collect();
    writeln!(
        out,
        "device {}: listening on {}, {} thread(s), offloads {}, udptun {}",
        string(&status, "device"),
        string(&status, "listen"),
        number(&status, "threads"),
        if on.is_empty() { "none".to_string() } else { on.join(" ") },
        string(&status, "version"),
    )?;
    let table = status.get_object("table").ok_or_else(|| anyhow!("the daemon's status has no table"))?;
    let loaded = number(table, "loaded") as u64;
    let signed = match table.get("signed").and_then(as_f64) {
        Some(at) => format!(", signed {}", ago(now_unix_ms, (at as u64).saturating_mul(1000))),
        None => String::new(),
    };
    writeln!(
        out,
        "table: {} {}, loaded {}{signed}, etag {}, {} entries, {} peers",
        string(table, "source"),
        string(table, "location"),
        ago(now_unix_ms, loaded.saturating_mul(1000)),
        table.get("etag").and_then(as_str).unwrap_or("-"),
        number(table, "entries"),
        number(table, "peers"),
    )?;
    let mut row = String::new();
    for (index, (title, width)) in COLUMNS.iter().enumerate() {
        cell(&mut row, index, title, *width);
    }
    writeln!(out, "\n{}", row.trim_end())?;
    for line in lines {
        let line = line?;
        let peer = parse(&line)?;
        let inner: Vec<&str> = peer
            .get_array("inner")
            .map(|items| items.iter().filter_map(as_str).collect())
            .unwrap_or_default();
        let inner = match inner.as_slice() {
            [] => "(all)".to_string(),
            [one] => one.to_string(),
            [first, rest @ ..] => format!("{first} +{}", rest.len()),
        };
        let (endpoint, current) = (string(&peer, "endpoint"), string(&peer, "current"));
        let heard = match peer.get("last_received").and_then(as_f64) {
            Some(at) => ago(now_unix_ms, (at * 1000.0) as u64),
            None => "never".to_string(),
        };
        let traffic =
            |packets, bytes| format!("{}/{}", si(number(&peer, packets)), bytes_si(number(&peer, bytes)));
        row.clear();
        let cells = [
            inner,
            endpoint.to_string(),
            if current == endpoint { "-".to_string() } else { current.to_string() },
            heard,
            traffic("rx_packets", "rx_bytes"),
            traffic("tx_packets", "tx_bytes"),
        ];
        for (index, (text, (_, width))) in cells.iter().zip(COLUMNS).enumerate() {
            cell(&mut row, index, text, width);
        }
        writeln!(out, "{}", row.trim_end())?;
    }
    Ok(())
}

/// `text` with every control character but the line break shown as `?`: strings from the
/// socket never reach the terminal as escape sequences, whoever holds the socket's name.
fn printable(text: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(text)
        .chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect::<String>()
        .into_bytes()
}

/// Appends `text` as column `index` of `width` characters, cut with `…` if longer.
fn cell(row: &mut String, index: usize, text: &str, width: usize) {
    if index > 0 {
        row.push(' ');
    }
    let chars = text.chars().count();
    if chars > width {
        row.extend(text.chars().take(width - 1));
        row.push('…');
    } else {
        let _ = write!(row, "{text:width$}");
    }
}

fn parse(line: &str) -> Result<jsonc_parser::JsonObject<'_>> {
    match jsonc_parser::parse_to_value(line, &Default::default()) {
        Ok(Some(JsonValue::Object(object))) => Ok(object),
        Ok(_) => bail!("the daemon sent a line that is not an object: {line}"),
        Err(e) => bail!("the daemon sent a line that is not JSON ({e}): {line}"),
    }
}

fn as_str<'a>(value: &'a JsonValue<'_>) -> Option<&'a str> {
    match value {
        JsonValue::String(s) => Some(s),
        _ => None,
    }
}

fn as_f64(value: &JsonValue<'_>) -> Option<f64> {
    match value {
        JsonValue::Number(n) => n.parse().ok(),
        _ => None,
    }
}

fn string<'a>(object: &'a jsonc_parser::JsonObject<'_>, key: &str) -> &'a str {
    object.get(key).and_then(as_str).unwrap_or("?")
}

fn number(object: &jsonc_parser::JsonObject<'_>, key: &str) -> f64 {
    object.get(key).and_then(as_f64).unwrap_or(0.0)
}

/// "5s ago", "3m ago", "2h ago", "4d ago", or "now".
fn ago(now_ms: u64, then_ms: u64) -> String {
    let seconds = now_ms.saturating_sub(then_ms) / 1000;
    match seconds {
        0 => "now".to_string(),
        1..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86_400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86_400),
    }
}

/// A count with k, M, G: `999`, `1.2k`, `34M`.
fn si(value: f64) -> String {
    scaled(value, 1000.0, &["", "k", "M", "G", "T", "P"])
}

/// Bytes with KiB, MiB...: `512B`, `1.5KiB`.
fn bytes_si(value: f64) -> String {
    scaled(value, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB", "PiB"])
}

fn scaled(mut value: f64, step: f64, units: &[&str]) -> String {
    let mut unit = 0;
    while value >= step && unit + 1 < units.len() {
        value /= step;
        unit += 1;
    }
    if unit == 0 || value >= 10.0 {
        format!("{value:.0}{}", units[unit])
    } else {
        format!("{value:.1}{}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix::Prefix;

    fn overlay() -> PeerTable {
        let entry = |prefix: &str, peer: &str| (prefix.parse::<Prefix>().unwrap(), peer.parse().unwrap());
        PeerTable::from_entries([
            entry("192.168.100.2", "192.0.2.2:7777"),
            entry("10.77.0.0/24", "192.0.2.2:7777"),
            entry("192.168.100.3", "[2001:db8::3]:7000"),
        ])
    }

    fn answer_of(table: &PeerTable) -> String {
        answer_signed(table, None)
    }

    fn answer_signed(table: &PeerTable, signed_unix: Option<u64>) -> String {
        let status = Status {
            device: "tun\"0".into(),
            listen: "0.0.0.0:7777".parse().unwrap(),
            threads: 2,
            offloads: [("tun", true), ("gso", false), ("gro", true)],
        };
        let origin = TableOrigin {
            kind: "url",
            location: "https://x/h.json".into(),
            loaded_unix: 1_000,
            etag: Some("\"v1\"".into()),
            signed_unix,
        };
        let mut out = Vec::new();
        write_status(&mut out, &status, &origin, table, 1_010_000, 5_000).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_answer_is_one_status_line_then_one_line_per_peer() {
        let table = overlay();
        let traffic = table.endpoints().next().unwrap().traffic();
        traffic.add_received(3, 300, 4_000);
        traffic.add_sent(2, 200);
        let answer = answer_of(&table);
        let lines: Vec<&str> = answer.lines().collect();
        assert_eq!(lines.len(), 3, "{answer}");
        assert!(lines[0].starts_with(r#"{"device":"tun\"0","listen":"0.0.0.0:7777","threads":2,"offloads":{"tun":true,"gso":false,"gro":true}"#), "{}", lines[0]);
        assert!(lines[0].ends_with(r#""table":{"source":"url","location":"https://x/h.json","loaded":1000,"etag":"\"v1\"","signed":null,"entries":3,"peers":2}}"#), "{}", lines[0]);
        // Heard 1 s before the answer (5,000 ms → 4,000 ms on the data plane's clock).
        assert_eq!(
            lines[1],
            r#"{"inner":["10.77.0.0/24","192.168.100.2"],"endpoint":"192.0.2.2:7777","current":"192.0.2.2:7777","last_received":1009.000,"rx_packets":3,"rx_bytes":300,"tx_packets":2,"tx_bytes":200}"#
        );
        assert!(
            lines[2].contains(r#""endpoint":"[2001:db8::3]:7000""#)
                && lines[2].contains(r#""last_received":null"#)
        );
        for line in lines {
            assert!(parse(line).is_ok(), "{line}");
        }
    }

    #[test]
    fn json_output_is_one_document_and_text_fits_100_columns() {
        let table = overlay();
        let answer = answer_of(&table);
        let mut json = Vec::new();
        print_json(answer.lines().map(|l| Ok(l.to_string())), &mut json).unwrap();
        let json = String::from_utf8(json).unwrap();
        let Ok(Some(JsonValue::Object(document))) = jsonc_parser::parse_to_value(&json, &Default::default())
        else {
            panic!("{json}")
        };
        assert_eq!(document.get_array("peers").map(|p| p.iter().count()), Some(2));

        let mut text = Vec::new();
        print_text(answer.lines().map(|l| Ok(l.to_string())), &mut text, 1_010_000).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.starts_with("device tun\"0: listening on 0.0.0.0:7777, 2 thread(s), offloads tun gro"),
            "{text}"
        );
        assert!(
            text.contains("table: url https://x/h.json, loaded 10s ago, etag \"v1\", 3 entries, 2 peers"),
            "{text}"
        );
        assert!(text.contains("10.77.0.0/24 +1    192.0.2.2:7777"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
    }

    #[test]
    fn the_signed_timestamp_of_the_table_is_shown() {
        let answer = answer_signed(&overlay(), Some(700));
        let status = answer.lines().next().unwrap();
        assert!(status.contains(r#""etag":"\"v1\"","signed":700,"entries":3"#), "{status}");
        let mut text = Vec::new();
        print_text(answer.lines().map(|l| Ok(l.to_string())), &mut text, 1_010_000).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("loaded 10s ago, signed 5m ago, etag \"v1\""), "{text}");
    }

    #[test]
    fn an_error_from_the_daemon_is_the_error() {
        let lines = [Ok(r#"{"error":"permission denied: only root"}"#.to_string())];
        let error = print_text(lines.into_iter(), &mut Vec::new(), 0).unwrap_err();
        assert_eq!(error.to_string(), "permission denied: only root");
        assert!(print_json(std::iter::empty(), &mut Vec::new()).is_err());
    }

    #[test]
    fn daemons_are_found_by_their_abstract_socket_names() {
        let list = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1234 @udptun/tun0\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 1235 @udptun/tun0\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1236 @udptun/wan\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1237 /run/udptun/x\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1238\n";
        assert_eq!(devices_in_socket_list(list), ["tun0", "wan"]);
    }

    #[test]
    fn cells_are_cut_and_figures_are_short() {
        let mut row = String::new();
        cell(&mut row, 0, "[2001:db8:1234:5678::1]:7777", 22);
        assert_eq!(row, "[2001:db8:1234:5678::…");
        assert_eq!((si(999.0), si(1234.0), si(34e6)), ("999".into(), "1.2k".into(), "34M".into()));
        assert_eq!((bytes_si(512.0), bytes_si(1536.0)), ("512B".into(), "1.5KiB".into()));
        assert_eq!(
            (ago(10_000, 10_000), ago(70_000, 0), ago(86_400_000, 0)),
            ("now".into(), "1m ago".into(), "1d ago".into())
        );
        assert_eq!(printable("a\u{1b}[2Jb\u{9b}c\n".as_bytes()), b"a?[2Jb?c\n");
        let mut escaped = String::new();
        json_string(&mut escaped, "a\"b\\c\n");
        assert_eq!(escaped, r#""a\"b\\c\u000a""#);
    }
}
