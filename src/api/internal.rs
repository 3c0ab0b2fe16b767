//! The node-to-node `Internal` gRPC service and its client side ([`GrpcPeers`]).
//!
//! Served on the mTLS port to peers only: raft's three RPCs, `Submit` (a follower forwarding a
//! write to the leader), `ReadIndex` (a linearizable read point) and `Heartbeat` (liveness and
//! reachability probes), `SignNodeCsr` (admission of a joiner, through [`Admission`]), and
//! `Logs`/`Exec` of this node's containers for the node that answers the CLI, and for fleet
//! upgrades `StartElection` (a leader hands leadership over) and `FetchBundle` (a plan's bundle
//! from the node that holds it). RPCs that belong to later subsystems answer `unimplemented`
//! with the reason; they never pretend. This module
//! routes and converts; decisions are made by raft and the state machine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use tokio_stream::StreamExt;

use super::replica_io;
use super::submit::{BoxFuture, Peers, Submitter};
use crate::daemon::upgrade::UpgradeHost;
use crate::error::{Code, Error};
use crate::proto::v1 as pb;
use crate::proto::v1::internal_client::InternalClient;
use crate::proto::v1::internal_server::Internal;
use crate::raft::network::EndpointFn;
use crate::raft::{InternalRaftHandlers, MAX_RAFT_MESSAGE_BYTES, NodeAddr, Raft};
use crate::runtime::{LogOptions, Runtime, container_name};

/// Admission of joining nodes (`SignNodeCsr`), provided by the daemon's cluster lifecycle.
pub trait Admission: Send + Sync + 'static {
    /// Checks the join token, signs the CSR and enters the node in the node table.
    fn admit(
        &self,
        request: pb::SignNodeCsrRequest,
    ) -> BoxFuture<'_, Result<pb::SignNodeCsrResponse, Error>>;
}

/// The `Internal` service of one node.
pub struct InternalService<P: Peers> {
    raft: Raft,
    handlers: InternalRaftHandlers,
    submitter: Arc<Submitter<P>>,
    node_name: String,
    admission: Option<Arc<dyn Admission>>,
    runtime: Option<Arc<dyn Runtime>>,
    upgrade_host: Option<Arc<UpgradeHost>>,
}

impl<P: Peers> InternalService<P> {
    /// The service for the node `node_name` whose raft handle is `raft`.
    pub fn new(raft: Raft, submitter: Arc<Submitter<P>>, node_name: String) -> Self {
        InternalService {
            handlers: InternalRaftHandlers::new(raft.clone()),
            raft,
            submitter,
            node_name,
            admission: None,
            runtime: None,
            upgrade_host: None,
        }
    }

    /// Serves `Logs` and `Exec` of this node's containers through `runtime`.
    pub fn with_runtime(mut self, runtime: Option<Arc<dyn Runtime>>) -> Self {
        self.runtime = runtime;
        self
    }

    fn runtime(&self) -> Result<Arc<dyn Runtime>, Status> {
        self.runtime.clone().ok_or_else(|| {
            Error::new(
                Code::DockerError,
                format!("node {} has no container runtime", self.node_name),
            )
            .with("node", &self.node_name)
            .with("reason", "no_runtime")
            .into()
        })
    }

    /// Serves `FetchBundle` from the bundles `host` keeps for running upgrade plans.
    pub fn with_upgrade_host(mut self, host: Option<Arc<UpgradeHost>>) -> Self {
        self.upgrade_host = host;
        self
    }

    /// Serves `SignNodeCsr` with `admission` (without it, joiners are refused).
    pub fn with_admission(mut self, admission: Arc<dyn Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    fn leader_name(&self) -> String {
        crate::raft::leader_of(&self.raft.metrics().borrow())
            .map(|node| node.name)
            .unwrap_or_default()
    }
}

fn later(rpc: &str, issue: &str) -> Status {
    Status::unimplemented(format!(
        "Internal.{rpc} is not available in this build; it arrives with {issue}"
    ))
}

type PeerStream<T> =
    std::pin::Pin<Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl<P: Peers> Internal for InternalService<P> {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let command = request
            .into_inner()
            .command
            .ok_or_else(|| Status::from(Error::new(Code::Internal, "Submit without a command")))?;
        let result = self
            .submitter
            .propose_here(command)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(pb::SubmitResponse {
            result: Some(result),
        }))
    }

    async fn read_index(
        &self,
        _request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let read = self.raft.ensure_linearizable().await.map_err(|e| {
            Status::from(
                Error::new(Code::NoLeader, format!("no linearizable read point: {e}"))
                    .with("reason", "not_leader"),
            )
        })?;
        let metrics = self.raft.metrics().borrow().clone();
        Ok(Response::new(pb::ReadIndexResponse {
            read_index: read.map_or(0, |log_id| log_id.index),
            leader: self.node_name.clone(),
            term: metrics.current_term,
        }))
    }

    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        self.handlers
            .append_entries(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        self.handlers
            .vote(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        self.handlers
            .install_snapshot(request.into_inner())
            .await
            .map(Response::new)
    }

    type LogsStream = PeerStream<pb::PeerLogsResponse>;

    async fn logs(
        &self,
        request: Request<pb::PeerLogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let runtime = self.runtime()?;
        let request = request.into_inner();
        let options = LogOptions {
            follow: request.follow,
            since_unix_ms: Some(request.since_unix_ms).filter(|t| *t != 0),
            tail: Some(request.tail).filter(|t| *t != 0),
        };
        let (replica, node) = (request.replica, self.node_name.clone());
        let lines = runtime
            .logs(&container_name(&replica), &options)
            .map(move |item| match item {
                Ok(line) => Ok(pb::PeerLogsResponse {
                    line: Some(replica_io::wire_line(&replica, &node, line)),
                }),
                Err(error) => Err(Status::from(error)),
            });
        Ok(Response::new(Box::pin(lines)))
    }

    type ExecStream = PeerStream<pb::PeerExecResponse>;

    async fn exec(
        &self,
        request: Request<Streaming<pb::PeerExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        use pb::peer_exec_request::Msg;
        let runtime = self.runtime()?;
        let mut incoming = request.into_inner();
        let Some(Msg::Start(start)) = incoming.message().await?.and_then(|m| m.msg) else {
            return Err(replica_io::start_missing().into());
        };
        let spec = replica_io::exec_spec(&pb::ExecStart {
            command: start.command,
            tty: start.tty,
            stdin: start.stdin,
            env: start.env,
            user: start.user,
            working_dir: start.working_dir,
            size: start.size,
            ..Default::default()
        });
        let input = incoming.filter_map(Result::ok);
        let responses = replica_io::serve_local_exec(runtime, start.replica, spec, input);
        Ok(Response::new(responses))
    }

    async fn ensure_subnet(
        &self,
        _request: Request<pb::EnsureSubnetRequest>,
    ) -> Result<Response<pb::EnsureSubnetResponse>, Status> {
        Err(later("EnsureSubnet", "networking (issue 6)"))
    }

    async fn sign_node_csr(
        &self,
        request: Request<pb::SignNodeCsrRequest>,
    ) -> Result<Response<pb::SignNodeCsrResponse>, Status> {
        let admission = self.admission.as_ref().ok_or_else(|| {
            Status::unimplemented("this node does not admit joiners (no cluster lifecycle)")
        })?;
        admission
            .admit(request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn add_learner(
        &self,
        _request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::AddLearnerResponse>, Status> {
        // Joiners never need it: admission enters them in the node table, and the leader's
        // membership reconciler adds every node of the table to raft.
        Err(Status::unimplemented(
            "Internal.AddLearner is not used: the leader adds admitted nodes to raft by itself",
        ))
    }

    async fn heartbeat(
        &self,
        _request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(Response::new(pb::HeartbeatResponse {
            leader: self.leader_name(),
            term: metrics.current_term,
            received_at_unix_ms: now,
        }))
    }

    async fn start_election(
        &self,
        request: Request<pb::StartElectionRequest>,
    ) -> Result<Response<pb::StartElectionResponse>, Status> {
        let reason = request.into_inner().reason;
        tracing::info!(%reason, "campaigning for leadership on request");
        self.raft.trigger().elect().await.map_err(|e| {
            Status::from(
                Error::new(Code::Internal, format!("cannot start an election: {e}"))
                    .with("reason", "raft_stopped"),
            )
        })?;
        Ok(Response::new(pb::StartElectionResponse {
            term: self.raft.metrics().borrow().current_term,
        }))
    }

    type FetchBundleStream = PeerStream<pb::FetchBundleResponse>;

    async fn fetch_bundle(
        &self,
        request: Request<pb::FetchBundleRequest>,
    ) -> Result<Response<Self::FetchBundleStream>, Status> {
        let host = self.upgrade_host.as_ref().ok_or_else(|| {
            Status::from(Error::new(
                Code::UpgradeFailed,
                format!("node {} serves no upgrade bundles", self.node_name),
            ))
        })?;
        let request = request.into_inner();
        let chunks = crate::daemon::fleet::serve_bundle(host, &request.plan_id, request.offset)
            .await
            .map_err(Status::from)?;
        let stream = futures_util::stream::unfold(chunks, |mut chunks| async move {
            let chunk = chunks.recv().await?;
            Some((chunk.map_err(Status::from), chunks))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// [`Peers`] over the `Internal` gRPC service, one lazily connected channel per peer.
pub struct GrpcPeers {
    endpoint: Box<EndpointFn>,
    channels: Mutex<HashMap<String, Channel>>,
    /// How long a forwarded write may take.
    forward_timeout: Duration,
    /// Name of this node, sent in probes.
    node_name: String,
}

impl GrpcPeers {
    /// Peers reached through `endpoint`.
    pub fn new(
        node_name: String,
        forward_timeout: Duration,
        endpoint: impl Fn(&NodeAddr) -> Result<Endpoint, tonic::transport::Error>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        GrpcPeers {
            endpoint: Box::new(endpoint),
            channels: Mutex::new(HashMap::new()),
            forward_timeout,
            node_name,
        }
    }

    /// A client of `peer`'s internal API over the cached channel.
    pub fn client(&self, peer: &NodeAddr) -> Result<InternalClient<Channel>, Error> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let channel = match channels.get(&peer.addr) {
            Some(channel) => channel.clone(),
            None => {
                let channel = (self.endpoint)(peer)
                    .map_err(|e| {
                        Error::new(
                            Code::Internal,
                            format!("bad address for {}: {e}", peer.name),
                        )
                    })?
                    .connect_lazy();
                channels.insert(peer.addr.clone(), channel.clone());
                channel
            }
        };
        Ok(InternalClient::new(channel)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
    }
}

impl Peers for GrpcPeers {
    fn forward<'a>(
        &'a self,
        leader: &'a NodeAddr,
        command: pb::Command,
    ) -> BoxFuture<'a, Result<pb::CommandResult, Error>> {
        Box::pin(async move {
            let mut client = self.client(leader)?;
            let mut request = Request::new(pb::SubmitRequest {
                command: Some(command),
            });
            request.set_timeout(self.forward_timeout);
            match client.submit(request).await {
                Ok(response) => response.into_inner().result.ok_or_else(|| {
                    Error::new(
                        Code::Internal,
                        "the leader answered Submit without a result",
                    )
                }),
                // A write that timed out may still commit: only a refused connection is safe
                // to retry elsewhere.
                Err(status) => Err(unreachable_or(leader, &status, false)),
            }
        })
    }

    fn read_index<'a>(&'a self, leader: &'a NodeAddr) -> BoxFuture<'a, Result<u64, Error>> {
        Box::pin(async move {
            let mut client = self.client(leader)?;
            let mut request = Request::new(pb::ReadIndexRequest {});
            request.set_timeout(self.forward_timeout);
            match client.read_index(request).await {
                Ok(response) => Ok(response.into_inner().read_index),
                // Reads change nothing, so a timed-out read is retried like a refused one.
                Err(status) => Err(unreachable_or(leader, &status, true)),
            }
        })
    }

    fn reachable<'a>(&'a self, peer: &'a NodeAddr, timeout: Duration) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Ok(mut client) = self.client(peer) else {
                return false;
            };
            let mut request = Request::new(pb::HeartbeatRequest {
                node: self.node_name.clone(),
                ..Default::default()
            });
            request.set_timeout(timeout);
            tokio::time::timeout(timeout, client.heartbeat(request))
                .await
                .is_ok_and(|answer| answer.is_ok())
        })
    }
}

/// A failure towards `leader`: an error envelope as the error it carries; a refused connection,
/// or any transport failure of an `idempotent` call, as `no_leader` with `reason: unreachable`,
/// so that the caller reassesses who leads; any other transport failure of a write as
/// `no_leader` with `reason: outcome_unknown`, which is not retried automatically.
fn unreachable_or(leader: &NodeAddr, status: &Status, idempotent: bool) -> Error {
    if !status.details().is_empty() {
        // The leader answered with our envelope: its error is the answer.
        return Error::from_status(status);
    }
    if idempotent || status.code() == tonic::Code::Unavailable {
        Error::new(
            Code::NoLeader,
            format!(
                "leader {} is unreachable: {}",
                leader.name,
                status.message()
            ),
        )
        .with("reason", "unreachable")
    } else {
        // The connection broke (or timed out) after the leader received the write: it may or
        // may not commit. Say so instead of retrying it or calling it a bug.
        Error::new(
            Code::NoLeader,
            format!(
                "lost leader {} while it handled the write ({}); the write may or may not have \
                 been applied: check before retrying",
                leader.name,
                status.message()
            ),
        )
        .with("reason", "outcome_unknown")
    }
}
