//! The write path: every mutation is a raft command, proposed on the leader — directly when this
//! node leads, forwarded otherwise — and answered with a closed code when it cannot commit:
//! `no_leader` while an election runs (bounded wait, retryable), `quorum_lost` when this node
//! cannot reach a majority of voters (SPEC §4: fast, never a hang).
//!
//! The decision of which answer to give is [`classify`], a function of values; the edges (raft,
//! forwarding, reachability probes) sit behind [`Peers`] and openraft's handle. This module must
//! not look inside commands.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use openraft::error::{ClientWriteError, RaftError};
use prost::Message as _;

use crate::error::{Code, Error};
use crate::proto::v1::{Command, CommandResult};
use crate::raft::{NodeAddr, NodeId, Raft, RaftMetrics, Request};

/// How long a leader may go without hearing from a quorum before it reports `quorum_lost`
/// instead of accepting writes it cannot commit.
pub const QUORUM_ACK_LIMIT: Duration = Duration::from_millis(1_000);

/// How long one reachability probe of a peer may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// How often a leader waiting for a write checks that it still hears from a quorum.
const QUORUM_WATCH_EVERY: Duration = Duration::from_millis(100);

/// A boxed future, for the object-safe [`Peers`] trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The network edge of the write path.
pub trait Peers: Send + Sync + 'static {
    /// Sends a command to `leader` and returns its result.
    fn forward<'a>(
        &'a self,
        leader: &'a NodeAddr,
        command: Command,
    ) -> BoxFuture<'a, Result<CommandResult, Error>>;

    /// Whether `peer` answers within `timeout`.
    fn reachable<'a>(&'a self, peer: &'a NodeAddr, timeout: Duration) -> BoxFuture<'a, bool>;

    /// Asks `leader` for a linearizable read point (its committed index, confirmed by a quorum).
    fn read_index<'a>(&'a self, leader: &'a NodeAddr) -> BoxFuture<'a, Result<u64, Error>>;
}

impl<P: Peers> Peers for Arc<P> {
    fn forward<'a>(
        &'a self,
        leader: &'a NodeAddr,
        command: Command,
    ) -> BoxFuture<'a, Result<CommandResult, Error>> {
        (**self).forward(leader, command)
    }

    fn reachable<'a>(&'a self, peer: &'a NodeAddr, timeout: Duration) -> BoxFuture<'a, bool> {
        (**self).reachable(peer, timeout)
    }

    fn read_index<'a>(&'a self, leader: &'a NodeAddr) -> BoxFuture<'a, Result<u64, Error>> {
        (**self).read_index(leader)
    }
}

/// What a node that cannot commit right now should answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try again (a leader is known, or may appear before the deadline).
    Retry,
    /// An election is in progress or no leader is known; the client may retry later.
    NoLeader,
    /// This node is cut off from a majority of the voters.
    QuorumLost,
}

/// What [`classify`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    /// This node's raft role.
    pub state: ServerState,
    /// For a leader: time since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// Voters that answered a probe, this node included when it is a voter.
    pub reachable_voters: usize,
    /// Voters in the membership.
    pub voters: usize,
    /// Whether the wait for a leader has used up its time.
    pub deadline_passed: bool,
}

/// Decides what to answer when a write could not be committed.
pub fn classify(s: Situation) -> Verdict {
    let majority = s.voters / 2 + 1;
    let leader_lost_quorum = s.state == ServerState::Leader
        && s.millis_since_quorum_ack
            .is_some_and(|ms| ms > QUORUM_ACK_LIMIT.as_millis() as u64);
    if leader_lost_quorum || (s.voters > 0 && s.reachable_voters < majority) {
        return Verdict::QuorumLost;
    }
    if s.deadline_passed {
        return Verdict::NoLeader;
    }
    Verdict::Retry
}

/// Proposes commands on behalf of this node.
pub struct Submitter<P: Peers> {
    raft: Raft,
    peers: P,
    leader_wait: Duration,
}

impl<P: Peers> Submitter<P> {
    /// A submitter that waits at most `leader_wait` for a leader before answering `no_leader`.
    pub fn new(raft: Raft, peers: P, leader_wait: Duration) -> Self {
        Submitter {
            raft,
            peers,
            leader_wait,
        }
    }

    /// Commits `command` through the leader and returns the state machine's result.
    pub async fn submit(&self, command: Command) -> Result<CommandResult, Error> {
        let deadline = Instant::now() + self.leader_wait;
        loop {
            let metrics = self.raft.metrics().borrow().clone();
            if metrics.state == ServerState::Leader {
                if quorum_ack_too_old(&metrics) {
                    return Err(quorum_lost(&metrics));
                }
                match self.propose(&command, deadline).await {
                    Ok(result) => return Ok(result),
                    Err(Proposal::Forward | Proposal::TimedOut) => {}
                    Err(Proposal::QuorumLost) => return Err(quorum_lost_in_flight(&metrics)),
                    Err(Proposal::Failed(error)) => return Err(error),
                }
            } else if let Some(leader) = leader_addr(&metrics) {
                match self.peers.forward(&leader, command.clone()).await {
                    Ok(result) => return Ok(result),
                    // The leader moved or became unreachable: reassess below.
                    Err(error) if retryable(&error) => {}
                    // A forward over a connection that went silent: when this node cannot
                    // reach a majority, that (not a lost leader) is the answer.
                    Err(error) if outcome_unknown(&error) => {
                        let situation = self.situation(&metrics, false).await;
                        if classify(situation) == Verdict::QuorumLost {
                            return Err(quorum_lost_unknown_outcome(&metrics));
                        }
                        return Err(error);
                    }
                    Err(error) => return Err(error),
                }
            }
            let deadline_passed = Instant::now() >= deadline;
            let situation = self.situation(&metrics, deadline_passed).await;
            match classify(situation) {
                Verdict::QuorumLost => return Err(quorum_lost(&metrics)),
                Verdict::NoLeader => return Err(self.no_leader()),
                Verdict::Retry => self.wait_for_leader_change(&metrics, deadline).await,
            }
        }
    }

    /// Waits until this node's state machine reflects every write committed before the call
    /// (a linearizable read point, SPEC §4 `--consistent`): confirmed by the leader's quorum,
    /// then applied locally. `no_leader` or `quorum_lost` when no such point can be had.
    pub async fn read_barrier(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.leader_wait;
        loop {
            let metrics = self.raft.metrics().borrow().clone();
            let read_point = if metrics.state == ServerState::Leader {
                if quorum_ack_too_old(&metrics) {
                    return Err(quorum_lost(&metrics));
                }
                let remaining = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(remaining, self.raft.ensure_linearizable()).await {
                    Ok(Ok(log_id)) => Some(log_id.map_or(0, |id| id.index)),
                    Ok(Err(_)) | Err(_) => None,
                }
            } else if let Some(leader) = leader_addr(&metrics) {
                match self.peers.read_index(&leader).await {
                    Ok(index) => Some(index),
                    Err(error) if retryable(&error) => None,
                    Err(error) => return Err(error),
                }
            } else {
                None
            };
            if let Some(index) = read_point {
                let remaining = deadline.saturating_duration_since(Instant::now());
                return self
                    .raft
                    .wait(Some(remaining.max(Duration::from_millis(50))))
                    .applied_index_at_least(Some(index), "linearizable read")
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        Error::new(
                            Code::NoLeader,
                            format!("this node did not apply up to the read point {index}: {e}"),
                        )
                        .with("read_index", index)
                    });
            }
            let deadline_passed = Instant::now() >= deadline;
            match classify(self.situation(&metrics, deadline_passed).await) {
                Verdict::QuorumLost => return Err(quorum_lost(&metrics)),
                Verdict::NoLeader => return Err(self.no_leader()),
                Verdict::Retry => self.wait_for_leader_change(&metrics, deadline).await,
            }
        }
    }

    fn no_leader(&self) -> Error {
        Error::new(
            Code::NoLeader,
            format!(
                "no raft leader after {} ms; an election may be in progress, retry",
                self.leader_wait.as_millis()
            ),
        )
        .with("waited_ms", self.leader_wait.as_millis())
    }

    /// Proposes `command` only if this node leads (a forwarded write must not be forwarded
    /// again); otherwise answers `no_leader` so that the origin reassesses.
    pub async fn propose_here(&self, command: Command) -> Result<CommandResult, Error> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state == ServerState::Leader && quorum_ack_too_old(&metrics) {
            return Err(quorum_lost(&metrics));
        }
        let deadline = Instant::now() + self.leader_wait;
        match self.propose(&command, deadline).await {
            Ok(result) => Ok(result),
            Err(Proposal::Failed(error)) => Err(error),
            Err(Proposal::QuorumLost) => Err(quorum_lost_in_flight(&metrics)),
            Err(Proposal::Forward | Proposal::TimedOut) => Err(Error::new(
                Code::NoLeader,
                "this node is not the leader (any more); retry against the current leader",
            )
            .with("reason", "not_leader")),
        }
    }

    async fn propose(
        &self,
        command: &Command,
        deadline: Instant,
    ) -> Result<CommandResult, Proposal> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let write = self.raft.client_write(Request(command.encode_to_vec()));
        let written = tokio::time::timeout(remaining.max(Duration::from_millis(50)), write);
        // A leader cut off from its followers keeps its role until its lease runs out; the
        // write would wait for the whole deadline. Give up as soon as the quorum is stale.
        let cut_off = async {
            loop {
                tokio::time::sleep(QUORUM_WATCH_EVERY).await;
                if quorum_ack_too_old(&self.raft.metrics().borrow()) {
                    break;
                }
            }
        };
        let outcome = tokio::select! {
            outcome = written => outcome,
            () = cut_off => return Err(Proposal::QuorumLost),
        };
        match outcome {
            Err(_) => Err(Proposal::TimedOut),
            Ok(Ok(response)) => CommandResult::decode(response.data.0.as_slice()).map_err(|e| {
                Proposal::Failed(Error::new(
                    Code::Internal,
                    format!("undecodable command result: {e}"),
                ))
            }),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(Proposal::Forward)
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(Proposal::Failed(Error::new(Code::Internal, e.to_string())))
            }
            Ok(Err(RaftError::Fatal(fatal))) => Err(Proposal::Failed(
                Error::new(Code::Internal, format!("raft stopped: {fatal}"))
                    .with("reason", "raft_fatal"),
            )),
        }
    }

    /// Probes the voters to tell "election in progress" from "cut off from the majority".
    async fn situation(&self, metrics: &RaftMetrics, deadline_passed: bool) -> Situation {
        let membership = metrics.membership_config.membership();
        let voter_ids: Vec<NodeId> = membership.voter_ids().collect();
        let mut reachable = 0;
        for id in &voter_ids {
            if *id == metrics.id {
                reachable += 1;
            } else if let Some(node) = membership.get_node(id)
                && self.peers.reachable(node, PROBE_TIMEOUT).await
            {
                reachable += 1;
            }
        }
        Situation {
            state: metrics.state,
            millis_since_quorum_ack: metrics.millis_since_quorum_ack,
            reachable_voters: reachable,
            voters: voter_ids.len(),
            deadline_passed,
        }
    }

    async fn wait_for_leader_change(&self, before: &RaftMetrics, deadline: Instant) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let old_leader = before.current_leader;
        let old_term = before.current_term;
        let step = remaining.min(Duration::from_millis(200));
        let _ = self
            .raft
            .wait(Some(step))
            .metrics(
                |m| {
                    m.current_leader.is_some()
                        && (m.current_leader != old_leader || m.current_term != old_term)
                },
                "leader change",
            )
            .await;
    }
}

enum Proposal {
    /// Leadership moved while proposing; the next round sees the new leader.
    Forward,
    TimedOut,
    /// This leader has not heard from a quorum for [`QUORUM_ACK_LIMIT`]; the write may still
    /// commit if the partition heals before a new leader is elected, but it is not acknowledged.
    QuorumLost,
    Failed(Error),
}

/// The leader to forward to: none when there is none or it is this node.
fn leader_addr(metrics: &RaftMetrics) -> Option<NodeAddr> {
    if metrics.current_leader == Some(metrics.id) {
        return None;
    }
    crate::raft::leader_of(metrics)
}

fn quorum_ack_too_old(metrics: &RaftMetrics) -> bool {
    metrics
        .millis_since_quorum_ack
        .is_some_and(|ms| ms > QUORUM_ACK_LIMIT.as_millis() as u64)
}

fn quorum_lost(metrics: &RaftMetrics) -> Error {
    Error::new(
        Code::QuorumLost,
        "this node cannot reach a majority of the cluster's voters; writes are rejected until \
         the partition heals (reads are still served from local state)",
    )
    .with("term", metrics.current_term)
}

/// `quorum_lost` for a write this leader had already appended when it noticed: it is not
/// acknowledged, but commits after all if the partition heals before another leader is elected.
fn quorum_lost_in_flight(metrics: &RaftMetrics) -> Error {
    let mut error = quorum_lost(metrics).with("outcome", "unknown");
    error.message.push_str(
        "; this write was already in this leader's log and may still be applied if the \
         partition heals quickly: check before retrying",
    );
    error
}

/// `quorum_lost` for a write forwarded before this node noticed it is cut off: the leader may
/// have received it.
fn quorum_lost_unknown_outcome(metrics: &RaftMetrics) -> Error {
    let mut error = quorum_lost(metrics).with("outcome", "unknown");
    error.message.push_str(
        "; the leader may have received this write before the connection went silent: check \
         before retrying",
    );
    error
}

/// A forward whose connection broke after the write was sent.
fn outcome_unknown(error: &Error) -> bool {
    error.details.get("reason").map(String::as_str) == Some("outcome_unknown")
}

/// Errors that mean "the leader moved or vanished", after which the write is reassessed.
fn retryable(error: &Error) -> bool {
    let reason = error.details.get("reason").map(String::as_str);
    // A write whose outcome is unknown must not be proposed twice.
    !outcome_unknown(error) && (error.code == Code::NoLeader || reason == Some("unreachable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn situation() -> Situation {
        Situation {
            state: ServerState::Follower,
            millis_since_quorum_ack: None,
            reachable_voters: 3,
            voters: 3,
            deadline_passed: false,
        }
    }

    #[test]
    fn a_reachable_majority_keeps_waiting_until_the_deadline() {
        assert_eq!(classify(situation()), Verdict::Retry);
        let late = Situation {
            deadline_passed: true,
            state: ServerState::Candidate,
            ..situation()
        };
        assert_eq!(classify(late), Verdict::NoLeader);
    }

    #[test]
    fn a_minority_is_quorum_lost_at_once() {
        for (reachable, voters) in [(1, 3), (2, 5), (1, 2)] {
            let cut_off = Situation {
                reachable_voters: reachable,
                voters,
                ..situation()
            };
            assert_eq!(
                classify(cut_off),
                Verdict::QuorumLost,
                "{reachable}/{voters}"
            );
        }
        let majority = Situation {
            reachable_voters: 3,
            voters: 5,
            ..situation()
        };
        assert_eq!(classify(majority), Verdict::Retry);
    }

    #[test]
    fn a_leader_without_recent_quorum_acks_has_lost_quorum() {
        let stale = Situation {
            state: ServerState::Leader,
            millis_since_quorum_ack: Some(5_000),
            ..situation()
        };
        assert_eq!(classify(stale), Verdict::QuorumLost);
        let fresh = Situation {
            state: ServerState::Leader,
            millis_since_quorum_ack: Some(50),
            ..situation()
        };
        assert_eq!(classify(fresh), Verdict::Retry);
    }

    #[test]
    fn a_single_voter_is_its_own_majority() {
        let alone = Situation {
            reachable_voters: 1,
            voters: 1,
            state: ServerState::Leader,
            ..situation()
        };
        assert_eq!(classify(alone), Verdict::Retry);
    }
}
