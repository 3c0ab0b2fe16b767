//! The isolation gate of a real daemon (SPEC §7): a node whose nftables self-test fails is
//! `isolation_unavailable`, says why, is audited, and takes no replicas; and a node whose
//! self-test passes holds jaco's table in its own network namespace with one set per scope.
//!
//! Daemons run in network namespaces of their own (tests/support/daemons.rs), so each has its
//! own nftables ruleset; they share the machine's Docker engine with a leased IPAM pool.

mod support;

use std::time::{Duration, Instant};

use jaco::proto::v1 as pb;
use jaco::proto::v1::audit_client::AuditClient;
use jaco::proto::v1::deploy_client::DeployClient;
use support::daemons::Daemons;
use support::deploy::Deployer;
use support::docker::busybox_image;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_node_whose_isolation_self_test_fails_takes_no_replicas() {
    let daemons = Daemons::start_with_network(1, "", "nft_command: /nonexistent/nft");
    daemons.init(0).await;
    let status = daemons
        .wait_status(0, "the node is isolation_unavailable", |s| {
            s.nodes
                .first()
                .is_some_and(|n| n.status() == pb::NodeStatus::IsolationUnavailable)
        })
        .await;
    let node = &status.nodes[0];
    let condition = node.isolation.as_ref().expect("an isolation condition");
    assert!(!condition.ok);
    assert_eq!(condition.code, "isolation_self_test_failed");
    assert!(
        condition.message.contains("/nonexistent/nft"),
        "the message names the command: {condition:?}"
    );

    let events = AuditClient::new(daemons.local(0).await)
        .query(pb::AuditQueryRequest {
            types: vec![pb::AuditEventType::IsolationUnavailable.into()],
            ..Default::default()
        })
        .await
        .expect("audit query")
        .into_inner()
        .events;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].payload["node"], "n0");
    assert_eq!(events[0].payload["code"], "isolation_self_test_failed");

    // An apply is accepted, but nothing is placed: the deployment waits for a ready node.
    let mut deploy = DeployClient::new(daemons.local(0).await);
    let compose = format!(
        "services:\n  web:\n    image: {}\n    command: [\"sleep\", \"600\"]\n",
        busybox_image()
    );
    deploy
        .apply(pb::ApplyRequest {
            jaco_yaml: "deployment: gated\nacme: off\n".into(),
            compose_yaml: compose,
            ..Default::default()
        })
        .await
        .expect("apply");
    let start = Instant::now();
    loop {
        let status = deploy
            .status(pb::DeployStatusRequest::default())
            .await
            .expect("status")
            .into_inner();
        let deployment = status.deployments.iter().find(|d| d.name == "gated");
        let reason = deployment.and_then(|d| d.status_details.get("reason"));
        if reason.map(String::as_str) == Some("no_ready_nodes") {
            assert!(status.replicas.is_empty(), "placed: {:?}", status.replicas);
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the deployment did not report no_ready_nodes: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_ready_node_holds_the_isolation_table_with_a_set_per_scope() {
    let mut d = Deployer::start("").await;
    let status = d.daemons.status(0).await.expect("status");
    assert!(status.nodes[0].isolation.as_ref().is_some_and(|c| c.ok));
    let compose = format!(
        "services:\n  web:\n    image: {}\n    command: [\"sleep\", \"600\"]\n    networks: [front, back]\nnetworks:\n  front: {{}}\n  back: {{}}\n",
        busybox_image()
    );
    d.apply("deployment: scoped\nacme: off\n", &compose).await;
    let start = Instant::now();
    loop {
        let listed = d
            .daemons
            .net
            .command(0, "nft")
            .args(["list", "table", "inet", "jaco"])
            .output()
            .expect("run nft");
        let text = String::from_utf8_lossy(&listed.stdout).into_owned();
        let sets = text.matches("set ").count();
        // One set per scope (front and back), the pool set, and the drop between scopes.
        if sets >= 3 && text.contains(" drop") {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the table has no set per scope yet: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
