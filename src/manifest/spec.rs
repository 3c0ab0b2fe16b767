//! The resolved deployment model: what `jaco config` prints and what the daemon stores.
//!
//! Plain data with canonical forms (sorted maps, canonical durations and sizes), so that two
//! manifests that mean the same thing resolve to equal values and equal spec hashes
//! (SPEC §2.8). Building these values from documents is `compose.rs`' and `jaco_file.rs`' job;
//! this module must not parse anything.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The deployment-wide part of a resolved manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentSpec {
    /// Deployment name, unique in the cluster.
    pub name: String,
    /// Whether routes get ACME certificates unless they say `tls: off`.
    pub acme: bool,
    /// ACME contact address for this deployment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_email: Option<String>,
    /// Compose profiles enabled by jaco.yaml.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// HTTP(S) routes, sorted by domain then path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Cluster-wide L4 routes made from published TCP ports, sorted by port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<TcpRoute>,
    /// Networks of the deployment (always including `default` when a service uses it).
    pub networks: BTreeMap<String, NetworkSpec>,
    /// Named volumes of the deployment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// Secrets, by name; contents are never printed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, FileObject>,
    /// Configs, by name; contents are never printed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, FileObject>,
}

/// An HTTP(S) route from jaco.yaml.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Route {
    /// Host name served.
    pub domain: String,
    /// Path prefix; `/` is the catch-all.
    pub path: String,
    /// Target compose service.
    pub service: String,
    /// Container port of the target.
    pub port: u16,
    /// Whether the prefix is removed before forwarding.
    pub strip_path: bool,
    /// `auto` (ACME) or `off`.
    pub tls: TlsMode,
}

/// TLS handling of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Certificates by ACME; HTTP redirects to HTTPS.
    Auto,
    /// Plain HTTP only.
    Off,
}

/// A cluster-wide TCP route made from a published port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TcpRoute {
    /// Host port every node listens on.
    pub published_port: u16,
    /// Target compose service.
    pub service: String,
    /// Container port of the target.
    pub container_port: u16,
}

/// A deployment network.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NetworkSpec {
    /// Containers on an internal network get no route out of the cluster.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// Labels put on the docker network.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A named volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VolumeSpec {
    /// Literal docker volume name when set (`name:`), shared across deployments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The volume must already exist on the node.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// Volume driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Driver options.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A secret or config read by the CLI: its digest is public, its content is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileObject {
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: usize,
    /// The content; never serialised (status, get, config and logs must not show it).
    #[serde(skip)]
    pub content: Vec<u8>,
}

impl FileObject {
    /// Wraps content and computes its digest.
    pub fn new(content: Vec<u8>) -> Self {
        FileObject {
            sha256: hex(&Sha256::digest(&content)),
            size: content.len(),
            content,
        }
    }
}

/// One service of the deployment, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSpec {
    /// SHA-256 of the canonical [`ContainerSpec`]; changes replace the replicas.
    pub spec_hash: String,
    /// Desired replica count (0 for `placement: global`, which runs one per node).
    pub replicas: u32,
    /// Placement strategy.
    pub placement: Placement,
    /// Pinned hosts for `placement: hosts`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Rolling-update policy.
    pub update: UpdatePolicy,
    /// Start-order dependencies.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, Dependency>,
    /// What every replica's container runs.
    #[serde(flatten)]
    pub container: ContainerSpec,
}

/// Placement strategy (SPEC §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Distinct nodes while possible, stable.
    Spread,
    /// Fill nodes before using more.
    Pack,
    /// Only the listed hosts.
    Hosts,
    /// One replica per ready node.
    Global,
}

/// Rolling-update policy (SPEC §5.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdatePolicy {
    /// Replicas replaced at once.
    pub parallelism: u32,
    /// `start-first` or `stop-first`.
    pub order: UpdateOrder,
    /// How long a new replica must stay running before a step counts as done.
    pub monitor: String,
    /// How long a step may take before it fails.
    pub step_timeout: String,
    /// Pause between steps.
    pub delay: String,
    /// What a failed step does.
    pub failure_action: FailureAction,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            parallelism: 1,
            order: UpdateOrder::StartFirst,
            monitor: "5s".into(),
            step_timeout: "1m".into(),
            delay: "0s".into(),
            failure_action: FailureAction::Rollback,
        }
    }
}

/// Order of stop and start within an update step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UpdateOrder {
    /// The replacement starts before the old replica stops.
    #[serde(rename = "start-first")]
    StartFirst,
    /// The old replica stops before the replacement starts.
    #[serde(rename = "stop-first")]
    StopFirst,
}

/// What a failed update step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureAction {
    /// Restore the previous revision for the replicas already changed.
    Rollback,
    /// Hold the rollout.
    Pause,
}

/// A `depends_on` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    /// `service_started` or `service_healthy`.
    pub condition: DependencyCondition,
    /// Whether the dependency must exist (compose `required`).
    pub required: bool,
    /// Restart this service when the dependency is updated (compose `restart`).
    pub restart: bool,
}

/// A `depends_on` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencyCondition {
    /// A replica of the dependency is running or degraded somewhere.
    ServiceStarted,
    /// A replica of the dependency is running (healthy) somewhere.
    ServiceHealthy,
}

/// The container-level spec of a service; its canonical JSON is what the spec hash covers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[allow(missing_docs)] // field names are the compose keys they come from (docs/manifest.md)
pub struct ContainerSpec {
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    pub environment: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin_open: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Mount>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, NetworkAttachment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userns_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_cgroup_rules: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    #[serde(skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_period: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memswap_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_swappiness: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kill_disable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blkio_config: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_opt: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileMount>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileMount>,
}

/// A volume, bind or tmpfs mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// `volume`, `bind` or `tmpfs`.
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// Volume name or host path; absent for anonymous volumes and tmpfs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Path in the container.
    pub target: String,
    /// Mounted read-only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Further long-form options (`bind.propagation`, `volume.nocopy`, `tmpfs.size`, …).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, serde_json::Value>,
}

/// Kind of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// A docker volume (named or anonymous).
    Volume,
    /// A host path on the node.
    Bind,
    /// A memory file system.
    Tmpfs,
}

/// A port entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// Container port.
    pub target: u16,
    /// Host port when published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<u16>,
    /// Host address the port is bound to, when scoped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Where the entry was written: its text, line and column (for error messages only; not
    /// part of the spec or its hash).
    #[serde(skip)]
    pub written: Written,
}

/// The source text and position of a value, kept for error messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// The entry as written, e.g. `"80:80"`.
    pub text: String,
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1.
    pub column: usize,
}

/// A service's attachment to one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetworkAttachment {
    /// Extra DNS names of the service on this network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A container healthcheck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `["CMD", …]` or `["CMD-SHELL", "…"]`; empty keeps the image's own HEALTHCHECK command.
    pub test: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub start_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub start_interval: Option<String>,
}

/// A ulimit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ulimit {
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// Logging driver settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Logging {
    /// Driver name; docker's default when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Driver options.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// When to pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull when the node does not have the image (also compose `build`).
    Missing,
    /// Never pull; the image must be on the node.
    Never,
}

/// Resource limits and reservations (deploy.resources, or the flat keys).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resources {
    /// Hard limits.
    #[serde(skip_serializing_if = "ResourceValues::is_empty")]
    pub limits: ResourceValues,
    /// Reservations the scheduler must find room for.
    #[serde(skip_serializing_if = "ResourceValues::is_empty")]
    pub reservations: ResourceValues,
}

impl Resources {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty() && self.reservations.is_empty()
    }
}

/// CPU, memory, pids and devices of a limit or reservation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResourceValues {
    /// CPUs (fractional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Process count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// Device requests (e.g. GPUs), as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<serde_json::Value>,
}

impl ResourceValues {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.cpus.is_none()
            && self.memory.is_none()
            && self.pids.is_none()
            && self.devices.is_none()
    }
}

/// A secret or config mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileMount {
    /// Name of the top-level secret or config.
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// Owner uid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Owner gid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    /// File mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// SHA-256 of the content, so a content change changes the spec hash.
    pub sha256: String,
}

/// The SHA-256 (hex) over the canonical JSON of a container spec: object keys sorted, no
/// whitespace. Formatting, comments and key order of the source do not matter.
pub fn spec_hash(container: &ContainerSpec) -> String {
    hex(&Sha256::digest(canonical_json(container).as_bytes()))
}

/// The canonical JSON of a container spec (object keys sorted, no whitespace): what
/// [`spec_hash`] covers and what the replicated state records next to the hash.
pub fn canonical_json(container: &ContainerSpec) -> String {
    let value = serde_json::to_value(container).expect("container specs serialise");
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    canonical
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = serde_json::json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "x"}], "c": null}});
        let mut out = String::new();
        write_canonical(&value, &mut out);
        assert_eq!(out, r#"{"a":{"c":null,"d":[1,{"y":"x","z":0}]},"b":1}"#);
    }

    #[test]
    fn hash_is_hex_sha256_and_sensitive_to_values() {
        let mut spec = ContainerSpec {
            image: "nginx:1.27".into(),
            ..ContainerSpec::default()
        };
        let first = spec_hash(&spec);
        assert_eq!(first.len(), 64);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(spec_hash(&spec), first);
        spec.environment.insert("A".into(), "1".into());
        assert_ne!(spec_hash(&spec), first);
    }

    #[test]
    fn file_objects_hide_content() {
        let object = FileObject::new(b"hunter2".to_vec());
        let json = serde_json::to_string(&object).unwrap();
        assert!(!json.contains("hunter2"));
        assert_eq!(object.size, 7);
        assert_eq!(
            object.sha256,
            "f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7"
        );
    }
}
