//! The container runtime of a node: the [`Runtime`] trait every container engine is driven
//! through, and the pure decisions the node agent makes with it.
//!
//! The trait is the one seam between jaco and a container engine. It speaks jaco's own types
//! only — a [`ContainerPlan`] to run, an [`Inspection`] back, [`LogLine`]s, [`ExecOutput`]s —
//! so that the API can hold an `Arc<dyn Runtime>` for logs and exec, and a simulated engine can
//! stand in for Docker in benchmarks. Every method returns a boxed future or stream, which keeps
//! the trait dyn-compatible; futures borrow their arguments, streams own what they need
//! (`'static`) so they can outlive the call that opened them.
//!
//! Pure parts: how an inspected container maps to a replica state ([`observe`]) and when a
//! failed pull is retried ([`backoff`]). This module declares; it must not talk to Docker
//! itself.

pub mod agent;
pub mod backoff;
mod container;
pub mod credentials;
pub mod docker;
pub mod observe;
pub mod plan;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio_stream::Stream;

use crate::error::Error;
use crate::manifest::spec::ContainerSpec;
pub use observe::{Health, Inspection, Status};

/// A boxed future, as every [`Runtime`] method returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A boxed stream, as [`Runtime::events`], [`Runtime::logs`] and [`ExecSession`] carry.
pub type BoxStream<'a, T> = Pin<Box<dyn Stream<Item = T> + Send + 'a>>;

/// Label holding the cluster id on every object jaco creates (SPEC §6).
pub const LABEL_CLUSTER_ID: &str = "jaco.cluster_id";
/// Label holding the deployment name.
pub const LABEL_DEPLOYMENT: &str = "jaco.deployment";
/// Label holding the compose service name.
pub const LABEL_SERVICE: &str = "jaco.service";
/// Label holding the replica id.
pub const LABEL_REPLICA_ID: &str = "jaco.replica_id";
/// Label holding the spec hash the container was created from.
pub const LABEL_SPEC_HASH: &str = "jaco.spec_hash";
/// Label holding the deployment revision the container was created from.
pub const LABEL_REVISION: &str = "jaco.revision";
/// Label holding the replica's restart generation the container was created for.
pub const LABEL_RESTART_GENERATION: &str = "jaco.restart_generation";
/// Label holding the node that created the container (several test nodes may share one
/// engine; a node never touches another node's containers).
pub const LABEL_NODE: &str = "jaco.node";
/// Label holding the compose network name on a network jaco created.
pub const LABEL_NETWORK: &str = "jaco.network";
/// Label holding the compose volume name on a volume jaco created.
pub const LABEL_VOLUME: &str = "jaco.volume";

/// The name of a replica's container (SPEC §6).
pub fn container_name(replica_id: &str) -> String {
    format!("jaco_{replica_id}")
}

/// The container engine of one node.
///
/// Errors are [`crate::error::Code::DockerError`] with `details.reason`: `unreachable` when
/// the engine does not answer (the node's docker condition), and for pulls `image_not_found`,
/// `auth_failed`, `registry_unreachable` or `pull_failed`, so callers can branch on them.
/// Operations on a container that is already gone succeed (`stop`, `remove`) or say so
/// (`inspect` → `None`).
///
/// # Streams
/// - [`Runtime::events`] yields one [`ContainerEvent`] per engine event of the cluster's
///   containers until the engine connection breaks (then one `Err` and the end).
/// - [`Runtime::logs`] yields one [`LogLine`] per output line, oldest first, each with the
///   engine's timestamp and whether it came from stdout or stderr; without `follow` it ends
///   after the retained history, with `follow` when the container stops. Dropping a stream
///   cancels it.
/// - [`Runtime::exec`] returns an [`ExecSession`]: its `output` yields stdout/stderr chunks as
///   the process writes them and ends with exactly one [`ExecOutput::Exit`]; its `stdin`
///   (present when asked for) feeds the process, and shutting it down (or dropping it) closes
///   the process's stdin; [`Runtime::resize_exec`] resizes its TTY.
pub trait Runtime: Send + Sync {
    /// Pings the engine and returns its version and the negotiated API version.
    fn version(&self) -> BoxFuture<'_, Result<EngineVersion, Error>>;

    /// The id of `image` when the node has it, `None` when it does not.
    fn image_id<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<Option<String>, Error>>;

    /// Pulls `image`, authenticating with `auth` when given.
    fn pull<'a>(
        &'a self,
        image: &'a str,
        auth: Option<&'a RegistryAuth>,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Creates the container `plan` describes, attaches it to its networks and starts it;
    /// returns its id. A container that was created but could not start is removed again.
    fn run<'a>(&'a self, plan: &'a ContainerPlan) -> BoxFuture<'a, Result<String, Error>>;

    /// Stops a container (by id or name): its stop signal (the spec's `stop_signal`, recorded
    /// in the container at creation), then SIGKILL after `grace` — or after the container's own
    /// stop timeout (the spec's `stop_grace_period`) when `grace` is `None`.
    fn stop<'a>(
        &'a self,
        container: &'a str,
        grace: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Removes a container (by id or name) and its anonymous volumes, killing it if it runs.
    fn remove<'a>(&'a self, container: &'a str) -> BoxFuture<'a, Result<(), Error>>;

    /// Inspects a container by id or name; `None` when there is none.
    fn inspect<'a>(
        &'a self,
        container: &'a str,
    ) -> BoxFuture<'a, Result<Option<Inspection>, Error>>;

    /// Every container (running or not) labelled with `cluster_id`, inspected.
    fn containers<'a>(
        &'a self,
        cluster_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Inspection>, Error>>;

    /// The engine's events about containers labelled with `cluster_id`, from now on.
    fn events(&self, cluster_id: &str) -> BoxStream<'static, Result<ContainerEvent, Error>>;

    /// Creates the network `plan` names unless it exists.
    fn ensure_network<'a>(&'a self, plan: &'a NetworkPlan) -> BoxFuture<'a, Result<(), Error>>;

    /// Removes a network; succeeds when it does not exist.
    fn remove_network<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), Error>>;

    /// Every network labelled with `cluster_id`.
    fn networks<'a>(&'a self, cluster_id: &'a str) -> BoxFuture<'a, Result<Vec<Labelled>, Error>>;

    /// Creates the volume `plan` names unless it exists.
    fn ensure_volume<'a>(&'a self, plan: &'a VolumePlan) -> BoxFuture<'a, Result<(), Error>>;

    /// Whether a volume exists (external volumes must, and are never created).
    fn volume_exists<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, Error>>;

    /// Removes a volume; succeeds when it does not exist.
    fn remove_volume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), Error>>;

    /// Every volume labelled with `cluster_id`.
    fn volumes<'a>(&'a self, cluster_id: &'a str) -> BoxFuture<'a, Result<Vec<Labelled>, Error>>;

    /// The output of a container (by id or name), as [`LogLine`]s.
    fn logs(
        &self,
        container: &str,
        options: &LogOptions,
    ) -> BoxStream<'static, Result<LogLine, Error>>;

    /// Starts a command in a running container (by id or name).
    fn exec<'a>(
        &'a self,
        container: &'a str,
        spec: &'a ExecSpec,
    ) -> BoxFuture<'a, Result<ExecSession, Error>>;

    /// Resizes the TTY of a running exec session.
    fn resize_exec<'a>(
        &'a self,
        exec_id: &'a str,
        size: TerminalSize,
    ) -> BoxFuture<'a, Result<(), Error>>;
}

/// The engine's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineVersion {
    /// Engine release, e.g. `20.10.24`.
    pub version: String,
    /// The API version client and engine agreed on, e.g. `1.41`.
    pub api_version: String,
}

/// Registry credentials for one pull (the password never appears in `Debug` output).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// Registry host (`host[:port]`; `docker.io` for Docker Hub).
    pub server: String,
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Which replica a container belongs to, as its labels record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaIdentity {
    /// Cluster id.
    pub cluster_id: String,
    /// Deployment name.
    pub deployment: String,
    /// Compose service name.
    pub service: String,
    /// Replica id (`<deployment>-<service>-<index>`).
    pub replica_id: String,
    /// Spec hash the container was created from.
    pub spec_hash: String,
    /// Deployment revision the container was created from.
    pub revision: u64,
    /// The replica's restart generation the container was created for.
    pub restart_generation: u64,
    /// The node that created the container.
    pub node: String,
}

impl ReplicaIdentity {
    /// The identity of a container made for `desired` in cluster `cluster_id`.
    pub fn of(cluster_id: &str, desired: &crate::proto::v1::ReplicaDesired) -> ReplicaIdentity {
        ReplicaIdentity {
            cluster_id: cluster_id.to_owned(),
            deployment: desired.deployment.clone(),
            service: desired.service.clone(),
            replica_id: desired.id.clone(),
            spec_hash: desired.spec_hash.clone(),
            revision: desired.revision,
            restart_generation: desired.restart_generation,
            node: desired.node.clone(),
        }
    }

    /// The labels that record this identity on a container.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_CLUSTER_ID.to_owned(), self.cluster_id.clone()),
            (LABEL_DEPLOYMENT.to_owned(), self.deployment.clone()),
            (LABEL_SERVICE.to_owned(), self.service.clone()),
            (LABEL_REPLICA_ID.to_owned(), self.replica_id.clone()),
            (LABEL_SPEC_HASH.to_owned(), self.spec_hash.clone()),
            (LABEL_REVISION.to_owned(), self.revision.to_string()),
            (
                LABEL_RESTART_GENERATION.to_owned(),
                self.restart_generation.to_string(),
            ),
            (LABEL_NODE.to_owned(), self.node.clone()),
        ])
    }

    /// Reads an identity back from container labels; `None` unless every label is there.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<ReplicaIdentity> {
        let text = |key: &str| labels.get(key).cloned();
        let number = |key: &str| labels.get(key)?.parse().ok();
        Some(ReplicaIdentity {
            cluster_id: text(LABEL_CLUSTER_ID)?,
            deployment: text(LABEL_DEPLOYMENT)?,
            service: text(LABEL_SERVICE)?,
            replica_id: text(LABEL_REPLICA_ID)?,
            spec_hash: text(LABEL_SPEC_HASH)?,
            revision: number(LABEL_REVISION)?,
            restart_generation: number(LABEL_RESTART_GENERATION)?,
            node: text(LABEL_NODE)?,
        })
    }
}

/// Everything needed to create one replica's container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    /// Container name (`jaco_<replica id>`).
    pub name: String,
    /// The replica it runs.
    pub identity: ReplicaIdentity,
    /// The resolved compose service.
    pub spec: Arc<ContainerSpec>,
    /// Docker networks to attach to (empty with `network_mode`), the first one at creation.
    pub networks: Vec<NetworkAttachment>,
    /// Container names standing in for `service:<name>` in `network_mode`, `ipc` and `pid`,
    /// by service.
    pub peers: BTreeMap<String, String>,
    /// Docker volume names of the compose named volumes, by compose name.
    pub volumes: BTreeMap<String, String>,
    /// Secret and config files to bind-mount read-only.
    pub files: Vec<FileBind>,
    /// Name servers for the container when the compose service sets no `dns:`: the jaco
    /// responders on the gateways of its networks (SPEC §7).
    pub dns_servers: Vec<String>,
}

/// A container's attachment to one Docker network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAttachment {
    /// Docker network name.
    pub network: String,
    /// DNS names of the container on it.
    pub aliases: Vec<String>,
}

/// A host file bind-mounted read-only into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBind {
    /// Path on the node.
    pub source: PathBuf,
    /// Path in the container.
    pub target: String,
}

/// A Docker network to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    /// Network name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// No route out of the network.
    pub internal: bool,
    /// The /24 IPAM gave this (deployment, network) on this node, gateway `.1`; `None` lets
    /// Docker choose (only where no cluster allocation exists, e.g. runtime tests).
    pub subnet: Option<ipnet::Ipv4Net>,
    /// The Linux bridge name (within the 15-character limit).
    pub bridge: String,
}

/// A Docker volume to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePlan {
    /// Volume name.
    pub name: String,
    /// Volume driver (`local` when `None`).
    pub driver: Option<String>,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A network or volume and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// Something happened to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// The container.
    pub container_id: String,
    /// Its replica, from its labels.
    pub replica_id: Option<String>,
    /// The engine's action, e.g. `start`, `die`, `health_status: unhealthy`, `destroy`.
    pub action: String,
}

/// Which part of a container's output to stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new output until the container stops.
    pub follow: bool,
    /// Only lines at or after this time.
    pub since_unix_ms: Option<i64>,
    /// Only the last this many lines of the history.
    pub tail: Option<u32>,
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output (and a TTY container's whole output).
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Where it came from.
    pub stream: LogStream,
    /// The engine's timestamp of the line.
    pub time_unix_ms: i64,
    /// The line without its trailing newline (not necessarily UTF-8).
    pub line: Vec<u8>,
}

/// A command to run in a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    /// Command and arguments.
    pub command: Vec<String>,
    /// Extra environment, `KEY=value`.
    pub env: Vec<String>,
    /// User (`None`: the container's).
    pub user: Option<String>,
    /// Working directory (`None`: the container's).
    pub working_dir: Option<String>,
    /// Allocate a TTY (then stdout and stderr arrive merged as stdout).
    pub tty: bool,
    /// Attach stdin.
    pub stdin: bool,
    /// Initial TTY size.
    pub size: Option<TerminalSize>,
}

/// A TTY size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Columns.
    pub columns: u16,
    /// Rows.
    pub rows: u16,
}

/// A running command.
pub struct ExecSession {
    /// The engine's id of the session (for [`Runtime::resize_exec`]).
    pub id: String,
    /// Output chunks, then exactly one [`ExecOutput::Exit`].
    pub output: BoxStream<'static, Result<ExecOutput, Error>>,
    /// The process's stdin when [`ExecSpec::stdin`] was set; shut it down to close it.
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession")
            .field("id", &self.id)
            .field("stdin", &self.stdin.is_some())
            .finish_non_exhaustive()
    }
}

/// One item of an exec session's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    /// Bytes written to stdout (or the TTY).
    Stdout(Vec<u8>),
    /// Bytes written to stderr.
    Stderr(Vec<u8>),
    /// The process exited with this code (128 + signal number when killed by a signal).
    Exit(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trait_is_dyn_compatible() {
        let none: Option<Arc<dyn Runtime>> = None;
        assert!(none.is_none());
    }

    #[test]
    fn replica_identity_round_trips_through_labels() {
        let identity = ReplicaIdentity {
            cluster_id: "c1".into(),
            deployment: "shop".into(),
            service: "web".into(),
            replica_id: "shop-web-1".into(),
            spec_hash: "abc".into(),
            revision: 7,
            restart_generation: 2,
            node: "n1".into(),
        };
        let labels = identity.labels();
        assert_eq!(labels[LABEL_REPLICA_ID], "shop-web-1");
        assert_eq!(labels[LABEL_REVISION], "7");
        assert_eq!(ReplicaIdentity::from_labels(&labels), Some(identity));
        let mut partial = labels.clone();
        partial.remove(LABEL_SPEC_HASH);
        assert_eq!(ReplicaIdentity::from_labels(&partial), None);
        let mut garbled = labels;
        garbled.insert(LABEL_REVISION.into(), "seven".into());
        assert_eq!(ReplicaIdentity::from_labels(&garbled), None);
    }

    #[test]
    fn registry_passwords_stay_out_of_debug_output() {
        let auth = RegistryAuth {
            server: "registry.example.com".into(),
            username: "ci".into(),
            password: "hunter2".into(),
        };
        let shown = format!("{auth:?}");
        assert!(
            shown.contains("ci") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
