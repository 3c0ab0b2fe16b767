//! Replicas in the replicated state: what the scheduler decided (`SchedulerBatch`: desired
//! replicas, rollouts, deployment and node statuses, counters, tombstone pruning — all or
//! nothing) and what nodes observed (`ReportReplicas`).
//!
//! The decisions themselves are the scheduler's; this module only records them. It refuses an
//! observation from a node the replica is not assigned to, so a node returning from a
//! partition cannot overwrite what the replica's new node reports.
//!
//! It must not read clocks, randomness or disks, nor make placement decisions.

use crate::error::Error;
use crate::proto::v1::{
    DeploymentStatus, ReplicaCounter, ReplicaDesired, ReplicaObserved, ReplicaState,
    ReportReplicas, Rollout, RolloutState, SchedulerBatch, command_result::Outcome,
};

use super::change::{Tx, modify, put, take, take_where};
use super::{State, ack, named, required};

impl State {
    // ---- queries ---------------------------------------------------------------------------

    /// The desired replica with this id.
    pub fn replica_desired(&self, id: &str) -> Option<&ReplicaDesired> {
        self.replicas_desired.get(id)
    }

    /// Every desired replica, by id.
    pub fn replicas_desired(&self) -> impl Iterator<Item = &ReplicaDesired> {
        self.replicas_desired.values()
    }

    /// The latest observation of a replica.
    pub fn replica_observed(&self, id: &str) -> Option<&ReplicaObserved> {
        self.replicas_observed.get(id)
    }

    /// Every replica observation, by id.
    pub fn replicas_observed(&self) -> impl Iterator<Item = &ReplicaObserved> {
        self.replicas_observed.values()
    }

    /// The rollout of one service.
    pub fn rollout(&self, deployment: &str, service: &str) -> Option<&Rollout> {
        self.rollouts
            .get(&(deployment.to_owned(), service.to_owned()))
    }

    /// Every rollout, by (deployment, service).
    pub fn rollouts(&self) -> impl Iterator<Item = &Rollout> {
        self.rollouts.values()
    }

    /// The next replica index of a service (1 when none was handed out).
    pub fn next_replica_index(&self, deployment: &str, service: &str) -> u64 {
        self.replica_counters
            .get(&(deployment.to_owned(), service.to_owned()))
            .map_or(1, |c| c.next_index)
    }

    // ---- commands --------------------------------------------------------------------------

    pub(super) fn scheduler_batch(
        &mut self,
        tx: &mut Tx,
        c: &SchedulerBatch,
    ) -> Result<Outcome, Error> {
        // Check everything first: the batch is applied whole or not at all.
        for replica in &c.upsert_replicas {
            required(&replica.id, "upsert_replicas.id")?;
            required(&replica.service, "upsert_replicas.service")?;
            self.existing_deployment(&replica.deployment)?;
            self.existing_node(&replica.node)?;
        }
        for rollout in &c.upsert_rollouts {
            self.existing_deployment(&rollout.deployment)?;
            required(&rollout.service, "upsert_rollouts.service")?;
            named::<RolloutState>(rollout.state, "upsert_rollouts.state")?;
        }
        for status in &c.deployment_statuses {
            self.existing_deployment(&status.deployment)?;
            named::<DeploymentStatus>(status.status, "deployment_statuses.status")?;
        }
        for observed in &c.replica_states {
            required(&observed.id, "replica_states.id")?;
            named::<ReplicaState>(observed.state, "replica_states.state")?;
        }
        for status in &c.node_statuses {
            self.check_node_status(status)?;
        }
        for drain in &c.node_drains {
            self.check_node_drain(drain)?;
        }
        Self::check_external_audit(&c.audit)?;

        for id in &c.remove_replicas {
            take(&mut self.replicas_desired, id.as_str(), tx);
            take(&mut self.replicas_observed, id.as_str(), tx);
        }
        for replica in &c.upsert_replicas {
            let mut replica = replica.clone();
            if replica.created_at_unix_ms == 0 {
                replica.created_at_unix_ms = self
                    .replicas_desired
                    .get(&replica.id)
                    .map_or(tx.now, |old| old.created_at_unix_ms);
            }
            replica.updated_at_unix_ms = tx.now;
            if replica.index > 0 {
                self.raise_counter(tx, &replica.deployment, &replica.service, replica.index + 1);
            }
            put(&mut self.replicas_desired, replica.id.clone(), replica, tx);
        }
        for key in &c.remove_rollouts {
            take(
                &mut self.rollouts,
                &(key.deployment.clone(), key.service.clone()),
                tx,
            );
        }
        for rollout in &c.upsert_rollouts {
            let key = (rollout.deployment.clone(), rollout.service.clone());
            put(&mut self.rollouts, key, rollout.clone(), tx);
        }
        for status in &c.deployment_statuses {
            modify(&mut self.deployments, status.deployment.as_str(), tx, |d| {
                d.status = status.status;
                d.status_details.clone_from(&status.status_details);
            });
        }
        for observed in &c.replica_states {
            self.store_observation(tx, observed.clone());
        }
        for status in &c.node_statuses {
            self.do_node_status(tx, status);
        }
        for drain in &c.node_drains {
            self.do_node_drain(tx, drain);
        }
        self.append_external_audit(tx, &c.audit);
        for name in &c.prune_tombstones {
            if take(&mut self.tombstones, name.as_str(), tx).is_some()
                && !self.deployments.contains_key(name)
            {
                // Teardown is complete: the deployment's counters and subnets go with it.
                take_where(&mut self.replica_counters, tx, |(dep, _), _| dep == name);
                take_where(&mut self.subnets, tx, |(dep, ..), _| dep == name);
            }
        }
        Ok(ack())
    }

    /// Makes a service's next replica index at least `at_least`.
    fn raise_counter(&mut self, tx: &mut Tx, deployment: &str, service: &str, at_least: u64) {
        let key = (deployment.to_owned(), service.to_owned());
        let next_index = self
            .replica_counters
            .get(&key)
            .map_or(0, |c| c.next_index)
            .max(at_least);
        let counter = ReplicaCounter {
            deployment: deployment.to_owned(),
            service: service.to_owned(),
            next_index,
        };
        put(&mut self.replica_counters, key, counter, tx);
    }

    pub(super) fn report_replicas(
        &mut self,
        tx: &mut Tx,
        c: &ReportReplicas,
    ) -> Result<Outcome, Error> {
        self.existing_node(&c.node)?;
        for observed in &c.observations {
            required(&observed.id, "observations.id")?;
            named::<ReplicaState>(observed.state, "observations.state")?;
        }
        for observed in &c.observations {
            let assigned_elsewhere = self
                .replicas_desired
                .get(&observed.id)
                .is_some_and(|d| d.node != c.node);
            if assigned_elsewhere {
                continue;
            }
            let mut observed = observed.clone();
            observed.node.clone_from(&c.node);
            self.store_observation(tx, observed);
        }
        Ok(ack())
    }

    /// Stores an observation (observed now unless it says when).
    fn store_observation(&mut self, tx: &mut Tx, mut observed: ReplicaObserved) {
        if observed.observed_at_unix_ms == 0 {
            observed.observed_at_unix_ms = tx.now;
        }
        put(
            &mut self.replicas_observed,
            observed.id.clone(),
            observed,
            tx,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use crate::proto::v1::{
        AuditEvent, AuditEventType, DeploymentStatusUpdate, NodeStatus, RolloutKey, SetNodeStatus,
        command::Kind,
    };
    use crate::state::AuditFilter;
    use crate::state::testkit::*;

    fn desired(id: &str, service: &str, index: u64, node: &str) -> ReplicaDesired {
        ReplicaDesired {
            id: id.into(),
            deployment: "shop".into(),
            service: service.into(),
            index,
            node: node.into(),
            spec_hash: "h".into(),
            revision: 1,
            ..Default::default()
        }
    }

    fn observed(id: &str, state: ReplicaState) -> ReplicaObserved {
        ReplicaObserved {
            id: id.into(),
            state: state.into(),
            ..Default::default()
        }
    }

    fn batch(c: SchedulerBatch) -> Kind {
        Kind::SchedulerBatch(c)
    }

    fn report(node: &str, observations: Vec<ReplicaObserved>) -> Kind {
        Kind::ReportReplicas(ReportReplicas {
            node: node.into(),
            observations,
        })
    }

    fn with_shop() -> Harness {
        let mut h = Harness::initialised();
        h.ok(add_node("n2", 2));
        h.ok(apply_deployment("shop", spec(&[("web", "nginx:1")])));
        h
    }

    #[test]
    fn test_batch_upserts_replicas_raises_counters_and_sets_statuses() {
        let mut h = with_shop();
        h.ok(batch(SchedulerBatch {
            upsert_replicas: vec![
                desired("shop-web-1", "web", 1, "n1"),
                desired("shop-web-4", "web", 4, "n2"),
            ],
            upsert_rollouts: vec![Rollout {
                deployment: "shop".into(),
                service: "web".into(),
                state: RolloutState::InProgress.into(),
                ..Default::default()
            }],
            deployment_statuses: vec![DeploymentStatusUpdate {
                deployment: "shop".into(),
                status: DeploymentStatus::Active.into(),
                status_details: Default::default(),
            }],
            replica_states: vec![observed("shop-web-1", ReplicaState::Updating)],
            node_statuses: vec![SetNodeStatus {
                node: "n2".into(),
                status: NodeStatus::Ready.into(),
                ..Default::default()
            }],
            audit: vec![AuditEvent {
                r#type: AuditEventType::RolloutInvariantHold.into(),
                ..Default::default()
            }],
            ..Default::default()
        }));
        assert_eq!(h.state.replicas_desired().count(), 2);
        assert_eq!(
            h.state
                .replica_desired("shop-web-1")
                .map(|r| r.created_at_unix_ms),
            Some(h.now)
        );
        assert_eq!(h.state.next_replica_index("shop", "web"), 5);
        assert_eq!(h.state.next_replica_index("shop", "db"), 1);
        assert_eq!(
            h.state.rollout("shop", "web").map(Rollout::state),
            Some(RolloutState::InProgress)
        );
        assert_eq!(
            h.state.deployment("shop").map(|d| d.status()),
            Some(DeploymentStatus::Active)
        );
        assert_eq!(
            h.state
                .replica_observed("shop-web-1")
                .map(ReplicaObserved::state),
            Some(ReplicaState::Updating)
        );
        assert_eq!(
            h.state.node("n2").map(|n| n.status()),
            Some(NodeStatus::Ready)
        );
        let last = h
            .state
            .audit(&AuditFilter::default())
            .events
            .pop()
            .expect("audit");
        assert_eq!(last.r#type(), AuditEventType::RolloutInvariantHold);
        assert_eq!(last.identity, "local");

        // Lower indices never lower the counter; removal drops desired and observed records.
        h.ok(batch(SchedulerBatch {
            upsert_replicas: vec![desired("shop-web-2", "web", 2, "n1")],
            remove_replicas: vec!["shop-web-1".into(), "unknown".into()],
            remove_rollouts: vec![RolloutKey {
                deployment: "shop".into(),
                service: "web".into(),
            }],
            ..Default::default()
        }));
        assert_eq!(h.state.next_replica_index("shop", "web"), 5);
        assert!(h.state.replica_desired("shop-web-1").is_none());
        assert!(h.state.replica_observed("shop-web-1").is_none());
        assert_eq!(h.state.rollouts().count(), 0);
        let revision = h.state.revision();
        h.ok(batch(SchedulerBatch::default()));
        assert_eq!(
            h.state.revision(),
            revision,
            "an empty batch changes nothing"
        );
    }

    #[test]
    fn test_batch_is_all_or_nothing() {
        let mut h = with_shop();
        let good = desired("shop-web-1", "web", 1, "n1");
        // Each case is a valid upsert plus one bad part; the valid part must not be applied.
        let spoiled = |spoil: fn(&mut SchedulerBatch)| {
            let mut batch = SchedulerBatch {
                upsert_replicas: vec![good.clone()],
                ..Default::default()
            };
            spoil(&mut batch);
            Kind::SchedulerBatch(batch)
        };
        type Spoil = fn(&mut SchedulerBatch);
        let cases: [(Spoil, Code); 8] = [
            (
                |b| b.upsert_replicas.push(desired("x", "web", 2, "zz")),
                Code::NotFound,
            ),
            (
                |b| b.upsert_replicas[0].deployment = "blog".into(),
                Code::DeploymentNotFound,
            ),
            (|b| b.upsert_replicas[0].id.clear(), Code::ValidationFailed),
            (
                |b| {
                    b.replica_states
                        .push(observed("shop-web-1", ReplicaState::Unspecified))
                },
                Code::ValidationFailed,
            ),
            (
                |b| {
                    b.upsert_rollouts.push(Rollout {
                        deployment: "shop".into(),
                        service: "web".into(),
                        ..Default::default()
                    })
                },
                Code::ValidationFailed,
            ),
            (
                |b| {
                    b.deployment_statuses.push(DeploymentStatusUpdate {
                        deployment: "shop".into(),
                        ..Default::default()
                    })
                },
                Code::ValidationFailed,
            ),
            (
                |b| {
                    b.node_statuses.push(SetNodeStatus {
                        node: "zz".into(),
                        ..Default::default()
                    })
                },
                Code::NotFound,
            ),
            (
                |b| b.audit.push(AuditEvent::default()),
                Code::ValidationFailed,
            ),
        ];
        for (spoil, code) in cases {
            h.rejected(spoiled(spoil), code);
        }
    }

    #[test]
    fn test_pruning_a_tombstone_drops_counters_and_subnets() {
        let mut h = with_shop();
        h.ok(batch(SchedulerBatch {
            upsert_replicas: vec![desired("shop-web-1", "web", 1, "n1")],
            ..Default::default()
        }));
        h.ok(allocate_subnet("shop", "default", "n1"));
        h.ok(Kind::DeleteDeployment(crate::proto::v1::DeleteDeployment {
            deployment: "shop".into(),
            keep_volumes: false,
        }));
        assert_eq!(
            h.state.replicas_desired().count(),
            0,
            "delete drops desired replicas"
        );
        assert_eq!(
            h.state.next_replica_index("shop", "web"),
            2,
            "counters survive until teardown"
        );
        h.ok(batch(SchedulerBatch {
            prune_tombstones: vec!["shop".into()],
            ..Default::default()
        }));
        assert_eq!(h.state.tombstones().count(), 0);
        assert_eq!(h.state.next_replica_index("shop", "web"), 1);
        assert_eq!(h.state.subnets().count(), 0);
    }

    #[test]
    fn test_reports_are_stored_unless_the_replica_is_assigned_elsewhere() {
        let mut h = with_shop();
        h.ok(batch(SchedulerBatch {
            upsert_replicas: vec![desired("shop-web-1", "web", 1, "n2")],
            ..Default::default()
        }));
        h.ok(report(
            "n2",
            vec![observed("shop-web-1", ReplicaState::Running)],
        ));
        let stored = h.state.replica_observed("shop-web-1").expect("stored");
        assert_eq!(
            (
                stored.state(),
                stored.node.as_str(),
                stored.observed_at_unix_ms
            ),
            (ReplicaState::Running, "n2", h.now)
        );
        // n1 is not where the replica runs: its stale report is ignored.
        h.ok(report(
            "n1",
            vec![observed("shop-web-1", ReplicaState::Failed)],
        ));
        assert_eq!(
            h.state
                .replica_observed("shop-web-1")
                .map(ReplicaObserved::state),
            Some(ReplicaState::Running)
        );
        assert!(h.events.is_empty());
        h.rejected(report("zz", vec![]), Code::NotFound);
        h.rejected(
            report(
                "n2",
                vec![observed("shop-web-1", ReplicaState::Unspecified)],
            ),
            Code::ValidationFailed,
        );
        h.rejected(
            report("n2", vec![observed("", ReplicaState::Running)]),
            Code::ValidationFailed,
        );
    }
}
