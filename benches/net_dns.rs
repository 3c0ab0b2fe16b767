//! DNS responder benchmark: sequential UDP query latency against a `jaco::net::dns::Dns`
//! listener on loopback, for a local service name and for a forwarded name (through a fake
//! upstream on loopback), next to the same fake upstream asked directly — the difference is
//! what the responder adds.
//!
//! Run: `cargo bench --bench net_dns` (results go to docs/benchmarks.md by hand, with the date
//! and machine). The client is one connected UDP socket sending pre-encoded queries one at a
//! time (only the ID changes), so client overhead is the same for all three rows. Not a test:
//! it asserts nothing about the figures and is skipped by the test runner (`--list` prints
//! nothing).

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RecordType};
use jaco::net::dns::{Dns, DnsSettings, Zone, ZoneRecord};
use support::dns::{Behaviour, FakeUpstream, listener};
use tokio::net::UdpSocket;

/// Queries per row, after `WARMUP` unmeasured ones.
const QUERIES: usize = 10_000;
const WARMUP: usize = 500;
const PORT: u16 = 53;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn us(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// `QUERIES` sequential A queries for `name` to `server`; every answer must carry `code`.
async fn latencies(server: SocketAddr, name: &str, code: ResponseCode) -> Vec<Duration> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("client socket");
    socket.connect(server).await.expect("connect");
    let mut query = Message::query();
    query.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    query.metadata.recursion_desired = true;
    let mut bytes = query.to_vec().expect("encode");
    let mut buffer = vec![0; 4096];
    let mut samples = Vec::with_capacity(QUERIES);
    for i in 0..WARMUP + QUERIES {
        let id = (i as u16).to_be_bytes();
        bytes[..2].copy_from_slice(&id);
        let started = Instant::now();
        socket.send(&bytes).await.expect("send");
        let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buffer))
            .await
            .expect("an answer within 5 s")
            .expect("recv");
        let took = started.elapsed();
        let answer = Message::from_vec(&buffer[..len]).expect("decode");
        assert_eq!(
            answer.metadata.id.to_be_bytes(),
            id,
            "answer to another query"
        );
        assert_eq!(answer.metadata.response_code, code, "{name}");
        if i >= WARMUP {
            samples.push(took);
        }
    }
    samples.sort();
    samples
}

fn row(name: &str, samples: &[Duration]) {
    println!(
        "| {name} | {} | {:.0} | {:.0} | {:.0} |",
        samples.len(),
        us(percentile(samples, 0.5)),
        us(percentile(samples, 0.99)),
        us(*samples.last().expect("samples")),
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let upstream = FakeUpstream::start(Behaviour::Answer([192, 0, 2, 1].into())).await;
        let dns = Dns::new(DnsSettings {
            forwarders: vec![upstream.address],
            port: PORT,
            ..DnsSettings::default()
        });
        dns.set_zone(Zone::from_records((0..3).map(|i| ZoneRecord {
            deployment: "shop".into(),
            network: "default".into(),
            service: "db".into(),
            address: [10, 244, i, 2].into(),
        })));
        let shop = listener("shop", "default");
        let failures = dns.set_listeners(std::slice::from_ref(&shop)).await;
        assert!(failures.is_empty(), "{failures:?}");
        let responder = SocketAddr::from((shop.address, PORT));

        let local = latencies(responder, "db.", ResponseCode::NoError).await;
        let forwarded = latencies(responder, "www.example.com.", ResponseCode::NoError).await;
        let direct = latencies(upstream.address, "www.example.com.", ResponseCode::NoError).await;

        println!("| measurement | queries | p50 µs | p99 µs | max µs |");
        println!("|---|---|---|---|---|");
        row("local name (`db`, 3 A records) via the responder", &local);
        row(
            "forwarded name via the responder → fake upstream",
            &forwarded,
        );
        row("fake upstream asked directly", &direct);
    });
}
