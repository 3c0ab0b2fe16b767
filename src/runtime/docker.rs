//! The [`Runtime`] on a Docker engine, through bollard (ADR 0015).
//!
//! The connection is made lazily on the first call and again after a failed attempt, so a
//! node whose engine is down at boot gets a runtime that starts working when the engine comes
//! up; the API version is negotiated on connection (the engine's when it is older than
//! bollard's). Every request has a deadline: [`REQUEST_TIMEOUT`] for ordinary calls, the grace
//! period plus that for a stop, [`PULL_TIMEOUT`] for a pull; a missed deadline is `unreachable`.
//!
//! Errors are `docker_error` with `details.reason` (see [`Runtime`]); the HTTP status of an
//! engine refusal is in `details.status`. This module translates between bollard and jaco's
//! types and must not decide anything: what to run and when belongs to the node agent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, EventMessage, HealthStatusEnum, Ipam,
    IpamConfig, NetworkConnectRequest, NetworkCreateRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions,
    ListNetworksOptions, ListVolumesOptions, LogsOptions, RemoveContainerOptions,
    RemoveVolumeOptions, StopContainerOptions,
};
use futures_util::{StreamExt as _, TryFutureExt as _, TryStreamExt as _};
use tokio::sync::{Mutex, OnceCell};

use super::container::create_request;
use super::{
    BoxFuture, BoxStream, ContainerEvent, ContainerPlan, EngineVersion, ExecOutput, ExecSession,
    ExecSpec, Health, Inspection, LABEL_CLUSTER_ID, LABEL_REPLICA_ID, Labelled, LogLine,
    LogOptions, LogStream, NetworkPlan, RegistryAuth, Runtime, Status, TerminalSize, VolumePlan,
};
use crate::error::{Code, Error};

/// Deadline of an ordinary engine request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Deadline of an image pull.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long a finished exec may take to report its exit code.
const EXEC_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Docker's default stop timeout, for containers that do not record one.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A Docker engine reached through its unix socket.
#[derive(Clone)]
pub struct Docker {
    socket: String,
    client: Arc<OnceCell<bollard::Docker>>,
    /// Serialises inspect-then-create of networks: engines before API 1.44 allow two
    /// networks of one name.
    network_lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docker")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Docker {
    /// A runtime for the engine at `socket` (`unix:///var/run/docker.sock` or a path); nothing
    /// is contacted yet.
    pub fn new(socket: &str) -> Docker {
        Docker {
            socket: socket.trim_start_matches("unix://").to_owned(),
            client: Arc::new(OnceCell::new()),
            network_lock: Arc::new(Mutex::new(())),
        }
    }

    /// The connected client, connecting and negotiating the API version when needed.
    async fn client(&self) -> Result<&bollard::Docker, Error> {
        self.client
            .get_or_try_init(|| async {
                // bollard's own deadline is a backstop; `within` sets the real ones.
                let client = bollard::Docker::connect_with_unix(
                    &self.socket,
                    24 * 3600,
                    bollard::API_DEFAULT_VERSION,
                )
                .map_err(|e| failure("connecting to the Docker engine", e))?;
                within(REQUEST_TIMEOUT, "negotiating the API version", async {
                    client
                        .negotiate_version()
                        .await
                        .map_err(|e| failure("negotiating the API version", e))
                })
                .await
            })
            .await
    }
}

/// Runs `future` with a deadline; a missed deadline is an unreachable engine.
async fn within<T>(
    deadline: Duration,
    what: &str,
    future: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(deadline, future)
        .await
        .unwrap_or_else(|_| {
            Err(Error::new(
                Code::DockerError,
                format!("{what}: the Docker engine did not answer within {deadline:?}"),
            )
            .with("reason", "unreachable"))
        })
}

/// A bollard error as a `docker_error` with a reason.
fn failure(what: &str, error: bollard::errors::Error) -> Error {
    use bollard::errors::Error as E;
    let (reason, status, message) = match &error {
        E::DockerResponseServerError {
            status_code,
            message,
        } => (
            match status_code {
                404 => "not_found",
                409 => "conflict",
                _ => "refused",
            },
            Some(*status_code),
            message.clone(),
        ),
        E::DockerStreamError { error } => ("refused", None, error.clone()),
        E::SocketNotFoundError(_)
        | E::RequestTimeoutError
        | E::IOError { .. }
        | E::HyperResponseError { .. }
        | E::HyperLegacyError { .. } => ("unreachable", None, error.to_string()),
        _ => ("protocol", None, error.to_string()),
    };
    let error = Error::new(Code::DockerError, format!("{what}: {message}")).with("reason", reason);
    match status {
        Some(status) => error.with("status", status),
        None => error,
    }
}

/// A failed pull, with the reason a caller can branch on (an unreachable engine stays
/// `unreachable`).
fn pull_failure(what: &str, image: &str, error: bollard::errors::Error) -> Error {
    let status = match &error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    };
    let error = failure(what, error).with("image", image);
    if error.details["reason"] == "unreachable" {
        return error;
    }
    let reason = pull_reason(status, &error.message);
    error.with("reason", reason)
}

/// The create request of a jaco bridge: the allocated /24 with gateway `.1`, the named Linux
/// bridge and the mesh-sized MTU.
fn network_create_request(plan: &NetworkPlan) -> NetworkCreateRequest {
    let ipam = plan.subnet.map(|subnet| Ipam {
        config: Some(vec![IpamConfig {
            subnet: Some(subnet.to_string()),
            gateway: Some(super::plan::gateway(subnet).to_string()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    NetworkCreateRequest {
        name: plan.name.clone(),
        driver: Some("bridge".to_owned()),
        internal: Some(plan.internal),
        labels: Some(plan.labels.clone().into_iter().collect()),
        ipam,
        options: Some(
            [
                ("com.docker.network.bridge.name", plan.bridge.clone()),
                (
                    "com.docker.network.driver.mtu",
                    super::plan::BRIDGE_MTU.to_string(),
                ),
            ]
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
        ),
        ..Default::default()
    }
}

fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Why a pull failed, from the engine's status (when it refused at once) and message.
pub fn pull_reason(status: Option<u16>, message: &str) -> &'static str {
    let message = message.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| message.contains(n));
    if any(&[
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "incorrect username or password",
        "denied: ",
        "access forbidden",
    ]) {
        "auth_failed"
    } else if status == Some(404)
        || any(&[
            "manifest unknown",
            "not found",
            "repository does not exist",
            "name unknown",
        ])
    {
        "image_not_found"
    } else if any(&[
        "connection refused",
        "no such host",
        "i/o timeout",
        "tls handshake timeout",
        "server misbehaving",
        "network is unreachable",
        "dial tcp",
    ]) {
        "registry_unreachable"
    } else {
        "pull_failed"
    }
}

/// `image` with `:latest` when it names neither tag nor digest (the engine would pull every
/// tag otherwise).
fn tagged(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

fn label_filter(cluster_id: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_CLUSTER_ID}={cluster_id}")],
    )])
}

/// RFC 3339 (Docker's nanosecond form) to Unix milliseconds; `None` for Docker's zero time.
fn unix_ms(text: &str) -> Option<i64> {
    let time =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let ms = (time.unix_timestamp_nanos() / 1_000_000) as i64;
    (ms > 0).then_some(ms)
}

/// An inspection from Docker's inspect response.
fn inspection(response: ContainerInspectResponse) -> Inspection {
    let state = response.state.unwrap_or_default();
    let exit_code = state.exit_code.unwrap_or(0);
    let status = match state.status {
        Some(ContainerStateStatusEnum::CREATED) => Status::Created,
        Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::PAUSED) => {
            Status::Running
        }
        Some(ContainerStateStatusEnum::RESTARTING) => Status::Restarting,
        Some(ContainerStateStatusEnum::DEAD) => Status::Dead,
        _ => Status::Exited(exit_code),
    };
    let health = match state.health.and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::None,
    };
    let labels = (response.config.and_then(|c| c.labels))
        .unwrap_or_default()
        .into_iter()
        .collect();
    let addresses = (response.network_settings.and_then(|n| n.networks))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(network, endpoint)| {
            let ip = endpoint.ip_address.filter(|ip| !ip.is_empty())?;
            Some((network, ip))
        })
        .collect();
    Inspection {
        container_id: response.id.unwrap_or_default(),
        name: (response.name.unwrap_or_default())
            .trim_start_matches('/')
            .to_owned(),
        status,
        health,
        labels,
        started_at_unix_ms: state.started_at.as_deref().and_then(unix_ms).unwrap_or(0),
        image_id: response.image.unwrap_or_default(),
        addresses,
    }
}

/// One engine log message (with its timestamp prefix) as a [`LogLine`].
fn log_line(output: LogOutput) -> Option<LogLine> {
    let stream = match output {
        LogOutput::StdErr { .. } => LogStream::Stderr,
        LogOutput::StdOut { .. } | LogOutput::Console { .. } => LogStream::Stdout,
        LogOutput::StdIn { .. } => return None,
    };
    let bytes = output.into_bytes();
    let split = bytes.iter().position(|b| *b == b' ').unwrap_or(bytes.len());
    let time_unix_ms = std::str::from_utf8(&bytes[..split])
        .ok()
        .and_then(unix_ms)
        .unwrap_or(0);
    let mut line = bytes.get(split + 1..).unwrap_or_default().to_vec();
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Some(LogLine {
        stream,
        time_unix_ms,
        line,
    })
}

fn labelled(name: String, labels: Option<HashMap<String, String>>) -> Labelled {
    Labelled {
        name,
        labels: labels.unwrap_or_default().into_iter().collect(),
    }
}

impl Runtime for Docker {
    fn version(&self) -> BoxFuture<'_, Result<EngineVersion, Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let version = within(REQUEST_TIMEOUT, "reading the engine version", async {
                client
                    .version()
                    .await
                    .map_err(|e| failure("reading the engine version", e))
            })
            .await?;
            Ok(EngineVersion {
                version: version.version.unwrap_or_default(),
                api_version: client.client_version().to_string(),
            })
        })
    }

    fn image_id<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<Option<String>, Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            within(REQUEST_TIMEOUT, "inspecting an image", async {
                match client.inspect_image(image).await {
                    Ok(found) => Ok(Some(found.id.unwrap_or_default())),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(failure(&format!("inspecting image {image}"), e)),
                }
            })
            .await
        })
    }

    fn pull<'a>(
        &'a self,
        image: &'a str,
        auth: Option<&'a RegistryAuth>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let options = CreateImageOptions {
                from_image: Some(tagged(image)),
                ..Default::default()
            };
            let credentials = auth.map(|auth| bollard::auth::DockerCredentials {
                username: Some(auth.username.clone()),
                password: Some(auth.password.clone()),
                serveraddress: Some(auth.server.clone()),
                ..Default::default()
            });
            let what = format!("pulling {image}");
            let pulled = tokio::time::timeout(PULL_TIMEOUT, async {
                let mut progress = client.create_image(Some(options), None, credentials);
                while let Some(step) = progress.next().await {
                    step.map_err(|e| pull_failure(&what, image, e))?;
                }
                Ok(())
            })
            .await;
            pulled.unwrap_or_else(|_| {
                Err(Error::new(
                    Code::DockerError,
                    format!("{what}: not finished after {PULL_TIMEOUT:?}"),
                )
                .with("reason", "pull_failed")
                .with("image", image))
            })
        })
    }

    fn run<'a>(&'a self, plan: &'a ContainerPlan) -> BoxFuture<'a, Result<String, Error>> {
        Box::pin(async move {
            let request = create_request(plan)?;
            let client = self.client().await?;
            let what = format!("creating container {}", request.name);
            let created = within(REQUEST_TIMEOUT, &what, async {
                let options = CreateContainerOptions {
                    name: Some(request.name.clone()),
                    platform: request.platform.clone().unwrap_or_default(),
                };
                client
                    .create_container(Some(options), request.body.clone())
                    .await
                    .map_err(|e| failure(&what, e))
            })
            .await?;
            let id = created.id;
            let started = within(REQUEST_TIMEOUT, "starting the container", async {
                for (network, endpoint) in &request.more_networks {
                    let connect = NetworkConnectRequest {
                        container: id.clone(),
                        endpoint_config: Some(endpoint.clone()),
                    };
                    client
                        .connect_network(network, connect)
                        .await
                        .map_err(|e| failure(&format!("attaching to network {network}"), e))?;
                }
                client
                    .start_container(&id, None)
                    .await
                    .map_err(|e| failure(&format!("starting container {}", request.name), e))
            })
            .await;
            if let Err(error) = started {
                // Best effort: a created container that never ran is of no use to anyone.
                let _ = self.remove(&id).await;
                return Err(error);
            }
            Ok(id)
        })
    }

    fn stop<'a>(
        &'a self,
        container: &'a str,
        grace: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let recorded = match grace {
                Some(grace) => grace,
                None => match self.inspect_raw(container).await? {
                    None => return Ok(()),
                    Some(found) => found
                        .config
                        .and_then(|c| c.stop_timeout)
                        .map_or(DEFAULT_STOP_TIMEOUT, |s| {
                            Duration::from_secs(s.max(0) as u64)
                        }),
                },
            };
            let options = StopContainerOptions {
                t: grace.map(|g| g.as_secs_f64().ceil() as i32),
                signal: None,
            };
            let what = format!("stopping container {container}");
            within(recorded + REQUEST_TIMEOUT, &what, async {
                match client.stop_container(container, Some(options)).await {
                    Err(e) if !is_not_found(&e) => Err(failure(&what, e)),
                    _ => Ok(()),
                }
            })
            .await
        })
    }

    fn remove<'a>(&'a self, container: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let what = format!("removing container {container}");
            within(REQUEST_TIMEOUT, &what, async {
                let options = RemoveContainerOptions {
                    v: true,
                    force: true,
                    link: false,
                };
                match client.remove_container(container, Some(options)).await {
                    Err(e) if !is_not_found(&e) => Err(failure(&what, e)),
                    _ => Ok(()),
                }
            })
            .await
        })
    }

    fn inspect<'a>(
        &'a self,
        container: &'a str,
    ) -> BoxFuture<'a, Result<Option<Inspection>, Error>> {
        Box::pin(async move { Ok(self.inspect_raw(container).await?.map(inspection)) })
    }

    fn containers<'a>(
        &'a self,
        cluster_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Inspection>, Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let listed = within(REQUEST_TIMEOUT, "listing containers", async {
                let options = ListContainersOptions {
                    all: true,
                    filters: Some(label_filter(cluster_id)),
                    ..Default::default()
                };
                client
                    .list_containers(Some(options))
                    .await
                    .map_err(|e| failure("listing containers", e))
            })
            .await?;
            let mut found = Vec::new();
            for summary in listed {
                let Some(id) = summary.id else { continue };
                // A container removed between the list and its inspection is simply gone.
                if let Some(inspected) = self.inspect(&id).await? {
                    found.push(inspected);
                }
            }
            Ok(found)
        })
    }

    fn events(&self, cluster_id: &str) -> BoxStream<'static, Result<ContainerEvent, Error>> {
        let this = self.clone();
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "label".to_owned(),
                vec![format!("{LABEL_CLUSTER_ID}={cluster_id}")],
            ),
        ]);
        let events = async move {
            let client = this.client().await?.clone();
            let options = EventsOptions {
                filters: Some(filters),
                ..Default::default()
            };
            Ok::<_, Error>(
                client
                    .events(Some(options))
                    .map_err(|e| failure("following engine events", e)),
            )
        };
        Box::pin(events.try_flatten_stream().map_ok(|event: EventMessage| {
            let actor = event.actor.unwrap_or_default();
            ContainerEvent {
                container_id: actor.id.unwrap_or_default(),
                replica_id: actor
                    .attributes
                    .and_then(|mut a| a.remove(LABEL_REPLICA_ID)),
                action: event.action.unwrap_or_default(),
            }
        }))
    }

    fn ensure_network<'a>(&'a self, plan: &'a NetworkPlan) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let what = format!("creating network {}", plan.name);
            let _serial = self.network_lock.lock().await;
            within(REQUEST_TIMEOUT, &what, async {
                match client.inspect_network(&plan.name, None).await {
                    Ok(existing) => {
                        let subnet = (existing.ipam.as_ref())
                            .and_then(|ipam| ipam.config.as_ref()?.first()?.subnet.clone());
                        let wanted = plan.subnet.map(|s| s.to_string());
                        if wanted.is_none() || subnet == wanted {
                            return Ok(());
                        }
                        // Made before this node's allocation (an older jaco, or a released
                        // and reallocated subnet): replace it while nothing uses it.
                        if existing.containers.as_ref().is_some_and(|c| !c.is_empty()) {
                            return Err(Error::new(
                                Code::DockerError,
                                format!(
                                    "network {} has subnet {} but this node was allocated {}, \
                                     and containers still use it",
                                    plan.name,
                                    subnet.as_deref().unwrap_or("none"),
                                    wanted.as_deref().unwrap_or("none"),
                                ),
                            )
                            .with("reason", "subnet_mismatch")
                            .with("network", &plan.name));
                        }
                        match client.remove_network(&plan.name).await {
                            Err(e) if !is_not_found(&e) => return Err(failure(&what, e)),
                            _ => {}
                        }
                    }
                    Err(e) if !is_not_found(&e) => return Err(failure(&what, e)),
                    Err(_) => {}
                }
                let request = network_create_request(plan);
                client
                    .create_network(request)
                    .await
                    .map(drop)
                    .map_err(|e| failure(&what, e))
            })
            .await
        })
    }

    fn remove_network<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let what = format!("removing network {name}");
            within(REQUEST_TIMEOUT, &what, async {
                match client.remove_network(name).await {
                    Err(e) if !is_not_found(&e) => Err(failure(&what, e)),
                    _ => Ok(()),
                }
            })
            .await
        })
    }

    fn networks<'a>(&'a self, cluster_id: &'a str) -> BoxFuture<'a, Result<Vec<Labelled>, Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            within(REQUEST_TIMEOUT, "listing networks", async {
                let options = ListNetworksOptions {
                    filters: Some(label_filter(cluster_id)),
                };
                let networks = client
                    .list_networks(Some(options))
                    .await
                    .map_err(|e| failure("listing networks", e))?;
                Ok(networks
                    .into_iter()
                    .map(|n| labelled(n.name.unwrap_or_default(), n.labels))
                    .collect())
            })
            .await
        })
    }

    fn ensure_volume<'a>(&'a self, plan: &'a VolumePlan) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if self.volume_exists(&plan.name).await? {
                return Ok(());
            }
            let client = self.client().await?;
            let what = format!("creating volume {}", plan.name);
            within(REQUEST_TIMEOUT, &what, async {
                let request = VolumeCreateRequest {
                    name: Some(plan.name.clone()),
                    driver: plan.driver.clone(),
                    driver_opts: Some(plan.driver_opts.clone().into_iter().collect()),
                    labels: Some(plan.labels.clone().into_iter().collect()),
                    ..Default::default()
                };
                client
                    .create_volume(request)
                    .await
                    .map(drop)
                    .map_err(|e| failure(&what, e))
            })
            .await
        })
    }

    fn volume_exists<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let what = format!("inspecting volume {name}");
            within(REQUEST_TIMEOUT, &what, async {
                match client.inspect_volume(name).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_not_found(&e) => Ok(false),
                    Err(e) => Err(failure(&what, e)),
                }
            })
            .await
        })
    }

    fn remove_volume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let what = format!("removing volume {name}");
            within(REQUEST_TIMEOUT, &what, async {
                let options = RemoveVolumeOptions { force: false };
                match client.remove_volume(name, Some(options)).await {
                    Err(e) if !is_not_found(&e) => Err(failure(&what, e)),
                    _ => Ok(()),
                }
            })
            .await
        })
    }

    fn volumes<'a>(&'a self, cluster_id: &'a str) -> BoxFuture<'a, Result<Vec<Labelled>, Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            within(REQUEST_TIMEOUT, "listing volumes", async {
                let options = ListVolumesOptions {
                    filters: Some(label_filter(cluster_id)),
                };
                let listed = client
                    .list_volumes(Some(options))
                    .await
                    .map_err(|e| failure("listing volumes", e))?;
                Ok(listed
                    .volumes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| labelled(v.name, Some(v.labels)))
                    .collect())
            })
            .await
        })
    }

    fn logs(
        &self,
        container: &str,
        options: &LogOptions,
    ) -> BoxStream<'static, Result<LogLine, Error>> {
        let this = self.clone();
        let container = container.to_owned();
        let since_ms = options.since_unix_ms.unwrap_or(0);
        let query = LogsOptions {
            follow: options.follow,
            stdout: true,
            stderr: true,
            // The engine takes whole seconds; the exact bound is applied to each line below.
            since: i32::try_from(since_ms.div_euclid(1000)).unwrap_or(i32::MAX),
            until: 0,
            timestamps: true,
            tail: options
                .tail
                .map_or_else(|| "all".to_owned(), |n| n.to_string()),
        };
        let lines = async move {
            let client = this.client().await?.clone();
            let what = format!("reading the logs of {container}");
            Ok::<_, Error>(
                client
                    .logs(&container, Some(query))
                    .map_err(move |e| failure(&what, e)),
            )
        };
        Box::pin(
            lines
                .try_flatten_stream()
                .try_filter_map(|output| async move { Ok(log_line(output)) })
                .try_filter(move |line| {
                    std::future::ready(line.time_unix_ms == 0 || line.time_unix_ms >= since_ms)
                }),
        )
    }

    fn exec<'a>(
        &'a self,
        container: &'a str,
        spec: &'a ExecSpec,
    ) -> BoxFuture<'a, Result<ExecSession, Error>> {
        Box::pin(async move {
            let client = self.client().await?.clone();
            let what = format!("running a command in {container}");
            let created = within(REQUEST_TIMEOUT, &what, async {
                let options = CreateExecOptions::<String> {
                    attach_stdin: Some(spec.stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(spec.tty),
                    env: (!spec.env.is_empty()).then(|| spec.env.clone()),
                    cmd: Some(spec.command.clone()),
                    user: spec.user.clone(),
                    working_dir: spec.working_dir.clone(),
                    ..Default::default()
                };
                client
                    .create_exec(container, options)
                    .await
                    .map_err(|e| failure(&what, e))
            })
            .await?;
            let id = created.id;
            let started = within(REQUEST_TIMEOUT, &what, async {
                let options = StartExecOptions {
                    detach: false,
                    tty: spec.tty,
                    output_capacity: None,
                };
                client
                    .start_exec(&id, Some(options))
                    .await
                    .map_err(|e| failure(&what, e))
            })
            .await?;
            let StartExecResults::Attached { output, input } = started else {
                return Err(Error::new(
                    Code::DockerError,
                    format!("{what}: the engine did not attach to the command"),
                )
                .with("reason", "protocol"));
            };
            if let (true, Some(size)) = (spec.tty, spec.size) {
                self.resize_exec(&id, size).await?;
            }
            let chunks = output
                .map_err(|e| failure("reading command output", e))
                .try_filter_map(|chunk| async move {
                    Ok(match chunk {
                        LogOutput::StdErr { message } => Some(ExecOutput::Stderr(message.to_vec())),
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            Some(ExecOutput::Stdout(message.to_vec()))
                        }
                        LogOutput::StdIn { .. } => None,
                    })
                });
            let exit = futures_util::stream::once(exit_code(client, id.clone()));
            Ok(ExecSession {
                id,
                output: Box::pin(chunks.chain(exit)),
                stdin: spec.stdin.then_some(input),
            })
        })
    }

    fn resize_exec<'a>(
        &'a self,
        exec_id: &'a str,
        size: TerminalSize,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            within(REQUEST_TIMEOUT, "resizing the terminal", async {
                let options = ResizeExecOptions {
                    height: size.rows,
                    width: size.columns,
                };
                client
                    .resize_exec(exec_id, options)
                    .await
                    .map_err(|e| failure("resizing the terminal", e))
            })
            .await
        })
    }
}

impl Docker {
    async fn inspect_raw(
        &self,
        container: &str,
    ) -> Result<Option<ContainerInspectResponse>, Error> {
        let client = self.client().await?;
        let what = format!("inspecting container {container}");
        within(REQUEST_TIMEOUT, &what, async {
            match client.inspect_container(container, None).await {
                Ok(found) => Ok(Some(found)),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(failure(&what, e)),
            }
        })
        .await
    }
}

/// The exit code of a finished exec session; the engine may take a moment to record it after
/// the output ends.
async fn exit_code(client: bollard::Docker, id: String) -> Result<ExecOutput, Error> {
    within(
        EXEC_EXIT_TIMEOUT,
        "reading the command's exit code",
        async {
            loop {
                let inspected = client
                    .inspect_exec(&id)
                    .await
                    .map_err(|e| failure("reading the command's exit code", e))?;
                if inspected.running != Some(true)
                    && let Some(code) = inspected.exit_code
                {
                    return Ok(ExecOutput::Exit(code));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_failures_name_their_reason() {
        let cases = [
            (
                Some(404),
                "manifest for x:1 not found: manifest unknown",
                "image_not_found",
            ),
            (
                None,
                "manifest unknown: manifest unknown",
                "image_not_found",
            ),
            (
                Some(500),
                "Head \"http://127.0.0.1:5000/v2/x/manifests/1\": no basic auth credentials",
                "auth_failed",
            ),
            (
                Some(500),
                "unauthorized: authentication required",
                "auth_failed",
            ),
            (
                Some(500),
                "Get \"https://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused",
                "registry_unreachable",
            ),
            (
                None,
                "write /var/lib/docker/tmp: no space left on device",
                "pull_failed",
            ),
        ];
        for (status, message, reason) in cases {
            assert_eq!(pull_reason(status, message), reason, "{message}");
        }
    }

    #[test]
    fn references_without_tag_or_digest_pull_latest() {
        assert_eq!(tagged("busybox"), "busybox:latest");
        assert_eq!(tagged("busybox:1.36"), "busybox:1.36");
        assert_eq!(tagged("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(tagged("localhost:5000/app:v2"), "localhost:5000/app:v2");
        assert_eq!(tagged("app@sha256:00"), "app@sha256:00");
    }

    #[test]
    fn log_messages_split_into_time_stream_and_line() {
        let line = log_line(LogOutput::StdErr {
            message: "2026-11-27T01:18:20.123456789Z oops: disk\n".into(),
        })
        .unwrap();
        assert_eq!(line.stream, LogStream::Stderr);
        assert_eq!(line.time_unix_ms, 1_795_742_300_123);
        assert_eq!(line.line, b"oops: disk");
        let console = log_line(LogOutput::Console {
            message: "2026-11-27T01:18:20Z \n".into(),
        })
        .unwrap();
        assert_eq!((console.stream, console.line.len()), (LogStream::Stdout, 0));
        assert!(
            log_line(LogOutput::StdIn {
                message: "x".into()
            })
            .is_none()
        );
        assert_eq!(unix_ms("0001-01-01T00:00:00Z"), None);
    }
}
