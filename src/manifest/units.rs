//! Small value syntaxes of compose files: durations (`1m30s`), byte sizes (`512m`) and
//! shell-style command strings.
//!
//! Pure parsers returning plain values or a one-line reason; they know nothing of files,
//! positions or error codes.

use std::time::Duration;

/// Parses a Go-style duration: a sequence of `<number><unit>` with units `ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h` (e.g. `1m30s`, `1.5s`, `300ms`). A bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(format!("invalid duration {text:?}: expected a number"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: missing unit (ns, us, ms, s, m, h)"
                ));
            }
            other => return Err(format!("invalid duration {text:?}: unknown unit {other:?}")),
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("duration {text:?} is too large"));
    }
    Ok(Duration::from_nanos((total * 1e9).round() as u64))
}

/// Formats a duration canonically (`1m30s`, `500ms`, `0s`), so that `90s` and `1m30s` hash
/// alike.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if !nanos.is_multiple_of(1_000_000_000) {
        return if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            format!("{}us", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
    }
    let mut seconds = duration.as_secs();
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    if seconds > 0 {
        out.push_str(&format!("{seconds}s"));
    }
    out
}

/// Parses a byte size as docker does: a number with an optional `b`, `k`, `m`, `g`, `t`
/// suffix (binary multiples, case-insensitive, optional trailing `b`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim().to_ascii_lowercase();
    let without_b = trimmed
        .strip_suffix('b')
        .filter(|rest| rest.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(&trimmed);
    let (number, multiplier) = match without_b.chars().last() {
        Some('k') => (&without_b[..without_b.len() - 1], 1u64 << 10),
        Some('m') => (&without_b[..without_b.len() - 1], 1 << 20),
        Some('g') => (&without_b[..without_b.len() - 1], 1 << 30),
        Some('t') => (&without_b[..without_b.len() - 1], 1 << 40),
        Some('b') => (&without_b[..without_b.len() - 1], 1),
        _ => (without_b, 1),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid size {text:?} (expected e.g. 512m or 1g)"))?;
    if !(0.0..1e19).contains(&value) {
        return Err(format!("invalid size {text:?}"));
    }
    let bytes = value * multiplier as f64;
    if bytes >= u64::MAX as f64 {
        return Err(format!("size {text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// Splits a command string into words like a POSIX shell would, without expansion:
/// whitespace separates words, single quotes are literal, double quotes allow `\"`, `\\`,
/// `\$` and `` \` `` escapes, and a backslash outside quotes escapes the next character.
pub fn shell_split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => word.push('\\'),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "10", "s", "1x", "1m30", "abc", "1e400h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_format_canonically() {
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        for text in ["1m30s", "90s", "1h0m30s"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn byte_sizes_parse_like_docker() {
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("1GB"), Ok(1 << 30));
        assert_eq!(parse_bytes("64k"), Ok(64 << 10));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("100b"), Ok(100));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        for bad in ["", "g", "-1m", "12q", "1e30t"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shell_split_handles_quotes_and_escapes() {
        let words = |s: &str| shell_split(s).unwrap();
        assert_eq!(words("echo hi"), ["echo", "hi"]);
        assert_eq!(
            words(r#"sh -c 'echo "$HOME" && ls'"#),
            ["sh", "-c", r#"echo "$HOME" && ls"#]
        );
        assert_eq!(words(r#"a "b c" d\ e"#), ["a", "b c", "d e"]);
        assert_eq!(words(r#""x\"y" ''"#), ["x\"y", ""]);
        assert_eq!(words("  "), Vec::<String>::new());
        assert!(shell_split("'open").is_err());
        assert!(shell_split("\"open").is_err());
    }
}
