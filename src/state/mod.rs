//! The replicated state machine: every entity of jaco's state as plain values, and the pure,
//! deterministic `apply(index, command) -> (result, watch events)` that is the only way to
//! change it.
//!
//! # Contract
//! - [`State::apply`] must not read clocks, randomness, the environment or disks, and must not
//!   log: "now" is `Command.time_unix_ms`, the caller is `Command.identity`, and everything
//!   else travels in the command. The same commands at the same indices give the same state
//!   and the same snapshot bytes on every node.
//! - A rejected command changes nothing, not even the audit log; only `last_applied_index`
//!   moves (raft has applied the entry). Every handler checks everything before it mutates.
//! - An accepted command that changes anything sets [`State::revision`] to its index and
//!   returns one [`WatchEvent`] per changed entity, secrets stripped ([`redact`]).
//! - Mutating commands append audit events of the closed `AuditEventType` set (identity, time,
//!   a payload without secrets). Bookkeeping with no audit type of its own — node
//!   self-reports, heartbeats, raft roles, reachability, drains, replica reports, subnet
//!   allocation, ACME challenges and accounts — is not audited: the closed set has no type for
//!   it, and heartbeat-rate events would flush the retention ring.
//! - Every command except `InitCluster` is rejected with `cluster_uninitialized` before the
//!   cluster exists; a command whose identity names a revoked operator token is rejected with
//!   `token_revoked`.
//!
//! # Layout
//! - `change`: the per-command `Tx` context, map helpers that record watch events,
//!   and [`redact`].
//! - `cluster`: cluster identity, nodes, heartbeats, roles, reachability, drains.
//! - `auth`: join tokens, operator tokens, registry credentials.
//! - `deploy`: deployments, revisions, secret/config blobs, the route indexes; `diff` computes
//!   what an apply or rollback changes.
//! - `replicas`: scheduler batches, replica observations, rollouts, counters.
//! - `ipam`: deterministic /24 allocation.
//! - `ingress`: certificates, ACME challenges and accounts.
//! - `audit`: the bounded audit ring and its query.
//! - `upgrade`: fleet upgrade plans.
//! - `snapshot`: `StateSnapshot` encoding and validation.
//! - [`watch`]: watch events and the [`WatchHub`] that fans them out.
//!
//! # Limitations
//! - The snapshot does not carry the revision of the last change; after a restore,
//!   [`State::revision`] is the snapshot's `last_applied_index` (a later value is safe: it
//!   only claims that nothing changed in between).
//! - `last_applied_term` is not tracked (the raft layer owns terms); snapshots carry 0.

mod audit;
mod auth;
mod change;
mod cluster;
mod deploy;
mod diff;
mod ingress;
mod ipam;
mod replicas;
mod snapshot;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
mod upgrade;
pub mod watch;

use std::collections::{BTreeMap, VecDeque};

use prost::Message as _;

use crate::error::{Code, Error};
use crate::proto::v1::{
    AcmeAccount, AuditEvent, Certificate, ChallengeToken, ClusterMeta, Command, CommandAck,
    CommandResult, ContentBlob, Deployment, DeploymentRevision, DeploymentTombstone, JoinToken,
    Node, OperatorToken, RegistryCredential, ReplicaCounter, ReplicaDesired, ReplicaObserved,
    Rollout, Route, Subnet, TcpRoute, UpgradePlan, command, command_result::Outcome,
};

pub use audit::{AuditFilter, AuditPage, DEFAULT_AUDIT_LIMIT, DEFAULT_AUDIT_RETENTION};
pub use auth::canonical_registry;
pub use change::redact;
pub use diff::deployment_diff;
pub use ipam::{DEFAULT_IPAM_POOL, Pool};
pub use snapshot::{SNAPSHOT_FORMAT_VERSION, SnapshotError};
pub use upgrade::upgrade_in_progress;
pub use watch::{
    ChangeKind, Published, ResyncReason, Subscription, WatchEvent, WatchFilter, WatchHub,
};

use change::Tx;

pub use crate::raft::StateMachineCore;

/// Deployment revisions retained per deployment (the current one included).
pub const REVISION_HISTORY: usize = 10;

/// Upgrade plans retained (the running one included).
pub const UPGRADE_PLAN_HISTORY: usize = 10;

/// Watch events the outbox holds before it gives up and records an overflow gap.
pub const OUTBOX_CAPACITY: usize = 65_536;

/// Key of a secret/config blob: deployment, kind, name, content SHA-256.
type BlobKey = (String, i32, String, String);

/// The whole replicated state as plain values, plus the apply bookkeeping.
///
/// Maps are keyed by each entity's natural key, so iteration (and the snapshot) is in key
/// order. `routes` and `tcp_routes` are indexes derived from the deployments' specs and are
/// rebuilt on restore.
#[derive(Debug, Clone)]
pub struct State {
    last_applied_index: u64,
    revision: u64,
    cluster: Option<ClusterMeta>,
    nodes: BTreeMap<String, Node>,
    operator_tokens: BTreeMap<String, OperatorToken>,
    join_tokens: BTreeMap<Vec<u8>, JoinToken>,
    registry_credentials: BTreeMap<String, RegistryCredential>,
    deployments: BTreeMap<String, Deployment>,
    revisions: BTreeMap<(String, u64), DeploymentRevision>,
    tombstones: BTreeMap<String, DeploymentTombstone>,
    blobs: BTreeMap<BlobKey, ContentBlob>,
    replicas_desired: BTreeMap<String, ReplicaDesired>,
    replicas_observed: BTreeMap<String, ReplicaObserved>,
    replica_counters: BTreeMap<(String, String), ReplicaCounter>,
    rollouts: BTreeMap<(String, String), Rollout>,
    routes: BTreeMap<(String, String), Route>,
    tcp_routes: BTreeMap<u32, TcpRoute>,
    subnets: BTreeMap<(String, String, String), Subnet>,
    certificates: BTreeMap<String, Certificate>,
    challenge_tokens: BTreeMap<String, ChallengeToken>,
    acme_accounts: BTreeMap<(String, String), AcmeAccount>,
    audit: VecDeque<AuditEvent>,
    next_audit_id: u64,
    upgrade_plans: VecDeque<UpgradePlan>,
    outbox: Published,
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl State {
    /// An empty, uninitialised state.
    pub fn new() -> Self {
        State {
            last_applied_index: 0,
            revision: 0,
            cluster: None,
            nodes: BTreeMap::new(),
            operator_tokens: BTreeMap::new(),
            join_tokens: BTreeMap::new(),
            registry_credentials: BTreeMap::new(),
            deployments: BTreeMap::new(),
            revisions: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            blobs: BTreeMap::new(),
            replicas_desired: BTreeMap::new(),
            replicas_observed: BTreeMap::new(),
            replica_counters: BTreeMap::new(),
            rollouts: BTreeMap::new(),
            routes: BTreeMap::new(),
            tcp_routes: BTreeMap::new(),
            subnets: BTreeMap::new(),
            certificates: BTreeMap::new(),
            challenge_tokens: BTreeMap::new(),
            acme_accounts: BTreeMap::new(),
            audit: VecDeque::new(),
            next_audit_id: 1,
            upgrade_plans: VecDeque::new(),
            outbox: Published::default(),
        }
    }

    /// Raft index of the last applied command (accepted or rejected).
    pub fn last_applied_index(&self) -> u64 {
        self.last_applied_index
    }

    /// Raft index of the last command that changed something (the state revision watchers and
    /// reads refer to).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Applies the committed `command` at raft `index` and returns its result and the changes
    /// it made, secrets stripped. The events are returned, not queued: publishing them is the
    /// caller's job (the [`StateMachineCore`] impl queues them for [`State::drain_events`]).
    ///
    /// An index at or below the last applied one is refused with `internal` and changes
    /// nothing (raft never re-applies an entry; this guards against a wiring mistake).
    pub fn apply(&mut self, index: u64, command: &Command) -> (CommandResult, Vec<WatchEvent>) {
        if index <= self.last_applied_index && self.last_applied_index != 0 {
            let error = Error::new(Code::Internal, "raft index already applied")
                .with("index", index)
                .with("last_applied_index", self.last_applied_index);
            return (error_result(index, error), Vec::new());
        }
        self.last_applied_index = index;
        let identity = if command.identity.is_empty() {
            "system"
        } else {
            command.identity.as_str()
        };
        let mut tx = Tx::new(index, command.time_unix_ms, identity);
        match self.dispatch(&mut tx, command.kind.as_ref()) {
            Ok(outcome) => {
                if !tx.events.is_empty() {
                    self.revision = index;
                }
                let result = CommandResult {
                    index,
                    outcome: Some(outcome),
                };
                (result, tx.events)
            }
            Err(error) => {
                debug_assert!(tx.events.is_empty(), "a rejected command changed state");
                (error_result(index, error), Vec::new())
            }
        }
    }

    /// Runs the handler of one command kind after the checks common to every command.
    fn dispatch(&mut self, tx: &mut Tx, kind: Option<&command::Kind>) -> Result<Outcome, Error> {
        use command::Kind as K;
        let kind = kind.ok_or_else(|| missing("kind"))?;
        if !matches!(kind, K::InitCluster(_)) && self.cluster.is_none() {
            return Err(Error::new(
                Code::ClusterUninitialized,
                "the cluster is not initialised",
            ));
        }
        self.check_identity(tx.identity)?;
        match kind {
            K::InitCluster(c) => self.init_cluster(tx, c),
            K::AddNode(c) => self.add_node(tx, c),
            K::RemoveNode(c) => self.remove_node(tx, c),
            K::UpdateNodeInfo(c) => self.update_node_info(tx, c),
            K::SetNodeStatus(c) => self.set_node_status(tx, c),
            K::SetRaftRoles(c) => self.set_raft_roles(tx, c),
            K::RecordHeartbeats(c) => self.record_heartbeats(tx, c),
            K::SetNodeReachability(c) => self.set_node_reachability(tx, c),
            K::SetNodeDrain(c) => self.set_node_drain(tx, c),
            K::IssueJoinToken(c) => self.issue_join_token(tx, c),
            K::ConsumeJoinToken(c) => self.consume_join_token(tx, c),
            K::IssueOperatorToken(c) => self.issue_operator_token(tx, c),
            K::RevokeOperatorToken(c) => self.revoke_operator_token(tx, c),
            K::ApplyDeployment(c) => self.apply_deployment(tx, c),
            K::RollbackDeployment(c) => self.rollback_deployment(tx, c),
            K::DeleteDeployment(c) => self.delete_deployment(tx, c),
            K::SchedulerBatch(c) => self.scheduler_batch(tx, c),
            K::ReportReplicas(c) => self.report_replicas(tx, c),
            K::AllocateSubnet(c) => self.allocate_subnet(tx, c),
            K::ReleaseSubnet(c) => self.release_subnet(tx, c),
            K::PutCertificate(c) => self.put_certificate(tx, c),
            K::DeleteCertificate(c) => self.delete_certificate(tx, c),
            K::PutChallengeToken(c) => self.put_challenge_token(tx, c),
            K::DeleteChallengeToken(c) => self.delete_challenge_token(tx, c),
            K::PutAcmeAccount(c) => self.put_acme_account(tx, c),
            K::UpsertRegistryCredential(c) => self.upsert_registry_credential(tx, c),
            K::RemoveRegistryCredential(c) => self.remove_registry_credential(tx, c),
            K::AppendAudit(c) => self.append_audit(tx, c),
            K::StartUpgrade(c) => self.start_upgrade(tx, c),
            K::UpdateUpgrade(c) => self.update_upgrade(tx, c),
            K::AbortUpgrade(c) => self.abort_upgrade(tx, c),
        }
    }

    /// Takes the watch events queued by [`StateMachineCore::apply`] and
    /// [`StateMachineCore::restore`] since the last call, for [`WatchHub::publish`].
    ///
    /// The outbox holds at most [`OUTBOX_CAPACITY`] events; beyond that it drops them and
    /// records an overflow gap, so an owner that drains late makes subscribers resync instead
    /// of missing changes silently.
    pub fn drain_events(&mut self) -> Published {
        let revision = self.revision;
        let mut batch = std::mem::take(&mut self.outbox);
        batch.revision = revision;
        batch
    }

    fn queue_events(&mut self, events: Vec<WatchEvent>) {
        if self.outbox.events.len() + events.len() > OUTBOX_CAPACITY {
            self.outbox.events.clear();
            self.outbox.gap = Some((ResyncReason::Overflow, self.revision));
        } else {
            self.outbox.events.extend(events);
        }
    }
}

impl StateMachineCore for State {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        let result = match Command::decode(command) {
            Ok(command) => {
                let (result, events) = State::apply(self, index, &command);
                self.queue_events(events);
                result
            }
            Err(decode) => {
                // Consumed like any rejected entry, so raft's applied index stays in step.
                self.last_applied_index = self.last_applied_index.max(index);
                let error = Error::new(Code::Internal, "undecodable command")
                    .with("reason", decode)
                    .with("index", index);
                error_result(index, error)
            }
        };
        result.encode_to_vec()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.to_snapshot_bytes()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let restored = State::from_snapshot_bytes(snapshot).map_err(|e| e.to_string())?;
        let revision = restored.revision;
        *self = restored;
        self.outbox.gap = Some((ResyncReason::SnapshotInstalled, revision));
        Ok(())
    }

    fn last_applied(&self) -> u64 {
        self.last_applied_index
    }
}

/// The result of a command, or the error it was rejected with.
///
/// For callers that proposed a command and want the closed-code [`Error`] back.
pub fn into_outcome(result: CommandResult) -> Result<Outcome, Error> {
    match result.outcome {
        Some(Outcome::Error(envelope)) => Err(error_from_proto(envelope)),
        Some(outcome) => Ok(outcome),
        None => Err(Error::new(
            Code::Internal,
            "command result without an outcome",
        )),
    }
}

fn error_result(index: u64, error: Error) -> CommandResult {
    CommandResult {
        index,
        outcome: Some(Outcome::Error(crate::proto::v1::Error {
            code: error.code.as_str().to_owned(),
            message: error.message,
            details: error.details,
        })),
    }
}

fn error_from_proto(envelope: crate::proto::v1::Error) -> Error {
    match envelope.code.parse::<Code>() {
        Ok(code) => Error {
            code,
            message: envelope.message,
            details: envelope.details,
        },
        Err(unknown) => Error::new(Code::Internal, envelope.message)
            .with("original_code", unknown.0)
            .with("reason", "unknown_code"),
    }
}

/// The accepted-with-nothing-to-report outcome.
fn ack() -> Outcome {
    Outcome::Ack(CommandAck {})
}

/// A `validation_failed` error naming `field`.
fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::new(Code::ValidationFailed, message).with("field", field)
}

/// A `validation_failed` error for a required field left empty.
fn missing(field: &str) -> Error {
    invalid(field, format!("{field} is required"))
}

/// Rejects an empty string field.
fn required(value: &str, field: &str) -> Result<(), Error> {
    if value.is_empty() {
        Err(missing(field))
    } else {
        Ok(())
    }
}

/// Decodes a proto enum field that must hold a named (not UNSPECIFIED) value.
fn named<T: TryFrom<i32> + Default + PartialEq>(raw: i32, field: &str) -> Result<T, Error> {
    match T::try_from(raw) {
        Ok(value) if value != T::default() => Ok(value),
        _ => Err(invalid(
            field,
            format!("{field} must be a named value, got {raw}"),
        )),
    }
}

/// Decodes an optional proto enum field: UNSPECIFIED is `None`, unknown values are rejected.
fn optional<T: TryFrom<i32> + Default + PartialEq>(
    raw: i32,
    field: &str,
) -> Result<Option<T>, Error> {
    if raw == 0 {
        Ok(None)
    } else {
        named(raw, field).map(Some)
    }
}

/// Builds an audit payload from key/value pairs.
fn payload<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}
