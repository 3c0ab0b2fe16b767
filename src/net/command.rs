//! Runs one external command for the networking's I/O edges (`nft`, `iptables`, `ip`, `wg`): an
//! argv prefix plus arguments, optional stdin, a deadline, and failures turned into errors of
//! the caller's code that carry the command, its exit status and its stderr. It decides
//! nothing about what the output means.

use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use crate::error::{Code, Error};

/// How long one command may take before it is killed. `nft -f` of a large ruleset takes
/// milliseconds; a command still running after this is stuck (e.g. on a netlink lock).
const DEADLINE: Duration = Duration::from_secs(30);

/// Longest stderr excerpt kept in an error's details.
const STDERR_KEPT: usize = 2000;

/// Runs `prefix` + `args`, feeding `stdin` if given, under the C locale (so messages can be
/// matched) and a deadline. A non-zero exit is returned as an `Output`, not an error; only a
/// command that cannot be run or does not finish is one, with `code`.
pub(crate) async fn run(
    prefix: &[String],
    args: &[&str],
    stdin: Option<&str>,
    code: Code,
) -> Result<Output, Error> {
    let Some((program, prefix_args)) = prefix.split_first() else {
        return Err(Error::new(code, "the command to run is empty"));
    };
    let mut command = Command::new(program);
    command
        .args(prefix_args)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let unavailable = |what: &str, detail: String| {
        Error::new(code, format!("{what} `{program}`: {detail}"))
            .with("command", command_line(prefix, args))
    };
    let mut child = command
        .spawn()
        .map_err(|e| unavailable("cannot run", e.to_string()))?;
    let pipe = child.stdin.take();
    let feed = async move {
        if let (Some(mut pipe), Some(text)) = (pipe, stdin) {
            // A failed write shows up as the command's own error (it read a truncated input);
            // dropping the pipe closes the command's stdin.
            let _ = pipe.write_all(text.as_bytes()).await;
        }
    };
    // Fed and drained together, so a command that answers before reading all of its input
    // cannot block on a full pipe.
    let finished = async {
        let ((), output) = tokio::join!(feed, child.wait_with_output());
        output
    };
    match tokio::time::timeout(DEADLINE, finished).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err(unavailable("lost", e.to_string())),
        Err(_) => Err(unavailable(
            "gave up on",
            format!("no exit after {DEADLINE:?}"),
        )),
    }
}

/// Like [`run`], but a non-zero exit is an error too; returns stdout.
pub(crate) async fn checked(
    prefix: &[String],
    args: &[&str],
    stdin: Option<&str>,
    code: Code,
) -> Result<String, Error> {
    let output = run(prefix, args, stdin, code).await?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(failed(prefix, args, &output, code))
    }
}

/// The error (with `code`) for a command that exited unsuccessfully.
pub(crate) fn failed(prefix: &[String], args: &[&str], output: &Output, code: Code) -> Error {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    let mut end = stderr.len().min(STDERR_KEPT);
    while !stderr.is_char_boundary(end) {
        end -= 1;
    }
    let first_line = stderr.lines().next().unwrap_or("no message");
    Error::new(
        code,
        format!("`{}` failed: {first_line}", command_line(prefix, args)),
    )
    .with("command", command_line(prefix, args))
    .with("exit_status", output.status)
    .with("stderr", &stderr[..end])
}

fn command_line(prefix: &[String], args: &[&str]) -> String {
    let words: Vec<&str> = prefix
        .iter()
        .map(String::as_str)
        .chain(args.iter().copied())
        .collect();
    words.join(" ")
}
