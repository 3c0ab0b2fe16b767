//! The daily deployment commands: `apply`, `status`, `get`, `logs`, `exec`, `rollback`,
//! `delete`.
//!
//! Role: adapter between the command line and the daemon's `Deploy` service. Contract (from
//! SPEC §5.3, §6 and the deployments issue): `apply` resolves jaco.yaml and the compose file on
//! this machine, sends the resolved documents, then waits until every replica it changed has
//! reached a terminal state and exits 0 only if all of them run (`--detach` returns at
//! commit, `--dry-run` shows the diff and changes nothing); `status -o json` has
//! `deployments[]` and `replicas[]`; `get` never shows secrets; `logs` prefixes each line with
//! `[replica@node]`; `exec` runs through the node that hosts the replica.
//!
//! This module must not implement manifest resolution, scheduling or runtime logic and must
//! not print success for an operation it could not perform: in this build every handler
//! returns [`Context::needs_daemon`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::args::{DeploymentSelector, ReadArgs, ReplicaSelector, ServiceRef, parse_duration};
use super::{Context, Failure};

/// Arguments of `jaco apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The deployment's jaco.yaml
    #[arg(value_name = "JACO_YAML", default_value = "jaco.yaml")]
    pub file: PathBuf,
    /// Compose file to use instead of the one jaco.yaml names or the one found next to it
    #[arg(long, value_name = "FILE")]
    pub compose: Option<PathBuf>,
    /// Show what would change (services and replicas added, updated, removed) and change
    /// nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Return once the change is committed instead of waiting for the replicas
    #[arg(long)]
    pub detach: bool,
}

/// Arguments of `jaco status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this deployment, or one service of it (DEPLOYMENT[/SERVICE])
    #[arg(value_name = "DEPLOYMENT[/SERVICE]")]
    pub target: Option<DeploymentSelector>,
    /// Keep running and print the status again on every change
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to show.
    #[command(subcommand)]
    pub command: GetCommand,
}

/// The subcommands of `jaco get`.
#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// List deployments with revision and status
    Deployments(GetDeploymentsArgs),
    /// Show one deployment: revisions, status, services and their resolved specs (secrets
    /// redacted)
    Deployment(GetDeploymentArgs),
    /// List replicas with node, state, code and container
    Replicas(GetReplicasArgs),
    /// Show one replica: desired spec, last observation, restarts and dependency gates
    Replica(GetReplicaArgs),
    /// List public routes (domain, path, service, port, TLS)
    Routes(GetRoutesArgs),
    /// Show the routes of one domain in matching order, with ready upstream counts
    Route(GetRouteArgs),
}

/// Arguments of `jaco get deployments`.
#[derive(Debug, Args)]
pub struct GetDeploymentsArgs {
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco get deployment`.
#[derive(Debug, Args)]
pub struct GetDeploymentArgs {
    /// Deployment name
    #[arg(value_name = "DEPLOYMENT")]
    pub name: String,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco get replicas`.
#[derive(Debug, Args)]
pub struct GetReplicasArgs {
    /// Only replicas of this deployment
    #[arg(long, value_name = "DEPLOYMENT")]
    pub deployment: Option<String>,
    /// Only replicas of this service (with --deployment)
    #[arg(long, value_name = "SERVICE", requires = "deployment")]
    pub service: Option<String>,
    /// Only replicas on this node
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco get replica`.
#[derive(Debug, Args)]
pub struct GetReplicaArgs {
    /// Replica id, e.g. shop-web-3
    #[arg(value_name = "REPLICA")]
    pub id: String,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco get routes`.
#[derive(Debug, Args)]
pub struct GetRoutesArgs {
    /// Only routes of this domain
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Only routes of this deployment
    #[arg(long, value_name = "DEPLOYMENT")]
    pub deployment: Option<String>,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco get route`.
#[derive(Debug, Args)]
pub struct GetRouteArgs {
    /// The domain whose routes are shown
    #[arg(value_name = "DOMAIN")]
    pub domain: String,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The service whose replicas' logs are merged (DEPLOYMENT/SERVICE)
    #[arg(value_name = "DEPLOYMENT/SERVICE")]
    pub target: ServiceRef,
    /// Keep printing new lines as they are written
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only lines written in this last period, e.g. 10m, 2h, 1h30m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Only the last N lines of each replica
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
}

/// Arguments of `jaco exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The replica to run in: DEPLOYMENT/SERVICE (any running replica) or
    /// DEPLOYMENT/SERVICE/INDEX
    #[arg(value_name = "DEPLOYMENT/SERVICE[/INDEX]")]
    pub target: ReplicaSelector,
    /// Keep standard input open and send it to the command
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Allocate a terminal for the command
    #[arg(long, short = 't')]
    pub tty: bool,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Arguments of `jaco rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Deployment to roll back
    #[arg(value_name = "DEPLOYMENT")]
    pub deployment: String,
    /// Return once the rollback is committed instead of waiting for the replicas
    #[arg(long)]
    pub detach: bool,
}

/// Arguments of `jaco delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Deployment to delete
    #[arg(value_name = "DEPLOYMENT")]
    pub deployment: String,
    /// Keep the named volumes jaco created for the deployment
    #[arg(long)]
    pub keep_volumes: bool,
}

/// Runs `jaco apply`.
pub fn apply(_args: &ApplyArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    Err(ctx.needs_daemon())
}

/// Runs `jaco status`.
pub fn status(_args: &StatusArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    Err(ctx.needs_daemon())
}

/// Runs `jaco get …`.
pub fn get(args: &GetArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    match &args.command {
        GetCommand::Deployments(_)
        | GetCommand::Deployment(_)
        | GetCommand::Replicas(_)
        | GetCommand::Replica(_)
        | GetCommand::Routes(_)
        | GetCommand::Route(_) => Err(ctx.needs_daemon()),
    }
}

/// Runs `jaco logs`.
pub fn logs(_args: &LogsArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    Err(ctx.needs_daemon())
}

/// Runs `jaco exec`.
pub fn exec(_args: &ExecArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    Err(ctx.needs_daemon())
}

/// Runs `jaco rollback`.
pub fn rollback(_args: &RollbackArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    Err(ctx.needs_daemon())
}

/// Runs `jaco delete`.
pub fn delete(_args: &DeleteArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    Err(ctx.needs_daemon())
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command, parse};

    fn command(argv: &[&str]) -> Command {
        let (cli, _): (Cli, _) = parse(std::iter::once("jaco").chain(argv.iter().copied()))
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        cli.command
    }

    #[test]
    fn exec_takes_the_command_after_double_dash() {
        let Command::Exec(args) =
            command(&["exec", "shop/web/2", "-it", "--", "sh", "-c", "ls -l"])
        else {
            panic!("not exec")
        };
        assert_eq!(args.target.index, Some(2));
        assert!(args.interactive && args.tty);
        assert_eq!(args.command, ["sh", "-c", "ls -l"]);
    }

    #[test]
    fn exec_without_a_command_is_rejected() {
        assert!(parse(["jaco", "exec", "shop/web"]).is_err());
        assert!(parse(["jaco", "exec", "shop/web", "ls"]).is_err());
    }

    #[test]
    fn malformed_targets_are_usage_errors() {
        for argv in [
            &["jaco", "logs", "shop"][..],
            &["jaco", "status", "shop/web/1"],
            &["jaco", "exec", "shop/web/x", "--", "ls"],
            &["jaco", "logs", "shop/web", "--since", "yesterday"],
        ] {
            let err = parse(argv.iter().copied()).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
    }

    #[test]
    fn logs_parses_since_and_tail() {
        let Command::Logs(args) =
            command(&["logs", "shop/web", "-f", "--since", "1h30m", "--tail", "50"])
        else {
            panic!("not logs")
        };
        assert!(args.follow);
        assert_eq!(args.since, Some(std::time::Duration::from_secs(5400)));
        assert_eq!(args.tail, Some(50));
    }

    #[test]
    fn apply_defaults_to_jaco_yaml() {
        let Command::Apply(args) = command(&["apply", "--dry-run"]) else {
            panic!("not apply")
        };
        assert_eq!(args.file, std::path::Path::new("jaco.yaml"));
        assert!(args.dry_run && !args.detach);
    }
}
