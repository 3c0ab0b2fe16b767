//! A YAML document tree that remembers where every node came from.
//!
//! Manifest errors must name the file, line and column of the offending value, and compose
//! files lean on anchors, aliases and `<<` merge keys. This module loads a document through
//! yaml-rust2's marked event stream into [`Node`]s that carry their [`Mark`], expands aliases
//! and merge keys, and rejects duplicate keys. Scalars keep their source text; typing (bool,
//! int, null) is decided by the reader that knows what the field expects. [`emit`] writes a
//! tree back out so that it reads back the same (the CLI sends resolved documents this way).
//!
//! It must not know anything about jaco.yaml, compose or daemon.yaml: schema rules live in the
//! modules that own those documents.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Upper bound on nodes created by alias expansion, so that a small hostile document
/// ("billion laughs") cannot exhaust memory.
const MAX_NODES: usize = 1_000_000;

/// A position in a source document (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1.
    pub column: usize,
}

impl Mark {
    fn from_marker(marker: Marker) -> Self {
        Mark {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

/// One node of a loaded document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The node's content.
    pub value: Value,
    /// Where the node starts in its source.
    pub mark: Mark,
}

/// The content of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar with its source text; `plain` is false for quoted and block scalars (and
    /// `!!str`-tagged ones), which are always strings.
    Scalar {
        /// The scalar's text after YAML unescaping.
        text: String,
        /// Whether the scalar was written without quotes, so YAML typing applies.
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping in source order; keys are unique.
    Map(Vec<(Node, Node)>),
}

/// A document that is not well-formed YAML, with the position of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at line {}, column {}", mark.line, mark.column)]
pub struct SyntaxError {
    /// What is wrong.
    pub message: String,
    /// Where.
    pub mark: Mark,
}

impl Node {
    /// A plain string scalar at `mark` (used for values synthesised by folding).
    pub fn string(text: impl Into<String>, mark: Mark) -> Self {
        Node {
            value: Value::Scalar {
                text: text.into(),
                plain: false,
            },
            mark,
        }
    }

    /// The scalar text, if this is a scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for `null`, `~`, `Null`, `NULL` and an empty plain value.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if is_null_text(text))
    }

    /// The boolean value of a plain `true`/`false` scalar (YAML 1.2 core schema spellings).
    pub fn as_bool(&self) -> Option<bool> {
        match &self.value {
            Value::Scalar { text, plain: true } => match text.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// The integer value of a scalar that is a decimal integer (quoted or not, because
    /// interpolation turns `${PORT}` into text that must still count as a number).
    pub fn as_i64(&self) -> Option<i64> {
        let text = self.as_scalar()?.trim();
        let digits = text.strip_prefix('+').unwrap_or(text);
        if digits.is_empty() {
            return None;
        }
        digits.parse().ok()
    }

    /// The number value of a scalar (integer or decimal).
    pub fn as_f64(&self) -> Option<f64> {
        let text = self.as_scalar()?.trim();
        if text.is_empty() || !text.chars().any(|c| c.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    }

    /// The entries of a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value stored under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_scalar() == Some(key))
            .map(|(_, v)| v)
    }

    /// A short name for the node's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "null",
            Value::Scalar { .. } => "scalar",
            Value::Seq(_) => "list",
            Value::Map(_) => "mapping",
        }
    }

    /// Converts to JSON with YAML typing for plain scalars (used for pass-through values).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Scalar { text, plain } => {
                if !plain {
                    serde_json::Value::String(text.clone())
                } else if is_null_text(text) {
                    serde_json::Value::Null
                } else if let Some(b) = self.as_bool() {
                    serde_json::Value::Bool(b)
                } else if let Ok(i) = text.parse::<i64>() {
                    serde_json::Value::from(i)
                } else if let Some(f) = plain_float(text) {
                    serde_json::Value::from(f)
                } else {
                    serde_json::Value::String(text.clone())
                }
            }
            Value::Seq(items) => items.iter().map(Node::to_json).collect(),
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.as_scalar().unwrap_or_default().to_owned(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn plain_float(text: &str) -> Option<f64> {
    let looks_numeric = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        && text.chars().any(|c| c.is_ascii_digit());
    if looks_numeric {
        text.parse().ok()
    } else {
        None
    }
}

/// Loads a small closed-schema document (daemon.yaml, the bootstrap file) into `T` through
/// serde: a syntax error is `parse_failed` with its line and column, an unknown or mistyped
/// key `validation_failed` naming the field and, when it can be found, its line. An empty
/// document loads as `T::default()`. `label` names the document in messages (its path).
pub fn deserialize<T>(label: &str, text: &str) -> Result<T, crate::error::Error>
where
    T: serde::de::DeserializeOwned + Default,
{
    use crate::error::{Code, Error};
    let root = parse(text).map_err(|e| {
        Error::new(Code::ParseFailed, format!("{label}: {e}"))
            .with("file", label)
            .with("line", e.mark.line)
            .with("column", e.mark.column)
    })?;
    if root.as_map().is_some_and(<[_]>::is_empty) {
        return Ok(T::default());
    }
    serde_json::from_value(root.to_json()).map_err(|e| {
        let message = e.to_string();
        let mut error =
            Error::new(Code::ValidationFailed, format!("{label}: {message}")).with("file", label);
        // serde names the offending key as `unknown field `x``; point at its line.
        if let Some(key) = message.split('`').nth(1)
            && let Some((k, _)) = find_key(&root, key)
        {
            error = error
                .with("field", key)
                .with("line", k.mark.line)
                .with("column", k.mark.column);
        }
        error
    })
}

/// The first mapping entry named `key`, searching depth first.
fn find_key<'a>(node: &'a Node, key: &str) -> Option<&'a (Node, Node)> {
    let entries = node.as_map()?;
    entries
        .iter()
        .find(|(k, _)| k.as_scalar() == Some(key))
        .or_else(|| entries.iter().find_map(|(_, v)| find_key(v, key)))
}

/// Parses one YAML document. An empty document loads as an empty mapping.
pub fn parse(source: &str) -> Result<Node, SyntaxError> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(source);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        message: e.info().to_owned(),
        mark: Mark::from_marker(*e.marker()),
    })?;
    if let Some(error) = builder.error {
        return Err(error);
    }
    match builder.documents.len() {
        0 => Ok(Node {
            value: Value::Map(Vec::new()),
            mark: Mark { line: 1, column: 1 },
        }),
        1 => Ok(builder.documents.pop().expect("one document")),
        _ => Err(SyntaxError {
            message: "expected one YAML document, found several (remove the extra `---`)".into(),
            mark: builder.second_document_mark,
        }),
    }
}

/// Builds [`Node`]s from parser events.
#[derive(Default)]
struct Builder {
    documents: Vec<Node>,
    /// Open collections with their anchor id.
    stack: Vec<(Node, usize)>,
    /// A mapping key waiting for its value, per open mapping.
    pending_keys: Vec<Option<Node>>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    error: Option<SyntaxError>,
    second_document_mark: Mark,
}

impl Builder {
    fn fail(&mut self, message: impl Into<String>, mark: Mark) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                message: message.into(),
                mark,
            });
        }
    }

    fn count(&mut self, node: &Node, mark: Mark) {
        self.nodes += count_nodes(node);
        if self.nodes > MAX_NODES {
            self.fail(
                format!("document expands to more than {MAX_NODES} nodes through aliases"),
                mark,
            );
        }
    }

    fn insert(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some((parent, _)) = self.stack.last_mut() else {
            self.documents.push(node);
            return;
        };
        match &mut parent.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => {
                let pending = self
                    .pending_keys
                    .last_mut()
                    .expect("a key slot per mapping");
                match pending.take() {
                    None => *pending = Some(node),
                    Some(key) => {
                        let duplicate = key.as_scalar().is_some_and(|name| {
                            name != "<<" && entries.iter().any(|(k, _)| k.as_scalar() == Some(name))
                        });
                        if duplicate {
                            let mark = key.mark;
                            let name = key.as_scalar().unwrap_or_default().to_owned();
                            self.fail(format!("duplicate key {name:?}"), mark);
                        } else if !matches!(key.value, Value::Scalar { .. }) {
                            let mark = key.mark;
                            self.fail("mapping keys must be scalars", mark);
                        } else {
                            entries.push((key, node));
                        }
                    }
                }
            }
            Value::Scalar { .. } => unreachable!("scalars are never on the stack"),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, marker: Marker) {
        if self.error.is_some() {
            return;
        }
        let mark = Mark::from_marker(marker);
        match event {
            Event::DocumentStart if self.documents.len() == 1 => {
                self.second_document_mark = mark;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let string_tag = tag.is_some_and(|t| t.suffix == "str");
                let plain = style == TScalarStyle::Plain && !string_tag;
                let node = Node {
                    value: Value::Scalar { text, plain },
                    mark,
                };
                self.nodes += 1;
                self.insert(node, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                let node = Node {
                    value: Value::Seq(Vec::new()),
                    mark,
                };
                self.stack.push((node, anchor));
            }
            Event::MappingStart(anchor, _) => {
                let node = Node {
                    value: Value::Map(Vec::new()),
                    mark,
                };
                self.stack.push((node, anchor));
                self.pending_keys.push(None);
            }
            Event::SequenceEnd => {
                let (node, anchor) = self.stack.pop().expect("balanced sequence events");
                self.nodes += 1;
                self.insert(node, anchor);
            }
            Event::MappingEnd => {
                let (mut node, anchor) = self.stack.pop().expect("balanced mapping events");
                self.pending_keys.pop();
                if let Err(error) = expand_merge_keys(&mut node) {
                    self.fail(error.message, error.mark);
                }
                self.nodes += 1;
                self.insert(node, anchor);
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => {
                    self.count(&node, mark);
                    let node = Node { mark, ..node };
                    self.insert(node, 0);
                }
                None => self.fail("alias refers to an unknown anchor", mark),
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.value {
        Value::Scalar { .. } => 0,
        Value::Seq(items) => items.iter().map(count_nodes).sum(),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| count_nodes(k) + count_nodes(v))
            .sum(),
    }
}

/// Applies YAML merge keys (`<<: *base` or `<<: [*a, *b]`): keys written in the mapping win,
/// then earlier merge sources win over later ones.
fn expand_merge_keys(node: &mut Node) -> Result<(), SyntaxError> {
    let Value::Map(entries) = &mut node.value else {
        return Ok(());
    };
    if !entries.iter().any(|(k, _)| k.as_scalar() == Some("<<")) {
        return Ok(());
    }
    let (merges, mut own): (Vec<_>, Vec<_>) = std::mem::take(entries)
        .into_iter()
        .partition(|(k, _)| k.as_scalar() == Some("<<"));
    for (_, source) in merges {
        let sources = match source.value {
            Value::Map(_) => vec![source],
            Value::Seq(items) => items,
            Value::Scalar { .. } => {
                return Err(SyntaxError {
                    message: "merge key `<<` needs a mapping or a list of mappings".into(),
                    mark: source.mark,
                });
            }
        };
        for source in sources {
            let Value::Map(source_entries) = source.value else {
                return Err(SyntaxError {
                    message: "merge key `<<` needs a mapping or a list of mappings".into(),
                    mark: source.mark,
                });
            };
            for (key, value) in source_entries {
                let present = own.iter().any(|(k, _)| k.as_scalar() == key.as_scalar());
                if !present {
                    own.push((key, value));
                }
            }
        }
    }
    *entries = own;
    Ok(())
}

/// Writes `node` as one YAML document in block style that [`parse`] reads back as the same
/// tree, marks aside: every scalar keeps its text, a plain scalar stays plain (so that the
/// reader types `true`, `12` or `~` as it did in the source) whenever its text reads back as
/// that plain scalar, and every other scalar is double-quoted — a string either way, since a
/// text that cannot be written plain is never a number, boolean or null. Used to send the
/// compose document the CLI resolved (interpolated, includes and env files folded) to the
/// daemon.
pub fn emit(node: &Node) -> String {
    let mut out = String::new();
    match &node.value {
        Value::Scalar { .. } => {
            out.push_str(&scalar_text(node));
            out.push('\n');
        }
        _ => write_block(node, 0, &mut out),
    }
    out
}

/// A collection at `indent`, one entry per line.
fn write_block(node: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match &node.value {
        Value::Scalar { .. } => {}
        Value::Map(entries) if entries.is_empty() => out.push_str(&format!("{pad}{{}}\n")),
        Value::Seq(items) if items.is_empty() => out.push_str(&format!("{pad}[]\n")),
        Value::Map(entries) => {
            for (key, value) in entries {
                let key = match &key.value {
                    // An empty plain key cannot be written plain; it only ever reads as null.
                    Value::Scalar { text, .. } if text.is_empty() => double_quoted(""),
                    _ => scalar_text(key),
                };
                out.push_str(&format!("{pad}{key}:"));
                write_value(value, indent, out);
            }
        }
        Value::Seq(items) => {
            for item in items {
                out.push_str(&format!("{pad}-"));
                write_value(item, indent, out);
            }
        }
    }
}

/// The rest of a line that holds `key:` or `-` at `indent`: a scalar after a space, an empty
/// collection in flow style, or a nested block on the following lines.
fn write_value(value: &Node, indent: usize, out: &mut String) {
    match &value.value {
        Value::Scalar { text, plain: true } if text.is_empty() => out.push('\n'),
        Value::Scalar { .. } => {
            out.push(' ');
            out.push_str(&scalar_text(value));
            out.push('\n');
        }
        Value::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Value::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        _ => {
            out.push('\n');
            write_block(value, indent + 2, out);
        }
    }
}

/// A scalar as written: plain when it was plain and reads back plain, double-quoted
/// otherwise.
fn scalar_text(node: &Node) -> String {
    match &node.value {
        Value::Scalar { text, plain: true } if reads_back_plain(text) => text.clone(),
        Value::Scalar { text, .. } => double_quoted(text),
        _ => String::new(),
    }
}

/// Whether `text`, written plain as a block mapping value, key or sequence entry, reads back
/// as exactly this plain scalar: printable, no surrounding blanks, no indicator where YAML
/// would see structure (leading indicator, `: `, ` #`, trailing `:`, document markers).
fn reads_back_plain(text: &str) -> bool {
    let mut chars = text.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let second = chars.next();
    let printable = text
        .chars()
        .all(|c| (' '..='~').contains(&c) || (!c.is_ascii() && printable_non_ascii(c)));
    let leading_ok = match first {
        '-' | '?' | ':' => second.is_some_and(|c| c != ' '),
        ',' | '[' | ']' | '{' | '}' | '#' | '&' | '*' | '!' | '|' | '>' | '\'' | '"' | '%'
        | '@' | '`' | ' ' => false,
        _ => true,
    };
    printable
        && leading_ok
        && !text.ends_with(' ')
        && !text.ends_with(':')
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.starts_with("---")
        && !text.starts_with("...")
}

/// Whether a non-ASCII character may appear unescaped in YAML output (YAML's c-printable,
/// minus the characters some readers treat as line breaks or byte-order marks).
pub fn printable_non_ascii(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
}

/// A YAML double-quoted scalar: `\\`, `"` and every character that is not plainly printable
/// are escaped.
pub fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii() && (' '..='~').contains(&c) => out.push(c),
            c if !c.is_ascii() && printable_non_ascii(c) => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(source: &str) -> Node {
        parse(source).expect("valid yaml")
    }

    #[test]
    fn marks_are_one_based_lines_and_columns() {
        let doc = load("services:\n  web:\n    image: nginx\n");
        let image = doc
            .get("services")
            .unwrap()
            .get("web")
            .unwrap()
            .get("image")
            .unwrap();
        assert_eq!(image.as_scalar(), Some("nginx"));
        assert_eq!(
            image.mark,
            Mark {
                line: 3,
                column: 12
            }
        );
    }

    #[test]
    fn quoted_scalars_are_never_typed() {
        let doc = load("a: 'true'\nb: true\nc: \"12\"\nd: 12\ne:\nf: ~\n");
        assert_eq!(doc.get("a").unwrap().as_bool(), None);
        assert_eq!(doc.get("b").unwrap().as_bool(), Some(true));
        assert_eq!(doc.get("c").unwrap().to_json(), serde_json::json!("12"));
        assert_eq!(doc.get("d").unwrap().to_json(), serde_json::json!(12));
        assert!(doc.get("e").unwrap().is_null());
        assert!(doc.get("f").unwrap().is_null());
        assert!(!doc.get("a").unwrap().is_null());
    }

    #[test]
    fn aliases_and_merge_keys_expand_with_local_keys_winning() {
        let doc = load(
            "x-base: &base\n  image: app:1\n  environment: {A: '1'}\n  user: root\n\
             x-more: &more\n  user: nobody\n  tty: true\n\
             services:\n  web:\n    <<: [*base, *more]\n    image: app:2\n",
        );
        let web = doc.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("image").unwrap().as_scalar(), Some("app:2"));
        assert_eq!(web.get("user").unwrap().as_scalar(), Some("root"));
        assert_eq!(web.get("tty").unwrap().as_bool(), Some(true));
        assert_eq!(
            web.get("environment")
                .unwrap()
                .get("A")
                .unwrap()
                .as_scalar(),
            Some("1")
        );
        assert!(web.get("<<").is_none());
    }

    #[test]
    fn duplicate_keys_are_rejected_with_their_position() {
        let error = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(error.message.contains("duplicate key \"a\""), "{error}");
        assert_eq!(error.mark.line, 3);
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let error = parse("services:\n  web: [unclosed\n").unwrap_err();
        assert!(error.mark.line >= 2, "{error:?}");
        assert!(error.mark.column >= 1);
    }

    #[test]
    fn unknown_alias_and_bad_merge_are_errors() {
        assert!(parse("a: *nope\n").is_err());
        assert!(parse("a:\n  <<: 3\n").is_err());
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let error = parse(&doc).unwrap_err();
        assert!(error.message.contains("more than"), "{error}");
    }

    #[test]
    fn empty_document_is_an_empty_mapping_and_several_are_refused() {
        assert_eq!(load("").as_map().map(<[_]>::len), Some(0));
        assert_eq!(load("# only a comment\n").as_map().map(<[_]>::len), Some(0));
        let error = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(error.message.contains("one YAML document"));
        assert_eq!(error.mark.line, 2);
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        assert_eq!(load("\u{feff}a: 1\n").get("a").unwrap().as_i64(), Some(1));
    }

    #[test]
    fn string_tag_forces_a_string() {
        let doc = load("a: !!str 12\n");
        assert_eq!(doc.get("a").unwrap().to_json(), serde_json::json!("12"));
    }

    /// The tree without its marks, for comparing a document with its re-emitted form.
    fn unmarked(node: &Node) -> Node {
        let value = match &node.value {
            Value::Scalar { .. } => node.value.clone(),
            Value::Seq(items) => Value::Seq(items.iter().map(unmarked).collect()),
            Value::Map(entries) => Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| (unmarked(k), unmarked(v)))
                    .collect(),
            ),
        };
        Node {
            value,
            mark: Mark::default(),
        }
    }

    fn round_trip(source: &str) -> String {
        let tree = load(source);
        let text = emit(&tree);
        let again = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(unmarked(&again), unmarked(&tree), "emitted:\n{text}");
        text
    }

    #[test]
    fn emitted_documents_read_back_as_the_same_tree() {
        round_trip(
            "services:\n  web:\n    image: nginx:1.27\n    command: [\"sh\", \"-c\", \"echo a: b # not a comment\"]\n    \
             environment:\n      DEBUG: 'true'\n      COUNT: 3\n      EMPTY:\n      NULL: ~\n      RATIO: 1.5\n      \
             NEG: -1\n      DASH: '-'\n      MULTI: |\n        line one\n        line two\n    \
             healthcheck:\n      disable: true\n    ports:\n      - \"8080:80\"\n      - 9000\n    \
             labels: {}\n    dns: []\n    x-nested:\n      - - a\n        - b\n      - {k: v, w: [1, {x: y}]}\n\
             volumes:\n  data:\n",
        );
        round_trip("- 1\n- two\n- {}\n- []\n- k: v\n  other: \"quoted: yes\"\n");
        round_trip("a: \"\\ttab\\u0007bell\"\nb: grüße\nc: '#hash'\nd: '@at'\ne: '---'\nf: 'x '\n");
    }

    #[test]
    fn emitted_plain_scalars_keep_their_typing() {
        let text = round_trip("a: true\nb: 'true'\nc: 12\nd: \"12\"\ne:\n");
        assert_eq!(text, "a: true\nb: \"true\"\nc: 12\nd: \"12\"\ne:\n");
    }

    #[test]
    fn plain_text_that_cannot_stay_plain_is_quoted() {
        for text in [
            "a: b",
            "x #y",
            "-",
            "- x",
            "key:",
            "*ref",
            " lead",
            "tab\there",
            "---",
        ] {
            let tree = Node {
                value: Value::Map(vec![(
                    Node::string("k", Mark::default()),
                    Node {
                        value: Value::Scalar {
                            text: text.into(),
                            plain: true,
                        },
                        mark: Mark::default(),
                    },
                )]),
                mark: Mark::default(),
            };
            let emitted = emit(&tree);
            let again = parse(&emitted).unwrap_or_else(|e| panic!("{text:?}: {e}\n{emitted}"));
            assert_eq!(
                again.get("k").and_then(Node::as_scalar),
                Some(text),
                "{emitted}"
            );
        }
    }
}
