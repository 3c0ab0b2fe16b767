//! Becoming a cluster member: `cluster init` on the first node, `cluster join` on the others,
//! and the admission of a joiner by any member (join token consumed through raft, certificate
//! signed with only the approved names, node entered in the node table).
//!
//! Each procedure writes the node's PKI files only once the node is really a member (init: its
//! first command committed; join: admitted into the node table), and a failed init removes the
//! raft directory it created, so that it can be retried on the same data directory. This module must not serve requests or decide
//! membership changes (the reconciler adds admitted nodes to raft).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Endpoint;

use super::member::{Member, MemberSettings};
use super::metrics::Metrics;
use crate::api::auth::Identity;
use crate::error::{Code, Error};
use crate::pki::tls::{check_ca_pin, server_name, tonic_client_tls};
use crate::pki::tokens::{OperatorToken, parse_join_token};
use crate::pki::{ClusterCa, NodeIdentity, NodeKey, hex, now_unix_ms, parse_san};
use crate::proto::v1 as pb;
use crate::proto::v1::command::Kind;
use crate::proto::v1::command_result::Outcome;
use crate::proto::v1::internal_client::InternalClient;
use crate::raft::{NodeAddr, members_by_id};

/// Name of the operator token minted at init.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";

/// How long init waits for the new single-voter cluster to elect this node.
const ELECTION_WAIT: Duration = Duration::from_secs(10);

/// How long a joiner waits for the leader to add it to raft and replicate to it.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(30);

/// How long a joiner waits for a peer to admit it.
const ADMISSION_TIMEOUT: Duration = Duration::from_secs(15);

/// The extra certificate names of this node: the host of its advertised address when that is
/// not the node name itself (so that peers and CLIs dialling that address can verify it).
pub fn advertised_sans(node_name: &str, advertise: &str) -> Vec<String> {
    let host = match server_name(advertise) {
        Ok(rustls::pki_types::ServerName::DnsName(name)) => name.as_ref().to_owned(),
        Ok(rustls::pki_types::ServerName::IpAddress(ip)) => std::net::IpAddr::from(ip).to_string(),
        _ => return Vec::new(),
    };
    if host == node_name || parse_san(&host).is_err() {
        Vec::new()
    } else {
        vec![host]
    }
}

/// Cluster-wide settings a node that initialises a cluster takes from its daemon.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDefaults {
    /// Audit events the cluster keeps.
    pub audit_retention: u64,
    /// The IPAM pool (SPEC §7).
    pub ipam_pool: String,
}

/// What an operator may pre-seed when a node initialises a cluster (`jaco cluster seed`, the
/// cloud-init first boot): the cluster CA and the bootstrap operator token's hash, so that the
/// operator holds the CA certificate and the token before the node exists.
#[derive(Debug, Default)]
pub struct InitSeed {
    /// The cluster CA to use instead of generating one.
    pub ca: Option<ClusterCa>,
    /// SHA-256 of the bootstrap operator token's 32 bytes, stored instead of minting a token.
    pub operator_token_sha256: Option<[u8; 32]>,
}

impl InitSeed {
    /// The seed an `Init` request carries; `validation_failed` naming the field when a part is
    /// malformed or only half of the CA is given.
    pub fn from_request(request: &pb::InitRequest) -> Result<Self, Error> {
        let invalid = |field: &str, message: String| {
            Error::new(Code::ValidationFailed, message).with("field", field)
        };
        let ca = match (
            request.ca_cert_pem.is_empty(),
            request.ca_key_pem.is_empty(),
        ) {
            (true, true) => None,
            (false, false) => Some(
                ClusterCa::from_pem(&request.ca_cert_pem, &request.ca_key_pem).map_err(|e| {
                    invalid(
                        "ca_cert_pem",
                        format!("the seeded cluster CA is unusable: {e}"),
                    )
                })?,
            ),
            (cert_missing, _) => {
                let field = if cert_missing {
                    "ca_cert_pem"
                } else {
                    "ca_key_pem"
                };
                return Err(invalid(
                    field,
                    "a seeded cluster CA needs both its certificate and its key".into(),
                ));
            }
        };
        let operator_token_sha256 = match request.operator_token_sha256.as_str() {
            "" => None,
            text => Some(crate::pki::unhex::<32>(text).ok_or_else(|| {
                invalid(
                    "operator_token_sha256",
                    "the seeded operator token hash must be 64 hex characters (a SHA-256)".into(),
                )
            })?),
        };
        Ok(InitSeed {
            ca,
            operator_token_sha256,
        })
    }
}

/// Creates a cluster with this node as its single voter; returns the member and the reply
/// (with the bootstrap token, shown once).
pub async fn init(
    settings: &MemberSettings,
    cluster_name: &str,
    seed: InitSeed,
    defaults: &ClusterDefaults,
    metrics: Arc<Metrics>,
) -> Result<(Arc<Member>, pb::InitResponse), Error> {
    let now = now_unix_ms();
    let ca = match seed.ca {
        Some(ca) => ca,
        None => ClusterCa::generate(&hex(&rand::random::<[u8; 16]>()))?,
    };
    let cluster_id = ca.cluster_id().to_owned();
    let key = NodeKey::generate()?;
    let sans = advertised_sans(&settings.name, &settings.advertise);
    let csr = key.csr(&settings.name, &sans)?;
    let identity = NodeIdentity {
        cert_pem: ca.sign_node_csr(&csr, &settings.name, &sans, now)?,
        key_pem: key.pem().to_owned(),
        ca_pem: ca.cert_pem().to_owned(),
    };
    identity.verify(now)?;

    let member = Member::start(settings, identity.clone(), metrics).await?;
    let result = bootstrap(
        &member,
        settings,
        &ca,
        cluster_name,
        seed.operator_token_sha256,
        defaults,
        &sans,
    )
    .await;
    match result {
        Ok(token) => {
            identity.save(&settings.data_dir)?;
            let reply = pb::InitResponse {
                cluster_id,
                node_name: settings.name.clone(),
                token_name: BOOTSTRAP_TOKEN_NAME.to_owned(),
                token,
                ca_cert_pem: ca.cert_pem().to_owned(),
            };
            Ok((member, reply))
        }
        Err(error) => {
            abandon(&member, &settings.data_dir).await;
            Err(error)
        }
    }
}

/// Initialises raft with this node alone and commits the cluster's first command.
async fn bootstrap(
    member: &Member,
    settings: &MemberSettings,
    ca: &ClusterCa,
    cluster_name: &str,
    seeded_token_sha256: Option<[u8; 32]>,
    defaults: &ClusterDefaults,
    sans: &[String],
) -> Result<String, Error> {
    let me = NodeAddr {
        name: settings.name.clone(),
        addr: settings.advertise.clone(),
    };
    member
        .raft
        .initialize(members_by_id([me]))
        .await
        .map_err(|e| {
            Error::new(
                Code::ClusterAlreadyInitialized,
                format!("raft refused to initialise this data directory: {e}"),
            )
            .with("data_dir", settings.data_dir.display())
        })?;
    member
        .raft
        .wait(Some(ELECTION_WAIT))
        .current_leader(member.id, "single voter elects itself")
        .await
        .map_err(|e| {
            Error::new(
                Code::NoLeader,
                format!("the new cluster elected no leader: {e}"),
            )
        })?;
    // A pre-seeded token was generated by the operator, who holds the plaintext.
    let (token, sha256) = match seeded_token_sha256 {
        Some(sha256) => (String::new(), sha256),
        None => OperatorToken::generate(),
    };
    let now = now_unix_ms();
    let kind = Kind::InitCluster(pb::InitCluster {
        meta: Some(pb::ClusterMeta {
            cluster_id: ca.cluster_id().to_owned(),
            name: cluster_name.to_owned(),
            ca_cert_pem: ca.cert_pem().to_owned(),
            ca_key_pem: ca.key_pem().to_owned(),
            created_at_unix_ms: now,
            audit_retention_events: defaults.audit_retention,
            ipam_pool: defaults.ipam_pool.clone(),
        }),
        node: Some(pb::Node {
            name: settings.name.clone(),
            raft_id: member.id,
            api_address: settings.advertise.clone(),
            raft_address: settings.advertise.clone(),
            sans: sans.to_vec(),
            // Ready once its isolation self-test passes (the leader's reconciler marks it).
            status: pb::NodeStatus::Joining.into(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        }),
        bootstrap_token: Some(pb::OperatorToken {
            name: BOOTSTRAP_TOKEN_NAME.to_owned(),
            sha256: sha256.to_vec(),
            issued_at_unix_ms: now,
            allow_privileged: true,
            issued_by: Identity::Local.audit_name(),
            ..Default::default()
        }),
    });
    member.submit(&Identity::Local, kind).await?;
    Ok(token)
}

/// Joins the cluster through the first of `peers` that admits this node; `announce` receives
/// the started member as soon as the node is admitted, before it waits for the leader to add
/// it to raft.
pub async fn join(
    settings: &MemberSettings,
    peers: &[String],
    join_token: &str,
    ca_pem: &str,
    metrics: Arc<Metrics>,
    announce: impl FnOnce(Arc<Member>),
) -> Result<pb::JoinResponse, Error> {
    let parsed = parse_join_token(join_token)?;
    if let Some(pin) = &parsed.ca_sha256 {
        check_ca_pin(ca_pem, pin)?;
    }
    if peers.is_empty() {
        return Err(
            Error::new(Code::ValidationFailed, "no peer to join through").with("field", "peers"),
        );
    }
    let key = NodeKey::generate()?;
    let csr = key.csr(&settings.name, &[])?;
    let request = pb::SignNodeCsrRequest {
        join_token: join_token.trim().to_owned(),
        node_name: settings.name.clone(),
        csr_pem: csr,
        api_address: settings.advertise.clone(),
        raft_address: settings.advertise.clone(),
    };
    let admitted = admission(peers, ca_pem, request).await?;
    if crate::pki::cert_fingerprint(&admitted.ca_cert_pem)? != crate::pki::cert_fingerprint(ca_pem)?
    {
        return Err(Error::new(
            Code::JoinTokenInvalid,
            "the peer returned a different CA certificate than --ca-cert",
        )
        .with("reason", "ca_mismatch"));
    }
    let identity = NodeIdentity {
        key_pem: key.pem().to_owned(),
        cert_pem: admitted.cert_pem,
        ca_pem: ca_pem.to_owned(),
    };
    let name = identity.verify(now_unix_ms())?;
    if name != settings.name {
        return Err(Error::new(
            Code::Internal,
            format!("the signed certificate names {name:?}, not this node"),
        ));
    }
    // Admitted: the node is in the node table and the leader will add it to raft as soon as it
    // can reach it, so the identity is saved now and the member announced (its TLS API must be
    // up for the leader to replicate to it).
    let member = Member::start(settings, identity.clone(), metrics).await?;
    identity.save(&settings.data_dir)?;
    announce(member.clone());
    let joined = member
        .raft
        .wait(Some(MEMBERSHIP_WAIT))
        .metrics(
            |m| {
                m.current_leader.is_some()
                    && m.membership_config.membership().get_node(&m.id).is_some()
            },
            "added to the cluster",
        )
        .await;
    if let Err(error) = joined {
        return Err(Error::new(
            Code::NoLeader,
            format!(
                "admitted, but the leader has not added this node to raft within {} s ({error}); \
                 it keeps trying: watch `jaco cluster status`",
                MEMBERSHIP_WAIT.as_secs()
            ),
        )
        .with("reason", "membership_pending"));
    }
    Ok(pb::JoinResponse {
        cluster_id: admitted.cluster_id,
        node_name: settings.name.clone(),
        leader: member.leader().map(|l| l.name).unwrap_or_default(),
    })
}

/// Asks each peer in turn to admit this node; a refusal (an answer from the cluster) ends the
/// attempt, an unreachable or unverifiable peer moves on to the next.
async fn admission(
    peers: &[String],
    ca_pem: &str,
    request: pb::SignNodeCsrRequest,
) -> Result<pb::SignNodeCsrResponse, Error> {
    let mut failures = Vec::new();
    let mut unverified = Vec::new();
    for peer in peers {
        let host = match server_name(peer) {
            Ok(name) => name.to_str().into_owned(),
            Err(error) => return Err(error),
        };
        let endpoint = Endpoint::from_shared(format!("https://{peer}"))
            .and_then(|e| e.tls_config(tonic_client_tls(ca_pem, None, &host)))
            .map_err(|e| {
                Error::new(
                    Code::ValidationFailed,
                    format!("bad peer address {peer}: {e}"),
                )
                .with("peer", peer)
            })?
            .connect_timeout(Duration::from_secs(5))
            .timeout(ADMISSION_TIMEOUT);
        // Connecting completes the TLS handshake: the peer's certificate is verified against
        // the CA (and its name against the dialled host) before the token is sent.
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(error) => {
                if certificate_problem(&error) {
                    unverified.push(peer.clone());
                }
                failures.push(format!("{peer}: {}", transport_error_text(&error)));
                continue;
            }
        };
        match InternalClient::new(channel)
            .sign_node_csr(request.clone())
            .await
        {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status)
                if status.details().is_empty() && status.code() == tonic::Code::Unavailable =>
            {
                failures.push(format!("{peer}: {}", status.message()));
            }
            Err(status) => return Err(Error::from_status(&status)),
        }
    }
    if unverified.len() == peers.len() {
        // Nothing was sent: the token stays valid.
        return Err(Error::new(
            Code::PermissionDenied,
            format!(
                "no peer's certificate verified against --ca-cert (a different cluster's CA, or \
                 the dialled address is not among the names in the peer's certificate; dial an \
                 address given with --san when its join token was issued): {}",
                failures.join("; ")
            ),
        )
        .with("reason", "peer_unverified")
        .with("peers", peers.join(",")));
    }
    Err(Error::new(
        Code::NoLeader,
        format!("no peer admitted this node: {}", failures.join("; ")),
    )
    .with("reason", "peers_unreachable")
    .with("peers", peers.join(",")))
}

/// Whether a connection failed because the peer's certificate did not verify.
fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        let rustls_error = current.downcast_ref::<rustls::Error>().or_else(|| {
            current
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if matches!(rustls_error, Some(rustls::Error::InvalidCertificate(_))) {
            return true;
        }
        cause = current.source();
    }
    false
}

/// The innermost cause of a transport error (TLS verification failures are nested).
fn transport_error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// Admits a joiner (any member runs this for `Internal.SignNodeCsr`): consumes its join token
/// through raft, signs its CSR with the CA from the replicated state and enters it in the
/// node table, from which the leader's reconciler adds it to raft.
pub async fn admit(
    member: &Member,
    request: pb::SignNodeCsrRequest,
) -> Result<pb::SignNodeCsrResponse, Error> {
    let parsed = parse_join_token(&request.join_token)?;
    crate::pki::validate_node_name(&request.node_name)?;
    let joiner = Identity::Node(request.node_name.clone());
    let consumed = member
        .submit(
            &joiner,
            Kind::ConsumeJoinToken(pb::ConsumeJoinToken {
                sha256: parsed.secret_sha256.to_vec(),
                node_name: request.node_name.clone(),
            }),
        )
        .await?;
    let Outcome::ConsumeJoinToken(approved) = consumed else {
        return Err(Error::new(
            Code::Internal,
            "ConsumeJoinToken committed without its result",
        ));
    };
    let meta = member
        .read(|state| state.cluster_meta().cloned())
        .ok_or_else(|| Error::new(Code::ClusterUninitialized, "the cluster is not initialised"))?;
    let ca = ClusterCa::from_pem(&meta.ca_cert_pem, &meta.ca_key_pem)?;
    let cert_pem = ca.sign_node_csr(
        &request.csr_pem,
        &request.node_name,
        &approved.sans,
        now_unix_ms(),
    )?;
    let raft_id = crate::raft::node_id_from_name(&request.node_name);
    member
        .submit(
            &joiner,
            Kind::AddNode(pb::AddNode {
                node: Some(pb::Node {
                    name: request.node_name.clone(),
                    raft_id,
                    api_address: request.api_address.clone(),
                    raft_address: request.raft_address.clone(),
                    sans: approved.sans.clone(),
                    ..Default::default()
                }),
            }),
        )
        .await?;
    let peers = member.read(|state| {
        state
            .nodes()
            .filter(|n| n.name != request.node_name)
            .map(|n| pb::PeerInfo {
                name: n.name.clone(),
                raft_id: n.raft_id,
                api_address: n.api_address.clone(),
                raft_address: n.raft_address.clone(),
            })
            .collect()
    });
    Ok(pb::SignNodeCsrResponse {
        cluster_id: meta.cluster_id,
        ca_cert_pem: meta.ca_cert_pem,
        cert_pem,
        raft_id,
        leader: member.leader().map(|l| l.name).unwrap_or_default(),
        peers,
    })
}

impl crate::api::internal::Admission for Member {
    fn admit(
        &self,
        request: pb::SignNodeCsrRequest,
    ) -> crate::api::submit::BoxFuture<'_, Result<pb::SignNodeCsrResponse, Error>> {
        Box::pin(admit(self, request))
    }
}

/// Stops a member whose init or join failed and removes the raft directory it created, so that
/// the data directory is as before.
async fn abandon(member: &Member, data_dir: &Path) {
    member.shutdown().await;
    let raft_dir = data_dir.join("raft");
    if let Err(error) = std::fs::remove_dir_all(&raft_dir) {
        tracing::warn!(%error, dir = %raft_dir.display(), "could not remove the raft directory of a failed init/join");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::pki::ClientAuth;
    use crate::pki::testing::identity;
    use crate::pki::tls::server_config;

    /// A TLS server on 127.0.0.1 presenting a node certificate of `ca` with `sans`; it completes
    /// handshakes and then drops the connection.
    async fn tls_peer(ca: &ClusterCa, sans: &[&str]) -> String {
        let config = server_config(
            &identity(ca, "node-a", sans, now_unix_ms()),
            ClientAuth::Optional,
        )
        .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::clone(&config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = acceptor.accept(stream).await;
            }
        });
        addr.to_string()
    }

    fn request() -> pb::SignNodeCsrRequest {
        pb::SignNodeCsrRequest {
            node_name: "node-b".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_peer_from_another_ca_or_name_gets_no_token() {
        let ours = ClusterCa::generate("ours").expect("ca");
        let theirs = ClusterCa::generate("theirs").expect("ca");
        let foreign = tls_peer(&theirs, &["127.0.0.1"]).await;
        let misnamed = tls_peer(&ours, &["10.9.9.9"]).await;
        for peer in [foreign, misnamed] {
            let error = admission(std::slice::from_ref(&peer), ours.cert_pem(), request())
                .await
                .expect_err("unverified peer");
            assert_eq!(error.code, Code::PermissionDenied, "{peer}: {error:?}");
            assert_eq!(error.details["reason"], "peer_unverified");
        }
    }

    #[tokio::test]
    async fn an_unreachable_peer_is_no_leader_not_a_trust_failure() {
        let ours = ClusterCa::generate("ours").expect("ca");
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = closed.local_addr().expect("addr").to_string();
        drop(closed);
        let error = admission(&[addr], ours.cert_pem(), request())
            .await
            .expect_err("nobody listens");
        assert_eq!(error.code, Code::NoLeader);
        assert_eq!(error.details["reason"], "peers_unreachable");
    }

    #[test]
    fn the_advertised_host_becomes_a_san_unless_it_is_the_name() {
        assert_eq!(advertised_sans("node-a", "10.0.0.1:7000"), vec!["10.0.0.1"]);
        assert_eq!(
            advertised_sans("node-a", "node-a:7000"),
            Vec::<String>::new()
        );
        assert_eq!(advertised_sans("node-a", "[::1]:7000"), vec!["::1"]);
        assert_eq!(
            advertised_sans("node-a", "node-a.example.com:7000"),
            vec!["node-a.example.com"]
        );
    }
}
