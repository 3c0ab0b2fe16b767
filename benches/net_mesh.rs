//! Mesh benchmark: TCP throughput and request/response latency between two network
//! namespaces through the userspace WireGuard mesh (boringtun + TUN), against the same traffic
//! straight over the underlay veth/bridge, on the same machine in the same run.
//!
//! Run: `cargo bench --bench net_mesh` (needs root, iproute2, /dev/net/tun). Each node's mesh
//! runs on its own namespace thread (the tests' `MeshPair`) and the traffic on a second one,
//! as the daemon and the containers would be separate. It prints markdown tables; figures go
//! to docs/benchmarks.md by hand. Not a test: it asserts nothing about the figures and prints
//! nothing for `--list`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use support::mesh::{MeshPair, NsRuntime, mesh_address};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const SINK_PORT: u16 = 7071;
const PING_PORT: u16 = 7072;
/// Bytes per throughput run.
const BULK: usize = 256 << 20;
/// Round trips per latency run.
const ROUND_TRIPS: usize = 5_000;
/// Request and response size.
const MESSAGE: usize = 64;
/// Runs per measurement and path.
const RUNS: usize = 5;

/// Servers on node 1: a sink that reads to EOF and answers one byte, and a 64-byte echo.
async fn serve(rt: &NsRuntime) {
    let sink = rt
        .run(async { TcpListener::bind(("0.0.0.0", SINK_PORT)).await })
        .await
        .expect("bind sink");
    rt.spawn(async move {
        while let Ok((mut stream, _)) = sink.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 1 << 16];
                while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
                let _ = stream.write_all(b"k").await;
            });
        }
    });
    let ping = rt
        .run(async { TcpListener::bind(("0.0.0.0", PING_PORT)).await })
        .await
        .expect("bind ping");
    rt.spawn(async move {
        while let Ok((mut stream, _)) = ping.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut message = [0u8; MESSAGE];
                while stream.read_exact(&mut message).await.is_ok() {
                    if stream.write_all(&message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Seconds to push [`BULK`] bytes to the sink at `to` and hear it got them.
async fn bulk(rt: &NsRuntime, to: Ipv4Addr) -> Duration {
    rt.run(async move {
        let start = Instant::now();
        let mut stream = TcpStream::connect(SocketAddrV4::new(to, SINK_PORT))
            .await
            .expect("connect sink");
        let chunk = vec![0x5au8; 1 << 16];
        for _ in 0..BULK / chunk.len() {
            stream.write_all(&chunk).await.expect("write");
        }
        stream.shutdown().await.expect("shutdown");
        let mut done = [0u8; 1];
        stream.read_exact(&mut done).await.expect("acknowledged");
        start.elapsed()
    })
    .await
}

/// Sorted round-trip times of [`ROUND_TRIPS`] 64-byte exchanges on one connection.
async fn round_trips(rt: &NsRuntime, to: Ipv4Addr) -> Vec<Duration> {
    rt.run(async move {
        let mut stream = TcpStream::connect(SocketAddrV4::new(to, PING_PORT))
            .await
            .expect("connect ping");
        stream.set_nodelay(true).expect("nodelay");
        let mut message = [7u8; MESSAGE];
        let mut samples = Vec::with_capacity(ROUND_TRIPS);
        for _ in 0..ROUND_TRIPS {
            let start = Instant::now();
            stream.write_all(&message).await.expect("write");
            stream.read_exact(&mut message).await.expect("read");
            samples.push(start.elapsed());
        }
        samples.sort();
        samples
    })
    .await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn spread(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    (min, max)
}

struct Figures {
    mbit: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
}

async fn measure(rt: &NsRuntime, to: Ipv4Addr) -> Figures {
    let mut figures = Figures {
        mbit: Vec::new(),
        p50_us: Vec::new(),
        p99_us: Vec::new(),
    };
    for _ in 0..RUNS {
        let elapsed = bulk(rt, to).await;
        figures
            .mbit
            .push(BULK as f64 * 8.0 / elapsed.as_secs_f64() / 1e6);
        let samples = round_trips(rt, to).await;
        figures
            .p50_us
            .push(percentile(&samples, 0.5).as_secs_f64() * 1e6);
        figures
            .p99_us
            .push(percentile(&samples, 0.99).as_secs_f64() * 1e6);
    }
    figures
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let pair = MeshPair::start().await;
        // Wait for the first handshake so it is not part of the first run.
        pair.echo_server(1).await;
        pair.echo_eventually(0, None, mesh_address(1), b"warm-up").await;
        let client = NsRuntime::start(&pair.net.namespace(0));
        let server = NsRuntime::start(&pair.net.namespace(1));
        serve(&server).await;

        let direct = measure(&client, pair.net.addr(1)).await;
        let mesh = measure(&client, mesh_address(1)).await;

        println!(
            "{RUNS} runs per path; throughput: {} MiB per run; latency: {ROUND_TRIPS} round trips of {MESSAGE} bytes per run\n",
            BULK >> 20
        );
        println!("| measurement | underlay (median, min–max) | mesh (median, min–max) | mesh / underlay |");
        println!("|---|---|---|---|");
        let rows = [
            ("TCP throughput, Mbit/s", &direct.mbit, &mesh.mbit),
            ("round trip p50, µs", &direct.p50_us, &mesh.p50_us),
            ("round trip p99, µs", &direct.p99_us, &mesh.p99_us),
        ];
        for (name, direct, mesh) in rows {
            let (dmin, dmax) = spread(direct);
            let (mmin, mmax) = spread(mesh);
            let (d, m) = (median(direct.clone()), median(mesh.clone()));
            println!(
                "| {name} | {d:.0} ({dmin:.0}–{dmax:.0}) | {m:.0} ({mmin:.0}–{mmax:.0}) | {:.2} |",
                m / d
            );
        }
        let stats = pair.mesh_of(0).stats().await;
        println!(
            "\nnode 0 → node 1 through the mesh: tx {} MiB, rx {} MiB",
            stats[0].tx_bytes >> 20,
            stats[0].rx_bytes >> 20
        );
        drop(client);
        drop(server);
    });
}
