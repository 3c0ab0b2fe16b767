//! Change recording for one `apply`: the [`Tx`] context and the map helpers that turn every
//! entity insert, update and removal into a [`WatchEvent`] with secrets stripped.
//!
//! Every mutation of a [`super::State`] map goes through [`put`], [`take`] or [`modify`], so a
//! change can never escape the watch stream, and an unchanged value never produces an event
//! (a heartbeat carrying the same values is not a change). [`redact`] is the one place that
//! knows which entity fields are secret material. Nothing here reads a clock, randomness or a
//! disk; "now" and the caller come from the command.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use crate::proto::v1::{
    AcmeAccount, AuditEvent, Certificate, ChallengeToken, ClusterMeta, ContentBlob, Deployment,
    DeploymentRevision, DeploymentTombstone, EntityType, JoinToken, Node, OperatorToken,
    RegistryCredential, ReplicaCounter, ReplicaDesired, ReplicaObserved, Rollout, Route, Subnet,
    TcpRoute, UpgradePlan, entity::Entity,
};

use super::watch::{ChangeKind, WatchEvent};

/// The context of one command being applied: its raft index, its time and its caller, and the
/// watch events its changes produced so far.
#[derive(Debug)]
pub(super) struct Tx<'c> {
    /// Raft log index of the command (the new state revision if anything changes).
    pub index: u64,
    /// The command's time: the state machine's only notion of "now".
    pub now: i64,
    /// Who caused the command (token name, `local`, `system`, `node:<name>`).
    pub identity: &'c str,
    /// Changes recorded so far, in order.
    pub events: Vec<WatchEvent>,
}

impl<'c> Tx<'c> {
    /// A context for the command at `index`.
    pub fn new(index: u64, now: i64, identity: &'c str) -> Self {
        Tx {
            index,
            now,
            identity,
            events: Vec::new(),
        }
    }

    /// Records one change; `before`/`after` absent mean added/removed. Equal values record
    /// nothing.
    pub fn record<E: Watched>(&mut self, before: Option<&E>, after: Option<&E>) {
        let kind = match (before, after) {
            (None, None) => return,
            (Some(b), Some(a)) if b == a => return,
            (None, Some(_)) => ChangeKind::Added,
            (Some(_), Some(_)) => ChangeKind::Updated,
            (Some(_), None) => ChangeKind::Removed,
        };
        let Some(subject) = after.or(before) else {
            return;
        };
        self.events.push(WatchEvent {
            revision: self.index,
            time_unix_ms: self.now,
            entity_type: E::TYPE,
            kind,
            key: subject.watch_key(),
            deployment: subject.deployment().map(str::to_owned),
            entity: after.map(|a| redact(a.clone().wrap())),
            before: before.map(|b| redact(b.clone().wrap())),
        });
    }
}

/// A replicated entity as the watch stream sees it.
pub(super) trait Watched: Clone + PartialEq {
    /// Its entity type.
    const TYPE: EntityType;
    /// Its key in watch events (never secret material).
    fn watch_key(&self) -> String;
    /// The deployment it belongs to, if any (for the watch deployment filter).
    fn deployment(&self) -> Option<&str> {
        None
    }
    /// Wraps it in the `Entity` oneof (not yet redacted).
    fn wrap(self) -> Entity;
}

/// Implements [`Watched`] for entity messages: type, oneof variant, key, optional deployment.
macro_rules! watched {
    ($($ty:ident => $variant:ident, $etype:ident, |$v:ident| $key:expr $(, dep |$d:ident| $dep:expr)?;)+) => {
        $(
            impl Watched for $ty {
                const TYPE: EntityType = EntityType::$etype;
                fn watch_key(&self) -> String {
                    let $v = self;
                    $key
                }
                $(
                    fn deployment(&self) -> Option<&str> {
                        let $d = self;
                        Some($dep)
                    }
                )?
                fn wrap(self) -> Entity {
                    Entity::$variant(self)
                }
            }
        )+
    };
}

watched! {
    ClusterMeta => ClusterMeta, ClusterMeta, |v| v.cluster_id.clone();
    Node => Node, Node, |v| v.name.clone();
    Deployment => Deployment, Deployment, |v| v.name.clone(), dep |d| &d.name;
    DeploymentRevision => DeploymentRevision, DeploymentRevision,
        |v| format!("{}/{}", v.deployment, v.revision), dep |d| &d.deployment;
    DeploymentTombstone => DeploymentTombstone, DeploymentTombstone,
        |v| v.deployment.clone(), dep |d| &d.deployment;
    ContentBlob => ContentBlob, ContentBlob,
        |v| format!("{}/{}/{}/{}", v.deployment, blob_kind_name(v.kind), v.name, v.sha256),
        dep |d| &d.deployment;
    ReplicaDesired => ReplicaDesired, ReplicaDesired, |v| v.id.clone(), dep |d| &d.deployment;
    ReplicaObserved => ReplicaObserved, ReplicaObserved, |v| v.id.clone();
    ReplicaCounter => ReplicaCounter, ReplicaCounter,
        |v| format!("{}/{}", v.deployment, v.service), dep |d| &d.deployment;
    Rollout => Rollout, Rollout,
        |v| format!("{}/{}", v.deployment, v.service), dep |d| &d.deployment;
    Route => Route, Route, |v| format!("{}{}", v.domain, v.path), dep |d| &d.deployment;
    TcpRoute => TcpRoute, TcpRoute, |v| v.published_port.to_string(), dep |d| &d.deployment;
    Subnet => Subnet, Subnet,
        |v| format!("{}/{}/{}", v.deployment, v.network, v.node), dep |d| &d.deployment;
    Certificate => Certificate, Certificate, |v| v.domain.clone();
    ChallengeToken => ChallengeToken, ChallengeToken, |v| v.token.clone();
    AcmeAccount => AcmeAccount, AcmeAccount, |v| format!("{} {}", v.directory_url, v.email);
    OperatorToken => OperatorToken, OperatorToken, |v| v.name.clone();
    // Keyed by node and issue time: the hash is what the state is keyed by, and it is secret.
    JoinToken => JoinToken, JoinToken, |v| format!("{}@{}", v.node_name, v.issued_at_unix_ms);
    RegistryCredential => RegistryCredential, RegistryCredential, |v| v.registry.clone();
    AuditEvent => AuditEvent, AuditEvent, |v| v.id.to_string();
    UpgradePlan => UpgradePlan, UpgradePlan, |v| v.id.clone();
}

/// The short name of a blob kind (`secret`, `config`) used in keys.
pub(super) fn blob_kind_name(kind: i32) -> &'static str {
    use crate::proto::v1::BlobKind;
    match BlobKind::try_from(kind) {
        Ok(BlobKind::Secret) => "secret",
        Ok(BlobKind::Config) => "config",
        _ => "unspecified",
    }
}

/// Strips secret material (keys, token hashes, passwords, blob contents) from an entity.
///
/// This is what every watch event carries; the full values stay in the state and snapshots.
pub fn redact(entity: Entity) -> Entity {
    match entity {
        Entity::ClusterMeta(mut meta) => {
            meta.ca_key_pem.clear();
            Entity::ClusterMeta(meta)
        }
        Entity::ContentBlob(mut blob) => {
            blob.content.clear();
            Entity::ContentBlob(blob)
        }
        Entity::Certificate(mut cert) => {
            cert.key_pem.clear();
            Entity::Certificate(cert)
        }
        Entity::AcmeAccount(mut account) => {
            account.key_pem.clear();
            Entity::AcmeAccount(account)
        }
        Entity::OperatorToken(mut token) => {
            token.sha256.clear();
            Entity::OperatorToken(token)
        }
        Entity::JoinToken(mut token) => {
            token.sha256.clear();
            Entity::JoinToken(token)
        }
        Entity::RegistryCredential(mut credential) => {
            credential.secret.clear();
            Entity::RegistryCredential(credential)
        }
        other => other,
    }
}

/// Inserts or replaces the value under `key`, recording Added or Updated (nothing when equal).
pub(super) fn put<K: Ord, E: Watched>(map: &mut BTreeMap<K, E>, key: K, value: E, tx: &mut Tx) {
    let before = map.insert(key, value.clone());
    tx.record(before.as_ref(), Some(&value));
}

/// Removes the value under `key`, recording Removed; `None` (and no event) when absent.
pub(super) fn take<K, Q, E>(map: &mut BTreeMap<K, E>, key: &Q, tx: &mut Tx) -> Option<E>
where
    K: Ord + Borrow<Q>,
    Q: Ord + ?Sized,
    E: Watched,
{
    let before = map.remove(key)?;
    tx.record(Some(&before), None);
    Some(before)
}

/// Changes the value under `key` in place, recording Updated when it really changed. Returns
/// false (and calls nothing) when the key is absent.
pub(super) fn modify<K, Q, E>(
    map: &mut BTreeMap<K, E>,
    key: &Q,
    tx: &mut Tx,
    change: impl FnOnce(&mut E),
) -> bool
where
    K: Ord + Borrow<Q>,
    Q: Ord + ?Sized,
    E: Watched,
{
    let Some(slot) = map.get_mut(key) else {
        return false;
    };
    let before = slot.clone();
    change(slot);
    tx.record(Some(&before), Some(&*slot));
    true
}

/// Removes every entry matching `doomed`, recording each removal.
pub(super) fn take_where<K: Ord + Clone, E: Watched>(
    map: &mut BTreeMap<K, E>,
    tx: &mut Tx,
    doomed: impl Fn(&K, &E) -> bool,
) {
    let keys: Vec<K> = map
        .iter()
        .filter(|(k, v)| doomed(k, v))
        .map(|(k, _)| k.clone())
        .collect();
    for key in keys {
        take(map, &key, tx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, version: &str) -> Node {
        Node {
            name: name.into(),
            version: version.into(),
            ..Default::default()
        }
    }

    #[test]
    fn test_put_records_added_then_updated_and_nothing_for_equal_values() {
        let mut map = BTreeMap::new();
        let mut tx = Tx::new(7, 1_000, "local");
        put(&mut map, "a".to_owned(), node("a", "1"), &mut tx);
        put(&mut map, "a".to_owned(), node("a", "1"), &mut tx);
        put(&mut map, "a".to_owned(), node("a", "2"), &mut tx);
        let kinds: Vec<ChangeKind> = tx.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [ChangeKind::Added, ChangeKind::Updated]);
        let updated = &tx.events[1];
        assert_eq!(updated.revision, 7);
        assert_eq!(updated.time_unix_ms, 1_000);
        assert_eq!(updated.key, "a");
        assert_eq!(updated.entity_type, EntityType::Node);
        assert_eq!(updated.before, Some(Entity::Node(node("a", "1"))));
        assert_eq!(updated.entity, Some(Entity::Node(node("a", "2"))));
    }

    #[test]
    fn test_take_and_modify_record_only_real_changes() {
        let mut map = BTreeMap::from([("a".to_owned(), node("a", "1"))]);
        let mut tx = Tx::new(1, 0, "system");
        assert!(modify(&mut map, "a", &mut tx, |_| {}));
        assert!(!modify(&mut map, "b", &mut tx, |n| n.version = "x".into()));
        assert!(tx.events.is_empty());
        assert!(take(&mut map, "b", &mut tx).is_none());
        assert!(take(&mut map, "a", &mut tx).is_some());
        assert_eq!(tx.events.len(), 1);
        assert_eq!(tx.events[0].kind, ChangeKind::Removed);
        assert!(tx.events[0].entity.is_none());
    }

    #[test]
    fn test_redact_strips_every_secret_field() {
        let secret = "s3cr3t";
        let entities = [
            Entity::ClusterMeta(ClusterMeta {
                ca_key_pem: secret.into(),
                ..Default::default()
            }),
            Entity::ContentBlob(ContentBlob {
                content: secret.into(),
                ..Default::default()
            }),
            Entity::Certificate(Certificate {
                key_pem: secret.into(),
                ..Default::default()
            }),
            Entity::AcmeAccount(AcmeAccount {
                key_pem: secret.into(),
                ..Default::default()
            }),
            Entity::OperatorToken(OperatorToken {
                sha256: secret.into(),
                ..Default::default()
            }),
            Entity::JoinToken(JoinToken {
                sha256: secret.into(),
                ..Default::default()
            }),
            Entity::RegistryCredential(RegistryCredential {
                secret: secret.into(),
                ..Default::default()
            }),
        ];
        for entity in entities {
            let shown = format!("{:?}", redact(entity.clone()));
            assert!(!shown.contains(secret), "{shown}");
            // The bytes form of "s3cr3t" in a Debug dump.
            assert!(!shown.contains("115, 51, 99"), "{shown}");
        }
    }
}
