//! Deployments on the machine's real Docker engine through a real one-node jaco cluster:
//! replica states (healthy, unhealthy, no healthcheck, exits, restart budget), depends_on
//! gating, spec-hash recreation, a failing rollout rolled back while the old replicas serve,
//! stop_grace_period, adoption after a daemon restart and orphan removal, logs, exec, secrets
//! and delete, pulls from a local registry retried until the cluster's credential is right and
//! until the image is pushed. Images are built locally from busybox-static; every test has its own cluster
//! id and deployment names and removes its Docker objects even when it fails.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use jaco::error::Code;
use jaco::proto::v1 as pb;
use jaco::proto::v1::registry_client::RegistryClient;
use support::deploy::{CONVERGE, Deployer, docker_lines, inspect, replicas_of, unique_name};
use support::docker::{Cleanup, Registry, busybox_image, unique};
use tokio_stream::StreamExt;

fn jaco_yaml(deployment: &str, extra: &str) -> String {
    format!("deployment: {deployment}\nacme: off\n{extra}")
}

/// A service that sleeps forever; `extra` adds keys at service level (4-space indent).
fn sleeper(image: &str, extra: &str) -> String {
    format!(
        "    image: {image}\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_states_follow_health_exits_and_the_restart_budget() {
    let image = busybox_image();
    let mut d = Deployer::start("").await;
    let name = unique_name("states");
    let compose = format!(
        "services:\n  ok:\n{}  plain:\n{}  sick:\n{}  exits:\n    image: {image}\n    command: [\"sh\", \"-c\", \"echo bye; exit 3\"]\n",
        sleeper(
            &image,
            "    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 1s\n"
        ),
        sleeper(&image, ""),
        sleeper(
            &image,
            "    healthcheck:\n      test: [\"CMD\", \"false\"]\n      interval: 1s\n      retries: 1\n"
        ),
    );
    d.apply(&jaco_yaml(&name, ""), &compose).await;

    // Sample every state each replica passes through until all are terminal.
    let mut seen: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let start = Instant::now();
    loop {
        let replicas = replicas_of(&d.status().await, &name);
        for r in &replicas {
            seen.entry(r.service.clone())
                .or_default()
                .insert((format!("{:?}", r.state), r.code.clone()));
        }
        let state = |service: &str| {
            replicas
                .iter()
                .find(|r| r.service == service)
                .map(|r| r.state)
        };
        let done = state("ok") == Some(pb::ReplicaState::Running)
            && state("plain") == Some(pb::ReplicaState::Running)
            && state("sick") == Some(pb::ReplicaState::Failed)
            && state("exits") == Some(pb::ReplicaState::Failed);
        if done {
            let failed: Vec<_> = replicas
                .iter()
                .filter(|r| r.state == pb::ReplicaState::Failed)
                .map(|r| (r.service.as_str(), r.code.as_str()))
                .collect();
            assert!(
                failed.contains(&("sick", "restart_exhausted")),
                "{failed:?}"
            );
            assert!(
                failed.contains(&("exits", "restart_exhausted")),
                "{failed:?}"
            );
            break;
        }
        assert!(
            start.elapsed() < CONVERGE * 2,
            "not terminal: {replicas:#?}\nseen: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        seen["sick"].iter().any(|(state, _)| state == "Degraded"),
        "an unhealthy replica is degraded before it fails: {:?}",
        seen["sick"]
    );
    assert!(
        seen["exits"]
            .iter()
            .any(|(_, code)| code == "container_exited"),
        "an exiting container is reported with container_exited: {:?}",
        seen["exits"]
    );
    assert!(
        !seen["plain"]
            .iter()
            .any(|(state, _)| state == "Failed" || state == "Degraded"),
        "{:?}",
        seen["plain"]
    );
    // A failed replica's container is kept, stopped, for inspection.
    let sick = replicas_of(&d.status().await, &name)
        .into_iter()
        .find(|r| r.service == "sick")
        .unwrap();
    assert_eq!(
        inspect(&format!("jaco_{}", sick.id), "{{.State.Running}}").as_deref(),
        Some("false")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_waits_for_its_dependency_to_be_healthy() {
    let image = busybox_image();
    let mut d = Deployer::start("").await;
    let name = unique_name("gate");
    let compose = format!(
        "services:\n  db:\n    image: {image}\n    command: [\"sh\", \"-c\", \"sleep 3; touch /tmp/ready; while true; do sleep 1; done\"]\n    healthcheck:\n      test: [\"CMD\", \"test\", \"-f\", \"/tmp/ready\"]\n      interval: 1s\n      start_period: 30s\n  app:\n{}    depends_on:\n      db: {{condition: service_healthy}}\n",
        sleeper(&image, "")
    );
    d.apply(&jaco_yaml(&name, ""), &compose).await;
    let replicas = d
        .wait_replicas(&name, "db started", |rs| {
            rs.iter()
                .any(|r| r.service == "db" && !r.container_id.is_empty())
        })
        .await;
    let app = replicas.iter().find(|r| r.service == "app").unwrap();
    assert!(
        app.container_id.is_empty() && app.state == pb::ReplicaState::Pending,
        "app must not start before db is healthy: {app:?}"
    );
    let replicas = d.wait_running(&name, 2).await;
    let started = |service: &str| {
        let r = replicas.iter().find(|r| r.service == service).unwrap();
        inspect(&r.container_id, "{{.State.StartedAt}}").unwrap()
    };
    assert!(started("app") > started("db"), "app started after db");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_change_recreates_and_a_failing_rollout_rolls_back_while_old_replicas_serve() {
    let image = busybox_image();
    let mut d = Deployer::start("").await;
    let name = unique_name("roll");
    let jaco = jaco_yaml(
        &name,
        "services:\n  - name: web\n    replicas: 2\n    update:\n      monitor: 1s\n      step_timeout: 8s\n",
    );
    let compose = |image: &str, value: &str| {
        format!(
            "services:\n  web:\n{}",
            sleeper(
                image,
                &format!("    pull_policy: never\n    environment:\n      VERSION: \"{value}\"\n")
            )
        )
    };
    d.apply(&jaco, &compose(&image, "1")).await;
    let first: BTreeSet<String> = d
        .wait_running(&name, 2)
        .await
        .into_iter()
        .map(|r| r.id)
        .collect();

    // An environment change changes the spec hash: every replica is replaced, one at a time.
    d.apply(&jaco, &compose(&image, "2")).await;
    let second = d
        .wait_replicas(&name, "two new replicas running", |rs| {
            rs.len() == 2
                && rs
                    .iter()
                    .all(|r| r.state == pb::ReplicaState::Running && !first.contains(&r.id))
        })
        .await;
    for r in &second {
        let env = inspect(&r.container_id, "{{json .Config.Env}}").unwrap();
        assert!(env.contains("VERSION=2"), "{env}");
    }
    let serving: BTreeSet<String> = second.iter().map(|r| r.id.clone()).collect();

    // A new image that does not exist: the step fails, the rollout rolls back, and the two
    // replicas of revision 2 keep running at every sample.
    let applied = d
        .apply(&jaco, &compose("jaco-test/absent:never", "3"))
        .await;
    assert_eq!(applied.rollouts_started, ["web"]);
    let start = Instant::now();
    loop {
        let status = d.status().await;
        let running = replicas_of(&status, &name)
            .into_iter()
            // `updating` is how status shows a running replica that the rollout replaces.
            .filter(|r| {
                serving.contains(&r.id)
                    && matches!(
                        r.state,
                        pb::ReplicaState::Running | pb::ReplicaState::Updating
                    )
            })
            .count();
        assert_eq!(
            running, 2,
            "old replicas must serve throughout: {status:#?}"
        );
        let rollout = status.deployments[0].services[0].rollout.clone();
        if let Some(rollout) = rollout.filter(|r| r.state() == pb::RolloutState::Aborted) {
            assert!(rollout.rolled_back, "{rollout:?}");
            break;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "the rollout never aborted: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = d
        .wait_replicas(&name, "the failed replacement removed", |rs| rs.len() == 2)
        .await;
    let ids: BTreeSet<String> = after.into_iter().map(|r| r.id).collect();
    assert_eq!(ids, serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_grace_period_is_honoured_on_delete() {
    let image = busybox_image();
    let mut d = Deployer::start("").await;
    let name = unique_name("grace");
    // The process ignores SIGTERM: only the grace period's SIGKILL ends it.
    let compose = format!(
        "services:\n  stubborn:\n    image: {image}\n    command: [\"sh\", \"-c\", \"trap '' TERM; while true; do sleep 1; done\"]\n    stop_grace_period: 3s\n"
    );
    d.apply(&jaco_yaml(&name, ""), &compose).await;
    let replica = d.wait_running(&name, 1).await.remove(0);
    let container = format!("jaco_{}", replica.id);
    let started = Instant::now();
    d.client
        .delete(pb::DeleteRequest {
            deployment: name.clone(),
            keep_volumes: false,
        })
        .await
        .expect("delete");
    while inspect(&container, "{{.State.Running}}").as_deref() == Some("true") {
        assert!(started.elapsed() < CONVERGE, "never stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    eprintln!("stop of a SIGTERM-ignoring container with stop_grace_period 3s took {took:?}");
    assert!(
        took >= Duration::from_millis(2_500) && took < Duration::from_secs(9),
        "stop took {took:?}; expected the 3 s grace period, not docker's 10 s default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_adopts_its_containers_and_removes_only_its_own_orphans() {
    let image = busybox_image();
    let mut d = Deployer::start("").await;
    let name = unique_name("adopt");
    d.apply(
        &jaco_yaml(&name, ""),
        &format!("services:\n  web:\n{}", sleeper(&image, "")),
    )
    .await;
    let replica = d.wait_running(&name, 1).await.remove(0);
    let started_at = inspect(&replica.container_id, "{{.State.StartedAt}}").unwrap();

    // An orphan of this cluster and a container that is not jaco's.
    let orphan = format!("jaco_{name}-ghost-1");
    let foreign = unique_name("foreign");
    let run = |name: &str, labels: &[String]| {
        let mut args = vec!["run".to_owned(), "-d".into(), "--name".into(), name.into()];
        for label in labels {
            args.extend(["--label".into(), label.clone()]);
        }
        args.extend([image.clone(), "sleep".into(), "600".into()]);
        let status = Command::new("docker").args(&args).status().unwrap();
        assert!(status.success(), "docker run {name}");
    };
    run(
        &orphan,
        &[
            format!("jaco.cluster_id={}", d.cluster_id),
            format!("jaco.deployment={name}"),
            "jaco.service=ghost".into(),
            format!("jaco.replica_id={name}-ghost-1"),
        ],
    );
    run(&foreign, &[]);
    let _foreign_guard = ForeignContainer(foreign.clone());

    d.daemons.terminate(0);
    d.daemons.launch(0);
    d.reconnect().await;
    let start = Instant::now();
    while inspect(&orphan, "{{.Id}}").is_some() {
        assert!(start.elapsed() < CONVERGE, "the orphan was never removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let replica_now = d.wait_running(&name, 1).await.remove(0);
    assert_eq!(
        replica_now.container_id, replica.container_id,
        "adopted, not recreated"
    );
    assert_eq!(
        inspect(&replica.container_id, "{{.State.StartedAt}}").unwrap(),
        started_at,
        "adopted without a restart"
    );
    assert!(
        inspect(&foreign, "{{.Id}}").is_some(),
        "a foreign container was touched"
    );
}

/// Removes a container the test made outside jaco.
struct ForeignContainer(String);

impl Drop for ForeignContainer {
    fn drop(&mut self) {
        docker_lines(&["rm", "-f", &self.0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_exec_secrets_and_delete_cleans_everything() {
    let image = busybox_image();
    let mut d = Deployer::start("").await;
    let name = unique_name("io");
    let compose = format!(
        "services:\n  web:\n    image: {image}\n    command: [\"sh\", \"-c\", \"echo to-stdout; echo to-stderr >&2; trap 'exit 0' TERM; while true; do sleep 1; done\"]\n    volumes: [\"data:/data\"]\n    secrets: [token]\nvolumes:\n  data: {{}}\nsecrets:\n  token:\n    file: ./token.txt\n"
    );
    let secret = b"s3cr3t-value".to_vec();
    d.try_apply(
        &jaco_yaml(&name, ""),
        &compose,
        vec![pb::BlobContent {
            kind: pb::BlobKind::Secret.into(),
            name: "token".into(),
            content: secret.clone(),
        }],
    )
    .await
    .expect("apply");
    let replica = d.wait_running(&name, 1).await.remove(0);

    // Logs: both streams, attributed to the replica and its node.
    let mut lines = Vec::new();
    let mut stream = d
        .client
        .logs(pb::LogsRequest {
            deployment: name.clone(),
            service: "web".into(),
            ..Default::default()
        })
        .await
        .expect("logs")
        .into_inner();
    while let Some(item) = stream.next().await {
        if let Some(pb::logs_response::Item::Line(line)) = item.expect("log item").item {
            lines.push((
                line.replica.clone(),
                line.node.clone(),
                line.stream(),
                String::from_utf8_lossy(&line.line).into_owned(),
            ));
        }
    }
    assert!(
        lines.contains(&(
            replica.id.clone(),
            "n0".into(),
            pb::LogStream::Stdout,
            "to-stdout".into()
        )),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(
            replica.id.clone(),
            "n0".into(),
            pb::LogStream::Stderr,
            "to-stderr".into()
        )),
        "{lines:?}"
    );

    // Exec: output, stdin and the exit code; the secret is mounted read-only.
    let (stdout, code) = exec(
        &mut d,
        &name,
        &["sh", "-c", "cat; echo; cat /run/secrets/token; exit 7"],
        Some(b"from-stdin"),
    )
    .await;
    assert_eq!(code, 7);
    assert_eq!(stdout, "from-stdin\ns3cr3t-value");
    let (_, code) = exec(
        &mut d,
        &name,
        &["sh", "-c", "echo x > /run/secrets/token"],
        None,
    )
    .await;
    assert_ne!(code, 0, "secrets are read-only");

    // The secret appears in no status or get answer.
    let status = format!("{:?}", d.status().await);
    assert!(!status.contains("s3cr3t"), "{status}");

    // Delete removes the containers, the network and the volume jaco created.
    let volumes_before = docker_lines(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=jaco.cluster_id={}", d.cluster_id),
    ]);
    assert_eq!(volumes_before.len(), 1, "{volumes_before:?}");
    d.client
        .delete(pb::DeleteRequest {
            deployment: name.clone(),
            keep_volumes: false,
        })
        .await
        .expect("delete");
    let start = Instant::now();
    loop {
        let label = format!("label=jaco.cluster_id={}", d.cluster_id);
        let left: Vec<String> = [
            docker_lines(&["ps", "-aq", "--filter", &label]),
            docker_lines(&["network", "ls", "-q", "--filter", &label]),
            docker_lines(&["volume", "ls", "-q", "--filter", &label]),
        ]
        .concat();
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "left behind after delete: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = d
        .client
        .delete(pb::DeleteRequest {
            deployment: name,
            keep_volumes: false,
        })
        .await
        .expect_err("already deleted");
    assert_eq!(
        jaco::error::Error::from_status(&refused).code,
        Code::DeploymentNotFound
    );
}

/// Runs `command` in the deployment's `web` service; returns stdout and the exit code.
async fn exec(
    d: &mut Deployer,
    deployment: &str,
    command: &[&str],
    stdin: Option<&[u8]>,
) -> (String, i32) {
    use pb::exec_request::Msg;
    let mut requests = vec![pb::ExecRequest {
        msg: Some(Msg::Start(pb::ExecStart {
            deployment: deployment.into(),
            service: "web".into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            stdin: stdin.is_some(),
            ..Default::default()
        })),
    }];
    if let Some(bytes) = stdin {
        requests.push(pb::ExecRequest {
            msg: Some(Msg::Stdin(bytes.to_vec())),
        });
        requests.push(pb::ExecRequest {
            msg: Some(Msg::CloseStdin(pb::ExecStdinClose {})),
        });
    }
    let mut responses = d
        .client
        .exec(tokio_stream::iter(requests))
        .await
        .expect("exec")
        .into_inner();
    let mut stdout = Vec::new();
    while let Some(item) = responses.next().await {
        match item.expect("exec item").msg {
            Some(pb::exec_response::Msg::Stdout(bytes)) => stdout.extend(bytes),
            Some(pb::exec_response::Msg::Exit(exit)) => {
                return (
                    String::from_utf8_lossy(&stdout).trim().to_owned(),
                    exit.exit_code,
                );
            }
            _ => {}
        }
    }
    panic!("exec ended without an exit");
}

/// Waits until every replica of `deployment` is pending with `image_pull_failed` for `reason`
/// at an attempt above `after`; returns that attempt.
async fn wait_pull_failure(d: &mut Deployer, deployment: &str, reason: &str, after: u32) -> u32 {
    let replicas = d
        .wait_replicas(
            deployment,
            &format!("image_pull_failed ({reason}) after attempt {after}"),
            |rs| {
                !rs.is_empty()
                    && rs.iter().all(|r| {
                        r.state == pb::ReplicaState::Pending
                            && r.code == "image_pull_failed"
                            && r.details.get("reason").map(String::as_str) == Some(reason)
                            && attempt(r) > after
                    })
            },
        )
        .await;
    attempt(&replicas[0])
}

fn attempt(replica: &support::deploy::Replica) -> u32 {
    replica
        .details
        .get("attempt")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_retry_until_the_cluster_credential_is_right_and_the_image_exists() {
    let cleanup = Cleanup::default();
    let open = Registry::start();
    let guarded = Registry::start_authenticated(&open, "ci", "right-password");
    let repository = format!("{}:1", unique("jaco-test/private"));
    open.push(&busybox_image(), &repository, &cleanup);
    let private = cleanup.image(&format!("{}/{repository}", guarded.address));
    let later = cleanup.image(&format!("{}/{}:1", open.address, unique("jaco-test/later")));
    let mut d = Deployer::start("").await;
    let mut registry = RegistryClient::new(d.daemons.local(0).await);
    let login = |password: &str| pb::RegistryLoginRequest {
        registry: guarded.address.clone(),
        username: "ci".into(),
        password: password.into(),
    };

    let name = unique_name("private");
    d.apply(
        &jaco_yaml(&name, ""),
        &format!("services:\n  app:\n{}", sleeper(&private, "")),
    )
    .await;
    let anonymous = wait_pull_failure(&mut d, &name, "auth_failed", 0).await;

    // A wrong credential still fails the same way. An attempt already under way when the
    // login commits may have gone without it, so the one after that is awaited.
    registry
        .login(login("wrong-password"))
        .await
        .expect("login");
    wait_pull_failure(&mut d, &name, "auth_failed", anonymous + 1).await;
    let status = format!("{:?}", d.status().await);
    assert!(!status.contains("wrong-password"), "{status}");

    // Rotating it to the right one lets the following attempt pull: no new apply needed.
    let rotated = registry
        .login(login("right-password"))
        .await
        .expect("login")
        .into_inner();
    assert!(rotated.rotated);
    let running = d.wait_running(&name, 1).await;
    assert_eq!(running[0].code, "", "{running:?}");
    let used = docker_lines(&[
        "inspect",
        "--format",
        "{{.Config.Image}}",
        &running[0].container_id,
    ]);
    assert_eq!(used, [private]);

    // An image that does not exist yet: retried until it is pushed, then pulled.
    let waiting = unique_name("later");
    d.apply(
        &jaco_yaml(&waiting, ""),
        &format!("services:\n  app:\n{}", sleeper(&later, "")),
    )
    .await;
    wait_pull_failure(&mut d, &waiting, "image_not_found", 0).await;
    let (repository, _) = later
        .split_once('/')
        .map(|(_, r)| (r, ()))
        .expect("has a host");
    open.push(&busybox_image(), repository, &cleanup);
    // The push left a local tag; without it the agent's next attempt must really pull.
    docker_lines(&["image", "rm", &later]);
    d.wait_running(&waiting, 1).await;
    let present = docker_lines(&["image", "ls", "-q", &later]);
    assert_eq!(present.len(), 1, "pulled from the registry: {present:?}");
}
