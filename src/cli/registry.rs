//! `jaco registry login|logout|list`: credentials the nodes use to pull images.
//!
//! Role: adapter between the command line and the daemon's `Registry` service. Contract: the
//! password comes from standard input with `--password-stdin` (one trailing newline removed)
//! or, without it, from a prompt that does not echo when standard input is a terminal; it is
//! never an argument, and an empty password is refused before anything is sent. Without
//! `--password-stdin` and without a terminal, login is a usage error (exit 2). `login` prints
//! the canonical prefix stored (`-o json`: `{"registry", "username", "rotated"}`), `logout` the
//! prefix removed (`{"registry", "removed"}`; an unknown prefix is `not_found`), `list` the
//! table `REGISTRY USERNAME UPDATED UPDATED_BY` (`-o json`: an array of those fields) and never
//! a secret. Credentials match images by the longest `host[:port][/namespace]` prefix.
//!
//! This module must not implement credential storage or prefix rules (the daemon
//! canonicalises), must not print or log a password, and must not print success for an
//! operation the daemon did not confirm.

use std::io::Read;

use clap::error::ErrorKind;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::args::ReadArgs;
use super::client::{self, Target};
use super::{Context, Failure, output, terminal, view};
use crate::error::{Code, Error};
use crate::proto::v1::{
    ListRegistryCredentialsRequest, RegistryCredentialInfo, RegistryLoginRequest,
    RegistryLogoutRequest,
};

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
        RegistryCommand::Login(login) => {
            let password = password(login, ctx)?;
            let target = Target::of(ctx)?;
            let request = RegistryLoginRequest {
                registry: login.registry.clone(),
                username: login.username.clone(),
                password,
            };
            let response = client::run(&target, |c| async move {
                Ok(c.registry().login(request).await?.into_inner())
            })?;
            let stored = Stored {
                registry: response.registry,
                username: response.username,
                rotated: response.rotated,
            };
            ctx.print(&stored, Stored::text)
        }
        RegistryCommand::Logout(logout) => {
            let target = Target::of(ctx)?;
            let request = RegistryLogoutRequest {
                registry: logout.registry.clone(),
            };
            let response = client::run(&target, |c| async move {
                Ok(c.registry().logout(request).await?.into_inner())
            })?;
            let removed = Removed {
                registry: response.registry,
                removed: response.removed,
            };
            ctx.print(&removed, |r| {
                format!(
                    "removed the credential for {}; nodes no longer use it for pulls\n",
                    r.registry
                )
            })
        }
        RegistryCommand::List(list) => {
            let target = Target::of(ctx)?;
            let request = ListRegistryCredentialsRequest {
                consistent: list.read.consistent,
            };
            let response = client::run(&target, |c| async move {
                Ok(c.registry().list(request).await?.into_inner())
            })?;
            let credentials: Vec<CredentialView> = response
                .credentials
                .iter()
                .map(CredentialView::from)
                .collect();
            ctx.print(&credentials, |c| credential_table(c))
        }
    }
}

/// The password of a login: all of standard input with `--password-stdin`, else a silent
/// prompt on a terminal; a usage error when neither is possible.
fn password(login: &LoginArgs, ctx: &mut Context<'_>) -> Result<String, Failure> {
    if login.password_stdin {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map_err(|e| {
            Error::new(
                Code::Internal,
                format!("cannot read the password from standard input: {e}"),
            )
            .with("reason", "stdin_unreadable")
        })?;
        return Ok(password_from_stdin(&bytes)?);
    }
    if !ctx.terminals.stdin {
        return Err(ctx.usage_error(
            ErrorKind::MissingRequiredArgument,
            "standard input is not a terminal, so jaco cannot prompt for the password: pipe it \
             with --password-stdin (e.g. printf '%s' \"$PASSWORD\" | jaco registry login … \
             --password-stdin)",
        ));
    }
    let prompt = format!("Password for {} at {}: ", login.username, login.registry);
    let typed = terminal::read_secret(&prompt, ctx.err).map_err(|e| {
        Error::new(
            Code::Internal,
            format!("cannot read the password from the terminal: {e}"),
        )
        .with("reason", "terminal_failed")
    })?;
    Ok(non_empty(typed, "the password typed is empty")?)
}

/// The password piped on standard input: UTF-8, one trailing newline removed, not empty.
pub fn password_from_stdin(bytes: &[u8]) -> Result<String, Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        Error::new(
            Code::ValidationFailed,
            "the password read from standard input is not UTF-8 text",
        )
        .with("field", "password")
    })?;
    non_empty(
        terminal::strip_line_ending(text).to_owned(),
        "the password read from standard input is empty",
    )
}

fn non_empty(password: String, message: &str) -> Result<String, Error> {
    if password.is_empty() {
        Err(Error::new(Code::ValidationFailed, message).with("field", "password"))
    } else {
        Ok(password)
    }
}

/// What `login` prints.
#[derive(Debug, Serialize)]
pub struct Stored {
    /// Canonical registry prefix stored.
    pub registry: String,
    /// User name.
    pub username: String,
    /// Whether an earlier credential for the prefix was replaced.
    pub rotated: bool,
}

impl Stored {
    fn text(&self) -> String {
        let replaced = if self.rotated {
            " (replacing the previous one)"
        } else {
            ""
        };
        format!(
            "stored the credential of {} for {}{replaced}; every node uses it for matching \
             pulls\n",
            self.username, self.registry
        )
    }
}

/// What `logout` prints.
#[derive(Debug, Serialize)]
pub struct Removed {
    /// Canonical registry prefix.
    pub registry: String,
    /// Always true (an unknown prefix is an error).
    pub removed: bool,
}

/// One credential of `list`: never the secret (the API does not return it).
#[derive(Debug, Serialize)]
pub struct CredentialView {
    /// Canonical registry prefix.
    pub registry: String,
    /// User name.
    pub username: String,
    /// RFC 3339 time it was created or rotated.
    pub updated_at: Option<String>,
    /// Identity that created or rotated it.
    pub updated_by: String,
}

impl From<&RegistryCredentialInfo> for CredentialView {
    fn from(info: &RegistryCredentialInfo) -> Self {
        CredentialView {
            registry: info.registry.clone(),
            username: info.username.clone(),
            updated_at: view::time(info.updated_at_unix_ms),
            updated_by: info.updated_by.clone(),
        }
    }
}

fn credential_table(credentials: &[CredentialView]) -> String {
    let rows: Vec<Vec<String>> = credentials
        .iter()
        .map(|c| {
            vec![
                c.registry.clone(),
                c.username.clone(),
                c.updated_at.clone().unwrap_or_else(|| "-".into()),
                c.updated_by.clone(),
            ]
        })
        .collect();
    output::table(&["REGISTRY", "USERNAME", "UPDATED", "UPDATED_BY"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::run as jaco;

    #[test]
    fn a_piped_password_loses_one_line_ending() {
        assert_eq!(password_from_stdin(b"s3cret\n").unwrap(), "s3cret");
        assert_eq!(password_from_stdin(b"s3cret\r\n").unwrap(), "s3cret");
        assert_eq!(password_from_stdin(b"s3cret").unwrap(), "s3cret");
        assert_eq!(password_from_stdin(b" spaced \n").unwrap(), " spaced ");
    }

    #[test]
    fn an_empty_or_binary_password_is_refused() {
        for bytes in [&b""[..], b"\n", b"\r\n", b"\xff\xfe"] {
            let error = password_from_stdin(bytes).expect_err("refused");
            assert_eq!(error.code, Code::ValidationFailed);
            assert_eq!(error.details["field"], "password");
        }
    }

    #[test]
    fn without_a_terminal_login_needs_password_stdin() {
        let (status, out, err) = jaco(&["registry", "login", "ghcr.io", "-u", "bot"]);
        assert_eq!(status, 2, "{err}");
        assert_eq!(out, "");
        assert!(err.contains("--password-stdin"), "{err}");
    }

    #[test]
    fn credentials_as_a_table_and_json() {
        let views = vec![CredentialView::from(&RegistryCredentialInfo {
            registry: "ghcr.io/acme".into(),
            username: "bot".into(),
            updated_at_unix_ms: 1_700_000_000_000,
            updated_by: "local".into(),
        })];
        assert_eq!(
            credential_table(&views),
            "REGISTRY      USERNAME  UPDATED               UPDATED_BY\n\
             ghcr.io/acme  bot       2023-11-14T22:13:20Z  local\n"
        );
        let json = output::render(&views, output::DataFormat::Json).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value,
            serde_json::json!([{
                "registry": "ghcr.io/acme",
                "username": "bot",
                "updated_at": "2023-11-14T22:13:20Z",
                "updated_by": "local"
            }])
        );
    }
}
