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
    /// Sends `payload` in one unary RPC (`send`) with the deadline `ttl` and decodes the answer
    /// into openraft's result; a peer's raft error becomes a remote error.
    async fn exchange<Req, Resp, T, E, F, Fut>(
        &self,
        action: RPCTypes,
        ttl: Duration,
        payload: Vec<u8>,
        send: F,
    ) -> Result<T, RPCError<NodeId, NodeAddr, E>>
    where
        Req: Envelope,
        Resp: Envelope,
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(InternalClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(error) => {
                return Err(self.rpc_error(action, Failure::Unreachable(AnyError::error(error))));
            }
        };
        let mut request = tonic::Request::new(Req::wrap(payload));
        request.set_timeout(ttl);
        let response = match tokio::time::timeout(ttl, send(client, request)).await {
            Err(_) => return Err(self.rpc_error(action, Failure::Timeout(ttl))),
            Ok(Err(status)) => return Err(self.rpc_error(action, classify(&status))),
            Ok(Ok(response)) => response.into_inner(),
        };
        let decoded: Result<T, E> =
            open(&response).map_err(|status| self.network(action, &status))?;
        decoded.map_err(|error| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                error,
            ))
        })
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

    fn network<E: std::error::Error>(
        &self,
        action: RPCTypes,
        status: &Status,
    ) -> RPCError<NodeId, NodeAddr, E> {
        self.rpc_error(action, Failure::Network(AnyError::new(status)))
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

/// The three request and three response messages: a format version and a payload.
trait Envelope {
    /// A message carrying `payload` in the current format.
    fn wrap(payload: Vec<u8>) -> Self;
    /// The format version and payload.
    fn parts(&self) -> (u32, &[u8]);
}

macro_rules! envelope {
    ($($message:ty),* $(,)?) => {
        $(impl Envelope for $message {
            fn wrap(payload: Vec<u8>) -> Self {
                Self { format_version: FORMAT_VERSION, payload }
            }
            fn parts(&self) -> (u32, &[u8]) {
                (self.format_version, &self.payload)
            }
        })*
    };
}

envelope!(
    pb::AppendEntriesRequest,
    pb::AppendEntriesResponse,
    pb::VoteRequest,
    pb::VoteResponse,
    pb::InstallSnapshotRequest,
    pb::InstallSnapshotResponse,
);

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value)
        .map_err(|error| Status::internal(format!("cannot encode raft payload: {error}")))
}

/// `value` encoded into a message of the current format.
fn seal<M: Envelope>(value: &impl Serialize) -> Result<M, Status> {
    encode(value).map(M::wrap)
}

/// The payload of `message`, refused unless it is in the current format and decodes.
fn open<T: DeserializeOwned>(message: &impl Envelope) -> Result<T, Status> {
    let (format_version, payload) = message.parts();
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
        let payload = encode(&rpc).map_err(|status| self.network(action, &status))?;
        // Leave room for the protobuf framing around the payload.
        if payload.len() + 1024 > MAX_RAFT_MESSAGE_BYTES && entries > 1 {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            ));
        }
        self.exchange(
            action,
            option.hard_ttl(),
            payload,
            |mut client, request| async move { client.append_entries(request).await },
        )
        .await
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
        let payload = encode(&chunk).map_err(|status| self.network(action, &status))?;
        self.exchange(
            action,
            option.hard_ttl(),
            payload,
            |mut client, request| async move { client.install_snapshot(request).await },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        let action = RPCTypes::Vote;
        let payload = encode(&rpc).map_err(|status| self.network(action, &status))?;
        self.exchange(
            action,
            option.hard_ttl(),
            payload,
            |mut client, request| async move { client.vote(request).await },
        )
        .await
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
        let rpc: AppendEntriesRequest<TypeConfig> = open(&request)?;
        seal(&self.raft.append_entries(rpc).await)
    }

    /// `Internal.Vote`.
    pub async fn vote(&self, request: pb::VoteRequest) -> Result<pb::VoteResponse, Status> {
        let rpc: VoteRequest<NodeId> = open(&request)?;
        seal(&self.raft.vote(rpc).await)
    }

    /// `Internal.InstallSnapshot` (one chunk per call).
    pub async fn install_snapshot(
        &self,
        request: pb::InstallSnapshotRequest,
    ) -> Result<pb::InstallSnapshotResponse, Status> {
        let chunk: SnapshotChunk = open(&request)?;
        let rpc = InstallSnapshotRequest {
            vote: chunk.vote,
            meta: chunk.meta,
            offset: chunk.offset,
            data: chunk.data,
            done: chunk.done,
        };
        seal(&self.raft.install_snapshot(rpc).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_format_version_or_garbage_is_refused() {
        let future = pb::VoteRequest {
            format_version: 2,
            payload: b"{}".to_vec(),
        };
        let status = open::<VoteRequest<NodeId>>(&future).expect_err("version 2 refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let garbage = pb::VoteRequest::wrap(b"not json".to_vec());
        let status = open::<VoteRequest<NodeId>>(&garbage).expect_err("garbage refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn a_vote_round_trips_through_the_wire_encoding() {
        let rpc = VoteRequest::<NodeId>::new(Vote::new(3, 7), None);
        let sealed: pb::VoteRequest = seal(&rpc).expect("encodes");
        let back: VoteRequest<NodeId> = open(&sealed).expect("decodes");
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
