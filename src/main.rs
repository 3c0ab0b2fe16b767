//! The `jaco` binary: the command line, and (`jaco daemon`) the daemon's entry point.
//!
//! Parses the command line, runs the command through [`jaco::cli::execute`] and turns its
//! outcome into the process's exit status: 0 on success; 1 for operational errors, each printed
//! on stderr as `Error: <code>: <message>` (with `-v`, details as `key=value` lines); 2 for
//! usage errors, printed by clap; the remote command's status for `exec`. Nothing else lives
//! here.

use std::io::Write;

use jaco::cli::{self, Failure};
use jaco::error::EXIT_OPERATIONAL;

fn main() {
    let (cli, matches) = match cli::parse(std::env::args_os()) {
        Ok(parsed) => parsed,
        // Usage errors exit 2; --help and --version print and exit 0.
        Err(error) => error.exit(),
    };
    // Unlocked handles on purpose: `jaco daemon` runs inside `execute`, and its log writer on
    // other threads must be able to take the stderr lock.
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let terminals = cli::Terminals::detect();
    let outcome = cli::execute(&cli, &matches, &mut out, &mut err, terminals);
    // A failed flush of stdout is reported like any other write failure.
    let outcome = outcome.and_then(|()| out.flush().map_err(Failure::from));
    let status = match outcome {
        Ok(()) => 0,
        Err(Failure::Errors(errors)) => {
            for error in &errors {
                // Nothing useful is left to do if stderr itself is gone.
                let _ = writeln!(err, "{}", error.render(cli.global.verbose));
            }
            EXIT_OPERATIONAL
        }
        Err(Failure::Reported) => EXIT_OPERATIONAL,
        Err(Failure::Exit(status)) => status,
        Err(Failure::Usage(error)) => error.exit(),
    };
    std::process::exit(status);
}
