//! The closed set of error codes and the `Error { code, message, details }` envelope.
//!
//! Every failure that leaves jaco — a gRPC status, a CLI message, a JSON envelope from
//! `jaco validate -o json` — is an [`Error`] whose [`Code`] comes from the closed set of
//! `status-and-errors.seed.txt` plus the SPEC §3.1 additions. This module owns that set, its
//! wire spelling, its mapping onto gRPC status codes and its CLI rendering. It must not grow
//! ad-hoc codes: a new code is a contract change that also lands in `docs/errors.md` (a test
//! checks) and in the proto comments.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use prost::Message as _;
use serde::{Deserialize, Serialize};

/// Declares the closed code set once: the enum, its wire names and the list of all codes.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)+) => {
        /// A machine-readable error code from the closed set (SPEC §3.1).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $($(#[doc = $doc])* $variant,)+
        }

        impl Code {
            /// Every code, in declaration order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)+];

            /// The wire and CLI spelling, e.g. `validation_failed`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)+
                }
            }
        }
    };
}

error_codes! {
    /// An RPC other than Init/Join/Status arrived before the node joined a cluster.
    ClusterUninitialized => "cluster_uninitialized",
    /// Cluster init on a node that already holds raft state.
    ClusterAlreadyInitialized => "cluster_already_initialized",
    /// Join against a node that is already a member, or a node-name collision.
    NodeAlreadyMember => "node_already_member",
    /// No leader is known (election in progress); the request may be retried.
    NoLeader => "no_leader",
    /// This node is on the minority side of a partition; writes are rejected.
    QuorumLost => "quorum_lost",
    /// The bearer token matches no operator token.
    TokenInvalid => "token_invalid",
    /// The bearer token matches a revoked operator token.
    TokenRevoked => "token_revoked",
    /// A manifest breaks a schema or semantic rule; details name the field.
    ValidationFailed => "validation_failed",
    /// A jaco.yaml service override names no compose service.
    UnknownService => "unknown_service",
    /// A pinned host is not a cluster member.
    UnknownHost => "unknown_host",
    /// A service uses a network that the compose file does not declare.
    UnknownNetwork => "unknown_network",
    /// A service publishes host port 80 or 443, which belong to the ingress.
    ReservedPort => "reserved_port",
    /// The compose file uses a v1/v2 spelling dropped from the modern spec.
    LegacyComposeField => "legacy_compose_field",
    /// The daemon received a compose document that still carries `env_file:`.
    EnvFileUnresolved => "env_file_unresolved",
    /// A YAML document could not be parsed; details carry line and column.
    ParseFailed => "parse_failed",
    /// `placement: hosts` names fewer hosts than the requested replicas.
    ReplicasExceedPinnedHosts => "replicas_exceed_pinned_hosts",
    /// The runtime gave up pulling an image after its retry budget.
    ImagePullFailed => "image_pull_failed",
    /// ACME issuance failed past the retry budget.
    CertFailed => "cert_failed",
    /// The docker engine refused the request or is unreachable.
    DockerError => "docker_error",
    /// The node could not bring up its nftables ruleset; nothing is scheduled there.
    IsolationUnavailable => "isolation_unavailable",
    /// The startup self-test of the nftables ruleset failed.
    IsolationSelfTestFailed => "isolation_self_test_failed",
    /// The IPAM pool has no free /24 left.
    SubnetPoolExhausted => "subnet_pool_exhausted",
    /// A host port is published twice in one deployment or owned by another deployment.
    PortConflict => "port_conflict",
    /// The named deployment does not exist.
    DeploymentNotFound => "deployment_not_found",
    /// Rollback of a deployment that has no earlier revision.
    NoPreviousRevision => "no_previous_revision",
    /// An upgrade bundle failed signature or checksum verification; nothing was written.
    UpgradeVerificationFailed => "upgrade_verification_failed",
    /// The upgraded system failed its health gate and was rolled back.
    UpgradeFailed => "upgrade_failed",
    /// An unrecoverable error that no other code describes; details carry the reason.
    Internal => "internal",
    /// The caller is authenticated but not allowed to do this (e.g. privileged workloads).
    PermissionDenied => "permission_denied",
    /// A join token is unknown, expired, already used or scoped to another node.
    JoinTokenInvalid => "join_token_invalid",
    /// Another upgrade is already running.
    UpgradeInProgress => "upgrade_in_progress",
    /// The named entity (replica, token, credential, route, …) does not exist.
    NotFound => "not_found",
}

impl Code {
    /// The gRPC status code that carries this error on the wire.
    ///
    /// Exhaustive on purpose: a new code must choose its transport class explicitly.
    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code as G;
        match self {
            Code::ClusterUninitialized => G::FailedPrecondition,
            Code::ClusterAlreadyInitialized => G::AlreadyExists,
            Code::NodeAlreadyMember => G::AlreadyExists,
            Code::NoLeader => G::Unavailable,
            Code::QuorumLost => G::Unavailable,
            Code::TokenInvalid => G::Unauthenticated,
            Code::TokenRevoked => G::Unauthenticated,
            Code::ValidationFailed => G::InvalidArgument,
            Code::UnknownService => G::InvalidArgument,
            Code::UnknownHost => G::InvalidArgument,
            Code::UnknownNetwork => G::InvalidArgument,
            Code::ReservedPort => G::InvalidArgument,
            Code::LegacyComposeField => G::InvalidArgument,
            Code::EnvFileUnresolved => G::InvalidArgument,
            Code::ParseFailed => G::InvalidArgument,
            Code::ReplicasExceedPinnedHosts => G::InvalidArgument,
            Code::ImagePullFailed => G::Unavailable,
            Code::CertFailed => G::Unavailable,
            Code::DockerError => G::Unavailable,
            Code::IsolationUnavailable => G::FailedPrecondition,
            Code::IsolationSelfTestFailed => G::FailedPrecondition,
            Code::SubnetPoolExhausted => G::ResourceExhausted,
            Code::PortConflict => G::AlreadyExists,
            Code::DeploymentNotFound => G::NotFound,
            Code::NoPreviousRevision => G::FailedPrecondition,
            Code::UpgradeVerificationFailed => G::InvalidArgument,
            Code::UpgradeFailed => G::Aborted,
            Code::Internal => G::Internal,
            Code::PermissionDenied => G::PermissionDenied,
            Code::JoinTokenInvalid => G::Unauthenticated,
            Code::UpgradeInProgress => G::FailedPrecondition,
            Code::NotFound => G::NotFound,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no code of the closed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownCode(pub String);

impl FromStr for Code {
    type Err = UnknownCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Code::ALL
            .iter()
            .copied()
            .find(|code| code.as_str() == s)
            .ok_or_else(|| UnknownCode(s.to_owned()))
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The error envelope: a closed code, a human message and flat structured details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// Machine-readable code; clients branch on it.
    pub code: Code,
    /// Human-readable explanation, shown verbatim.
    pub message: String,
    /// Structured context such as `service`, `field`, `line`, `column`.
    pub details: BTreeMap<String, String>,
}

impl Error {
    /// An error with no details.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            details: BTreeMap::new(),
        }
    }

    /// Adds one detail; later values for the same key replace earlier ones.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.details.insert(key.into(), value.to_string());
        self
    }

    /// The CLI rendering: `Error: <code>: <message>`, plus `key=value` detail lines when
    /// `verbose`.
    pub fn render(&self, verbose: bool) -> String {
        let mut out = format!("Error: {}: {}", self.code, self.message);
        if verbose {
            for (key, value) in &self.details {
                out.push_str(&format!("\n  {key}={value}"));
            }
        }
        out
    }

    /// Rebuilds the envelope from a gRPC status.
    ///
    /// A status that carries a jaco envelope in its details yields exactly that envelope. A
    /// status without one (a transport failure, a proxy, a peer of another kind) becomes the
    /// nearest code by gRPC class, keeping the gRPC code and message in the details so that
    /// nothing is hidden from the operator.
    pub fn from_status(status: &tonic::Status) -> Self {
        if let Ok(envelope) = crate::proto::v1::Error::decode(status.details())
            && !envelope.code.is_empty()
        {
            let details: BTreeMap<String, String> = envelope.details.into_iter().collect();
            return match envelope.code.parse::<Code>() {
                Ok(code) => Error {
                    code,
                    message: envelope.message,
                    details,
                },
                Err(UnknownCode(unknown)) => Error {
                    code: Code::Internal,
                    message: format!("{unknown}: {}", envelope.message),
                    details,
                }
                .with("reason", "unknown_code")
                .with("original_code", unknown),
            };
        }
        let code = match status.code() {
            tonic::Code::PermissionDenied => Code::PermissionDenied,
            tonic::Code::NotFound => Code::NotFound,
            tonic::Code::Unauthenticated => Code::TokenInvalid,
            _ => Code::Internal,
        };
        Error::new(code, status.message().to_owned())
            .with("grpc_code", format!("{:?}", status.code()))
            .with("reason", "status_without_envelope")
    }
}

impl Error {
    /// The wire envelope of this error.
    pub fn to_proto(&self) -> crate::proto::v1::Error {
        crate::proto::v1::Error {
            code: self.code.as_str().to_owned(),
            message: self.message.clone(),
            details: self.details.clone().into_iter().collect(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let envelope = error.to_proto();
        tonic::Status::with_details(
            error.code.grpc_code(),
            error.message,
            envelope.encode_to_vec().into(),
        )
    }
}

/// Process exit status for an operational failure (any [`Error`]).
pub const EXIT_OPERATIONAL: i32 = 1;
/// Process exit status for a usage error (bad flags or arguments).
pub const EXIT_USAGE: i32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_name() {
        for &code in Code::ALL {
            assert_eq!(code.as_str().parse::<Code>(), Ok(code));
            assert_eq!(code.to_string(), code.as_str());
        }
    }

    #[test]
    fn code_names_are_unique_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "duplicate code name {name}");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name} is not snake_case"
            );
        }
    }

    #[test]
    fn closed_set_holds_seed_codes_and_spec_additions() {
        let seed_and_additions = [
            "cluster_uninitialized",
            "cluster_already_initialized",
            "node_already_member",
            "no_leader",
            "quorum_lost",
            "token_invalid",
            "token_revoked",
            "validation_failed",
            "unknown_service",
            "unknown_host",
            "unknown_network",
            "reserved_port",
            "legacy_compose_field",
            "env_file_unresolved",
            "parse_failed",
            "replicas_exceed_pinned_hosts",
            "image_pull_failed",
            "cert_failed",
            "docker_error",
            "isolation_unavailable",
            "isolation_self_test_failed",
            "subnet_pool_exhausted",
            "port_conflict",
            "deployment_not_found",
            "no_previous_revision",
            "upgrade_verification_failed",
            "upgrade_failed",
            "internal",
            "permission_denied",
            "join_token_invalid",
            "upgrade_in_progress",
            "not_found",
        ];
        let ours: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(ours, seed_and_additions);
    }

    #[test]
    fn unknown_code_is_rejected() {
        assert_eq!(
            "no_such_code".parse::<Code>(),
            Err(UnknownCode("no_such_code".into()))
        );
    }

    #[test]
    fn every_code_survives_a_trip_through_tonic_status() {
        for &code in Code::ALL {
            let original = Error::new(code, "something went wrong")
                .with("service", "web")
                .with("field", "replicas");
            let status = tonic::Status::from(original.clone());
            assert_eq!(status.code(), code.grpc_code());
            assert_eq!(status.message(), "something went wrong");
            assert_eq!(Error::from_status(&status), original);
        }
    }

    #[test]
    fn status_without_envelope_keeps_its_grpc_class() {
        let status = tonic::Status::permission_denied("service web is privileged");
        let error = Error::from_status(&status);
        assert_eq!(error.code, Code::PermissionDenied);
        assert_eq!(error.message, "service web is privileged");
        assert_eq!(error.details["grpc_code"], "PermissionDenied");

        let error = Error::from_status(&tonic::Status::unavailable("connection refused"));
        assert_eq!(error.code, Code::Internal);
    }

    #[test]
    fn envelope_with_a_code_from_a_newer_daemon_is_shown_not_dropped() {
        let envelope = crate::proto::v1::Error {
            code: "brand_new_code".into(),
            message: "explained".into(),
            details: Default::default(),
        };
        let status = tonic::Status::with_details(
            tonic::Code::FailedPrecondition,
            "explained",
            envelope.encode_to_vec().into(),
        );
        let error = Error::from_status(&status);
        assert_eq!(error.code, Code::Internal);
        assert_eq!(error.details["original_code"], "brand_new_code");
        assert!(error.message.contains("brand_new_code"));
    }

    #[test]
    fn cli_rendering_matches_the_contract() {
        let error = Error::new(Code::ReservedPort, "port 80 is reserved")
            .with("service", "web")
            .with("port", 80);
        assert_eq!(
            error.render(false),
            "Error: reserved_port: port 80 is reserved"
        );
        assert_eq!(
            error.render(true),
            "Error: reserved_port: port 80 is reserved\n  port=80\n  service=web"
        );
    }

    #[test]
    fn json_envelope_uses_the_wire_names() {
        let error =
            Error::new(Code::UnknownNetwork, "unknown network: back").with("network", "back");
        let json = serde_json::to_value(&error).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"code": "unknown_network", "message": "unknown network: back", "details": {"network": "back"}})
        );
        let back: Error = serde_json::from_value(json).unwrap();
        assert_eq!(back, error);
    }
}
