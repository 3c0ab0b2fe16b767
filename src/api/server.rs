//! The two gRPC servers of a node: the local control socket (every public service, identity
//! `local`) and the TLS API port (every public service for operators with a bearer token, plus
//! the `Internal` service for peers with a node certificate).
//!
//! This module assembles services and listeners; who may call what is decided in
//! [`super::edge`] and the handlers. It must not hold request logic.

use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use super::audit::AuditService;
use super::cluster::ClusterService;
use super::context::ApiContext;
use super::deploy::DeployService;
use super::edge::{EdgeLayer, Transport};
use super::internal::InternalService;
use super::registry::RegistryService;
use super::tokens::TokensService;
use super::upgrade::UpgradeService;
use crate::daemon::member::Member;
use crate::error::{Code, Error};
use crate::pki::ClientAuth;
use crate::pki::tls::tonic_server_tls;
use crate::proto::v1::audit_server::AuditServer;
use crate::proto::v1::cluster_server::ClusterServer;
use crate::proto::v1::deploy_server::DeployServer;
use crate::proto::v1::internal_server::InternalServer;
use crate::proto::v1::registry_server::RegistryServer;
use crate::proto::v1::tokens_server::TokensServer;
use crate::proto::v1::upgrade_server::UpgradeServer;
use crate::raft::MAX_RAFT_MESSAGE_BYTES;

fn serve_error(listener: &str, error: tonic::transport::Error) -> Error {
    Error::new(
        Code::Internal,
        format!("the {listener} server stopped: {error}"),
    )
    .with("reason", "listener_failed")
}

/// Serves the public services on the control socket until `shutdown` resolves.
pub async fn serve_local(
    context: Arc<ApiContext>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    Server::builder()
        .layer(EdgeLayer::new(context.clone(), Transport::LocalSocket))
        .add_service(ClusterServer::new(ClusterService::new(context.clone())))
        .add_service(TokensServer::new(TokensService::new(context.clone())))
        .add_service(AuditServer::new(AuditService::new(context.clone())))
        .add_service(RegistryServer::new(RegistryService::new(context.clone())))
        .add_service(UpgradeServer::new(UpgradeService::new(context.clone())))
        .add_service(DeployServer::new(DeployService::new(context)))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        )
        .await
        .map_err(|e| serve_error("control socket", e))
}

/// Serves the public and internal services over TLS with `member`'s certificate until
/// `shutdown` resolves.
pub async fn serve_tls(
    context: Arc<ApiContext>,
    member: Arc<Member>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let internal = InternalService::new(
        member.raft.clone(),
        member.submitter.clone(),
        member.name.clone(),
    )
    .with_admission(member.clone())
    .with_runtime(context.runtime().ok())
    .with_upgrade_host(context.upgrade_host().ok());
    Server::builder()
        .tls_config(tonic_server_tls(&member.identity, ClientAuth::Optional))
        .map_err(|e| serve_error("TLS API", e))?
        .layer(EdgeLayer::new(context.clone(), Transport::Tls))
        .add_service(ClusterServer::new(ClusterService::new(context.clone())))
        .add_service(TokensServer::new(TokensService::new(context.clone())))
        .add_service(AuditServer::new(AuditService::new(context.clone())))
        .add_service(RegistryServer::new(RegistryService::new(context.clone())))
        .add_service(UpgradeServer::new(UpgradeService::new(context.clone())))
        .add_service(DeployServer::new(DeployService::new(context)))
        .add_service(
            InternalServer::new(internal)
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|e| serve_error("TLS API", e))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::daemon::member::MemberSettings;
    use crate::daemon::metrics::Metrics;
    use crate::proto::v1 as pb;
    use crate::proto::v1::cluster_client::ClusterClient;
    use crate::proto::v1::tokens_client::TokensClient;

    async fn channel(path: std::path::PathBuf) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .expect("connect")
    }

    #[tokio::test]
    async fn an_uninitialised_node_answers_status_and_refuses_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jaco.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let settings = MemberSettings {
            name: "n1".into(),
            data_dir: dir.path().join("data"),
            advertise: "127.0.0.1:7000".into(),
            raft: crate::raft::raft_config(100).expect("config"),
            leader_wait: Duration::from_secs(1),
        };
        let context = Arc::new(ApiContext::new(
            settings,
            crate::daemon::lifecycle::ClusterDefaults {
                audit_retention: 1000,
                ipam_pool: crate::state::DEFAULT_IPAM_POOL.to_owned(),
            },
            Arc::new(Metrics::new()),
            None,
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_local(context, listener, async {
            let _ = stopped.await;
        }));
        let status = ClusterClient::new(channel(path.clone()).await)
            .status(pb::ClusterStatusRequest::default())
            .await
            .expect("status")
            .into_inner();
        assert!(!status.initialized);
        assert_eq!(status.node_name, "n1");
        let refused = TokensClient::new(channel(path).await)
            .list(pb::ListTokensRequest::default())
            .await
            .expect_err("no cluster yet");
        assert_eq!(
            Error::from_status(&refused).code,
            Code::ClusterUninitialized
        );
        let _ = stop.send(());
        server.await.expect("joins").expect("serves until stopped");
    }
}
