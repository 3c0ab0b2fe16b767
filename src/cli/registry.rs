//! `jaco registry login|logout|list`: credentials the nodes use to pull images.
//!
//! Role: adapter between the command line and the daemon's `Registry` service. Contract: the
//! password is read from standard input (`--password-stdin`) or, on a terminal, from a prompt,
//! never from argv; `list` never shows a secret. Credentials match images by the longest
//! `host[:port][/namespace]` prefix.
//!
//! This module must not implement credential storage and must not print success for an
//! operation it could not perform: in this build every handler returns
//! [`Context::needs_daemon`].

use clap::{Args, Subcommand};

use super::args::ReadArgs;
use super::{Context, Failure};

/// Arguments of `jaco registry`.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// The registry command to run.
    #[command(subcommand)]
    pub command: RegistryCommand,
}

/// The subcommands of `jaco registry`.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Store a credential for a registry; every node uses it to pull matching images
    Login(LoginArgs),
    /// Remove the credential of a registry
    Logout(LogoutArgs),
    /// List stored registry credentials (registry and username; never the password)
    List(ListArgs),
}

/// Arguments of `jaco registry login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry the credential is for: HOST[:PORT][/NAMESPACE]
    #[arg(value_name = "REGISTRY")]
    pub registry: String,
    /// User name at the registry
    #[arg(long, short = 'u', value_name = "NAME")]
    pub username: String,
    /// Read the password from standard input (without it, jaco prompts on a terminal); the
    /// password is never accepted as an argument
    #[arg(long)]
    pub password_stdin: bool,
}

/// Arguments of `jaco registry logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry whose credential is removed: HOST[:PORT][/NAMESPACE]
    #[arg(value_name = "REGISTRY")]
    pub registry: String,
}

/// Arguments of `jaco registry list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Runs `jaco registry …`.
pub fn run(args: &RegistryArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    match &args.command {
        RegistryCommand::Login(_) | RegistryCommand::Logout(_) | RegistryCommand::List(_) => {
            Err(ctx.needs_daemon())
        }
    }
}
