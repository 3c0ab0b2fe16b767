//! The node agent: every member runs one. It owns the containers of the replicas the
//! scheduler placed on this node, and reports what they do (SPEC §6, contract of issue 4).
//!
//! A loop, woken by state changes, engine events, finished operations and a short tick:
//! gather the [`Facts`] from the replicated state (resolving each revision's documents once),
//! ask the pure [`Core`] for [`Action`]s, run each in its own task against the [`Runtime`], and
//! feed the [`Outcome`]s back. All decisions live in [`decide`]; this module reads state,
//! resolves specs, writes secret files, talks to the engine and submits commands, and must not
//! decide anything itself.
//!
//! Started by the daemon once the node is a member ([`run`]); it stops with the daemon and
//! leaves the containers running.

pub mod decide;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::StreamExt as _;

use self::decide::{
    Action, Core, Facts, ImageStep, Inventory, Outcome, Settings, Want, image_step,
};
use super::plan::{self, FileWrite, VolumeUse, container_name, files_dir};
use super::{Runtime, credentials};
use crate::api::auth::Identity;
use crate::daemon::config::RuntimeSettings;
use crate::daemon::member::Member;
use crate::error::{Code, Error};
use crate::manifest::spec::{FileObject, ServiceSpec};
use crate::manifest::{Objects, Resolved, resolve_documents};
use crate::proto::v1::{self as pb, EntityType, ReplicaState};
use crate::state::{State, WatchFilter};

/// How often the loop looks at the clock when nothing else wakes it.
const TICK: Duration = Duration::from_millis(250);

/// Pause before the engine's event stream is followed again after it ended.
const EVENTS_RETRY: Duration = Duration::from_secs(1);

/// Runs the agent of `member` on `runtime` until `stop` turns true.
pub async fn run(
    member: Arc<Member>,
    runtime: Arc<dyn Runtime>,
    settings: RuntimeSettings,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = member.hub.subscribe(
        WatchFilter::types([
            EntityType::ClusterMeta,
            EntityType::Node,
            EntityType::Deployment,
            EntityType::DeploymentRevision,
            EntityType::DeploymentTombstone,
            EntityType::ReplicaDesired,
            EntityType::ReplicaObserved,
        ]),
        0,
    );
    let cluster_id = loop {
        if let Some(id) = member.read(|s| s.cluster_meta().map(|m| m.cluster_id.clone())) {
            break id;
        }
        tokio::select! {
            message = changes.recv() => if message.is_none() { return },
            _ = stop.changed() => return,
        }
    };
    tracing::info!(node = %member.name, %cluster_id, "node agent started");
    let context = Arc::new(Context {
        member: member.clone(),
        runtime,
        cluster_id: cluster_id.clone(),
        secrets_dir: settings.secrets_dir.clone(),
    });
    let mut core = Core::new(Settings {
        node: member.name.clone(),
        cluster_id,
        pull_retry_budget: settings.pull_retry_budget,
    });
    let caught_up = Arc::new(AtomicBool::new(false));
    let mut background = JoinSet::new();
    background.spawn(catch_up(member.clone(), caught_up.clone()));
    let mut tasks = JoinSet::new();
    let (outcomes, mut finished) = mpsc::unbounded_channel();
    let mut revisions = Revisions::default();
    let mut events: Option<tokio::task::JoinHandle<()>> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let facts = revisions.gather(&member, now_ms(), caught_up.load(Ordering::Relaxed));
        for action in core.decide(&facts) {
            let revision = match &action {
                Action::Run { desired, .. } => revisions.get(&desired.deployment, desired.revision),
                _ => None,
            };
            let (context, outcomes) = (context.clone(), outcomes.clone());
            tasks.spawn(async move {
                let outcome = execute(&context, action, revision, &outcomes).await;
                let _ = outcomes.send(outcome);
            });
        }
        follow_events(&core, &context, &outcomes, &mut events);
        let engine_before = core.engine_answers();
        tokio::select! {
            Some(outcome) = finished.recv() => {
                log(&outcome);
                core.apply(outcome, now_ms());
                while let Ok(outcome) = finished.try_recv() {
                    log(&outcome);
                    core.apply(outcome, now_ms());
                }
            }
            message = changes.recv() => {
                if message.is_none() {
                    break;
                }
                while changes.try_recv().is_ok() {}
            }
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let socket = &settings.docker_socket;
        match (engine_before, core.engine_answers()) {
            (before, Some(true)) if before != Some(true) => {
                tracing::info!(%socket, "the Docker engine answers");
            }
            (before, Some(false)) if before != Some(false) => {
                let every_ms = decide::PING_EVERY_MS;
                tracing::warn!(%socket, every_ms, "the Docker engine does not answer; pinging it");
            }
            _ => {}
        }
        while tasks.try_join_next().is_some() {}
    }
    if let Some(events) = events {
        events.abort();
    }
    tasks.shutdown().await;
    background.shutdown().await;
}

/// What every action needs.
struct Context {
    member: Arc<Member>,
    runtime: Arc<dyn Runtime>,
    cluster_id: String,
    secrets_dir: PathBuf,
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    crate::pki::now_unix_ms()
}

/// Marks `caught_up` once a linearizable read succeeded: from then on the state this node
/// reads is at least as new as when the agent started, so removals are safe.
async fn catch_up(member: Arc<Member>, caught_up: Arc<AtomicBool>) {
    loop {
        match member.read_barrier(true).await {
            Ok(()) => {
                caught_up.store(true, Ordering::Relaxed);
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Follows the engine's events while it answers, re-subscribing after a break.
fn follow_events(
    core: &Core,
    context: &Arc<Context>,
    outcomes: &mpsc::UnboundedSender<Outcome>,
    events: &mut Option<tokio::task::JoinHandle<()>>,
) {
    let running = events.as_ref().is_some_and(|task| !task.is_finished());
    if !core.engine_up() {
        if let Some(task) = events.take() {
            task.abort();
        }
        return;
    }
    if running {
        return;
    }
    let (context, outcomes) = (context.clone(), outcomes.clone());
    let resubscribing = events.is_some();
    *events = Some(tokio::spawn(async move {
        if resubscribing {
            tokio::time::sleep(EVENTS_RETRY).await;
        }
        let mut stream = context.runtime.events(&context.cluster_id);
        while let Some(item) = stream.next().await {
            let outcome = match item {
                Ok(event) => Outcome::Event {
                    replica: event.replica_id,
                    action: event.action,
                },
                Err(error) => Outcome::EventsFailed(error),
            };
            if outcomes.send(outcome).is_err() {
                return;
            }
        }
    }));
}

fn log(outcome: &Outcome) {
    // A failed ping is not logged: the loop logs when the engine goes away and comes back.
    let failed = match outcome {
        Outcome::Listed(Err(e)) => Some(("listing containers failed", e)),
        Outcome::Inspected { result: Err(e), .. } => Some(("inspecting a container failed", e)),
        Outcome::Image { result: Err(e), .. } => Some(("an image is not available", e)),
        Outcome::Ran { result: Err(e), .. } => Some(("starting a container failed", e)),
        Outcome::Stopped { result: Err(e), .. } => Some(("stopping a container failed", e)),
        Outcome::Removed { result: Err(e), .. } => Some(("removing a container failed", e)),
        Outcome::Reported { result: Err(e), .. } => Some(("reporting replicas failed", e)),
        Outcome::DockerReported(Err(e)) => Some(("reporting the docker condition failed", e)),
        Outcome::Inventoried(Err(e)) => Some(("listing networks and volumes failed", e)),
        Outcome::Cleaned { result: Err(e), .. } => Some(("a cleanup failed", e)),
        Outcome::EventsFailed(e) => Some(("following engine events failed", e)),
        _ => None,
    };
    if let Some((what, error)) = failed {
        tracing::warn!(error = %error.render(true), "{what}");
    }
}

/// One revision's documents, resolved: the deployment (secret contents included) and its
/// services.
struct Revision {
    resolved: Resolved,
    services: BTreeMap<String, Arc<ServiceSpec>>,
}

/// Resolved revisions by (deployment, revision), kept while a desired replica uses them.
#[derive(Default)]
struct Revisions {
    cache: BTreeMap<(String, u64), Result<Arc<Revision>, Error>>,
}

/// The documents of a revision, copied out of the state to resolve them outside its lock.
struct Documents {
    jaco_yaml: String,
    compose_yaml: String,
    objects: Objects,
}

impl Revisions {
    fn get(&self, deployment: &str, revision: u64) -> Option<Arc<Revision>> {
        match self.cache.get(&(deployment.to_owned(), revision)) {
            Some(Ok(revision)) => Some(revision.clone()),
            _ => None,
        }
    }

    /// The facts at `now_ms`, resolving revisions not seen before.
    fn gather(&mut self, member: &Member, now_ms: i64, caught_up: bool) -> Facts {
        let node = member.name.as_str();
        let (mut facts, desired, missing) = member.read(|state| {
            let desired: Vec<pb::ReplicaDesired> = state
                .replicas_desired()
                .filter(|r| r.node == node)
                .cloned()
                .collect();
            let missing: Vec<((String, u64), Option<Documents>)> = desired
                .iter()
                .map(|r| (r.deployment.clone(), r.revision))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|key| !self.cache.contains_key(key))
                .map(|key| {
                    let documents = documents(state, &key.0, key.1);
                    (key, documents)
                })
                .collect();
            (read_facts(state, node, &desired), desired, missing)
        });
        for (key, documents) in missing {
            let resolved = resolve(&key.0, key.1, documents);
            self.cache.insert(key, resolved);
        }
        let used: BTreeSet<(String, u64)> = desired
            .iter()
            .map(|r| (r.deployment.clone(), r.revision))
            .collect();
        self.cache.retain(|key, _| used.contains(key));
        facts.now_ms = now_ms;
        facts.caught_up = caught_up;
        facts.wants = desired
            .into_iter()
            .map(|desired| {
                let spec = self.service_of(&desired);
                Want { desired, spec }
            })
            .collect();
        facts
    }

    /// The service a desired replica runs, checked against its spec hash.
    fn service_of(&self, desired: &pb::ReplicaDesired) -> Result<Arc<ServiceSpec>, Error> {
        let key = (desired.deployment.clone(), desired.revision);
        let revision =
            self.cache.get(&key).cloned().unwrap_or_else(|| {
                Err(Error::new(Code::Internal, "the revision was not resolved"))
            })?;
        let service = revision.services.get(&desired.service).ok_or_else(|| {
            Error::new(
                Code::Internal,
                format!(
                    "revision {} of {} has no service {}",
                    desired.revision, desired.deployment, desired.service
                ),
            )
            .with("reason", "unknown_service")
        })?;
        if service.spec_hash != desired.spec_hash {
            return Err(Error::new(
                Code::Internal,
                format!(
                    "service {} of revision {} resolves to spec hash {}, the scheduler asked for {}",
                    desired.service, desired.revision, service.spec_hash, desired.spec_hash
                ),
            )
            .with("reason", "spec_hash_mismatch"));
        }
        Ok(service.clone())
    }
}

/// Everything but the wants and the time, from one read of the state.
fn read_facts(state: &State, node: &str, desired: &[pb::ReplicaDesired]) -> Facts {
    let mut started = BTreeSet::new();
    let mut healthy = BTreeSet::new();
    for observed in state.replicas_observed() {
        let Some(replica) = state.replica_desired(&observed.id) else {
            continue;
        };
        let key = (replica.deployment.clone(), replica.service.clone());
        match observed.state() {
            ReplicaState::Running => {
                started.insert(key.clone());
                healthy.insert(key);
            }
            ReplicaState::Degraded => {
                started.insert(key);
            }
            _ => {}
        }
    }
    Facts {
        started,
        healthy,
        stored: desired
            .iter()
            .filter_map(|r| state.replica_observed(&r.id))
            .map(|o| (o.id.clone(), o.clone()))
            .collect(),
        docker_condition: state
            .node(node)
            .and_then(|n| n.docker.as_ref())
            .map(|c| c.ok),
        deployments: state
            .deployments()
            .map(|d| (d.name.clone(), d.revision))
            .collect(),
        tombstones: state
            .tombstones()
            .map(|t| (t.deployment.clone(), t.keep_volumes))
            .collect(),
        subnets: (state.subnets())
            .filter(|s| s.node == node)
            .map(|s| (s.deployment.clone(), s.network.clone()))
            .collect(),
        ..Facts::default()
    }
}

/// A revision's documents and secret/config contents; `None` when the state no longer keeps it.
fn documents(state: &State, deployment: &str, revision: u64) -> Option<Documents> {
    let spec = state
        .deployment_revision(deployment, revision)?
        .spec
        .as_ref()?;
    let mut objects = Objects::default();
    for blob in &spec.blobs {
        let kind = blob.kind();
        let content = state
            .content_blob(deployment, kind, &blob.name, &blob.sha256)
            .map(|b| b.content.clone())?;
        let target = match kind {
            pb::BlobKind::Secret => &mut objects.secrets,
            _ => &mut objects.configs,
        };
        target.insert(blob.name.clone(), FileObject::new(content));
    }
    Some(Documents {
        jaco_yaml: spec.jaco_yaml.clone(),
        compose_yaml: spec.compose_yaml.clone(),
        objects,
    })
}

fn resolve(
    deployment: &str,
    revision: u64,
    documents: Option<Documents>,
) -> Result<Arc<Revision>, Error> {
    let documents = documents.ok_or_else(|| {
        Error::new(
            Code::Internal,
            format!(
                "revision {revision} of {deployment} (or one of its secrets) is not in the state"
            ),
        )
        .with("reason", "revision_missing")
    })?;
    let resolved = resolve_documents(
        &documents.jaco_yaml,
        &documents.compose_yaml,
        documents.objects,
    )
    .map_err(|errors| {
        let first = errors.into_iter().next();
        Error::new(
            Code::Internal,
            format!(
                "revision {revision} of {deployment} does not resolve: {}",
                first.map_or_else(String::new, |e| e.message)
            ),
        )
        .with("reason", "revision_unresolvable")
    })?;
    let services = (resolved.services.iter())
        .map(|(name, service)| (name.clone(), Arc::new(service.clone())))
        .collect();
    Ok(Arc::new(Revision { resolved, services }))
}

/// Performs one action and returns its outcome (an image pull also reports on `outcomes` that
/// it started).
async fn execute(
    context: &Context,
    action: Action,
    revision: Option<Arc<Revision>>,
    outcomes: &mpsc::UnboundedSender<Outcome>,
) -> Outcome {
    let runtime = context.runtime.as_ref();
    let cluster = context.cluster_id.as_str();
    match action {
        Action::Ping => Outcome::Pinged(runtime.version().await.map(drop)),
        Action::List => Outcome::Listed(runtime.containers(cluster).await),
        Action::Inspect { replica } => {
            let result = runtime.inspect(&container_name(&replica)).await;
            Outcome::Inspected { replica, result }
        }
        Action::EnsureImage {
            replica,
            image,
            policy,
        } => {
            let auth = context
                .member
                .read(|state| credentials::choose(&image, state.registry_credentials()));
            let result = async {
                let present = runtime.image_id(&image).await?.is_some();
                match image_step(policy, present) {
                    ImageStep::Use => Ok(()),
                    ImageStep::Missing => Err(Error::new(
                        Code::DockerError,
                        format!("{image} is not on this node and pull_policy is never"),
                    )
                    .with("reason", "image_not_present")
                    .with("image", &image)),
                    ImageStep::Pull => {
                        let started = Outcome::PullStarted {
                            replica: replica.clone(),
                        };
                        let _ = outcomes.send(started);
                        runtime.pull(&image, auth.as_ref()).await
                    }
                }
            }
            .await;
            Outcome::Image { replica, result }
        }
        Action::Run { desired, peers } => {
            let replica = desired.id.clone();
            let result = start(context, &desired, revision, peers).await;
            Outcome::Ran { replica, result }
        }
        Action::Stop { replica, container } => {
            let result = runtime.stop(&container, None).await;
            Outcome::Stopped { replica, result }
        }
        Action::Remove {
            replica,
            container,
            purge,
        } => {
            let result = async {
                runtime.stop(&container, None).await?;
                runtime.remove(&container).await?;
                if purge {
                    remove_files(&context.secrets_dir, &replica).await?;
                }
                Ok(())
            }
            .await;
            Outcome::Removed {
                replica,
                purge,
                result,
            }
        }
        Action::Report(observations) => {
            let kind = pb::command::Kind::ReportReplicas(pb::ReportReplicas {
                node: context.member.name.clone(),
                observations: observations.clone(),
            });
            let result = submit(context, kind).await;
            Outcome::Reported {
                observations,
                result,
            }
        }
        Action::ReportDocker(condition) => {
            let member = &context.member;
            // SetNodeStatus replaces the status details: keep the stored ones.
            let status_details = member
                .read(|s| s.node(&member.name).map(|n| n.status_details.clone()))
                .unwrap_or_default();
            let kind = pb::command::Kind::SetNodeStatus(pb::SetNodeStatus {
                node: member.name.clone(),
                status_details,
                docker: Some(condition),
                ..Default::default()
            });
            Outcome::DockerReported(submit(context, kind).await)
        }
        Action::Inventory => Outcome::Inventoried(inventory(context).await),
        Action::RemoveNetwork(ref name) => {
            let result = runtime.remove_network(name).await;
            Outcome::Cleaned { action, result }
        }
        Action::ReleaseSubnet {
            ref deployment,
            ref network,
        } => {
            let kind = pb::command::Kind::ReleaseSubnet(pb::ReleaseSubnet {
                deployment: deployment.clone(),
                network: network.clone(),
                node: context.member.name.clone(),
            });
            let result = submit(context, kind).await;
            Outcome::Cleaned { action, result }
        }
        Action::RemoveVolume(ref name) => {
            let result = runtime.remove_volume(name).await;
            Outcome::Cleaned { action, result }
        }
        Action::RemoveFiles(ref replica) => {
            let result = remove_files(&context.secrets_dir, replica).await;
            Outcome::Cleaned { action, result }
        }
    }
}

async fn submit(context: &Context, kind: pb::command::Kind) -> Result<(), Error> {
    let identity = Identity::Node(context.member.name.clone());
    context.member.submit(&identity, kind).await.map(drop)
}

/// Files, networks, volumes, then the container.
async fn start(
    context: &Context,
    desired: &pb::ReplicaDesired,
    revision: Option<Arc<Revision>>,
    peers: BTreeMap<String, String>,
) -> Result<String, Error> {
    let revision = revision.ok_or_else(|| {
        Error::new(Code::Internal, "the replica's revision is not resolved")
            .with("reason", "revision_missing")
    })?;
    let service = revision.services.get(&desired.service).ok_or_else(|| {
        Error::new(
            Code::Internal,
            format!("no service {} in the revision", desired.service),
        )
    })?;
    let mut subnets = BTreeMap::new();
    for network in plan::service_networks(service) {
        subnets.insert(
            network.to_owned(),
            allocate_subnet(context, desired, network).await?,
        );
    }
    let plan = plan::replica_plan(
        &context.cluster_id,
        desired,
        &revision.resolved.deployment,
        service,
        peers,
        &subnets,
        &context.secrets_dir,
    )?;
    let files = plan.files.clone();
    tokio::task::spawn_blocking(move || write_files(&files))
        .await
        .map_err(|e| Error::new(Code::Internal, format!("writing secret files: {e}")))??;
    let runtime = context.runtime.as_ref();
    for network in &plan.networks {
        runtime.ensure_network(network).await?;
    }
    for volume in &plan.volumes {
        match volume {
            VolumeUse::Ensure(volume) => runtime.ensure_volume(volume).await?,
            VolumeUse::External(name) => {
                if !runtime.volume_exists(name).await? {
                    return Err(Error::new(
                        Code::DockerError,
                        format!("the external volume {name} does not exist on this node"),
                    )
                    .with("reason", "external_volume_missing")
                    .with("volume", name));
                }
            }
        }
    }
    runtime.run(&plan.container).await
}

/// This node's /24 of the replica's (deployment, `network`), allocated through raft on first
/// use (idempotent: the same subnet again afterwards). A full pool is `subnet_pool_exhausted`,
/// which the replica reports until a subnet is freed.
async fn allocate_subnet(
    context: &Context,
    desired: &pb::ReplicaDesired,
    network: &str,
) -> Result<ipnet::Ipv4Net, Error> {
    let kind = pb::command::Kind::AllocateSubnet(pb::AllocateSubnet {
        deployment: desired.deployment.clone(),
        network: network.to_owned(),
        node: context.member.name.clone(),
    });
    let identity = Identity::Node(context.member.name.clone());
    let outcome = context.member.submit(&identity, kind).await?;
    let cidr = match outcome {
        pb::command_result::Outcome::AllocateSubnet(pb::AllocateSubnetResult {
            subnet: Some(subnet),
        }) => subnet.cidr,
        other => {
            return Err(Error::new(
                Code::Internal,
                format!("subnet allocation answered {other:?}"),
            ));
        }
    };
    cidr.parse().map_err(|e| {
        Error::new(Code::Internal, format!("allocated subnet {cidr:?}: {e}")).with("subnet", &cidr)
    })
}

/// Writes secret and config files: directories 0700, each file replaced atomically with its
/// mode and owner.
fn write_files(files: &[FileWrite]) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let failed = |path: &Path, e: std::io::Error| {
        Error::new(
            Code::Internal,
            format!("cannot write {}: {e}", path.display()),
        )
        .with("reason", "secrets_dir")
        .with("path", path.display())
    };
    for file in files {
        let dir = file.path.parent().unwrap_or(Path::new("/"));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| failed(dir, e))?;
        let temporary = file.path.with_extension("new");
        std::fs::write(&temporary, &file.content).map_err(|e| failed(&temporary, e))?;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(file.mode))
            .map_err(|e| failed(&temporary, e))?;
        if file.uid.is_some() || file.gid.is_some() {
            std::os::unix::fs::chown(&temporary, file.uid, file.gid)
                .map_err(|e| failed(&temporary, e))?;
        }
        std::fs::rename(&temporary, &file.path).map_err(|e| failed(&file.path, e))?;
    }
    Ok(())
}

async fn remove_files(secrets_dir: &Path, replica: &str) -> Result<(), Error> {
    let dir = files_dir(secrets_dir, replica);
    match tokio::fs::remove_dir_all(&dir).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::new(
            Code::Internal,
            format!("cannot remove {}: {e}", dir.display()),
        )
        .with("reason", "secrets_dir")),
        _ => Ok(()),
    }
}

async fn inventory(context: &Context) -> Result<Inventory, Error> {
    let runtime = context.runtime.as_ref();
    let networks = runtime.networks(&context.cluster_id).await?;
    let volumes = runtime.volumes(&context.cluster_id).await?;
    let mut file_dirs = Vec::new();
    match tokio::fs::read_dir(&context.secrets_dir).await {
        Ok(mut entries) => {
            while let Ok(Some(entry)) = entries.next_entry().await {
                if let Some(name) = entry.file_name().to_str() {
                    file_dirs.push(name.to_owned());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::new(
                Code::Internal,
                format!("cannot list {}: {e}", context.secrets_dir.display()),
            )
            .with("reason", "secrets_dir"));
        }
    }
    Ok(Inventory {
        networks,
        volumes,
        file_dirs,
    })
}
