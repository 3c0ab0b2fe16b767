//! `jaco cluster init|join|status|seed|bootstrap`: create a cluster on this node, join one, show
//! its health (seed and bootstrap, the unattended first boot, live in [`super::bootstrap`]).
//!
//! Role: adapter between the command line and the daemon's `Cluster` service (Init, Join,
//! Status) through [`super::client`]. Contract: `cluster init` prints the bootstrap operator
//! token on a line of its own (`-q`: nothing else; `-o json` → `{"cluster_id", "token", …}`);
//! `cluster join` reads the `--ca-cert` file and sends it with the join token (`--token`) and
//! the peers to the **local** daemon over the socket, which verifies the peer against the CA
//! before it sends the token; `cluster status` prints a header block and the node table
//! (`-o json`: `cluster_id`, `cluster_name`, `initialized`, `node`, `version`, `leader`,
//! `term`, `committed_index`, `applied_index` and `nodes[]` shaped like `node list`).
//!
//! This module must not implement cluster logic (PKI, raft, membership) and must not print
//! success for an operation the daemon did not confirm.

use clap::error::ErrorKind;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::args::{ReadArgs, parse_server};
use super::client::{self, Target};
use super::node::{NodeView, node_table};
use super::{Context, Failure};
use crate::proto::v1::{
    ClusterStatusRequest, ClusterStatusResponse, InitRequest, InitResponse, JoinRequest,
    JoinResponse,
};

/// Arguments of `jaco cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The cluster command to run.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The subcommands of `jaco cluster`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Initialise a new cluster on the local daemon: create the cluster CA, make this node the
    /// single voter and print the bootstrap operator token (shown once; save it)
    Init(InitArgs),
    /// Join this node to an existing cluster through one of its members; the join token comes
    /// from --token (or JACO_TOKEN) and the cluster CA certificate from --ca-cert
    Join(JoinArgs),
    /// Show the cluster: id, leader, raft term and index, and every node with its role
    Status(StatusArgs),
    /// Write a new cluster's CA and operator token, and the first node's bootstrap file and
    /// cloud-init user-data, so that an unattended first boot initialises it (offline)
    Seed(super::bootstrap::SeedArgs),
    /// Initialise or join from a bootstrap file (written by cloud-init), retrying until this
    /// node is a member; a node that already is one succeeds at once
    Bootstrap(super::bootstrap::BootstrapArgs),
}

/// Arguments of `jaco cluster init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// A human name for the cluster, shown by `cluster status` (default: none)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// Arguments of `jaco cluster join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Address of a cluster member to join through (HOST:PORT, usually port 7000); repeat to
    /// try several members in turn
    #[arg(long, required = true, value_name = "HOST:PORT", value_parser = parse_server)]
    pub peer: Vec<String>,
}

/// Arguments of `jaco cluster status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Runs `jaco cluster …`.
pub fn run(args: &ClusterArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    match &args.command {
        ClusterCommand::Init(init) => {
            let target = Target::of(ctx)?;
            let request = InitRequest {
                cluster_name: init.name.clone().unwrap_or_default(),
                ..Default::default()
            };
            let response = client::run(&target, |c| async move {
                Ok(c.cluster().init(request).await?.into_inner())
            })?;
            let quiet = ctx.global.quiet;
            ctx.print(&Initialized::from(&response), |i| i.text(quiet))
        }
        ClusterCommand::Join(join) => {
            let request = join_request(join, ctx)?;
            let target = Target::Socket(ctx.global.socket.clone());
            let response = client::run(&target, |c| async move {
                Ok(c.cluster().join(request).await?.into_inner())
            })?;
            ctx.print(&Joined::from(&response), Joined::text)
        }
        ClusterCommand::Status(status) => {
            let target = Target::of(ctx)?;
            let request = ClusterStatusRequest {
                consistent: status.read.consistent,
            };
            let response = client::run(&target, |c| async move {
                Ok(c.cluster().status(request).await?.into_inner())
            })?;
            ctx.print(&ClusterStatus::from(&response), ClusterStatus::text)
        }
        ClusterCommand::Seed(seed) => super::bootstrap::seed(seed, ctx),
        ClusterCommand::Bootstrap(bootstrap) => super::bootstrap::bootstrap(bootstrap, ctx),
    }
}

/// The Join request from the flags: the join token, the CA file's content and the peers.
fn join_request(join: &JoinArgs, ctx: &Context<'_>) -> Result<JoinRequest, Failure> {
    if ctx.global.server.is_some() {
        return Err(ctx.usage_error(
            ErrorKind::ArgumentConflict,
            "`jaco cluster join` runs on the joining node and talks to its local daemon: drop \
             --server and name the members to join through with --peer",
        ));
    }
    let Some(token) = &ctx.global.token else {
        return Err(ctx.usage_error(
            ErrorKind::MissingRequiredArgument,
            "`jaco cluster join` needs the join token: set JACO_TOKEN or pass --token \
             (issued by `jaco node issue-join-token`)",
        ));
    };
    let Some(ca_cert) = &ctx.global.ca_cert else {
        return Err(ctx.usage_error(
            ErrorKind::MissingRequiredArgument,
            "`jaco cluster join` needs the cluster CA certificate to verify the peer: \
             pass --ca-cert FILE or set JACO_CA_CERT",
        ));
    };
    Ok(JoinRequest {
        peers: join.peer.clone(),
        join_token: token.clone(),
        ca_cert_pem: client::read_ca_cert(ca_cert)?,
    })
}

/// The answer to `cluster init`.
#[derive(Debug, Serialize)]
pub struct Initialized {
    /// The new cluster's id.
    pub cluster_id: String,
    /// The bootstrap operator token, shown once.
    pub token: String,
    /// This node's name.
    pub node: String,
    /// The identity of the token (`bootstrap`).
    pub token_name: String,
    /// The cluster CA certificate, PEM (for `--ca-cert`).
    pub ca_cert_pem: String,
}

impl From<&InitResponse> for Initialized {
    fn from(response: &InitResponse) -> Self {
        Initialized {
            cluster_id: response.cluster_id.clone(),
            token: response.token.clone(),
            node: response.node_name.clone(),
            token_name: response.token_name.clone(),
            ca_cert_pem: response.ca_cert_pem.clone(),
        }
    }
}

impl Initialized {
    /// A short note with the token on a line of its own; only the token when `quiet`.
    fn text(&self, quiet: bool) -> String {
        if quiet {
            return format!("{}\n", self.token);
        }
        format!(
            "Initialised cluster {cluster} on node {node}, its single voter.\n\n\
             Operator token of identity {name:?}; save it now: it is shown once and only its \
             hash is kept.\n\n{token}\n\n\
             The cluster CA certificate is <data_dir>/pki/ca.crt on every node \
             (/var/lib/jaco/pki/ca.crt by default): remote commands need it as --ca-cert, with \
             --server set to the address in the node's `advertise` (port 7000 by default) and this token.\n",
            cluster = self.cluster_id,
            node = self.node,
            name = self.token_name,
            token = self.token,
        )
    }
}

/// The answer to `cluster join`.
#[derive(Debug, Serialize)]
pub struct Joined {
    /// The cluster joined.
    pub cluster_id: String,
    /// This node's name.
    pub node: String,
    /// The leader's name.
    pub leader: String,
}

impl From<&JoinResponse> for Joined {
    fn from(response: &JoinResponse) -> Self {
        Joined {
            cluster_id: response.cluster_id.clone(),
            node: response.node_name.clone(),
            leader: response.leader.clone(),
        }
    }
}

impl Joined {
    fn text(&self) -> String {
        format!(
            "node {} joined cluster {} (leader: {}); it is a learner until it has caught up\n",
            self.node, self.cluster_id, self.leader
        )
    }
}

/// The answer to `cluster status`.
#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    /// Cluster id (empty before init/join).
    pub cluster_id: String,
    /// Cluster name.
    pub cluster_name: String,
    /// Whether the answering node belongs to a cluster.
    pub initialized: bool,
    /// The node that answered.
    pub node: String,
    /// jaco version of the node that answered.
    pub version: String,
    /// The leader's name; empty during an election.
    pub leader: String,
    /// Current raft term.
    pub term: u64,
    /// Last committed raft index known to the answering node.
    pub committed_index: u64,
    /// Last raft index applied on the answering node.
    pub applied_index: u64,
    /// Every member.
    pub nodes: Vec<NodeView>,
}

impl From<&ClusterStatusResponse> for ClusterStatus {
    fn from(response: &ClusterStatusResponse) -> Self {
        ClusterStatus {
            cluster_id: response.cluster_id.clone(),
            cluster_name: response.cluster_name.clone(),
            initialized: response.initialized,
            node: response.node_name.clone(),
            version: response.version.clone(),
            leader: response.leader.clone(),
            term: response.term,
            committed_index: response.committed_index,
            applied_index: response.applied_index,
            nodes: response.nodes.iter().map(NodeView::from).collect(),
        }
    }
}

impl ClusterStatus {
    /// The header block, a blank line and the node table.
    fn text(&self) -> String {
        let answered_by = match (self.node.as_str(), self.version.as_str()) {
            ("", "") => "this node".to_owned(),
            ("", version) => format!("this node (jaco {version})"),
            (node, "") => node.to_owned(),
            (node, version) => format!("{node} (jaco {version})"),
        };
        if !self.initialized {
            return format!(
                "{answered_by} is not part of a cluster yet: create one with `jaco cluster \
                 init` or join one with `jaco cluster join`\n"
            );
        }
        let cluster = if self.cluster_name.is_empty() {
            self.cluster_id.clone()
        } else {
            format!("{} ({})", self.cluster_id, self.cluster_name)
        };
        let leader = if self.leader.is_empty() {
            "none (election in progress)"
        } else {
            &self.leader
        };
        format!(
            "cluster   {cluster}\n\
             leader    {leader}\n\
             raft      term {}, committed index {}, applied index {}\n\
             answered  {answered_by}\n\n{}",
            self.term,
            self.committed_index,
            self.applied_index,
            node_table(&self.nodes),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::node::tests::node;
    use crate::cli::output::{DataFormat, render};
    use crate::cli::tests::run;
    use crate::proto::v1::{RaftRole, Reachability};

    fn status() -> ClusterStatusResponse {
        ClusterStatusResponse {
            initialized: true,
            cluster_id: "c-42".into(),
            cluster_name: "prod".into(),
            node_name: "node-b".into(),
            leader: "node-a".into(),
            term: 3,
            committed_index: 120,
            applied_index: 119,
            nodes: vec![
                node("node-a", RaftRole::Leader, Reachability::Reachable),
                node("node-b", RaftRole::Follower, Reachability::Reachable),
            ],
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn status_as_a_table() {
        assert_eq!(
            ClusterStatus::from(&status()).text(),
            "cluster   c-42 (prod)\n\
             leader    node-a\n\
             raft      term 3, committed index 120, applied index 119\n\
             answered  node-b (jaco 0.1.0)\n\
             \n\
             NAME    ROLE      STATUS  ADDRESS      REACHABILITY\n\
             node-a  leader    ready   node-a:7000  reachable\n\
             node-b  follower  ready   node-b:7000  reachable\n"
        );
        let uninitialized = ClusterStatusResponse {
            initialized: false,
            version: "0.1.0".into(),
            ..Default::default()
        };
        assert!(
            ClusterStatus::from(&uninitialized)
                .text()
                .starts_with("this node (jaco 0.1.0) is not part of a cluster yet"),
        );
    }

    #[test]
    fn status_as_json() {
        let json: serde_json::Value = serde_json::from_str(
            &render(&ClusterStatus::from(&status()), DataFormat::Json).unwrap(),
        )
        .unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "cluster_id",
                "cluster_name",
                "initialized",
                "node",
                "version",
                "leader",
                "term",
                "committed_index",
                "applied_index",
                "nodes"
            ]
        );
        assert_eq!(json["leader"], "node-a");
        assert_eq!(json["node"], "node-b");
        assert_eq!(json["term"], 3);
        assert_eq!(json["applied_index"], 119);
        assert_eq!(json["nodes"][0]["name"], "node-a");
        assert_eq!(json["nodes"][0]["role"], "leader");
        assert_eq!(json["nodes"][1]["role"], "follower");
        assert_eq!(json["nodes"][1]["status"], "ready");
    }

    #[test]
    fn init_prints_the_token_on_a_line_of_its_own() {
        let token = "0f".repeat(32);
        let initialized = Initialized::from(&InitResponse {
            cluster_id: "c-42".into(),
            node_name: "node-a".into(),
            token_name: "bootstrap".into(),
            token: token.clone(),
            ca_cert_pem: "PEM".into(),
        });
        let text = initialized.text(false);
        assert!(text.lines().any(|line| line == token), "{text}");
        assert!(text.contains("cluster c-42 on node node-a"), "{text}");
        assert!(text.contains("shown once"), "{text}");
        assert!(text.contains("pki/ca.crt"), "{text}");
        assert_eq!(initialized.text(true), format!("{token}\n"));
        let json: serde_json::Value =
            serde_json::from_str(&render(&initialized, DataFormat::Json).unwrap()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys[..2], ["cluster_id", "token"]);
        assert_eq!(json["cluster_id"], "c-42");
        assert_eq!(json["token"], token.as_str());
    }

    #[test]
    fn join_without_token_or_ca_is_a_usage_error() {
        // JACO_CA_CERT in the test's environment would supply the CA; skip that case then.
        let (status, _, err) = run(&["cluster", "join", "--peer", "n1:7000", "--token", "t"]);
        if std::env::var_os("JACO_CA_CERT").is_none() {
            assert_eq!(status, 2, "{err}");
            assert!(err.contains("--ca-cert"), "{err}");
        }
        let (status, _, err) = run(&[
            "cluster",
            "join",
            "--peer",
            "n1:7000",
            "--token",
            "t",
            "--ca-cert",
            "/nonexistent/ca.crt",
        ]);
        assert_eq!(status, 1, "{err}");
        assert!(
            err.starts_with("Error: validation_failed: cannot read the CA certificate"),
            "{err}"
        );
    }

    #[test]
    fn join_talks_to_the_local_daemon_only() {
        let (status, _, err) = run(&[
            "cluster",
            "join",
            "--peer",
            "n1:7000",
            "--token",
            "t",
            "--ca-cert",
            "/ca.crt",
            "--server",
            "n1:7000",
        ]);
        assert_eq!(status, 2, "{err}");
        assert!(err.contains("drop --server"), "{err}");
    }

    #[test]
    fn join_needs_a_peer() {
        let (status, _, err) = run(&["cluster", "join"]);
        assert_eq!(status, 2, "{err}");
        assert!(err.contains("--peer"), "{err}");
    }
}
