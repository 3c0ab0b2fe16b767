//! `jaco backup` and `jaco restore`: a consistent snapshot of the cluster state, and the
//! offline recreation of a node from one.
//!
//! Role: adapter between the command line and the daemon's `Cluster.Backup` stream (backup)
//! and the local state store (restore). Contract: `backup` writes the file atomically
//! (temporary file, fsync, rename, mode 0600) with a checksummed header naming cluster id, raft
//! index and term; `restore` only writes into an empty data directory, with the daemon
//! stopped, and refuses a corrupt or mismatched file.
//!
//! Note: the file is a positional argument, not `-o FILE`, because `-o` is the global output
//! format flag on every command (a command-local `-o` would shadow it).
//!
//! This module must not implement the snapshot format and must not print success for an
//! operation it could not perform: in this build both handlers return
//! [`Context::needs_daemon`].

use std::path::PathBuf;

use clap::Args;

use super::{Context, Failure};

/// Arguments of `jaco backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// File to write the backup to (created with mode 0600; an existing file is replaced only
    /// when the new backup is complete)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Arguments of `jaco restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup file written by `jaco backup`
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Data directory to create the node in; must be empty (the daemon must not be running)
    #[arg(
        long,
        value_name = "DIR",
        env = "JACO_DATA_DIR",
        hide_env_values = true,
        default_value = "/var/lib/jaco"
    )]
    pub data_dir: PathBuf,
}

/// Runs `jaco backup`.
pub fn backup(_args: &BackupArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    Err(ctx.needs_daemon())
}

/// Runs `jaco restore`.
pub fn restore(_args: &RestoreArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    Err(ctx.needs_daemon())
}
