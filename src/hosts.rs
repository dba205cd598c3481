//! The hosts document: which real host serves each virtual address or prefix.
//!
//! The format is the original udptun's, parsed leniently (JSON5, so `{ nodes : { ... } }` with
//! unquoted keys, comments and trailing commas all load):
//!
//! ```json
//! { "nodes" : {
//!     "192.168.100.1" : { "host" : "vps1.example.org" },
//!     "192.168.100.2" : { "host" : "vps2.example.org", "port" : 7777 },
//!     "10.20.0.0/16"  : { "host" : "203.0.113.7" } } }
//! ```
//!
//! Parsing is pure; resolving the host names is the control plane's job.

use std::collections::HashMap;
use std::fmt;

use jsonc_parser::ast::Value;
use jsonc_parser::common::{Range, Ranged};
use jsonc_parser::{CollectOptions, ParseOptions, parse_to_ast};

use crate::peers::Prefix;

/// The UDP port a peer listens on when its entry names none (the original's default).
pub const DEFAULT_PORT: u16 = 7777;

/// One entry of the document: packets for `prefix` go to `host`:`port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The virtual address or prefix.
    pub prefix: Prefix,
    /// A host name or an IP address literal, not yet resolved.
    pub host: String,
    /// The peer's UDP port.
    pub port: u16,
    /// The 1-based line of the entry in the document, for messages about it later.
    pub line: usize,
}

/// Why a document does not load, with the place in the text when it is known.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "line {line} column {column}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses a hosts document.
pub fn parse(text: &str) -> Result<Vec<Entry>, ParseError> {
    let options = ParseOptions { allow_missing_commas: false, ..ParseOptions::default() };
    let parsed = parse_to_ast(text, &CollectOptions::default(), &options).map_err(|e| ParseError {
        position: Some((e.line_display(), e.column_display())),
        message: e.kind().to_string(),
    })?;
    let at = |range: Range, message: String| ParseError {
        position: Some(line_and_column(text, range.start)),
        message,
    };
    let Some(root) = parsed.value else {
        return Err(ParseError { position: None, message: "the document is empty".into() });
    };
    let Value::Object(root) = root else {
        return Err(at(root.range(), "expected an object `{ nodes : { ... } }`".into()));
    };
    let Some(nodes) = root.properties.iter().find(|p| p.name.as_str() == "nodes") else {
        return Err(at(root.range, "missing field `nodes`".into()));
    };
    let Value::Object(nodes) = &nodes.value else {
        return Err(at(nodes.value.range(), "`nodes` must be an object".into()));
    };

    let lines = Lines::new(text);
    let mut entries = Vec::with_capacity(nodes.properties.len());
    let mut seen: HashMap<Prefix, &str> = HashMap::with_capacity(nodes.properties.len());
    for node in &nodes.properties {
        let key = node.name.as_str();
        let prefix: Prefix = key.parse().map_err(|e| at(node.name.range(), e))?;
        if let Some(first) = seen.insert(prefix, key) {
            return Err(at(node.name.range(), format!("`{key}` is listed twice (first as `{first}`)")));
        }
        let Value::Object(fields) = &node.value else {
            return Err(at(node.value.range(), format!("`{key}` must be an object `{{ host, port }}`")));
        };
        let mut host = None;
        let mut port = DEFAULT_PORT;
        for field in &fields.properties {
            match field.name.as_str() {
                "host" => match &field.value {
                    Value::StringLit(s) if !s.value.trim().is_empty() => host = Some(s.value.to_string()),
                    other => {
                        return Err(at(other.range(), format!("`{key}`: `host` must be a non-empty string")));
                    }
                },
                "port" => {
                    port = match &field.value {
                        Value::NumberLit(n) => n.value.parse::<u16>().ok().filter(|&p| p != 0),
                        _ => None,
                    }
                    .ok_or_else(|| at(field.value.range(), format!("`{key}`: port must be 1-65535")))?;
                }
                // Unknown fields are ignored, as the original did.
                _ => {}
            }
        }
        let host = host.ok_or_else(|| at(node.value.range(), format!("`{key}`: missing field `host`")))?;
        let line = lines.line_of(node.name.range().start);
        entries.push(Entry { prefix, host, port, line });
    }
    Ok(entries)
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
/// The offsets where lines start, for line numbers in O(log n) (a document may have 100,000
/// entries; counting newlines from the start for each would be quadratic).
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Self {
        Self(std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect())
    }

    /// The 1-based line of byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset)
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(prefix: &str, host: &str, port: u16, line: usize) -> Entry {
        Entry { prefix: prefix.parse().unwrap(), host: host.into(), port, line }
    }

    #[test]
    fn parses_the_original_format() {
        let text = r#"{ "nodes" : {
            "192.168.100.1" : { "host" : "vps1.example.org" },
            "192.168.100.2" : { "host" : "vps2.example.org", "port" : 7778 },
            "192.168.100.3" : { "host" : "203.0.113.7" } } }"#;
        assert_eq!(
            parse(text).unwrap(),
            vec![
                entry("192.168.100.1", "vps1.example.org", 7777, 2),
                entry("192.168.100.2", "vps2.example.org", 7778, 3),
                entry("192.168.100.3", "203.0.113.7", 7777, 4),
            ]
        );
    }

    #[test]
    fn parses_lenient_json_with_unquoted_keys_comments_and_trailing_commas() {
        let text = "{ nodes : {\n  // the gateway\n  \"10.20.0.0/16\" : { host : 'gw', port: 9 },\n  \"fd00::1\": {host: \"::1\"},\n}, }";
        assert_eq!(
            parse(text).unwrap(),
            vec![entry("10.20.0.0/16", "gw", 9, 3), entry("fd00::1", "::1", 7777, 4)]
        );
    }

    #[test]
    fn unknown_fields_are_ignored_for_compatibility() {
        let text = r#"{ "version": 2, "nodes": { "10.0.0.1": { "host": "a", "comment": "x" } } }"#;
        assert_eq!(parse(text).unwrap(), vec![entry("10.0.0.1", "a", 7777, 1)]);
    }

    #[test]
    fn an_empty_table_is_valid() {
        assert_eq!(parse("{ nodes: {} }").unwrap(), vec![]);
    }

    fn error_of(text: &str) -> ParseError {
        parse(text).expect_err("must not parse")
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err = error_of(
            "{ nodes : {\n  \"10.0.0.1\" : { host : \"a\" },\n  \"10.0.0.2\" : { host : \"b\" ] } }",
        );
        assert_eq!(err.position.map(|p| p.0), Some(3), "{err}");
        // Entries must be separated by commas, as in JSON.
        let err =
            error_of("{ nodes : {\n  \"10.0.0.1\" : { host : \"a\" }\n  \"10.0.0.2\" : { host : \"b\" } } }");
        assert!(err.message.contains("Expected comma"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_column_in_characters() {
        // The key starts in column 3 of line 2, after two spaces; columns count characters.
        let err = error_of("{ nodes: { /* é */\n  \"not-an-ip\": { host: \"a\" } } }");
        assert_eq!(err.position, Some((2, 3)), "{err}");
        let err = error_of("{ nodes: {\n  /* é */ \"not-an-ip\": { host: \"a\" } } }");
        assert_eq!(err.position, Some((2, 11)), "{err}");
        let err = error_of("{ nodes: {\n\"10.0.0.1\": { host: \"a\" },\n    \"x\": { host: \"b\" } } }");
        assert_eq!(err.position, Some((3, 5)), "{err}");
    }

    #[test]
    fn every_semantic_error_is_named_with_its_line() {
        let cases = [
            ("{ nodes: {\n \"not-an-ip\": { host: \"a\" } } }", "not an IP address"),
            ("{ nodes: {\n \"10.0.0.1\": { host: \"a\", port: 70000 } } }", "port must be 1-65535"),
            ("{ nodes: {\n \"10.0.0.1\": { host: \"a\", port: 0 } } }", "port must be 1-65535"),
            ("{ nodes: {\n \"10.0.0.1\": { host: \"a\", port: -1 } } }", "port must be 1-65535"),
            ("{ nodes: {\n \"10.0.0.1\": { host: \"a\", port: \"80\" } } }", "port must be 1-65535"),
            ("{ nodes: {\n \"10.0.0.1\": { port: 1 } } }", "missing field `host`"),
            ("{ nodes: {\n \"10.0.0.1\": { host: \" \" } } }", "non-empty string"),
            ("{ nodes: {\n \"10.0.0.1\": { host: 5 } } }", "non-empty string"),
            ("{ nodes: {\n \"10.0.0.1\": \"a\" } }", "must be an object"),
            ("{ nodes: {\n \"10.1.0.0/8\": { host: \"a\" } } }", "host bits set"),
            (
                "{ nodes: { \"10.0.0.1\": { host: \"a\" },\n \"10.0.0.1/32\": { host: \"b\" } } }",
                "listed twice",
            ),
        ];
        for (text, expected) in cases {
            let err = error_of(text);
            assert!(err.message.contains(expected), "{text:?} gave {err}");
            assert_eq!(err.position.map(|p| p.0), Some(2), "{text:?} gave {err}");
        }
        assert!(error_of("{ hosts: {} }").message.contains("missing field `nodes`"));
        assert!(error_of("[]").to_string().contains("expected an object"));
        assert!(error_of("{ nodes: [] }").to_string().contains("`nodes` must be an object"));
        assert!(error_of("").message.contains("empty"));
    }
}
