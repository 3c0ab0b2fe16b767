//! Real multi-process clusters: `jaco daemon` processes in their own network namespaces on a
//! bridge, formed with `cluster init` and `cluster join`, then put through leader loss,
//! partitions, restarts and kill -9 during writes. Every wait has a deadline; the harness kills
//! the daemons and deletes the namespaces even when a test fails.

mod support;

use std::time::{Duration, Instant};

use jaco::error::Code;
use jaco::proto::v1 as pb;
use support::daemons::{DEADLINE, Daemons};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_forward_and_survive_leader_loss() {
    let mut cluster = Daemons::start(3, "");
    cluster.form().await;

    // A write on a follower is forwarded to the leader and seen everywhere.
    let leader = cluster.leader(0).await;
    let follower = (leader + 1) % 3;
    cluster
        .issue_token(follower, "via-follower")
        .await
        .expect("a write on a follower commits");
    for index in 0..3 {
        let start = Instant::now();
        while !cluster
            .token_names(index)
            .await
            .contains(&"via-follower".to_owned())
        {
            assert!(start.elapsed() < DEADLINE, "n{index} never saw the token");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // SIGKILL the leader: a new one is elected and writes are accepted again.
    cluster.kill(leader);
    let survivor = (leader + 1) % 3;
    let start = Instant::now();
    loop {
        match cluster.issue_token(survivor, "after-kill").await {
            Ok(_) => break,
            Err(error) => assert!(
                matches!(error.code, Code::NoLeader | Code::QuorumLost)
                    && start.elapsed() < DEADLINE,
                "writes never accepted again: {}",
                error.render(true)
            ),
        }
    }
    let status = cluster
        .status(survivor)
        .await
        .expect("status from a survivor");
    assert_ne!(status.leader, cluster.nodes[leader].name, "{status:?}");

    // The killed node comes back and catches up.
    cluster.launch(leader);
    let start = Instant::now();
    while !cluster
        .token_names(leader)
        .await
        .contains(&"after-kill".to_owned())
    {
        assert!(
            start.elapsed() < DEADLINE,
            "the restarted node never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_join_and_keep_five_voters() {
    let cluster = Daemons::start(5, "");
    cluster.form().await;
    let status = cluster.status(4).await.expect("status");
    assert_eq!(status.nodes.len(), 5);
    assert!(!status.leader.is_empty());
    let learners = status
        .nodes
        .iter()
        .filter(|n| n.raft_role() == pb::RaftRole::Learner)
        .count();
    assert_eq!(learners, 0, "{status:?}");
}
