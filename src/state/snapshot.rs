//! The state as one `StateSnapshot` message: for raft snapshots, backups and restores.
//!
//! Encoding is canonical: maps are ordered (proto maps are generated as `BTreeMap`) and every
//! list is in key order, so equal states encode to equal bytes. Decoding validates what the
//! maps' keys imply (no duplicates, audit ids increasing) and rebuilds the derived route
//! indexes; anything wrong is a [`SnapshotError`], never a panic. The bytes carry no checksum
//! of their own: the raft layer and backup files add theirs. Nothing here touches a disk.
//!
//! It must not read clocks or disks, and must not panic on any input.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;

use prost::Message as _;

use crate::proto::v1::StateSnapshot;

use super::{Published, State};

/// The `StateSnapshot.format_version` this code writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// Why snapshot bytes could not become a state.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes are not a `StateSnapshot` message.
    #[error("snapshot does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The snapshot was written by an incompatible format version (0 = no snapshot at all).
    #[error(
        "snapshot format version {found} is not supported (this build reads {SNAPSHOT_FORMAT_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u32,
    },
    /// Two entities share a key.
    #[error("snapshot holds two {entity} entries keyed {key}")]
    Duplicate {
        /// Entity kind.
        entity: &'static str,
        /// The shared key.
        key: String,
    },
    /// Entities contradict each other.
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

impl State {
    /// The whole state as a `StateSnapshot` (secrets included).
    pub fn to_snapshot(&self) -> StateSnapshot {
        fn all<'a, V: Clone + 'a>(values: impl Iterator<Item = &'a V>) -> Vec<V> {
            values.cloned().collect()
        }
        StateSnapshot {
            format_version: SNAPSHOT_FORMAT_VERSION,
            last_applied_index: self.last_applied_index,
            last_applied_term: 0,
            cluster_meta: self.cluster.clone(),
            nodes: all(self.nodes.values()),
            deployments: all(self.deployments.values()),
            deployment_revisions: all(self.revisions.values()),
            deployment_tombstones: all(self.tombstones.values()),
            content_blobs: all(self.blobs.values()),
            replicas_desired: all(self.replicas_desired.values()),
            replicas_observed: all(self.replicas_observed.values()),
            replica_counters: all(self.replica_counters.values()),
            rollouts: all(self.rollouts.values()),
            subnets: all(self.subnets.values()),
            certificates: all(self.certificates.values()),
            challenge_tokens: all(self.challenge_tokens.values()),
            acme_accounts: all(self.acme_accounts.values()),
            operator_tokens: all(self.operator_tokens.values()),
            join_tokens: all(self.join_tokens.values()),
            registry_credentials: all(self.registry_credentials.values()),
            audit_events: all(self.audit.iter()),
            next_audit_id: self.next_audit_id,
            upgrade_plans: all(self.upgrade_plans.iter()),
        }
    }

    /// The whole state as prost-encoded `StateSnapshot` bytes (canonical).
    pub fn to_snapshot_bytes(&self) -> Vec<u8> {
        self.to_snapshot().encode_to_vec()
    }

    /// Decodes and validates [`State::to_snapshot_bytes`] output.
    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<State, SnapshotError> {
        State::from_snapshot(StateSnapshot::decode(bytes)?)
    }

    /// Rebuilds a state from a snapshot, validating keys and rebuilding derived indexes. The
    /// revision becomes the snapshot's `last_applied_index`.
    pub fn from_snapshot(s: StateSnapshot) -> Result<State, SnapshotError> {
        if s.format_version != SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: s.format_version,
            });
        }
        let mut audit = VecDeque::with_capacity(s.audit_events.len());
        let mut last_id = 0;
        for event in s.audit_events {
            if event.id <= last_id || event.id >= s.next_audit_id {
                return Err(SnapshotError::Inconsistent(format!(
                    "audit event id {} out of order (previous {last_id}, next {})",
                    event.id, s.next_audit_id
                )));
            }
            last_id = event.id;
            audit.push_back(event);
        }
        let mut plan_ids = std::collections::BTreeSet::new();
        for plan in &s.upgrade_plans {
            if !plan_ids.insert(plan.id.as_str()) {
                return Err(SnapshotError::Duplicate {
                    entity: "upgrade plan",
                    key: plan.id.clone(),
                });
            }
        }
        let upgrade_plans = s.upgrade_plans.into();
        let mut state = State {
            last_applied_index: s.last_applied_index,
            revision: s.last_applied_index,
            cluster: s.cluster_meta,
            nodes: keyed(s.nodes, "node", |n| n.name.clone())?,
            operator_tokens: keyed(s.operator_tokens, "operator token", |t| t.name.clone())?,
            join_tokens: keyed(s.join_tokens, "join token", |t| t.sha256.clone())?,
            registry_credentials: keyed(s.registry_credentials, "registry credential", |c| {
                c.registry.clone()
            })?,
            deployments: keyed(s.deployments, "deployment", |d| d.name.clone())?,
            revisions: keyed(s.deployment_revisions, "deployment revision", |r| {
                (r.deployment.clone(), r.revision)
            })?,
            tombstones: keyed(s.deployment_tombstones, "tombstone", |t| {
                t.deployment.clone()
            })?,
            blobs: keyed(s.content_blobs, "content blob", |b| {
                (
                    b.deployment.clone(),
                    b.kind,
                    b.name.clone(),
                    b.sha256.clone(),
                )
            })?,
            replicas_desired: keyed(s.replicas_desired, "desired replica", |r| r.id.clone())?,
            replicas_observed: keyed(s.replicas_observed, "observed replica", |r| r.id.clone())?,
            replica_counters: keyed(s.replica_counters, "replica counter", |c| {
                (c.deployment.clone(), c.service.clone())
            })?,
            rollouts: keyed(s.rollouts, "rollout", |r| {
                (r.deployment.clone(), r.service.clone())
            })?,
            routes: BTreeMap::new(),
            tcp_routes: BTreeMap::new(),
            subnets: keyed(s.subnets, "subnet", |n| {
                (n.deployment.clone(), n.network.clone(), n.node.clone())
            })?,
            certificates: keyed(s.certificates, "certificate", |c| c.domain.clone())?,
            challenge_tokens: keyed(s.challenge_tokens, "challenge token", |t| t.token.clone())?,
            acme_accounts: keyed(s.acme_accounts, "acme account", |a| {
                (a.directory_url.clone(), a.email.clone())
            })?,
            audit,
            next_audit_id: s.next_audit_id.max(1),
            upgrade_plans,
            outbox: Published::default(),
        };
        state
            .rebuild_route_indexes()
            .map_err(SnapshotError::Inconsistent)?;
        Ok(state)
    }
}

/// Puts `items` in a map by `key`, refusing duplicates.
fn keyed<K: Ord + Debug, V>(
    items: Vec<V>,
    entity: &'static str,
    key: impl Fn(&V) -> K,
) -> Result<BTreeMap<K, V>, SnapshotError> {
    let mut map = BTreeMap::new();
    for item in items {
        let k = key(&item);
        if map.contains_key(&k) {
            return Err(SnapshotError::Duplicate {
                entity,
                key: format!("{k:?}"),
            });
        }
        map.insert(k, item);
    }
    Ok(map)
}
