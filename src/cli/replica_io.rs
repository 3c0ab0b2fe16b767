//! `jaco logs` and `jaco exec`: byte streams to and from replicas, through whichever node hosts
//! them (the daemon forwards; SPEC §6).
//!
//! Role: adapter between the command line and `Deploy.Logs` / `Deploy.Exec`. Contract: `logs`
//! writes every line as `[replica@node] line`, standard-output lines to stdout and
//! standard-error lines to stderr, in the order they arrive (lines of one replica keep their
//! order); a replica stream that fails is reported at once as `Error: <code>: …` on stderr and
//! makes the exit status 1 once the other streams end. `exec` sends the command, then standard
//! input (with `-i`; end of input closes the command's), terminal resizes (with `-t`, on
//! SIGWINCH), switches a terminal on standard input to raw mode for `-it` and restores it
//! whatever happens, copies the command's output to stdout and stderr as it comes, and exits
//! with the command's exit status.
//!
//! This module must not pick replicas or reach containers itself (the daemon does), and must
//! not interpret the bytes it copies.

use std::io::{Read, Write};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::args::Since;
use super::client::{self, Target};
use super::deploy::{ExecArgs, LogsArgs};
use super::terminal::{self, RawMode};
use super::{Context, Failure};
use crate::error::{Code, Error};
use crate::proto::v1 as pb;
use crate::proto::v1::exec_request::Msg as In;
use crate::proto::v1::exec_response::Msg as Out;

/// A log line as printed: `[replica@node] line` and a newline.
pub fn prefixed(line: &pb::LogLine) -> Vec<u8> {
    let mut text = format!("[{}@{}] ", line.replica, line.node).into_bytes();
    text.extend_from_slice(&line.line);
    text.push(b'\n');
    text
}

/// How a failed replica stream is reported.
pub fn source_failure(source: &pb::LogSource) -> Option<String> {
    let error = source.error.as_ref()?;
    Some(format!(
        "Error: {}: the log stream of {}@{} failed: {}",
        error.code, source.replica, source.node, error.message
    ))
}

/// The request `jaco logs` sends.
pub fn logs_request(args: &LogsArgs) -> pb::LogsRequest {
    use pb::logs_request::Since as From;
    pb::LogsRequest {
        deployment: args.target.deployment.clone(),
        service: args.target.service.clone(),
        replica: args.target.index.map(|i| i.to_string()).unwrap_or_default(),
        follow: args.follow,
        since: args.since.map(|since| match since {
            Since::Ago(period) => {
                From::SinceAgoMs(u64::try_from(period.as_millis()).unwrap_or(u64::MAX))
            }
            Since::At(unix_ms) => From::SinceUnixMs(unix_ms),
        }),
        tail: args.tail.unwrap_or(0),
    }
}

/// Runs `jaco logs`.
pub fn logs(args: &LogsArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let request = logs_request(args);
    let target = Target::of(ctx)?;
    let (out, err) = (&mut *ctx.out, &mut *ctx.err);
    let failed = client::run(&target, |c| async move {
        let mut stream = c.deploy().logs(request).await?.into_inner();
        let mut failed = false;
        while let Some(message) = stream.message().await? {
            match message.item {
                Some(pb::logs_response::Item::Line(line)) => {
                    let sink: &mut dyn Write = if line.stream() == pb::LogStream::Stderr {
                        &mut *err
                    } else {
                        &mut *out
                    };
                    sink.write_all(&prefixed(&line))?;
                    sink.flush()?;
                }
                Some(pb::logs_response::Item::Source(source)) => {
                    if let Some(report) = source_failure(&source) {
                        writeln!(err, "{report}")?;
                        failed = true;
                    }
                }
                None => {}
            }
        }
        Ok(failed)
    })?;
    if failed {
        Err(Failure::Reported)
    } else {
        Ok(())
    }
}

/// The first message of an exec session.
pub fn exec_start(args: &ExecArgs, size: Option<(u16, u16)>) -> pb::ExecRequest {
    pb::ExecRequest {
        msg: Some(In::Start(pb::ExecStart {
            deployment: args.target.deployment.clone(),
            service: args.target.service.clone(),
            replica: args.target.index.map(|i| i.to_string()).unwrap_or_default(),
            command: args.command.clone(),
            tty: args.tty,
            stdin: args.interactive,
            size: size.map(terminal_size),
            ..Default::default()
        })),
    }
}

fn terminal_size((columns, rows): (u16, u16)) -> pb::TerminalSize {
    pb::TerminalSize {
        columns: u32::from(columns),
        rows: u32::from(rows),
    }
}

/// Copies standard input into the session from a thread of its own (a blocking read must not
/// hold the runtime), then closes the command's input at end of file.
fn forward_stdin(sender: mpsc::Sender<pb::ExecRequest>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let message = match stdin.read(&mut buffer) {
                Ok(0) => In::CloseStdin(pb::ExecStdinClose {}),
                Ok(n) => In::Stdin(buffer[..n].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => In::CloseStdin(pb::ExecStdinClose {}),
            };
            let closing = matches!(message, In::CloseStdin(_));
            let sent = sender.blocking_send(pb::ExecRequest { msg: Some(message) });
            if closing || sent.is_err() {
                return;
            }
        }
    });
}

/// Sends the terminal's new size on every SIGWINCH until the session ends.
fn forward_resizes(sender: mpsc::Sender<pb::ExecRequest>) {
    let Ok(mut resized) = signal(SignalKind::window_change()) else {
        return;
    };
    tokio::spawn(async move {
        while resized.recv().await.is_some() {
            let Some(size) = terminal::window_size() else {
                continue;
            };
            let message = pb::ExecRequest {
                msg: Some(In::Resize(terminal_size(size))),
            };
            if sender.send(message).await.is_err() {
                return;
            }
        }
    });
}

/// Runs `jaco exec`.
pub fn exec(args: &ExecArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let terminals = ctx.terminals;
    let size = if args.tty {
        terminal::window_size()
    } else {
        None
    };
    let start = exec_start(args, size);
    let raw = args.tty && args.interactive && terminals.stdin;
    let interactive = args.interactive;
    let verbose = ctx.global.verbose;
    let target = Target::of(ctx)?;
    let (out, err) = (&mut *ctx.out, &mut *ctx.err);
    let exit = client::run(&target, |c| async move {
        let (sender, receiver) = mpsc::channel(64);
        sender
            .send(start)
            .await
            .map_err(|_| Error::new(Code::Internal, "the exec session closed before it began"))?;
        let mut responses = c
            .deploy()
            .exec(ReceiverStream::new(receiver))
            .await?
            .into_inner();
        // Held until the session ends: the terminal comes back on every path out.
        let _raw = if raw {
            Some(RawMode::enable().map_err(|e| {
                Error::new(
                    Code::Internal,
                    format!("cannot switch the terminal to raw mode: {e}"),
                )
                .with("reason", "terminal_failed")
            })?)
        } else {
            None
        };
        if interactive {
            forward_stdin(sender.clone());
        }
        if size.is_some() {
            forward_resizes(sender.clone());
        }
        drop(sender);
        while let Some(response) = responses.message().await? {
            match response.msg {
                Some(Out::Started(started)) if verbose => {
                    write!(
                        err,
                        "running in {} on {}{}",
                        started.replica,
                        started.node,
                        if raw { "\r\n" } else { "\n" }
                    )?;
                }
                Some(Out::Stdout(bytes)) => {
                    out.write_all(&bytes)?;
                    out.flush()?;
                }
                Some(Out::Stderr(bytes)) => {
                    err.write_all(&bytes)?;
                    err.flush()?;
                }
                Some(Out::Exit(exit)) => return Ok(exit.exit_code),
                Some(Out::Started(_)) | None => {}
            }
        }
        Err(Failure::from(
            Error::new(
                Code::Internal,
                "the exec stream ended without the command's exit status",
            )
            .with("reason", "stream_ended"),
        ))
    })?;
    match exit {
        0 => Ok(()),
        code => Err(Failure::Exit(code)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cli::args::ReplicaSelector;

    #[test]
    fn lines_carry_their_replica_and_node_and_keep_their_bytes() {
        let line = pb::LogLine {
            replica: "shop-web-1".into(),
            node: "n1".into(),
            stream: pb::LogStream::Stdout.into(),
            time_unix_ms: 0,
            line: b"GET / 200 \xff".to_vec(),
        };
        assert_eq!(prefixed(&line), b"[shop-web-1@n1] GET / 200 \xff\n");
    }

    #[test]
    fn a_failed_stream_is_reported_with_its_code() {
        let clean = pb::LogSource {
            replica: "shop-web-1".into(),
            node: "n1".into(),
            started: false,
            error: None,
        };
        assert_eq!(source_failure(&clean), None);
        let failed = pb::LogSource {
            error: Some(pb::Error {
                code: "docker_error".into(),
                message: "no such container".into(),
                details: Default::default(),
            }),
            ..clean
        };
        assert_eq!(
            source_failure(&failed).as_deref(),
            Some("Error: docker_error: the log stream of shop-web-1@n1 failed: no such container")
        );
    }

    #[test]
    fn logs_split_the_streams_and_a_failed_replica_fails_the_command() {
        let scripted = crate::cli::scripted::Scripted::default();
        let (_dir, _runtime, socket) = scripted.serve();
        let (status, out, err) = crate::cli::tests::run(&["logs", "shop/web", "--socket", &socket]);
        assert_eq!(status, 1, "{err}");
        assert_eq!(out, "[shop-web-1@n1] ready\n");
        assert_eq!(
            err,
            "[shop-web-1@n1] warn: slow\nError: docker_error: the log stream of shop-web-2@n2 \
             failed: engine unreachable\n"
        );
    }

    #[test]
    fn exec_copies_the_output_and_exits_with_the_remote_status() {
        let scripted = crate::cli::scripted::Scripted::default();
        let (_dir, _runtime, socket) = scripted.serve();
        let (status, out, err) = crate::cli::tests::run(&[
            "--socket",
            &socket,
            "exec",
            "shop/web/1",
            "-v",
            "--",
            "sh",
            "-c",
            "exit 3",
        ]);
        assert_eq!(status, 3, "{err}");
        assert_eq!(out, "out\n");
        assert_eq!(err, "running in shop-web-1 on n1\nerr\n");
        let starts = scripted.exec_starts();
        assert_eq!(starts.len(), 1);
        assert_eq!(starts[0].command, ["sh", "-c", "exit 3"]);
        assert_eq!(starts[0].replica, "1");
        assert!(!starts[0].stdin && !starts[0].tty);
    }

    #[test]
    fn requests_carry_the_selection() {
        let args = LogsArgs {
            target: "shop/web/2".parse::<ReplicaSelector>().unwrap(),
            follow: true,
            since: Some(Since::Ago(Duration::from_secs(90))),
            tail: Some(5),
        };
        let request = logs_request(&args);
        assert_eq!(request.replica, "2");
        assert_eq!(
            request.since,
            Some(pb::logs_request::Since::SinceAgoMs(90_000))
        );
        assert_eq!(request.tail, 5);

        let exec = ExecArgs {
            target: "shop/web".parse::<ReplicaSelector>().unwrap(),
            interactive: true,
            tty: true,
            command: vec!["sh".into()],
        };
        let Some(In::Start(start)) = exec_start(&exec, Some((120, 40))).msg else {
            panic!("not a start message");
        };
        assert_eq!(start.replica, "");
        assert!(start.tty && start.stdin);
        assert_eq!(
            start.size,
            Some(pb::TerminalSize {
                columns: 120,
                rows: 40
            })
        );
    }
}
