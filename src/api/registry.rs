//! The `Registry` gRPC service: store, remove and list the container-registry credentials every
//! node's pulls use (SPEC §6).
//!
//! Login checks the request at the edge ([`credential_request`]: a well-formed
//! `host[:port][/namespace]` prefix, canonicalised by the state's own rule so that `Login` and
//! the pull-side lookup agree; a user name; a password) and commits it through raft, where the
//! state machine records the `registry_credential_upsert` audit event without the secret.
//! Logout of a prefix that has no credential is `not_found`. List answers registries and user
//! names only.
//!
//! This module must not log, echo or return a password (not even in an error), and must not
//! change state except through raft commands.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::context::{ApiContext, caller};
use crate::error::{Code, Error};
use crate::proto::v1 as pb;
use crate::proto::v1::command::Kind;
use crate::proto::v1::registry_server::Registry;
use crate::state::{State, canonical_registry};

/// Longest user name accepted (registries use e-mail addresses or robot account names).
pub const MAX_USERNAME_BYTES: usize = 256;

/// Longest password accepted: long enough for a cloud provider's JSON key used as a password.
pub const MAX_PASSWORD_BYTES: usize = 64 * 1024;

/// The `Registry` service.
pub struct RegistryService {
    context: Arc<ApiContext>,
}

impl RegistryService {
    /// The service over the shared API context.
    pub fn new(context: Arc<ApiContext>) -> Self {
        RegistryService { context }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::new(Code::ValidationFailed, message).with("field", field)
}

/// The canonical prefix of `raw` (see [`canonical_registry`]), refusing anything that is not a
/// registry host (DNS name, IPv4 address or bracketed IPv6 address) with an optional port and
/// an optional namespace of lowercase path components.
pub fn registry_prefix(raw: &str) -> Result<String, Error> {
    let canonical = canonical_registry(raw)?;
    let bad = |why: &str| {
        invalid(
            "registry",
            format!("{raw:?} is not a registry prefix host[:port][/namespace]: {why}"),
        )
        .with("registry", raw)
    };
    let (authority, namespace) = match canonical.split_once('/') {
        Some((authority, namespace)) => (authority, Some(namespace)),
        None => (canonical.as_str(), None),
    };
    let (host, port) = split_port(authority).map_err(|why| bad(&why))?;
    if !valid_host(host) {
        return Err(bad(&format!("{host:?} is not a host name or IP address")));
    }
    if let Some(port) = port
        && !matches!(port.parse::<u16>(), Ok(p) if p > 0)
    {
        return Err(bad(&format!("{port:?} is not a port number (1-65535)")));
    }
    if let Some(namespace) = namespace
        && let Some(component) = namespace.split('/').find(|c| !valid_component(c))
    {
        return Err(bad(&format!(
            "namespace component {component:?} must be lowercase letters and digits separated \
             by '.', '_' or '-'"
        )));
    }
    Ok(canonical)
}

/// `host[:port]` → (host, port); an IPv6 host keeps its brackets.
fn split_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address needs its closing bracket".to_owned())?;
        let host = &authority[..inside.len() + 2];
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("unexpected {after:?} after the IPv6 address")),
            },
        };
    }
    Ok(match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// A DNS name (labels of letters, digits and inner hyphens), an IPv4 address, or an IPv6
/// address in brackets.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// A repository path component as the distribution spec defines it: lowercase alphanumerics
/// separated by `.`, `_`, `__` or runs of `-`.
fn valid_component(component: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let (Some(first), Some(last)) = (component.chars().next(), component.chars().last()) else {
        return false;
    };
    alnum(first)
        && alnum(last)
        && component
            .chars()
            .all(|c| alnum(c) || matches!(c, '.' | '_' | '-'))
        && !component.contains("..")
        && !component.contains("___")
        && !component.contains("._")
        && !component.contains("_.")
}

/// The credential a login request stores, checked: canonical registry, a user name without
/// control characters, a non-empty password. Errors never contain the password.
pub fn credential_request(
    request: &pb::RegistryLoginRequest,
) -> Result<pb::RegistryCredential, Error> {
    let registry = registry_prefix(&request.registry)?;
    let username = request.username.as_str();
    if username.is_empty() {
        return Err(invalid("username", "a user name is required"));
    }
    if username.len() > MAX_USERNAME_BYTES || username.chars().any(char::is_control) {
        return Err(invalid(
            "username",
            format!(
                "the user name must be at most {MAX_USERNAME_BYTES} bytes without control \
                 characters"
            ),
        ));
    }
    if request.password.is_empty() {
        return Err(invalid(
            "password",
            "the password is empty: pipe it on standard input with --password-stdin",
        ));
    }
    if request.password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid(
            "password",
            format!("the password is longer than {MAX_PASSWORD_BYTES} bytes"),
        )
        .with("length", request.password.len()));
    }
    Ok(pb::RegistryCredential {
        registry,
        username: username.to_owned(),
        secret: request.password.clone(),
        ..Default::default()
    })
}

/// The stored credentials without their secrets, sorted by registry.
pub fn credential_infos(state: &State) -> Vec<pb::RegistryCredentialInfo> {
    state
        .registry_credentials()
        .map(|c| pb::RegistryCredentialInfo {
            registry: c.registry.clone(),
            username: c.username.clone(),
            updated_at_unix_ms: c.updated_at_unix_ms,
            updated_by: c.updated_by.clone(),
        })
        .collect()
}

/// `not_found` for a logout of a prefix without a credential, naming the stored prefixes.
fn no_credential(registry: &str, known: &[pb::RegistryCredentialInfo]) -> Error {
    let names: Vec<&str> = known.iter().map(|c| c.registry.as_str()).collect();
    Error::new(
        Code::NotFound,
        format!("there is no credential for registry {registry}"),
    )
    .with("registry", registry)
    .with("registries", names.join(","))
}

#[tonic::async_trait]
impl Registry for RegistryService {
    async fn login(
        &self,
        request: Request<pb::RegistryLoginRequest>,
    ) -> Result<Response<pb::RegistryLoginResponse>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let credential = credential_request(request.get_ref())?;
        let (registry, username) = (credential.registry.clone(), credential.username.clone());
        // Whether this replaces a credential, as of a linearizable read: informational only.
        member.read_barrier(true).await?;
        let rotated = member.read(|s| s.registry_credential(&registry).is_some());
        member
            .submit(
                &identity,
                Kind::UpsertRegistryCredential(pb::UpsertRegistryCredential {
                    credential: Some(credential),
                }),
            )
            .await?;
        Ok(Response::new(pb::RegistryLoginResponse {
            registry,
            username,
            rotated,
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::RegistryLogoutRequest>,
    ) -> Result<Response<pb::RegistryLogoutResponse>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let registry = registry_prefix(&request.get_ref().registry)?;
        // A follower may not have applied a login made elsewhere yet: decide on a linearizable
        // read, so that `not_found` is never an artefact of replication lag.
        member.read_barrier(true).await?;
        let (exists, known) = member.read(|s| {
            (
                s.registry_credential(&registry).is_some(),
                credential_infos(s),
            )
        });
        if !exists {
            return Err(no_credential(&registry, &known).into());
        }
        member
            .submit(
                &identity,
                Kind::RemoveRegistryCredential(pb::RemoveRegistryCredential {
                    registry: registry.clone(),
                }),
            )
            .await?;
        Ok(Response::new(pb::RegistryLogoutResponse {
            registry,
            removed: true,
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRegistryCredentialsRequest>,
    ) -> Result<Response<pb::ListRegistryCredentialsResponse>, Status> {
        caller(&request)?;
        let member = self.context.member()?;
        member.read_barrier(request.get_ref().consistent).await?;
        let credentials = member.read(credential_infos);
        Ok(Response::new(pb::ListRegistryCredentialsResponse {
            credentials,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_canonicalised() {
        let cases = [
            ("docker.io", "docker.io"),
            ("Docker.IO/Library", "docker.io/library"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry-1.docker.io/acme", "docker.io/acme"),
            ("GHCR.io/Acme/team-a", "ghcr.io/acme/team-a"),
            ("localhost:5000", "localhost:5000"),
            ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
            ("[::1]:5000/ns", "[::1]:5000/ns"),
            ("[fd00::1]", "[fd00::1]"),
            ("quay.io/a.b_c__d---e", "quay.io/a.b_c__d---e"),
        ];
        for (raw, want) in cases {
            assert_eq!(registry_prefix(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn malformed_prefixes_are_validation_failed() {
        for bad in [
            "",
            "a b",
            "/ns",
            "host//x",
            "-bad.example.com",
            "bad-.example.com",
            "exa_mple.com",
            "host:0",
            "host:70000",
            "host:port",
            "host:",
            "[::1",
            "[not-v6]:5000",
            "[::1]x",
            "user@host",
            "host/-ns",
            "host/ns-",
            "host/a..b",
            "host/a___b",
            "host/na me",
            "host/ns?x",
        ] {
            let error = registry_prefix(bad).expect_err(bad);
            assert_eq!(error.code, Code::ValidationFailed, "{bad}");
            assert_eq!(error.details["field"], "registry", "{bad}");
        }
    }

    fn login(registry: &str, username: &str, password: &str) -> pb::RegistryLoginRequest {
        pb::RegistryLoginRequest {
            registry: registry.into(),
            username: username.into(),
            password: password.into(),
        }
    }

    #[test]
    fn a_login_request_becomes_a_canonical_credential() {
        let credential = credential_request(&login("GHCR.io/Acme/", "bot", "s3cret")).unwrap();
        assert_eq!(credential.registry, "ghcr.io/acme");
        assert_eq!(credential.username, "bot");
        assert_eq!(credential.secret, "s3cret");
    }

    #[test]
    fn bad_login_requests_name_the_field_and_never_the_password() {
        let password = "hunter2-never-shown";
        for (request, field) in [
            (login("ghcr.io", "", password), "username"),
            (login("ghcr.io", "bot\n", password), "username"),
            (login("ghcr.io", &"u".repeat(300), password), "username"),
            (login("ghcr.io", "bot", ""), "password"),
            (
                login("ghcr.io", "bot", &"p".repeat(MAX_PASSWORD_BYTES + 1)),
                "password",
            ),
            (login("not a host", "bot", password), "registry"),
        ] {
            let error = credential_request(&request).expect_err(field);
            assert_eq!(error.code, Code::ValidationFailed);
            assert_eq!(error.details["field"], field);
            let shown = format!("{error:?}");
            assert!(!shown.contains(password), "{shown}");
        }
    }

    #[test]
    fn logout_of_an_unknown_prefix_names_the_known_ones() {
        let known = [pb::RegistryCredentialInfo {
            registry: "ghcr.io/acme".into(),
            username: "bot".into(),
            ..Default::default()
        }];
        let error = no_credential("docker.io", &known);
        assert_eq!(error.code, Code::NotFound);
        assert_eq!(error.details["registries"], "ghcr.io/acme");
    }
}
