//! Watch: the change events the state machine produces and the [`WatchHub`] that fans them out
//! to subscribers (API Watch streams, audit tail, later the scheduler and the node agents).
//!
//! # Protocol
//! The owner of the [`super::State`] publishes every [`Published`] batch it drains, in apply
//! order, with [`WatchHub::publish`]. The hub keeps the last `capacity` events in a ring and
//! wakes subscribers through one [`tokio::sync::Notify`]. A [`Subscription`] is a cursor into
//! that ring plus a filter:
//! - **resume**: `subscribe(filter, since_revision)` replays retained events with a revision
//!   greater than `since_revision`; when the ring no longer holds every event after it, the
//!   first message is [`WatchMessage::Resync`] with [`ResyncReason::Compacted`];
//! - **overflow**: a subscriber that lets the ring wrap past its cursor gets
//!   [`ResyncReason::Overflow`] instead of a silent gap;
//! - **snapshot**: when the state was replaced by a snapshot (or its own outbox overflowed) the
//!   batch carries a gap, and every subscriber gets a resync with that reason.
//!
//! After a resync the subscriber re-reads state at or after the resync's revision; the stream
//! continues with changes after that revision.
//!
//! This module must not read clocks or state: it moves already-computed events. It holds one
//! `std::sync::Mutex`, never across an `.await`.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::proto::v1::{self, EntityType, entity::Entity};

/// How an entity changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Created.
    Added,
    /// Modified.
    Updated,
    /// Deleted.
    Removed,
}

impl From<ChangeKind> for v1::ChangeKind {
    fn from(kind: ChangeKind) -> Self {
        match kind {
            ChangeKind::Added => v1::ChangeKind::Added,
            ChangeKind::Updated => v1::ChangeKind::Updated,
            ChangeKind::Removed => v1::ChangeKind::Removed,
        }
    }
}

/// Why a subscriber must re-read state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResyncReason {
    /// The subscriber (or the state's outbox) fell behind and events were dropped.
    Overflow,
    /// The requested resume revision is older than the retained history.
    Compacted,
    /// The state was replaced by a snapshot; there is no per-entity history across it.
    SnapshotInstalled,
}

impl From<ResyncReason> for v1::ResyncReason {
    fn from(reason: ResyncReason) -> Self {
        match reason {
            ResyncReason::Overflow => v1::ResyncReason::Overflow,
            ResyncReason::Compacted => v1::ResyncReason::Compacted,
            ResyncReason::SnapshotInstalled => v1::ResyncReason::SnapshotInstalled,
        }
    }
}

/// One entity change, secrets stripped.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// State revision (raft index) of the command that made the change.
    pub revision: u64,
    /// The command's time.
    pub time_unix_ms: i64,
    /// Entity type.
    pub entity_type: EntityType,
    /// Added, updated or removed.
    pub kind: ChangeKind,
    /// Entity key (node name, replica id, `<domain><path>`, `<deployment>/<service>`, …).
    pub key: String,
    /// Deployment the entity belongs to (None for cluster-wide entities).
    pub deployment: Option<String>,
    /// The value after the change (None when removed).
    pub entity: Option<Entity>,
    /// The value before the change (None when added).
    pub before: Option<Entity>,
}

impl WatchEvent {
    /// The `jaco.v1.WatchEvent` wire form.
    pub fn to_proto(&self) -> v1::WatchEvent {
        let wrap = |entity: &Option<Entity>| entity.clone().map(|e| v1::Entity { entity: Some(e) });
        v1::WatchEvent {
            revision: self.revision,
            r#type: self.entity_type.into(),
            key: self.key.clone(),
            kind: v1::ChangeKind::from(self.kind).into(),
            before: wrap(&self.before),
            after: wrap(&self.entity),
            time_unix_ms: self.time_unix_ms,
        }
    }
}

/// What the state machine produced since its outbox was last drained.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Published {
    /// The state revision after these changes.
    pub revision: u64,
    /// Set when events before `events` were lost (state restored from a snapshot, or the outbox
    /// overflowed): the reason and the state revision at that point.
    pub gap: Option<(ResyncReason, u64)>,
    /// The changes, in apply order.
    pub events: Vec<WatchEvent>,
}

/// Which events a subscriber wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchFilter {
    /// Entity types to receive (empty = every type).
    pub types: BTreeSet<EntityType>,
    /// Only entities of this deployment (entities without a deployment always pass).
    pub deployment: Option<String>,
}

impl WatchFilter {
    /// A filter for some entity types (empty = all), every deployment.
    pub fn types(types: impl IntoIterator<Item = EntityType>) -> Self {
        WatchFilter {
            types: types.into_iter().collect(),
            deployment: None,
        }
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &WatchEvent) -> bool {
        let type_ok = self.types.is_empty() || self.types.contains(&event.entity_type);
        let deployment_ok = match (&self.deployment, &event.deployment) {
            (Some(wanted), Some(actual)) => wanted == actual,
            _ => true,
        };
        type_ok && deployment_ok
    }
}

/// One message of a subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchMessage {
    /// An entity changed.
    Event(Arc<WatchEvent>),
    /// Events were lost: re-read state at or after `revision`; the stream continues after it.
    Resync {
        /// Why.
        reason: ResyncReason,
        /// The hub's state revision at that point.
        revision: u64,
    },
}

/// Default number of events the hub retains for resume and slow subscribers.
pub const DEFAULT_HISTORY: usize = 4096;

/// The fan-out point for watch events (cheap to clone; clones share one hub).
#[derive(Debug, Clone)]
pub struct WatchHub {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    ring: Mutex<Ring>,
    notify: Notify,
}

/// The retained history. Invariant: `events[i]` has sequence number `first_seq + i`, events are
/// in non-decreasing revision order, and every event with a revision greater than `floor` that
/// was published since the last reset is still in `events`.
#[derive(Debug)]
struct Ring {
    capacity: usize,
    events: VecDeque<Arc<WatchEvent>>,
    first_seq: u64,
    floor: u64,
    revision: u64,
    epoch: u64,
    reset_reason: ResyncReason,
    closed: bool,
}

impl Ring {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.events.len() as u64
    }

    fn push(&mut self, event: WatchEvent) {
        if self.events.len() == self.capacity
            && let Some(evicted) = self.events.pop_front()
        {
            self.first_seq += 1;
            self.floor = self.floor.max(evicted.revision);
        }
        self.events.push_back(Arc::new(event));
    }

    fn reset(&mut self, reason: ResyncReason, revision: u64) {
        self.first_seq = self.end_seq();
        self.events.clear();
        self.floor = revision;
        self.revision = revision;
        self.epoch += 1;
        self.reset_reason = reason;
    }

    /// The resync a subscriber gets when it lost events.
    fn resync(&self, reason: ResyncReason) -> WatchMessage {
        WatchMessage::Resync {
            reason,
            revision: self.revision,
        }
    }
}

impl WatchHub {
    /// A hub retaining `capacity` events (at least 1), starting at state revision `revision`.
    pub fn new(capacity: usize, revision: u64) -> Self {
        WatchHub {
            shared: Arc::new(Shared {
                ring: Mutex::new(Ring {
                    capacity: capacity.max(1),
                    events: VecDeque::new(),
                    first_seq: 0,
                    floor: revision,
                    revision,
                    epoch: 0,
                    reset_reason: ResyncReason::SnapshotInstalled,
                    closed: false,
                }),
                notify: Notify::new(),
            }),
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding the lock cannot leave the ring inconsistent (every mutation is
        // a few field writes), so a poisoned lock is still usable.
        self.shared
            .ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes one drained batch and wakes the subscribers.
    pub fn publish(&self, batch: Published) {
        {
            let mut ring = self.ring();
            if let Some((reason, revision)) = batch.gap {
                ring.reset(reason, revision);
            }
            for event in batch.events {
                ring.push(event);
            }
            ring.revision = ring.revision.max(batch.revision);
        }
        self.shared.notify.notify_waiters();
    }

    /// The latest state revision published.
    pub fn revision(&self) -> u64 {
        self.ring().revision
    }

    /// Ends every subscription once it has drained what is retained (daemon shutdown).
    pub fn close(&self) {
        self.ring().closed = true;
        self.shared.notify.notify_waiters();
    }

    /// Subscribes to events passing `filter` with a revision greater than `since_revision`
    /// (0 = only changes from now on).
    pub fn subscribe(&self, filter: WatchFilter, since_revision: u64) -> Subscription {
        let ring = self.ring();
        let (cursor, pending) = if since_revision == 0 || since_revision >= ring.revision {
            (ring.end_seq(), None)
        } else if since_revision < ring.floor {
            (ring.end_seq(), Some(ring.resync(ResyncReason::Compacted)))
        } else {
            let skip = ring
                .events
                .partition_point(|e| e.revision <= since_revision);
            (ring.first_seq + skip as u64, None)
        };
        Subscription {
            hub: self.clone(),
            filter,
            cursor,
            epoch: ring.epoch,
            pending,
        }
    }
}

/// Why [`Subscription::try_recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing new yet.
    Empty,
    /// The hub was closed and everything retained was delivered.
    Closed,
}

/// A subscriber's cursor into a [`WatchHub`].
#[derive(Debug)]
pub struct Subscription {
    hub: WatchHub,
    filter: WatchFilter,
    cursor: u64,
    epoch: u64,
    pending: Option<WatchMessage>,
}

impl Subscription {
    /// The next message without waiting.
    pub fn try_recv(&mut self) -> Result<WatchMessage, TryRecvError> {
        if let Some(message) = self.pending.take() {
            return Ok(message);
        }
        let ring = self.hub.ring();
        if self.epoch != ring.epoch {
            self.epoch = ring.epoch;
            self.cursor = ring.end_seq();
            return Ok(ring.resync(ring.reset_reason));
        }
        if self.cursor < ring.first_seq {
            self.cursor = ring.end_seq();
            return Ok(ring.resync(ResyncReason::Overflow));
        }
        while self.cursor < ring.end_seq() {
            let event = &ring.events[(self.cursor - ring.first_seq) as usize];
            self.cursor += 1;
            if self.filter.matches(event) {
                return Ok(WatchMessage::Event(Arc::clone(event)));
            }
        }
        if ring.closed {
            Err(TryRecvError::Closed)
        } else {
            Err(TryRecvError::Empty)
        }
    }

    /// The next message, waiting for one; `None` once the hub is closed and drained.
    pub async fn recv(&mut self) -> Option<WatchMessage> {
        loop {
            // Register for a wake-up before looking, so a publish in between is not missed.
            let shared = Arc::clone(&self.hub.shared);
            let mut notified = std::pin::pin!(shared.notify.notified());
            notified.as_mut().enable();
            match self.try_recv() {
                Ok(message) => return Some(message),
                Err(TryRecvError::Closed) => return None,
                Err(TryRecvError::Empty) => notified.as_mut().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn event(revision: u64, entity_type: EntityType, key: &str) -> WatchEvent {
        WatchEvent {
            revision,
            time_unix_ms: 0,
            entity_type,
            kind: ChangeKind::Updated,
            key: key.into(),
            deployment: None,
            entity: None,
            before: None,
        }
    }

    fn batch(revision: u64, events: Vec<WatchEvent>) -> Published {
        Published {
            revision,
            gap: None,
            events,
        }
    }

    fn node_events(revisions: std::ops::RangeInclusive<u64>) -> Published {
        let end = *revisions.end();
        batch(
            end,
            revisions
                .map(|r| event(r, EntityType::Node, &format!("n{r}")))
                .collect(),
        )
    }

    /// Every event key available right now, or the first resync.
    fn drain(sub: &mut Subscription) -> Result<Vec<String>, WatchMessage> {
        let mut keys = Vec::new();
        loop {
            match sub.try_recv() {
                Ok(WatchMessage::Event(e)) => keys.push(e.key.clone()),
                Ok(resync) => return Err(resync),
                Err(_) => return Ok(keys),
            }
        }
    }

    #[test]
    fn test_subscriber_sees_only_new_events_of_its_types() {
        let hub = WatchHub::new(16, 0);
        hub.publish(batch(1, vec![event(1, EntityType::Node, "old")]));
        let mut sub = hub.subscribe(WatchFilter::types([EntityType::Node]), 0);
        hub.publish(batch(
            2,
            vec![
                event(2, EntityType::Node, "a"),
                event(2, EntityType::Deployment, "shop"),
                event(2, EntityType::Node, "b"),
            ],
        ));
        assert_eq!(drain(&mut sub), Ok(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(hub.revision(), 2);
    }

    #[test]
    fn test_deployment_filter_passes_cluster_wide_entities() {
        let hub = WatchHub::new(16, 0);
        let filter = WatchFilter {
            types: BTreeSet::new(),
            deployment: Some("shop".into()),
        };
        let mut sub = hub.subscribe(filter, 0);
        let mut shop = event(1, EntityType::Deployment, "shop");
        shop.deployment = Some("shop".into());
        let mut blog = event(1, EntityType::Deployment, "blog");
        blog.deployment = Some("blog".into());
        hub.publish(batch(1, vec![shop, blog, event(1, EntityType::Node, "n1")]));
        assert_eq!(
            drain(&mut sub),
            Ok(vec!["shop".to_owned(), "n1".to_owned()])
        );
    }

    #[test]
    fn test_resume_replays_events_after_the_revision() {
        let hub = WatchHub::new(16, 0);
        hub.publish(node_events(1..=5));
        let mut sub = hub.subscribe(WatchFilter::default(), 3);
        assert_eq!(drain(&mut sub), Ok(vec!["n4".to_owned(), "n5".to_owned()]));
        let mut current = hub.subscribe(WatchFilter::default(), 5);
        assert_eq!(drain(&mut current), Ok(vec![]));
    }

    #[test]
    fn test_resume_from_before_the_history_is_a_compacted_resync() {
        let hub = WatchHub::new(3, 0);
        hub.publish(node_events(1..=5));
        // The ring holds 3..=5; everything after 2 is retained, after 1 is not.
        let mut ok = hub.subscribe(WatchFilter::default(), 2);
        assert_eq!(drain(&mut ok).map(|k| k.len()), Ok(3));
        let mut old = hub.subscribe(WatchFilter::default(), 1);
        assert_eq!(
            drain(&mut old),
            Err(WatchMessage::Resync {
                reason: ResyncReason::Compacted,
                revision: 5
            })
        );
        // After the resync the stream continues with new changes.
        hub.publish(node_events(6..=6));
        assert_eq!(drain(&mut old), Ok(vec!["n6".to_owned()]));
    }

    #[test]
    fn test_resume_from_before_the_hub_started_is_a_compacted_resync() {
        let hub = WatchHub::new(8, 40);
        let mut sub = hub.subscribe(WatchFilter::default(), 10);
        assert!(matches!(
            sub.try_recv(),
            Ok(WatchMessage::Resync {
                reason: ResyncReason::Compacted,
                revision: 40
            })
        ));
    }

    #[test]
    fn test_slow_subscriber_gets_an_overflow_resync_not_a_silent_gap() {
        let hub = WatchHub::new(4, 0);
        let mut slow = hub.subscribe(WatchFilter::default(), 0);
        hub.publish(node_events(1..=2));
        assert_eq!(drain(&mut slow).map(|k| k.len()), Ok(2));
        hub.publish(node_events(3..=10));
        assert_eq!(
            slow.try_recv(),
            Ok(WatchMessage::Resync {
                reason: ResyncReason::Overflow,
                revision: 10
            })
        );
        assert_eq!(slow.try_recv(), Err(TryRecvError::Empty));
        hub.publish(node_events(11..=11));
        assert_eq!(drain(&mut slow), Ok(vec!["n11".to_owned()]));
    }

    #[test]
    fn test_a_gap_in_a_batch_resyncs_every_subscriber_with_its_reason() {
        let hub = WatchHub::new(8, 0);
        hub.publish(node_events(1..=3));
        let mut sub = hub.subscribe(WatchFilter::default(), 1);
        hub.publish(Published {
            revision: 50,
            gap: Some((ResyncReason::SnapshotInstalled, 49)),
            events: vec![event(50, EntityType::Node, "after")],
        });
        assert_eq!(
            sub.try_recv(),
            Ok(WatchMessage::Resync {
                reason: ResyncReason::SnapshotInstalled,
                revision: 50
            })
        );
        // History before the snapshot is gone; resuming inside it is compacted.
        let mut late = hub.subscribe(WatchFilter::default(), 2);
        assert!(matches!(
            late.try_recv(),
            Ok(WatchMessage::Resync {
                reason: ResyncReason::Compacted,
                ..
            })
        ));
        let mut from_restore = hub.subscribe(WatchFilter::default(), 49);
        assert_eq!(drain(&mut from_restore), Ok(vec!["after".to_owned()]));
    }

    #[test]
    fn test_event_converts_to_the_wire_form() {
        let mut e = event(9, EntityType::Node, "n1");
        e.kind = ChangeKind::Removed;
        e.before = Some(Entity::Node(v1::Node {
            name: "n1".into(),
            ..Default::default()
        }));
        let wire = e.to_proto();
        assert_eq!(wire.revision, 9);
        assert_eq!(wire.r#type(), EntityType::Node);
        assert_eq!(wire.kind(), v1::ChangeKind::Removed);
        assert!(wire.after.is_none());
        assert!(wire.before.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn test_recv_waits_for_a_publish_and_ends_on_close() {
        let hub = WatchHub::new(8, 0);
        let mut sub = hub.subscribe(WatchFilter::default(), 0);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), sub.recv())
                .await
                .is_err(),
            "nothing published yet"
        );
        let publisher = hub.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            publisher.publish(node_events(1..=1));
            publisher.close();
        });
        match sub.recv().await {
            Some(WatchMessage::Event(e)) => assert_eq!(e.key, "n1"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(sub.recv().await, None);
        task.await.expect("publisher task");
    }
}
