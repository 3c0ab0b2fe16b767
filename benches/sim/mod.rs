//! Scale-simulation fixture for `benches/scheduler_scale.rs`: one real in-process jaco member
//! (the daemon's `cluster init` path: openraft single voter, fsynced redb log, `NodeCore`
//! publishing to the watch hub, the `Submitter` write path) plus N simulated nodes and a
//! simulated runtime.
//!
//! A simulated node is only an entry in the replicated node table, entered the way a real join
//! enters one (`AddNode`, then the node's own `UpdateNodeInfo` with its declared capacity and
//! `SetNodeStatus ready`); it runs no daemon, no raft and no Docker. The simulated runtime
//! "observes" every desired replica as running by committing one `ReportReplicas` per node, as
//! node agents do, so that the scheduler converges.
//!
//! Bench-only: nothing outside `benches/` may use it, it must not be linked into the daemon,
//! and it must not decide placement (the scheduler's `plan::reconcile` does).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use jaco::api::auth::Identity;
use jaco::daemon::lifecycle;
use jaco::daemon::member::{Member, MemberSettings};
use jaco::daemon::metrics::Metrics;
use jaco::error::Error;
use jaco::proto::v1 as pb;
use jaco::proto::v1::command::Kind;
use jaco::proto::v1::command_result::Outcome;
use jaco::raft::{DEFAULT_SNAPSHOT_EVERY, raft_config};

/// Commands submitted at once while setting up or reporting (the raft bench's client count).
pub const IN_FLIGHT: usize = 64;

/// Name of simulated node `i`; node 0 is the in-process member itself.
pub fn node_name(i: usize) -> String {
    format!("sim-{i:05}")
}

/// What each simulated node declares.
pub const NODE_CAPACITY: pb::NodeResources = pb::NodeResources {
    cpu_millis: 16_000,
    memory_bytes: 64 << 30,
};

/// What each simulated replica reserves.
pub const REPLICA_RESERVATION: pb::NodeResources = pb::NodeResources {
    cpu_millis: 10,
    memory_bytes: 32 << 20,
};

/// The in-process member and its simulated nodes.
pub struct SimCluster {
    /// The real member (leader, single raft voter); node `sim-00000`.
    pub member: Arc<Member>,
    /// Number of nodes in the node table (the member included).
    pub nodes: usize,
}

impl SimCluster {
    /// Runs `cluster init` for a member on `data_dir` (the daemon's default raft config) and
    /// enters `nodes - 1` simulated nodes, all ready with [`NODE_CAPACITY`].
    pub async fn start(data_dir: &Path, nodes: usize) -> SimCluster {
        let settings = MemberSettings {
            name: node_name(0),
            data_dir: data_dir.to_owned(),
            // Never dialled: a single voter sends no raft RPCs.
            advertise: "127.0.0.1:1".to_owned(),
            raft: raft_config(DEFAULT_SNAPSHOT_EVERY).expect("valid raft config"),
            leader_wait: Duration::from_secs(30),
        };
        let (member, _) = lifecycle::init(
            &settings,
            "sim",
            lifecycle::InitSeed::default(),
            &lifecycle::ClusterDefaults {
                audit_retention: 0,
                ipam_pool: jaco::state::DEFAULT_IPAM_POOL.to_owned(),
            },
            Arc::new(Metrics::new()),
        )
        .await
        .expect("cluster init");
        let sim = SimCluster { member, nodes };
        let joins = (1..nodes).map(|i| {
            let node = pb::Node {
                name: node_name(i),
                raft_id: 1_000_000 + i as u64,
                api_address: format!("{}:7000", node_name(i)),
                raft_address: format!("{}:7000", node_name(i)),
                ..Default::default()
            };
            (
                Identity::Local,
                Kind::AddNode(pb::AddNode { node: Some(node) }),
            )
        });
        sim.submit_all(joins.collect()).await;
        let info = (0..nodes).map(|i| {
            let kind = Kind::UpdateNodeInfo(pb::UpdateNodeInfo {
                node: node_name(i),
                api_address: format!("{}:7000", node_name(i)),
                raft_address: format!("{}:7000", node_name(i)),
                capacity: Some(NODE_CAPACITY),
                ..Default::default()
            });
            (Identity::Node(node_name(i)), kind)
        });
        sim.submit_all(info.collect()).await;
        let ready = (0..nodes).map(|i| {
            let kind = Kind::SetNodeStatus(pb::SetNodeStatus {
                node: node_name(i),
                status: pb::NodeStatus::Ready.into(),
                ..Default::default()
            });
            (Identity::Node(node_name(i)), kind)
        });
        sim.submit_all(ready.collect()).await;
        sim
    }

    /// Commits every command, [`IN_FLIGHT`] at a time, and panics on the first rejection.
    pub async fn submit_all(&self, commands: Vec<(Identity, Kind)>) -> Vec<Outcome> {
        futures_util::stream::iter(commands)
            .map(|(identity, kind)| {
                let member = self.member.clone();
                async move { member.submit(&identity, kind).await }
            })
            .buffer_unordered(IN_FLIGHT)
            .map(|result: Result<Outcome, Error>| result.unwrap_or_else(|e| panic!("{e}")))
            .collect()
            .await
    }

    /// The simulated runtime: every node reports each replica desired on it and not yet
    /// observed running as `running` at its desired spec (one `ReportReplicas` per node, as
    /// node agents send). Returns how many reports it committed.
    pub async fn observe_running(&self) -> usize {
        let reports: BTreeMap<String, Vec<pb::ReplicaObserved>> = self.member.read(|state| {
            let mut reports: BTreeMap<String, Vec<pb::ReplicaObserved>> = BTreeMap::new();
            for replica in state.replicas_desired() {
                let running = state
                    .replica_observed(&replica.id)
                    .is_some_and(|o| o.state() == pb::ReplicaState::Running);
                if running {
                    continue;
                }
                reports
                    .entry(replica.node.clone())
                    .or_default()
                    .push(pb::ReplicaObserved {
                        id: replica.id.clone(),
                        state: pb::ReplicaState::Running.into(),
                        container_id: format!("c-{}", replica.id),
                        node: replica.node.clone(),
                        spec_hash: replica.spec_hash.clone(),
                        revision: replica.revision,
                        ..Default::default()
                    });
            }
            reports
        });
        let count = reports.len();
        let commands = reports.into_iter().map(|(node, observations)| {
            let kind = Kind::ReportReplicas(pb::ReportReplicas {
                node: node.clone(),
                observations,
            });
            (Identity::Node(node), kind)
        });
        self.submit_all(commands.collect()).await;
        count
    }

    /// The raft index of the last log entry.
    pub fn last_log_index(&self) -> u64 {
        self.member.metrics().last_log_index.unwrap_or(0)
    }
}

/// `ApplyDeployment` of deployment `name`: one spread service `web` with `replicas` replicas,
/// each reserving [`REPLICA_RESERVATION`].
pub fn deployment(name: &str, replicas: u32) -> (Identity, Kind) {
    let image = format!("registry.example/{name}/web:1");
    let service = pb::ServiceSpec {
        name: "web".into(),
        replicas,
        placement: pb::PlacementMode::Spread.into(),
        image: image.clone(),
        spec_hash: jaco::pki::hex(&jaco::pki::sha256(image.as_bytes())),
        reservations: Some(REPLICA_RESERVATION),
        ..Default::default()
    };
    let kind = Kind::ApplyDeployment(pb::ApplyDeployment {
        deployment: name.into(),
        spec: Some(pb::DeploymentSpec {
            services: vec![service],
            ..Default::default()
        }),
        ..Default::default()
    });
    (Identity::Local, kind)
}

/// Peak resident set size of this process (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
