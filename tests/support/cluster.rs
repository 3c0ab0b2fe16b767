//! The container-tier cluster harness (`testvm/cluster.sh`) for tests: an N-node jaco cluster
//! where every node is a container with its own dockerd and `jaco daemon`, formed through the
//! CLI, with a registry the nodes pull from.
//!
//! Each [`Cluster`] has a unique name (every docker object, the registry and the state
//! directory are its own), so tests run in parallel. The nodes run this test build's `jaco`
//! (`CARGO_BIN_EXE_jaco`, bind-mounted read-only), so the node image is not rebuilt for a code
//! change. Tests drive the nodes through the jaco CLI inside them (`jaco node list -o json`,
//! `jaco apply`, …) and their engines through `docker exec`. `Drop` runs `cluster.sh down`,
//! also when the test fails, after printing the end of every node's log. Test support only: it
//! must not change the host engine or anything it did not create.

#![allow(dead_code)] // each test binary uses a different part of the support code

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The harness script.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testvm/cluster.sh");

/// How long a test waits for a cluster condition (node reachability, convergence).
pub const DEADLINE: Duration = Duration::from_secs(90);

/// One node as `jaco node list -o json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// Node name (`n0`, `n1`, …).
    pub name: String,
    /// Raft role (`leader`, `follower`, `learner`, `candidate`).
    pub role: String,
    /// Status (`joining`, `ready`, …).
    pub status: String,
    /// `reachable` or `unreachable`.
    pub reachability: String,
}

/// A running harness cluster; removed on drop.
pub struct Cluster {
    /// The cluster's name, the prefix of its docker objects.
    pub name: String,
    /// Number of nodes.
    pub size: usize,
    /// Extra text for every node's daemon.yaml (`JACO_HARNESS_DAEMON_YAML`).
    pub daemon_yaml: String,
}

impl Cluster {
    /// Starts a cluster of `size` nodes and waits until every node is a ready member (the
    /// script builds the node image first if this recipe has none yet).
    pub fn up(size: usize) -> Cluster {
        Cluster::up_with(size, "")
    }

    /// [`Cluster::up`] with `daemon_yaml` appended to every node's daemon.yaml (e.g.
    /// `scheduler: {node_lost_after_ms: 4000}`), also for nodes added later by
    /// [`Cluster::grow`].
    pub fn up_with(size: usize, daemon_yaml: &str) -> Cluster {
        let name = format!(
            "jh{}x{:06x}",
            std::process::id(),
            rand::random::<u32>() & 0x00ff_ffff
        );
        // Created before `up` runs, so that a failing `up` is cleaned up by Drop too.
        let cluster = Cluster {
            name,
            size,
            daemon_yaml: daemon_yaml.to_owned(),
        };
        cluster.script(&["up", &cluster.name.clone(), &size.to_string()]);
        cluster
    }

    /// Adds nodes until there are `size` (`up` on the running cluster: the new nodes join
    /// through n0) and waits until all are ready members.
    pub fn grow(&mut self, size: usize) {
        // Counted first, so that Drop prints the new nodes' logs when joining fails.
        self.size = self.size.max(size);
        self.script(&["up", &self.name.clone(), &size.to_string()]);
    }

    fn run(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut child = Command::new(SCRIPT)
            .args(args)
            .env("JACO_BIN", env!("CARGO_BIN_EXE_jaco"))
            .env("JACO_HARNESS_DAEMON_YAML", &self.daemon_yaml)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run testvm/cluster.sh");
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(input).expect("write to cluster.sh");
        }
        child
            .wait_with_output()
            .expect("wait for testvm/cluster.sh")
    }

    /// Runs `cluster.sh ARGS`; panics with its output on failure; returns stdout, trimmed.
    fn script(&self, args: &[&str]) -> String {
        let output = self.run(args, None);
        assert!(
            output.status.success(),
            "testvm/cluster.sh {} failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The container of node `node`.
    pub fn container(&self, node: usize) -> String {
        format!("{}-n{node}", self.name)
    }

    /// Runs the jaco CLI inside node `node`: stdout on success, stderr on failure.
    pub fn jaco(&self, node: usize, args: &[&str]) -> Result<String, String> {
        let node_arg = node.to_string();
        let mut all = vec!["jaco", self.name.as_str(), node_arg.as_str()];
        all.extend_from_slice(args);
        let output = self.run(&all, None);
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "jaco {} on n{node} ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Runs a jaco read command with `-o json` inside node `node` and parses its output.
    pub fn jaco_json(&self, node: usize, args: &[&str]) -> Result<serde_json::Value, String> {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let text = self.jaco(node, &args)?;
        serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))
    }

    /// `jaco node list` as node `asking` answers it.
    pub fn nodes(&self, asking: usize) -> Result<Vec<NodeRow>, String> {
        let list = self.jaco_json(asking, &["node", "list"])?;
        let field = |n: &serde_json::Value, key: &str| n[key].as_str().unwrap_or("").to_owned();
        Ok(list
            .as_array()
            .ok_or_else(|| format!("node list is not an array: {list}"))?
            .iter()
            .map(|n| NodeRow {
                name: field(n, "name"),
                role: field(n, "role"),
                status: field(n, "status"),
                reachability: field(n, "reachability"),
            })
            .collect())
    }

    /// Node `name`'s row in node `asking`'s node list, if both answer.
    pub fn node(&self, asking: usize, name: &str) -> Option<NodeRow> {
        self.nodes(asking)
            .ok()?
            .into_iter()
            .find(|n| n.name == name)
    }

    /// Runs `docker ARGS` against node `node`'s own engine; panics on failure.
    pub fn docker(&self, node: usize, args: &[&str]) -> String {
        self.try_docker(node, args)
            .unwrap_or_else(|e| panic!("docker {} on n{node} failed: {e}", args.join(" ")))
    }

    /// Runs `docker ARGS` against node `node`'s own engine: stdout (trimmed) on success,
    /// stderr on failure (a killed node's engine does not answer).
    pub fn try_docker(&self, node: usize, args: &[&str]) -> Result<String, String> {
        let mut command = vec!["docker"];
        command.extend_from_slice(args);
        self.exec(node, &command)
    }

    /// Runs `ARGS` inside node `node` (not in its engine): stdout (trimmed) on success,
    /// stderr on failure.
    pub fn exec(&self, node: usize, args: &[&str]) -> Result<String, String> {
        let output = Command::new("docker")
            .arg("exec")
            .arg(self.container(node))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker exec");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }

    /// Runs a shell script inside node `node`; panics with its output on failure, returns its
    /// stdout (trimmed).
    pub fn sh(&self, node: usize, script: &str) -> String {
        self.exec(node, &["sh", "-c", script])
            .unwrap_or_else(|e| panic!("n{node}: `{script}` failed:\n{e}"))
    }

    /// Node `node`'s address on the cluster network.
    pub fn node_ip(&self, node: usize) -> String {
        let output = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                &self.container(node),
            ])
            .output()
            .expect("run docker inspect");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Writes `contents` to `path` inside node `node` (creating its directory).
    pub fn write_file(&self, node: usize, path: &str, contents: &str) {
        let container = self.container(node);
        let script = format!("mkdir -p \"$(dirname '{path}')\" && cat >'{path}'");
        let output = self.run(
            &["exec", &self.name, &node.to_string(), "sh", "-c", &script],
            Some(contents.as_bytes()),
        );
        assert!(
            output.status.success(),
            "writing {path} in {container} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// SIGKILLs node `node`'s container (its data and engine state survive).
    pub fn kill(&self, node: usize) {
        self.script(&["kill", &self.name, &node.to_string()]);
    }

    /// Starts node `node`'s container again and waits until dockerd and jaco answer.
    pub fn start(&self, node: usize) {
        self.script(&["start", &self.name, &node.to_string()]);
    }

    /// Cuts node `node` off from the other nodes (not from `docker exec` or the registry).
    pub fn partition(&self, node: usize) {
        self.script(&["partition", &self.name, &node.to_string()]);
    }

    /// Undoes [`Cluster::partition`].
    pub fn heal(&self, node: usize) {
        self.script(&["heal", &self.name, &node.to_string()]);
    }

    /// Pushes host image `image` to the cluster's registry as `repository`; returns the
    /// reference the nodes pull.
    pub fn push(&self, image: &str, repository: &str) -> String {
        self.script(&["push", &self.name, image, repository])
    }

    /// The last lines of node `node`'s container log (its jaco daemon and init).
    pub fn log_tail(&self, node: usize) -> String {
        Command::new("docker")
            .args(["logs", "--tail", "40", &self.container(node)])
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default()
    }

    /// Polls `check` until it returns `Some` or [`DEADLINE`] passes (then panics with `what`
    /// and the last value `describe` gives).
    pub fn wait_for<T>(
        &self,
        what: &str,
        mut check: impl FnMut() -> Option<T>,
        describe: impl Fn() -> String,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{}: {what}: not within {DEADLINE:?}; last seen: {}",
                self.name,
                describe()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in 0..self.size {
                eprintln!(
                    "---- log of {} ----\n{}",
                    self.container(node),
                    self.log_tail(node)
                );
            }
        }
        let output = self.run(&["down", &self.name.clone()], None);
        if !output.status.success() {
            eprintln!(
                "testvm/cluster.sh down {} failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}
