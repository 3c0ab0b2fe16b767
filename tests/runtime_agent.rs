//! The node agent against the real Docker engine, inside a real single-node member (in
//! process): the test writes what the scheduler would (deployments and `ReplicaDesired`
//! records) and waits for what the agent reports and does — containers started with their
//! secrets, restarts on a new restart generation, removal, teardown of a deleted deployment,
//! and a pull that fails past its budget.
//!
//! The scheduler's own end-to-end tests build on this once it exists; these check the agent's
//! wiring (state in, Docker and reports out). Needs Docker and busybox-static.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jaco::api::auth::Identity;
use jaco::daemon::config::{DaemonConfig, RuntimeSettings};
use jaco::daemon::member::{Member, MemberSettings};
use jaco::daemon::metrics::Metrics;
use jaco::daemon::{lifecycle, run::member_raft_config};
use jaco::manifest::spec::FileObject;
use jaco::manifest::{Objects, resolve_documents, wire};
use jaco::proto::v1::{self as pb, command::Kind};
use jaco::runtime::docker::Docker;
use jaco::runtime::{Runtime, Status};
use support::pool::PoolLease;
use tokio::sync::watch;

use support::docker::{Cleanup, DOCKER_SOCKET, busybox_image, unique};

const DEADLINE: Duration = Duration::from_secs(60);

/// A single-node member with its agent running.
struct Node {
    member: Arc<Member>,
    stop: watch::Sender<bool>,
    agent: tokio::task::JoinHandle<()>,
    secrets_dir: std::path::PathBuf,
    _pool: PoolLease,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(pull_retry_budget: u32) -> Node {
        Node::start_on(
            DOCKER_SOCKET,
            tempfile::tempdir().unwrap(),
            pull_retry_budget,
        )
        .await
    }

    /// A node whose engine socket is `socket`, with its files under `dir`.
    async fn start_on(socket: &str, dir: tempfile::TempDir, pull_retry_budget: u32) -> Node {
        let settings = MemberSettings {
            name: "n1".into(),
            data_dir: dir.path().join("data"),
            advertise: "127.0.0.1:7000".into(),
            raft: member_raft_config(&DaemonConfig::default()).unwrap(),
            leader_wait: Duration::from_secs(5),
        };
        std::fs::create_dir_all(&settings.data_dir).unwrap();
        let pool = PoolLease::take();
        let defaults = lifecycle::ClusterDefaults {
            audit_retention: 1000,
            ipam_pool: pool.cidr.clone(),
        };
        let (member, _) = lifecycle::init(
            &settings,
            "agent-test",
            Default::default(),
            &defaults,
            Arc::new(Metrics::new()),
        )
        .await
        .expect("a single-node cluster");
        let secrets_dir = dir.path().join("secrets");
        let (stop, stopped) = watch::channel(false);
        let agent = tokio::spawn(jaco::runtime::agent::run(
            member.clone(),
            Arc::new(Docker::new(socket)),
            RuntimeSettings {
                docker_socket: socket.into(),
                secrets_dir: secrets_dir.clone(),
                pull_retry_budget,
            },
            stopped,
        ));
        Node {
            member,
            stop,
            agent,
            secrets_dir,
            _pool: pool,
            _dir: dir,
        }
    }

    async fn submit(&self, kind: Kind) {
        self.member
            .submit(&Identity::Local, kind)
            .await
            .expect("the command commits");
    }

    /// Applies `compose` as deployment `name` with secret `token`; returns the spec hash of
    /// each service.
    async fn apply(&self, name: &str, compose: &str, token: &[u8]) -> pb::DeploymentSpec {
        let jaco = format!("deployment: {name}\nacme: off\n");
        let mut objects = Objects::default();
        objects
            .secrets
            .insert("token".into(), FileObject::new(token.to_vec()));
        let resolved = resolve_documents(&jaco, compose, objects).expect("the documents resolve");
        let spec = wire::deployment_spec(&resolved, &jaco, compose);
        let blobs = resolved
            .deployment
            .secrets
            .iter()
            .map(|(secret, object)| pb::ContentBlob {
                kind: pb::BlobKind::Secret.into(),
                deployment: name.into(),
                name: secret.clone(),
                content: object.content.clone(),
                sha256: object.sha256.clone(),
                ..Default::default()
            })
            .collect();
        self.submit(Kind::ApplyDeployment(pb::ApplyDeployment {
            deployment: name.into(),
            spec: Some(spec.clone()),
            blobs,
            ..Default::default()
        }))
        .await;
        spec
    }

    /// Places replica 1 of `service` on this node, as the scheduler would.
    async fn place(
        &self,
        name: &str,
        spec: &pb::DeploymentSpec,
        service: &str,
        generation: u64,
    ) -> String {
        let service_spec = spec
            .services
            .iter()
            .find(|s| s.name == service)
            .expect("the service");
        let id = format!("{name}-{service}-1");
        let desired = pb::ReplicaDesired {
            id: id.clone(),
            deployment: name.into(),
            service: service.into(),
            index: 1,
            node: "n1".into(),
            spec_hash: service_spec.spec_hash.clone(),
            revision: 1,
            image: service_spec.image.clone(),
            restart_generation: generation,
            ..Default::default()
        };
        self.submit(Kind::SchedulerBatch(pb::SchedulerBatch {
            upsert_replicas: vec![desired],
            ..Default::default()
        }))
        .await;
        id
    }

    /// Waits until the replica's observation satisfies `done`.
    async fn observed_until(
        &self,
        replica: &str,
        what: &str,
        done: impl Fn(&pb::ReplicaObserved) -> bool,
    ) -> pb::ReplicaObserved {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let observed = self.member.read(|s| s.replica_observed(replica).cloned());
            if let Some(observed) = &observed
                && done(observed)
            {
                return observed.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{replica}: {what} not reported within {DEADLINE:?}; last: {observed:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.agent.await;
        self.member.shutdown().await;
    }
}

/// Waits until `check` holds, or fails after [`DEADLINE`].
async fn eventually(what: &str, check: impl AsyncFn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_restarts_removes_and_tears_down_what_the_state_asks_for() {
    let cleanup = Cleanup::default();
    let docker = Docker::new(DOCKER_SOCKET);
    let node = Node::start(10).await;
    let name = unique("agent").replace('-', "");
    let replica = format!("{name}-web-1");
    let container = cleanup.container(&format!("jaco_{replica}"));
    let network = cleanup.network(&format!("jaco_{name}_default"));
    let compose = format!(
        "services:\n  web:\n    image: {}\n    command: [sh, -c, 'sleep 1000']\n    \
         stop_grace_period: 1s\n    secrets: [token]\nsecrets:\n  token:\n    file: ./token\n",
        busybox_image()
    );
    let spec = node.apply(&name, &compose, b"s3cret").await;
    node.place(&name, &spec, "web", 0).await;

    // Started, reported running (no healthcheck: after five polls), secret mounted.
    let running = node
        .observed_until(&replica, "running", |o| {
            o.state() == pb::ReplicaState::Running
        })
        .await;
    assert_eq!(running.node, "n1");
    assert!(running.last_health_at_unix_ms > 0);
    assert!(
        running.network_addresses.contains_key("default"),
        "{running:?}"
    );
    let inspected = docker
        .inspect(&container)
        .await
        .unwrap()
        .expect("the container");
    assert_eq!(inspected.container_id, running.container_id);
    assert_eq!(inspected.labels["jaco.replica_id"], replica);
    assert!(inspected.addresses.contains_key(&network));
    let cat = jaco::runtime::ExecSpec {
        command: vec!["cat".into(), "/run/secrets/token".into()],
        ..Default::default()
    };
    let mut session = docker.exec(&container, &cat).await.unwrap();
    let mut seen = Vec::new();
    use tokio_stream::StreamExt as _;
    while let Some(Ok(item)) = session.output.next().await {
        if let jaco::runtime::ExecOutput::Stdout(bytes) = item {
            seen.extend(bytes);
        }
    }
    assert_eq!(seen, b"s3cret");
    let docker_ok = node
        .member
        .read(|s| s.node("n1").and_then(|n| n.docker.clone()));
    assert!(
        docker_ok.is_some_and(|c| c.ok),
        "the node's docker condition is ok"
    );

    // A new restart generation replaces the container.
    node.place(&name, &spec, "web", 1).await;
    let restarted = node
        .observed_until(&replica, "running in a new container", |o| {
            o.state() == pb::ReplicaState::Running && o.container_id != running.container_id
        })
        .await;
    assert_eq!(restarted.restart_count, 0);

    // Removed from the node: container and files go.
    node.submit(Kind::SchedulerBatch(pb::SchedulerBatch {
        remove_replicas: vec![replica.clone()],
        ..Default::default()
    }))
    .await;
    eventually("the container is removed", async || {
        docker.inspect(&container).await.unwrap().is_none()
    })
    .await;
    let files = node.secrets_dir.join(&replica);
    eventually("the secret files are removed", async || !files.exists()).await;

    // Deleted: the deployment's network goes.
    node.submit(Kind::DeleteDeployment(pb::DeleteDeployment {
        deployment: name.clone(),
        keep_volumes: false,
    }))
    .await;
    eventually("the network is removed", async || {
        let networks = docker.networks(&node_cluster_id(&node)).await.unwrap();
        !networks.iter().any(|n| n.name == network)
    })
    .await;
    let inspected = docker.inspect(&container).await.unwrap();
    assert!(inspected.is_none_or(|c| c.status != Status::Running));
    node.stop().await;
}

fn node_cluster_id(node: &Node) -> String {
    node.member
        .read(|s| s.cluster_meta().map(|m| m.cluster_id.clone()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_that_keeps_failing_is_pending_then_failed() {
    let node = Node::start(2).await;
    let name = unique("pull").replace('-', "");
    let replica = format!("{name}-web-1");
    let compose = format!(
        "services:\n  web:\n    image: 127.0.0.1:1/{}:1\n    secrets: [token]\nsecrets:\n  token:\n    file: ./token\n",
        unique("nowhere")
    );
    let spec = node.apply(&name, &compose, b"x").await;
    node.place(&name, &spec, "web", 0).await;
    let pending = node
        .observed_until(&replica, "a failed pull", |o| o.code == "image_pull_failed")
        .await;
    assert_eq!(pending.state(), pb::ReplicaState::Pending);
    assert_eq!(pending.details["reason"], "registry_unreachable");
    assert_eq!(pending.details["attempt"], "1");
    assert!(pending.details.contains_key("next_retry_at"));
    let failed = node
        .observed_until(&replica, "failed past the budget", |o| {
            o.state() == pb::ReplicaState::Failed
        })
        .await;
    assert_eq!(failed.code, "image_pull_failed");
    assert_eq!(failed.details["attempt"], "2");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_does_not_answer_is_reported_and_its_return_noticed() {
    let cleanup = Cleanup::default();
    // The engine's socket appears only later: a link to the real one.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let node = Node::start_on(&format!("unix://{}", socket.display()), dir, 10).await;
    let name = unique("down").replace('-', "");
    let replica = format!("{name}-web-1");
    cleanup.container(&format!("jaco_{replica}"));
    cleanup.network(&format!("jaco_{name}_default"));
    let compose = format!(
        "services:\n  web:\n    image: {}\n    command: [sleep, '1000']\n    \
         stop_grace_period: 1s\n    secrets: [token]\nsecrets:\n  token:\n    file: ./token\n",
        busybox_image()
    );
    let spec = node.apply(&name, &compose, b"x").await;
    node.place(&name, &spec, "web", 0).await;

    let pending = node
        .observed_until(&replica, "pending with docker_error", |o| {
            o.code == "docker_error"
        })
        .await;
    assert_eq!(pending.state(), pb::ReplicaState::Pending);
    let condition = node
        .member
        .read(|s| s.node("n1").and_then(|n| n.docker.clone()));
    let condition = condition.expect("the docker condition is reported");
    assert!(!condition.ok);
    assert_eq!(condition.code, "docker_error");

    std::os::unix::fs::symlink("/var/run/docker.sock", &socket).unwrap();
    node.observed_until(&replica, "running once the engine answers", |o| {
        o.state() == pb::ReplicaState::Running
    })
    .await;
    let condition = node
        .member
        .read(|s| s.node("n1").and_then(|n| n.docker.clone()));
    assert!(condition.is_some_and(|c| c.ok), "the condition recovers");
    node.submit(Kind::SchedulerBatch(pb::SchedulerBatch {
        remove_replicas: vec![replica],
        ..Default::default()
    }))
    .await;
    node.stop().await;
}
