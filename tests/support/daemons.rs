//! Real `jaco daemon` processes, one per network namespace of a [`TestNet`], each with its own
//! data directory, control socket and log file in a temporary directory.
//!
//! Tests talk to a daemon over its control socket (the socket file is reachable from the host
//! namespace) or over TLS to its address on the test bridge. `Drop` kills every daemon (and
//! `TestNet` deletes the namespaces), also when the test fails; a failing test prints the tail
//! of each daemon's log. Test support only.

#![allow(dead_code)] // each test binary uses a different part of the support code

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use jaco::error::Error;
use jaco::proto::v1 as pb;
use jaco::proto::v1::cluster_client::ClusterClient;
use jaco::proto::v1::tokens_client::TokensClient;
use tonic::transport::{Channel, Endpoint};

use super::netns::TestNet;
use super::pool::PoolLease;

/// How long a test waits for any cluster condition before failing.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The API port every daemon listens on inside its namespace.
pub const API_PORT: u16 = 7000;

/// One daemon.
pub struct Daemon {
    /// Node name (`n0`, `n1`, …).
    pub name: String,
    /// Index in the test network.
    pub index: usize,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The executable launched (default: the `jaco` binary under test).
    pub program: Option<PathBuf>,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A set of daemons on a test network.
pub struct Daemons {
    /// The network (public so that tests can partition and heal).
    pub net: TestNet,
    /// The daemons, by index.
    pub nodes: Vec<Daemon>,
    /// The IPAM pool of a cluster these daemons initialise (unique on this machine, since
    /// they all share its Docker engine).
    pub pool: PoolLease,
    dir: tempfile::TempDir,
}

impl Daemons {
    /// Starts `count` daemons, none of them part of a cluster yet. `extra` is appended to every
    /// daemon.yaml (e.g. `leader_wait_ms: 200`).
    pub fn start(count: usize, extra: &str) -> Daemons {
        let mut daemons = Self::prepare(count, extra);
        for index in 0..count {
            daemons.launch(index);
        }
        daemons
    }

    /// Like [`Daemons::start`], but launches nothing: each daemon's data directory exists
    /// (empty) and [`Daemons::launch`] starts it.
    pub fn prepare(count: usize, extra: &str) -> Daemons {
        Self::prepare_with_network(count, extra, "")
    }

    /// Like [`Daemons::start`], with `network` added to the `network:` mapping of every
    /// daemon.yaml (flow-mapping entries, e.g. `nft_command: /nonexistent/nft`).
    pub fn start_with_network(count: usize, extra: &str, network: &str) -> Daemons {
        let mut daemons = Self::prepare_with_network(count, extra, network);
        for index in 0..count {
            daemons.launch(index);
        }
        daemons
    }

    fn prepare_with_network(count: usize, extra: &str, network: &str) -> Daemons {
        let net = TestNet::create(count);
        let pool = PoolLease::take();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        for index in 0..count {
            let name = format!("n{index}");
            let data_dir = dir.path().join(&name);
            let socket = dir.path().join(format!("{name}.sock"));
            let config = dir.path().join(format!("{name}.yaml"));
            // Each daemon gets its own secrets directory: they share the host's file system.
            let text = format!(
                "node_name: {name}\ndata_dir: {}\napi_listen: 0.0.0.0:{API_PORT}\n\
                 advertise: {}:{API_PORT}\nsocket: {}\nsocket_group: null\n\
                 metrics_listen: 127.0.0.1:9100\nlog: info,openraft=warn\nlog_format: json\n\
                 runtime: {{secrets_dir: {}}}\n{}{extra}",
                data_dir.display(),
                net.addr(index),
                socket.display(),
                dir.path().join(format!("{name}-secrets")).display(),
                pool.daemon_yaml(network),
            );
            std::fs::write(&config, text).expect("write daemon.yaml");
            nodes.push(Daemon {
                name,
                index,
                socket,
                data_dir,
                log: dir.path().join(format!("n{index}.log")),
                program: None,
                config,
                child: None,
            });
        }
        for node in &nodes {
            std::fs::create_dir_all(&node.data_dir).expect("create data dir");
        }
        Daemons {
            net,
            nodes,
            pool,
            dir,
        }
    }

    /// (Re)starts daemon `index` and waits for its control socket to answer.
    pub fn launch(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        assert!(node.child.is_none(), "{} is running", node.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open daemon log");
        let child = self
            .net
            .command(
                index,
                node.program
                    .as_deref()
                    .unwrap_or(Path::new(env!("CARGO_BIN_EXE_jaco"))),
            )
            .args(["daemon", "--config"])
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start jaco daemon");
        node.child = Some(child);
        let socket = node.socket.clone();
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                start.elapsed() < DEADLINE,
                "n{index} did not open its socket; log:\n{}",
                self.log_tail(index)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs daemon `index` and reaps it.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (up to [`DEADLINE`]) for daemon `index` to exit by itself; returns its status.
    pub fn wait_exit(&mut self, index: usize) -> std::process::ExitStatus {
        let mut child = self.nodes[index].child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if start.elapsed() >= DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("n{index} did not exit\n{}", self.log_tail(index));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM to daemon `index` and waits (up to [`DEADLINE`]) for it to exit; returns
    /// its exit status.
    pub fn terminate(&mut self, index: usize) -> std::process::ExitStatus {
        let child = self.nodes[index].child.take().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        self.nodes[index].child = Some(child);
        self.wait_exit(index)
    }

    /// The last lines of daemon `index`'s log.
    pub fn log_tail(&self, index: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[index].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `host:port` of daemon `index` on the test network.
    pub fn api_addr(&self, index: usize) -> String {
        format!("{}:{API_PORT}", self.net.addr(index))
    }

    /// A gRPC channel to daemon `index`'s control socket.
    pub async fn local(&self, index: usize) -> Channel {
        local_channel(&self.nodes[index].socket).await
    }

    /// `cluster init` on daemon `index`; returns (cluster id, bootstrap token).
    pub async fn init(&self, index: usize) -> (String, String) {
        let reply = ClusterClient::new(self.local(index).await)
            .init(pb::InitRequest::default())
            .await
            .unwrap_or_else(|s| panic!("init: {}", Error::from_status(&s).render(true)))
            .into_inner();
        (reply.cluster_id, reply.token)
    }

    /// Issues a join token for daemon `joiner` through daemon `via` and joins it through
    /// `via`'s address; returns the join reply.
    pub async fn join(&self, joiner: usize, via: usize) -> pb::JoinResponse {
        let token = ClusterClient::new(self.local(via).await)
            .issue_join_token(pb::IssueJoinTokenRequest {
                node_name: self.nodes[joiner].name.clone(),
                sans: vec![self.net.addr(joiner).to_string()],
                ttl_ms: 0,
            })
            .await
            .unwrap_or_else(|s| panic!("issue join token: {}", Error::from_status(&s).render(true)))
            .into_inner();
        ClusterClient::new(self.local(joiner).await)
            .join(pb::JoinRequest {
                peers: vec![self.api_addr(via)],
                join_token: token.token,
                ca_cert_pem: token.ca_cert_pem,
            })
            .await
            .unwrap_or_else(|s| {
                panic!(
                    "join {}: {}\n{}",
                    self.nodes[joiner].name,
                    Error::from_status(&s).render(true),
                    self.log_tail(joiner)
                )
            })
            .into_inner()
    }

    /// Forms a cluster of every daemon: init on 0, join the others through 0, and wait until
    /// every node is ready with the expected voter count. Returns the bootstrap token.
    pub async fn form(&self) -> String {
        let (_, token) = self.init(0).await;
        for joiner in 1..self.nodes.len() {
            self.join(joiner, 0).await;
        }
        self.form_wait().await;
        token
    }

    /// Waits until every daemon is a ready node and the voter count follows the policy.
    pub async fn form_wait(&self) {
        let voters = match self.nodes.len() {
            n if n % 2 == 0 => n - 1,
            n => n.min(7),
        };
        self.wait_status(0, "every node ready with the policy's voters", |s| {
            s.nodes.len() == self.nodes.len()
                && s.nodes.iter().all(|n| n.status() == pb::NodeStatus::Ready)
                && s.nodes
                    .iter()
                    .filter(|n| {
                        matches!(n.raft_role(), pb::RaftRole::Leader | pb::RaftRole::Follower)
                    })
                    .count()
                    == voters
        })
        .await;
    }

    /// Daemon `index`'s cluster status.
    pub async fn status(&self, index: usize) -> Result<pb::ClusterStatusResponse, Error> {
        ClusterClient::new(self.local(index).await)
            .status(pb::ClusterStatusRequest { consistent: false })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Error::from_status(&s))
    }

    /// Waits until daemon `index`'s status satisfies `check`.
    pub async fn wait_status(
        &self,
        index: usize,
        what: &str,
        check: impl Fn(&pb::ClusterStatusResponse) -> bool,
    ) -> pb::ClusterStatusResponse {
        let start = Instant::now();
        loop {
            let status = self.status(index).await;
            if let Ok(status) = &status
                && check(status)
            {
                return status.clone();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{}: {what}: not within {DEADLINE:?}; last status {status:?}\nlog:\n{}",
                self.nodes[index].name,
                self.log_tail(index)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The current leader's index, as daemon `asking` sees it.
    pub async fn leader(&self, asking: usize) -> usize {
        let status = self
            .wait_status(asking, "knows a leader", |s| !s.leader.is_empty())
            .await;
        self.nodes
            .iter()
            .position(|n| n.name == status.leader)
            .expect("the leader is one of ours")
    }

    /// Issues an operator token named `name` through daemon `index`'s control socket.
    pub async fn issue_token(&self, index: usize, name: &str) -> Result<String, Error> {
        TokensClient::new(self.local(index).await)
            .issue(pb::IssueTokenRequest {
                name: name.into(),
                allow_privileged: false,
            })
            .await
            .map(|r| r.into_inner().token)
            .map_err(|s| Error::from_status(&s))
    }

    /// The names of the operator tokens daemon `index` knows.
    pub async fn token_names(&self, index: usize) -> Vec<String> {
        TokensClient::new(self.local(index).await)
            .list(pb::ListTokensRequest { consistent: false })
            .await
            .map(|r| r.into_inner().tokens.into_iter().map(|t| t.name).collect())
            .unwrap_or_else(|s| panic!("list tokens: {}", Error::from_status(&s).render(true)))
    }

    /// The cluster CA certificate as daemon `index` saved it.
    pub fn ca_pem(&self, index: usize) -> String {
        std::fs::read_to_string(self.nodes[index].data_dir.join("pki/ca.crt")).expect("ca.crt")
    }

    /// Path of the test's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
        if std::thread::panicking() {
            for index in 0..self.nodes.len() {
                eprintln!(
                    "---- log of {} ----\n{}",
                    self.nodes[index].name,
                    self.log_tail(index)
                );
            }
        }
    }
}

/// A gRPC channel over a unix socket.
pub async fn local_channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to the control socket")
}
