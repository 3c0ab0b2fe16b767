//! Raft clusters in one process: every node has its own data directory and its own tonic server
//! on 127.0.0.1 (a random port), and nodes talk through the real `Internal` gRPC service.
//!
//! Every wait is on raft metrics with a deadline (`Raft::wait`), never a fixed sleep. Temporary
//! directories are removed and servers stopped when a test ends, failed or not.

mod raft_fixture;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jaco::error::Code;
use jaco::proto::v1 as pb;
use jaco::raft::{NodeId, raft_config};
use openraft::ServerState;
use prost::Message as _;
use raft_fixture::cluster::{
    DEADLINE, TestNode, command, converge, form_cluster, start_three, write_all,
};
use raft_fixture::commands;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_fail_over_and_catch_up_after_a_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = raft_config(5_000).expect("config");
    let mut nodes = start_three(root.path(), &config).await;

    write_all(&nodes[0], 0..100).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    let written = converge(&nodes[0], &all).await;
    let expected: Vec<Vec<u8>> = (0..100).map(|i| command(i).0).collect();
    assert_eq!(written, expected);

    // Kill the leader; a survivor must take over and accept writes.
    let old_leader = nodes.remove(0);
    let old_id = old_leader.id;
    let killed_at = Instant::now();
    let (name, dir, addr) = old_leader.stop().await;
    let survivors: BTreeSet<NodeId> = nodes.iter().map(|n| n.id).collect();
    let new_leader_id = nodes[0]
        .wait("sees a new leader", |m| {
            m.current_leader
                .is_some_and(|id| id != old_id && survivors.contains(&id))
        })
        .await
        .current_leader
        .expect("a leader");
    let elected_after = killed_at.elapsed();
    let new_leader = nodes
        .iter()
        .find(|n| n.id == new_leader_id)
        .expect("the leader is a survivor");
    new_leader
        .wait("leads", |m| m.state == ServerState::Leader)
        .await;
    write_all(new_leader, 100..101).await;
    let writes_after = killed_at.elapsed();
    eprintln!(
        "leader failover: new leader after {elected_after:?}, first write accepted after {writes_after:?}"
    );
    assert!(
        writes_after < Duration::from_secs(5),
        "writes resumed only after {writes_after:?}"
    );
    write_all(new_leader, 101..120).await;

    // Restart the old leader from its data directory on its old address: it rejoins as a
    // follower and catches up.
    let restarted = TestNode::start(&name, &dir, addr, config.clone()).await;
    assert!(
        commands(&restarted.core).len() >= 100,
        "the restarted node re-applied its committed log before hearing from anyone"
    );
    nodes.push(restarted);
    let new_leader = nodes
        .iter()
        .find(|n| n.id == new_leader_id)
        .expect("leader");
    let all: Vec<&TestNode> = nodes.iter().collect();
    let written = converge(new_leader, &all).await;
    assert_eq!(written.len(), 120);

    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_behind_the_compacted_log_gets_a_chunked_snapshot() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut config = raft_config(20).expect("config");
    config.max_in_snapshot_log_to_keep = 0;
    config.purge_batch_size = 1;
    // Force a multi-chunk InstallSnapshot transfer.
    config.snapshot_max_chunk_size = 256;
    let config = config.validate().expect("config");
    let any_port: SocketAddr = "127.0.0.1:0".parse().expect("address");

    let leader = TestNode::start("node-a", &root.path().join("a"), any_port, config.clone()).await;
    form_cluster(&leader, &[]).await;
    write_all(&leader, 0..60).await;
    let metrics = leader
        .wait("snapshots and purges its log", |m| {
            m.snapshot.is_some_and(|s| s.index >= 40) && m.purged.is_some_and(|p| p.index >= 40)
        })
        .await;
    let purged = metrics.purged.expect("purged").index;

    // The newcomer needs entries the leader no longer has: only a snapshot can bring it up.
    let newcomer =
        TestNode::start("node-b", &root.path().join("b"), any_port, config.clone()).await;
    leader
        .raft()
        .add_learner(newcomer.id, newcomer.addr(), true)
        .await
        .expect("adds a learner");
    newcomer
        .wait("installs a snapshot", |m| {
            m.snapshot.is_some_and(|s| s.index >= purged)
        })
        .await;
    converge(&leader, &[&newcomer]).await;
    assert!(newcomer.dir.join("raft/snapshot.bin").exists());

    // Restarted, the newcomer comes back from its own snapshot file and log.
    let (name, dir, addr) = newcomer.stop().await;
    let newcomer = TestNode::start(&name, &dir, addr, config.clone()).await;
    assert!(
        commands(&newcomer.core).len() as u64 >= purged - 2,
        "the snapshot was restored on start"
    );
    write_all(&leader, 60..70).await;
    let written = converge(&leader, &[&newcomer]).await;
    assert_eq!(written.len(), 70);

    newcomer.stop().await;
    leader.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_failure_stops_raft_and_fires_the_fatal_signal() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = raft_config(5_000).expect("config");
    let any_port: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let node = TestNode::start("node-a", &root.path().join("a"), any_port, config).await;
    form_cluster(&node, &[]).await;
    write_all(&node, 0..3).await;

    // The snapshot's temporary file cannot be created: building a snapshot fails.
    std::fs::create_dir(node.dir.join("raft/snapshot.bin.tmp")).expect("mkdir");
    node.raft().trigger().snapshot().await.expect("triggers");
    let error = tokio::time::timeout(DEADLINE, node.node.fatal().wait())
        .await
        .expect("the fatal signal fires");
    assert!(error.contains("snapshot"), "{error}");
    node.wait("stops", |m| m.running_state.is_err()).await;
    assert!(node.raft().client_write(command(3)).await.is_err());

    node.stop().await;
}

/// A command as the API builds it.
fn api_command(i: usize) -> pb::Command {
    pb::Command {
        identity: "local".into(),
        request_id: format!("write-{i}"),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_writes_and_a_cut_off_node_answers_quorum_lost() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = raft_config(5_000).expect("config");
    let mut nodes = start_three(root.path(), &config).await;

    // A write submitted on a follower is forwarded to the leader and applied everywhere.
    let result = nodes[1]
        .submitter
        .submit(api_command(1))
        .await
        .expect("forwarded write commits");
    assert!(result.index > 0);
    let all: Vec<&TestNode> = nodes.iter().collect();
    converge(&nodes[0], &all).await;
    let forwarded = pb::Command::decode(commands(&nodes[2].core).last().unwrap().as_slice())
        .expect("the applied entry is the forwarded command");
    assert_eq!(forwarded.request_id, "write-1");

    // Stop two of three nodes: the survivor cannot reach a majority and must say so instead
    // of hanging.
    let survivor = nodes.remove(2);
    for node in nodes {
        node.stop().await;
    }
    let started = Instant::now();
    let error = tokio::time::timeout(DEADLINE, survivor.submitter.submit(api_command(2)))
        .await
        .expect("the write is answered, not left hanging")
        .expect_err("no majority, no commit");
    eprintln!("quorum_lost answered after {:?}", started.elapsed());
    assert_eq!(error.code, Code::QuorumLost, "{error:?}");
    survivor.stop().await;
}
