//! `jaco token issue|revoke|list`: operator tokens for remote access.
//!
//! Role: adapter between the command line and the daemon's `Tokens` service (Issue, Revoke,
//! List) through [`super::client`]. Contract: `issue` prints the new token once, on a line of
//! its own (64 hex characters; only its SHA-256 is stored; `-q` prints nothing else; `-o json`
//! → `{"name", "token", "issued_at", "allow_privileged"}`); `revoke` confirms with the time of
//! revocation, which is effective on every node within a second; `list` prints `NAME ISSUED
//! REVOKED PRIVILEGED ISSUED_BY` (`-o json`: an array of objects with those fields) and never
//! shows a token or its hash — the API does not return them.
//!
//! This module must not implement token logic and must not print success for an operation the
//! daemon did not confirm.

use clap::{Args, Subcommand};
use serde::Serialize;

use super::args::ReadArgs;
use super::client::{self, Target};
use super::output;
use super::view;
use super::{Context, Failure};
use crate::proto::v1::{
    IssueTokenRequest, IssueTokenResponse, ListTokensRequest, RevokeTokenRequest,
    RevokeTokenResponse, TokenInfo,
};

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
    let target = Target::of(ctx)?;
    match &args.command {
        TokenCommand::Issue(issue) => {
            let request = IssueTokenRequest {
                name: issue.name.clone(),
                allow_privileged: issue.allow_privileged,
            };
            let response = client::run(&target, |c| async move {
                Ok(c.tokens().issue(request).await?.into_inner())
            })?;
            let quiet = ctx.global.quiet;
            ctx.print(&IssuedToken::from(&response), |t| t.text(quiet))
        }
        TokenCommand::Revoke(revoke) => {
            let request = RevokeTokenRequest {
                name: revoke.name.clone(),
            };
            let response = client::run(&target, |c| async move {
                Ok(c.tokens().revoke(request).await?.into_inner())
            })?;
            ctx.print(&RevokedToken::from(&response), RevokedToken::text)
        }
        TokenCommand::List(list) => {
            let request = ListTokensRequest {
                consistent: list.read.consistent,
            };
            let response = client::run(&target, |c| async move {
                Ok(c.tokens().list(request).await?.into_inner())
            })?;
            let tokens: Vec<TokenView> = response.tokens.iter().map(TokenView::from).collect();
            ctx.print(&tokens, |tokens| token_table(tokens))
        }
    }
}

/// A newly issued token, as `token issue` prints it.
#[derive(Debug, Serialize)]
pub struct IssuedToken {
    /// Identity of the holder.
    pub name: String,
    /// The token itself, shown once.
    pub token: String,
    /// RFC 3339 time of issue.
    pub issued_at: Option<String>,
    /// Whether it may deploy privileged services.
    pub allow_privileged: bool,
}

impl From<&IssueTokenResponse> for IssuedToken {
    fn from(response: &IssueTokenResponse) -> Self {
        IssuedToken {
            name: response.name.clone(),
            token: response.token.clone(),
            issued_at: view::time(response.issued_at_unix_ms),
            allow_privileged: response.allow_privileged,
        }
    }
}

impl IssuedToken {
    /// The token on a line of its own, after a note unless `quiet`.
    fn text(&self, quiet: bool) -> String {
        if quiet {
            return format!("{}\n", self.token);
        }
        let privileged = if self.allow_privileged {
            ", allowed to deploy privileged services"
        } else {
            ""
        };
        format!(
            "Operator token for identity {:?}{privileged}. Save it now: it is shown once and \
             only its hash is kept.\n\n{}\n\nUse it with --token or JACO_TOKEN, together with \
             --server HOST:7000 and --ca-cert.\n",
            self.name, self.token
        )
    }
}

/// A revoked token, as `token revoke` prints it.
#[derive(Debug, Serialize)]
pub struct RevokedToken {
    /// Identity whose token was revoked.
    pub name: String,
    /// RFC 3339 time of revocation.
    pub revoked_at: Option<String>,
}

impl From<&RevokeTokenResponse> for RevokedToken {
    fn from(response: &RevokeTokenResponse) -> Self {
        RevokedToken {
            name: response.name.clone(),
            revoked_at: view::time(response.revoked_at_unix_ms),
        }
    }
}

impl RevokedToken {
    fn text(&self) -> String {
        format!(
            "revoked the token of {} at {}; every node refuses it within a second\n",
            self.name,
            self.revoked_at.as_deref().unwrap_or("-")
        )
    }
}

/// One token of `token list`: never the token or its hash.
#[derive(Debug, Serialize)]
pub struct TokenView {
    /// Identity name.
    pub name: String,
    /// RFC 3339 time of issue.
    pub issued_at: Option<String>,
    /// RFC 3339 time of revocation; `null` while active.
    pub revoked_at: Option<String>,
    /// Whether it may deploy privileged services.
    pub allow_privileged: bool,
    /// Identity that issued it.
    pub issued_by: String,
}

impl From<&TokenInfo> for TokenView {
    fn from(info: &TokenInfo) -> Self {
        TokenView {
            name: info.name.clone(),
            issued_at: view::time(info.issued_at_unix_ms),
            revoked_at: view::time(info.revoked_at_unix_ms),
            allow_privileged: info.allow_privileged,
            issued_by: info.issued_by.clone(),
        }
    }
}

fn token_table(tokens: &[TokenView]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.issued_at.clone().unwrap_or_else(|| "-".into()),
                t.revoked_at.clone().unwrap_or_else(|| "-".into()),
                if t.allow_privileged { "yes" } else { "no" }.to_owned(),
                t.issued_by.clone(),
            ]
        })
        .collect();
    output::table(
        &["NAME", "ISSUED", "REVOKED", "PRIVILEGED", "ISSUED_BY"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::{DataFormat, render};

    fn listed() -> Vec<TokenView> {
        [
            TokenInfo {
                name: "bootstrap".into(),
                issued_at_unix_ms: 1_700_000_000_000,
                revoked_at_unix_ms: 0,
                allow_privileged: true,
                issued_by: "local".into(),
            },
            TokenInfo {
                name: "ci".into(),
                issued_at_unix_ms: 1_700_000_060_000,
                revoked_at_unix_ms: 1_700_000_120_000,
                allow_privileged: false,
                issued_by: "bootstrap".into(),
            },
        ]
        .iter()
        .map(TokenView::from)
        .collect()
    }

    #[test]
    fn token_list_as_a_table() {
        assert_eq!(
            token_table(&listed()),
            "NAME       ISSUED                REVOKED               PRIVILEGED  ISSUED_BY\n\
             bootstrap  2023-11-14T22:13:20Z  -                     yes         local\n\
             ci         2023-11-14T22:14:20Z  2023-11-14T22:15:20Z  no          bootstrap\n"
        );
    }

    #[test]
    fn token_list_as_json_has_no_secret() {
        let json: serde_json::Value =
            serde_json::from_str(&render(&listed(), DataFormat::Json).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {
                    "name": "bootstrap",
                    "issued_at": "2023-11-14T22:13:20Z",
                    "revoked_at": null,
                    "allow_privileged": true,
                    "issued_by": "local"
                },
                {
                    "name": "ci",
                    "issued_at": "2023-11-14T22:14:20Z",
                    "revoked_at": "2023-11-14T22:15:20Z",
                    "allow_privileged": false,
                    "issued_by": "bootstrap"
                }
            ])
        );
    }

    #[test]
    fn an_issued_token_stands_on_a_line_of_its_own() {
        let token = "ab".repeat(32);
        let issued = IssuedToken::from(&IssueTokenResponse {
            name: "ci".into(),
            token: token.clone(),
            issued_at_unix_ms: 1_700_000_000_000,
            allow_privileged: false,
        });
        assert!(issued.text(false).lines().any(|line| line == token));
        assert!(issued.text(false).contains("shown once"));
        assert_eq!(issued.text(true), format!("{token}\n"));
        let json: serde_json::Value =
            serde_json::from_str(&render(&issued, DataFormat::Json).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "ci",
                "token": token,
                "issued_at": "2023-11-14T22:13:20Z",
                "allow_privileged": false
            })
        );
    }
}
