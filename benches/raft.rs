//! Control-plane benchmark: a three-node raft cluster in one process, nodes talking real gRPC
//! over 127.0.0.1 with fsynced redb logs, measured for commit latency (1 client), committed
//! writes/s (64 concurrent clients), follower-forwarded writes, and leader-kill → writes
//! accepted again over 20 kills; plus the cost of the real state machine's `apply`.
//!
//! Run: `cargo bench --bench raft` (results go to docs/benchmarks.md by hand, with the date and
//! machine). The cluster's state machine is the test fixture `CountingCore` so that the figures
//! isolate consensus, transport and disk; `State::apply` is measured separately below. Not a
//! test: it asserts nothing and is skipped by the test runner (`--list` prints nothing).

#[path = "../tests/raft_fixture/mod.rs"]
mod raft_fixture;

use std::time::{Duration, Instant};

use jaco::proto::v1 as pb;
use jaco::raft::{StateMachineCore, raft_config};
use jaco::state::State;
use openraft::ServerState;
use prost::Message as _;
use raft_fixture::cluster::{TestNode, command, start_three};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn summary(name: &str, mut samples: Vec<Duration>, elapsed: Duration) {
    samples.sort();
    println!(
        "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
        samples.len(),
        samples.len() as f64 / elapsed.as_secs_f64(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().expect("samples").as_secs_f64() * 1e3,
    );
}

async fn leader(nodes: &[TestNode]) -> &TestNode {
    for _ in 0..200 {
        if let Some(node) = nodes
            .iter()
            .find(|n| n.raft().metrics().borrow().state == ServerState::Leader)
        {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no leader");
}

async fn sequential_writes(node: &TestNode, count: usize) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        node.raft().client_write(command(i)).await.expect("write");
        samples.push(t.elapsed());
    }
    (samples, started.elapsed())
}

async fn concurrent_writes(
    node: &TestNode,
    clients: usize,
    each: usize,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let raft = node.raft().clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(each);
            for i in 0..each {
                let t = Instant::now();
                raft.client_write(command(client * 1_000_000 + i))
                    .await
                    .expect("write");
                samples.push(t.elapsed());
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.expect("client"));
    }
    (samples, started.elapsed())
}

async fn forwarded_writes(follower: &TestNode, count: usize) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        let command = pb::Command {
            identity: "bench".into(),
            request_id: format!("fwd-{i}"),
            ..Default::default()
        };
        follower
            .submitter
            .submit(command)
            .await
            .expect("forwarded write");
        samples.push(t.elapsed());
    }
    (samples, started.elapsed())
}

/// Kills the leader `kills` times; each time measures until a write on a survivor commits,
/// then restarts the killed node from its data directory.
async fn leader_kills(
    mut nodes: Vec<TestNode>,
    kills: usize,
    config: openraft::Config,
) -> Vec<Duration> {
    let mut samples = Vec::new();
    for round in 0..kills {
        let index = {
            let leader = leader(&nodes).await;
            nodes
                .iter()
                .position(|n| n.id == leader.id)
                .expect("leader")
        };
        let old = nodes.remove(index);
        let killed_at = Instant::now();
        let (name, dir, addr) = old.stop().await;
        // A client keeps writing through any survivor until one write commits.
        loop {
            let mut committed = false;
            for node in &nodes {
                let command = pb::Command {
                    identity: "bench".into(),
                    request_id: format!("kill-{round}"),
                    ..Default::default()
                };
                if node.submitter.submit(command).await.is_ok() {
                    committed = true;
                    break;
                }
            }
            if committed {
                break;
            }
        }
        samples.push(killed_at.elapsed());
        let restarted = TestNode::start(&name, &dir, addr, config.clone()).await;
        restarted
            .wait("catches up", |m| m.current_leader.is_some())
            .await;
        nodes.push(restarted);
    }
    for node in nodes {
        node.stop().await;
    }
    samples
}

fn state_apply_cost(count: usize) -> (Duration, Duration) {
    let mut state = State::new();
    let init = pb::Command {
        identity: "local".into(),
        time_unix_ms: 1_700_000_000_000,
        kind: Some(pb::command::Kind::InitCluster(pb::InitCluster {
            meta: Some(pb::ClusterMeta {
                cluster_id: "bench".into(),
                name: "bench".into(),
                ..Default::default()
            }),
            node: Some(pb::Node {
                name: "node-a".into(),
                raft_id: 1,
                api_address: "node-a:7000".into(),
                raft_address: "node-a:7000".into(),
                ..Default::default()
            }),
            bootstrap_token: Some(pb::OperatorToken {
                name: "bootstrap".into(),
                sha256: vec![7; 32],
                ..Default::default()
            }),
        })),
        ..Default::default()
    };
    let result = pb::CommandResult::decode(
        StateMachineCore::apply(&mut state, 1, &init.encode_to_vec()).as_slice(),
    )
    .expect("result");
    assert!(
        !matches!(result.outcome, Some(pb::command_result::Outcome::Error(_))),
        "init: {result:?}"
    );
    let commands: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            pb::Command {
                identity: "bench".into(),
                time_unix_ms: 1_700_000_000_000 + i as i64,
                kind: Some(pb::command::Kind::AppendAudit(pb::AppendAudit {
                    events: vec![pb::AuditEvent {
                        r#type: pb::AuditEventType::Apply as i32,
                        identity: "bench".into(),
                        payload: [("deployment".to_owned(), format!("d{i}"))].into(),
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect();
    let started = Instant::now();
    for (i, bytes) in commands.iter().enumerate() {
        StateMachineCore::apply(&mut state, i as u64 + 2, bytes);
    }
    let applied = started.elapsed();
    let started = Instant::now();
    let snapshot = StateMachineCore::snapshot(&state);
    let snapshot_time = started.elapsed();
    println!(
        "state: {count} AppendAudit applies in {applied:?} ({:.0}/s); snapshot of {} bytes in {snapshot_time:?}",
        count as f64 / applied.as_secs_f64(),
        snapshot.len()
    );
    (applied, snapshot_time)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let config = raft_config(5_000).expect("config");
    let nodes = start_three(root.path(), &config).await;

    println!("| measurement | writes | writes/s | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    let leader_node = leader(&nodes).await;
    let (samples, elapsed) = sequential_writes(leader_node, 2_000).await;
    summary("commit, 1 client", samples, elapsed);
    let (samples, elapsed) = concurrent_writes(leader_node, 64, 200).await;
    summary("commit, 64 clients", samples, elapsed);
    let follower = nodes
        .iter()
        .find(|n| n.id != leader_node.id)
        .expect("a follower");
    let (samples, elapsed) = forwarded_writes(follower, 1_000).await;
    summary("forwarded via follower, 1 client", samples, elapsed);

    let mut kills = leader_kills(nodes, 20, config).await;
    kills.sort();
    println!(
        "leader kill → write committed on a survivor, {} kills: min {:.0} ms, median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        kills.len(),
        kills[0].as_secs_f64() * 1e3,
        percentile(&kills, 0.5).as_secs_f64() * 1e3,
        percentile(&kills, 0.95).as_secs_f64() * 1e3,
        kills.last().expect("kills").as_secs_f64() * 1e3,
    );
    state_apply_cost(100_000);
}
