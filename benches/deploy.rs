//! Deploy benchmark: `Deploy.Apply` → all 10 replicas running (one service, 1 s-interval
//! healthcheck, image present) on a one-node jaco cluster, interleaved run by run with
//! `docker-compose up -d` until every container is healthy (scripts/bench-compose-up.sh) on
//! the same compose file and the same engine; medians of 5 and their ratio.
//!
//! Run: `cargo bench --bench deploy` (needs root, iproute2, Docker, busybox-static and
//! docker-compose; results go to docs/benchmarks.md by hand, with the date and machine). It
//! asserts nothing about the figures and is skipped by the test runner.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use jaco::proto::v1 as pb;
use support::deploy::{Deployer, docker_lines, replicas_of};
use support::docker::busybox_image;

const RUNS: usize = 5;
const REPLICAS: usize = 10;
const DEADLINE: Duration = Duration::from_secs(120);

fn workload() -> (String, String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/web10");
    let read = |file: &str| {
        std::fs::read_to_string(format!("{dir}/{file}")).unwrap_or_else(|e| panic!("{file}: {e}"))
    };
    (read("jaco.yaml"), read("compose.yaml"))
}

/// One jaco run: apply, then poll status until every replica runs; then delete and wait until
/// the containers are gone (not timed).
async fn jaco_run(d: &mut Deployer, jaco_yaml: &str, compose_yaml: &str) -> Duration {
    let started = Instant::now();
    let applied = d.apply(jaco_yaml, compose_yaml).await;
    loop {
        let replicas = replicas_of(&d.status().await, &applied.deployment);
        if replicas.len() == REPLICAS
            && replicas
                .iter()
                .all(|r| r.state == pb::ReplicaState::Running)
        {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "not running: {replicas:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    d.client
        .delete(pb::DeleteRequest {
            deployment: applied.deployment,
            keep_volumes: false,
        })
        .await
        .expect("delete");
    let label = format!("label=jaco.cluster_id={}", d.cluster_id);
    let gone = Instant::now();
    while !docker_lines(&["ps", "-aq", "--filter", &label]).is_empty() {
        assert!(gone.elapsed() < DEADLINE, "containers left after delete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    took
}

/// One docker-compose run through the peer script; its reported milliseconds.
fn compose_run() -> Duration {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench-compose-up.sh");
    let output = Command::new(script)
        .args(["--runs", "1"])
        .output()
        .expect("run bench-compose-up.sh");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "compose run failed: {text}");
    let ms: u64 = text
        .split_whitespace()
        .skip_while(|w| *w != "compose_up_wait_ms")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no compose_up_wait_ms in: {text}"));
    Duration::from_millis(ms)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    busybox_image();
    let (jaco_yaml, compose_yaml) = workload();
    let mut d = Deployer::start("").await;
    let (mut jaco, mut compose) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let j = jaco_run(&mut d, &jaco_yaml, &compose_yaml).await;
        let c = compose_run();
        println!(
            "run {run}: jaco {} ms, docker-compose {} ms",
            j.as_millis(),
            c.as_millis()
        );
        jaco.push(j);
        compose.push(c);
    }
    let (j, c) = (median(jaco), median(compose));
    println!();
    println!("| tool | runs | median ms |");
    println!("|---|---|---|");
    println!("| jaco apply → 10 running | {RUNS} | {} |", j.as_millis());
    println!(
        "| docker-compose up -d → 10 healthy | {RUNS} | {} |",
        c.as_millis()
    );
    println!(
        "\nratio jaco / docker-compose: {:.2}",
        j.as_secs_f64() / c.as_secs_f64()
    );
}
