//! What `Deploy.Status` and `Deploy.Get` answer, computed from one state as values.
//!
//! Role: join each replica's desired record with its observation, summarise services, pick
//! routes and certificates, and mask environment values in documents unless the caller may
//! see them. Secret and config contents live only in the state's blob map, which this module
//! never reads.
//!
//! It must not change state, wait, or do I/O; the RPC layer reads the state under its lock and
//! hands it here.

use crate::error::{Code, Error};
use crate::proto::v1 as pb;
use crate::state::State;

/// Mask shown in place of an environment value.
pub const MASK: &str = "********";

/// The status summary, optionally narrowed to one deployment or one of its services.
pub fn status(
    state: &State,
    deployment: Option<&str>,
    service: Option<&str>,
) -> Result<pb::DeployStatusResponse, Error> {
    if let Some(name) = deployment {
        existing(state, name)?;
        if let Some(service) = service {
            existing_service(state, name, service)?;
        }
    }
    let wanted = |dep: &str| deployment.is_none_or(|d| d == dep);
    let deployments: Vec<_> = state
        .deployments()
        .filter(|d| wanted(&d.name))
        .map(|d| summary(state, d, service))
        .collect();
    let replicas = replicas(state, deployment, service, None);
    let routes: Vec<pb::Route> = state
        .routes()
        .filter(|r| wanted(&r.deployment) && service.is_none_or(|s| s == r.service))
        .cloned()
        .collect();
    let tcp_routes = state
        .tcp_routes()
        .filter(|r| wanted(&r.deployment) && service.is_none_or(|s| s == r.service))
        .cloned()
        .collect();
    let certificates = state
        .certificates()
        .filter(|c| routes.iter().any(|r| r.domain == c.domain))
        .map(certificate_summary)
        .collect();
    Ok(pb::DeployStatusResponse {
        deployments,
        replicas,
        routes,
        tcp_routes,
        certificates,
        revision: state.revision(),
    })
}

/// The answer to one `Get` query. `may_unmask` says whether the caller may see environment
/// values when it asks to.
pub fn get(
    state: &State,
    query: &pb::get_request::Query,
    may_unmask: bool,
) -> Result<pb::get_response::Result, Error> {
    use pb::get_request::Query;
    use pb::get_response::Result as Answer;
    Ok(match query {
        Query::Deployments(_) => Answer::Deployments(pb::DeploymentList {
            deployments: state
                .deployments()
                .map(|d| summary(state, d, None))
                .collect(),
        }),
        Query::Deployment(q) => Answer::Deployment(deployment_detail(state, q, may_unmask)?),
        Query::Replicas(q) => Answer::Replicas(pb::ReplicaList {
            replicas: replicas(
                state,
                non_empty(&q.deployment),
                non_empty(&q.service),
                non_empty(&q.node),
            ),
        }),
        Query::Replica(q) => Answer::Replica(replica_detail(state, &q.id)?),
        Query::Routes(q) => Answer::Routes(pb::RouteList {
            routes: state
                .routes()
                .filter(|r| q.domain.is_empty() || r.domain == q.domain)
                .filter(|r| q.deployment.is_empty() || r.deployment == q.deployment)
                .cloned()
                .collect(),
            tcp_routes: state
                .tcp_routes()
                .filter(|r| q.deployment.is_empty() || r.deployment == q.deployment)
                .cloned()
                .collect(),
        }),
        Query::Route(q) => Answer::Route(route_detail(state, &q.domain)?),
    })
}

fn non_empty(text: &str) -> Option<&str> {
    Some(text).filter(|t| !t.is_empty())
}

fn existing<'s>(state: &'s State, name: &str) -> Result<&'s pb::Deployment, Error> {
    state.deployment(name).ok_or_else(|| {
        Error::new(
            Code::DeploymentNotFound,
            format!("the cluster has no deployment named {name}"),
        )
        .with("deployment", name)
    })
}

fn existing_service(state: &State, deployment: &str, service: &str) -> Result<(), Error> {
    let services = services_of(state.deployment(deployment));
    if services.iter().any(|s| s.name == service) {
        return Ok(());
    }
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    Err(Error::new(
        Code::UnknownService,
        format!("deployment {deployment} has no service {service}"),
    )
    .with("deployment", deployment)
    .with("service", service)
    .with("services", names.join(",")))
}

fn services_of(deployment: Option<&pb::Deployment>) -> &[pb::ServiceSpec] {
    deployment
        .and_then(|d| d.spec.as_ref())
        .map_or(&[], |spec| spec.services.as_slice())
}

fn summary(state: &State, d: &pb::Deployment, only: Option<&str>) -> pb::DeploymentSummary {
    let services = services_of(Some(d))
        .iter()
        .filter(|s| only.is_none_or(|o| o == s.name))
        .map(|s| {
            let of_service = |id: &str| {
                state
                    .replica_desired(id)
                    .is_some_and(|r| r.deployment == d.name && r.service == s.name)
            };
            let running = state
                .replicas_observed()
                .filter(|o| of_service(&o.id) && o.state() == pb::ReplicaState::Running)
                .count();
            let desired = if s.placement() == pb::PlacementMode::Global {
                state
                    .replicas_desired()
                    .filter(|r| r.deployment == d.name && r.service == s.name)
                    .count()
            } else {
                s.replicas as usize
            };
            pb::ServiceSummary {
                name: s.name.clone(),
                image: s.image.clone(),
                placement: s.placement,
                desired_replicas: u32::try_from(desired).unwrap_or(u32::MAX),
                running_replicas: u32::try_from(running).unwrap_or(u32::MAX),
                spec_hash: s.spec_hash.clone(),
                rollout: state.rollout(&d.name, &s.name).cloned(),
            }
        })
        .collect();
    pb::DeploymentSummary {
        name: d.name.clone(),
        revision: d.revision,
        previous_revision: d.previous_revision,
        status: d.status,
        status_details: d.status_details.clone(),
        services,
        created_at_unix_ms: d.created_at_unix_ms,
        updated_at_unix_ms: d.updated_at_unix_ms,
        updated_by: d.updated_by.clone(),
    }
}

/// Replicas (desired joined with observed), by id, narrowed by deployment, service and node.
fn replicas(
    state: &State,
    deployment: Option<&str>,
    service: Option<&str>,
    node: Option<&str>,
) -> Vec<pb::Replica> {
    state
        .replicas_desired()
        .filter(|r| deployment.is_none_or(|d| d == r.deployment))
        .filter(|r| service.is_none_or(|s| s == r.service))
        .filter(|r| node.is_none_or(|n| n == r.node))
        .map(|r| pb::Replica {
            desired: Some(r.clone()),
            observed: presented(state, r),
        })
        .collect()
}

/// A replica's observation as shown: a running one that an in-progress rollout replaces is
/// `updating` (the seed's state "set by the scheduler during a rolling update"). Derived
/// here rather than stored, so that the rollout engine keeps counting it as healthy.
fn presented(state: &State, desired: &pb::ReplicaDesired) -> Option<pb::ReplicaObserved> {
    let mut observed = state.replica_observed(&desired.id).cloned()?;
    let replacing = state
        .rollout(&desired.deployment, &desired.service)
        .filter(|r| r.state() == pb::RolloutState::InProgress && !r.paused)
        .filter(|r| r.to_spec_hash != desired.spec_hash);
    // Only a healthy one: a degraded old replica stays visibly degraded.
    let serving = observed.state() == pb::ReplicaState::Running;
    if let (Some(rollout), true) = (replacing, serving) {
        observed.state = pb::ReplicaState::Updating.into();
        observed.message = format!(
            "serving until the rollout to revision {} replaces it",
            rollout.to_revision
        );
    }
    Some(observed)
}

fn replica_detail(state: &State, id: &str) -> Result<pb::ReplicaDetail, Error> {
    let desired = state.replica_desired(id).ok_or_else(|| {
        Error::new(Code::NotFound, format!("no replica {id}")).with("replica", id)
    })?;
    let spec = services_of(state.deployment(&desired.deployment))
        .iter()
        .find(|s| s.name == desired.service);
    let gates = spec
        .map(|s| s.depends_on.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|dependency| gate(state, &desired.deployment, dependency))
        .collect();
    Ok(pb::ReplicaDetail {
        replica: Some(pb::Replica {
            desired: Some(desired.clone()),
            observed: presented(state, desired),
        }),
        gates,
    })
}

/// Whether one depends_on condition holds somewhere in the cluster (SPEC §2.5: started =
/// running or degraded; healthy = running), with the best state seen.
pub fn gate(
    state: &State,
    deployment: &str,
    dependency: &pb::ServiceDependency,
) -> pb::DependencyGate {
    use pb::ReplicaState as S;
    let rank = |s: S| match s {
        S::Running => 4,
        S::Degraded => 3,
        S::Updating => 2,
        S::Pulling | S::Pending => 1,
        _ => 0,
    };
    let best = state
        .replicas_desired()
        .filter(|r| r.deployment == deployment && r.service == dependency.service)
        .filter_map(|r| state.replica_observed(&r.id))
        .map(pb::ReplicaObserved::state)
        .max_by_key(|s| rank(*s))
        .unwrap_or(S::Unspecified);
    let satisfied = match dependency.condition() {
        pb::DependencyCondition::ServiceHealthy => best == S::Running,
        _ => matches!(best, S::Running | S::Degraded),
    };
    pb::DependencyGate {
        service: dependency.service.clone(),
        condition: dependency.condition,
        state: best.into(),
        satisfied,
    }
}

fn deployment_detail(
    state: &State,
    query: &pb::DeploymentQuery,
    may_unmask: bool,
) -> Result<pb::DeploymentDetail, Error> {
    let current = existing(state, &query.name)?;
    let mut deployment = current.clone();
    if query.revision != 0 && query.revision != current.revision {
        let retained = state
            .deployment_revision(&query.name, query.revision)
            .ok_or_else(|| {
                let kept: Vec<String> = state
                    .deployment_revisions(&query.name)
                    .map(|r| r.revision.to_string())
                    .collect();
                Error::new(
                    Code::NotFound,
                    format!(
                        "deployment {} has no retained revision {}",
                        query.name, query.revision
                    ),
                )
                .with("deployment", &query.name)
                .with("revision", query.revision)
                .with("retained", kept.join(","))
            })?;
        deployment.revision = retained.revision;
        deployment.spec.clone_from(&retained.spec);
    }
    let redacted = !(query.show_secrets && may_unmask);
    if redacted && let Some(spec) = deployment.spec.as_mut() {
        mask_spec(spec);
    }
    let mut revisions: Vec<pb::RevisionSummary> = state
        .deployment_revisions(&query.name)
        .map(|r| pb::RevisionSummary {
            revision: r.revision,
            origin: r.origin,
            rolled_back_to: r.rolled_back_to,
            created_at_unix_ms: r.created_at_unix_ms,
            created_by: r.created_by.clone(),
        })
        .collect();
    revisions.reverse();
    let rollouts = state
        .rollouts()
        .filter(|r| r.deployment == query.name)
        .cloned()
        .collect();
    Ok(pb::DeploymentDetail {
        deployment: Some(deployment),
        redacted,
        revisions,
        rollouts,
    })
}

fn route_detail(state: &State, domain: &str) -> Result<pb::RouteDetail, Error> {
    let mut routes: Vec<&pb::Route> = state.routes().filter(|r| r.domain == domain).collect();
    if routes.is_empty() {
        return Err(
            Error::new(Code::NotFound, format!("no route for domain {domain}"))
                .with("domain", domain),
        );
    }
    // Evaluation order: longest prefix first, the catch-all last.
    routes.sort_by(|a, b| b.path.len().cmp(&a.path.len()).then(a.path.cmp(&b.path)));
    let entries = routes
        .into_iter()
        .map(|route| {
            let of_target: Vec<&pb::ReplicaDesired> = state
                .replicas_desired()
                .filter(|r| r.deployment == route.deployment && r.service == route.service)
                .collect();
            let ready = of_target
                .iter()
                .filter(|r| {
                    state
                        .replica_observed(&r.id)
                        .is_some_and(|o| o.state() == pb::ReplicaState::Running)
                })
                .count();
            pb::RouteEntry {
                route: Some(route.clone()),
                catch_all: route.path == "/" || route.path.is_empty(),
                ready_replicas: u32::try_from(ready).unwrap_or(u32::MAX),
                total_replicas: u32::try_from(of_target.len()).unwrap_or(u32::MAX),
            }
        })
        .collect();
    Ok(pb::RouteDetail {
        domain: domain.to_owned(),
        entries,
        certificate: state.certificate(domain).map(certificate_summary),
    })
}

fn certificate_summary(c: &pb::Certificate) -> pb::CertificateSummary {
    pb::CertificateSummary {
        domain: c.domain.clone(),
        state: c.state,
        not_after_unix_ms: c.not_after_unix_ms,
        last_renewal_at_unix_ms: c.last_renewal_at_unix_ms,
        acme_directory_url: c.acme_directory_url.clone(),
        last_error_code: c.last_error_code.clone(),
        last_error_message: c.last_error_message.clone(),
    }
}

/// Masks every environment value in a spec's compose document and canonical service specs.
fn mask_spec(spec: &mut pb::DeploymentSpec) {
    spec.compose_yaml = mask_compose_document(&spec.compose_yaml);
    for service in &mut spec.services {
        if let Ok(mut value) =
            serde_json::from_str::<serde_json::Value>(&service.canonical_spec_json)
        {
            mask_environment(&mut value);
            service.canonical_spec_json = value.to_string();
        }
    }
}

/// The compose document as JSON with `services.*.environment` values masked. A document that
/// does not parse (it always does: it was validated at apply) is withheld entirely.
fn mask_compose_document(document: &str) -> String {
    let Ok(root) = crate::yaml::parse(document) else {
        return String::new();
    };
    let mut value = root.to_json();
    if let Some(services) = value.get_mut("services").and_then(|s| s.as_object_mut()) {
        for service in services.values_mut() {
            mask_environment(service);
        }
    }
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// Masks the values of an `environment` member (map or `KEY=value` list form).
fn mask_environment(service: &mut serde_json::Value) {
    use serde_json::Value;
    let Some(environment) = service.get_mut("environment") else {
        return;
    };
    match environment {
        Value::Object(map) => {
            for value in map.values_mut() {
                if !value.is_null() {
                    *value = Value::String(MASK.into());
                }
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                if let Some((key, _)) = item.as_str().and_then(|s| s.split_once('=')) {
                    *item = Value::String(format!("{key}={MASK}"));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::command::Kind;
    use crate::scheduler::plan::{Settings, reconcile};
    use crate::state::testkit::{Harness, apply_deployment, service};

    fn apply(h: &mut Harness, image: &str) {
        let spec = pb::DeploymentSpec {
            services: vec![service("web", image)],
            ..Default::default()
        };
        h.ok(apply_deployment("shop", spec));
        let plan = reconcile(&h.state, h.now, &Settings::default());
        h.ok_as("n1", Kind::SchedulerBatch(plan.batch));
    }

    #[test]
    fn a_serving_replica_that_a_rollout_replaces_shows_as_updating() {
        let mut h = Harness::initialised();
        h.ok(Kind::SetNodeStatus(pb::SetNodeStatus {
            node: "n1".into(),
            status: pb::NodeStatus::Ready.into(),
            ..Default::default()
        }));
        apply(&mut h, "web:1");
        h.ok(Kind::ReportReplicas(pb::ReportReplicas {
            node: "n1".into(),
            observations: vec![pb::ReplicaObserved {
                id: "shop-web-1".into(),
                state: pb::ReplicaState::Running.into(),
                ..Default::default()
            }],
        }));
        apply(&mut h, "web:2");
        let shown = status(&h.state, Some("shop"), None).unwrap().replicas;
        let state_of = |id: &str| {
            shown
                .iter()
                .find(|r| r.desired.as_ref().unwrap().id == id)
                .and_then(|r| r.observed.as_ref())
                .map(pb::ReplicaObserved::state)
        };
        assert_eq!(state_of("shop-web-1"), Some(pb::ReplicaState::Updating));
        assert_eq!(
            state_of("shop-web-2"),
            None,
            "the replacement is not observed yet"
        );
        let stored = h.state.replica_observed("shop-web-1").unwrap();
        assert_eq!(
            stored.state(),
            pb::ReplicaState::Running,
            "only the view changes"
        );
    }
}
