//! A three-node raft cluster in one process for tests and benchmarks: each node has its own
//! data directory and tonic server on 127.0.0.1 (a random port) serving the production
//! `Internal` service, and nodes talk over real gRPC.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jaco::api::internal::{GrpcPeers, InternalService};
use jaco::api::submit::Submitter;
use jaco::proto::v1 as pb;
use jaco::raft::{
    GrpcNetwork, MAX_RAFT_MESSAGE_BYTES, NodeAddr, NodeId, Raft, RaftMetrics, RaftNode, Request,
    SharedCore, members_by_id, node_id_from_name, plaintext_endpoint,
};
use openraft::ServerState;
use pb::internal_server::InternalServer;
use prost::Message as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use jaco::raft::StateMachineCore;

use super::{CountingCore, commands};

/// How long any single condition may take on a loaded CI machine.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// One running node: raft, its core, and its gRPC server.
pub struct TestNode<S = CountingCore> {
    pub name: String,
    pub id: NodeId,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub core: SharedCore<S>,
    pub node: RaftNode,
    pub submitter: Arc<Submitter<GrpcPeers>>,
    pub stop_server: oneshot::Sender<()>,
    pub server: JoinHandle<()>,
}

impl<S: StateMachineCore + Default> TestNode<S> {
    /// Starts node `name` on `dir`, serving on `bind` (port 0 for a fresh one).
    pub async fn start(name: &str, dir: &Path, bind: SocketAddr, config: openraft::Config) -> Self {
        let incoming = TcpIncoming::bind(bind).expect("binds");
        let addr = incoming.local_addr().expect("has an address");
        let id = node_id_from_name(name);
        let core: SharedCore<S> = Arc::new(std::sync::RwLock::new(S::default()));
        let node = RaftNode::start(id, dir, config, core.clone(), GrpcNetwork::plaintext(id))
            .await
            .expect("raft starts");
        let peers = GrpcPeers::new(name.to_owned(), DEADLINE, plaintext_endpoint);
        let submitter = Arc::new(Submitter::new(
            node.raft().clone(),
            peers,
            Duration::from_secs(3),
        ));
        let service = InternalServer::new(InternalService::new(
            node.raft().clone(),
            submitter.clone(),
            name.to_owned(),
        ))
        .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        Self {
            name: name.to_owned(),
            id,
            addr,
            dir: dir.to_owned(),
            core,
            node,
            submitter,
            stop_server,
            server,
        }
    }

    pub fn raft(&self) -> &Raft {
        self.node.raft()
    }

    pub fn addr(&self) -> NodeAddr {
        NodeAddr {
            name: self.name.clone(),
            addr: self.addr.to_string(),
        }
    }

    /// Stops raft, then the server (graceful: peers' connections get GOAWAY). Returns what a
    /// restart needs.
    pub async fn stop(self) -> (String, PathBuf, SocketAddr) {
        self.node.shutdown().await;
        let _ = self.stop_server.send(());
        let mut server = self.server;
        if tokio::time::timeout(DEADLINE, &mut server).await.is_err() {
            server.abort();
        }
        (self.name, self.dir, self.addr)
    }

    pub async fn wait(
        &self,
        what: &str,
        condition: impl Fn(&RaftMetrics) -> bool + Send,
    ) -> RaftMetrics {
        self.raft()
            .wait(Some(DEADLINE))
            .metrics(condition, format!("{}: {what}", self.name))
            .await
            .unwrap_or_else(|error| panic!("{}: {what}: {error}", self.name))
    }

    pub fn last_log_index(&self) -> u64 {
        self.raft().metrics().borrow().last_log_index.unwrap_or(0)
    }
}

pub fn applied(metrics: &RaftMetrics) -> u64 {
    metrics.last_applied.map_or(0, |log_id| log_id.index)
}

/// Initializes `first` as a one-voter cluster, adds `others` as learners, then makes everyone
/// a voter: the path the daemon's init, join and membership reconciler take.
pub async fn form_cluster<S: StateMachineCore + Default>(
    first: &TestNode<S>,
    others: &[&TestNode<S>],
) {
    first
        .raft()
        .initialize(members_by_id([first.addr()]))
        .await
        .expect("initializes");
    // initialize() returns once the membership is flushed, not committed: wait for the leader
    // to have applied its own membership before changing it (openraft PR #1885).
    first
        .wait("leads its one-node cluster", |m| {
            m.state == ServerState::Leader
                && m.membership_config.log_id().map(|l| l.index) <= m.last_applied.map(|l| l.index)
        })
        .await;
    for other in others {
        first
            .raft()
            .add_learner(other.id, other.addr(), true)
            .await
            .expect("adds a learner");
    }
    let voters: BTreeSet<NodeId> = std::iter::once(first.id)
        .chain(others.iter().map(|n| n.id))
        .collect();
    first
        .raft()
        .change_membership(voters.clone(), false)
        .await
        .expect("changes membership");
    for node in std::iter::once(first).chain(others.iter().copied()) {
        node.wait("sees every voter", |m| {
            m.membership_config
                .membership()
                .voter_ids()
                .collect::<BTreeSet<_>>()
                == voters
        })
        .await;
    }
}

pub fn command(i: usize) -> Request {
    Request(format!("command {i}").into_bytes())
}

/// Writes `range` on `leader`, checking each result is the fixture's answer for its entry.
pub async fn write_all(leader: &TestNode, range: std::ops::Range<usize>) {
    for i in range {
        let response = leader
            .raft()
            .client_write(command(i))
            .await
            .unwrap_or_else(|error| panic!("write {i}: {error}"));
        let result = pb::CommandResult::decode(response.data.0.as_slice()).expect("a result");
        assert_eq!(result.index, response.log_id.index);
    }
}

/// Waits until every node has applied `leader`'s whole log, then checks all cores are equal.
pub async fn converge(leader: &TestNode, nodes: &[&TestNode]) -> Vec<Vec<u8>> {
    let last = leader.last_log_index();
    for node in nodes {
        node.wait("applies the leader's log", |m| applied(m) >= last)
            .await;
    }
    let expected = commands(&leader.core);
    for node in nodes {
        assert_eq!(commands(&node.core), expected, "{} diverged", node.name);
    }
    expected
}

/// Starts node-a, node-b and node-c under `root` on fresh ports and forms a three-voter cluster
/// led by node-a.
pub async fn start_three(root: &Path, config: &openraft::Config) -> Vec<TestNode> {
    start_three_with(root, config).await
}

/// [`start_three`] with any state machine core.
pub async fn start_three_with<S: StateMachineCore + Default>(
    root: &Path,
    config: &openraft::Config,
) -> Vec<TestNode<S>> {
    let any_port: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b", "node-c"] {
        nodes.push(TestNode::<S>::start(name, &root.join(name), any_port, config.clone()).await);
    }
    form_cluster(&nodes[0], &[&nodes[1], &nodes[2]]).await;
    nodes
}
