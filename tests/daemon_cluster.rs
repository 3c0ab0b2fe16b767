//! Real multi-process clusters: `jaco daemon` processes in their own network namespaces on a
//! bridge, formed with `cluster init` and `cluster join`, then put through leader loss,
//! partitions, restarts and kill -9 during writes. Every wait has a deadline; the harness kills
//! the daemons and deletes the namespaces even when a test fails.

mod support;

use std::time::{Duration, Instant};

use jaco::error::Code;
use jaco::proto::v1 as pb;
use jaco::proto::v1::cluster_client::ClusterClient;
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
    let accepted = write_until_accepted(&cluster, survivor, "after-kill").await;
    let status = cluster
        .wait_status(survivor, "the killed node is recorded unreachable", |s| {
            s.nodes.iter().any(|n| {
                n.name == cluster.nodes[leader].name
                    && n.reachability() == pb::Reachability::Unreachable
            })
        })
        .await;
    assert_ne!(status.leader, cluster.nodes[leader].name, "{status:?}");

    // The killed node comes back, catches up and is reachable again.
    cluster.launch(leader);
    cluster
        .wait_status(survivor, "the restarted node is reachable again", |s| {
            s.nodes
                .iter()
                .all(|n| n.reachability() == pb::Reachability::Reachable)
        })
        .await;
    let start = Instant::now();
    while !cluster.token_names(leader).await.contains(&accepted) {
        assert!(
            start.elapsed() < DEADLINE,
            "the restarted node never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_join_keep_five_voters_and_shrink_on_remove() {
    let cluster = Daemons::start(5, "");
    cluster.form().await;
    let status = cluster.status(4).await.expect("status");
    assert_eq!(status.nodes.len(), 5);
    let learners = status
        .nodes
        .iter()
        .filter(|n| n.raft_role() == pb::RaftRole::Learner)
        .count();
    assert_eq!(learners, 0, "{status:?}");

    // Removing a node takes it out of raft; four members keep three voters.
    let leader = cluster.leader(0).await;
    let victim = (leader + 1) % 5;
    let socket = cluster.nodes[leader].socket.to_string_lossy().into_owned();
    let (code, _, err) = cli(
        &cluster,
        leader,
        &[
            "--socket",
            &socket,
            "node",
            "remove",
            &cluster.nodes[victim].name,
        ],
    );
    assert_eq!(code, 0, "{err}");
    cluster
        .wait_status(leader, "four members, three voters, one learner", |s| {
            let count =
                |role: pb::RaftRole| s.nodes.iter().filter(|n| n.raft_role() == role).count();
            s.nodes.len() == 4
                && count(pb::RaftRole::Leader) + count(pb::RaftRole::Follower) == 3
                && count(pb::RaftRole::Learner) == 1
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_changes_resumes_and_metrics_count_rpcs() {
    use jaco::proto::v1::deploy_client::DeployClient;

    let cluster = Daemons::start(3, "");
    cluster.form().await;
    let leader = cluster.leader(0).await;
    let follower = (leader + 1) % 3;
    let mut watch = DeployClient::new(cluster.local(follower).await)
        .watch(pb::WatchRequest {
            types: vec![pb::EntityType::OperatorToken as i32],
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    cluster.issue_token(leader, "watched").await.expect("issue");
    let event = tokio::time::timeout(DEADLINE, watch.message())
        .await
        .expect("an event in time")
        .expect("stream open")
        .expect("a message");
    let Some(pb::watch_response::Msg::Event(event)) = event.msg else {
        panic!("expected an event, got {event:?}");
    };
    assert_eq!(event.r#type(), pb::EntityType::OperatorToken);
    assert_eq!(event.key, "watched");
    let Some(pb::entity::Entity::OperatorToken(token)) =
        event.after.as_ref().and_then(|a| a.entity.clone())
    else {
        panic!("the event carries the token: {event:?}");
    };
    assert!(
        token.sha256.is_empty(),
        "watch must not carry the token hash"
    );

    // Resuming from before that revision replays it.
    let mut resumed = DeployClient::new(cluster.local(follower).await)
        .watch(pb::WatchRequest {
            types: vec![pb::EntityType::OperatorToken as i32],
            since_revision: event.revision - 1,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let replayed = tokio::time::timeout(DEADLINE, resumed.message())
        .await
        .expect("in time")
        .expect("open")
        .expect("a message");
    assert!(
        matches!(&replayed.msg, Some(pb::watch_response::Msg::Event(e)) if e.key == "watched"),
        "{replayed:?}"
    );

    // /metrics on the leader counts the RPC and shows raft's position.
    let output = cluster
        .net
        .command(leader, "python3")
        .args([
            "-c",
            "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9100/metrics').read().decode())",
        ])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(r#"jaco_rpc_requests_total{method="/jaco.v1.Tokens/Issue",code="ok"} 1"#),
        "{text}"
    );
    assert!(text.contains("jaco_raft_is_leader 1"), "{text}");
    assert!(
        text.contains("jaco_raft_commit_latency_seconds_count"),
        "{text}"
    );
}

/// Issues tokens named `<prefix>-<attempt>` through daemon `index` until one is accepted,
/// allowing only `no_leader` and `quorum_lost` meanwhile; returns the accepted name. A fresh
/// name per attempt, because a write refused with `reason: outcome_unknown` may have committed.
async fn write_until_accepted(cluster: &Daemons, index: usize, prefix: &str) -> String {
    let start = Instant::now();
    for attempt in 0.. {
        let name = format!("{prefix}-{attempt}");
        match cluster.issue_token(index, &name).await {
            Ok(_) => return name,
            Err(error) => assert!(
                matches!(error.code, Code::NoLeader | Code::QuorumLost)
                    && start.elapsed() < DEADLINE,
                "writes not accepted again: {}",
                error.render(true)
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!("the loop returns or panics")
}

/// Runs the real `jaco` CLI inside daemon `from`'s namespace; returns (exit status, stdout,
/// stderr).
fn cli(cluster: &Daemons, from: usize, args: &[&str]) -> (i32, String, String) {
    let output = cluster
        .net
        .command(from, env!("CARGO_BIN_EXE_jaco"))
        .args(args)
        .env_remove("JACO_TOKEN")
        .env_remove("JACO_CA_CERT")
        .output()
        .expect("run jaco");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `jaco token list` over TLS to daemon `target`, from inside daemon `from`'s namespace.
fn remote_token_list(cluster: &Daemons, from: usize, target: usize, token: &str) -> (i32, String) {
    let ca = cluster.nodes[0].data_dir.join("pki/ca.crt");
    let server = cluster.api_addr(target);
    let (status, out, err) = cli(
        cluster,
        from,
        &[
            "--server",
            &server,
            "--ca-cert",
            &ca.to_string_lossy(),
            "--token",
            token,
            "token",
            "list",
            "-o",
            "json",
        ],
    );
    (status, format!("{out}{err}"))
}

/// `jaco restore` of `input` into `data_dir` as node n0.
fn restore(
    cluster: &Daemons,
    input: &std::path::Path,
    data_dir: &std::path::Path,
) -> (i32, String, String) {
    cli(
        cluster,
        0,
        &[
            "restore",
            "--input",
            &input.to_string_lossy(),
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--node-name",
            "n0",
        ],
    )
}

async fn wait_for_token(cluster: &Daemons, index: usize, name: &str) {
    let start = Instant::now();
    while !cluster.token_names(index).await.iter().any(|n| n == name) {
        assert!(
            start.elapsed() < DEADLINE,
            "n{index} never saw token {name}\n{}",
            cluster.log_tail(index)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_tokens_authenticate_over_tls_and_revocation_reaches_every_node() {
    let cluster = Daemons::start(3, "");
    let bootstrap = cluster.form().await;

    // The bootstrap token works over TLS against every node, from another node's namespace.
    for target in 0..3 {
        let (status, output) = remote_token_list(&cluster, (target + 1) % 3, target, &bootstrap);
        assert_eq!(status, 0, "n{target}: {output}");
        assert!(output.contains("\"bootstrap\""), "{output}");
    }
    let (status, output) = remote_token_list(&cluster, 1, 0, &"0".repeat(64));
    assert_eq!(status, 1);
    assert!(output.contains("token_invalid"), "{output}");

    let ci = cluster.issue_token(0, "ci").await.expect("issue");
    for index in 0..3 {
        wait_for_token(&cluster, index, "ci").await;
    }
    let (status, output) = remote_token_list(&cluster, 0, 2, &ci);
    assert_eq!(status, 0, "{output}");

    // Revoked through one node, refused by every node.
    let (status, _, err) = cli(
        &cluster,
        1,
        &[
            "--socket",
            &cluster.nodes[1].socket.to_string_lossy(),
            "token",
            "revoke",
            "ci",
        ],
    );
    assert_eq!(status, 0, "{err}");
    for target in 0..3 {
        let start = Instant::now();
        loop {
            let (status, output) = remote_token_list(&cluster, (target + 2) % 3, target, &ci);
            if status == 1 && output.contains("token_revoked") {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "n{target} still accepts the revoked token: {output}"
            );
        }
    }

    // Every mutation left an audit event with its identity, readable from any node.
    let (status, out, err) = cli(
        &cluster,
        2,
        &[
            "--socket",
            &cluster.nodes[2].socket.to_string_lossy(),
            "audit",
            "--type",
            "token_issue,token_revoke,node_join",
            "-o",
            "json",
        ],
    );
    assert_eq!(status, 0, "{err}");
    let events: serde_json::Value = serde_json::from_str(&out).expect("audit json");
    let events = events.as_array().expect("an array");
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types.iter().filter(|t| **t == "node_join").count(),
        3,
        "{out}"
    );
    assert!(
        types.contains(&"token_issue") && types.contains(&"token_revoke"),
        "{out}"
    );
    let (status, _, err) = cli(
        &cluster,
        2,
        &[
            "--socket",
            &cluster.nodes[2].socket.to_string_lossy(),
            "audit",
            "--type",
            "no_such_type",
        ],
    );
    assert_eq!(status, 2, "unknown audit types are refused: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_answers_quorum_lost_serves_reads_and_catches_up_after_heal() {
    let cluster = Daemons::start(3, "");
    cluster.form().await;
    let leader = cluster.leader(0).await;
    let follower = (leader + 1) % 3;

    // A cut-off follower: writes fail fast with quorum_lost, reads are served.
    cluster.net.partition(follower);
    let start = Instant::now();
    let error = cluster
        .issue_token(follower, "from-minority")
        .await
        .expect_err("a minority cannot commit");
    let took = start.elapsed();
    assert_eq!(error.code, Code::QuorumLost, "{}", error.render(true));
    assert!(took < Duration::from_secs(5), "quorum_lost took {took:?}");
    assert!(
        cluster
            .token_names(follower)
            .await
            .contains(&"bootstrap".to_owned())
    );

    // The majority keeps going; the follower catches up after the heal.
    cluster
        .issue_token(leader, "during-partition")
        .await
        .expect("the majority commits");
    cluster.net.heal(follower);
    wait_for_token(&cluster, follower, "during-partition").await;

    // A cut-off leader also answers quorum_lost rather than hanging.
    let leader = cluster.leader(follower).await;
    cluster.net.partition(leader);
    // The first write may already be in the old leader's log when it notices: quorum_lost with
    // `outcome: unknown`. Once it knows, a write is refused before it is appended.
    let start = Instant::now();
    let first = cluster
        .issue_token(leader, "in-flight")
        .await
        .expect_err("a partitioned leader must not acknowledge a write");
    assert_eq!(first.code, Code::QuorumLost, "{}", first.render(true));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let refused = cluster
        .issue_token(leader, "refused")
        .await
        .expect_err("a partitioned leader must not acknowledge a write");
    assert_eq!(refused.code, Code::QuorumLost, "{}", refused.render(true));
    assert!(
        !refused.details.contains_key("outcome"),
        "{}",
        refused.render(true)
    );
    cluster.net.heal(leader);
    let survivor = (leader + 1) % 3;
    // Right after the heal the old leader may still hold its term without fresh acks, and
    // answers quorum_lost until heartbeats (or an election) settle it.
    let accepted = write_until_accepted(&cluster, survivor, "after-heal").await;
    wait_for_token(&cluster, leader, &accepted).await;
    let names = cluster.token_names(survivor).await;
    assert!(
        !names.contains(&"refused".to_owned()),
        "a write refused before it was appended must never appear: {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_and_a_full_restart() {
    let mut cluster = Daemons::start(3, "");
    cluster.form().await;
    let leader = cluster.leader(0).await;
    let writer = (leader + 1) % 3;

    let mut acknowledged = Vec::new();
    for i in 0..120 {
        if i == 40 {
            cluster.kill(leader);
        }
        let name = format!("w{i}");
        if cluster.issue_token(writer, &name).await.is_ok() {
            acknowledged.push(name);
        }
    }
    assert!(
        acknowledged.len() > 60,
        "too few writes went through: {acknowledged:?}"
    );

    // Every node killed with SIGKILL and restarted.
    for index in 0..3 {
        cluster.kill(index);
    }
    for index in 0..3 {
        cluster.launch(index);
    }
    cluster.leader(0).await;
    for index in 0..3 {
        for name in &acknowledged {
            wait_for_token(&cluster, index, name).await;
        }
    }
    let statuses = [
        cluster.status(0).await.expect("status"),
        cluster.status(1).await.expect("status"),
        cluster.status(2).await.expect("status"),
    ];
    assert!(
        statuses
            .iter()
            .all(|s| s.cluster_id == statuses[0].cluster_id && s.nodes.len() == 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_holds_exactly_the_writes_before_it() {
    let mut cluster = Daemons::start(1, "");
    let (cluster_id, _) = cluster.init(0).await;
    for name in ["before-1", "before-2"] {
        cluster.issue_token(0, name).await.expect("issue");
    }
    let socket = cluster.nodes[0].socket.to_string_lossy().into_owned();
    let file = cluster.dir().join("cluster.backup");
    let (status, _, err) = cli(
        &cluster,
        0,
        &["--socket", &socket, "backup", &file.to_string_lossy()],
    );
    assert_eq!(status, 0, "{err}");
    assert!(audit_types(&cluster, 0).contains(&"backup_taken".to_owned()));
    cluster.issue_token(0, "after").await.expect("issue");

    // Restore refuses a corrupt file and a non-empty directory.
    let corrupt = cluster.dir().join("corrupt.backup");
    let mut bytes = std::fs::read(&file).expect("backup");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&corrupt, bytes).expect("write");
    let data_dir = cluster.nodes[0].data_dir.clone();
    let (status, _, err) = restore(&cluster, &corrupt, &data_dir);
    assert_eq!(status, 1);
    assert!(err.contains("validation_failed"), "{err}");
    let (status, _, err) = restore(&cluster, &file, &data_dir);
    assert_eq!(status, 1, "restoring over a live data dir must fail");
    assert!(err.contains("not empty"), "{err}");

    cluster.kill(0);
    std::fs::rename(&data_dir, cluster.dir().join("n0.old")).expect("move aside");
    let (status, out, err) = restore(&cluster, &file, &data_dir);
    assert_eq!(status, 0, "{out}{err}");
    cluster.launch(0);
    let status = cluster
        .wait_status(0, "the restored node leads", |s| s.leader == "n0")
        .await;
    assert_eq!(status.cluster_id, cluster_id);
    let names = cluster.token_names(0).await;
    assert!(names.contains(&"before-2".to_owned()), "{names:?}");
    assert!(!names.contains(&"after".to_owned()), "{names:?}");
    cluster
        .issue_token(0, "after-restore")
        .await
        .expect("the restored node accepts writes");
    // The restored node records the restore once it leads (the backup's own backup_taken event
    // was committed after its snapshot, so it is not in it).
    let start = Instant::now();
    while !audit_types(&cluster, 0).contains(&"restore_completed".to_owned()) {
        assert!(start.elapsed() < DEADLINE, "no restore_completed event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The types of the audit events daemon `index` holds, oldest first.
fn audit_types(cluster: &Daemons, index: usize) -> Vec<String> {
    let socket = cluster.nodes[index].socket.to_string_lossy().into_owned();
    let (status, out, err) = cli(
        cluster,
        index,
        &["--socket", &socket, "audit", "-o", "json"],
    );
    assert_eq!(status, 0, "{err}");
    let events: serde_json::Value = serde_json::from_str(&out).expect("audit json");
    events
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_errors_carry_their_codes() {
    let mut cluster = Daemons::start(3, "leader_wait_ms: 100\n");
    // Not a member yet.
    let error = cluster
        .issue_token(1, "x")
        .await
        .expect_err("uninitialised");
    assert_eq!(error.code, Code::ClusterUninitialized);
    let status = cluster.status(1).await.expect("status answers before init");
    assert!(!status.initialized);

    cluster.init(0).await;
    let socket0 = cluster.nodes[0].socket.to_string_lossy().into_owned();
    let (status, _, err) = cli(&cluster, 0, &["--socket", &socket0, "cluster", "init"]);
    assert_eq!(status, 1);
    assert!(err.contains("cluster_already_initialized"), "{err}");

    // Join tokens: garbage, wrong node, reuse.
    let ca = cluster.nodes[0].data_dir.join("pki/ca.crt");
    let join = |joiner: usize, token: &str| {
        cli(
            &cluster,
            joiner,
            &[
                "--socket",
                &cluster.nodes[joiner].socket.to_string_lossy(),
                "--token",
                token,
                "--ca-cert",
                &ca.to_string_lossy(),
                "cluster",
                "join",
                "--peer",
                &cluster.api_addr(0),
            ],
        )
    };
    let (status, _, err) = join(1, "jacojoin.nonsense");
    assert_eq!(status, 1);
    assert!(err.contains("join_token_invalid"), "{err}");
    let issue = |node: &str| {
        let (status, out, err) = cli(
            &cluster,
            0,
            &[
                "--socket",
                &socket0,
                "node",
                "issue-join-token",
                "--node-name",
                node,
                "--san",
                &cluster
                    .net
                    .addr(node[1..].parse::<usize>().unwrap())
                    .to_string(),
                "-o",
                "json",
            ],
        );
        (status, out, err)
    };
    let (status, out, err) = issue("n2");
    assert_eq!(status, 0, "{err}");
    let token_n2 = serde_json::from_str::<serde_json::Value>(&out).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, _, err) = join(1, &token_n2);
    assert_eq!(status, 1);
    assert!(
        err.contains("join_token_invalid"),
        "a token for n2 must not admit n1: {err}"
    );
    let (status, _, err) = issue("n0");
    assert_eq!(status, 1);
    assert!(err.contains("node_already_member"), "{err}");

    cluster.join(1, 0).await;
    let (status, out, err) = issue("n2");
    assert_eq!(status, 0, "{err}");
    let fresh = serde_json::from_str::<serde_json::Value>(&out).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, _, err) = join(2, &fresh);
    assert_eq!(status, 0, "{err}");
    let (status, _, err) = join(2, &fresh);
    assert_eq!(status, 1);
    assert!(err.contains("node_already_member"), "{err}");
    cluster.form_wait().await;

    // An election in progress with a majority reachable: no_leader after the (short) wait.
    let leader = cluster.leader(0).await;
    let follower = (leader + 1) % 3;
    cluster.kill(leader);
    let mut saw_no_leader = false;
    let start = Instant::now();
    loop {
        match cluster
            .issue_token(follower, &format!("t{}", start.elapsed().as_millis()))
            .await
        {
            Ok(_) => break,
            Err(error) if error.code == Code::NoLeader => saw_no_leader = true,
            Err(error) => panic!("unexpected: {}", error.render(true)),
        }
        assert!(start.elapsed() < DEADLINE, "no leader elected");
    }
    assert!(
        saw_no_leader,
        "a write during the election must answer no_leader"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_and_a_restart_resumes_membership() {
    let mut cluster = Daemons::start(1, "");
    let (cluster_id, _) = cluster.init(0).await;
    cluster.issue_token(0, "kept").await.expect("issue");
    let status = cluster.terminate(0);
    assert!(status.success(), "exit status {status:?}");
    assert!(
        !cluster.nodes[0].socket.exists(),
        "the daemon removes the socket it bound"
    );
    cluster.launch(0);
    let status = cluster
        .wait_status(0, "resumes as the leader", |s| s.leader == "n0")
        .await;
    assert_eq!(status.cluster_id, cluster_id);
    assert!(cluster.token_names(0).await.contains(&"kept".to_owned()));
}

/// A size-limited tmpfs mounted over a directory for the life of the value (unmounted even
/// when the test fails).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Tmpfs {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs on {}", path.display());
        Tmpfs(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_error_makes_the_daemon_exit_non_zero() {
    // A 128 KiB file system under the data directory, mounted before the daemon starts (it
    // runs in its own mount namespace), so that the raft log runs out of space after a few
    // hundred writes.
    let mut cluster = Daemons::prepare(1, "");
    let _disk = Tmpfs::mount(&cluster.nodes[0].data_dir, "128k");
    cluster.launch(0);
    cluster.init(0).await;
    let mut failed = None;
    for i in 0..5_000 {
        if let Err(error) = cluster.issue_token(0, &format!("fill-{i}")).await {
            failed = Some(error);
            break;
        }
    }
    let error = failed.expect("the disk fills up");
    assert_eq!(error.code, Code::Internal, "{}", error.render(true));
    let status = cluster.wait_exit(0);
    assert_eq!(
        status.code(),
        Some(1),
        "{status:?}\n{}",
        cluster.log_tail(0)
    );
    assert!(
        cluster.log_tail(0).contains("raft storage failed"),
        "{}",
        cluster.log_tail(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unattended_first_boot_inits_from_a_seed_and_the_next_node_joins_from_its_file() {
    let cluster = Daemons::start(2, "leader_wait_ms: 100\n");
    let seed = cluster.dir().join("seed");
    let seed_arg = seed.to_string_lossy().into_owned();
    let (status, out, err) = cli(
        &cluster,
        0,
        &["cluster", "seed", "--out", &seed_arg, "--name", "lab"],
    );
    assert_eq!(status, 0, "{out}{err}");
    let socket = |i: usize| cluster.nodes[i].socket.to_string_lossy().into_owned();
    let bootstrap = |i: usize, file: &std::path::Path, attempts: &str| {
        cli(
            &cluster,
            i,
            &[
                "--socket",
                &socket(i),
                "cluster",
                "bootstrap",
                "--file",
                &file.to_string_lossy(),
                "--attempts",
                attempts,
            ],
        )
    };

    let (status, out, err) = bootstrap(0, &seed.join("bootstrap-init.yaml"), "3");
    assert_eq!(status, 0, "{out}{err}");
    assert!(
        out.contains("initialised cluster") && out.contains("seeded operator token"),
        "{out}"
    );
    let (status, out, _) = bootstrap(0, &seed.join("bootstrap-init.yaml"), "1");
    assert_eq!(status, 0);
    assert!(out.contains("already a member"), "{out}");

    // The operator's seeded token and CA work over TLS: the node's CA is the seeded one.
    assert_eq!(
        cluster.ca_pem(0),
        std::fs::read_to_string(seed.join("ca.pem")).unwrap()
    );
    let token = std::fs::read_to_string(seed.join("token")).unwrap();
    let (status, out) = remote_token_list(&cluster, 1, 0, token.trim());
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("\"bootstrap\""), "{out}");
    // Through an address the certificate does not carry (a port forward), the node's name is
    // what the CLI must check.
    let seeded_ca = seed.join("ca.pem").to_string_lossy().into_owned();
    let forwarded = |name: &str| {
        cli(
            &cluster,
            1,
            &[
                "--server",
                &cluster.api_addr(0),
                "--ca-cert",
                &seeded_ca,
                "--token",
                token.trim(),
                "--tls-server-name",
                name,
                "-v",
                "token",
                "list",
            ],
        )
    };
    let (status, _, err) = forwarded(&cluster.nodes[0].name);
    assert_eq!(status, 0, "{err}");
    let (status, _, err) = forwarded("not-the-node");
    assert_eq!(status, 1);
    assert!(err.contains("tls_verification_failed"), "{err}");

    // A join file with a wrong token: every attempt fails with the reason, the node stays out.
    let bad = cluster.dir().join("bad-join.yaml");
    let ca = std::fs::read_to_string(seed.join("ca.pem")).unwrap();
    let join_file = |token: &str| {
        let indented: String = ca.lines().map(|l| format!("    {l}\n")).collect();
        format!(
            "join:\n  peers: [\"{}\"]\n  token: {token}\n  ca_cert: |\n{indented}",
            cluster.api_addr(0)
        )
    };
    std::fs::write(&bad, join_file("jacojoin.0000")).unwrap();
    let (status, _, err) = bootstrap(1, &bad, "2");
    assert_eq!(status, 1, "{err}");
    assert!(
        err.contains("attempt 1 failed") && err.contains("join_token_invalid"),
        "{err}"
    );
    assert!(!cluster.status(1).await.unwrap().initialized);

    let issued = ClusterClient::new(cluster.local(0).await)
        .issue_join_token(pb::IssueJoinTokenRequest {
            node_name: cluster.nodes[1].name.clone(),
            sans: vec![cluster.net.addr(1).to_string()],
            ttl_ms: 0,
        })
        .await
        .expect("issue a join token")
        .into_inner();
    let good = cluster.dir().join("join.yaml");
    std::fs::write(&good, join_file(&issued.token)).unwrap();
    let (status, out, err) = bootstrap(1, &good, "3");
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.contains("joined cluster"), "{out}");
    let joined = cluster.status(1).await.unwrap();
    assert!(joined.initialized);
    assert_eq!(
        joined.cluster_id,
        cluster.status(0).await.unwrap().cluster_id
    );
}

/// `jaco upgrade bundle keygen --out prefix`: `prefix.key` and `prefix.pub`.
fn keygen(prefix: &std::path::Path) {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_jaco"))
        .args(["upgrade", "bundle", "keygen", "--out"])
        .arg(prefix)
        .status()
        .unwrap();
    assert!(status.success());
}

/// `<work>/keys` holding a release key pair (`release.key` signs; a node trusts `release.pub`).
fn trusted_keys(work: &std::path::Path) -> std::path::PathBuf {
    let keys_dir = work.join("keys");
    std::fs::create_dir(&keys_dir).unwrap();
    keygen(&keys_dir.join("release"));
    keys_dir
}

/// Signs a plain-host bundle of `payload` as `version` with the key at `key`.
fn binary_bundle(
    dir: &std::path::Path,
    key: &std::path::Path,
    version: &str,
    payload: &[u8],
) -> std::path::PathBuf {
    let binary = dir.join(format!("jaco-{version}-payload"));
    std::fs::write(&binary, payload).unwrap();
    let out = dir.join(format!(
        "jaco-{version}-{}.bundle",
        key.file_stem().unwrap().to_string_lossy()
    ));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_jaco"))
        .args(["upgrade", "bundle", "create", "--version", version, "--key"])
        .arg(key)
        .arg("--binary")
        .arg(&binary)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_upgrade_is_verified_swapped_and_a_failed_one_is_rolled_back_and_denied() {
    let work = tempfile::tempdir().unwrap();
    let keys_dir = trusted_keys(work.path());
    keygen(&work.path().join("stranger"));
    let trusted_key = keys_dir.join("release.key");
    // The node trusts only release.pub (the secret key lying next to it is not a *.pub).
    let binary = work.path().join("installed-jaco");
    std::fs::write(&binary, b"the running binary").unwrap();
    let extra = format!(
        "leader_wait_ms: 100\nupgrade:\n  mode: binary\n  binary: {}\n  keys_dir: {}\n  reboot_command: \"true\"\n",
        binary.display(),
        keys_dir.display()
    );
    let mut cluster = Daemons::start(1, &extra);
    cluster.init(0).await;
    let socket = cluster.nodes[0].socket.to_string_lossy().into_owned();
    let upgrade = |cluster: &Daemons, args: &[&str]| {
        let mut all = vec!["--socket", &socket, "upgrade"];
        all.extend_from_slice(args);
        cli(cluster, 0, &all)
    };

    // Signed by a key the node does not trust: refused, nothing recorded or written.
    let untrusted = binary_bundle(
        work.path(),
        &work.path().join("stranger.key"),
        "9.0.0",
        b"evil",
    );
    let (status, _, err) = upgrade(
        &cluster,
        &["start", "--bundle", &untrusted.to_string_lossy()],
    );
    assert_eq!(status, 1, "{err}");
    assert!(err.contains("upgrade_verification_failed"), "{err}");
    assert_eq!(std::fs::read(&binary).unwrap(), b"the running binary");
    let (_, out, _) = upgrade(&cluster, &["status"]);
    assert!(out.contains("no upgrade has run"), "{out}");

    // A good bundle: uploaded, verified, swapped in, the old binary kept as .prev.
    let good = binary_bundle(work.path(), &trusted_key, "9.0.0", b"the new binary");
    let (status, out, err) = upgrade(&cluster, &["start", "--bundle", &good.to_string_lossy()]);
    assert_eq!(status, 0, "{out}{err}");
    assert!(err.contains("rebooting"), "{err}");
    assert_eq!(std::fs::read(&binary).unwrap(), b"the new binary");
    let mut previous = binary.as_os_str().to_owned();
    previous.push(".prev");
    assert_eq!(std::fs::read(&previous).unwrap(), b"the running binary");
    let (status, _, err) = upgrade(&cluster, &["start", "--bundle", &good.to_string_lossy()]);
    assert_eq!(status, 1);
    assert!(err.contains("upgrade_in_progress"), "{err}");

    // "Reboot": the daemon comes back still running its own version, so the upgrade did not
    // take. It reports the rollback, audits upgrade_failed and deny-lists 9.0.0.
    cluster.terminate(0);
    cluster.launch(0);
    let deadline = Instant::now() + DEADLINE;
    let plan = loop {
        let (_, out, _) = upgrade(&cluster, &["status", "-o", "json"]);
        // The node reports its verdict; the leader's controller then stops the plan.
        if out.contains("\"rolled_back\"") && out.contains("\"state\": \"failed\"") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "no rollback reported: {out}\n{}",
            cluster.log_tail(0)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(plan.contains("\"state\": \"failed\""), "{plan}");
    assert!(audit_types(&cluster, 0).contains(&"upgrade_failed".to_owned()));
    let (status, _, err) = upgrade(&cluster, &["start", "--bundle", &good.to_string_lossy()]);
    assert_eq!(status, 1);
    assert!(
        err.contains("deny_listed") || err.contains("failed on this node before"),
        "{err}"
    );
}

/// A stripped copy of the jaco under test with `marker` appended: it runs the same, but its
/// bytes (and so its SHA-256, by which a plain host knows its installed version) differ.
fn marked_jaco(dir: &std::path::Path, marker: &str) -> std::path::PathBuf {
    let path = dir.join(format!("jaco-{marker}"));
    let status = std::process::Command::new("strip")
        .arg("-o")
        .arg(&path)
        .arg(env!("CARGO_BIN_EXE_jaco"))
        .status()
        .expect("run strip (binutils)");
    assert!(status.success());
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, marker.as_bytes()).unwrap();
    path
}

/// The plan as `jaco upgrade status -o json` prints it, asked of daemon `index`.
fn plan_json(cluster: &Daemons, index: usize) -> Option<serde_json::Value> {
    let socket = cluster.nodes[index].socket.to_string_lossy().into_owned();
    let (status, out, _) = cli(
        cluster,
        index,
        &["--socket", &socket, "upgrade", "status", "-o", "json"],
    );
    (status == 0).then(|| serde_json::from_str(&out).ok())?
}

fn node_states(plan: &serde_json::Value) -> Vec<(String, String)> {
    plan["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    (
                        n["node"].as_str().unwrap_or_default().to_owned(),
                        n["state"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Drives a fleet plan on plain hosts whose reboot command does nothing: whenever a node
/// reports `rebooting`, its daemon is restarted (from `program(index)`), as systemd would after
/// the swap. Returns the final plan, the order in which nodes rebooted and the nodes seen
/// drained on the way.
async fn drive_fleet_plan(
    cluster: &mut Daemons,
    program: impl Fn(usize) -> Option<std::path::PathBuf>,
) -> (
    serde_json::Value,
    Vec<String>,
    std::collections::BTreeSet<String>,
) {
    let mut rebooted: Vec<String> = Vec::new();
    let mut drained = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        // Ask a node that is up (the one rebooting may be any of them).
        let plan = (0..cluster.nodes.len()).find_map(|i| plan_json(cluster, i));
        for index in 0..cluster.nodes.len() {
            if let Ok(status) = cluster.status(index).await {
                drained.extend(
                    status
                        .nodes
                        .into_iter()
                        .filter(|n| n.drain.is_some())
                        .map(|n| n.name),
                );
                break;
            }
        }
        if let Some(plan) = &plan {
            if ["succeeded", "failed", "aborted"].contains(&plan["state"].as_str().unwrap_or("")) {
                return (plan.clone(), rebooted, drained);
            }
            for (node, state) in node_states(plan) {
                if state == "rebooting" && !rebooted.contains(&node) {
                    let index: usize = node[1..].parse().unwrap();
                    cluster.terminate(index);
                    cluster.nodes[index].program = program(index);
                    cluster.launch(index);
                    rebooted.push(node);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the fleet upgrade did not end: {plan:#?}\n{}\n{}\n{}",
            cluster.log_tail(0),
            cluster.log_tail(1),
            cluster.log_tail(2)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_upgrade_drains_each_node_goes_followers_first_hands_leadership_over_and_stops_on_a_failure()
 {
    let work = tempfile::tempdir().unwrap();
    let keys_dir = trusted_keys(work.path());
    let key = keys_dir.join("release.key");
    let extra = format!(
        "leader_wait_ms: 100\nupgrade:\n  mode: binary\n  keys_dir: {}\n  reboot_command: \"true\"\n",
        keys_dir.display()
    );
    let mut cluster = Daemons::prepare(3, &extra);
    // Each node runs its own copy, which its upgrade replaces.
    let installed: Vec<std::path::PathBuf> = (0..3)
        .map(|i| {
            let path = work.path().join(format!("n{i}-jaco"));
            std::fs::copy(env!("CARGO_BIN_EXE_jaco"), &path).unwrap();
            path
        })
        .collect();
    for (index, path) in installed.iter().enumerate() {
        cluster.nodes[index].program = Some(path.clone());
        cluster.launch(index);
    }
    cluster.form().await;
    let leader_before = cluster
        .status(0)
        .await
        .unwrap()
        .nodes
        .into_iter()
        .find(|n| n.raft_role() == pb::RaftRole::Leader)
        .expect("a leader")
        .name;

    // 9.0.0 for every node, started through n1 (the bundle is uploaded there and fetched
    // from there by the others).
    let start_all = |cluster: &Daemons, version: &str, extra: &[&str]| {
        let payload = marked_jaco(work.path(), version);
        let bundle = binary_bundle(
            work.path(),
            &key,
            version,
            &std::fs::read(&payload).unwrap(),
        );
        let socket = cluster.nodes[1].socket.to_string_lossy().into_owned();
        let bundle = bundle.to_string_lossy().into_owned();
        let mut args = vec![
            "--socket", &socket, "upgrade", "start", "--bundle", &bundle, "--all",
        ];
        args.extend_from_slice(extra);
        cli(cluster, 1, &args)
    };
    // Refused before anything is recorded: a node that is not a member.
    let bundle = binary_bundle(work.path(), &key, "8.0.0", b"never installed");
    let bundle = bundle.to_string_lossy().into_owned();
    let socket = cluster.nodes[1].socket.to_string_lossy().into_owned();
    let args = [
        "--socket", &socket, "upgrade", "start", "--bundle", &bundle, "--node", "n9",
    ];
    let (status, _, err) = cli(&cluster, 1, &args);
    assert_eq!(status, 1, "{err}");
    assert!(err.contains("not_found"), "{err}");
    assert!(plan_json(&cluster, 1).is_none_or(|p| p.is_null()));

    // With --drain, each node is drained before its turn and undrained after it.
    let (status, out, err) = start_all(&cluster, "9.0.0", &["--drain", "--detach"]);
    assert_eq!(status, 0, "{out}{err}");
    let (again, _, err) = start_all(&cluster, "9.0.0", &[]);
    assert_eq!(again, 1);
    assert!(err.contains("upgrade_in_progress"), "{err}");

    let (plan, order, drained) =
        drive_fleet_plan(&mut cluster, |i| Some(installed[i].clone())).await;
    assert_eq!(plan["state"], "succeeded", "{plan:#}");
    assert!(
        node_states(&plan).iter().all(|(_, s)| s == "succeeded"),
        "{plan:#}"
    );
    // One at a time, the leader of the start last (after it handed leadership over).
    assert_eq!(order.len(), 3, "{order:?}");
    assert_eq!(order.last(), Some(&leader_before), "{order:?}");
    // Every node now runs (and reports) 9.0.0; three upgrade_succeeded audit events.
    cluster
        .wait_status(0, "every node reports 9.0.0", |s| {
            s.nodes.len() == 3 && s.nodes.iter().all(|n| n.version == "9.0.0")
        })
        .await;
    let audits = audit_types(&cluster, 0);
    assert_eq!(
        audits.iter().filter(|t| *t == "upgrade_succeeded").count(),
        3,
        "{audits:?}"
    );
    assert_eq!(drained.len(), 3, "{drained:?}");
    cluster
        .wait_status(0, "no node left drained", |s| {
            s.nodes.iter().all(|n| n.drain.is_none())
        })
        .await;

    // 9.1.0: the first node to take its turn comes back on a binary that is neither version
    // (as if an operator had put another one in place): it fails and the fleet stops there.
    let (status, out, err) = start_all(&cluster, "9.1.0", &["--detach"]);
    assert_eq!(status, 0, "{out}{err}");
    let (plan, order, drained) = drive_fleet_plan(&mut cluster, |_| None).await;
    assert!(drained.is_empty(), "no --drain, yet {drained:?} drained");
    assert_eq!(plan["state"], "failed", "{plan:#}");
    assert_eq!(order.len(), 1, "{order:?}");
    let states = node_states(&plan);
    let failed: Vec<&String> = states
        .iter()
        .filter(|(_, s)| s == "failed")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(failed, [&order[0]], "{plan:#}");
    assert_eq!(
        states.iter().filter(|(_, s)| s == "skipped").count(),
        2,
        "{plan:#}"
    );
    assert!(
        plan["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(&order[0]),
        "{plan:#}"
    );
    assert!(audit_types(&cluster, 0).contains(&"upgrade_failed".to_owned()));
}

/// A child process killed when the test ends, also when it fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTPS file server (Python's standard library) in daemon `index`'s namespace, on
/// 127.0.0.1 there, serving `root` with `/latest` redirecting to `/jaco.bundle`; returns it and
/// its port.
fn https_server(
    cluster: &Daemons,
    index: usize,
    root: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (KillOnDrop, u16) {
    const SERVER: &str = r#"
import http.server, ssl, sys
root, cert, key = sys.argv[1:4]
class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=root, **kwargs)
    def do_GET(self):
        if self.path == "/latest":
            self.send_response(302)
            self.send_header("Location", "/jaco.bundle")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
    let mut child = cluster
        .net
        .command(index, "python3")
        .arg("-c")
        .arg(SERVER)
        .arg(root)
        .arg(cert)
        .arg(key)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("port: {line:?}"));
    (KillOnDrop(child), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_url_is_fetched_over_https_through_a_redirect_and_a_missing_one_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    let keys_dir = trusted_keys(work.path());
    // A CA the node trusts for https (instead of the system's) and a certificate for 127.0.0.1.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let (ca_file, cert_file, key_file) = (
        work.path().join("ca.pem"),
        work.path().join("server.pem"),
        work.path().join("server.key"),
    );
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    std::fs::write(&cert_file, server_cert.pem()).unwrap();
    std::fs::write(&key_file, server_key.serialize_pem()).unwrap();
    let served = work.path().join("www");
    std::fs::create_dir(&served).unwrap();
    let bundle = binary_bundle(
        work.path(),
        &keys_dir.join("release.key"),
        "9.0.0",
        b"the fetched binary",
    );
    std::fs::copy(&bundle, served.join("jaco.bundle")).unwrap();

    let binary = work.path().join("installed-jaco");
    std::fs::write(&binary, b"the running binary").unwrap();
    let extra = format!(
        "leader_wait_ms: 100\nupgrade:\n  mode: binary\n  binary: {}\n  keys_dir: {}\n  \
         reboot_command: \"true\"\n  ca_file: {}\n",
        binary.display(),
        keys_dir.display(),
        ca_file.display()
    );
    let cluster = Daemons::start(1, &extra);
    cluster.init(0).await;
    let (_server, port) = https_server(&cluster, 0, &served, &cert_file, &key_file);
    let socket = cluster.nodes[0].socket.to_string_lossy().into_owned();
    let start = |url: &str| {
        cli(
            &cluster,
            0,
            &[
                "--socket", &socket, "-v", "upgrade", "start", "--bundle", url,
            ],
        )
    };

    let (status, _, err) = start(&format!("https://127.0.0.1:{port}/missing.bundle"));
    assert_eq!(status, 1, "{err}");
    assert!(
        err.contains("upgrade_failed") && err.contains("404"),
        "{err}"
    );
    assert_eq!(std::fs::read(&binary).unwrap(), b"the running binary");

    let (status, out, err) = start(&format!("https://127.0.0.1:{port}/latest"));
    assert_eq!(status, 0, "{out}{err}");
    assert!(err.contains("the node fetches"), "{err}");
    assert!(err.contains("rebooting"), "{err}");
    assert_eq!(std::fs::read(&binary).unwrap(), b"the fetched binary");
}
