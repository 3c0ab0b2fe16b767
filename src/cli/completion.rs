//! `jaco completion SHELL` and the hidden `jaco man --out-dir DIR`: documentation generated
//! from the clap command tree.
//!
//! Role: print a completion script for a shell (clap_complete) and write one man page per
//! command (clap_mangen), so that both always match the tree in [`super::Cli`]. These commands
//! must not hand-write usage text and must not contact a daemon.

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, Context, Failure};
use crate::error::{Code, Error};

/// Arguments of `jaco completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell to print the completion script for
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Arguments of `jaco man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the man pages into (created if missing); one page per command, e.g.
    /// jaco-cluster-init.1
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

/// Runs `jaco completion`.
pub fn completion(args: &CompletionArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "jaco", &mut script);
    ctx.out.write_all(&script)?;
    Ok(())
}

/// Runs `jaco man`: writes the pages and lists the files it wrote (unless `--quiet`).
pub fn man(args: &ManArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let written = write_man_pages(&args.out_dir).map_err(|(path, e)| {
        Error::new(
            Code::Internal,
            format!("cannot write man page {}: {e}", path.display()),
        )
        .with("reason", "man_page_write_failed")
        .with("path", path.display())
    })?;
    if !ctx.global.quiet {
        for path in written {
            writeln!(ctx.out, "{}", path.display())?;
        }
    }
    Ok(())
}

/// Writes `jaco.1` and one page per visible subcommand (`jaco-cluster-init.1`, …) into `dir`.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    fn walk(
        command: &clap::Command,
        dir: &Path,
        written: &mut Vec<PathBuf>,
    ) -> Result<(), (PathBuf, std::io::Error)> {
        let page = clap_mangen::Man::new(command.clone())
            .manual("jaco manual")
            .source(format!("jaco {}", env!("CARGO_PKG_VERSION")));
        let path = dir.join(page.get_filename());
        let mut text = Vec::new();
        page.render(&mut text).map_err(|e| (path.clone(), e))?;
        std::fs::write(&path, text).map_err(|e| (path.clone(), e))?;
        written.push(path);
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, dir, written)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir).map_err(|e| (dir.to_owned(), e))?;
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let mut written = Vec::new();
    walk(&root, dir, &mut written)?;
    Ok(written)
}
