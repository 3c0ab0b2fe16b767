//! The Docker runtime against the real engine: containers, stop signals and grace periods
//! (measured), logs, exec, healthchecks, networks, volumes, secrets mounts, events and pulls
//! from a local registry with and without credentials.
//!
//! Every test uses its own cluster id and unique names, and a [`Cleanup`] guard removes what it
//! created even when it fails. Needs Docker, busybox-static, docker-registry and htpasswd.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jaco::error::Code;
use jaco::manifest::spec::{ContainerSpec, Healthcheck, Mount, MountKind};
use jaco::runtime::docker::Docker;
use jaco::runtime::{
    ContainerPlan, ExecOutput, ExecSpec, FileBind, Health, Inspection, LogOptions, LogStream,
    NetworkAttachment, NetworkPlan, RegistryAuth, ReplicaIdentity, Runtime, Status, TerminalSize,
    VolumePlan,
};
use tokio::io::AsyncWriteExt as _;
use tokio_stream::StreamExt as _;

use support::docker::{Cleanup, DOCKER_SOCKET, Registry, busybox_image, unique};

/// How long any condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

fn runtime() -> Docker {
    Docker::new(DOCKER_SOCKET)
}

/// A plan for replica `replica` of cluster `cluster` running `command` in the busybox image.
fn plan(cluster: &str, replica: &str, command: &str) -> ContainerPlan {
    plan_with(cluster, replica, |spec| {
        spec.command = Some(vec!["sh".into(), "-c".into(), command.into()]);
    })
}

fn plan_with(cluster: &str, replica: &str, set: impl FnOnce(&mut ContainerSpec)) -> ContainerPlan {
    let mut spec = ContainerSpec {
        image: busybox_image(),
        ..ContainerSpec::default()
    };
    set(&mut spec);
    ContainerPlan {
        name: format!("jaco_{replica}"),
        identity: ReplicaIdentity {
            cluster_id: cluster.into(),
            deployment: "test".into(),
            service: "svc".into(),
            replica_id: replica.into(),
            spec_hash: "hash".into(),
            revision: 1,
            restart_generation: 0,
            node: "n1".into(),
        },
        spec: Arc::new(spec),
        networks: Vec::new(),
        peers: BTreeMap::new(),
        volumes: BTreeMap::new(),
        files: Vec::new(),
        dns_servers: Vec::new(),
    }
}

/// Runs `plan`, registering its container with `cleanup`.
async fn run(docker: &Docker, cleanup: &Cleanup, plan: &ContainerPlan) -> String {
    cleanup.container(&plan.name);
    docker.run(plan).await.expect("the container runs")
}

/// Inspects `container` until `done` holds, or fails after [`DEADLINE`].
async fn inspect_until(
    docker: &Docker,
    container: &str,
    what: &str,
    done: impl Fn(&Inspection) -> bool,
) -> Inspection {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let inspection = docker
            .inspect(container)
            .await
            .expect("inspect")
            .expect("the container exists");
        if done(&inspection) {
            return inspection;
        }
        assert!(
            Instant::now() < deadline,
            "{container}: {what} not seen within {DEADLINE:?}; last: {inspection:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a command to completion: (stdout, stderr, exit code).
async fn exec(docker: &Docker, container: &str, spec: ExecSpec) -> (String, String, i64) {
    let session = docker.exec(container, &spec).await.expect("exec starts");
    collect(session.output).await
}

async fn collect(
    mut output: jaco::runtime::BoxStream<'static, Result<ExecOutput, jaco::error::Error>>,
) -> (String, String, i64) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let collected = tokio::time::timeout(DEADLINE, async {
        while let Some(item) = output.next().await {
            match item.expect("exec output") {
                ExecOutput::Stdout(bytes) => stdout.extend(bytes),
                ExecOutput::Stderr(bytes) => stderr.extend(bytes),
                ExecOutput::Exit(code) => return code,
            }
        }
        panic!("the exec output ended without an exit code");
    })
    .await
    .expect("the command finishes");
    (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
        collected,
    )
}

fn command(words: &[&str]) -> ExecSpec {
    ExecSpec {
        command: words.iter().map(|w| (*w).to_owned()).collect(),
        ..ExecSpec::default()
    }
}

#[tokio::test]
async fn containers_run_are_listed_by_cluster_and_inspected() {
    let docker = runtime();
    let cleanup = Cleanup::default();
    let cluster = unique("c");
    let version = docker.version().await.expect("the engine answers");
    assert!(!version.api_version.is_empty(), "{version:?}");

    let a = plan(&cluster, &unique("r"), "sleep 1000");
    let b = plan(&cluster, &unique("r"), "sleep 1000");
    let id_a = run(&docker, &cleanup, &a).await;
    run(&docker, &cleanup, &b).await;
    let up = inspect_until(&docker, &id_a, "running", |i| i.status == Status::Running).await;
    assert_eq!(up.name, a.name);
    assert_eq!(up.health, Health::None, "no compose healthcheck means none");
    assert!(up.started_at_unix_ms > 0);
    assert!(up.image_id.starts_with("sha256:"), "{}", up.image_id);
    assert_eq!(
        ReplicaIdentity::from_labels(&up.labels),
        Some(a.identity.clone())
    );
    assert!(up.addresses.contains_key("bridge"), "{:?}", up.addresses);

    let mut listed: Vec<String> = docker
        .containers(&cluster)
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.name)
        .collect();
    listed.sort();
    let mut expected = vec![a.name.clone(), b.name.clone()];
    expected.sort();
    assert_eq!(listed, expected, "exactly this cluster's containers");
    assert!(
        docker
            .containers(&unique("other"))
            .await
            .unwrap()
            .is_empty()
    );

    docker.remove(&a.name).await.expect("remove");
    assert_eq!(docker.inspect(&a.name).await.unwrap(), None);
    docker
        .remove(&a.name)
        .await
        .expect("removing twice is fine");
    docker
        .stop(&a.name, None)
        .await
        .expect("stopping a gone container is fine");
}

#[tokio::test]
async fn stop_honours_the_stop_signal_and_the_grace_period() {
    let docker = runtime();
    let cleanup = Cleanup::default();
    let cluster = unique("c");
    // Traps SIGTERM and needs about 2 s to shut down; grace 5 s.
    let polite = plan_with(&cluster, &unique("polite"), |s| {
        s.command = Some(vec![
            "sh".into(),
            "-c".into(),
            "trap 'sleep 2; exit 0' TERM; while true; do sleep 0.1; done".into(),
        ]);
        s.stop_grace_period = Some("5s".into());
    });
    // Ignores SIGTERM; grace 2 s, then SIGKILL.
    let stubborn = plan_with(&cluster, &unique("stubborn"), |s| {
        s.command = Some(vec![
            "sh".into(),
            "-c".into(),
            "trap '' TERM; while true; do sleep 0.1; done".into(),
        ]);
        s.stop_grace_period = Some("2s".into());
    });
    // Exits with 7 on SIGUSR1 only: PID 1 ignores an untrapped SIGTERM, so a quick exit 7
    // proves the engine sent the declared stop signal.
    let signalled = plan_with(&cluster, &unique("usr1"), |s| {
        s.command = Some(vec![
            "sh".into(),
            "-c".into(),
            "trap 'exit 7' USR1; while true; do sleep 0.1; done".into(),
        ]);
        s.stop_signal = Some("SIGUSR1".into());
        s.stop_grace_period = Some("10s".into());
    });
    for p in [&polite, &stubborn, &signalled] {
        let id = run(&docker, &cleanup, p).await;
        inspect_until(&docker, &id, "running", |i| i.status == Status::Running).await;
    }
    // The traps are installed before the loop starts; give the shells a moment to get there.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (polite_took, stubborn_took, signalled_took) = tokio::join!(
        timed_stop(&docker, &polite.name),
        timed_stop(&docker, &stubborn.name),
        timed_stop(&docker, &signalled.name),
    );
    let exit = |name: &str| {
        let docker = docker.clone();
        let name = name.to_owned();
        async move {
            match docker.inspect(&name).await.unwrap().unwrap().status {
                Status::Exited(code) => code,
                other => panic!("{name} is {other:?} after stop"),
            }
        }
    };
    assert_eq!(exit(&polite.name).await, 0);
    assert!(
        (Duration::from_millis(1800)..Duration::from_millis(4500)).contains(&polite_took),
        "a container that needs 2 s of its 5 s grace stopped in {polite_took:?}"
    );
    assert_eq!(exit(&stubborn.name).await, 137, "killed after the grace");
    assert!(
        (Duration::from_millis(1800)..Duration::from_millis(4500)).contains(&stubborn_took),
        "a container ignoring SIGTERM with 2 s grace stopped in {stubborn_took:?}"
    );
    assert_eq!(
        exit(&signalled.name).await,
        7,
        "SIGUSR1 reached the container"
    );
    assert!(
        signalled_took < Duration::from_secs(5),
        "stop_signal stop took {signalled_took:?}"
    );

    // An explicit grace overrides the container's own.
    let quick = plan_with(&cluster, &unique("quick"), |s| {
        s.command = Some(vec![
            "sh".into(),
            "-c".into(),
            "trap '' TERM; while true; do sleep 0.1; done".into(),
        ]);
        s.stop_grace_period = Some("1m".into());
    });
    run(&docker, &cleanup, &quick).await;
    inspect_until(&docker, &quick.name, "running", |i| {
        i.status == Status::Running
    })
    .await;
    let took = timed_stop_with(&docker, &quick.name, Some(Duration::from_secs(1))).await;
    assert!(took < Duration::from_secs(4), "grace 1 s took {took:?}");
}

async fn timed_stop(docker: &Docker, name: &str) -> Duration {
    timed_stop_with(docker, name, None).await
}

async fn timed_stop_with(docker: &Docker, name: &str, grace: Option<Duration>) -> Duration {
    let started = Instant::now();
    docker.stop(name, grace).await.expect("stop");
    started.elapsed()
}

#[tokio::test]
async fn logs_tell_stdout_from_stderr_and_honour_tail_since_and_follow() {
    let docker = runtime();
    let cleanup = Cleanup::default();
    let cluster = unique("c");
    let before = jaco::pki::now_unix_ms();
    let p = plan(
        &cluster,
        &unique("logs"),
        "echo one; echo two >&2; sleep 0.3; echo three; sleep 1000",
    );
    run(&docker, &cleanup, &p).await;

    let deadline = Instant::now() + DEADLINE;
    let lines = loop {
        let lines: Vec<_> = docker
            .logs(&p.name, &LogOptions::default())
            .collect::<Result<Vec<_>, _>>()
            .await
            .expect("logs");
        if lines.len() >= 3 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let shown: Vec<(LogStream, String)> = lines
        .iter()
        .map(|l| (l.stream, String::from_utf8_lossy(&l.line).into_owned()))
        .collect();
    assert_eq!(shown.len(), 3, "{shown:?}");
    assert!(
        shown.contains(&(LogStream::Stdout, "one".into())),
        "{shown:?}"
    );
    assert!(
        shown.contains(&(LogStream::Stderr, "two".into())),
        "{shown:?}"
    );
    assert_eq!(shown[2], (LogStream::Stdout, "three".into()));
    for line in &lines {
        assert!(
            line.time_unix_ms >= before - 1000 && line.time_unix_ms <= jaco::pki::now_unix_ms(),
            "docker's timestamp {} is not around now",
            line.time_unix_ms
        );
    }

    let tail: Vec<_> = docker
        .logs(
            &p.name,
            &LogOptions {
                tail: Some(1),
                ..LogOptions::default()
            },
        )
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].line, b"three");
    let later = LogOptions {
        since_unix_ms: Some(lines[2].time_unix_ms + 1),
        ..LogOptions::default()
    };
    let none: Vec<_> = docker
        .logs(&p.name, &later)
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert!(none.is_empty(), "since after the last line: {none:?}");

    // Follow: lines written after the stream opened arrive on it.
    let ticker = plan(
        &cluster,
        &unique("ticker"),
        "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
    );
    run(&docker, &cleanup, &ticker).await;
    let follow = LogOptions {
        follow: true,
        tail: Some(0),
        ..LogOptions::default()
    };
    let mut stream = docker.logs(&ticker.name, &follow);
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while seen.len() < 3 {
            let line = stream
                .next()
                .await
                .expect("the stream goes on")
                .expect("a line");
            seen.push(String::from_utf8_lossy(&line.line).into_owned());
        }
    })
    .await
    .expect("three followed lines");
    assert!(seen.iter().all(|l| l.starts_with("tick ")), "{seen:?}");
}

#[tokio::test]
async fn exec_returns_output_and_exit_code_and_feeds_stdin() {
    let docker = runtime();
    let cleanup = Cleanup::default();
    let p = plan(&unique("c"), &unique("exec"), "sleep 1000");
    run(&docker, &cleanup, &p).await;
    inspect_until(&docker, &p.name, "running", |i| i.status == Status::Running).await;

    let (out, err, code) = exec(
        &docker,
        &p.name,
        command(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
    )
    .await;
    assert_eq!((out.as_str(), err.as_str(), code), ("out\n", "err\n", 3));

    let mut with_env = command(&["sh", "-c", "echo $GREETING from $(pwd) as $(id -u)"]);
    with_env.env = vec!["GREETING=hello".into()];
    with_env.working_dir = Some("/tmp".into());
    with_env.user = Some("65534".into());
    let (out, _, code) = exec(&docker, &p.name, with_env).await;
    assert_eq!((out.as_str(), code), ("hello from /tmp as 65534\n", 0));

    let mut cat = command(&["cat"]);
    cat.stdin = true;
    let mut session = docker.exec(&p.name, &cat).await.expect("exec starts");
    let mut stdin = session.stdin.take().expect("stdin was asked for");
    stdin.write_all(b"through stdin\n").await.unwrap();
    stdin.shutdown().await.expect("closing stdin");
    let (out, _, code) = collect(session.output).await;
    assert_eq!((out.as_str(), code), ("through stdin\n", 0));

    let mut tty = command(&["sh", "-c", "sleep 0.5; stty size"]);
    tty.tty = true;
    tty.size = Some(TerminalSize {
        columns: 101,
        rows: 33,
    });
    let (out, _, code) = exec(&docker, &p.name, tty).await;
    assert_eq!((out.trim(), code), ("33 101", 0));

    let missing = docker
        .exec("jaco_no-such-container", &command(&["true"]))
        .await;
    assert_eq!(missing.expect_err("no container").code, Code::DockerError);
}

#[tokio::test]
async fn healthchecks_are_seen_through_inspect() {
    let docker = runtime();
    let cleanup = Cleanup::default();
    let cluster = unique("c");
    let check = |test: &str| Healthcheck {
        test: vec!["CMD-SHELL".into(), test.into()],
        interval: Some("200ms".into()),
        timeout: Some("1s".into()),
        retries: Some(1),
        start_period: None,
        start_interval: None,
    };
    let healthy = plan_with(&cluster, &unique("healthy"), |s| {
        s.command = Some(vec!["sleep".into(), "1000".into()]);
        s.healthcheck = Some(check("true"));
    });
    let unhealthy = plan_with(&cluster, &unique("unhealthy"), |s| {
        s.command = Some(vec!["sleep".into(), "1000".into()]);
        s.healthcheck = Some(check("false"));
    });
    run(&docker, &cleanup, &healthy).await;
    run(&docker, &cleanup, &unhealthy).await;
    inspect_until(&docker, &healthy.name, "healthy", |i| {
        i.health == Health::Healthy
    })
    .await;
    inspect_until(&docker, &unhealthy.name, "unhealthy", |i| {
        i.health == Health::Unhealthy
    })
    .await;
}

#[tokio::test]
async fn networks_and_volumes_are_ensured_listed_attached_and_removed() {
    let docker = runtime();
    let cleanup = Cleanup::default();
    let cluster = unique("c");
    let labels = BTreeMap::from([("jaco.cluster_id".to_owned(), cluster.clone())]);
    let front = NetworkPlan {
        name: cleanup.network(&unique("jaco_test_front")),
        labels: labels.clone(),
        internal: false,
        subnet: None,
        bridge: String::new(),
    };
    let back = NetworkPlan {
        name: cleanup.network(&unique("jaco_test_back")),
        labels: labels.clone(),
        internal: true,
        subnet: None,
        bridge: String::new(),
    };
    for network in [&front, &back, &front] {
        docker
            .ensure_network(network)
            .await
            .expect("ensure is idempotent");
    }
    let mut networks: Vec<String> = docker
        .networks(&cluster)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    networks.sort();
    let mut expected = vec![front.name.clone(), back.name.clone()];
    expected.sort();
    assert_eq!(networks, expected);

    let volume = VolumePlan {
        name: cleanup.volume(&unique("jaco_test_data")),
        driver: None,
        driver_opts: BTreeMap::new(),
        labels: labels.clone(),
    };
    assert!(!docker.volume_exists(&volume.name).await.unwrap());
    docker.ensure_volume(&volume).await.unwrap();
    docker.ensure_volume(&volume).await.expect("idempotent");
    assert!(docker.volume_exists(&volume.name).await.unwrap());
    let volumes = docker.volumes(&cluster).await.unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].name, volume.name);
    assert_eq!(volumes[0].labels, labels);

    // A server with an alias on both networks and a volume; a client on the internal one.
    let mut server = plan_with(&cluster, &unique("server"), |s| {
        s.command = Some(vec![
            "sh".into(),
            "-c".into(),
            "echo kept > /data/file; sleep 1000".into(),
        ]);
        s.volumes = vec![Mount {
            kind: MountKind::Volume,
            source: Some("data".into()),
            target: "/data".into(),
            read_only: false,
            options: BTreeMap::new(),
        }];
    });
    server.networks = vec![
        NetworkAttachment {
            network: front.name.clone(),
            aliases: vec!["web".into()],
        },
        NetworkAttachment {
            network: back.name.clone(),
            aliases: vec!["db".into()],
        },
    ];
    server.volumes = BTreeMap::from([("data".to_owned(), volume.name.clone())]);
    let mut client = plan(&cluster, &unique("client"), "sleep 1000");
    client.networks = vec![NetworkAttachment {
        network: back.name.clone(),
        aliases: vec![],
    }];
    run(&docker, &cleanup, &server).await;
    run(&docker, &cleanup, &client).await;
    let up = inspect_until(&docker, &server.name, "running on both networks", |i| {
        i.status == Status::Running && i.addresses.len() == 2
    })
    .await;
    assert!(up.addresses.contains_key(&front.name) && up.addresses.contains_key(&back.name));
    inspect_until(&docker, &client.name, "running", |i| {
        i.status == Status::Running
    })
    .await;
    let (_, err, code) = exec(
        &docker,
        &client.name,
        command(&["ping", "-c", "1", "-W", "5", "db"]),
    )
    .await;
    assert_eq!(code, 0, "the alias resolves on the shared network: {err}");
    let front_ip = &up.addresses[&front.name];
    let (_, _, code) = exec(
        &docker,
        &client.name,
        command(&["ping", "-c", "1", "-W", "1", front_ip]),
    )
    .await;
    assert_ne!(
        code, 0,
        "the server's address on the other network is out of reach"
    );

    // The volume outlives the container.
    docker.remove(&server.name).await.unwrap();
    let reader = plan_with(&cluster, &unique("reader"), |s| {
        s.command = Some(vec!["sleep".into(), "1000".into()]);
        s.volumes = vec![Mount {
            kind: MountKind::Volume,
            source: Some("data".into()),
            target: "/data".into(),
            read_only: true,
            options: BTreeMap::new(),
        }];
    });
    let reader = ContainerPlan {
        volumes: server.volumes.clone(),
        ..reader
    };
    run(&docker, &cleanup, &reader).await;
    inspect_until(&docker, &reader.name, "running", |i| {
        i.status == Status::Running
    })
    .await;
    let (out, _, _) = exec(&docker, &reader.name, command(&["cat", "/data/file"])).await;
    assert_eq!(out, "kept\n");

    // Removal: refused while in use, done once free, idempotent.
    let in_use = docker
        .remove_volume(&volume.name)
        .await
        .expect_err("in use");
    assert_eq!(in_use.code, Code::DockerError);
    docker.remove(&reader.name).await.unwrap();
    docker.remove(&client.name).await.unwrap();
    docker.remove_volume(&volume.name).await.expect("removed");
    docker
        .remove_volume(&volume.name)
        .await
        .expect("gone already");
    for network in [&front, &back] {
        docker.remove_network(&network.name).await.expect("removed");
        docker
            .remove_network(&network.name)
            .await
            .expect("gone already");
    }
    assert!(docker.networks(&cluster).await.unwrap().is_empty());
}

#[tokio::test]
async fn secrets_are_mounted_read_only() {
    let docker = runtime();
    let cleanup = Cleanup::default();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let mut p = plan(&unique("c"), &unique("secret"), "sleep 1000");
    p.files = vec![FileBind {
        source: secret,
        target: "/run/secrets/token".into(),
    }];
    run(&docker, &cleanup, &p).await;
    inspect_until(&docker, &p.name, "running", |i| i.status == Status::Running).await;
    let (out, _, code) = exec(&docker, &p.name, command(&["cat", "/run/secrets/token"])).await;
    assert_eq!((out.as_str(), code), ("s3cret\n", 0));
    let (_, err, code) = exec(
        &docker,
        &p.name,
        command(&["sh", "-c", "echo changed > /run/secrets/token"]),
    )
    .await;
    assert_ne!(code, 0, "the secret is writable");
    assert!(err.contains("Read-only"), "{err}");
}

#[tokio::test]
async fn events_name_the_replica() {
    let docker = runtime();
    let cleanup = Cleanup::default();
    let cluster = unique("c");
    let mut events = docker.events(&cluster);
    // Subscribing is asynchronous: run containers until one's start shows up.
    let replica = unique("evt");
    let p = plan(&cluster, &replica, "sleep 1000");
    let other = plan(&unique("other-cluster"), &unique("evt"), "sleep 1000");
    run(&docker, &cleanup, &other).await;
    let started = tokio::time::timeout(DEADLINE, async {
        let mut ran = false;
        loop {
            tokio::select! {
                event = events.next() => {
                    let event = event.expect("events go on").expect("an event");
                    assert_eq!(event.replica_id.as_deref(), Some(replica.as_str()), "{event:?}");
                    if event.action == "start" {
                        return event;
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(200)), if !ran => {
                    run(&docker, &cleanup, &p).await;
                    ran = true;
                }
            }
        }
    })
    .await
    .expect("a start event");
    let inspected = docker.inspect(&p.name).await.unwrap().unwrap();
    assert_eq!(started.container_id, inspected.container_id);
}

#[tokio::test]
async fn a_container_that_cannot_start_is_not_left_behind() {
    let docker = runtime();
    let cleanup = Cleanup::default();
    let cluster = unique("c");
    let p = plan_with(&cluster, &unique("broken"), |s| {
        s.command = Some(vec!["/no/such/binary".into()]);
    });
    cleanup.container(&p.name);
    let error = docker.run(&p).await.expect_err("cannot start");
    assert_eq!(error.code, Code::DockerError, "{error:?}");
    assert_eq!(docker.inspect(&p.name).await.unwrap(), None);

    let missing = plan_with(&cluster, &unique("noimage"), |s| {
        s.image = format!("{}:absent", unique("jaco-test/none"));
    });
    cleanup.container(&missing.name);
    let error = docker.run(&missing).await.expect_err("no such image");
    assert_eq!(error.details["reason"], "not_found", "{error:?}");
}

#[tokio::test]
async fn pulls_fail_with_a_reason_and_succeed_with_credentials() {
    let docker = runtime();
    let cleanup = Cleanup::default();
    let open = Registry::start();
    let guarded = Registry::start_authenticated(&open, "ci", "right-password");
    let repository = format!("{}:1", unique("jaco-test/pull"));
    open.push(&busybox_image(), &repository, &cleanup);

    let missing = format!("{}/jaco-test/absent:1", open.address);
    let error = docker.pull(&missing, None).await.expect_err("absent");
    assert_eq!(error.code, Code::DockerError);
    assert_eq!(error.details["reason"], "image_not_found", "{error:?}");

    let image = cleanup.image(&format!("{}/{repository}", guarded.address));
    assert_eq!(docker.image_id(&image).await.unwrap(), None);
    let error = docker.pull(&image, None).await.expect_err("anonymous");
    assert_eq!(error.details["reason"], "auth_failed", "{error:?}");
    let wrong = RegistryAuth {
        server: guarded.address.clone(),
        username: "ci".into(),
        password: "wrong-password".into(),
    };
    let error = docker
        .pull(&image, Some(&wrong))
        .await
        .expect_err("wrong password");
    assert_eq!(error.details["reason"], "auth_failed", "{error:?}");
    assert!(!format!("{error:?}").contains("wrong-password"));

    let right = RegistryAuth {
        password: "right-password".into(),
        ..wrong
    };
    docker
        .pull(&image, Some(&right))
        .await
        .expect("pulls with the credential");
    assert!(docker.image_id(&image).await.unwrap().is_some());

    let unreachable = format!("127.0.0.1:1/{}:1", unique("jaco-test/nowhere"));
    let error = docker
        .pull(&unreachable, None)
        .await
        .expect_err("no registry");
    assert_eq!(error.details["reason"], "registry_unreachable", "{error:?}");
}

#[tokio::test]
async fn an_unreachable_engine_is_reported_as_such() {
    let docker = Docker::new("unix:///nonexistent/docker.sock");
    let error = docker.version().await.expect_err("no engine");
    assert_eq!(error.code, Code::DockerError);
    assert_eq!(error.details["reason"], "unreachable", "{error:?}");
    let error = docker.inspect("anything").await.expect_err("no engine");
    assert_eq!(error.details["reason"], "unreachable");
}
