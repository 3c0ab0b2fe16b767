//! Scheduler scale benchmark (SPEC §11: "place 100,000 replicas on 1,000 simulated nodes
//! (through raft) ≤ 10 s"): a real in-process member (openraft single voter, fsynced redb log,
//! the real state machine) with simulated nodes (`benches/sim`), D deployments of one spread
//! service with R replicas each, placed by the real `scheduler::plan::reconcile` and committed as
//! `SchedulerBatch` commands through raft.
//!
//! Two ways of driving the scheduler, each on a fresh cluster per run:
//! - `step`: the body of `scheduler::run` by hand (reconcile under the read lock, submit the
//!   batch, repeat until the plan is empty), so that reconcile and commit are timed apart; then
//!   the simulated runtime reports every replica running and one more reconcile must be empty.
//! - `loop`: the real `scheduler::run` task (watch-driven, debounced) placing while the
//!   deployments are being applied; timed from the first apply until every replica is desired
//!   and every deployment `active`.
//!
//! Run: `cargo bench --bench scheduler_scale` with `SCALE_NODES` (1000), `SCALE_DEPLOYMENTS`
//! (1000), `SCALE_REPLICAS` (replicas per deployment, 100), `SCALE_RUNS` (3) and `SCALE_MODE`
//! (`step`, `loop` or `both`). Results go to docs/benchmarks.md by hand. Not a test: it asserts
//! only that the scheduler converged, and is skipped by the test runner.

mod sim;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jaco::api::auth::Identity;
use jaco::proto::v1 as pb;
use jaco::proto::v1::command::Kind;
use jaco::scheduler::plan::{self, Settings};
use prost::Message as _;
use sim::SimCluster;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Shape {
    nodes: usize,
    deployments: usize,
    replicas: u32,
}

impl Shape {
    fn total(&self) -> usize {
        self.deployments * self.replicas as usize
    }

    fn deploys(&self) -> Vec<(Identity, Kind)> {
        (0..self.deployments)
            .map(|d| sim::deployment(&format!("app-{d:05}"), self.replicas))
            .collect()
    }
}

/// Checks the converged placement: every replica desired, every deployment active, replicas of
/// a service on distinct nodes while nodes remain.
fn check_placed(cluster: &SimCluster, shape: &Shape) {
    cluster.member.read(|state| {
        let placed = state.replicas_desired().count();
        assert_eq!(placed, shape.total(), "replicas placed");
        assert!(
            state
                .deployments()
                .all(|d| d.status() == pb::DeploymentStatus::Active),
            "every deployment active"
        );
        let distinct: BTreeSet<(&str, &str)> = state
            .replicas_desired()
            .map(|r| (r.deployment.as_str(), r.node.as_str()))
            .collect();
        if (shape.replicas as usize) <= shape.nodes {
            assert_eq!(distinct.len(), shape.total(), "spread over distinct nodes");
        }
    });
}

#[derive(Default)]
struct StepFigures {
    setup_ms: f64,
    deploy_ms: f64,
    reconcile_ms: Vec<f64>,
    commit_ms: Vec<f64>,
    batch_bytes: Vec<usize>,
    batch_upserts: Vec<usize>,
    place_ms: f64,
    place_entries: u64,
    report_ms: f64,
    reports: usize,
    steady_reconcile_ms: f64,
    total_entries: u64,
}

async fn step_run(shape: &Shape) -> StepFigures {
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let cluster = SimCluster::start(dir.path(), shape.nodes).await;
    let mut f = StepFigures {
        setup_ms: ms(started.elapsed()),
        ..Default::default()
    };
    let settings = Settings::default();
    let identity = Identity::Node(cluster.member.name.clone());
    let first = cluster.last_log_index();

    let started = Instant::now();
    cluster.submit_all(shape.deploys()).await;
    f.deploy_ms = ms(started.elapsed());
    for round in 0.. {
        assert!(round < 1_000, "the scheduler does not converge");
        let now = jaco::pki::now_unix_ms();
        let t = Instant::now();
        let plan = cluster
            .member
            .read(|state| plan::reconcile(state, now, &settings));
        f.reconcile_ms.push(ms(t.elapsed()));
        if plan.is_empty() {
            break;
        }
        f.batch_bytes.push(plan.batch.encoded_len());
        f.batch_upserts.push(plan.batch.upsert_replicas.len());
        let t = Instant::now();
        cluster
            .member
            .submit(&identity, Kind::SchedulerBatch(plan.batch))
            .await
            .expect("batch commits");
        f.commit_ms.push(ms(t.elapsed()));
    }
    f.place_ms = ms(started.elapsed());
    f.place_entries = cluster.last_log_index() - first;
    check_placed(&cluster, shape);

    let t = Instant::now();
    f.reports = cluster.observe_running().await;
    f.report_ms = ms(t.elapsed());
    let now = jaco::pki::now_unix_ms();
    let t = Instant::now();
    let plan = cluster
        .member
        .read(|state| plan::reconcile(state, now, &settings));
    f.steady_reconcile_ms = ms(t.elapsed());
    assert!(plan.is_empty(), "converged: nothing left to do");
    f.total_entries = cluster.last_log_index();
    cluster.member.shutdown().await;
    f
}

struct LoopFigures {
    place_ms: f64,
    place_entries: u64,
}

async fn loop_run(shape: &Shape) -> LoopFigures {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = SimCluster::start(dir.path(), shape.nodes).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(jaco::scheduler::run(
        cluster.member.clone(),
        Settings::default(),
        stopped,
    ));
    let first = cluster.last_log_index();
    let started = Instant::now();
    cluster.submit_all(shape.deploys()).await;
    let total = shape.total();
    loop {
        let done = cluster.member.read(|state| {
            state.replicas_desired().count() == total
                && state
                    .deployments()
                    .all(|d| d.status() == pb::DeploymentStatus::Active)
        });
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not placed in 10 min"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let figures = LoopFigures {
        place_ms: ms(started.elapsed()),
        place_entries: cluster.last_log_index() - first,
    };
    check_placed(&cluster, shape);
    let _ = stop.send(true);
    let _ = scheduler.await;
    cluster.member.shutdown().await;
    figures
}

fn list(values: &[f64]) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:.0}")).collect();
    parts.join(" / ")
}

#[tokio::main]
async fn main() {
    // `cargo nextest run --all-targets` lists every bench binary: list nothing, run nothing.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let shape = Shape {
        nodes: env("SCALE_NODES", 1_000),
        deployments: env("SCALE_DEPLOYMENTS", 1_000),
        replicas: env("SCALE_REPLICAS", 100) as u32,
    };
    let runs = env("SCALE_RUNS", 3);
    let mode = std::env::var("SCALE_MODE").unwrap_or_else(|_| "both".to_owned());
    println!(
        "scheduler_scale: {} nodes, {} deployments x {} replicas = {} replicas, {runs} runs, mode {mode}",
        shape.nodes,
        shape.deployments,
        shape.replicas,
        shape.total()
    );
    if mode == "step" || mode == "both" {
        let mut place = Vec::new();
        let mut first_reconcile = Vec::new();
        let mut steady = Vec::new();
        for run in 1..=runs {
            let f = step_run(&shape).await;
            println!(
                "step run {run}: setup {:.0} ms | deploy {:.0} ms | reconcile ms [{}] | \
                 batch commit ms [{}] | batch upserts {:?} | batch bytes {:?} | \
                 placed in {:.0} ms over {} raft entries | runtime reports {} in {:.0} ms | \
                 steady reconcile {:.1} ms | raft log {} entries | peak RSS {:.0} MiB",
                f.setup_ms,
                f.deploy_ms,
                list(&f.reconcile_ms),
                list(&f.commit_ms),
                f.batch_upserts,
                f.batch_bytes,
                f.place_ms,
                f.place_entries,
                f.reports,
                f.report_ms,
                f.steady_reconcile_ms,
                f.total_entries,
                sim::peak_rss_mib(),
            );
            place.push(f.place_ms);
            first_reconcile.push(f.reconcile_ms[0]);
            steady.push(f.steady_reconcile_ms);
        }
        println!(
            "step medians: placed {:.0} ms (bar 10,000 ms) | first reconcile {:.0} ms | \
             steady reconcile {:.1} ms",
            median(place),
            median(first_reconcile),
            median(steady)
        );
    }
    if mode == "loop" || mode == "both" {
        let mut place = Vec::new();
        for run in 1..=runs {
            let f = loop_run(&shape).await;
            println!(
                "loop run {run}: placed in {:.0} ms over {} raft entries | peak RSS {:.0} MiB",
                f.place_ms,
                f.place_entries,
                sim::peak_rss_mib()
            );
            place.push(f.place_ms);
        }
        println!(
            "loop median: placed {:.0} ms (bar 10,000 ms)",
            median(place)
        );
    }
}
