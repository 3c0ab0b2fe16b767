//! The resolved manifest model → the replicated state's `DeploymentSpec` message.
//!
//! Role: the one place that decides how a validated [`Resolved`] deployment is recorded in
//! raft: the documents it came from, each service's canonical spec JSON and hash, placement,
//! update policy in milliseconds, dependencies, reservations, routes and the content hashes
//! of its secrets and configs (never their contents).
//!
//! It must not validate (the manifest pipeline did), read files or touch the network.

use std::time::Duration;

use super::Resolved;
use super::spec::{
    self, DependencyCondition, FailureAction, Placement, ResourceValues, ServiceSpec, TlsMode,
    UpdateOrder, UpdatePolicy,
};
use super::units::parse_duration;
use crate::proto::v1 as pb;

/// The state's record of `resolved`, with the resolved documents it was read from.
pub fn deployment_spec(
    resolved: &Resolved,
    jaco_yaml: &str,
    compose_yaml: &str,
) -> pb::DeploymentSpec {
    let deployment = &resolved.deployment;
    let blob = |kind: pb::BlobKind, name: &String, sha256: &String| pb::BlobRef {
        kind: kind.into(),
        name: name.clone(),
        sha256: sha256.clone(),
    };
    let blobs = (deployment.secrets.iter())
        .map(|(name, object)| blob(pb::BlobKind::Secret, name, &object.sha256))
        .chain(
            (deployment.configs.iter())
                .map(|(name, object)| blob(pb::BlobKind::Config, name, &object.sha256)),
        )
        .collect();
    pb::DeploymentSpec {
        jaco_yaml: jaco_yaml.to_owned(),
        compose_yaml: compose_yaml.to_owned(),
        services: (resolved.services.iter())
            .map(|(name, service)| service_spec(name, service, &deployment.profiles))
            .collect(),
        routes: (deployment.routes.iter())
            .map(|route| pb::Route {
                domain: route.domain.clone(),
                path: route.path.clone(),
                strip_path: route.strip_path,
                deployment: deployment.name.clone(),
                service: route.service.clone(),
                port: route.port.into(),
                tls: match route.tls {
                    TlsMode::Auto => pb::TlsMode::Auto,
                    TlsMode::Off => pb::TlsMode::Off,
                }
                .into(),
            })
            .collect(),
        tcp_routes: (deployment.tcp_routes.iter())
            .map(|route| pb::TcpRoute {
                published_port: route.published_port.into(),
                deployment: deployment.name.clone(),
                service: route.service.clone(),
                container_port: route.container_port.into(),
                proxy_protocol: false,
            })
            .collect(),
        blobs,
        acme: deployment.acme,
        acme_email: deployment.acme_email.clone().unwrap_or_default(),
        profiles: deployment.profiles.clone(),
    }
}

/// Names of the services that need privileged admission (SPEC §2.6).
pub fn privileged_services(resolved: &Resolved) -> Vec<String> {
    (resolved.services.iter())
        .filter(|(_, service)| is_privileged(service))
        .map(|(name, _)| name.clone())
        .collect()
}

fn is_privileged(service: &ServiceSpec) -> bool {
    service.container.privileged == Some(true) || !service.container.security_opt.is_empty()
}

fn service_spec(name: &str, service: &ServiceSpec, enabled_profiles: &[String]) -> pb::ServiceSpec {
    let container = &service.container;
    let stateful = container
        .volumes
        .iter()
        .any(|mount| mount.kind != spec::MountKind::Tmpfs);
    pb::ServiceSpec {
        name: name.to_owned(),
        replicas: service.replicas,
        placement: match service.placement {
            Placement::Spread => pb::PlacementMode::Spread,
            Placement::Pack => pb::PlacementMode::Pack,
            Placement::Hosts => pb::PlacementMode::Hosts,
            Placement::Global => pb::PlacementMode::Global,
        }
        .into(),
        hosts: service.hosts.clone(),
        update: Some(update_policy(&service.update)),
        spec_hash: service.spec_hash.clone(),
        canonical_spec_json: spec::canonical_json(container),
        depends_on: (service.depends_on.iter())
            .map(|(dependency, how)| pb::ServiceDependency {
                service: dependency.clone(),
                condition: match how.condition {
                    DependencyCondition::ServiceStarted => pb::DependencyCondition::ServiceStarted,
                    DependencyCondition::ServiceHealthy => pb::DependencyCondition::ServiceHealthy,
                }
                .into(),
            })
            .collect(),
        image: container.image.clone(),
        reservations: resources(&container.resources.reservations),
        limits: resources(&container.resources.limits),
        networks: container.networks.keys().cloned().collect(),
        privileged: is_privileged(service),
        stateful,
        has_healthcheck: container.healthcheck.is_some(),
        profiles: enabled_profiles.to_vec(),
    }
}

fn update_policy(policy: &UpdatePolicy) -> pb::UpdatePolicy {
    pb::UpdatePolicy {
        parallelism: policy.parallelism.max(1),
        order: match policy.order {
            UpdateOrder::StartFirst => pb::UpdateOrder::StartFirst,
            UpdateOrder::StopFirst => pb::UpdateOrder::StopFirst,
        }
        .into(),
        monitor_ms: millis(&policy.monitor, Duration::from_secs(5)),
        step_timeout_ms: millis(&policy.step_timeout, Duration::from_secs(60)),
        failure_action: match policy.failure_action {
            FailureAction::Rollback => pb::FailureAction::Rollback,
            FailureAction::Pause => pb::FailureAction::Pause,
        }
        .into(),
        delay_ms: millis(&policy.delay, Duration::ZERO),
    }
}

/// Milliseconds of a canonical duration the pipeline already validated (`fallback` keeps the
/// documented default should it ever not parse).
fn millis(text: &str, fallback: Duration) -> u64 {
    let duration = parse_duration(text).unwrap_or(fallback);
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn resources(values: &ResourceValues) -> Option<pb::NodeResources> {
    if values.cpus.is_none() && values.memory.is_none() {
        return None;
    }
    Some(pb::NodeResources {
        // Fractional CPUs as millicores; the manifest rejects negative values.
        cpu_millis: values.cpus.map_or(0, |cpus| (cpus * 1000.0).round() as u64),
        memory_bytes: values.memory.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{MemoryFiles, load};
    use sha2::{Digest, Sha256};
    use std::path::Path;

    fn resolved(jaco: &str, compose: &str) -> Resolved {
        let files = MemoryFiles::default()
            .with("/d/jaco.yaml", jaco)
            .with("/d/compose.yaml", compose);
        load(&files, Path::new("/d/jaco.yaml"), None).expect("valid manifest")
    }

    #[test]
    fn services_carry_hash_policy_and_dependencies() {
        let r = resolved(
            "deployment: shop\nacme: off\nservices:\n  - name: web\n    replicas: 3\n    update:\n      monitor: 2s\n      order: stop-first\n",
            "services:\n  web:\n    image: web:1\n    depends_on:\n      db: {condition: service_healthy}\n    ports: ['8080:80']\n  db:\n    image: db:1\n    volumes: ['data:/var/lib/db']\n    healthcheck: {test: ['CMD', 'true'], interval: 1s}\nvolumes:\n  data: {}\n",
        );
        let spec = deployment_spec(&r, "J", "C");
        assert_eq!(
            (spec.jaco_yaml.as_str(), spec.compose_yaml.as_str()),
            ("J", "C")
        );
        let web = spec.services.iter().find(|s| s.name == "web").unwrap();
        let db = spec.services.iter().find(|s| s.name == "db").unwrap();
        assert_eq!(web.replicas, 3);
        assert_eq!(web.spec_hash, r.services["web"].spec_hash);
        assert_eq!(
            spec::spec_hash(&r.services["web"].container),
            spec::hex(&Sha256::digest(web.canonical_spec_json.as_bytes())),
            "the recorded JSON is what the hash covers"
        );
        let update = web.update.as_ref().unwrap();
        assert_eq!((update.monitor_ms, update.step_timeout_ms), (2000, 60_000));
        assert_eq!(update.order(), pb::UpdateOrder::StopFirst);
        assert_eq!(update.failure_action(), pb::FailureAction::Rollback);
        assert_eq!(web.depends_on.len(), 1);
        assert_eq!(
            web.depends_on[0].condition(),
            pb::DependencyCondition::ServiceHealthy
        );
        assert!(!web.has_healthcheck && db.has_healthcheck);
        assert!(db.stateful && !web.stateful);
        assert_eq!(spec.tcp_routes.len(), 1);
        assert_eq!(spec.tcp_routes[0].published_port, 8080);
        assert_eq!(spec.tcp_routes[0].deployment, "shop");
        assert!(privileged_services(&r).is_empty());
    }

    #[test]
    fn secrets_are_recorded_by_hash_only_and_privilege_is_detected() {
        let files = MemoryFiles::default()
            .with("/d/jaco.yaml", "deployment: ops\nacme: off\n")
            .with(
                "/d/compose.yaml",
                "services:\n  agent:\n    image: a:1\n    privileged: true\n    labels: {jaco.io/allow-privileged: 'true'}\n    secrets: [token]\nsecrets:\n  token: {file: ./token.txt}\n",
            )
            .with("/d/token.txt", "s3cr3t");
        let r = load(&files, Path::new("/d/jaco.yaml"), None).expect("valid manifest");
        let spec = deployment_spec(&r, "", "");
        assert_eq!(spec.blobs.len(), 1);
        assert_eq!(spec.blobs[0].kind(), pb::BlobKind::Secret);
        assert_eq!(spec.blobs[0].sha256, r.deployment.secrets["token"].sha256);
        let recorded = format!("{spec:?}");
        assert!(
            !recorded.contains("s3cr3t"),
            "secret content leaked: {recorded}"
        );
        assert_eq!(privileged_services(&r), vec!["agent".to_owned()]);
        assert!(spec.services[0].privileged);
    }
}
