//! From what Docker says about a replica's container to the replica's state in the closed set
//! (status-and-errors seed: pending, pulling, running, degraded, updating, failed, stopped).
//!
//! Rules: with a healthcheck, `running` needs a healthy report and `unhealthy` is `degraded`;
//! without one (or with `healthcheck: {disable: true}`), `running` needs
//! [`HEALTHY_CONSECUTIVE_COUNT`] consecutive polls that saw the container running, and that
//! count belongs to the (replica, container) pair, so a re-dispatch of the same container keeps
//! it (prior art bug #152). A container that exits is reported with `container_exited` and its
//! exit code; after [`RESTART_BUDGET`] restarts in a row that never reached `running`, the
//! replica is `failed` with `restart_exhausted`, which only a new apply clears
//! ([`Memory::forget`]). Pure: inspections in, verdicts out; this module must not call Docker
//! or restart anything.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::proto::v1::ReplicaState;

/// Consecutive running polls that stand in for a healthcheck.
pub const HEALTHY_CONSECUTIVE_COUNT: u32 = 5;

/// Restarts in a row that never reached `running` before the replica fails.
pub const RESTART_BUDGET: u32 = 3;

/// Docker's health report of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The container has no healthcheck.
    None,
    /// Within the start period, or no check finished yet.
    Starting,
    /// The last checks passed.
    Healthy,
    /// The checks failed their retries.
    Unhealthy,
}

/// Docker's `State.Status` of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    Created,
    /// Running (possibly paused by Docker's restart logic: jaco restarts, not Docker).
    Running,
    /// Docker is restarting it.
    Restarting,
    /// Exited with this code.
    Exited(i64),
    /// Docker could not stop or remove it cleanly.
    Dead,
}

/// One inspection of a replica's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The container.
    pub container_id: String,
    /// Its name, without Docker's leading `/` (`jaco_<replica id>` for jaco's containers).
    pub name: String,
    /// Its status.
    pub status: Status,
    /// Its health.
    pub health: Health,
    /// Its labels (jaco's identify the replica, see [`super::ReplicaIdentity`]).
    pub labels: BTreeMap<String, String>,
    /// When it last started (0 when it never did).
    pub started_at_unix_ms: i64,
    /// The id of the image it runs (`sha256:…`).
    pub image_id: String,
    /// Its IPv4 address on each Docker network it is attached to, by network name.
    pub addresses: BTreeMap<String, String>,
}

/// The replica's observed state, code and details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The state.
    pub state: ReplicaState,
    /// A code from the closed set, or empty.
    pub code: &'static str,
    /// What a person reads.
    pub message: String,
    /// Structured context.
    pub details: BTreeMap<String, String>,
}

impl Verdict {
    fn new(state: ReplicaState, message: impl Into<String>) -> Self {
        Verdict {
            state,
            code: "",
            message: message.into(),
            details: BTreeMap::new(),
        }
    }
}

/// What the observer remembers between polls.
#[derive(Debug, Default)]
pub struct Memory {
    running_polls: HashMap<(String, String), u32>,
    reached_running: HashSet<(String, String)>,
    failed_restarts: HashMap<String, u32>,
    exits_counted: HashSet<(String, String)>,
}

impl Memory {
    /// Takes over a container the replicated state last saw `running` (a daemon restart
    /// adopting its containers): it counts as having reached running, so the next running poll
    /// reports `running` again instead of starting the count over.
    pub fn adopt(&mut self, replica: &str, container: &str) {
        let key = (replica.to_owned(), container.to_owned());
        self.running_polls
            .insert(key.clone(), HEALTHY_CONSECUTIVE_COUNT);
        self.reached_running.insert(key);
    }

    /// Restarts in a row that never reached running (what `restart_count` reports).
    pub fn restarts(&self, replica: &str) -> u32 {
        self.failed_restarts.get(replica).copied().unwrap_or(0)
    }

    /// Whether the replica spent its restart budget (only a new apply clears it).
    pub fn exhausted(&self, replica: &str) -> bool {
        self.restarts(replica) >= RESTART_BUDGET
    }

    /// Forgets a replica (a new apply, or the replica was removed): its counters start over.
    pub fn forget(&mut self, replica: &str) {
        self.running_polls.retain(|(r, _), _| r != replica);
        self.reached_running.retain(|(r, _)| r != replica);
        self.exits_counted.retain(|(r, _)| r != replica);
        self.failed_restarts.remove(replica);
    }
}

/// The verdict for `replica` from one `inspection`, updating `memory`.
pub fn observe(
    memory: &mut Memory,
    replica: &str,
    has_healthcheck: bool,
    inspection: &Inspection,
) -> Verdict {
    let key = (replica.to_owned(), inspection.container_id.clone());
    if memory.exhausted(replica) {
        return exhausted();
    }
    match inspection.status {
        Status::Created | Status::Restarting => {
            Verdict::new(ReplicaState::Pending, "the container is starting")
        }
        Status::Dead => {
            let mut verdict = Verdict::new(
                ReplicaState::Failed,
                "Docker reports the container dead (it could not be stopped or removed)",
            );
            verdict.code = "docker_error";
            verdict
                .details
                .insert("container_id".into(), inspection.container_id.clone());
            verdict
        }
        Status::Exited(exit_code) => {
            let reached = memory.reached_running.contains(&key);
            if memory.exits_counted.insert(key.clone()) {
                let failures = memory
                    .failed_restarts
                    .entry(replica.to_owned())
                    .or_default();
                // An exit after the container had served resets the budget: only restarts
                // that never reach running count towards it.
                *failures = if reached { 0 } else { *failures + 1 };
                if *failures >= RESTART_BUDGET {
                    return exhausted();
                }
            }
            let mut verdict = Verdict::new(
                ReplicaState::Pending,
                format!("the container exited with code {exit_code}; it is restarted"),
            );
            verdict.code = "container_exited";
            verdict
                .details
                .insert("exit_code".into(), exit_code.to_string());
            verdict
        }
        Status::Running => running(memory, key, has_healthcheck, inspection.health),
    }
}

fn running(
    memory: &mut Memory,
    key: (String, String),
    has_healthcheck: bool,
    health: Health,
) -> Verdict {
    let healthy = if has_healthcheck {
        match health {
            Health::Healthy => true,
            Health::Unhealthy => {
                return Verdict::new(ReplicaState::Degraded, "the healthcheck reports unhealthy");
            }
            Health::Starting | Health::None => false,
        }
    } else {
        let polls = memory.running_polls.entry(key.clone()).or_default();
        *polls = polls.saturating_add(1);
        *polls >= HEALTHY_CONSECUTIVE_COUNT
    };
    if healthy {
        memory.failed_restarts.remove(&key.0);
        memory.reached_running.insert(key);
        Verdict::new(ReplicaState::Running, "running")
    } else if memory.reached_running.contains(&key) {
        // Once running, a check still in its interval does not demote the replica.
        Verdict::new(ReplicaState::Running, "running")
    } else {
        Verdict::new(
            ReplicaState::Pending,
            "the container runs; waiting for it to be healthy",
        )
    }
}

fn exhausted() -> Verdict {
    let mut verdict = Verdict::new(
        ReplicaState::Failed,
        format!(
            "the container was restarted {RESTART_BUDGET} times in a row without becoming \
             healthy; a new apply retries it"
        ),
    );
    verdict.code = "restart_exhausted";
    verdict
        .details
        .insert("restarts".into(), RESTART_BUDGET.to_string());
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect(container: &str, status: Status, health: Health) -> Inspection {
        Inspection {
            container_id: container.into(),
            name: "jaco_r1".into(),
            status,
            health,
            labels: BTreeMap::new(),
            started_at_unix_ms: 0,
            image_id: String::new(),
            addresses: BTreeMap::new(),
        }
    }

    #[test]
    fn without_a_healthcheck_five_running_polls_make_running() {
        let mut memory = Memory::default();
        let up = inspect("c1", Status::Running, Health::None);
        for _ in 1..HEALTHY_CONSECUTIVE_COUNT {
            assert_eq!(
                observe(&mut memory, "r1", false, &up).state,
                ReplicaState::Pending
            );
        }
        assert_eq!(
            observe(&mut memory, "r1", false, &up).state,
            ReplicaState::Running
        );
    }

    #[test]
    fn the_poll_count_survives_a_redispatch_of_the_same_container_but_not_a_new_one() {
        let mut memory = Memory::default();
        let up = inspect("c1", Status::Running, Health::None);
        for _ in 0..3 {
            observe(&mut memory, "r1", false, &up);
        }
        // A re-dispatch observes the same (replica, container): the count goes on.
        observe(&mut memory, "r1", false, &up);
        assert_eq!(
            observe(&mut memory, "r1", false, &up).state,
            ReplicaState::Running
        );
        // A new container for the replica starts from zero.
        let fresh = inspect("c2", Status::Running, Health::None);
        assert_eq!(
            observe(&mut memory, "r1", false, &fresh).state,
            ReplicaState::Pending
        );
    }

    #[test]
    fn with_a_healthcheck_health_decides() {
        let mut memory = Memory::default();
        let starting = inspect("c1", Status::Running, Health::Starting);
        let healthy = inspect("c1", Status::Running, Health::Healthy);
        let unhealthy = inspect("c1", Status::Running, Health::Unhealthy);
        assert_eq!(
            observe(&mut memory, "r1", true, &starting).state,
            ReplicaState::Pending
        );
        assert_eq!(
            observe(&mut memory, "r1", true, &healthy).state,
            ReplicaState::Running
        );
        assert_eq!(
            observe(&mut memory, "r1", true, &unhealthy).state,
            ReplicaState::Degraded
        );
        assert_eq!(
            observe(&mut memory, "r1", true, &healthy).state,
            ReplicaState::Running
        );
    }

    #[test]
    fn an_exit_is_reported_with_its_code() {
        let mut memory = Memory::default();
        let verdict = observe(
            &mut memory,
            "r1",
            false,
            &inspect("c1", Status::Exited(3), Health::None),
        );
        assert_eq!(verdict.state, ReplicaState::Pending);
        assert_eq!(verdict.code, "container_exited");
        assert_eq!(verdict.details["exit_code"], "3");
        // Observing the same exit again does not spend more of the budget.
        observe(
            &mut memory,
            "r1",
            false,
            &inspect("c1", Status::Exited(3), Health::None),
        );
        observe(
            &mut memory,
            "r1",
            false,
            &inspect("c2", Status::Exited(3), Health::None),
        );
        let verdict = observe(
            &mut memory,
            "r1",
            false,
            &inspect("c3", Status::Exited(3), Health::None),
        );
        assert_eq!(verdict.state, ReplicaState::Failed);
        assert_eq!(verdict.code, "restart_exhausted");
    }

    #[test]
    fn failed_sticks_until_a_new_apply_and_serving_resets_the_budget() {
        let mut memory = Memory::default();
        for container in ["c1", "c2", "c3"] {
            observe(
                &mut memory,
                "r1",
                false,
                &inspect(container, Status::Exited(1), Health::None),
            );
        }
        let up = inspect("c4", Status::Running, Health::Healthy);
        assert_eq!(
            observe(&mut memory, "r1", true, &up).code,
            "restart_exhausted"
        );
        memory.forget("r1");
        assert_eq!(
            observe(&mut memory, "r1", true, &up).state,
            ReplicaState::Running
        );

        // Two failed restarts, then one that served: the budget starts over.
        let mut memory = Memory::default();
        for container in ["a", "b"] {
            observe(
                &mut memory,
                "r2",
                false,
                &inspect(container, Status::Exited(1), Health::None),
            );
        }
        observe(
            &mut memory,
            "r2",
            true,
            &inspect("c", Status::Running, Health::Healthy),
        );
        observe(
            &mut memory,
            "r2",
            true,
            &inspect("c", Status::Exited(0), Health::None),
        );
        let verdict = observe(
            &mut memory,
            "r2",
            false,
            &inspect("d", Status::Exited(1), Health::None),
        );
        assert_eq!(verdict.state, ReplicaState::Pending);
        assert_eq!(verdict.code, "container_exited");
    }

    #[test]
    fn an_adopted_running_container_stays_running() {
        let mut memory = Memory::default();
        memory.adopt("r1", "c1");
        let up = inspect("c1", Status::Running, Health::None);
        assert_eq!(
            observe(&mut memory, "r1", false, &up).state,
            ReplicaState::Running
        );
        let starting = inspect("c1", Status::Running, Health::Starting);
        assert_eq!(
            observe(&mut memory, "r1", true, &starting).state,
            ReplicaState::Running,
            "a check still in its interval does not demote an adopted replica"
        );
        // Another container of the replica is not adopted.
        let other = inspect("c2", Status::Running, Health::None);
        assert_eq!(
            observe(&mut memory, "r1", false, &other).state,
            ReplicaState::Pending
        );
        assert_eq!(memory.restarts("r1"), 0);
        assert!(!memory.exhausted("r1"));
    }

    #[test]
    fn a_dead_container_is_a_docker_error() {
        let mut memory = Memory::default();
        let verdict = observe(
            &mut memory,
            "r1",
            true,
            &inspect("c1", Status::Dead, Health::None),
        );
        assert_eq!(verdict.state, ReplicaState::Failed);
        assert_eq!(verdict.code, "docker_error");
    }
}
