//! The edge of every gRPC call, as a tower layer: who is calling (local socket, node
//! certificate, bearer token), whether that caller may reach the service at all, and the RPC
//! count and latency metrics by method and code.
//!
//! The decision itself is [`super::auth::authenticate`] (pure); this layer gathers the transport
//! facts, inserts the resulting [`Identity`] into the request's extensions for the handlers,
//! and answers refusals with our error envelope. It must not look at request bodies.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::auth::{Caller, Identity, authenticate};
use super::context::ApiContext;
use crate::error::{Code, Error};
use crate::pki::tls::peer_node_name;

/// The path prefix of node-to-node RPCs.
const INTERNAL: &str = "/jaco.v1.Internal/";

/// The one node-to-node RPC a caller without a node certificate may make: a joiner asking to
/// be admitted (authenticated by its join token).
const ADMISSION: &str = "/jaco.v1.Internal/SignNodeCsr";

/// Which listener a call arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The local control socket.
    LocalSocket,
    /// The TLS API port.
    Tls,
}

/// The layer, for `tonic::transport::Server::builder().layer(…)`.
#[derive(Clone)]
pub struct EdgeLayer {
    context: Arc<ApiContext>,
    transport: Transport,
}

impl EdgeLayer {
    /// The edge of the listener `transport`.
    pub fn new(context: Arc<ApiContext>, transport: Transport) -> Self {
        EdgeLayer { context, transport }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            context: self.context.clone(),
            transport: self.transport,
        }
    }
}

/// The service the layer wraps around the routes.
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    context: Arc<ApiContext>,
    transport: Transport,
}

type EdgeFuture<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for Edge<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = EdgeFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let metrics = self.context.metrics.clone();
        let identity = match self.identify(&request, &path) {
            Ok(identity) => identity,
            Err(error) => {
                metrics.observe_rpc(&path, error.code.as_str(), started.elapsed().as_secs_f64());
                let refusal = tonic::Status::from(error).into_http::<Body>();
                return Box::pin(async move { Ok(refusal) });
            }
        };
        if let Some(identity) = identity {
            request.extensions_mut().insert(identity);
        }
        // Call the service that was polled ready and keep its clone for the next call (tower's
        // usual take-the-ready-service dance).
        let clone = self.inner.clone();
        let response = std::mem::replace(&mut self.inner, clone).call(request);
        Box::pin(async move {
            let response = response.await?;
            let code = response_code(response.headers());
            metrics.observe_rpc(&path, &code, started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

impl<S> Edge<S> {
    /// The caller's identity (`None` only for an admission request), or the refusal.
    fn identify<B>(
        &self,
        request: &http::Request<B>,
        path: &str,
    ) -> Result<Option<Identity>, Error> {
        if self.transport == Transport::LocalSocket {
            if path.starts_with(INTERNAL) {
                return Err(Error::new(
                    Code::PermissionDenied,
                    "node-to-node RPCs are not served on the local socket",
                )
                .with("reason", "internal_rpc_on_local_socket"));
            }
            return Ok(Some(Identity::Local));
        }
        let certs = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        if path == ADMISSION {
            return Ok(None);
        }
        if path.starts_with(INTERNAL) {
            let name = peer_node_name(certs.as_deref().map(Vec::as_slice))?;
            return Ok(Some(Identity::Node(name)));
        }
        let node = match certs.as_deref() {
            Some(certs) if !certs.is_empty() => Some(peer_node_name(Some(certs))?),
            _ => None,
        };
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|value| value.to_str().unwrap_or("\u{fffd}"));
        let member = self.context.member()?;
        let identity = member.read(|state| {
            authenticate(
                Caller::Tls {
                    node: node.as_deref(),
                    authorization,
                },
                state.operator_tokens(),
            )
        })?;
        Ok(Some(identity))
    }
}

/// The metric label of a response: `ok`, or the code of a trailers-only error response (our
/// closed code when the envelope is there). Errors of streams that began successfully are
/// counted as `ok`: their status arrives in trailers after this point.
fn response_code(headers: &http::HeaderMap) -> String {
    match tonic::Status::from_header_map(headers) {
        Some(status) if status.code() != tonic::Code::Ok => {
            Error::from_status(&status).code.as_str().to_owned()
        }
        _ => "ok".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_codes_come_from_trailers_only_errors() {
        assert_eq!(response_code(&http::HeaderMap::new()), "ok");
        let refusal =
            tonic::Status::from(Error::new(Code::TokenRevoked, "revoked")).into_http::<Body>();
        assert_eq!(response_code(refusal.headers()), "token_revoked");
    }
}
