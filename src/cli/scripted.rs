//! A scripted `Deploy` server for the CLI's own tests: apply answers one fixed commit, status
//! answers the next of a list of snapshots (the last one repeats), watch wakes the client
//! every 150 ms, logs sends a stdout line, a stderr line and a failed replica stream, exec
//! echoes a fixed output and exit status while recording the start message. Served on a unix
//! socket like the daemon's control socket.
//!
//! Test support only: it must not be used outside `#[cfg(test)]` code, and it knows nothing of
//! real scheduling.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::cli::client::tests::serve_on_socket;
use crate::proto::v1 as pb;
use crate::proto::v1::deploy_server::{Deploy, DeployServer};

/// The scripted server's state, shared with the test.
#[derive(Clone, Default)]
pub struct Scripted {
    statuses: Arc<Mutex<VecDeque<pb::DeployStatusResponse>>>,
    started: Arc<Mutex<Vec<pb::ExecStart>>>,
}

impl Scripted {
    /// A server that answers status with `statuses`, in order.
    pub fn with_statuses(statuses: Vec<pb::DeployStatusResponse>) -> Scripted {
        Scripted {
            statuses: Arc::new(Mutex::new(statuses.into())),
            ..Scripted::default()
        }
    }

    /// The exec start messages received.
    pub fn exec_starts(&self) -> Vec<pb::ExecStart> {
        self.started.lock().unwrap().clone()
    }

    /// Serves it on `<dir>/jaco.sock`; returns the directory, the runtime (stops on drop) and
    /// the socket path.
    pub fn serve(&self) -> (tempfile::TempDir, tokio::runtime::Runtime, String) {
        let (dir, runtime) =
            serve_on_socket(tonic::service::Routes::new(DeployServer::new(self.clone())));
        let socket = dir.path().join("jaco.sock").to_str().unwrap().to_owned();
        (dir, runtime, socket)
    }
}

fn stream<T: Send + 'static>(items: Vec<Result<T, Status>>) -> BoxStream<T> {
    Box::pin(tokio_stream::iter(items))
}

#[tonic::async_trait]
impl Deploy for Scripted {
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let dry_run = request.into_inner().dry_run;
        Ok(Response::new(pb::ApplyResponse {
            deployment: "shop".into(),
            revision: 2,
            previous_revision: 1,
            diff: Some(pb::DeploymentDiff {
                deployment: "shop".into(),
                changed: true,
                services: vec![pb::ServiceDiff {
                    service: "web".into(),
                    kind: pb::DiffKind::Updated.into(),
                    changed_fields: vec!["image".into()],
                    from_replicas: 1,
                    to_replicas: 1,
                    from_image: "web:1".into(),
                    to_image: "web:2".into(),
                    starts_rollout: true,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            rollouts_started: vec!["web".into()],
            warnings: vec![],
            state_revision: if dry_run { 0 } else { 10 },
            dry_run,
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::DeployStatusRequest>,
    ) -> Result<Response<pb::DeployStatusResponse>, Status> {
        let mut statuses = self.statuses.lock().unwrap();
        let next = if statuses.len() > 1 {
            statuses.pop_front()
        } else {
            statuses.front().cloned()
        };
        Ok(Response::new(next.unwrap_or_default()))
    }

    async fn get(
        &self,
        _request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn rollback(
        &self,
        _request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn delete(
        &self,
        _request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    type LogsStream = BoxStream<pb::LogsResponse>;

    async fn logs(
        &self,
        _request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        use pb::logs_response::Item;
        let line = |stream: pb::LogStream, text: &str| pb::LogsResponse {
            item: Some(Item::Line(pb::LogLine {
                replica: "shop-web-1".into(),
                node: "n1".into(),
                stream: stream.into(),
                time_unix_ms: 1,
                line: text.as_bytes().to_vec(),
            })),
        };
        let failed = pb::LogsResponse {
            item: Some(Item::Source(pb::LogSource {
                replica: "shop-web-2".into(),
                node: "n2".into(),
                started: false,
                error: Some(pb::Error {
                    code: "docker_error".into(),
                    message: "engine unreachable".into(),
                    details: Default::default(),
                }),
            })),
        };
        Ok(Response::new(stream(vec![
            Ok(line(pb::LogStream::Stdout, "ready")),
            Ok(line(pb::LogStream::Stderr, "warn: slow")),
            Ok(failed),
        ])))
    }

    type ExecStream = BoxStream<pb::ExecResponse>;

    async fn exec(
        &self,
        request: Request<Streaming<pb::ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        use pb::exec_response::Msg;
        let mut incoming = request.into_inner();
        if let Some(pb::ExecRequest {
            msg: Some(pb::exec_request::Msg::Start(start)),
        }) = incoming.message().await?
        {
            self.started.lock().unwrap().push(start);
        }
        let reply = |msg: Msg| Ok(pb::ExecResponse { msg: Some(msg) });
        Ok(Response::new(stream(vec![
            reply(Msg::Started(pb::ExecStarted {
                replica: "shop-web-1".into(),
                node: "n1".into(),
            })),
            reply(Msg::Stdout(b"out\n".to_vec())),
            reply(Msg::Stderr(b"err\n".to_vec())),
            reply(Msg::Exit(pb::ExecExit { exit_code: 3 })),
        ])))
    }

    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        _request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            for revision in 11.. {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let message = pb::WatchResponse {
                    msg: Some(pb::watch_response::Msg::Progress(pb::WatchProgress {
                        revision,
                    })),
                };
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}
