//! TLS for the `:7000` listener and its clients: rustls configs built from the cluster PKI,
//! the same settings as tonic TLS builders, and identification of the peer node of a call.
//!
//! This module builds configurations and inspects already-verified certificates; it opens no
//! sockets, reads no files, and never weakens verification (there is no "insecure" mode: a
//! joiner without a CA file pins the CA by fingerprint instead, see [`pinned_client_config`]).
//!
//! # Policy
//! - rustls with the *ring* provider, TLS 1.3 only (every peer is jaco), ALPN `h2`.
//! - The server presents its node certificate followed by the CA certificate, so that a joiner
//!   that only knows the CA's fingerprint can find and pin it.
//! - The server verifies client certificates against the cluster CA. Client auth is
//!   [`ClientAuth::Optional`] on `:7000`: CLI callers come without a certificate and carry a
//!   bearer token; node-to-node calls present their node certificate and are identified with
//!   [`peer_node_name`]. [`ClientAuth::Required`] is for a listener that only peers may use.
//! - Clients verify the server against the cluster CA and the name they dial (SAN check): the
//!   CLI and a joiner use the host of `--server`/`--peer`; a node calling a peer it knows from
//!   membership should use the peer's node name, which every node certificate carries.
//!
//! # How tonic consumes this
//! tonic 0.14 (feature `tls-ring`) does not accept a raw rustls config: `ServerTlsConfig` and
//! `ClientTlsConfig` take PEM `Identity`/`Certificate` values and build rustls configs
//! themselves (with the same WebPKI verifiers used here). Two routes are therefore offered:
//! - **PEM builders** [`tonic_server_tls`] and [`tonic_client_tls`] for
//!   `Server::builder().tls_config(..)` and `Endpoint::tls_config(..)`. Simplest; tonic then
//!   puts the verified peer chain into each request (`Request::peer_certs()`), which
//!   [`peer_node_name`] reads. The certificate is fixed for the life of the `Server`.
//! - **rustls configs** [`server_config`] and [`client_config`] for custom transports:
//!   `Server::serve_with_incoming` over a stream of `tokio_rustls::server::TlsStream<TcpStream>`
//!   (tonic implements `Connected` for it, so `peer_certs()` still works), and
//!   `Endpoint::connect_with_connector` with a connector that runs `tokio_rustls::TlsConnector`.
//!   This route lets the daemon swap certificates without restarting the server (bootstrap
//!   certificate → CA-signed certificate after init/join, certificate renewal), enforces TLS 1.3,
//!   and is the only one that supports the fingerprint-pinned joiner config
//!   ([`PinnedCaVerifier`] can also be handed to `Endpoint::tls_config_with_verifier`).
//!
//! Both routes are exercised by real handshakes in the tests below.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use super::node::NodeIdentity;
use super::{crypto_error, first_cert_der, hex, sha256};
use crate::error::{Code, Error};

/// ALPN protocol id for HTTP/2, which gRPC runs on.
pub const ALPN_H2: &[u8] = b"h2";

/// Whether the server demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients may connect without a certificate (CLI with a bearer token); a certificate that
    /// is presented must still chain to the cluster CA.
    Optional,
    /// Every client must present a certificate signed by the cluster CA.
    Required,
}

/// The crypto provider every jaco TLS config uses: rustls' *ring* provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store holding the cluster CA certificate(s) of `ca_pem`.
pub fn root_store(ca_pem: &str) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| invalid_ca(format!("the CA certificate is not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid_ca(format!("the CA certificate is not usable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid_ca("the CA file holds no certificate".into()));
    }
    Ok(Arc::new(roots))
}

fn invalid_ca(message: String) -> Error {
    Error::new(Code::ValidationFailed, message).with("field", "ca_cert")
}

/// The chain a node presents (its certificate, then the CA) and its key.
fn chain_and_key(
    identity: &NodeIdentity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let leaf = first_cert_der(&identity.cert_pem, "node certificate")?;
    let ca = first_cert_der(&identity.ca_pem, "CA certificate")?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| crypto_error("reading the node key", e))?;
    Ok((vec![leaf, ca], key))
}

/// A rustls server config presenting `identity` and verifying client certificates against the
/// cluster CA; TLS 1.3, ALPN `h2`.
pub fn server_config(
    identity: &NodeIdentity,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, Error> {
    let provider = provider();
    let roots = root_store(&identity.ca_pem)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    let verifier = match client_auth {
        ClientAuth::Optional => verifier.allow_unauthenticated(),
        ClientAuth::Required => verifier,
    }
    .build()
    .map_err(|e| crypto_error("building the client certificate verifier", e))?;
    let (chain, key) = chain_and_key(identity)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| crypto_error("selecting TLS 1.3", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| crypto_error("loading the node certificate", e))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A rustls client config that verifies the server against the cluster CA (and, at connect
/// time, against the server name given to the connector); presents `client_identity` when
/// given (node-to-node calls), nothing otherwise (CLI). TLS 1.3, ALPN `h2`.
pub fn client_config(
    ca_pem: &str,
    client_identity: Option<&NodeIdentity>,
) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let roots = root_store(ca_pem)?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| crypto_error("selecting TLS 1.3", e))?
        .with_root_certificates(roots);
    let mut config = match client_identity {
        Some(identity) => {
            let (chain, key) = chain_and_key(identity)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| crypto_error("loading the client certificate", e))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A client config for a joiner that has the CA's SHA-256 fingerprint (from its join token)
/// but no CA file: the server must send a CA certificate with exactly that fingerprint in its
/// chain, and the server certificate must chain to it and match the dialled name.
///
/// After the join, the joiner should check the CA certificate it receives with
/// [`check_ca_pin`] before saving it.
pub fn pinned_client_config(ca_sha256: [u8; 32]) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let verifier = Arc::new(PinnedCaVerifier::new(ca_sha256));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| crypto_error("selecting TLS 1.3", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Refuses a CA certificate whose SHA-256 fingerprint is not `ca_sha256`.
pub fn check_ca_pin(ca_pem: &str, ca_sha256: &[u8; 32]) -> Result<(), Error> {
    let actual = super::cert_fingerprint(ca_pem)?;
    if &actual == ca_sha256 {
        Ok(())
    } else {
        Err(Error::new(
            Code::JoinTokenInvalid,
            "the cluster CA does not match the CA fingerprint in the join token",
        )
        .with("reason", "ca_mismatch")
        .with("expected_sha256", hex(ca_sha256))
        .with("actual_sha256", hex(&actual)))
    }
}

/// Verifies a server whose chain contains a CA certificate with a pinned SHA-256 fingerprint.
///
/// The pinned certificate becomes the only trust anchor; the server certificate is then
/// checked by rustls' WebPKI verifier exactly as with a CA file (chain, validity, serverAuth
/// usage, SAN match).
pub struct PinnedCaVerifier {
    ca_sha256: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for PinnedCaVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedCaVerifier")
            .field("ca_sha256", &hex(&self.ca_sha256))
            .finish()
    }
}

impl PinnedCaVerifier {
    /// A verifier pinned to the CA with this SHA-256 fingerprint.
    pub fn new(ca_sha256: [u8; 32]) -> Self {
        PinnedCaVerifier {
            ca_sha256,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|cert| sha256(cert.as_ref()) == self.ca_sha256)
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The name to verify a server against: the host of `host[:port]` (an IP or a DNS name).
pub fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    let bare = host
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']').map(|(ip, _)| ip))
        .unwrap_or_else(|| match host.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') && port.parse::<u16>().is_ok() => name,
            _ => host,
        });
    ServerName::try_from(bare.to_owned()).map_err(|_| {
        Error::new(
            Code::ValidationFailed,
            format!("{host:?} is not a host name or IP address"),
        )
        .with("field", "server")
    })
}

/// The node name of the peer of a call, from its **already verified** certificate chain
/// (tonic: `request.peer_certs()`; rustls: `connection.peer_certificates()`).
///
/// `permission_denied` when the peer presented no certificate (a CLI caller on an endpoint
/// reserved for nodes). Never call this on a chain that the TLS layer has not verified against
/// the cluster CA: the name is read, not checked.
pub fn peer_node_name(certs: Option<&[CertificateDer<'_>]>) -> Result<String, Error> {
    let leaf = certs.and_then(<[_]>::first).ok_or_else(|| {
        Error::new(
            Code::PermissionDenied,
            "this call is reserved for cluster nodes and needs a node certificate",
        )
        .with("reason", "no_client_certificate")
    })?;
    leaf_common_name(leaf).map_err(|problem| {
        Error::new(
            Code::PermissionDenied,
            format!("the peer certificate {problem}"),
        )
        .with("reason", "unreadable_certificate")
    })
}

/// The node name (common name) of a PEM node certificate.
pub fn cert_node_name(cert_pem: &str) -> Result<String, Error> {
    leaf_common_name(&first_cert_der(cert_pem, "node certificate")?).map_err(|problem| {
        Error::new(Code::Internal, format!("the node certificate {problem}"))
            .with("reason", "node_cert_unreadable")
    })
}

/// The common name of a certificate, if it is a valid node name; otherwise what is wrong.
fn leaf_common_name(der: &CertificateDer<'_>) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("does not parse: {e}"))?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("has no common name")?;
    super::validate_node_name(name)
        .map_err(|_| format!("names {name:?}, which is not a node name"))?;
    Ok(name.to_owned())
}

/// When a PEM certificate becomes valid, in unix milliseconds.
pub(crate) fn cert_not_before_unix_ms(cert_pem: &str) -> Result<i64, Error> {
    let der = first_cert_der(cert_pem, "node certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| crypto_error("reading the node certificate", e))?;
    Ok(cert.validity().not_before.timestamp().saturating_mul(1000))
}

/// tonic's server TLS settings for `identity` (PEM route; see the module docs).
pub fn tonic_server_tls(
    identity: &NodeIdentity,
    client_auth: ClientAuth,
) -> tonic::transport::ServerTlsConfig {
    let chain = format!("{}\n{}", identity.cert_pem.trim_end(), identity.ca_pem);
    tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            chain,
            &identity.key_pem,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(&identity.ca_pem))
        .client_auth_optional(client_auth == ClientAuth::Optional)
}

/// tonic's client TLS settings: trust `ca_pem`, verify the server as `server_name` (see
/// [`server_name`] for what to pass), present `client_identity` when given.
pub fn tonic_client_tls(
    ca_pem: &str,
    client_identity: Option<&NodeIdentity>,
    server_name: &str,
) -> tonic::transport::ClientTlsConfig {
    let config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name(server_name);
    match client_identity {
        Some(identity) => config.identity(tonic::transport::Identity::from_pem(
            &identity.cert_pem,
            &identity.key_pem,
        )),
        None => config,
    }
}

#[cfg(test)]
mod tests {
    //! Real handshakes over TCP on 127.0.0.1, one server connection per test.

    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::pki::ca::ClusterCa;
    use crate::pki::now_unix_ms;
    use crate::pki::testing::identity;

    /// What the server saw: the client's node name when it presented a certificate.
    type ServerSide = Result<Result<String, Error>, String>;

    /// Runs one handshake plus a one-byte echo; returns (server outcome, client outcome).
    async fn exchange(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> (ServerSide, Result<(), String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = TlsAcceptor::from(server)
                .accept(tcp)
                .await
                .map_err(|e| e.to_string())?;
            let peer = peer_node_name(tls.get_ref().1.peer_certificates());
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            tls.write_all(&byte).await.map_err(|e| e.to_string())?;
            tls.shutdown().await.map_err(|e| e.to_string())?;
            Ok(peer)
        });
        let name = server_name(name).unwrap();
        let client_result = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let mut tls = TlsConnector::from(client)
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_H2));
            tls.write_all(b"x").await.map_err(|e| e.to_string())?;
            let mut byte = [0u8; 1];
            // In TLS 1.3 a refused client certificate surfaces on the first read.
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            assert_eq!(&byte, b"x");
            Ok(())
        }
        .await;
        let server_result = server_task.await.unwrap();
        (server_result, client_result)
    }

    struct Cluster {
        ca: ClusterCa,
        server: NodeIdentity,
        client: NodeIdentity,
    }

    fn cluster() -> Cluster {
        let now = now_unix_ms();
        let ca = ClusterCa::generate_at("test", now).unwrap();
        let server = identity(&ca, "node-a", &["127.0.0.1"], now);
        let client = identity(&ca, "node-b", &[], now);
        Cluster { ca, server, client }
    }

    #[tokio::test]
    async fn mutual_tls_with_cluster_certificates_identifies_the_peer() {
        let c = cluster();
        let server = server_config(&c.server, ClientAuth::Required).unwrap();
        let client = client_config(c.ca.cert_pem(), Some(&c.client)).unwrap();
        let (server_side, client_side) = exchange(server, client, "node-a").await;
        client_side.unwrap();
        assert_eq!(server_side.unwrap().unwrap(), "node-b");
    }

    #[tokio::test]
    async fn the_server_can_be_verified_by_ip_san() {
        let c = cluster();
        let server = server_config(&c.server, ClientAuth::Optional).unwrap();
        let client = client_config(c.ca.cert_pem(), None).unwrap();
        let (server_side, client_side) = exchange(server, client, "127.0.0.1:7000").await;
        client_side.unwrap();
        server_side.unwrap().unwrap_err();
    }

    #[tokio::test]
    async fn client_certificate_from_another_ca_is_refused() {
        let c = cluster();
        let stranger_ca = ClusterCa::generate_at("other", now_unix_ms()).unwrap();
        let stranger = identity(&stranger_ca, "node-b", &[], now_unix_ms());
        // Refused whether client auth is required or optional: a presented cert must verify.
        for auth in [ClientAuth::Required, ClientAuth::Optional] {
            let server = server_config(&c.server, auth).unwrap();
            // The stranger trusts our CA for the server, but its own cert is foreign.
            let stranger = NodeIdentity {
                ca_pem: stranger.ca_pem.clone(),
                ..stranger.clone()
            };
            let client = client_config(c.ca.cert_pem(), Some(&stranger)).unwrap();
            let (server_side, client_side) = exchange(server, client, "node-a").await;
            let server_error = server_side.unwrap_err();
            assert!(
                server_error.contains("UnknownIssuer"),
                "{auth:?}: {server_error}"
            );
            client_side.unwrap_err();
        }
    }

    #[tokio::test]
    async fn server_from_another_ca_is_refused() {
        let c = cluster();
        let other_ca = ClusterCa::generate_at("other", now_unix_ms()).unwrap();
        let server = server_config(&c.server, ClientAuth::Optional).unwrap();
        let client = client_config(other_ca.cert_pem(), None).unwrap();
        let (server_side, client_side) = exchange(server, client, "node-a").await;
        let error = client_side.unwrap_err();
        assert!(error.contains("UnknownIssuer"), "{error}");
        server_side.unwrap_err();
    }

    #[tokio::test]
    async fn server_whose_san_does_not_match_is_refused() {
        let c = cluster();
        for wrong in ["node-x", "127.0.0.2", "localhost"] {
            let server = server_config(&c.server, ClientAuth::Optional).unwrap();
            let client = client_config(c.ca.cert_pem(), None).unwrap();
            let (server_side, client_side) = exchange(server, client, wrong).await;
            let error = client_side.unwrap_err();
            assert!(error.contains("not valid for name"), "{wrong}: {error}");
            server_side.unwrap_err();
        }
    }

    #[tokio::test]
    async fn optional_client_auth_admits_a_client_without_a_certificate() {
        let c = cluster();
        let server = server_config(&c.server, ClientAuth::Optional).unwrap();
        let client = client_config(c.ca.cert_pem(), None).unwrap();
        let (server_side, client_side) = exchange(server, client, "node-a").await;
        client_side.unwrap();
        let no_peer = server_side.unwrap().unwrap_err();
        assert_eq!(no_peer.code, Code::PermissionDenied);
        assert_eq!(no_peer.details["reason"], "no_client_certificate");
    }

    #[tokio::test]
    async fn required_client_auth_refuses_a_client_without_a_certificate() {
        let c = cluster();
        let server = server_config(&c.server, ClientAuth::Required).unwrap();
        let client = client_config(c.ca.cert_pem(), None).unwrap();
        let (server_side, client_side) = exchange(server, client, "node-a").await;
        let error = server_side.unwrap_err();
        assert!(error.contains("no certificates"), "{error}");
        client_side.unwrap_err();
    }

    #[tokio::test]
    async fn a_joiner_can_pin_the_ca_by_fingerprint() {
        let c = cluster();
        let server = server_config(&c.server, ClientAuth::Optional).unwrap();
        let client = pinned_client_config(c.ca.fingerprint()).unwrap();
        let (server_side, client_side) = exchange(server, client, "127.0.0.1").await;
        client_side.unwrap();
        server_side.unwrap().unwrap_err();
        check_ca_pin(c.ca.cert_pem(), &c.ca.fingerprint()).unwrap();

        // A wrong pin, and a right pin with a wrong name, are both refused.
        for (pin, name) in [([0u8; 32], "node-a"), (c.ca.fingerprint(), "node-x")] {
            let server = server_config(&c.server, ClientAuth::Optional).unwrap();
            let client = pinned_client_config(pin).unwrap();
            let (_, client_side) = exchange(server, client, name).await;
            client_side.unwrap_err();
        }
        let error = check_ca_pin(c.ca.cert_pem(), &[0u8; 32]).unwrap_err();
        assert_eq!(error.code, Code::JoinTokenInvalid);
        assert_eq!(error.details["reason"], "ca_mismatch");
    }

    #[test]
    fn server_names_accept_host_port_forms() {
        assert_eq!(
            server_name("node-a").unwrap(),
            ServerName::try_from("node-a").unwrap()
        );
        assert_eq!(
            server_name("node-a:7000").unwrap(),
            ServerName::try_from("node-a").unwrap()
        );
        assert_eq!(
            server_name("10.0.0.1:7000").unwrap(),
            ServerName::try_from("10.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("[fd00::1]:7000").unwrap(),
            ServerName::try_from("fd00::1").unwrap()
        );
        assert_eq!(
            server_name("fd00::1").unwrap(),
            ServerName::try_from("fd00::1").unwrap()
        );
        assert!(server_name("bad name:7000").is_err());
    }

    #[test]
    fn bad_ca_files_are_refused() {
        assert_eq!(root_store("").unwrap_err().code, Code::ValidationFailed);
        assert!(client_config("not a cert", None).is_err());
    }

    // ---- tonic: both routes, with a real gRPC call that reports the caller's node name ----

    use crate::proto::v1::tokens_client::TokensClient;
    use crate::proto::v1::tokens_server::{Tokens, TokensServer};
    use crate::proto::v1::{
        IssueTokenRequest, IssueTokenResponse, ListTokensRequest, ListTokensResponse,
        RevokeTokenRequest, RevokeTokenResponse, TokenInfo,
    };

    /// Answers `List` with one entry naming the caller (its node name, or "anonymous").
    struct WhoAmI;

    #[tonic::async_trait]
    impl Tokens for WhoAmI {
        async fn issue(
            &self,
            _: tonic::Request<IssueTokenRequest>,
        ) -> Result<tonic::Response<IssueTokenResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }

        async fn revoke(
            &self,
            _: tonic::Request<RevokeTokenRequest>,
        ) -> Result<tonic::Response<RevokeTokenResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }

        async fn list(
            &self,
            request: tonic::Request<ListTokensRequest>,
        ) -> Result<tonic::Response<ListTokensResponse>, tonic::Status> {
            let certs = request.peer_certs();
            let name = peer_node_name(certs.as_deref().map(Vec::as_slice))
                .unwrap_or_else(|_| "anonymous".into());
            Ok(tonic::Response::new(ListTokensResponse {
                tokens: vec![TokenInfo {
                    name,
                    ..Default::default()
                }],
            }))
        }
    }

    async fn who_am_i(channel: tonic::transport::Channel) -> Result<String, tonic::Status> {
        let response = TokensClient::new(channel)
            .list(ListTokensRequest::default())
            .await?;
        Ok(response.into_inner().tokens.remove(0).name)
    }

    async fn tonic_server_with_pem_route(identity: &NodeIdentity) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .tls_config(tonic_server_tls(identity, ClientAuth::Optional))
            .unwrap();
        tokio::spawn(server.serve_with_incoming(
            TokensServer::new(WhoAmI),
            tokio_stream::wrappers::TcpListenerStream::new(listener),
        ));
        addr
    }

    #[tokio::test]
    async fn tonic_pem_route_serves_nodes_and_cli_clients() {
        let c = cluster();
        let addr = tonic_server_with_pem_route(&c.server).await;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}")).unwrap();

        let as_node = endpoint
            .clone()
            .tls_config(tonic_client_tls(c.ca.cert_pem(), Some(&c.client), "node-a"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        assert_eq!(who_am_i(as_node).await.unwrap(), "node-b");

        let as_cli = endpoint
            .clone()
            .tls_config(tonic_client_tls(c.ca.cert_pem(), None, "127.0.0.1"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        assert_eq!(who_am_i(as_cli).await.unwrap(), "anonymous");

        let wrong_name = endpoint
            .tls_config(tonic_client_tls(c.ca.cert_pem(), None, "node-x"))
            .unwrap()
            .connect()
            .await;
        assert!(wrong_name.is_err());
    }

    #[tokio::test]
    async fn tonic_rustls_route_serves_nodes_and_cli_clients() {
        let c = cluster();
        // Server: accept TCP, handshake with our rustls config in a task per connection, and
        // hand finished TLS streams to tonic.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(server_config(&c.server, ClientAuth::Optional).unwrap());
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = sender.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                });
            }
        });
        tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(
            TokensServer::new(WhoAmI),
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        ));

        // Client: a connector that dials TCP and runs our rustls client config.
        let connect = |config: Arc<ClientConfig>, name: &'static str| {
            let connector = TlsConnector::from(config);
            tower::service_fn(move |_: tonic::transport::Uri| {
                let connector = connector.clone();
                async move {
                    let tcp = TcpStream::connect(addr).await?;
                    let tls = connector.connect(server_name(name).unwrap(), tcp).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                }
            })
        };
        let endpoint = tonic::transport::Endpoint::from_static("http://node-a:7000");

        let as_node = endpoint
            .connect_with_connector(connect(
                client_config(c.ca.cert_pem(), Some(&c.client)).unwrap(),
                "node-a",
            ))
            .await
            .unwrap();
        assert_eq!(who_am_i(as_node).await.unwrap(), "node-b");

        let as_cli = endpoint
            .connect_with_connector(connect(
                client_config(c.ca.cert_pem(), None).unwrap(),
                "node-a",
            ))
            .await
            .unwrap();
        assert_eq!(who_am_i(as_cli).await.unwrap(), "anonymous");

        let pinned = endpoint
            .connect_with_connector(connect(
                pinned_client_config(c.ca.fingerprint()).unwrap(),
                "127.0.0.1",
            ))
            .await
            .unwrap();
        assert_eq!(who_am_i(pinned).await.unwrap(), "anonymous");

        let wrong_name = endpoint
            .connect_with_connector(connect(
                client_config(c.ca.cert_pem(), None).unwrap(),
                "node-x",
            ))
            .await;
        assert!(wrong_name.is_err());
    }
}
