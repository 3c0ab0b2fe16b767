//! The CLI's connection to a jaco daemon: the local control socket, or any node's API over TLS.
//!
//! Role: turn the global flags into a [`Target`], open one gRPC channel to it, attach the
//! operator token, and run a command's calls on a current-thread tokio runtime (the CLI itself
//! is synchronous). Contract:
//! - without `--server`: the unix socket `--socket` (default `/run/jaco/jaco.sock`), no TLS and
//!   no token — file permissions authenticate, and the audit identity is `local`;
//! - with `--server HOST:PORT`: TLS, the server's certificate verified against `--ca-cert`
//!   (required: a usage error without it) and the host of `--server`; the token of `--token` /
//!   `JACO_TOKEN` goes as `authorization: Bearer <token>` on every request, and without one the
//!   server answers (`token_invalid`);
//! - connecting waits at most [`CONNECT_TIMEOUT`]; calls have no deadline, so that streams
//!   (`audit -f`, `backup`) run as long as they need;
//! - a daemon that cannot be reached is `internal` with `reason=daemon_unreachable` and the
//!   `socket` or `server` it tried; a server certificate that does not verify against the CA
//!   is `internal` with `reason=tls_verification_failed`.
//!
//! This module must not know what any service means or print anything: commands call the
//! generated clients it hands out and render the answers themselves.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::error::ErrorKind;
use hyper_util::rt::TokioIo;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{Context, Failure};
use crate::error::{Code, Error};
use crate::proto::v1::audit_client::AuditClient;
use crate::proto::v1::cluster_client::ClusterClient;
use crate::proto::v1::deploy_client::DeployClient;
use crate::proto::v1::registry_client::RegistryClient;
use crate::proto::v1::tokens_client::TokensClient;
use crate::proto::v1::upgrade_client::UpgradeClient;

/// How long opening the connection (socket, TCP and TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a command's calls go.
#[derive(Debug, Clone)]
pub enum Target {
    /// The local daemon's control socket.
    Socket(PathBuf),
    /// A node's API over TLS.
    Server(Server),
}

/// A node's API over TLS, as the global flags describe it.
#[derive(Clone)]
pub struct Server {
    /// `HOST:PORT` as given to `--server`.
    pub address: String,
    /// The name the certificate must carry: `--tls-server-name`, else the host part of the
    /// address without brackets or port.
    pub host: String,
    /// The `--ca-cert` file, for messages.
    pub ca_cert: PathBuf,
    /// Its content: the cluster CA certificate, PEM.
    pub ca_pem: String,
    /// The operator token, if any.
    pub token: Option<String>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .field("host", &self.host)
            .field("ca_cert", &self.ca_cert)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The target the global flags of `ctx` name: `--server` with `--ca-cert` and `--token`,
    /// else `--socket`.
    pub fn of(ctx: &Context<'_>) -> Result<Target, Failure> {
        let global = ctx.global;
        let Some(address) = &global.server else {
            return Ok(Target::Socket(global.socket.clone()));
        };
        let Some(ca_cert) = &global.ca_cert else {
            return Err(ctx.usage_error(
                ErrorKind::MissingRequiredArgument,
                format!(
                    "--server needs the cluster CA certificate to verify {address}: pass \
                     --ca-cert FILE or set JACO_CA_CERT (the CA certificate is \
                     <data_dir>/pki/ca.crt on any node, /var/lib/jaco/pki/ca.crt by default)"
                ),
            ));
        };
        Ok(Target::Server(Server {
            address: address.clone(),
            host: match &global.tls_server_name {
                Some(name) => name.clone(),
                None => server_host(address)?,
            },
            ca_cert: ca_cert.clone(),
            ca_pem: read_ca_cert(ca_cert)?,
            token: global.token.clone(),
        }))
    }
}

/// The host of `HOST:PORT` without brackets or port (`[::1]:7000` → `::1`).
pub fn server_host(address: &str) -> Result<String, Error> {
    Ok(crate::pki::tls::server_name(address)?.to_str().into_owned())
}

/// Reads a CA certificate file and checks that it holds at least one usable certificate.
pub fn read_ca_cert(path: &Path) -> Result<String, Error> {
    let pem = std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            Code::ValidationFailed,
            format!("cannot read the CA certificate {}: {e}", path.display()),
        )
        .with("reason", "unreadable_file")
        .with("path", path.display())
    })?;
    crate::pki::tls::root_store(&pem).map_err(|e| {
        Error {
            message: format!("{}: {}", path.display(), e.message),
            ..e
        }
        .with("path", path.display())
    })?;
    Ok(pem)
}

/// Adds `authorization: Bearer <token>` to every request when there is a token.
#[derive(Clone)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The channel type every generated client of a [`Connection`] runs on.
pub type Service = InterceptedService<Channel, Bearer>;

/// An open channel to a daemon, handing out the generated clients.
pub struct Connection {
    channel: Channel,
    bearer: Bearer,
}

impl Connection {
    /// Connects to `target` (at most [`CONNECT_TIMEOUT`]).
    pub async fn open(target: &Target) -> Result<Connection, Error> {
        match target {
            Target::Socket(path) => {
                let socket = path.clone();
                let connector = tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(socket).await?;
                        Ok::<_, io::Error>(TokioIo::new(stream))
                    }
                });
                let channel = Endpoint::from_static("http://localhost")
                    .connect_timeout(CONNECT_TIMEOUT)
                    .connect_with_connector(connector)
                    .await
                    .map_err(|e| socket_unreachable(path, &e))?;
                Ok(Connection {
                    channel,
                    bearer: Bearer(None),
                })
            }
            Target::Server(server) => {
                let bearer = match &server.token {
                    None => Bearer(None),
                    Some(token) => {
                        let value = crate::pki::tokens::bearer_header(token)
                            .parse::<AsciiMetadataValue>()
                            .map_err(|_| {
                                Error::new(
                                    Code::TokenInvalid,
                                    "the token holds characters that cannot be sent in a \
                                     header; a jaco operator token is 64 hex characters",
                                )
                                .with("reason", "malformed")
                            })?;
                        Bearer(Some(value))
                    }
                };
                let invalid_server = |e: tonic::transport::Error| {
                    Error::new(
                        Code::ValidationFailed,
                        format!("cannot use --server {}: {}", server.address, chain(&e)),
                    )
                    .with("field", "server")
                };
                let channel = Endpoint::from_shared(format!("https://{}", server.address))
                    .map_err(invalid_server)?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tls_config(crate::pki::tls::tonic_client_tls(
                        &server.ca_pem,
                        None,
                        &server.host,
                    ))
                    .map_err(invalid_server)?
                    .connect()
                    .await
                    .map_err(|e| server_unreachable(server, &e))?;
                Ok(Connection { channel, bearer })
            }
        }
    }

    /// A client of the `Cluster` service.
    pub fn cluster(&self) -> ClusterClient<Service> {
        ClusterClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// A client of the `Tokens` service.
    pub fn tokens(&self) -> TokensClient<Service> {
        TokensClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// A client of the `Audit` service.
    pub fn audit(&self) -> AuditClient<Service> {
        AuditClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// A client of the `Registry` service.
    pub fn registry(&self) -> RegistryClient<Service> {
        RegistryClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// A client of the `Deploy` service.
    pub fn deploy(&self) -> DeployClient<Service> {
        DeployClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// The `Upgrade` service.
    pub fn upgrade(&self) -> UpgradeClient<Service> {
        UpgradeClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }
}

/// Connects to `target` and runs `body` on a fresh current-thread runtime, blocking until it
/// ends. A `tonic::Status` inside `body` converts into a [`Failure`] with `?`.
pub fn run<T, F, Fut>(target: &Target, body: F) -> Result<T, Failure>
where
    F: FnOnce(Connection) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Error::new(Code::Internal, format!("cannot start the I/O runtime: {e}"))
                .with("reason", "runtime_failed")
        })?;
    runtime.block_on(async move {
        let connection = Connection::open(target).await?;
        body(connection).await
    })
}

type DynError = dyn std::error::Error + 'static;

/// `error` and its sources, outermost first.
fn sources(error: &DynError) -> impl Iterator<Item = &DynError> {
    std::iter::successors(Some(error), |e| e.source())
}

/// The innermost I/O error behind a transport failure (refused, missing, timed out, …).
fn io_cause(error: &DynError) -> Option<&io::Error> {
    sources(error)
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .last()
}

/// The rustls error behind a failed handshake (it travels inside an `io::Error`).
fn tls_cause(error: &DynError) -> Option<&rustls::Error> {
    sources(error).find_map(|e| {
        e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        })
    })
}

/// Every message of the chain, `: `-separated, without repeats.
fn chain(error: &DynError) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in sources(error) {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// The most telling description of a connection failure.
fn cause(error: &DynError) -> String {
    match io_cause(error) {
        Some(io) => io.to_string(),
        None => chain(error),
    }
}

fn socket_unreachable(path: &Path, error: &tonic::transport::Error) -> Error {
    Error::new(
        Code::Internal,
        format!(
            "cannot reach the jaco daemon at {}: {}; is it running? (systemctl status jaco)",
            path.display(),
            cause(error)
        ),
    )
    .with("reason", "daemon_unreachable")
    .with("socket", path.display())
}

fn server_unreachable(server: &Server, error: &tonic::transport::Error) -> Error {
    if let Some(tls) = tls_cause(error) {
        return Error::new(
            Code::Internal,
            format!(
                "the server certificate of {} did not verify against --ca-cert {}: {tls}",
                server.address,
                server.ca_cert.display()
            ),
        )
        .with("reason", "tls_verification_failed")
        .with("server", &server.address)
        .with("ca_cert", server.ca_cert.display());
    }
    Error::new(
        Code::Internal,
        format!(
            "cannot reach the jaco API at {}: {}",
            server.address,
            cause(error)
        ),
    )
    .with("reason", "daemon_unreachable")
    .with("server", &server.address)
}

#[cfg(test)]
pub(crate) mod tests {
    //! The real transports: a fixture `Tokens` server on a unix socket in a temporary directory
    //! and on 127.0.0.1 with TLS, called through the whole CLI (`crate::cli::tests::run`).

    use std::sync::{Arc, Mutex};

    use tonic::{Request, Response, Status};

    use super::*;
    use crate::cli::tests::run as jaco;
    use crate::pki::testing::identity;
    use crate::pki::{ClientAuth, ClusterCa, now_unix_ms};
    use crate::proto::v1::tokens_server::{Tokens, TokensServer};
    use crate::proto::v1::{
        IssueTokenRequest, IssueTokenResponse, ListTokensRequest, ListTokensResponse,
        RevokeTokenRequest, RevokeTokenResponse, TokenInfo,
    };

    /// Fixed answers; records the `authorization` header of every call.
    #[derive(Clone, Default)]
    struct Fixture {
        authorization: Arc<Mutex<Vec<Option<String>>>>,
    }

    impl Fixture {
        fn record<T>(&self, request: &Request<T>) {
            let header = request
                .metadata()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            self.authorization.lock().unwrap().push(header);
        }

        fn seen(&self) -> Vec<Option<String>> {
            self.authorization.lock().unwrap().clone()
        }
    }

    #[tonic::async_trait]
    impl Tokens for Fixture {
        async fn issue(
            &self,
            request: Request<IssueTokenRequest>,
        ) -> Result<Response<IssueTokenResponse>, Status> {
            self.record(&request);
            let request = request.into_inner();
            Ok(Response::new(IssueTokenResponse {
                name: request.name,
                token: "0f".repeat(32),
                issued_at_unix_ms: 1_700_000_000_000,
                allow_privileged: request.allow_privileged,
            }))
        }

        async fn revoke(
            &self,
            request: Request<RevokeTokenRequest>,
        ) -> Result<Response<RevokeTokenResponse>, Status> {
            self.record(&request);
            let name = request.into_inner().name;
            Err(
                Error::new(Code::NotFound, format!("no token is named {name:?}"))
                    .with("name", name)
                    .into(),
            )
        }

        async fn list(
            &self,
            request: Request<ListTokensRequest>,
        ) -> Result<Response<ListTokensResponse>, Status> {
            self.record(&request);
            Ok(Response::new(ListTokensResponse {
                tokens: vec![TokenInfo {
                    name: "bootstrap".into(),
                    issued_at_unix_ms: 1_700_000_000_000,
                    revoked_at_unix_ms: 0,
                    allow_privileged: true,
                    issued_by: "local".into(),
                }],
            }))
        }
    }

    /// A fixture server on its own runtime; it stops when this is dropped.
    struct Served {
        fixture: Fixture,
        dir: tempfile::TempDir,
        _runtime: tokio::runtime::Runtime,
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Serves `routes` on `<dir>/jaco.sock` until the runtime is dropped.
    pub(crate) fn serve_on_socket(
        routes: tonic::service::Routes,
    ) -> (tempfile::TempDir, tokio::runtime::Runtime) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime();
        let listener = {
            let _entered = runtime.enter();
            tokio::net::UnixListener::bind(dir.path().join("jaco.sock")).unwrap()
        };
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        (dir, runtime)
    }

    /// Serves the fixture on `<dir>/jaco.sock`.
    fn on_socket() -> Served {
        let fixture = Fixture::default();
        let (dir, runtime) = serve_on_socket(tonic::service::Routes::new(TokensServer::new(
            fixture.clone(),
        )));
        Served {
            fixture,
            dir,
            _runtime: runtime,
        }
    }

    /// Serves the fixture with TLS on 127.0.0.1 as node-a of a fresh CA; returns the address
    /// and writes the CA certificate to `<dir>/ca.crt`.
    fn on_tls() -> (Served, String) {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix_ms();
        let ca = ClusterCa::generate_at("test", now).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        let node = identity(&ca, "node-a", &["127.0.0.1"], now);
        let runtime = runtime();
        let fixture = Fixture::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap().to_string();
        runtime.spawn(
            tonic::transport::Server::builder()
                .tls_config(crate::pki::tls::tonic_server_tls(
                    &node,
                    ClientAuth::Optional,
                ))
                .unwrap()
                .add_service(TokensServer::new(fixture.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (
            Served {
                fixture,
                dir,
                _runtime: runtime,
            },
            address,
        )
    }

    fn path(served: &Served, name: &str) -> String {
        served.dir.path().join(name).to_str().unwrap().to_owned()
    }

    #[test]
    fn the_socket_carries_calls_without_a_token() {
        let served = on_socket();
        let socket = path(&served, "jaco.sock");
        let (status, out, err) = jaco(&[
            "token", "list", "--socket", &socket, "--token", "ignored", "-o", "json",
        ]);
        assert_eq!(status, 0, "{err}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json[0]["name"], "bootstrap");
        assert_eq!(json[0]["revoked_at"], serde_json::Value::Null);
        assert_eq!(served.fixture.seen(), [None]);
    }

    #[test]
    fn an_error_envelope_comes_out_as_its_code() {
        let served = on_socket();
        let socket = path(&served, "jaco.sock");
        let (status, out, err) = jaco(&["-v", "token", "revoke", "ghost", "--socket", &socket]);
        assert_eq!(status, 1);
        assert_eq!(out, "");
        assert_eq!(
            err,
            "Error: not_found: no token is named \"ghost\"\n  name=ghost\n"
        );

        let target = Target::Socket(socket.into());
        let failure = run(&target, |c| async move {
            c.tokens()
                .revoke(RevokeTokenRequest {
                    name: "ghost".into(),
                })
                .await?;
            Ok(())
        })
        .unwrap_err();
        let Failure::Errors(errors) = failure else {
            panic!("{failure:?}")
        };
        assert_eq!(errors[0].code, Code::NotFound);
    }

    #[test]
    fn a_missing_socket_says_the_daemon_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("absent.sock");
        let failure = run(&Target::Socket(socket.clone()), |_| async { Ok(()) }).unwrap_err();
        let Failure::Errors(errors) = failure else {
            panic!("{failure:?}")
        };
        let error = &errors[0];
        assert_eq!(error.code, Code::Internal);
        assert_eq!(error.details["reason"], "daemon_unreachable");
        assert_eq!(error.details["socket"], socket.display().to_string());
        assert_eq!(
            error.message,
            format!(
                "cannot reach the jaco daemon at {}: No such file or directory (os error 2); \
                 is it running? (systemctl status jaco)",
                socket.display()
            )
        );
    }

    #[test]
    fn tls_carries_the_bearer_token() {
        let (served, address) = on_tls();
        let ca = path(&served, "ca.crt");
        let token = "ab".repeat(32);
        let (status, out, err) = jaco(&[
            "token",
            "issue",
            "--name",
            "ci",
            "--server",
            &address,
            "--ca-cert",
            &ca,
            "--token",
            &token,
            "-q",
        ]);
        assert_eq!(status, 0, "{err}");
        assert_eq!(out, format!("{}\n", "0f".repeat(32)));
        assert_eq!(served.fixture.seen(), [Some(format!("Bearer {token}"))]);
    }

    #[test]
    fn a_server_certificate_from_another_ca_is_refused() {
        let (served, address) = on_tls();
        let other = ClusterCa::generate_at("other", now_unix_ms()).unwrap();
        let wrong_ca = path(&served, "other-ca.crt");
        std::fs::write(&wrong_ca, other.cert_pem()).unwrap();
        let (status, _, err) = jaco(&[
            "-v",
            "token",
            "list",
            "--server",
            &address,
            "--ca-cert",
            &wrong_ca,
        ]);
        assert_eq!(status, 1, "{err}");
        assert!(
            err.starts_with(&format!(
                "Error: internal: the server certificate of {address} did not verify against \
                 --ca-cert {wrong_ca}: "
            )),
            "{err}"
        );
        assert!(
            err.contains("\n  reason=tls_verification_failed\n"),
            "{err}"
        );
        assert!(served.fixture.seen().is_empty());
    }

    #[test]
    fn a_closed_port_says_the_api_is_unreachable() {
        let (served, _) = on_tls();
        let ca = path(&served, "ca.crt");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = closed.local_addr().unwrap().to_string();
        drop(closed);
        let (status, _, err) = jaco(&[
            "-v",
            "token",
            "list",
            "--server",
            &address,
            "--ca-cert",
            &ca,
        ]);
        assert_eq!(status, 1, "{err}");
        assert!(
            err.starts_with(&format!(
                "Error: internal: cannot reach the jaco API at {address}: Connection refused"
            )),
            "{err}"
        );
        assert!(err.contains("\n  reason=daemon_unreachable\n"), "{err}");
        assert!(err.contains(&format!("\n  server={address}\n")), "{err}");
    }

    #[test]
    fn server_needs_a_readable_ca_certificate() {
        if std::env::var_os("JACO_CA_CERT").is_none() {
            let (status, _, err) = jaco(&["token", "list", "--server", "127.0.0.1:1"]);
            assert_eq!(status, 2, "{err}");
            assert!(err.contains("pass --ca-cert FILE"), "{err}");
            assert!(err.contains("pki/ca.crt"), "{err}");
        }
        let (status, _, err) = jaco(&[
            "-v",
            "token",
            "list",
            "--server",
            "127.0.0.1:1",
            "--ca-cert",
            "/nonexistent/ca.crt",
        ]);
        assert_eq!(status, 1, "{err}");
        assert!(
            err.starts_with(
                "Error: validation_failed: cannot read the CA certificate /nonexistent/ca.crt: "
            ),
            "{err}"
        );
        assert!(err.contains("reason=unreadable_file"), "{err}");
    }

    #[test]
    fn the_host_of_server_has_no_brackets_or_port() {
        assert_eq!(server_host("[::1]:7000").unwrap(), "::1");
        assert_eq!(server_host("node-a:7000").unwrap(), "node-a");
        assert_eq!(server_host("10.0.0.1:7000").unwrap(), "10.0.0.1");
        assert_eq!(
            server_host("not a host:7000").unwrap_err().code,
            Code::ValidationFailed
        );
    }
}
