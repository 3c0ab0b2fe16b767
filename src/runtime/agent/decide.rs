//! The node agent's decisions: from what the replicated state wants on this node and what the
//! engine last said, the next [`Action`]s — and, from their [`Outcome`]s, what the agent now
//! knows. No I/O, no clock: time comes in as `now_ms`, so every rule is a unit test.
//!
//! # Rules
//! - Nothing happens before the engine answered a ping and its containers were listed (so a
//!   restarted daemon adopts what runs instead of creating it again). A container whose labels
//!   carry the desired spec hash and restart generation is adopted as it is; a container the
//!   state last saw `running` keeps counting as running ([`Memory::adopt`]).
//! - A replica without a container: its image is made present per `pull_policy` (first attempt
//!   reported `pulling`; each failure `pending` + `image_pull_failed` with reason, attempt and
//!   next retry, retried on the [`backoff`](super::super::backoff) schedule; past the retry
//!   budget `failed` + `image_pull_failed`), then it waits for `depends_on` (started = a replica
//!   running or degraded anywhere, healthy = running) and for the peers of `service:<name>`
//!   namespace modes (a running container of that service on this node), then it is run. A
//!   run the engine refuses is retried on the same schedule and is `failed` + `docker_error`
//!   after [`RESTART_BUDGET`] refusals.
//! - A container with another spec hash or restart generation is removed (and recreated on the
//!   next step). A new restart generation or spec also forgets the replica's failures.
//! - Containers are inspected every second until running, every five seconds after, and at
//!   once on an engine event; each inspection goes through [`observe`]. `degraded` stops the
//!   container, an exit removes it (and the replica is run again), and so does a container
//!   left created but never started; `restart_exhausted` keeps it stopped for inspection.
//! - Containers of replicas not desired on this node are stopped and removed, with their files,
//!   once the state has caught up; so are the networks of deployments with no replica left on
//!   this node (and then their subnets are released to the pool), and the volumes of deleted
//!   deployments unless the delete kept them.
//! - An engine that does not answer makes every replica here `pending` + `docker_error` (except
//!   failed ones) and the node's docker condition not ok until a ping succeeds again.
//! - Observations are reported in one batch when they differ from what this node last
//!   reported (or, after a restart, from what the state holds); a `running` replica the
//!   scheduler marked `updating` stays `updating`.
//!
//! This module must not call Docker, read the state or the clock; `super` does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::error::{Code, Error};
use crate::manifest::spec::{DependencyCondition, PullPolicy, ServiceSpec};
use crate::proto::v1::{NodeCondition, ReplicaDesired, ReplicaObserved, ReplicaState};
use crate::runtime::backoff::{pull_failure_details, retry_delay};
use crate::runtime::observe::{self, Memory, RESTART_BUDGET, Verdict};
use crate::runtime::plan::{compose_network, container_name, network_name};
use crate::runtime::{
    Health, Inspection, LABEL_DEPLOYMENT, LABEL_NODE, LABEL_REPLICA_ID, LABEL_REVISION,
    LABEL_SERVICE, Labelled, ReplicaIdentity, Status,
};

/// Inspection interval of a container that is not running yet.
pub const INSPECT_STARTING_MS: i64 = 1_000;
/// Inspection interval of a running container.
pub const INSPECT_RUNNING_MS: i64 = 5_000;
/// Ping interval while the engine does not answer.
pub const PING_EVERY_MS: i64 = 2_000;
/// How often the engine's containers are listed again (a safety net for missed events).
pub const LIST_EVERY_MS: i64 = 60_000;
/// How often networks, volumes and files are checked for leftovers.
pub const INVENTORY_EVERY_MS: i64 = 30_000;
/// Pause before an operation that failed is tried again.
pub const RETRY_AFTER_MS: i64 = 2_000;

/// What the agent is and may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// This node's name.
    pub node: String,
    /// The cluster id (container labels).
    pub cluster_id: String,
    /// Failed pull attempts before a replica fails.
    pub pull_retry_budget: u32,
}

/// A replica desired on this node and the spec its revision resolves to.
#[derive(Debug, Clone)]
pub struct Want {
    /// The scheduler's record.
    pub desired: ReplicaDesired,
    /// Its service, or why it cannot be had.
    pub spec: Result<Arc<ServiceSpec>, Error>,
}

/// What the replicated state says, at `now_ms`.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Now, Unix milliseconds.
    pub now_ms: i64,
    /// A linearizable read succeeded since the agent started: removals are safe.
    pub caught_up: bool,
    /// Replicas desired on this node.
    pub wants: Vec<Want>,
    /// (deployment, service) with a replica running or degraded anywhere.
    pub started: BTreeSet<(String, String)>,
    /// (deployment, service) with a replica running anywhere.
    pub healthy: BTreeSet<(String, String)>,
    /// The state's observations of the replicas desired here.
    pub stored: BTreeMap<String, ReplicaObserved>,
    /// The state's record of this node's docker condition (`ok`), if any.
    pub docker_condition: Option<bool>,
    /// Deployments that exist, with their current revision.
    pub deployments: BTreeMap<String, u64>,
    /// Deleted deployments not yet pruned, with their `keep_volumes`.
    pub tombstones: BTreeMap<String, bool>,
    /// (deployment, network) of every subnet the state allocated to this node.
    pub subnets: BTreeSet<(String, String)>,
}

/// One step for the executor.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ask the engine for its version.
    Ping,
    /// List (and inspect) every container of the cluster.
    List,
    /// Inspect the replica's container (by name).
    Inspect {
        /// Replica id.
        replica: String,
    },
    /// Make the image present per policy; report [`Outcome::PullStarted`] before pulling.
    EnsureImage {
        /// Replica id.
        replica: String,
        /// Image reference.
        image: String,
        /// Pull policy (`missing` when the service sets none, as in compose).
        policy: PullPolicy,
    },
    /// Write files, ensure networks and volumes, create and start the container.
    Run {
        /// The replica.
        desired: ReplicaDesired,
        /// Container names standing in for `service:<name>`.
        peers: BTreeMap<String, String>,
    },
    /// Stop a container with its own stop signal and grace period.
    Stop {
        /// Replica id.
        replica: String,
        /// Container id.
        container: String,
    },
    /// Stop and remove a container; `purge` also removes the replica's files.
    Remove {
        /// Replica id.
        replica: String,
        /// Container id.
        container: String,
        /// The replica is gone from this node.
        purge: bool,
    },
    /// Submit these observations (`ReportReplicas`).
    Report(Vec<ReplicaObserved>),
    /// Submit this node's docker condition (`SetNodeStatus`).
    ReportDocker(NodeCondition),
    /// List the cluster's networks and volumes and the replica file directories.
    Inventory,
    /// Remove a network.
    RemoveNetwork(String),
    /// Give this node's subnet of a (deployment, network) back to the pool.
    ReleaseSubnet {
        /// Deployment.
        deployment: String,
        /// Compose network.
        network: String,
    },
    /// Remove a volume.
    RemoveVolume(String),
    /// Remove a replica's file directory.
    RemoveFiles(String),
}

/// Networks, volumes and file directories found on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// The cluster's networks.
    pub networks: Vec<Labelled>,
    /// The cluster's volumes.
    pub volumes: Vec<Labelled>,
    /// Replica ids with a directory under the secrets directory.
    pub file_dirs: Vec<String>,
}

/// What came of an [`Action`] (or what the engine told on its own).
#[derive(Debug, Clone)]
pub enum Outcome {
    /// [`Action::Ping`].
    Pinged(Result<(), Error>),
    /// [`Action::List`].
    Listed(Result<Vec<Inspection>, Error>),
    /// [`Action::Inspect`]; `None` when there is no container.
    Inspected {
        /// Replica id.
        replica: String,
        /// The inspection.
        result: Result<Option<Inspection>, Error>,
    },
    /// [`Action::EnsureImage`] is pulling.
    PullStarted {
        /// Replica id.
        replica: String,
    },
    /// [`Action::EnsureImage`] finished.
    Image {
        /// Replica id.
        replica: String,
        /// Present, or why not.
        result: Result<(), Error>,
    },
    /// [`Action::Run`] finished with the container id.
    Ran {
        /// Replica id.
        replica: String,
        /// The container id.
        result: Result<String, Error>,
    },
    /// [`Action::Stop`] finished.
    Stopped {
        /// Replica id.
        replica: String,
        /// Done or why not.
        result: Result<(), Error>,
    },
    /// [`Action::Remove`] finished.
    Removed {
        /// Replica id.
        replica: String,
        /// Whether the replica left the node.
        purge: bool,
        /// Done or why not.
        result: Result<(), Error>,
    },
    /// [`Action::Report`] finished.
    Reported {
        /// What was submitted.
        observations: Vec<ReplicaObserved>,
        /// Committed or why not.
        result: Result<(), Error>,
    },
    /// [`Action::ReportDocker`] finished.
    DockerReported(Result<(), Error>),
    /// [`Action::Inventory`] finished.
    Inventoried(Result<Inventory, Error>),
    /// [`Action::RemoveNetwork`], [`Action::RemoveVolume`] or [`Action::RemoveFiles`] finished.
    Cleaned {
        /// The action.
        action: Action,
        /// Done or why not.
        result: Result<(), Error>,
    },
    /// The engine reported something about a container of the cluster.
    Event {
        /// Its replica, from its labels.
        replica: Option<String>,
        /// The engine's action (`create`, `start`, `die`, `health_status: …`, …).
        action: String,
    },
    /// The engine's event stream broke.
    EventsFailed(Error),
}

/// Operations in flight (at most one per key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Busy {
    Ping,
    List,
    Report,
    Docker,
    Inventory,
    Replica(String),
    Network(String),
    Volume(String),
    Files(String),
}

impl Action {
    fn busy(&self) -> Busy {
        match self {
            Action::Ping => Busy::Ping,
            Action::List => Busy::List,
            Action::Report(_) => Busy::Report,
            Action::ReportDocker(_) => Busy::Docker,
            Action::Inventory => Busy::Inventory,
            Action::Inspect { replica }
            | Action::EnsureImage { replica, .. }
            | Action::Stop { replica, .. }
            | Action::Remove { replica, .. } => Busy::Replica(replica.clone()),
            Action::Run { desired, .. } => Busy::Replica(desired.id.clone()),
            Action::RemoveNetwork(name) => Busy::Network(name.clone()),
            Action::ReleaseSubnet {
                deployment,
                network,
            } => Busy::Network(network_name(deployment, network)),
            Action::RemoveVolume(name) => Busy::Volume(name.clone()),
            Action::RemoveFiles(replica) => Busy::Files(replica.clone()),
        }
    }
}

impl Outcome {
    fn busy(&self) -> Option<Busy> {
        Some(match self {
            Outcome::Pinged(_) => Busy::Ping,
            Outcome::Listed(_) => Busy::List,
            Outcome::Reported { .. } => Busy::Report,
            Outcome::DockerReported(_) => Busy::Docker,
            Outcome::Inventoried(_) => Busy::Inventory,
            Outcome::Inspected { replica, .. }
            | Outcome::Image { replica, .. }
            | Outcome::Ran { replica, .. }
            | Outcome::Stopped { replica, .. }
            | Outcome::Removed { replica, .. } => Busy::Replica(replica.clone()),
            Outcome::Cleaned { action, .. } => action.busy(),
            Outcome::PullStarted { .. } | Outcome::Event { .. } | Outcome::EventsFailed(_) => {
                return None;
            }
        })
    }

    fn error(&self) -> Option<&Error> {
        match self {
            Outcome::Pinged(Err(e))
            | Outcome::Listed(Err(e))
            | Outcome::Inspected { result: Err(e), .. }
            | Outcome::Image { result: Err(e), .. }
            | Outcome::Ran { result: Err(e), .. }
            | Outcome::Stopped { result: Err(e), .. }
            | Outcome::Removed { result: Err(e), .. }
            | Outcome::Reported { result: Err(e), .. }
            | Outcome::DockerReported(Err(e))
            | Outcome::Inventoried(Err(e))
            | Outcome::Cleaned { result: Err(e), .. }
            | Outcome::EventsFailed(e) => Some(e),
            _ => None,
        }
    }
}

/// Whether an error says the engine does not answer.
pub fn unreachable(error: &Error) -> bool {
    error.code == Code::DockerError
        && error.details.get("reason").map(String::as_str) == Some("unreachable")
}

/// What the engine is known to be.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Engine {
    Unknown,
    Up,
    Down(String),
}

/// The image of a replica.
#[derive(Debug, Clone, PartialEq)]
enum Image {
    Unknown,
    Ready,
    Failed {
        attempt: u32,
        retry_at: i64,
        failed_at: i64,
        error: Error,
    },
    GaveUp {
        attempts: u32,
        error: Error,
    },
}

/// What the agent remembers of one replica.
#[derive(Debug, Clone)]
struct Track {
    desired: ReplicaDesired,
    image: Image,
    /// The pull attempt in flight or last made.
    attempt: u32,
    pulling: bool,
    run_failures: u32,
    run_retry_at: i64,
    run_error: Option<Error>,
    next_inspect_at: i64,
    verdict: Option<Verdict>,
    /// When the current container was first seen running.
    running_since: Option<(String, i64)>,
    /// What the replica waits for before it can run.
    waiting: Vec<String>,
    /// The container was stopped: inspect it before deciding anything else.
    stopped: bool,
}

impl Track {
    fn new(desired: &ReplicaDesired) -> Track {
        Track {
            desired: desired.clone(),
            image: Image::Unknown,
            attempt: 0,
            pulling: false,
            run_failures: 0,
            run_retry_at: 0,
            run_error: None,
            next_inspect_at: 0,
            verdict: None,
            running_since: None,
            waiting: Vec::new(),
            stopped: false,
        }
    }

    fn run_gave_up(&self) -> bool {
        self.run_failures >= RESTART_BUDGET
    }
}

/// The agent's memory and decisions.
#[derive(Debug)]
pub struct Core {
    settings: Settings,
    engine: Engine,
    /// The containers were listed since the engine (re)appeared.
    listed: bool,
    /// Adopt running containers at the next decision (after a listing).
    adopt: bool,
    next_ping_at: i64,
    next_list_at: i64,
    next_inventory_at: i64,
    seen_tombstones: BTreeMap<String, bool>,
    inventory: Option<Inventory>,
    memory: Memory,
    tracks: BTreeMap<String, Track>,
    /// The engine's view of the cluster's containers, by replica id.
    containers: BTreeMap<String, Inspection>,
    busy: BTreeSet<Busy>,
    hold: BTreeMap<Busy, i64>,
    /// What this node last reported per replica.
    acked: BTreeMap<String, ReplicaObserved>,
}

impl Core {
    /// A core that knows nothing yet.
    pub fn new(settings: Settings) -> Core {
        Core {
            settings,
            engine: Engine::Unknown,
            listed: false,
            adopt: false,
            next_ping_at: 0,
            next_list_at: 0,
            next_inventory_at: 0,
            seen_tombstones: BTreeMap::new(),
            inventory: None,
            memory: Memory::default(),
            tracks: BTreeMap::new(),
            containers: BTreeMap::new(),
            busy: BTreeSet::new(),
            hold: BTreeMap::new(),
            acked: BTreeMap::new(),
        }
    }

    /// Whether the engine answers (the executor follows its events meanwhile).
    pub fn engine_up(&self) -> bool {
        self.engine == Engine::Up
    }

    /// Whether the engine answered its last ping (`None` before the first one).
    pub fn engine_answers(&self) -> Option<bool> {
        match self.engine {
            Engine::Unknown => None,
            Engine::Up => Some(true),
            Engine::Down(_) => Some(false),
        }
    }

    fn ready(&self, busy: &Busy, now: i64) -> bool {
        !self.busy.contains(busy) && self.hold.get(busy).is_none_or(|until| now >= *until)
    }

    fn start(&mut self, action: Action, actions: &mut Vec<Action>) {
        self.busy.insert(action.busy());
        actions.push(action);
    }

    /// The next actions for `facts`.
    pub fn decide(&mut self, facts: &Facts) -> Vec<Action> {
        let now = facts.now_ms;
        let mut actions = Vec::new();
        let wanted: BTreeSet<&str> = facts.wants.iter().map(|w| w.desired.id.as_str()).collect();
        let containers = &self.containers;
        // A container outlives its replica's desire while kept for inspection: so does what
        // was last reported about it.
        self.acked
            .retain(|id, _| wanted.contains(id.as_str()) || containers.contains_key(id));
        self.tracks
            .retain(|id, _| wanted.contains(id.as_str()) || containers.contains_key(id));
        self.hold.retain(|_, until| *until > now);
        match self.engine {
            Engine::Unknown | Engine::Down(_) => {
                if self.ready(&Busy::Ping, now) && now >= self.next_ping_at {
                    self.start(Action::Ping, &mut actions);
                }
            }
            Engine::Up => {
                // A listing replaces the container map: never while replicas are being changed.
                let quiet = !self.busy.iter().any(|b| matches!(b, Busy::Replica(_)));
                if (!self.listed || now >= self.next_list_at)
                    && quiet
                    && self.ready(&Busy::List, now)
                {
                    self.start(Action::List, &mut actions);
                }
            }
        }
        if self.engine == Engine::Up && self.listed && !self.busy.contains(&Busy::List) {
            if std::mem::take(&mut self.adopt) {
                self.adopt_listed(facts);
            }
            for want in &facts.wants {
                self.converge(want, facts, &mut actions);
            }
            if facts.caught_up {
                self.remove_orphans(&wanted, facts, &mut actions);
                self.sweep(facts, &wanted, &mut actions);
            }
        }
        self.report(facts, &mut actions);
        self.report_engine(facts, &mut actions);
        actions
    }

    /// Takes over the listed containers of wanted replicas: one the state last saw running
    /// keeps counting as running, and each listed container counts as an inspection.
    fn adopt_listed(&mut self, facts: &Facts) {
        let now = facts.now_ms;
        for want in &facts.wants {
            let id = &want.desired.id;
            let Some(container) = self.containers.get(id).cloned() else {
                continue;
            };
            let track = self
                .tracks
                .entry(id.clone())
                .or_insert_with(|| Track::new(&want.desired));
            if let Some(stored) = facts.stored.get(id)
                && stored.state() == ReplicaState::Running
                && stored.container_id == container.container_id
            {
                self.memory.adopt(id, &container.container_id);
                track.running_since = Some((
                    container.container_id.clone(),
                    stored.last_health_at_unix_ms,
                ));
            }
            self.inspected(id, Some(container), now);
        }
    }

    fn converge(&mut self, want: &Want, facts: &Facts, actions: &mut Vec<Action>) {
        let now = facts.now_ms;
        let desired = &want.desired;
        let id = desired.id.clone();
        let track = self
            .tracks
            .entry(id.clone())
            .or_insert_with(|| Track::new(desired));
        if track.desired.restart_generation != desired.restart_generation
            || track.desired.spec_hash != desired.spec_hash
        {
            // A new apply: failures are forgotten and the container is made again.
            self.memory.forget(&id);
            *track = Track::new(desired);
        }
        track.desired = desired.clone();
        if !self.ready(&Busy::Replica(id.clone()), now) {
            return;
        }
        let Ok(spec) = &want.spec else { return };
        let action = match self.containers.get(&id) {
            Some(container) => {
                let current = ReplicaIdentity::from_labels(&container.labels);
                let stale = current.is_none_or(|c| {
                    c.spec_hash != desired.spec_hash
                        || c.restart_generation != desired.restart_generation
                });
                let track = self.tracks.get_mut(&id).expect("tracked above");
                if !stale && track.image == Image::Unknown {
                    // The container runs it: the image is on the node.
                    track.image = Image::Ready;
                }
                let remove = Action::Remove {
                    replica: id.clone(),
                    container: container.container_id.clone(),
                    purge: false,
                };
                match &track.verdict {
                    _ if stale => Some(remove),
                    _ if track.stopped => Some(Action::Inspect {
                        replica: id.clone(),
                    }),
                    Some(v) if v.state == ReplicaState::Degraded => {
                        Some(if container.status == Status::Running {
                            Action::Stop {
                                replica: id.clone(),
                                container: container.container_id.clone(),
                            }
                        } else {
                            remove
                        })
                    }
                    Some(v) if v.code == "container_exited" => Some(remove),
                    // Created but never started (the daemon stopped between the two): redo.
                    Some(_) if container.status == Status::Created => Some(remove),
                    Some(v) if v.state == ReplicaState::Failed => None,
                    _ if now >= track.next_inspect_at => Some(Action::Inspect {
                        replica: id.clone(),
                    }),
                    _ => None,
                }
            }
            None => self.next_start(want, spec, facts),
        };
        if let Some(action) = action {
            self.start(action, actions);
        }
    }

    /// The next step of a replica that has no container.
    fn next_start(&mut self, want: &Want, spec: &ServiceSpec, facts: &Facts) -> Option<Action> {
        let now = facts.now_ms;
        let id = &want.desired.id;
        if self.memory.exhausted(id) {
            return None;
        }
        let blockers = self.blockers(want, spec, facts);
        let track = self.tracks.get_mut(id)?;
        if track.run_gave_up() {
            return None;
        }
        let ensure = |track: &mut Track, attempt: u32| {
            track.attempt = attempt;
            Some(Action::EnsureImage {
                replica: id.clone(),
                image: spec.container.image.clone(),
                policy: spec.container.pull_policy.unwrap_or(PullPolicy::Missing),
            })
        };
        match &track.image {
            Image::Unknown => ensure(track, 1),
            Image::Failed {
                attempt, retry_at, ..
            } if now >= *retry_at => {
                let next = attempt + 1;
                ensure(track, next)
            }
            Image::Failed { .. } | Image::GaveUp { .. } => None,
            Image::Ready if now < track.run_retry_at => None,
            Image::Ready => match blockers {
                Err(waiting) => {
                    track.waiting = waiting;
                    None
                }
                Ok(peers) => {
                    track.waiting.clear();
                    Some(Action::Run {
                        desired: want.desired.clone(),
                        peers,
                    })
                }
            },
        }
    }

    /// The peer containers of `service:<name>` modes, or what the replica still waits for.
    fn blockers(
        &self,
        want: &Want,
        spec: &ServiceSpec,
        facts: &Facts,
    ) -> Result<BTreeMap<String, String>, Vec<String>> {
        let deployment = &want.desired.deployment;
        let mut waiting = Vec::new();
        for (service, dependency) in spec.depends_on.iter().filter(|(_, d)| d.required) {
            let key = (deployment.clone(), service.clone());
            let (met, condition) = match dependency.condition {
                DependencyCondition::ServiceStarted => (facts.started.contains(&key), "started"),
                DependencyCondition::ServiceHealthy => (facts.healthy.contains(&key), "healthy"),
            };
            if !met {
                waiting.push(format!("service {service} to be {condition} (depends_on)"));
            }
        }
        let mut peers = BTreeMap::new();
        let container = &spec.container;
        for (field, mode) in [
            ("network_mode", &container.network_mode),
            ("ipc", &container.ipc),
            ("pid", &container.pid),
        ] {
            let Some(service) = mode.as_deref().and_then(|m| m.strip_prefix("service:")) else {
                continue;
            };
            let peer = self.containers.values().find(|c| {
                c.status == Status::Running
                    && c.labels.get(LABEL_DEPLOYMENT) == Some(deployment)
                    && c.labels.get(LABEL_SERVICE).map(String::as_str) == Some(service)
            });
            match peer {
                Some(peer) => {
                    peers.insert(service.to_owned(), peer.name.clone());
                }
                None => waiting.push(format!(
                    "a running replica of service {service} on this node ({field}: service:{service})"
                )),
            }
        }
        if waiting.is_empty() {
            Ok(peers)
        } else {
            Err(waiting)
        }
    }

    /// Removes the containers of replicas no longer desired here, except the stopped container
    /// of a replica that ended `failed` (a rolled-back replacement, say): SPEC §5.3 keeps it
    /// for inspection until the next apply of its deployment (a new revision) or its delete.
    fn remove_orphans(
        &mut self,
        wanted: &BTreeSet<&str>,
        facts: &Facts,
        actions: &mut Vec<Action>,
    ) {
        let now = facts.now_ms;
        let kept_for_inspection = |id: &str, c: &Inspection| {
            let failed = self
                .acked
                .get(id)
                .is_some_and(|o| o.state() == ReplicaState::Failed);
            let revision = c
                .labels
                .get(LABEL_DEPLOYMENT)
                .and_then(|d| facts.deployments.get(d));
            failed
                && c.status != Status::Running
                && revision.is_some_and(|r| c.labels.get(LABEL_REVISION) == Some(&r.to_string()))
        };
        let orphans: Vec<(String, String)> = (self.containers.iter())
            .filter(|(id, _)| !wanted.contains(id.as_str()))
            .filter(|(id, c)| !kept_for_inspection(id, c))
            .map(|(id, c)| (id.clone(), c.container_id.clone()))
            .collect();
        for (replica, container) in orphans {
            if self.ready(&Busy::Replica(replica.clone()), now) {
                let action = Action::Remove {
                    replica,
                    container,
                    purge: true,
                };
                self.start(action, actions);
            }
        }
    }

    /// Networks, volumes and files nothing here uses any more.
    fn sweep(&mut self, facts: &Facts, wanted: &BTreeSet<&str>, actions: &mut Vec<Action>) {
        let now = facts.now_ms;
        let deleted = self.seen_tombstones != facts.tombstones;
        if (deleted || now >= self.next_inventory_at) && self.ready(&Busy::Inventory, now) {
            self.seen_tombstones = facts.tombstones.clone();
            self.start(Action::Inventory, actions);
            return;
        }
        let Some(inventory) = self.inventory.take() else {
            return;
        };
        let in_use = |deployment: &str| {
            self.containers
                .values()
                .any(|c| c.labels.get(LABEL_DEPLOYMENT).map(String::as_str) == Some(deployment))
        };
        let hosted = |deployment: &str| {
            in_use(deployment) || (facts.wants.iter()).any(|w| w.desired.deployment == deployment)
        };
        let mut cleanups = Vec::new();
        let mut present = BTreeSet::new();
        for network in &inventory.networks {
            let Some(deployment) = network.labels.get(LABEL_DEPLOYMENT) else {
                continue;
            };
            if let Some(compose) = compose_network(deployment, &network.name) {
                present.insert((deployment.as_str(), compose));
            }
            if !hosted(deployment) {
                cleanups.push(Action::RemoveNetwork(network.name.clone()));
            }
        }
        // A subnet goes back once its bridge is gone (or was never made) and nothing here
        // needs it.
        for (deployment, network) in &facts.subnets {
            if !hosted(deployment) && !present.contains(&(deployment.as_str(), network.as_str())) {
                cleanups.push(Action::ReleaseSubnet {
                    deployment: deployment.clone(),
                    network: network.clone(),
                });
            }
        }
        for volume in &inventory.volumes {
            let deployment = volume.labels.get(LABEL_DEPLOYMENT);
            let drop = deployment.is_some_and(|d| {
                facts.tombstones.get(d) == Some(&false)
                    && !facts.deployments.contains_key(d)
                    && !in_use(d)
            });
            if drop {
                cleanups.push(Action::RemoveVolume(volume.name.clone()));
            }
        }
        for replica in &inventory.file_dirs {
            if !wanted.contains(replica.as_str()) && !self.containers.contains_key(replica) {
                cleanups.push(Action::RemoveFiles(replica.clone()));
            }
        }
        for action in cleanups {
            if self.ready(&action.busy(), now) {
                self.start(action, actions);
            }
        }
    }

    fn report(&mut self, facts: &Facts, actions: &mut Vec<Action>) {
        let known = match self.engine {
            Engine::Unknown => false,
            Engine::Up => self.listed,
            Engine::Down(_) => true,
        };
        if !known || !self.ready(&Busy::Report, facts.now_ms) {
            return;
        }
        let mut changed = Vec::new();
        for want in &facts.wants {
            let id = &want.desired.id;
            let observed = self.observation(want);
            let stored = facts.stored.get(id);
            let previous = self.acked.get(id).or(stored);
            if previous.is_some_and(|p| same(p, &observed)) {
                self.acked
                    .entry(id.clone())
                    .or_insert_with(|| observed.clone());
                continue;
            }
            let updating = stored.is_some_and(|s| s.state() == ReplicaState::Updating);
            if updating && observed.state() == ReplicaState::Running {
                continue;
            }
            changed.push(observed);
        }
        if !changed.is_empty() {
            self.start(Action::Report(changed), actions);
        }
    }

    fn report_engine(&mut self, facts: &Facts, actions: &mut Vec<Action>) {
        let (ok, message) = match &self.engine {
            Engine::Unknown => return,
            Engine::Up => (true, "the Docker engine answers".to_owned()),
            Engine::Down(message) => (false, message.clone()),
        };
        if facts.docker_condition == Some(ok) || !self.ready(&Busy::Docker, facts.now_ms) {
            return;
        }
        let condition = NodeCondition {
            ok,
            code: if ok { "" } else { "docker_error" }.to_owned(),
            message,
            ..Default::default()
        };
        self.start(Action::ReportDocker(condition), actions);
    }

    /// The observation of a wanted replica as the agent knows it now.
    fn observation(&self, want: &Want) -> ReplicaObserved {
        let desired = &want.desired;
        let id = &desired.id;
        let track = self.tracks.get(id);
        let container = self.containers.get(id);
        let identity = container.and_then(|c| ReplicaIdentity::from_labels(&c.labels));
        let mut observed = ReplicaObserved {
            id: id.clone(),
            node: self.settings.node.clone(),
            container_id: container
                .map(|c| c.container_id.clone())
                .unwrap_or_default(),
            started_at_unix_ms: container.map_or(0, |c| c.started_at_unix_ms),
            image_id: container.map(|c| c.image_id.clone()).unwrap_or_default(),
            network_addresses: (container.into_iter())
                .flat_map(|c| c.addresses.iter())
                .filter_map(|(network, ip)| {
                    let network = compose_network(&desired.deployment, network)?;
                    Some((network.to_owned(), ip.clone()))
                })
                .collect(),
            spec_hash: identity
                .as_ref()
                .map_or_else(|| desired.spec_hash.clone(), |i| i.spec_hash.clone()),
            revision: identity.as_ref().map_or(desired.revision, |i| i.revision),
            restart_count: self.memory.restarts(id),
            last_health_at_unix_ms: match (track.and_then(|t| t.running_since.as_ref()), container)
            {
                (Some((since_container, at)), Some(c)) if *since_container == c.container_id => *at,
                _ => 0,
            },
            ..Default::default()
        };
        let verdict = self.verdict(want, track, container);
        observed.state = verdict.state.into();
        observed.code = verdict.code.to_owned();
        observed.message = verdict.message;
        observed.details = verdict.details.into_iter().collect();
        observed
    }

    fn verdict(
        &self,
        want: &Want,
        track: Option<&Track>,
        container: Option<&Inspection>,
    ) -> Verdict {
        let desired = &want.desired;
        let verdict = |state, code: &'static str, message: String| Verdict {
            state,
            code,
            message,
            details: BTreeMap::new(),
        };
        let from_error = |state, code: &'static str, what: &str, error: &Error| {
            let mut v = verdict(state, code, format!("{what}: {}", error.message));
            v.details = error.details.clone();
            v
        };
        if let Err(error) = &want.spec {
            return from_error(
                ReplicaState::Failed,
                "internal",
                "cannot read the spec",
                error,
            );
        }
        let last = track.and_then(|t| t.verdict.clone());
        let failed = last.as_ref().filter(|v| v.state == ReplicaState::Failed);
        if let Some(track) = track {
            if let (true, Some(error)) = (track.run_gave_up(), &track.run_error) {
                return from_error(
                    ReplicaState::Failed,
                    "docker_error",
                    "the engine refused the container; a new apply retries it",
                    error,
                );
            }
            if let Image::GaveUp { attempts, error } = &track.image {
                let mut v = from_error(
                    ReplicaState::Failed,
                    "image_pull_failed",
                    &format!(
                        "pulling {} failed {attempts} times; a new apply retries it",
                        want.spec
                            .as_ref()
                            .map_or("", |s| s.container.image.as_str())
                    ),
                    error,
                );
                v.details.insert("attempt".into(), attempts.to_string());
                return v;
            }
        }
        if let Engine::Down(message) = &self.engine
            && failed.is_none()
        {
            return verdict(
                ReplicaState::Pending,
                "docker_error",
                format!("the Docker engine does not answer: {message}"),
            );
        }
        if let Some(container) = container {
            let current = ReplicaIdentity::from_labels(&container.labels);
            if current
                .as_ref()
                .is_none_or(|c| c.spec_hash != desired.spec_hash)
            {
                return verdict(
                    ReplicaState::Pending,
                    "",
                    "replacing the container: the spec changed".into(),
                );
            }
            if current.is_some_and(|c| c.restart_generation != desired.restart_generation) {
                return verdict(
                    ReplicaState::Pending,
                    "",
                    "replacing the container: a new apply restarts it".into(),
                );
            }
            return last.unwrap_or_else(|| {
                verdict(
                    ReplicaState::Pending,
                    "",
                    "the container is starting".into(),
                )
            });
        }
        if let Some(v) = failed {
            return v.clone();
        }
        let Some(track) = track else {
            return verdict(
                ReplicaState::Pending,
                "",
                "waiting for the node agent".into(),
            );
        };
        match &track.image {
            Image::Failed {
                attempt,
                failed_at,
                error,
                ..
            } => {
                let reason = error
                    .details
                    .get("reason")
                    .map_or("pull_failed", String::as_str);
                let mut v = verdict(
                    ReplicaState::Pending,
                    "image_pull_failed",
                    format!(
                        "pulling the image failed (attempt {attempt}): {}; retrying",
                        error.message
                    ),
                );
                v.details = pull_failure_details(reason, *attempt, *failed_at);
                return v;
            }
            Image::Unknown if track.pulling && track.attempt <= 1 => {
                return verdict(
                    ReplicaState::Pulling,
                    "",
                    format!(
                        "pulling {}",
                        want.spec
                            .as_ref()
                            .map_or("", |s| s.container.image.as_str())
                    ),
                );
            }
            _ => {}
        }
        if let Some(error) = &track.run_error {
            return from_error(
                ReplicaState::Pending,
                "docker_error",
                &format!(
                    "the engine refused the container (attempt {}); retrying",
                    track.run_failures
                ),
                error,
            );
        }
        if !track.waiting.is_empty() {
            let mut v = verdict(
                ReplicaState::Pending,
                "",
                format!("waiting for {}", track.waiting.join(", ")),
            );
            v.details
                .insert("waiting_for".into(), track.waiting.join("; "));
            return v;
        }
        if let Some(v) = last.filter(|v| v.code == "container_exited") {
            return v;
        }
        verdict(ReplicaState::Pending, "", "preparing the container".into())
    }

    /// Learns what came of an action, at `now`.
    pub fn apply(&mut self, outcome: Outcome, now: i64) {
        let busy = outcome.busy();
        if let Some(busy) = &busy {
            self.busy.remove(busy);
        }
        if let Some(error) = outcome.error() {
            if unreachable(error) {
                self.engine = Engine::Down(error.message.clone());
                self.listed = false;
                self.next_ping_at = now + PING_EVERY_MS;
                return;
            }
            // Transport-level failures are retried after a pause; replica-level ones are
            // scheduled below where they have their own backoff.
            if let Some(busy) = busy.clone() {
                self.hold.insert(busy, now + RETRY_AFTER_MS);
            }
        }
        match outcome {
            Outcome::Pinged(Ok(())) => {
                self.engine = Engine::Up;
                self.listed = false;
            }
            Outcome::Pinged(Err(error)) => {
                self.engine = Engine::Down(error.message);
                self.next_ping_at = now + PING_EVERY_MS;
            }
            Outcome::Listed(Ok(listed)) => {
                let node = &self.settings.node;
                self.containers = listed
                    .into_iter()
                    .filter(|c| c.labels.get(LABEL_NODE).is_none_or(|n| n == node))
                    .map(|c| (replica_of(&c), c))
                    .collect();
                self.listed = true;
                self.adopt = true;
                self.next_list_at = now + LIST_EVERY_MS;
                for track in self.tracks.values_mut() {
                    track.next_inspect_at = now;
                }
            }
            Outcome::Inspected {
                replica,
                result: Ok(found),
            } => self.inspected(&replica, found, now),
            Outcome::PullStarted { replica } => {
                if let Some(track) = self.tracks.get_mut(&replica) {
                    track.pulling = true;
                }
            }
            Outcome::Image { replica, result } => {
                let budget = self.settings.pull_retry_budget;
                if let Some(track) = self.tracks.get_mut(&replica) {
                    track.pulling = false;
                    track.image = match result {
                        Ok(()) => Image::Ready,
                        Err(error) if track.attempt >= budget => Image::GaveUp {
                            attempts: track.attempt,
                            error,
                        },
                        Err(error) => Image::Failed {
                            attempt: track.attempt,
                            retry_at: now + retry_delay(track.attempt).as_millis() as i64,
                            failed_at: now,
                            error,
                        },
                    };
                    self.hold.remove(&Busy::Replica(replica));
                }
            }
            Outcome::Ran { replica, result } => self.ran(&replica, result, now),
            Outcome::Stopped {
                replica,
                result: Ok(()),
            } => {
                if let Some(track) = self.tracks.get_mut(&replica) {
                    track.stopped = true;
                }
            }
            Outcome::Removed {
                replica,
                purge,
                result: Ok(()),
            } => {
                self.containers.remove(&replica);
                if purge {
                    self.tracks.remove(&replica);
                    self.memory.forget(&replica);
                }
            }
            Outcome::Reported {
                observations,
                result: Ok(()),
            } => {
                for observed in observations {
                    self.acked.insert(observed.id.clone(), observed);
                }
            }
            Outcome::Inventoried(Ok(inventory)) => {
                self.inventory = Some(inventory);
                self.next_inventory_at = now + INVENTORY_EVERY_MS;
            }
            Outcome::Event {
                replica: Some(replica),
                action,
            } => {
                if let Some(track) = self.tracks.get_mut(&replica) {
                    track.next_inspect_at = now;
                }
                let appeared = action == "create" || action == "start";
                if appeared && !self.containers.contains_key(&replica) {
                    // A container this agent did not make or lost track of: look again.
                    self.next_list_at = now;
                }
            }
            _ => {}
        }
    }

    fn inspected(&mut self, replica: &str, found: Option<Inspection>, now: i64) {
        let Some(inspection) = found else {
            self.containers.remove(replica);
            if let Some(track) = self.tracks.get_mut(replica) {
                track.verdict = None;
            }
            return;
        };
        if let Some(track) = self.tracks.get_mut(replica) {
            track.stopped = false;
            let has_healthcheck = inspection.health != Health::None;
            let verdict = observe::observe(&mut self.memory, replica, has_healthcheck, &inspection);
            let running = verdict.state == ReplicaState::Running;
            if running
                && track
                    .running_since
                    .as_ref()
                    .is_none_or(|(c, _)| *c != inspection.container_id)
            {
                track.running_since = Some((inspection.container_id.clone(), now));
            }
            track.next_inspect_at = now
                + if running {
                    INSPECT_RUNNING_MS
                } else {
                    INSPECT_STARTING_MS
                };
            track.verdict = Some(verdict);
        }
        self.containers.insert(replica.to_owned(), inspection);
    }

    fn ran(&mut self, replica: &str, result: Result<String, Error>, now: i64) {
        let cluster_id = self.settings.cluster_id.clone();
        let Some(track) = self.tracks.get_mut(replica) else {
            return;
        };
        match result {
            Ok(container_id) => {
                let identity = ReplicaIdentity::of(&cluster_id, &track.desired);
                // Known to exist until the first inspection says more.
                let created = Inspection {
                    container_id,
                    name: container_name(replica),
                    status: Status::Created,
                    health: Health::None,
                    labels: identity.labels(),
                    started_at_unix_ms: 0,
                    image_id: String::new(),
                    addresses: BTreeMap::new(),
                };
                track.run_failures = 0;
                track.run_error = None;
                track.verdict = None;
                track.next_inspect_at = now;
                self.containers.insert(replica.to_owned(), created);
            }
            Err(error) => {
                track.run_failures += 1;
                track.run_retry_at = now + retry_delay(track.run_failures).as_millis() as i64;
                track.run_error = Some(error);
                // The name may be taken by a container this agent does not know of.
                self.next_list_at = now;
                self.hold.remove(&Busy::Replica(replica.to_owned()));
            }
        }
    }
}

/// The replica a container belongs to: its label, else its name.
fn replica_of(container: &Inspection) -> String {
    container
        .labels
        .get(LABEL_REPLICA_ID)
        .cloned()
        .unwrap_or_else(|| {
            (container.name.strip_prefix("jaco_"))
                .unwrap_or(&container.name)
                .to_owned()
        })
}

/// Two observations say the same (the time and the node a report carries aside).
fn same(a: &ReplicaObserved, b: &ReplicaObserved) -> bool {
    let strip = |o: &ReplicaObserved| ReplicaObserved {
        observed_at_unix_ms: 0,
        node: String::new(),
        ..o.clone()
    };
    strip(a) == strip(b)
}

/// What an `EnsureImage` step does given the policy and whether the node has the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageStep {
    /// Use the image the node has.
    Use,
    /// Pull it.
    Pull,
    /// It is missing and the policy forbids pulling.
    Missing,
}

/// The step for `policy` when the node has (`present`) the image or not.
pub fn image_step(policy: PullPolicy, present: bool) -> ImageStep {
    match (policy, present) {
        (PullPolicy::Always, _) | (PullPolicy::Missing, false) => ImageStep::Pull,
        (PullPolicy::Missing | PullPolicy::Never, true) => ImageStep::Use,
        (PullPolicy::Never, false) => ImageStep::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::spec::{
        ContainerSpec, Dependency, Placement, ServiceSpec as Spec, UpdatePolicy,
    };
    use crate::runtime::LABEL_CLUSTER_ID;

    /// 2026-11-27T00:00:00Z.
    const T0: i64 = 1_795_737_600_000;

    fn spec(image: &str) -> Spec {
        Spec {
            spec_hash: "h1".into(),
            replicas: 1,
            placement: Placement::Spread,
            hosts: vec![],
            update: UpdatePolicy::default(),
            depends_on: BTreeMap::new(),
            container: ContainerSpec {
                image: image.into(),
                ..ContainerSpec::default()
            },
        }
    }

    fn desired(id: &str, service: &str) -> ReplicaDesired {
        ReplicaDesired {
            id: id.into(),
            deployment: "shop".into(),
            service: service.into(),
            index: 1,
            node: "n1".into(),
            spec_hash: "h1".into(),
            revision: 1,
            ..Default::default()
        }
    }

    fn container(desired: &ReplicaDesired, id: &str, status: Status, health: Health) -> Inspection {
        Inspection {
            container_id: id.into(),
            name: container_name(&desired.id),
            status,
            health,
            labels: ReplicaIdentity::of("c1", desired).labels(),
            started_at_unix_ms: T0,
            image_id: "sha256:abc".into(),
            addresses: BTreeMap::from([("jaco_shop_default".to_owned(), "172.18.0.2".to_owned())]),
        }
    }

    fn inspect(replica: &ReplicaDesired) -> Action {
        Action::Inspect {
            replica: replica.id.clone(),
        }
    }

    fn remove(replica: &ReplicaDesired, container: &str) -> Action {
        Action::Remove {
            replica: replica.id.clone(),
            container: container.into(),
            purge: false,
        }
    }

    fn refused(message: &str) -> Error {
        Error::new(Code::DockerError, message).with("reason", "refused")
    }

    fn down() -> Error {
        Error::new(Code::DockerError, "connection refused").with("reason", "unreachable")
    }

    /// A core with its facts; reports are acknowledged as they are made and kept.
    struct Harness {
        core: Core,
        facts: Facts,
        reports: Vec<ReplicaObserved>,
        conditions: Vec<NodeCondition>,
        /// What an inventory finds (answered at once).
        inventory: Inventory,
        inventories: usize,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                core: Core::new(Settings {
                    node: "n1".into(),
                    cluster_id: "c1".into(),
                    pull_retry_budget: 3,
                }),
                facts: Facts {
                    now_ms: T0,
                    caught_up: true,
                    deployments: BTreeMap::from([("shop".to_owned(), 1)]),
                    ..Facts::default()
                },
                reports: Vec::new(),
                conditions: Vec::new(),
                inventory: Inventory::default(),
                inventories: 0,
            }
        }

        fn want(&mut self, desired: ReplicaDesired, spec: Spec) {
            self.facts.wants.retain(|w| w.desired.id != desired.id);
            self.facts.wants.push(Want {
                desired,
                spec: Ok(Arc::new(spec)),
            });
        }

        /// The actions, with reports acknowledged and recorded.
        fn decide(&mut self) -> Vec<Action> {
            let mut out = Vec::new();
            for action in self.core.decide(&self.facts) {
                match action {
                    Action::Report(observations) => {
                        self.reports.extend(observations.iter().cloned());
                        self.core.apply(
                            Outcome::Reported {
                                observations,
                                result: Ok(()),
                            },
                            self.facts.now_ms,
                        );
                    }
                    Action::ReportDocker(condition) => {
                        self.facts.docker_condition = Some(condition.ok);
                        self.conditions.push(condition);
                        self.core
                            .apply(Outcome::DockerReported(Ok(())), self.facts.now_ms);
                    }
                    Action::Inventory => {
                        self.inventories += 1;
                        let found = self.inventory.clone();
                        self.core
                            .apply(Outcome::Inventoried(Ok(found)), self.facts.now_ms);
                    }
                    other => out.push(other),
                }
            }
            out
        }

        fn apply(&mut self, outcome: Outcome) {
            self.core.apply(outcome, self.facts.now_ms);
        }

        fn advance(&mut self, ms: i64) {
            self.facts.now_ms += ms;
        }

        /// A harness wanting `shop-web-1` (image `nginx:1`) on a node whose engine is up with
        /// no containers.
        fn booted() -> (Harness, ReplicaDesired) {
            let mut h = Harness::new();
            let web = desired("shop-web-1", "web");
            h.want(web.clone(), spec("nginx:1"));
            h.boot(vec![]);
            (h, web)
        }

        /// Engine up and `containers` listed.
        fn boot(&mut self, containers: Vec<Inspection>) {
            assert_eq!(self.decide(), [Action::Ping]);
            self.apply(Outcome::Pinged(Ok(())));
            assert_eq!(self.decide(), [Action::List]);
            self.apply(Outcome::Listed(Ok(containers)));
        }

        /// The periodic listing finds `containers`.
        fn relist(&mut self, containers: Vec<Inspection>) {
            assert_eq!(self.decide(), [Action::List]);
            self.apply(Outcome::Listed(Ok(containers)));
        }

        fn last(&self, id: &str) -> &ReplicaObserved {
            self.reports
                .iter()
                .rev()
                .find(|o| o.id == id)
                .unwrap_or_else(|| panic!("no report for {id}"))
        }

        fn image_ready(&mut self, replica: &ReplicaDesired) {
            self.apply(Outcome::Image {
                replica: replica.id.clone(),
                result: Ok(()),
            });
        }

        fn removed(&mut self, replica: &ReplicaDesired, purge: bool) {
            self.apply(Outcome::Removed {
                replica: replica.id.clone(),
                purge,
                result: Ok(()),
            });
        }

        fn inspected(&mut self, replica: &str, inspection: Inspection) {
            self.apply(Outcome::Inspected {
                replica: replica.into(),
                result: Ok(Some(inspection)),
            });
        }

        /// Drives a replica without a container from its image to a running container `id`
        /// (no healthcheck: five polls a second apart).
        fn bring_up(&mut self, desired: &ReplicaDesired, id: &str) {
            let actions = self.decide();
            assert!(
                matches!(actions.as_slice(), [Action::EnsureImage { .. }]),
                "{actions:?}"
            );
            self.image_ready(desired);
            self.start(desired, id);
            for _ in 0..observe::HEALTHY_CONSECUTIVE_COUNT {
                assert_eq!(self.decide(), [inspect(desired)]);
                self.inspected(
                    &desired.id,
                    container(desired, id, Status::Running, Health::None),
                );
                self.advance(INSPECT_STARTING_MS);
            }
            assert_eq!(self.last(&desired.id).state(), ReplicaState::Pending);
            self.decide();
            assert_eq!(self.last(&desired.id).state(), ReplicaState::Running);
        }

        /// Expects a run of `desired` and starts container `id`.
        fn start(&mut self, desired: &ReplicaDesired, id: &str) {
            let actions = self.decide();
            assert!(
                matches!(actions.as_slice(), [Action::Run { desired: d, .. }] if d.id == desired.id),
                "{actions:?}"
            );
            self.apply(Outcome::Ran {
                replica: desired.id.clone(),
                result: Ok(id.into()),
            });
        }
    }

    fn state_of(h: &Harness, id: &str) -> (ReplicaState, String) {
        let last = h.last(id);
        (last.state(), last.code.clone())
    }

    #[test]
    fn nothing_happens_before_the_engine_answered_and_was_listed() {
        let mut h = Harness::new();
        h.want(desired("shop-web-1", "web"), spec("nginx:1"));
        assert_eq!(h.decide(), [Action::Ping]);
        assert!(h.reports.is_empty(), "no report before the engine is known");
        assert_eq!(h.decide(), [], "one ping at a time");
        h.apply(Outcome::Pinged(Ok(())));
        assert_eq!(h.decide(), [Action::List]);
        assert_eq!(h.conditions.len(), 1);
        assert!(h.conditions[0].ok);
        assert!(
            h.reports.is_empty(),
            "no report before the containers are known"
        );
        assert_eq!(h.decide(), [], "nothing while listing");
    }

    #[test]
    fn a_new_replica_is_pulled_run_inspected_and_reported_running() {
        let (mut h, web) = Harness::booted();
        assert_eq!(
            h.decide(),
            [Action::EnsureImage {
                replica: web.id.clone(),
                image: "nginx:1".into(),
                policy: PullPolicy::Missing,
            }]
        );
        h.apply(Outcome::PullStarted {
            replica: web.id.clone(),
        });
        assert_eq!(h.decide(), []);
        assert_eq!(
            state_of(&h, &web.id),
            (ReplicaState::Pulling, String::new())
        );
        h.image_ready(&web);
        h.start(&web, "c1");
        assert_eq!(h.decide(), [inspect(&web)]);
        assert_eq!(h.last(&web.id).container_id, "c1");
        // Four running polls are not enough without a healthcheck; the fifth is.
        for poll in 1..=observe::HEALTHY_CONSECUTIVE_COUNT {
            if poll > 1 {
                assert_eq!(h.decide(), [], "not before a second passed");
                h.advance(INSPECT_STARTING_MS);
                assert_eq!(h.decide(), [inspect(&web)]);
            }
            h.inspected(
                &web.id,
                container(&web, "c1", Status::Running, Health::None),
            );
        }
        assert_eq!(h.decide(), []);
        let running = h.last(&web.id);
        assert_eq!(running.state(), ReplicaState::Running);
        assert_eq!(running.node, "n1");
        assert_eq!(running.container_id, "c1");
        assert_eq!(running.spec_hash, "h1");
        assert_eq!(running.image_id, "sha256:abc");
        assert_eq!(running.started_at_unix_ms, T0);
        assert_eq!(running.last_health_at_unix_ms, h.facts.now_ms);
        assert_eq!(running.network_addresses["default"], "172.18.0.2");
        let states: Vec<ReplicaState> = h.reports.iter().map(|r| r.state()).collect();
        assert_eq!(states.first(), Some(&ReplicaState::Pending));
        assert!(states.contains(&ReplicaState::Pulling), "{states:?}");
        // Running containers are inspected every five seconds.
        h.advance(INSPECT_STARTING_MS);
        assert_eq!(h.decide(), []);
        h.advance(INSPECT_RUNNING_MS - INSPECT_STARTING_MS);
        assert_eq!(h.decide(), [inspect(&web)]);
        // Nothing changed: nothing is reported again.
        let reports = h.reports.len();
        h.inspected(
            &web.id,
            container(&web, "c1", Status::Running, Health::None),
        );
        assert_eq!(h.decide(), []);
        assert_eq!(h.reports.len(), reports);
    }

    #[test]
    fn image_steps_follow_the_pull_policy() {
        use ImageStep::*;
        let cases = [
            (PullPolicy::Always, true, Pull),
            (PullPolicy::Always, false, Pull),
            (PullPolicy::Missing, true, Use),
            (PullPolicy::Missing, false, Pull),
            (PullPolicy::Never, true, Use),
            (PullPolicy::Never, false, Missing),
        ];
        for (policy, present, step) in cases {
            assert_eq!(image_step(policy, present), step, "{policy:?} {present}");
        }
        let mut h = Harness::new();
        let mut never = spec("local:1");
        never.container.pull_policy = Some(PullPolicy::Never);
        h.want(desired("shop-web-1", "web"), never);
        h.boot(vec![]);
        assert!(matches!(
            h.decide().as_slice(),
            [Action::EnsureImage {
                policy: PullPolicy::Never,
                ..
            }]
        ));
    }

    #[test]
    fn failed_pulls_back_off_and_fail_past_the_budget_until_a_new_apply() {
        let mut h = Harness::new();
        let web = desired("shop-web-1", "web");
        h.want(web.clone(), spec("registry.example.com/web:1"));
        h.boot(vec![]);
        let not_found = || {
            refused("manifest unknown")
                .with("reason", "image_not_found")
                .with("image", "registry.example.com/web:1")
        };
        for attempt in 1..=3u32 {
            let actions = h.decide();
            assert!(
                matches!(actions.as_slice(), [Action::EnsureImage { .. }]),
                "attempt {attempt}: {actions:?}"
            );
            h.apply(Outcome::PullStarted {
                replica: web.id.clone(),
            });
            h.decide();
            let expected = if attempt == 1 {
                ReplicaState::Pulling
            } else {
                ReplicaState::Pending
            };
            assert_eq!(h.last(&web.id).state(), expected, "attempt {attempt}");
            h.apply(Outcome::Image {
                replica: web.id.clone(),
                result: Err(not_found()),
            });
            if attempt < 3 {
                assert_eq!(h.decide(), [], "attempt {attempt}: no retry at once");
                let report = h.last(&web.id);
                assert_eq!(report.state(), ReplicaState::Pending);
                assert_eq!(report.code, "image_pull_failed");
                assert_eq!(report.details["reason"], "image_not_found");
                assert_eq!(report.details["attempt"], attempt.to_string());
                let delay = retry_delay(attempt).as_millis() as i64;
                assert_eq!(
                    report.details["next_retry_at"],
                    crate::cli::view::time(h.facts.now_ms + delay).unwrap()
                );
                h.advance(delay - 1);
                assert_eq!(h.decide(), [], "not before the retry time");
                h.advance(1);
            }
        }
        assert_eq!(h.decide(), []);
        let failed = h.last(&web.id);
        assert_eq!(failed.state(), ReplicaState::Failed);
        assert_eq!(failed.code, "image_pull_failed");
        assert_eq!(failed.details["reason"], "image_not_found");
        h.advance(3_600_000);
        h.relist(vec![]);
        assert_eq!(h.decide(), [], "failed sticks");
        // A new apply bumps the restart generation: the pull starts over.
        let mut again = web.clone();
        again.restart_generation = 1;
        h.want(again, spec("registry.example.com/web:1"));
        assert!(matches!(
            h.decide().as_slice(),
            [Action::EnsureImage { .. }]
        ));
    }

    #[test]
    fn depends_on_gates_the_start_until_the_condition_holds_somewhere() {
        let mut h = Harness::new();
        let web = desired("shop-web-1", "web");
        let mut gated = spec("nginx:1");
        let dependency = |condition| Dependency {
            condition,
            required: true,
            restart: false,
        };
        gated.depends_on = BTreeMap::from([
            (
                "db".to_owned(),
                dependency(DependencyCondition::ServiceHealthy),
            ),
            (
                "cache".to_owned(),
                dependency(DependencyCondition::ServiceStarted),
            ),
            (
                "optional".to_owned(),
                Dependency {
                    required: false,
                    ..dependency(DependencyCondition::ServiceHealthy)
                },
            ),
        ]);
        h.want(web.clone(), gated);
        h.boot(vec![]);
        h.decide();
        h.image_ready(&web);
        assert_eq!(h.decide(), []);
        let waiting = h.last(&web.id);
        assert_eq!(waiting.state(), ReplicaState::Pending);
        assert_eq!(
            waiting.message,
            "waiting for service cache to be started (depends_on), \
             service db to be healthy (depends_on)"
        );
        let key = |service: &str| ("shop".to_owned(), service.to_owned());
        h.facts.started.insert(key("cache"));
        h.facts.started.insert(key("db"));
        assert_eq!(h.decide(), [], "db must be healthy, not only started");
        assert_eq!(
            h.last(&web.id).message,
            "waiting for service db to be healthy (depends_on)"
        );
        h.facts.healthy.insert(key("db"));
        h.start(&web, "c1");
    }

    #[test]
    fn a_service_namespace_mode_waits_for_a_running_peer_on_this_node() {
        let mut h = Harness::new();
        let db = desired("shop-db-1", "db");
        let sidecar = desired("shop-sidecar-1", "sidecar");
        let mut shared = spec("busybox");
        shared.container.network_mode = Some("service:db".into());
        h.want(sidecar.clone(), shared);
        h.boot(vec![]);
        h.decide();
        h.image_ready(&sidecar);
        assert_eq!(h.decide(), []);
        assert!(
            h.last(&sidecar.id).message.contains(
                "a running replica of service db on this node (network_mode: service:db)"
            ),
            "{}",
            h.last(&sidecar.id).message
        );
        // The db replica runs elsewhere in the state's eyes but here in the engine's.
        h.apply(Outcome::Listed(Ok(vec![container(
            &db,
            "db1",
            Status::Running,
            Health::None,
        )])));
        h.facts.caught_up = false;
        let actions = h.decide();
        assert_eq!(
            actions,
            [Action::Run {
                desired: sidecar.clone(),
                peers: BTreeMap::from([("db".to_owned(), "jaco_shop-db-1".to_owned())]),
            }]
        );
    }

    #[test]
    fn a_changed_spec_replaces_the_container() {
        let mut h = Harness::new();
        let web = desired("shop-web-1", "web");
        h.want(web.clone(), spec("nginx:1"));
        h.boot(vec![container(&web, "old", Status::Running, Health::None)]);
        assert_eq!(h.decide(), []);
        let mut changed = web.clone();
        changed.spec_hash = "h2".into();
        let mut new_spec = spec("nginx:2");
        new_spec.spec_hash = "h2".into();
        h.want(changed.clone(), new_spec);
        assert_eq!(h.decide(), [remove(&web, "old")]);
        assert_eq!(
            h.last(&web.id).message,
            "replacing the container: the spec changed"
        );
        h.removed(&web, false);
        assert_eq!(
            h.decide(),
            [Action::EnsureImage {
                replica: web.id.clone(),
                image: "nginx:2".into(),
                policy: PullPolicy::Missing,
            }]
        );
        h.image_ready(&web);
        h.start(&changed, "new");
        assert_eq!(h.last(&web.id).spec_hash, "h2");
    }

    #[test]
    fn a_failed_replica_no_longer_desired_keeps_its_stopped_container_until_the_next_apply() {
        let mut h = Harness::new();
        let web = desired("shop-web-2", "web");
        h.boot(vec![container(&web, "c9", Status::Exited(1), Health::None)]);
        h.apply(Outcome::Reported {
            observations: vec![ReplicaObserved {
                id: web.id.clone(),
                state: ReplicaState::Failed.into(),
                ..Default::default()
            }],
            result: Ok(()),
        });
        assert_eq!(
            h.decide(),
            [],
            "kept for inspection while revision 1 is current"
        );
        h.facts.deployments.insert("shop".into(), 2);
        assert_eq!(
            h.decide(),
            [Action::Remove {
                replica: web.id.clone(),
                container: "c9".into(),
                purge: true,
            }],
            "a new apply removes it"
        );
    }

    #[test]
    fn degraded_and_exited_containers_are_restarted_until_the_budget_is_spent() {
        let mut h = Harness::new();
        let web = desired("shop-web-1", "web");
        let mut checked = spec("nginx:1");
        checked.container.healthcheck = None;
        h.want(web.clone(), checked);
        h.boot(vec![]);
        h.decide();
        h.image_ready(&web);
        // First container: unhealthy → degraded → stopped → exit observed → removed.
        h.start(&web, "c1");
        h.decide();
        h.inspected(
            &web.id,
            container(&web, "c1", Status::Running, Health::Unhealthy),
        );
        assert_eq!(
            h.decide(),
            [Action::Stop {
                replica: web.id.clone(),
                container: "c1".into(),
            }]
        );
        assert_eq!(
            state_of(&h, &web.id),
            (ReplicaState::Degraded, String::new())
        );
        h.apply(Outcome::Stopped {
            replica: web.id.clone(),
            result: Ok(()),
        });
        assert_eq!(h.decide(), [inspect(&web)]);
        // Each restart: the exit is observed, the container removed and run again.
        for (attempt, id) in [(1, "c1"), (2, "c2")] {
            h.inspected(
                &web.id,
                container(&web, id, Status::Exited(143), Health::None),
            );
            assert_eq!(h.decide(), [remove(&web, id)]);
            let exited = h.last(&web.id);
            assert_eq!(exited.code, "container_exited");
            assert_eq!(exited.details["exit_code"], "143");
            assert_eq!(exited.restart_count, attempt);
            h.removed(&web, false);
            let next = format!("c{}", attempt + 1);
            h.start(&web, &next);
            h.decide();
        }
        // The third exit without ever running spends the budget; the container stays.
        h.inspected(
            &web.id,
            container(&web, "c3", Status::Exited(1), Health::None),
        );
        assert_eq!(h.decide(), []);
        let failed = h.last(&web.id);
        assert_eq!(failed.state(), ReplicaState::Failed);
        assert_eq!(failed.code, "restart_exhausted");
        assert_eq!(failed.container_id, "c3", "kept for inspection");
        h.advance(3_600_000);
        h.relist(vec![container(&web, "c3", Status::Exited(1), Health::None)]);
        assert_eq!(h.decide(), []);
        assert_eq!(
            h.last(&web.id).code,
            "restart_exhausted",
            "the exit is not counted twice"
        );
        // A new apply forgets the failure and recreates the container.
        let mut again = web.clone();
        again.restart_generation = 1;
        h.want(again.clone(), spec("nginx:1"));
        assert_eq!(h.decide(), [remove(&web, "c3")]);
        assert_eq!(
            h.last(&web.id).message,
            "replacing the container: a new apply restarts it"
        );
        h.removed(&web, false);
        assert!(matches!(
            h.decide().as_slice(),
            [Action::EnsureImage { .. }]
        ));
        assert_eq!(h.last(&web.id).restart_count, 0);
    }

    #[test]
    fn a_container_left_created_is_replaced() {
        let mut h = Harness::new();
        let web = desired("shop-web-1", "web");
        h.want(web.clone(), spec("nginx:1"));
        // The daemon stopped between create and start.
        h.boot(vec![container(&web, "c0", Status::Created, Health::None)]);
        assert_eq!(h.decide(), [remove(&web, "c0")]);
        h.removed(&web, false);
        // The image is known to be on the node; a container this agent just started is not
        // mistaken for one left created.
        h.start(&web, "c1");
        assert_eq!(h.decide(), [inspect(&web)]);
    }

    #[test]
    fn containers_not_desired_here_are_removed_once_the_state_caught_up() {
        let mut h = Harness::new();
        let gone = desired("shop-web-9", "web");
        let elsewhere = ReplicaDesired {
            node: "n2".into(),
            ..desired("shop-web-8", "web")
        };
        h.facts.caught_up = false;
        h.boot(vec![
            container(&gone, "x9", Status::Running, Health::None),
            // Another node's container on a shared engine is never touched.
            container(&elsewhere, "x8", Status::Running, Health::None),
        ]);
        assert_eq!(h.decide(), [], "not before the state caught up");
        h.facts.caught_up = true;
        let actions = h.decide();
        assert!(
            actions.contains(&Action::Remove {
                replica: gone.id.clone(),
                container: "x9".into(),
                purge: true,
            }),
            "{actions:?}"
        );
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Remove { replica, .. } if *replica == elsewhere.id)),
            "{actions:?}"
        );
        h.removed(&gone, true);
        h.advance(INSPECT_RUNNING_MS);
        assert!(
            !h.decide()
                .iter()
                .any(|a| matches!(a, Action::Remove { .. })),
            "removed once"
        );
        assert!(
            h.reports.is_empty(),
            "replicas not desired here are not reported"
        );
    }

    #[test]
    fn a_restarted_agent_adopts_running_containers_without_touching_them() {
        // First life: bring the replica up and keep what it reported.
        let mut first = Harness::new();
        let web = desired("shop-web-1", "web");
        first.want(web.clone(), spec("nginx:1"));
        first.boot(vec![]);
        first.bring_up(&web, "c1");
        let stored = first.last(&web.id).clone();

        let mut h = Harness::new();
        h.want(web.clone(), spec("nginx:1"));
        h.facts.stored.insert(web.id.clone(), stored.clone());
        h.facts.docker_condition = Some(true);
        h.boot(vec![container(&web, "c1", Status::Running, Health::None)]);
        assert_eq!(h.decide(), [], "the listing was an inspection");
        h.advance(INSPECT_RUNNING_MS);
        assert_eq!(h.decide(), [inspect(&web)], "still running: only inspected");
        h.inspected(
            &web.id,
            container(&web, "c1", Status::Running, Health::None),
        );
        assert_eq!(h.decide(), []);
        assert!(
            h.reports.is_empty(),
            "the state already says running: {:?}",
            h.reports
        );
        assert!(
            h.conditions.is_empty(),
            "the docker condition is already ok"
        );
    }

    #[test]
    fn an_unreachable_engine_is_reported_and_recovery_starts_over() {
        let (mut h, web) = Harness::booted();
        h.bring_up(&web, "c1");
        h.advance(INSPECT_RUNNING_MS);
        assert_eq!(h.decide().len(), 1);
        h.apply(Outcome::Inspected {
            replica: web.id.clone(),
            result: Err(down()),
        });
        assert_eq!(h.decide(), [], "the next ping waits");
        let pending = h.last(&web.id);
        assert_eq!(pending.state(), ReplicaState::Pending);
        assert_eq!(pending.code, "docker_error");
        let condition = h.conditions.last().unwrap();
        assert!(!condition.ok);
        assert_eq!(condition.code, "docker_error");
        h.advance(PING_EVERY_MS);
        assert_eq!(h.decide(), [Action::Ping]);
        h.apply(Outcome::Pinged(Err(down())));
        h.advance(PING_EVERY_MS - 1);
        assert_eq!(h.decide(), []);
        h.advance(1);
        assert_eq!(h.decide(), [Action::Ping]);
        h.apply(Outcome::Pinged(Ok(())));
        assert_eq!(h.decide(), [Action::List]);
        assert!(h.conditions.last().unwrap().ok);
        h.apply(Outcome::Listed(Ok(vec![container(
            &web,
            "c1",
            Status::Running,
            Health::None,
        )])));
        assert_eq!(h.decide(), [], "the listing was an inspection");
        assert_eq!(
            h.last(&web.id).state(),
            ReplicaState::Running,
            "the container never stopped: it is running again at once"
        );
    }

    #[test]
    fn the_engine_refusing_a_container_is_retried_then_failed() {
        let (mut h, web) = Harness::booted();
        h.decide();
        h.image_ready(&web);
        for attempt in 1..=RESTART_BUDGET {
            let actions = h.decide();
            assert!(
                matches!(actions.as_slice(), [Action::Run { .. }]),
                "{actions:?}"
            );
            h.apply(Outcome::Ran {
                replica: web.id.clone(),
                result: Err(refused("invalid mount config")),
            });
            // A refusal also asks for a fresh listing (the name may be taken).
            let mut listing = h.decide();
            if listing == [Action::List] {
                h.apply(Outcome::Listed(Ok(vec![])));
                listing = h.decide();
            }
            assert_eq!(listing, [], "attempt {attempt}: no immediate retry");
            h.advance(retry_delay(attempt).as_millis() as i64);
        }
        let failed = h.last(&web.id);
        assert_eq!(failed.state(), ReplicaState::Failed);
        assert_eq!(failed.code, "docker_error");
        assert!(
            failed.message.contains("invalid mount config"),
            "{}",
            failed.message
        );
        assert_eq!(h.decide(), []);
    }

    #[test]
    fn an_unresolvable_spec_fails_the_replica_without_touching_the_engine() {
        let mut h = Harness::new();
        let web = desired("shop-web-1", "web");
        h.facts.wants.push(Want {
            desired: web.clone(),
            spec: Err(
                Error::new(Code::Internal, "revision 1 of shop does not resolve")
                    .with("reason", "revision_unresolvable"),
            ),
        });
        h.boot(vec![]);
        assert_eq!(h.decide(), []);
        let failed = h.last(&web.id);
        assert_eq!(failed.state(), ReplicaState::Failed);
        assert_eq!(failed.code, "internal");
        assert_eq!(failed.details["reason"], "revision_unresolvable");
    }

    #[test]
    fn reports_go_out_when_something_changed_and_never_overwrite_updating_with_running() {
        let (mut h, web) = Harness::booted();
        h.bring_up(&web, "c1");
        let count = h.reports.len();
        h.advance(INSPECT_RUNNING_MS);
        h.decide();
        h.inspected(
            &web.id,
            container(&web, "c1", Status::Running, Health::None),
        );
        assert_eq!(h.decide(), []);
        assert_eq!(h.reports.len(), count, "no change, no report");

        // The scheduler marked it updating: running is not news, degraded is.
        let mut updating = h.last(&web.id).clone();
        updating.state = ReplicaState::Updating.into();
        h.facts.stored.insert(web.id.clone(), updating);
        let fresh = Harness::new();
        h.core.acked = fresh.core.acked;
        h.advance(INSPECT_RUNNING_MS);
        h.decide();
        h.inspected(
            &web.id,
            container(&web, "c1", Status::Running, Health::None),
        );
        h.decide();
        assert_eq!(
            h.reports.len(),
            count,
            "running does not overwrite updating"
        );
        h.advance(INSPECT_RUNNING_MS);
        h.decide();
        h.inspected(
            &web.id,
            container(&web, "c1", Status::Running, Health::Unhealthy),
        );
        h.decide();
        assert_eq!(h.last(&web.id).state(), ReplicaState::Degraded);
    }

    #[test]
    fn a_failed_report_is_retried_after_a_pause() {
        let (mut h, _) = Harness::booted();
        let actions = h.core.decide(&h.facts);
        let report = actions
            .iter()
            .find_map(|a| match a {
                Action::Report(o) => Some(o.clone()),
                _ => None,
            })
            .expect("a first report");
        h.apply(Outcome::Reported {
            observations: report,
            result: Err(Error::new(Code::NoLeader, "no leader")),
        });
        let retried = |h: &mut Harness| {
            h.core
                .decide(&h.facts)
                .iter()
                .any(|a| matches!(a, Action::Report(_)))
        };
        assert!(!retried(&mut h));
        h.advance(RETRY_AFTER_MS);
        assert!(retried(&mut h));
    }

    #[test]
    fn an_engine_event_brings_the_next_inspection_forward() {
        let (mut h, web) = Harness::booted();
        h.bring_up(&web, "c1");
        assert_eq!(h.decide(), []);
        h.apply(Outcome::Event {
            replica: Some(web.id.clone()),
            action: "die".into(),
        });
        assert_eq!(h.decide(), [inspect(&web)]);
        // A container that appeared without this agent: list again.
        h.apply(Outcome::Inspected {
            replica: web.id.clone(),
            result: Ok(Some(container(&web, "c1", Status::Running, Health::None))),
        });
        h.apply(Outcome::Event {
            replica: Some("shop-web-7".into()),
            action: "start".into(),
        });
        assert_eq!(h.decide(), [Action::List]);
    }

    #[test]
    fn a_deployment_without_replicas_here_loses_its_bridges_then_its_subnets() {
        let mut h = Harness::new();
        let web = desired("shop-web-1", "web");
        h.want(web.clone(), spec("nginx:1"));
        h.facts.deployments.insert("moved".into(), 3);
        h.facts.subnets = BTreeSet::from([
            ("shop".to_owned(), "default".to_owned()),
            ("moved".to_owned(), "default".to_owned()),
            ("moved".to_owned(), "back".to_owned()),
        ]);
        let network = |name: &str, deployment: &str| Labelled {
            name: name.into(),
            labels: BTreeMap::from([(LABEL_DEPLOYMENT.to_owned(), deployment.to_owned())]),
        };
        h.inventory = Inventory {
            networks: vec![
                network("jaco_shop_default", "shop"),
                network("jaco_moved_default", "moved"),
            ],
            ..Inventory::default()
        };
        h.boot(vec![container(&web, "w1", Status::Running, Health::None)]);
        h.decide();
        let release = |network: &str| Action::ReleaseSubnet {
            deployment: "moved".into(),
            network: network.into(),
        };
        let sweep: Vec<Action> = (h.decide().into_iter())
            .filter(|a| matches!(a, Action::RemoveNetwork(_) | Action::ReleaseSubnet { .. }))
            .collect();
        // The bridge goes first; a subnet whose bridge never existed goes at once; the bridge's
        // subnet waits for the next inventory, which no longer finds the bridge.
        assert_eq!(
            sweep,
            [
                Action::RemoveNetwork("jaco_moved_default".into()),
                release("back")
            ]
        );
        h.apply(Outcome::Cleaned {
            action: Action::RemoveNetwork("jaco_moved_default".into()),
            result: Ok(()),
        });
        h.inventory
            .networks
            .retain(|n| n.name != "jaco_moved_default");
        h.advance(INVENTORY_EVERY_MS);
        h.decide();
        let sweep = h.decide();
        assert!(sweep.contains(&release("default")), "{sweep:?}");
        assert!(
            !sweep.iter().any(
                |a| matches!(a, Action::ReleaseSubnet { deployment, .. } if deployment == "shop")
            ),
            "{sweep:?}"
        );
    }

    #[test]
    fn deleted_deployments_lose_their_networks_and_unless_kept_their_volumes() {
        let mut h = Harness::new();
        let web = desired("shop-web-1", "web");
        h.want(web.clone(), spec("nginx:1"));
        h.facts.tombstones = BTreeMap::from([("old".to_owned(), false), ("kept".to_owned(), true)]);
        let old_replica = ReplicaDesired {
            deployment: "old".into(),
            ..desired("old-web-1", "web")
        };
        let labelled = |name: &str, deployment: &str| Labelled {
            name: name.into(),
            labels: BTreeMap::from([
                (LABEL_CLUSTER_ID.to_owned(), "c1".to_owned()),
                (LABEL_DEPLOYMENT.to_owned(), deployment.to_owned()),
            ]),
        };
        h.inventory = Inventory {
            networks: vec![
                labelled("jaco_old_default", "old"),
                labelled("jaco_shop_default", "shop"),
                labelled("jaco_kept_default", "kept"),
            ],
            volumes: vec![
                labelled("jaco_old_data", "old"),
                labelled("jaco_kept_data", "kept"),
                labelled("jaco_gone_data", "gone"),
            ],
            file_dirs: vec!["shop-web-1".into(), "old-web-1".into(), "lost-web-3".into()],
        };
        h.facts.caught_up = false;
        h.boot(vec![
            container(&web, "w1", Status::Running, Health::None),
            container(&old_replica, "o1", Status::Exited(0), Health::None),
        ]);
        h.decide();
        assert_eq!(h.inventories, 0, "not before catching up");
        h.facts.caught_up = true;
        let actions = h.decide();
        assert_eq!(h.inventories, 1);
        assert!(
            actions.contains(&Action::Remove {
                replica: old_replica.id.clone(),
                container: "o1".into(),
                purge: true,
            }),
            "{actions:?}"
        );
        let cleanups = |actions: &[Action]| -> Vec<Action> {
            actions
                .iter()
                .filter(|a| {
                    matches!(
                        a,
                        Action::RemoveNetwork(_) | Action::RemoveVolume(_) | Action::RemoveFiles(_)
                    )
                })
                .cloned()
                .collect()
        };
        // old's container is still being removed: its network and volume wait.
        assert_eq!(
            cleanups(&h.decide()),
            [
                Action::RemoveNetwork("jaco_kept_default".into()),
                Action::RemoveFiles("lost-web-3".into()),
            ]
        );
        h.removed(&old_replica, true);
        h.advance(INVENTORY_EVERY_MS);
        h.decide();
        assert_eq!(h.inventories, 2);
        let actions = cleanups(&h.decide());
        for expected in [
            Action::RemoveNetwork("jaco_old_default".into()),
            Action::RemoveVolume("jaco_old_data".into()),
            Action::RemoveFiles("old-web-1".into()),
        ] {
            assert!(actions.contains(&expected), "{expected:?} in {actions:?}");
        }
        for kept in ["jaco_shop_default", "jaco_kept_data", "jaco_gone_data"] {
            assert!(
                !actions.iter().any(|a| matches!(
                    a,
                    Action::RemoveNetwork(n) | Action::RemoveVolume(n) if n == kept
                )),
                "{kept} must stay: {actions:?}"
            );
        }
        // A new tombstone asks for an inventory at once.
        h.facts.tombstones.insert("other".into(), false);
        h.decide();
        assert_eq!(h.inventories, 3);
    }
}
