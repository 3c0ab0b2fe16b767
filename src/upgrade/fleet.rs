//! The fleet rollout decision of SPEC §9.4: given the running plan and the cluster as the
//! leader sees it, what the leader does next.
//!
//! Role: one node at a time, followers first and the leader last (after handing leadership
//! over), a node's turn only while the voters left standing keep quorum, drained first when the
//! plan asks (and undrained after), the fleet stopped on the first failure or on a step that
//! outlives its deadline. [`next_step`] is a pure function
//! of values, called again after every change; the controller that applies its answer keeps
//! no other memory than how long a step has been blocked. It must not read clocks, talk to
//! nodes or write state.

use crate::proto::v1::{UpgradeNodeState, UpgradeNodeStatus, UpgradePlan};

/// One cluster node as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Whether it votes in raft (learners do not count for quorum).
    pub voter: bool,
    /// Ready and reachable: it could take its turn, and it counts towards quorum.
    pub healthy: bool,
    /// Its drain, if one is requested.
    pub drain: Option<DrainView>,
}

/// A node's drain as the rollout sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainView {
    /// Requested by this plan (so the plan ends it), not by an operator.
    pub by_plan: bool,
    /// Every replica has moved off.
    pub done: bool,
    /// The scheduler gave up moving its replicas (`drain_timeout`).
    pub timed_out: bool,
}

/// The cluster at the moment of deciding.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// The node deciding (the raft leader).
    pub leader: String,
    /// Every node of the cluster.
    pub nodes: Vec<NodeView>,
    /// Now, Unix milliseconds.
    pub now_unix_ms: i64,
    /// How long one node's turn may take, from its start to its verdict.
    pub step_timeout_ms: i64,
}

/// What the leader does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A node is on its turn (or nothing is left to decide): look again after the next change.
    Wait,
    /// Start this node's turn.
    Start(String),
    /// Start this node's turn by draining it (the plan asks for drains).
    Drain(String),
    /// The node's drain finished: go on to download and install.
    Proceed(String),
    /// The node's turn is over: end the drain this plan requested.
    Undrain(String),
    /// Only the leader is left: hand leadership to this healthy voter, whose controller
    /// carries on (and upgrades this node as a follower).
    HandOver(String),
    /// The next turn cannot start now, for this reason; the controller fails the plan when
    /// this lasts too long.
    Blocked(String),
    /// Stop the fleet: the plan failed, for this reason.
    Fail(String),
    /// Every node has had its turn: the plan succeeded.
    Finish,
}

/// Whether a node's status is on its turn (between its start and its verdict).
pub fn in_flight(state: UpgradeNodeState) -> bool {
    matches!(
        state,
        UpgradeNodeState::Draining
            | UpgradeNodeState::Downloading
            | UpgradeNodeState::Verifying
            | UpgradeNodeState::Installing
            | UpgradeNodeState::Rebooting
            | UpgradeNodeState::HealthCheck
    )
}

/// The next step of the running `plan` in `cluster`.
pub fn next_step(plan: &UpgradePlan, cluster: &ClusterView) -> Step {
    let view = |name: &str| cluster.nodes.iter().find(|n| n.name == name);
    // Drains this plan requested end with the node's turn, before anything else happens.
    if let Some(done) = plan.nodes.iter().find(|n| {
        !in_flight(n.state())
            && n.state() != UpgradeNodeState::Pending
            && view(&n.node).is_some_and(|v| v.drain.is_some_and(|d| d.by_plan))
    }) {
        return Step::Undrain(done.node.clone());
    }
    if let Some(failed) = plan.nodes.iter().find(|n| {
        matches!(
            n.state(),
            UpgradeNodeState::Failed | UpgradeNodeState::RolledBack
        )
    }) {
        return Step::Fail(failure_reason(failed));
    }
    if let Some(current) = plan.nodes.iter().find(|n| in_flight(n.state())) {
        let elapsed = cluster.now_unix_ms - current.started_at_unix_ms;
        if current.started_at_unix_ms > 0 && elapsed > cluster.step_timeout_ms {
            return Step::Fail(format!(
                "{} did not finish its upgrade within {} s (last step: {})",
                current.node,
                cluster.step_timeout_ms / 1000,
                state_name(current.state())
            ));
        }
        if current.state() == UpgradeNodeState::Draining {
            let drain = view(&current.node).and_then(|v| v.drain);
            if drain.is_some_and(|d| d.timed_out) {
                return Step::Fail(format!(
                    "{}'s replicas could not all be moved off (drain_timeout)",
                    current.node
                ));
            }
            if drain.is_none_or(|d| d.done) {
                return Step::Proceed(current.node.clone());
            }
        }
        return Step::Wait;
    }
    let pending: Vec<&UpgradeNodeStatus> = plan
        .nodes
        .iter()
        .filter(|n| n.state() == UpgradeNodeState::Pending)
        .collect();
    let Some(next) = pending
        .iter()
        .find(|n| n.node != cluster.leader)
        .or_else(|| pending.first())
    else {
        return Step::Finish;
    };
    let Some(node) = view(&next.node) else {
        return Step::Fail(format!(
            "{} is no longer a member of the cluster",
            next.node
        ));
    };
    if node.name == cluster.leader {
        let successor = cluster
            .nodes
            .iter()
            .filter(|n| n.voter && n.healthy && n.name != cluster.leader)
            // A node already on the new version first: it will not need its own turn.
            .min_by_key(|n| {
                let upgraded = plan.nodes.iter().any(|s| {
                    s.node == n.name
                        && matches!(
                            s.state(),
                            UpgradeNodeState::Succeeded | UpgradeNodeState::Skipped
                        )
                });
                (!upgraded, n.name.clone())
            });
        let others_vote = cluster
            .nodes
            .iter()
            .any(|n| n.voter && n.name != cluster.leader);
        match successor {
            Some(successor) => return Step::HandOver(successor.name.clone()),
            None if others_vote => {
                return Step::Blocked(format!(
                    "{} leads and is the last to upgrade, but no other voter is ready to take \
                     over",
                    cluster.leader
                ));
            }
            // A single voter has nobody to hand over to: it upgrades itself.
            None => {}
        }
    }
    if !node.healthy {
        return Step::Blocked(format!(
            "{} is not ready and reachable, so it cannot take its turn",
            node.name
        ));
    }
    if node.voter {
        let voters = cluster.nodes.iter().filter(|n| n.voter).count();
        let standing = cluster
            .nodes
            .iter()
            .filter(|n| n.voter && n.healthy && n.name != node.name)
            .count();
        let quorum = voters / 2 + 1;
        if voters > 1 && standing < quorum {
            return Step::Blocked(format!(
                "upgrading {} would leave {standing} of {voters} voters up; quorum needs {quorum}",
                node.name
            ));
        }
    }
    if plan.drain {
        Step::Drain(node.name.clone())
    } else {
        Step::Start(node.name.clone())
    }
}

/// Who a plan's drains are requested by, so that a plan ends only its own drains.
pub fn drain_requester(plan_id: &str) -> String {
    format!("upgrade {plan_id}")
}

/// The nodes still drained by a plan that no longer runs (aborted or ended), whose turn in it is
/// over: their drains end. `drained` is each drained node with who requested its drain.
pub fn leftover_drains(plans: &[UpgradePlan], drained: &[(String, String)]) -> Vec<String> {
    drained
        .iter()
        .filter(|(node, by)| {
            let Some(plan) = plans.iter().find(|p| drain_requester(&p.id) == *by) else {
                // A drain by a plan that is gone from the history is left over too.
                return by.starts_with(&drain_requester(""));
            };
            let running = matches!(
                plan.state(),
                crate::proto::v1::UpgradeState::Pending
                    | crate::proto::v1::UpgradeState::InProgress
            );
            !running
                && !plan
                    .nodes
                    .iter()
                    .any(|n| n.node == *node && in_flight(n.state()))
        })
        .map(|(node, _)| node.clone())
        .collect()
}

/// The plan's failure reason for a node that failed or rolled back.
fn failure_reason(node: &UpgradeNodeStatus) -> String {
    let what = if node.state() == UpgradeNodeState::RolledBack {
        "rolled back"
    } else {
        "failed"
    };
    if node.message.is_empty() {
        format!("{} {what}", node.node)
    } else {
        format!("{} {what}: {}", node.node, node.message)
    }
}

/// A node state as operators read it (`health_check`).
pub fn state_name(state: UpgradeNodeState) -> String {
    state
        .as_str_name()
        .trim_start_matches("UPGRADE_NODE_STATE_")
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node: &str, state: UpgradeNodeState) -> UpgradeNodeStatus {
        UpgradeNodeStatus {
            node: node.into(),
            state: state.into(),
            ..Default::default()
        }
    }

    fn plan(nodes: &[(&str, UpgradeNodeState)]) -> UpgradePlan {
        UpgradePlan {
            id: "p".into(),
            nodes: nodes.iter().map(|(n, s)| status(n, *s)).collect(),
            ..Default::default()
        }
    }

    fn cluster(leader: &str, nodes: &[(&str, bool)]) -> ClusterView {
        ClusterView {
            leader: leader.into(),
            nodes: nodes
                .iter()
                .map(|(name, healthy)| NodeView {
                    name: (*name).into(),
                    voter: true,
                    healthy: *healthy,
                    drain: None,
                })
                .collect(),
            now_unix_ms: 1_000_000,
            step_timeout_ms: 600_000,
        }
    }

    use UpgradeNodeState::{Failed, Installing, Pending, RolledBack, Skipped, Succeeded};

    #[test]
    fn followers_go_first_one_at_a_time_and_the_leader_hands_over_last() {
        let healthy = cluster("n0", &[("n0", true), ("n1", true), ("n2", true)]);
        let mut p = plan(&[("n0", Pending), ("n1", Pending), ("n2", Pending)]);
        assert_eq!(next_step(&p, &healthy), Step::Start("n1".into()));
        p.nodes[1].state = Installing.into();
        p.nodes[1].started_at_unix_ms = healthy.now_unix_ms - 1000;
        assert_eq!(next_step(&p, &healthy), Step::Wait);
        p.nodes[1].state = Succeeded.into();
        assert_eq!(next_step(&p, &healthy), Step::Start("n2".into()));
        p.nodes[2].state = Skipped.into();
        // Only the leader is left: it hands over, preferring a node already upgraded.
        assert_eq!(next_step(&p, &healthy), Step::HandOver("n1".into()));
        // The new leader's controller upgrades the old leader as a follower.
        let after = cluster("n1", &[("n0", true), ("n1", true), ("n2", true)]);
        assert_eq!(next_step(&p, &after), Step::Start("n0".into()));
        p.nodes[0].state = Succeeded.into();
        assert_eq!(next_step(&p, &after), Step::Finish);
    }

    #[test]
    fn a_draining_plan_drains_each_node_waits_for_it_and_ends_only_its_own_drains() {
        let mut c = cluster("n0", &[("n0", true), ("n1", true), ("n2", true)]);
        let mut p = plan(&[("n0", Pending), ("n1", Pending)]);
        p.drain = true;
        assert_eq!(next_step(&p, &c), Step::Drain("n1".into()));
        p.nodes[1].state = UpgradeNodeState::Draining.into();
        p.nodes[1].started_at_unix_ms = c.now_unix_ms;
        let mut drain = DrainView {
            by_plan: true,
            done: false,
            timed_out: false,
        };
        c.nodes[1].drain = Some(drain);
        assert_eq!(next_step(&p, &c), Step::Wait);
        drain.done = true;
        c.nodes[1].drain = Some(drain);
        assert_eq!(next_step(&p, &c), Step::Proceed("n1".into()));
        // Its turn over, the plan's drain ends before the next node starts.
        p.nodes[1].state = Succeeded.into();
        assert_eq!(next_step(&p, &c), Step::Undrain("n1".into()));
        // An operator's drain stays.
        drain.by_plan = false;
        c.nodes[1].drain = Some(drain);
        assert_eq!(next_step(&p, &c), Step::HandOver("n1".into()));
        // A drain that times out stops the fleet.
        p.nodes[1].state = UpgradeNodeState::Draining.into();
        drain.timed_out = true;
        drain.done = false;
        c.nodes[1].drain = Some(drain);
        let Step::Fail(reason) = next_step(&p, &c) else {
            panic!("expected a failure");
        };
        assert!(reason.contains("drain_timeout"), "{reason}");
    }

    #[test]
    fn drains_left_by_an_aborted_plan_end_once_the_turn_in_progress_is_over() {
        let mut aborted = plan(&[("n1", UpgradeNodeState::Rebooting), ("n2", Skipped)]);
        aborted.state = crate::proto::v1::UpgradeState::Aborted.into();
        let mut running = plan(&[("n3", UpgradeNodeState::Draining)]);
        running.id = "q".into();
        running.state = crate::proto::v1::UpgradeState::InProgress.into();
        let drained = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, by)| ((*n).into(), by.clone()))
                .collect()
        };
        let plans = [aborted.clone(), running];
        let pairs = drained(&[
            ("n1", drain_requester("p")),
            ("n2", drain_requester("p")),
            ("n3", drain_requester("q")),
            ("n4", "operator".into()),
            ("n5", drain_requester("gone")),
        ]);
        // n1 is still rebooting; n3's plan runs (its controller ends that drain); n4 is an
        // operator's.
        assert_eq!(leftover_drains(&plans, &pairs), ["n2", "n5"]);
        let mut plans = plans;
        plans[0].nodes[0].state = Succeeded.into();
        assert_eq!(leftover_drains(&plans, &pairs), ["n1", "n2", "n5"]);
    }

    #[test]
    fn a_single_node_upgrades_itself() {
        let alone = cluster("n0", &[("n0", true)]);
        let p = plan(&[("n0", Pending)]);
        assert_eq!(next_step(&p, &alone), Step::Start("n0".into()));
    }

    #[test]
    fn the_first_failure_or_rollback_stops_the_fleet() {
        let healthy = cluster("n0", &[("n0", true), ("n1", true), ("n2", true)]);
        let mut p = plan(&[("n0", Pending), ("n1", RolledBack), ("n2", Pending)]);
        p.nodes[1].message = "isolation self-test failed".into();
        assert_eq!(
            next_step(&p, &healthy),
            Step::Fail("n1 rolled back: isolation self-test failed".into())
        );
        p.nodes[1].state = Failed.into();
        p.nodes[1].message.clear();
        assert_eq!(next_step(&p, &healthy), Step::Fail("n1 failed".into()));
    }

    #[test]
    fn a_turn_that_outlives_its_deadline_fails_the_plan() {
        let healthy = cluster("n0", &[("n0", true), ("n1", true)]);
        let mut p = plan(&[("n0", Pending), ("n1", UpgradeNodeState::Rebooting)]);
        p.nodes[1].started_at_unix_ms = healthy.now_unix_ms - healthy.step_timeout_ms - 1;
        let Step::Fail(reason) = next_step(&p, &healthy) else {
            panic!("expected a failure");
        };
        assert!(reason.contains("n1 did not finish"), "{reason}");
        assert!(reason.contains("600 s"), "{reason}");
        assert!(reason.contains("rebooting"), "{reason}");
    }

    #[test]
    fn a_step_that_would_lose_quorum_is_blocked() {
        // n2 is down: taking n1 would leave one voter of three.
        let degraded = cluster("n0", &[("n0", true), ("n1", true), ("n2", false)]);
        let p = plan(&[("n0", Pending), ("n1", Pending), ("n2", Pending)]);
        let Step::Blocked(reason) = next_step(&p, &degraded) else {
            panic!("expected blocked");
        };
        assert!(
            reason.contains("leave 1 of 3 voters up; quorum needs 2"),
            "{reason}"
        );
        // Five voters with one down still keep quorum while one upgrades.
        let five = cluster(
            "n0",
            &[
                ("n0", true),
                ("n1", true),
                ("n2", true),
                ("n3", true),
                ("n4", false),
            ],
        );
        let p = plan(&[("n0", Pending), ("n1", Pending)]);
        assert_eq!(next_step(&p, &five), Step::Start("n1".into()));
        // A learner does not count for quorum and may always take its turn.
        let mut with_learner = cluster("n0", &[("n0", true), ("n1", false), ("n9", true)]);
        with_learner.nodes[2].voter = false;
        let p = plan(&[("n0", Pending), ("n9", Pending)]);
        assert_eq!(next_step(&p, &with_learner), Step::Start("n9".into()));
    }

    #[test]
    fn an_unready_node_or_a_leader_without_successor_blocks_and_a_gone_node_fails() {
        let c = cluster("n0", &[("n0", true), ("n1", false), ("n2", true)]);
        let p = plan(&[("n1", Pending)]);
        assert!(matches!(next_step(&p, &c), Step::Blocked(r) if r.contains("n1 is not ready")));
        let p = plan(&[("n0", Pending)]);
        let lonely = cluster("n0", &[("n0", true), ("n1", false)]);
        assert!(matches!(next_step(&p, &lonely), Step::Blocked(r) if r.contains("no other voter")));
        let p = plan(&[("n7", Pending)]);
        assert_eq!(
            next_step(&p, &c),
            Step::Fail("n7 is no longer a member of the cluster".into())
        );
    }
}
