//! Raft RPCs between nodes over the `jaco.v1.Internal` gRPC service.
//!
//! Outgoing: [`GrpcNetwork`] is openraft's network factory; it keeps one lazily connected tonic
//! [`Channel`] per peer (HTTP/2 multiplexes every RPC over it) and maps transport failures onto
//! openraft's errors: an unreachable peer becomes [`Unreachable`] so openraft backs off, an
//! expired deadline becomes [`Timeout`], a peer's raft error comes back as a remote error.
//! Incoming: [`InternalRaftHandlers`] decodes a request, hands it to the local [`Raft`] and encodes
//! the result; the daemon's `Internal` service calls it for the three raft RPCs.
//!
//! Payloads are openraft's own messages encoded as JSON (format version [`FORMAT_VERSION`]), with
//! command and snapshot bytes as base64 strings. JSON is self-describing, so a peer running a
//! newer openraft 0.9 patch that adds a field still decodes, and the encoder is already a
//! dependency. This module must not authenticate peers (mTLS is configured on the endpoint and
//! the server by the daemon) and must not interpret commands.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::AnyError;
use openraft::RPCTypes;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use super::types::{NodeAddr, NodeId, Raft, SnapshotMeta, TypeConfig, Vote, base64_bytes};
use crate::proto::v1 as pb;
use pb::internal_client::InternalClient;

/// Version of the payload encoding carried in every raft RPC; receivers reject any other.
pub const FORMAT_VERSION: u32 = 1;

/// Largest raft RPC message, in bytes, either way. The daemon's `Internal` server must accept
/// this much (`max_decoding_message_size`); an AppendEntries batch that would exceed it is split
/// by openraft (the client answers [`PayloadTooLarge`]).
pub const MAX_RAFT_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Builds the endpoint (URI, TLS, timeouts) used to reach a node.
pub type EndpointFn =
    dyn Fn(&NodeAddr) -> Result<Endpoint, tonic::transport::Error> + Send + Sync + 'static;

/// The plaintext endpoint of `node` (`http://<addr>`), tuned by [`tune_endpoint`]. For tests and
/// loopback only; the daemon passes an mTLS endpoint builder to [`GrpcNetwork::new`].
pub fn plaintext_endpoint(node: &NodeAddr) -> Result<Endpoint, tonic::transport::Error> {
    Ok(tune_endpoint(Endpoint::from_shared(format!(
        "http://{}",
        node.addr
    ))?))
}

/// Connection settings for raft peers: 500 ms connect timeout, no Nagle delay, HTTP/2
/// keep-alive pings every 10 s so a dead connection is noticed while idle.
pub fn tune_endpoint(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
}

/// openraft's network factory over gRPC. Cheap to clone; clones share the channel cache.
#[derive(Clone)]
pub struct GrpcNetwork {
    local: NodeId,
    endpoint: Arc<EndpointFn>,
    /// One channel per peer, with the address it was built for (rebuilt when it changes).
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
}

impl GrpcNetwork {
    /// A network for node `local` whose peer endpoints come from `endpoint` (which sets the
    /// scheme, TLS and timeouts; see [`plaintext_endpoint`] and [`tune_endpoint`]).
    pub fn new(
        local: NodeId,
        endpoint: impl Fn(&NodeAddr) -> Result<Endpoint, tonic::transport::Error>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Self {
            local,
            endpoint: Arc::new(endpoint),
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A plaintext network (tests on 127.0.0.1).
    pub fn plaintext(local: NodeId) -> Self {
        Self::new(local, plaintext_endpoint)
    }

    fn channel(&self, target: NodeId, node: &NodeAddr) -> Result<Channel, tonic::transport::Error> {
        // The map is consistent after any panic, so a poisoned lock is safe to reuse.
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((addr, channel)) = channels.get(&target)
            && *addr == node.addr
        {
            return Ok(channel.clone());
        }
        let channel = (self.endpoint)(node)?.connect_lazy();
        channels.insert(target, (node.addr.clone(), channel.clone()));
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> PeerClient {
        let client = self
            .channel(target, node)
            .map(|channel| {
                InternalClient::new(channel)
                    .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            })
            .map_err(|error| format!("invalid endpoint for {node}: {error}"));
        PeerClient {
            local: self.local,
            target,
            node: node.clone(),
            client,
        }
    }
}

/// The raft RPC client for one peer.
pub struct PeerClient {
    local: NodeId,
    target: NodeId,
    node: NodeAddr,
    client: Result<InternalClient<Channel>, String>,
}

/// How an RPC failed before a raft answer came back.
enum Failure {
    Timeout(Duration),
    Unreachable(AnyError),
    Network(AnyError),
}

impl PeerClient {
    /// Sends one unary RPC with the deadline `ttl` and returns the response's payload.
    async fn call<R, F, Fut>(&self, ttl: Duration, send: F) -> Result<R, Failure>
    where
        F: FnOnce(InternalClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(error) => return Err(Failure::Unreachable(AnyError::error(error))),
        };
        match tokio::time::timeout(ttl, send(client)).await {
            Err(_) => Err(Failure::Timeout(ttl)),
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(classify(&status)),
        }
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        failure: Failure,
    ) -> RPCError<NodeId, NodeAddr, E> {
        match failure {
            Failure::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.local,
                target: self.target,
                timeout,
            }),
            Failure::Unreachable(error) => RPCError::Unreachable(Unreachable::from(error)),
            Failure::Network(error) => RPCError::Network(NetworkError::from(error)),
        }
    }

    /// Decodes a response payload into openraft's result, a peer's raft error becoming a remote
    /// error.
    fn answer<T: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        action: RPCTypes,
        format_version: u32,
        payload: &[u8],
    ) -> Result<T, RPCError<NodeId, NodeAddr, E>> {
        let decoded = decode::<Result<T, E>>(format_version, payload)
            .map_err(|status| self.rpc_error(action, Failure::Network(AnyError::new(&status))))?;
        decoded.map_err(|error| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                error,
            ))
        })
    }
}

/// A transport-level failure (connection refused, reset, TLS failure) is [`Failure::Unreachable`]
/// so openraft backs off; anything else the server said is retried at the next heartbeat.
fn classify(status: &Status) -> Failure {
    match status.code() {
        tonic::Code::Unavailable => Failure::Unreachable(AnyError::new(status)),
        _ => Failure::Network(AnyError::new(status)),
    }
}

/// An install-snapshot chunk on the wire: openraft's request with the bytes as base64.
#[derive(Serialize, Deserialize)]
struct SnapshotChunk {
    vote: Vote,
    meta: SnapshotMeta,
    offset: u64,
    #[serde(with = "base64_bytes")]
    data: Vec<u8>,
    done: bool,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value)
        .map_err(|error| Status::internal(format!("cannot encode raft payload: {error}")))
}

fn decode<T: DeserializeOwned>(format_version: u32, payload: &[u8]) -> Result<T, Status> {
    if format_version != FORMAT_VERSION {
        return Err(Status::invalid_argument(format!(
            "unsupported raft payload format version {format_version} (this node speaks \
             {FORMAT_VERSION})"
        )));
    }
    serde_json::from_slice(payload)
        .map_err(|error| Status::invalid_argument(format!("undecodable raft payload: {error}")))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        let action = RPCTypes::AppendEntries;
        let entries = rpc.entries.len() as u64;
        let payload = encode(&rpc)
            .map_err(|status| self.rpc_error(action, Failure::Network(AnyError::new(&status))))?;
        // Leave room for the protobuf framing around the payload.
        if payload.len() + 1024 > MAX_RAFT_MESSAGE_BYTES && entries > 1 {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            ));
        }
        let ttl = option.hard_ttl();
        let response = self
            .call(ttl, |mut client| async move {
                let mut request = tonic::Request::new(pb::AppendEntriesRequest {
                    format_version: FORMAT_VERSION,
                    payload,
                });
                request.set_timeout(ttl);
                client.append_entries(request).await
            })
            .await
            .map_err(|failure| self.rpc_error(action, failure))?;
        self.answer(action, response.format_version, &response.payload)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeAddr, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let action = RPCTypes::InstallSnapshot;
        let chunk = SnapshotChunk {
            vote: rpc.vote,
            meta: rpc.meta,
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        };
        let payload = encode(&chunk)
            .map_err(|status| self.rpc_error(action, Failure::Network(AnyError::new(&status))))?;
        let ttl = option.hard_ttl();
        let response = self
            .call(ttl, |mut client| async move {
                let mut request = tonic::Request::new(pb::InstallSnapshotRequest {
                    format_version: FORMAT_VERSION,
                    payload,
                });
                request.set_timeout(ttl);
                client.install_snapshot(request).await
            })
            .await
            .map_err(|failure| self.rpc_error(action, failure))?;
        self.answer(action, response.format_version, &response.payload)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        let action = RPCTypes::Vote;
        let payload = encode(&rpc)
            .map_err(|status| self.rpc_error(action, Failure::Network(AnyError::new(&status))))?;
        let ttl = option.hard_ttl();
        let response = self
            .call(ttl, |mut client| async move {
                let mut request = tonic::Request::new(pb::VoteRequest {
                    format_version: FORMAT_VERSION,
                    payload,
                });
                request.set_timeout(ttl);
                client.vote(request).await
            })
            .await
            .map_err(|failure| self.rpc_error(action, failure))?;
        self.answer(action, response.format_version, &response.payload)
    }

    /// After an unreachable peer: wait 100 ms, then 200, 400, 800, then 1 s between attempts
    /// until one succeeds (openraft's default is a flat 500 ms).
    fn backoff(&self) -> Backoff {
        Backoff::new(
            (0u32..).map(|attempt| Duration::from_millis((100u64 << attempt.min(4)).min(1_000))),
        )
    }
}

/// The receiving side of the three raft RPCs, for the daemon's `Internal` service:
///
/// ```ignore
/// async fn vote(&self, request: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
///     self.raft_handlers.vote(request.into_inner()).await.map(Response::new)
/// }
/// ```
///
/// A raft-level error (for example a stopped node) is encoded into the response payload for the
/// caller's openraft; an `invalid_argument` status means the payload could not be decoded.
#[derive(Clone)]
pub struct InternalRaftHandlers {
    raft: Raft,
}

impl InternalRaftHandlers {
    /// Handlers that deliver to `raft`.
    pub fn new(raft: Raft) -> Self {
        Self { raft }
    }

    /// `Internal.AppendEntries`.
    pub async fn append_entries(
        &self,
        request: pb::AppendEntriesRequest,
    ) -> Result<pb::AppendEntriesResponse, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode(request.format_version, &request.payload)?;
        let result = self.raft.append_entries(rpc).await;
        Ok(pb::AppendEntriesResponse {
            format_version: FORMAT_VERSION,
            payload: encode(&result)?,
        })
    }

    /// `Internal.Vote`.
    pub async fn vote(&self, request: pb::VoteRequest) -> Result<pb::VoteResponse, Status> {
        let rpc: VoteRequest<NodeId> = decode(request.format_version, &request.payload)?;
        let result = self.raft.vote(rpc).await;
        Ok(pb::VoteResponse {
            format_version: FORMAT_VERSION,
            payload: encode(&result)?,
        })
    }

    /// `Internal.InstallSnapshot` (one chunk per call).
    pub async fn install_snapshot(
        &self,
        request: pb::InstallSnapshotRequest,
    ) -> Result<pb::InstallSnapshotResponse, Status> {
        let chunk: SnapshotChunk = decode(request.format_version, &request.payload)?;
        let rpc = InstallSnapshotRequest {
            vote: chunk.vote,
            meta: chunk.meta,
            offset: chunk.offset,
            data: chunk.data,
            done: chunk.done,
        };
        let result = self.raft.install_snapshot(rpc).await;
        Ok(pb::InstallSnapshotResponse {
            format_version: FORMAT_VERSION,
            payload: encode(&result)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_format_version_or_garbage_is_refused() {
        let status = decode::<VoteRequest<NodeId>>(2, b"{}").expect_err("version 2 refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let status = decode::<VoteRequest<NodeId>>(FORMAT_VERSION, b"not json")
            .expect_err("garbage refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn a_vote_round_trips_through_the_wire_encoding() {
        let rpc = VoteRequest::<NodeId>::new(Vote::new(3, 7), None);
        let back: VoteRequest<NodeId> =
            decode(FORMAT_VERSION, &encode(&rpc).expect("encodes")).expect("decodes");
        assert_eq!(back, rpc);
    }

    #[test]
    fn unavailable_means_unreachable_and_the_rest_is_retried() {
        assert!(matches!(
            classify(&Status::unavailable("tcp connect error")),
            Failure::Unreachable(_)
        ));
        assert!(matches!(
            classify(&Status::permission_denied("bad certificate")),
            Failure::Network(_)
        ));
    }

    #[test]
    fn backoff_grows_to_one_second() {
        let client = PeerClient {
            local: 1,
            target: 2,
            node: NodeAddr::default(),
            client: Err("unused".to_owned()),
        };
        let steps: Vec<u64> = client
            .backoff()
            .take(7)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(steps, [100, 200, 400, 800, 1_000, 1_000, 1_000]);
    }
}
