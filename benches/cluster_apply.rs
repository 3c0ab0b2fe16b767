//! Cluster apply benchmark (SPEC §11: "`jaco apply`, image present, 10 replica changes over 3
//! nodes, healthchecks with 1 s interval → all running ≤ 5 s"): on a 3-node container-tier
//! harness cluster (`testvm/cluster.sh`, every node its own dockerd and `jaco daemon`), times
//! `jaco apply` of 10 new replicas of `benches/web10` (busybox httpd, 1 s-interval healthcheck,
//! image pulled on every node beforehand) until it returns (it waits until every replica runs,
//! i.e. is healthy), interleaved run by run with `docker stack deploy` of the same compose file
//! on a Docker Swarm formed from the same three inner engines, timed until `docker service ls`
//! reports `10/10` (a swarm task with a healthcheck is running only once healthy). Both clocks
//! run inside node n0, so `docker exec` overhead is outside them. Prints every run, the
//! medians, ranges and the ratio jaco / swarm, and the harness's own cost (cluster up time,
//! node memory).
//!
//! Run: `cargo bench --bench cluster_apply --profile dev` (debug jaco; add nothing for the
//! release-LTO `bench` profile). Needs root, Docker, docker-registry, python3, busybox-static
//! (the harness's requirements). `JACO_BENCH_RUNS` sets the number of runs per tool (default
//! 5). Results go to docs/benchmarks.md by hand. It asserts nothing about the figures and is
//! skipped by the test runner. It must not touch the host engine beyond its own uniquely named
//! harness cluster, which `Drop` removes (`cluster.sh down`) also when a run fails; a SIGKILLed
//! run leaves the cluster behind (`testvm/cluster.sh down <name>`, name printed at start).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use support::cluster::Cluster;
use support::docker::busybox_image;

const REPLICAS: usize = 10;
const NODES: usize = 3;
const DEPLOYMENT: &str = "bench-web";
const STACK: &str = "bw";
/// Where n0 keeps the workload files.
const DIR: &str = "/tmp/bench";
/// Seconds either tool may take before the run fails.
const DEADLINE_S: u64 = 120;

/// The last line of a timed script's output: milliseconds.
fn millis(out: &str) -> Duration {
    let ms: u64 = out
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no milliseconds in: {out}"));
    Duration::from_millis(ms)
}

/// The web10 compose file with the registry image the nodes hold and a `version` key, which
/// `docker stack deploy` of Docker 20.10 requires and jaco ignores with a warning.
fn workload(image: &str) -> (String, String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/web10");
    let read = |file: &str| {
        std::fs::read_to_string(format!("{dir}/{file}")).unwrap_or_else(|e| panic!("{file}: {e}"))
    };
    let compose = read("compose.yaml");
    assert!(compose.contains("image: jaco-example/busybox:1"));
    let compose = format!(
        "version: \"3.8\"\n{}",
        compose.replace("image: jaco-example/busybox:1", &format!("image: {image}"))
    );
    (read("jaco.yaml"), compose)
}

/// Forms a swarm of the nodes' inner engines: init on n0 (advertising its cluster address),
/// the others join as workers; waits until `docker node ls` shows all of them ready.
fn form_swarm(cluster: &Cluster) {
    let address = cluster.sh(0, "hostname -i | cut -d' ' -f1");
    cluster.sh(
        0,
        &format!("docker swarm init --advertise-addr {address} >/dev/null"),
    );
    let token = cluster.sh(0, "docker swarm join-token -q worker");
    for node in 1..NODES {
        cluster.sh(
            node,
            &format!("docker swarm join --token {token} {address}:2377 >/dev/null"),
        );
    }
    let ready = cluster.sh(0,
        &format!(
            "i=0; until [ \"$(docker node ls --format '{{{{.Status}}}}' | grep -c Ready)\" -eq {NODES} ]; do \
             i=$((i+1)); [ $i -lt 300 ] || exit 1; sleep 0.1; done; docker node ls --format '{{{{.Hostname}}}}'"
        ),
    );
    println!("swarm formed: {}", ready.replace('\n', " "));
}

/// Waits until no node's engine has a container matching `filter` (and n0 no network
/// matching it).
fn wait_gone(cluster: &Cluster, filter: &str) {
    for node in 0..NODES {
        let networks = if node == 0 {
            format!("$(docker network ls -q --filter {filter})")
        } else {
            String::new()
        };
        cluster.sh(
            node,
            &format!(
                "i=0; while [ -n \"$(docker ps -aq --filter {filter}){networks}\" ]; do \
                 i=$((i+1)); [ $i -lt {} ] || exit 1; sleep 0.2; done",
                DEADLINE_S * 5
            ),
        );
    }
}

/// One jaco run: `jaco apply` (which waits until every replica it changed runs) timed inside
/// n0; then `jaco status -o json` must show 10 running replicas on all 3 nodes; then the
/// deployment is deleted and its containers waited away (not timed). Returns the time and the
/// placement.
fn jaco_run(cluster: &Cluster) -> (Duration, BTreeMap<String, usize>) {
    let out = cluster.sh(
        0,
        &format!(
            "s=$(date +%s%N); jaco apply {DIR}/jaco.yaml --compose {DIR}/compose.yaml \
             --timeout {DEADLINE_S}s >{DIR}/apply.log 2>&1 || {{ cat {DIR}/apply.log; exit 1; }}; \
             echo $((($(date +%s%N) - s) / 1000000))"
        ),
    );
    let took = millis(&out);
    let status = cluster
        .jaco_json(0, &["status", DEPLOYMENT])
        .unwrap_or_else(|e| panic!("{e}"));
    let replicas = status["replicas"].as_array().expect("replicas array");
    let mut by_node = BTreeMap::new();
    for r in replicas {
        assert_eq!(r["state"], "running", "after apply returned: {r}");
        *by_node
            .entry(r["node"].as_str().unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(replicas.len(), REPLICAS, "{status}");
    assert_eq!(
        by_node.len(),
        NODES,
        "not spread over all nodes: {by_node:?}"
    );
    cluster
        .jaco(0, &["delete", DEPLOYMENT, "--yes"])
        .unwrap_or_else(|e| panic!("{e}"));
    wait_gone(cluster, &format!("label=jaco.deployment={DEPLOYMENT}"));
    (took, by_node)
}

/// One swarm run: `docker stack deploy` until `docker service ls` shows 10/10, timed inside n0
/// (polled back to back); then every task must be running, on all 3 nodes, and every container
/// on n0 healthy; then `docker stack rm` and wait until the containers and the network are gone
/// (not timed).
fn swarm_run(cluster: &Cluster) -> (Duration, BTreeMap<String, usize>) {
    let want = format!("{REPLICAS}/{REPLICAS}");
    let out = cluster.sh(0,
        &format!(
            "s=$(date +%s%N); docker stack deploy --compose-file {DIR}/compose.yaml {STACK} >/dev/null \
             || exit 1; until [ \"$(docker service ls --filter name={STACK}_web --format '{{{{.Replicas}}}}')\" = {want} ]; do \
             [ $(($(date +%s%N) - s)) -lt {DEADLINE_S}000000000 ] || exit 1; done; \
             echo $((($(date +%s%N) - s) / 1000000))"
        ),
    );
    let took = millis(&out);
    let tasks = cluster.sh(
        0,
        &format!(
            "docker service ps {STACK}_web --filter desired-state=running \
             --format '{{{{.Node}}}} {{{{.CurrentState}}}}'"
        ),
    );
    let mut by_node = BTreeMap::new();
    for line in tasks.lines() {
        let mut words = line.split_whitespace();
        let node = words.next().unwrap_or("?");
        assert_eq!(words.next(), Some("Running"), "task: {line}");
        *by_node.entry(node.to_owned()).or_insert(0) += 1;
    }
    assert_eq!(by_node.values().sum::<usize>(), REPLICAS, "{tasks}");
    assert_eq!(by_node.len(), NODES, "not spread over all nodes: {tasks}");
    let health = cluster.sh(
        0,
        &format!(
            "docker ps -q --filter label=com.docker.stack.namespace={STACK} \
             | xargs -r docker inspect -f '{{{{.State.Health.Status}}}}'"
        ),
    );
    assert!(
        health.lines().all(|h| h == "healthy"),
        "a running swarm task's container is not healthy: {health}"
    );
    // Under load `docker stack rm` may fail to remove the network ("in use by task") while the
    // tasks are still stopping; the services are gone by then, and the network is removed
    // again until it goes.
    let label = format!("label=com.docker.stack.namespace={STACK}");
    cluster.sh(0,
        &format!(
            "docker stack rm {STACK} >/dev/null 2>&1; i=0; \
             while [ -n \"$(docker service ls -q --filter {label})$(docker network ls -q --filter {label})\" ]; do \
             i=$((i+1)); [ $i -lt {} ] || exit 1; sleep 0.2; \
             docker network ls -q --filter {label} | xargs -r docker network rm >/dev/null 2>&1 || true; done",
            DEADLINE_S * 5
        ),
    );
    wait_gone(cluster, &label);
    (took, by_node)
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn summary(samples: &[Duration]) -> String {
    let (min, max) = (
        samples.iter().min().expect("runs"),
        samples.iter().max().expect("runs"),
    );
    format!(
        "{} | {}–{} | {}",
        ms(median(samples)),
        ms(*min),
        ms(*max),
        samples
            .iter()
            .map(|d| ms(*d).to_string())
            .collect::<Vec<_>>()
            .join(" / ")
    )
}

/// `docker stats` memory of every node container (each includes its dockerd, containerd,
/// jaco daemon and swarm agent).
fn node_memory(cluster: &Cluster) -> String {
    let names: Vec<String> = (0..NODES).map(|n| cluster.container(n)).collect();
    let output = Command::new("docker")
        .args([
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.MemUsage}}",
        ])
        .args(&names)
        .output()
        .expect("docker stats");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .replace('\n', "; ")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("JACO_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    busybox_image();

    let started = Instant::now();
    let cluster = Cluster::up(NODES);
    let up = started.elapsed();
    println!(
        "cluster {} up in {} ms (remove by hand after a SIGKILL: testvm/cluster.sh down {})",
        cluster.name,
        ms(up),
        cluster.name
    );

    // Image present: every node engine pulls it before anything is timed.
    let image = cluster.push(&busybox_image(), "jaco-example/busybox:1");
    for node in 0..NODES {
        cluster.sh(node, &format!("docker pull -q {image} >/dev/null"));
    }
    let swarm_started = Instant::now();
    form_swarm(&cluster);
    let swarm_up = swarm_started.elapsed();
    let (jaco_yaml, compose_yaml) = workload(&image);
    cluster.write_file(0, &format!("{DIR}/jaco.yaml"), &jaco_yaml);
    cluster.write_file(0, &format!("{DIR}/compose.yaml"), &compose_yaml);
    let engine = cluster.sh(0, "docker version --format '{{.Server.Version}}'");
    let idle_memory = node_memory(&cluster);

    let (mut jaco, mut swarm) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // Alternate which tool goes first, so neither always follows the other's teardown.
        let (j, s) = if run % 2 == 0 {
            let j = jaco_run(&cluster);
            (j, swarm_run(&cluster))
        } else {
            let s = swarm_run(&cluster);
            (jaco_run(&cluster), s)
        };
        println!(
            "run {run}: jaco {} ms {:?}, swarm {} ms {:?}",
            ms(j.0),
            j.1,
            ms(s.0),
            s.1
        );
        jaco.push(j.0);
        swarm.push(s.0);
    }
    let end_memory = node_memory(&cluster);

    println!();
    println!(
        "inner engines: Docker {engine}; {NODES} nodes; {REPLICAS} replicas; {runs} runs each, interleaved"
    );
    println!("| tool | runs | median ms | min–max ms | per run ms |");
    println!("|---|---|---|---|---|");
    println!(
        "| jaco apply → returns (all running) | {runs} | {} |",
        summary(&jaco)
    );
    println!(
        "| docker stack deploy → service ls 10/10 | {runs} | {} |",
        summary(&swarm)
    );
    println!(
        "\nratio jaco / swarm (medians): {:.2}; SPEC §11 bar ≤ 5,000 ms: jaco median {} ms — {}",
        median(&jaco).as_secs_f64() / median(&swarm).as_secs_f64(),
        ms(median(&jaco)),
        if median(&jaco) <= Duration::from_secs(5) {
            "met"
        } else {
            "not met"
        }
    );
    println!(
        "harness: cluster up {} ms, swarm formed {} ms",
        ms(up),
        ms(swarm_up)
    );
    println!("node memory, idle (swarm joined, image present): {idle_memory}");
    println!("node memory, after the runs: {end_memory}");
}
