//! Cross-node container traffic through the mesh against the same traffic between the nodes
//! directly (issue 6, benchmarks): on a 2-node container-tier harness cluster
//! (`testvm/cluster.sh`), a replica on n0 fetches a 64 MiB file over HTTP from a replica on n1
//! (bridge → userspace WireGuard mesh → bridge, through the isolation table) and pings it; the
//! direct side does the same between two host-network containers of the nodes' engines (the
//! nodes' own underlay, no bridge, no mesh). Runs are interleaved; every run is printed, then
//! medians and ratios.
//!
//! Transfers are timed inside node n0 around one `docker exec` (its start-up, ≈ 50–100 ms, is
//! in both sides alike); latency is busybox `ping` (ICMP echo, 100 per run, 50 ms apart),
//! p50 and p99 of the per-reply times.
//!
//! Run: `cargo bench --bench net_cluster --profile dev` (`JACO_BENCH_RUNS`, default 5). Needs
//! root, Docker, docker-registry, python3, busybox-static. It asserts nothing about the figures
//! and is skipped by the test runner; results go to docs/benchmarks.md by hand. `Drop` removes
//! its harness cluster also when a run fails.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;

use support::cluster::Cluster;
use support::docker::busybox_image;

/// Size of the file fetched per run, MiB.
const FILE_MIB: u64 = 64;
/// Pings per run.
const PINGS: usize = 100;

/// The HTTP server both sides fetch from: busybox httpd serving a file of [`FILE_MIB`] MiB.
fn server(port: u16) -> String {
    format!(
        "mkdir -p /www && dd if=/dev/zero of=/www/big bs=1048576 count={FILE_MIB} 2>/dev/null \
         && exec httpd -f -p {port} -h /www"
    )
}

/// Milliseconds of one fetch of `/big` from `host:port`, run by `exec` (a `docker exec` or
/// `docker run` prefix) inside n0; checks the byte count.
fn fetch(cluster: &Cluster, exec: &str, host: &str, port: u16) -> f64 {
    let out = cluster.sh(0,
        &format!(
            "s=$(date +%s%N); n=$({exec} sh -c \"printf 'GET /big HTTP/1.0\\r\\n\\r\\n' | nc {host} {port} | wc -c\"); \
             e=$(date +%s%N); echo $n $(( (e - s) / 1000 ))"
        ),
    );
    let mut words = out.split_whitespace();
    let bytes: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let micros: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
    assert!(
        bytes > FILE_MIB << 20,
        "short transfer from {host}:{port}: {out}"
    );
    micros / 1000.0
}

/// Per-reply round-trip times (ms) of [`PINGS`] pings of `host`, run by `exec` inside n0.
fn ping(cluster: &Cluster, exec: &str, host: &str) -> Vec<f64> {
    let out = cluster.sh(0, &format!("{exec} ping -c {PINGS} -i 0.05 {host}"));
    let mut times: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(times.len() >= PINGS * 9 / 10, "lost pings to {host}: {out}");
    times.sort_by(f64::total_cmp);
    times
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 0.5)
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
    let cluster = Cluster::up(2);
    println!(
        "cluster {} up (remove by hand after a SIGKILL: testvm/cluster.sh down {})",
        cluster.name, cluster.name
    );
    let image = cluster.push(&busybox_image(), "jaco-example/busybox:1");
    for node in 0..2 {
        cluster.sh(node, &format!("docker pull -q {image} >/dev/null"));
    }

    // The mesh side: a jaco deployment, sink on n1, client on n0.
    let compose = format!(
        "services:\n  sink:\n    image: {image}\n    command: [\"sh\", \"-c\", \"{}\"]\n  client:\n    image: {image}\n    command: [\"sleep\", \"86400\"]\n",
        server(8080).replace('"', "\\\"")
    );
    let jaco = "deployment: meshbench\nacme: off\nservices:\n  - name: sink\n    placement: hosts\n    hosts: [n1]\n  - name: client\n    placement: hosts\n    hosts: [n0]\n";
    cluster.write_file(0, "/tmp/meshbench/compose.yaml", &compose);
    cluster.write_file(0, "/tmp/meshbench/jaco.yaml", jaco);
    cluster.sh(
        0,
        "jaco apply /tmp/meshbench/jaco.yaml --timeout 120s >/dev/null",
    );
    let sink_ip = cluster.sh(1,
        "docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' jaco_meshbench-sink-1",
    );
    let mesh_exec = "docker exec jaco_meshbench-client-1";

    // The direct side: host-network containers on the nodes' underlay.
    cluster.sh(
        1,
        &format!(
            "docker run -d --name directsink --network host {image} sh -c '{}' >/dev/null",
            server(8081)
        ),
    );
    let n1 = cluster.node_ip(1);
    let direct_exec = format!("docker run --rm --network host {image}");
    // Both servers have written their file once the first fetch succeeds.
    let ready = || {
        Command::new("docker")
            .args(["exec", &cluster.container(0), "sh", "-c"])
            .arg(format!(
                "{mesh_exec} sh -c \"printf 'GET /big HTTP/1.0\\r\\n\\r\\n' | nc {sink_ip} 8080 | head -c 20\" | grep -q 200 && \
                 {direct_exec} sh -c \"printf 'GET /big HTTP/1.0\\r\\n\\r\\n' | nc {n1} 8081 | head -c 20\" | grep -q 200"
            ))
            .status()
            .is_ok_and(|s| s.success())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "the two servers did not answer within 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    let (mut mesh_mbps, mut direct_mbps) = (Vec::new(), Vec::new());
    let (mut mesh_p50, mut mesh_p99, mut direct_p50, mut direct_p99) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mbits = |ms: f64| (FILE_MIB * 8 * 1_048_576) as f64 / 1e6 / (ms / 1000.0);
    for run in 1..=runs {
        let mesh = fetch(&cluster, mesh_exec, &sink_ip, 8080);
        let direct = fetch(&cluster, &direct_exec, &n1, 8081);
        let mesh_ping = ping(&cluster, mesh_exec, &sink_ip);
        let direct_ping = ping(&cluster, &direct_exec, &n1);
        println!(
            "run {run}: {FILE_MIB} MiB mesh {mesh:.0} ms ({:.0} Mbit/s), direct {direct:.0} ms ({:.0} Mbit/s); \
             ping mesh p50 {:.3} p99 {:.3} ms, direct p50 {:.3} p99 {:.3} ms",
            mbits(mesh),
            mbits(direct),
            percentile(&mesh_ping, 0.5),
            percentile(&mesh_ping, 0.99),
            percentile(&direct_ping, 0.5),
            percentile(&direct_ping, 0.99),
        );
        mesh_mbps.push(mbits(mesh));
        direct_mbps.push(mbits(direct));
        mesh_p50.push(percentile(&mesh_ping, 0.5));
        mesh_p99.push(percentile(&mesh_ping, 0.99));
        direct_p50.push(percentile(&direct_ping, 0.5));
        direct_p99.push(percentile(&direct_ping, 0.99));
    }
    let (mt, dt) = (median(mesh_mbps), median(direct_mbps));
    let (m50, d50) = (median(mesh_p50), median(direct_p50));
    let (m99, d99) = (median(mesh_p99), median(direct_p99));
    println!("medians over {runs} runs:");
    println!(
        "  throughput: mesh {mt:.0} Mbit/s, direct {dt:.0} Mbit/s, ratio {:.2}",
        mt / dt
    );
    println!(
        "  ping p50: mesh {m50:.3} ms, direct {d50:.3} ms, ratio {:.2}",
        m50 / d50
    );
    println!(
        "  ping p99: mesh {m99:.3} ms, direct {d99:.3} ms, ratio {:.2}",
        m99 / d99
    );
}
