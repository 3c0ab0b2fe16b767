//! The `jaco` command line: the clap command tree, the dispatcher and the plumbing every
//! command shares (output streams, output-format selection, failures).
//!
//! Role: parse the command line into typed arguments and hand each command to its module
//! (one file per command group). Commands are thin adapters: parse → call a library function
//! or the daemon (through [`client`]) → format output. Contract: a command either succeeds, or
//! returns a [`Failure`] that `main` turns into `Error: <code>: <message>` lines on stderr and
//! exit status 1 (a daemon's `tonic::Status` becomes its error envelope), or a usage error with
//! exit status 2, or ([`Failure::Exit`]) the exit status of a remote command (`exec`) or 130
//! after Ctrl-C (`apply`, `rollback`). No command prints
//! success for work that was not done.
//!
//! This module must not hold domain logic (manifest rules, scheduling, wire formats) nor print
//! errors itself; it must not pick an output format a command did not declare
//! ([`output::Formats`]).

use std::ffi::OsString;
use std::io::{self, Write};

use clap::error::ErrorKind;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::error::{Code, Error};

pub mod args;
pub mod audit;
pub mod backup;
pub mod bootstrap;
pub mod client;
pub mod cluster;
pub mod completion;
pub mod config;
pub mod deploy;
pub mod deploy_view;
pub mod follow;
pub mod node;
pub mod output;
pub mod progress;
pub mod registry;
pub mod replica_io;
#[cfg(test)]
pub(crate) mod scripted;
pub mod terminal;
pub mod token;
pub mod upgrade;
pub mod validate;
pub mod version;
pub mod view;

use args::GlobalArgs;
use output::{Formats, OutputFormat};

/// jaco runs Docker Compose applications on a small raft-backed cluster of appliance nodes.
///
/// Without --server, commands talk to the jaco daemon on this machine through its local socket;
/// with --server HOST:PORT they talk to any cluster node over TLS, authenticated by --token.
/// Exit status: 0 success, 1 an operation failed (printed as `Error: <code>: <message>`),
/// 2 usage error.
#[derive(Debug, Parser)]
#[command(
    name = "jaco",
    version,
    max_term_width = 100,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Flags every command accepts.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every top-level command of `jaco`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a cluster, join one, or show its health
    Cluster(cluster::ClusterArgs),
    /// List, drain and remove nodes; issue join tokens
    Node(node::NodeArgs),
    /// Issue, revoke and list operator tokens
    Token(token::TokenArgs),
    /// Manage container registry credentials used for image pulls
    Registry(registry::RegistryArgs),
    /// Roll a signed OS image across the fleet, one node at a time
    Upgrade(upgrade::UpgradeArgs),
    /// Deploy or update a deployment from jaco.yaml and its compose file
    Apply(deploy::ApplyArgs),
    /// Show deployments, their replicas, routes and rollouts
    Status(deploy::StatusArgs),
    /// Show one kind of object in detail
    Get(deploy::GetArgs),
    /// Print the merged logs of a service's replicas
    Logs(deploy::LogsArgs),
    /// Run a command inside a running replica
    Exec(deploy::ExecArgs),
    /// Revert a deployment to its previous revision (as a new revision)
    Rollback(deploy::RollbackArgs),
    /// Remove a deployment and everything jaco created for it
    Delete(deploy::DeleteArgs),
    /// Show the cluster's audit log
    Audit(audit::AuditArgs),
    /// Write a consistent snapshot of the cluster state to a file
    Backup(backup::BackupArgs),
    /// Recreate a node's data directory from a backup (offline)
    Restore(backup::RestoreArgs),
    /// Check jaco.yaml and its compose file without contacting a cluster
    Validate(validate::ValidateArgs),
    /// Print the fully resolved deployment, as the daemon would receive it
    Config(config::ConfigArgs),
    /// Print the version of this jaco binary
    Version(version::VersionArgs),
    /// Print a shell completion script
    Completion(completion::CompletionArgs),
    /// Run the jaco daemon (the node agent; normally started by systemd)
    Daemon(DaemonArgs),
    /// Write man pages for every command into a directory (for packagers)
    #[command(hide = true)]
    Man(completion::ManArgs),
}

/// Arguments of `jaco daemon`.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Daemon configuration file (closed schema; a missing file means all defaults)
    #[arg(long, value_name = "FILE", default_value = "/etc/jaco/daemon.yaml")]
    pub config: std::path::PathBuf,
}

impl Command {
    /// The output formats this command can produce (exhaustive on purpose: a new command
    /// must say which formats it supports).
    pub fn formats(&self) -> Formats {
        match self {
            Command::Cluster(_)
            | Command::Node(_)
            | Command::Token(_)
            | Command::Registry(_)
            | Command::Upgrade(_)
            | Command::Apply(_)
            | Command::Status(_)
            | Command::Get(_)
            | Command::Rollback(_)
            | Command::Delete(_)
            | Command::Audit(_)
            | Command::Backup(_)
            | Command::Restore(_)
            | Command::Validate(_)
            | Command::Version(_) => output::ALL_FORMATS,
            Command::Config(_) => output::DOCUMENT,
            Command::Logs(_)
            | Command::Exec(_)
            | Command::Completion(_)
            | Command::Daemon(_)
            | Command::Man(_) => output::TEXT_ONLY,
        }
    }
}

/// Why a command did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// One or more operational errors; `main` prints each with [`Error::render`] and exits 1.
    Errors(Vec<Error>),
    /// The command already reported the failure on stdout (e.g. `validate -o json` printed the
    /// envelopes); `main` prints nothing more and exits 1.
    Reported,
    /// A usage error; `main` prints it the way clap does and exits 2.
    Usage(Box<clap::Error>),
    /// The command ended with this exit status and already said why: a remote process (`exec`)
    /// exited with it, or the operator interrupted a follow (130); `main` prints nothing more.
    Exit(i32),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Errors(vec![error])
    }
}

impl From<clap::Error> for Failure {
    fn from(error: clap::Error) -> Self {
        Failure::Usage(Box::new(error))
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::BrokenPipe {
            // The reader went away (`jaco … | head`): nothing left to tell anyone.
            return Failure::Reported;
        }
        Failure::from(
            Error::new(Code::Internal, format!("cannot write output: {error}"))
                .with("reason", "output_write_failed"),
        )
    }
}

impl From<tonic::Status> for Failure {
    /// A daemon's answer: the error envelope it carries (see [`Error::from_status`]).
    fn from(status: tonic::Status) -> Self {
        Failure::from(Error::from_status(&status))
    }
}

impl From<output::RenderError> for Failure {
    fn from(error: output::RenderError) -> Self {
        Failure::from(Error::new(Code::Internal, error.to_string()).with("reason", "render_failed"))
    }
}

/// What a command handler gets besides its own arguments.
pub struct Context<'a> {
    /// The global flags.
    pub global: &'a GlobalArgs,
    /// The output format this command runs with, already checked against its [`Formats`].
    pub format: OutputFormat,
    /// The subcommand path, e.g. `["cluster", "init"]`.
    pub path: Vec<String>,
    /// Standard output: the result, and nothing else.
    pub out: &'a mut dyn Write,
    /// Standard error: warnings and progress.
    pub err: &'a mut dyn Write,
    /// Which of the process's standard streams are terminals.
    pub terminals: Terminals,
}

/// Which standard streams are terminals: live progress redraws in place only on a terminal,
/// prompts need one, and `exec -t` switches a terminal to raw mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Terminals {
    /// Standard input is a terminal.
    pub stdin: bool,
    /// Standard output is a terminal.
    pub stdout: bool,
    /// Standard error is a terminal.
    pub stderr: bool,
}

impl Terminals {
    /// The terminals of this process.
    pub fn detect() -> Terminals {
        use std::io::IsTerminal;
        Terminals {
            stdin: io::stdin().is_terminal(),
            stdout: io::stdout().is_terminal(),
            stderr: io::stderr().is_terminal(),
        }
    }
}

impl Context<'_> {
    /// `jaco cluster init`, for messages.
    pub fn command_line(&self) -> String {
        std::iter::once("jaco")
            .chain(self.path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Prints `value` as JSON or YAML when the format is one of those, else the text that
    /// `table` makes of it.
    pub fn print<T: serde::Serialize>(
        &mut self,
        value: &T,
        table: impl FnOnce(&T) -> String,
    ) -> Result<(), Failure> {
        print_to(self.out, self.format, value, table)
    }

    /// Prints a warning on stderr as `Warning: <text>`, unless `--quiet`.
    pub fn warn(&mut self, warning: impl std::fmt::Display) -> io::Result<()> {
        if self.global.quiet {
            return Ok(());
        }
        writeln!(self.err, "Warning: {warning}")
    }

    /// A usage error (exit 2) attributed to this command, formatted by clap.
    pub fn usage_error(&self, kind: ErrorKind, message: impl std::fmt::Display) -> Failure {
        Failure::from(usage_error(&self.path, kind, message))
    }
}

/// Writes `value` to `out` as JSON or YAML when `format` is one of those, else the text that
/// `table` makes of it ([`Context::print`] for code that holds the streams apart from the
/// context).
pub fn print_to<T: serde::Serialize>(
    out: &mut dyn Write,
    format: OutputFormat,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> Result<(), Failure> {
    let text = match output::DataFormat::of(format) {
        Some(format) => output::render(value, format)?,
        None => table(value),
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// A clap usage error for the subcommand at `path`, with that subcommand's usage line.
pub fn usage_error(
    path: &[String],
    kind: ErrorKind,
    message: impl std::fmt::Display,
) -> clap::Error {
    let mut command = Cli::command();
    command.build();
    for name in path {
        match command.find_subcommand(name) {
            Some(sub) => command = sub.clone(),
            None => break,
        }
    }
    command.error(kind, message)
}

/// The names of the subcommands chosen on the command line, outermost first.
pub fn command_path(matches: &ArgMatches) -> Vec<String> {
    let mut path = Vec::new();
    let mut current = matches;
    while let Some((name, sub)) = current.subcommand() {
        path.push(name.to_owned());
        current = sub;
    }
    path
}

/// Parses a command line; a usage error is returned as clap's error (exit status 2).
pub fn parse<I, T>(argv: I) -> Result<(Cli, ArgMatches), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(argv)?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok((cli, matches))
}

/// Runs a parsed command line, writing its output to `out` and warnings to `err`;
/// `terminals` says which of the process's standard streams are terminals.
pub fn execute(
    cli: &Cli,
    matches: &ArgMatches,
    out: &mut dyn Write,
    err: &mut dyn Write,
    terminals: Terminals,
) -> Result<(), Failure> {
    let path = command_path(matches);
    let format = cli
        .command
        .formats()
        .resolve(cli.global.output)
        .map_err(|unsupported| {
            usage_error(
                &path,
                ErrorKind::InvalidValue,
                format!("`jaco {}`: {unsupported}", path.join(" ")),
            )
        })?;
    let mut ctx = Context {
        global: &cli.global,
        format,
        path,
        out,
        err,
        terminals,
    };
    match &cli.command {
        Command::Cluster(args) => cluster::run(args, &mut ctx),
        Command::Node(args) => node::run(args, &mut ctx),
        Command::Token(args) => token::run(args, &mut ctx),
        Command::Registry(args) => registry::run(args, &mut ctx),
        Command::Upgrade(args) => upgrade::run(args, &mut ctx),
        Command::Apply(args) => deploy::apply(args, &mut ctx),
        Command::Status(args) => deploy::status(args, &mut ctx),
        Command::Get(args) => deploy::get(args, &mut ctx),
        Command::Logs(args) => deploy::logs(args, &mut ctx),
        Command::Exec(args) => deploy::exec(args, &mut ctx),
        Command::Rollback(args) => deploy::rollback(args, &mut ctx),
        Command::Delete(args) => deploy::delete(args, &mut ctx),
        Command::Audit(args) => audit::run(args, &mut ctx),
        Command::Backup(args) => backup::backup(args, &mut ctx),
        Command::Restore(args) => backup::restore(args, &mut ctx),
        Command::Validate(args) => validate::run(args, &mut ctx),
        Command::Config(args) => config::run(args, &mut ctx),
        Command::Version(args) => version::run(args, &mut ctx),
        Command::Completion(args) => completion::completion(args, &mut ctx),
        Command::Daemon(args) => crate::daemon::run::main(&args.config).map_err(Failure::from),
        Command::Man(args) => completion::man(args, &mut ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a command line in-process: (exit status, stdout, stderr), as `main` would.
    pub(crate) fn run(argv: &[&str]) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = match parse(std::iter::once("jaco").chain(argv.iter().copied())) {
            Err(e) => {
                err.extend(e.render().to_string().into_bytes());
                e.exit_code()
            }
            Ok((cli, matches)) => {
                match execute(&cli, &matches, &mut out, &mut err, Terminals::default()) {
                    Ok(()) => 0,
                    Err(Failure::Errors(errors)) => {
                        for e in errors {
                            err.extend(format!("{}\n", e.render(cli.global.verbose)).into_bytes());
                        }
                        crate::error::EXIT_OPERATIONAL
                    }
                    Err(Failure::Reported) => crate::error::EXIT_OPERATIONAL,
                    Err(Failure::Usage(e)) => {
                        err.extend(e.render().to_string().into_bytes());
                        e.exit_code()
                    }
                    Err(Failure::Exit(status)) => status,
                }
            }
        };
        (
            status,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn the_command_tree_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every visible command and argument says what it does.
    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() && !path.is_empty() {
                missing.push(format!("command `{path}`"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("argument {id} of `{path}`"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, format!("{path} {}", sub.get_name()).trim(), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:?}");
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let (cli, _) = parse([
            "jaco", "node", "list", "--server", "n1:7000", "-o", "json", "-q", "-v",
        ])
        .unwrap();
        assert_eq!(cli.global.server.as_deref(), Some("n1:7000"));
        assert_eq!(cli.global.output, Some(OutputFormat::Json));
        assert!(cli.global.quiet && cli.global.verbose);
        if std::env::var_os("JACO_SOCKET").is_none() {
            assert_eq!(
                cli.global.socket,
                std::path::Path::new(args::DEFAULT_SOCKET)
            );
        }
    }

    #[test]
    fn command_path_names_the_chosen_subcommands() {
        let (_, matches) = parse(["jaco", "get", "replica", "shop-web-1"]).unwrap();
        assert_eq!(command_path(&matches), ["get", "replica"]);
    }

    #[test]
    fn an_unsupported_format_is_a_usage_error() {
        let (status, out, err) = run(&["completion", "bash", "-o", "json"]);
        assert_eq!(status, 2, "{err}");
        assert_eq!(out, "");
        assert!(err.contains("-o json is not supported"), "{err}");
        assert!(err.contains("Usage: jaco completion"), "{err}");
    }

    #[test]
    fn the_format_check_comes_before_the_daemon_check() {
        let (status, _, err) = run(&["logs", "shop/web", "-o", "yaml"]);
        assert_eq!(status, 2, "{err}");
    }
}
