//! The leader's membership reconciler: makes raft's membership follow the node table of the
//! replicated state (SPEC §4).
//!
//! A node enters the node table when it is admitted (its join token consumed, its certificate
//! signed); the reconciler then adds it to raft as a learner, promotes it once it has caught up
//! (odd voter count, at most seven, one change at a time, via [`membership::next_change`]),
//! marks it `ready` once its isolation self-test has passed (SPEC §7), and removes from raft the
//! members that `node remove` took out of the
//! table. It also records each node's reachability as the leader's probes see it (unreachable
//! after [`MISSES_BEFORE_UNREACHABLE`] failed probes in a row, reachable again on the first
//! answer). [`plan`] and [`reachability_changes`] are pure functions of the facts; [`run`]
//! gathers them on the leader and performs one membership action per tick. This module must
//! not change the node table itself except to mark a node ready and record reachability.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::{ChangeMembers, ServerState};
use tokio::sync::watch;

use super::member::Member;
use crate::api::auth::Identity;
use crate::api::submit::{PROBE_TIMEOUT, Peers as _};
use crate::proto::v1 as pb;
use crate::raft::membership::{self, Change};
use crate::raft::{NodeAddr, NodeId, RaftMetrics};

/// How often the leader reconciles (besides reacting to nothing else: membership changes are
/// rare and one change per tick keeps them serial).
pub const TICK: Duration = Duration::from_millis(500);

/// Consecutive failed probes (one per tick) before a node is recorded unreachable.
pub const MISSES_BEFORE_UNREACHABLE: u32 = 3;

/// How often the leader records the heartbeats it heard (the nodes that answered its probes)
/// in the replicated state: `last_heartbeat` is at most this stale. When a node turns
/// unreachable the leader records its exact last answer first, so the scheduler counts the
/// node's loss from that moment (SPEC §5.4).
pub const RECORD_HEARTBEATS_EVERY: Duration = Duration::from_secs(5);

/// A learner within this many entries of the leader's last log index counts as caught up.
pub const CAUGHT_UP_LAG: u64 = 100;

/// One node of the replicated node table, as the reconciler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNode {
    /// Node name.
    pub name: String,
    /// Raft id.
    pub id: NodeId,
    /// Address its raft RPCs are served on.
    pub raft_address: String,
    /// Still `joining` (not yet marked ready).
    pub joining: bool,
    /// Its isolation self-test passed (SPEC §7): only then may it take replicas.
    pub isolated: bool,
    /// Recorded as reachable.
    pub reachable: bool,
}

/// One raft member, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftMember {
    /// Its member entry.
    pub addr: NodeAddr,
    /// A voter (else a learner).
    pub voter: bool,
    /// Its log is within [`CAUGHT_UP_LAG`] of the leader's.
    pub caught_up: bool,
    /// It answered a probe just now.
    pub reachable: bool,
}

/// Everything [`plan`] decides from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The leader (this node).
    pub leader: NodeId,
    /// The node table.
    pub table: Vec<TableNode>,
    /// Raft's membership.
    pub members: BTreeMap<NodeId, RaftMember>,
}

/// The single next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Add an admitted node to raft as a learner.
    AddLearner(NodeId, NodeAddr),
    /// Take a removed node out of raft.
    Remove {
        /// The node.
        id: NodeId,
        /// It is a voter (removed from the voters, its entry with it), else a learner.
        voter: bool,
    },
    /// Promote or demote per the voter policy.
    Voters(Change),
    /// Mark a node that is now a caught-up member `ready`.
    MarkReady(String),
}

/// The next step towards "raft membership = node table, voters per policy", if any.
///
/// Order: admit new nodes first (so that they start catching up), then remove departed ones
/// (others before the leader itself, which steps down once its removal commits), then the voter
/// policy, then status updates.
pub fn plan(facts: &Facts) -> Option<Action> {
    let in_table: BTreeSet<NodeId> = facts.table.iter().map(|n| n.id).collect();
    if let Some(node) = facts
        .table
        .iter()
        .find(|n| !facts.members.contains_key(&n.id))
    {
        let addr = NodeAddr {
            name: node.name.clone(),
            addr: node.raft_address.clone(),
        };
        return Some(Action::AddLearner(node.id, addr));
    }
    let mut departed: Vec<NodeId> = facts
        .members
        .keys()
        .copied()
        .filter(|id| !in_table.contains(id))
        .collect();
    departed.sort_by_key(|id| *id == facts.leader);
    if let Some(id) = departed.first() {
        return Some(Action::Remove {
            id: *id,
            voter: facts.members[id].voter,
        });
    }
    let members: Vec<membership::Member> = facts
        .members
        .iter()
        .map(|(id, m)| membership::Member {
            id: *id,
            name: m.addr.name.clone(),
            voter: m.voter,
            caught_up: m.caught_up,
            reachable: m.reachable,
        })
        .collect();
    if let Some(change) = membership::next_change(&members, facts.leader) {
        return Some(Action::Voters(change));
    }
    facts
        .table
        .iter()
        .find(|n| n.joining && n.isolated && facts.members.get(&n.id).is_some_and(|m| m.caught_up))
        .map(|n| Action::MarkReady(n.name.clone()))
}

/// The reachability records to change, given this tick's probes of raft members and the
/// running count of consecutive misses per node (updated here).
pub fn reachability_changes(
    facts: &Facts,
    misses: &mut BTreeMap<NodeId, u32>,
) -> Vec<(String, pb::Reachability)> {
    let mut changes = Vec::new();
    for node in &facts.table {
        let Some(member) = facts.members.get(&node.id) else {
            continue;
        };
        let missed = misses.entry(node.id).or_default();
        *missed = if member.reachable { 0 } else { *missed + 1 };
        if member.reachable && !node.reachable {
            changes.push((node.name.clone(), pb::Reachability::Reachable));
        } else if *missed >= MISSES_BEFORE_UNREACHABLE && node.reachable {
            changes.push((node.name.clone(), pb::Reachability::Unreachable));
        }
    }
    misses.retain(|id, _| facts.members.contains_key(id));
    changes
}

/// The nodes of the table that answered this tick's probes (the leader always does).
pub fn heard(facts: &Facts) -> Vec<String> {
    facts
        .table
        .iter()
        .filter(|node| facts.members.get(&node.id).is_some_and(|m| m.reachable))
        .map(|node| node.name.clone())
        .collect()
}

/// Reconciles on this node while it leads, until `stop` changes.
pub async fn run(member: Arc<Member>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut misses = BTreeMap::new();
    let mut recorded_at: Option<std::time::Instant> = None;
    // When this leader last heard each node (its clock), for the exact last heartbeat of a
    // node that goes unreachable.
    let mut last_heard: BTreeMap<String, i64> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let metrics = member.metrics();
        if metrics.state != ServerState::Leader {
            misses.clear();
            recorded_at = None;
            last_heard.clear();
            continue;
        }
        // One change at a time: wait while a joint configuration is being committed.
        if metrics
            .membership_config
            .membership()
            .get_joint_config()
            .len()
            > 1
        {
            continue;
        }
        let facts = gather(&member, &metrics).await;
        let now = crate::pki::now_unix_ms();
        let heard_now = heard(&facts);
        for node in &heard_now {
            last_heard.insert(node.clone(), now);
        }
        for (node, reachability) in reachability_changes(&facts, &mut misses) {
            // The loss clock starts at the last answer, not at the last periodic record.
            if let (pb::Reachability::Unreachable, Some(&at)) =
                (reachability, last_heard.get(&node))
            {
                record_heartbeats(&member, vec![(node.clone(), at)]).await;
            }
            record_reachability(&member, node, reachability).await;
        }
        if recorded_at.is_none_or(|at| at.elapsed() >= RECORD_HEARTBEATS_EVERY) {
            let beats = heard_now.into_iter().map(|node| (node, now)).collect();
            if record_heartbeats(&member, beats).await {
                recorded_at = Some(std::time::Instant::now());
            }
        }
        let Some(action) = plan(&facts) else {
            continue;
        };
        tracing::info!(?action, "membership reconciler");
        if let Err(error) = perform(&member, action.clone()).await {
            tracing::warn!(?action, %error, "membership change failed; retrying next tick");
        }
    }
}

async fn gather(member: &Member, metrics: &RaftMetrics) -> Facts {
    let table = member.read(|state| {
        state
            .nodes()
            .map(|n| TableNode {
                name: n.name.clone(),
                id: n.raft_id,
                raft_address: n.raft_address.clone(),
                joining: n.status() == pb::NodeStatus::Joining,
                isolated: n.isolation.as_ref().is_some_and(|c| c.ok),
                reachable: n.reachability() != pb::Reachability::Unreachable,
            })
            .collect()
    });
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let last = metrics.last_log_index.unwrap_or(0);
    let matched = metrics.replication.clone().unwrap_or_default();
    let mut members = BTreeMap::new();
    for (id, addr) in membership.nodes() {
        let (caught_up, reachable) = if *id == metrics.id {
            (true, true)
        } else {
            let index = matched.get(id).copied().flatten().map_or(0, |l| l.index);
            let reachable = member.peers.reachable(addr, PROBE_TIMEOUT).await;
            (index + CAUGHT_UP_LAG >= last, reachable)
        };
        members.insert(
            *id,
            RaftMember {
                addr: addr.clone(),
                voter: voters.contains(id),
                caught_up,
                reachable,
            },
        );
    }
    Facts {
        leader: metrics.id,
        table,
        members,
    }
}

async fn record_reachability(member: &Member, node: String, reachability: pb::Reachability) {
    tracing::info!(%node, ?reachability, "node reachability changed");
    let kind = pb::command::Kind::SetNodeReachability(pb::SetNodeReachability {
        node,
        reachability: reachability.into(),
    });
    if let Err(error) = member
        .submit(&Identity::Node(member.name.clone()), kind)
        .await
    {
        tracing::warn!(error = %error.render(true), "cannot record reachability; retrying next tick");
    }
}

/// Records when the leader heard each node (leader clock); false when the write failed.
async fn record_heartbeats(member: &Member, beats: Vec<(String, i64)>) -> bool {
    let heartbeats = beats
        .into_iter()
        .map(|(node, at)| pb::NodeHeartbeat {
            node,
            received_at_unix_ms: at,
            ..Default::default()
        })
        .collect();
    let kind = pb::command::Kind::RecordHeartbeats(pb::RecordHeartbeats { heartbeats });
    match member
        .submit(&Identity::Node(member.name.clone()), kind)
        .await
    {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(error = %error.render(true), "cannot record heartbeats; retrying next tick");
            false
        }
    }
}

async fn perform(member: &Member, action: Action) -> Result<(), String> {
    let raft = &member.raft;
    match action {
        Action::AddLearner(id, addr) => raft
            .add_learner(id, addr, false)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Action::Remove { id, voter } => {
            let change = if voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            raft.change_membership(change, false)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Action::Voters(Change::Promote(id)) => raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        // A demoted voter stays a learner (retain = true) so that it keeps its copy.
        Action::Voters(Change::Demote(id)) => raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Action::MarkReady(name) => {
            let kind = pb::command::Kind::SetNodeStatus(pb::SetNodeStatus {
                node: name,
                status: pb::NodeStatus::Ready.into(),
                ..Default::default()
            });
            member
                .submit(&Identity::Node(member.name.clone()), kind)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(names: &[(&str, NodeId, bool)]) -> Vec<TableNode> {
        names
            .iter()
            .map(|(name, id, joining)| TableNode {
                name: (*name).into(),
                id: *id,
                raft_address: format!("{name}:7000"),
                joining: *joining,
                isolated: true,
                reachable: true,
            })
            .collect()
    }

    fn member(name: &str, voter: bool, caught_up: bool) -> RaftMember {
        RaftMember {
            addr: NodeAddr {
                name: name.into(),
                addr: format!("{name}:7000"),
            },
            voter,
            caught_up,
            reachable: true,
        }
    }

    #[test]
    fn an_admitted_node_becomes_a_learner_first() {
        let facts = Facts {
            leader: 1,
            table: table(&[("a", 1, false), ("b", 2, true)]),
            members: BTreeMap::from([(1, member("a", true, true))]),
        };
        assert_eq!(
            plan(&facts),
            Some(Action::AddLearner(
                2,
                NodeAddr {
                    name: "b".into(),
                    addr: "b:7000".into()
                }
            ))
        );
    }

    #[test]
    fn a_lagging_learner_waits_and_a_caught_up_one_is_marked_ready() {
        let mut facts = Facts {
            leader: 1,
            table: table(&[("a", 1, false), ("b", 2, true)]),
            members: BTreeMap::from([(1, member("a", true, true)), (2, member("b", false, false))]),
        };
        // Two members → one voter: nothing to promote, and b has not caught up.
        assert_eq!(plan(&facts), None);
        facts.members.insert(2, member("b", false, true));
        // Caught up, but its isolation self-test has not passed (yet).
        facts.table[1].isolated = false;
        assert_eq!(plan(&facts), None);
        facts.table[1].isolated = true;
        assert_eq!(plan(&facts), Some(Action::MarkReady("b".into())));
    }

    #[test]
    fn the_third_node_makes_three_voters() {
        let facts = Facts {
            leader: 1,
            table: table(&[("a", 1, false), ("b", 2, false), ("c", 3, false)]),
            members: BTreeMap::from([
                (1, member("a", true, true)),
                (2, member("b", false, true)),
                (3, member("c", false, true)),
            ]),
        };
        assert_eq!(plan(&facts), Some(Action::Voters(Change::Promote(2))));
    }

    #[test]
    fn reachability_flips_after_three_misses_and_back_on_one_answer() {
        let mut facts = Facts {
            leader: 1,
            table: table(&[("a", 1, false), ("b", 2, false)]),
            members: BTreeMap::from([(1, member("a", true, true)), (2, member("b", true, true))]),
        };
        let mut misses = BTreeMap::new();
        assert!(reachability_changes(&facts, &mut misses).is_empty());
        facts.members.get_mut(&2).expect("b").reachable = false;
        assert!(reachability_changes(&facts, &mut misses).is_empty());
        assert!(reachability_changes(&facts, &mut misses).is_empty());
        assert_eq!(
            reachability_changes(&facts, &mut misses),
            vec![("b".to_owned(), pb::Reachability::Unreachable)]
        );
        assert_eq!(heard(&facts), ["a"], "only answering nodes are heard");
        facts.table[1].reachable = false;
        facts.members.get_mut(&2).expect("b").reachable = true;
        assert_eq!(
            reachability_changes(&facts, &mut misses),
            vec![("b".to_owned(), pb::Reachability::Reachable)]
        );
        assert_eq!(heard(&facts), ["a", "b"]);
    }

    #[test]
    fn removed_nodes_leave_raft_the_leader_last() {
        let facts = Facts {
            leader: 1,
            table: table(&[("c", 3, false)]),
            members: BTreeMap::from([
                (1, member("a", true, true)),
                (2, member("b", true, true)),
                (3, member("c", true, true)),
            ]),
        };
        assert_eq!(plan(&facts), Some(Action::Remove { id: 2, voter: true }));
        let only_leader = Facts {
            members: BTreeMap::from([(1, member("a", true, true)), (3, member("c", true, true))]),
            ..facts
        };
        assert_eq!(
            plan(&only_leader),
            Some(Action::Remove { id: 1, voter: true })
        );
    }
}
