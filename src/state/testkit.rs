//! Test fixtures for the state machine: a [`Harness`] that applies commands at increasing raft
//! indices, checks the invariants every apply must keep, and builders for common commands.
//!
//! Test-only; it must not do I/O.

use sha2::{Digest, Sha256};

use crate::error::{Code, Error};
use crate::proto::v1::{
    AddNode, AllocateSubnet, ApplyDeployment, ClusterMeta, Command, CommandResult, DeploymentSpec,
    InitCluster, Node, OperatorToken, PlacementMode, ServiceSpec, command::Kind,
    command_result::Outcome,
};

use super::{State, WatchEvent, into_outcome};

/// The time of the first command of every harness.
pub const T0: i64 = 1_750_000_000_000;

/// The secret whose hash is the bootstrap token of [`init_cluster`].
pub const BOOTSTRAP_SECRET: &str = "bootstrap-secret";

/// SHA-256 of a test secret.
pub fn sha(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything about a state that a rejected command must leave alone: the revision, the
/// snapshot apart from `last_applied_index`, and the derived indexes.
pub fn fingerprint(state: &State) -> (u64, Vec<u8>, String) {
    let mut snapshot = state.to_snapshot();
    snapshot.last_applied_index = 0;
    let indexes = format!("{:?}{:?}", state.routes, state.tcp_routes);
    (
        state.revision,
        prost::Message::encode_to_vec(&snapshot),
        indexes,
    )
}

/// Applies commands one index at a time and checks each result.
pub struct Harness {
    /// The state under test.
    pub state: State,
    /// The index of the last command applied.
    pub index: u64,
    /// The time the next command carries.
    pub now: i64,
    /// The watch events of the last command.
    pub events: Vec<WatchEvent>,
}

impl Harness {
    /// An empty state.
    pub fn new() -> Self {
        Harness {
            state: State::new(),
            index: 0,
            now: T0,
            events: Vec::new(),
        }
    }

    /// A state after [`init_cluster`].
    pub fn initialised() -> Self {
        let mut h = Harness::new();
        h.ok(init_cluster());
        h
    }

    /// Applies `kind` as `identity` at the next index.
    pub fn apply_as(&mut self, identity: &str, kind: Kind) -> CommandResult {
        self.index += 1;
        let command = Command {
            identity: identity.into(),
            time_unix_ms: self.now,
            origin_node: "n1".into(),
            request_id: String::new(),
            kind: Some(kind),
        };
        let (result, events) = self.state.apply(self.index, &command);
        assert_eq!(result.index, self.index);
        assert_eq!(self.state.last_applied_index(), self.index);
        self.events = events;
        result
    }

    /// Applies `kind` as `local` and expects success.
    pub fn ok(&mut self, kind: Kind) -> Outcome {
        self.ok_as("local", kind)
    }

    /// Applies `kind` as `identity`, expects success, and checks the change bookkeeping: every
    /// event carries this index, the revision moved iff something changed, and the state
    /// survives a snapshot round trip.
    pub fn ok_as(&mut self, identity: &str, kind: Kind) -> Outcome {
        let revision = self.state.revision();
        let outcome = into_outcome(self.apply_as(identity, kind))
            .unwrap_or_else(|e| panic!("command rejected: {e}"));
        assert!(self.events.iter().all(|e| e.revision == self.index));
        if self.events.is_empty() {
            assert_eq!(
                self.state.revision(),
                revision,
                "revision moved without a change"
            );
        } else {
            assert_eq!(self.state.revision(), self.index);
        }
        let restored = State::from_snapshot_bytes(&self.state.to_snapshot_bytes())
            .unwrap_or_else(|e| panic!("snapshot does not restore: {e}"));
        assert_eq!(restored.to_snapshot_bytes(), self.state.to_snapshot_bytes());
        assert_eq!(
            format!("{:?}{:?}", restored.routes, restored.tcp_routes),
            format!("{:?}{:?}", self.state.routes, self.state.tcp_routes),
            "route indexes drifted from the deployments"
        );
        outcome
    }

    /// Applies `kind` as `local` and expects rejection with `code`.
    pub fn rejected(&mut self, kind: Kind, code: Code) -> Error {
        self.rejected_as("local", kind, code)
    }

    /// Applies `kind` as `identity`, expects rejection with `code`, and checks that nothing
    /// but `last_applied_index` changed.
    pub fn rejected_as(&mut self, identity: &str, kind: Kind, code: Code) -> Error {
        let before = fingerprint(&self.state);
        let result = self.apply_as(identity, kind);
        let error = into_outcome(result).map(|o| format!("{o:?}")).unwrap_err();
        assert_eq!(error.code, code, "{error}");
        assert!(self.events.is_empty(), "a rejected command produced events");
        assert_eq!(
            fingerprint(&self.state),
            before,
            "a rejected command changed state"
        );
        error
    }
}

/// `InitCluster` for cluster `c-1`, first node `n1` (raft id 1), bootstrap token from
/// [`BOOTSTRAP_SECRET`].
pub fn init_cluster() -> Kind {
    Kind::InitCluster(InitCluster {
        meta: Some(ClusterMeta {
            cluster_id: "c-1".into(),
            name: "test".into(),
            ca_cert_pem: "CA-CERT".into(),
            ca_key_pem: "CA-PRIVATE-KEY".into(),
            ..Default::default()
        }),
        node: Some(node("n1", 1)),
        bootstrap_token: Some(OperatorToken {
            name: "bootstrap".into(),
            sha256: sha(BOOTSTRAP_SECRET),
            ..Default::default()
        }),
    })
}

/// A node record as a joiner presents it.
pub fn node(name: &str, raft_id: u64) -> Node {
    Node {
        name: name.into(),
        raft_id,
        api_address: format!("{name}:7000"),
        raft_address: format!("{name}:7000"),
        ..Default::default()
    }
}

/// `AddNode` for [`node`].
pub fn add_node(name: &str, raft_id: u64) -> Kind {
    Kind::AddNode(AddNode {
        node: Some(node(name, raft_id)),
    })
}

/// A spread service with one replica.
pub fn service(name: &str, image: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        replicas: 1,
        placement: PlacementMode::Spread.into(),
        image: image.into(),
        spec_hash: hex(&sha(&format!("{name}:{image}"))),
        ..Default::default()
    }
}

/// A spec with the given (service, image) pairs.
pub fn spec(services: &[(&str, &str)]) -> DeploymentSpec {
    DeploymentSpec {
        services: services.iter().map(|(n, i)| service(n, i)).collect(),
        ..Default::default()
    }
}

/// `ApplyDeployment` of `spec` without blobs or checks.
pub fn apply_deployment(name: &str, spec: DeploymentSpec) -> Kind {
    Kind::ApplyDeployment(ApplyDeployment {
        deployment: name.into(),
        spec: Some(spec),
        ..Default::default()
    })
}

/// `AllocateSubnet` for one (deployment, network, node).
pub fn allocate_subnet(deployment: &str, network: &str, node: &str) -> Kind {
    Kind::AllocateSubnet(AllocateSubnet {
        deployment: deployment.into(),
        network: network.into(),
        node: node.into(),
    })
}
