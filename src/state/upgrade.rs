//! Fleet upgrade plans in the replicated state: start (one at a time), progress, abort.
//!
//! The leader's fleet-upgrade controller decides; nodes report their own steps; this module
//! records both and audits upgrade_succeeded / upgrade_failed when a node's status enters
//! succeeded or failed/rolled back. The last
//! [`UPGRADE_PLAN_HISTORY`](super::UPGRADE_PLAN_HISTORY) plans are kept.
//!
//! It must not read clocks, randomness or disks, nor verify or install anything.

use crate::error::{Code, Error};
use crate::proto::v1::{
    AbortUpgrade, AuditEventType, StartUpgrade, StartUpgradeResult, UpdateUpgrade,
    UpgradeNodeState, UpgradeNodeStatus, UpgradePlan, UpgradeState, command_result::Outcome,
};

use super::change::Tx;
use super::{
    State, UPGRADE_PLAN_HISTORY, ack, invalid, missing, named, optional, payload, required,
};

impl State {
    /// Every retained upgrade plan, oldest first.
    pub fn upgrade_plans(&self) -> impl Iterator<Item = &UpgradePlan> {
        self.upgrade_plans.iter()
    }

    /// The plan that is pending or in progress, if any.
    pub fn running_upgrade(&self) -> Option<&UpgradePlan> {
        self.upgrade_plans.iter().find(|p| is_running(p))
    }

    pub(super) fn start_upgrade(
        &mut self,
        tx: &mut Tx,
        c: &StartUpgrade,
    ) -> Result<Outcome, Error> {
        let mut plan = c.plan.clone().ok_or_else(|| missing("plan"))?;
        required(&plan.id, "plan.id")?;
        required(&plan.version, "plan.version")?;
        if let Some(running) = self.running_upgrade() {
            return Err(upgrade_in_progress(running));
        }
        if self.upgrade_plans.iter().any(|p| p.id == plan.id) {
            return Err(invalid(
                "plan.id",
                format!("an upgrade plan {} exists", plan.id),
            ));
        }
        for node in &plan.nodes {
            optional::<UpgradeNodeState>(node.state, "plan.nodes.state")?;
        }
        plan.state = UpgradeState::Pending.into();
        if plan.started_at_unix_ms == 0 {
            plan.started_at_unix_ms = tx.now;
        }
        if plan.started_by.is_empty() {
            plan.started_by = tx.identity.to_owned();
        }
        for node in &mut plan.nodes {
            if node.state == 0 {
                node.state = UpgradeNodeState::Pending.into();
            }
        }
        let plan_id = plan.id.clone();
        tx.record(None, Some(&plan));
        self.upgrade_plans.push_back(plan);
        while self.upgrade_plans.len() > UPGRADE_PLAN_HISTORY {
            if let Some(dropped) = self.upgrade_plans.pop_front() {
                tx.record(Some(&dropped), None);
            }
        }
        Ok(Outcome::StartUpgrade(StartUpgradeResult { plan_id }))
    }

    pub(super) fn update_upgrade(
        &mut self,
        tx: &mut Tx,
        c: &UpdateUpgrade,
    ) -> Result<Outcome, Error> {
        let position = self.plan_position(&c.plan_id)?;
        let state = optional::<UpgradeState>(c.state, "state")?;
        if let Some(status) = &c.node_status {
            required(&status.node, "node_status.node")?;
            named::<UpgradeNodeState>(status.state, "node_status.state")?;
        }
        let before = self.upgrade_plans[position].clone();
        let mut plan = before.clone();
        if !c.current_node.is_empty() {
            plan.current_node.clone_from(&c.current_node);
        }
        if let Some(state) = state {
            plan.state = state.into();
            if is_terminal(state) {
                if plan.finished_at_unix_ms == 0 {
                    plan.finished_at_unix_ms = tx.now;
                }
                skip_pending(&mut plan, tx.now);
            }
        }
        if !c.reason.is_empty() {
            plan.reason.clone_from(&c.reason);
        }
        let mut audit = None;
        if let Some(status) = &c.node_status {
            let mut status = status.clone();
            status.updated_at_unix_ms = tx.now;
            let previous = plan
                .nodes
                .iter()
                .find(|n| n.node == status.node)
                .map(UpgradeNodeStatus::state);
            audit = node_audit(previous, &status, &plan);
            if status.node == plan.current_node && !is_on_turn(status.state()) {
                plan.current_node.clear();
            }
            match plan.nodes.iter_mut().find(|n| n.node == status.node) {
                Some(slot) => *slot = status,
                None => plan.nodes.push(status),
            }
        }
        tx.record(Some(&before), Some(&plan));
        self.upgrade_plans[position] = plan;
        if let Some((event_type, details)) = audit {
            self.audit_push(tx, event_type, details);
        }
        Ok(ack())
    }

    pub(super) fn abort_upgrade(
        &mut self,
        tx: &mut Tx,
        c: &AbortUpgrade,
    ) -> Result<Outcome, Error> {
        let position = if c.plan_id.is_empty() {
            self.upgrade_plans.iter().position(is_running)
        } else {
            self.upgrade_plans
                .iter()
                .position(|p| p.id == c.plan_id && is_running(p))
        }
        .ok_or_else(|| {
            Error::new(Code::NotFound, "no running upgrade plan to abort")
                .with("plan_id", &c.plan_id)
        })?;
        let before = self.upgrade_plans[position].clone();
        let mut plan = before.clone();
        plan.state = UpgradeState::Aborted.into();
        plan.reason.clone_from(&c.reason);
        plan.current_node.clear();
        plan.finished_at_unix_ms = tx.now;
        skip_pending(&mut plan, tx.now);
        tx.record(Some(&before), Some(&plan));
        self.upgrade_plans[position] = plan;
        Ok(ack())
    }

    fn plan_position(&self, id: &str) -> Result<usize, Error> {
        self.upgrade_plans
            .iter()
            .position(|p| p.id == id)
            .ok_or_else(|| {
                Error::new(Code::NotFound, format!("no upgrade plan {id}")).with("plan_id", id)
            })
    }
}

/// The `upgrade_in_progress` refusal of a second plan while `running` runs.
pub fn upgrade_in_progress(running: &UpgradePlan) -> Error {
    Error::new(
        Code::UpgradeInProgress,
        format!(
            "upgrade {} to {} is still running",
            running.id, running.version
        ),
    )
    .with("plan_id", &running.id)
    .with("version", &running.version)
}

fn is_running(plan: &UpgradePlan) -> bool {
    matches!(
        plan.state(),
        UpgradeState::Pending | UpgradeState::InProgress
    )
}

fn is_terminal(state: UpgradeState) -> bool {
    matches!(
        state,
        UpgradeState::Succeeded | UpgradeState::Failed | UpgradeState::Aborted
    )
}

/// Whether a node is on its turn (pending nodes have not started; the rest have a verdict).
fn is_on_turn(state: UpgradeNodeState) -> bool {
    crate::upgrade::fleet::in_flight(state)
}

/// Marks the nodes that never got their turn skipped (the plan ended before it).
fn skip_pending(plan: &mut UpgradePlan, now: i64) {
    plan.current_node.clear();
    for node in &mut plan.nodes {
        if node.state() == UpgradeNodeState::Pending {
            node.state = UpgradeNodeState::Skipped.into();
            node.updated_at_unix_ms = now;
        }
    }
}

/// The audit event a node's status change calls for: entering succeeded, or failed/rolled back.
fn node_audit(
    previous: Option<UpgradeNodeState>,
    status: &UpgradeNodeStatus,
    plan: &UpgradePlan,
) -> Option<(AuditEventType, std::collections::BTreeMap<String, String>)> {
    let now = status.state();
    if previous == Some(now) {
        return None;
    }
    let event_type = match now {
        UpgradeNodeState::Succeeded => AuditEventType::UpgradeSucceeded,
        UpgradeNodeState::Failed | UpgradeNodeState::RolledBack => AuditEventType::UpgradeFailed,
        _ => return None,
    };
    let details = payload([
        ("plan_id", plan.id.clone()),
        ("node", status.node.clone()),
        ("from_version", status.from_version.clone()),
        ("to_version", status.to_version.clone()),
        (
            "state",
            now.as_str_name()
                .trim_start_matches("UPGRADE_NODE_STATE_")
                .to_ascii_lowercase(),
        ),
        ("code", status.code.clone()),
        ("reason", status.message.clone()),
    ]);
    Some((event_type, details))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::command::Kind;
    use crate::state::AuditFilter;
    use crate::state::testkit::*;

    fn start(id: &str) -> Kind {
        Kind::StartUpgrade(StartUpgrade {
            plan: Some(UpgradePlan {
                id: id.into(),
                version: "0.3.0".into(),
                nodes: vec![
                    UpgradeNodeStatus {
                        node: "n2".into(),
                        ..Default::default()
                    },
                    UpgradeNodeStatus {
                        node: "n1".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
        })
    }

    fn node_step(plan: &str, node: &str, state: UpgradeNodeState) -> Kind {
        Kind::UpdateUpgrade(UpdateUpgrade {
            plan_id: plan.into(),
            state: UpgradeState::InProgress.into(),
            current_node: node.into(),
            node_status: Some(UpgradeNodeStatus {
                node: node.into(),
                state: state.into(),
                to_version: "0.3.0".into(),
                ..Default::default()
            }),
            reason: String::new(),
        })
    }

    fn finish(plan: &str, state: UpgradeState) -> Kind {
        Kind::UpdateUpgrade(UpdateUpgrade {
            plan_id: plan.into(),
            state: state.into(),
            ..Default::default()
        })
    }

    fn abort(plan: &str) -> Kind {
        Kind::AbortUpgrade(AbortUpgrade {
            plan_id: plan.into(),
            reason: "operator".into(),
        })
    }

    fn upgrade_audits(h: &Harness) -> Vec<AuditEventType> {
        h.state
            .audit(&AuditFilter {
                types: [
                    AuditEventType::UpgradeSucceeded,
                    AuditEventType::UpgradeFailed,
                ]
                .into(),
                ..Default::default()
            })
            .events
            .iter()
            .map(|e| e.r#type())
            .collect()
    }

    #[test]
    fn test_one_plan_at_a_time_with_progress_and_audit() {
        let mut h = Harness::initialised();
        let Outcome::StartUpgrade(result) = h.ok(start("u1")) else {
            panic!("start result")
        };
        assert_eq!(result.plan_id, "u1");
        let plan = h.state.running_upgrade().expect("running");
        assert_eq!(plan.state(), UpgradeState::Pending);
        assert!(
            plan.nodes
                .iter()
                .all(|n| n.state() == UpgradeNodeState::Pending)
        );
        let err = h.rejected(start("u2"), Code::UpgradeInProgress);
        assert_eq!(err.details["plan_id"], "u1");

        h.ok(node_step("u1", "n2", UpgradeNodeState::Installing));
        h.ok(node_step("u1", "n2", UpgradeNodeState::Succeeded));
        h.ok(node_step("u1", "n2", UpgradeNodeState::Succeeded));
        h.ok(node_step("u1", "n1", UpgradeNodeState::RolledBack));
        assert_eq!(
            upgrade_audits(&h),
            [
                AuditEventType::UpgradeSucceeded,
                AuditEventType::UpgradeFailed
            ]
        );
        h.ok(finish("u1", UpgradeState::Failed));
        let plan = h.state.upgrade_plans().next().expect("kept");
        assert_eq!(plan.state(), UpgradeState::Failed);
        assert_eq!(plan.finished_at_unix_ms, h.now);
        assert!(h.state.running_upgrade().is_none());
        h.ok(start("u2"));
        h.rejected(start("u1"), Code::UpgradeInProgress);
    }

    #[test]
    fn test_a_finished_turn_clears_the_current_node_and_a_failed_plan_skips_the_rest() {
        let mut h = Harness::initialised();
        h.ok(start("u1"));
        h.ok(node_step("u1", "n2", UpgradeNodeState::Rebooting));
        let current = |h: &Harness| h.state.running_upgrade().map(|p| p.current_node.clone());
        assert_eq!(current(&h).as_deref(), Some("n2"));
        h.ok(node_step("u1", "n2", UpgradeNodeState::RolledBack));
        assert_eq!(current(&h).as_deref(), Some(""));
        h.ok(finish("u1", UpgradeState::Failed));
        let plan = h.state.upgrade_plans().next().expect("kept");
        let states: Vec<UpgradeNodeState> =
            plan.nodes.iter().map(UpgradeNodeStatus::state).collect();
        assert_eq!(
            states,
            [UpgradeNodeState::RolledBack, UpgradeNodeState::Skipped]
        );
    }

    #[test]
    fn test_abort_skips_nodes_not_started() {
        let mut h = Harness::initialised();
        h.ok(start("u1"));
        h.ok(node_step("u1", "n2", UpgradeNodeState::Downloading));
        h.ok(abort(""));
        let plan = h.state.upgrade_plans().next().expect("kept");
        assert_eq!(plan.state(), UpgradeState::Aborted);
        let states: Vec<(&str, UpgradeNodeState)> = plan
            .nodes
            .iter()
            .map(|n| (n.node.as_str(), n.state()))
            .collect();
        assert_eq!(
            states,
            [
                ("n2", UpgradeNodeState::Downloading),
                ("n1", UpgradeNodeState::Skipped)
            ]
        );
        h.rejected(abort("u1"), Code::NotFound);
        h.rejected(abort(""), Code::NotFound);
    }

    #[test]
    fn test_upgrade_errors_and_history_bound() {
        let mut h = Harness::initialised();
        h.rejected(
            Kind::StartUpgrade(StartUpgrade { plan: None }),
            Code::ValidationFailed,
        );
        h.rejected(
            Kind::StartUpgrade(StartUpgrade {
                plan: Some(UpgradePlan::default()),
            }),
            Code::ValidationFailed,
        );
        h.rejected(finish("nope", UpgradeState::Succeeded), Code::NotFound);
        h.ok(start("u0"));
        h.rejected(
            Kind::UpdateUpgrade(UpdateUpgrade {
                plan_id: "u0".into(),
                state: 77,
                ..Default::default()
            }),
            Code::ValidationFailed,
        );
        h.rejected(
            node_step("u0", "", UpgradeNodeState::Installing),
            Code::ValidationFailed,
        );
        h.ok(finish("u0", UpgradeState::Succeeded));
        h.rejected(start("u0"), Code::ValidationFailed);
        for i in 1..=UPGRADE_PLAN_HISTORY {
            h.ok(start(&format!("u{i}")));
            h.ok(finish(&format!("u{i}"), UpgradeState::Succeeded));
        }
        let ids: Vec<&str> = h.state.upgrade_plans().map(|p| p.id.as_str()).collect();
        assert_eq!(ids.len(), UPGRADE_PLAN_HISTORY);
        assert_eq!(ids.first(), Some(&"u1"));
    }
}
