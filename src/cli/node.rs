//! `jaco node list|remove|drain|issue-join-token`: the cluster's members.
//!
//! Role: adapter between the command line and the daemon's `Cluster` service (ListNodes,
//! RemoveNode, IssueJoinToken) through [`super::client`], and the one place that says how a
//! node is shown ([`NodeView`], [`node_table`]; `cluster status` uses both). Contract: `list`
//! prints `NAME ROLE STATUS ADDRESS REACHABILITY` (`-o json`: an array of node objects with
//! `name`, `role`, `status`, …); `issue-join-token` prints the single-use join token on a line
//! of its own and the command to run on the new node (`-o json` → `{"token", …}`); `remove`
//! drains the node first (replacement healthy before the old replica stops) unless `--force`,
//! and says whether the node is already gone; `drain` stops scheduling onto a node and moves
//! its replicas off (`--force`: without waiting for replacements; `--cancel`: schedulable
//! again), and says how many replicas move. The STATUS column shows `draining` or `drained`
//! while a drain record exists. This module must not implement membership or drain logic and
//! must not print success for an operation the daemon did not confirm.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::args::{ReadArgs, parse_duration};
use super::client::{self, Target};
use super::output;
use super::view::{self, enum_name};
use super::{Context, Failure};
use crate::proto::v1::{
    DrainNodeRequest, DrainNodeResponse, IssueJoinTokenRequest, IssueJoinTokenResponse,
    ListNodesRequest, Node, NodeStatus, RaftRole, Reachability, RemoveNodeRequest,
    RemoveNodeResponse,
};

/// Arguments of `jaco node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node command to run.
    #[command(subcommand)]
    pub command: NodeCommand,
}

/// The subcommands of `jaco node`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the cluster's nodes with status, raft role, address and reachability
    List(ListArgs),
    /// Remove a node from the cluster, draining its replicas first
    Remove(RemoveArgs),
    /// Move every replica off a node and stop scheduling onto it, keeping it a member
    Drain(DrainArgs),
    /// Issue a single-use join token (valid 24 h) for one node name and its addresses
    IssueJoinToken(IssueJoinTokenArgs),
}

/// Arguments of `jaco node list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco node remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Name of the node to remove
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Remove at once without draining (replicas are re-placed after the node is gone)
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `jaco node drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Name of the node to drain
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Remove its replicas at once instead of waiting for their replacements to run
    #[arg(long, conflicts_with = "cancel")]
    pub force: bool,
    /// Cancel the drain: the node receives replicas again
    #[arg(long)]
    pub cancel: bool,
}

/// Arguments of `jaco node issue-join-token`.
#[derive(Debug, Args)]
pub struct IssueJoinTokenArgs {
    /// Name the joining node will have; the token is valid for this node only
    #[arg(long, value_name = "NAME")]
    pub node_name: String,
    /// Extra DNS name or IP address for the node's certificate; repeat for several
    #[arg(long = "san", value_name = "DNS-OR-IP")]
    pub sans: Vec<String>,
    /// How long the token stays valid, e.g. 2h (default: 24h, the daemon's default)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
}

/// Runs `jaco node …`.
pub fn run(args: &NodeArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    match &args.command {
        NodeCommand::List(list) => {
            let target = Target::of(ctx)?;
            let request = ListNodesRequest {
                consistent: list.read.consistent,
            };
            let response = client::run(&target, |c| async move {
                Ok(c.cluster().list_nodes(request).await?.into_inner())
            })?;
            let nodes: Vec<NodeView> = response.nodes.iter().map(NodeView::from).collect();
            ctx.print(&nodes, |nodes| node_table(nodes))
        }
        NodeCommand::Remove(remove) => {
            let target = Target::of(ctx)?;
            let request = RemoveNodeRequest {
                node: remove.node.clone(),
                force: remove.force,
            };
            let response = client::run(&target, |c| async move {
                Ok(c.cluster().remove_node(request).await?.into_inner())
            })?;
            ctx.print(&RemovedNode::from(&response), RemovedNode::text)
        }
        NodeCommand::IssueJoinToken(issue) => {
            let target = Target::of(ctx)?;
            let request = IssueJoinTokenRequest {
                node_name: issue.node_name.clone(),
                sans: issue.sans.clone(),
                ttl_ms: issue
                    .ttl
                    .map_or(0, |ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            };
            let response = client::run(&target, |c| async move {
                Ok(c.cluster().issue_join_token(request).await?.into_inner())
            })?;
            let quiet = ctx.global.quiet;
            ctx.print(&JoinToken::from(&response), |t| t.text(quiet))
        }
        NodeCommand::Drain(drain) => {
            let target = Target::of(ctx)?;
            let request = DrainNodeRequest {
                node: drain.node.clone(),
                force: drain.force,
                cancel: drain.cancel,
            };
            let cancel = drain.cancel;
            let response = client::run(&target, |c| async move {
                Ok(c.cluster().drain_node(request).await?.into_inner())
            })?;
            let drained = DrainedNode::of(&response, cancel);
            ctx.print(&drained, DrainedNode::text)
        }
    }
}

/// A node as every command shows it.
#[derive(Debug, Serialize)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Raft role: `leader`, `follower`, `learner`, `candidate`.
    pub role: String,
    /// Scheduling status: `joining`, `ready`, `draining`, `drained`, `isolation_unavailable`,
    /// `drain_timeout`.
    pub status: String,
    /// Context for the status (reason, replica, …).
    pub status_details: BTreeMap<String, String>,
    /// Whether the leader hears the node: `reachable` or `unreachable`.
    pub reachability: String,
    /// The API address CLIs dial (`--server`).
    pub api_address: String,
    /// The address of node-to-node RPCs.
    pub raft_address: String,
    /// jaco version the node runs.
    pub version: String,
    /// Appliance image version (empty off the appliance).
    pub os_version: String,
    /// Appliance root slot the node booted (`a`, `b`; empty off the appliance).
    pub boot_slot: String,
    /// Whether the booted root is dm-verity protected.
    pub root_verity: bool,
    /// RFC 3339 time the node joined.
    pub joined_at: Option<String>,
    /// RFC 3339 time of the last heartbeat the leader recorded.
    pub last_heartbeat_at: Option<String>,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// DNS names and IPs of the node certificate.
    pub sans: Vec<String>,
}

impl From<&Node> for NodeView {
    fn from(node: &Node) -> Self {
        NodeView {
            name: node.name.clone(),
            role: enum_name::<RaftRole>(node.raft_role),
            status: status_of(node),
            status_details: node.status_details.clone().into_iter().collect(),
            reachability: enum_name::<Reachability>(node.reachability),
            api_address: node.api_address.clone(),
            raft_address: node.raft_address.clone(),
            version: node.version.clone(),
            os_version: node.os_version.clone(),
            boot_slot: node.boot_slot.clone(),
            root_verity: node.root_verity,
            joined_at: view::time(node.joined_at_unix_ms),
            last_heartbeat_at: view::time(node.last_heartbeat_unix_ms),
            labels: node.labels.clone().into_iter().collect(),
            sans: node.sans.clone(),
        }
    }
}

/// The scheduling status as shown: a ready node with a drain record is `draining` or `drained`.
fn status_of(node: &Node) -> String {
    match &node.drain {
        Some(drain) if node.status() == NodeStatus::Ready => {
            if drain.completed_at_unix_ms == 0 {
                "draining".to_owned()
            } else {
                "drained".to_owned()
            }
        }
        _ => enum_name::<NodeStatus>(node.status),
    }
}

/// The node table: `NAME ROLE STATUS ADDRESS REACHABILITY`.
pub fn node_table(nodes: &[NodeView]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.role.clone(),
                n.status.clone(),
                n.api_address.clone(),
                n.reachability.clone(),
            ]
        })
        .collect();
    output::table(
        &["NAME", "ROLE", "STATUS", "ADDRESS", "REACHABILITY"],
        &rows,
    )
}

/// The answer to `node remove`.
#[derive(Debug, Serialize)]
pub struct RemovedNode {
    /// Node name.
    pub node: String,
    /// True when the node is already gone; false while its drain runs.
    pub removed: bool,
    /// State revision of the committed request.
    pub revision: u64,
}

impl From<&RemoveNodeResponse> for RemovedNode {
    fn from(response: &RemoveNodeResponse) -> Self {
        RemovedNode {
            node: response.node.clone(),
            removed: response.removed,
            revision: response.revision,
        }
    }
}

impl RemovedNode {
    fn text(&self) -> String {
        if self.removed {
            format!("node {} removed from the cluster\n", self.node)
        } else {
            format!(
                "node {} is draining and leaves the cluster when its replicas have moved; \
                 follow it with `jaco node list`\n",
                self.node
            )
        }
    }
}

/// The answer to `node drain`.
#[derive(Debug, Serialize)]
pub struct DrainedNode {
    /// Node name.
    pub node: String,
    /// True when the drain was cancelled.
    pub cancelled: bool,
    /// Replicas that move off the node.
    pub replicas_to_move: u32,
    /// State revision of the committed request.
    pub revision: u64,
}

impl DrainedNode {
    fn of(response: &DrainNodeResponse, cancelled: bool) -> Self {
        DrainedNode {
            node: response.node.clone(),
            cancelled,
            replicas_to_move: response.replicas_to_move,
            revision: response.revision,
        }
    }

    fn text(&self) -> String {
        if self.cancelled {
            format!(
                "node {}: drain cancelled; it receives replicas again\n",
                self.node
            )
        } else {
            format!(
                "node {} is draining: {} replica(s) move elsewhere; follow it with `jaco node list`\n",
                self.node, self.replicas_to_move
            )
        }
    }
}

/// A newly issued join token, as `node issue-join-token` prints it.
#[derive(Debug, Serialize)]
pub struct JoinToken {
    /// The token itself, shown once.
    pub token: String,
    /// The only node name it admits.
    pub node_name: String,
    /// Extra names approved for the node certificate.
    pub sans: Vec<String>,
    /// RFC 3339 expiry time.
    pub expires_at: Option<String>,
    /// API addresses of current members, for `cluster join --peer`.
    pub peers: Vec<String>,
    /// The cluster CA certificate (PEM) to hand to the new node.
    pub ca_cert_pem: String,
}

impl From<&IssueJoinTokenResponse> for JoinToken {
    fn from(response: &IssueJoinTokenResponse) -> Self {
        JoinToken {
            token: response.token.clone(),
            node_name: response.node_name.clone(),
            sans: response.sans.clone(),
            expires_at: view::time(response.expires_at_unix_ms),
            peers: response.peers.clone(),
            ca_cert_pem: response.ca_cert_pem.clone(),
        }
    }
}

impl JoinToken {
    /// The token on a line of its own, then (unless `quiet`) the command to run on the new
    /// node.
    fn text(&self, quiet: bool) -> String {
        if quiet {
            return format!("{}\n", self.token);
        }
        let peers = if self.peers.is_empty() {
            " --peer HOST:7000".to_owned()
        } else {
            self.peers.iter().map(|p| format!(" --peer {p}")).collect()
        };
        format!(
            "Join token for node {name:?} (single use, expires {expires}):\n\n{token}\n\n\
             On {name}, with the cluster CA certificate saved as ca.crt (it is \
             <data_dir>/pki/ca.crt on any member; -o json includes it), run:\n\n  \
             JACO_TOKEN={token} jaco cluster join{peers} --ca-cert ca.crt\n",
            name = self.node_name,
            expires = self.expires_at.as_deref().unwrap_or("-"),
            token = self.token,
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cli::output::{DataFormat, render};

    /// A node as the daemon would send it.
    pub(crate) fn node(name: &str, role: RaftRole, reachability: Reachability) -> Node {
        Node {
            name: name.into(),
            raft_id: 1,
            api_address: format!("{name}:7000"),
            raft_address: format!("{name}:7000"),
            sans: vec![format!("{name}.lan")],
            status: NodeStatus::Ready as i32,
            raft_role: role as i32,
            reachability: reachability as i32,
            joined_at_unix_ms: 1_700_000_000_000,
            last_heartbeat_unix_ms: 0,
            version: "0.1.0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn nodes_as_a_table() {
        let nodes: Vec<NodeView> = [
            node("node-a", RaftRole::Leader, Reachability::Reachable),
            node("node-bb", RaftRole::Learner, Reachability::Unreachable),
        ]
        .iter()
        .map(NodeView::from)
        .collect();
        assert_eq!(
            node_table(&nodes),
            "NAME     ROLE     STATUS  ADDRESS       REACHABILITY\n\
             node-a   leader   ready   node-a:7000   reachable\n\
             node-bb  learner  ready   node-bb:7000  unreachable\n"
        );
    }

    #[test]
    fn a_node_as_json() {
        let view = NodeView::from(&node("node-a", RaftRole::Follower, Reachability::Reachable));
        let json: serde_json::Value =
            serde_json::from_str(&render(&[view], DataFormat::Json).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "name": "node-a",
                "role": "follower",
                "status": "ready",
                "status_details": {},
                "reachability": "reachable",
                "api_address": "node-a:7000",
                "raft_address": "node-a:7000",
                "version": "0.1.0",
                "os_version": "",
                "boot_slot": "",
                "root_verity": false,
                "joined_at": "2023-11-14T22:13:20Z",
                "last_heartbeat_at": null,
                "labels": {},
                "sans": ["node-a.lan"]
            }])
        );
    }

    #[test]
    fn a_join_token_stands_on_a_line_of_its_own_with_the_join_command() {
        let token = JoinToken::from(&IssueJoinTokenResponse {
            token: "jt-1.secret".into(),
            node_name: "node-c".into(),
            sans: vec![],
            expires_at_unix_ms: 1_700_000_000_000,
            ca_cert_pem: "PEM".into(),
            peers: vec!["10.0.0.5:7000".into(), "10.0.0.6:7000".into()],
        });
        let text = token.text(false);
        assert!(text.lines().any(|line| line == "jt-1.secret"), "{text}");
        assert!(
            text.contains(
                "JACO_TOKEN=jt-1.secret jaco cluster join --peer 10.0.0.5:7000 --peer \
                 10.0.0.6:7000 --ca-cert ca.crt\n"
            ),
            "{text}"
        );
        assert_eq!(token.text(true), "jt-1.secret\n");
        let json: serde_json::Value =
            serde_json::from_str(&render(&token, DataFormat::Json).unwrap()).unwrap();
        assert_eq!(json["token"], "jt-1.secret");
        assert_eq!(json["node_name"], "node-c");
        assert_eq!(json["expires_at"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn remove_says_whether_the_node_is_gone() {
        let gone = RemovedNode::from(&RemoveNodeResponse {
            node: "node-b".into(),
            removed: true,
            revision: 9,
        });
        assert_eq!(gone.text(), "node node-b removed from the cluster\n");
        let draining = RemovedNode {
            removed: false,
            ..gone
        };
        assert!(draining.text().starts_with("node node-b is draining"));
    }

    #[test]
    fn ttl_is_a_duration() {
        let (cli, _) = crate::cli::parse([
            "jaco",
            "node",
            "issue-join-token",
            "--node-name",
            "node-c",
            "--ttl",
            "2h",
        ])
        .unwrap();
        let crate::cli::Command::Node(NodeArgs {
            command: NodeCommand::IssueJoinToken(args),
        }) = cli.command
        else {
            panic!("not issue-join-token")
        };
        assert_eq!(args.ttl, Some(Duration::from_secs(7_200)));
    }
}
