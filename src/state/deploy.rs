//! Deployments in the replicated state: apply, rollback and delete, the retained revision
//! history, the secret/config blobs revisions reference, and the route indexes derived from
//! the current specs.
//!
//! The API node validates manifests; this module re-checks only what depends on replicated
//! state (members for `placement: hosts`, ports and routes owned by other deployments, the
//! expected revision, the caller's privilege, blob presence and hashes) and must never trust
//! that the command was validated. Revisions count up per deployment: apply and rollback each
//! make a new one; a rollback copies the previous revision's spec; a deployment re-created
//! after a delete continues after its tombstone's last revision. The last
//! [`REVISION_HISTORY`](super::REVISION_HISTORY) revisions are kept, and blobs no kept revision
//! references are dropped.
//!
//! It must not read clocks, randomness or disks, and must not put secret/config contents
//! anywhere but the blob map.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::error::{Code, Error};
use crate::proto::v1::{
    ApplyDeployment, ApplyDeploymentResult, AuditEventType, BlobKind, ContentBlob,
    DeleteDeployment, DeleteDeploymentResult, Deployment, DeploymentDiff, DeploymentRevision,
    DeploymentSpec, DeploymentStatus, DeploymentTombstone, PlacementMode, RevisionOrigin,
    RollbackDeployment, RollbackDeploymentResult, Route, TcpRoute, command_result::Outcome,
};

use super::change::{Tx, put, take, take_where};
use super::diff::deployment_diff;
use super::{BlobKey, REVISION_HISTORY, State, invalid, missing, named, payload};

/// Host ports that belong to the ingress (SPEC §2.4).
const RESERVED_PORTS: [u32; 2] = [80, 443];

impl State {
    // ---- queries ---------------------------------------------------------------------------

    /// The deployment with this name.
    pub fn deployment(&self, name: &str) -> Option<&Deployment> {
        self.deployments.get(name)
    }

    /// Every deployment, by name.
    pub fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.deployments.values()
    }

    /// The retained revisions of a deployment, oldest first.
    pub fn deployment_revisions(&self, name: &str) -> impl Iterator<Item = &DeploymentRevision> {
        self.revisions
            .range((name.to_owned(), 0)..=(name.to_owned(), u64::MAX))
            .map(|(_, revision)| revision)
    }

    /// One retained revision of a deployment.
    pub fn deployment_revision(&self, name: &str, revision: u64) -> Option<&DeploymentRevision> {
        self.revisions.get(&(name.to_owned(), revision))
    }

    /// Every tombstone not yet pruned, by deployment.
    pub fn tombstones(&self) -> impl Iterator<Item = &DeploymentTombstone> {
        self.tombstones.values()
    }

    /// The stored content of a secret/config (secret material: not for RPC answers).
    pub fn content_blob(
        &self,
        deployment: &str,
        kind: BlobKind,
        name: &str,
        sha256: &str,
    ) -> Option<&ContentBlob> {
        let key: BlobKey = (
            deployment.to_owned(),
            kind.into(),
            name.to_owned(),
            sha256.to_owned(),
        );
        self.blobs.get(&key)
    }

    /// Every stored blob of a deployment (contents included).
    pub fn content_blobs<'a>(
        &'a self,
        deployment: &'a str,
    ) -> impl Iterator<Item = &'a ContentBlob> {
        self.blobs
            .values()
            .filter(move |b| b.deployment == deployment)
    }

    /// Every HTTP(S) route of every current deployment, by (domain, path).
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    /// Every L4 route, by published port.
    pub fn tcp_routes(&self) -> impl Iterator<Item = &TcpRoute> {
        self.tcp_routes.values()
    }

    /// The deployment with this name, or `deployment_not_found`.
    pub(super) fn existing_deployment(&self, name: &str) -> Result<&Deployment, Error> {
        self.deployments.get(name).ok_or_else(|| not_found(name))
    }

    // ---- commands --------------------------------------------------------------------------

    pub(super) fn apply_deployment(
        &mut self,
        tx: &mut Tx,
        c: &ApplyDeployment,
    ) -> Result<Outcome, Error> {
        let name = c.deployment.as_str();
        check_deployment_name(name)?;
        let spec = c.spec.as_ref().ok_or_else(|| missing("spec"))?;
        let current = self.deployments.get(name);
        check_expected_revision(name, c.expected_revision, current)?;
        let (new_blobs, diff) =
            self.check_revision(tx, name, spec, &c.privileged_services, &c.blobs)?;

        let (revision, previous_revision) =
            self.commit_revision(tx, name, spec.clone(), RevisionOrigin::Apply, 0, new_blobs);
        let services: Vec<&str> = spec.services.iter().map(|s| s.name.as_str()).collect();
        let details = payload([
            ("deployment", name.to_owned()),
            ("revision", revision.to_string()),
            ("previous_revision", previous_revision.to_string()),
            ("services", services.join(",")),
            ("changed", diff.changed.to_string()),
        ]);
        self.audit_push(tx, AuditEventType::Apply, details);
        for service in &c.privileged_services {
            let details = payload([
                ("deployment", name.to_owned()),
                ("service", service.clone()),
                ("revision", revision.to_string()),
            ]);
            self.audit_push(tx, AuditEventType::PrivilegedWorkloadAdmitted, details);
        }
        Ok(Outcome::ApplyDeployment(ApplyDeploymentResult {
            deployment: name.to_owned(),
            revision,
            previous_revision,
            diff: Some(diff),
        }))
    }

    pub(super) fn rollback_deployment(
        &mut self,
        tx: &mut Tx,
        c: &RollbackDeployment,
    ) -> Result<Outcome, Error> {
        let name = c.deployment.as_str();
        let current = self.existing_deployment(name)?;
        check_expected_revision(name, c.expected_revision, Some(current))?;
        let target = current.previous_revision;
        let restored = self
            .revisions
            .get(&(name.to_owned(), target))
            .filter(|_| target != 0)
            .ok_or_else(|| {
                Error::new(
                    Code::NoPreviousRevision,
                    format!("deployment {name} has no previous revision to roll back to"),
                )
                .with("deployment", name)
                .with("revision", current.revision)
            })?;
        let spec = restored.spec.clone().unwrap_or_default();
        // The cluster may have changed since that revision: re-check what depends on it.
        let (new_blobs, diff) = self.check_revision(tx, name, &spec, &[], &[])?;

        let (revision, _) =
            self.commit_revision(tx, name, spec, RevisionOrigin::Rollback, target, new_blobs);
        let details = payload([
            ("deployment", name.to_owned()),
            ("revision", revision.to_string()),
            ("rolled_back_to", target.to_string()),
        ]);
        self.audit_push(tx, AuditEventType::Rollback, details);
        Ok(Outcome::RollbackDeployment(RollbackDeploymentResult {
            deployment: name.to_owned(),
            revision,
            rolled_back_to: target,
            diff: Some(diff),
        }))
    }

    pub(super) fn delete_deployment(
        &mut self,
        tx: &mut Tx,
        c: &DeleteDeployment,
    ) -> Result<Outcome, Error> {
        let name = c.deployment.as_str();
        let last_revision = self.existing_deployment(name)?.revision;

        take(&mut self.deployments, name, tx);
        take_where(&mut self.revisions, tx, |(dep, _), _| dep == name);
        take_where(&mut self.blobs, tx, |(dep, ..), _| dep == name);
        take_where(&mut self.rollouts, tx, |(dep, _), _| dep == name);
        let replica_ids: BTreeSet<String> = self
            .replicas_desired
            .values()
            .filter(|r| r.deployment == name)
            .map(|r| r.id.clone())
            .collect();
        take_where(&mut self.replicas_desired, tx, |id, _| {
            replica_ids.contains(id)
        });
        take_where(&mut self.replicas_observed, tx, |id, _| {
            replica_ids.contains(id)
        });
        self.reindex_routes(tx, name, None);
        let tombstone = DeploymentTombstone {
            deployment: name.to_owned(),
            last_revision,
            deleted_at_unix_ms: tx.now,
            deleted_by: tx.identity.to_owned(),
            keep_volumes: c.keep_volumes,
        };
        put(&mut self.tombstones, name.to_owned(), tombstone, tx);
        let details = payload([
            ("deployment", name.to_owned()),
            ("revision", last_revision.to_string()),
            ("keep_volumes", c.keep_volumes.to_string()),
        ]);
        self.audit_push(tx, AuditEventType::Delete, details);
        Ok(Outcome::DeleteDeployment(DeleteDeploymentResult {
            deployment: name.to_owned(),
            last_revision,
        }))
    }

    // ---- checks ----------------------------------------------------------------------------

    /// Everything a spec must pass to become the deployment's next revision; returns the blobs
    /// to store and what the revision changes.
    fn check_revision(
        &self,
        tx: &Tx,
        name: &str,
        spec: &DeploymentSpec,
        admitted: &[String],
        provided: &[ContentBlob],
    ) -> Result<(Vec<ContentBlob>, DeploymentDiff), Error> {
        self.check_spec(name, spec)?;
        self.check_privileged(tx.identity, spec, admitted)?;
        let new_blobs = self.check_blobs(tx, name, spec, provided)?;
        let current = self.deployments.get(name).and_then(|d| d.spec.as_ref());
        Ok((new_blobs, deployment_diff(name, current, spec)))
    }

    /// Re-checks a spec against the replicated state: unique services, known placement, pinned
    /// hosts that are members, ports and routes not owned by another deployment.
    fn check_spec(&self, name: &str, spec: &DeploymentSpec) -> Result<(), Error> {
        let mut services = BTreeSet::new();
        for service in &spec.services {
            if service.name.is_empty() || !services.insert(service.name.as_str()) {
                return Err(invalid(
                    "services.name",
                    "service names must be unique and not empty",
                )
                .with("service", &service.name));
            }
            let placement = named::<PlacementMode>(service.placement, "services.placement")?;
            if placement == PlacementMode::Hosts {
                for host in &service.hosts {
                    if !self.nodes.contains_key(host) {
                        let members: Vec<&str> = self.nodes.keys().map(String::as_str).collect();
                        return Err(Error::new(
                            Code::UnknownHost,
                            format!(
                                "service {} is pinned to {host}, which is not a cluster member",
                                service.name
                            ),
                        )
                        .with("service", &service.name)
                        .with("host", host)
                        .with("members", members.join(",")));
                    }
                }
            }
        }
        let unknown_service = |service: &str| {
            Error::new(
                Code::UnknownService,
                format!("a route targets {service}, which the deployment does not define"),
            )
            .with("service", service)
        };
        let mut ports = BTreeSet::new();
        for route in &spec.tcp_routes {
            let port = route.published_port;
            if !services.contains(route.service.as_str()) {
                return Err(unknown_service(&route.service));
            }
            if RESERVED_PORTS.contains(&port) {
                return Err(Error::new(
                    Code::ReservedPort,
                    format!("host port {port} belongs to the ingress"),
                )
                .with("service", &route.service)
                .with("port", port));
            }
            let owner = self
                .tcp_routes
                .get(&port)
                .map(|r| r.deployment.as_str())
                .filter(|o| *o != name);
            if !ports.insert(port) || owner.is_some() {
                return Err(Error::new(
                    Code::PortConflict,
                    format!("host port {port} is published twice"),
                )
                .with("port", port)
                .with("service", &route.service)
                .with("deployment", owner.unwrap_or(name)));
            }
        }
        let mut routes = BTreeSet::new();
        for route in &spec.routes {
            if !services.contains(route.service.as_str()) {
                return Err(unknown_service(&route.service));
            }
            let key = (route.domain.clone(), route.path.clone());
            let owner = self
                .routes
                .get(&key)
                .map(|r| r.deployment.as_str())
                .filter(|o| *o != name);
            if !routes.insert(key) || owner.is_some() {
                return Err(invalid(
                    "routes",
                    format!("route {}{} is defined twice", route.domain, route.path),
                )
                .with("reason", "duplicate_route")
                .with("domain", &route.domain)
                .with("path", &route.path)
                .with("deployment", owner.unwrap_or(name)));
            }
        }
        Ok(())
    }

    /// Privileged services need a caller that may run them: `local`, `system`, nodes, or an
    /// operator token issued with `--allow-privileged`.
    fn check_privileged(
        &self,
        identity: &str,
        spec: &DeploymentSpec,
        admitted: &[String],
    ) -> Result<(), Error> {
        for service in admitted {
            if !spec.services.iter().any(|s| s.name == *service) {
                return Err(invalid(
                    "privileged_services",
                    format!("{service} is not a service of the deployment"),
                )
                .with("service", service));
            }
        }
        let privileged = spec
            .services
            .iter()
            .filter(|s| s.privileged)
            .map(|s| &s.name)
            .chain(admitted)
            .next();
        let token_may_not = self
            .operator_tokens
            .get(identity)
            .is_some_and(|t| !t.allow_privileged);
        match privileged {
            Some(service) if token_may_not => Err(Error::new(
                Code::PermissionDenied,
                format!("service {service} is privileged and token {identity} may not apply privileged workloads"),
            )
            .with("service", service)
            .with("identity", identity)),
            _ => Ok(()),
        }
    }

    /// Checks that every blob the spec references is provided or already stored, and that
    /// provided contents match their hashes. Returns the blobs to store.
    fn check_blobs(
        &self,
        tx: &Tx,
        name: &str,
        spec: &DeploymentSpec,
        provided: &[ContentBlob],
    ) -> Result<Vec<ContentBlob>, Error> {
        let mut fresh: BTreeMap<BlobKey, ContentBlob> = BTreeMap::new();
        for blob in provided {
            named::<BlobKind>(blob.kind, "blobs.kind")?;
            let sha256 = hex_sha256(&blob.content);
            if !blob.sha256.is_empty() && blob.sha256 != sha256 {
                return Err(invalid(
                    "blobs.sha256",
                    format!("content of {} does not match its hash", blob.name),
                )
                .with("reason", "blob_hash_mismatch")
                .with("blob", &blob.name));
            }
            let key: BlobKey = (
                name.to_owned(),
                blob.kind,
                blob.name.clone(),
                sha256.clone(),
            );
            if !self.blobs.contains_key(&key) {
                let stored = ContentBlob {
                    deployment: name.to_owned(),
                    sha256,
                    created_at_unix_ms: tx.now,
                    ..blob.clone()
                };
                fresh.insert(key, stored);
            }
        }
        let mut needed = Vec::new();
        for reference in &spec.blobs {
            let key: BlobKey = (
                name.to_owned(),
                reference.kind,
                reference.name.clone(),
                reference.sha256.clone(),
            );
            match fresh.remove(&key) {
                Some(blob) => needed.push(blob),
                None if self.blobs.contains_key(&key) => {}
                None => {
                    return Err(invalid(
                        "blobs",
                        format!(
                            "no content for {} {}",
                            blob_noun(reference.kind),
                            reference.name
                        ),
                    )
                    .with("reason", "missing_blob")
                    .with("blob", &reference.name));
                }
            }
        }
        Ok(needed)
    }

    // ---- mutations -------------------------------------------------------------------------

    /// Stores `spec` as the deployment's next revision (blobs, history, route indexes) and
    /// returns (new revision, previous revision).
    fn commit_revision(
        &mut self,
        tx: &mut Tx,
        name: &str,
        spec: DeploymentSpec,
        origin: RevisionOrigin,
        rolled_back_to: u64,
        new_blobs: Vec<ContentBlob>,
    ) -> (u64, u64) {
        for blob in new_blobs {
            let key: BlobKey = (
                name.to_owned(),
                blob.kind,
                blob.name.clone(),
                blob.sha256.clone(),
            );
            put(&mut self.blobs, key, blob, tx);
        }
        let current = self.deployments.get(name);
        let previous_revision = current.map_or(0, |d| d.revision);
        let base = current.map_or_else(
            || self.tombstones.get(name).map_or(0, |t| t.last_revision),
            |d| d.revision,
        );
        let revision = base + 1;
        let deployment = Deployment {
            name: name.to_owned(),
            revision,
            previous_revision,
            spec: Some(spec.clone()),
            status: DeploymentStatus::Pending.into(),
            status_details: payload([("reason", "converging".to_owned())]),
            created_at_unix_ms: current.map_or(tx.now, |d| d.created_at_unix_ms),
            updated_at_unix_ms: tx.now,
            updated_by: tx.identity.to_owned(),
            applied_index: tx.index,
        };
        put(&mut self.deployments, name.to_owned(), deployment, tx);
        let record = DeploymentRevision {
            deployment: name.to_owned(),
            revision,
            spec: Some(spec.clone()),
            origin: origin.into(),
            rolled_back_to,
            created_at_unix_ms: tx.now,
            created_by: tx.identity.to_owned(),
        };
        put(&mut self.revisions, (name.to_owned(), revision), record, tx);

        let kept: Vec<u64> = self
            .deployment_revisions(name)
            .map(|r| r.revision)
            .collect();
        let cutoff = kept.len().saturating_sub(REVISION_HISTORY);
        let dropped: BTreeSet<u64> = kept[..cutoff].iter().copied().collect();
        take_where(&mut self.revisions, tx, |(dep, rev), _| {
            dep == name && dropped.contains(rev)
        });
        let referenced: BTreeSet<(i32, String, String)> = self
            .deployment_revisions(name)
            .filter_map(|r| r.spec.as_ref())
            .flat_map(|s| &s.blobs)
            .map(|b| (b.kind, b.name.clone(), b.sha256.clone()))
            .collect();
        take_where(&mut self.blobs, tx, |(dep, kind, blob, sha), _| {
            dep == name && !referenced.contains(&(*kind, blob.clone(), sha.clone()))
        });
        self.reindex_routes(tx, name, Some(&spec));
        (revision, previous_revision)
    }

    /// Makes the route indexes hold exactly the routes of `spec` for deployment `name`.
    fn reindex_routes(&mut self, tx: &mut Tx, name: &str, spec: Option<&DeploymentSpec>) {
        let (routes, tcp_routes) = spec_routes(name, spec);
        take_where(&mut self.routes, tx, |key, r| {
            r.deployment == name && !routes.contains_key(key)
        });
        for (key, route) in routes {
            put(&mut self.routes, key, route, tx);
        }
        take_where(&mut self.tcp_routes, tx, |port, r| {
            r.deployment == name && !tcp_routes.contains_key(port)
        });
        for (port, route) in tcp_routes {
            put(&mut self.tcp_routes, port, route, tx);
        }
    }

    /// Rebuilds both route indexes from every deployment (after a restore).
    pub(super) fn rebuild_route_indexes(&mut self) -> Result<(), String> {
        self.routes.clear();
        self.tcp_routes.clear();
        for deployment in self.deployments.values() {
            let (routes, tcp_routes) = spec_routes(&deployment.name, deployment.spec.as_ref());
            for (key, route) in routes {
                if let Some(other) = self.routes.insert(key, route) {
                    return Err(format!(
                        "route {}{} is owned twice",
                        other.domain, other.path
                    ));
                }
            }
            for (port, route) in tcp_routes {
                if self.tcp_routes.insert(port, route).is_some() {
                    return Err(format!("host port {port} is owned twice"));
                }
            }
        }
        Ok(())
    }
}

type RouteIndex = BTreeMap<(String, String), Route>;
type TcpRouteIndex = BTreeMap<u32, TcpRoute>;

/// The index entries of one deployment's spec (owner set to `name`).
fn spec_routes(name: &str, spec: Option<&DeploymentSpec>) -> (RouteIndex, TcpRouteIndex) {
    let Some(spec) = spec else {
        return (BTreeMap::new(), BTreeMap::new());
    };
    let routes = spec
        .routes
        .iter()
        .map(|r| {
            let route = Route {
                deployment: name.to_owned(),
                ..r.clone()
            };
            ((r.domain.clone(), r.path.clone()), route)
        })
        .collect();
    let tcp_routes = spec
        .tcp_routes
        .iter()
        .map(|r| {
            (
                r.published_port,
                TcpRoute {
                    deployment: name.to_owned(),
                    ..r.clone()
                },
            )
        })
        .collect();
    (routes, tcp_routes)
}

/// Deployment names: `[a-z0-9][a-z0-9-]{0,39}` (SPEC §2.1).
fn check_deployment_name(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if first_ok && rest_ok && name.len() <= 40 {
        Ok(())
    } else {
        Err(invalid(
            "deployment",
            format!("{name:?} is not a deployment name [a-z0-9][a-z0-9-]{{0,39}}"),
        )
        .with("deployment", name))
    }
}

/// Rejects a command whose expected revision (0 = no check) is not the current one.
fn check_expected_revision(
    name: &str,
    expected: u64,
    current: Option<&Deployment>,
) -> Result<(), Error> {
    let actual = current.map_or(0, |d| d.revision);
    if expected == 0 || expected == actual {
        Ok(())
    } else {
        Err(invalid(
            "expected_revision",
            format!("deployment {name} is at revision {actual}, not {expected}"),
        )
        .with("reason", "revision_mismatch")
        .with("deployment", name)
        .with("expected_revision", expected)
        .with("revision", actual))
    }
}

fn not_found(name: &str) -> Error {
    Error::new(
        Code::DeploymentNotFound,
        format!("no deployment named {name}"),
    )
    .with("deployment", name)
}

fn blob_noun(kind: i32) -> &'static str {
    if kind == i32::from(BlobKind::Config) {
        "config"
    } else {
        "secret"
    }
}

/// Lowercase hex SHA-256 of `content`.
fn hex_sha256(content: &[u8]) -> String {
    Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{BlobRef, EntityType, IssueOperatorToken, OperatorToken, command::Kind};
    use crate::state::testkit::*;
    use crate::state::{AuditFilter, ChangeKind};

    fn rollback(name: &str) -> Kind {
        Kind::RollbackDeployment(RollbackDeployment {
            deployment: name.into(),
            expected_revision: 0,
        })
    }

    fn delete(name: &str) -> Kind {
        Kind::DeleteDeployment(DeleteDeployment {
            deployment: name.into(),
            keep_volumes: true,
        })
    }

    fn applied(outcome: Outcome) -> ApplyDeploymentResult {
        match outcome {
            Outcome::ApplyDeployment(result) => result,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn last_audit(h: &Harness) -> crate::proto::v1::AuditEvent {
        h.state
            .audit(&AuditFilter::default())
            .events
            .pop()
            .expect("audit")
    }

    fn with_tcp(mut s: DeploymentSpec, service: &str, port: u32) -> DeploymentSpec {
        s.tcp_routes.push(TcpRoute {
            published_port: port,
            service: service.into(),
            container_port: 5432,
            ..Default::default()
        });
        s
    }

    fn with_route(mut s: DeploymentSpec, domain: &str, service: &str) -> DeploymentSpec {
        s.routes.push(Route {
            domain: domain.into(),
            path: "/".into(),
            service: service.into(),
            port: 80,
            ..Default::default()
        });
        s
    }

    fn secret(name: &str, content: &str) -> ContentBlob {
        ContentBlob {
            kind: BlobKind::Secret.into(),
            name: name.into(),
            content: content.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn with_secret(mut s: DeploymentSpec, name: &str, content: &str) -> DeploymentSpec {
        s.blobs.push(BlobRef {
            kind: BlobKind::Secret.into(),
            name: name.into(),
            sha256: hex_sha256(content.as_bytes()),
        });
        s
    }

    fn apply_with_blobs(name: &str, spec: DeploymentSpec, blobs: Vec<ContentBlob>) -> Kind {
        Kind::ApplyDeployment(ApplyDeployment {
            deployment: name.into(),
            spec: Some(spec),
            blobs,
            ..Default::default()
        })
    }

    #[test]
    fn test_apply_creates_revision_one_then_increments() {
        let mut h = Harness::initialised();
        let first = applied(h.ok(apply_deployment("shop", spec(&[("web", "nginx:1")]))));
        assert_eq!((first.revision, first.previous_revision), (1, 0));
        assert!(first.diff.as_ref().is_some_and(|d| d.created));
        let deployment = h.state.deployment("shop").expect("stored");
        assert_eq!(deployment.status(), DeploymentStatus::Pending);
        assert_eq!(deployment.applied_index, h.index);
        assert_eq!(deployment.updated_by, "local");
        let audit = last_audit(&h);
        assert_eq!(audit.r#type(), AuditEventType::Apply);
        assert_eq!(audit.payload["revision"], "1");
        assert_eq!(audit.payload["services"], "web");

        // Re-applying the same spec still makes a new revision (it resets failed replicas).
        let again = applied(h.ok(apply_deployment("shop", spec(&[("web", "nginx:1")]))));
        assert_eq!((again.revision, again.previous_revision), (2, 1));
        assert!(again.diff.as_ref().is_some_and(|d| !d.changed));
        let second = applied(h.ok(apply_deployment("shop", spec(&[("web", "nginx:2")]))));
        assert_eq!(second.revision, 3);
        let revisions: Vec<(u64, RevisionOrigin)> = h
            .state
            .deployment_revisions("shop")
            .map(|r| (r.revision, r.origin()))
            .collect();
        assert_eq!(
            revisions,
            [
                (1, RevisionOrigin::Apply),
                (2, RevisionOrigin::Apply),
                (3, RevisionOrigin::Apply)
            ]
        );
        assert_eq!(
            h.state.deployment("shop").map(|d| d.created_at_unix_ms),
            Some(h.now)
        );
    }

    #[test]
    fn test_rollback_restores_the_previous_spec_as_a_new_revision() {
        let mut h = Harness::initialised();
        h.ok(apply_deployment("shop", spec(&[("web", "nginx:1")])));
        h.ok(apply_deployment("shop", spec(&[("web", "nginx:2")])));
        let Outcome::RollbackDeployment(result) = h.ok(rollback("shop")) else {
            panic!("rollback result")
        };
        assert_eq!((result.revision, result.rolled_back_to), (3, 1));
        let diff = result.diff.expect("diff");
        assert_eq!(diff.services[0].from_image, "nginx:2");
        assert_eq!(diff.services[0].to_image, "nginx:1");
        let deployment = h.state.deployment("shop").expect("deployment");
        assert_eq!(deployment.revision, 3);
        assert_eq!(deployment.previous_revision, 2);
        assert_eq!(
            deployment
                .spec
                .as_ref()
                .map(|s| s.services[0].image.as_str()),
            Some("nginx:1")
        );
        let record = h.state.deployment_revision("shop", 3).expect("revision 3");
        assert_eq!(record.origin(), RevisionOrigin::Rollback);
        assert_eq!(record.rolled_back_to, 1);
        let audit = last_audit(&h);
        assert_eq!(audit.r#type(), AuditEventType::Rollback);
        assert_eq!(audit.payload["rolled_back_to"], "1");
    }

    #[test]
    fn test_rollback_errors() {
        let mut h = Harness::initialised();
        let err = h.rejected(rollback("shop"), Code::DeploymentNotFound);
        assert_eq!(err.details["deployment"], "shop");
        h.ok(apply_deployment("shop", spec(&[("web", "nginx:1")])));
        h.rejected(rollback("shop"), Code::NoPreviousRevision);
        h.ok(apply_deployment("shop", spec(&[("web", "nginx:2")])));
        h.rejected(
            Kind::RollbackDeployment(RollbackDeployment {
                deployment: "shop".into(),
                expected_revision: 1,
            }),
            Code::ValidationFailed,
        );
    }

    #[test]
    fn test_rollback_rechecks_the_restored_spec_against_the_cluster() {
        let mut h = Harness::initialised();
        h.ok(add_node("n2", 2));
        let mut pinned = spec(&[("db", "pg")]);
        pinned.services[0].placement = PlacementMode::Hosts.into();
        pinned.services[0].hosts = vec!["n2".into()];
        h.ok(apply_deployment("shop", pinned));
        h.ok(apply_deployment("shop", spec(&[("db", "pg")])));
        h.ok(Kind::RemoveNode(crate::proto::v1::RemoveNode {
            node: "n2".into(),
            force: true,
        }));
        let err = h.rejected(rollback("shop"), Code::UnknownHost);
        assert_eq!(err.details["host"], "n2");
    }

    #[test]
    fn test_delete_leaves_a_tombstone_and_numbering_continues_after_it() {
        let mut h = Harness::initialised();
        h.ok(apply_deployment(
            "shop",
            with_route(spec(&[("web", "nginx:1")]), "shop.example", "web"),
        ));
        h.ok(apply_deployment("shop", spec(&[("web", "nginx:2")])));
        h.ok(apply_deployment(
            "shop",
            with_route(spec(&[("web", "nginx:3")]), "shop.example", "web"),
        ));
        let Outcome::DeleteDeployment(result) = h.ok(delete("shop")) else {
            panic!("delete result")
        };
        assert_eq!(result.last_revision, 3);
        assert!(h.state.deployment("shop").is_none());
        assert_eq!(h.state.deployment_revisions("shop").count(), 0);
        assert_eq!(h.state.routes().count(), 0);
        let tombstone = h.state.tombstones().next().expect("tombstone");
        assert_eq!((tombstone.last_revision, tombstone.keep_volumes), (3, true));
        let audit = last_audit(&h);
        assert_eq!(audit.r#type(), AuditEventType::Delete);
        assert_eq!(audit.payload["keep_volumes"], "true");
        let removed: Vec<EntityType> = h
            .events
            .iter()
            .filter(|e| e.kind == ChangeKind::Removed)
            .map(|e| e.entity_type)
            .collect();
        assert!(removed.contains(&EntityType::Deployment) && removed.contains(&EntityType::Route));
        h.rejected(delete("shop"), Code::DeploymentNotFound);
        // Re-created: numbering continues so replica labels never repeat a revision.
        let again = applied(h.ok(apply_deployment("shop", spec(&[("web", "nginx:1")]))));
        assert_eq!((again.revision, again.previous_revision), (4, 0));
        h.rejected(rollback("shop"), Code::NoPreviousRevision);
    }

    #[test]
    fn test_history_is_bounded() {
        let mut h = Harness::initialised();
        for i in 0..(REVISION_HISTORY + 3) {
            h.ok(apply_deployment(
                "shop",
                spec(&[("web", &format!("nginx:{i}"))]),
            ));
        }
        let kept: Vec<u64> = h
            .state
            .deployment_revisions("shop")
            .map(|r| r.revision)
            .collect();
        assert_eq!(kept.len(), REVISION_HISTORY);
        assert_eq!(kept.first(), Some(&4));
        assert_eq!(kept.last(), Some(&13));
    }

    #[test]
    fn test_apply_validation_errors() {
        let mut h = Harness::initialised();
        h.rejected(
            apply_deployment("Shop", spec(&[("web", "x")])),
            Code::ValidationFailed,
        );
        h.rejected(
            apply_deployment("", spec(&[("web", "x")])),
            Code::ValidationFailed,
        );
        h.rejected(
            apply_deployment(&"a".repeat(41), spec(&[("web", "x")])),
            Code::ValidationFailed,
        );
        h.rejected(
            Kind::ApplyDeployment(ApplyDeployment {
                deployment: "shop".into(),
                ..Default::default()
            }),
            Code::ValidationFailed,
        );
        h.rejected(
            apply_deployment("shop", spec(&[("web", "x"), ("web", "y")])),
            Code::ValidationFailed,
        );
        let mut unplaced = spec(&[("web", "x")]);
        unplaced.services[0].placement = 0;
        h.rejected(apply_deployment("shop", unplaced), Code::ValidationFailed);
        let mut expecting = apply_deployment("shop", spec(&[("web", "x")]));
        if let Kind::ApplyDeployment(c) = &mut expecting {
            c.expected_revision = 3;
        }
        let err = h.rejected(expecting, Code::ValidationFailed);
        assert_eq!(err.details["reason"], "revision_mismatch");
    }

    #[test]
    fn test_pinned_hosts_must_be_members() {
        let mut h = Harness::initialised();
        let mut pinned = spec(&[("db", "pg")]);
        pinned.services[0].placement = PlacementMode::Hosts.into();
        pinned.services[0].hosts = vec!["n1".into(), "n7".into()];
        let err = h.rejected(apply_deployment("shop", pinned.clone()), Code::UnknownHost);
        assert_eq!(err.details["host"], "n7");
        assert_eq!(err.details["members"], "n1");
        pinned.services[0].hosts.pop();
        h.ok(apply_deployment("shop", pinned));
    }

    #[test]
    fn test_ports_and_routes_are_owned_by_one_deployment() {
        let mut h = Harness::initialised();
        h.ok(apply_deployment(
            "shop",
            with_tcp(
                with_route(spec(&[("db", "pg")]), "shop.example", "db"),
                "db",
                5432,
            ),
        ));
        let err = h.rejected(
            apply_deployment("blog", with_tcp(spec(&[("db", "pg")]), "db", 5432)),
            Code::PortConflict,
        );
        assert_eq!(err.details["deployment"], "shop");
        h.rejected(
            apply_deployment(
                "blog",
                with_tcp(with_tcp(spec(&[("db", "pg")]), "db", 6000), "db", 6000),
            ),
            Code::PortConflict,
        );
        h.rejected(
            apply_deployment("blog", with_tcp(spec(&[("db", "pg")]), "db", 443)),
            Code::ReservedPort,
        );
        h.rejected(
            apply_deployment("blog", with_tcp(spec(&[("db", "pg")]), "web", 6000)),
            Code::UnknownService,
        );
        let err = h.rejected(
            apply_deployment(
                "blog",
                with_route(spec(&[("web", "x")]), "shop.example", "web"),
            ),
            Code::ValidationFailed,
        );
        assert_eq!(err.details["reason"], "duplicate_route");
        // The owner may re-apply its own ports and routes.
        h.ok(apply_deployment(
            "shop",
            with_tcp(
                with_route(spec(&[("db", "pg")]), "shop.example", "db"),
                "db",
                5432,
            ),
        ));
        let ports: Vec<(u32, &str)> = h
            .state
            .tcp_routes()
            .map(|r| (r.published_port, r.deployment.as_str()))
            .collect();
        assert_eq!(ports, [(5432, "shop")]);
        // After the owner drops the port another deployment can take it.
        h.ok(apply_deployment("shop", spec(&[("db", "pg")])));
        h.ok(apply_deployment(
            "blog",
            with_tcp(spec(&[("db", "pg")]), "db", 5432),
        ));
    }

    #[test]
    fn test_privileged_services_need_a_privileged_caller() {
        let mut h = Harness::initialised();
        h.ok(Kind::IssueOperatorToken(IssueOperatorToken {
            token: Some(OperatorToken {
                name: "ci".into(),
                sha256: sha("ci"),
                ..Default::default()
            }),
        }));
        let mut privileged = spec(&[("agent", "x")]);
        privileged.services[0].privileged = true;
        let command = Kind::ApplyDeployment(ApplyDeployment {
            deployment: "ops".into(),
            spec: Some(privileged.clone()),
            privileged_services: vec!["agent".into()],
            ..Default::default()
        });
        let err = h.rejected_as("ci", command.clone(), Code::PermissionDenied);
        assert_eq!(err.details["service"], "agent");
        // bootstrap is not privileged either; `local` is.
        h.rejected_as("bootstrap", command.clone(), Code::PermissionDenied);
        h.ok(command);
        let types: Vec<AuditEventType> = h
            .state
            .audit(&AuditFilter::default())
            .events
            .iter()
            .rev()
            .take(2)
            .map(|e| e.r#type())
            .collect();
        assert_eq!(
            types,
            [
                AuditEventType::PrivilegedWorkloadAdmitted,
                AuditEventType::Apply
            ]
        );
        let unknown = Kind::ApplyDeployment(ApplyDeployment {
            deployment: "ops".into(),
            spec: Some(privileged),
            privileged_services: vec!["nope".into()],
            ..Default::default()
        });
        h.rejected(unknown, Code::ValidationFailed);
    }

    #[test]
    fn test_blobs_are_checked_stored_kept_for_rollback_and_collected() {
        let mut h = Harness::initialised();
        let v1 = with_secret(spec(&[("web", "x")]), "db", "pw-one");
        h.rejected(
            apply_with_blobs("shop", v1.clone(), vec![]),
            Code::ValidationFailed,
        );
        let mut wrong = secret("db", "pw-one");
        wrong.sha256 = "00".repeat(32);
        let err = h.rejected(
            apply_with_blobs("shop", v1.clone(), vec![wrong]),
            Code::ValidationFailed,
        );
        assert_eq!(err.details["reason"], "blob_hash_mismatch");
        h.ok(apply_with_blobs(
            "shop",
            v1.clone(),
            vec![secret("db", "pw-one")],
        ));
        let sha_one = hex_sha256(b"pw-one");
        let stored = h
            .state
            .content_blob("shop", BlobKind::Secret, "db", &sha_one)
            .expect("stored");
        assert_eq!(stored.content, b"pw-one");
        // The blob's watch event carries no content.
        let blob_event = h
            .events
            .iter()
            .find(|e| e.entity_type == EntityType::ContentBlob)
            .expect("blob event");
        assert!(
            !format!("{blob_event:?}").contains("112, 119, 45"),
            "content leaked"
        );
        // v2 changes the secret; v1's content stays for a rollback, which needs no upload.
        let v2 = with_secret(spec(&[("web", "x")]), "db", "pw-two");
        h.ok(apply_with_blobs("shop", v2, vec![secret("db", "pw-two")]));
        assert_eq!(h.state.content_blobs("shop").count(), 2);
        h.ok(rollback("shop"));
        // Unchanged content is not re-sent.
        h.ok(apply_with_blobs("shop", v1, vec![]));
        // Once no retained revision references pw-two it is collected.
        for i in 0..REVISION_HISTORY {
            h.ok(apply_deployment("shop", spec(&[("web", &format!("x{i}"))])));
        }
        assert_eq!(h.state.content_blobs("shop").count(), 0);
        let mut unknown_kind = secret("db", "pw");
        unknown_kind.kind = 0;
        h.rejected(
            apply_with_blobs("shop", spec(&[("web", "x")]), vec![unknown_kind]),
            Code::ValidationFailed,
        );
    }

    #[test]
    fn test_routes_index_follows_the_current_spec() {
        let mut h = Harness::initialised();
        h.ok(apply_deployment(
            "shop",
            with_route(
                with_route(spec(&[("web", "x")]), "a.example", "web"),
                "b.example",
                "web",
            ),
        ));
        let domains: Vec<&str> = h.state.routes().map(|r| r.domain.as_str()).collect();
        assert_eq!(domains, ["a.example", "b.example"]);
        assert!(h.state.routes().all(|r| r.deployment == "shop"));
        h.ok(apply_deployment(
            "shop",
            with_route(spec(&[("web", "x")]), "b.example", "web"),
        ));
        let removed: Vec<&str> = h
            .events
            .iter()
            .filter(|e| e.entity_type == EntityType::Route && e.kind == ChangeKind::Removed)
            .map(|e| e.key.as_str())
            .collect();
        assert_eq!(removed, ["a.example/"]);
    }
}
