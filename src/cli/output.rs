//! Output formats of the CLI: the `-o table|json|yaml` flag, which formats each command
//! accepts, the JSON and YAML rendering of any `serde::Serialize` value, and aligned text
//! tables.
//!
//! Role: turn a value that a command already computed into text. Contract: JSON is pretty
//! printed; YAML is one document without a `---` header, keys in the order the value
//! serialised them, every string that a YAML 1.1 or 1.2 reader could mistake for another type
//! (`"yes"`, `"123"`, `"2024-01-01"`, `""`, …) quoted, so that YAML and JSON output always
//! carry the same data. Both end with a newline.
//!
//! This module must not decide what a command prints, talk to a daemon or read files, and it
//! must never fall back to another format: a command that cannot produce the requested format
//! is rejected before it runs ([`Formats::resolve`]), because `-o json` silently printing a
//! table breaks pipelines (prior art, issue #156).

use clap::ValueEnum;
use serde::Serialize;
use yaml_rust2::{Yaml, YamlEmitter, yaml::Hash};

use crate::yaml::{double_quoted, printable_non_ascii};

/// A value of the global `-o/--output` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Text for people: tables, one-line summaries, plain lines.
    Table,
    /// Pretty-printed JSON for scripts.
    Json,
    /// YAML for scripts and people.
    Yaml,
}

impl OutputFormat {
    /// The flag spelling, as in `-o json`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Table => "table",
            OutputFormat::Json => "json",
            OutputFormat::Yaml => "yaml",
        }
    }
}

/// The output formats one command can produce and the one it uses without `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats {
    /// Used when `-o` is not given.
    pub default: OutputFormat,
    /// Everything the command accepts; always contains `default`.
    pub supported: &'static [OutputFormat],
}

/// Table by default, JSON and YAML on request: every read command and most others.
pub const ALL_FORMATS: Formats = Formats {
    default: OutputFormat::Table,
    supported: &[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml],
};

/// Text only: commands whose output is a byte stream (logs, exec, completion scripts).
pub const TEXT_ONLY: Formats = Formats {
    default: OutputFormat::Table,
    supported: &[OutputFormat::Table],
};

/// A document (YAML by default, or JSON) with no table form, e.g. `jaco config`.
pub const DOCUMENT: Formats = Formats {
    default: OutputFormat::Yaml,
    supported: &[OutputFormat::Yaml, OutputFormat::Json],
};

/// `-o FORMAT` asked a command for a format it cannot produce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("-o {requested} is not supported; this command supports {}", list(.supported))]
pub struct UnsupportedFormat {
    /// What the operator asked for.
    pub requested: &'static str,
    /// What the command accepts.
    pub supported: &'static [OutputFormat],
}

fn list(formats: &[OutputFormat]) -> String {
    formats
        .iter()
        .map(|f| format!("-o {}", f.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Formats {
    /// The format a command runs with: the requested one when the command supports it, the
    /// command's default when nothing was requested, and an error otherwise (never another
    /// format in place of the requested one).
    pub fn resolve(
        &self,
        requested: Option<OutputFormat>,
    ) -> Result<OutputFormat, UnsupportedFormat> {
        match requested {
            None => Ok(self.default),
            Some(format) if self.supported.contains(&format) => Ok(format),
            Some(format) => Err(UnsupportedFormat {
                requested: format.as_str(),
                supported: self.supported,
            }),
        }
    }
}

/// The machine-readable formats a serialisable value can be rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// Pretty-printed JSON.
    Json,
    /// One YAML document.
    Yaml,
}

impl DataFormat {
    /// The data format behind an output format; `None` for `table`, whose text each command
    /// writes itself.
    pub fn of(format: OutputFormat) -> Option<DataFormat> {
        match format {
            OutputFormat::Table => None,
            OutputFormat::Json => Some(DataFormat::Json),
            OutputFormat::Yaml => Some(DataFormat::Yaml),
        }
    }
}

/// A value could not be rendered (it does not map onto JSON, e.g. a map with non-string keys).
#[derive(Debug, thiserror::Error)]
#[error("cannot render output as {format}: {reason}")]
pub struct RenderError {
    /// `json` or `yaml`.
    pub format: &'static str,
    /// What went wrong.
    pub reason: String,
}

/// Renders `value` as pretty JSON or as a YAML document, ending with a newline.
pub fn render<T: Serialize + ?Sized>(value: &T, format: DataFormat) -> Result<String, RenderError> {
    let (name, json) = match format {
        DataFormat::Json => ("json", serde_json::to_value(value)),
        DataFormat::Yaml => ("yaml", serde_json::to_value(value)),
    };
    let json = json.map_err(|e| RenderError {
        format: name,
        reason: e.to_string(),
    })?;
    match format {
        DataFormat::Json => {
            let mut text = serde_json::to_string_pretty(&json).map_err(|e| RenderError {
                format: name,
                reason: e.to_string(),
            })?;
            text.push('\n');
            Ok(text)
        }
        DataFormat::Yaml => to_yaml(&json).map_err(|reason| RenderError {
            format: name,
            reason,
        }),
    }
}

/// One item of a stream of values (`audit -f`, `status --watch`): a compact JSON object on a
/// line of its own, or a YAML document that starts with `---`.
pub fn stream_item<T: Serialize + ?Sized>(
    value: &T,
    format: DataFormat,
) -> Result<String, RenderError> {
    match format {
        DataFormat::Json => {
            let mut line = serde_json::to_string(value).map_err(|e| RenderError {
                format: "json",
                reason: e.to_string(),
            })?;
            line.push('\n');
            Ok(line)
        }
        DataFormat::Yaml => Ok(format!("---\n{}", render(value, DataFormat::Yaml)?)),
    }
}

/// Emits a JSON value as one YAML document (no `---` header), ending with a newline.
pub fn to_yaml(value: &serde_json::Value) -> Result<String, String> {
    let yaml = json_to_yaml(value, true);
    let mut text = String::new();
    let mut emitter = YamlEmitter::new(&mut text);
    emitter.multiline_strings(true);
    emitter.dump(&yaml).map_err(|e| e.to_string())?;
    // The emitter always opens with a `---` line; one document needs no header.
    let mut document = match text.strip_prefix("---\n") {
        Some(body) => body.to_owned(),
        None => text,
    };
    document.push('\n');
    Ok(document)
}

/// Converts a JSON value into the YAML tree that [`YamlEmitter`] writes, keeping key order.
///
/// Strings are where YAML goes wrong, so they are classified here rather than left to the
/// emitter: a string that is safe as a plain scalar stays a `Yaml::String`; a multi-line string
/// that survives a literal block (`|`, `|-`) unchanged stays a `Yaml::String` too (the emitter
/// writes it as a block); every other string is written as a double-quoted scalar that this
/// module escapes itself and hands to the emitter as pre-rendered text.
fn json_to_yaml(value: &serde_json::Value, top_level: bool) -> Yaml {
    use serde_json::Value;
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Yaml::Integer(i)
            } else if let Some(u) = n.as_u64() {
                Yaml::Real(u.to_string())
            } else {
                Yaml::Real(yaml_float(&n.to_string()))
            }
        }
        Value::String(s) => yaml_string(s, top_level),
        Value::Array(items) => {
            Yaml::Array(items.iter().map(|item| json_to_yaml(item, false)).collect())
        }
        Value::Object(map) => {
            let mut hash = Hash::new();
            for (key, item) in map {
                hash.insert(yaml_string(key, true), json_to_yaml(item, false));
            }
            Yaml::Hash(hash)
        }
    }
}

/// A float spelled so that YAML 1.1 and 1.2 readers both see a float: a `.` in the mantissa and
/// a signed exponent (`1e300` → `1.0e+300`).
fn yaml_float(text: &str) -> String {
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (text, None),
    };
    let mut out = mantissa.to_owned();
    if !out.contains('.') {
        out.push_str(".0");
    }
    if let Some(exponent) = exponent {
        out.push('e');
        if !exponent.starts_with(['+', '-']) {
            out.push('+');
        }
        out.push_str(exponent);
    }
    out
}

fn yaml_string(s: &str, top_level: bool) -> Yaml {
    if is_plain_safe(s) || (!top_level && is_literal_block_safe(s)) {
        Yaml::String(s.to_owned())
    } else {
        Yaml::Real(double_quoted(s))
    }
}

/// Words that some YAML reader (1.1 or 1.2) takes for a boolean or null.
const SPECIAL_WORDS: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];

/// Conservative: a string is written plain only when no YAML reader could read it as anything
/// but this exact string. Anything starting with a digit or sign (numbers, dates, times,
/// octal, sexagesimal), special words, indicators and control characters are quoted.
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let first_ok = first.is_ascii_alphabetic()
        || first == '_'
        || first == '/'
        || (!first.is_ascii() && printable_non_ascii(first));
    let chars_ok = s.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || " -_./+=@()$^~;!%&*?<>|".contains(c)
            || (!c.is_ascii() && printable_non_ascii(c))
    });
    first_ok
        && chars_ok
        && !s.ends_with(' ')
        && !SPECIAL_WORDS.iter().any(|w| s.eq_ignore_ascii_case(w))
}

/// Whether the emitter's literal block (`|` or `|-`, lines indented) reproduces `s` exactly:
/// printable characters only, no `\r`, at most one trailing newline, no line with trailing
/// blanks and a first non-empty line that does not start with a blank (which would change the
/// detected indentation).
fn is_literal_block_safe(s: &str) -> bool {
    if !s.contains('\n') || s.ends_with("\n\n") || s.trim_end_matches('\n').is_empty() {
        return false;
    }
    let printable = s.chars().all(|c| {
        c == '\n' || (' '..='~').contains(&c) || (!c.is_ascii() && printable_non_ascii(c))
    });
    let body = s.strip_suffix('\n').unwrap_or(s);
    let no_trailing_blanks = body.split('\n').all(|line| !line.ends_with(' '));
    let first_starts_clean = body
        .split('\n')
        .find(|line| !line.is_empty())
        .is_some_and(|line| !line.starts_with(' '));
    printable && no_trailing_blanks && first_starts_clean
}

/// The width of each column: its widest cell, header included (in characters).
pub fn column_widths(headers: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    widths
}

/// One table line: each cell padded to its column's width, columns two spaces apart, the last
/// cell unpadded so that no line ends in white space; a cell wider than its column pushes the
/// rest of the line right (streamed rows are printed with the widths of the first batch).
pub fn table_line<S: AsRef<str>>(widths: &[usize], cells: &[S]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        let cell = cell.as_ref();
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            let width = widths.get(i).copied().unwrap_or(0);
            line.push_str(&format!("{cell:<width$}  "));
        }
    }
    line.truncate(line.trim_end().len());
    line.push('\n');
    line
}

/// A table for people: the header line, then one line per row (see [`table_line`]).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths = column_widths(headers, rows);
    let mut text = table_line(&widths, headers);
    for row in rows {
        text.push_str(&table_line(&widths, row));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use yaml_rust2::YamlLoader;

    fn yaml(value: serde_json::Value) -> String {
        render(&value, DataFormat::Yaml).unwrap()
    }

    /// Reads YAML back into JSON with yaml-rust2's own loader.
    fn back(text: &str) -> serde_json::Value {
        let docs = YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(docs.len(), 1, "{text}");
        to_json(&docs[0])
    }

    fn to_json(yaml: &Yaml) -> serde_json::Value {
        use serde_json::Value;
        match yaml {
            Yaml::Null => Value::Null,
            Yaml::Boolean(b) => Value::Bool(*b),
            Yaml::Integer(i) => json!(i),
            Yaml::Real(r) => json!(r.parse::<f64>().unwrap()),
            Yaml::String(s) => Value::String(s.clone()),
            Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
            Yaml::Hash(hash) => Value::Object(
                hash.iter()
                    .map(|(k, v)| (k.as_str().expect("string key").to_owned(), to_json(v)))
                    .collect(),
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn round_trips(value: serde_json::Value) {
        let text = yaml(value.clone());
        assert_eq!(back(&text), value, "YAML was:\n{text}");
    }

    #[test]
    fn tables_align_columns_and_never_end_lines_in_white_space() {
        let rows = vec![
            vec!["node-a".to_owned(), "leader".to_owned(), "ready".to_owned()],
            vec!["b".to_owned(), "learner".to_owned(), String::new()],
        ];
        assert_eq!(
            table(&["NAME", "ROLE", "STATUS"], &rows),
            "NAME    ROLE     STATUS\nnode-a  leader   ready\nb       learner\n"
        );
        let widths = column_widths(&["NAME", "ROLE"], &rows);
        assert_eq!(widths, [6, 7]);
        assert_eq!(
            table_line(&widths, &["much-longer", "x"]),
            "much-longer  x\n"
        );
    }

    #[test]
    fn nested_maps_keep_key_order() {
        let value = json!({"zeta": 1, "alpha": {"b": true, "a": null}, "mid": "x"});
        assert_eq!(
            yaml(value.clone()),
            "zeta: 1\nalpha:\n  b: true\n  a: ~\nmid: x\n"
        );
        round_trips(value);
    }

    #[test]
    fn lists_of_scalars_and_maps() {
        let value = json!({"items": [1, "two", {"name": "web", "ports": [80, 443]}], "empty": [], "none": {}});
        assert_eq!(
            yaml(value.clone()),
            "items:\n  - 1\n  - two\n  - name: web\n    ports:\n      - 80\n      - 443\nempty: []\nnone: {}\n"
        );
        round_trips(value);
        round_trips(json!([[1, [2, 3]], [], [{"a": [{"b": "c"}]}], {"x": [[]]}]));
    }

    #[test]
    fn strings_that_look_like_other_types_are_quoted() {
        for s in [
            "yes",
            "Yes",
            "NO",
            "on",
            "off",
            "y",
            "n",
            "true",
            "False",
            "null",
            "Null",
            "~",
            "123",
            "-1",
            "+1",
            "1.5",
            "1e3",
            "0x1f",
            "0o17",
            "0b101",
            "017",
            "1_000",
            "12:30:00",
            "2024-01-01",
            "2024-01-01T10:00:00Z",
            ".inf",
            ".nan",
            "inf",
            "NaN",
            "",
        ] {
            let text = yaml(json!({ "v": s }));
            assert!(text.starts_with("v: \""), "{s:?} not quoted: {text}");
            round_trips(json!({ "v": s }));
        }
        assert_eq!(yaml(json!({"v": ""})), "v: \"\"\n");
        assert_eq!(yaml(json!({"v": "yes"})), "v: \"yes\"\n");
        assert_eq!(yaml(json!({"v": "123"})), "v: \"123\"\n");
    }

    #[test]
    fn strings_with_indicators_or_odd_characters_are_quoted() {
        for s in [
            "a: b",
            "# not a comment",
            "- item",
            "key:",
            "[x]",
            "{x}",
            "a, b",
            "*alias",
            "&anchor",
            "!tag",
            "|",
            ">",
            "'single'",
            "\"double\"",
            "back\\slash",
            " leading",
            "trailing ",
            "tab\there",
            "bell\u{7}",
            "esc\u{1b}[0m",
            "del\u{7f}",
            "nel\u{85}",
            "ls\u{2028}",
            "bom\u{feff}",
            "@at",
            "%pct",
            "`tick`",
            "cr\r",
        ] {
            let text = yaml(json!({ "v": s }));
            assert!(text.starts_with("v: \""), "{s:?} not quoted: {text}");
            assert!(
                !text.contains([
                    '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{2028}', '\u{feff}', '\r'
                ]),
                "{s:?} left a raw control character: {text:?}"
            );
            round_trips(json!({ "v": s }));
        }
    }

    #[test]
    fn ordinary_strings_stay_plain() {
        for s in [
            "web",
            "nginx:1.25",
            "shop.example.com",
            "/var/lib/jaco",
            "a value with spaces",
            "grüße",
            "_private",
        ] {
            let text = yaml(json!({ "v": s }));
            let plain = format!("v: {s}\n");
            if !s.contains(':') {
                assert_eq!(text, plain);
            }
            round_trips(json!({ "v": s }));
        }
    }

    #[test]
    fn keys_are_quoted_like_values() {
        let value = json!({"yes": 1, "8080": "port", "": "empty", "a:b": 2});
        let text = yaml(value.clone());
        assert!(text.contains("\"yes\": 1"), "{text}");
        assert!(text.contains("\"8080\": port"), "{text}");
        round_trips(value);
    }

    #[test]
    fn multi_line_strings_use_literal_blocks_when_exact() {
        let value = json!({"script": "echo one\necho two\n", "pem": "line1\nline2"});
        assert_eq!(
            yaml(value.clone()),
            "script: |\n  echo one\n  echo two\npem: |-\n  line1\n  line2\n"
        );
        round_trips(value);
    }

    #[test]
    fn multi_line_strings_that_a_block_would_change_are_quoted() {
        for s in [
            "  indented first\nline",
            "two trailing\n\n",
            "trailing blank \nline",
            "\n",
            "crlf\r\nline",
            "a\n\tb\u{7}",
            "\n\nleading empty lines\nok",
        ] {
            round_trips(json!({ "v": s }));
            round_trips(json!({ "list": [s, {"k": s}] }));
        }
        assert_eq!(yaml(json!({"v": "x\n\n"})), "v: \"x\\n\\n\"\n");
    }

    #[test]
    fn a_top_level_multi_line_string_is_quoted() {
        assert_eq!(yaml(json!("a\n---\nb")), "\"a\\n---\\nb\"\n");
        round_trips(json!("a\n---\nb"));
    }

    #[test]
    fn numbers_booleans_and_null() {
        let value = json!({
            "int": 42, "neg": -7, "big": u64::MAX, "float": 1.5, "tiny": 1e-7, "huge": 1e300,
            "whole": 3.0, "t": true, "f": false, "nothing": null
        });
        let text = yaml(value.clone());
        assert!(text.contains("int: 42\n"), "{text}");
        assert!(text.contains("big: 18446744073709551615\n"), "{text}");
        assert!(text.contains("float: 1.5\n"), "{text}");
        assert!(text.contains("huge: 1.0e+300\n"), "{text}");
        assert!(text.contains("tiny: 1.0e-7\n"), "{text}");
        assert!(text.contains("whole: 3.0\n"), "{text}");
        assert!(text.contains("t: true\nf: false\nnothing: ~\n"), "{text}");
        let read = back(&text);
        assert_eq!(read["int"], json!(42));
        assert_eq!(read["float"], json!(1.5));
        assert_eq!(read["huge"], json!(1e300));
        assert_eq!(read["tiny"], json!(1e-7));
        assert_eq!(read["nothing"], json!(null));
    }

    #[test]
    fn top_level_scalars_and_empty_collections() {
        assert_eq!(yaml(json!([])), "[]\n");
        assert_eq!(yaml(json!({})), "{}\n");
        assert_eq!(yaml(json!("plain")), "plain\n");
        assert_eq!(yaml(json!(5)), "5\n");
        round_trips(json!([]));
        round_trips(json!("0.1.0"));
    }

    #[test]
    fn streamed_items_are_json_lines_or_yaml_documents() {
        let value = json!({"a": 1, "b": "x"});
        assert_eq!(
            stream_item(&value, DataFormat::Json).unwrap(),
            "{\"a\":1,\"b\":\"x\"}\n"
        );
        assert_eq!(
            stream_item(&value, DataFormat::Yaml).unwrap(),
            "---\na: 1\nb: x\n"
        );
    }

    #[test]
    fn json_is_pretty_and_newline_terminated() {
        let text = render(&json!({"version": "0.1.0"}), DataFormat::Json).unwrap();
        assert_eq!(text, "{\n  \"version\": \"0.1.0\"\n}\n");
    }

    #[test]
    fn structs_render_through_serde() {
        #[derive(Serialize)]
        struct Row {
            name: &'static str,
            replicas: u32,
        }
        let rows = [
            Row {
                name: "web",
                replicas: 3,
            },
            Row {
                name: "db",
                replicas: 1,
            },
        ];
        assert_eq!(
            render(&rows[..], DataFormat::Yaml).unwrap(),
            "- name: web\n  replicas: 3\n- name: db\n  replicas: 1\n"
        );
    }

    #[test]
    fn a_format_is_never_silently_replaced() {
        assert_eq!(ALL_FORMATS.resolve(None), Ok(OutputFormat::Table));
        assert_eq!(
            ALL_FORMATS.resolve(Some(OutputFormat::Yaml)),
            Ok(OutputFormat::Yaml)
        );
        assert_eq!(DOCUMENT.resolve(None), Ok(OutputFormat::Yaml));
        let err = TEXT_ONLY.resolve(Some(OutputFormat::Json)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "-o json is not supported; this command supports -o table"
        );
        assert!(DOCUMENT.resolve(Some(OutputFormat::Table)).is_err());
    }
}
