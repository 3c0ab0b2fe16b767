//! The voter policy of the leader's membership reconciler (SPEC §4): joiners enter as learners
//! and are promoted once caught up; the voter count stays odd and at most seven; one change at a
//! time; who is promoted or demoted is deterministic; the leader is never demoted.
//!
//! [`next_change`] is a pure function of the members and the leader; the reconciler loop that
//! gathers the facts and calls openraft's `change_membership` lives with the daemon wiring.
//! This module must not talk to raft.

use super::NodeId;

/// Largest voter set: more voters slow every commit without buying useful tolerance here.
pub const MAX_VOTERS: usize = 7;

/// What the reconciler knows about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Raft id.
    pub id: NodeId,
    /// Node name (the deterministic tie-breaker).
    pub name: String,
    /// Currently a voter (else a learner).
    pub voter: bool,
    /// Its log is close enough to the leader's to vote without slowing commits.
    pub caught_up: bool,
    /// It answered recently.
    pub reachable: bool,
}

/// One membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Make this learner a voter.
    Promote(NodeId),
    /// Make this voter a learner.
    Demote(NodeId),
}

/// The voter count for `members` members: the largest odd number not above it, capped at 7
/// (1→1, 2→1, 3→3, 4→3, 5→5, 6→5, 7+→7).
pub fn target_voters(members: usize) -> usize {
    match members {
        0 => 0,
        n => (if n % 2 == 0 { n - 1 } else { n }).min(MAX_VOTERS),
    }
}

/// The single next change that moves the voter set towards the policy, if any.
///
/// A healthy learner replaces an unreachable voter in two steps (promote, then demote), so
/// that the cluster never has fewer healthy voters in between.
pub fn next_change(members: &[Member], leader: NodeId) -> Option<Change> {
    let target = target_voters(members.len());
    let mut voters: Vec<&Member> = members.iter().filter(|m| m.voter).collect();
    let mut candidates: Vec<&Member> = members
        .iter()
        .filter(|m| !m.voter && m.caught_up && m.reachable)
        .collect();
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    // Demotion order: unreachable voters first, then by name from the end; never the leader.
    voters.sort_by(|a, b| a.reachable.cmp(&b.reachable).then(b.name.cmp(&a.name)));
    let demotable = voters.iter().find(|m| m.id != leader).map(|m| m.id);

    let unreachable_voters = voters.iter().filter(|m| !m.reachable).count();
    let wants_voter = voters.len() < target || (unreachable_voters > 0 && voters.len() <= target);
    if wants_voter && let Some(learner) = candidates.first() {
        return Some(Change::Promote(learner.id));
    }
    if voters.len() > target {
        return demotable.map(Change::Demote);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId, voter: bool) -> Member {
        Member {
            id,
            name: format!("node-{id}"),
            voter,
            caught_up: true,
            reachable: true,
        }
    }

    #[test]
    fn target_voter_counts_follow_the_table() {
        let expected = [
            (0, 0),
            (1, 1),
            (2, 1),
            (3, 3),
            (4, 3),
            (5, 5),
            (6, 5),
            (7, 7),
            (8, 7),
            (100, 7),
        ];
        for (members, voters) in expected {
            assert_eq!(target_voters(members), voters, "{members} members");
        }
    }

    #[test]
    fn learners_are_promoted_one_at_a_time_in_name_order() {
        let members = vec![member(1, true), member(3, false), member(2, false)];
        assert_eq!(next_change(&members, 1), Some(Change::Promote(2)));
        let members = vec![member(1, true), member(2, true), member(3, false)];
        assert_eq!(next_change(&members, 1), Some(Change::Promote(3)));
        let members = vec![member(1, true), member(2, true), member(3, true)];
        assert_eq!(next_change(&members, 1), None);
    }

    #[test]
    fn a_learner_that_is_behind_or_unreachable_waits() {
        let mut behind = member(2, false);
        behind.caught_up = false;
        let mut gone = member(3, false);
        gone.reachable = false;
        assert_eq!(next_change(&[member(1, true), behind, gone], 1), None);
    }

    #[test]
    fn an_even_voter_set_shrinks_without_touching_the_leader() {
        // Four voters → three: the last by name that is not the leader is demoted.
        let members = vec![
            member(1, true),
            member(2, true),
            member(3, true),
            member(4, true),
        ];
        assert_eq!(next_change(&members, 4), Some(Change::Demote(3)));
        assert_eq!(next_change(&members, 1), Some(Change::Demote(4)));
    }

    #[test]
    fn an_unreachable_voter_is_replaced_by_promote_then_demote() {
        let mut down = member(2, true);
        down.reachable = false;
        let members = vec![
            member(1, true),
            down.clone(),
            member(3, true),
            member(4, false),
        ];
        assert_eq!(next_change(&members, 1), Some(Change::Promote(4)));
        let after = vec![member(1, true), down, member(3, true), member(4, true)];
        assert_eq!(
            next_change(&after, 1),
            Some(Change::Demote(2)),
            "the unreachable one goes"
        );
    }

    #[test]
    fn never_more_than_seven_voters() {
        let mut members: Vec<Member> = (1..=7).map(|id| member(id, true)).collect();
        members.push(member(8, false));
        members.push(member(9, false));
        assert_eq!(next_change(&members, 1), None);
    }

    #[test]
    fn a_lone_leader_is_never_demoted() {
        let members = vec![member(1, true), member(2, true)];
        // Two members → one voter; the only demotable voter is node-2.
        assert_eq!(next_change(&members, 1), Some(Change::Demote(2)));
        assert_eq!(next_change(&members, 2), Some(Change::Demote(1)));
        assert_eq!(next_change(&[member(1, true)], 1), None);
    }
}
