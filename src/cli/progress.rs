//! Convergence of an apply (or rollback) as a function of values: given the revision it
//! committed and a `Deploy.Status` answer for the deployment, which replicas it changed, which
//! of them reached a terminal state, what is still pending and whether it is over — plus the
//! text that shows it (a frame redrawn in place on a terminal, plain lines for the changes
//! between two assessments, a final summary).
//!
//! The rules (SPEC §5.3, the deployments issue): the replicas an apply changed are the
//! deployment's replicas whose desired record is at the new revision with the service's
//! current spec hash, plus the replicas it removes (old specs, removed services, scale-down),
//! which must disappear. A changed replica is terminal when it is `running` or `failed` (an
//! observation of another spec hash does not count: it is the container being replaced). A
//! service whose rollout of the new revision aborted, or is held by `failure_action: pause`,
//! is over and failed. Until the leader's scheduler has acted on the revision (the deployment
//! is still `pending` with `reason=converging`), nothing is known. The apply converged when
//! nothing is pending and nothing failed.
//!
//! This module must not call the daemon, read clocks or print: [`super::follow`] does the I/O.

use std::collections::BTreeMap;

use serde::Serialize;

use super::deploy_view::{ReplicaView, RolloutView};
use super::output::table;
use super::view::key_values;
use crate::proto::v1 as pb;

/// The scheduler's status reason right after a commit, before it acted on the revision.
const CONVERGING: &str = "converging";

/// What one apply or rollback committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goal {
    /// Deployment name.
    pub deployment: String,
    /// The revision committed.
    pub revision: u64,
}

/// Where one replica stands with respect to the goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Changed by the apply, not terminal yet.
    Waiting,
    /// Changed by the apply and running.
    Running,
    /// Changed by the apply and failed.
    Failed,
    /// Replaced or removed by the apply: done when it is gone.
    Leaving,
}

/// One replica of the deployment and its phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The replica.
    #[serde(flatten)]
    pub replica: ReplicaView,
    /// Its phase.
    pub phase: Phase,
}

/// Whether following can stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Something is still pending.
    InProgress,
    /// Every changed replica runs and every replica to remove is gone.
    Converged,
    /// Nothing is pending any more, and something failed.
    Failed,
    /// Another apply or rollback replaced the revision before it converged.
    Superseded,
    /// The deployment was deleted before it converged.
    Deleted,
}

impl Outcome {
    /// True when following can stop.
    pub fn is_final(self) -> bool {
        self != Outcome::InProgress
    }

    /// The name printed for it (`converged`, `failed`, …).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::InProgress => "converging",
            Outcome::Converged => "converged",
            Outcome::Failed => "failed",
            Outcome::Superseded => "superseded",
            Outcome::Deleted => "deleted",
        }
    }
}

/// One assessment of an apply's convergence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// Whether it is over, and how (printed by the command, which knows about time-outs).
    #[serde(skip)]
    pub outcome: Outcome,
    /// The deployment's replicas, by id.
    pub replicas: Vec<Row>,
    /// Rollouts of the goal's revision.
    pub rollouts: Vec<RolloutView>,
    /// What is not terminal yet, one phrase each.
    pub pending: Vec<String>,
    /// What failed, one phrase each.
    pub failures: Vec<String>,
    /// The deployment's revision in the assessed status (0 when it is gone).
    pub revision: u64,
}

impl Progress {
    fn over(outcome: Outcome, revision: u64) -> Progress {
        Progress {
            outcome,
            replicas: Vec::new(),
            rollouts: Vec::new(),
            pending: Vec::new(),
            failures: Vec::new(),
            revision,
        }
    }

    /// Nothing assessed yet (the state before the first answer).
    pub fn empty() -> Progress {
        Progress::over(Outcome::InProgress, 0)
    }
}

/// `replica on node`.
fn at(r: &ReplicaView) -> String {
    format!("{} on {}", r.id, r.node)
}

/// `state`, `state (code: message)` or `not reported yet`.
fn condition(r: &ReplicaView) -> String {
    let Some(state) = &r.state else {
        return "not reported yet".to_owned();
    };
    match (&r.code, &r.message) {
        (None, None) => state.clone(),
        _ => format!("{state} ({})", r.explanation()),
    }
}

fn phase_of(goal: &Goal, service: Option<&pb::ServiceSummary>, replica: &pb::Replica) -> Phase {
    let Some(desired) = &replica.desired else {
        return Phase::Leaving;
    };
    let current = service
        .is_some_and(|s| desired.spec_hash == s.spec_hash && desired.revision >= goal.revision);
    if !current {
        return Phase::Leaving;
    }
    // An observation of another spec is the old container, not this replica's outcome.
    let observed = replica
        .observed
        .as_ref()
        .filter(|o| o.spec_hash.is_empty() || o.spec_hash == desired.spec_hash);
    match observed.map(pb::ReplicaObserved::state) {
        Some(pb::ReplicaState::Running) => Phase::Running,
        Some(pb::ReplicaState::Failed) => Phase::Failed,
        _ => Phase::Waiting,
    }
}

/// Where the apply that committed `goal` stands, from a status answer that covers its
/// deployment.
pub fn assess(goal: &Goal, status: &pb::DeployStatusResponse) -> Progress {
    let Some(deployment) = status
        .deployments
        .iter()
        .find(|d| d.name == goal.deployment)
    else {
        return Progress::over(Outcome::Deleted, 0);
    };
    if deployment.revision > goal.revision {
        return Progress::over(Outcome::Superseded, deployment.revision);
    }
    let services: BTreeMap<&str, &pb::ServiceSummary> = deployment
        .services
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let rows: Vec<Row> = status
        .replicas
        .iter()
        .filter(|r| {
            r.desired
                .as_ref()
                .is_some_and(|d| d.deployment == goal.deployment)
        })
        .map(|r| {
            let service = r
                .desired
                .as_ref()
                .and_then(|d| services.get(d.service.as_str()).copied());
            Row {
                replica: ReplicaView::from(r),
                phase: phase_of(goal, service, r),
            }
        })
        .collect();
    let rollouts: Vec<&pb::Rollout> = deployment
        .services
        .iter()
        .filter_map(|s| s.rollout.as_ref())
        .filter(|r| r.to_revision == goal.revision)
        .collect();
    let mut progress = Progress {
        outcome: Outcome::InProgress,
        replicas: rows,
        rollouts: rollouts.iter().map(|r| RolloutView::from(*r)).collect(),
        pending: Vec::new(),
        failures: Vec::new(),
        revision: deployment.revision,
    };
    let details = &deployment.status_details;
    let pending_status = deployment.status() == pb::DeploymentStatus::Pending;
    if deployment.revision < goal.revision {
        progress.pending.push(format!(
            "this node has not applied revision {} yet",
            goal.revision
        ));
        return progress;
    }
    if pending_status && details.get("reason").map(String::as_str) == Some(CONVERGING) {
        // Which replicas stay, go or come is the scheduler's answer, not known yet.
        for row in &mut progress.replicas {
            row.phase = Phase::Waiting;
        }
        progress.pending.push(format!(
            "the scheduler has not acted on revision {} yet",
            goal.revision
        ));
        return progress;
    }
    if pending_status {
        progress.pending.push(format!(
            "deployment {} is pending: {}",
            goal.deployment,
            key_values(details)
        ));
    }
    for service in &deployment.services {
        assess_service(goal, service, &mut progress);
    }
    for row in &progress.replicas {
        let known = services.contains_key(row.replica.service.as_str());
        if !known {
            progress.pending.push(format!(
                "{}: to be removed (service {} removed)",
                at(&row.replica),
                row.replica.service
            ));
        }
    }
    progress.outcome = match (progress.pending.is_empty(), progress.failures.is_empty()) {
        (false, _) => Outcome::InProgress,
        (true, true) => Outcome::Converged,
        (true, false) => Outcome::Failed,
    };
    progress
}

fn assess_service(goal: &Goal, service: &pb::ServiceSummary, progress: &mut Progress) {
    let name = service.name.as_str();
    if let Some(rollout) = service
        .rollout
        .as_ref()
        .filter(|r| r.to_revision == goal.revision)
    {
        let reason = || {
            let details = &rollout.details;
            let mut text = if rollout.reason.is_empty() {
                "no reason given".to_owned()
            } else {
                rollout.reason.clone()
            };
            if !details.is_empty() {
                text.push_str(&format!(" ({})", key_values(details)));
            }
            text
        };
        match rollout.state() {
            pb::RolloutState::Aborted => {
                let restored = if rollout.rolled_back {
                    "; the previous spec was restored"
                } else {
                    ""
                };
                progress
                    .failures
                    .push(format!("rollout of {name} aborted: {}{restored}", reason()));
                return;
            }
            pb::RolloutState::InProgress if rollout.paused => {
                progress.failures.push(format!(
                    "rollout of {name} is paused (failure_action: pause): {}",
                    reason()
                ));
                return;
            }
            pb::RolloutState::InProgress => progress.pending.push(format!(
                "rollout of {name}: step {}/{}",
                rollout.steps_done, rollout.steps_total
            )),
            _ => {}
        }
    }
    let of_service = || {
        progress
            .replicas
            .iter()
            .filter(move |r| r.replica.service == name)
    };
    let current = of_service().filter(|r| r.phase != Phase::Leaving).count();
    let mut pending = Vec::new();
    let mut failures = Vec::new();
    for row in of_service() {
        let r = &row.replica;
        match row.phase {
            Phase::Waiting => pending.push(format!("{}: {}", at(r), condition(r))),
            Phase::Failed => failures.push(format!("{}: {}", at(r), condition(r))),
            Phase::Leaving => pending.push(format!("{}: to be replaced (older spec)", at(r))),
            Phase::Running => {}
        }
    }
    let desired = service.desired_replicas as usize;
    if service.placement() != pb::PlacementMode::Global && current != desired {
        pending.push(format!(
            "{name}: {current} of {desired} replicas at revision {}",
            goal.revision
        ));
    }
    progress.pending.extend(pending);
    progress.failures.extend(failures);
}

// ---- text ---------------------------------------------------------------------------------

/// The frame a terminal shows while following: the replicas, then the rollouts and what is
/// pending.
pub fn frame(goal: &Goal, progress: &Progress) -> String {
    let mut out = format!(
        "{} revision {}: {}\n",
        goal.deployment,
        goal.revision,
        progress.outcome.name()
    );
    if !progress.replicas.is_empty() {
        let rows: Vec<Vec<String>> = progress
            .replicas
            .iter()
            .map(|row| {
                let r = &row.replica;
                let mut state = r.state.clone().unwrap_or_else(|| "-".to_owned());
                if row.phase == Phase::Leaving {
                    state.push_str(" (leaving)");
                }
                vec![r.id.clone(), r.node.clone(), state, r.explanation()]
            })
            .collect();
        out.push_str(&table(&["REPLICA", "NODE", "STATE", "MESSAGE"], &rows));
    }
    for line in &progress.pending {
        out.push_str(&format!("  waiting: {line}\n"));
    }
    out
}

/// One line per change between two assessments, for output that is not a terminal.
pub fn changes(before: &Progress, after: &Progress) -> Vec<String> {
    let mut lines = Vec::new();
    let earlier: BTreeMap<&str, &Row> = before
        .replicas
        .iter()
        .map(|r| (r.replica.id.as_str(), r))
        .collect();
    for row in &after.replicas {
        let r = &row.replica;
        let changed = earlier.get(r.id.as_str()).is_none_or(|old| {
            (
                &old.replica.state,
                &old.replica.code,
                &old.replica.message,
                old.phase,
            ) != (&r.state, &r.code, &r.message, row.phase)
        });
        if changed {
            let leaving = if row.phase == Phase::Leaving {
                ", to be removed"
            } else {
                ""
            };
            lines.push(format!("{}: {}{leaving}", at(r), condition(r)));
        }
    }
    let now: Vec<&str> = after
        .replicas
        .iter()
        .map(|r| r.replica.id.as_str())
        .collect();
    for row in &before.replicas {
        if !now.contains(&row.replica.id.as_str()) {
            lines.push(format!("{}: removed", at(&row.replica)));
        }
    }
    for rollout in &after.rollouts {
        let old = before
            .rollouts
            .iter()
            .find(|r| r.service == rollout.service);
        let key = |r: &RolloutView| (r.state.clone(), r.steps_done, r.paused);
        if old.is_none_or(|old| key(old) != key(rollout)) {
            lines.push(format!(
                "rollout of {}: {}{}, step {}/{}",
                rollout.service,
                rollout.state,
                if rollout.paused { " (paused)" } else { "" },
                rollout.steps_done,
                rollout.steps_total
            ));
        }
    }
    lines
}

/// The closing text of a follow that ended with `progress.outcome`.
pub fn summary(goal: &Goal, progress: &Progress) -> String {
    let name = format!("{} revision {}", goal.deployment, goal.revision);
    match progress.outcome {
        Outcome::Converged => {
            let running = progress
                .replicas
                .iter()
                .filter(|r| r.phase == Phase::Running)
                .count();
            format!(
                "{name} converged: {running} replica{} running\n",
                if running == 1 { "" } else { "s" }
            )
        }
        Outcome::Failed => {
            let mut text = format!("{name} did not converge:\n");
            for failure in &progress.failures {
                text.push_str(&format!("  {failure}\n"));
            }
            text
        }
        Outcome::Superseded => format!(
            "{} moved on to revision {} (another apply or rollback) before {name} converged\n",
            goal.deployment, progress.revision
        ),
        Outcome::Deleted => format!("{} was deleted before {name} converged\n", goal.deployment),
        Outcome::InProgress => {
            let mut text = format!("{name} has not converged; still waiting for:\n");
            for line in &progress.pending {
                text.push_str(&format!("  {line}\n"));
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "new-spec";
    const OLD: &str = "old-spec";

    fn goal() -> Goal {
        Goal {
            deployment: "shop".into(),
            revision: 3,
        }
    }

    fn service(name: &str, desired: u32) -> pb::ServiceSummary {
        pb::ServiceSummary {
            name: name.into(),
            placement: pb::PlacementMode::Spread.into(),
            desired_replicas: desired,
            spec_hash: NEW.into(),
            ..Default::default()
        }
    }

    fn replica(
        id: &str,
        service: &str,
        spec: &str,
        revision: u64,
        state: Option<(pb::ReplicaState, &str)>,
    ) -> pb::Replica {
        pb::Replica {
            desired: Some(pb::ReplicaDesired {
                id: id.into(),
                deployment: "shop".into(),
                service: service.into(),
                node: "n1".into(),
                spec_hash: spec.into(),
                revision,
                ..Default::default()
            }),
            observed: state.map(|(state, observed_spec)| pb::ReplicaObserved {
                id: id.into(),
                state: state.into(),
                spec_hash: observed_spec.into(),
                ..Default::default()
            }),
        }
    }

    fn status(
        services: Vec<pb::ServiceSummary>,
        replicas: Vec<pb::Replica>,
        reason: Option<&str>,
    ) -> pb::DeployStatusResponse {
        let (state, details) = match reason {
            Some(reason) => (
                pb::DeploymentStatus::Pending,
                [("reason".to_owned(), reason.to_owned())].into(),
            ),
            None => (pb::DeploymentStatus::Active, Default::default()),
        };
        pb::DeployStatusResponse {
            deployments: vec![pb::DeploymentSummary {
                name: "shop".into(),
                revision: 3,
                status: state.into(),
                status_details: details,
                services,
                ..Default::default()
            }],
            replicas,
            ..Default::default()
        }
    }

    use pb::ReplicaState::{Failed, Pending, Pulling, Running};

    #[test]
    fn nothing_is_known_before_the_scheduler_acts() {
        // The old replica still runs the old spec at the old revision; the apply just landed.
        let s = status(
            vec![service("web", 1)],
            vec![replica("shop-web-1", "web", OLD, 2, Some((Running, OLD)))],
            Some(CONVERGING),
        );
        let p = assess(&goal(), &s);
        assert_eq!(p.outcome, Outcome::InProgress);
        assert_eq!(p.pending, ["the scheduler has not acted on revision 3 yet"]);
        assert_eq!(
            p.replicas[0].phase,
            Phase::Waiting,
            "not known to be leaving yet"
        );
    }

    #[test]
    fn a_rolling_update_converges_when_the_new_replica_runs_and_the_old_is_gone() {
        let g = goal();
        let mut rollout = pb::Rollout {
            service: "web".into(),
            state: pb::RolloutState::InProgress.into(),
            to_revision: 3,
            steps_total: 1,
            ..Default::default()
        };
        let mut web = service("web", 1);
        web.rollout = Some(rollout.clone());
        // Start-first: the replacement is pulling next to the old replica.
        let s = status(
            vec![web.clone()],
            vec![
                replica("shop-web-1", "web", OLD, 2, Some((Running, OLD))),
                replica("shop-web-2", "web", NEW, 3, Some((Pulling, NEW))),
            ],
            None,
        );
        let first = assess(&g, &s);
        assert_eq!(first.outcome, Outcome::InProgress);
        assert_eq!(
            first.pending,
            [
                "rollout of web: step 0/1",
                "shop-web-1 on n1: to be replaced (older spec)",
                "shop-web-2 on n1: pulling",
            ]
        );
        assert_eq!(
            first.replicas.iter().map(|r| r.phase).collect::<Vec<_>>(),
            [Phase::Leaving, Phase::Waiting]
        );

        // The new one runs, the old one is removed, the rollout completes.
        rollout.state = pb::RolloutState::Completed.into();
        rollout.steps_done = 1;
        web.rollout = Some(rollout);
        let s = status(
            vec![web],
            vec![replica("shop-web-2", "web", NEW, 3, Some((Running, NEW)))],
            None,
        );
        let done = assess(&g, &s);
        assert_eq!(done.outcome, Outcome::Converged, "{:?}", done.pending);
        assert_eq!(
            changes(&first, &done),
            [
                "shop-web-2 on n1: running",
                "shop-web-1 on n1: removed",
                "rollout of web: completed, step 1/1",
            ]
        );
        assert_eq!(
            summary(&g, &done),
            "shop revision 3 converged: 1 replica running\n"
        );
    }

    #[test]
    fn an_observation_of_the_old_spec_is_not_the_outcome() {
        // The scheduler re-armed a failed replica: desired is at the new revision, but the node
        // has not reported the new container yet; its last word was about the old spec.
        let s = status(
            vec![service("web", 1)],
            vec![replica("shop-web-1", "web", NEW, 3, Some((Failed, OLD)))],
            None,
        );
        let p = assess(&goal(), &s);
        assert_eq!(p.replicas[0].phase, Phase::Waiting);
        assert_eq!(p.outcome, Outcome::InProgress);
    }

    #[test]
    fn failed_replicas_end_it_with_their_codes_once_nothing_else_is_pending() {
        let mut failed = replica("shop-web-2", "web", NEW, 3, Some((Failed, NEW)));
        if let Some(o) = failed.observed.as_mut() {
            o.code = "image_pull_failed".into();
            o.message = "gave up after 10 attempts".into();
        }
        let waiting = replica("shop-db-1", "db", NEW, 3, Some((Pending, NEW)));
        let s = status(
            vec![service("web", 2), service("db", 1)],
            vec![
                replica("shop-web-1", "web", NEW, 3, Some((Running, NEW))),
                failed.clone(),
                waiting,
            ],
            None,
        );
        let p = assess(&goal(), &s);
        assert_eq!(p.outcome, Outcome::InProgress, "db is still pending");
        assert_eq!(p.pending, ["shop-db-1 on n1: pending"]);

        let s = status(
            vec![service("web", 2), service("db", 1)],
            vec![
                replica("shop-web-1", "web", NEW, 3, Some((Running, NEW))),
                failed,
                replica("shop-db-1", "db", NEW, 3, Some((Running, NEW))),
            ],
            None,
        );
        let p = assess(&goal(), &s);
        assert_eq!(p.outcome, Outcome::Failed);
        assert_eq!(
            p.failures,
            ["shop-web-2 on n1: failed (image_pull_failed: gave up after 10 attempts)"]
        );
        assert_eq!(
            summary(&goal(), &p),
            "shop revision 3 did not converge:\n  shop-web-2 on n1: failed \
             (image_pull_failed: gave up after 10 attempts)\n"
        );
    }

    #[test]
    fn an_aborted_rollout_fails_the_service_at_once() {
        let mut web = service("web", 1);
        web.rollout = Some(pb::Rollout {
            service: "web".into(),
            state: pb::RolloutState::Aborted.into(),
            to_revision: 3,
            reason: "step_timeout".into(),
            details: [("replica".to_owned(), "shop-web-2".to_owned())].into(),
            rolled_back: true,
            ..Default::default()
        });
        // The previous spec is being restored: replicas of the new spec are on their way out.
        let s = status(
            vec![web],
            vec![
                replica("shop-web-1", "web", OLD, 2, Some((Running, OLD))),
                replica("shop-web-2", "web", NEW, 3, Some((Pending, NEW))),
            ],
            None,
        );
        let p = assess(&goal(), &s);
        assert_eq!(p.outcome, Outcome::Failed);
        assert_eq!(
            p.failures,
            [
                "rollout of web aborted: step_timeout (replica=shop-web-2); the previous spec \
                 was restored"
            ]
        );
    }

    #[test]
    fn a_paused_rollout_is_over_and_failed() {
        let mut web = service("web", 1);
        web.rollout = Some(pb::Rollout {
            service: "web".into(),
            state: pb::RolloutState::InProgress.into(),
            to_revision: 3,
            paused: true,
            reason: "step_failed".into(),
            ..Default::default()
        });
        let p = assess(&goal(), &status(vec![web], vec![], None));
        assert_eq!(p.outcome, Outcome::Failed);
        assert!(p.failures[0].contains("paused"), "{:?}", p.failures);
    }

    #[test]
    fn removed_services_and_surplus_replicas_must_go() {
        let s = status(
            vec![service("web", 1)],
            vec![
                replica("shop-web-1", "web", NEW, 3, Some((Running, NEW))),
                replica("shop-web-2", "web", NEW, 3, Some((Running, NEW))),
                replica("shop-old-1", "old", OLD, 2, Some((Running, OLD))),
            ],
            None,
        );
        let p = assess(&goal(), &s);
        assert_eq!(p.outcome, Outcome::InProgress);
        assert_eq!(
            p.pending,
            [
                "web: 2 of 1 replicas at revision 3",
                "shop-old-1 on n1: to be removed (service old removed)",
            ]
        );
    }

    #[test]
    fn missing_replicas_and_an_unplaceable_deployment_are_pending() {
        let s = status(
            vec![service("web", 2)],
            vec![replica("shop-web-1", "web", NEW, 3, None)],
            Some("cannot_satisfy_host_placement"),
        );
        let p = assess(&goal(), &s);
        assert_eq!(
            p.pending,
            [
                "deployment shop is pending: reason=cannot_satisfy_host_placement",
                "shop-web-1 on n1: not reported yet",
                "web: 1 of 2 replicas at revision 3",
            ]
        );
        assert!(summary(&goal(), &p).starts_with("shop revision 3 has not converged"));
    }

    #[test]
    fn a_newer_revision_or_a_deletion_ends_the_follow() {
        let mut s = status(vec![service("web", 1)], vec![], None);
        s.deployments[0].revision = 4;
        let p = assess(&goal(), &s);
        assert_eq!(p.outcome, Outcome::Superseded);
        assert!(summary(&goal(), &p).contains("moved on to revision 4"));
        let gone = assess(&goal(), &pb::DeployStatusResponse::default());
        assert_eq!(gone.outcome, Outcome::Deleted);
        assert!(gone.outcome.is_final());
    }

    #[test]
    fn a_lagging_node_is_waited_for() {
        let mut s = status(vec![service("web", 1)], vec![], None);
        s.deployments[0].revision = 2;
        let p = assess(&goal(), &s);
        assert_eq!(p.pending, ["this node has not applied revision 3 yet"]);
    }

    #[test]
    fn the_frame_lists_replicas_and_what_is_pending() {
        let s = status(
            vec![service("web", 1)],
            vec![
                replica("shop-web-1", "web", OLD, 2, Some((Running, OLD))),
                replica("shop-web-2", "web", NEW, 3, None),
            ],
            None,
        );
        let p = assess(&goal(), &s);
        assert_eq!(
            frame(&goal(), &p),
            "shop revision 3: converging\n\
             REPLICA     NODE  STATE              MESSAGE\n\
             shop-web-1  n1    running (leaving)  -\n\
             shop-web-2  n1    -                  -\n  \
             waiting: shop-web-1 on n1: to be replaced (older spec)\n  \
             waiting: shop-web-2 on n1: not reported yet\n"
        );
        assert_eq!(
            changes(&Progress::empty(), &p),
            [
                "shop-web-1 on n1: running, to be removed",
                "shop-web-2 on n1: not reported yet"
            ]
        );
    }
}
