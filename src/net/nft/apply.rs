//! The I/O edge to `nft`: applies a rendered table as one atomic transaction and reads a table
//! back as JSON. Thin on purpose: what to apply comes from [`super::render`], what the
//! read-back means from [`super::check`]; this module only runs the command and reports
//! failures as `isolation_unavailable` (command, exit status, stderr in the details).

use super::FAILURE;
use super::render::{RulesetSpec, render};
use super::table::ObservedTable;
use crate::error::{Code, Error};
use crate::net::command;

/// How to run `nft`: an argv prefix to which the arguments are appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nft {
    command: Vec<String>,
}

impl Default for Nft {
    /// `nft` from `PATH`.
    fn default() -> Self {
        Nft::new(vec!["nft".to_owned()])
    }
}

impl Nft {
    /// Runs `nft` as `command` followed by its arguments, e.g. `["nft"]` or
    /// `["ip", "netns", "exec", "ns1", "nft"]`. A command that cannot be run surfaces as an
    /// error from each call, not here.
    pub fn new(command: Vec<String>) -> Nft {
        Nft { command }
    }

    /// Replaces table `inet <spec.table>` with the rendering of `spec` in one `nft -f -`
    /// transaction: either the whole new generation is in place afterwards or, on error,
    /// the previous one is untouched.
    pub async fn apply(&self, spec: &RulesetSpec) -> Result<(), Error> {
        let text = render(spec);
        command::checked(&self.command, &["-f", "-"], Some(&text), FAILURE).await?;
        Ok(())
    }

    /// Reads table `inet <table>` back (`nft -j list table inet <table>`); `None` when it does
    /// not exist.
    pub async fn read_back(&self, table: &str) -> Result<Option<ObservedTable>, Error> {
        let args = ["-j", "list", "table", "inet", table];
        let output = command::run(&self.command, &args, None, FAILURE).await?;
        if !output.status.success() {
            // nft reports an absent table as `Error: ` + strerror(ENOENT), exit status 1 (exec
            // runs it under LC_ALL=C). A wrapper that cannot find nft fails differently
            // (`ip netns exec` exits 255), so that is not mistaken for a missing table.
            let stderr = String::from_utf8_lossy(&output.stderr);
            if output.status.code() == Some(1)
                && stderr.starts_with("Error: No such file or directory")
            {
                return Ok(None);
            }
            return Err(command::failed(&self.command, &args, &output, FAILURE));
        }
        let observed = ObservedTable::from_json(&String::from_utf8_lossy(&output.stdout)).map_err(
            |reason| {
                Error::new(
                    Code::IsolationUnavailable,
                    format!("reading table inet {table} back: {reason}"),
                )
                .with(
                    "command",
                    format!("{} {}", self.command.join(" "), args.join(" ")),
                )
            },
        )?;
        Ok(Some(observed))
    }
}
