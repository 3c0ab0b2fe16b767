//! `jaco audit`: the cluster's append-only audit log.
//!
//! Role: adapter between the command line and the daemon's `Audit` service (Query, and Tail for
//! `--follow`). Contract: events are filtered by age and by type (the short names of the
//! audit-event closed set, e.g. `apply,node_join`); an unknown type name is refused naming the
//! offender; `-o json` prints an array (one object per line while following).
//!
//! This module must not own the audit-event type set (the state module does) and must not
//! print success for an operation it could not perform: in this build the handler returns
//! [`Context::needs_daemon`].

use std::time::Duration;

use clap::Args;

use super::args::{ReadArgs, parse_duration};
use super::{Context, Failure};

/// Arguments of `jaco audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only events from this last period, e.g. 30m, 24h, 7d
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Only events of these types, comma-separated (e.g. apply,token_revoke)
    #[arg(long = "type", value_name = "TYPE,...", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Keep printing new events as they are committed
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Runs `jaco audit`.
pub fn run(_args: &AuditArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    Err(ctx.needs_daemon())
}

#[cfg(test)]
mod tests {
    use crate::cli::{Command, parse};

    #[test]
    fn types_are_comma_separated() {
        let (cli, _) = parse([
            "jaco",
            "audit",
            "--type",
            "apply,node_join",
            "--since",
            "7d",
        ])
        .unwrap();
        let Command::Audit(args) = cli.command else {
            panic!("not audit")
        };
        assert_eq!(args.types, ["apply", "node_join"]);
        assert_eq!(args.since, Some(std::time::Duration::from_secs(7 * 86_400)));
    }
}
