//! `jaco validate [JACO_YAML] [--compose FILE]`: check a deployment offline.
//!
//! Role: call the manifest library (`crate::manifest::load`) on the files of this machine and
//! report. Contract (scripts rely on it): valid → warnings on stderr as `Warning: …` (unless
//! `-q`), a one-line summary on stdout (`valid: deployment shop, 3 services, 2 routes`), exit
//! 0; invalid → every problem as `Error: <code>: <message>` on stderr (details with `-v`),
//! exit 1. With `-o json` stdout is exactly a JSON array of `{"code", "message", "details"}`
//! envelopes (`[]` when valid) and the exit status is non-zero iff it is not empty; `-o yaml`
//! prints the same array as YAML.
//!
//! This module must not implement or duplicate any manifest rule: what is valid is the
//! manifest library's answer, reported unchanged.

use std::path::{Path, PathBuf};

use clap::Args;

use super::output::{self, DataFormat};
use super::{Context, Failure};
use crate::error::{Code, Error};
use crate::manifest::{self, Resolved};

/// Arguments of `jaco validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The deployment's jaco.yaml
    #[arg(value_name = "JACO_YAML", default_value = "jaco.yaml")]
    pub file: PathBuf,
    /// Compose file to use instead of the one jaco.yaml names or the one found next to it
    #[arg(long, value_name = "FILE")]
    pub compose: Option<PathBuf>,
}

/// Runs `jaco validate`.
pub fn run(args: &ValidateArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let resolved = match load(&args.file, args.compose.as_deref()) {
        Ok(resolved) => resolved,
        Err(errors) => {
            return Err(match DataFormat::of(ctx.format) {
                None => Failure::Errors(errors),
                Some(format) => {
                    ctx.out
                        .write_all(output::render(&errors, format)?.as_bytes())?;
                    Failure::Reported
                }
            });
        }
    };
    print_warnings(&resolved, ctx)?;
    match DataFormat::of(ctx.format) {
        None => writeln!(
            ctx.out,
            "{}",
            summary(
                resolved.deployment_name(),
                resolved.services.len(),
                resolved.route_count()
            )
        )?,
        Some(format) => {
            let no_problems: [Error; 0] = [];
            ctx.out
                .write_all(output::render(&no_problems[..], format)?.as_bytes())?;
        }
    }
    Ok(())
}

/// Resolves a deployment from the real filesystem. Never returns `Err` with an empty list: a
/// failure always names at least one problem.
pub(crate) fn load(file: &Path, compose: Option<&Path>) -> Result<Resolved, Vec<Error>> {
    load_documents(file, compose).map(|(resolved, _)| resolved)
}

/// [`load`], also returning the documents `jaco apply` sends.
pub(crate) fn load_documents(
    file: &Path,
    compose: Option<&Path>,
) -> Result<(Resolved, manifest::Documents), Vec<Error>> {
    manifest::load_documents(&manifest::Filesystem, file, compose).map_err(|errors| {
        if errors.is_empty() {
            vec![
                Error::new(
                    Code::Internal,
                    format!(
                        "the manifest loader rejected {} without naming a problem",
                        file.display()
                    ),
                )
                .with("reason", "empty_error_list"),
            ]
        } else {
            errors
        }
    })
}

/// Prints the resolver's warnings on stderr (unless `--quiet`).
pub(crate) fn print_warnings(resolved: &Resolved, ctx: &mut Context<'_>) -> std::io::Result<()> {
    for warning in &resolved.warnings {
        ctx.warn(warning)?;
    }
    Ok(())
}

/// The one-line summary of a valid deployment.
pub fn summary(deployment: &str, services: usize, routes: usize) -> String {
    format!(
        "valid: deployment {deployment}, {}, {}",
        count(services, "service", "services"),
        count(routes, "route", "routes")
    )
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::run;

    #[test]
    fn summaries() {
        assert_eq!(
            summary("shop", 3, 2),
            "valid: deployment shop, 3 services, 2 routes"
        );
        assert_eq!(
            summary("one", 1, 1),
            "valid: deployment one, 1 service, 1 route"
        );
        assert_eq!(
            summary("none", 0, 0),
            "valid: deployment none, 0 services, 0 routes"
        );
    }

    #[test]
    fn a_missing_file_is_an_error_in_every_format() {
        let missing = "/nonexistent/jaco-cli-test/jaco.yaml";
        let (status, out, err) = run(&["validate", missing]);
        assert_eq!(status, 1);
        assert_eq!(out, "");
        assert!(err.starts_with("Error: "), "{err}");

        let (status, out, _) = run(&["validate", missing, "-o", "json"]);
        assert_eq!(status, 1);
        let problems: Vec<Error> = serde_json::from_str(&out).unwrap();
        assert!(!problems.is_empty());

        let (status, out, _) = run(&["validate", missing, "-o", "yaml"]);
        assert_eq!(status, 1);
        assert!(out.starts_with("- code: "), "{out}");
    }
}
