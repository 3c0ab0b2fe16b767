//! Which registry credential a pull uses (SPEC §6): the cluster's credentials are keyed by a
//! canonical prefix `host[:port][/namespace]` (see [`crate::state::canonical_registry`]);
//! an image uses the credential with the longest prefix of its normalised repository, matched
//! on whole path segments, and a host with exactly one credential uses it for every path.
//!
//! Normalisation follows Docker's: a first path component with a `.` or `:`, or `localhost`,
//! is a registry host; anything else lives on Docker Hub (`docker.io`), where a single-component
//! name is an official image under `library/`. Pure: references and credentials in, a choice
//! out. This module must not read state or contact a registry, and never logs secrets.

use crate::proto::v1::RegistryCredential;
use crate::state::canonical_registry;

use super::RegistryAuth;

/// Docker Hub's canonical host.
const DOCKER_HUB: &str = "docker.io";

/// An image reference split into registry host and repository path, without tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// Registry `host[:port]`, `docker.io` for Docker Hub.
    pub host: String,
    /// Repository path, e.g. `library/nginx`.
    pub path: String,
}

impl Repository {
    /// Normalises an image reference such as `nginx:1.27`, `ghcr.io/org/app@sha256:…` or
    /// `localhost:5000/app`.
    pub fn parse(image: &str) -> Repository {
        let name = image.split_once('@').map_or(image, |(name, _)| name);
        // A tag is a `:` after the last `/` (a `:` before it belongs to a host port).
        let name = match name.rfind(':') {
            Some(colon) if !name[colon..].contains('/') => &name[..colon],
            _ => name,
        };
        let (host, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                let host = canonical_registry(first).unwrap_or_else(|_| first.to_lowercase());
                (host, rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let path = if host == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Repository { host, path }
    }
}

/// The credential `image` is pulled with, among `credentials`.
pub fn choose<'a>(
    image: &str,
    credentials: impl IntoIterator<Item = &'a RegistryCredential>,
) -> Option<RegistryAuth> {
    let repository = Repository::parse(image);
    let full = format!("{}/{}", repository.host, repository.path);
    let on_host: Vec<&RegistryCredential> = credentials
        .into_iter()
        .filter(|c| prefix_host(&c.registry) == repository.host)
        .collect();
    let chosen = on_host
        .iter()
        .filter(|c| covers(&c.registry, &full))
        .max_by_key(|c| c.registry.len())
        .or(match on_host.as_slice() {
            [only] => Some(only),
            _ => None,
        })?;
    Some(RegistryAuth {
        server: repository.host,
        username: chosen.username.clone(),
        password: chosen.secret.clone(),
    })
}

/// The host part of a canonical prefix.
fn prefix_host(prefix: &str) -> &str {
    prefix.split_once('/').map_or(prefix, |(host, _)| host)
}

/// Whether `prefix` is `full` or a leading run of its path segments.
fn covers(prefix: &str, full: &str) -> bool {
    full.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(registry: &str, username: &str) -> RegistryCredential {
        RegistryCredential {
            registry: registry.into(),
            username: username.into(),
            secret: format!("secret-of-{username}"),
            ..Default::default()
        }
    }

    #[test]
    fn references_normalise_like_docker() {
        let cases = [
            ("nginx", "docker.io", "library/nginx"),
            ("nginx:1.27", "docker.io", "library/nginx"),
            ("library/nginx@sha256:abc", "docker.io", "library/nginx"),
            ("user/app:v1", "docker.io", "user/app"),
            ("docker.io/user/app", "docker.io", "user/app"),
            ("index.docker.io/nginx", "docker.io", "library/nginx"),
            ("registry-1.docker.io/user/app", "docker.io", "user/app"),
            ("ghcr.io/org/team/app:2", "ghcr.io", "org/team/app"),
            ("localhost:5000/app:latest", "localhost:5000", "app"),
            ("localhost/app", "localhost", "app"),
            (
                "Registry.Example.com:443/App",
                "registry.example.com:443",
                "App",
            ),
            ("10.0.0.1:5000/ns/app@sha256:00", "10.0.0.1:5000", "ns/app"),
        ];
        for (image, host, path) in cases {
            assert_eq!(
                Repository::parse(image),
                Repository {
                    host: host.into(),
                    path: path.into()
                },
                "{image}"
            );
        }
    }

    /// (credentials, image, expected username or None)
    type Case<'a> = (&'a [&'a str], &'a str, Option<&'a str>);

    #[test]
    fn the_longest_matching_prefix_wins_and_a_lone_host_credential_covers_every_path() {
        let cases: &[Case] = &[
            (&["ghcr.io"], "ghcr.io/org/app", Some("ghcr.io")),
            (
                &["ghcr.io", "ghcr.io/org"],
                "ghcr.io/org/app",
                Some("ghcr.io/org"),
            ),
            (
                &["ghcr.io", "ghcr.io/org", "ghcr.io/org/app"],
                "ghcr.io/org/app:1",
                Some("ghcr.io/org/app"),
            ),
            // Whole segments only: `org` does not cover `organisation`.
            (
                &["ghcr.io", "ghcr.io/org"],
                "ghcr.io/organisation/app",
                Some("ghcr.io"),
            ),
            // The host's only credential is used for every path on it.
            (&["ghcr.io/org"], "ghcr.io/other/app", Some("ghcr.io/org")),
            // Two credentials on the host and neither matches: none.
            (&["ghcr.io/a", "ghcr.io/b"], "ghcr.io/c/app", None),
            // Other hosts never lend their credentials, ports are part of the host.
            (&["quay.io"], "ghcr.io/org/app", None),
            (&["localhost:5000"], "localhost:5001/app", None),
            (
                &["localhost:5000"],
                "localhost:5000/app",
                Some("localhost:5000"),
            ),
            // Docker Hub, with and without library/.
            (&["docker.io"], "nginx", Some("docker.io")),
            (
                &["docker.io/library", "docker.io/acme"],
                "nginx:1",
                Some("docker.io/library"),
            ),
            (
                &["docker.io/library", "docker.io/acme"],
                "acme/app",
                Some("docker.io/acme"),
            ),
            (&[], "nginx", None),
        ];
        for (prefixes, image, expected) in cases {
            let credentials: Vec<RegistryCredential> =
                prefixes.iter().map(|p| credential(p, p)).collect();
            let chosen = choose(image, &credentials);
            assert_eq!(
                chosen.as_ref().map(|auth| auth.username.as_str()),
                *expected,
                "{image} with {prefixes:?}"
            );
            if let Some(auth) = chosen {
                assert_eq!(auth.password, format!("secret-of-{}", auth.username));
                assert_eq!(auth.server, Repository::parse(image).host);
            }
        }
    }
}
