//! The `Upgrade` gRPC service (SPEC §9.3–9.4): bundle uploads, starting a fleet upgrade
//! plan, its status and abort.
//!
//! Role: admit a request (the bundle is verified, and on a target node the version rules
//! checked, before anything is recorded, so a bad bundle changes nothing), keep the bundle for
//! the plan on this node (the other nodes fetch it from here), and record the plan in raft;
//! the leader's controller and each node's agent ([`crate::daemon::fleet`]) do the rest.
//!
//! This module must not verify or write anything itself ([`crate::daemon::upgrade`] does), nor
//! order the nodes' turns ([`crate::upgrade::fleet`] does).

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tonic::{Request, Response, Status, Streaming};

use super::context::{ApiContext, caller, require_local};
use crate::daemon::fleet::blocking;
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

/// The nodes a request targets, in upgrade order (followers by name, then the leader): every
/// node for `all`, the named ones, or else the serving node.
fn targets(
    state: &crate::state::State,
    me: &str,
    leader: Option<&str>,
    request: &pb::StartUpgradeRequest,
) -> Result<Vec<String>, Error> {
    let mut names: Vec<String> = if request.all {
        if !request.nodes.is_empty() {
            return Err(invalid(
                "nodes",
                "conflict",
                "name nodes or ask for all of them, not both",
            ));
        }
        state.nodes().map(|n| n.name.clone()).collect()
    } else if request.nodes.is_empty() {
        vec![me.to_owned()]
    } else {
        for name in &request.nodes {
            if state.node(name).is_none() {
                return Err(Error::new(
                    Code::NotFound,
                    format!("there is no node {name} in this cluster"),
                )
                .with("node", name));
            }
        }
        request.nodes.clone()
    };
    names.sort();
    names.dedup();
    names.sort_by_key(|name| Some(name.as_str()) == leader);
    Ok(names)
}

/// Where a plan's bundle comes from on the serving node.
#[derive(Debug, Clone)]
enum Source {
    /// Uploaded by the CLI: the plan takes the file.
    Upload(PathBuf),
    /// A file on the node (a local caller's): the plan keeps a copy.
    Path(PathBuf),
}

impl Source {
    fn path(&self) -> &std::path::Path {
        match self {
            Source::Upload(path) | Source::Path(path) => path,
        }
    }

    /// Keeps the bundle at `kept` for the plan (a hard link or copy of a caller's file).
    fn keep_as(&self, kept: &std::path::Path) -> Result<(), Error> {
        if let Some(dir) = kept.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| crate::upgrade::io_failed("create", dir, &e))?;
        }
        let kept_ok = match self {
            Source::Upload(path) => std::fs::rename(path, kept),
            Source::Path(path) => {
                std::fs::hard_link(path, kept).or_else(|_| std::fs::copy(path, kept).map(drop))
            }
        };
        kept_ok.map_err(|e| crate::upgrade::io_failed("keep", kept, &e))
    }

    /// Undoes [`Source::keep_as`] when the plan was not recorded.
    fn restore_from(&self, kept: &std::path::Path) -> Result<(), Error> {
        let undone = match self {
            Source::Upload(path) => std::fs::rename(kept, path),
            Source::Path(_) => std::fs::remove_file(kept),
        };
        undone.map_err(|e| crate::upgrade::io_failed("restore", kept, &e))
    }
}

/// Downloads the bundle at `url` into this node's uploads, as if it had been uploaded.
async fn fetch_url(host: &UpgradeHost, url: &str) -> Result<PathBuf, Error> {
    let dir = host.uploads_dir();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| crate::upgrade::io_failed("create", &dir, &e))?;
    let id = crate::pki::hex(&rand::random::<[u8; 8]>());
    let partial = dir.join(format!("{id}.partial"));
    tracing::info!(%url, "fetching an upgrade bundle");
    if let Err(error) = crate::daemon::download::download(url, &partial, host.ca_file()).await {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(error);
    }
    let path = dir.join(format!("{id}.bundle"));
    tokio::fs::rename(&partial, &path)
        .await
        .map_err(|e| crate::upgrade::io_failed("store", &path, &e))?;
    Ok(path)
}

/// An upload id: 16 lowercase hex characters (it names a file).
fn upload_path(host: &UpgradeHost, id: &str) -> Result<PathBuf, Error> {
    if !crate::daemon::fleet::is_file_id(id) {
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
        let leader = member.leader().map(|l| l.name);
        let targets = member.read(|s| targets(s, &member.name, leader.as_deref(), &request))?;
        if let Some(running) = member.read(|s| s.running_upgrade().cloned()) {
            return Err(crate::state::upgrade_in_progress(&running).into());
        }
        let source = match &request.bundle {
            Some(Bundle::Path(path)) => {
                require_local(&identity, "a bundle path on the node")?;
                Source::Path(PathBuf::from(path))
            }
            Some(Bundle::UploadId(id)) => Source::Upload(upload_path(&host, id)?),
            Some(Bundle::Url(url)) => Source::Upload(fetch_url(&host, url).await?),
            None => return Err(invalid("bundle", "missing", "the request names no bundle").into()),
        };
        let verified = {
            let (host, bundle, force) = (host.clone(), source.path().to_owned(), request.force);
            let here = targets.iter().any(|t| *t == member.name);
            blocking(move || {
                // The version rules are each target's own; this node checks them when it is
                // one, and every target checks them again on its turn.
                if here {
                    host.admit(&bundle, force)
                } else {
                    crate::upgrade::bundle::verify(&bundle, &host.keys()?)
                }
            })
            .await?
        };
        let plan_id = crate::pki::hex(&rand::random::<[u8; 8]>());
        let kept = crate::daemon::fleet::plan_bundle(&host, &plan_id)?;
        {
            let (source, kept) = (source.clone(), kept.clone());
            blocking(move || source.keep_as(&kept)).await?;
        }
        let plan = member.read(|s| pb::UpgradePlan {
            id: plan_id.clone(),
            version: verified.manifest.version.clone(),
            min_version: verified.manifest.min_version.clone(),
            bundle_node: member.name.clone(),
            manifest_sha256: verified.manifest_sha256.clone(),
            force: request.force,
            drain: request.drain,
            nodes: targets
                .iter()
                .map(|name| pb::UpgradeNodeStatus {
                    node: name.clone(),
                    state: pb::UpgradeNodeState::Pending.into(),
                    from_version: s
                        .node(name)
                        .map(crate::daemon::fleet::running_version)
                        .unwrap_or_default(),
                    to_version: verified.manifest.version.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        let recorded = member
            .submit(
                &identity,
                Kind::StartUpgrade(pb::StartUpgrade { plan: Some(plan) }),
            )
            .await;
        if let Err(error) = recorded {
            // Not started: the upload stays usable for another try.
            blocking(move || source.restore_from(&kept)).await?;
            return Err(error.into());
        }
        // A follower applies the commit a moment after the leader: read after it.
        member.read_barrier(true).await?;
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
        member.read_barrier(true).await?;
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
