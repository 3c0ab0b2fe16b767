//! `jaco config [JACO_YAML] [--compose FILE]`: print the fully resolved deployment.
//!
//! Role: call the manifest library (`crate::manifest::load`) and print the resolved model —
//! an object with `deployment` and `services` (each service's spec after interpolation,
//! env_file folding and jaco.yaml defaults), like `docker compose config`. Contract: YAML by
//! default and with `-o yaml`, JSON with `-o json`; there is no table form (`-o table` is a
//! usage error). Warnings go to stderr (unless `-q`). On failure stdout stays empty, every
//! problem is printed as `Error: <code>: <message>` on stderr and the exit status is 1 — in
//! every format, so that `jaco config -o json | jq` never sees an error array in place of the
//! document.
//!
//! This module must not implement or duplicate any manifest rule, and must not print secrets
//! that the manifest library redacts.

use std::path::PathBuf;

use clap::Args;
use clap::error::ErrorKind;

use super::output::{self, DataFormat};
use super::validate::{load, print_warnings};
use super::{Context, Failure};

/// Arguments of `jaco config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The deployment's jaco.yaml
    #[arg(value_name = "JACO_YAML", default_value = "jaco.yaml")]
    pub file: PathBuf,
    /// Compose file to use instead of the one jaco.yaml names or the one found next to it
    #[arg(long, value_name = "FILE")]
    pub compose: Option<PathBuf>,
}

/// Runs `jaco config`.
pub fn run(args: &ConfigArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let Some(format) = DataFormat::of(ctx.format) else {
        // Unreachable through `execute`, which only allows the document formats.
        return Err(ctx.usage_error(
            ErrorKind::InvalidValue,
            "`jaco config` prints a document: use -o yaml (the default) or -o json",
        ));
    };
    let resolved = load(&args.file, args.compose.as_deref()).map_err(Failure::Errors)?;
    print_warnings(&resolved, ctx)?;
    ctx.out
        .write_all(output::render(&resolved, format)?.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cli::tests::run;

    #[test]
    fn table_is_refused() {
        let (status, out, err) = run(&["config", "-o", "table"]);
        assert_eq!(status, 2, "{err}");
        assert_eq!(out, "");
        assert!(err.contains("-o table is not supported"), "{err}");
    }

    #[test]
    fn failure_prints_errors_on_stderr_only() {
        for format in ["json", "yaml"] {
            let (status, out, err) = run(&[
                "config",
                "/nonexistent/jaco-cli-test/jaco.yaml",
                "-o",
                format,
            ]);
            assert_eq!(status, 1);
            assert_eq!(out, "");
            assert!(err.starts_with("Error: "), "{err}");
        }
    }
}
