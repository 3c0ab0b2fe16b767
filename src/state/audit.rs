//! The audit log: a bounded ring of [`AuditEvent`]s inside the replicated state, the
//! `AppendAudit` command, and the query the Audit service answers from any node.
//!
//! Ids are assigned here, in apply order, and never reused; the ring keeps the newest
//! `ClusterMeta.audit_retention_events` events (default [`DEFAULT_AUDIT_RETENTION`]) and drops
//! the oldest silently, which is the only compaction the audit log has. Payloads never carry
//! secrets: the state machine's own payloads are built without them, and events appended from
//! outside lose any key that names secret material. Nothing here reads a clock.
//!
//! It must not read clocks, randomness or disks: ids, times and identities come from the
//! command being applied.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Error;
use crate::proto::v1::{
    AppendAudit, AppendAuditResult, AuditEvent, AuditEventType, command_result::Outcome,
};

use super::change::Tx;
use super::{State, named};

/// Audit events kept when the cluster does not configure a retention (SPEC §4).
pub const DEFAULT_AUDIT_RETENTION: u64 = 100_000;

/// Events returned by a query that sets no limit.
pub const DEFAULT_AUDIT_LIMIT: usize = 1000;

/// Substrings of payload keys that name secret material; such keys are dropped from events
/// appended from outside the state machine.
const SECRET_KEY_MARKERS: &[&str] = &["secret", "password", "passwd", "private", "key_pem"];

/// A filter over the audit log (the Audit service's query, already validated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Events at or after this time (0 = from the oldest retained).
    pub since_unix_ms: i64,
    /// Events before this time (0 = no upper bound).
    pub until_unix_ms: i64,
    /// Only these types (empty = every type).
    pub types: BTreeSet<AuditEventType>,
    /// Only events caused by this identity.
    pub identity: Option<String>,
    /// Only events with an id greater than this (pagination cursor).
    pub after_id: u64,
    /// At most this many events (0 = [`DEFAULT_AUDIT_LIMIT`]).
    pub limit: usize,
}

impl AuditFilter {
    fn matches(&self, event: &AuditEvent) -> bool {
        event.id > self.after_id
            && event.time_unix_ms >= self.since_unix_ms
            && (self.until_unix_ms == 0 || event.time_unix_ms < self.until_unix_ms)
            && (self.types.is_empty() || self.types.contains(&event.r#type()))
            && self.identity.as_ref().is_none_or(|i| *i == event.identity)
    }
}

/// One page of audit events, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditPage {
    /// The events.
    pub events: Vec<AuditEvent>,
    /// True when more events match after the last one.
    pub truncated: bool,
}

impl State {
    /// The audit events matching `filter`, oldest first, at most `filter.limit`.
    pub fn audit(&self, filter: &AuditFilter) -> AuditPage {
        let limit = if filter.limit == 0 {
            DEFAULT_AUDIT_LIMIT
        } else {
            filter.limit
        };
        // Ids increase along the ring, so the cursor is a binary search.
        let start = self.audit.partition_point(|e| e.id <= filter.after_id);
        let mut matching = self.audit.range(start..).filter(|e| filter.matches(e));
        let events: Vec<AuditEvent> = matching.by_ref().take(limit).cloned().collect();
        let truncated = matching.next().is_some();
        AuditPage { events, truncated }
    }

    /// Number of retained audit events.
    pub fn audit_len(&self) -> usize {
        self.audit.len()
    }

    /// How many audit events the ring keeps.
    fn audit_retention(&self) -> usize {
        let configured = self
            .cluster
            .as_ref()
            .map_or(0, |meta| meta.audit_retention_events);
        let retention = if configured == 0 {
            DEFAULT_AUDIT_RETENTION
        } else {
            configured
        };
        usize::try_from(retention).unwrap_or(usize::MAX)
    }

    /// Appends one audit event caused by the current command and returns its id.
    pub(super) fn audit_push(
        &mut self,
        tx: &mut Tx,
        event_type: AuditEventType,
        payload: BTreeMap<String, String>,
    ) -> u64 {
        let event = AuditEvent {
            id: 0,
            time_unix_ms: tx.now,
            r#type: event_type.into(),
            identity: tx.identity.to_owned(),
            payload,
            index: tx.index,
        };
        self.audit_append(tx, event)
    }

    /// Appends `event` with the next id and the current index, trimming the ring.
    fn audit_append(&mut self, tx: &mut Tx, mut event: AuditEvent) -> u64 {
        event.id = self.next_audit_id;
        event.index = tx.index;
        self.next_audit_id += 1;
        tx.record(None, Some(&event));
        self.audit.push_back(event);
        let retention = self.audit_retention();
        while self.audit.len() > retention {
            self.audit.pop_front();
        }
        self.next_audit_id - 1
    }

    /// Checks events produced outside the state machine (AppendAudit, scheduler batches).
    pub(super) fn check_external_audit(events: &[AuditEvent]) -> Result<(), Error> {
        for event in events {
            named::<AuditEventType>(event.r#type, "events.type")?;
        }
        Ok(())
    }

    /// Appends events produced outside the state machine: time and identity default to the
    /// command's, secret-named payload keys are dropped. Returns the ids.
    pub(super) fn append_external_audit(&mut self, tx: &mut Tx, events: &[AuditEvent]) -> Vec<u64> {
        events
            .iter()
            .map(|event| {
                let mut event = event.clone();
                if event.time_unix_ms == 0 {
                    event.time_unix_ms = tx.now;
                }
                if event.identity.is_empty() {
                    event.identity = tx.identity.to_owned();
                }
                event.payload.retain(|key, _| {
                    let key = key.to_ascii_lowercase();
                    !SECRET_KEY_MARKERS.iter().any(|m| key.contains(m))
                });
                self.audit_append(tx, event)
            })
            .collect()
    }

    pub(super) fn append_audit(&mut self, tx: &mut Tx, c: &AppendAudit) -> Result<Outcome, Error> {
        Self::check_external_audit(&c.events)?;
        let ids = self.append_external_audit(tx, &c.events);
        Ok(Outcome::AppendAudit(AppendAuditResult { ids }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::error::Code;
    use crate::proto::v1::command::Kind;
    use crate::state::testkit::*;

    fn event(event_type: AuditEventType, payload: &[(&str, &str)]) -> AuditEvent {
        AuditEvent {
            r#type: event_type.into(),
            payload: payload
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        }
    }

    fn append(events: Vec<AuditEvent>) -> Kind {
        Kind::AppendAudit(AppendAudit { events })
    }

    #[test]
    fn test_append_audit_assigns_ids_index_time_and_identity() {
        let mut h = Harness::initialised();
        let first_id = h.state.audit(&AuditFilter::default()).events.len() as u64 + 1;
        let result = h.ok_as(
            "node:n1",
            append(vec![
                event(AuditEventType::BackupTaken, &[("index", "7")]),
                event(AuditEventType::IsolationRulesetReconciled, &[]),
            ]),
        );
        let Outcome::AppendAudit(AppendAuditResult { ids }) = result else {
            panic!("unexpected {result:?}")
        };
        assert_eq!(ids, [first_id, first_id + 1]);
        let page = h.state.audit(&AuditFilter {
            types: [AuditEventType::BackupTaken].into(),
            ..Default::default()
        });
        let backup = &page.events[0];
        assert_eq!(backup.identity, "node:n1");
        assert_eq!(backup.time_unix_ms, h.now);
        assert_eq!(backup.index, h.index);
        assert_eq!(backup.payload["index"], "7");
    }

    #[test]
    fn test_append_audit_rejects_unspecified_and_unknown_types() {
        let mut h = Harness::initialised();
        h.rejected(
            append(vec![event(AuditEventType::Unspecified, &[])]),
            Code::ValidationFailed,
        );
        let mut unknown = event(AuditEventType::Apply, &[]);
        unknown.r#type = 22;
        h.rejected(append(vec![unknown]), Code::ValidationFailed);
    }

    #[test]
    fn test_appended_payload_loses_secret_named_keys() {
        let mut h = Harness::initialised();
        h.ok(append(vec![event(
            AuditEventType::BackupTaken,
            &[
                ("file", "/tmp/b"),
                ("db_password", "hunter2"),
                ("Secret", "x"),
                ("ca_key_pem", "k"),
            ],
        )]));
        let page = h.state.audit(&AuditFilter {
            types: [AuditEventType::BackupTaken].into(),
            ..Default::default()
        });
        let keys: Vec<&str> = page.events[0].payload.keys().map(String::as_str).collect();
        assert_eq!(keys, ["file"]);
    }

    #[test]
    fn test_query_filters_by_time_type_identity_cursor_and_limit() {
        let mut h = Harness::initialised();
        for (i, who) in ["alice", "bob", "alice"].iter().enumerate() {
            h.now = 10_000 + i as i64 * 1000;
            h.ok_as(who, append(vec![event(AuditEventType::BackupTaken, &[])]));
        }
        let all = AuditFilter {
            types: [AuditEventType::BackupTaken].into(),
            ..Default::default()
        };
        assert_eq!(h.state.audit(&all).events.len(), 3);
        let alice = AuditFilter {
            identity: Some("alice".into()),
            ..all.clone()
        };
        assert_eq!(h.state.audit(&alice).events.len(), 2);
        let window = AuditFilter {
            since_unix_ms: 11_000,
            until_unix_ms: 12_000,
            ..all.clone()
        };
        let page = h.state.audit(&window);
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].identity, "bob");
        let first = AuditFilter {
            limit: 2,
            ..all.clone()
        };
        let page = h.state.audit(&first);
        assert_eq!(page.events.len(), 2);
        assert!(page.truncated);
        let rest = AuditFilter {
            after_id: page.events[1].id,
            ..first
        };
        let page = h.state.audit(&rest);
        assert_eq!(page.events.len(), 1);
        assert!(!page.truncated);
    }

    #[test]
    fn test_retention_keeps_only_the_newest_events() {
        let mut h = Harness::new();
        let mut init = init_cluster();
        if let Kind::InitCluster(c) = &mut init {
            c.meta.as_mut().expect("meta").audit_retention_events = 5;
        }
        h.ok(init);
        for _ in 0..20 {
            h.ok(append(vec![event(AuditEventType::BackupTaken, &[])]));
        }
        let page = h.state.audit(&AuditFilter::default());
        assert_eq!(h.state.audit_len(), 5);
        let ids: Vec<u64> = page.events.iter().map(|e| e.id).collect();
        // InitCluster wrote 2 events, then 20 appends: ids 1..=22, the newest 5 kept.
        assert_eq!(ids, [18, 19, 20, 21, 22]);
    }

    #[test]
    fn test_default_retention_is_the_spec_constant() {
        let h = Harness::initialised();
        assert_eq!(h.state.audit_retention(), 100_000);
    }
}
