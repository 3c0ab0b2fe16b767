//! The `Deploy` gRPC service: apply, rollback and delete commit through raft after the daemon
//! re-validates the documents (it never trusts the CLI); status and get read local state (or a
//! linearizable read point) through `deploy_view`; watch streams committed state changes by
//! entity type, resumable from a revision, with a resync message when the stream lost events.
//! Dry runs compute the same checks and diff on a copy of the state and commit nothing.
//!
//! This module must not change state except through raft commands, and must not put secret
//! or config contents anywhere but the command that stores them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::Identity;
use super::context::{ApiContext, caller};
use super::deploy_view;
use super::replica_io::{self, Host};
use crate::daemon::member::Member;
use crate::error::{Code, Error};
use crate::manifest::{self, spec::FileObject, wire};
use crate::proto::v1 as pb;
use crate::proto::v1::command::Kind;
use crate::proto::v1::command_result::Outcome;
use crate::proto::v1::deploy_server::Deploy;
use crate::runtime::LogOptions;
use crate::state::WatchFilter;
use crate::state::into_outcome;
use crate::state::watch::{Subscription, WatchMessage};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// The `Deploy` service.
pub struct DeployService {
    context: Arc<ApiContext>,
}

impl DeployService {
    /// The service over the shared API context.
    pub fn new(context: Arc<ApiContext>) -> Self {
        DeployService { context }
    }

    /// How this node reaches the containers of `node`: its own runtime, or the node's API.
    fn host(&self, member: &Member, node: &str) -> Result<Host, Error> {
        if node == member.name {
            return Ok(Host::Local(self.context.runtime()?));
        }
        let address = member.read(|state| replica_io::node_addr(state, node))?;
        Ok(Host::Remote(Box::new(member.peers.client(&address)?)))
    }
}

/// The entity types of a watch request, refusing values outside the closed set.
pub fn entity_types(values: &[i32]) -> Result<BTreeSet<pb::EntityType>, Error> {
    super::context::closed_set(values, "types", "an entity type")
}

fn to_response(message: WatchMessage) -> pb::WatchResponse {
    let msg = match message {
        WatchMessage::Event(event) => pb::watch_response::Msg::Event(event.to_proto()),
        WatchMessage::Resync { reason, revision } => {
            pb::watch_response::Msg::Resync(pb::WatchResync {
                reason: pb::ResyncReason::from(reason).into(),
                revision,
            })
        }
    };
    pb::WatchResponse { msg: Some(msg) }
}

/// Validates the documents of an apply (never trusting the CLI) and builds the command, with
/// the warnings for the operator.
fn apply_command(
    member: &Member,
    request: &pb::ApplyRequest,
) -> Result<(pb::ApplyDeployment, Vec<String>), Error> {
    let objects = objects(&request.blobs)?;
    let resolved = manifest::resolve_documents(&request.jaco_yaml, &request.compose_yaml, objects)
        .map_err(first_of)?;
    let members: Vec<String> = member.read(|state| state.nodes().map(|n| n.name.clone()).collect());
    if let Some(error) = manifest::check_hosts(&resolved, &members)
        .into_iter()
        .next()
    {
        return Err(error);
    }
    let spec = wire::deployment_spec(&resolved, &request.jaco_yaml, &request.compose_yaml);
    let blobs = request
        .blobs
        .iter()
        .map(|blob| pb::ContentBlob {
            kind: blob.kind,
            deployment: resolved.deployment_name().to_owned(),
            name: blob.name.clone(),
            content: blob.content.clone(),
            ..Default::default()
        })
        .collect();
    let warnings = resolved.warnings.iter().map(ToString::to_string).collect();
    let command = pb::ApplyDeployment {
        deployment: resolved.deployment_name().to_owned(),
        spec: Some(spec),
        blobs,
        expected_revision: request.expected_revision,
        privileged_services: wire::privileged_services(&resolved),
    };
    Ok((command, warnings))
}

/// The secret and config contents sent with an apply, as the manifest pipeline takes them.
fn objects(blobs: &[pb::BlobContent]) -> Result<manifest::Objects, Error> {
    let mut objects = manifest::Objects::default();
    for blob in blobs {
        let object = FileObject::new(blob.content.clone());
        match pb::BlobKind::try_from(blob.kind) {
            Ok(pb::BlobKind::Secret) => objects.secrets.insert(blob.name.clone(), object),
            Ok(pb::BlobKind::Config) => objects.configs.insert(blob.name.clone(), object),
            _ => {
                return Err(Error::new(
                    Code::ValidationFailed,
                    format!("blob {} has no kind (secret or config)", blob.name),
                )
                .with("field", "blobs.kind")
                .with("blob", &blob.name));
            }
        };
    }
    Ok(objects)
}

/// The first problem of a manifest, telling how many more there are (`jaco validate` lists
/// them all).
fn first_of(errors: Vec<Error>) -> Error {
    let more = errors.len().saturating_sub(1);
    let mut errors = errors.into_iter();
    let first = errors
        .next()
        .unwrap_or_else(|| Error::new(Code::ValidationFailed, "the manifest is not valid"));
    if more == 0 {
        first
    } else {
        let message = format!(
            "{} (and {more} more problems; run `jaco validate`)",
            first.message
        );
        Error { message, ..first }.with("more_problems", more)
    }
}

/// What a command would do, computed on a copy of the local state: the same checks and diff
/// as a commit, and nothing committed.
fn preview(member: &Member, identity: &Identity, kind: &Kind) -> Result<Outcome, Error> {
    let command = pb::Command {
        identity: identity.audit_name(),
        time_unix_ms: crate::pki::now_unix_ms(),
        origin_node: member.name.clone(),
        request_id: String::new(),
        kind: Some(kind.clone()),
    };
    let result = member.read(|state| {
        let mut copy = state.clone();
        copy.apply(state.last_applied_index() + 1, &command).0
    });
    into_outcome(result)
}

fn unexpected(deployment: &str) -> Error {
    Error::new(
        Code::Internal,
        "the state machine answered with another outcome",
    )
    .with("deployment", deployment)
}

#[tonic::async_trait]
impl Deploy for DeployService {
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        let (command, warnings) = apply_command(&member, &request)?;
        let deployment = command.deployment.clone();
        let kind = Kind::ApplyDeployment(command);
        let (state_revision, outcome) = if request.dry_run {
            (0, preview(&member, &identity, &kind)?)
        } else {
            member.submit_indexed(&identity, kind).await?
        };
        let Outcome::ApplyDeployment(result) = outcome else {
            return Err(unexpected(&deployment).into());
        };
        let diff = result.diff.unwrap_or_default();
        let rollouts_started = diff
            .services
            .iter()
            .filter(|s| s.starts_rollout)
            .map(|s| s.service.clone())
            .collect();
        Ok(Response::new(pb::ApplyResponse {
            deployment: result.deployment,
            revision: result.revision,
            previous_revision: result.previous_revision,
            diff: Some(diff),
            rollouts_started,
            warnings,
            state_revision,
            dry_run: request.dry_run,
        }))
    }

    async fn status(
        &self,
        request: Request<pb::DeployStatusRequest>,
    ) -> Result<Response<pb::DeployStatusResponse>, Status> {
        caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        member.read_barrier(request.consistent).await?;
        let deployment = Some(request.deployment.as_str()).filter(|d| !d.is_empty());
        let service = Some(request.service.as_str()).filter(|s| !s.is_empty());
        let answer = member.read(|state| deploy_view::status(state, deployment, service))?;
        Ok(Response::new(answer))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        let query = request.query.ok_or_else(|| {
            Error::new(Code::ValidationFailed, "get needs a query").with("field", "query")
        })?;
        member.read_barrier(request.consistent).await?;
        let may_unmask = !matches!(identity, Identity::Node(_));
        let (result, revision) = member.read(|state| {
            deploy_view::get(state, &query, may_unmask).map(|r| (r, state.revision()))
        })?;
        Ok(Response::new(pb::GetResponse {
            result: Some(result),
            revision,
        }))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        let kind = Kind::RollbackDeployment(pb::RollbackDeployment {
            deployment: request.deployment.clone(),
            expected_revision: request.expected_revision,
        });
        let (state_revision, outcome) = if request.dry_run {
            (0, preview(&member, &identity, &kind)?)
        } else {
            member.submit_indexed(&identity, kind).await?
        };
        let Outcome::RollbackDeployment(result) = outcome else {
            return Err(unexpected(&request.deployment).into());
        };
        Ok(Response::new(pb::RollbackResponse {
            deployment: result.deployment,
            revision: result.revision,
            rolled_back_to: result.rolled_back_to,
            diff: result.diff,
            state_revision,
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        let kind = Kind::DeleteDeployment(pb::DeleteDeployment {
            deployment: request.deployment.clone(),
            keep_volumes: request.keep_volumes,
        });
        let (state_revision, outcome) = member.submit_indexed(&identity, kind).await?;
        let Outcome::DeleteDeployment(result) = outcome else {
            return Err(unexpected(&request.deployment).into());
        };
        Ok(Response::new(pb::DeleteResponse {
            deployment: result.deployment,
            last_revision: result.last_revision,
            state_revision,
        }))
    }

    type LogsStream = BoxStream<pb::LogsResponse>;

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        let replicas = member.read(|state| {
            replica_io::select(
                state,
                &request.deployment,
                &request.service,
                &request.replica,
            )
        })?;
        let options = LogOptions {
            follow: request.follow,
            since_unix_ms: replica_io::since(&request, crate::pki::now_unix_ms()),
            tail: Some(request.tail).filter(|t| *t != 0),
        };
        let (sender, receiver) = mpsc::channel(256);
        for replica in replicas {
            let host = self.host(&member, &replica.node)?;
            tokio::spawn(replica_io::stream_replica(
                host,
                replica,
                options.clone(),
                identity.audit_name(),
                sender.clone(),
            ));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    type ExecStream = BoxStream<pb::ExecResponse>;

    async fn exec(
        &self,
        request: Request<Streaming<pb::ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        use pb::exec_request::Msg;
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let mut incoming = request.into_inner();
        let Some(Msg::Start(start)) = incoming.message().await?.and_then(|m| m.msg) else {
            return Err(replica_io::start_missing().into());
        };
        let replica = member.read(|state| {
            replica_io::exec_target(state, &start.deployment, &start.service, &start.replica)
        })?;
        let started = pb::ExecResponse {
            msg: Some(pb::exec_response::Msg::Started(pb::ExecStarted {
                replica: replica.id.clone(),
                node: replica.node.clone(),
            })),
        };
        let input = incoming.filter_map(|message| {
            use pb::peer_exec_request::Msg as PeerMsg;
            let msg = match message.ok()?.msg? {
                Msg::Stdin(bytes) => PeerMsg::Stdin(bytes),
                Msg::Resize(size) => PeerMsg::Resize(size),
                Msg::CloseStdin(close) => PeerMsg::CloseStdin(close),
                Msg::Start(_) => return None,
            };
            Some(pb::PeerExecRequest { msg: Some(msg) })
        });
        let output = match self.host(&member, &replica.node)? {
            Host::Local(runtime) => {
                let spec = replica_io::exec_spec(&start);
                replica_io::serve_local_exec(runtime, replica.id.clone(), spec, input)
            }
            Host::Remote(mut client) => {
                let first = pb::PeerExecRequest {
                    msg: Some(pb::peer_exec_request::Msg::Start(pb::PeerExecStart {
                        replica: replica.id.clone(),
                        command: start.command,
                        tty: start.tty,
                        stdin: start.stdin,
                        env: start.env,
                        user: start.user,
                        working_dir: start.working_dir,
                        size: start.size,
                        identity: identity.audit_name(),
                    })),
                };
                let outbound = tokio_stream::once(first).chain(input);
                Box::pin(client.exec(outbound).await?.into_inner())
            }
        };
        let responses = output.map(|item| {
            use pb::exec_response::Msg as Out;
            use pb::peer_exec_response::Msg as In;
            let msg = match item?.msg {
                Some(In::Stdout(bytes)) => Some(Out::Stdout(bytes)),
                Some(In::Stderr(bytes)) => Some(Out::Stderr(bytes)),
                Some(In::Exit(exit)) => Some(Out::Exit(exit)),
                None => None,
            };
            Ok(pb::ExecResponse { msg })
        });
        Ok(Response::new(Box::pin(
            tokio_stream::once(Ok(started)).chain(responses),
        )))
    }

    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        let filter = WatchFilter {
            types: entity_types(&request.types)?,
            deployment: Some(request.deployment).filter(|d| !d.is_empty()),
        };
        let subscription = member.hub.subscribe(filter, request.since_revision);
        let progress = Duration::from_millis(request.progress_interval_ms);
        let (sender, receiver) = mpsc::channel(256);
        tokio::spawn(forward(member, subscription, progress, sender));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

/// Forwards a subscription to a client, with a progress message every `progress` when it is
/// not zero, until the client goes away or the hub closes.
async fn forward(
    member: Arc<Member>,
    mut subscription: Subscription,
    progress: Duration,
    sender: mpsc::Sender<Result<pb::WatchResponse, Status>>,
) {
    let mut ticker = (!progress.is_zero()).then(|| tokio::time::interval(progress));
    loop {
        let message = tokio::select! {
            message = subscription.recv() => match message {
                Some(message) => to_response(message),
                None => return,
            },
            _ = async { ticker.as_mut().expect("guarded").tick().await }, if ticker.is_some() => {
                pb::WatchResponse {
                    msg: Some(pb::watch_response::Msg::Progress(pb::WatchProgress {
                        revision: member.hub.revision(),
                    })),
                }
            }
            () = sender.closed() => return,
        };
        if sender.send(Ok(message)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    #[test]
    fn unknown_entity_types_are_refused() {
        assert!(entity_types(&[pb::EntityType::Node as i32]).is_ok());
        let error = entity_types(&[0]).expect_err("unspecified");
        assert_eq!(error.code, Code::ValidationFailed);
    }
}
