//! One reconcile of the scheduler as a pure function: the replicated state and the time in,
//! one `SchedulerBatch` (and when to look again) out (SPEC §5).
//!
//! Per service it decides the target spec (the deployment's current revision, or the previous
//! one after a rolled-back rollout), places new replicas, advances rollouts one step at a time
//! through [`rollout::step`], removes replicas of services that are gone, re-arms replicas a
//! new apply must clear (`failed` is only cleared by a new revision), and sets each
//! deployment's status (`pending` with a reason when a replica cannot be placed).
//!
//! It must not read clocks, randomness or anything but the state it is given, and must not
//! reuse a replica index.

use std::collections::{BTreeMap, BTreeSet};

use super::rollout::{self, Candidate, Step};
use crate::proto::v1 as pb;
use crate::proto::v1::{PlacementMode, ReplicaState};
use crate::state::State;

/// What one reconcile wants committed, and when it should run again at the latest.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// The changes, as one command (empty when the cluster already matches).
    pub batch: pb::SchedulerBatch,
    /// The earliest time (Unix ms) at which a waiting condition may change (a monitor period
    /// or a step timeout running out), when there is one.
    pub wake_at: Option<i64>,
}

impl Plan {
    /// True when there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        let b = &self.batch;
        b.upsert_replicas.is_empty()
            && b.remove_replicas.is_empty()
            && b.upsert_rollouts.is_empty()
            && b.remove_rollouts.is_empty()
            && b.deployment_statuses.is_empty()
            && b.replica_states.is_empty()
    }

    fn wake(&mut self, at: Option<i64>) {
        if let Some(at) = at {
            self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
        }
    }
}

/// Computes the scheduler's changes for `state` at `now` (Unix ms).
pub fn reconcile(state: &State, now: i64) -> Plan {
    let mut plan = Plan::default();
    let nodes = Nodes::of(state);
    for deployment in state.deployments() {
        let mut unplaceable = BTreeMap::new();
        let services = deployment
            .spec
            .as_ref()
            .map_or(&[][..], |s| s.services.as_slice());
        for service in services {
            let outcome = plan_service(state, &nodes, deployment, service, now, &mut plan);
            if let Err(reason) = outcome {
                unplaceable.insert(service.name.clone(), reason);
            }
        }
        remove_dropped_services(state, deployment, services, &mut plan);
        set_status(deployment, &unplaceable, &mut plan);
    }
    plan
}

/// Why a service's replicas cannot all be placed.
#[derive(Debug, Clone, PartialEq)]
struct Unplaceable {
    reason: &'static str,
    missing_hosts: Vec<String>,
}

/// Nodes that may receive new replicas, and how many replicas each holds.
struct Nodes {
    eligible: Vec<String>,
    load: BTreeMap<String, usize>,
}

impl Nodes {
    fn of(state: &State) -> Nodes {
        let eligible = state
            .nodes()
            .filter(|n| n.status() == pb::NodeStatus::Ready)
            .filter(|n| n.docker.as_ref().is_none_or(|d| d.ok))
            .filter(|n| n.drain.is_none())
            .map(|n| n.name.clone())
            .collect();
        let mut load = BTreeMap::new();
        for replica in state.replicas_desired() {
            *load.entry(replica.node.clone()).or_default() += 1;
        }
        Nodes { eligible, load }
    }
}

fn plan_service(
    state: &State,
    nodes: &Nodes,
    deployment: &pb::Deployment,
    service: &pb::ServiceSpec,
    now: i64,
    plan: &mut Plan,
) -> Result<(), Unplaceable> {
    let replicas: Vec<&pb::ReplicaDesired> = state
        .replicas_desired()
        .filter(|r| r.deployment == deployment.name && r.service == service.name)
        .collect();
    // Only a rollout of the current revision steers; older records are history.
    let record = state
        .rollout(&deployment.name, &service.name)
        .filter(|r| r.to_revision == deployment.revision);
    let target = Target::of(deployment, service, record);
    if service.placement() == PlacementMode::Global {
        rearm_for_new_revision(state, &replicas, &target, plan);
        return plan_global(nodes, deployment, service, &replicas, &target, plan);
    }

    let policy = service.update.unwrap_or_default();
    let candidates: Vec<Candidate> = replicas
        .iter()
        .map(|r| Candidate::of(r, state.replica_observed(&r.id), &target.spec_hash))
        .collect();
    let step = rollout::step(&rollout::Input {
        want: service.replicas as usize,
        policy: &policy,
        replicas: &candidates,
        rollout: record,
        now,
    });
    plan.wake(step.wake_at);
    let kept: Vec<&pb::ReplicaDesired> = (replicas.iter().copied())
        .filter(|r| !step.remove.contains(&r.id))
        .collect();
    rearm_for_new_revision(state, &kept, &target, plan);
    for id in &step.remove {
        plan.batch.remove_replicas.push(id.clone());
    }
    let mut placement = Ok(());
    if step.create > 0 {
        placement = create_replicas(
            state, nodes, deployment, service, &replicas, &step, &target, plan,
        );
    }
    update_rollout(
        deployment,
        service,
        record,
        &target,
        &step,
        &candidates,
        now,
        plan,
    );
    placement
}

/// The spec a service's replicas should run.
struct Target {
    spec_hash: String,
    image: String,
    revision: u64,
}

impl Target {
    /// The current revision's spec, or the spec the rollout of this revision restored when it
    /// rolled back.
    fn of(
        deployment: &pb::Deployment,
        service: &pb::ServiceSpec,
        record: Option<&pb::Rollout>,
    ) -> Target {
        match record {
            Some(r)
                if r.rolled_back
                    && r.to_revision == deployment.revision
                    && r.to_spec_hash == service.spec_hash =>
            {
                Target {
                    spec_hash: r.from_spec_hash.clone(),
                    image: r.details.get("from_image").cloned().unwrap_or_default(),
                    revision: r.from_revision,
                }
            }
            _ => Target {
                spec_hash: service.spec_hash.clone(),
                image: service.image.clone(),
                revision: deployment.revision,
            },
        }
    }
}

/// A new revision clears `failed`: replicas already at the target spec but recorded for an
/// older revision move to the target revision, and failed ones get a new restart generation
/// (the node agent forgets the failure and recreates the container).
fn rearm_for_new_revision(
    state: &State,
    replicas: &[&pb::ReplicaDesired],
    target: &Target,
    plan: &mut Plan,
) {
    for replica in replicas {
        if replica.spec_hash != target.spec_hash || replica.revision >= target.revision {
            continue;
        }
        let mut updated = (*replica).clone();
        updated.revision = target.revision;
        let observed = state.replica_observed(&replica.id);
        if observed.is_some_and(|o| o.state() == ReplicaState::Failed) {
            updated.restart_generation += 1;
            plan.batch.replica_states.push(pb::ReplicaObserved {
                id: replica.id.clone(),
                state: ReplicaState::Pending.into(),
                message: format!(
                    "revision {} clears the failure; restarting",
                    target.revision
                ),
                node: replica.node.clone(),
                spec_hash: replica.spec_hash.clone(),
                revision: target.revision,
                ..Default::default()
            });
        }
        plan.batch.upsert_replicas.push(updated);
    }
}

fn plan_global(
    nodes: &Nodes,
    deployment: &pb::Deployment,
    service: &pb::ServiceSpec,
    replicas: &[&pb::ReplicaDesired],
    target: &Target,
    plan: &mut Plan,
) -> Result<(), Unplaceable> {
    for node in &nodes.eligible {
        let id = format!("{}-{}-{node}", deployment.name, service.name);
        let existing = replicas.iter().find(|r| r.id == id);
        if existing.is_some_and(|r| r.spec_hash == target.spec_hash) {
            continue;
        }
        plan.batch.upsert_replicas.push(pb::ReplicaDesired {
            id,
            deployment: deployment.name.clone(),
            service: service.name.clone(),
            index: 0,
            node: node.clone(),
            spec_hash: target.spec_hash.clone(),
            revision: target.revision,
            image: target.image.clone(),
            restart_generation: existing.map_or(0, |r| r.restart_generation),
            ..Default::default()
        });
    }
    if nodes.eligible.is_empty() {
        return Err(no_nodes());
    }
    Ok(())
}

fn no_nodes() -> Unplaceable {
    Unplaceable {
        reason: "no_ready_nodes",
        missing_hosts: Vec::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn create_replicas(
    state: &State,
    nodes: &Nodes,
    deployment: &pb::Deployment,
    service: &pb::ServiceSpec,
    replicas: &[&pb::ReplicaDesired],
    step: &Step,
    target: &Target,
    plan: &mut Plan,
) -> Result<(), Unplaceable> {
    let removed: BTreeSet<&str> = step.remove.iter().map(String::as_str).collect();
    let mut on_node: BTreeMap<String, usize> = BTreeMap::new();
    for replica in replicas.iter().filter(|r| !removed.contains(r.id.as_str())) {
        *on_node.entry(replica.node.clone()).or_default() += 1;
    }
    let mut load = nodes.load.clone();
    let first = state.next_replica_index(&deployment.name, &service.name);
    for index in (first..).take(step.create) {
        let node = choose_node(service, nodes, &on_node, &load)?;
        *on_node.entry(node.clone()).or_default() += 1;
        *load.entry(node.clone()).or_default() += 1;
        plan.batch.upsert_replicas.push(pb::ReplicaDesired {
            id: format!("{}-{}-{index}", deployment.name, service.name),
            deployment: deployment.name.clone(),
            service: service.name.clone(),
            index,
            node,
            spec_hash: target.spec_hash.clone(),
            revision: target.revision,
            image: target.image.clone(),
            ..Default::default()
        });
    }
    Ok(())
}

/// The node for one new replica of `service` (SPEC §5.2): spread prefers the node with the
/// fewest replicas of the service, then the least loaded; pack the most loaded; hosts only
/// the pinned hosts that are eligible, never spilling.
fn choose_node(
    service: &pb::ServiceSpec,
    nodes: &Nodes,
    on_node: &BTreeMap<String, usize>,
    load: &BTreeMap<String, usize>,
) -> Result<String, Unplaceable> {
    let count = |map: &BTreeMap<String, usize>, node: &str| map.get(node).copied().unwrap_or(0);
    let candidates: Vec<&String> = match service.placement() {
        PlacementMode::Hosts => {
            let missing: Vec<String> = service
                .hosts
                .iter()
                .filter(|h| !nodes.eligible.contains(h))
                .cloned()
                .collect();
            let usable: Vec<&String> = nodes
                .eligible
                .iter()
                .filter(|n| service.hosts.contains(n))
                .collect();
            if usable.is_empty()
                || !missing.is_empty() && usable.iter().all(|n| count(on_node, n) > 0)
            {
                return Err(Unplaceable {
                    reason: "cannot_satisfy_host_placement",
                    missing_hosts: missing,
                });
            }
            usable
        }
        _ => nodes.eligible.iter().collect(),
    };
    let chosen = match service.placement() {
        PlacementMode::Pack => candidates
            .into_iter()
            .max_by_key(|n| (count(load, n), std::cmp::Reverse(n.as_str()))),
        _ => candidates
            .into_iter()
            .min_by_key(|n| (count(on_node, n), count(load, n), n.as_str())),
    };
    chosen.cloned().ok_or_else(no_nodes)
}

#[allow(clippy::too_many_arguments)]
fn update_rollout(
    deployment: &pb::Deployment,
    service: &pb::ServiceSpec,
    record: Option<&pb::Rollout>,
    target: &Target,
    step: &Step,
    candidates: &[Candidate],
    now: i64,
    plan: &mut Plan,
) {
    let next = match (record, &step.rollout) {
        (Some(record), Some(progress)) => {
            let mut next = record.clone();
            progress.apply_to(&mut next, now);
            next
        }
        // A service that had no replicas (new, or scaled up from zero) needs no rollout.
        (None, Some(progress)) if step.changing && !candidates.is_empty() => {
            let old = candidates.iter().find(|c| !c.current);
            let mut details = BTreeMap::new();
            if let Some(old) = old {
                details.insert("from_image".to_owned(), old.image.clone());
            }
            let mut next = pb::Rollout {
                deployment: deployment.name.clone(),
                service: service.name.clone(),
                state: pb::RolloutState::InProgress.into(),
                from_revision: deployment.previous_revision,
                to_revision: deployment.revision,
                from_spec_hash: old
                    .map_or_else(|| target.spec_hash.clone(), |o| o.spec_hash.clone()),
                to_spec_hash: target.spec_hash.clone(),
                policy: service.update,
                started_at_unix_ms: now,
                details,
                ..Default::default()
            };
            progress.apply_to(&mut next, now);
            next
        }
        _ => return,
    };
    if record != Some(&next) {
        plan.batch.upsert_rollouts.push(next);
    }
}

fn remove_dropped_services(
    state: &State,
    deployment: &pb::Deployment,
    services: &[pb::ServiceSpec],
    plan: &mut Plan,
) {
    let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    for replica in state.replicas_desired() {
        if replica.deployment == deployment.name && !names.contains(replica.service.as_str()) {
            plan.batch.remove_replicas.push(replica.id.clone());
        }
    }
    for rollout in state.rollouts() {
        if rollout.deployment == deployment.name && !names.contains(rollout.service.as_str()) {
            plan.batch.remove_rollouts.push(pb::RolloutKey {
                deployment: rollout.deployment.clone(),
                service: rollout.service.clone(),
            });
        }
    }
}

fn set_status(
    deployment: &pb::Deployment,
    unplaceable: &BTreeMap<String, Unplaceable>,
    plan: &mut Plan,
) {
    let (status, details) = match unplaceable.iter().next() {
        None => (pb::DeploymentStatus::Active, BTreeMap::new()),
        Some((service, why)) => {
            let mut details = BTreeMap::from([
                ("reason".to_owned(), why.reason.to_owned()),
                ("service".to_owned(), service.clone()),
            ]);
            if !why.missing_hosts.is_empty() {
                details.insert("missing_hosts".to_owned(), why.missing_hosts.join(","));
            }
            (pb::DeploymentStatus::Pending, details)
        }
    };
    if deployment.status() != status || deployment.status_details != details {
        plan.batch
            .deployment_statuses
            .push(pb::DeploymentStatusUpdate {
                deployment: deployment.name.clone(),
                status: status.into(),
                status_details: details,
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::command::Kind;
    use crate::state::testkit::{Harness, add_node, apply_deployment, service};

    fn cluster(ready: &[&str], joined_only: &[&str]) -> Harness {
        let mut h = Harness::initialised();
        for (i, name) in ready.iter().chain(joined_only).enumerate() {
            if *name != "n1" {
                h.ok(add_node(name, 10 + i as u64));
            }
        }
        for name in ready {
            h.ok(Kind::SetNodeStatus(pb::SetNodeStatus {
                node: (*name).into(),
                status: pb::NodeStatus::Ready.into(),
                ..Default::default()
            }));
        }
        h
    }

    fn deploy(h: &mut Harness, services: Vec<pb::ServiceSpec>) {
        let spec = pb::DeploymentSpec {
            services,
            ..Default::default()
        };
        h.ok(apply_deployment("shop", spec));
    }

    fn web(replicas: u32, image: &str) -> pb::ServiceSpec {
        pb::ServiceSpec {
            replicas,
            update: Some(pb::UpdatePolicy {
                parallelism: 1,
                monitor_ms: 1_000,
                step_timeout_ms: 30_000,
                ..Default::default()
            }),
            ..service("web", image)
        }
    }

    /// Commits a plan and returns it.
    fn commit(h: &mut Harness) -> Plan {
        let plan = reconcile(&h.state, h.now);
        if !plan.is_empty() {
            h.ok_as("n1", Kind::SchedulerBatch(plan.batch.clone()));
        }
        plan
    }

    fn observe(h: &mut Harness, id: &str, state: pb::ReplicaState) {
        let node = h.state.replica_desired(id).unwrap().node.clone();
        h.ok(Kind::ReportReplicas(pb::ReportReplicas {
            node,
            observations: vec![pb::ReplicaObserved {
                id: id.into(),
                state: state.into(),
                ..Default::default()
            }],
        }));
    }

    fn ids(h: &Harness) -> Vec<String> {
        h.state.replicas_desired().map(|r| r.id.clone()).collect()
    }

    #[test]
    fn spread_places_replicas_on_distinct_nodes_evenly() {
        let mut h = cluster(&["n1", "n2"], &["n3"]);
        deploy(&mut h, vec![web(4, "web:1")]);
        let plan = commit(&mut h);
        let mut per_node = BTreeMap::new();
        for r in &plan.batch.upsert_replicas {
            *per_node.entry(r.node.as_str()).or_insert(0) += 1;
        }
        assert_eq!(
            per_node,
            BTreeMap::from([("n1", 2), ("n2", 2)]),
            "n3 is not ready"
        );
        assert_eq!(
            ids(&h),
            ["shop-web-1", "shop-web-2", "shop-web-3", "shop-web-4"]
        );
        assert_eq!(
            h.state.deployment("shop").unwrap().status(),
            pb::DeploymentStatus::Active
        );
        let again = commit(&mut h);
        assert!(
            again.is_empty(),
            "a converged cluster needs nothing: {again:?}"
        );
    }

    #[test]
    fn without_ready_nodes_the_deployment_is_pending_with_a_reason() {
        let mut h = cluster(&[], &["n1"]);
        deploy(&mut h, vec![web(1, "web:1")]);
        commit(&mut h);
        let d = h.state.deployment("shop").unwrap();
        assert_eq!(d.status(), pb::DeploymentStatus::Pending);
        assert_eq!(d.status_details["reason"], "no_ready_nodes");
        assert_eq!(d.status_details["service"], "web");
    }

    #[test]
    fn hosts_placement_never_spills_and_names_the_missing_host() {
        let mut h = cluster(&["n1", "n2"], &["n3"]);
        let pinned = pb::ServiceSpec {
            placement: PlacementMode::Hosts.into(),
            hosts: vec!["n1".into(), "n3".into()],
            ..web(2, "web:1")
        };
        deploy(&mut h, vec![pinned]);
        commit(&mut h);
        let nodes: Vec<String> = h.state.replicas_desired().map(|r| r.node.clone()).collect();
        assert_eq!(nodes, ["n1"], "one replica on n1, none spilled to n2");
        let d = h.state.deployment("shop").unwrap();
        assert_eq!(d.status_details["reason"], "cannot_satisfy_host_placement");
        assert_eq!(d.status_details["missing_hosts"], "n3");
    }

    #[test]
    fn a_new_apply_clears_failed_replicas_and_replica_ids_are_never_reused() {
        let mut h = cluster(&["n1"], &[]);
        deploy(&mut h, vec![web(1, "web:1")]);
        commit(&mut h);
        observe(&mut h, "shop-web-1", pb::ReplicaState::Failed);
        assert!(
            commit(&mut h).is_empty(),
            "failed stays failed until a new apply"
        );
        deploy(&mut h, vec![web(1, "web:1")]);
        commit(&mut h);
        let replica = h.state.replica_desired("shop-web-1").unwrap();
        assert_eq!((replica.restart_generation, replica.revision), (1, 2));
        let observed = h.state.replica_observed("shop-web-1").unwrap();
        assert_eq!(observed.state(), pb::ReplicaState::Pending);

        deploy(&mut h, vec![web(0, "web:1")]);
        commit(&mut h);
        assert!(ids(&h).is_empty());
        deploy(&mut h, vec![web(1, "web:1")]);
        commit(&mut h);
        assert_eq!(ids(&h), ["shop-web-2"]);
    }

    #[test]
    fn a_spec_change_rolls_out_one_replica_at_a_time_and_completes() {
        let mut h = cluster(&["n1"], &[]);
        deploy(&mut h, vec![web(2, "web:1")]);
        commit(&mut h);
        observe(&mut h, "shop-web-1", pb::ReplicaState::Running);
        observe(&mut h, "shop-web-2", pb::ReplicaState::Running);
        deploy(&mut h, vec![web(2, "web:2")]);
        commit(&mut h);
        assert_eq!(ids(&h), ["shop-web-1", "shop-web-2", "shop-web-3"]);
        let rollout = h.state.rollout("shop", "web").unwrap();
        assert_eq!(rollout.state(), pb::RolloutState::InProgress);
        assert_eq!((rollout.from_revision, rollout.to_revision), (1, 2));

        for (new, old) in [("shop-web-3", "shop-web-2"), ("shop-web-4", "shop-web-1")] {
            observe(&mut h, new, pb::ReplicaState::Running);
            let plan = commit(&mut h);
            assert!(
                plan.batch.remove_replicas.is_empty(),
                "monitor period not over"
            );
            assert!(plan.wake_at.is_some());
            h.now += 1_000;
            commit(&mut h);
            assert!(
                h.state.replica_desired(old).is_none(),
                "{old} replaced by {new}"
            );
        }
        h.now += 1_000;
        commit(&mut h);
        assert_eq!(ids(&h), ["shop-web-3", "shop-web-4"]);
        let rollout = h.state.rollout("shop", "web").unwrap();
        assert_eq!(rollout.state(), pb::RolloutState::Completed);
        assert!(rollout.finished_at_unix_ms > 0);
    }

    #[test]
    fn a_failing_replacement_rolls_back_to_the_previous_spec() {
        let mut h = cluster(&["n1"], &[]);
        deploy(&mut h, vec![web(1, "web:1")]);
        commit(&mut h);
        observe(&mut h, "shop-web-1", pb::ReplicaState::Running);
        let old_hash = h
            .state
            .replica_desired("shop-web-1")
            .unwrap()
            .spec_hash
            .clone();
        deploy(&mut h, vec![web(1, "web:broken")]);
        commit(&mut h);
        observe(&mut h, "shop-web-2", pb::ReplicaState::Failed);
        commit(&mut h);
        let rollout = h.state.rollout("shop", "web").unwrap();
        assert_eq!(rollout.state(), pb::RolloutState::Aborted);
        assert!(rollout.rolled_back);
        assert_eq!(rollout.details["replica"], "shop-web-2");
        commit(&mut h);
        assert_eq!(
            ids(&h),
            ["shop-web-1"],
            "the failed replacement is gone, the old one stays"
        );
        assert_eq!(
            h.state.replica_desired("shop-web-1").unwrap().spec_hash,
            old_hash
        );
        assert!(commit(&mut h).is_empty(), "rolled back and steady");
    }

    #[test]
    fn replicas_of_a_removed_service_are_removed() {
        let mut h = cluster(&["n1"], &[]);
        deploy(&mut h, vec![web(1, "web:1"), service("db", "db:1")]);
        commit(&mut h);
        assert_eq!(ids(&h), ["shop-db-1", "shop-web-1"]);
        deploy(&mut h, vec![web(1, "web:1")]);
        commit(&mut h);
        assert_eq!(ids(&h), ["shop-web-1"]);
    }

    #[test]
    fn global_runs_one_replica_per_ready_node() {
        let mut h = cluster(&["n1", "n2"], &["n3"]);
        let agent = pb::ServiceSpec {
            placement: PlacementMode::Global.into(),
            ..service("agent", "agent:1")
        };
        deploy(&mut h, vec![agent]);
        commit(&mut h);
        assert_eq!(ids(&h), ["shop-agent-n1", "shop-agent-n2"]);
    }
}
