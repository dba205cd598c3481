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
//! Parsing is pure; resolving the host names is the control plane's job. It walks the tokens of
//! jsonc-parser's scanner and keeps only what an [`Entry`] needs: a document is up to 32 MiB and
//! may be mostly fields this parser ignores, which are checked and skipped, never stored (a
//! syntax tree of such a document took 25 times its size). Syntax errors are the ones
//! jsonc-parser's `parse_to_ast` gave, at the same places, and win over any semantic error, as
//! they did when the whole tree was built first.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry::{Occupied, Vacant};
use std::fmt;

use jsonc_parser::errors::{ParseError as SyntaxError, ParseErrorKind};
use jsonc_parser::tokens::Token;
use jsonc_parser::{Scanner, ScannerOptions};

use crate::prefix::Prefix;

/// The most entries a document may have: twice the 100,000 udptun is built for. Each entry costs
/// a few hundred bytes while a table is built, so this, not the 32 MiB cap, is what bounds the
/// memory a document of tiny entries can take (about 170 MiB at the most).
pub const MAX_ENTRIES: usize = 200_000;

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
    let mut walker = Walker::new(text);
    match read(text, &mut walker) {
        Ok(entries) => walker.finish().map(|()| entries),
        Err(Stop::Syntax(error)) => Err(error),
        // The rest of the text may still hold a syntax error, which is the one to report.
        Err(Stop::Invalid(error)) => walker.finish().and(Err(error)),
    }
}

/// Why reading stopped before the end of the document.
enum Stop {
    /// The text is not JSON5: final.
    Syntax(ParseError),
    /// The document is not a valid hosts document: final once the rest of the text is known to
    /// be JSON5.
    Invalid(ParseError),
}

impl From<ParseError> for Stop {
    fn from(error: ParseError) -> Self {
        Self::Syntax(error)
    }
}

/// Reads the entries, stopping at the first error.
fn read<'a>(text: &'a str, walker: &mut Walker<'a>) -> Result<Vec<Entry>, Stop> {
    let invalid = |offset: usize, message: String| {
        Stop::Invalid(ParseError { position: Some(line_and_column(text, offset)), message })
    };
    let Some(root) = walker.root()? else {
        return Err(Stop::Invalid(ParseError { position: None, message: "the document is empty".into() }));
    };
    let Start::Object(root_at) = root else {
        return Err(invalid(root.at(), "expected an object `{ nodes : { ... } }`".into()));
    };
    let mut lines = Lines::new(text);
    let mut nodes: Option<(usize, Vec<Entry>)> = None;
    while let Some(field) = walker.member()? {
        if field.name != "nodes" {
            walker.skip(&field.value)?;
            continue;
        }
        if let Some((first_at, _)) = nodes {
            let first = lines.line_of(first_at);
            return Err(invalid(field.at, format!("`nodes` is listed twice (first on line {first})")));
        }
        let Start::Object(_) = field.value else {
            return Err(invalid(field.value.at(), "`nodes` must be an object".into()));
        };
        nodes = Some((field.at, read_nodes(walker, &mut lines, &invalid)?));
    }
    nodes.map(|(_, entries)| entries).ok_or_else(|| invalid(root_at, "missing field `nodes`".into()))
}

/// Reads the members of the `nodes` object, whose `{` was the last token read.
fn read_nodes<'a>(
    walker: &mut Walker<'a>,
    lines: &mut Lines<'a>,
    invalid: &impl Fn(usize, String) -> Stop,
) -> Result<Vec<Entry>, Stop> {
    let mut rules = EntryRules::default();
    while let Some(node) = walker.member()? {
        let key = node.name;
        let prefix = rules.prefix(key.clone()).map_err(|e| invalid(node.at, e))?;
        let Start::Object(fields_at) = node.value else {
            return Err(invalid(node.value.at(), format!("`{key}` must be an object `{{ host, port }}`")));
        };
        let mut host = None;
        let mut port = DEFAULT_PORT;
        while let Some(field) = walker.member()? {
            match (&*field.name, field.value) {
                ("host", value) => {
                    let text = match &value {
                        Start::Scalar(Token::String(s), _) => Some(&**s),
                        _ => None,
                    };
                    host = Some(EntryRules::host(&key, text).map_err(|e| invalid(value.at(), e))?);
                }
                ("port", value) => {
                    let number = match &value {
                        Start::Scalar(Token::Number(n), _) => n.parse::<u16>().ok(),
                        _ => None,
                    };
                    port = EntryRules::port(&key, number).map_err(|e| invalid(value.at(), e))?;
                }
                // Unknown fields are ignored, as the original did.
                (_, other) => walker.skip(&other)?,
            }
        }
        let host = host.ok_or_else(|| invalid(fields_at, EntryRules::missing_host(&key)))?;
        rules
            .push(Entry { prefix, host, port, line: lines.line_of(node.at) })
            .map_err(|e| invalid(node.at, e))?;
    }
    Ok(rules.into_entries())
}

/// The rules every entry follows, whatever the syntax it comes in (this JSON document, or the
/// `[nodes]` tables of a config file): both accept the same entries and refuse the others in
/// the same words. Each check returns the message; the caller knows where to place it.
#[derive(Default)]
pub struct EntryRules<'a> {
    entries: Vec<Entry>,
    /// The key that named each prefix so far, for the message about a second one.
    seen: HashMap<Prefix, Cow<'a, str>>,
}

impl<'a> EntryRules<'a> {
    /// The prefix a node's `key` names: an IP address or prefix that no earlier key named.
    pub fn prefix(&mut self, key: Cow<'a, str>) -> Result<Prefix, String> {
        let prefix: Prefix = key.parse()?;
        match self.seen.entry(prefix) {
            Occupied(first) => Err(format!("`{key}` is listed twice (first as `{}`)", first.get())),
            Vacant(slot) => {
                slot.insert(key);
                Ok(prefix)
            }
        }
    }

    /// The `host` of node `key`, given as `text` (`None`: not a string).
    pub fn host(key: &str, text: Option<&str>) -> Result<String, String> {
        text.filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("`{key}`: `host` must be a non-empty string"))
    }

    /// The `port` of node `key`, given as `number` (`None`: not a number that fits 16 bits).
    pub fn port(key: &str, number: Option<u16>) -> Result<u16, String> {
        number.filter(|&p| p != 0).ok_or_else(|| format!("`{key}`: port must be 1-65535"))
    }

    /// Why node `key`, which names no host, is refused.
    pub fn missing_host(key: &str) -> String {
        format!("`{key}`: missing field `host`")
    }

    /// Adds `entry`, unless the document already has [`MAX_ENTRIES`].
    pub fn push(&mut self, entry: Entry) -> Result<(), String> {
        if self.entries.len() == MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        self.entries.push(entry);
        Ok(())
    }

    /// The entries, in the order they were added.
    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }
}

/// jsonc-parser's limit on nesting, kept so that what loaded before still loads: its tree
/// builder counted an array as one level and an object member as two.
const MAX_DEPTH: usize = 512;
/// Containers open at once: the nesting limit allows one more array, if it is empty.
const MAX_OPEN: usize = MAX_DEPTH + 1;

/// Where a value starts, and its first token if it is a scalar.
enum Start<'a> {
    Object(usize),
    Array(usize),
    Scalar(Token<'a>, usize),
}

impl Start<'_> {
    /// The byte offset of the value's first token.
    fn at(&self) -> usize {
        match *self {
            Self::Object(at) | Self::Array(at) | Self::Scalar(_, at) => at,
        }
    }
}

/// An object member: its name, where the name starts, and the start of its value.
struct Member<'a> {
    name: Cow<'a, str>,
    at: usize,
    value: Start<'a>,
}

/// What the walker read.
enum Event<'a> {
    /// A member of the innermost object.
    Member(Member<'a>),
    /// An element of the innermost array, or the document's value.
    Element(Start<'a>),
    /// The innermost container closed.
    Close,
}

/// Where the walker is in the grammar.
#[derive(Clone, Copy)]
enum Step {
    /// Before the document's value.
    Root,
    /// In an object: the current token is a member name or `}`.
    Member,
    /// In an array: the current token is an element or `]`.
    Element,
    /// The last token read ended a value.
    AfterValue,
    /// The whole text is read.
    Finished,
}

/// A pull parser over jsonc-parser's scanner with the grammar, leniency and error messages of
/// its `parse_to_ast` (allowing all it allows but missing commas), holding nothing but the
/// current token and where each open container starts.
struct Walker<'a> {
    text: &'a str,
    scanner: Scanner<'a>,
    /// The current token; taken when it becomes part of an event.
    token: Option<Token<'a>>,
    /// Where the current token starts.
    start: usize,
    step: Step,
    /// Where each open `{` or `[` starts, outermost first; `open[..depth]` are in use.
    open: [usize; MAX_OPEN],
    depth: usize,
    /// jsonc-parser's nesting count of the open containers (see [`MAX_DEPTH`]).
    weight: usize,
}

impl<'a> Walker<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            scanner: Scanner::new(text, &ScannerOptions::default()),
            token: None,
            start: 0,
            step: Step::Root,
            open: [0; MAX_OPEN],
            depth: 0,
            weight: 0,
        }
    }

    /// The start of the document's value; `None` if the text holds none.
    fn root(&mut self) -> Result<Option<Start<'a>>, ParseError> {
        Ok(match self.event()? {
            Some(Event::Element(value)) => Some(value),
            _ => None,
        })
    }

    /// The next member of the object being read, or `None` once it closes.
    fn member(&mut self) -> Result<Option<Member<'a>>, ParseError> {
        Ok(match self.event()? {
            Some(Event::Member(member)) => Some(member),
            _ => None,
        })
    }

    /// Reads the rest of the value that starts with `value`, keeping nothing of it.
    fn skip(&mut self, value: &Start<'a>) -> Result<(), ParseError> {
        let mut depth = match value {
            Start::Scalar(..) => return Ok(()),
            Start::Object(_) | Start::Array(_) => 1usize,
        };
        while depth > 0 {
            match self.event()? {
                Some(Event::Member(Member { value: Start::Scalar(..), .. }))
                | Some(Event::Element(Start::Scalar(..))) => {}
                Some(Event::Member(_) | Event::Element(_)) => depth += 1,
                Some(Event::Close) => depth -= 1,
                None => break,
            }
        }
        Ok(())
    }

    /// Reads the rest of the text, which must be JSON5 with nothing after the value.
    fn finish(&mut self) -> Result<(), ParseError> {
        while self.event()?.is_some() {}
        Ok(())
    }

    /// Reads up to the next event; `None` once the text is read.
    fn event(&mut self) -> Result<Option<Event<'a>>, ParseError> {
        loop {
            match self.step {
                Step::Root => {
                    self.advance()?;
                    let Some(token) = self.token.take() else {
                        self.step = Step::Finished;
                        return Ok(None);
                    };
                    return Ok(Some(Event::Element(self.value(token)?)));
                }
                Step::Member => {
                    let at = self.start;
                    let name = match self.token.take() {
                        Some(Token::CloseBrace) => return Ok(Some(self.close())),
                        None => return Err(self.error(self.innermost(), ParseErrorKind::UnterminatedObject)),
                        Some(Token::String(name)) => name,
                        Some(Token::Word(name) | Token::Number(name)) => Cow::Borrowed(name),
                        Some(Token::Boolean(value)) => Cow::Borrowed(if value { "true" } else { "false" }),
                        Some(Token::Null) => Cow::Borrowed("null"),
                        Some(_) => return Err(self.error(at, ParseErrorKind::UnexpectedTokenInObject)),
                    };
                    self.advance()?;
                    if !matches!(self.token, Some(Token::Colon)) {
                        return Err(self.error(self.start, ParseErrorKind::ExpectedColonAfterObjectKey));
                    }
                    self.advance()?;
                    self.check_depth(at)?;
                    let Some(token) = self.token.take() else {
                        return Err(self.error(self.start, ParseErrorKind::ExpectedObjectValue));
                    };
                    let value = self.value(token)?;
                    return Ok(Some(Event::Member(Member { name, at, value })));
                }
                Step::Element => match self.token.take() {
                    Some(Token::CloseBracket) => return Ok(Some(self.close())),
                    None => return Err(self.error(self.innermost(), ParseErrorKind::UnterminatedArray)),
                    Some(token) => {
                        self.check_depth(self.innermost())?;
                        return Ok(Some(Event::Element(self.value(token)?)));
                    }
                },
                Step::AfterValue => self.after_value()?,
                Step::Finished => return Ok(None),
            }
        }
    }

    /// Starts the value whose first token is `token` (already taken from `self.token`).
    fn value(&mut self, token: Token<'a>) -> Result<Start<'a>, ParseError> {
        let at = self.start;
        let kind = match token {
            Token::OpenBrace | Token::OpenBracket => {
                let object = token == Token::OpenBrace;
                let Some(slot) = self.open.get_mut(self.depth) else {
                    return Err(self.error(at, ParseErrorKind::NestingDepthExceeded));
                };
                *slot = at;
                self.depth += 1;
                self.weight += if object { 2 } else { 1 };
                self.advance()?;
                self.step = if object { Step::Member } else { Step::Element };
                return Ok(if object { Start::Object(at) } else { Start::Array(at) });
            }
            Token::String(_) | Token::Boolean(_) | Token::Number(_) | Token::Null => {
                self.step = Step::AfterValue;
                return Ok(Start::Scalar(token, at));
            }
            Token::CloseBracket => ParseErrorKind::UnexpectedCloseBracket,
            Token::CloseBrace => ParseErrorKind::UnexpectedCloseBrace,
            Token::Comma => ParseErrorKind::UnexpectedComma,
            Token::Colon => ParseErrorKind::UnexpectedColon,
            Token::Word(_) => ParseErrorKind::UnexpectedWord,
            // `advance` skips comments.
            Token::CommentLine(_) | Token::CommentBlock(_) => ParseErrorKind::UnexpectedToken,
        };
        Err(self.error(at, kind))
    }

    /// After a value: a comma, or the end of its container or of the text.
    fn after_value(&mut self) -> Result<(), ParseError> {
        if self.depth == 0 {
            self.advance()?;
            self.step = Step::Finished;
            return match self.token {
                Some(_) => Err(self.error(self.start, ParseErrorKind::MultipleRootJsonValues)),
                None => Ok(()),
            };
        }
        let object = self.in_object();
        let value_end = self.scanner.token_end();
        self.advance()?;
        let missing_comma = match &self.token {
            Some(Token::Comma) => {
                self.advance()?;
                false
            }
            // What could start the next member or element: a comma is missing.
            Some(Token::String(_) | Token::Boolean(_) | Token::Number(_) | Token::Null) => true,
            Some(Token::Word(_)) => object,
            Some(Token::OpenBrace | Token::OpenBracket) => !object,
            _ => false,
        };
        if missing_comma {
            return Err(self.error(value_end, ParseErrorKind::ExpectedComma));
        }
        self.step = if object { Step::Member } else { Step::Element };
        Ok(())
    }

    /// Ends the innermost container, whose closing token was the last read.
    fn close(&mut self) -> Event<'a> {
        self.weight -= if self.in_object() { 2 } else { 1 };
        self.depth -= 1;
        self.step = Step::AfterValue;
        Event::Close
    }

    /// Refuses a value nested deeper than jsonc-parser allowed, naming where its parent (the
    /// array, or the member's name) starts, as it did.
    fn check_depth(&self, parent: usize) -> Result<(), ParseError> {
        if self.weight > MAX_DEPTH {
            return Err(self.error(parent, ParseErrorKind::NestingDepthExceeded));
        }
        Ok(())
    }

    /// Where the innermost open container starts.
    fn innermost(&self) -> usize {
        self.depth.checked_sub(1).and_then(|i| self.open.get(i)).copied().unwrap_or_default()
    }

    /// Whether the innermost open container is an object.
    fn in_object(&self) -> bool {
        self.text.as_bytes().get(self.innermost()) == Some(&b'{')
    }

    /// Moves to the next token that is not a comment.
    fn advance(&mut self) -> Result<(), ParseError> {
        loop {
            let token = self.scanner.scan().map_err(from_syntax)?;
            if !matches!(token, Some(Token::CommentLine(_) | Token::CommentBlock(_))) {
                self.start = self.scanner.token_start();
                self.token = token;
                return Ok(());
            }
        }
    }

    /// A syntax error at byte `offset`, placed as jsonc-parser places its own.
    fn error(&self, offset: usize, kind: ParseErrorKind) -> ParseError {
        ParseError { position: Some(syntax_line_and_column(self.text, offset)), message: kind.to_string() }
    }
}

/// A scanner error, placed where jsonc-parser placed it.
fn from_syntax(error: SyntaxError) -> ParseError {
    ParseError {
        position: Some((error.line_display(), error.column_display())),
        message: error.kind().to_string(),
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`, as jsonc-parser
/// counts them for its errors: a lone `\r` also ends a line.
fn syntax_line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let (mut line, mut column) = (1, 1);
    let mut chars = before.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' || c == '\r' && chars.peek() != Some(&'\n') {
            (line, column) = (line + 1, 1);
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// Line numbers of offsets met in increasing order, counted on from the last one asked for: a
/// table of where lines start would cost 8 bytes per line of the document.
struct Lines<'a> {
    text: &'a [u8],
    offset: usize,
    line: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Self { text: text.as_bytes(), offset: 0, line: 1 }
    }

    /// The 1-based line of byte `offset`.
    fn line_of(&mut self, offset: usize) -> usize {
        if offset < self.offset {
            (self.offset, self.line) = (0, 1);
        }
        let newlines = self.text.get(self.offset..offset).unwrap_or_default();
        self.line += newlines.iter().filter(|&&b| b == b'\n').count();
        self.offset = offset;
        self.line
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
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

    #[test]
    fn a_second_nodes_field_is_refused_naming_both_lines() {
        let err = error_of("{ nodes: { \"10.0.0.1\": { host: \"a\" } },\n  nodes: {} }");
        assert_eq!(err.position, Some((2, 3)), "{err}");
        assert_eq!(err.message, "`nodes` is listed twice (first on line 1)");
    }

    #[test]
    fn a_syntax_error_anywhere_wins_over_a_semantic_error_before_it() {
        let err = error_of("{ nodes: { \"not-an-ip\": { host: \"a\" } },\n  pad: [1, 2 3] }");
        assert_eq!((err.position, err.message.as_str()), (Some((2, 13)), "Expected comma"));
        let err = error_of("[] ]");
        assert_eq!(
            (err.position, err.message.as_str()),
            (Some((1, 4)), "Text cannot contain more than one JSON value")
        );
        // And with a clean rest, the first semantic error is the one reported.
        let err = error_of("{ nodes: { \"not-an-ip\": { host: \"a\" }, \"10.0.0.1\": 5 } }");
        assert!(err.message.contains("not an IP address"), "{err}");
    }

    #[test]
    fn ignored_fields_of_any_shape_are_skipped() {
        let text = "{ a: [1, [2, {b: {c: [null, true, 'x']}}], {}], nodes: {\n \"10.0.0.1\": { x: {y: [[]]}, host: 'h', z: -1.5e3 },\n }, \
                    z: { nodes: 5 } }";
        assert_eq!(parse(text).unwrap(), vec![entry("10.0.0.1", "h", 7777, 2)]);
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        // A million levels, ignored or not, end in the nesting limit, not in a stack overflow.
        let deep = "[".repeat(1_000_000);
        for text in [deep.clone(), format!("{{ pad: {deep}"), format!("{{ nodes: {{}}, pad: {deep}]")] {
            let err = error_of(&text);
            assert_eq!(err.message, "Maximum nesting depth exceeded", "{err}");
        }
        assert_eq!(error_of(&deep).position, Some((1, 513)));
        // Up to the limit, ignored values nest as they did.
        let ok = format!("{{ pad: {}{}, nodes: {{}} }}", "[".repeat(510), "]".repeat(510));
        assert_eq!(parse(&ok).unwrap(), vec![]);
    }

    #[test]
    fn line_numbers_count_on_from_entry_to_entry() {
        let mut lines = Lines::new("a\nb\n\nc");
        assert_eq!([4, 5, 0, 2, 3].map(|offset| lines.line_of(offset)), [3, 4, 1, 2, 2]);
    }

    #[test]
    fn a_document_may_have_max_entries_and_no_more() {
        let document = |count: u32| {
            let body: Vec<String> = (0..count)
                .map(|i| {
                    let [_, a, b, c] = i.to_be_bytes();
                    format!("  \"10.{a}.{b}.{c}\" : {{ \"host\" : \"100.{a}.{b}.{c}\", \"port\" : 7777 }}")
                })
                .collect();
            format!("{{ \"nodes\" : {{\n{}\n}} }}", body.join(",\n"))
        };
        let most = MAX_ENTRIES as u32;
        let entries = parse(&document(most)).unwrap();
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert_eq!(entries[MAX_ENTRIES - 1], entry("10.3.13.63", "100.3.13.63", 7777, MAX_ENTRIES + 1));
        let error = parse(&document(most + 1)).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("line {} column 3: more than {MAX_ENTRIES} entries", MAX_ENTRIES + 2)
        );
    }

    /// The parser this one replaced: the whole syntax tree first, then the entries from it. A
    /// second `nodes` is the one change.
    fn parse_with_a_tree(text: &str) -> Result<Vec<Entry>, ParseError> {
        use jsonc_parser::ast::Value;
        use jsonc_parser::common::{Range, Ranged};
        use jsonc_parser::{CollectOptions, ParseOptions, parse_to_ast};

        let options = ParseOptions { allow_missing_commas: false, ..ParseOptions::default() };
        let parsed = parse_to_ast(text, &CollectOptions::default(), &options).map_err(from_syntax)?;
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
        let mut all_nodes = root.properties.iter().filter(|p| p.name.as_str() == "nodes");
        let Some(nodes) = all_nodes.next() else {
            return Err(at(root.range, "missing field `nodes`".into()));
        };
        let nodes_key = nodes.name.range();
        let Value::Object(nodes) = &nodes.value else {
            return Err(at(nodes.value.range(), "`nodes` must be an object".into()));
        };
        let mut entries = Vec::new();
        let mut seen: HashMap<Prefix, &str> = HashMap::new();
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
                            return Err(at(
                                other.range(),
                                format!("`{key}`: `host` must be a non-empty string"),
                            ));
                        }
                    },
                    "port" => {
                        port = match &field.value {
                            Value::NumberLit(n) => n.value.parse::<u16>().ok().filter(|&p| p != 0),
                            _ => None,
                        }
                        .ok_or_else(|| at(field.value.range(), format!("`{key}`: port must be 1-65535")))?;
                    }
                    _ => {}
                }
            }
            let host =
                host.ok_or_else(|| at(node.value.range(), format!("`{key}`: missing field `host`")))?;
            let line = line_and_column(text, node.name.range().start).0;
            entries.push(Entry { prefix, host, port, line });
        }
        if let Some(second) = all_nodes.next() {
            let first = line_and_column(text, nodes_key.start).0;
            return Err(at(second.name.range(), format!("`nodes` is listed twice (first on line {first})")));
        }
        Ok(entries)
    }

    #[track_caller]
    fn assert_same_as_the_tree(text: &str) {
        assert_eq!(parse(text), parse_with_a_tree(text), "{text:?}");
    }

    #[test]
    fn errors_are_those_of_the_tree_parser() {
        let nested = |open: &str, n: usize, inner: &str| format!("{}{inner}", open.repeat(n));
        let mut cases: Vec<String> = [
            "", "  // only a comment\n", "{", "[", "{ nodes: {", "{ nodes: { \"10.0.0.1\": ", "{ nodes ", "{ nodes: }",
            "{ , }", "{ nodes: {}, , }", "[1,,2]", "[1 2]", "[1 {}]", "[1 x]", "{ a: 1 b: 2 }", "{ a: 1 'b': 2 }",
            "{ a: 1 { }", "{ a: [1 } }", "{ a: { ] }", "[ : ]", "{ a: x }", "{ a: @ }", "{ a: 'x }", "/* x",
            "{}\n// end", "{} x", "{}{}", "{ nodes: {} } // ok\r\n  ]", "{\r nodes: {}\r ]", "\u{2028}{ nodes: {} } }",
            "{ 'nodes': {}, nodes: {\n} }", "{ nodes: [], nodes: {} }", "{ nodes: {}, nodes: [] }", "{ true: 1, null: 2, 3: 4, nodes: {} }",
            "{ nodes: { \"10.0.0.1\": { host: \"a\\u0041\", port: +80 }, '10.0.0.2': { host: 'b', port: 0x10 } } }",
            "{ nodes: { \"10.0.0.1\": { host: \"a\", port: 80.5 } } }", "{ nodes: { \"10.0.0.1\": { host: \"a\" }, } }, ",
            "{ \"n\\u006fdes\": { \"10.0.0.1\": { host: \"\\x41\" } } }", "{ nodes: { é: 1 } }", "{ nodes: { \"10.0.0.1\": { host: [] } } }",
        ]
        .map(String::from)
        .to_vec();
        for n in [255, 256, 257, 510, 511, 512, 513, 514] {
            cases.push(nested("[", n, ""));
            cases.push(nested("[", n, "1"));
            cases.push(format!("{}{}", nested("[", n, ""), "]".repeat(n)));
            cases.push(format!("{}{}", nested("[", n, "1"), "]".repeat(n)));
            cases.push(nested("{\"a\": ", n, "1"));
            cases.push(nested("{a:[", n, "{}"));
            cases.push(format!("{{ nodes: {{}}, pad: {} }}", nested("{ x: [ 1,", n / 2, "")));
        }
        for case in &cases {
            assert_same_as_the_tree(case);
        }
    }

    use proptest::prelude::*;

    /// Pieces of hosts documents, right and wrong, that random sequences make into both.
    const PIECES: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\n",
        "\r",
        "nodes",
        "\"nodes\"",
        "'nodes'",
        "host",
        "port",
        "pad",
        "\"10.0.0.1\"",
        "'10.0.0.2'",
        "\"10.0.0.0/8\"",
        "\"fd00::1\"",
        "\"x\"",
        "'h'",
        "\"\"",
        "7777",
        "0",
        "-1",
        "1.5",
        "0x10",
        "true",
        "null",
        "Infinity",
        "// c\n",
        "/* c */",
        "é",
        "@",
        "\"a\\nb\"",
        "{ nodes: {",
        "\"10.0.0.3\": { host: 'a' }",
        "{}",
        "[]",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn any_sequence_of_pieces_parses_as_the_tree_parser_did(
            pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..40),
        ) {
            let text = pieces.concat();
            prop_assert_eq!(parse(&text), parse_with_a_tree(&text), "{:?}", text);
        }

        #[test]
        fn any_valid_document_with_a_piece_inserted_parses_as_the_tree_parser_did(
            at in 0usize..200,
            piece in proptest::sample::select(PIECES),
        ) {
            let valid = "{ pad: [1, {a: 'b'}], nodes: {\n \"10.0.0.1\": { host: \"a\", port: 9, x: [] },\n \
                         '10.0.0.0/24': { host: 'b' }, }, z: null }";
            let mut text = valid.to_string();
            let at = at.min(text.len());
            if text.is_char_boundary(at) {
                text.insert_str(at, piece);
            }
            prop_assert_eq!(parse(&text), parse_with_a_tree(&text), "{:?}", text);
        }
    }
}
