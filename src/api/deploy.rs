//! The `Deploy` gRPC service. In this build only `Watch` is served: a stream of committed state
//! changes by entity type, resumable from a revision, with a resync message when the stream
//! lost events (overflow, compaction, a snapshot install). The other RPCs arrive with the
//! runtime and answer `unimplemented` until then; none of them pretends.
//!
//! This module must not change state.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::context::{ApiContext, caller};
use crate::daemon::member::Member;
use crate::error::Error;
use crate::proto::v1 as pb;
use crate::proto::v1::deploy_server::Deploy;
use crate::state::WatchFilter;
use crate::state::watch::{Subscription, WatchMessage};

/// The `Deploy` service.
pub struct DeployService {
    context: Arc<ApiContext>,
}

impl DeployService {
    /// The service over the shared API context.
    pub fn new(context: Arc<ApiContext>) -> Self {
        DeployService { context }
    }
}

fn later(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "Deploy.{rpc} is not available in this build; it arrives with the runtime (deployments on Docker)"
    ))
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

#[tonic::async_trait]
impl Deploy for DeployService {
    async fn apply(
        &self,
        _request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        Err(later("Apply"))
    }

    async fn status(
        &self,
        _request: Request<pb::DeployStatusRequest>,
    ) -> Result<Response<pb::DeployStatusResponse>, Status> {
        Err(later("Status"))
    }

    async fn get(
        &self,
        _request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        Err(later("Get"))
    }

    async fn rollback(
        &self,
        _request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        Err(later("Rollback"))
    }

    async fn delete(
        &self,
        _request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        Err(later("Delete"))
    }

    type LogsStream = BoxStream<pb::LogsResponse>;

    async fn logs(
        &self,
        _request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        Err(later("Logs"))
    }

    type ExecStream = BoxStream<pb::ExecResponse>;

    async fn exec(
        &self,
        _request: Request<Streaming<pb::ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        Err(later("Exec"))
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
