//! The real replicated state machine behind raft: three in-process nodes over real gRPC, each
//! with its own fsynced log, running `jaco::state::State`. Writes submitted on any node are
//! forwarded to the leader, applied identically everywhere, and a rejected command changes
//! nothing on any node.

mod raft_fixture;

use std::time::Duration;

use jaco::error::Code;
use jaco::pki::tokens::{OperatorToken as TokenGenerator, hash_token};
use jaco::proto::v1 as pb;
use jaco::raft::{StateMachineCore, raft_config};
use jaco::state::{State, into_outcome};
use pb::command::Kind;
use raft_fixture::cluster::{TestNode, start_three_with};

const TIME: i64 = 1_700_000_000_000;

fn command(kind: Kind) -> pb::Command {
    pb::Command {
        identity: "local".into(),
        time_unix_ms: TIME,
        origin_node: "node-b".into(),
        kind: Some(kind),
        ..Default::default()
    }
}

fn init_cluster(nodes: &[TestNode<State>]) -> Kind {
    let (_, hash) = TokenGenerator::generate();
    Kind::InitCluster(pb::InitCluster {
        meta: Some(pb::ClusterMeta {
            cluster_id: "cluster-1".into(),
            name: "test".into(),
            ..Default::default()
        }),
        node: Some(pb::Node {
            name: nodes[0].name.clone(),
            raft_id: nodes[0].id,
            api_address: nodes[0].addr.to_string(),
            raft_address: nodes[0].addr.to_string(),
            ..Default::default()
        }),
        bootstrap_token: Some(pb::OperatorToken {
            name: "bootstrap".into(),
            sha256: hash.to_vec(),
            ..Default::default()
        }),
    })
}

fn issue_token(name: &str) -> (String, Kind) {
    let (plaintext, hash) = TokenGenerator::generate();
    let kind = Kind::IssueOperatorToken(pb::IssueOperatorToken {
        token: Some(pb::OperatorToken {
            name: name.into(),
            sha256: hash.to_vec(),
            issued_at_unix_ms: TIME,
            ..Default::default()
        }),
    });
    (plaintext, kind)
}

/// Waits until every node has applied `index`, then returns each node's snapshot bytes.
async fn snapshots_at(nodes: &[TestNode<State>], index: u64) -> Vec<Vec<u8>> {
    for node in nodes {
        node.wait("applies the write", |m| {
            m.last_applied.is_some_and(|log_id| log_id.index >= index)
        })
        .await;
    }
    nodes
        .iter()
        .map(|n| n.core.read().expect("state lock").snapshot())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_any_node_reach_every_state_machine_identically() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = raft_config(5_000).expect("config");
    let nodes = start_three_with::<State>(root.path(), &config).await;

    // Initialise through a follower: the write is forwarded to the leader.
    let result = nodes[1]
        .submitter
        .submit(command(init_cluster(&nodes)))
        .await
        .expect("committed");
    into_outcome(result).expect("the cluster initialises");

    let (plaintext, kind) = issue_token("ci-deploy");
    let result = nodes[2]
        .submitter
        .submit(command(kind))
        .await
        .expect("committed");
    into_outcome(result).expect("the token is issued");

    // A duplicate name is rejected by the state machine on every node alike.
    let (_, duplicate) = issue_token("ci-deploy");
    let result = nodes[1]
        .submitter
        .submit(command(duplicate))
        .await
        .expect("committed");
    let index = result.index;
    let error = into_outcome(result).expect_err("a duplicate token name is refused");
    assert_eq!(error.code, Code::ValidationFailed);

    let snapshots = snapshots_at(&nodes, index).await;
    assert!(
        snapshots.windows(2).all(|pair| pair[0] == pair[1]),
        "the three state machines diverged"
    );
    let hash = hash_token(&plaintext).expect("hash");
    for node in &nodes {
        let state = node.core.read().expect("state lock");
        let token = state
            .operator_token("ci-deploy")
            .expect("token on every node");
        assert_eq!(
            token.sha256,
            hash.to_vec(),
            "the first token won on {}",
            node.name
        );
        assert!(state.authenticate(&hash).is_ok());
    }

    // Revocation through one node is visible on every node.
    let revoke = Kind::RevokeOperatorToken(pb::RevokeOperatorToken {
        name: "ci-deploy".into(),
    });
    let result = nodes[0]
        .submitter
        .submit(command(revoke))
        .await
        .expect("committed");
    let index = result.index;
    into_outcome(result).expect("revoked");
    snapshots_at(&nodes, index).await;
    for node in &nodes {
        let state = node.core.read().expect("state lock");
        let error = state.authenticate(&hash).expect_err("revoked everywhere");
        assert_eq!(error.code, Code::TokenRevoked, "on {}", node.name);
    }

    for node in nodes {
        tokio::time::timeout(Duration::from_secs(15), node.stop())
            .await
            .expect("stops");
    }
}
