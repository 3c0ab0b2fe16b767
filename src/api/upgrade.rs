//! The `Upgrade` gRPC service (SPEC §9.3–9.4): bundle uploads, starting an upgrade of the
//! serving node, its status and abort.
//!
//! Role: admit a request (the bundle is verified and the version rules checked before anything
//! is recorded, so a bad bundle changes nothing), record the plan in raft, and hand the install
//! and reboot to a background task that reports each step on the plan. This build upgrades the
//! node that serves the request; a rollout over several nodes is refused with
//! `validation_failed` (`reason: fleet_rollout_unavailable`) rather than half done.
//!
//! This module must not verify or write anything itself ([`crate::daemon::upgrade`] does).

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tonic::{Request, Response, Status, Streaming};

use super::auth::Identity;
use super::context::{ApiContext, caller, require_local};
use crate::daemon::member::Member;
use crate::daemon::upgrade::UpgradeHost;
use crate::error::{Code, Error};
use crate::proto::v1 as pb;
use crate::proto::v1::command::Kind;
use crate::proto::v1::start_upgrade_request::Bundle;
use crate::proto::v1::upgrade_server::Upgrade;

/// The `Upgrade` service.
pub struct UpgradeService {
    context: Arc<ApiContext>,
}

impl UpgradeService {
    /// The service over the shared API context.
    pub fn new(context: Arc<ApiContext>) -> Self {
        UpgradeService { context }
    }
}

fn invalid(field: &str, reason: &str, message: impl Into<String>) -> Error {
    Error::new(Code::ValidationFailed, message)
        .with("field", field)
        .with("reason", reason)
}

/// An upload id: 16 lowercase hex characters (it names a file).
fn upload_path(host: &UpgradeHost, id: &str) -> Result<PathBuf, Error> {
    if id.len() != 16
        || !id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err(invalid(
            "upload_id",
            "upload_unknown",
            format!("{id:?} is not an upload id"),
        ));
    }
    let path = host.uploads_dir().join(format!("{id}.bundle"));
    if !path.exists() {
        return Err(Error::new(
            Code::NotFound,
            format!("no uploaded bundle {id} on this node"),
        )
        .with("upload_id", id));
    }
    Ok(path)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        Error::new(Code::Internal, format!("the upgrade task panicked: {e}"))
            .with("reason", "task_failed")
    })?
}

#[tonic::async_trait]
impl Upgrade for UpgradeService {
    async fn start(
        &self,
        request: Request<pb::StartUpgradeRequest>,
    ) -> Result<Response<pb::StartUpgradeResponse>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let host = self.context.upgrade_host()?;
        let request = request.into_inner();
        let me = member.name.clone();
        let others: Vec<String> = if request.all {
            member.read(|s| {
                s.nodes()
                    .map(|n| n.name.clone())
                    .filter(|n| *n != me)
                    .collect()
            })
        } else {
            request
                .nodes
                .iter()
                .filter(|n| **n != me)
                .cloned()
                .collect()
        };
        if !others.is_empty() {
            return Err(invalid(
                "nodes",
                "fleet_rollout_unavailable",
                format!(
                    "this build upgrades the node that serves the request ({me}); a rollout \
                     over other nodes ({}) is not available yet: run the upgrade against each \
                     node in turn",
                    others.join(", ")
                ),
            )
            .into());
        }
        let bundle = match &request.bundle {
            Some(Bundle::Path(path)) => {
                require_local(&identity, "a bundle path on the node")?;
                PathBuf::from(path)
            }
            Some(Bundle::UploadId(id)) => upload_path(&host, id)?,
            Some(Bundle::Url(_)) => {
                return Err(invalid(
                    "bundle",
                    "url_unavailable",
                    "bundle URLs are not fetched by this build; pass a file (the CLI uploads it)",
                )
                .into());
            }
            None => return Err(invalid("bundle", "missing", "the request names no bundle").into()),
        };
        if let Some(running) = member.read(|s| s.running_upgrade().cloned()) {
            return Err(Error::new(
                Code::UpgradeInProgress,
                format!(
                    "upgrade {} to {} is still running",
                    running.id, running.version
                ),
            )
            .with("plan_id", running.id)
            .into());
        }
        let verified = {
            let (host, bundle) = (host.clone(), bundle.clone());
            let force = request.force;
            blocking(move || host.admit(&bundle, force)).await?
        };
        let plan_id = crate::pki::hex(&rand::random::<[u8; 8]>());
        let from_version = host.running_version();
        let plan = pb::UpgradePlan {
            id: plan_id.clone(),
            version: verified.manifest.version.clone(),
            min_version: verified.manifest.min_version.clone(),
            bundle_node: me.clone(),
            manifest_sha256: verified.manifest_sha256.clone(),
            force: request.force,
            drain: request.drain,
            nodes: vec![pb::UpgradeNodeStatus {
                node: me.clone(),
                state: pb::UpgradeNodeState::Installing.into(),
                from_version,
                to_version: verified.manifest.version.clone(),
                started_at_unix_ms: crate::pki::now_unix_ms(),
                ..Default::default()
            }],
            ..Default::default()
        };
        member
            .submit(
                &identity,
                Kind::StartUpgrade(pb::StartUpgrade { plan: Some(plan) }),
            )
            .await?;
        member
            .submit(
                &identity,
                Kind::UpdateUpgrade(pb::UpdateUpgrade {
                    plan_id: plan_id.clone(),
                    state: pb::UpgradeState::InProgress.into(),
                    current_node: me,
                    ..Default::default()
                }),
            )
            .await?;
        tokio::spawn(install_and_reboot(
            member.clone(),
            host,
            bundle,
            request.force,
            plan_id.clone(),
        ));
        let plan = member.read(|s| s.upgrade_plans().find(|p| p.id == plan_id).cloned());
        Ok(Response::new(pb::StartUpgradeResponse { plan }))
    }

    async fn status(
        &self,
        request: Request<pb::UpgradeStatusRequest>,
    ) -> Result<Response<pb::UpgradeStatusResponse>, Status> {
        caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        member.read_barrier(request.consistent).await?;
        let plan = member.read(|s| {
            if request.plan_id.is_empty() {
                s.running_upgrade()
                    .or_else(|| s.upgrade_plans().last())
                    .cloned()
            } else {
                s.upgrade_plans().find(|p| p.id == request.plan_id).cloned()
            }
        });
        if plan.is_none() && !request.plan_id.is_empty() {
            return Err(Error::new(
                Code::NotFound,
                format!("no upgrade plan {}", request.plan_id),
            )
            .with("plan_id", request.plan_id)
            .into());
        }
        Ok(Response::new(pb::UpgradeStatusResponse { plan }))
    }

    async fn abort(
        &self,
        request: Request<pb::AbortUpgradeRequest>,
    ) -> Result<Response<pb::AbortUpgradeResponse>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        let reason = if request.reason.is_empty() {
            format!("aborted by {}", identity.audit_name())
        } else {
            request.reason.clone()
        };
        member
            .submit(
                &identity,
                Kind::AbortUpgrade(pb::AbortUpgrade {
                    plan_id: request.plan_id.clone(),
                    reason,
                }),
            )
            .await?;
        let plan = member.read(|s| {
            s.upgrade_plans()
                .filter(|p| request.plan_id.is_empty() || p.id == request.plan_id)
                .last()
                .cloned()
        });
        Ok(Response::new(pb::AbortUpgradeResponse { plan }))
    }

    async fn upload_bundle(
        &self,
        request: Request<Streaming<pb::UploadBundleRequest>>,
    ) -> Result<Response<pb::UploadBundleResponse>, Status> {
        caller(&request)?;
        let member = self.context.member()?;
        let host = self.context.upgrade_host()?;
        let mut stream = request.into_inner();
        let header = match stream.next().await {
            Some(Ok(pb::UploadBundleRequest {
                chunk: Some(pb::upload_bundle_request::Chunk::Header(header)),
            })) => header,
            Some(Err(status)) => return Err(status),
            _ => {
                return Err(
                    invalid("header", "missing", "an upload starts with its header").into(),
                );
            }
        };
        let dir = host.uploads_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| crate::upgrade::io_failed("create", &dir, &e))?;
        // One upload at a time is kept: older ones are dropped when a new one arrives.
        if let Ok(mut listing) = tokio::fs::read_dir(&dir).await {
            while let Ok(Some(entry)) = listing.next_entry().await {
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
        let id = crate::pki::hex(&rand::random::<[u8; 8]>());
        let partial = dir.join(format!("{id}.partial"));
        let result = receive(&mut stream, &partial, &header).await;
        if let Err(error) = result {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(error.into());
        }
        let path = dir.join(format!("{id}.bundle"));
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|e| crate::upgrade::io_failed("store", &path, &e))?;
        let verified = {
            let (host, path) = (host.clone(), path.clone());
            blocking(move || crate::upgrade::bundle::verify(&path, &host.keys()?)).await
        };
        let verified = match verified {
            Ok(verified) => verified,
            Err(error) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(error.into());
            }
        };
        Ok(Response::new(pb::UploadBundleResponse {
            upload_id: id,
            node: member.name.clone(),
            version: verified.manifest.version,
            arch: verified.manifest.arch,
            manifest_sha256: verified.manifest_sha256,
        }))
    }
}

/// Writes the upload's data chunks to `path`, checking size and SHA-256 against the header.
async fn receive(
    stream: &mut Streaming<pb::UploadBundleRequest>,
    path: &std::path::Path,
    header: &pb::UploadBundleHeader,
) -> Result<(), Error> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| crate::upgrade::io_failed("create", path, &e))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(message) = stream.next().await {
        let message = message.map_err(|s| Error::from_status(&s))?;
        let Some(pb::upload_bundle_request::Chunk::Data(data)) = message.chunk else {
            return Err(invalid(
                "chunk",
                "unexpected_header",
                "a second upload header",
            ));
        };
        size += data.len() as u64;
        if size > header.size_bytes {
            return Err(invalid(
                "size_bytes",
                "size_mismatch",
                "more data than the header announced",
            ));
        }
        hasher.update(&data);
        file.write_all(&data)
            .await
            .map_err(|e| crate::upgrade::io_failed("write", path, &e))?;
    }
    file.sync_all()
        .await
        .map_err(|e| crate::upgrade::io_failed("sync", path, &e))?;
    let sha256 = crate::pki::hex(&hasher.finalize());
    if size != header.size_bytes || sha256 != header.sha256 {
        return Err(Error::new(
            Code::UpgradeVerificationFailed,
            format!(
                "the upload of {} arrived as {size} bytes with SHA-256 {sha256}, the header said \
                 {} bytes with {}",
                header.file_name, header.size_bytes, header.sha256
            ),
        )
        .with("reason", "upload_corrupted"));
    }
    Ok(())
}

/// Installs, reports each step on the plan, and reboots.
async fn install_and_reboot(
    member: Arc<Member>,
    host: Arc<UpgradeHost>,
    bundle: PathBuf,
    force: bool,
    plan_id: String,
) {
    let identity = Identity::Node(member.name.clone());
    let report = |state: pb::UpgradeNodeState,
                  plan_state: Option<pb::UpgradeState>,
                  slot: String,
                  error: Option<&Error>| {
        let mut status = member
            .read(|s| {
                s.upgrade_plans()
                    .find(|p| p.id == plan_id)
                    .and_then(|p| p.nodes.iter().find(|n| n.node == member.name).cloned())
            })
            .unwrap_or_default();
        status.node.clone_from(&member.name);
        status.state = state.into();
        if !slot.is_empty() {
            status.target_slot = slot;
        }
        if let Some(error) = error {
            status.code = error.code.to_string();
            status.message.clone_from(&error.message);
            status.details = error.details.clone().into_iter().collect();
            status.finished_at_unix_ms = crate::pki::now_unix_ms();
        }
        Kind::UpdateUpgrade(pb::UpdateUpgrade {
            plan_id: plan_id.clone(),
            state: plan_state.map_or(0, Into::into),
            current_node: String::new(),
            reason: error.map(|e| e.message.clone()).unwrap_or_default(),
            node_status: Some(status),
        })
    };
    let failed = |error: &Error| {
        report(
            pb::UpgradeNodeState::Failed,
            Some(pb::UpgradeState::Failed),
            String::new(),
            Some(error),
        )
    };
    let installed = {
        let (host, plan) = (host.clone(), plan_id.clone());
        blocking(move || host.install(&bundle, force, &plan)).await
    };
    let installed = match installed {
        Ok(installed) => installed,
        Err(error) => {
            tracing::error!(error = %error.render(true), "upgrade install failed");
            let _ = member.submit(&identity, failed(&error)).await;
            return;
        }
    };
    tracing::info!(target = %installed.target, entry = %installed.committed, "upgrade installed; rebooting");
    let kind = report(
        pb::UpgradeNodeState::Rebooting,
        None,
        installed.target.clone(),
        None,
    );
    if let Err(error) = member.submit(&identity, kind).await {
        tracing::warn!(error = %error.render(true), "cannot record the reboot step");
    }
    if let Err(error) = host.reboot().await {
        tracing::error!(error = %error.render(true), "reboot failed; the upgrade waits for the next boot");
        let _ = member.submit(&identity, failed(&error)).await;
    }
}
