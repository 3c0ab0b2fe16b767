//! Arguments shared by many commands: the global flags, `--consistent`, and the typed parsers
//! for `deployment[/service[/index]]` selectors, durations, `--since` and `HOST:PORT`
//! addresses.
//!
//! Role: parse at the edge, so that a malformed argument is a usage error (exit 2) before any
//! command runs, and handlers receive typed values. This module must not resolve names against
//! a cluster (whether a deployment exists is the daemon's answer) nor re-implement manifest
//! rules such as the deployment-name syntax: it checks shape only.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;

use super::output::OutputFormat;

/// The default path of the daemon's local control socket (SPEC §1.1).
pub const DEFAULT_SOCKET: &str = "/run/jaco/jaco.sock";

/// Flags accepted by every command (before or after the subcommand).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Talk to the jaco API at HOST:PORT over TLS instead of the local socket
    #[arg(long, global = true, value_name = "HOST:PORT", value_parser = parse_server)]
    pub server: Option<String>,

    /// Operator token sent as `authorization: Bearer` with --server (prefer JACO_TOKEN: argv is
    /// visible to other users of the machine); `cluster join` reads the join token from here
    #[arg(
        long,
        global = true,
        env = "JACO_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// Cluster CA certificate (PEM) that the server's certificate must chain to; `cluster join`
    /// verifies the peer with it
    #[arg(
        long,
        global = true,
        env = "JACO_CA_CERT",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub ca_cert: Option<PathBuf>,

    /// Name the server's certificate must carry, when it differs from the host of --server
    /// (a port forward, a NAT or a load balancer in front of the node: e.g. the node's name)
    #[arg(
        long,
        global = true,
        env = "JACO_TLS_SERVER_NAME",
        value_name = "NAME",
        requires = "server"
    )]
    pub tls_server_name: Option<String>,

    /// Path of the local daemon's control socket, used when --server is not given
    #[arg(
        long,
        global = true,
        env = "JACO_SOCKET",
        hide_env_values = true,
        default_value = DEFAULT_SOCKET,
        value_name = "PATH"
    )]
    pub socket: PathBuf,

    /// Output format: table (text for people), json or yaml (for scripts). Default: table,
    /// except `config` (yaml). A command that cannot produce the format fails with exit 2
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        value_name = "FORMAT"
    )]
    pub output: Option<OutputFormat>,

    /// Print only what was asked for: no warnings, hints or progress
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Print error details as key=value lines and more progress information
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

/// The `--consistent` flag of read commands.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct ReadArgs {
    /// Linearizable read: confirm with the raft leader that the answer includes every committed
    /// write (slower); by default the node answers from its local state
    #[arg(long)]
    pub consistent: bool,
}

/// Checks the shape of `HOST:PORT` (`[v6]:port` for IPv6 literals).
pub fn parse_server(text: &str) -> Result<String, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("expected HOST:PORT, got {text:?}"))?;
    if host.is_empty() || host == "[]" {
        return Err(format!(
            "expected HOST:PORT, got {text:?}: the host is empty"
        ));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "expected HOST:PORT, got {text:?}: write an IPv6 address in brackets, e.g. [::1]:7000"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(text.to_owned()),
        _ => Err(format!(
            "expected HOST:PORT, got {text:?}: {port:?} is not a port number (1-65535)"
        )),
    }
}

/// Parses a duration such as `90s`, `10m`, `2h`, `7d` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration such as 30s, 10m, 2h, 7d or 1h30m, got {text:?}");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let amount: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = amount
            .checked_mul(unit)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Where `--since` starts: a period before now, or a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before the serving node's now.
    Ago(Duration),
    /// At or after this time (Unix milliseconds).
    At(i64),
}

/// Parses `--since`: a duration as [`parse_duration`] reads it, or an RFC 3339 time such as
/// `2026-11-27T10:00:00Z`.
pub fn parse_since(text: &str) -> Result<Since, String> {
    if let Ok(period) = parse_duration(text) {
        return Ok(Since::Ago(period));
    }
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            format!(
                "expected a duration such as 10m or 1h30m, or an RFC 3339 time such as \
                 2026-11-27T10:00:00Z, got {text:?}"
            )
        })?;
    let millis = at.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(millis)
        .map(Since::At)
        .map_err(|_| format!("{text:?} is out of range"))
}

fn non_empty_parts(text: &str, min: usize, max: usize, shape: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = text.split('/').collect();
    if parts.len() < min || parts.len() > max || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("expected {shape}, got {text:?}"));
    }
    Ok(parts.into_iter().map(str::to_owned).collect())
}

/// `DEPLOYMENT` or `DEPLOYMENT/SERVICE` (for `jaco status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentSelector {
    /// The deployment name.
    pub deployment: String,
    /// One service of it, or all.
    pub service: Option<String>,
}

impl FromStr for DeploymentSelector {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts =
            non_empty_parts(text, 1, 2, "DEPLOYMENT or DEPLOYMENT/SERVICE")?.into_iter();
        Ok(DeploymentSelector {
            deployment: parts.next().unwrap_or_default(),
            service: parts.next(),
        })
    }
}

impl fmt::Display for DeploymentSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.service {
            Some(service) => write!(f, "{}/{service}", self.deployment),
            None => f.write_str(&self.deployment),
        }
    }
}

/// `DEPLOYMENT/SERVICE` or `DEPLOYMENT/SERVICE/INDEX` (for `jaco logs` and `jaco exec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSelector {
    /// The deployment name.
    pub deployment: String,
    /// The service name.
    pub service: String,
    /// The replica's index within the service; `None` lets jaco pick a running replica.
    pub index: Option<u32>,
}

impl FromStr for ReplicaSelector {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let shape = "DEPLOYMENT/SERVICE or DEPLOYMENT/SERVICE/INDEX";
        let mut parts = non_empty_parts(text, 2, 3, shape)?.into_iter();
        let deployment = parts.next().unwrap_or_default();
        let service = parts.next().unwrap_or_default();
        let index = match parts.next() {
            None => None,
            Some(index) => Some(index.parse::<u32>().map_err(|_| {
                format!("expected {shape}, got {text:?}: {index:?} is not a replica index")
            })?),
        };
        Ok(ReplicaSelector {
            deployment,
            service,
            index,
        })
    }
}

impl fmt::Display for ReplicaSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.deployment, self.service)?;
        if let Some(index) = self.index {
            write!(f, "/{index}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers() {
        assert_eq!(parse_server("node-a:7000"), Ok("node-a:7000".into()));
        assert_eq!(parse_server("10.0.0.5:7000"), Ok("10.0.0.5:7000".into()));
        assert_eq!(parse_server("[::1]:7000"), Ok("[::1]:7000".into()));
        for bad in [
            "node-a",
            ":7000",
            "node-a:",
            "node-a:0",
            "node-a:70000",
            "::1:7000",
            "[]:1",
        ] {
            assert!(parse_server(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "1.5h",
            "-5m",
            "h1",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn since_is_a_duration_or_a_time() {
        assert_eq!(parse_since("10m"), Ok(Since::Ago(Duration::from_secs(600))));
        assert_eq!(
            parse_since("2023-11-14T22:13:20Z"),
            Ok(Since::At(1_700_000_000_000))
        );
        assert_eq!(
            parse_since("2023-11-14T23:13:20.5+01:00"),
            Ok(Since::At(1_700_000_000_500))
        );
        for bad in ["yesterday", "2023-11-14", "10", ""] {
            assert!(parse_since(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn deployment_selectors() {
        let all: DeploymentSelector = "shop".parse().unwrap();
        assert_eq!(all.deployment, "shop");
        assert_eq!(all.service, None);
        let one: DeploymentSelector = "shop/web".parse().unwrap();
        assert_eq!(one.service.as_deref(), Some("web"));
        assert_eq!(one.to_string(), "shop/web");
        for bad in ["", "/", "shop/", "/web", "shop/web/1"] {
            assert!(bad.parse::<DeploymentSelector>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn replica_selectors() {
        let any: ReplicaSelector = "shop/web".parse().unwrap();
        assert_eq!(any.index, None);
        let third: ReplicaSelector = "shop/web/3".parse().unwrap();
        assert_eq!(third.index, Some(3));
        assert_eq!(third.to_string(), "shop/web/3");
        for bad in [
            "shop",
            "shop/web/x",
            "shop/web/-1",
            "shop/web/1/2",
            "shop//1",
        ] {
            assert!(bad.parse::<ReplicaSelector>().is_err(), "{bad} accepted");
        }
    }
}
