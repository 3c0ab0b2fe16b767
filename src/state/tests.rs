//! Whole-state-machine properties: determinism, the byte interface the raft layer uses,
//! snapshots (round trip and corruption), secrets never leaking into audit or watch, and the
//! path from `drain_events` through a [`WatchHub`] to a subscriber.
//!
//! Per-command effects and errors are tested next to each handler.
//!
//! Tests only; they must not do I/O (no files, sockets or clocks).

use prost::Message as _;

use super::testkit::*;
use super::watch::{WatchFilter, WatchMessage};
use super::*;
use crate::proto::v1::{
    AppendAudit, AuditEventType, BlobKind, BlobRef, Certificate, CertificateState, ContentBlob,
    DeploymentSpec, EntityType, IssueJoinToken, IssueOperatorToken, JoinToken, NodeHeartbeat,
    PutAcmeAccount, PutCertificate, RecordHeartbeats, RevokeOperatorToken, SchedulerBatch,
    StateSnapshot, UpsertRegistryCredential, command::Kind,
};

const REGISTRY_PASSWORD: &str = "registry-password-42";
const BLOB_CONTENT: &str = "database-password-77";
const CERT_KEY: &str = "CERT-PRIVATE-KEY";
const ACME_KEY: &str = "ACME-ACCOUNT-KEY";
const OPERATOR_SECRET: &str = "operator-secret";
const JOIN_SECRET: &str = "join-secret";

/// Secret material the scenario puts into the state, in every form it could leak in.
fn secret_needles() -> Vec<String> {
    let mut needles: Vec<String> = [
        REGISTRY_PASSWORD,
        BLOB_CONTENT,
        CERT_KEY,
        ACME_KEY,
        "CA-PRIVATE-KEY",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for secret in [BOOTSTRAP_SECRET, OPERATOR_SECRET, JOIN_SECRET] {
        let hash = sha(secret);
        needles.push(hex(&hash));
        needles.push(format!("{:?}", &hash[..8]).trim_end_matches(']').to_owned());
    }
    // Blob content as Debug bytes.
    needles.push(
        format!("{:?}", &BLOB_CONTENT.as_bytes()[..8])
            .trim_end_matches(']')
            .to_owned(),
    );
    needles
}

fn blob_spec() -> (DeploymentSpec, ContentBlob) {
    let mut spec = spec(&[("web", "nginx:1"), ("db", "postgres:16")]);
    spec.blobs.push(BlobRef {
        kind: BlobKind::Secret.into(),
        name: "db_password".into(),
        sha256: hex(&sha(BLOB_CONTENT)),
    });
    let blob = ContentBlob {
        kind: BlobKind::Secret.into(),
        name: "db_password".into(),
        content: BLOB_CONTENT.as_bytes().to_vec(),
        ..Default::default()
    };
    (spec, blob)
}

/// A run of commands touching most handlers, with the identity each runs as; some are
/// rejected on purpose.
fn scenario() -> Vec<(&'static str, Kind)> {
    let (spec_v1, blob) = blob_spec();
    let mut spec_v2 = spec_v1.clone();
    spec_v2.services[0].image = "nginx:2".into();
    vec![
        ("local", init_cluster()),
        (
            "bootstrap",
            Kind::IssueJoinToken(IssueJoinToken {
                token: Some(JoinToken {
                    sha256: sha(JOIN_SECRET),
                    node_name: "n2".into(),
                    ..Default::default()
                }),
            }),
        ),
        (
            "node:n2",
            Kind::ConsumeJoinToken(crate::proto::v1::ConsumeJoinToken {
                sha256: sha(JOIN_SECRET),
                node_name: "n2".into(),
            }),
        ),
        (
            "node:n2",
            Kind::ConsumeJoinToken(crate::proto::v1::ConsumeJoinToken {
                sha256: sha(JOIN_SECRET),
                node_name: "n2".into(),
            }),
        ),
        ("system", add_node("n2", 2)),
        (
            "system",
            Kind::RecordHeartbeats(RecordHeartbeats {
                heartbeats: vec![NodeHeartbeat {
                    node: "n2".into(),
                    received_at_unix_ms: T0 + 5,
                    ..Default::default()
                }],
            }),
        ),
        (
            "bootstrap",
            Kind::IssueOperatorToken(IssueOperatorToken {
                token: Some(crate::proto::v1::OperatorToken {
                    name: "ci".into(),
                    sha256: sha(OPERATOR_SECRET),
                    ..Default::default()
                }),
            }),
        ),
        (
            "ci",
            Kind::UpsertRegistryCredential(UpsertRegistryCredential {
                credential: Some(crate::proto::v1::RegistryCredential {
                    registry: "ghcr.io/acme".into(),
                    username: "bot".into(),
                    secret: REGISTRY_PASSWORD.into(),
                    ..Default::default()
                }),
            }),
        ),
        (
            "ci",
            Kind::ApplyDeployment(crate::proto::v1::ApplyDeployment {
                deployment: "shop".into(),
                spec: Some(spec_v1),
                blobs: vec![blob],
                ..Default::default()
            }),
        ),
        ("ci", apply_deployment("shop", spec_v2)),
        (
            "ci",
            Kind::RollbackDeployment(crate::proto::v1::RollbackDeployment {
                deployment: "shop".into(),
                expected_revision: 0,
            }),
        ),
        ("system", allocate_subnet("shop", "default", "n2")),
        (
            "system",
            Kind::SchedulerBatch(SchedulerBatch {
                upsert_replicas: vec![crate::proto::v1::ReplicaDesired {
                    id: "shop-web-1".into(),
                    deployment: "shop".into(),
                    service: "web".into(),
                    index: 1,
                    node: "n2".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        ),
        (
            "system",
            Kind::PutCertificate(PutCertificate {
                certificate: Some(Certificate {
                    domain: "shop.example".into(),
                    state: CertificateState::Issued.into(),
                    cert_chain_pem: "CHAIN".into(),
                    key_pem: CERT_KEY.into(),
                    ..Default::default()
                }),
            }),
        ),
        (
            "system",
            Kind::PutAcmeAccount(PutAcmeAccount {
                account: Some(crate::proto::v1::AcmeAccount {
                    directory_url: "https://acme.test/dir".into(),
                    key_pem: ACME_KEY.into(),
                    ..Default::default()
                }),
            }),
        ),
        (
            "node:n1",
            Kind::AppendAudit(AppendAudit {
                events: vec![crate::proto::v1::AuditEvent {
                    r#type: AuditEventType::BackupTaken.into(),
                    ..Default::default()
                }],
            }),
        ),
        (
            "bootstrap",
            Kind::RevokeOperatorToken(RevokeOperatorToken { name: "ci".into() }),
        ),
        (
            "ci",
            Kind::DeleteDeployment(crate::proto::v1::DeleteDeployment {
                deployment: "shop".into(),
                keep_volumes: false,
            }),
        ),
        (
            "bootstrap",
            Kind::RemoveRegistryCredential(crate::proto::v1::RemoveRegistryCredential {
                registry: "ghcr.io/acme".into(),
            }),
        ),
        (
            "bootstrap",
            Kind::DeleteDeployment(crate::proto::v1::DeleteDeployment {
                deployment: "shop".into(),
                keep_volumes: false,
            }),
        ),
        (
            "bootstrap",
            Kind::RemoveNode(crate::proto::v1::RemoveNode {
                node: "n2".into(),
                force: true,
            }),
        ),
    ]
}

fn commands() -> Vec<Command> {
    scenario()
        .into_iter()
        .enumerate()
        .map(|(i, (identity, kind))| Command {
            identity: identity.into(),
            time_unix_ms: T0 + i as i64 * 1000,
            origin_node: "n1".into(),
            request_id: format!("r{i}"),
            kind: Some(kind),
        })
        .collect()
}

/// Runs the scenario; returns the state, every result and every event.
fn run() -> (State, Vec<CommandResult>, Vec<WatchEvent>) {
    let mut state = State::new();
    let mut results = Vec::new();
    let mut events = Vec::new();
    for (i, command) in commands().iter().enumerate() {
        let (result, changes) = state.apply(i as u64 + 1, command);
        results.push(result);
        events.extend(changes);
    }
    (state, results, events)
}

fn codes(results: &[CommandResult]) -> Vec<Option<Code>> {
    results
        .iter()
        .map(|r| into_outcome(r.clone()).err().map(|e| e.code))
        .collect()
}

#[test]
fn test_scenario_outcomes() {
    let (state, results, _) = run();
    let rejected: Vec<(usize, Code)> = codes(&results)
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|c| (i, c)))
        .collect();
    // The second consume (single use), the revoked token's delete.
    assert_eq!(
        rejected,
        [(3, Code::JoinTokenInvalid), (17, Code::TokenRevoked)]
    );
    assert!(state.deployment("shop").is_none());
    assert!(state.node("n2").is_none());
    let types: Vec<AuditEventType> = state
        .audit(&AuditFilter::default())
        .events
        .iter()
        .map(|e| e.r#type())
        .collect();
    use AuditEventType as A;
    assert_eq!(
        types,
        [
            A::NodeJoin,
            A::TokenIssue, // init
            A::TokenIssue, // join token
            A::NodeJoin,   // add node
            A::TokenIssue, // ci token
            A::RegistryCredentialUpsert,
            A::Apply,
            A::Apply,
            A::Rollback,
            A::CertificateIssued,
            A::BackupTaken,
            A::TokenRevoke,
            A::RegistryCredentialRemove,
            A::Delete,
            A::NodeRemove,
        ]
    );
}

#[test]
fn test_same_commands_give_same_state_results_and_events() {
    let (a, results_a, events_a) = run();
    let (b, results_b, events_b) = run();
    assert_eq!(a.to_snapshot_bytes(), b.to_snapshot_bytes());
    assert_eq!(results_a, results_b);
    assert_eq!(events_a, events_b);
    assert_eq!(a.revision(), b.revision());
}

#[test]
fn test_byte_interface_matches_typed_apply() {
    let (typed, typed_results, typed_events) = run();
    let mut core = State::new();
    for (i, command) in commands().iter().enumerate() {
        let bytes = StateMachineCore::apply(&mut core, i as u64 + 1, &command.encode_to_vec());
        let result = CommandResult::decode(bytes.as_slice()).expect("result decodes");
        assert_eq!(result, typed_results[i]);
    }
    assert_eq!(core.last_applied(), typed.last_applied_index());
    assert_eq!(core.snapshot(), typed.to_snapshot_bytes());
    let published = core.drain_events();
    assert_eq!(published.events, typed_events);
    assert_eq!(published.revision, typed.revision());
    assert!(published.gap.is_none());
    assert!(core.drain_events().events.is_empty(), "drained once");
}

#[test]
fn test_undecodable_command_is_an_internal_error_result() {
    let mut h = Harness::initialised();
    let before = fingerprint(&h.state);
    let bytes = StateMachineCore::apply(&mut h.state, 2, &[0xff, 0xff, 0xff]);
    let error =
        into_outcome(CommandResult::decode(bytes.as_slice()).expect("decodes")).unwrap_err();
    assert_eq!(error.code, Code::Internal);
    assert_eq!(h.state.last_applied(), 2);
    assert_eq!(fingerprint(&h.state), before);
}

#[test]
fn test_replayed_index_and_empty_command_are_rejected_without_change() {
    let mut h = Harness::initialised();
    let before = fingerprint(&h.state);
    let (result, events) = h.state.apply(
        h.index,
        &Command {
            kind: Some(add_node("n2", 2)),
            ..Default::default()
        },
    );
    assert_eq!(into_outcome(result).unwrap_err().code, Code::Internal);
    assert!(events.is_empty());
    assert_eq!(fingerprint(&h.state), before);
    h.index += 1;
    let (result, _) = h.state.apply(h.index, &Command::default());
    assert_eq!(
        into_outcome(result).unwrap_err().code,
        Code::ValidationFailed
    );
    assert_eq!(fingerprint(&h.state), before);
}

#[test]
fn test_audit_payloads_and_watch_events_never_carry_secrets() {
    let (state, _, events) = run();
    let needles = secret_needles();
    for event in state
        .audit(&AuditFilter {
            limit: usize::MAX,
            ..Default::default()
        })
        .events
    {
        let text = format!("{:?}", event.payload);
        for needle in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "audit {event:?} leaks {needle}"
            );
        }
    }
    for event in &events {
        let text = format!("{event:?}");
        for needle in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "watch event leaks {needle}: {text}"
            );
        }
    }
    // The secrets are in the state (and its snapshot) all the same.
    let snapshot = format!("{:?}", state.to_snapshot());
    assert!(snapshot.contains(CERT_KEY) && snapshot.contains("CA-PRIVATE-KEY"));
}

#[test]
fn test_snapshot_round_trip_keeps_everything() {
    let mut h = Harness::initialised();
    let (spec, blob) = blob_spec();
    let mut spec = spec;
    spec.routes.push(crate::proto::v1::Route {
        domain: "shop.example".into(),
        path: "/".into(),
        service: "web".into(),
        port: 80,
        ..Default::default()
    });
    spec.tcp_routes.push(crate::proto::v1::TcpRoute {
        published_port: 5432,
        service: "db".into(),
        container_port: 5432,
        ..Default::default()
    });
    h.ok(Kind::ApplyDeployment(crate::proto::v1::ApplyDeployment {
        deployment: "shop".into(),
        spec: Some(spec),
        blobs: vec![blob],
        ..Default::default()
    }));
    h.ok(allocate_subnet("shop", "default", "n1"));
    let bytes = h.state.to_snapshot_bytes();
    let restored = State::from_snapshot_bytes(&bytes).expect("restores");
    assert_eq!(restored.to_snapshot_bytes(), bytes);
    assert_eq!(restored.last_applied_index(), h.index);
    assert_eq!(restored.revision(), h.index);
    assert_eq!(restored.routes().count(), 1);
    assert_eq!(restored.tcp_routes().count(), 1);
    assert_eq!(
        restored
            .subnet("shop", "default", "n1")
            .map(|s| s.cidr.as_str()),
        Some("10.244.0.0/24")
    );
    assert_eq!(
        restored.audit(&AuditFilter::default()),
        h.state.audit(&AuditFilter::default())
    );
    // Applying the same next command to both gives the same state.
    let mut original = h.state.clone();
    let mut copy = restored;
    let next = Command {
        identity: "local".into(),
        time_unix_ms: T0,
        kind: Some(add_node("n2", 2)),
        ..Default::default()
    };
    original.apply(h.index + 1, &next);
    copy.apply(h.index + 1, &next);
    assert_eq!(original.to_snapshot_bytes(), copy.to_snapshot_bytes());
}

#[test]
fn test_corrupt_snapshots_are_errors() {
    let (state, _, _) = run();
    let good = state.to_snapshot();
    let bytes = good.encode_to_vec();
    assert!(matches!(
        State::from_snapshot_bytes(&[0xff, 0x01, 0x02]),
        Err(SnapshotError::Decode(_))
    ));
    // Cut inside the last field (next_audit_id's value), and cut at an arbitrary point.
    assert!(matches!(
        State::from_snapshot_bytes(&bytes[..bytes.len() - 1]),
        Err(SnapshotError::Decode(_))
    ));
    assert!(State::from_snapshot_bytes(&bytes[..bytes.len() / 2]).is_err());
    assert!(matches!(
        State::from_snapshot_bytes(&[]),
        Err(SnapshotError::UnsupportedVersion { found: 0 })
    ));
    let broken = |change: &dyn Fn(&mut StateSnapshot)| {
        let mut s = good.clone();
        change(&mut s);
        State::from_snapshot(s).map(|_| ()).unwrap_err()
    };
    assert!(matches!(
        broken(&|s| s.format_version = 2),
        SnapshotError::UnsupportedVersion { found: 2 }
    ));
    assert!(matches!(
        broken(&|s| s.nodes.push(s.nodes[0].clone())),
        SnapshotError::Duplicate { entity: "node", .. }
    ));
    assert!(matches!(
        broken(&|s| s.audit_events.swap(0, 1)),
        SnapshotError::Inconsistent(_)
    ));
    assert!(matches!(
        broken(&|s| s.next_audit_id = 1),
        SnapshotError::Inconsistent(_)
    ));
    // Every fuzzed single-byte corruption is an error or a valid state, never a panic.
    for i in 0..bytes.len() {
        let mut corrupt = bytes.clone();
        corrupt[i] ^= 0x5a;
        let _ = State::from_snapshot_bytes(&corrupt);
    }
    let mut core = State::new();
    assert!(StateMachineCore::restore(&mut core, b"garbage").is_err());
}

#[test]
fn test_two_deployments_owning_one_route_is_an_inconsistent_snapshot() {
    let mut h = Harness::initialised();
    let mut with_port = spec(&[("db", "pg")]);
    with_port.tcp_routes.push(crate::proto::v1::TcpRoute {
        published_port: 5432,
        service: "db".into(),
        ..Default::default()
    });
    h.ok(apply_deployment("shop", with_port));
    let mut snapshot = h.state.to_snapshot();
    let mut copy = snapshot.deployments[0].clone();
    copy.name = "blog".into();
    snapshot.deployments.push(copy);
    assert!(matches!(
        State::from_snapshot(snapshot),
        Err(SnapshotError::Inconsistent(_))
    ));
}

#[test]
fn test_restore_replaces_state_and_flags_a_snapshot_gap() {
    let (state, _, _) = run();
    let mut core = State::new();
    StateMachineCore::apply(&mut core, 1, &commands()[0].encode_to_vec());
    StateMachineCore::restore(&mut core, &state.snapshot()).expect("restores");
    assert_eq!(core.last_applied(), state.last_applied_index());
    let published = core.drain_events();
    assert_eq!(
        published.gap,
        Some((ResyncReason::SnapshotInstalled, state.last_applied_index()))
    );
    assert!(
        published.events.is_empty(),
        "events from before the restore are dropped"
    );
}

#[test]
fn test_outbox_overflow_records_a_gap_instead_of_growing() {
    let mut core = State::new();
    StateMachineCore::apply(&mut core, 1, &commands()[0].encode_to_vec());
    // Fill the outbox to the brim with copies of a real event (an owner that never drains).
    let event = core.drain_events().events.remove(0);
    core.outbox.events = vec![event; OUTBOX_CAPACITY];
    let heartbeat = |at: i64| Command {
        identity: "system".into(),
        time_unix_ms: T0,
        kind: Some(Kind::RecordHeartbeats(RecordHeartbeats {
            heartbeats: vec![NodeHeartbeat {
                node: "n1".into(),
                received_at_unix_ms: at,
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    StateMachineCore::apply(&mut core, 2, &heartbeat(T0 + 1).encode_to_vec());
    StateMachineCore::apply(&mut core, 3, &heartbeat(T0 + 2).encode_to_vec());
    let published = core.drain_events();
    assert_eq!(published.gap, Some((ResyncReason::Overflow, 2)));
    assert_eq!(published.events.len(), 1, "events after the gap are kept");
    assert_eq!(published.revision, 3);
}

#[tokio::test]
async fn test_drained_events_reach_a_filtered_subscriber() {
    let mut core = State::new();
    let hub = WatchHub::new(watch::DEFAULT_HISTORY, core.revision());
    let mut nodes = hub.subscribe(WatchFilter::types([EntityType::Node]), 0);
    for (i, command) in commands().iter().take(5).enumerate() {
        StateMachineCore::apply(&mut core, i as u64 + 1, &command.encode_to_vec());
        hub.publish(core.drain_events());
    }
    let mut keys = Vec::new();
    while let Ok(message) = nodes.try_recv() {
        match message {
            WatchMessage::Event(event) => keys.push((event.kind, event.key.clone())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        keys,
        [
            (ChangeKind::Added, "n1".to_owned()),
            (ChangeKind::Added, "n2".to_owned())
        ]
    );
    assert_eq!(hub.revision(), core.revision());
    // A late subscriber resumes from a revision and gets the audit events after it.
    let mut audit = hub.subscribe(WatchFilter::types([EntityType::AuditEvent]), 1);
    match audit.recv().await {
        Some(WatchMessage::Event(event)) => assert_eq!(event.revision, 2),
        other => panic!("unexpected {other:?}"),
    }
}
