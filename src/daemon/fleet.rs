//! Fleet upgrades (SPEC §9.4) as the daemon runs them: the leader's controller and every
//! node's turn.
//!
//! Role: the controller runs on every node and acts only while its node leads: it asks
//! [`crate::upgrade::fleet::next_step`] what to do with the running plan and records the
//! answer (a node's turn begins, the plan fails or succeeds), hands leadership over through
//! `Internal.StartElection` when only the leader is left, and fails a plan that stays blocked
//! (quorum, an unready node) longer than [`BLOCKED_LIMIT`]. A node whose turn begins fetches
//! the plan's bundle from the node that holds it (`Internal.FetchBundle`), verifies it,
//! installs it and reboots, reporting each step on the plan; after the reboot
//! [`super::upgrade::report_after_boot`] reports the verdict. All progress lives in the
//! replicated plan, so a new leader or a restarted node carries on where the last one stopped.
//!
//! It must not decide the order, quorum or verdicts itself (those are `upgrade::fleet` and
//! `upgrade::record`), nor verify or write slots (`upgrade::install`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use openraft::ServerState;
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

use super::member::Member;
use super::upgrade::UpgradeHost;
use crate::api::auth::Identity;
use crate::error::{Code, Error};
use crate::proto::v1 as pb;
use crate::proto::v1::command::Kind;
use crate::state::{State, Subscription, WatchFilter};
use crate::upgrade::fleet::{self, ClusterView, DrainView, NodeView, Step, drain_requester};

/// How often the controller and the node agent look again without a change (deadlines).
const TICK: Duration = Duration::from_secs(2);

/// How long the next turn may stay blocked (quorum at risk, the node not ready, nobody to
/// take over leadership) before the leader stops the fleet.
pub const BLOCKED_LIMIT: Duration = Duration::from_secs(120);

/// How long a leader waits for a requested election before asking again.
const HANDOVER_RETRY: Duration = Duration::from_secs(10);

/// Attempts to fetch the bundle from the node that holds it (each resumes where the last
/// stopped).
const FETCH_ATTEMPTS: u32 = 5;

/// Bytes per `FetchBundle` message.
pub const FETCH_CHUNK: usize = 1024 * 1024;

/// Whether `id` has the form of the ids that name upgrade files (plans, uploads): 16 lowercase
/// hex characters, so that no request can name another path.
pub fn is_file_id(id: &str) -> bool {
    id.len() == 16
        && id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Where the bundle of plan `plan_id` is kept on a node (the bundle node serves it from there).
pub fn plan_bundle(host: &UpgradeHost, plan_id: &str) -> Result<PathBuf, Error> {
    if !is_file_id(plan_id) {
        return Err(Error::new(
            Code::ValidationFailed,
            format!("{plan_id:?} is not an upgrade plan id"),
        )
        .with("field", "plan_id"));
    }
    Ok(host.bundles_dir().join(format!("{plan_id}.bundle")))
}

/// The leader's controller: applies [`fleet::next_step`] to the running plan after every
/// change and every [`TICK`], until `stop`.
pub async fn run_controller(
    member: Arc<Member>,
    step_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = member.hub.subscribe(WatchFilter::default(), 0);
    let mut blocked_since: Option<tokio::time::Instant> = None;
    let mut last_handover: Option<tokio::time::Instant> = None;
    loop {
        if !woken(&mut changes, &mut stop).await {
            return;
        }
        let metrics = member.metrics();
        if metrics.state != ServerState::Leader {
            blocked_since = None;
            continue;
        }
        end_leftover_drains(&member).await;
        let now = crate::pki::now_unix_ms();
        let Some((plan, cluster)) = member.read(|s| {
            let plan = s.running_upgrade()?.clone();
            let cluster = cluster_view(s, &plan, &member, &metrics, now, step_timeout);
            Some((plan, cluster))
        }) else {
            blocked_since = None;
            continue;
        };
        let step = fleet::next_step(&plan, &cluster);
        if !matches!(step, Step::Blocked(_)) {
            blocked_since = None;
        }
        let kinds = match step {
            Step::Wait => continue,
            Step::Start(node) => vec![start_turn(&plan, &node, &member, now, false)],
            Step::Drain(node) => {
                let mut kinds = Vec::new();
                if member.read(|s| s.node(&node).is_some_and(|n| n.drain.is_none())) {
                    kinds.push(set_drain(&node, Some(&plan.id)));
                }
                kinds.push(start_turn(&plan, &node, &member, now, true));
                kinds
            }
            Step::Proceed(node) => vec![proceed(&plan, &node, &member)],
            Step::Undrain(node) => vec![set_drain(&node, None)],
            Step::HandOver(successor) => {
                if last_handover.is_none_or(|at| at.elapsed() >= HANDOVER_RETRY) {
                    last_handover = Some(tokio::time::Instant::now());
                    hand_over(&member, &successor).await;
                }
                continue;
            }
            Step::Blocked(reason) => {
                let since = *blocked_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() < BLOCKED_LIMIT {
                    tracing::warn!(plan = %plan.id, %reason, "upgrade waits");
                    continue;
                }
                vec![finish(
                    &plan,
                    pb::UpgradeState::Failed,
                    format!("{reason} (for {} s)", BLOCKED_LIMIT.as_secs()),
                )]
            }
            Step::Fail(reason) => vec![finish(&plan, pb::UpgradeState::Failed, reason)],
            Step::Finish => vec![finish(&plan, pb::UpgradeState::Succeeded, String::new())],
        };
        for kind in kinds {
            if let Err(error) = member
                .submit(&Identity::Node(member.name.clone()), kind)
                .await
            {
                tracing::warn!(plan = %plan.id, error = %error.render(true), "cannot record the upgrade step");
                break;
            }
        }
    }
}

/// Ends the drains of plans that no longer run (an aborted plan leaves its drain on the node
/// whose turn it interrupted).
async fn end_leftover_drains(member: &Member) {
    let leftover = member.read(|s| {
        let plans: Vec<pb::UpgradePlan> = s.upgrade_plans().cloned().collect();
        let drained: Vec<(String, String)> = s
            .nodes()
            .filter_map(|n| Some((n.name.clone(), n.drain.as_ref()?.requested_by.clone())))
            .collect();
        fleet::leftover_drains(&plans, &drained)
    });
    for node in leftover {
        tracing::info!(%node, "ending the drain of an upgrade plan that no longer runs");
        if let Err(error) = member
            .submit(&Identity::Node(member.name.clone()), set_drain(&node, None))
            .await
        {
            tracing::warn!(%node, error = %error.render(true), "cannot end the drain");
        }
    }
}

/// Waits for a state change or [`TICK`]; false once the daemon stops (or the hub closes).
async fn woken(changes: &mut Subscription, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        message = changes.recv() => {
            while changes.try_recv().is_ok() {}
            message.is_some()
        }
        () = tokio::time::sleep(TICK) => true,
        _ = stop.changed() => false,
    }
}

/// The cluster as [`fleet::next_step`] needs it.
fn cluster_view(
    state: &State,
    plan: &pb::UpgradePlan,
    member: &Member,
    metrics: &crate::raft::RaftMetrics,
    now_unix_ms: i64,
    step_timeout: Duration,
) -> ClusterView {
    let membership = metrics.membership_config.membership();
    let voters: std::collections::BTreeSet<_> = membership.voter_ids().collect();
    ClusterView {
        leader: member.name.clone(),
        nodes: state
            .nodes()
            .map(|n| NodeView {
                name: n.name.clone(),
                voter: voters.contains(&n.raft_id),
                healthy: n.status() == pb::NodeStatus::Ready
                    && n.reachability() == pb::Reachability::Reachable,
                drain: n.drain.as_ref().map(|d| DrainView {
                    by_plan: d.requested_by == drain_requester(&plan.id),
                    done: d.completed_at_unix_ms != 0,
                    timed_out: n.status() == pb::NodeStatus::DrainTimeout,
                }),
            })
            .collect(),
        now_unix_ms,
        step_timeout_ms: i64::try_from(step_timeout.as_millis()).unwrap_or(i64::MAX),
    }
}

/// The version a node runs, as the plan shows it (the image's on the appliance).
pub fn running_version(node: &pb::Node) -> String {
    if node.os_version.is_empty() {
        node.version.clone()
    } else {
        node.os_version.clone()
    }
}

/// The command that drains `node` for `plan_id`, or ends its drain (`None`).
fn set_drain(node: &str, plan_id: Option<&str>) -> Kind {
    Kind::SetNodeDrain(pb::SetNodeDrain {
        node: node.to_owned(),
        drain: plan_id.map(|id| pb::NodeDrain {
            requested_by: drain_requester(id),
            ..Default::default()
        }),
    })
}

const FETCHING: &str = "fetching the bundle";

/// The command that begins `node`'s turn (by draining it when `drain`).
fn start_turn(plan: &pb::UpgradePlan, node: &str, member: &Member, now: i64, drain: bool) -> Kind {
    let from_version = member
        .read(|s| s.node(node).map(running_version))
        .unwrap_or_default();
    tracing::info!(plan = %plan.id, %node, from = %from_version, to = %plan.version, drain, "upgrade turn begins");
    let (state, message) = if drain {
        (
            pb::UpgradeNodeState::Draining,
            "moving its replicas to other nodes",
        )
    } else {
        (pb::UpgradeNodeState::Downloading, FETCHING)
    };
    Kind::UpdateUpgrade(pb::UpdateUpgrade {
        plan_id: plan.id.clone(),
        state: pb::UpgradeState::InProgress.into(),
        current_node: node.to_owned(),
        node_status: Some(pb::UpgradeNodeStatus {
            node: node.to_owned(),
            state: state.into(),
            from_version,
            to_version: plan.version.clone(),
            message: message.to_owned(),
            started_at_unix_ms: now,
            ..Default::default()
        }),
        reason: String::new(),
    })
}

/// The command that moves a drained `node` on to fetching the bundle.
fn proceed(plan: &pb::UpgradePlan, node: &str, member: &Member) -> Kind {
    let status = node_status(
        member,
        plan,
        node,
        pb::UpgradeNodeState::Downloading,
        FETCHING,
        "",
    );
    Kind::UpdateUpgrade(pb::UpdateUpgrade {
        plan_id: plan.id.clone(),
        node_status: Some(status),
        ..Default::default()
    })
}

/// The command that ends `plan` in `state`.
fn finish(plan: &pb::UpgradePlan, state: pb::UpgradeState, reason: String) -> Kind {
    tracing::info!(plan = %plan.id, ?state, %reason, "upgrade plan ends");
    Kind::UpdateUpgrade(pb::UpdateUpgrade {
        plan_id: plan.id.clone(),
        state: state.into(),
        reason,
        ..Default::default()
    })
}

/// Asks `successor` to campaign, so that this leader can take its own turn as a follower.
async fn hand_over(member: &Member, successor: &str) {
    let addr = match member.read(|s| crate::api::replica_io::node_addr(s, successor)) {
        Ok(addr) => addr,
        Err(error) => {
            tracing::warn!(error = %error.render(true), "cannot hand leadership over");
            return;
        }
    };
    tracing::info!(%successor, "handing leadership over before upgrading this node");
    let result = async {
        let mut client = member.peers.client(&addr)?;
        client
            .start_election(pb::StartElectionRequest {
                reason: format!("{} upgrades itself last", member.name),
            })
            .await
            .map_err(|s| Error::from_status(&s))
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(%successor, error = %error.render(true), "the successor did not campaign");
    }
}

/// Every node's agent: takes this node's turn when the controller begins it, and forgets the
/// bundles of plans that ended.
pub async fn run_agent(
    member: Arc<Member>,
    host: Arc<UpgradeHost>,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = member.hub.subscribe(WatchFilter::default(), 0);
    loop {
        let plan = member.read(|s| s.running_upgrade().cloned());
        forget_bundles(&host, plan.as_ref().map(|p| p.id.as_str())).await;
        if let Some(plan) = plan.filter(|p| my_turn_to_act(p, &member.name, &host)) {
            take_turn(&member, &host, &plan).await;
        }
        if !woken(&mut changes, &mut stop).await {
            return;
        }
    }
}

/// Whether this node must (re)do its turn: it is the plan's current node, before its reboot,
/// and nothing it installed for this plan waits for a boot.
fn my_turn_to_act(plan: &pb::UpgradePlan, me: &str, host: &UpgradeHost) -> bool {
    let Some(status) = plan.nodes.iter().find(|n| n.node == me) else {
        return false;
    };
    let before_reboot = matches!(
        status.state(),
        pb::UpgradeNodeState::Downloading
            | pb::UpgradeNodeState::Verifying
            | pb::UpgradeNodeState::Installing
    );
    let installed = host
        .records()
        .pending()
        .ok()
        .flatten()
        .is_some_and(|p| p.plan_id == plan.id);
    plan.current_node == me && before_reboot && !installed
}

/// Deletes the bundles of plans other than `running`.
async fn forget_bundles(host: &UpgradeHost, running: Option<&str>) {
    let dir = host.bundles_dir();
    let Ok(mut listing) = tokio::fs::read_dir(&dir).await else {
        return;
    };
    while let Ok(Some(entry)) = listing.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let plan = name.split('.').next().unwrap_or_default();
        if running != Some(plan) {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
}

/// This node's turn: fetch, verify, install, reboot, each step recorded on the plan. A turn
/// that ends early is recorded as the node's verdict (the controller then stops the fleet on a
/// failure, or goes on after a node that already runs the version).
async fn take_turn(member: &Member, host: &Arc<UpgradeHost>, plan: &pb::UpgradePlan) {
    let Err((state, error)) = turn_steps(member, host, plan).await else {
        return;
    };
    if state == pb::UpgradeNodeState::Failed {
        tracing::error!(error = %error.render(true), "this node's upgrade failed");
    }
    let mut status = node_status(member, plan, &member.name, state, &error.message, "");
    if state == pb::UpgradeNodeState::Failed {
        status.code = error.code.to_string();
    }
    status.details = error.details.clone().into_iter().collect();
    status.finished_at_unix_ms = crate::pki::now_unix_ms();
    record_step(member, plan, status).await;
}

/// How a turn ended early: the node's verdict and why.
type TurnEnd = (pb::UpgradeNodeState, Error);

fn failed(error: Error) -> TurnEnd {
    (pb::UpgradeNodeState::Failed, error)
}

async fn turn_steps(
    member: &Member,
    host: &Arc<UpgradeHost>,
    plan: &pb::UpgradePlan,
) -> Result<(), TurnEnd> {
    let step = |state, message: &str| node_status(member, plan, &member.name, state, message, "");
    let bundle = obtain_bundle(member, host, plan).await.map_err(failed)?;
    let message = "checking the signature, checksums and version rules";
    record_step(member, plan, step(pb::UpgradeNodeState::Verifying, message)).await;
    let admitted = {
        let (host, bundle, force) = (host.clone(), bundle.clone(), plan.force);
        blocking(move || host.admit(&bundle, force)).await
    };
    let verified = admitted.map_err(|error| {
        if error.details.get("reason").map(String::as_str) == Some("same_version") {
            (pb::UpgradeNodeState::Skipped, error)
        } else {
            failed(error)
        }
    })?;
    if verified.manifest_sha256 != plan.manifest_sha256 {
        return Err(failed(crate::upgrade::verification_failed(
            "bundle_changed",
            format!(
                "the bundle this node received has manifest SHA-256 {}, the plan's is {}",
                verified.manifest_sha256, plan.manifest_sha256
            ),
        )));
    }
    let message = "writing the new version";
    record_step(
        member,
        plan,
        step(pb::UpgradeNodeState::Installing, message),
    )
    .await;
    let installed = {
        let (host, bundle, force, id) = (host.clone(), bundle, plan.force, plan.id.clone());
        blocking(move || host.install(&bundle, force, &id)).await
    }
    .map_err(failed)?;
    tracing::info!(target = %installed.target, entry = %installed.committed, "upgrade installed; rebooting");
    let rebooting = node_status(
        member,
        plan,
        &member.name,
        pb::UpgradeNodeState::Rebooting,
        "rebooting into the new version",
        &installed.target,
    );
    record_step(member, plan, rebooting).await;
    host.reboot().await.map_err(failed)
}

/// `node`'s status in `plan`, moved to `state` with `message` (and the slot written).
fn node_status(
    member: &Member,
    plan: &pb::UpgradePlan,
    node: &str,
    state: pb::UpgradeNodeState,
    message: &str,
    slot: &str,
) -> pb::UpgradeNodeStatus {
    let mut status = member
        .read(|s| {
            s.upgrade_plans()
                .find(|p| p.id == plan.id)
                .and_then(|p| p.nodes.iter().find(|n| n.node == node).cloned())
        })
        .unwrap_or_default();
    node.clone_into(&mut status.node);
    status.state = state.into();
    message.clone_into(&mut status.message);
    if !slot.is_empty() {
        slot.clone_into(&mut status.target_slot);
    }
    status
}

/// Records this node's `status` on the plan (a lost report is logged: the controller's step
/// deadline covers a node that cannot report at all).
async fn record_step(member: &Member, plan: &pb::UpgradePlan, status: pb::UpgradeNodeStatus) {
    let kind = Kind::UpdateUpgrade(pb::UpdateUpgrade {
        plan_id: plan.id.clone(),
        node_status: Some(status),
        ..Default::default()
    });
    if let Err(error) = member
        .submit(&Identity::Node(member.name.clone()), kind)
        .await
    {
        tracing::warn!(error = %error.render(true), "cannot record this node's upgrade step");
    }
}

/// Runs blocking upgrade work (hashing, disk writes) off the async threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        Error::new(Code::Internal, format!("the upgrade task panicked: {e}"))
            .with("reason", "task_failed")
    })?
}

/// The plan's bundle on this node: kept here when this node holds it, else fetched from the
/// node that does (resuming after an interrupted transfer).
async fn obtain_bundle(
    member: &Member,
    host: &UpgradeHost,
    plan: &pb::UpgradePlan,
) -> Result<PathBuf, Error> {
    let path = plan_bundle(host, &plan.id)?;
    if tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Ok(path);
    }
    if plan.bundle_node == member.name {
        return Err(Error::new(
            Code::UpgradeFailed,
            format!("the bundle of plan {} is gone from this node", plan.id),
        )
        .with("reason", "bundle_unavailable")
        .with("path", path.display()));
    }
    let addr = member.read(|s| crate::api::replica_io::node_addr(s, &plan.bundle_node))?;
    let partial = path.with_extension("partial");
    let mut last = None;
    for attempt in 1..=FETCH_ATTEMPTS {
        match fetch_once(member, &addr, &plan.id, &partial).await {
            Ok(()) => {
                tokio::fs::rename(&partial, &path)
                    .await
                    .map_err(|e| crate::upgrade::io_failed("store", &path, &e))?;
                return Ok(path);
            }
            Err(error) => {
                tracing::warn!(attempt, from = %plan.bundle_node, error = %error.render(true), "bundle fetch interrupted");
                last = Some(error);
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
        }
    }
    let error = last.expect("at least one attempt");
    Err(Error::new(
        Code::UpgradeFailed,
        format!(
            "cannot fetch the bundle from {} after {FETCH_ATTEMPTS} attempts: {}",
            plan.bundle_node, error.message
        ),
    )
    .with("reason", "bundle_unavailable")
    .with("bundle_node", &plan.bundle_node))
}

/// One `FetchBundle` call appending to `partial` from its current length.
async fn fetch_once(
    member: &Member,
    addr: &crate::raft::NodeAddr,
    plan_id: &str,
    partial: &Path,
) -> Result<(), Error> {
    if let Some(dir) = partial.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| crate::upgrade::io_failed("create", dir, &e))?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(partial)
        .await
        .map_err(|e| crate::upgrade::io_failed("open", partial, &e))?;
    let mut offset = file
        .metadata()
        .await
        .map_err(|e| crate::upgrade::io_failed("stat", partial, &e))?
        .len();
    let mut client = member.peers.client(addr)?;
    let mut stream = client
        .fetch_bundle(pb::FetchBundleRequest {
            plan_id: plan_id.to_owned(),
            offset,
        })
        .await
        .map_err(|s| Error::from_status(&s))?
        .into_inner();
    let mut size = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| Error::from_status(&s))?;
        if chunk.offset != offset {
            return Err(Error::new(
                Code::UpgradeFailed,
                format!("bundle chunk at {}, expected {offset}", chunk.offset),
            )
            .with("reason", "bundle_unavailable"));
        }
        file.write_all(&chunk.data)
            .await
            .map_err(|e| crate::upgrade::io_failed("write", partial, &e))?;
        offset += chunk.data.len() as u64;
        size = Some(chunk.size_bytes);
    }
    file.sync_all()
        .await
        .map_err(|e| crate::upgrade::io_failed("sync", partial, &e))?;
    match size {
        Some(size) if size == offset => Ok(()),
        // Nothing was left to send: the file was already whole.
        None if offset > 0 => Ok(()),
        _ => Err(Error::new(
            Code::UpgradeFailed,
            format!("the bundle transfer stopped at byte {offset}"),
        )
        .with("reason", "bundle_unavailable")),
    }
}

/// Serves `FetchBundle`: the bundle of `plan_id` on this node from `offset`, in
/// [`FETCH_CHUNK`] messages.
pub async fn serve_bundle(
    host: &UpgradeHost,
    plan_id: &str,
    offset: u64,
) -> Result<tokio::sync::mpsc::Receiver<Result<pb::FetchBundleResponse, Error>>, Error> {
    let path = plan_bundle(host, plan_id)?;
    let mut file = tokio::fs::File::open(&path).await.map_err(|e| {
        Error::new(
            Code::NotFound,
            format!("this node holds no bundle for plan {plan_id}: {e}"),
        )
        .with("plan_id", plan_id)
    })?;
    let size = file
        .metadata()
        .await
        .map_err(|e| crate::upgrade::io_failed("stat", &path, &e))?
        .len();
    if offset > size {
        return Err(Error::new(
            Code::ValidationFailed,
            format!("offset {offset} is past the bundle's {size} bytes"),
        )
        .with("field", "offset"));
    }
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| crate::upgrade::io_failed("seek", &path, &e))?;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let mut offset = offset;
        loop {
            let mut data = vec![0; FETCH_CHUNK];
            let read = match file.read(&mut data).await {
                Ok(0) => return,
                Ok(read) => read,
                Err(e) => {
                    let _ = sender
                        .send(Err(crate::upgrade::io_failed("read", &path, &e)))
                        .await;
                    return;
                }
            };
            data.truncate(read);
            let chunk = pb::FetchBundleResponse {
                size_bytes: size,
                offset,
                data,
            };
            offset += read as u64;
            if sender.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    Ok(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(dir: &Path) -> UpgradeHost {
        let mut config = super::super::config::DaemonConfig::default();
        config.upgrade.state_dir = Some(dir.to_owned());
        UpgradeHost::new(&config)
    }

    async fn served(host: &UpgradeHost, plan: &str, offset: u64) -> Result<Vec<u8>, Error> {
        let mut chunks = serve_bundle(host, plan, offset).await?;
        let mut bytes = Vec::new();
        let mut expected_offset = offset;
        while let Some(chunk) = chunks.recv().await {
            let chunk = chunk?;
            assert_eq!(chunk.offset, expected_offset);
            assert!(chunk.data.len() <= FETCH_CHUNK);
            expected_offset += chunk.data.len() as u64;
            bytes.extend_from_slice(&chunk.data);
        }
        Ok(bytes)
    }

    #[tokio::test]
    async fn a_bundle_is_served_in_chunks_from_any_offset_and_bad_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let host = host(dir.path());
        let plan = "0123456789abcdef";
        let bundle: Vec<u8> = (0..FETCH_CHUNK * 2 + 77).map(|i| (i % 251) as u8).collect();
        let path = plan_bundle(&host, plan).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bundle).unwrap();

        assert_eq!(served(&host, plan, 0).await.unwrap(), bundle);
        // A fetch that resumes after an interruption gets exactly the rest.
        let resume = FETCH_CHUNK as u64 + 5;
        assert_eq!(
            served(&host, plan, resume).await.unwrap(),
            bundle[FETCH_CHUNK + 5..]
        );
        assert!(
            served(&host, plan, bundle.len() as u64)
                .await
                .unwrap()
                .is_empty()
        );

        let past = served(&host, plan, bundle.len() as u64 + 1)
            .await
            .unwrap_err();
        assert_eq!(past.code, Code::ValidationFailed);
        assert_eq!(past.details["field"], "offset");
        let other = served(&host, "fedcba9876543210", 0).await.unwrap_err();
        assert_eq!(other.code, Code::NotFound);
        // A plan id is 16 hex characters: nothing else names a file.
        let escape = served(&host, "../../etc/passwd", 0).await.unwrap_err();
        assert_eq!(escape.code, Code::ValidationFailed);
    }
}
