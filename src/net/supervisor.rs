//! The network supervisor: every member runs one. It keeps this node's isolation table, mesh,
//! DNS responders and L4 listeners in line with the replicated state (SPEC §7).
//!
//! At start it brings isolation up (Docker exemptions, the `inet jaco` table, the self-test
//! reading it back) and reports the result as the node's isolation condition: a failure makes
//! the node `isolation_unavailable` (audited by the state; the scheduler places nothing
//! there), a pass lets the leader mark a joining node `ready`. Then, on every state change
//! (debounced) and every `drift_check_ms`, it derives the [`view`] and hands each part to its
//! module; a table that someone else changed is re-applied and the repair audited as
//! `isolation_ruleset_reconciled` with the diff.
//!
//! All decisions about what the networking should be live in [`view`] and the submodules'
//! pure parts; this module sequences them and reports. It must not change the replicated
//! state except the node's isolation condition and status, and the audit of repairs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::dns::{
    Dns, DnsSettings, Listener, Zone, ZoneRecord, ZoneService, upstreams_from_resolv_conf,
};
use super::l4::{L4, Route};
use super::mesh::{Mesh, MeshKey, MeshMode, MeshSettings, peers};
use super::nft::{Nft, RulesetSpec, Scope, drift, ensure_docker_exemptions, self_test};
use super::view::{NetworkView, view};
use crate::api::auth::Identity;
use crate::daemon::config::{NetworkSettings, dns_forwarder};
use crate::daemon::member::Member;
use crate::error::{Code, Error};
use crate::proto::v1::{self as pb, EntityType};
use crate::state::WatchFilter;

/// Quiet time after a state change before the networking follows it (changes come in bursts).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// How long an L4 connection attempt to one replica may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the supervisor of `member` until `stop` turns true.
pub async fn run(
    member: Arc<Member>,
    settings: NetworkSettings,
    key: MeshKey,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = member.hub.subscribe(
        WatchFilter::types([
            EntityType::ClusterMeta,
            EntityType::Node,
            EntityType::Subnet,
            EntityType::ReplicaDesired,
            EntityType::ReplicaObserved,
            EntityType::TcpRoute,
        ]),
        0,
    );
    let mut supervisor = Supervisor::new(member, settings, key);
    let mut tick = tokio::time::interval(supervisor.drift_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first pass and every tick check everything; a state change only follows it.
    let mut checks = true;
    loop {
        supervisor.converge(checks).await;
        tokio::select! {
            _ = tick.tick() => checks = true,
            message = changes.recv() => {
                checks = false;
                if message.is_none() {
                    return;
                }
                // Let the burst finish, then take everything that queued up.
                tokio::time::sleep(DEBOUNCE).await;
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::ZERO, changes.recv()).await
                {}
            }
            _ = stop.changed() => return,
        }
    }
}

/// The supervisor's handles and what it last did.
struct Supervisor {
    member: Arc<Member>,
    settings: NetworkSettings,
    key: MeshKey,
    drift_every: Duration,
    nft: Nft,
    iptables: Vec<String>,
    dns: Dns,
    l4: L4,
    mesh: Option<Mesh>,
    /// The ruleset last applied successfully.
    applied: Option<RulesetSpec>,
    /// The isolation outcome last reported (None before the first).
    isolation: Option<Result<(), Error>>,
    /// This boot's id (`/proc/sys/kernel/random/boot_id`), stamped on the isolation condition
    /// so that a boot health gate never mistakes the previous boot's report for this one's.
    boot_id: String,
}

impl Supervisor {
    fn new(member: Arc<Member>, settings: NetworkSettings, key: MeshKey) -> Supervisor {
        let words = |command: &str| command.split_whitespace().map(str::to_owned).collect();
        let dns = Dns::new(DnsSettings {
            forwarders: forwarders(&settings),
            upstream_timeout: Duration::from_millis(settings.dns_upstream_timeout_ms),
            port: settings.dns_port,
        });
        Supervisor {
            drift_every: Duration::from_millis(settings.drift_check_ms),
            nft: Nft::new(words(&settings.nft_command)),
            iptables: words(&settings.iptables_command),
            dns,
            l4: L4::new(settings.l4_bind, CONNECT_TIMEOUT),
            mesh: None,
            applied: None,
            isolation: None,
            boot_id: boot_id(),
            member,
            settings,
            key,
        }
    }

    /// One pass: isolation, mesh, DNS, routes; `checks` adds the periodic checks of the
    /// isolation (Docker exemptions, drift).
    async fn converge(&mut self, checks: bool) {
        let node = self.member.name.clone();
        let Some(view) = self
            .member
            .read(|s| s.is_initialized().then(|| view(s, &node)))
        else {
            return;
        };
        let isolation = self.isolate(&view, checks).await;
        self.report_isolation(isolation).await;
        self.follow_mesh(&view).await;
        self.follow_dns(&view).await;
        self.follow_routes(&view).await;
    }

    /// Applies the ruleset when it changed; with `checks`, also re-asserts the Docker
    /// exemptions and repairs drift. The self-test runs after every apply. A state change that
    /// leaves the ruleset as it is costs nothing here (replica reports are frequent).
    async fn isolate(&mut self, view: &NetworkView, checks: bool) -> Result<(), Error> {
        let spec = ruleset(&self.settings.nft_table, view);
        let unchanged = self.applied.as_ref() == Some(&spec);
        if unchanged && !checks {
            return self.isolation.clone().unwrap_or(Ok(()));
        }
        if let Err(error) = ensure_docker_exemptions(&self.iptables, view.pool).await {
            // Without Docker's own rules (no Docker, no iptables) nothing needs exempting;
            // cross-node traffic breaks only where Docker's rules exist, so this is a warning.
            tracing::warn!(error = %error.render(true), "cannot ensure the Docker exemptions");
        }
        if unchanged {
            let observed = self.nft.read_back(&spec.table).await?;
            let Some(diff) = drift(&spec, observed.as_ref()) else {
                return Ok(());
            };
            tracing::warn!(%diff, "the isolation table drifted; re-applying it");
            self.apply(&spec).await?;
            self.audit_repair(&diff).await;
            return Ok(());
        }
        self.apply(&spec).await
    }

    async fn apply(&mut self, spec: &RulesetSpec) -> Result<(), Error> {
        self.applied = None;
        self.nft.apply(spec).await?;
        let observed = self.nft.read_back(&spec.table).await?.ok_or_else(|| {
            self_test_failed(format!("table inet {} is missing after apply", spec.table))
        })?;
        self_test(spec, &observed).map_err(self_test_failed)?;
        self.applied = Some(spec.clone());
        Ok(())
    }

    async fn audit_repair(&self, diff: &str) {
        let event = pb::AuditEvent {
            r#type: pb::AuditEventType::IsolationRulesetReconciled.into(),
            payload: [
                ("node".to_owned(), self.member.name.clone()),
                ("diff".to_owned(), diff.to_owned()),
            ]
            .into(),
            ..Default::default()
        };
        let kind = pb::command::Kind::AppendAudit(pb::AppendAudit {
            events: vec![event],
        });
        if let Err(error) = self.submit(kind).await {
            tracing::warn!(error = %error.render(true), "cannot audit the isolation repair");
        }
    }

    /// Reports the isolation outcome when it differs from what the state holds.
    async fn report_isolation(&mut self, outcome: Result<(), Error>) {
        let stored = self.member.read(|s| s.node(&self.member.name).cloned());
        let Some(stored) = stored else {
            return;
        };
        let stored_ok = stored
            .isolation
            .as_ref()
            .filter(|c| c.details.get(INSTANCE_DETAIL).map(String::as_str) == Some(instance_id()))
            .map(|c| c.ok);
        let status = stored.status();
        let in_line = match &outcome {
            Ok(()) => stored_ok == Some(true) && status != pb::NodeStatus::IsolationUnavailable,
            Err(_) => stored_ok == Some(false) && status == pb::NodeStatus::IsolationUnavailable,
        };
        let changed = self.isolation.as_ref().map(Result::is_ok) != Some(outcome.is_ok());
        if let Err(error) = &outcome
            && changed
        {
            tracing::error!(error = %error.render(true), "isolation is unavailable on this node");
        }
        self.isolation = Some(outcome.clone());
        if in_line {
            return;
        }
        let command = isolation_report(&stored, &outcome, &self.boot_id);
        if let Err(error) = self.submit(command).await {
            tracing::warn!(error = %error.render(true), "cannot report the isolation condition");
        }
    }

    async fn follow_mesh(&mut self, view: &NetworkView) {
        if self.mesh.is_none() {
            let Some(address) = view.mesh_address else {
                tracing::warn!("this node has no mesh address; the mesh stays down");
                return;
            };
            let settings = MeshSettings {
                interface: self.settings.wireguard_interface.clone(),
                listen_port: self.settings.wireguard_port,
                address,
                routes: vec![view.pool],
                mtu: u16::try_from(crate::runtime::plan::BRIDGE_MTU).unwrap_or(1420),
                mode: mesh_mode(&self.settings.wireguard_mode),
            };
            match super::mesh::start(settings, &self.key).await {
                Ok(mesh) => {
                    tracing::info!(implementation = mesh.implementation(), %address, "mesh up");
                    self.mesh = Some(mesh);
                }
                Err(error) => {
                    tracing::error!(error = %error.render(true), "cannot bring the mesh up");
                    return;
                }
            }
        }
        let Some(mesh) = &self.mesh else { return };
        if let Err(error) = mesh
            .set_peers(&peers(&self.member.name, &view.members))
            .await
        {
            tracing::warn!(error = %error.render(true), "cannot update the mesh peers");
        }
    }

    async fn follow_dns(&mut self, view: &NetworkView) {
        let records = view.healthy.iter().map(|r| ZoneRecord {
            deployment: r.deployment.clone(),
            network: r.network.clone(),
            service: r.service.clone(),
            address: r.address,
        });
        let services = (view.services.iter()).map(|(deployment, network, service)| ZoneService {
            deployment: deployment.clone(),
            network: network.clone(),
            service: service.clone(),
        });
        self.dns
            .set_zone(Zone::from_records(records).with_services(services));
        let listeners: Vec<Listener> = (view.bridges.iter())
            .map(|b| Listener {
                deployment: b.deployment.clone(),
                network: b.network.clone(),
                address: b.gateway,
            })
            .collect();
        for (address, error) in self.dns.set_listeners(&listeners).await {
            // The bridge appears when the agent creates its first replica; until then the
            // gateway address does not exist here.
            tracing::debug!(%address, error = %error.render(true), "DNS responder not bound yet");
        }
    }

    async fn follow_routes(&mut self, view: &NetworkView) {
        let routes = (view.tcp_routes.iter())
            .map(|t| Route {
                port: t.port,
                deployment: t.deployment.clone(),
                service: t.service.clone(),
                upstreams: t.upstreams.clone(),
                proxy_protocol: t.proxy_protocol,
            })
            .collect();
        for (port, error) in self.l4.set_routes(routes).await {
            tracing::warn!(port, error = %error.render(true), "cannot listen for an L4 route");
        }
    }

    async fn submit(&self, kind: pb::command::Kind) -> Result<(), Error> {
        let identity = Identity::Node(self.member.name.clone());
        self.member.submit(&identity, kind).await.map(drop)
    }
}

/// The ruleset of `view`: one scope per (deployment, network) with every node's /24 of it.
fn ruleset(table: &str, view: &NetworkView) -> RulesetSpec {
    RulesetSpec {
        table: table.to_owned(),
        scopes: (view.scopes.iter())
            .map(|((deployment, network), subnets)| Scope {
                deployment: deployment.clone(),
                network: network.clone(),
                subnets: subnets.clone(),
            })
            .collect(),
    }
}

fn self_test_failed(reason: String) -> Error {
    Error::new(
        Code::IsolationSelfTestFailed,
        format!("the isolation self-test failed: {reason}"),
    )
    .with("reason", reason)
}

/// The `SetNodeStatus` that records `outcome` for `node`: not ok → `isolation_unavailable`
/// with the error; ok → the condition, and `ready` again when it was `isolation_unavailable`
/// (a joining node is marked ready by the leader once it has also caught up).
/// The isolation condition's detail naming the boot that reported it.
pub const BOOT_ID_DETAIL: &str = "boot_id";

/// The isolation condition's detail naming the daemon process that reported it.
pub const INSTANCE_DETAIL: &str = "daemon_instance";

/// A random id of this daemon process, made on first use.
pub fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| crate::pki::hex(&rand::random::<[u8; 8]>()))
}

/// Whether `node`'s isolation condition was reported by this daemon process and is ok.
pub fn isolation_ok_here(node: &pb::Node) -> bool {
    node.isolation.as_ref().is_some_and(|c| {
        c.ok && c.details.get(INSTANCE_DETAIL).map(String::as_str) == Some(instance_id())
    })
}

/// This boot's id, or empty where the kernel does not say.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

fn isolation_report(
    node: &pb::Node,
    outcome: &Result<(), Error>,
    boot_id: &str,
) -> pb::command::Kind {
    let stamp = (BOOT_ID_DETAIL.to_owned(), boot_id.to_owned());
    let instance = (INSTANCE_DETAIL.to_owned(), instance_id().to_owned());
    let (status, status_details, condition) = match outcome {
        Ok(()) => {
            let status = (node.status() == pb::NodeStatus::IsolationUnavailable)
                .then_some(pb::NodeStatus::Ready);
            let details = if status.is_some() {
                Default::default()
            } else {
                node.status_details.clone()
            };
            let condition = pb::NodeCondition {
                ok: true,
                details: [stamp, instance].into(),
                ..Default::default()
            };
            (status, details, condition)
        }
        Err(error) => {
            // A failure to run nft at all is reported as the self-test failing too: the node
            // could not show that its table is in place. The error's own code and details
            // stay in the condition's details.
            let code = Code::IsolationSelfTestFailed;
            let details = [
                ("code".to_owned(), code.as_str().to_owned()),
                ("message".to_owned(), error.message.clone()),
            ]
            .into();
            let condition = pb::NodeCondition {
                ok: false,
                code: code.as_str().to_owned(),
                message: error.message.clone(),
                details: (error.details.clone().into_iter())
                    .chain([
                        ("error_code".to_owned(), error.code.as_str().to_owned()),
                        stamp,
                    ])
                    .collect(),
                ..Default::default()
            };
            (
                Some(pb::NodeStatus::IsolationUnavailable),
                details,
                condition,
            )
        }
    };
    pb::command::Kind::SetNodeStatus(pb::SetNodeStatus {
        node: node.name.clone(),
        status: status.map_or(0, i32::from),
        status_details,
        isolation: Some(condition),
        docker: None,
    })
}

fn mesh_mode(text: &str) -> MeshMode {
    match text {
        "kernel" => MeshMode::Kernel,
        "userspace" => MeshMode::Userspace,
        _ => MeshMode::Auto,
    }
}

/// The configured DNS upstreams, else the nameservers of /etc/resolv.conf that are not loops
/// back to Docker's resolver or to jaco's own gateways.
fn forwarders(settings: &NetworkSettings) -> Vec<SocketAddr> {
    if !settings.dns_forwarders.is_empty() {
        return (settings.dns_forwarders.iter())
            .filter_map(|f| dns_forwarder(f))
            .collect();
    }
    let pool = settings.ipam_pool.parse().ok();
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    upstreams_from_resolv_conf(&text, pool.as_slice())
}

/// `host:port` peers send this node's mesh traffic to: the configured endpoint, else the
/// advertise host with the mesh port.
pub fn mesh_endpoint(settings: &NetworkSettings, advertise: &str) -> String {
    settings.wireguard_endpoint.clone().unwrap_or_else(|| {
        let host = advertise.rsplit_once(':').map_or(advertise, |(h, _)| h);
        format!("{host}:{}", settings.wireguard_port)
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn node(status: pb::NodeStatus) -> pb::Node {
        pb::Node {
            name: "n1".into(),
            status: status.into(),
            status_details: [("reason".to_owned(), "x".to_owned())].into(),
            ..Default::default()
        }
    }

    fn status_of(kind: &pb::command::Kind) -> &pb::SetNodeStatus {
        match kind {
            pb::command::Kind::SetNodeStatus(s) => s,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_failed_self_test_makes_the_node_isolation_unavailable() {
        let error = self_test_failed("no drop rule".into());
        let kind = isolation_report(&node(pb::NodeStatus::Ready), &Err(error), "boot-1");
        let report = status_of(&kind);
        assert_eq!(report.status(), pb::NodeStatus::IsolationUnavailable);
        let condition = report.isolation.as_ref().unwrap();
        assert!(!condition.ok);
        assert_eq!(condition.details[BOOT_ID_DETAIL], "boot-1");
        assert_eq!(condition.code, "isolation_self_test_failed");
        assert!(condition.message.contains("no drop rule"));
        assert_eq!(report.status_details["code"], "isolation_self_test_failed");
    }

    #[test]
    fn a_pass_restores_ready_only_after_unavailable() {
        let kind = isolation_report(&node(pb::NodeStatus::IsolationUnavailable), &Ok(()), "b");
        let report = status_of(&kind);
        assert_eq!(report.status(), pb::NodeStatus::Ready);
        assert!(report.status_details.is_empty());
        assert!(report.isolation.as_ref().unwrap().ok);
        assert_eq!(
            report.isolation.as_ref().unwrap().details[BOOT_ID_DETAIL],
            "b"
        );
        // A joining node keeps its status (the leader marks it ready) and its details.
        let kind = isolation_report(&node(pb::NodeStatus::Joining), &Ok(()), "b");
        let report = status_of(&kind);
        assert_eq!(report.status, 0);
        assert_eq!(report.status_details["reason"], "x");
    }

    #[test]
    fn the_mesh_endpoint_defaults_to_the_advertise_host() {
        let mut settings = NetworkSettings::default();
        assert_eq!(mesh_endpoint(&settings, "10.0.0.5:7000"), "10.0.0.5:51820");
        assert_eq!(mesh_endpoint(&settings, "node-a:7000"), "node-a:51820");
        settings.wireguard_endpoint = Some("1.2.3.4:9".into());
        assert_eq!(mesh_endpoint(&settings, "node-a:7000"), "1.2.3.4:9");
    }

    #[test]
    fn forwarders_come_from_the_settings_when_given() {
        let settings = NetworkSettings {
            dns_forwarders: vec!["10.0.0.2".into(), "10.0.0.3:5353".into()],
            ..NetworkSettings::default()
        };
        assert_eq!(
            forwarders(&settings),
            [
                SocketAddr::from((Ipv4Addr::new(10, 0, 0, 2), 53)),
                SocketAddr::from((Ipv4Addr::new(10, 0, 0, 3), 5353)),
            ]
        );
    }
}
