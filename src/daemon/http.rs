//! The daemon's plain-HTTP endpoints: `/healthz` (the process is alive), `/readyz` (the node
//! can serve: see [`Readiness`]) and `/metrics` (Prometheus text).
//!
//! Serving only; readiness is decided by the daemon wiring and published through a watch
//! channel. This module must not grow API endpoints: the API is gRPC.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use super::metrics::Metrics;

/// Whether the node can serve, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Ready.
    Ready,
    /// Not ready, with the reason shown on `/readyz`.
    NotReady(String),
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    readiness: watch::Receiver<Readiness>,
}

/// The router serving the three endpoints.
pub fn router(metrics: Arc<Metrics>, readiness: watch::Receiver<Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Shared { metrics, readiness })
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    match &*shared.readiness.borrow() {
        Readiness::Ready => (StatusCode::OK, "ready\n".to_owned()),
        Readiness::NotReady(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics_text(State(shared): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics.render(),
    )
}

/// Binds `addr` and serves until `shutdown` resolves. Returns the bound address through
/// `bound` before serving (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    app: Router,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    if let Some(bound) = bound {
        let _ = bound.send(listener.local_addr()?);
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        (status, body)
    }

    #[tokio::test]
    async fn endpoints_answer_on_a_real_socket() {
        let metrics = Arc::new(Metrics::new());
        metrics.raft_term.set(3);
        let (set_ready, readiness) = watch::channel(Readiness::NotReady("raft not started".into()));
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            router(metrics, readiness),
            Some(bound_tx),
            async move {
                let _ = stopped.await;
            },
        ));
        let addr = bound_rx.await.unwrap();

        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("raft not started"));
        set_ready.send(Readiness::Ready).unwrap();
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("jaco_raft_term 3"), "{body}");
        assert_eq!(get(addr, "/nope").await.0, 404);

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
