//! The `Audit` gRPC service: query the replicated audit log and follow it.
//!
//! Filters are validated here (unknown event types are refused) and evaluated by the state
//! machine; following re-reads the log after each committed audit change, so that the stream
//! has no gaps and no duplicates. This module must not write audit events.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::context::{ApiContext, caller};
use crate::daemon::member::Member;
use crate::error::Error;
use crate::proto::v1 as pb;
use crate::proto::v1::audit_server::Audit;
use crate::state::{AuditFilter, WatchFilter};

/// How many events a tail sends per read of the log.
const TAIL_PAGE: usize = 500;

/// The `Audit` service.
pub struct AuditService {
    context: Arc<ApiContext>,
}

impl AuditService {
    /// The service over the shared API context.
    pub fn new(context: Arc<ApiContext>) -> Self {
        AuditService { context }
    }
}

/// The event types of a request.
pub fn event_types(values: &[i32]) -> Result<BTreeSet<pb::AuditEventType>, Error> {
    super::context::closed_set(values, "types", "an audit event type")
}

fn identity_filter(identity: String) -> Option<String> {
    Some(identity).filter(|i| !i.is_empty())
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn query(
        &self,
        request: Request<pb::AuditQueryRequest>,
    ) -> Result<Response<pb::AuditQueryResponse>, Status> {
        caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        let filter = AuditFilter {
            since_unix_ms: request.since_unix_ms,
            until_unix_ms: request.until_unix_ms,
            types: event_types(&request.types)?,
            identity: identity_filter(request.identity),
            after_id: request.after_id,
            limit: request.limit as usize,
        };
        member.read_barrier(request.consistent).await?;
        let page = member.read(|s| s.audit(&filter));
        Ok(Response::new(pb::AuditQueryResponse {
            events: page.events,
            truncated: page.truncated,
        }))
    }

    type TailStream = BoxStream<pb::AuditTailResponse>;

    async fn tail(
        &self,
        request: Request<pb::AuditTailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        let filter = AuditFilter {
            since_unix_ms: request.since_unix_ms,
            until_unix_ms: 0,
            types: event_types(&request.types)?,
            identity: identity_filter(request.identity),
            after_id: request.after_id,
            limit: TAIL_PAGE,
        };
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(follow(member, filter, sender));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

/// Sends the matching events after `filter.after_id`, then each new one, until the client goes
/// away or the daemon shuts down.
async fn follow(
    member: Arc<Member>,
    mut filter: AuditFilter,
    sender: mpsc::Sender<Result<pb::AuditTailResponse, Status>>,
) {
    // Subscribe before the first read: whatever commits in between shows up in one of them,
    // and the id cursor drops the overlap.
    let mut changes = member.hub.subscribe(
        WatchFilter::types([pb::EntityType::AuditEvent]),
        member.hub.revision(),
    );
    loop {
        loop {
            let page = member.read(|s| s.audit(&filter));
            for event in page.events {
                filter.after_id = filter.after_id.max(event.id);
                let message = pb::AuditTailResponse { event: Some(event) };
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            if !page.truncated {
                break;
            }
        }
        tokio::select! {
            change = changes.recv() => if change.is_none() { return },
            () = sender.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    #[test]
    fn unknown_event_types_are_refused() {
        let types = event_types(&[pb::AuditEventType::Apply as i32]).expect("valid");
        assert!(types.contains(&pb::AuditEventType::Apply));
        for bad in [0, 999] {
            let error = event_types(&[bad]).expect_err("refused");
            assert_eq!(error.code, Code::ValidationFailed);
            assert_eq!(error.details["type"], bad.to_string());
        }
    }
}
