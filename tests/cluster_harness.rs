//! The container-tier cluster harness (`testvm/cluster.sh`) and multi-node operation on it:
//! three nodes, each a container with its own dockerd and `jaco daemon`, form a cluster; a
//! deployment pulled from the harness registry spreads over the nodes' own engines; a killed
//! node and a partitioned node become unreachable and come back.
//!
//! Every test has its own cluster (unique docker objects and registry), waits for conditions
//! with deadlines, and removes everything even when it fails. Needs root, Docker, debootstrap
//! (the first run builds the node image), docker-registry, python3 and busybox-static.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::cluster::{Cluster, NodeRow};
use support::docker::busybox_image;

fn all_ready_and_reachable(nodes: &[NodeRow], count: usize) -> bool {
    nodes.len() == count
        && nodes
            .iter()
            .all(|n| n.status == "ready" && n.reachability == "reachable")
}

#[test]
fn three_nodes_come_up_ready_each_with_its_own_engine() {
    let cluster = Cluster::up(3);
    for asking in 0..3 {
        let nodes = cluster.nodes(asking).expect("node list");
        assert!(all_ready_and_reachable(&nodes, 3), "n{asking}: {nodes:#?}");
        let names: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, BTreeSet::from(["n0", "n1", "n2"]));
        assert_eq!(
            nodes.iter().filter(|n| n.role == "leader").count(),
            1,
            "{nodes:#?}"
        );
        assert_eq!(
            nodes.iter().filter(|n| n.role == "follower").count(),
            2,
            "{nodes:#?}"
        );
    }
    // Three engines, not one shared: each node's dockerd has its own identity and storage.
    let engines: BTreeSet<String> = (0..3)
        .map(|node| cluster.docker(node, &["info", "--format", "{{.ID}} {{.Driver}}"]))
        .collect();
    assert_eq!(engines.len(), 3, "{engines:?}");
    assert!(
        engines.iter().all(|e| e.ends_with(" overlay2")),
        "{engines:?}"
    );
}

#[test]
fn six_replicas_from_the_registry_spread_two_per_node_on_the_nodes_own_engines() {
    let cluster = Cluster::up(3);
    let image = cluster.push(&busybox_image(), "jaco-example/busybox:1");
    cluster.write_file(
        0,
        "/tmp/app/jaco.yaml",
        "deployment: sleepers\nacme: off\nservices:\n  - name: sleeper\n    replicas: 6\n",
    );
    cluster.write_file(
        0,
        "/tmp/app/compose.yaml",
        &format!(
            "services:\n  sleeper:\n    image: {image}\n    command: [\"sh\", \"-c\", \
             \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n"
        ),
    );
    // apply follows the replicas until they run (or says which failed).
    cluster
        .jaco(0, &["apply", "/tmp/app/jaco.yaml", "--timeout", "120s"])
        .unwrap_or_else(|e| panic!("{e}"));

    // Any node reports the same placement (n1's copy of the state may lag n0's for a moment):
    // six running replicas, two on each node.
    let running_by_node = || -> Option<BTreeMap<String, BTreeSet<String>>> {
        let status = cluster.jaco_json(1, &["status", "sleepers"]).ok()?;
        let replicas = status["replicas"].as_array()?;
        if replicas.len() != 6 || replicas.iter().any(|r| r["state"] != "running") {
            return None;
        }
        let mut by_node: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for replica in replicas {
            by_node
                .entry(replica["node"].as_str()?.to_owned())
                .or_default()
                .insert(replica["id"].as_str()?.to_owned());
        }
        Some(by_node)
    };
    let by_node = cluster.wait_for("n1 sees 6 running replicas", running_by_node, || {
        format!("{:?}", cluster.jaco_json(1, &["status", "sleepers"]))
    });
    assert_eq!(
        by_node.keys().map(String::as_str).collect::<Vec<_>>(),
        ["n0", "n1", "n2"],
        "{by_node:#?}"
    );
    assert!(by_node.values().all(|ids| ids.len() == 2), "{by_node:#?}");

    // Each node's own engine runs exactly its replicas, from the image it pulled.
    for (node, ids) in &by_node {
        let index: usize = node[1..].parse().expect("node index");
        let running: BTreeSet<String> = cluster
            .docker(
                index,
                &[
                    "ps",
                    "--filter",
                    "name=^jaco_sleepers-",
                    "--format",
                    "{{.Names}} {{.Image}}",
                ],
            )
            .lines()
            .map(str::to_owned)
            .collect();
        let expected: BTreeSet<String> =
            ids.iter().map(|id| format!("jaco_{id} {image}")).collect();
        assert_eq!(running, expected, "{node}");
        let digests = cluster.docker(
            index,
            &["image", "inspect", "-f", "{{.RepoDigests}}", &image],
        );
        assert!(
            digests.contains("@sha256:"),
            "{node} did not pull {image}: {digests}"
        );
    }
}

#[test]
fn a_killed_or_partitioned_node_goes_unreachable_and_comes_back() {
    let cluster = Cluster::up(3);
    let c = &cluster;
    let show = |asking: usize| move || format!("{:?}", c.nodes(asking));

    // Kill n2's whole container (dockerd, jaco daemon, everything): the others see it go.
    cluster.kill(2);
    cluster.wait_for(
        "n2 unreachable after kill",
        || (cluster.node(0, "n2")?.reachability == "unreachable").then_some(()),
        show(0),
    );
    // Started again from its own data directory and engine state, it is the same node n2.
    cluster.start(2);
    cluster.wait_for(
        "n2 back, ready and reachable",
        || all_ready_and_reachable(&cluster.nodes(0).ok()?, 3).then_some(()),
        show(0),
    );
    cluster.wait_for(
        "n2 itself sees a leader again",
        || {
            let nodes = cluster.nodes(2).ok()?;
            nodes.iter().any(|n| n.role == "leader").then_some(())
        },
        show(2),
    );

    // Partition n1: the majority side reports it unreachable; docker exec still reaches it.
    cluster.partition(1);
    let majority = 0;
    cluster.wait_for(
        "n1 unreachable while partitioned",
        || (cluster.node(majority, "n1")?.reachability == "unreachable").then_some(()),
        show(majority),
    );
    let isolated = cluster
        .nodes(1)
        .expect("a partitioned node still answers reads from local state");
    assert_eq!(isolated.len(), 3, "{isolated:?}");
    cluster.heal(1);
    cluster.wait_for(
        "n1 reachable after heal",
        || all_ready_and_reachable(&cluster.nodes(majority).ok()?, 3).then_some(()),
        show(majority),
    );
    cluster.wait_for(
        "n1 follows a leader again",
        || {
            let nodes = cluster.nodes(1).ok()?;
            let me = nodes.iter().find(|n| n.name == "n1")?;
            (me.role == "follower" || me.role == "leader").then_some(())
        },
        show(1),
    );
}
