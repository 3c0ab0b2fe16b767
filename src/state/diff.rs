//! What a deployment revision changes compared with the current one: per service, per route,
//! per L4 route and per secret/config. Pure: used by `ApplyDeployment`/`RollbackDeployment`
//! results and by the API's dry run, which never becomes a command.
//!
//! Secret and config contents never appear: blobs are compared by content hash only.
//!
//! It must not read state, clocks or disks.

use std::collections::BTreeMap;

use crate::proto::v1::{
    BlobDiff, BlobRef, DeploymentDiff, DeploymentSpec, DiffKind, RouteDiff, ServiceDiff,
    ServiceSpec, TcpRouteDiff,
};

/// The difference between `current` (None = the deployment is new) and `proposed`.
pub fn deployment_diff(
    name: &str,
    current: Option<&DeploymentSpec>,
    proposed: &DeploymentSpec,
) -> DeploymentDiff {
    let empty = DeploymentSpec::default();
    let before = current.unwrap_or(&empty);
    let services = keyed(
        &before.services,
        &proposed.services,
        |s| s.name.clone(),
        true,
    )
    .into_iter()
    .map(|(kind, old, new)| service_diff(kind, old, new))
    .collect();
    let routes = keyed(
        &before.routes,
        &proposed.routes,
        |r| (r.domain.clone(), r.path.clone()),
        false,
    )
    .into_iter()
    .map(|(kind, old, new)| RouteDiff {
        kind: kind.into(),
        route: new.or(old).cloned(),
        previous: old.filter(|_| kind == DiffKind::Updated).cloned(),
    })
    .collect();
    let tcp_routes = keyed(
        &before.tcp_routes,
        &proposed.tcp_routes,
        |r| r.published_port,
        false,
    )
    .into_iter()
    .map(|(kind, old, new)| TcpRouteDiff {
        kind: kind.into(),
        route: new.or(old).cloned(),
        previous: old.filter(|_| kind == DiffKind::Updated).cloned(),
    })
    .collect();
    let blobs = keyed(
        &before.blobs,
        &proposed.blobs,
        |b| (b.kind, b.name.clone()),
        false,
    )
    .into_iter()
    .filter_map(|(kind, old, new)| {
        let subject: &BlobRef = new.or(old)?;
        Some(BlobDiff {
            kind: kind.into(),
            blob_kind: subject.kind,
            name: subject.name.clone(),
        })
    })
    .collect();
    DeploymentDiff {
        deployment: name.to_owned(),
        created: current.is_none(),
        changed: current != Some(proposed),
        services,
        routes,
        tcp_routes,
        blobs,
    }
}

/// Pairs items of two lists by key, in key order, with how each changed. Unchanged pairs are
/// kept only when `keep_unchanged`.
fn keyed<'a, K: Ord, V: PartialEq>(
    before: &'a [V],
    after: &'a [V],
    key: impl Fn(&V) -> K,
    keep_unchanged: bool,
) -> Vec<(DiffKind, Option<&'a V>, Option<&'a V>)> {
    let mut pairs: BTreeMap<K, (Option<&V>, Option<&V>)> = BTreeMap::new();
    for item in before {
        pairs.entry(key(item)).or_default().0 = Some(item);
    }
    for item in after {
        pairs.entry(key(item)).or_default().1 = Some(item);
    }
    pairs
        .into_values()
        .filter_map(|(old, new)| {
            let kind = match (old, new) {
                (None, Some(_)) => DiffKind::Added,
                (Some(_), None) => DiffKind::Removed,
                (Some(o), Some(n)) if o == n => DiffKind::Unchanged,
                _ => DiffKind::Updated,
            };
            (keep_unchanged || kind != DiffKind::Unchanged).then_some((kind, old, new))
        })
        .collect()
}

fn service_diff(
    kind: DiffKind,
    old: Option<&ServiceSpec>,
    new: Option<&ServiceSpec>,
) -> ServiceDiff {
    let changed_fields = match (old, new) {
        (Some(old), Some(new)) => changed_fields(old, new),
        _ => Vec::new(),
    };
    // SPEC §5.3: spec hash, image, replica count or placement start a rollout.
    let starts_rollout = changed_fields.iter().any(|f| {
        matches!(
            f.as_str(),
            "spec" | "image" | "replicas" | "placement" | "hosts"
        )
    });
    ServiceDiff {
        service: new.or(old).map(|s| s.name.clone()).unwrap_or_default(),
        kind: kind.into(),
        changed_fields,
        from_replicas: old.map_or(0, |s| s.replicas),
        to_replicas: new.map_or(0, |s| s.replicas),
        from_image: old.map(|s| s.image.clone()).unwrap_or_default(),
        to_image: new.map(|s| s.image.clone()).unwrap_or_default(),
        from_spec_hash: old.map(|s| s.spec_hash.clone()).unwrap_or_default(),
        to_spec_hash: new.map(|s| s.spec_hash.clone()).unwrap_or_default(),
        starts_rollout,
    }
}

/// Names of the aspects in which two specs of one service differ.
fn changed_fields(old: &ServiceSpec, new: &ServiceSpec) -> Vec<String> {
    let checks = [
        ("image", old.image != new.image),
        ("replicas", old.replicas != new.replicas),
        ("placement", old.placement != new.placement),
        ("hosts", old.hosts != new.hosts),
        ("spec", old.spec_hash != new.spec_hash),
        ("update", old.update != new.update),
        ("depends_on", old.depends_on != new.depends_on),
        ("networks", old.networks != new.networks),
        ("reservations", old.reservations != new.reservations),
        ("limits", old.limits != new.limits),
        ("privileged", old.privileged != new.privileged),
        ("stateful", old.stateful != new.stateful),
        ("healthcheck", old.has_healthcheck != new.has_healthcheck),
        ("profiles", old.profiles != new.profiles),
    ];
    let mut fields: Vec<String> = checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name.to_owned())
        .collect();
    if fields.is_empty() && old != new {
        // Some aspect without a name of its own (e.g. the canonical JSON) differs.
        fields.push("spec".to_owned());
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{BlobKind, PlacementMode, Route, TcpRoute};

    fn service(name: &str, image: &str, replicas: u32) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            image: image.into(),
            replicas,
            spec_hash: format!("{name}-{image}"),
            placement: PlacementMode::Spread.into(),
            ..Default::default()
        }
    }

    #[test]
    fn test_new_deployment_is_created_with_added_services() {
        let spec = DeploymentSpec {
            services: vec![service("web", "nginx:1", 2)],
            ..Default::default()
        };
        let diff = deployment_diff("shop", None, &spec);
        assert!(diff.created);
        assert!(diff.changed);
        assert_eq!(diff.services.len(), 1);
        assert_eq!(diff.services[0].kind(), DiffKind::Added);
        assert_eq!(diff.services[0].to_replicas, 2);
        assert!(!diff.services[0].starts_rollout);
    }

    #[test]
    fn test_service_changes_are_named_and_start_rollouts() {
        let before = DeploymentSpec {
            services: vec![
                service("web", "nginx:1", 2),
                service("db", "pg:16", 1),
                service("old", "x", 1),
            ],
            ..Default::default()
        };
        let mut after = before.clone();
        after.services[0] = service("web", "nginx:2", 3);
        after.services[1].update = Some(Default::default());
        after.services[2] = service("new", "y", 1);
        let diff = deployment_diff("shop", Some(&before), &after);
        assert!(!diff.created);
        assert!(diff.changed);
        let summary: Vec<(&str, DiffKind, Vec<String>, bool)> = diff
            .services
            .iter()
            .map(|s| {
                (
                    s.service.as_str(),
                    s.kind(),
                    s.changed_fields.clone(),
                    s.starts_rollout,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("db", DiffKind::Updated, vec!["update".to_owned()], false),
                ("new", DiffKind::Added, vec![], false),
                ("old", DiffKind::Removed, vec![], false),
                (
                    "web",
                    DiffKind::Updated,
                    vec!["image".to_owned(), "replicas".to_owned(), "spec".to_owned()],
                    true
                ),
            ]
        );
    }

    #[test]
    fn test_identical_spec_is_unchanged() {
        let spec = DeploymentSpec {
            services: vec![service("web", "nginx:1", 2)],
            ..Default::default()
        };
        let diff = deployment_diff("shop", Some(&spec), &spec);
        assert!(!diff.changed);
        assert_eq!(diff.services[0].kind(), DiffKind::Unchanged);
        assert!(diff.routes.is_empty() && diff.tcp_routes.is_empty() && diff.blobs.is_empty());
    }

    #[test]
    fn test_routes_tcp_routes_and_blobs() {
        let route = |domain: &str, port: u32| Route {
            domain: domain.into(),
            path: "/".into(),
            port,
            ..Default::default()
        };
        let tcp = |published_port: u32| TcpRoute {
            published_port,
            container_port: 5432,
            ..Default::default()
        };
        let blob = |name: &str, sha: &str| BlobRef {
            kind: BlobKind::Secret.into(),
            name: name.into(),
            sha256: sha.into(),
        };
        let before = DeploymentSpec {
            routes: vec![route("a.example", 80), route("b.example", 80)],
            tcp_routes: vec![tcp(5432)],
            blobs: vec![blob("db", "h1"), blob("api", "h2")],
            ..Default::default()
        };
        let after = DeploymentSpec {
            routes: vec![route("a.example", 8080), route("c.example", 80)],
            tcp_routes: vec![tcp(6432)],
            blobs: vec![blob("db", "h9"), blob("api", "h2")],
            ..Default::default()
        };
        let diff = deployment_diff("shop", Some(&before), &after);
        let routes: Vec<(DiffKind, String, Option<u32>)> = diff
            .routes
            .iter()
            .map(|r| {
                (
                    r.kind(),
                    r.route
                        .as_ref()
                        .map(|r| r.domain.clone())
                        .unwrap_or_default(),
                    r.previous.as_ref().map(|p| p.port),
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                (DiffKind::Updated, "a.example".to_owned(), Some(80)),
                (DiffKind::Removed, "b.example".to_owned(), None),
                (DiffKind::Added, "c.example".to_owned(), None),
            ]
        );
        let tcp: Vec<(DiffKind, u32)> = diff
            .tcp_routes
            .iter()
            .map(|r| (r.kind(), r.route.as_ref().map_or(0, |r| r.published_port)))
            .collect();
        assert_eq!(tcp, [(DiffKind::Removed, 5432), (DiffKind::Added, 6432)]);
        let blobs: Vec<(DiffKind, &str)> = diff
            .blobs
            .iter()
            .map(|b| (b.kind(), b.name.as_str()))
            .collect();
        assert_eq!(blobs, [(DiffKind::Updated, "db")]);
    }
}
