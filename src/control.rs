//! The control plane: turns the configured peer source (one remote, a hosts file, a hosts URL)
//! into a [`PeerTable`], and keeps it current. Each new table is published whole; a source that
//! fails once running leaves the last good table in force.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::datapath::Shared;
use crate::fetch::{Fetched, Fetcher};
use crate::hosts::{self, Entry};
use crate::peers::{PeerTable, PrefixMap};

/// Which address families peers may have: an IPv4 socket reaches only IPv4 peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 addresses only.
    V4,
    /// IPv4 or IPv6 (a dual-stack socket).
    Any,
}

/// Resolves `host` (a name or an address literal) to the first address of a usable family.
pub fn resolve(host: &str, port: u16, family: Family) -> io::Result<SocketAddr> {
    let usable = |addr: &SocketAddr| family == Family::Any || addr.is_ipv4();
    if let Ok(ip) = host.parse::<IpAddr>() {
        let addr = SocketAddr::new(ip, port);
        return if usable(&addr) {
            Ok(addr)
        } else {
            Err(io::Error::other("an IPv6 peer needs an IPv6 socket (-a ::)"))
        };
    }
    let found: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    found.iter().copied().find(usable).ok_or_else(|| {
        io::Error::other(if found.is_empty() {
            "no address found".to_string()
        } else {
            "only IPv6 addresses found; an IPv6 peer needs an IPv6 socket (-a ::)".to_string()
        })
    })
}

/// Builds a table from hosts `entries`, resolving each distinct host once. `origin` names the
/// document in messages.
pub fn build_table(
    entries: &[Entry],
    origin: &str,
    resolve: &dyn Fn(&str, u16) -> io::Result<SocketAddr>,
) -> Result<PeerTable> {
    let mut map = PrefixMap::default();
    let mut resolved: HashMap<(&str, u16), SocketAddr> = HashMap::new();
    for entry in entries {
        let key = (entry.host.as_str(), entry.port);
        let peer = match resolved.get(&key) {
            Some(peer) => *peer,
            None => {
                let peer = resolve(&entry.host, entry.port).map_err(|e| {
                    anyhow!(
                        "{origin}: line {}: `{}`: host `{}` does not resolve: {e}",
                        entry.line,
                        entry.prefix,
                        entry.host
                    )
                })?;
                *resolved.entry(key).or_insert(peer)
            }
        };
        map.insert(entry.prefix, peer);
    }
    Ok(PeerTable::Map(map))
}

/// Parses and resolves a hosts document's text.
pub fn load_document(text: &str, origin: &str, family: Family) -> Result<PeerTable> {
    let entries = hosts::parse(text).map_err(|e| anyhow!("{origin}: {e}"))?;
    build_table(&entries, origin, &|host, port| resolve(host, port, family))
}

/// Reads, parses and resolves a hosts file.
pub fn load_file(path: &Path, family: Family) -> Result<PeerTable> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    load_document(&text, &path.display().to_string(), family)
}

/// Fetches, parses and resolves the hosts document at the fetcher's URL. `Ok(None)` when the
/// server says it is unchanged.
pub fn load_url(fetcher: &mut Fetcher, family: Family) -> Result<Option<PeerTable>> {
    let text = match fetcher.fetch()? {
        Fetched::Unchanged => return Ok(None),
        Fetched::Document(text) => text,
    };
    let origin = fetcher.url().to_string();
    load_document(&text, &origin, family).map(Some).inspect_err(|_| fetcher.forget_validators())
}

/// Where the peer table comes from once running.
pub enum Source {
    /// A fixed remote: nothing to refresh.
    Remote,
    /// A hosts file, reloaded on SIGHUP.
    File(PathBuf),
    /// A hosts URL, refetched every interval.
    Url(Fetcher, Duration),
}

/// Publishes `table`, logging what changed in size.
pub fn publish(shared: &Shared, table: PeerTable, origin: &str) {
    tracing::info!("{origin}: loaded {} peer entries", table.len());
    shared.table.store(Arc::new(table));
}

/// Rereads the hosts file; on failure keeps the table in force and logs why.
pub fn reload_file(path: &Path, family: Family, shared: &Shared) {
    match load_file(path, family) {
        Ok(table) => publish(shared, table, &path.display().to_string()),
        Err(e) => tracing::error!("{e:#}; keeping the previous table"),
    }
}

/// Starts the thread that refetches the hosts URL every `interval`.
pub fn spawn_url_refresh(
    mut fetcher: Fetcher,
    interval: Duration,
    family: Family,
    shared: Arc<Shared>,
) -> Result<()> {
    thread::Builder::new().name("hosts-url".into()).spawn(move || {
        loop {
            thread::sleep(interval);
            match load_url(&mut fetcher, family) {
                Ok(Some(table)) => publish(&shared, table, fetcher.url().as_str()),
                Ok(None) => tracing::debug!("{}: unchanged", fetcher.url()),
                Err(e) => tracing::error!("{e:#}; keeping the previous table"),
            }
        }
    })?;
    Ok(())
}

/// Checks the combination of a source and the socket family before anything is opened.
pub fn check_remote(host: &str, port: u16, family: Family) -> Result<SocketAddr> {
    resolve(host, port, family).map_err(|e| anyhow!("-A {host}: does not resolve: {e}"))
}

/// Fails unless `interval` is sane for a timeout derived from it.
pub fn fetch_timeout(interval: Duration) -> Result<Duration> {
    if interval.is_zero() {
        bail!("--hosts-url-interval must be positive");
    }
    // A fetch may take up to 30 s, but never longer than the interval between two fetches.
    Ok(interval.clamp(Duration::from_secs(1), Duration::from_secs(30)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tests::echo_request_v4;
    use crate::peers::Verdict;
    use std::cell::Cell;

    #[test]
    fn literals_resolve_without_dns_and_families_are_enforced() {
        assert_eq!(resolve("192.0.2.1", 9, Family::V4).unwrap(), "192.0.2.1:9".parse().unwrap());
        assert!(resolve("2001:db8::1", 9, Family::V4).is_err());
        assert!(resolve("2001:db8::1", 9, Family::Any).is_ok());
        assert!(resolve("localhost", 9, Family::V4).unwrap().is_ipv4());
    }

    #[test]
    fn each_host_is_resolved_once_and_errors_name_the_line() {
        let entries = hosts::parse(
            "{ nodes: {\n \"10.0.0.1\": { host: \"a\" },\n \"10.0.0.2\": { host: \"a\" },\n \"10.0.0.3\": { host: \"bad\" } } }",
        )
        .unwrap();
        let calls = Cell::new(0);
        let resolver = |host: &str, port: u16| {
            calls.set(calls.get() + 1);
            match host {
                "a" => Ok(SocketAddr::from(([192, 0, 2, 1], port))),
                _ => Err(io::Error::other("no address found")),
            }
        };
        let error = build_table(&entries, "hosts.json", &resolver).unwrap_err().to_string();
        assert_eq!(error, "hosts.json: line 4: `10.0.0.3`: host `bad` does not resolve: no address found");
        assert_eq!(calls.get(), 2);

        let table = build_table(&entries[..2], "hosts.json", &resolver).unwrap();
        assert_eq!(
            table.route(&echo_request_v4([10, 0, 0, 9], [10, 0, 0, 2])),
            Verdict::Send("192.0.2.1:7777".parse().unwrap())
        );
    }

    #[test]
    fn document_errors_name_the_origin() {
        let error = load_document("{ nodes: { x: {} } }", "https://h/x.json", Family::V4).unwrap_err();
        assert!(error.to_string().starts_with("https://h/x.json: line 1 column 12:"), "{error}");
    }
}
