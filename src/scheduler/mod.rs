//! The scheduler (SPEC §5): on the leader, keeps every deployment's replicas placed and
//! converged, one batched `SchedulerBatch` per reconcile.
//!
//! The loop wakes on committed state changes (debounced), when a rollout's monitor period or
//! step timeout runs out, and on a safety tick; it re-checks leadership before every
//! reconcile and never acts on a follower. The decisions are [`plan::reconcile`]'s, a pure
//! function of the state and the time; this module only gathers, submits and waits.
//!
//! It must not decide placement or rollout steps itself, and must not touch Docker.

pub mod plan;
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

/// Runs the scheduler until `stop` turns true.
pub async fn run(member: Arc<Member>, settings: plan::Settings, mut stop: watch::Receiver<bool>) {
    let mut changes = member.hub.subscribe(WatchFilter::default(), 0);
    let mut wake_in = SAFETY_TICK;
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
            continue;
        }
        let now = crate::pki::now_unix_ms();
        let plan = member.read(|state| plan::reconcile(state, now, &settings));
        if let Some(at) = plan.wake_at {
            let millis = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
            wake_in = wake_in.min(Duration::from_millis(millis.max(1)));
        }
        let identity = Identity::Node(member.name.clone());
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
