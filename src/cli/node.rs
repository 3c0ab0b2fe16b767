//! `jaco node list|remove|drain|issue-join-token`: the cluster's members.
//!
//! Role: adapter between the command line and the daemon's `Cluster` service (ListNodes,
//! RemoveNode, IssueJoinToken) and the scheduler's drain. Contract: `issue-join-token` prints
//! the single-use join token (`-o json` → `{"token"}`); `remove` and `drain` move replicas off
//! the node first (replacement healthy before the old replica stops) unless `--force`.
//!
//! This module must not implement membership or drain logic and must not print success for an
//! operation it could not perform: in this build every handler returns
//! [`Context::needs_daemon`].

use clap::{Args, Subcommand};

use super::args::ReadArgs;
use super::{Context, Failure};

/// Arguments of `jaco node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node command to run.
    #[command(subcommand)]
    pub command: NodeCommand,
}

/// The subcommands of `jaco node`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the cluster's nodes with status, raft role, address and reachability
    List(ListArgs),
    /// Remove a node from the cluster, draining its replicas first
    Remove(RemoveArgs),
    /// Move every replica off a node and stop scheduling onto it, keeping it a member
    Drain(DrainArgs),
    /// Issue a single-use join token (valid 24 h) for one node name and its addresses
    IssueJoinToken(IssueJoinTokenArgs),
}

/// Arguments of `jaco node list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco node remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Name of the node to remove
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Remove at once without draining (replicas are re-placed after the node is gone)
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `jaco node drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Name of the node to drain
    #[arg(value_name = "NODE")]
    pub node: String,
}

/// Arguments of `jaco node issue-join-token`.
#[derive(Debug, Args)]
pub struct IssueJoinTokenArgs {
    /// Name the joining node will have; the token is valid for this node only
    #[arg(long, value_name = "NAME")]
    pub node_name: String,
    /// Extra DNS name or IP address for the node's certificate; repeat for several
    #[arg(long = "san", value_name = "DNS-OR-IP")]
    pub sans: Vec<String>,
}

/// Runs `jaco node …`.
pub fn run(args: &NodeArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    match &args.command {
        NodeCommand::List(_)
        | NodeCommand::Remove(_)
        | NodeCommand::Drain(_)
        | NodeCommand::IssueJoinToken(_) => Err(ctx.needs_daemon()),
    }
}
