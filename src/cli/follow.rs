//! Following the cluster from the CLI: `apply` and `rollback` waiting for convergence, and
//! `status --watch`.
//!
//! Role: the I/O loop around [`super::progress`]. It subscribes to `Deploy.Watch` first (from
//! the commit's state revision, so no change can slip between the commit and the first read),
//! then re-reads `Deploy.Status` for the deployment after every burst of changes (a resync
//! message is a change too) and shows the result: a frame redrawn in place on a terminal, plain
//! lines for each change otherwise, nothing with `-q`. Contract: it stops when the assessment
//! is final, when the deadline passes, or on Ctrl-C (SIGINT), and says which; it never changes
//! the deployment. A watch stream that the daemon ends is an error (`reason=stream_ended`).
//!
//! This module must not decide what converged means ([`super::progress::assess`] does) nor
//! what a command prints at the end.

use std::io::Write;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;
use tonic::Streaming;

use super::Failure;
use super::client::Service;
use super::progress::{self, Goal, Progress};
use super::terminal::Redraw;
use crate::error::{Code, Error};
use crate::proto::v1 as pb;
use crate::proto::v1::deploy_client::DeployClient;

/// Changes that arrive within this long of each other are shown together…
const DEBOUNCE: Duration = Duration::from_millis(100);

/// …but a steady stream of changes is shown at least this often.
const MAX_BATCH: Duration = Duration::from_millis(500);

/// The entity types whose changes can change a deployment's status.
const STATUS_TYPES: &[pb::EntityType] = &[
    pb::EntityType::Deployment,
    pb::EntityType::ReplicaDesired,
    pb::EntityType::ReplicaObserved,
    pb::EntityType::Rollout,
    pb::EntityType::Route,
    pb::EntityType::TcpRoute,
    pb::EntityType::Certificate,
];

/// A subscription to state changes that wake a follower.
pub struct Changes {
    stream: Streaming<pb::WatchResponse>,
}

impl Changes {
    /// Subscribes to changes of `deployment` (all when `None`) after state revision `since`
    /// (0: from now on).
    pub async fn subscribe(
        deploy: &mut DeployClient<Service>,
        deployment: Option<&str>,
        since: u64,
    ) -> Result<Changes, Failure> {
        let request = pb::WatchRequest {
            types: STATUS_TYPES.iter().map(|t| *t as i32).collect(),
            since_revision: since,
            deployment: deployment.unwrap_or_default().to_owned(),
            progress_interval_ms: 0,
        };
        let stream = deploy.watch(request).await?.into_inner();
        Ok(Changes { stream })
    }

    /// Waits for the next change, then takes every change that follows within [`DEBOUNCE`],
    /// for at most [`MAX_BATCH`].
    pub async fn next(&mut self) -> Result<(), Failure> {
        self.one().await?;
        let batch_ends = Instant::now() + MAX_BATCH;
        loop {
            let left = batch_ends.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match tokio::time::timeout(DEBOUNCE.min(left), self.one()).await {
                Ok(message) => message?,
                Err(_) => return Ok(()),
            }
        }
    }

    async fn one(&mut self) -> Result<(), Failure> {
        match self.stream.message().await? {
            Some(_) => Ok(()),
            None => Err(Failure::from(
                Error::new(
                    Code::Internal,
                    "the daemon ended the watch stream; the deployment is unaffected, run \
                     `jaco status` to see where it is",
                )
                .with("reason", "stream_ended"),
            )),
        }
    }
}

/// SIGINT, caught so that following ends with a message instead of a dead process.
pub fn interrupts() -> Result<Signal, Failure> {
    signal(SignalKind::interrupt()).map_err(|e| {
        Failure::from(
            Error::new(Code::Internal, format!("cannot handle Ctrl-C: {e}"))
                .with("reason", "signal_failed"),
        )
    })
}

/// How progress is shown while following.
pub enum Live {
    /// A frame redrawn in place (standard error is a terminal).
    Redraw(Redraw),
    /// One line per change.
    Lines,
    /// Nothing (`-q`).
    Silent,
}

impl Live {
    fn show(
        &mut self,
        err: &mut dyn Write,
        goal: &Goal,
        before: &Progress,
        after: &Progress,
    ) -> std::io::Result<()> {
        match self {
            Live::Redraw(redraw) => {
                err.write_all(redraw.frame(&progress::frame(goal, after)).as_bytes())?
            }
            Live::Lines => {
                for line in progress::changes(before, after) {
                    writeln!(err, "{line}")?;
                }
            }
            Live::Silent => return Ok(()),
        }
        err.flush()
    }
}

/// How following an apply ended.
#[derive(Debug)]
pub enum Ending {
    /// The assessment became final (converged, failed, superseded, deleted).
    Over(Progress),
    /// The deadline passed first; the last assessment says what was pending.
    TimedOut(Progress),
    /// The operator pressed Ctrl-C.
    Interrupted(Progress),
}

/// The deployment's status; a deployment that is gone reads as an empty status.
async fn status_of(
    deploy: &mut DeployClient<Service>,
    deployment: &str,
    consistent: bool,
) -> Result<pb::DeployStatusResponse, Failure> {
    let request = pb::DeployStatusRequest {
        deployment: deployment.to_owned(),
        service: String::new(),
        consistent,
    };
    match deploy.status(request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) if Error::from_status(&status).code == Code::DeploymentNotFound => {
            Ok(pb::DeployStatusResponse::default())
        }
        Err(status) => Err(Failure::from(status)),
    }
}

/// Follows the convergence of `goal`, committed at state revision `since`, for at most
/// `timeout`, showing progress on `err`.
pub async fn converge(
    deploy: &mut DeployClient<Service>,
    goal: &Goal,
    since: u64,
    timeout: Duration,
    live: &mut Live,
    err: &mut dyn Write,
) -> Result<Ending, Failure> {
    let deadline = Instant::now() + timeout;
    let mut interrupted = interrupts()?;
    let mut changes = Changes::subscribe(deploy, Some(&goal.deployment), since).await?;
    let mut last = Progress::empty();
    // The first read must include the commit, wherever this node's replication stands.
    let mut consistent = true;
    loop {
        let status = status_of(deploy, &goal.deployment, consistent).await?;
        consistent = false;
        let progress = progress::assess(goal, &status);
        live.show(err, goal, &last, &progress)?;
        last = progress;
        if last.outcome.is_final() {
            return Ok(Ending::Over(last));
        }
        tokio::select! {
            changed = changes.next() => changed?,
            () = tokio::time::sleep_until(deadline) => return Ok(Ending::TimedOut(last)),
            _ = interrupted.recv() => return Ok(Ending::Interrupted(last)),
        }
    }
}

/// Shows the status `request` asks for, then again after every burst of changes, until Ctrl-C.
pub async fn watch_status(
    deploy: &mut DeployClient<Service>,
    request: pb::DeployStatusRequest,
    mut show: impl FnMut(&pb::DeployStatusResponse) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut interrupted = interrupts()?;
    let deployment = Some(request.deployment.as_str()).filter(|d| !d.is_empty());
    let mut changes = Changes::subscribe(deploy, deployment, 0).await?;
    loop {
        let status = deploy.status(request.clone()).await?.into_inner();
        show(&status)?;
        tokio::select! {
            changed = changes.next() => changed?,
            _ = interrupted.recv() => return Ok(()),
        }
    }
}
