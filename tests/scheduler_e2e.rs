//! The scheduler end to end on the container-tier harness (`testvm/cluster.sh`): every node a
//! container with its own dockerd and `jaco daemon`, so placement, rollouts, node loss,
//! partitions, drains, pinned hosts, global services and leader changes are checked against
//! what the nodes' own engines really run (SPEC §5).
//!
//! Each test has its own cluster (unique docker objects and registry; removed by the wrapper's
//! Drop, also on failure, after printing the nodes' log tails), polls with deadlines and never
//! sleeps and hopes. Where an invariant must hold throughout, it is sampled every 200 ms
//! ([`SAMPLE`]) from `jaco status -o json` (and the engines' `docker ps`), and every sample is
//! checked. The tests print what they measured (`--nocapture` shows it).
//!
//! Needs what `tests/cluster_harness.rs` needs: root, Docker, debootstrap (first run),
//! docker-registry, python3 and busybox-static.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::Cluster;
use support::docker::busybox_image;

/// How often invariants are sampled.
const SAMPLE: Duration = Duration::from_millis(200);
/// How long a convergence may take before the test fails.
const CONVERGE: Duration = Duration::from_secs(90);
/// A container that runs until it is told to stop.
const SLEEPER: &str = r#"["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]"#;
/// A container that exits at once (its replicas never become running).
const CRASHER: &str = r#"["sh", "-c", "echo broken; exit 3"]"#;
/// daemon.yaml text for the tests that lose nodes: lost after 4 s instead of 15 s.
const FAST_NODE_LOSS: &str = "scheduler: {node_lost_after_ms: 4000}";

// ---------------------------------------------------------------------------------------------
// Manifests

/// One compose service `app`: `command`, an env var that changes the spec hash, a healthcheck
/// run every second, and a compose update policy. The check passes whenever it runs; its
/// generous timeout and retries keep a loaded machine (a `docker exec` in a nested engine can
/// take seconds) from turning healthy replicas `degraded`, which the invariant checks would
/// count as not serving.
fn compose(image: &str, command: &str, version: &str, parallelism: u32, monitor: &str) -> String {
    format!(
        "services:
  app:
    image: {image}
    command: {command}
    environment:
      VERSION: \"{version}\"
    healthcheck:
      test: [\"CMD\", \"true\"]
      interval: 1s
      timeout: 5s
      retries: 3
    stop_grace_period: 2s
    deploy:
      update_config:
        parallelism: {parallelism}
        order: start-first
        monitor: {monitor}
"
    )
}

/// jaco.yaml of deployment `name` with service `app`: `replicas` (or none with `global`), a
/// placement and (for rollbacks that should not wait a minute) a step timeout.
fn jaco_yaml(name: &str, replicas: Option<u32>, placement: &str) -> String {
    let mut text = format!(
        "deployment: {name}\nacme: off\nservices:\n  - name: app\n    placement: {placement}\n"
    );
    if let Some(replicas) = replicas {
        text.push_str(&format!("    replicas: {replicas}\n"));
    }
    text.push_str("    update:\n      step_timeout: 30s\n");
    text
}

/// Writes the manifests into node `node` and runs `jaco apply` there: with `follow`, waits for
/// convergence (and panics unless it converged); otherwise `--detach`. Returns the revision.
fn apply(
    cluster: &Cluster,
    node: usize,
    jaco: &str,
    compose: &str,
    hosts_yaml: Option<&str>,
    follow: bool,
) -> u64 {
    let name = jaco
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("deployment: "))
        .expect("deployment name");
    let dir = format!("/tmp/apps/{name}");
    let mut jaco = jaco.to_owned();
    if let Some(hosts) = hosts_yaml {
        jaco.push_str(hosts);
    }
    cluster.write_file(node, &format!("{dir}/jaco.yaml"), &jaco);
    cluster.write_file(node, &format!("{dir}/compose.yaml"), compose);
    let file = format!("{dir}/jaco.yaml");
    let mut args = vec!["apply", file.as_str()];
    if follow {
        args.extend(["--timeout", "120s"]);
    } else {
        args.push("--detach");
    }
    let out = cluster
        .jaco_json(node, &args)
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
    if follow {
        assert_eq!(
            out["convergence"]["outcome"], "converged",
            "apply {name}: {out:#}"
        );
    }
    out["revision"].as_u64().expect("revision")
}

// ---------------------------------------------------------------------------------------------
// Observations

/// One replica as `jaco status -o json` shows it.
#[derive(Debug, Clone)]
struct Replica {
    id: String,
    index: u64,
    node: String,
    state: String,
    spec_hash: String,
}

/// A deployment's `jaco status -o json` as one node answers it.
#[derive(Debug, Clone)]
struct Status {
    deployment: Value,
    replicas: Vec<Replica>,
}

impl Status {
    fn of(cluster: &Cluster, asking: usize, deployment: &str) -> Option<Status> {
        let status = cluster.jaco_json(asking, &["status", deployment]).ok()?;
        let deployment = status["deployments"].as_array()?.first()?.clone();
        let replicas = status["replicas"]
            .as_array()?
            .iter()
            .map(|r| Replica {
                id: r["id"].as_str().unwrap_or_default().to_owned(),
                index: r["index"].as_u64().unwrap_or_default(),
                node: r["node"].as_str().unwrap_or_default().to_owned(),
                state: r["state"].as_str().unwrap_or("null").to_owned(),
                spec_hash: r["spec_hash"].as_str().unwrap_or_default().to_owned(),
            })
            .collect();
        Some(Status {
            deployment,
            replicas,
        })
    }

    fn running(&self) -> Vec<&Replica> {
        self.replicas
            .iter()
            .filter(|r| r.state == "running")
            .collect()
    }

    /// Replicas that serve: `running`, or `updating` (how status shows a running replica that
    /// an in-progress rollout is replacing; `jaco status` derives it, the rollout engine still
    /// counts such a replica by its observed state).
    fn serving(&self) -> Vec<&Replica> {
        self.replicas
            .iter()
            .filter(|r| r.state == "running" || r.state == "updating")
            .collect()
    }

    fn running_ids(&self) -> BTreeSet<String> {
        self.running().iter().map(|r| r.id.clone()).collect()
    }

    /// Running replicas per node.
    fn per_node(&self) -> BTreeMap<String, usize> {
        let mut nodes = BTreeMap::new();
        for r in self.running() {
            *nodes.entry(r.node.clone()).or_default() += 1;
        }
        nodes
    }

    /// The service `app` as the deployment describes it.
    fn service(&self) -> &Value {
        self.deployment["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "app"))
            .unwrap_or(&Value::Null)
    }

    fn spec_hash(&self) -> String {
        self.service()["spec_hash"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The rollout record of service `app` to `revision`, if it is the retained one.
    fn rollout_to(&self, revision: u64) -> Option<&Value> {
        let rollout = &self.service()["rollout"];
        (rollout["to_revision"].as_u64() == Some(revision)).then_some(rollout)
    }

    /// True when exactly `want` replicas exist and all run.
    fn all_running(&self, want: usize) -> bool {
        self.replicas.len() == want && self.running().len() == want
    }
}

/// The replica ids of `deployment` whose containers run in node `node`'s own engine; `None`
/// when the engine does not answer (a killed node).
fn engine_running(cluster: &Cluster, node: usize, deployment: &str) -> Option<Vec<String>> {
    engine_list(cluster, node, deployment, false)
}

/// Like [`engine_running`], with stopped containers too (`docker ps -a`).
fn engine_all(cluster: &Cluster, node: usize, deployment: &str) -> Option<Vec<String>> {
    engine_list(cluster, node, deployment, true)
}

fn engine_list(cluster: &Cluster, node: usize, deployment: &str, all: bool) -> Option<Vec<String>> {
    let filter = format!("name=^jaco_{deployment}-");
    let mut args = vec!["ps", "--filter", filter.as_str(), "--format", "{{.Names}}"];
    if all {
        args.push("-a");
    }
    let out = cluster.try_docker(node, &args).ok()?;
    Some(
        out.lines()
            .filter_map(|l| l.strip_prefix("jaco_"))
            .map(str::to_owned)
            .collect(),
    )
}

/// Running replica containers of `deployment` in the engines of `nodes`, per node (asked in
/// parallel, so that a sample takes one `docker exec`, not one per node).
fn engines(cluster: &Cluster, nodes: &[usize], deployment: &str) -> BTreeMap<usize, Vec<String>> {
    std::thread::scope(|scope| {
        let asks: Vec<_> = (nodes.iter())
            .map(|&n| scope.spawn(move || (n, engine_running(cluster, n, deployment))))
            .collect();
        asks.into_iter()
            .map(|ask| {
                let (n, ids) = ask.join().expect("docker ps thread");
                (n, ids.unwrap_or_default())
            })
            .collect()
    })
}

/// Runs `a` and `b` at once (two CLI calls in one sample period).
fn both<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|scope| {
        let a = scope.spawn(a);
        let b = b();
        (a.join().expect("sample thread"), b)
    })
}

/// Every running container id across `engines`, and whether one runs twice.
fn flatten(engines: &BTreeMap<usize, Vec<String>>) -> (Vec<String>, bool) {
    let all: Vec<String> = engines.values().flatten().cloned().collect();
    let unique: BTreeSet<&String> = all.iter().collect();
    let twice = unique.len() != all.len();
    (all, twice)
}

/// The index of the node `asking` sees as the leader.
fn leader(cluster: &Cluster, asking: usize) -> Option<usize> {
    let nodes = cluster.nodes(asking).ok()?;
    let leader = nodes.iter().find(|n| n.role == "leader")?;
    leader.name.strip_prefix('n')?.parse().ok()
}

/// Calls `sample` every [`SAMPLE`] until it returns `Some` or `limit` passes (then panics with
/// `what` and `describe()`).
fn sample_until<T>(
    what: &str,
    limit: Duration,
    mut sample: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        let at = Instant::now();
        if let Some(value) = sample() {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}; last seen: {}",
            describe()
        );
        std::thread::sleep(SAMPLE.saturating_sub(at.elapsed()));
    }
}

fn show(cluster: &Cluster, asking: usize, deployment: &str) -> String {
    format!("{:#?}", Status::of(cluster, asking, deployment))
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Items 1 and 2 of issue 5/7: spread, scaling (replica ids never reused), a rolling update
/// whose invariant holds at every sample and completes, then a failing update that rolls back
/// while the previous version keeps serving.
#[test]
fn spread_scale_rolling_update_and_automatic_rollback() {
    let cluster = Cluster::up(3);
    let image = cluster.push(&busybox_image(), "jaco-example/busybox:1");
    let c = &cluster;
    let name = "web";
    const WANT: usize = 6;
    const PARALLELISM: usize = 2;
    let v1 = compose(&image, SLEEPER, "1", PARALLELISM as u32, "1s");

    // 1. Six replicas spread two per node, and each engine runs exactly its two.
    let started = Instant::now();
    apply(c, 0, &jaco_yaml(name, Some(6), "spread"), &v1, None, true);
    let spread = |want: usize| {
        move || {
            let s = Status::of(c, 0, name)?;
            let per_node = s.per_node();
            (s.all_running(want)
                && per_node.len() == 3
                && per_node.values().all(|&n| n == want / 3))
            .then_some(s)
        }
    };
    let placed = c.wait_for("6 running, 2 per node", spread(WANT), || show(c, 0, name));
    println!("apply of 6 replicas converged in {:?}", started.elapsed());
    let on_engines = engines(c, &[0, 1, 2], name);
    for (node, ids) in &on_engines {
        let expected: BTreeSet<String> = (placed.running().into_iter())
            .filter(|r| r.node == format!("n{node}"))
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(
            ids.iter().cloned().collect::<BTreeSet<_>>(),
            expected,
            "n{node}"
        );
    }
    let mut seen: BTreeSet<String> = placed.running_ids();
    let max_index = placed.replicas.iter().map(|r| r.index).max().unwrap_or(0);

    // Scale 6 → 2: the newest go; the engines follow.
    apply(c, 0, &jaco_yaml(name, Some(2), "spread"), &v1, None, true);
    let two = c.wait_for(
        "2 running, 2 containers",
        || {
            let s = Status::of(c, 0, name)?;
            let (all, _) = flatten(&engines(c, &[0, 1, 2], name));
            (s.all_running(2) && all.len() == 2).then_some(s)
        },
        || show(c, 0, name),
    );
    let mut indices: Vec<u64> = placed.replicas.iter().map(|r| r.index).collect();
    indices.sort_unstable();
    let kept: Vec<u64> = two.replicas.iter().map(|r| r.index).collect();
    assert!(
        kept.iter().all(|i| indices[..2].contains(i)),
        "scaling down removes the newest: kept {kept:?} of {indices:?}"
    );
    assert!(two.running_ids().is_subset(&seen));

    // Scale 2 → 6: four new replicas with new ids, spread two per node again.
    apply(c, 0, &jaco_yaml(name, Some(6), "spread"), &v1, None, true);
    let six = c.wait_for("6 running again, 2 per node", spread(WANT), || {
        show(c, 0, name)
    });
    let new: Vec<&Replica> = six
        .replicas
        .iter()
        .filter(|r| !two.running_ids().contains(&r.id))
        .collect();
    assert_eq!(new.len(), 4, "{six:#?}");
    for r in &new {
        assert!(
            !seen.contains(&r.id) && r.index > max_index,
            "replica id reused: {} (ids so far {seen:?})",
            r.id
        );
    }
    seen.extend(six.running_ids());

    // 2. A healthy rolling update (the env var changes the spec hash): never fewer than
    // WANT - PARALLELISM running at any sample, and the rollout completes.
    let v2 = compose(&image, SLEEPER, "2", PARALLELISM as u32, "1s");
    let old_hash = six.spec_hash();
    let started = Instant::now();
    let revision = apply(c, 0, &jaco_yaml(name, Some(6), "spread"), &v2, None, false);
    let mut fewest = usize::MAX;
    let mut samples = 0;
    let done = sample_until(
        "rolling update completes",
        CONVERGE,
        || {
            let s = Status::of(c, 0, name)?;
            samples += 1;
            let serving = s.serving().len();
            fewest = fewest.min(serving);
            assert!(
                serving >= WANT - PARALLELISM,
                "only {serving} serving during the rolling update: {s:#?}"
            );
            let hash = s.spec_hash();
            let completed = s
                .rollout_to(revision)
                .is_some_and(|r| r["state"] == "completed");
            (completed
                && hash != old_hash
                && s.all_running(WANT)
                && s.replicas.iter().all(|r| r.spec_hash == hash))
            .then_some(s)
        },
        || show(c, 0, name),
    );
    println!(
        "rolling update of {WANT} (parallelism {PARALLELISM}, monitor 1s) completed in {:?}; \
         fewest serving over {samples} samples: {fewest}",
        started.elapsed()
    );
    assert!(fewest >= WANT - PARALLELISM);
    let rollout = done.rollout_to(revision).expect("rollout");
    assert_eq!(rollout["rolled_back"], false, "{rollout:#}");
    let good_hash = done.spec_hash();
    let good_ids = done.running_ids();
    assert!(good_ids.is_disjoint(&seen), "updated replicas are new ones");
    seen.extend(good_ids.iter().cloned());
    c.wait_for(
        "the engines run exactly the updated replicas",
        || {
            let (all, twice) = flatten(&engines(c, &[0, 1, 2], name));
            (!twice && all.iter().cloned().collect::<BTreeSet<_>>() == good_ids).then_some(())
        },
        || format!("{:?}", engines(c, &[0, 1, 2], name)),
    );

    // A failing update (its containers exit at once): the rollout aborts and rolls back, and
    // at every sample the previous version serves with at least WANT - PARALLELISM replicas.
    let broken = compose(&image, CRASHER, "3", PARALLELISM as u32, "1s");
    let started = Instant::now();
    let revision = apply(
        c,
        0,
        &jaco_yaml(name, Some(6), "spread"),
        &broken,
        None,
        false,
    );
    let mut fewest_old = usize::MAX;
    let mut samples = 0;
    let aborted = sample_until(
        "failing update rolls back",
        CONVERGE,
        || {
            let s = Status::of(c, 0, name)?;
            samples += 1;
            let old_running = (s.serving().into_iter())
                .filter(|r| r.spec_hash == good_hash)
                .count();
            fewest_old = fewest_old.min(old_running);
            assert!(
                old_running >= WANT - PARALLELISM,
                "the previous version serves only {old_running}: {s:#?}"
            );
            let rollout = s.rollout_to(revision)?;
            (rollout["state"] == "aborted"
                && rollout["rolled_back"] == true
                && s.running().len() == WANT
                && s.running().iter().all(|r| r.spec_hash == good_hash))
            .then_some(s)
        },
        || show(c, 0, name),
    );
    let rollout = aborted.rollout_to(revision).expect("rollout");
    println!(
        "failing update rolled back in {:?} ({}); fewest old serving over {samples} samples: \
         {fewest_old}",
        started.elapsed(),
        rollout["reason"]
    );
    assert!(
        ["step_failed", "step_timeout"].contains(&rollout["reason"].as_str().unwrap_or("")),
        "{rollout:#}"
    );
    assert_eq!(aborted.running_ids(), good_ids, "the good replicas stay");
    // The failed replacements stop running anywhere (a crashing one may be between two of its
    // restarts when the rollout aborts).
    let started = Instant::now();
    c.wait_for(
        "the engines run exactly the good replicas",
        || {
            let (all, twice) = flatten(&engines(c, &[0, 1, 2], name));
            (!twice && all.iter().cloned().collect::<BTreeSet<_>>() == good_ids).then_some(())
        },
        || format!("{:?}", engines(c, &[0, 1, 2], name)),
    );
    let after = Status::of(c, 0, name).expect("status");
    println!(
        "failed replacements gone from the engines {:?} after the abort; status then: {:?}",
        started.elapsed(),
        (after.replicas.iter())
            .filter(|r| r.spec_hash != good_hash)
            .map(|r| (&r.id, &r.state))
            .collect::<Vec<_>>()
    );
}

/// Deploys `want` sleepers of `name` (spread) from node `node` and waits until each node of
/// `0..3` runs `want / 3` of them; returns that status.
fn deploy_spread(cluster: &Cluster, image: &str, name: &str, want: usize, node: usize) -> Status {
    let v1 = compose(image, SLEEPER, "1", 1, "1s");
    apply(
        cluster,
        node,
        &jaco_yaml(name, Some(want as u32), "spread"),
        &v1,
        None,
        true,
    );
    cluster.wait_for(
        "replicas running, spread evenly",
        || {
            let s = Status::of(cluster, node, name)?;
            let per_node = s.per_node();
            (s.all_running(want)
                && per_node.len() == 3
                && per_node.values().all(|&n| n == want / 3))
            .then_some(s)
        },
        || show(cluster, node, name),
    )
}

/// Items 3 and 4: a killed node's replicas run on the others after `node_lost_after_ms`; when
/// it starts again its own agent removes its stale containers. A partitioned node's replicas
/// move too; after the heal no replica runs twice and the engines run exactly the replicas.
#[test]
fn lost_and_partitioned_nodes_lose_their_replicas_without_duplicates() {
    let cluster = Cluster::up_with(3, FAST_NODE_LOSS);
    let image = cluster.push(&busybox_image(), "jaco-example/busybox:1");
    let c = &cluster;
    let name = "web";
    const WANT: usize = 6;
    let placed = deploy_spread(c, &image, name, WANT, 0);

    // Kill a follower (its dockerd and replicas die with it).
    let lead = leader(c, 0).expect("a leader");
    let victim = (0..3).rev().find(|&n| n != lead).expect("a follower");
    let victim_name = format!("n{victim}");
    let others: Vec<usize> = (0..3).filter(|&n| n != victim).collect();
    let victim_ids: BTreeSet<String> = (placed.running().into_iter())
        .filter(|r| r.node == victim_name)
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(victim_ids.len(), 2);
    c.kill(victim);
    let killed = Instant::now();
    let moved = sample_until(
        "the killed node's replicas run on the others",
        CONVERGE,
        || {
            let s = Status::of(c, lead, name)?;
            (s.all_running(WANT) && s.replicas.iter().all(|r| r.node != victim_name)).then_some(s)
        },
        || show(c, lead, name),
    );
    let took = killed.elapsed();
    println!("kill → replicas running elsewhere: {took:?} (node_lost_after_ms 4000)");
    assert!(
        took >= Duration::from_millis(3_000),
        "moved before the node could be lost: {took:?}"
    );
    assert!(moved.running_ids().is_disjoint(&victim_ids));
    let survivors_run = c.wait_for(
        "the survivors' engines run exactly the replicas",
        || {
            let (all, twice) = flatten(&engines(c, &others, name));
            let all: BTreeSet<String> = all.into_iter().collect();
            (!twice && all == moved.running_ids()).then_some(all)
        },
        || format!("{:?}", engines(c, &others, name)),
    );
    assert_eq!(survivors_run.len(), WANT);

    // It comes back: its own agent removes its stale containers (running or not).
    c.start(victim);
    let back = Instant::now();
    let mut stale_seen = BTreeSet::new();
    sample_until(
        "the returned node's stale containers are removed",
        CONVERGE,
        || {
            let on_victim = engine_all(c, victim, name)?;
            stale_seen.extend(on_victim.iter().cloned());
            on_victim.is_empty().then_some(())
        },
        || format!("{:?}", engine_all(c, victim, name)),
    );
    println!(
        "start → the returned node's stale containers removed: {:?} (seen: {stale_seen:?})",
        back.elapsed()
    );
    assert!(
        stale_seen.is_subset(&victim_ids),
        "{stale_seen:?} ⊄ {victim_ids:?}"
    );
    let (all, twice) = flatten(&engines(c, &[0, 1, 2], name));
    assert!(!twice, "a replica runs twice: {all:?}");
    assert_eq!(
        all.into_iter().collect::<BTreeSet<_>>(),
        moved.running_ids()
    );

    // Partition a follower for longer than node_lost_after_ms: the majority places its
    // replicas elsewhere. The cut-off node cannot hear that its replicas were removed, so it
    // keeps running them: during the partition both copies of that capacity run (by design;
    // SPEC §5.4 only forbids two live copies after the heal).
    let now = Status::of(c, lead, name).expect("status");
    let cut = (0..3).find(|&n| n != lead).expect("a follower");
    let cut_name = format!("n{cut}");
    let cut_ids: BTreeSet<String> = (now.running().into_iter())
        .filter(|r| r.node == cut_name)
        .map(|r| r.id.clone())
        .collect();
    assert!(!cut_ids.is_empty(), "{now:#?}");
    c.partition(cut);
    let parted = Instant::now();
    let replaced = sample_until(
        "the partitioned node's replicas run on the majority",
        CONVERGE,
        || {
            let s = Status::of(c, lead, name)?;
            (s.all_running(WANT) && s.replicas.iter().all(|r| r.node != cut_name)).then_some(s)
        },
        || show(c, lead, name),
    );
    println!(
        "partition → replicas running on the majority: {:?}",
        parted.elapsed()
    );
    let kept: BTreeSet<String> = engine_running(c, cut, name)
        .expect("a partitioned node's engine answers docker exec")
        .into_iter()
        .collect();
    assert_eq!(kept, cut_ids, "the cut-off node keeps its containers");

    // Heal: the node learns its replicas are gone and removes them. From the moment the
    // engines match the replicas, every sample must show each replica once, WANT in all.
    c.heal(cut);
    let healed = Instant::now();
    let want_ids = replaced.running_ids();
    let converged = || {
        let on = engines(c, &[0, 1, 2], name);
        let (all, twice) = flatten(&on);
        (!twice && all.len() == WANT && all.iter().cloned().collect::<BTreeSet<_>>() == want_ids)
            .then_some(on)
    };
    sample_until("the heal converges", CONVERGE, converged, || {
        format!("{:?}", engines(c, &[0, 1, 2], name))
    });
    println!("heal → stale copies removed: {:?}", healed.elapsed());
    let watch = Instant::now();
    let mut samples = 0;
    while watch.elapsed() < Duration::from_secs(4) {
        let at = Instant::now();
        let (on, status) = both(
            || engines(c, &[0, 1, 2], name),
            || Status::of(c, lead, name).expect("status"),
        );
        let (all, twice) = flatten(&on);
        assert!(!twice, "a replica runs twice after the heal: {on:?}");
        assert_eq!(all.len(), WANT, "after the heal: {on:?}");
        assert_eq!(status.running_ids(), want_ids, "{status:#?}");
        samples += 1;
        std::thread::sleep(SAMPLE.saturating_sub(at.elapsed()));
    }
    println!("{samples} samples after the heal: no duplicate, {WANT} containers");
}

/// Items 5, 6 and 7: a drain moves a node's replicas without ever running fewer than wanted
/// and `--cancel` makes the node schedulable again; `hosts` placement with a host that is cut
/// off leaves the deployment `pending` and never spills; a `global` service gains a replica
/// when a fourth node joins.
#[test]
fn drain_pinned_hosts_and_a_global_service_on_a_growing_cluster() {
    let mut cluster = Cluster::up(3);
    let image = cluster.push(&busybox_image(), "jaco-example/busybox:1");
    let c = &cluster;
    let name = "web";
    const WANT: usize = 3;
    let placed = deploy_spread(c, &image, name, WANT, 0);
    let on_n1: Vec<String> = (placed.running().into_iter())
        .filter(|r| r.node == "n1")
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(on_n1.len(), 1, "{placed:#?}");

    // 5. Drain n1: its replica is replaced elsewhere before it stops.
    let reply = c
        .jaco_json(0, &["node", "drain", "n1"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply["replicas_to_move"], 1, "{reply:#}");
    let started = Instant::now();
    let mut fewest = usize::MAX;
    let mut samples = 0;
    sample_until(
        "n1 drained",
        CONVERGE,
        || {
            let ((s, n1), on_n1) = both(
                || both(|| Status::of(c, 0, name), || c.node(0, "n1")),
                || engine_running(c, 1, name),
            );
            let s = s?;
            samples += 1;
            let serving = s.serving().len();
            fewest = fewest.min(serving);
            assert!(
                serving >= WANT,
                "only {serving} serving during the drain: {s:#?}"
            );
            let drained = n1?.status == "drained";
            let off = s.all_running(WANT) && s.replicas.iter().all(|r| r.node != "n1");
            let engine_empty = on_n1?.is_empty();
            (drained && off && engine_empty).then_some(())
        },
        || format!("{} {:?}", show(c, 0, name), c.node(0, "n1")),
    );
    println!(
        "drain of n1 done in {:?}; fewest serving over {samples} samples: {fewest}",
        started.elapsed()
    );
    assert!(fewest >= WANT);

    // --cancel: n1 is ready and receives replicas again (scaling to 6 spreads 2 per node).
    c.jaco(0, &["node", "drain", "n1", "--cancel"])
        .unwrap_or_else(|e| panic!("{e}"));
    c.wait_for(
        "n1 ready again",
        || (c.node(0, "n1")?.status == "ready").then_some(()),
        || format!("{:?}", c.node(0, "n1")),
    );
    deploy_spread(c, &image, name, 6, 0);

    // 6. Pin two replicas to n0 and n2 while n2 is cut off: one runs on n0, the deployment is
    // pending naming n2, and nothing spills onto n1 (sampled for a few seconds).
    c.partition(2);
    c.wait_for(
        "n2 unreachable",
        || (c.node(0, "n2")?.reachability == "unreachable").then_some(()),
        || format!("{:?}", c.nodes(0)),
    );
    let pinned = "pinned";
    let v1 = compose(&image, SLEEPER, "1", 1, "1s");
    apply(
        c,
        0,
        &jaco_yaml(pinned, Some(2), "hosts"),
        &v1,
        Some("    hosts: [n0, n2]\n"),
        false,
    );
    let check_pending = || {
        let s = Status::of(c, 0, pinned)?;
        let d = &s.deployment;
        let pending = d["status"] == "pending"
            && d["status_details"]["reason"] == "cannot_satisfy_host_placement"
            && d["status_details"]["missing_hosts"] == "n2";
        (pending && s.all_running(1) && s.replicas[0].node == "n0").then_some(s)
    };
    c.wait_for("pinned pending with n2 missing", check_pending, || {
        show(c, 0, pinned)
    });
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(3) {
        let at = Instant::now();
        let (pending, on_n1) = both(check_pending, || engine_running(c, 1, pinned));
        assert!(pending.is_some(), "pinned: {}", show(c, 0, pinned));
        assert_eq!(on_n1, Some(vec![]), "spilled onto n1");
        std::thread::sleep(SAMPLE.saturating_sub(at.elapsed()));
    }
    // Healed, n2 gets its pinned replica and the deployment is active.
    c.heal(2);
    let pinned_done = c.wait_for(
        "pinned active with a replica on n0 and on n2",
        || {
            let s = Status::of(c, 0, pinned)?;
            let nodes: BTreeSet<&str> = s.running().iter().map(|r| r.node.as_str()).collect();
            (s.deployment["status"] == "active"
                && s.all_running(2)
                && nodes == BTreeSet::from(["n0", "n2"]))
            .then_some(s)
        },
        || show(c, 0, pinned),
    );
    assert_eq!(
        engine_running(c, 2, pinned).map(|v| v.len()),
        Some(1),
        "{pinned_done:#?}"
    );

    // 7. A global service runs one replica per node, and one more when a fourth node joins.
    let global = "agents";
    apply(c, 0, &jaco_yaml(global, None, "global"), &v1, None, true);
    let one_per_node = |c: &Cluster, count: usize| {
        let s = Status::of(c, 0, global)?;
        let expected: BTreeSet<String> = (0..count).map(|n| format!("{global}-app-n{n}")).collect();
        (s.all_running(count) && s.running_ids() == expected).then_some(s)
    };
    c.wait_for(
        "3 global replicas",
        || one_per_node(c, 3),
        || show(c, 0, global),
    );
    let started = Instant::now();
    cluster.grow(4);
    let c = &cluster;
    let joined = started.elapsed();
    let s = c.wait_for(
        "4 global replicas",
        || one_per_node(c, 4),
        || show(c, 0, global),
    );
    println!(
        "n3 joined in {joined:?}; its global replica ran {:?} after the join started",
        started.elapsed()
    );
    assert!(
        (s.running().into_iter()).any(|r| r.node == "n3" && r.id == format!("{global}-app-n3")),
        "{s:#?}"
    );
    assert_eq!(
        engine_running(c, 3, global),
        Some(vec![format!("{global}-app-n3")]),
        "n3's own engine runs its replica"
    );
}

/// Item 8: the leader is killed in the middle of a rollout; the new leader's scheduler takes
/// the rollout over from the replicated record and completes it, and the old leader's stale
/// containers are removed when it returns.
#[test]
fn a_rollout_interrupted_by_the_leaders_death_completes_under_the_next_leader() {
    let cluster = Cluster::up_with(3, FAST_NODE_LOSS);
    let image = cluster.push(&busybox_image(), "jaco-example/busybox:1");
    let c = &cluster;
    let name = "web";
    const WANT: usize = 3;
    let lead = leader(c, 0).expect("a leader");
    let asker = (0..3).find(|&n| n != lead).expect("a follower");
    let lead_name = format!("n{lead}");
    deploy_spread(c, &image, name, WANT, asker);

    // Three steps of one replica, each monitored for 3 s: the kill lands after the first.
    let v2 = compose(&image, SLEEPER, "2", 1, "3s");
    let started = Instant::now();
    let revision = apply(
        c,
        asker,
        &jaco_yaml(name, Some(WANT as u32), "spread"),
        &v2,
        None,
        false,
    );
    let steps_at_kill = sample_until(
        "the rollout's first step is done",
        CONVERGE,
        || {
            let s = Status::of(c, asker, name)?;
            let rollout = s.rollout_to(revision)?;
            let done = rollout["steps_done"].as_u64()?;
            (rollout["state"] == "in_progress" && done >= 1).then_some(done)
        },
        || show(c, asker, name),
    );
    c.kill(lead);
    let killed = Instant::now();
    let new_leader = c.wait_for(
        "a new leader",
        || leader(c, asker).filter(|&l| l != lead),
        || format!("{:?}", c.nodes(asker)),
    );
    println!(
        "leader n{lead} killed {:?} into the rollout (after step {steps_at_kill}); n{new_leader} \
         leads {:?} later",
        killed - started,
        killed.elapsed()
    );
    let done = sample_until(
        "the rollout completes under the new leader",
        CONVERGE,
        || {
            let s = Status::of(c, asker, name)?;
            let rollout = s.rollout_to(revision)?;
            let hash = s.spec_hash();
            (rollout["state"] == "completed"
                && s.all_running(WANT)
                && s.replicas
                    .iter()
                    .all(|r| r.spec_hash == hash && r.node != lead_name))
            .then_some(s)
        },
        || show(c, asker, name),
    );
    let rollout = done.rollout_to(revision).expect("rollout");
    println!(
        "rollout completed {:?} after the kill ({:?} in all): {}",
        killed.elapsed(),
        started.elapsed(),
        rollout
    );
    assert_eq!(rollout["rolled_back"], false, "{rollout:#}");
    assert_eq!(rollout["steps_total"], 3, "{rollout:#}");

    // The old leader returns as a follower; its stale containers go and nothing runs twice.
    c.start(lead);
    let want_ids = done.running_ids();
    let back = Instant::now();
    sample_until(
        "the engines run exactly the rolled-out replicas",
        CONVERGE,
        || {
            let stale = engine_all(c, lead, name)?;
            let (all, twice) = flatten(&engines(c, &[0, 1, 2], name));
            (stale.is_empty() && !twice && all.into_iter().collect::<BTreeSet<_>>() == want_ids)
                .then_some(())
        },
        || format!("{:?}", engines(c, &[0, 1, 2], name)),
    );
    println!(
        "old leader's stale containers removed {:?} after its start",
        back.elapsed()
    );
    c.wait_for(
        "the old leader's copy of the state catches up",
        || (Status::of(c, lead, name)?.running_ids() == want_ids).then_some(()),
        || show(c, lead, name),
    );
}
