//! Parser for `.env` files: jaco.yaml's `environment:` file and compose `env_file:` entries.
//!
//! The format is Docker Compose's: `KEY=value` lines, an optional `export ` prefix, `#`
//! comments, single quotes (literal), double quotes (escapes, may span lines), unquoted values
//! (trimmed, ` #` starts a comment), `${VAR}` references to keys defined earlier in the same
//! file, and an ignored UTF-8 byte-order mark. A bare `KEY` line sets nothing (compose would
//! read the process environment, which jaco never does).
//!
//! Pure: it takes text and returns pairs. Reading the file and turning errors into envelopes
//! with the file name is the caller's job.

use super::interpolate;

/// A problem in an env file, with its 1-based position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at line {line}, column {column}")]
pub struct EnvError {
    /// What is wrong.
    pub message: String,
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1.
    pub column: usize,
}

/// Parses an env file into `(key, value)` pairs in file order; a later duplicate key wins
/// when the caller collects them into a map.
pub fn parse(source: &str) -> Result<Vec<(String, String)>, EnvError> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut cursor = Cursor::new(source);
    while !cursor.at_end() {
        cursor.skip_blanks();
        if cursor.at_end() {
            break;
        }
        if cursor.peek() == Some('\n') || cursor.peek() == Some('#') {
            cursor.skip_line();
            continue;
        }
        let (line, column) = cursor.position();
        if cursor.rest().starts_with("export ") || cursor.rest().starts_with("export\t") {
            cursor.advance(6);
            cursor.skip_blanks();
        }
        let key = cursor.take_while(|c| !matches!(c, '=' | '\n' | ' ' | '\t' | '#'));
        if !is_valid_key(&key) {
            return Err(EnvError {
                message: format!("invalid variable name {key:?}"),
                line,
                column,
            });
        }
        cursor.skip_blanks();
        match cursor.peek() {
            None | Some('\n') | Some('#') => {
                cursor.skip_line();
                continue;
            }
            Some('=') => cursor.advance(1),
            Some(other) => {
                let (line, column) = cursor.position();
                return Err(EnvError {
                    message: format!("expected `=` after {key}, found {other:?}"),
                    line,
                    column,
                });
            }
        }
        cursor.skip_blanks();
        let value = read_value(&mut cursor, &vars)?;
        vars.push((key, value));
    }
    Ok(vars)
}

fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c == '.' || c == '-' || c.is_ascii_alphanumeric())
}

fn read_value(cursor: &mut Cursor<'_>, earlier: &[(String, String)]) -> Result<String, EnvError> {
    let (line, column) = cursor.position();
    let unterminated = |quote: char| EnvError {
        message: format!("unterminated {quote}-quoted value"),
        line,
        column,
    };
    match cursor.peek() {
        Some('\'') => {
            cursor.advance(1);
            let value = cursor.take_while(|c| c != '\'');
            if cursor.peek() != Some('\'') {
                return Err(unterminated('\''));
            }
            cursor.advance(1);
            cursor.expect_end_of_value()?;
            Ok(value)
        }
        Some('"') => {
            cursor.advance(1);
            let mut raw = String::new();
            loop {
                match cursor.next() {
                    None => return Err(unterminated('"')),
                    Some('"') => break,
                    Some('\\') => match cursor.next() {
                        Some('n') => raw.push('\n'),
                        Some('t') => raw.push('\t'),
                        Some('r') => raw.push('\r'),
                        Some('\\') => raw.push('\\'),
                        Some('"') => raw.push('"'),
                        Some('$') => raw.push_str("$$"),
                        Some(other) => {
                            raw.push('\\');
                            raw.push(other);
                        }
                        None => return Err(unterminated('"')),
                    },
                    Some(c) => raw.push(c),
                }
            }
            cursor.expect_end_of_value()?;
            expand(&raw, earlier, line, column + 1)
        }
        _ => {
            let mut raw = String::new();
            while let Some(c) = cursor.peek() {
                if c == '\n' {
                    break;
                }
                if c == '#' && raw.ends_with([' ', '\t']) {
                    cursor.skip_line();
                    break;
                }
                raw.push(c);
                cursor.advance(1);
            }
            expand(raw.trim_end(), earlier, line, column)
        }
    }
}

fn expand(
    raw: &str,
    earlier: &[(String, String)],
    line: usize,
    column: usize,
) -> Result<String, EnvError> {
    let lookup = |name: &str| {
        earlier
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    interpolate::expand(raw, &lookup)
        .map(|expanded| expanded.text)
        .map_err(|error| EnvError {
            message: error.message,
            line,
            column: column + raw[..error.offset].chars().count(),
        })
}

/// A character cursor that tracks line and column.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    line_start: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            text,
            pos: 0,
            line: 1,
            line_start: 0,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.line_start = self.pos;
        }
        Some(c)
    }

    fn advance(&mut self, chars: usize) {
        for _ in 0..chars {
            self.next();
        }
    }

    fn position(&self) -> (usize, usize) {
        let column = self.text[self.line_start..self.pos].chars().count() + 1;
        (self.line, column)
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if !keep(c) {
                break;
            }
            out.push(c);
            self.next();
        }
        out
    }

    fn skip_blanks(&mut self) {
        self.take_while(|c| c == ' ' || c == '\t' || c == '\r');
    }

    fn skip_line(&mut self) {
        self.take_while(|c| c != '\n');
        self.next();
    }

    /// After a quoted value only blanks and an optional comment may follow on the line.
    fn expect_end_of_value(&mut self) -> Result<(), EnvError> {
        self.skip_blanks();
        match self.peek() {
            None | Some('\n') | Some('#') => {
                self.skip_line();
                Ok(())
            }
            Some(other) => {
                let (line, column) = self.position();
                Err(EnvError {
                    message: format!("unexpected {other:?} after a quoted value"),
                    line,
                    column,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(source: &str) -> Vec<(String, String)> {
        parse(source).expect("valid env file")
    }

    fn kv(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn simple_lines_comments_and_blank_lines() {
        let source = "# header\n\nA=1\nB = two words  \n  C=\nexport D=4\n";
        assert_eq!(
            pairs(source),
            kv(&[("A", "1"), ("B", "two words"), ("C", ""), ("D", "4")])
        );
    }

    #[test]
    fn inline_comments_only_after_whitespace_in_unquoted_values() {
        assert_eq!(
            pairs("A=x # note\nB=x#not-a-comment\nC='q' # note\n"),
            kv(&[("A", "x"), ("B", "x#not-a-comment"), ("C", "q")])
        );
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(
            pairs("A=1\nB='${A} \\n $$'\n"),
            kv(&[("A", "1"), ("B", "${A} \\n $$")])
        );
    }

    #[test]
    fn double_quotes_unescape_and_may_span_lines() {
        assert_eq!(
            pairs("A=\"line1\\nline2\\t\\\"q\\\" \\\\\"\nB=\"multi\nline\"\nC=3\n"),
            kv(&[
                ("A", "line1\nline2\t\"q\" \\"),
                ("B", "multi\nline"),
                ("C", "3")
            ])
        );
    }

    #[test]
    fn back_references_to_earlier_keys() {
        assert_eq!(
            pairs("HOST=db\nURL=postgres://${HOST}:5432\nQ=\"$HOST-${PORT:-5432}\"\nL='${HOST}'\n"),
            kv(&[
                ("HOST", "db"),
                ("URL", "postgres://db:5432"),
                ("Q", "db-5432"),
                ("L", "${HOST}")
            ])
        );
    }

    #[test]
    fn references_never_reach_the_process_environment() {
        // PATH is set in every test process; the file does not define it.
        assert_eq!(pairs("A=${PATH}\n"), kv(&[("A", "")]));
    }

    #[test]
    fn bare_key_sets_nothing_and_bom_is_ignored() {
        assert_eq!(
            pairs("\u{feff}A=1\nBARE\nB=2"),
            kv(&[("A", "1"), ("B", "2")])
        );
    }

    #[test]
    fn crlf_line_endings() {
        assert_eq!(pairs("A=1\r\nB='x'\r\n"), kv(&[("A", "1"), ("B", "x")]));
    }

    #[test]
    fn errors_carry_positions() {
        let error = parse("A=1\nB=\"open\n").unwrap_err();
        assert_eq!((error.line, error.column), (2, 3));
        assert!(error.message.contains("unterminated"));

        let error = parse("A=1\n  9X=2\n").unwrap_err();
        assert_eq!((error.line, error.column), (2, 3));
        assert!(error.message.contains("invalid variable name"));

        let error = parse("A='x' y\n").unwrap_err();
        assert_eq!(error.line, 1);

        let error = parse("A=1\nB=${A:?}${\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.message.contains("invalid interpolation"), "{error}");
    }

    #[test]
    fn escaped_dollar_in_double_quotes_stays_literal() {
        assert_eq!(pairs("A=\"\\$HOME\"\n"), kv(&[("A", "$HOME")]));
    }
}
