//! L4 route benchmark: what a cluster-wide TCP route (`jaco::net::l4`) adds over talking to
//! the upstream directly, on loopback in one process.
//!
//! - 64-byte echo request/response, sequential on one kept connection: per-request latency.
//! - The same with a new connection per request (connect, request, response, close).
//! - Bulk: 256 MiB one way into a sink that acknowledges EOF with one byte.
//!
//! Each measurement runs `RUNS` times, direct and through the route interleaved run by run;
//! the figures are the medians over the runs of each run's p50/p99 (or MB/s), plus their
//! difference and ratio. The clients are blocking sockets on their own thread; the upstreams
//! and the proxy share one tokio runtime with two workers.
//!
//! Run: `cargo bench --bench net_l4` (results go to docs/benchmarks.md by hand, with the date
//! and machine). It asserts nothing about the figures and is skipped by the test runner
//! (`--list` prints nothing).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use jaco::net::l4::{L4, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const RUNS: usize = 5;
const KEPT_REQUESTS: usize = 20_000;
const NEW_CONN_REQUESTS: usize = 1_000;
const WARMUP: usize = 200;
const BULK_BYTES: usize = 256 << 20;
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Echoes every byte back as it arrives.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// Reads until EOF, then writes one byte.
async fn sink_server() -> SocketAddr {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 << 10];
                while stream.read(&mut buf).await.unwrap_or(0) > 0 {}
                let _ = stream.write_all(b"!").await;
            });
        }
    });
    addr
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind((LOOPBACK, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
}

fn exchange(stream: &mut TcpStream, request: &[u8; 64], response: &mut [u8; 64]) {
    stream.write_all(request).unwrap();
    stream.read_exact(response).unwrap();
}

/// Per-request latencies of 64-byte exchanges on one kept connection, sorted.
fn kept_connection(addr: SocketAddr) -> Vec<Duration> {
    let mut stream = connect(addr);
    let (request, mut response) = ([7u8; 64], [0u8; 64]);
    for _ in 0..WARMUP {
        exchange(&mut stream, &request, &mut response);
    }
    let mut took: Vec<Duration> = (0..KEPT_REQUESTS)
        .map(|_| {
            let started = Instant::now();
            exchange(&mut stream, &request, &mut response);
            started.elapsed()
        })
        .collect();
    took.sort_unstable();
    took
}

/// Per-request latencies of connect + 64-byte exchange + close, sorted.
fn new_connection(addr: SocketAddr) -> Vec<Duration> {
    let (request, mut response) = ([7u8; 64], [0u8; 64]);
    let mut took: Vec<Duration> = (0..NEW_CONN_REQUESTS)
        .map(|_| {
            let started = Instant::now();
            let mut stream = connect(addr);
            exchange(&mut stream, &request, &mut response);
            drop(stream);
            started.elapsed()
        })
        .collect();
    took.sort_unstable();
    took
}

/// MB/s of `BULK_BYTES` written in 64 KiB chunks until the sink acknowledges EOF.
fn bulk(addr: SocketAddr) -> f64 {
    let chunk = vec![1u8; 64 << 10];
    let started = Instant::now();
    let mut stream = connect(addr);
    for _ in 0..BULK_BYTES / chunk.len() {
        stream.write_all(&chunk).unwrap();
    }
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack).unwrap();
    BULK_BYTES as f64 / 1e6 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1e6
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs a latency measurement `RUNS` times on both paths and prints one table row per
/// percentile: direct µs, routed µs, added µs, ratio.
fn latency_rows(
    name: &str,
    direct: SocketAddr,
    routed: SocketAddr,
    run: fn(SocketAddr) -> Vec<Duration>,
) {
    let mut samples = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    for _ in 0..RUNS {
        for (path, addr) in [direct, routed].into_iter().enumerate() {
            let took = run(addr);
            samples[0][path].push(percentile(&took, 0.50));
            samples[1][path].push(percentile(&took, 0.99));
        }
    }
    for (label, [direct, routed]) in ["p50", "p99"].iter().zip(samples) {
        let (direct, routed) = (median(direct), median(routed));
        println!(
            "| {name} {label} | {direct:.1} µs | {routed:.1} µs | {:+.1} µs | {:.2}× |",
            routed - direct,
            routed / direct
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (echo, sink) = runtime.block_on(async { (echo_server().await, sink_server().await) });
    let l4 = L4::new(LOOPBACK, Duration::from_secs(1));
    let (echo_port, sink_port) = (free_port(), free_port());
    let route = |port: u16, upstream: SocketAddr| Route {
        port,
        deployment: "bench".into(),
        service: "echo".into(),
        upstreams: vec![upstream],
        proxy_protocol: false,
    };
    let errors =
        runtime.block_on(l4.set_routes(vec![route(echo_port, echo), route(sink_port, sink)]));
    assert!(errors.is_empty(), "{errors:?}");
    let echo_route = SocketAddr::new(LOOPBACK, echo_port);
    let sink_route = SocketAddr::new(LOOPBACK, sink_port);

    println!(
        "| measurement (median of {RUNS} runs) | direct | through the route | added | ratio |"
    );
    println!("|---|---|---|---|---|");
    latency_rows(
        "64 B echo, kept connection,",
        echo,
        echo_route,
        kept_connection,
    );
    latency_rows(
        "64 B echo, new connection each,",
        echo,
        echo_route,
        new_connection,
    );
    let (mut direct, mut routed) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        direct.push(bulk(sink));
        routed.push(bulk(sink_route));
    }
    let (direct, routed) = (median(direct), median(routed));
    println!(
        "| bulk 256 MiB one way | {direct:.0} MB/s | {routed:.0} MB/s | — | {:.2}× |",
        routed / direct
    );
    println!("\nroute counters: {:?}", l4.stats());
    runtime.block_on(l4.stop(Duration::from_secs(1)));
}
