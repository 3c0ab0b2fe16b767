//! Pressure-based rebalancing (SPEC §5.5) as a pure function: the nodes' usage samples, the
//! replicas and the leader's memory of earlier cycles in; at most one replica move and the
//! audit events of the cycle out.
//!
//! The thresholds are the prior implementation's tested ones (prior art §4.7). A node's
//! pressure is the larger of its CPU and memory usage, each smoothed by an EWMA over five
//! minutes from samples fresher than three sample intervals. A move happens only when the
//! hottest node has been at or above [`HOT`] for [`HOT_CYCLES`] cycles in a row and is at
//! least [`MIN_SPREAD`] above the coolest; it takes one stateless, non-global replica off the
//! hottest node to the coolest eligible node that can take it: the move must relieve the source
//! by [`RELIEF_FLOOR`], must leave the destination below [`DST_CAP`], must not put two
//! replicas of a spread service on one node or a `hosts` replica off its hosts, and neither the
//! replica (10 min) nor the destination (2 min) may have moved recently. Each candidate turned
//! down is reported with its reason (`rebalance_skipped`), the move with its figures
//! (`rebalance_moved`). Without samples nothing happens and nothing is reported.
//!
//! The memory (EWMAs, streaks, cooldowns) is the leader's own: it is not replicated and is
//! rebuilt within two cycles after a failover. This module must not read clocks or state other
//! than what it is given, and must not place new replicas (the caller turns a move into a
//! replacement that runs before the original stops).

use std::collections::{BTreeMap, BTreeSet};

use crate::proto::v1 as pb;
use crate::proto::v1::PlacementMode;
use crate::state::State;

/// Pressure at which a node counts as hot.
pub const HOT: f64 = 0.85;
/// Consecutive hot cycles before a move.
pub const HOT_CYCLES: u32 = 2;
/// Least difference between the hottest and the coolest node.
pub const MIN_SPREAD: f64 = 0.25;
/// Least relief of the source's dominant dimension.
pub const RELIEF_FLOOR: f64 = 0.10;
/// The destination's pressure after the move must stay below this.
pub const DST_CAP: f64 = 0.75;
/// A replica does not move again within this time (ms).
pub const REPLICA_COOLDOWN_MS: i64 = 600_000;
/// A node does not receive another moved replica within this time (ms).
pub const NODE_COOLDOWN_MS: i64 = 120_000;
/// Time constant of the pressure EWMA (ms).
pub const EWMA_WINDOW_MS: f64 = 300_000.0;
/// Samples older than this are ignored (three sample intervals of 30 s).
pub const SAMPLE_MAX_AGE_MS: i64 = 90_000;
/// Footprint assumed for a replica without limits.
pub const DEFAULT_CPU: f64 = 0.12;
/// Footprint assumed for a replica without limits.
pub const DEFAULT_MEMORY: f64 = 0.06;
/// Cost of moving any replica, subtracted from its relief.
pub const MOVE_COST: f64 = 0.01;

/// The leader's memory between cycles.
#[derive(Debug, Default, Clone)]
pub struct Memory {
    /// Smoothed (cpu, memory) per node and the sample time they include.
    ewma: BTreeMap<String, (f64, f64, i64)>,
    /// Consecutive hot cycles per node.
    hot_streak: BTreeMap<String, u32>,
    /// When each replica last moved.
    replica_moved_at: BTreeMap<String, i64>,
    /// When each node last received a moved replica.
    node_received_at: BTreeMap<String, i64>,
}

/// One decided move.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// The replica to replace.
    pub replica: String,
    /// Where it runs now.
    pub from: String,
    /// Where its replacement goes.
    pub to: String,
}

/// What one cycle decided.
#[derive(Debug, Default, PartialEq)]
pub struct Cycle {
    /// The move, when one passed every gate.
    pub moved: Option<Move>,
    /// `rebalance_moved` / `rebalance_skipped` events.
    pub audit: Vec<pb::AuditEvent>,
}

impl Cycle {
    /// The command that carries out this cycle: its audit events and, for a move, a
    /// replacement on the destination that names the original in `replaces` (the reconcile
    /// removes the original once the replacement runs). `None` when there is nothing to commit.
    pub fn into_batch(self, state: &State) -> Option<pb::SchedulerBatch> {
        let mut batch = pb::SchedulerBatch {
            audit: self.audit,
            ..Default::default()
        };
        if let Some(moved) = &self.moved
            && let Some(original) = state.replica_desired(&moved.replica)
        {
            let index = state.next_replica_index(&original.deployment, &original.service);
            batch.upsert_replicas.push(pb::ReplicaDesired {
                id: format!("{}-{}-{index}", original.deployment, original.service),
                index,
                node: moved.to.clone(),
                replaces: original.id.clone(),
                restart_generation: 0,
                created_at_unix_ms: 0,
                updated_at_unix_ms: 0,
                ..original.clone()
            });
        }
        (!batch.audit.is_empty() || !batch.upsert_replicas.is_empty()).then_some(batch)
    }
}

/// Which dimension dominates a node's pressure.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dimension {
    Cpu,
    Memory,
}

impl Dimension {
    fn name(self) -> &'static str {
        match self {
            Dimension::Cpu => "cpu",
            Dimension::Memory => "memory",
        }
    }
}

/// One rebalancing cycle at `now` over `state` (only `eligible` nodes may receive).
pub fn cycle(memory: &mut Memory, state: &State, eligible: &[String], now: i64) -> Cycle {
    let pressure = smooth(memory, state, now);
    let mut outcome = Cycle::default();
    let Some((hot, &(hot_cpu, hot_mem))) = pressure
        .iter()
        .max_by(|a, b| level(*a.1).total_cmp(&level(*b.1)).then(b.0.cmp(a.0)))
    else {
        return outcome;
    };
    for (node, &p) in &pressure {
        let streak = memory.hot_streak.entry(node.clone()).or_default();
        *streak = if level(p) >= HOT { *streak + 1 } else { 0 };
    }
    memory
        .hot_streak
        .retain(|node, _| pressure.contains_key(node));
    let src_level = level((hot_cpu, hot_mem));
    let cool_level = (pressure.iter())
        .filter(|(n, _)| eligible.contains(n) && *n != hot)
        .map(|(_, p)| level(*p))
        .fold(f64::INFINITY, f64::min);
    if memory.hot_streak.get(hot).copied().unwrap_or(0) < HOT_CYCLES
        || !cool_level.is_finite()
        || src_level - cool_level < MIN_SPREAD
    {
        return outcome;
    }
    let dominant = if hot_cpu >= hot_mem {
        Dimension::Cpu
    } else {
        Dimension::Memory
    };
    let capacity = state.node(hot).and_then(|n| n.capacity).unwrap_or_default();
    let services: BTreeMap<(&str, &str), &pb::ServiceSpec> = state
        .deployments()
        .flat_map(|d| {
            let services = d.spec.as_ref().map_or(&[][..], |s| s.services.as_slice());
            services
                .iter()
                .map(move |s| ((d.name.as_str(), s.name.as_str()), s))
        })
        .collect();
    let mut best: Option<(f64, Move, BTreeMap<String, String>)> = None;
    let mut skipped = Vec::new();
    let on_hot = state.replicas_desired().filter(|r| &r.node == hot);
    for replica in on_hot {
        let Some(service) = services
            .get(&(replica.deployment.as_str(), replica.service.as_str()))
            .copied()
        else {
            continue;
        };
        if service.stateful || service.placement() == PlacementMode::Global {
            continue; // never enumerated
        }
        let relief = footprint(service, &capacity, dominant);
        let mut figures = BTreeMap::from([
            ("replica_id".to_owned(), replica.id.clone()),
            ("deployment".to_owned(), replica.deployment.clone()),
            ("service".to_owned(), replica.service.clone()),
            ("src".to_owned(), hot.clone()),
            ("dominant".to_owned(), dominant.name().to_owned()),
            ("relief".to_owned(), format!("{relief:.3}")),
            ("move_cost".to_owned(), format!("{MOVE_COST:.3}")),
            ("src_pressure_before".to_owned(), format!("{src_level:.3}")),
            (
                "src_pressure_after".to_owned(),
                format!("{:.3}", src_level - relief),
            ),
        ]);
        let decision = choose_destination(
            memory, state, &pressure, eligible, replica, service, relief, now,
        );
        match decision {
            Err(reason) => {
                figures.insert("reason".to_owned(), reason.to_owned());
                skipped.push(figures);
            }
            Ok((dst, dst_before)) => {
                let score = relief - MOVE_COST;
                figures.insert("dst".to_owned(), dst.clone());
                figures.insert("score".to_owned(), format!("{score:.3}"));
                figures.insert("dst_pressure_before".to_owned(), format!("{dst_before:.3}"));
                figures.insert(
                    "dst_pressure_after".to_owned(),
                    format!("{:.3}", dst_before + relief),
                );
                let better = best
                    .as_ref()
                    .is_none_or(|(s, m, _)| score > *s || (score == *s && replica.id < m.replica));
                if better {
                    let moved = Move {
                        replica: replica.id.clone(),
                        from: hot.clone(),
                        to: dst,
                    };
                    if let Some((_, _, mut previous)) = best.replace((score, moved, figures)) {
                        previous.insert("reason".to_owned(), "lower_score".to_owned());
                        skipped.push(previous);
                    }
                } else {
                    figures.insert("reason".to_owned(), "lower_score".to_owned());
                    skipped.push(figures);
                }
            }
        }
    }
    if best.is_none() && skipped.is_empty() {
        skipped.push(BTreeMap::from([
            ("src".to_owned(), hot.clone()),
            ("reason".to_owned(), "no_candidate".to_owned()),
        ]));
    }
    for figures in skipped {
        outcome
            .audit
            .push(event(pb::AuditEventType::RebalanceSkipped, figures));
    }
    if let Some((_, moved, figures)) = best {
        memory.replica_moved_at.insert(moved.replica.clone(), now);
        memory.node_received_at.insert(moved.to.clone(), now);
        memory.hot_streak.insert(moved.from.clone(), 0);
        outcome
            .audit
            .push(event(pb::AuditEventType::RebalanceMoved, figures));
        outcome.moved = Some(moved);
    }
    outcome
}

/// Folds every fresh sample into the EWMAs; returns the smoothed (cpu, memory) of the nodes
/// that have a fresh sample.
fn smooth(memory: &mut Memory, state: &State, now: i64) -> BTreeMap<String, (f64, f64)> {
    let mut fresh = BTreeMap::new();
    for node in state.nodes() {
        let Some(sample) = node
            .pressure
            .filter(|p| now - p.sampled_at_unix_ms <= SAMPLE_MAX_AGE_MS)
        else {
            memory.ewma.remove(&node.name);
            continue;
        };
        let at = sample.sampled_at_unix_ms;
        let entry = memory
            .ewma
            .entry(node.name.clone())
            .or_insert((sample.cpu, sample.memory, at));
        if at > entry.2 {
            let alpha = 1.0 - (-((at - entry.2) as f64) / EWMA_WINDOW_MS).exp();
            entry.0 += alpha * (sample.cpu - entry.0);
            entry.1 += alpha * (sample.memory - entry.1);
            entry.2 = at;
        }
        fresh.insert(node.name.clone(), (entry.0, entry.1));
    }
    memory.ewma.retain(|node, _| fresh.contains_key(node));
    fresh
}

fn level((cpu, memory): (f64, f64)) -> f64 {
    cpu.max(memory)
}

/// The share of `capacity`'s `dimension` one replica of `service` takes: from its limits, or
/// the defaults when it declares none.
fn footprint(service: &pb::ServiceSpec, capacity: &pb::NodeResources, dimension: Dimension) -> f64 {
    let limits = service.limits.unwrap_or_default();
    let share = |limit: u64, capacity: u64| {
        (limit > 0 && capacity > 0).then(|| limit as f64 / capacity as f64)
    };
    match dimension {
        Dimension::Cpu => share(limits.cpu_millis, capacity.cpu_millis).unwrap_or(DEFAULT_CPU),
        Dimension::Memory => {
            share(limits.memory_bytes, capacity.memory_bytes).unwrap_or(DEFAULT_MEMORY)
        }
    }
}

/// The coolest destination that passes every gate for `replica`, or the reason none does
/// (the reason of the coolest node that failed).
#[allow(clippy::too_many_arguments)]
fn choose_destination(
    memory: &Memory,
    state: &State,
    pressure: &BTreeMap<String, (f64, f64)>,
    eligible: &[String],
    replica: &pb::ReplicaDesired,
    service: &pb::ServiceSpec,
    relief: f64,
    now: i64,
) -> Result<(String, f64), &'static str> {
    if memory
        .replica_moved_at
        .get(&replica.id)
        .is_some_and(|at| now - at < REPLICA_COOLDOWN_MS)
    {
        return Err("cooldown_replica");
    }
    if relief < RELIEF_FLOOR {
        return Err("relief_floor");
    }
    let siblings: BTreeSet<&str> = state
        .replicas_desired()
        .filter(|r| r.deployment == replica.deployment && r.service == replica.service)
        .map(|r| r.node.as_str())
        .collect();
    let mut destinations: Vec<(&String, f64)> = (pressure.iter())
        .filter(|(n, _)| *n != &replica.node && eligible.contains(n))
        .map(|(n, p)| (n, level(*p)))
        .collect();
    destinations.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));
    let mut first_reason = None;
    for (node, before) in destinations {
        let reason = if service.placement() == PlacementMode::Hosts && !service.hosts.contains(node)
            || service.placement() == PlacementMode::Spread && siblings.contains(node.as_str())
        {
            Some("anti_affinity")
        } else if memory
            .node_received_at
            .get(node)
            .is_some_and(|at| now - at < NODE_COOLDOWN_MS)
        {
            Some("cooldown_node")
        } else if before + relief >= DST_CAP {
            Some("dst_cap")
        } else {
            None
        };
        match reason {
            None => return Ok((node.clone(), before)),
            Some(reason) => {
                first_reason.get_or_insert(reason);
            }
        }
    }
    Err(first_reason.unwrap_or("no_eligible_dst"))
}

fn event(kind: pb::AuditEventType, payload: BTreeMap<String, String>) -> pb::AuditEvent {
    pb::AuditEvent {
        r#type: kind.into(),
        payload: payload.into_iter().collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::command::Kind;
    use crate::state::testkit::{Harness, add_node, apply_deployment, service};

    const CYCLE: i64 = 30_000;

    fn cluster() -> Harness {
        let mut h = Harness::initialised();
        for (i, name) in ["n2", "n3"].iter().enumerate() {
            h.ok(add_node(name, 20 + i as u64));
        }
        for name in ["n1", "n2", "n3"] {
            h.ok(Kind::SetNodeStatus(pb::SetNodeStatus {
                node: name.into(),
                status: pb::NodeStatus::Ready.into(),
                ..Default::default()
            }));
        }
        h
    }

    fn sample(h: &mut Harness, loads: &[(&str, f64, f64)]) {
        let now = h.now;
        h.ok(Kind::RecordHeartbeats(pb::RecordHeartbeats {
            heartbeats: loads
                .iter()
                .map(|(node, cpu, memory)| pb::NodeHeartbeat {
                    node: (*node).into(),
                    received_at_unix_ms: now,
                    pressure: Some(pb::NodePressure {
                        cpu: *cpu,
                        memory: *memory,
                        sampled_at_unix_ms: now,
                    }),
                    ..Default::default()
                })
                .collect(),
        }));
    }

    fn place(h: &mut Harness, services: Vec<pb::ServiceSpec>, on: &[(&str, &str, &str)]) {
        h.ok(apply_deployment(
            "shop",
            pb::DeploymentSpec {
                services,
                ..Default::default()
            },
        ));
        let replicas = on
            .iter()
            .map(|(id, svc, node)| pb::ReplicaDesired {
                id: (*id).into(),
                deployment: "shop".into(),
                service: (*svc).into(),
                index: id.rsplit('-').next().unwrap().parse().unwrap(),
                node: (*node).into(),
                ..Default::default()
            })
            .collect();
        h.ok_as(
            "n1",
            Kind::SchedulerBatch(pb::SchedulerBatch {
                upsert_replicas: replicas,
                ..Default::default()
            }),
        );
    }

    fn eligible() -> Vec<String> {
        ["n1", "n2", "n3"].map(String::from).to_vec()
    }

    fn reasons(c: &Cycle) -> Vec<String> {
        c.audit
            .iter()
            .filter(|e| e.r#type() == pb::AuditEventType::RebalanceSkipped)
            .map(|e| e.payload["reason"].clone())
            .collect()
    }

    #[test]
    fn a_node_hot_for_two_cycles_moves_one_stateless_replica_to_the_coolest() {
        let mut h = cluster();
        let db = pb::ServiceSpec {
            stateful: true,
            ..service("db", "db:1")
        };
        place(
            &mut h,
            vec![service("web", "web:1"), db],
            &[("shop-web-1", "web", "n1"), ("shop-db-1", "db", "n1")],
        );
        let mut memory = Memory::default();
        sample(
            &mut h,
            &[("n1", 0.95, 0.5), ("n2", 0.5, 0.3), ("n3", 0.2, 0.2)],
        );
        let first = cycle(&mut memory, &h.state, &eligible(), h.now);
        assert_eq!(first, Cycle::default(), "one hot cycle is not enough");

        h.now += CYCLE;
        sample(
            &mut h,
            &[("n1", 0.95, 0.5), ("n2", 0.5, 0.3), ("n3", 0.2, 0.2)],
        );
        let second = cycle(&mut memory, &h.state, &eligible(), h.now);
        assert_eq!(
            second.moved,
            Some(Move {
                replica: "shop-web-1".into(),
                from: "n1".into(),
                to: "n3".into()
            }),
            "the stateful db is never a candidate"
        );
        let moved = &second.audit[0];
        assert_eq!(moved.r#type(), pb::AuditEventType::RebalanceMoved);
        assert_eq!(moved.payload["dominant"], "cpu");
        assert_eq!(moved.payload["relief"], "0.120");

        h.now += CYCLE;
        sample(
            &mut h,
            &[("n1", 0.95, 0.5), ("n2", 0.5, 0.3), ("n3", 0.2, 0.2)],
        );
        let third = cycle(&mut memory, &h.state, &eligible(), h.now);
        assert_eq!(third.moved, None, "the streak starts again after a move");
    }

    #[test]
    fn gates_turn_candidates_down_with_their_reasons() {
        let mut h = cluster();
        let tiny = pb::ServiceSpec {
            limits: Some(pb::NodeResources {
                cpu_millis: 10,
                memory_bytes: 0,
            }),
            ..service("tiny", "tiny:1")
        };
        let capacity = pb::NodeResources {
            cpu_millis: 1_000,
            memory_bytes: 1 << 30,
        };
        let node = h.state.node("n1").unwrap().clone();
        h.ok(Kind::UpdateNodeInfo(pb::UpdateNodeInfo {
            node: node.name,
            api_address: node.api_address,
            raft_address: node.raft_address,
            capacity: Some(capacity),
            ..Default::default()
        }));
        place(
            &mut h,
            vec![service("web", "web:1"), tiny],
            &[
                ("shop-web-1", "web", "n1"),
                ("shop-web-2", "web", "n3"),
                ("shop-tiny-1", "tiny", "n1"),
            ],
        );
        let mut memory = Memory::default();
        let mut c = Cycle::default();
        for _ in 0..HOT_CYCLES {
            sample(
                &mut h,
                &[("n1", 0.9, 0.1), ("n2", 0.7, 0.1), ("n3", 0.1, 0.1)],
            );
            c = cycle(&mut memory, &h.state, &eligible(), h.now);
            h.now += CYCLE;
        }
        assert_eq!(c.moved, None);
        let mut found = reasons(&c);
        found.sort();
        // web: n3 has a sibling (anti_affinity), n2 would reach 0.82 (dst_cap) — the coolest
        // refusal is reported; tiny: 1% of a core is below the relief floor.
        assert_eq!(found, ["anti_affinity", "relief_floor"]);
    }

    #[test]
    fn without_fresh_samples_nothing_happens() {
        let mut h = cluster();
        place(
            &mut h,
            vec![service("web", "web:1")],
            &[("shop-web-1", "web", "n1")],
        );
        sample(&mut h, &[("n1", 0.99, 0.99), ("n2", 0.1, 0.1)]);
        let mut memory = Memory::default();
        h.now += SAMPLE_MAX_AGE_MS + 1;
        for _ in 0..3 {
            assert_eq!(
                cycle(&mut memory, &h.state, &eligible(), h.now),
                Cycle::default()
            );
            h.now += CYCLE;
        }
    }
}
