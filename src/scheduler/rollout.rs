//! The rollout engine: one step of converging a service's replicas to a target spec, as a
//! pure function (SPEC §5.3).
//!
//! Given the replicas (each known to be at the target spec or not, with its observed state),
//! the desired count, the update policy and the rollout record, [`step`] says which replicas
//! to remove, how many to create, and how the rollout progressed. While old replicas are
//! replaced it keeps the invariant: start-first never lets fewer than `want` replicas be
//! healthy and never stops a healthy old replica before its replacement has been running for
//! `monitor`; stop-first lets at most `parallelism` go. A replacement that fails or is not
//! ready within `step_timeout` fails the step: `rollback` aborts the rollout and marks it
//! rolled back (the caller then converges to the previous spec), `pause` holds it. Scaling
//! without a spec change creates or removes replicas at once.
//!
//! With `delay`, a replacement is started only that long after the previous one became ready.
//!
//! Placement is not decided here (the caller picks nodes), and nothing here reads a clock.

use std::collections::BTreeMap;

use crate::proto::v1 as pb;
use crate::proto::v1::{ReplicaState, RolloutState};

/// One replica as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Replica id.
    pub id: String,
    /// Replica index (higher = newer; removed first when scaling down).
    pub index: u64,
    /// True when it runs the target spec.
    pub current: bool,
    /// Its spec hash.
    pub spec_hash: String,
    /// Its image.
    pub image: String,
    /// Last observed state (pending before the first report).
    pub state: ReplicaState,
    /// Since when it has been observed running.
    pub running_since: Option<i64>,
    /// When the scheduler created it.
    pub created_at: i64,
}

impl Candidate {
    /// The engine's view of a desired replica and its observation.
    pub fn of(
        desired: &pb::ReplicaDesired,
        observed: Option<&pb::ReplicaObserved>,
        target_hash: &str,
    ) -> Candidate {
        let state = observed.map_or(ReplicaState::Pending, pb::ReplicaObserved::state);
        let running_since = observed
            .filter(|o| o.state() == ReplicaState::Running)
            .map(|o| o.observed_at_unix_ms);
        Candidate {
            id: desired.id.clone(),
            index: desired.index,
            current: desired.spec_hash == target_hash,
            spec_hash: desired.spec_hash.clone(),
            image: desired.image.clone(),
            state,
            running_since,
            created_at: desired.created_at_unix_ms,
        }
    }

    fn healthy(&self) -> bool {
        self.state == ReplicaState::Running
    }
}

/// What [`step`] decides from.
#[derive(Debug)]
pub struct Input<'a> {
    /// Desired replica count.
    pub want: usize,
    /// Update policy.
    pub policy: &'a pb::UpdatePolicy,
    /// Every replica of the service.
    pub replicas: &'a [Candidate],
    /// The rollout record of the revision being converged to, if one exists.
    pub rollout: Option<&'a pb::Rollout>,
    /// Now (Unix ms).
    pub now: i64,
}

/// The decision of one step.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// Replicas to remove.
    pub remove: Vec<String>,
    /// New replicas to create at the target spec.
    pub create: usize,
    /// True when the service differs from its target (a rollout is due or running).
    pub changing: bool,
    /// How the rollout stands after this step (none when no rollout is involved).
    pub rollout: Option<Progress>,
    /// When a monitor period or step timeout runs out (Unix ms).
    pub wake_at: Option<i64>,
    /// Set when the invariant kept healthy old replicas running that the rollout wants gone.
    pub hold: Option<Hold>,
}

/// The invariant blocking a step: `held_back` healthy old replicas stay because only
/// `healthy` replicas serve and at least `min_healthy` must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// Healthy old replicas kept.
    pub held_back: usize,
    /// Healthy replicas serving (old, and new ones past their monitor period).
    pub healthy: usize,
    /// The least the invariant allows.
    pub min_healthy: usize,
}

/// A rollout's progress as decided by one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// in_progress, completed or aborted.
    pub state: RolloutState,
    /// Steps done.
    pub steps_done: u32,
    /// Steps in total.
    pub steps_total: u32,
    /// Why it aborted or is held.
    pub reason: String,
    /// Context of the reason.
    pub details: BTreeMap<String, String>,
    /// Held by `failure_action: pause`.
    pub paused: bool,
    /// The previous spec was restored.
    pub rolled_back: bool,
}

impl Progress {
    /// Writes the progress into a record, touching its times only when something changed.
    pub fn apply_to(&self, record: &mut pb::Rollout, now: i64) {
        let before = record.clone();
        record.state = self.state.into();
        record.steps_done = self.steps_done;
        record.steps_total = self.steps_total;
        record.paused = self.paused;
        record.rolled_back = self.rolled_back;
        if !self.reason.is_empty() {
            record.reason.clone_from(&self.reason);
        }
        for (key, value) in &self.details {
            record.details.insert(key.clone(), value.clone());
        }
        if *record != before {
            record.updated_at_unix_ms = now;
            if self.state != RolloutState::InProgress && record.finished_at_unix_ms == 0 {
                record.finished_at_unix_ms = now;
            }
        }
    }
}

const DEFAULT_STEP_TIMEOUT_MS: u64 = 60_000;

/// One step of converging a service (see the module documentation).
pub fn step(input: &Input) -> Step {
    let policy = input.policy;
    let parallelism = (policy.parallelism.max(1)) as usize;
    let monitor = i64::try_from(policy.monitor_ms).unwrap_or(i64::MAX);
    let step_timeout = i64::try_from(match policy.step_timeout_ms {
        0 => DEFAULT_STEP_TIMEOUT_MS,
        ms => ms,
    })
    .unwrap_or(i64::MAX);
    let start_first = policy.order() != pb::UpdateOrder::StopFirst;
    let now = input.now;
    let (current, old): (Vec<&Candidate>, Vec<&Candidate>) =
        input.replicas.iter().partition(|c| c.current);
    let replacing = !old.is_empty();
    let changing = replacing || current.len() != input.want;
    let record = input.rollout;
    let terminal = record.is_some_and(|r| r.state() != RolloutState::InProgress);
    let mut decision = Step {
        changing,
        ..Step::default()
    };
    if record.is_some_and(|r| r.paused) {
        return decision;
    }

    let ready = |c: &Candidate| c.running_since.is_some_and(|since| now - since >= monitor);
    let mut wake = |at: i64| {
        decision.wake_at = Some(decision.wake_at.map_or(at, |w: i64| w.min(at)));
    };
    for c in &current {
        if let Some(since) = c.running_since.filter(|since| now - since < monitor) {
            wake(since + monitor);
        }
    }
    let tracks_steps = replacing && !terminal;
    if tracks_steps {
        let failed = current.iter().find(|c| {
            c.state == ReplicaState::Failed || (!ready(c) && now - c.created_at >= step_timeout)
        });
        if let Some(failed) = failed {
            let reason = if failed.state == ReplicaState::Failed {
                "step_failed"
            } else {
                "step_timeout"
            };
            let rollback = policy.failure_action() != pb::FailureAction::Pause;
            decision.rollout = Some(Progress {
                state: if rollback {
                    RolloutState::Aborted
                } else {
                    RolloutState::InProgress
                },
                steps_done: 0,
                steps_total: steps_total(input.want, parallelism),
                reason: reason.to_owned(),
                details: BTreeMap::from([("replica".to_owned(), failed.id.clone())]),
                paused: !rollback,
                rolled_back: rollback,
            });
            return decision;
        }
        for c in current.iter().filter(|c| !ready(c)) {
            wake(c.created_at + step_timeout);
        }
    }

    // Removals: old replicas while the invariant allows, unhealthy ones first.
    let ready_new = current.iter().filter(|c| ready(c)).count();
    let mut healthy_total = ready_new + old.iter().filter(|c| c.healthy()).count();
    let min_healthy = if start_first {
        input.want
    } else {
        input.want.saturating_sub(parallelism)
    };
    let mut old_sorted = old.clone();
    old_sorted.sort_by_key(|c| (c.healthy(), std::cmp::Reverse(c.index)));
    let mut old_kept = old.len();
    let mut held_back = 0;
    for c in old_sorted {
        if !c.healthy() {
            decision.remove.push(c.id.clone());
            old_kept -= 1;
        } else if healthy_total > min_healthy {
            decision.remove.push(c.id.clone());
            healthy_total -= 1;
            old_kept -= 1;
        } else {
            held_back += 1;
        }
    }
    if held_back > 0 && tracks_steps {
        decision.hold = Some(Hold {
            held_back,
            healthy: healthy_total,
            min_healthy,
        });
    }
    // Scaling down: the surplus at the target spec, those not running and the newest first.
    let mut current_sorted = current.clone();
    current_sorted.sort_by_key(|c| (c.healthy(), std::cmp::Reverse(c.index)));
    let surplus = current.len().saturating_sub(input.want);
    for c in current_sorted.into_iter().take(surplus) {
        decision.remove.push(c.id.clone());
    }
    let current_kept = current.len() - surplus;

    // Creation: everything missing at once when nothing is replaced; otherwise at most
    // `parallelism` replacements in flight, within the surge the order allows.
    let missing = input.want.saturating_sub(current_kept);
    // `delay` separates steps: the next replacement waits that long after the latest one
    // became ready.
    let delay = i64::try_from(policy.delay_ms).unwrap_or(i64::MAX);
    let next_step_at = (current.iter())
        .filter_map(|c| c.running_since.filter(|_| ready(c)))
        .map(|since| since.saturating_add(monitor).saturating_add(delay))
        .max()
        .filter(|_| delay > 0);
    decision.create = if replacing && next_step_at.is_some_and(|at| now < at) {
        wake(next_step_at.unwrap_or(now));
        0
    } else if replacing {
        let in_flight = current
            .iter()
            .filter(|c| !ready(c) && c.state != ReplicaState::Failed)
            .count();
        let max_total = input.want + if start_first { parallelism } else { 0 };
        missing
            .min(parallelism.saturating_sub(in_flight))
            .min(max_total.saturating_sub(current_kept + old_kept))
    } else {
        missing
    };

    let in_progress = record.is_some_and(|r| r.state() == RolloutState::InProgress);
    if (changing && !terminal) || in_progress {
        let converged =
            old.is_empty() && current.len() == input.want && current.iter().all(|c| ready(c));
        decision.rollout = Some(Progress {
            state: if converged {
                RolloutState::Completed
            } else {
                RolloutState::InProgress
            },
            steps_done: u32::try_from(ready_new.min(input.want) / parallelism).unwrap_or(0),
            steps_total: steps_total(input.want, parallelism),
            reason: String::new(),
            details: BTreeMap::new(),
            paused: false,
            rolled_back: false,
        });
    }
    decision
}

fn steps_total(want: usize, parallelism: usize) -> u32 {
    u32::try_from(want.div_ceil(parallelism).max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONITOR: i64 = 5_000;

    fn policy(order: pb::UpdateOrder, action: pb::FailureAction) -> pb::UpdatePolicy {
        pb::UpdatePolicy {
            parallelism: 1,
            order: order.into(),
            monitor_ms: MONITOR as u64,
            step_timeout_ms: 60_000,
            failure_action: action.into(),
            delay_ms: 0,
        }
    }

    fn replica(
        index: u64,
        current: bool,
        state: ReplicaState,
        running_since: Option<i64>,
    ) -> Candidate {
        Candidate {
            id: format!("shop-web-{index}"),
            index,
            current,
            spec_hash: if current { "new" } else { "old" }.into(),
            image: if current { "web:2" } else { "web:1" }.into(),
            state,
            running_since,
            created_at: 0,
        }
    }

    fn healthy_old(index: u64) -> Candidate {
        replica(index, false, ReplicaState::Running, Some(0))
    }

    fn run(want: usize, policy: &pb::UpdatePolicy, replicas: &[Candidate], now: i64) -> Step {
        step(&Input {
            want,
            policy,
            replicas,
            rollout: None,
            now,
        })
    }

    #[test]
    fn start_first_adds_one_replacement_and_keeps_every_old_replica() {
        let p = policy(pb::UpdateOrder::StartFirst, pb::FailureAction::Rollback);
        let replicas = [healthy_old(1), healthy_old(2), healthy_old(3)];
        let s = run(3, &p, &replicas, 10_000);
        assert_eq!(s.create, 1);
        assert!(s.remove.is_empty());
        assert!(s.changing);
        assert_eq!(s.rollout.unwrap().state, RolloutState::InProgress);
    }

    #[test]
    fn an_old_replica_goes_only_after_its_replacement_ran_for_the_monitor_period() {
        let p = policy(pb::UpdateOrder::StartFirst, pb::FailureAction::Rollback);
        let young = replica(4, true, ReplicaState::Running, Some(10_000));
        let replicas = [
            healthy_old(1),
            healthy_old(2),
            healthy_old(3),
            young.clone(),
        ];
        let early = run(3, &p, &replicas, 12_000);
        assert!(early.remove.is_empty(), "{early:?}");
        assert_eq!(early.create, 0, "one replacement in flight at a time");
        assert_eq!(early.wake_at, Some(15_000));
        let later = run(3, &p, &replicas, 15_000);
        assert_eq!(
            later.remove,
            vec!["shop-web-3".to_owned()],
            "newest old replica first"
        );
        assert_eq!(later.create, 1, "the next replacement starts");
    }

    #[test]
    fn the_rollout_completes_when_only_ready_target_replicas_remain() {
        let p = policy(pb::UpdateOrder::StartFirst, pb::FailureAction::Rollback);
        let replicas: Vec<_> = (4..=6)
            .map(|i| replica(i, true, ReplicaState::Running, Some(0)))
            .collect();
        let record = pb::Rollout {
            state: RolloutState::InProgress.into(),
            ..Default::default()
        };
        let s = step(&Input {
            want: 3,
            policy: &p,
            replicas: &replicas,
            rollout: Some(&record),
            now: 10_000,
        });
        assert_eq!(s.rollout.unwrap().state, RolloutState::Completed);
        assert!(!s.changing);
    }

    #[test]
    fn unhealthy_old_replicas_are_removed_without_waiting() {
        let p = policy(pb::UpdateOrder::StartFirst, pb::FailureAction::Rollback);
        let replicas = [
            healthy_old(1),
            replica(2, false, ReplicaState::Failed, None),
        ];
        let s = run(2, &p, &replicas, 10_000);
        assert_eq!(s.remove, vec!["shop-web-2".to_owned()]);
        assert_eq!(s.create, 1);
    }

    #[test]
    fn stop_first_stops_one_old_replica_before_starting_its_replacement() {
        let p = policy(pb::UpdateOrder::StopFirst, pb::FailureAction::Rollback);
        let replicas = [healthy_old(1), healthy_old(2)];
        let s = run(2, &p, &replicas, 10_000);
        assert_eq!(s.remove, vec!["shop-web-2".to_owned()]);
        assert_eq!(s.create, 1);
    }

    #[test]
    fn a_failed_replacement_aborts_and_rolls_back() {
        let p = policy(pb::UpdateOrder::StartFirst, pb::FailureAction::Rollback);
        let replicas = [
            healthy_old(1),
            healthy_old(2),
            replica(3, true, ReplicaState::Failed, None),
        ];
        let s = run(2, &p, &replicas, 10_000);
        let progress = s.rollout.unwrap();
        assert_eq!(progress.state, RolloutState::Aborted);
        assert!(progress.rolled_back);
        assert_eq!(progress.reason, "step_failed");
        assert!(
            s.remove.is_empty() && s.create == 0,
            "the old replicas keep serving"
        );
    }

    #[test]
    fn a_replacement_not_ready_within_the_step_timeout_fails_the_step() {
        let p = policy(pb::UpdateOrder::StartFirst, pb::FailureAction::Pause);
        let replicas = [
            healthy_old(1),
            replica(2, true, ReplicaState::Pending, None),
        ];
        let before = run(1, &p, &replicas, 59_999);
        assert_eq!(before.wake_at, Some(60_000));
        assert!(before.rollout.as_ref().is_some_and(|r| !r.paused));
        let after = run(1, &p, &replicas, 60_000);
        let progress = after.rollout.unwrap();
        assert!(progress.paused && !progress.rolled_back);
        assert_eq!(progress.reason, "step_timeout");
        assert_eq!(progress.state, RolloutState::InProgress);
    }

    #[test]
    fn a_paused_rollout_holds_every_replica() {
        let p = policy(pb::UpdateOrder::StartFirst, pb::FailureAction::Pause);
        let record = pb::Rollout {
            state: RolloutState::InProgress.into(),
            paused: true,
            ..Default::default()
        };
        let replicas = [healthy_old(1), replica(2, true, ReplicaState::Failed, None)];
        let s = step(&Input {
            want: 1,
            policy: &p,
            replicas: &replicas,
            rollout: Some(&record),
            now: 100_000,
        });
        assert_eq!((s.remove.len(), s.create, s.rollout), (0, 0, None));
    }

    #[test]
    fn scaling_without_a_spec_change_happens_at_once() {
        let p = policy(pb::UpdateOrder::StartFirst, pb::FailureAction::Rollback);
        let one = [replica(1, true, ReplicaState::Running, Some(0))];
        assert_eq!(run(6, &p, &one, 10_000).create, 5);
        let six: Vec<_> = (1..=6)
            .map(|i| replica(i, true, ReplicaState::Running, Some(0)))
            .collect();
        let down = run(2, &p, &six, 10_000);
        assert_eq!(down.create, 0);
        let mut removed = down.remove.clone();
        removed.sort();
        assert_eq!(
            removed,
            ["shop-web-3", "shop-web-4", "shop-web-5", "shop-web-6"]
        );
    }

    #[test]
    fn the_invariant_holds_through_a_whole_start_first_rollout() {
        // Simulate: each created replica becomes running at once and ready after the monitor.
        let p = policy(pb::UpdateOrder::StartFirst, pb::FailureAction::Rollback);
        let want = 4;
        let mut replicas: Vec<Candidate> = (1..=4).map(healthy_old).collect();
        let mut next = 5;
        let mut now = 10_000;
        for _ in 0..50 {
            let s = run(want, &p, &replicas, now);
            replicas.retain(|c| !s.remove.contains(&c.id));
            let healthy = replicas
                .iter()
                .filter(|c| !c.current || c.running_since.is_some_and(|t| now - t >= MONITOR))
                .filter(|c| c.healthy())
                .count();
            assert!(
                healthy >= want,
                "only {healthy} healthy at {now}: {replicas:?}"
            );
            for _ in 0..s.create {
                replicas.push(replica(next, true, ReplicaState::Running, Some(now)));
                next += 1;
            }
            if !s.changing {
                break;
            }
            now += 1_000;
        }
        assert!(
            replicas.iter().all(|c| c.current) && replicas.len() == want,
            "{replicas:?}"
        );
    }

    #[test]
    fn a_healthy_old_replica_kept_for_the_invariant_is_reported_as_a_hold() {
        let p = policy(pb::UpdateOrder::StartFirst, pb::FailureAction::Rollback);
        let starting = replica(3, true, ReplicaState::Running, Some(10_000));
        let s = run(
            2,
            &p,
            &[healthy_old(1), healthy_old(2), starting.clone()],
            12_000,
        );
        assert!(s.remove.is_empty());
        assert_eq!(
            s.hold,
            Some(Hold {
                held_back: 2,
                healthy: 2,
                min_healthy: 2
            })
        );
        let unrelated = run(2, &p, &[healthy_old(1), healthy_old(2)], 12_000);
        assert_eq!(unrelated.create, 1);
        assert_eq!(
            unrelated.hold.map(|h| h.held_back),
            Some(2),
            "nothing replaced yet: both stay"
        );
        let current = [
            replica(3, true, ReplicaState::Running, Some(0)),
            replica(4, true, ReplicaState::Running, Some(0)),
        ];
        assert_eq!(
            run(2, &p, &current, 12_000).hold,
            None,
            "nothing old: no hold"
        );
    }

    #[test]
    fn delay_spaces_the_steps() {
        let p = pb::UpdatePolicy {
            delay_ms: 10_000,
            ..policy(pb::UpdateOrder::StartFirst, pb::FailureAction::Rollback)
        };
        // Replica 3 replaced replica 1 and became ready at 5_000 (+ monitor 5_000).
        let replicas = [
            healthy_old(2),
            replica(3, true, ReplicaState::Running, Some(0)),
        ];
        let waiting = run(2, &p, &replicas, 12_000);
        assert_eq!(waiting.create, 0, "within the delay");
        assert_eq!(waiting.wake_at, Some(15_000));
        assert_eq!(run(2, &p, &replicas, 15_000).create, 1, "delay over");
    }
}
