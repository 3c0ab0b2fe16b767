//! One node as a cluster member: raft over mTLS, the state machine, the watch hub and the write
//! path, started from the node's certificate and data directory.
//!
//! A [`Member`] exists once the node has initialised or joined a cluster; before that the
//! daemon only answers `cluster init`/`join`/`status`. This module assembles and offers small
//! conveniences (submit a command as an identity, read the state, a linearizable barrier); it
//! must not make cluster decisions (the membership reconciler and the state machine do).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tonic::transport::Endpoint;

use super::core::NodeCore;
use super::metrics::Metrics;
use crate::api::auth::Identity;
use crate::api::internal::GrpcPeers;
use crate::api::submit::Submitter;
use crate::error::{Code, Error};
use crate::pki::NodeIdentity;
use crate::pki::tls::tonic_client_tls;
use crate::proto::v1 as pb;
use crate::proto::v1::command_result::Outcome;
use crate::raft::{
    FatalSignal, GrpcNetwork, NodeAddr, NodeId, Raft, RaftMetrics, RaftNode, SharedCore,
    node_id_from_name, tune_endpoint,
};
use crate::state::watch::DEFAULT_HISTORY;
use crate::state::{State, WatchHub, into_outcome};

/// How long a write forwarded to the leader may take before the origin gives up on it.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// What a member needs from the daemon configuration.
#[derive(Debug, Clone)]
pub struct MemberSettings {
    /// This node's name.
    pub name: String,
    /// The data directory (`raft/` and `pki/` live under it).
    pub data_dir: PathBuf,
    /// `host:port` peers dial.
    pub advertise: String,
    /// The openraft configuration.
    pub raft: openraft::Config,
    /// How long a write waits for a leader.
    pub leader_wait: Duration,
}

/// A running cluster member.
pub struct Member {
    /// This node's name.
    pub name: String,
    /// This node's raft id.
    pub id: NodeId,
    /// Key, certificate and CA.
    pub identity: NodeIdentity,
    /// The openraft handle.
    pub raft: Raft,
    /// The state machine (read under the read lock; never across an await).
    pub core: SharedCore<NodeCore>,
    /// Fan-out of state changes.
    pub hub: WatchHub,
    /// The write path (propose here or forward to the leader).
    pub submitter: Arc<Submitter<Arc<GrpcPeers>>>,
    /// Node-to-node calls.
    pub peers: Arc<GrpcPeers>,
    metrics: Arc<Metrics>,
    fatal: FatalSignal,
    node: Mutex<Option<RaftNode>>,
}

/// The endpoint of a peer's mTLS API: verified as the peer's node name against the cluster
/// CA, presenting this node's certificate.
pub fn peer_endpoint(
    identity: &NodeIdentity,
) -> impl Fn(&NodeAddr) -> Result<Endpoint, tonic::transport::Error> + Clone + Send + Sync + 'static
{
    let identity = identity.clone();
    move |peer: &NodeAddr| {
        let endpoint = Endpoint::from_shared(format!("https://{}", peer.addr))?.tls_config(
            tonic_client_tls(&identity.ca_pem, Some(&identity), &peer.name),
        )?;
        Ok(tune_endpoint(endpoint))
    }
}

impl Member {
    /// Starts raft for `settings.data_dir` with `identity` and wires the write path.
    pub async fn start(
        settings: &MemberSettings,
        identity: NodeIdentity,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Member>, Error> {
        let id = node_id_from_name(&settings.name);
        let hub = WatchHub::new(DEFAULT_HISTORY, 0);
        let core = Arc::new(RwLock::new(NodeCore::new(hub.clone(), metrics.clone())));
        let endpoint = peer_endpoint(&identity);
        let network = GrpcNetwork::new(id, endpoint.clone());
        let node = RaftNode::start(
            id,
            &settings.data_dir,
            settings.raft.clone(),
            core.clone(),
            network,
        )
        .await
        .map_err(|e| {
            Error::new(Code::Internal, format!("raft did not start: {e}"))
                .with("reason", "raft_start_failed")
                .with("data_dir", settings.data_dir.display())
        })?;
        let raft = node.raft().clone();
        let peers = Arc::new(GrpcPeers::new(
            settings.name.clone(),
            FORWARD_TIMEOUT,
            endpoint,
        ));
        let submitter = Arc::new(Submitter::new(
            raft.clone(),
            peers.clone(),
            settings.leader_wait,
        ));
        Ok(Arc::new(Member {
            name: settings.name.clone(),
            id,
            identity,
            raft,
            core,
            hub,
            submitter,
            peers,
            metrics,
            fatal: node.fatal().clone(),
            node: Mutex::new(Some(node)),
        }))
    }

    /// Reads the replicated state as of the last applied command.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let core = self.core.read().unwrap_or_else(|p| p.into_inner());
        f(core.state())
    }

    /// The latest raft metrics.
    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// The current leader's member entry, if a leader is known.
    pub fn leader(&self) -> Option<NodeAddr> {
        crate::raft::leader_of(&self.metrics())
    }

    /// Commits `kind` on behalf of `identity` and returns the state machine's outcome (a
    /// rejected command comes back as its error).
    pub async fn submit(
        &self,
        identity: &Identity,
        kind: pb::command::Kind,
    ) -> Result<Outcome, Error> {
        self.submit_indexed(identity, kind)
            .await
            .map(|(_, outcome)| outcome)
    }

    /// Like [`Member::submit`], also returning the raft index the command committed at (the
    /// state revision a watcher follows convergence from).
    pub async fn submit_indexed(
        &self,
        identity: &Identity,
        kind: pb::command::Kind,
    ) -> Result<(u64, Outcome), Error> {
        let command = pb::Command {
            identity: identity.audit_name(),
            time_unix_ms: crate::pki::now_unix_ms(),
            origin_node: self.name.clone(),
            request_id: crate::pki::hex(&rand::random::<[u8; 8]>()),
            kind: Some(kind),
        };
        let started = std::time::Instant::now();
        let result = self.submitter.submit(command).await?;
        self.metrics
            .commit_latency
            .observe(started.elapsed().as_secs_f64());
        let index = result.index;
        into_outcome(result).map(|outcome| (index, outcome))
    }

    /// Waits for a linearizable read point when `consistent`; a no-op otherwise.
    pub async fn read_barrier(&self, consistent: bool) -> Result<(), Error> {
        if consistent {
            self.submitter.read_barrier().await
        } else {
            Ok(())
        }
    }

    /// Resolves when storage fails or raft stops on its own, with the reason.
    pub async fn failed(&self) -> String {
        self.fatal.wait().await
    }

    /// Stops raft and closes the watch streams.
    pub async fn shutdown(&self) {
        let node = self.node.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.hub.close();
        if let Some(node) = node {
            node.shutdown().await;
        }
    }
}
