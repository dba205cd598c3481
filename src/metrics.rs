//! Prometheus metrics: `GET /metrics` on `--metrics-listen`, encoded by `prometheus-client` from
//! the data plane's counters at each scrape (the data plane itself never touches the registry).
//!
//! Each connection has a thread of its own (at most [`MAX_CONNECTIONS`] at once) and
//! [`REQUEST_DEADLINE`] for the whole request, so a slow or silent client cannot hold off a
//! scrape, nor hold a thread for long.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::thread;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::cli::Toggle;
use crate::control::unix_now_ms;
use crate::peers::PeerTable;
use crate::signature::Reason;
use crate::stats::{DropReason, KeepaliveRefusal, Shared, Traffic, clock_ms};

/// How long one connection may take, from accept to the last byte of the answer, reads and
/// write together: a client that sends a byte a second is cut off then.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once. One more is closed as soon as it is accepted, so slow clients
/// cannot pile up threads.
const MAX_CONNECTIONS: usize = 8;
/// Most bytes of request line and headers read.
const MAX_REQUEST_BYTES: u64 = 8192;

/// Per-peer series are on by default up to this many peers: above, a scrape would grow with
/// the table (and a Prometheus server with it) unless the operator asks for it.
pub const PER_PEER_DEFAULT_LIMIT: usize = 1000;

/// Encodes the counters of `Shared` at each scrape.
struct StatsCollector {
    shared: Arc<Shared>,
    /// `--metrics-per-peer`: forced on or off, or by the number of peers.
    per_peer: Option<Toggle>,
    /// Whether the last scrape had per-peer series, so that turning them off is logged once.
    had_per_peer: AtomicBool,
}

impl fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatsCollector")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labelled: &[(&str, &str, u64)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for &(key, value, count) in labelled {
        let labels = [(key, value)];
        ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn plain_counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, count: u64) -> fmt::Result {
    ConstCounter::new(count).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let stats = &self.shared.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
        counter(
            &mut encoder,
            "udptun_packets",
            "IP packets moved through the tunnel.",
            &[
                ("direction", "tx", load(&stats.sent_packets)),
                ("direction", "rx", load(&stats.received_packets)),
            ],
        )?;
        counter(
            &mut encoder,
            "udptun_bytes",
            "Bytes of IP packets moved through the tunnel.",
            &[("direction", "tx", load(&stats.sent_bytes)), ("direction", "rx", load(&stats.received_bytes))],
        )?;
        let drops: Vec<(&str, &str, u64)> =
            DropReason::ALL.iter().map(|&reason| ("reason", reason.name(), stats.dropped(reason))).collect();
        counter(&mut encoder, "udptun_dropped_packets", "Packets dropped, by reason.", &drops)?;
        plain_counter(
            &mut encoder,
            "udptun_keepalives_received",
            "Keepalives received from peers.",
            load(&stats.keepalives_received),
        )?;
        plain_counter(
            &mut encoder,
            "udptun_roaming_refused",
            "Datagrams from another port of a peer's IP that did not move the peer (it was active, or a key is set).",
            load(&stats.roaming_refused),
        )?;
        let refusals: Vec<(&str, &str, u64)> = KeepaliveRefusal::ALL
            .iter()
            .map(|&reason| ("reason", reason.name(), load(&stats.keepalives_refused[reason as usize])))
            .collect();
        counter(
            &mut encoder,
            "udptun_keepalives_refused",
            "Authenticated keepalives refused, by reason.",
            &refusals,
        )?;
        plain_counter(
            &mut encoder,
            "udptun_icmp_errors_suppressed",
            "ICMP errors about unmapped destinations not sent for the rate limit.",
            load(&stats.icmp_errors_suppressed),
        )?;
        plain_counter(
            &mut encoder,
            "udptun_mss_clamped",
            "TCP SYNs whose MSS was lowered to fit the tunnel, in either direction.",
            load(&stats.mss_clamped),
        )?;
        plain_counter(
            &mut encoder,
            "udptun_hosts_loads",
            "Peer tables published after the first.",
            load(&stats.tables_loaded),
        )?;
        plain_counter(
            &mut encoder,
            "udptun_hosts_load_failures",
            "Hosts reloads or fetches that failed.",
            load(&stats.load_failures),
        )?;
        let refused: Vec<(&str, &str, u64)> = Reason::ALL
            .iter()
            .map(|&reason| ("reason", reason.name(), load(&stats.hosts_refused[reason as usize])))
            .collect();
        counter(
            &mut encoder,
            "udptun_hosts_refused",
            "Hosts documents refused by --hosts-pubkey or --hosts-max-age, by reason.",
            &refused,
        )?;
        if let Some(signed) = self.shared.origin.load().signed_unix {
            gauge(
                &mut encoder,
                "udptun_hosts_signed_timestamp_seconds",
                "The signed timestamp of the hosts document whose table is in force.",
                i64::try_from(signed).unwrap_or(i64::MAX),
            )?;
        }
        let table = self.shared.table.load();
        gauge(&mut encoder, "udptun_peers", "Distinct peers in the table.", table.peer_count() as i64)?;
        gauge(
            &mut encoder,
            "udptun_table_entries",
            "Addresses and prefixes in the table.",
            table.entry_count() as i64,
        )?;
        gauge(
            &mut encoder,
            "udptun_hosts_last_success_timestamp_seconds",
            "When the hosts source last loaded or was confirmed unchanged.",
            load(&stats.last_load_unix) as i64,
        )?;
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        ConstGauge::new(1).encode(
            encoder
                .encode_descriptor(
                    "udptun_build_info",
                    "The udptun version running.",
                    None,
                    MetricType::Gauge,
                )?
                .encode_family(&version)?,
        )?;
        if self.per_peer_on(table.peer_count()) {
            encode_per_peer(&mut encoder, &table)?;
        }
        Ok(())
    }
}

impl StatsCollector {
    /// Whether this scrape has per-peer series; logs when the number of peers turns them off.
    fn per_peer_on(&self, peers: usize) -> bool {
        let on = match self.per_peer {
            Some(toggle) => toggle == Toggle::On,
            None => peers <= PER_PEER_DEFAULT_LIMIT,
        };
        if self.had_per_peer.swap(on, Relaxed) && !on && self.per_peer.is_none() {
            tracing::info!(
                "metrics: per-peer series are off while the table has more than {PER_PEER_DEFAULT_LIMIT} \
                 peers ({peers}); --metrics-per-peer on keeps them"
            );
        }
        on
    }
}

/// The traffic of each peer, labelled with its configured address.
fn encode_per_peer(encoder: &mut DescriptorEncoder, table: &PeerTable) -> fmt::Result {
    let peers: Vec<(String, &Traffic)> =
        table.endpoints().map(|e| (e.configured().to_string(), e.traffic())).collect();
    type Field = fn(&Traffic) -> &AtomicU64;
    let series: [(&str, &str, Field); 4] = [
        ("udptun_peer_received_packets", "Packets received from the peer.", |t| &t.received_packets),
        ("udptun_peer_received_bytes", "Bytes received from the peer.", |t| &t.received_bytes),
        ("udptun_peer_sent_packets", "Packets sent to the peer.", |t| &t.sent_packets),
        ("udptun_peer_sent_bytes", "Bytes sent to the peer.", |t| &t.sent_bytes),
    ];
    for (name, help, field) in series {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (peer, traffic) in &peers {
            ConstCounter::new(field(traffic).load(Relaxed))
                .encode(family.encode_family(&[("peer", peer.as_str())])?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "udptun_peer_last_received_timestamp_seconds",
        "When a packet or keepalive was last received from the peer (peers never heard have none).",
        None,
        MetricType::Gauge,
    )?;
    let (now_unix_ms, now_clock_ms) = (unix_now_ms(), clock_ms());
    for (peer, traffic) in &peers {
        let at = traffic.last_received_ms.load(Relaxed);
        if at > 0 {
            let unix_ms = now_unix_ms.saturating_sub(now_clock_ms.saturating_sub(at));
            ConstGauge::new(unix_ms as f64 / 1000.0)
                .encode(family.encode_family(&[("peer", peer.as_str())])?)?;
        }
    }
    Ok(())
}

/// Binds the metrics port (during set-up, while a port below 1024 may still be bound).
pub fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen)
}

/// Serves `/metrics` on `listener` from a thread of its own; `per_peer` is
/// `--metrics-per-peer`.
pub fn serve(listener: TcpListener, shared: Arc<Shared>, per_peer: Option<Toggle>) -> std::io::Result<()> {
    let mut registry = Registry::default();
    let collector = StatsCollector { shared, per_peer, had_per_peer: AtomicBool::new(true) };
    registry.register_collector(Box::new(collector));
    let registry = Arc::new(registry);
    let open = Arc::new(AtomicUsize::new(0));
    thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(stream) => stream,
                // Out of descriptors, say: do not spin on it.
                Err(e) => {
                    tracing::debug!("metrics: accept: {e}");
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            // Past the cap the connection is dropped here, which closes it.
            let Some(slot) = Slot::take(&open) else { continue };
            let registry = registry.clone();
            let spawned = thread::Builder::new().name("metrics-conn".into()).spawn(move || {
                let _slot = slot;
                if let Err(e) = answer(&stream, &registry, Instant::now() + REQUEST_DEADLINE) {
                    tracing::debug!("metrics request: {e}");
                }
            });
            if let Err(e) = spawned {
                tracing::debug!("metrics request: no thread for it: {e}");
            }
        }
    })?;
    Ok(())
}

/// One of the [`MAX_CONNECTIONS`] places; given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Option<Slot> {
        if open.fetch_add(1, Relaxed) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Slot(open.clone()))
    }
}

impl std::ops::Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// A connection whose every read and write must end by `until`: each one waits at most for
/// what is left, and fails with `TimedOut` once nothing is.
#[derive(Clone, Copy)]
struct Deadline<'a> {
    stream: &'a TcpStream,
    until: Instant,
}

impl Deadline<'_> {
    fn left(&self) -> io::Result<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the request took too long"));
        }
        Ok(left)
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        (&*self.stream).read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        (&*self.stream).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.stream).flush()
    }
}

/// Reads one request from `stream` and answers it, all by `until`.
fn answer(stream: &TcpStream, registry: &Registry, until: Instant) -> io::Result<()> {
    let mut connection = Deadline { stream, until };
    let mut reader = BufReader::new(connection).take(MAX_REQUEST_BYTES);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read (and ignore) the headers up to the blank line.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && line != "\r\n" && line != "\n" {
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) =
        if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
            let mut body = String::new();
            prometheus_client::encoding::text::encode(&mut body, registry).map_err(io::Error::other)?;
            ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", body)
        } else {
            ("404 Not Found", "text/plain", "udptun serves only /metrics\n".to_string())
        };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    connection.write_all(response.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_past_the_cap_get_no_slot_until_one_is_given_back() {
        let open = Arc::new(AtomicUsize::new(0));
        let mut slots: Vec<Slot> = (0..MAX_CONNECTIONS).map(|_| Slot::take(&open).expect("a slot")).collect();
        assert!(Slot::take(&open).is_none());
        assert_eq!(open.load(Relaxed), MAX_CONNECTIONS, "a refusal takes nothing");
        slots.pop();
        assert!(Slot::take(&open).is_some());
        drop(slots);
        assert_eq!(open.load(Relaxed), 0);
    }

    /// A connected pair on loopback: (client, server side).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        (client, listener.accept().expect("accept").0)
    }

    #[test]
    fn a_request_is_answered_within_its_deadline() {
        let (mut client, server) = pair();
        client.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        answer(&server, &Registry::default(), Instant::now() + Duration::from_secs(5)).expect("answer");
        drop(server);
        let mut response = String::new();
        client.read_to_string(&mut response).expect("read");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("# EOF\n"), "{response}");
    }

    #[test]
    fn a_client_that_dribbles_its_request_is_cut_off_at_the_deadline() {
        let (mut client, server) = pair();
        let dribbler = thread::spawn(move || {
            // A byte every 50 ms, never the end of the headers, until the server gives up.
            for byte in b"GET /metrics HTTP/1.1\r\nX: ".iter().chain([b'a'; 100].iter()) {
                if client.write_all(&[*byte]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        let start = Instant::now();
        let result = answer(&server, &Registry::default(), start + Duration::from_millis(500));
        let took = start.elapsed();
        let error = result.expect_err("no answer to a request that never ends");
        assert!(matches!(error.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock), "{error}");
        assert!(took >= Duration::from_millis(450) && took < Duration::from_millis(900), "{took:?}");
        drop(server);
        dribbler.join().expect("dribbler");
    }
}
