//! Prometheus metrics: `GET /metrics` on `--metrics-listen`, encoded by `prometheus-client` from
//! the data plane's counters at each scrape (the data plane itself never touches the registry).

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::datapath::Shared;
use crate::stats::Drop;

/// Encodes the counters of `Shared` at each scrape.
struct StatsCollector(Arc<Shared>);

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
        let stats = &self.0.stats;
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
            Drop::ALL.iter().map(|&reason| ("reason", reason.name(), stats.dropped(reason))).collect();
        counter(&mut encoder, "udptun_dropped_packets", "Packets dropped, by reason.", &drops)?;
        plain_counter(
            &mut encoder,
            "udptun_keepalives_received",
            "Keepalives received from peers.",
            load(&stats.keepalives_received),
        )?;
        plain_counter(
            &mut encoder,
            "udptun_icmp_errors_suppressed",
            "ICMP errors about unmapped destinations not sent for the rate limit.",
            load(&stats.icmp_errors_suppressed),
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
        let table = self.0.table.load();
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
        )
    }
}

/// Binds `listen` and serves `/metrics` from a thread of its own.
pub fn serve(listen: SocketAddr, shared: Arc<Shared>) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatsCollector(shared)));
    thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Err(e) = answer(stream, &registry) {
                tracing::debug!("metrics request: {e}");
            }
        }
    })?;
    Ok(())
}

fn answer(stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?).take(8192);
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
            prometheus_client::encoding::text::encode(&mut body, registry).map_err(std::io::Error::other)?;
            ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", body)
        } else {
            ("404 Not Found", "text/plain", "udptun serves only /metrics\n".to_string())
        };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
