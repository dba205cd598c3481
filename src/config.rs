//! The config file (`--config`) as a peer source: its `[nodes."ADDR"]` tables are a hosts
//! document in TOML, held to the same rules as the JSON one (`hosts::EntryRules`), so that one
//! file can hold a node's settings and its peers. Parsing is pure; the control plane rereads
//! the file and tells which of the other settings changed (they take effect only at a restart).
//!
//! ```toml
//! device = "udptun0"
//! address = ["192.168.100.1/24"]
//!
//! [nodes."192.168.100.2"]
//! host = "vps2.example.org"
//! port = 7777
//! ```

use std::borrow::Cow;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::hosts::{DEFAULT_PORT, Entry, EntryRules, ParseError, line_and_column};

/// The key of the peers' tables.
pub const NODES: &str = "nodes";

/// The settings that name another peer source: a file with `[nodes]` can have none of them.
pub const PEER_SETTINGS: [&str; 3] = ["remote-address", "hosts-file", "hosts-url"];

/// What a config file holds besides flags.
#[derive(Debug)]
pub struct ConfigFile {
    /// The peers of its `[nodes]` tables, if it has any (even an empty `[nodes]` counts).
    pub nodes: Option<Nodes>,
    /// Every other setting, by name, to tell which of them changed since the start.
    pub settings: toml::Table,
}

/// The `[nodes]` tables of a config file.
#[derive(Debug)]
pub struct Nodes {
    /// The 1-based line where `nodes` first appears, for messages about the whole of it.
    pub line: usize,
    /// The entries, in the order of the file.
    pub entries: Vec<Entry>,
}

/// Parses a config file's peers and keeps its other settings (whose values the command-line
/// parser checks). Errors have the line and column and name the key.
pub fn parse(text: &str) -> Result<ConfigFile, ParseError> {
    let at = |offset: usize, message: String| ParseError {
        position: Some(line_and_column(text, offset)),
        message,
    };
    let syntax = |e: toml::de::Error| ParseError {
        position: e.span().map(|span| line_and_column(text, span.start)),
        message: e.message().trim_end().to_string(),
    };
    let document = DeTable::parse(text).map_err(syntax)?;
    let mut settings: toml::Table = toml::from_str(text).map_err(syntax)?;
    settings.remove(NODES);
    let Some((key, value)) = document.get_ref().get_key_value(NODES) else {
        return Ok(ConfigFile { nodes: None, settings });
    };
    let line = line_and_column(text, key.span().start).0;
    for name in PEER_SETTINGS {
        if let Some((other, _)) = document.get_ref().get_key_value(name) {
            return Err(at(
                other.span().start,
                format!(
                    "`{name}`: the peers come from the `[nodes]` tables on line {line}: one source, not both"
                ),
            ));
        }
    }
    let DeValue::Table(nodes) = value.get_ref() else {
        return Err(at(value.span().start, format!("`{NODES}` must be tables `[nodes.\"ADDR\"]`")));
    };
    // In the order of the file, so that a second key for one prefix is the one refused.
    let mut nodes: Vec<_> = nodes.iter().collect();
    nodes.sort_by_key(|(key, _)| key.span().start);
    let mut rules = EntryRules::default();
    for (key, value) in nodes {
        let prefix = rules.prefix(key.get_ref().clone()).map_err(|e| at(key.span().start, e))?;
        let (host, port) = node(key, value, &at)?;
        let line = line_and_column(text, key.span().start).0;
        rules.push(Entry { prefix, host, port, line }).map_err(|e| at(key.span().start, e))?;
    }
    Ok(ConfigFile { nodes: Some(Nodes { line, entries: rules.into_entries() }), settings })
}

/// The host and port of the node named `key`.
fn node(
    key: &Spanned<Cow<'_, str>>,
    value: &Spanned<DeValue<'_>>,
    at: &impl Fn(usize, String) -> ParseError,
) -> Result<(String, u16), ParseError> {
    let name = key.get_ref();
    let DeValue::Table(fields) = value.get_ref() else {
        return Err(at(value.span().start, format!("`{name}` must be a table with `host` (and `port`)")));
    };
    let mut host = None;
    let mut port = DEFAULT_PORT;
    for (field, value) in fields {
        let place = value.span().start;
        match field.get_ref().as_ref() {
            "host" => {
                host = Some(EntryRules::host(name, value.get_ref().as_str()).map_err(|e| at(place, e))?)
            }
            "port" => {
                let number = value
                    .get_ref()
                    .as_integer()
                    .and_then(|n| i64::from_str_radix(n.as_str(), n.radix()).ok())
                    .and_then(|n| u16::try_from(n).ok());
                port = EntryRules::port(name, number).map_err(|e| at(place, e))?;
            }
            // Unlike the JSON document's, unknown fields are refused: a setting written below a
            // `[nodes."ADDR"]` header lands in that table, and must not be lost silently.
            other => {
                return Err(at(
                    field.span().start,
                    format!(
                        "`{name}`: no such field `{other}` (a node has `host` and `port`; settings go \
                         above the first `[nodes.\"ADDR\"]` table)"
                    ),
                ));
            }
        }
    }
    let host = host.ok_or_else(|| at(key.span().start, EntryRules::missing_host(name)))?;
    Ok((host, port))
}

/// The settings whose value differs between `start` and `now` (changed, added or removed), by
/// name in sorted order.
pub fn changed_settings<'a>(start: &'a toml::Table, now: &'a toml::Table) -> Vec<&'a str> {
    let mut names: Vec<&str> = start.keys().chain(now.keys()).map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    names.retain(|name| start.get(*name) != now.get(*name));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(prefix: &str, host: &str, port: u16, line: usize) -> Entry {
        Entry { prefix: prefix.parse().unwrap(), host: host.into(), port, line }
    }

    #[test]
    fn nodes_tables_are_a_hosts_document_beside_the_settings() {
        let text = "device = \"udptun0\"\nmtu = 1400\n\n[nodes.\"192.168.100.2\"]\nhost = \"vps2.example.org\"\n\
                    port = 7778\n\n[nodes.\"10.20.0.0/16\"]\nhost = \"203.0.113.7\"\n";
        let config = parse(text).unwrap();
        let nodes = config.nodes.unwrap();
        assert_eq!(nodes.line, 4);
        assert_eq!(
            nodes.entries,
            vec![
                entry("192.168.100.2", "vps2.example.org", 7778, 4),
                entry("10.20.0.0/16", "203.0.113.7", 7777, 8)
            ]
        );
        assert_eq!(config.settings.keys().collect::<Vec<_>>(), ["device", "mtu"]);
    }

    #[test]
    fn inline_and_empty_nodes_tables_count_and_a_file_without_them_has_no_peers() {
        let config = parse("nodes = { \"fd00::1\" = { host = \"::1\" } }\n").unwrap();
        assert_eq!(config.nodes.unwrap().entries, vec![entry("fd00::1", "::1", 7777, 1)]);
        assert_eq!(parse("mtu = 1400\n[nodes]\n").unwrap().nodes.unwrap().entries, vec![]);
        let without = parse("remote-address = \"x\"\n").unwrap();
        assert!(without.nodes.is_none());
        assert_eq!(without.settings["remote-address"].as_str(), Some("x"));
    }

    #[test]
    fn every_error_names_the_line_and_the_key() {
        let cases = [
            ("[nodes.\"not-an-ip\"]\nhost = \"a\"", (1, 8), "`not-an-ip` is not an IP address"),
            ("[nodes.\"10.0.0.1\"]\nhost = \"a\"\nport = 70000", (3, 8), "`10.0.0.1`: port must be 1-65535"),
            ("[nodes.\"10.0.0.1\"]\nhost = \"a\"\nport = 0", (3, 8), "`10.0.0.1`: port must be 1-65535"),
            ("[nodes.\"10.0.0.1\"]\nhost = \"a\"\nport = \"80\"", (3, 8), "`10.0.0.1`: port must be 1-65535"),
            ("[nodes.\"10.0.0.1\"]\nhost = \"a\"\nport = 80.0", (3, 8), "`10.0.0.1`: port must be 1-65535"),
            ("[nodes.\"10.0.0.1\"]\nhost = \" \"", (2, 8), "`10.0.0.1`: `host` must be a non-empty string"),
            ("[nodes.\"10.0.0.1\"]\nhost = 5", (2, 8), "`10.0.0.1`: `host` must be a non-empty string"),
            ("[nodes.\"10.0.0.1\"]\nport = 1", (1, 8), "`10.0.0.1`: missing field `host`"),
            ("[nodes.\"10.0.0.1\"]\nhost = \"a\"\nmtu = 1400", (3, 1), "`10.0.0.1`: no such field `mtu`"),
            ("[nodes]\n\"10.0.0.1\" = \"a\"", (2, 14), "`10.0.0.1` must be a table"),
            ("nodes = 5", (1, 9), "`nodes` must be tables"),
            ("[nodes.\"10.1.0.0/8\"]\nhost = \"a\"", (1, 8), "host bits set"),
            (
                "[nodes.\"10.0.0.1\"]\nhost = \"a\"\n[nodes.\"10.0.0.1/32\"]\nhost = \"b\"",
                (3, 8),
                "`10.0.0.1/32` is listed twice (first as `10.0.0.1`)",
            ),
            (
                "hosts-file = \"h.json\"\n[nodes]",
                (1, 1),
                "`hosts-file`: the peers come from the `[nodes]` tables on line 2",
            ),
            ("mtu = \n", (1, 7), "string values must be quoted"),
        ];
        for (text, position, expected) in cases {
            let error = parse(text).expect_err(text);
            assert!(error.message.contains(expected), "{text:?} gave {error}");
            assert_eq!(error.position, Some(position), "{text:?} gave {error}");
        }
    }

    #[test]
    fn the_settings_that_changed_are_named_once_each() {
        let table = |text: &str| parse(text).unwrap().settings;
        let start = table("mtu = 1400\naddress = [\"10.0.0.1/24\"]\nthreads = 2\n[nodes]\n");
        let now = table(
            "address = [ \"10.0.0.1/24\" ]\nmtu = 1300\nkeepalive = 5\n[nodes.\"10.0.0.2\"]\nhost = \"b\"\n",
        );
        assert_eq!(changed_settings(&start, &now), ["keepalive", "mtu", "threads"]);
        assert!(changed_settings(&start, &start).is_empty());
    }
}
