//! How the deployment commands print what the `Deploy` service answers: serialisable views of
//! status, deployments, replicas, routes and diffs (the JSON/YAML interface) and their tables
//! and text (for people).
//!
//! Role: pure functions of API values. Contract (docs/cli.md, a stable interface for scripts):
//! `status -o json` is `{"deployments": [{"name", "revision", "status", "status_details", …}],
//! "replicas": [{"id", "deployment", "service", "node", "state", "code", "message",
//! "container_id", …}], …}`; enums are their short lowercase names, times RFC 3339 UTC, unset
//! values `null`. A replica the node has not reported yet has `"state": null`.
//!
//! This module must not call the daemon, read files or decide anything about convergence
//! ([`super::progress`] does); it must never print secret or config contents (the API does not
//! return them, and blob references are printed by name and kind only).

use std::collections::BTreeMap;

use serde::Serialize;

use super::output::table;
use super::view::{enum_name, key_values, time};
use crate::proto::v1 as pb;

/// `None` for an empty string.
fn text(value: &str) -> Option<String> {
    Some(value).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// `-` for an empty cell.
fn cell(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_owned()
}

// ---- status -------------------------------------------------------------------------------

/// `jaco status`: deployments, replicas, routes and certificates.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// Deployments, by name.
    pub deployments: Vec<DeploymentView>,
    /// Replicas, by id.
    pub replicas: Vec<ReplicaView>,
    /// HTTP(S) routes.
    pub routes: Vec<RouteView>,
    /// L4 routes.
    pub tcp_routes: Vec<TcpRouteView>,
    /// Certificates of the routes' domains.
    pub certificates: Vec<CertificateView>,
    /// State revision the answer was read at.
    pub revision: u64,
}

impl From<&pb::DeployStatusResponse> for StatusView {
    fn from(s: &pb::DeployStatusResponse) -> Self {
        StatusView {
            deployments: s.deployments.iter().map(DeploymentView::from).collect(),
            replicas: s.replicas.iter().map(ReplicaView::from).collect(),
            routes: s.routes.iter().map(RouteView::from).collect(),
            tcp_routes: s.tcp_routes.iter().map(TcpRouteView::from).collect(),
            certificates: s.certificates.iter().map(CertificateView::from).collect(),
            revision: s.revision,
        }
    }
}

impl StatusView {
    /// The sections that have something to show, separated by blank lines.
    pub fn text(&self) -> String {
        if self.deployments.is_empty() {
            return "no deployments\n".to_owned();
        }
        let mut sections = vec![deployment_table(&self.deployments)];
        if !self.replicas.is_empty() {
            sections.push(replica_table(&self.replicas));
        }
        let rollouts: Vec<&RolloutView> = self
            .deployments
            .iter()
            .flat_map(|d| d.services.iter().filter_map(|s| s.rollout.as_ref()))
            .filter(|r| r.state != "completed")
            .collect();
        if !rollouts.is_empty() {
            sections.push(rollout_table(&rollouts));
        }
        if !self.routes.is_empty() || !self.tcp_routes.is_empty() {
            sections.push(route_tables(&self.routes, &self.tcp_routes));
        }
        sections.join("\n")
    }
}

/// One deployment without its documents.
#[derive(Debug, Serialize)]
pub struct DeploymentView {
    /// Name.
    pub name: String,
    /// Current revision.
    pub revision: u64,
    /// Revision before it (0 = none).
    pub previous_revision: u64,
    /// `pending` or `active`.
    pub status: String,
    /// Why it is pending.
    pub status_details: BTreeMap<String, String>,
    /// Its services.
    pub services: Vec<ServiceView>,
    /// When first applied.
    pub created_at: Option<String>,
    /// When the current revision was applied.
    pub updated_at: Option<String>,
    /// Who applied it.
    pub updated_by: String,
}

impl From<&pb::DeploymentSummary> for DeploymentView {
    fn from(d: &pb::DeploymentSummary) -> Self {
        DeploymentView {
            name: d.name.clone(),
            revision: d.revision,
            previous_revision: d.previous_revision,
            status: enum_name::<pb::DeploymentStatus>(d.status),
            status_details: d.status_details.clone(),
            services: d.services.iter().map(ServiceView::from).collect(),
            created_at: time(d.created_at_unix_ms),
            updated_at: time(d.updated_at_unix_ms),
            updated_by: d.updated_by.clone(),
        }
    }
}

/// One service of a deployment.
#[derive(Debug, Serialize)]
pub struct ServiceView {
    /// Service name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Placement mode.
    pub placement: String,
    /// Replicas wanted.
    pub desired_replicas: u32,
    /// Replicas running.
    pub running_replicas: u32,
    /// Spec hash.
    pub spec_hash: String,
    /// Its rollout, when one is retained.
    pub rollout: Option<RolloutView>,
}

impl From<&pb::ServiceSummary> for ServiceView {
    fn from(s: &pb::ServiceSummary) -> Self {
        ServiceView {
            name: s.name.clone(),
            image: s.image.clone(),
            placement: enum_name::<pb::PlacementMode>(s.placement),
            desired_replicas: s.desired_replicas,
            running_replicas: s.running_replicas,
            spec_hash: s.spec_hash.clone(),
            rollout: s.rollout.as_ref().map(RolloutView::from),
        }
    }
}

/// A service's rolling update.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutView {
    /// Deployment.
    pub deployment: String,
    /// Service.
    pub service: String,
    /// `in_progress`, `completed` or `aborted`.
    pub state: String,
    /// Revision replaced.
    pub from_revision: u64,
    /// Revision rolled out.
    pub to_revision: u64,
    /// Steps done.
    pub steps_done: u32,
    /// Steps in total.
    pub steps_total: u32,
    /// Why it aborted or is held.
    pub reason: Option<String>,
    /// Context of the reason.
    pub details: BTreeMap<String, String>,
    /// Held by `failure_action: pause`.
    pub paused: bool,
    /// The previous spec was restored.
    pub rolled_back: bool,
    /// When it started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
}

impl From<&pb::Rollout> for RolloutView {
    fn from(r: &pb::Rollout) -> Self {
        RolloutView {
            deployment: r.deployment.clone(),
            service: r.service.clone(),
            state: enum_name::<pb::RolloutState>(r.state),
            from_revision: r.from_revision,
            to_revision: r.to_revision,
            steps_done: r.steps_done,
            steps_total: r.steps_total,
            reason: text(&r.reason),
            details: r.details.clone(),
            paused: r.paused,
            rolled_back: r.rolled_back,
            started_at: time(r.started_at_unix_ms),
            finished_at: time(r.finished_at_unix_ms),
        }
    }
}

/// One replica: the scheduler's record joined with the latest observation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaView {
    /// Replica id.
    pub id: String,
    /// Deployment.
    pub deployment: String,
    /// Service.
    pub service: String,
    /// Index within the service.
    pub index: u64,
    /// Node it is assigned to.
    pub node: String,
    /// Observed state; `null` before the node's first report.
    pub state: Option<String>,
    /// Error or observation code.
    pub code: Option<String>,
    /// Human explanation.
    pub message: Option<String>,
    /// Structured context (attempt, next_retry_at, exit_code, …).
    pub details: BTreeMap<String, String>,
    /// Docker container id.
    pub container_id: Option<String>,
    /// Image.
    pub image: String,
    /// Spec hash it must run.
    pub spec_hash: String,
    /// Deployment revision it runs.
    pub revision: u64,
    /// Consecutive restarts without reaching running.
    pub restart_count: u32,
    /// When the container last started.
    pub started_at: Option<String>,
    /// When it was last seen healthy.
    pub last_health_at: Option<String>,
    /// When the observation was made.
    pub observed_at: Option<String>,
    /// Replica this one replaces.
    pub replaces: Option<String>,
}

impl From<&pb::Replica> for ReplicaView {
    fn from(r: &pb::Replica) -> Self {
        let desired = r.desired.clone().unwrap_or_default();
        let observed = r.observed.as_ref();
        let observed_text = |f: fn(&pb::ReplicaObserved) -> &str| observed.and_then(|o| text(f(o)));
        let observed_time = |f: fn(&pb::ReplicaObserved) -> i64| observed.and_then(|o| time(f(o)));
        ReplicaView {
            state: observed.map(|o| enum_name::<pb::ReplicaState>(o.state)),
            code: observed_text(|o| &o.code),
            message: observed_text(|o| &o.message),
            details: observed.map(|o| o.details.clone()).unwrap_or_default(),
            container_id: observed_text(|o| &o.container_id),
            restart_count: observed.map_or(0, |o| o.restart_count),
            started_at: observed_time(|o| o.started_at_unix_ms),
            last_health_at: observed_time(|o| o.last_health_at_unix_ms),
            observed_at: observed_time(|o| o.observed_at_unix_ms),
            replaces: text(&desired.replaces),
            id: desired.id,
            deployment: desired.deployment,
            service: desired.service,
            index: desired.index,
            node: desired.node,
            image: desired.image,
            spec_hash: desired.spec_hash,
            revision: desired.revision,
        }
    }
}

impl ReplicaView {
    /// `code: message`, either part alone, or `-`.
    pub fn explanation(&self) -> String {
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(only), None) | (None, Some(only)) => only.clone(),
            (None, None) => "-".to_owned(),
        }
    }
}

/// A container id as tables show it (12 characters, like docker).
fn short_id(id: Option<&str>) -> String {
    id.map_or_else(|| "-".to_owned(), |id| id.chars().take(12).collect())
}

/// `REPLICA NODE STATE REVISION RESTARTS CONTAINER MESSAGE`.
pub fn replica_table(replicas: &[ReplicaView]) -> String {
    let rows: Vec<Vec<String>> = replicas
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.node.clone(),
                cell(r.state.as_deref()),
                r.revision.to_string(),
                r.restart_count.to_string(),
                short_id(r.container_id.as_deref()),
                r.explanation(),
            ]
        })
        .collect();
    table(
        &[
            "REPLICA",
            "NODE",
            "STATE",
            "REVISION",
            "RESTARTS",
            "CONTAINER",
            "MESSAGE",
        ],
        &rows,
    )
}

/// `DEPLOYMENT REVISION STATUS SERVICES UPDATED DETAILS`, services as `name running/desired`.
pub fn deployment_table(deployments: &[DeploymentView]) -> String {
    let rows: Vec<Vec<String>> = deployments
        .iter()
        .map(|d| {
            let services: Vec<String> = d
                .services
                .iter()
                .map(|s| format!("{} {}/{}", s.name, s.running_replicas, s.desired_replicas))
                .collect();
            vec![
                d.name.clone(),
                d.revision.to_string(),
                d.status.clone(),
                cell(Some(&services.join(", "))),
                cell(d.updated_at.as_deref()),
                cell(Some(&key_values(&d.status_details))),
            ]
        })
        .collect();
    table(
        &[
            "DEPLOYMENT",
            "REVISION",
            "STATUS",
            "SERVICES",
            "UPDATED",
            "DETAILS",
        ],
        &rows,
    )
}

fn rollout_table(rollouts: &[&RolloutView]) -> String {
    let rows: Vec<Vec<String>> = rollouts
        .iter()
        .map(|r| {
            let state = if r.paused {
                format!("{} (paused)", r.state)
            } else {
                r.state.clone()
            };
            vec![
                format!("{}/{}", r.deployment, r.service),
                state,
                format!("{} → {}", r.from_revision, r.to_revision),
                format!("{}/{}", r.steps_done, r.steps_total),
                match (r.reason.as_deref(), r.details.get("invariant_hold")) {
                    (None, Some(kept)) => {
                        format!("{kept} healthy old replica(s) serve until replacements are ready")
                    }
                    (reason, _) => cell(reason),
                },
            ]
        })
        .collect();
    table(&["ROLLOUT", "STATE", "REVISIONS", "STEPS", "REASON"], &rows)
}

// ---- routes -------------------------------------------------------------------------------

/// A public HTTP(S) route.
#[derive(Debug, Serialize)]
pub struct RouteView {
    /// Host name.
    pub domain: String,
    /// Path prefix.
    pub path: String,
    /// Owning deployment.
    pub deployment: String,
    /// Target service.
    pub service: String,
    /// Target container port.
    pub port: u32,
    /// `auto` or `off`.
    pub tls: String,
    /// Whether the prefix is removed before proxying.
    pub strip_path: bool,
}

impl From<&pb::Route> for RouteView {
    fn from(r: &pb::Route) -> Self {
        RouteView {
            domain: r.domain.clone(),
            path: r.path.clone(),
            deployment: r.deployment.clone(),
            service: r.service.clone(),
            port: r.port,
            tls: enum_name::<pb::TlsMode>(r.tls),
            strip_path: r.strip_path,
        }
    }
}

/// A cluster-wide L4 route.
#[derive(Debug, Serialize)]
pub struct TcpRouteView {
    /// Port every node listens on.
    pub published_port: u32,
    /// Owning deployment.
    pub deployment: String,
    /// Target service.
    pub service: String,
    /// Target container port.
    pub container_port: u32,
}

impl From<&pb::TcpRoute> for TcpRouteView {
    fn from(r: &pb::TcpRoute) -> Self {
        TcpRouteView {
            published_port: r.published_port,
            deployment: r.deployment.clone(),
            service: r.service.clone(),
            container_port: r.container_port,
        }
    }
}

/// A route's certificate, without key or chain.
#[derive(Debug, Serialize)]
pub struct CertificateView {
    /// Domain.
    pub domain: String,
    /// Lifecycle state.
    pub state: String,
    /// Validity end.
    pub not_after: Option<String>,
    /// Last issuance or renewal.
    pub last_renewal_at: Option<String>,
    /// Last failure code.
    pub last_error_code: Option<String>,
    /// Last failure message.
    pub last_error_message: Option<String>,
}

impl From<&pb::CertificateSummary> for CertificateView {
    fn from(c: &pb::CertificateSummary) -> Self {
        CertificateView {
            domain: c.domain.clone(),
            state: enum_name::<pb::CertificateState>(c.state),
            not_after: time(c.not_after_unix_ms),
            last_renewal_at: time(c.last_renewal_at_unix_ms),
            last_error_code: text(&c.last_error_code),
            last_error_message: text(&c.last_error_message),
        }
    }
}

/// `get routes`: HTTP(S) and L4 routes.
#[derive(Debug, Serialize)]
pub struct RoutesView {
    /// HTTP(S) routes.
    pub routes: Vec<RouteView>,
    /// L4 routes.
    pub tcp_routes: Vec<TcpRouteView>,
}

impl From<&pb::RouteList> for RoutesView {
    fn from(list: &pb::RouteList) -> Self {
        RoutesView {
            routes: list.routes.iter().map(RouteView::from).collect(),
            tcp_routes: list.tcp_routes.iter().map(TcpRouteView::from).collect(),
        }
    }
}

impl RoutesView {
    /// The route tables, or a line saying there are none.
    pub fn text(&self) -> String {
        if self.routes.is_empty() && self.tcp_routes.is_empty() {
            return "no routes\n".to_owned();
        }
        route_tables(&self.routes, &self.tcp_routes)
    }
}

fn route_tables(routes: &[RouteView], tcp_routes: &[TcpRouteView]) -> String {
    let mut sections = Vec::new();
    if !routes.is_empty() {
        let rows: Vec<Vec<String>> = routes
            .iter()
            .map(|r| {
                vec![
                    r.domain.clone(),
                    r.path.clone(),
                    format!("{}/{}", r.deployment, r.service),
                    r.port.to_string(),
                    r.tls.clone(),
                ]
            })
            .collect();
        sections.push(table(&["DOMAIN", "PATH", "SERVICE", "PORT", "TLS"], &rows));
    }
    if !tcp_routes.is_empty() {
        let rows: Vec<Vec<String>> = tcp_routes
            .iter()
            .map(|r| {
                vec![
                    r.published_port.to_string(),
                    format!("{}/{}", r.deployment, r.service),
                    r.container_port.to_string(),
                ]
            })
            .collect();
        sections.push(table(&["PORT", "SERVICE", "CONTAINER_PORT"], &rows));
    }
    sections.join("\n")
}

/// `get route DOMAIN`: the domain's routes in matching order with their ready upstreams.
#[derive(Debug, Serialize)]
pub struct RouteDetailView {
    /// Domain.
    pub domain: String,
    /// Routes, longest prefix first.
    pub entries: Vec<RouteEntryView>,
    /// Certificate (unset for tls: off).
    pub certificate: Option<CertificateView>,
}

/// One route of a domain.
#[derive(Debug, Serialize)]
pub struct RouteEntryView {
    /// The route.
    #[serde(flatten)]
    pub route: RouteView,
    /// The catch-all route.
    pub catch_all: bool,
    /// Replicas that would receive traffic now.
    pub ready_replicas: u32,
    /// Replicas of the target service.
    pub total_replicas: u32,
}

impl From<&pb::RouteDetail> for RouteDetailView {
    fn from(d: &pb::RouteDetail) -> Self {
        RouteDetailView {
            domain: d.domain.clone(),
            entries: d
                .entries
                .iter()
                .map(|e| RouteEntryView {
                    route: RouteView::from(&e.route.clone().unwrap_or_default()),
                    catch_all: e.catch_all,
                    ready_replicas: e.ready_replicas,
                    total_replicas: e.total_replicas,
                })
                .collect(),
            certificate: d.certificate.as_ref().map(CertificateView::from),
        }
    }
}

impl RouteDetailView {
    /// `PATH SERVICE PORT TLS READY`, then the certificate.
    pub fn text(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .entries
            .iter()
            .map(|e| {
                vec![
                    e.route.path.clone(),
                    format!("{}/{}", e.route.deployment, e.route.service),
                    e.route.port.to_string(),
                    e.route.tls.clone(),
                    format!("{}/{}", e.ready_replicas, e.total_replicas),
                ]
            })
            .collect();
        let mut out = format!("domain: {}\n", self.domain);
        out.push_str(&table(&["PATH", "SERVICE", "PORT", "TLS", "READY"], &rows));
        if let Some(c) = &self.certificate {
            out.push_str(&format!(
                "certificate: {} until {}{}\n",
                c.state,
                cell(c.not_after.as_deref()),
                c.last_error_code
                    .as_ref()
                    .map(|code| format!(" (last error {code})"))
                    .unwrap_or_default()
            ));
        }
        out
    }
}

// ---- get replica --------------------------------------------------------------------------

/// `get replica`: the replica and its dependency gates.
#[derive(Debug, Serialize)]
pub struct ReplicaDetailView {
    /// The replica.
    #[serde(flatten)]
    pub replica: ReplicaView,
    /// Its depends_on gates.
    pub gates: Vec<GateView>,
}

/// One depends_on condition and whether it holds.
#[derive(Debug, Serialize)]
pub struct GateView {
    /// Service depended on.
    pub service: String,
    /// `service_started` or `service_healthy`.
    pub condition: String,
    /// Best state among that service's replicas.
    pub state: String,
    /// Whether the condition holds.
    pub satisfied: bool,
}

impl From<&pb::ReplicaDetail> for ReplicaDetailView {
    fn from(d: &pb::ReplicaDetail) -> Self {
        ReplicaDetailView {
            replica: ReplicaView::from(&d.replica.clone().unwrap_or_default()),
            gates: d
                .gates
                .iter()
                .map(|g| GateView {
                    service: g.service.clone(),
                    condition: enum_name::<pb::DependencyCondition>(g.condition),
                    state: enum_name::<pb::ReplicaState>(g.state),
                    satisfied: g.satisfied,
                })
                .collect(),
        }
    }
}

impl ReplicaDetailView {
    /// `key: value` lines, then the gates.
    pub fn text(&self) -> String {
        let r = &self.replica;
        let lines = [
            ("replica", r.id.clone()),
            ("deployment", r.deployment.clone()),
            ("service", r.service.clone()),
            ("node", r.node.clone()),
            ("state", cell(r.state.as_deref())),
            ("code", cell(r.code.as_deref())),
            ("message", cell(r.message.as_deref())),
            ("details", cell(Some(&key_values(&r.details)))),
            ("image", r.image.clone()),
            ("revision", r.revision.to_string()),
            ("spec_hash", r.spec_hash.clone()),
            ("container", cell(r.container_id.as_deref())),
            ("restarts", r.restart_count.to_string()),
            ("started_at", cell(r.started_at.as_deref())),
            ("last_health_at", cell(r.last_health_at.as_deref())),
            ("observed_at", cell(r.observed_at.as_deref())),
            ("replaces", cell(r.replaces.as_deref())),
        ];
        let mut out: String = lines
            .iter()
            .map(|(key, value)| format!("{key}: {value}\n"))
            .collect();
        if !self.gates.is_empty() {
            let rows: Vec<Vec<String>> = self
                .gates
                .iter()
                .map(|g| {
                    vec![
                        g.service.clone(),
                        g.condition.clone(),
                        g.state.clone(),
                        if g.satisfied { "yes" } else { "no" }.to_owned(),
                    ]
                })
                .collect();
            out.push('\n');
            out.push_str(&table(
                &["DEPENDS_ON", "CONDITION", "STATE", "SATISFIED"],
                &rows,
            ));
        }
        out
    }
}

// ---- get deployment -----------------------------------------------------------------------

/// `get deployment`: one deployment at a revision, with its documents (environment values
/// masked by the daemon), services, history and rollouts.
#[derive(Debug, Serialize)]
pub struct DeploymentDetailView {
    /// Name.
    pub name: String,
    /// The revision shown.
    pub revision: u64,
    /// Revision before the current one.
    pub previous_revision: u64,
    /// `pending` or `active`.
    pub status: String,
    /// Why it is pending.
    pub status_details: BTreeMap<String, String>,
    /// When first applied.
    pub created_at: Option<String>,
    /// When the current revision was applied.
    pub updated_at: Option<String>,
    /// Who applied it.
    pub updated_by: String,
    /// True when environment values were masked.
    pub redacted: bool,
    /// The revision's spec.
    pub spec: SpecView,
    /// Retained revisions, newest first.
    pub revisions: Vec<RevisionView>,
    /// Rollouts of its services.
    pub rollouts: Vec<RolloutView>,
}

/// What a revision asks for.
#[derive(Debug, Serialize)]
pub struct SpecView {
    /// Services.
    pub services: Vec<ServiceSpecView>,
    /// HTTP(S) routes.
    pub routes: Vec<RouteView>,
    /// L4 routes.
    pub tcp_routes: Vec<TcpRouteView>,
    /// Secrets and configs used, by kind and name (never their contents).
    pub blobs: Vec<BlobView>,
    /// ACME on or off.
    pub acme: bool,
    /// ACME e-mail.
    pub acme_email: Option<String>,
    /// Enabled compose profiles.
    pub profiles: Vec<String>,
    /// jaco.yaml as applied.
    pub jaco_yaml: String,
    /// The resolved compose document (environment values masked unless shown on request).
    pub compose_yaml: String,
}

/// One service of a revision.
#[derive(Debug, Serialize)]
pub struct ServiceSpecView {
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Replicas wanted.
    pub replicas: u32,
    /// Placement mode.
    pub placement: String,
    /// Pinned hosts.
    pub hosts: Vec<String>,
    /// Spec hash.
    pub spec_hash: String,
    /// depends_on, as `{service, condition}`.
    pub depends_on: Vec<BTreeMap<String, String>>,
    /// Rolling-update policy.
    pub update: Option<UpdateView>,
    /// Admitted as privileged.
    pub privileged: bool,
    /// Has an enabled healthcheck.
    pub has_healthcheck: bool,
    /// The canonical resolved container spec (what the spec hash covers).
    pub spec: serde_json::Value,
}

/// A rolling-update policy.
#[derive(Debug, Serialize)]
pub struct UpdateView {
    /// Replicas replaced at once.
    pub parallelism: u32,
    /// `start_first` or `stop_first`.
    pub order: String,
    /// Monitor period, ms.
    pub monitor_ms: u64,
    /// Step timeout, ms.
    pub step_timeout_ms: u64,
    /// `rollback` or `pause`.
    pub failure_action: String,
    /// Pause between steps, ms.
    pub delay_ms: u64,
}

/// A secret or config a revision uses.
#[derive(Debug, Serialize)]
pub struct BlobView {
    /// `secret` or `config`.
    pub kind: String,
    /// Compose top-level name.
    pub name: String,
}

/// One retained revision.
#[derive(Debug, Serialize)]
pub struct RevisionView {
    /// Revision number.
    pub revision: u64,
    /// `apply` or `rollback`.
    pub origin: String,
    /// For a rollback, the revision restored.
    pub rolled_back_to: Option<u64>,
    /// When it was created.
    pub created_at: Option<String>,
    /// Who created it.
    pub created_by: String,
}

impl From<&pb::DeploymentDetail> for DeploymentDetailView {
    fn from(detail: &pb::DeploymentDetail) -> Self {
        let d = detail.deployment.clone().unwrap_or_default();
        let spec = d.spec.clone().unwrap_or_default();
        DeploymentDetailView {
            name: d.name.clone(),
            revision: d.revision,
            previous_revision: d.previous_revision,
            status: enum_name::<pb::DeploymentStatus>(d.status),
            status_details: d.status_details.clone(),
            created_at: time(d.created_at_unix_ms),
            updated_at: time(d.updated_at_unix_ms),
            updated_by: d.updated_by.clone(),
            redacted: detail.redacted,
            spec: SpecView {
                services: spec.services.iter().map(ServiceSpecView::from).collect(),
                routes: spec.routes.iter().map(RouteView::from).collect(),
                tcp_routes: spec.tcp_routes.iter().map(TcpRouteView::from).collect(),
                blobs: spec
                    .blobs
                    .iter()
                    .map(|b| BlobView {
                        kind: enum_name::<pb::BlobKind>(b.kind),
                        name: b.name.clone(),
                    })
                    .collect(),
                acme: spec.acme,
                acme_email: text(&spec.acme_email),
                profiles: spec.profiles.clone(),
                jaco_yaml: spec.jaco_yaml.clone(),
                compose_yaml: spec.compose_yaml.clone(),
            },
            revisions: detail
                .revisions
                .iter()
                .map(|r| RevisionView {
                    revision: r.revision,
                    origin: enum_name::<pb::RevisionOrigin>(r.origin),
                    rolled_back_to: Some(r.rolled_back_to).filter(|n| *n != 0),
                    created_at: time(r.created_at_unix_ms),
                    created_by: r.created_by.clone(),
                })
                .collect(),
            rollouts: detail.rollouts.iter().map(RolloutView::from).collect(),
        }
    }
}

impl From<&pb::ServiceSpec> for ServiceSpecView {
    fn from(s: &pb::ServiceSpec) -> Self {
        ServiceSpecView {
            name: s.name.clone(),
            image: s.image.clone(),
            replicas: s.replicas,
            placement: enum_name::<pb::PlacementMode>(s.placement),
            hosts: s.hosts.clone(),
            spec_hash: s.spec_hash.clone(),
            depends_on: s
                .depends_on
                .iter()
                .map(|d| {
                    BTreeMap::from([
                        ("service".to_owned(), d.service.clone()),
                        (
                            "condition".to_owned(),
                            enum_name::<pb::DependencyCondition>(d.condition),
                        ),
                    ])
                })
                .collect(),
            update: s.update.as_ref().map(|u| UpdateView {
                parallelism: u.parallelism,
                order: enum_name::<pb::UpdateOrder>(u.order),
                monitor_ms: u.monitor_ms,
                step_timeout_ms: u.step_timeout_ms,
                failure_action: enum_name::<pb::FailureAction>(u.failure_action),
                delay_ms: u.delay_ms,
            }),
            privileged: s.privileged,
            has_healthcheck: s.has_healthcheck,
            spec: serde_json::from_str(&s.canonical_spec_json)
                .unwrap_or_else(|_| serde_json::Value::String(s.canonical_spec_json.clone())),
        }
    }
}

impl DeploymentDetailView {
    /// A summary, the services, the routes and the history (the documents only in JSON/YAML).
    pub fn text(&self) -> String {
        let mut out = format!(
            "deployment: {}\nrevision: {}\nstatus: {}{}\nupdated: {} by {}\n",
            self.name,
            self.revision,
            self.status,
            if self.status_details.is_empty() {
                String::new()
            } else {
                format!(" ({})", key_values(&self.status_details))
            },
            cell(self.updated_at.as_deref()),
            self.updated_by
        );
        if !self.spec.blobs.is_empty() {
            let names: Vec<String> = self
                .spec
                .blobs
                .iter()
                .map(|b| format!("{} {}", b.kind, b.name))
                .collect();
            out.push_str(&format!("secrets and configs: {}\n", names.join(", ")));
        }
        let rows: Vec<Vec<String>> = self
            .spec
            .services
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.image.clone(),
                    if s.placement == "global" {
                        "global".to_owned()
                    } else {
                        s.replicas.to_string()
                    },
                    s.placement.clone(),
                    s.spec_hash.chars().take(12).collect(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["SERVICE", "IMAGE", "REPLICAS", "PLACEMENT", "SPEC"],
            &rows,
        ));
        if !self.spec.routes.is_empty() || !self.spec.tcp_routes.is_empty() {
            out.push('\n');
            out.push_str(&route_tables(&self.spec.routes, &self.spec.tcp_routes));
        }
        let rows: Vec<Vec<String>> = self
            .revisions
            .iter()
            .map(|r| {
                vec![
                    r.revision.to_string(),
                    match r.rolled_back_to {
                        Some(to) => format!("{} to {to}", r.origin),
                        None => r.origin.clone(),
                    },
                    cell(r.created_at.as_deref()),
                    r.created_by.clone(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["REVISION", "ORIGIN", "CREATED", "BY"], &rows));
        out
    }
}

// ---- diffs --------------------------------------------------------------------------------

/// What an apply or rollback changes (or, for a dry run, would change).
#[derive(Debug, Clone, Serialize)]
pub struct DiffView {
    /// The deployment did not exist.
    pub created: bool,
    /// Anything differs from the current revision.
    pub changed: bool,
    /// Per service.
    pub services: Vec<ServiceDiffView>,
    /// Per HTTP(S) route.
    pub routes: Vec<RouteDiffView>,
    /// Per L4 route.
    pub tcp_routes: Vec<RouteDiffView>,
    /// Per secret or config (content never shown).
    pub blobs: Vec<BlobDiffView>,
}

/// How one service changes.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceDiffView {
    /// Service name.
    pub service: String,
    /// `added`, `updated`, `removed` or `unchanged`.
    pub change: String,
    /// Aspects that changed.
    pub changed_fields: Vec<String>,
    /// Replicas before.
    pub from_replicas: u32,
    /// Replicas after.
    pub to_replicas: u32,
    /// Image before.
    pub from_image: Option<String>,
    /// Image after.
    pub to_image: Option<String>,
    /// Whether it starts a rolling update.
    pub starts_rollout: bool,
}

/// How one route changes: `route` is `domain/path → service:port` (or `port → service:port`).
#[derive(Debug, Clone, Serialize)]
pub struct RouteDiffView {
    /// `added`, `updated` or `removed`.
    pub change: String,
    /// The route after the change (the removed route for removals).
    pub route: String,
    /// The route before an update.
    pub previous: Option<String>,
}

/// How one secret or config changes.
#[derive(Debug, Clone, Serialize)]
pub struct BlobDiffView {
    /// `added`, `updated` or `removed`.
    pub change: String,
    /// `secret` or `config`.
    pub kind: String,
    /// Compose top-level name.
    pub name: String,
}

fn route_text(r: &pb::Route) -> String {
    format!(
        "{}{} → {}:{} (tls {})",
        r.domain,
        r.path,
        r.service,
        r.port,
        enum_name::<pb::TlsMode>(r.tls)
    )
}

fn tcp_route_text(r: &pb::TcpRoute) -> String {
    format!(
        "port {} → {}:{}",
        r.published_port, r.service, r.container_port
    )
}

impl From<&pb::DeploymentDiff> for DiffView {
    fn from(diff: &pb::DeploymentDiff) -> Self {
        DiffView {
            created: diff.created,
            changed: diff.changed,
            services: diff
                .services
                .iter()
                .map(|s| ServiceDiffView {
                    service: s.service.clone(),
                    change: enum_name::<pb::DiffKind>(s.kind),
                    changed_fields: s.changed_fields.clone(),
                    from_replicas: s.from_replicas,
                    to_replicas: s.to_replicas,
                    from_image: text(&s.from_image),
                    to_image: text(&s.to_image),
                    starts_rollout: s.starts_rollout,
                })
                .collect(),
            routes: diff
                .routes
                .iter()
                .map(|r| RouteDiffView {
                    change: enum_name::<pb::DiffKind>(r.kind),
                    route: r.route.as_ref().map(route_text).unwrap_or_default(),
                    previous: r.previous.as_ref().map(route_text),
                })
                .collect(),
            tcp_routes: diff
                .tcp_routes
                .iter()
                .map(|r| RouteDiffView {
                    change: enum_name::<pb::DiffKind>(r.kind),
                    route: r.route.as_ref().map(tcp_route_text).unwrap_or_default(),
                    previous: r.previous.as_ref().map(tcp_route_text),
                })
                .collect(),
            blobs: diff
                .blobs
                .iter()
                .map(|b| BlobDiffView {
                    change: enum_name::<pb::DiffKind>(b.kind),
                    kind: enum_name::<pb::BlobKind>(b.blob_kind),
                    name: b.name.clone(),
                })
                .collect(),
        }
    }
}

/// The sign of a change in diff text.
fn sign(change: &str) -> &'static str {
    match change {
        "added" => "+",
        "removed" => "-",
        "updated" => "~",
        _ => "=",
    }
}

fn replicas(n: u32) -> String {
    format!("{n} replica{}", if n == 1 { "" } else { "s" })
}

impl DiffView {
    /// One line per change, each starting with `+`, `~`, `-` or `=` (unchanged services).
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for s in &self.services {
            let detail = match s.change.as_str() {
                "added" => format!(
                    "{}, {}",
                    s.to_image.as_deref().unwrap_or("-"),
                    replicas(s.to_replicas)
                ),
                "removed" => format!("{} removed", replicas(s.from_replicas)),
                "updated" => {
                    let mut parts = Vec::new();
                    if s.from_image != s.to_image {
                        parts.push(format!(
                            "image {} → {}",
                            s.from_image.as_deref().unwrap_or("-"),
                            s.to_image.as_deref().unwrap_or("-")
                        ));
                    }
                    if s.from_replicas != s.to_replicas {
                        parts.push(format!("replicas {} → {}", s.from_replicas, s.to_replicas));
                    }
                    let others: Vec<&str> = s
                        .changed_fields
                        .iter()
                        .map(String::as_str)
                        .filter(|f| !matches!(*f, "image" | "replicas"))
                        .collect();
                    if !others.is_empty() {
                        parts.push(format!("changed: {}", others.join(", ")));
                    }
                    if s.starts_rollout {
                        parts.push("rolling update".to_owned());
                    }
                    parts.join("; ")
                }
                _ => "unchanged".to_owned(),
            };
            lines.push(format!(
                "{} service {}: {detail}",
                sign(&s.change),
                s.service
            ));
        }
        for (what, routes) in [("route", &self.routes), ("l4 route", &self.tcp_routes)] {
            for r in routes {
                let previous = r
                    .previous
                    .as_ref()
                    .map(|p| format!(" (was {p})"))
                    .unwrap_or_default();
                lines.push(format!("{} {what} {}{previous}", sign(&r.change), r.route));
            }
        }
        for b in &self.blobs {
            let note = if b.change == "updated" {
                " (content changed)"
            } else {
                ""
            };
            lines.push(format!("{} {} {}{note}", sign(&b.change), b.kind, b.name));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::{DataFormat, render};

    fn replica(id: &str, node: &str, state: Option<pb::ReplicaState>) -> pb::Replica {
        let mut parts = id.rsplitn(3, '-');
        let index = parts.next().unwrap_or("1").parse().unwrap_or(1);
        let service = parts.next().unwrap_or("web").to_owned();
        let deployment = parts.next().unwrap_or("shop").to_owned();
        pb::Replica {
            desired: Some(pb::ReplicaDesired {
                id: id.into(),
                deployment,
                service,
                index,
                node: node.into(),
                spec_hash: "ab".repeat(32),
                revision: 2,
                image: "nginx:1.27".into(),
                ..Default::default()
            }),
            observed: state.map(|state| pb::ReplicaObserved {
                id: id.into(),
                state: state.into(),
                container_id: "0123456789abcdef0123".into(),
                observed_at_unix_ms: 1_700_000_000_000,
                ..Default::default()
            }),
        }
    }

    fn status() -> pb::DeployStatusResponse {
        let mut failed = replica("shop-web-2", "n2", Some(pb::ReplicaState::Failed));
        if let Some(o) = failed.observed.as_mut() {
            o.code = "image_pull_failed".into();
            o.message = "manifest unknown".into();
            o.details.insert("attempt".into(), "10".into());
        }
        pb::DeployStatusResponse {
            deployments: vec![pb::DeploymentSummary {
                name: "shop".into(),
                revision: 2,
                previous_revision: 1,
                status: pb::DeploymentStatus::Pending.into(),
                status_details: [("reason".to_owned(), "converging".to_owned())].into(),
                services: vec![pb::ServiceSummary {
                    name: "web".into(),
                    image: "nginx:1.27".into(),
                    placement: pb::PlacementMode::Spread.into(),
                    desired_replicas: 2,
                    running_replicas: 1,
                    spec_hash: "ab".repeat(32),
                    rollout: None,
                }],
                updated_at_unix_ms: 1_700_000_000_000,
                updated_by: "local".into(),
                ..Default::default()
            }],
            replicas: vec![
                replica("shop-web-1", "n1", Some(pb::ReplicaState::Running)),
                failed,
                replica("shop-web-3", "n1", None),
            ],
            routes: vec![pb::Route {
                domain: "shop.example.com".into(),
                path: "/".into(),
                deployment: "shop".into(),
                service: "web".into(),
                port: 8080,
                tls: pb::TlsMode::Auto.into(),
                strip_path: false,
            }],
            revision: 42,
            ..Default::default()
        }
    }

    #[test]
    fn status_json_has_the_stable_shape() {
        let json: serde_json::Value =
            serde_json::from_str(&render(&StatusView::from(&status()), DataFormat::Json).unwrap())
                .unwrap();
        let d = &json["deployments"][0];
        assert_eq!(d["name"], "shop");
        assert_eq!(d["revision"], 2);
        assert_eq!(d["status"], "pending");
        assert_eq!(d["status_details"]["reason"], "converging");
        assert_eq!(d["updated_at"], "2023-11-14T22:13:20Z");
        let r = &json["replicas"][1];
        for (key, want) in [
            ("id", "shop-web-2"),
            ("deployment", "shop"),
            ("service", "web"),
            ("node", "n2"),
            ("state", "failed"),
            ("code", "image_pull_failed"),
            ("message", "manifest unknown"),
            ("container_id", "0123456789abcdef0123"),
        ] {
            assert_eq!(r[key], want, "{key}");
        }
        assert_eq!(r["details"]["attempt"], "10");
        let unobserved = &json["replicas"][2];
        assert_eq!(unobserved["state"], serde_json::Value::Null);
        assert_eq!(unobserved["container_id"], serde_json::Value::Null);
        assert_eq!(json["routes"][0]["tls"], "auto");
        assert_eq!(json["revision"], 42);
    }

    #[test]
    fn status_as_tables() {
        let text = StatusView::from(&status()).text();
        assert_eq!(
            text,
            "DEPLOYMENT  REVISION  STATUS   SERVICES  UPDATED               DETAILS\n\
             shop        2         pending  web 1/2   2023-11-14T22:13:20Z  reason=converging\n\
             \n\
             REPLICA     NODE  STATE    REVISION  RESTARTS  CONTAINER     MESSAGE\n\
             shop-web-1  n1    running  2         0         0123456789ab  -\n\
             shop-web-2  n2    failed   2         0         0123456789ab  image_pull_failed: manifest unknown\n\
             shop-web-3  n1    -        2         0         -             -\n\
             \n\
             DOMAIN            PATH  SERVICE   PORT  TLS\n\
             shop.example.com  /     shop/web  8080  auto\n"
        );
        let empty = StatusView::from(&pb::DeployStatusResponse::default()).text();
        assert_eq!(empty, "no deployments\n");
    }

    #[test]
    fn a_rollout_shows_its_steps_and_an_invariant_hold() {
        let mut s = status();
        s.deployments[0].services[0].rollout = Some(pb::Rollout {
            deployment: "shop".into(),
            service: "web".into(),
            state: pb::RolloutState::InProgress.into(),
            from_revision: 1,
            to_revision: 2,
            steps_done: 1,
            steps_total: 2,
            details: [("invariant_hold".to_owned(), "1".to_owned())].into(),
            ..Default::default()
        });
        let text = StatusView::from(&s).text();
        assert!(
            text.contains(
                "shop/web  in_progress  1 → 2      1/2    1 healthy old replica(s) serve until replacements are ready\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn diffs_read_as_signed_lines() {
        let diff = pb::DeploymentDiff {
            deployment: "shop".into(),
            created: false,
            changed: true,
            services: vec![
                pb::ServiceDiff {
                    service: "db".into(),
                    kind: pb::DiffKind::Added.into(),
                    to_replicas: 1,
                    to_image: "postgres:16".into(),
                    ..Default::default()
                },
                pb::ServiceDiff {
                    service: "old".into(),
                    kind: pb::DiffKind::Removed.into(),
                    from_replicas: 2,
                    ..Default::default()
                },
                pb::ServiceDiff {
                    service: "web".into(),
                    kind: pb::DiffKind::Updated.into(),
                    changed_fields: vec!["image".into(), "replicas".into(), "spec".into()],
                    from_replicas: 2,
                    to_replicas: 3,
                    from_image: "nginx:1.25".into(),
                    to_image: "nginx:1.27".into(),
                    starts_rollout: true,
                    ..Default::default()
                },
                pb::ServiceDiff {
                    service: "cache".into(),
                    kind: pb::DiffKind::Unchanged.into(),
                    ..Default::default()
                },
            ],
            routes: vec![pb::RouteDiff {
                kind: pb::DiffKind::Updated.into(),
                route: Some(pb::Route {
                    domain: "shop.example.com".into(),
                    path: "/".into(),
                    service: "web".into(),
                    port: 80,
                    tls: pb::TlsMode::Auto.into(),
                    ..Default::default()
                }),
                previous: Some(pb::Route {
                    domain: "shop.example.com".into(),
                    path: "/".into(),
                    service: "web".into(),
                    port: 8080,
                    tls: pb::TlsMode::Auto.into(),
                    ..Default::default()
                }),
            }],
            tcp_routes: vec![pb::TcpRouteDiff {
                kind: pb::DiffKind::Added.into(),
                route: Some(pb::TcpRoute {
                    published_port: 5432,
                    service: "db".into(),
                    container_port: 5432,
                    ..Default::default()
                }),
                previous: None,
            }],
            blobs: vec![pb::BlobDiff {
                kind: pb::DiffKind::Updated.into(),
                blob_kind: pb::BlobKind::Secret.into(),
                name: "db_password".into(),
            }],
        };
        assert_eq!(
            DiffView::from(&diff).lines(),
            [
                "+ service db: postgres:16, 1 replica",
                "- service old: 2 replicas removed",
                "~ service web: image nginx:1.25 → nginx:1.27; replicas 2 → 3; changed: spec; \
                 rolling update",
                "= service cache: unchanged",
                "~ route shop.example.com/ → web:80 (tls auto) (was shop.example.com/ → \
                 web:8080 (tls auto))",
                "+ l4 route port 5432 → db:5432",
                "~ secret db_password (content changed)",
            ]
        );
    }

    #[test]
    fn a_deployment_detail_never_carries_blob_contents() {
        let detail = pb::DeploymentDetail {
            deployment: Some(pb::Deployment {
                name: "shop".into(),
                revision: 3,
                spec: Some(pb::DeploymentSpec {
                    services: vec![pb::ServiceSpec {
                        name: "web".into(),
                        image: "nginx:1.27".into(),
                        replicas: 2,
                        canonical_spec_json: r#"{"image":"nginx:1.27"}"#.into(),
                        ..Default::default()
                    }],
                    blobs: vec![pb::BlobRef {
                        kind: pb::BlobKind::Secret.into(),
                        name: "db_password".into(),
                        sha256: "cd".repeat(32),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            redacted: true,
            revisions: vec![pb::RevisionSummary {
                revision: 3,
                origin: pb::RevisionOrigin::Rollback.into(),
                rolled_back_to: 1,
                ..Default::default()
            }],
            rollouts: vec![],
        };
        let view = DeploymentDetailView::from(&detail);
        let json = render(&view, DataFormat::Json).unwrap();
        assert!(!json.contains(&"cd".repeat(32)), "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["spec"]["services"][0]["spec"]["image"], "nginx:1.27");
        assert_eq!(value["spec"]["blobs"][0]["kind"], "secret");
        assert_eq!(value["revisions"][0]["rolled_back_to"], 1);
        let text = view.text();
        assert!(
            text.contains("secrets and configs: secret db_password\n"),
            "{text}"
        );
        assert!(text.contains("3         rollback to 1"), "{text}");
    }
}
