//! Daemon benchmark: real `jaco daemon` processes in network namespaces (the integration
//! tests' `Daemons` harness), measured for `Cluster.Status` latency over the control socket
//! and through the spawned CLI, token revocation propagation to every node, idle RSS, and
//! leader SIGKILL → writes accepted again through a survivor over 20 kills.
//!
//! Run: `cargo bench --bench daemon` (needs root and iproute2; results go to
//! docs/benchmarks.md by hand, with the date and machine). It prints one markdown table per
//! measurement. Not a test: it asserts nothing about the figures (it only stops when the
//! cluster itself misbehaves) and is skipped by the test runner (`--list` prints nothing). It
//! must not add to or change the test support code it borrows.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use jaco::error::Error;
use jaco::proto::v1 as pb;
use jaco::proto::v1::cluster_client::ClusterClient;
use jaco::proto::v1::tokens_client::TokensClient;
use support::daemons::{DEADLINE, Daemons};
use support::netns::TestNet;
use tonic::transport::Channel;

/// The release `jaco` binary cargo built for this benchmark.
const JACO: &str = env!("CARGO_BIN_EXE_jaco");

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// A row of `| name | n | p50 | p99 | max |`.
fn latency_row(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "| {name} | {} | {:.3} | {:.3} | {:.3} |",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().expect("samples")),
    );
}

/// A row of `| name | n | min | median | p95 | max |`.
fn spread_row(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        samples.len(),
        ms(samples[0]),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.95)),
        ms(*samples.last().expect("samples")),
    );
}

/// The pid of the `jaco daemon` running in daemon `index`'s namespace. The harness keeps its
/// `Child` private, so this asks the kernel which processes live in the namespace.
fn daemon_pid(net: &TestNet, index: usize) -> u32 {
    let output = Command::new("ip")
        .args(["netns", "pids", &net.namespace(index)])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == b"daemon"))
        })
        .expect("a jaco daemon in the namespace")
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .expect("field in /proc/<pid>/status")
}

fn memory_row(what: &str, pid: u32) -> u64 {
    let rss = proc_kib(pid, "VmRSS");
    println!(
        "| {what} | {pid} | {:.1} | {:.1} |",
        rss as f64 / 1024.0,
        proc_kib(pid, "VmHWM") as f64 / 1024.0
    );
    rss
}

/// Idle RSS of every daemon of the formed `cluster` and of the uninitialised `single`.
fn idle_memory(cluster: &Daemons, single: &Daemons, idle: Duration) {
    println!("\n### Idle memory after {idle:?} idle\n");
    println!("| daemon | pid | VmRSS MiB | VmHWM MiB |");
    println!("|---|---|---|---|");
    let max = (0..cluster.nodes.len())
        .map(|index| {
            memory_row(
                &format!("{} (3-node cluster)", cluster.nodes[index].name),
                daemon_pid(&cluster.net, index),
            )
        })
        .max()
        .expect("nodes");
    memory_row("uninitialised, alone", daemon_pid(&single.net, 0));
    let size = std::fs::metadata(JACO).expect("jaco binary").len();
    println!(
        "\nmax VmRSS in the cluster: {:.1} MiB; binary {JACO}: {:.1} MiB",
        max as f64 / 1024.0,
        size as f64 / (1024.0 * 1024.0)
    );
}

/// `count` sequential `Cluster.Status` calls on one channel, after ten unmeasured ones.
async fn status_calls(channel: Channel, count: usize) -> Vec<Duration> {
    let mut client = ClusterClient::new(channel);
    let mut samples = Vec::with_capacity(count);
    for i in 0..count + 10 {
        let started = Instant::now();
        client
            .status(pb::ClusterStatusRequest { consistent: false })
            .await
            .expect("status");
        if i >= 10 {
            samples.push(started.elapsed());
        }
    }
    samples
}

/// `count` runs of the real `jaco cluster status -o json` process against `socket`.
fn cli_status_runs(socket: &Path, count: usize) -> Vec<Duration> {
    (0..count)
        .map(|_| {
            let started = Instant::now();
            let output = Command::new(JACO)
                .arg("--socket")
                .arg(socket)
                .args(["cluster", "status", "-o", "json"])
                .env_remove("JACO_TOKEN")
                .env_remove("JACO_CA_CERT")
                .output()
                .expect("run jaco");
            let took = started.elapsed();
            assert!(
                output.status.success(),
                "jaco cluster status: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            took
        })
        .collect()
}

async fn status_latency(cluster: &Daemons, leader: usize) {
    let follower = (leader + 1) % cluster.nodes.len();
    println!("\n### `cluster status` latency (3 nodes, no deployments)\n");
    println!("| path | calls | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    let samples = status_calls(cluster.local(follower).await, 500).await;
    latency_row("Cluster.Status on a follower's socket", samples);
    let samples = status_calls(cluster.local(leader).await, 500).await;
    latency_row("Cluster.Status on the leader's socket", samples);
    let samples = cli_status_runs(&cluster.nodes[follower].socket, 50);
    latency_row(
        "`jaco cluster status -o json` process on a follower",
        samples,
    );
}

/// The operator token `name` as daemon `client` lists it.
async fn listed(client: &mut TokensClient<Channel>, name: &str) -> Option<pb::TokenInfo> {
    client
        .list(pb::ListTokensRequest { consistent: false })
        .await
        .expect("list tokens")
        .into_inner()
        .tokens
        .into_iter()
        .find(|t| t.name == name)
}

/// Polls every node's `Tokens.List` (~1 ms apart) until `done` holds on each; returns the time
/// since `since` at which the last node got there.
async fn until_every_node(
    clients: &mut [TokensClient<Channel>],
    name: &str,
    since: Instant,
    done: impl Fn(&pb::TokenInfo) -> bool,
) -> Duration {
    let mut pending: Vec<usize> = (0..clients.len()).collect();
    let mut last = Duration::ZERO;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for index in pending {
            if listed(&mut clients[index], name)
                .await
                .is_some_and(|t| done(&t))
            {
                last = since.elapsed();
            } else {
                still.push(index);
            }
        }
        pending = still;
        assert!(
            since.elapsed() < DEADLINE,
            "{name}: nodes {pending:?} never got there"
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    last
}

/// `jaco token list` over TLS with `token`, run inside each daemon's namespace against its own
/// address, until every node answers `token_revoked`; returns the time since `since` at which
/// the last one refused. `refused: false` instead checks once that every node accepts it.
fn tls_refusal(cluster: &Daemons, token: &str, since: Instant, refused: bool) -> Duration {
    let ca = cluster.nodes[0].data_dir.join("pki/ca.crt");
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..cluster.nodes.len())
            .map(|index| {
                let (net, ca, server) = (&cluster.net, &ca, cluster.api_addr(index));
                scope.spawn(move || {
                    loop {
                        let output = net
                            .command(index, JACO)
                            .arg("--server")
                            .arg(&server)
                            .arg("--ca-cert")
                            .arg(ca)
                            .args(["--token", token, "token", "list", "-o", "json"])
                            .output()
                            .expect("run jaco");
                        let stderr = String::from_utf8_lossy(&output.stderr);
                        if !refused {
                            assert!(output.status.success(), "n{index} over TLS: {stderr}");
                            return since.elapsed();
                        }
                        if !output.status.success() && stderr.contains("token_revoked") {
                            return since.elapsed();
                        }
                        assert!(
                            since.elapsed() < DEADLINE,
                            "n{index} still accepts a revoked token: {stderr}"
                        );
                    }
                })
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("tls poller"))
            .max()
            .expect("nodes")
    })
}

/// Issues then revokes a token through the leader `rounds` times, and once more with the TLS
/// check instead of the list poll.
async fn revocation(cluster: &Daemons, leader: usize, rounds: usize) {
    let mut clients = Vec::new();
    for index in 0..cluster.nodes.len() {
        clients.push(TokensClient::new(cluster.local(index).await));
    }
    let mut through = TokensClient::new(cluster.local(leader).await);
    let mut samples = Vec::new();
    let mut tls = Duration::ZERO;
    for round in 0..=rounds {
        let name = format!("revoke-{round}");
        let token = through
            .issue(pb::IssueTokenRequest {
                name: name.clone(),
                allow_privileged: false,
            })
            .await
            .expect("issue")
            .into_inner()
            .token;
        until_every_node(&mut clients, &name, Instant::now(), |t| {
            t.revoked_at_unix_ms == 0
        })
        .await;
        let tls_round = round == rounds;
        if tls_round {
            tls_refusal(cluster, &token, Instant::now(), false);
        }
        through
            .revoke(pb::RevokeTokenRequest { name: name.clone() })
            .await
            .expect("revoke");
        let returned = Instant::now();
        if tls_round {
            tls = tls_refusal(cluster, &token, returned, true);
        } else {
            samples.push(
                until_every_node(&mut clients, &name, returned, |t| t.revoked_at_unix_ms != 0)
                    .await,
            );
        }
    }
    println!("\n### Token revocation → revoked on every node (3 nodes)\n");
    println!("| measurement | rounds | min ms | median ms | p95 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    spread_row(
        "Revoke returned → `Tokens.List` shows it revoked on all 3 nodes",
        samples,
    );
    println!(
        "\nTLS check, one extra round: every node refused the token with token_revoked within \
         {:.0} ms of Revoke returning (one `jaco token list` process per poll and node)",
        ms(tls)
    );
}

/// The node that reports itself as the leader.
async fn current_leader(cluster: &Daemons) -> usize {
    let started = Instant::now();
    loop {
        for index in 0..cluster.nodes.len() {
            if let Ok(status) = cluster.status(index).await
                && status.leader == status.node_name
            {
                return index;
            }
        }
        assert!(started.elapsed() < DEADLINE, "no node leads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILLs the leader `kills` times; each time measures until `Tokens.Issue` through a
/// survivor's socket succeeds, then restarts the killed daemon and waits until it holds that
/// write and knows the leader.
async fn leader_kills(cluster: &mut Daemons, kills: usize) {
    let mut samples = Vec::new();
    // Failed attempts by code: how many, and the first message.
    let mut failures: BTreeMap<&'static str, (usize, String)> = BTreeMap::new();
    for round in 0..kills {
        let leader = current_leader(cluster).await;
        let survivor = (leader + 1) % cluster.nodes.len();
        let mut client = TokensClient::new(cluster.local(survivor).await);
        let killed = Instant::now();
        cluster.kill(leader);
        let mut attempt = 0;
        let written = loop {
            attempt += 1;
            let name = format!("kill-{round}-{attempt}");
            match client
                .issue(pb::IssueTokenRequest {
                    name: name.clone(),
                    allow_privileged: false,
                })
                .await
            {
                Ok(_) => break name,
                Err(status) => {
                    let error = Error::from_status(&status);
                    failures
                        .entry(error.code.as_str())
                        .or_insert_with(|| (0, error.render(true)))
                        .0 += 1;
                    assert!(killed.elapsed() < DEADLINE, "writes never accepted again");
                }
            }
        };
        samples.push(killed.elapsed());
        cluster.launch(leader);
        let mut restarted = TokensClient::new(cluster.local(leader).await);
        until_every_node(
            std::slice::from_mut(&mut restarted),
            &written,
            Instant::now(),
            |_| true,
        )
        .await;
        cluster
            .wait_status(leader, "knows the leader", |s| !s.leader.is_empty())
            .await;
    }
    println!("\n### Leader SIGKILL → `Tokens.Issue` through a survivor succeeds (3 nodes)\n");
    println!("| measurement | kills | min ms | median ms | p95 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    spread_row("daemon leader killed → write accepted", samples);
    for (code, (count, first)) in failures {
        println!("\nfailed attempts with {code}: {count}; the first: {first}");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let started = Instant::now();
    let mut cluster = Daemons::start(3, "");
    let single = Daemons::start(1, "");
    cluster.form().await;
    let idle = Duration::from_secs(10);
    tokio::time::sleep(idle).await;
    idle_memory(&cluster, &single, idle);
    drop(single);

    let leader = current_leader(&cluster).await;
    status_latency(&cluster, leader).await;
    revocation(&cluster, leader, 20).await;
    leader_kills(&mut cluster, 20).await;
    println!("\nwhole run: {:.0} s", started.elapsed().as_secs_f64());
}
