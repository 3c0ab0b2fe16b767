//! `jaco upgrade start|status|abort`: signed OS image upgrades, one node at a time.
//!
//! Role: adapter between the command line and the daemon's `Upgrade` service. Contract:
//! `start` verifies nothing itself (the nodes verify the bundle's minisign signature and every
//! file's SHA-256 before writing a slot) and shows live progress until the rollout ends, or
//! returns at once with `--detach`; a second concurrent start fails with `upgrade_in_progress`.
//!
//! This module must not implement bundle verification, slot handling or the fleet controller,
//! and must not print success for an operation it could not perform: in this build every
//! handler returns [`Context::needs_daemon`].

use clap::{Args, Subcommand};

use super::args::ReadArgs;
use super::{Context, Failure};

/// Arguments of `jaco upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The upgrade command to run.
    #[command(subcommand)]
    pub command: UpgradeCommand,
}

/// The subcommands of `jaco upgrade`.
#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Start upgrading nodes to a signed bundle: followers first, the leader last, stopping at
    /// the first node that fails its health gate
    Start(StartArgs),
    /// Show the running or last upgrade: per node, version, slot and step
    Status(StatusArgs),
    /// Stop an upgrade after the node in progress (nodes already upgraded stay upgraded)
    Abort(AbortArgs),
}

/// Arguments of `jaco upgrade start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Upgrade bundle (jaco-<version>-<arch>.bundle) as a path on the node or an https URL
    #[arg(long, value_name = "PATH|URL")]
    pub bundle: String,
    /// Upgrade only this node; repeat for several (default: the node the CLI talks to)
    #[arg(long = "node", value_name = "NODE", conflicts_with = "all")]
    pub nodes: Vec<String>,
    /// Upgrade every node of the cluster, one at a time
    #[arg(long)]
    pub all: bool,
    /// Drain each node's replicas before rebooting it
    #[arg(long)]
    pub drain: bool,
    /// Allow a version lower than the running one or the bundle's min_version
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Return once the upgrade has started instead of following it to the end
    #[arg(long)]
    pub detach: bool,
}

/// Arguments of `jaco upgrade status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Keep running and print the status again on every change
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco upgrade abort`.
#[derive(Debug, Args)]
pub struct AbortArgs {}

/// Runs `jaco upgrade …`.
pub fn run(args: &UpgradeArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    match &args.command {
        UpgradeCommand::Start(_) | UpgradeCommand::Status(_) | UpgradeCommand::Abort(_) => {
            Err(ctx.needs_daemon())
        }
    }
}
