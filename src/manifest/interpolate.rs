//! Compose variable interpolation: `${VAR}`, `$VAR`, the `:-` `-` `:?` `?` `:+` `+` forms,
//! nested defaults and the `$$` escape.
//!
//! Pure string work over a lookup function; the caller decides where values come from
//! (jaco.yaml's `environment:` file, or earlier keys of a `.env` file) and maps the byte offset
//! of an error to a file position. It must never consult the process environment (SPEC §2.3).

/// Why a template could not be expanded, with the byte offset of the `$` that started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Byte offset within the scalar.
    pub offset: usize,
    /// What is wrong, e.g. `required variable DB_PASSWORD is missing a value: set it in .env`.
    pub message: String,
}

/// The result of expanding one string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expanded {
    /// The text with every reference replaced.
    pub text: String,
    /// Variables referenced without a default that were not set (they expand to "").
    pub unset: Vec<String>,
}

/// Expands every variable reference in `input`.
pub fn expand<'a>(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<&'a str>,
) -> Result<Expanded, TemplateError> {
    let mut out = Expanded::default();
    let mut rest = input;
    let mut consumed = 0;
    while let Some(dollar) = rest.find('$') {
        out.text.push_str(&rest[..dollar]);
        let offset = consumed + dollar;
        let after = &rest[dollar + 1..];
        let used = if after.starts_with('$') {
            out.text.push('$');
            1
        } else if let Some(inside) = after.strip_prefix('{') {
            let (value, used) = braced(inside, offset, lookup, &mut out.unset)?;
            out.text.push_str(&value);
            used + 1
        } else {
            let name_len = name_length(after);
            if name_len == 0 {
                // A `$` that starts no reference (e.g. `$1`, a trailing `$`) stays literal.
                out.text.push('$');
                0
            } else {
                let name = &after[..name_len];
                match lookup(name) {
                    Some(value) => out.text.push_str(value),
                    None => out.unset.push(name.to_owned()),
                }
                name_len
            }
        };
        consumed += dollar + 1 + used;
        rest = &input[consumed..];
    }
    out.text.push_str(rest);
    Ok(out)
}

/// Length of the variable name at the start of `text` (`[_A-Za-z][_A-Za-z0-9]*`).
fn name_length(text: &str) -> usize {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, c)) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(*c == '_' || c.is_ascii_alphanumeric()))
        .map_or(text.len(), |(i, _)| i)
}

/// Expands the inside of `${…}`; `text` starts right after `{`. Returns the value and how many
/// bytes of `text` were consumed, including the closing `}`.
fn braced<'a>(
    text: &str,
    offset: usize,
    lookup: &dyn Fn(&str) -> Option<&'a str>,
    unset: &mut Vec<String>,
) -> Result<(String, usize), TemplateError> {
    let invalid = |why: &str| TemplateError {
        offset,
        message: format!("invalid interpolation format: {why}"),
    };
    let name_len = name_length(text);
    if name_len == 0 {
        return Err(invalid("`${` must be followed by a variable name"));
    }
    let name = &text[..name_len];
    let after_name = &text[name_len..];
    if after_name.starts_with('}') {
        return Ok(match lookup(name) {
            Some(value) => (value.to_owned(), name_len + 1),
            None => {
                unset.push(name.to_owned());
                (String::new(), name_len + 1)
            }
        });
    }
    let (operator, operator_len) = ["-", ":-", "?", ":?", "+", ":+"]
        .iter()
        .filter(|op| after_name.starts_with(**op))
        .max_by_key(|op| op.len())
        .map(|op| (*op, op.len()))
        .ok_or_else(|| invalid(&format!("unexpected character after `${{{name}`")))?;
    let argument_start = name_len + operator_len;
    let argument_len = closing_brace(&text[argument_start..])
        .ok_or_else(|| invalid(&format!("`${{{name}` is not closed with `}}`")))?;
    let raw_argument = &text[argument_start..argument_start + argument_len];
    let used = argument_start + argument_len + 1;

    let value = lookup(name);
    let is_set = value.is_some();
    let is_non_empty = value.is_some_and(|v| !v.is_empty());
    let expand_argument = |unset: &mut Vec<String>| -> Result<String, TemplateError> {
        let nested = expand(raw_argument, lookup).map_err(|e| TemplateError {
            offset: offset + 2 + argument_start + e.offset,
            message: e.message,
        })?;
        unset.extend(nested.unset);
        Ok(nested.text)
    };
    let result = match operator {
        "-" | ":-" => {
            let use_value = if operator == "-" {
                is_set
            } else {
                is_non_empty
            };
            if use_value {
                value.unwrap_or_default().to_owned()
            } else {
                expand_argument(unset)?
            }
        }
        "?" | ":?" => {
            let ok = if operator == "?" {
                is_set
            } else {
                is_non_empty
            };
            if ok {
                value.unwrap_or_default().to_owned()
            } else {
                let why = expand_argument(unset)?;
                return Err(TemplateError {
                    offset,
                    message: if why.is_empty() {
                        format!("required variable {name} is missing a value")
                    } else {
                        format!("required variable {name} is missing a value: {why}")
                    },
                });
            }
        }
        _ => {
            let replace = if operator == "+" {
                is_set
            } else {
                is_non_empty
            };
            if replace {
                expand_argument(unset)?
            } else {
                String::new()
            }
        }
    };
    Ok((result, used))
}

/// Byte index of the `}` that closes a `${…}` argument, honouring nested `${…}` and `$$`.
fn closing_brace(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(input: &str, vars: &[(&str, &str)]) -> Result<Expanded, TemplateError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        expand(input, &|name| map.get(name).map(String::as_str))
    }

    fn text(input: &str, vars: &[(&str, &str)]) -> String {
        run(input, vars).expect("expands").text
    }

    #[test]
    fn plain_and_braced_references() {
        let vars = [("TAG", "1.2"), ("HOST", "db")];
        assert_eq!(text("app:${TAG}", &vars), "app:1.2");
        assert_eq!(text("app:$TAG-x", &vars), "app:1.2-x");
        assert_eq!(text("$HOST:$TAG", &vars), "db:1.2");
        assert_eq!(text("no refs", &vars), "no refs");
    }

    #[test]
    fn unset_plain_reference_is_empty_and_reported() {
        let out = run("a${MISSING}b$OTHER", &[]).unwrap();
        assert_eq!(out.text, "ab");
        assert_eq!(out.unset, vec!["MISSING".to_string(), "OTHER".to_string()]);
    }

    #[test]
    fn dollar_escape_and_literal_dollars() {
        assert_eq!(text("price: $$5", &[]), "price: $5");
        assert_eq!(text("$${NOT}", &[]), "${NOT}");
        assert_eq!(text("cost $1 and $", &[]), "cost $1 and $");
    }

    #[test]
    fn default_forms_distinguish_unset_from_empty() {
        let vars = [("EMPTY", ""), ("SET", "v")];
        assert_eq!(text("${UNSET:-d}", &vars), "d");
        assert_eq!(text("${EMPTY:-d}", &vars), "d");
        assert_eq!(text("${SET:-d}", &vars), "v");
        assert_eq!(text("${UNSET-d}", &vars), "d");
        assert_eq!(text("${EMPTY-d}", &vars), "");
        assert_eq!(text("${SET-d}", &vars), "v");
    }

    #[test]
    fn alternative_forms() {
        let vars = [("EMPTY", ""), ("SET", "v")];
        assert_eq!(text("${SET:+alt}", &vars), "alt");
        assert_eq!(text("${EMPTY:+alt}", &vars), "");
        assert_eq!(text("${EMPTY+alt}", &vars), "alt");
        assert_eq!(text("${UNSET+alt}", &vars), "");
    }

    #[test]
    fn required_forms_fail_with_the_message() {
        let vars = [("EMPTY", "")];
        let error = run("x ${DB:?set DB in .env}", &vars).unwrap_err();
        assert_eq!(error.offset, 2);
        assert_eq!(
            error.message,
            "required variable DB is missing a value: set DB in .env"
        );
        assert!(run("${EMPTY:?}", &vars).is_err());
        assert_eq!(text("${EMPTY?}", &vars), "");
        assert!(run("${UNSET?}", &vars).is_err());
    }

    #[test]
    fn nested_defaults_expand_recursively() {
        let vars = [("B", "bee")];
        assert_eq!(text("${A:-${B:-x}}", &vars), "bee");
        assert_eq!(text("${A:-${C:-x}}", &vars), "x");
        assert_eq!(text("${A:-pre-${B}-post}", &vars), "pre-bee-post");
        assert_eq!(text("${A:-$${B}}", &vars), "${B}");
    }

    #[test]
    fn malformed_references_are_errors() {
        for bad in ["${}", "${1A}", "${A", "${A:-x", "${A!}", "${ A}"] {
            let error = run(bad, &[]).unwrap_err();
            assert!(
                error.message.starts_with("invalid interpolation format"),
                "{bad}: {error:?}"
            );
        }
    }

    #[test]
    fn error_offsets_point_at_the_reference() {
        let error = run("ok ${A:-${}}", &[]).unwrap_err();
        assert_eq!(error.offset, 8, "{error:?}");
    }

    #[test]
    fn multibyte_text_is_preserved() {
        assert_eq!(text("héllo ${X:-wörld} ✓", &[]), "héllo wörld ✓");
    }
}
