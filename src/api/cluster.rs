//! The `Cluster` gRPC service: init, join, status, join tokens, node removal, node list and
//! backup.
//!
//! Handlers check who may call, turn requests into commands or reads and format replies; init,
//! join and admission live in [`crate::daemon::lifecycle`], every rule about tokens and nodes in
//! the state machine. This module must not change state except by submitting commands.

use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use tonic::{Request, Response, Status};

use super::context::{ApiContext, caller, require_local};
use crate::daemon::lifecycle;
use crate::daemon::member::Member;
use crate::error::{Code, Error};
use crate::pki::tokens::issue_join_token;
use crate::pki::{cert_fingerprint, hex, now_unix_ms};
use crate::proto::v1 as pb;
use crate::proto::v1::cluster_server::Cluster;
use crate::proto::v1::command::Kind;
use crate::raft::RaftMetrics;

/// Size of the data chunks of a backup stream.
pub const BACKUP_CHUNK_BYTES: usize = 1024 * 1024;

/// Version of the backup stream's header.
pub const BACKUP_FORMAT_VERSION: u32 = 1;

/// The `Cluster` service.
pub struct ClusterService {
    context: Arc<ApiContext>,
}

impl ClusterService {
    /// The service over the shared API context.
    pub fn new(context: Arc<ApiContext>) -> Self {
        ClusterService { context }
    }
}

type Stream<T> =
    std::pin::Pin<Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// The raft role of node `raft_id` as this node's raft sees it now (the node table records the
/// role only at join).
pub fn live_role(metrics: &RaftMetrics, raft_id: u64) -> Option<pb::RaftRole> {
    let membership = metrics.membership_config.membership();
    if metrics.current_leader == Some(raft_id) {
        Some(pb::RaftRole::Leader)
    } else if raft_id == metrics.id && metrics.state == openraft::ServerState::Candidate {
        Some(pb::RaftRole::Candidate)
    } else if membership.voter_ids().any(|id| id == raft_id) {
        Some(pb::RaftRole::Follower)
    } else if membership.learner_ids().any(|id| id == raft_id) {
        Some(pb::RaftRole::Learner)
    } else {
        None
    }
}

/// The node table with live raft roles.
pub fn nodes_now(member: &Member) -> (Vec<pb::Node>, u64) {
    let metrics = member.metrics();
    let (mut nodes, revision) =
        member.read(|state| (state.nodes().cloned().collect::<Vec<_>>(), state.revision()));
    for node in &mut nodes {
        if let Some(role) = live_role(&metrics, node.raft_id) {
            node.set_raft_role(role);
        }
    }
    (nodes, revision)
}

/// How many desired replicas `node` holds.
fn replicas_on(state: &crate::state::State, node: &str) -> u32 {
    let count = state.replicas_desired().filter(|r| r.node == node).count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// The command that starts draining `node` (request time and identity are the command's).
fn drain_command(node: &str, force: bool, remove: bool) -> Kind {
    Kind::SetNodeDrain(pb::SetNodeDrain {
        node: node.to_owned(),
        drain: Some(pb::NodeDrain {
            force,
            remove,
            ..Default::default()
        }),
    })
}

fn leader_name(metrics: &RaftMetrics) -> String {
    crate::raft::leader_of(metrics)
        .map(|node| node.name)
        .unwrap_or_default()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn init(
        &self,
        request: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        let identity = caller(&request)?;
        require_local(&identity, "`cluster init`")?;
        let _serial = self.context.lifecycle().await;
        if let Some(member) = self.context.try_member() {
            let cluster_id = member
                .read(|s| s.cluster_meta().map(|m| m.cluster_id.clone()))
                .unwrap_or_default();
            return Err(Error::new(
                Code::ClusterAlreadyInitialized,
                "this node is already a member of a cluster",
            )
            .with("cluster_id", cluster_id)
            .with("node", &member.name)
            .into());
        }
        let seed = lifecycle::InitSeed::from_request(request.get_ref())?;
        let (member, reply) = lifecycle::init(
            &self.context.settings,
            &request.get_ref().cluster_name,
            seed,
            &self.context.cluster_defaults,
            self.context.metrics.clone(),
        )
        .await?;
        tracing::info!(cluster_id = %reply.cluster_id, "cluster initialised");
        self.context.became_member(member);
        Ok(Response::new(reply))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let identity = caller(&request)?;
        require_local(&identity, "`cluster join`")?;
        let _serial = self.context.lifecycle().await;
        if let Some(member) = self.context.try_member() {
            return Err(Error::new(
                Code::NodeAlreadyMember,
                format!("node {} is already a member of a cluster", member.name),
            )
            .with("node", &member.name)
            .into());
        }
        let request = request.into_inner();
        let reply = lifecycle::join(
            &self.context.settings,
            &request.peers,
            &request.join_token,
            &request.ca_cert_pem,
            self.context.metrics.clone(),
            |member| self.context.became_member(member),
        )
        .await?;
        tracing::info!(cluster_id = %reply.cluster_id, leader = %reply.leader, "joined the cluster");
        Ok(Response::new(reply))
    }

    async fn status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        caller(&request)?;
        let version = env!("CARGO_PKG_VERSION").to_owned();
        let Some(member) = self.context.try_member() else {
            return Ok(Response::new(pb::ClusterStatusResponse {
                initialized: false,
                node_name: self.context.settings.name.clone(),
                version,
                ..Default::default()
            }));
        };
        member.read_barrier(request.get_ref().consistent).await?;
        let metrics = member.metrics();
        let (nodes, _) = nodes_now(&member);
        let (meta, applied) = member.read(|s| (s.cluster_meta().cloned(), s.last_applied_index()));
        let meta = meta.unwrap_or_default();
        Ok(Response::new(pb::ClusterStatusResponse {
            initialized: !meta.cluster_id.is_empty(),
            cluster_id: meta.cluster_id,
            cluster_name: meta.name,
            node_name: member.name.clone(),
            leader: leader_name(&metrics),
            term: metrics.current_term,
            // openraft 0.9 does not export the commit index; what this node applied is
            // committed, and on a healthy node equal to it.
            committed_index: applied,
            applied_index: applied,
            nodes,
            version,
        }))
    }

    async fn issue_join_token(
        &self,
        request: Request<pb::IssueJoinTokenRequest>,
    ) -> Result<Response<pb::IssueJoinTokenResponse>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        let (meta, member_exists, peers) = member.read(|s| {
            (
                s.cluster_meta().cloned(),
                s.node(&request.node_name).is_some(),
                s.nodes().map(|n| n.api_address.clone()).collect::<Vec<_>>(),
            )
        });
        let meta = meta.ok_or_else(|| Error::new(Code::ClusterUninitialized, "no cluster"))?;
        if member_exists {
            return Err(Error::new(
                Code::NodeAlreadyMember,
                format!("node {} is already a member", request.node_name),
            )
            .with("node", &request.node_name)
            .into());
        }
        let pin = cert_fingerprint(&meta.ca_cert_pem)?;
        let issued = issue_join_token(
            &request.node_name,
            &request.sans,
            Some(pin),
            now_unix_ms(),
            request.ttl_ms,
        )?;
        let record = &issued.record;
        member
            .submit(
                &identity,
                Kind::IssueJoinToken(pb::IssueJoinToken {
                    token: Some(pb::JoinToken {
                        sha256: record.secret_sha256.to_vec(),
                        node_name: record.node_name.clone(),
                        sans: record.sans.clone(),
                        issued_at_unix_ms: record.issued_at_unix_ms,
                        expires_at_unix_ms: record.expires_at_unix_ms,
                        used_at_unix_ms: 0,
                        issued_by: identity.audit_name(),
                    }),
                }),
            )
            .await?;
        Ok(Response::new(pb::IssueJoinTokenResponse {
            token: issued.plaintext.clone(),
            node_name: record.node_name.clone(),
            sans: record.sans.clone(),
            expires_at_unix_ms: record.expires_at_unix_ms,
            ca_cert_pem: meta.ca_cert_pem,
            peers,
        }))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        let holds = member.read(|s| replicas_on(s, &request.node));
        // Without --force a node that holds replicas is drained first; the scheduler removes
        // it once its replicas run elsewhere.
        let (kind, removed) = if request.force || holds == 0 {
            let kind = Kind::RemoveNode(pb::RemoveNode {
                node: request.node.clone(),
                force: request.force,
            });
            (kind, true)
        } else {
            (drain_command(&request.node, false, true), false)
        };
        let revision = member.submit_indexed(&identity, kind).await?.0;
        Ok(Response::new(pb::RemoveNodeResponse {
            node: request.node,
            removed,
            revision,
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        caller(&request)?;
        let member = self.context.member()?;
        member.read_barrier(request.get_ref().consistent).await?;
        let (nodes, revision) = nodes_now(&member);
        Ok(Response::new(pb::ListNodesResponse { nodes, revision }))
    }

    async fn drain_node(
        &self,
        request: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        let kind = if request.cancel {
            Kind::SetNodeDrain(pb::SetNodeDrain {
                node: request.node.clone(),
                drain: None,
            })
        } else {
            drain_command(&request.node, request.force, false)
        };
        let revision = member.submit_indexed(&identity, kind).await?.0;
        let replicas_to_move = if request.cancel {
            0
        } else {
            member.read(|s| replicas_on(s, &request.node))
        };
        Ok(Response::new(pb::DrainNodeResponse {
            node: request.node,
            replicas_to_move,
            revision,
        }))
    }

    type BackupStream = Stream<pb::BackupChunk>;

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        // Every write acknowledged before the backup started is in it.
        member.read_barrier(true).await?;
        let (payload, index, cluster_id) = member.read(|s| {
            (
                crate::raft::StateMachineCore::snapshot(s),
                s.last_applied_index(),
                s.cluster_meta()
                    .map(|m| m.cluster_id.clone())
                    .unwrap_or_default(),
            )
        });
        let metrics = member.metrics();
        let term = metrics
            .last_applied
            .filter(|log_id| log_id.index == index)
            .map_or(metrics.current_term, |log_id| log_id.leader_id.term);
        let header = pb::BackupHeader {
            format_version: BACKUP_FORMAT_VERSION,
            cluster_id,
            index,
            term,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            created_at_unix_ms: now_unix_ms(),
            node: member.name.clone(),
            size_bytes: payload.len() as u64,
            sha256: hex(&Sha256::digest(&payload)),
        };
        let audit = pb::AuditEvent {
            r#type: pb::AuditEventType::BackupTaken.into(),
            payload: [
                ("index".to_owned(), index.to_string()),
                ("node".to_owned(), member.name.clone()),
                ("size_bytes".to_owned(), payload.len().to_string()),
            ]
            .into(),
            ..Default::default()
        };
        member
            .submit(
                &identity,
                Kind::AppendAudit(pb::AppendAudit {
                    events: vec![audit],
                }),
            )
            .await?;
        let mut chunks = vec![Ok(pb::BackupChunk {
            chunk: Some(pb::backup_chunk::Chunk::Header(header)),
        })];
        chunks.extend(payload.chunks(BACKUP_CHUNK_BYTES).map(|data| {
            Ok(pb::BackupChunk {
                chunk: Some(pb::backup_chunk::Chunk::Data(data.to_vec())),
            })
        }));
        Ok(Response::new(Box::pin(tonic::codegen::tokio_stream::iter(
            chunks,
        ))))
    }
}
