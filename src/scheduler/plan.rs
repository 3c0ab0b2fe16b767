//! One reconcile of the scheduler as a pure function: the replicated state and the time in,
//! one `SchedulerBatch` (and when to look again) out (SPEC §5).
//!
//! Per service it decides the target spec (the deployment's current revision, or the previous
//! one after a rolled-back rollout), places new replicas (within the nodes' declared capacity),
//! advances rollouts one step at a time through [`rollout::step`], removes replicas of services
//! that are gone, re-arms replicas a new apply must clear (`failed` is only cleared by a new
//! revision), and sets each deployment's status (`pending` with a reason when a replica cannot
//! be placed).
//!
//! Nodes leave the placement in two ways (SPEC §5.4). A node that has not answered the leader
//! for [`Settings::node_lost_after_ms`] (or that was removed) is lost: its replicas are removed
//! from it at once and placed elsewhere, except `hosts`-pinned ones, which wait for it; when it
//! comes back its agent finds them no longer desired there and removes the stale containers. A
//! draining node keeps its replicas until their replacements elsewhere run, then loses them;
//! when it holds nothing the drain is complete (and a `node remove` drain removes the node). A
//! drain still waiting after [`Settings::drain_timeout_ms`] puts the node in `drain_timeout`.
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
    /// Nodes whose `node remove` drain is complete: remove them from the cluster (after the
    /// batch is committed; a separate command because removal is not the scheduler's record).
    pub remove_nodes: Vec<String>,
}

impl Plan {
    /// True when the batch holds nothing to commit.
    pub fn is_empty(&self) -> bool {
        let b = &self.batch;
        b.upsert_replicas.is_empty()
            && b.remove_replicas.is_empty()
            && b.upsert_rollouts.is_empty()
            && b.remove_rollouts.is_empty()
            && b.deployment_statuses.is_empty()
            && b.replica_states.is_empty()
            && b.node_statuses.is_empty()
            && b.node_drains.is_empty()
            && b.audit.is_empty()
    }

    fn wake(&mut self, at: Option<i64>) {
        if let Some(at) = at {
            self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
        }
    }
}

/// At most this many replicas are created per reconcile, so that one `SchedulerBatch` stays a
/// raft entry of a few megabytes (about 150 bytes per replica) that followers can receive; the
/// next reconcile, at once, creates the rest.
pub const MAX_NEW_REPLICAS_PER_BATCH: usize = 10_000;

/// The scheduler's tunables (daemon.yaml `scheduler:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A node unreachable for this long (since its last recorded heartbeat) is lost.
    pub node_lost_after_ms: i64,
    /// A drain with replicas still on the node after this long stops with `drain_timeout`.
    pub drain_timeout_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_lost_after_ms: 15_000,
            drain_timeout_ms: 300_000,
        }
    }
}

/// Computes the scheduler's changes for `state` at `now` (Unix ms).
pub fn reconcile(state: &State, now: i64, settings: &Settings) -> Plan {
    let mut plan = Plan::default();
    let mut nodes = Nodes::of(state, now, settings);
    plan.wake(nodes.lost_at);
    let by_service = ReplicasByService::of(state);
    for deployment in state.deployments() {
        let mut unplaceable = BTreeMap::new();
        let services = deployment
            .spec
            .as_ref()
            .map_or(&[][..], |s| s.services.as_slice());
        for service in services {
            let replicas = by_service.of_service(&deployment.name, &service.name);
            let outcome = plan_service(
                state, &mut nodes, deployment, service, replicas, now, &mut plan,
            );
            if let Err(reason) = outcome {
                unplaceable.insert(service.name.clone(), reason);
            }
        }
        remove_dropped_services(state, &by_service, deployment, services, &mut plan);
        set_status(deployment, &unplaceable, &mut plan);
    }
    finish_drains(state, &nodes, now, settings, &mut plan);
    plan
}

/// The nodes that may receive new replicas at `now` (ready, reachable, docker up, not draining).
pub fn eligible_nodes(state: &State, now: i64, settings: &Settings) -> Vec<String> {
    Nodes::of(state, now, settings).eligible
}

/// The desired replicas grouped by (deployment, service), built once per reconcile so that
/// each service reads its own replicas instead of scanning all of them (which made a
/// reconcile quadratic in the number of replicas).
struct ReplicasByService<'a> {
    groups: BTreeMap<(&'a str, &'a str), Vec<&'a pb::ReplicaDesired>>,
}

impl<'a> ReplicasByService<'a> {
    fn of(state: &'a State) -> ReplicasByService<'a> {
        let mut groups: BTreeMap<(&str, &str), Vec<&pb::ReplicaDesired>> = BTreeMap::new();
        for replica in state.replicas_desired() {
            groups
                .entry((replica.deployment.as_str(), replica.service.as_str()))
                .or_default()
                .push(replica);
        }
        ReplicasByService { groups }
    }

    /// The service's replicas, in id order (as `State::replicas_desired` yields them).
    fn of_service(&self, deployment: &str, service: &str) -> Vec<&'a pb::ReplicaDesired> {
        self.groups
            .get(&(deployment, service))
            .cloned()
            .unwrap_or_default()
    }

    /// The deployment's replicas of every service, service by service.
    fn of_deployment<'s>(
        &'s self,
        deployment: &'s str,
    ) -> impl Iterator<Item = &'a pb::ReplicaDesired> + 's {
        self.groups
            .range((deployment, "")..)
            .take_while(move |((d, _), _)| *d == deployment)
            .flat_map(|(_, replicas)| replicas.iter().copied())
    }
}

/// Why a service's replicas cannot all be placed.
#[derive(Debug, Clone, PartialEq)]
struct Unplaceable {
    reason: &'static str,
    /// Supporting fields for the deployment's status details (e.g. `missing_hosts`).
    details: BTreeMap<String, String>,
}

/// The nodes as placement sees them.
struct Nodes {
    /// Nodes that may receive new replicas.
    eligible: Vec<String>,
    /// Replicas per node, counting those placed earlier in this reconcile.
    load: BTreeMap<String, usize>,
    /// The eligible nodes ordered by (load, name), kept in step with `load`: spread takes the
    /// first one that fits and holds none of the service's replicas instead of scanning every
    /// node for every new replica.
    by_load: BTreeSet<(usize, String)>,
    /// Declared capacity and what replicas reserve of it, for nodes that declare one.
    capacity: BTreeMap<String, (pb::NodeResources, pb::NodeResources)>,
    /// Members of the node table.
    members: BTreeSet<String>,
    /// Members unreachable for longer than `node_lost_after_ms`.
    lost: BTreeSet<String>,
    /// Nodes being drained (not timed out), and whether the drain is forced.
    draining: BTreeMap<String, bool>,
    /// When the next unreachable node becomes lost.
    lost_at: Option<i64>,
}

impl Nodes {
    fn of(state: &State, now: i64, settings: &Settings) -> Nodes {
        let mut nodes = Nodes {
            eligible: Vec::new(),
            load: BTreeMap::new(),
            by_load: BTreeSet::new(),
            capacity: BTreeMap::new(),
            members: BTreeSet::new(),
            lost: BTreeSet::new(),
            draining: BTreeMap::new(),
            lost_at: None,
        };
        for node in state.nodes() {
            nodes.members.insert(node.name.clone());
            let reachable = node.reachability() != pb::Reachability::Unreachable;
            if !reachable {
                let heard = node.last_heartbeat_unix_ms.max(node.joined_at_unix_ms);
                let lost_at = heard.saturating_add(settings.node_lost_after_ms);
                if now >= lost_at {
                    nodes.lost.insert(node.name.clone());
                } else {
                    nodes.lost_at = Some(nodes.lost_at.map_or(lost_at, |at| at.min(lost_at)));
                }
            }
            let drain = node.drain.as_ref().filter(|d| d.completed_at_unix_ms == 0);
            if let Some(drain) = drain
                && node.status() != pb::NodeStatus::DrainTimeout
            {
                nodes.draining.insert(node.name.clone(), drain.force);
            }
            if node.status() == pb::NodeStatus::Ready
                && reachable
                && node.docker.as_ref().is_none_or(|d| d.ok)
                && node.drain.is_none()
            {
                nodes.eligible.push(node.name.clone());
            }
            if let Some(capacity) = node
                .capacity
                .filter(|c| c.cpu_millis > 0 || c.memory_bytes > 0)
            {
                nodes
                    .capacity
                    .insert(node.name.clone(), (capacity, pb::NodeResources::default()));
            }
        }
        let reservations: BTreeMap<(&str, &str), pb::NodeResources> = state
            .deployments()
            .flat_map(|d| {
                let services = d.spec.as_ref().map_or(&[][..], |s| s.services.as_slice());
                services.iter().map(move |s| {
                    (
                        (d.name.as_str(), s.name.as_str()),
                        s.reservations.unwrap_or_default(),
                    )
                })
            })
            .collect();
        for replica in state.replicas_desired() {
            let need = reservations
                .get(&(replica.deployment.as_str(), replica.service.as_str()))
                .copied()
                .unwrap_or_default();
            nodes.reserve(&replica.node, &need);
        }
        nodes.by_load = (nodes.eligible.iter())
            .map(|n| (nodes.load.get(n).copied().unwrap_or(0), n.clone()))
            .collect();
        nodes
    }

    /// True when a node's replicas must be placed elsewhere now: it is no longer a member, or
    /// it is lost (unless `pinned`: a `hosts` replica waits for its node to come back).
    fn must_move(&self, node: &str, pinned: bool) -> bool {
        !self.members.contains(node) || (!pinned && self.lost.contains(node))
    }

    /// True when `need` fits in what `node` has left (undeclared capacity always fits).
    fn fits(&self, node: &str, need: &pb::NodeResources) -> bool {
        let Some((capacity, used)) = self.capacity.get(node) else {
            return true;
        };
        let fits = |capacity: u64, used: u64, need: u64| {
            capacity == 0 || need == 0 || used.saturating_add(need) <= capacity
        };
        fits(capacity.cpu_millis, used.cpu_millis, need.cpu_millis)
            && fits(capacity.memory_bytes, used.memory_bytes, need.memory_bytes)
    }

    /// Counts one more replica reserving `need` on `node`.
    fn reserve(&mut self, node: &str, need: &pb::NodeResources) {
        let load = self.load.entry(node.to_owned()).or_default();
        *load += 1;
        let load = *load;
        if self.by_load.remove(&(load - 1, node.to_owned())) {
            self.by_load.insert((load, node.to_owned()));
        }
        if let Some((_, used)) = self.capacity.get_mut(node) {
            used.cpu_millis = used.cpu_millis.saturating_add(need.cpu_millis);
            used.memory_bytes = used.memory_bytes.saturating_add(need.memory_bytes);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_service(
    state: &State,
    nodes: &mut Nodes,
    deployment: &pb::Deployment,
    service: &pb::ServiceSpec,
    all: Vec<&pb::ReplicaDesired>,
    now: i64,
    plan: &mut Plan,
) -> Result<(), Unplaceable> {
    // Only a rollout of the current revision steers; older records are history.
    let record = state
        .rollout(&deployment.name, &service.name)
        .filter(|r| r.to_revision == deployment.revision);
    let target = Target::of(deployment, service, record);
    if service.placement() == PlacementMode::Global {
        // One per node: nothing to move; a draining or departed node's copy just goes.
        let (replicas, leaving): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| {
            nodes.members.contains(&r.node) && !nodes.draining.contains_key(&r.node)
        });
        plan.batch
            .remove_replicas
            .extend(leaving.iter().map(|r| r.id.clone()));
        rearm_for_new_revision(state, &replicas, &target, plan);
        return plan_global(nodes, deployment, service, &replicas, &target, plan);
    }

    let relocation = Relocation::of(nodes, service, &all);
    plan.batch
        .remove_replicas
        .extend(relocation.now.iter().map(|r| r.id.clone()));
    let replicas = &relocation.staying;
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
    // A draining node's replicas go once their replacements elsewhere serve.
    let serving_elsewhere = candidates
        .iter()
        .filter(|c| c.current && c.state == ReplicaState::Running)
        .filter(|c| !step.remove.contains(&c.id))
        .count();
    if serving_elsewhere >= service.replicas as usize {
        plan.batch
            .remove_replicas
            .extend(relocation.after_replacement.iter().map(|r| r.id.clone()));
    }
    // A replica moved by the rebalancer goes once its own replacement runs; a replacement
    // that failed is dropped instead and the original stays.
    for (original, replacement) in &relocation.replaced {
        match state
            .replica_observed(&replacement.id)
            .map(pb::ReplicaObserved::state)
        {
            Some(ReplicaState::Running) => plan.batch.remove_replicas.push(original.id.clone()),
            Some(ReplicaState::Failed) => plan.batch.remove_replicas.push(replacement.id.clone()),
            _ => {}
        }
    }
    let mut placement = Ok(());
    if step.create > 0 {
        placement = create_replicas(
            state, nodes, deployment, service, replicas, &step, &target, plan,
        );
    }
    // Moving replicas off a lost or draining node is not a rollout of the service.
    let moving_only = relocation.moving() > 0
        && candidates.iter().all(|c| c.current)
        && candidates.len() + relocation.moving() == service.replicas as usize;
    if !moving_only {
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
    }
    placement
}

/// A spread, pack or hosts service's replicas sorted by where they must go.
struct Relocation<'a> {
    /// On usable nodes (or pinned to a lost one, waiting for it).
    staying: Vec<&'a pb::ReplicaDesired>,
    /// Removed now: their node is lost or gone, or its drain is forced.
    now: Vec<&'a pb::ReplicaDesired>,
    /// On a draining node: removed once their replacements serve.
    after_replacement: Vec<&'a pb::ReplicaDesired>,
    /// Moved by the rebalancer: (original, the replacement that names it in `replaces`).
    replaced: Vec<(&'a pb::ReplicaDesired, &'a pb::ReplicaDesired)>,
}

impl<'a> Relocation<'a> {
    fn of(
        nodes: &Nodes,
        service: &pb::ServiceSpec,
        replicas: &[&'a pb::ReplicaDesired],
    ) -> Relocation<'a> {
        let pinned = service.placement() == PlacementMode::Hosts;
        let mut relocation = Relocation {
            staying: Vec::new(),
            now: Vec::new(),
            after_replacement: Vec::new(),
            replaced: Vec::new(),
        };
        let replacements: BTreeMap<&str, &'a pb::ReplicaDesired> = (replicas.iter())
            .filter(|r| !r.replaces.is_empty())
            .map(|r| (r.replaces.as_str(), *r))
            .collect();
        for &replica in replicas {
            let list = match nodes.draining.get(&replica.node) {
                _ if nodes.must_move(&replica.node, pinned) => &mut relocation.now,
                _ if replacements.contains_key(replica.id.as_str()) => {
                    let replacement = replacements[replica.id.as_str()];
                    relocation.replaced.push((replica, replacement));
                    continue;
                }
                Some(true) => &mut relocation.now,
                // A pinned replica has nowhere else to go: the drain waits (and times out).
                Some(false) if !pinned => &mut relocation.after_replacement,
                _ => &mut relocation.staying,
            };
            list.push(replica);
        }
        relocation
    }

    fn moving(&self) -> usize {
        self.now.len() + self.after_replacement.len() + self.replaced.len()
    }
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
    nodes: &mut Nodes,
    deployment: &pb::Deployment,
    service: &pb::ServiceSpec,
    replicas: &[&pb::ReplicaDesired],
    target: &Target,
    plan: &mut Plan,
) -> Result<(), Unplaceable> {
    if nodes.eligible.is_empty() {
        return Err(no_nodes());
    }
    let need = service.reservations.unwrap_or_default();
    let mut outcome = Ok(());
    for node in nodes.eligible.clone() {
        let id = format!("{}-{}-{node}", deployment.name, service.name);
        let existing = replicas.iter().find(|r| r.id == id);
        if existing.is_some_and(|r| r.spec_hash == target.spec_hash) {
            continue;
        }
        if existing.is_none() {
            if !nodes.fits(&node, &need) {
                outcome = Err(Unplaceable {
                    reason: "insufficient_capacity",
                    details: BTreeMap::from([("node".to_owned(), node.clone())]),
                });
                continue;
            }
            nodes.reserve(&node, &need);
        }
        plan.batch.upsert_replicas.push(pb::ReplicaDesired {
            id,
            deployment: deployment.name.clone(),
            service: service.name.clone(),
            index: 0,
            node,
            spec_hash: target.spec_hash.clone(),
            revision: target.revision,
            image: target.image.clone(),
            restart_generation: existing.map_or(0, |r| r.restart_generation),
            ..Default::default()
        });
    }
    outcome
}

fn no_nodes() -> Unplaceable {
    Unplaceable {
        reason: "no_ready_nodes",
        details: BTreeMap::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn create_replicas(
    state: &State,
    nodes: &mut Nodes,
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
    let need = service.reservations.unwrap_or_default();
    let first = state.next_replica_index(&deployment.name, &service.name);
    let room = MAX_NEW_REPLICAS_PER_BATCH.saturating_sub(plan.batch.upsert_replicas.len());
    if step.create > room {
        plan.wake(Some(0)); // the rest in the next reconcile, at once
    }
    for index in (first..).take(step.create.min(room)) {
        let node = choose_node(service, nodes, &on_node, &need)?;
        *on_node.entry(node.clone()).or_default() += 1;
        nodes.reserve(&node, &need);
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
    need: &pb::NodeResources,
) -> Result<String, Unplaceable> {
    let count = |map: &BTreeMap<String, usize>, node: &str| map.get(node).copied().unwrap_or(0);
    let load = &nodes.load;
    if !matches!(
        service.placement(),
        PlacementMode::Hosts | PlacementMode::Pack
    ) {
        // Spread's choice below is the least (replicas of the service, load, name) among the
        // eligible nodes that fit; when some such node holds none of the service's replicas,
        // it is the first of them in (load, name) order.
        let free = (nodes.by_load.iter())
            .map(|(_, node)| node)
            .find(|node| count(on_node, node) == 0 && nodes.fits(node, need));
        if let Some(node) = free {
            return Ok(node.clone());
        }
    }
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
                    details: BTreeMap::from([("missing_hosts".to_owned(), missing.join(","))]),
                });
            }
            usable
        }
        _ => nodes.eligible.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(no_nodes());
    }
    let candidates: Vec<&String> = (candidates.into_iter())
        .filter(|n| nodes.fits(n, need))
        .collect();
    if candidates.is_empty() {
        return Err(Unplaceable {
            reason: "insufficient_capacity",
            details: BTreeMap::from([
                ("cpu_millis".to_owned(), need.cpu_millis.to_string()),
                ("memory_bytes".to_owned(), need.memory_bytes.to_string()),
            ]),
        });
    }
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
    let mut next = match (record, &step.rollout) {
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
    note_hold(deployment, service, record, step, &mut next, plan);
    if record != Some(&next) {
        plan.batch.upsert_rollouts.push(next);
    }
}

/// Marks a rollout held by the invariant (`details.invariant_hold`), auditing
/// `rollout_invariant_hold` once when a hold begins, and clears the mark when it ends.
fn note_hold(
    deployment: &pb::Deployment,
    service: &pb::ServiceSpec,
    record: Option<&pb::Rollout>,
    step: &Step,
    next: &mut pb::Rollout,
    plan: &mut Plan,
) {
    const HOLD: &str = "invariant_hold";
    let was_held = record.is_some_and(|r| r.details.contains_key(HOLD));
    let Some(hold) = step
        .hold
        .filter(|_| next.state() == pb::RolloutState::InProgress)
    else {
        next.details.remove(HOLD);
        return;
    };
    next.details
        .insert(HOLD.to_owned(), hold.held_back.to_string());
    if !was_held {
        plan.batch.audit.push(pb::AuditEvent {
            r#type: pb::AuditEventType::RolloutInvariantHold.into(),
            payload: [
                ("deployment", deployment.name.clone()),
                ("service", service.name.clone()),
                ("revision", deployment.revision.to_string()),
                ("held_back", hold.held_back.to_string()),
                ("healthy", hold.healthy.to_string()),
                ("min_healthy", hold.min_healthy.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            ..Default::default()
        });
    }
}

/// Completes drains whose node holds no replica any more (and asks for the node's removal when
/// it was a `node remove`), and stops with `drain_timeout` those still waiting after
/// [`Settings::drain_timeout_ms`].
fn finish_drains(state: &State, nodes: &Nodes, now: i64, settings: &Settings, plan: &mut Plan) {
    let removed: BTreeSet<String> = plan.batch.remove_replicas.iter().cloned().collect();
    for node in state.nodes() {
        let Some(drain) = &node.drain else { continue };
        if drain.completed_at_unix_ms != 0 {
            if drain.remove {
                plan.remove_nodes.push(node.name.clone());
            }
            continue;
        }
        if !nodes.draining.contains_key(&node.name) {
            continue; // timed out: the operator forces or cancels it
        }
        let remaining: Vec<&str> = state
            .replicas_desired()
            .filter(|r| r.node == node.name && !removed.contains(&r.id))
            .map(|r| r.id.as_str())
            .collect();
        if remaining.is_empty() {
            plan.batch.node_drains.push(pb::SetNodeDrain {
                node: node.name.clone(),
                drain: Some(pb::NodeDrain {
                    completed_at_unix_ms: now,
                    ..drain.clone()
                }),
            });
            continue;
        }
        let deadline = drain
            .requested_at_unix_ms
            .saturating_add(settings.drain_timeout_ms);
        if now < deadline {
            plan.wake(Some(deadline));
            continue;
        }
        plan.batch.node_statuses.push(pb::SetNodeStatus {
            node: node.name.clone(),
            status: pb::NodeStatus::DrainTimeout.into(),
            status_details: BTreeMap::from([
                ("replica".to_owned(), remaining[0].to_owned()),
                ("remaining".to_owned(), remaining.len().to_string()),
                (
                    "timeout_ms".to_owned(),
                    settings.drain_timeout_ms.to_string(),
                ),
            ]),
            ..Default::default()
        });
    }
}

fn remove_dropped_services(
    state: &State,
    by_service: &ReplicasByService,
    deployment: &pb::Deployment,
    services: &[pb::ServiceSpec],
    plan: &mut Plan,
) {
    let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    for replica in by_service.of_deployment(&deployment.name) {
        if !names.contains(replica.service.as_str()) {
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
            let mut details = why.details.clone();
            details.insert("reason".to_owned(), why.reason.to_owned());
            details.insert("service".to_owned(), service.clone());
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
        let plan = reconcile(&h.state, h.now, &Settings::default());
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
    fn spread_takes_the_least_loaded_node_without_the_service_then_by_name() {
        let mut h = cluster(&["n1", "n2", "n3"], &[]);
        deploy(&mut h, vec![web(2, "web:1")]);
        commit(&mut h);
        assert_eq!(
            placement(&h),
            BTreeMap::from([
                ("shop-web-1".to_owned(), "n1".to_owned()),
                ("shop-web-2".to_owned(), "n2".to_owned()),
            ])
        );
        let spec = pb::DeploymentSpec {
            services: vec![web(4, "api:1")],
            ..Default::default()
        };
        h.ok(apply_deployment("blog", spec));
        commit(&mut h);
        let blog: Vec<String> = (1..=4)
            .map(|i| placement(&h)[&format!("blog-web-{i}")].clone())
            .collect();
        // n3 is empty; then n1 and n2 (load 1, by name); then every node holds one of the
        // service's replicas, and the least loaded is n3 again.
        assert_eq!(blog, ["n3", "n1", "n2", "n3"]);
    }

    #[test]
    fn a_dropped_service_removes_only_its_own_deployments_replicas() {
        let mut h = cluster(&["n1"], &[]);
        deploy(&mut h, vec![web(1, "web:1"), service("db", "db:1")]);
        let spec = pb::DeploymentSpec {
            services: vec![service("db", "db:1")],
            ..Default::default()
        };
        h.ok(apply_deployment("blog", spec));
        commit(&mut h);
        deploy(&mut h, vec![web(1, "web:1")]);
        let plan = commit(&mut h);
        assert_eq!(plan.batch.remove_replicas, ["shop-db-1"]);
        assert_eq!(ids(&h), ["blog-db-1", "shop-web-1"]);
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
        assert_eq!(
            rollout.details["invariant_hold"], "2",
            "both old replicas kept"
        );

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
        assert!(!rollout.details.contains_key("invariant_hold"));
        let holds: Vec<_> = (h.state.audit(&Default::default()).events.into_iter())
            .filter(|e| e.r#type() == pb::AuditEventType::RolloutInvariantHold)
            .collect();
        assert_eq!(holds.len(), 1, "audited once per hold: {holds:?}");
        assert_eq!(holds[0].payload["service"], "web");
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

    fn unreachable(h: &mut Harness, node: &str) {
        h.ok(Kind::SetNodeReachability(pb::SetNodeReachability {
            node: node.into(),
            reachability: pb::Reachability::Unreachable.into(),
        }));
    }

    fn drain(h: &mut Harness, node: &str, force: bool, remove: bool) {
        h.ok(Kind::SetNodeDrain(pb::SetNodeDrain {
            node: node.into(),
            drain: Some(pb::NodeDrain {
                force,
                remove,
                ..Default::default()
            }),
        }));
    }

    fn placement(h: &Harness) -> BTreeMap<String, String> {
        h.state
            .replicas_desired()
            .map(|r| (r.id.clone(), r.node.clone()))
            .collect()
    }

    fn run_all(h: &mut Harness) {
        let ids = ids(h);
        for id in ids {
            if h.state.replica_observed(&id).is_none() {
                observe(h, &id, pb::ReplicaState::Running);
            }
        }
    }

    #[test]
    fn a_lost_node_loses_its_replicas_to_the_others_but_pinned_ones_wait() {
        let mut h = cluster(&["n1", "n2", "n3"], &[]);
        let pinned = pb::ServiceSpec {
            placement: PlacementMode::Hosts.into(),
            hosts: vec!["n3".into()],
            ..service("db", "db:1")
        };
        deploy(&mut h, vec![web(3, "web:1"), pinned]);
        commit(&mut h);
        run_all(&mut h);
        let before = placement(&h);
        assert_eq!(before["shop-web-3"], "n3");
        assert_eq!(before["shop-db-1"], "n3");
        h.now += 2_000; // past the monitor period: nothing else wakes the scheduler
        commit(&mut h);

        unreachable(&mut h, "n3");
        let plan = commit(&mut h);
        assert!(plan.is_empty(), "not lost yet: {plan:?}");
        let lost_at = plan.wake_at.expect("wakes when n3 counts as lost");
        assert_eq!(
            lost_at,
            h.state.node("n3").unwrap().joined_at_unix_ms + 15_000
        );

        h.now = lost_at;
        let plan = commit(&mut h);
        assert_eq!(plan.batch.remove_replicas, ["shop-web-3"]);
        let after = placement(&h);
        assert_eq!(after["shop-web-1"], before["shop-web-1"], "stable");
        assert_eq!(after["shop-web-2"], before["shop-web-2"], "stable");
        assert_eq!(
            after["shop-db-1"], "n3",
            "pinned replicas wait for their host"
        );
        let moved = after
            .get("shop-web-4")
            .expect("a new replica for the lost one");
        assert_ne!(moved, "n3");
        assert!(
            h.state.rollout("shop", "web").is_none(),
            "moving is not a rollout"
        );
    }

    #[test]
    fn a_drain_stops_old_replicas_only_once_their_replacements_run_then_completes() {
        let mut h = cluster(&["n1", "n2"], &[]);
        deploy(&mut h, vec![web(2, "web:1")]);
        commit(&mut h);
        run_all(&mut h);
        assert_eq!(placement(&h)["shop-web-2"], "n2");

        drain(&mut h, "n2", false, true);
        commit(&mut h);
        let during = placement(&h);
        assert_eq!(during.get("shop-web-3").map(String::as_str), Some("n1"));
        assert_eq!(
            during["shop-web-2"], "n2",
            "kept until the replacement runs"
        );
        assert!(commit(&mut h).is_empty(), "waiting for shop-web-3");

        observe(&mut h, "shop-web-3", pb::ReplicaState::Running);
        let plan = commit(&mut h);
        assert_eq!(plan.batch.remove_replicas, ["shop-web-2"]);
        assert_eq!(plan.batch.node_drains.len(), 1, "drained: {plan:?}");
        assert!(plan.remove_nodes.is_empty(), "removed after the commit");
        let plan = commit(&mut h);
        assert_eq!(
            plan.remove_nodes,
            ["n2"],
            "a `node remove` drain removes the node"
        );
        assert!(
            h.state
                .node("n2")
                .unwrap()
                .drain
                .as_ref()
                .unwrap()
                .completed_at_unix_ms
                > 0
        );
    }

    #[test]
    fn a_forced_drain_moves_at_once_and_a_stuck_one_times_out() {
        let mut h = cluster(&["n1", "n2"], &[]);
        let pinned = pb::ServiceSpec {
            placement: PlacementMode::Hosts.into(),
            hosts: vec!["n2".into()],
            ..service("db", "db:1")
        };
        deploy(&mut h, vec![web(2, "web:1"), pinned]);
        commit(&mut h);
        run_all(&mut h);

        drain(&mut h, "n2", false, false);
        commit(&mut h);
        h.now += 300_000;
        let plan = commit(&mut h);
        let status = &plan.batch.node_statuses[0];
        assert_eq!(status.status(), pb::NodeStatus::DrainTimeout);
        assert_eq!(
            status.status_details["replica"], "shop-db-1",
            "pinned: cannot move"
        );

        drain(&mut h, "n2", true, false);
        assert_eq!(h.state.node("n2").unwrap().status(), pb::NodeStatus::Ready);
        commit(&mut h);
        assert!(
            placement(&h).values().all(|n| n == "n1"),
            "forced: everything left n2 at once: {:?}",
            placement(&h)
        );
        let d = h.state.deployment("shop").unwrap();
        assert_eq!(d.status_details["reason"], "cannot_satisfy_host_placement");
    }

    #[test]
    fn reservations_fit_the_declared_capacity_or_leave_the_deployment_pending() {
        let mut h = cluster(&["n1", "n2"], &[]);
        for name in ["n1", "n2"] {
            let node = h.state.node(name).unwrap().clone();
            h.ok(Kind::UpdateNodeInfo(pb::UpdateNodeInfo {
                node: node.name,
                api_address: node.api_address,
                raft_address: node.raft_address,
                capacity: Some(pb::NodeResources {
                    cpu_millis: 1_000,
                    memory_bytes: 1 << 30,
                }),
                ..Default::default()
            }));
        }
        let big = pb::ServiceSpec {
            reservations: Some(pb::NodeResources {
                cpu_millis: 600,
                memory_bytes: 0,
            }),
            placement: PlacementMode::Pack.into(),
            ..web(3, "web:1")
        };
        deploy(&mut h, vec![big]);
        commit(&mut h);
        let nodes: Vec<String> = placement(&h).into_values().collect();
        assert_eq!(
            nodes,
            ["n1", "n2"],
            "pack, but only one 600m replica fits per node"
        );
        let d = h.state.deployment("shop").unwrap();
        assert_eq!(d.status(), pb::DeploymentStatus::Pending);
        assert_eq!(d.status_details["reason"], "insufficient_capacity");
        assert_eq!(d.status_details["cpu_millis"], "600");
    }

    #[test]
    fn replicas_of_a_removed_node_are_placed_again() {
        let mut h = cluster(&["n1", "n2"], &[]);
        deploy(&mut h, vec![web(2, "web:1")]);
        commit(&mut h);
        h.ok(Kind::RemoveNode(pb::RemoveNode {
            node: "n2".into(),
            force: true,
        }));
        commit(&mut h);
        assert_eq!(
            placement(&h),
            BTreeMap::from([
                ("shop-web-1".to_owned(), "n1".to_owned()),
                ("shop-web-3".to_owned(), "n1".to_owned())
            ])
        );
    }

    #[test]
    fn a_rebalanced_replica_goes_once_its_replacement_runs_and_stays_if_it_fails() {
        let mut h = cluster(&["n1", "n2"], &[]);
        deploy(&mut h, vec![web(1, "web:1")]);
        commit(&mut h);
        run_all(&mut h);
        let original = h.state.replica_desired("shop-web-1").unwrap().clone();
        let moved = |index: u64| pb::ReplicaDesired {
            id: format!("shop-web-{index}"),
            index,
            node: "n2".into(),
            replaces: "shop-web-1".into(),
            ..original.clone()
        };
        h.ok_as(
            "n1",
            Kind::SchedulerBatch(pb::SchedulerBatch {
                upsert_replicas: vec![moved(2)],
                ..Default::default()
            }),
        );
        assert!(
            commit(&mut h).is_empty(),
            "both stay while the replacement starts"
        );
        observe(&mut h, "shop-web-2", pb::ReplicaState::Failed);
        let plan = commit(&mut h);
        assert_eq!(
            plan.batch.remove_replicas,
            ["shop-web-2"],
            "a failed move is dropped"
        );
        assert!(commit(&mut h).is_empty(), "the original serves on");

        h.ok_as(
            "n1",
            Kind::SchedulerBatch(pb::SchedulerBatch {
                upsert_replicas: vec![moved(3)],
                ..Default::default()
            }),
        );
        observe(&mut h, "shop-web-3", pb::ReplicaState::Running);
        let plan = commit(&mut h);
        assert_eq!(plan.batch.remove_replicas, ["shop-web-1"]);
        assert_eq!(
            placement(&h),
            BTreeMap::from([("shop-web-3".to_owned(), "n2".to_owned())])
        );
        assert!(
            h.state.rollout("shop", "web").is_none(),
            "a move is not a rollout"
        );
    }

    #[test]
    fn a_huge_placement_is_split_into_batches_raft_can_carry() {
        let mut h = cluster(&["n1", "n2"], &[]);
        let want = MAX_NEW_REPLICAS_PER_BATCH as u32 + 50;
        deploy(&mut h, vec![web(want, "web:1")]);
        let first = commit(&mut h);
        assert_eq!(
            first.batch.upsert_replicas.len(),
            MAX_NEW_REPLICAS_PER_BATCH
        );
        assert_eq!(first.wake_at, Some(0), "the rest follows at once");
        let second = commit(&mut h);
        assert_eq!(second.batch.upsert_replicas.len(), 50);
        assert_eq!(h.state.replicas_desired().count(), want as usize);
        assert!(commit(&mut h).is_empty());
    }
}
