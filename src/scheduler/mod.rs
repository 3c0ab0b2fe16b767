//! The scheduler (SPEC §5): on the leader, keeps every deployment's replicas placed and
//! converged, one batched `SchedulerBatch` per reconcile.
//!
//! The loop wakes on committed state changes (debounced), when a rollout's monitor period or
//! step timeout runs out, and on a safety tick; it re-checks leadership before every
//! reconcile and never acts on a follower. The decisions are [`plan::reconcile`]'s, a pure
//! function of the state and the time, and every 30 s [`rebalance::cycle`]'s (whose memory of
//! earlier cycles lives here, on the leader only); this module only gathers, submits and waits.
//!
//! It must not decide placement or rollout steps itself, and must not touch Docker.

pub mod plan;
pub mod rebalance;
pub mod rollout;

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::watch;

use crate::api::auth::Identity;
use crate::daemon::member::Member;
use crate::proto::v1 as pb;
use crate::proto::v1::command::Kind;
use crate::state::WatchFilter;

/// Changes committed within this window are reconciled together.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// Reconcile at least this often even when nothing is committed.
const SAFETY_TICK: Duration = Duration::from_secs(10);
/// After a failed submit, wait this long before the next attempt.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How often the rebalancer looks at the nodes' pressure (SPEC §5.5).
const REBALANCE_EVERY: Duration = Duration::from_secs(30);

/// Runs the scheduler until `stop` turns true.
pub async fn run(member: Arc<Member>, settings: plan::Settings, mut stop: watch::Receiver<bool>) {
    let mut changes = member.hub.subscribe(WatchFilter::default(), 0);
    let mut wake_in = SAFETY_TICK;
    let mut rebalancer = rebalance::Memory::default();
    let mut rebalance_at = tokio::time::Instant::now() + REBALANCE_EVERY;
    loop {
        tokio::select! {
            message = changes.recv() => {
                if message.is_none() {
                    return;
                }
                tokio::time::sleep(DEBOUNCE).await;
                while changes.try_recv().is_ok() {}
            }
            () = tokio::time::sleep(wake_in) => {}
            _ = stop.changed() => return,
        }
        wake_in = SAFETY_TICK;
        if member.metrics().state != ServerState::Leader {
            // A new leader starts from scratch (its memory is rebuilt within two cycles).
            rebalancer = rebalance::Memory::default();
            continue;
        }
        let now = crate::pki::now_unix_ms();
        let identity = Identity::Node(member.name.clone());
        if tokio::time::Instant::now() >= rebalance_at {
            rebalance_at = tokio::time::Instant::now() + REBALANCE_EVERY;
            let batch = member.read(|state| {
                let eligible = plan::eligible_nodes(state, now, &settings);
                rebalance::cycle(&mut rebalancer, state, &eligible, now).into_batch(state)
            });
            if let Some(batch) = batch {
                tracing::info!(moves = batch.upsert_replicas.len(), "rebalancing");
                if let Err(error) = member.submit(&identity, Kind::SchedulerBatch(batch)).await {
                    tracing::warn!(%error, "rebalancing batch failed");
                }
            }
        }
        wake_in = wake_in.min(rebalance_at.saturating_duration_since(tokio::time::Instant::now()));
        let plan = member.read(|state| plan::reconcile(state, now, &settings));
        if let Some(at) = plan.wake_at {
            let millis = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
            wake_in = wake_in.min(Duration::from_millis(millis.max(1)));
        }
        if !plan.is_empty() {
            tracing::debug!(batch = ?plan.batch, "scheduler batch");
            if let Err(error) = member
                .submit(&identity, Kind::SchedulerBatch(plan.batch))
                .await
            {
                tracing::warn!(%error, "scheduler batch failed; retrying");
                wake_in = RETRY_AFTER;
                continue;
            }
        }
        for node in plan.remove_nodes {
            tracing::info!(%node, "drained; removing the node");
            let kind = Kind::RemoveNode(pb::RemoveNode { node, force: false });
            if let Err(error) = member.submit(&identity, kind).await {
                tracing::warn!(%error, "removing a drained node failed; retrying");
                wake_in = RETRY_AFTER;
            }
        }
    }
}
