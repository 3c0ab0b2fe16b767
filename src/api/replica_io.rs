//! Logs and exec of replicas, wherever they run: the node that answers the CLI reads its own
//! containers through the runtime and reaches other nodes' containers through their
//! `Internal.Logs` / `Internal.Exec` (SPEC §6).
//!
//! Role: pick the replicas a request names ([`select`], pure), stream each replica's lines as
//! they come (merged across replicas, in order per replica, with a start/end event per
//! source), and pump an exec session's input and output between the client, the hosting
//! node and the engine.
//!
//! It must not change state, and must not hold the state lock across an await.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::Status;

use crate::error::{Code, Error};
use crate::proto::v1 as pb;
use crate::raft::NodeAddr;
use crate::runtime::{
    ExecOutput, ExecSpec, LogOptions, LogStream, Runtime, TerminalSize, container_name,
};
use crate::state::State;

/// The replicas a logs or exec request names: every replica of the service, or the one whose
/// index (or node, for global services) is `selector`.
pub fn select(
    state: &State,
    deployment: &str,
    service: &str,
    selector: &str,
) -> Result<Vec<pb::ReplicaDesired>, Error> {
    let spec = state
        .deployment(deployment)
        .ok_or_else(|| {
            Error::new(
                Code::DeploymentNotFound,
                format!("the cluster has no deployment named {deployment}"),
            )
            .with("deployment", deployment)
        })?
        .spec
        .as_ref();
    let services = spec.map_or(&[][..], |s| s.services.as_slice());
    if !services.iter().any(|s| s.name == service) {
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        return Err(Error::new(
            Code::UnknownService,
            format!("deployment {deployment} has no service {service}"),
        )
        .with("deployment", deployment)
        .with("service", service)
        .with("services", names.join(",")));
    }
    let replicas: Vec<pb::ReplicaDesired> = state
        .replicas_desired()
        .filter(|r| r.deployment == deployment && r.service == service)
        .filter(|r| selector.is_empty() || r.index.to_string() == selector || r.node == selector)
        .cloned()
        .collect();
    if replicas.is_empty() {
        let what = if selector.is_empty() {
            format!("{deployment}/{service} has no replicas")
        } else {
            format!("{deployment}/{service} has no replica {selector}")
        };
        return Err(Error::new(Code::NotFound, what)
            .with("deployment", deployment)
            .with("service", service)
            .with("replica", selector));
    }
    Ok(replicas)
}

/// The replica an exec runs in: the selected one, or the first running one.
pub fn exec_target(
    state: &State,
    deployment: &str,
    service: &str,
    selector: &str,
) -> Result<pb::ReplicaDesired, Error> {
    let replicas = select(state, deployment, service, selector)?;
    let running = |r: &pb::ReplicaDesired| {
        state.replica_observed(&r.id).is_some_and(|o| {
            matches!(
                o.state(),
                pb::ReplicaState::Running | pb::ReplicaState::Degraded
            )
        })
    };
    let first = replicas[0].clone();
    Ok(replicas.into_iter().find(running).unwrap_or(first))
}

/// Where a replica's container is reached from this node.
pub enum Host {
    /// On this node, through the runtime.
    Local(Arc<dyn Runtime>),
    /// On another node, through its internal API.
    Remote(Box<crate::proto::v1::internal_client::InternalClient<tonic::transport::Channel>>),
}

/// The time a logs request's history starts at, if it sets one.
pub fn since(request: &pb::LogsRequest, now: i64) -> Option<i64> {
    match request.since {
        Some(pb::logs_request::Since::SinceUnixMs(at)) => Some(at),
        Some(pb::logs_request::Since::SinceAgoMs(ago)) => {
            Some(now.saturating_sub(i64::try_from(ago).unwrap_or(i64::MAX)))
        }
        None => None,
    }
}

/// Streams one replica's lines into `sender`, framed by start and end source events.
pub async fn stream_replica(
    host: Host,
    replica: pb::ReplicaDesired,
    options: LogOptions,
    identity: String,
    sender: mpsc::Sender<Result<pb::LogsResponse, Status>>,
) {
    let source = |started: bool, error: Option<Error>| pb::LogsResponse {
        item: Some(pb::logs_response::Item::Source(pb::LogSource {
            replica: replica.id.clone(),
            node: replica.node.clone(),
            started,
            error: error.map(|e| e.to_proto()),
        })),
    };
    if sender.send(Ok(source(true, None))).await.is_err() {
        return;
    }
    let mut lines = match host {
        Host::Local(runtime) => {
            let stream = runtime.logs(&container_name(&replica.id), &options);
            let (id, node) = (replica.id.clone(), replica.node.clone());
            Box::pin(stream.map(move |line| line.map(|l| wire_line(&id, &node, l))))
                as crate::runtime::BoxStream<'static, Result<pb::LogLine, Error>>
        }
        Host::Remote(mut client) => {
            let request = pb::PeerLogsRequest {
                replica: replica.id.clone(),
                follow: options.follow,
                since_unix_ms: options.since_unix_ms.unwrap_or(0),
                tail: options.tail.unwrap_or(0),
                identity,
            };
            match client.logs(request).await {
                Ok(response) => Box::pin(response.into_inner().map(|item| {
                    item.map_err(|s| Error::from_status(&s)).and_then(|r| {
                        r.line
                            .ok_or_else(|| Error::new(Code::Internal, "empty log message"))
                    })
                })),
                Err(status) => {
                    let _ = sender
                        .send(Ok(source(false, Some(Error::from_status(&status)))))
                        .await;
                    return;
                }
            }
        }
    };
    let mut failure = None;
    while let Some(item) = lines.next().await {
        match item {
            Ok(line) => {
                let message = pb::LogsResponse {
                    item: Some(pb::logs_response::Item::Line(line)),
                };
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    let _ = sender.send(Ok(source(false, failure))).await;
}

/// A runtime line as the wire carries it.
pub fn wire_line(replica: &str, node: &str, line: crate::runtime::LogLine) -> pb::LogLine {
    pb::LogLine {
        replica: replica.to_owned(),
        node: node.to_owned(),
        stream: match line.stream {
            LogStream::Stdout => pb::LogStream::Stdout,
            LogStream::Stderr => pb::LogStream::Stderr,
        }
        .into(),
        time_unix_ms: line.time_unix_ms,
        line: line.line,
    }
}

/// Input of an exec session after its start message, whichever API it came through.
#[derive(Debug)]
pub enum ExecInput {
    /// Bytes for stdin.
    Stdin(Vec<u8>),
    /// New TTY size.
    Resize(TerminalSize),
    /// End of stdin.
    CloseStdin,
}

/// The runtime's view of an exec start.
pub fn exec_spec(start: &pb::ExecStart) -> ExecSpec {
    ExecSpec {
        command: start.command.clone(),
        env: start.env.clone(),
        user: Some(start.user.clone()).filter(|u| !u.is_empty()),
        working_dir: Some(start.working_dir.clone()).filter(|w| !w.is_empty()),
        tty: start.tty,
        stdin: start.stdin,
        size: start.size.map(terminal_size),
    }
}

/// A wire terminal size (clamped to what a TTY can have).
pub fn terminal_size(size: pb::TerminalSize) -> TerminalSize {
    TerminalSize {
        columns: u16::try_from(size.columns).unwrap_or(u16::MAX),
        rows: u16::try_from(size.rows).unwrap_or(u16::MAX),
    }
}

/// Runs an exec session on this node's engine: forwards `input` to the process and its output
/// to `output` until the process exits (the last item is its exit).
pub async fn run_local_exec(
    runtime: Arc<dyn Runtime>,
    replica_id: &str,
    spec: ExecSpec,
    mut input: mpsc::Receiver<ExecInput>,
    output: mpsc::Sender<Result<ExecOutput, Error>>,
) {
    let session = match runtime.exec(&container_name(replica_id), &spec).await {
        Ok(session) => session,
        Err(error) => {
            let _ = output.send(Err(error)).await;
            return;
        }
    };
    let exec_id = session.id.clone();
    let mut stdin = session.stdin;
    let pump_in = {
        let runtime = runtime.clone();
        async move {
            while let Some(item) = input.recv().await {
                match item {
                    ExecInput::Stdin(bytes) => {
                        if let Some(writer) = stdin.as_mut()
                            && writer.write_all(&bytes).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    ExecInput::Resize(size) => {
                        let _ = runtime.resize_exec(&exec_id, size).await;
                    }
                    ExecInput::CloseStdin => {
                        if let Some(mut writer) = stdin.take() {
                            let _ = writer.shutdown().await;
                        }
                    }
                }
            }
            // The client went away: close stdin so the process sees end of input.
            if let Some(mut writer) = stdin.take() {
                let _ = writer.shutdown().await;
            }
            std::future::pending::<()>().await;
        }
    };
    let pump_out = async move {
        let mut items = session.output;
        while let Some(item) = items.next().await {
            let last = matches!(item, Ok(ExecOutput::Exit(_)) | Err(_));
            if output.send(item).await.is_err() || last {
                return;
            }
        }
    };
    tokio::select! {
        () = pump_in => {}
        () = pump_out => {}
    }
}

/// Serves an exec session on this node's engine in the internal API's terms: `incoming`
/// carries the session's input after its start message; the answer carries the output and
/// ends with the exit. Both the CLI-facing and the node-to-node service use it.
pub fn serve_local_exec(
    runtime: Arc<dyn Runtime>,
    replica_id: String,
    spec: ExecSpec,
    incoming: impl tokio_stream::Stream<Item = pb::PeerExecRequest> + Send + 'static,
) -> crate::runtime::BoxStream<'static, Result<pb::PeerExecResponse, Status>> {
    use pb::peer_exec_request::Msg;
    let (input, input_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        while let Some(message) = incoming.next().await {
            let item = match message.msg {
                Some(Msg::Stdin(bytes)) => ExecInput::Stdin(bytes),
                Some(Msg::Resize(size)) => ExecInput::Resize(terminal_size(size)),
                Some(Msg::CloseStdin(_)) => ExecInput::CloseStdin,
                Some(Msg::Start(_)) | None => continue,
            };
            if input.send(item).await.is_err() {
                return;
            }
        }
    });
    let (output, output_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        run_local_exec(runtime, &replica_id, spec, input_rx, output).await;
    });
    Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(output_rx).map(|item| {
            use pb::peer_exec_response::Msg as Out;
            let msg = match item.map_err(Status::from)? {
                ExecOutput::Stdout(bytes) => Out::Stdout(bytes),
                ExecOutput::Stderr(bytes) => Out::Stderr(bytes),
                ExecOutput::Exit(code) => Out::Exit(pb::ExecExit {
                    exit_code: i32::try_from(code).unwrap_or(i32::MAX),
                }),
            };
            Ok(pb::PeerExecResponse { msg: Some(msg) })
        }),
    )
}

/// The error for an exec session whose first message is not its start.
pub fn start_missing() -> Error {
    Error::new(
        Code::ValidationFailed,
        "an exec session starts with its start message",
    )
    .with("field", "start")
}

/// The member entry of `node` as a dialable address.
pub fn node_addr(state: &State, node: &str) -> Result<NodeAddr, Error> {
    state
        .node(node)
        .map(|n| NodeAddr {
            name: n.name.clone(),
            addr: n.api_address.clone(),
        })
        .ok_or_else(|| {
            Error::new(
                Code::NotFound,
                format!("node {node} is not a cluster member"),
            )
            .with("node", node)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::command::Kind;
    use crate::state::testkit::{Harness, apply_deployment, service};

    fn with_replicas() -> Harness {
        let mut h = Harness::initialised();
        h.ok(apply_deployment(
            "shop",
            pb::DeploymentSpec {
                services: vec![service("web", "web:1")],
                ..Default::default()
            },
        ));
        let replica = |index: u64| pb::ReplicaDesired {
            id: format!("shop-web-{index}"),
            deployment: "shop".into(),
            service: "web".into(),
            index,
            node: "n1".into(),
            ..Default::default()
        };
        h.ok(Kind::SchedulerBatch(pb::SchedulerBatch {
            upsert_replicas: vec![replica(1), replica(2)],
            ..Default::default()
        }));
        h.ok(Kind::ReportReplicas(pb::ReportReplicas {
            node: "n1".into(),
            observations: vec![pb::ReplicaObserved {
                id: "shop-web-2".into(),
                state: pb::ReplicaState::Running.into(),
                ..Default::default()
            }],
        }));
        h
    }

    #[test]
    fn selection_names_every_replica_or_one_by_index() {
        let h = with_replicas();
        let all = select(&h.state, "shop", "web", "").unwrap();
        assert_eq!(all.len(), 2);
        let one = select(&h.state, "shop", "web", "2").unwrap();
        assert_eq!(one[0].id, "shop-web-2");
        assert_eq!(
            select(&h.state, "shop", "web", "9").unwrap_err().code,
            Code::NotFound
        );
        assert_eq!(
            select(&h.state, "shop", "db", "").unwrap_err().code,
            Code::UnknownService
        );
        assert_eq!(
            select(&h.state, "nope", "web", "").unwrap_err().code,
            Code::DeploymentNotFound
        );
    }

    #[test]
    fn exec_prefers_a_running_replica() {
        let h = with_replicas();
        assert_eq!(
            exec_target(&h.state, "shop", "web", "").unwrap().id,
            "shop-web-2"
        );
        assert_eq!(
            exec_target(&h.state, "shop", "web", "1").unwrap().id,
            "shop-web-1"
        );
    }

    #[test]
    fn since_is_absolute_or_relative_to_now() {
        let mut request = pb::LogsRequest::default();
        assert_eq!(since(&request, 10_000), None);
        request.since = Some(pb::logs_request::Since::SinceAgoMs(3_000));
        assert_eq!(since(&request, 10_000), Some(7_000));
        request.since = Some(pb::logs_request::Since::SinceUnixMs(42));
        assert_eq!(since(&request, 10_000), Some(42));
    }
}
