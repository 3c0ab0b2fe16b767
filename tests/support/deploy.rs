//! A one-node jaco cluster driving the machine's real Docker engine, for deployment tests.
//!
//! Each [`Deployer`] has its own daemon (network namespace, data directory), its own cluster
//! id and unique deployment names, so tests run in parallel without sharing Docker objects.
//! `Drop` removes every container, network and volume labelled with its cluster id, also when
//! the test fails. Test support only.

#![allow(dead_code)] // each test binary uses a different part of the support code

use std::process::Command;
use std::time::{Duration, Instant};

use jaco::error::Error;
use jaco::proto::v1 as pb;
use jaco::proto::v1::deploy_client::DeployClient;
use tonic::transport::Channel;

use super::daemons::Daemons;

/// How long a test waits for containers to converge.
pub const CONVERGE: Duration = Duration::from_secs(90);

/// A single-node cluster and a Deploy client on its control socket.
pub struct Deployer {
    /// The daemon.
    pub daemons: Daemons,
    /// Its cluster id (the label of every Docker object it creates).
    pub cluster_id: String,
    /// Client of its Deploy service.
    pub client: DeployClient<Channel>,
}

impl Deployer {
    /// Starts and initialises a one-node cluster; `extra` is appended to daemon.yaml.
    pub async fn start(extra: &str) -> Deployer {
        Self::start_with_network(extra, "").await
    }

    /// Like [`Deployer::start`], with `network` settings for the daemon (see
    /// [`Daemons::start_with_network`]).
    pub async fn start_with_network(extra: &str, network: &str) -> Deployer {
        let daemons = Daemons::start_with_network(1, extra, network);
        let (cluster_id, _) = daemons.init(0).await;
        daemons.form_wait().await;
        let client = DeployClient::new(daemons.local(0).await);
        Deployer {
            daemons,
            cluster_id,
            client,
        }
    }

    /// Reconnects after the daemon restarted.
    pub async fn reconnect(&mut self) {
        self.client = DeployClient::new(self.daemons.local(0).await);
    }

    /// Applies `jaco_yaml` + `compose_yaml` and returns the reply, or the error.
    pub async fn try_apply(
        &mut self,
        jaco_yaml: &str,
        compose_yaml: &str,
        blobs: Vec<pb::BlobContent>,
    ) -> Result<pb::ApplyResponse, Error> {
        self.client
            .apply(pb::ApplyRequest {
                jaco_yaml: jaco_yaml.into(),
                compose_yaml: compose_yaml.into(),
                blobs,
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Error::from_status(&s))
    }

    /// Applies and expects the commit to succeed.
    pub async fn apply(&mut self, jaco_yaml: &str, compose_yaml: &str) -> pb::ApplyResponse {
        self.try_apply(jaco_yaml, compose_yaml, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("apply: {}", e.render(true)))
    }

    /// The status summary.
    pub async fn status(&mut self) -> pb::DeployStatusResponse {
        self.client
            .status(pb::DeployStatusRequest::default())
            .await
            .expect("status")
            .into_inner()
    }

    /// Waits until `check` holds for the replicas of `deployment`, failing with `what` and
    /// the last status after [`CONVERGE`].
    pub async fn wait_replicas(
        &mut self,
        deployment: &str,
        what: &str,
        check: impl Fn(&[Replica]) -> bool,
    ) -> Vec<Replica> {
        let start = Instant::now();
        loop {
            let replicas = replicas_of(&self.status().await, deployment);
            if check(&replicas) {
                return replicas;
            }
            if start.elapsed() > CONVERGE {
                panic!("{what}: not reached within {CONVERGE:?}; replicas: {replicas:#?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `deployment` has exactly `count` replicas and all of them are running.
    pub async fn wait_running(&mut self, deployment: &str, count: usize) -> Vec<Replica> {
        self.wait_replicas(deployment, &format!("{count} replicas running"), |rs| {
            rs.len() == count && rs.iter().all(|r| r.state == pb::ReplicaState::Running)
        })
        .await
    }

    /// Docker containers of this cluster (names), running or not.
    pub fn containers(&self) -> Vec<String> {
        docker_lines(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=jaco.cluster_id={}", self.cluster_id),
            "--format",
            "{{.Names}}",
        ])
    }
}

impl Drop for Deployer {
    fn drop(&mut self) {
        // The daemons go first: a live agent would recreate what is removed below.
        for index in 0..self.daemons.nodes.len() {
            self.daemons.kill(index);
        }
        let label = format!("label=jaco.cluster_id={}", self.cluster_id);
        let containers = docker_lines(&["ps", "-aq", "--filter", &label]);
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().map(String::as_str));
            docker_lines(&args);
        }
        for (kind, list) in [("network", "ls"), ("volume", "ls")] {
            let names = docker_lines(&[kind, list, "-q", "--filter", &label]);
            if !names.is_empty() {
                let mut args = vec![kind, "rm"];
                args.extend(names.iter().map(String::as_str));
                docker_lines(&args);
            }
        }
    }
}

/// One replica as tests look at it.
#[derive(Debug, Clone)]
pub struct Replica {
    /// Replica id.
    pub id: String,
    /// Service.
    pub service: String,
    /// Node it is placed on.
    pub node: String,
    /// Observed state (pending before the first report).
    pub state: pb::ReplicaState,
    /// Observed code.
    pub code: String,
    /// Observed details.
    pub details: std::collections::BTreeMap<String, String>,
    /// Container id.
    pub container_id: String,
    /// Spec hash the scheduler wants.
    pub spec_hash: String,
}

/// The replicas of `deployment` in a status reply.
pub fn replicas_of(status: &pb::DeployStatusResponse, deployment: &str) -> Vec<Replica> {
    status
        .replicas
        .iter()
        .filter_map(|r| {
            let desired = r.desired.as_ref()?;
            (desired.deployment == deployment).then(|| {
                let observed = r.observed.clone().unwrap_or_default();
                Replica {
                    id: desired.id.clone(),
                    service: desired.service.clone(),
                    node: desired.node.clone(),
                    state: if r.observed.is_some() {
                        observed.state()
                    } else {
                        pb::ReplicaState::Pending
                    },
                    code: observed.code.clone(),
                    details: observed.details.clone(),
                    container_id: observed.container_id.clone(),
                    spec_hash: desired.spec_hash.clone(),
                }
            })
        })
        .collect()
}

/// A deployment name no other test uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Runs `docker ARGS` and returns its non-empty output lines (empty on failure).
pub fn docker_lines(args: &[&str]) -> Vec<String> {
    match Command::new("docker").args(args).output() {
        Ok(output) => String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `docker inspect -f FORMAT NAME`, trimmed; `None` when there is no such object.
pub fn inspect(name: &str, format: &str) -> Option<String> {
    let output = Command::new("docker")
        .args(["inspect", "-f", format, name])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
