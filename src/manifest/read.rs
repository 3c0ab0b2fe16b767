//! Typed reading of YAML nodes that records every problem instead of stopping at the first.
//!
//! A [`Reader`] belongs to one source file (and optionally one service); each accessor returns
//! `None` or an empty value after recording a `validation_failed` envelope that names the
//! field, file, line and column. It must not know any manifest rule beyond the value's shape.

use std::collections::BTreeMap;

use super::units;
use crate::error::{Code, Error};
use crate::yaml::{Mark, Node, Value};

/// Collects problems for one file while reading typed values out of it.
pub struct Reader {
    file: String,
    service: Option<String>,
    /// Problems found so far, in the order they were found.
    pub errors: Vec<Error>,
    /// Things the CLI tells the operator without failing (ignored keys, ports without routes).
    pub warnings: Vec<Warning>,
}

/// A non-fatal remark about a manifest, printed by the CLI.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    /// The service it concerns, if any.
    pub service: Option<String>,
    /// The key path it concerns.
    pub field: String,
    /// What the operator should know.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.service {
            Some(service) => write!(f, "service {service:?}: {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

impl Reader {
    /// A reader for `file` (used in error details).
    pub fn new(file: impl Into<String>) -> Self {
        Reader {
            file: file.into(),
            service: None,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records a warning for `field` of the current service.
    pub fn warn(&mut self, field: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            service: self.service.clone(),
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// Names the service that the following problems belong to (`None` for top level).
    pub fn set_service(&mut self, service: Option<&str>) {
        self.service = service.map(str::to_owned);
    }

    /// The file this reader reads.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Records a problem with `code` at `mark`, returning it for more details.
    pub fn report(&mut self, code: Code, mark: Mark, message: impl Into<String>) -> &mut Error {
        let mut error = Error::new(code, message)
            .with("file", &self.file)
            .with("line", mark.line)
            .with("column", mark.column);
        if let Some(service) = &self.service {
            error = error.with("service", service);
        }
        self.errors.push(error);
        self.errors.last_mut().expect("just pushed")
    }

    /// Records `validation_failed` for `field` at `node`.
    pub fn invalid(&mut self, node: &Node, field: &str, message: impl Into<String>) {
        let message = message.into();
        let message = match &self.service {
            Some(service) => format!("service {service:?}: {field}: {message}"),
            None => format!("{field}: {message}"),
        };
        self.report(Code::ValidationFailed, node.mark, message)
            .details
            .insert("field".into(), field.into());
    }

    /// Checks a compose mapping: every key must be in `allowed` or be an `x-` extension.
    pub fn closed_keys(&mut self, node: &Node, path: &str, allowed: &[&str]) {
        self.check_keys(node, path, allowed, true);
    }

    /// Checks a jaco.yaml mapping: every key must be in `allowed` (no extensions).
    pub fn strict_keys(&mut self, node: &Node, path: &str, allowed: &[&str]) {
        self.check_keys(node, path, allowed, false);
    }

    fn check_keys(&mut self, node: &Node, path: &str, allowed: &[&str], extensions: bool) {
        let Some(entries) = node.as_map() else {
            return;
        };
        for (key, _) in entries {
            let name = key.as_scalar().unwrap_or_default();
            let extension = extensions && name.starts_with("x-");
            if !allowed.contains(&name) && !extension {
                let field = join(path, name);
                self.invalid(
                    key,
                    &field,
                    format!("unknown key (allowed: {})", allowed.join(", ")),
                );
            }
        }
    }

    /// The entries of a mapping, or a problem when the node is something else.
    pub fn map<'n>(&mut self, node: &'n Node, field: &str) -> &'n [(Node, Node)] {
        match &node.value {
            Value::Map(entries) => entries,
            _ if node.is_null() => &[],
            _ => {
                self.invalid(
                    node,
                    field,
                    format!("expected a mapping, found a {}", node.kind()),
                );
                &[]
            }
        }
    }

    /// The items of a list, or a problem when the node is something else.
    pub fn seq<'n>(&mut self, node: &'n Node, field: &str) -> &'n [Node] {
        match &node.value {
            Value::Seq(items) => items,
            _ if node.is_null() => &[],
            _ => {
                self.invalid(
                    node,
                    field,
                    format!("expected a list, found a {}", node.kind()),
                );
                &[]
            }
        }
    }

    /// A scalar as text (numbers and booleans are accepted as their text).
    pub fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match node.as_scalar() {
            Some(text) if !node.is_null() => Some(text.to_owned()),
            _ => {
                self.invalid(
                    node,
                    field,
                    format!("expected a string, found a {}", node.kind()),
                );
                None
            }
        }
    }

    /// A non-empty string.
    pub fn required_string(&mut self, node: &Node, field: &str) -> Option<String> {
        let text = self.string(node, field)?;
        if text.trim().is_empty() {
            self.invalid(node, field, "must not be empty");
            return None;
        }
        Some(text)
    }

    /// A boolean (`true`/`false`, also as interpolated text).
    pub fn bool(&mut self, node: &Node, field: &str) -> Option<bool> {
        let parsed = node.as_bool().or_else(|| match node.as_scalar()? {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        });
        if parsed.is_none() {
            self.invalid(node, field, "expected true or false");
        }
        parsed
    }

    /// An integer in `min..=max`.
    pub fn int_in(&mut self, node: &Node, field: &str, min: i64, max: i64) -> Option<i64> {
        match node.as_i64() {
            Some(value) if (min..=max).contains(&value) => Some(value),
            Some(value) => {
                self.invalid(
                    node,
                    field,
                    format!("{value} is out of range ({min} to {max})"),
                );
                None
            }
            None => {
                self.invalid(node, field, "expected an integer");
                None
            }
        }
    }

    /// Any 64-bit integer.
    pub fn int(&mut self, node: &Node, field: &str) -> Option<i64> {
        self.int_in(node, field, i64::MIN, i64::MAX)
    }

    /// A non-negative number (integer or decimal).
    pub fn number(&mut self, node: &Node, field: &str) -> Option<f64> {
        match node.as_f64() {
            Some(value) if value >= 0.0 && value.is_finite() => Some(value),
            _ => {
                self.invalid(node, field, "expected a non-negative number");
                None
            }
        }
    }

    /// A string or a list of strings, as a list.
    pub fn strings(&mut self, node: &Node, field: &str) -> Vec<String> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.string(item, &format!("{field}[{i}]")))
                .collect(),
            _ if node.is_null() => Vec::new(),
            Value::Scalar { .. } => self.string(node, field).into_iter().collect(),
            Value::Map(_) => {
                self.invalid(node, field, "expected a string or a list of strings");
                Vec::new()
            }
        }
    }

    /// A mapping of strings, written as a map or as a list of `key<sep>value` items. A map
    /// entry without a value, or a list item without the separator, maps to "".
    pub fn dict(&mut self, node: &Node, field: &str, sep: char) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match &node.value {
            Value::Map(entries) => {
                for (key, value) in entries {
                    let name = key.as_scalar().unwrap_or_default().to_owned();
                    let text = if value.is_null() {
                        Some(String::new())
                    } else {
                        self.string(value, &join(field, &name))
                    };
                    if let Some(text) = text {
                        out.insert(name, text);
                    }
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let Some(text) = self.string(item, &format!("{field}[{i}]")) else {
                        continue;
                    };
                    let (key, value) = text.split_once(sep).unwrap_or((&text, ""));
                    out.insert(key.trim().to_owned(), value.to_owned());
                }
            }
            _ if node.is_null() => {}
            Value::Scalar { .. } => {
                self.invalid(node, field, "expected a mapping or a list");
            }
        }
        out
    }

    /// A Go-style duration, returned in canonical form.
    pub fn duration(&mut self, node: &Node, field: &str) -> Option<String> {
        let text = self.string(node, field)?;
        match units::parse_duration(&text) {
            Ok(duration) => Some(units::format_duration(duration)),
            Err(why) => {
                self.invalid(node, field, why);
                None
            }
        }
    }

    /// A byte size (`512m`, or an integer number of bytes).
    pub fn bytes(&mut self, node: &Node, field: &str) -> Option<u64> {
        let text = self.string(node, field)?;
        match units::parse_bytes(&text) {
            Ok(bytes) => Some(bytes),
            Err(why) => {
                self.invalid(node, field, why);
                None
            }
        }
    }
}

/// Joins a field path and a key: `services[0]` + `hosts` → `services[0].hosts`.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;

    fn doc(source: &str) -> Node {
        yaml::parse(source).unwrap()
    }

    #[test]
    fn problems_carry_file_position_field_and_service() {
        let node = doc("a:\n  b: [1]\n");
        let mut reader = Reader::new("compose.yaml");
        reader.set_service(Some("web"));
        let value = node.get("a").unwrap().get("b").unwrap();
        assert_eq!(reader.string(value, "a.b"), None);
        let error = &reader.errors[0];
        assert_eq!(error.code, Code::ValidationFailed);
        assert_eq!(error.details["field"], "a.b");
        assert_eq!(error.details["service"], "web");
        assert_eq!(error.details["file"], "compose.yaml");
        assert_eq!(error.details["line"], "2");
        assert_eq!(error.details["column"], "6");
        assert!(error.message.contains("expected a string"));
    }

    #[test]
    fn closed_keys_allow_extensions_only() {
        let node = doc("known: 1\nx-mine: 2\nbogus: 3\n");
        let mut reader = Reader::new("jaco.yaml");
        reader.closed_keys(&node, "", &["known"]);
        assert_eq!(reader.errors.len(), 1);
        assert_eq!(reader.errors[0].details["field"], "bogus");
    }

    #[test]
    fn dict_reads_maps_and_lists() {
        let node = doc("m: {A: 1, B: , C: x=y}\nl: [A=1, B, C=x=y]\n");
        let mut reader = Reader::new("f");
        let expected: BTreeMap<String, String> = [("A", "1"), ("B", ""), ("C", "x=y")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert_eq!(reader.dict(node.get("m").unwrap(), "m", '='), expected);
        assert_eq!(reader.dict(node.get("l").unwrap(), "l", '='), expected);
        assert!(reader.errors.is_empty());
    }

    #[test]
    fn numbers_booleans_durations_and_sizes() {
        let node = doc("i: '12'\nb: 'true'\nd: 90s\ns: 1g\nbad: 1q\nneg: -3\n");
        let mut reader = Reader::new("f");
        assert_eq!(reader.int_in(node.get("i").unwrap(), "i", 0, 20), Some(12));
        assert_eq!(reader.bool(node.get("b").unwrap(), "b"), Some(true));
        assert_eq!(
            reader.duration(node.get("d").unwrap(), "d"),
            Some("1m30s".into())
        );
        assert_eq!(reader.bytes(node.get("s").unwrap(), "s"), Some(1 << 30));
        assert!(reader.errors.is_empty());
        assert_eq!(reader.bytes(node.get("bad").unwrap(), "bad"), None);
        assert_eq!(reader.int_in(node.get("neg").unwrap(), "neg", 0, 5), None);
        assert_eq!(reader.errors.len(), 2);
    }
}
