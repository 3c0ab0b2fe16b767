//! The terminal edge of the CLI: raw mode for `exec -t`, the window size, a prompt that does
//! not echo (passwords), a yes/no question, and redrawing a block of lines in place (live
//! progress, `status --watch`).
//!
//! Role: thin, safe wrappers over the process's own terminal (rustix termios on the standard
//! streams) plus [`Redraw`], which is pure: it turns successive frames into the text that
//! replaces the previous frame. Contract: every mode change is undone on drop ([`RawMode`]) or
//! before returning ([`read_secret`]), also on error. This module must not decide whether a
//! stream is a terminal or when a command prompts (callers check [`super::Terminals`]), and
//! must not keep what it reads.

use std::io::{self, BufRead, Write};

use rustix::termios::{self, LocalModes, OptionalActions, Termios};

/// Standard input switched to raw mode (no echo, no line editing, no signals from keys) until
/// dropped, when the saved settings come back.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Switches standard input, which must be a terminal, to raw mode.
    pub fn enable() -> io::Result<RawMode> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing better to do if the terminal went away.
        let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// The size (columns, rows) of the terminal on standard output, else standard input.
pub fn window_size() -> Option<(u16, u16)> {
    let size = termios::tcgetwinsize(io::stdout())
        .or_else(|_| termios::tcgetwinsize(io::stdin()))
        .ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

/// Prints `prompt` on `err` and reads one line from standard input (a terminal) without
/// echoing it; the line ending is not part of the answer.
pub fn read_secret(prompt: &str, err: &mut dyn Write) -> io::Result<String> {
    write!(err, "{prompt}")?;
    err.flush()?;
    let stdin = io::stdin();
    let saved = termios::tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    termios::tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let restored = termios::tcsetattr(&stdin, OptionalActions::Now, &saved);
    // The newline the operator typed was not echoed.
    writeln!(err)?;
    read?;
    restored?;
    Ok(strip_line_ending(&line).to_owned())
}

/// Prints `question` on `err` and reads one line from standard input: true for `y` or `yes`
/// (any case), false for anything else, including end of input.
pub fn confirm(question: &str, err: &mut dyn Write) -> io::Result<bool> {
    write!(err, "{question} [y/N] ")?;
    err.flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    Ok(is_yes(&line))
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// `line` without one trailing `\n` or `\r\n`.
pub fn strip_line_ending(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

/// Replaces the block of lines drawn last with a new one, in place: the cursor goes up over
/// the previous frame, which is cleared, and the new frame is written. Lines are cut to the
/// terminal width so that none wraps (a wrapped line would throw the count off).
#[derive(Debug, Clone, Default)]
pub struct Redraw {
    width: Option<usize>,
    drawn: usize,
}

impl Redraw {
    /// A redraw for a terminal `width` columns wide (`None`: never cut).
    pub fn new(width: Option<usize>) -> Redraw {
        Redraw { width, drawn: 0 }
    }

    /// The text that replaces the previous frame with `frame` (lines ending in `\n`).
    pub fn frame(&mut self, frame: &str) -> String {
        let mut out = String::new();
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}A\r\x1b[J", self.drawn));
        }
        self.drawn = 0;
        for line in frame.lines() {
            match self.width {
                Some(width) if line.chars().count() > width => {
                    out.extend(line.chars().take(width.saturating_sub(1)));
                    out.push('…');
                }
                _ => out.push_str(line),
            }
            out.push('\n');
            self.drawn += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_replaces_the_previous_one() {
        let mut redraw = Redraw::new(None);
        assert_eq!(redraw.frame("a\nb\n"), "a\nb\n");
        assert_eq!(redraw.frame("c\n"), "\x1b[2A\r\x1b[Jc\n");
        assert_eq!(redraw.frame(""), "\x1b[1A\r\x1b[J");
        assert_eq!(redraw.frame("d\n"), "d\n");
    }

    #[test]
    fn long_lines_are_cut_to_the_width() {
        let mut redraw = Redraw::new(Some(5));
        assert_eq!(redraw.frame("abcdefgh\nabc\n"), "abcd…\nabc\n");
        assert_eq!(redraw.frame("x\n"), "\x1b[2A\r\x1b[Jx\n");
    }

    #[test]
    fn answers_and_line_endings() {
        for yes in ["y\n", "Y\n", "yes\r\n", " YES "] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n\n", "yess\n", "no"] {
            assert!(!is_yes(no), "{no:?}");
        }
        assert_eq!(strip_line_ending("pw\r\n"), "pw");
        assert_eq!(strip_line_ending("pw\n\n"), "pw\n");
        assert_eq!(strip_line_ending("pw"), "pw");
    }
}
