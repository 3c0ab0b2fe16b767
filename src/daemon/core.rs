//! The state machine as the daemon runs it: [`State`] plus the publication of its watch events
//! to the node's [`WatchHub`] and the apply-latency metric.
//!
//! Raft applies committed commands through this wrapper; readers take the read lock and use
//! [`NodeCore::state`]. This module must not decide anything: it delegates every command to
//! the pure state machine and only forwards what it produced.

use std::sync::Arc;
use std::time::Instant;

use crate::raft::StateMachineCore;
use crate::state::{State, WatchHub};

use super::metrics::Metrics;

/// [`State`] with its events published after every apply or snapshot install.
pub struct NodeCore {
    state: State,
    hub: WatchHub,
    metrics: Arc<Metrics>,
}

impl NodeCore {
    /// An empty state publishing to `hub`.
    pub fn new(hub: WatchHub, metrics: Arc<Metrics>) -> Self {
        NodeCore {
            state: State::new(),
            hub,
            metrics,
        }
    }

    /// The replicated state, as of the last applied command.
    pub fn state(&self) -> &State {
        &self.state
    }
}

impl StateMachineCore for NodeCore {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        let started = Instant::now();
        let result = StateMachineCore::apply(&mut self.state, index, command);
        self.hub.publish(self.state.drain_events());
        self.metrics
            .apply_latency
            .observe(started.elapsed().as_secs_f64());
        result
    }

    fn snapshot(&self) -> Vec<u8> {
        self.state.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.state.restore(snapshot)?;
        self.hub.publish(self.state.drain_events());
        Ok(())
    }

    fn last_applied(&self) -> u64 {
        self.state.last_applied()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::proto::v1 as pb;
    use crate::state::WatchFilter;
    use crate::state::watch::WatchMessage;

    #[tokio::test]
    async fn applied_changes_reach_the_hub_and_the_metric() {
        let hub = WatchHub::new(16, 0);
        let metrics = Arc::new(Metrics::new());
        let mut core = NodeCore::new(hub.clone(), metrics.clone());
        let mut subscription = hub.subscribe(WatchFilter::default(), 0);
        let (_, hash) = crate::pki::tokens::OperatorToken::generate();
        let init = pb::Command {
            identity: "local".into(),
            time_unix_ms: 1_700_000_000_000,
            kind: Some(pb::command::Kind::InitCluster(pb::InitCluster {
                meta: Some(pb::ClusterMeta {
                    cluster_id: "c1".into(),
                    ..Default::default()
                }),
                node: Some(pb::Node {
                    name: "n1".into(),
                    raft_id: 1,
                    ..Default::default()
                }),
                bootstrap_token: Some(pb::OperatorToken {
                    sha256: hash.to_vec(),
                    ..Default::default()
                }),
            })),
            ..Default::default()
        };
        StateMachineCore::apply(&mut core, 1, &init.encode_to_vec());
        assert!(core.state().is_initialized());
        let Some(WatchMessage::Event(event)) = subscription.recv().await else {
            panic!("expected an event");
        };
        assert!(event.revision > 0);
        assert!(
            metrics
                .render()
                .contains("jaco_state_apply_latency_seconds_count 1")
        );
    }
}
