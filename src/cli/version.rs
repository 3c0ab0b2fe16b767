//! `jaco version`: the version of this binary.
//!
//! Role: print `CARGO_PKG_VERSION` bare (table), or as `{"version": …}` with `-o json` /
//! `-o yaml`. It must not contact a daemon (the daemons' versions belong to `cluster status`).

use clap::Args;
use serde::Serialize;

use super::output::{self, DataFormat};
use super::{Context, Failure};

/// Arguments of `jaco version`.
#[derive(Debug, Args)]
pub struct VersionArgs {}

/// The machine-readable form of `jaco version`.
#[derive(Debug, Serialize)]
pub struct Version {
    /// The crate version, e.g. `0.1.0`.
    pub version: &'static str,
}

/// This binary's version.
pub const VERSION: Version = Version {
    version: env!("CARGO_PKG_VERSION"),
};

/// Runs `jaco version`.
pub fn run(_args: &VersionArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    match DataFormat::of(ctx.format) {
        None => writeln!(ctx.out, "{}", VERSION.version)?,
        Some(format) => ctx
            .out
            .write_all(output::render(&VERSION, format)?.as_bytes())?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cli::tests::run;

    #[test]
    fn bare_json_and_yaml() {
        let v = env!("CARGO_PKG_VERSION");
        assert_eq!(run(&["version"]), (0, format!("{v}\n"), String::new()));
        assert_eq!(
            run(&["version", "-o", "json"]).1,
            format!("{{\n  \"version\": \"{v}\"\n}}\n")
        );
        assert_eq!(
            run(&["version", "-o", "yaml"]).1,
            format!("version: \"{v}\"\n")
        );
    }
}
