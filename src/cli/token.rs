//! `jaco token issue|revoke|list`: operator tokens for remote access.
//!
//! Role: adapter between the command line and the daemon's `Tokens` service. Contract:
//! `issue` prints the new token once (64 hex characters; only its SHA-256 is stored); `list`
//! never shows a token or its hash; revocation is effective on every node within a second.
//!
//! This module must not implement token logic and must not print success for an operation it
//! could not perform: in this build every handler returns [`Context::needs_daemon`].

use clap::{Args, Subcommand};

use super::args::ReadArgs;
use super::{Context, Failure};

/// Arguments of `jaco token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The token command to run.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// The subcommands of `jaco token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue an operator token for an identity and print it once
    Issue(IssueArgs),
    /// Revoke the token of an identity
    Revoke(RevokeArgs),
    /// List the identities that hold tokens, with issue and revocation times
    List(ListArgs),
}

/// Arguments of `jaco token issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Identity of the token's holder, recorded on every audit event it causes
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Allow this token to deploy privileged services (`privileged: true`, `security_opt`)
    #[arg(long)]
    pub allow_privileged: bool,
}

/// Arguments of `jaco token revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Identity whose token is revoked
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// Arguments of `jaco token list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Runs `jaco token …`.
pub fn run(args: &TokenArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    match &args.command {
        TokenCommand::Issue(_) | TokenCommand::Revoke(_) | TokenCommand::List(_) => {
            Err(ctx.needs_daemon())
        }
    }
}
