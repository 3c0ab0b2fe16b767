//! The L4 route proxy on real loopback sockets: forwarding both ways, round-robin, skipping
//! dead upstreams, closing clients that have none, listener reconciliation (removal, live
//! update, ports in use), the PROXY v2 header as an upstream sees it, and a graceful stop.
//!
//! Every port is picked by the kernel; every wait has a deadline.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jaco::error::Code;
use jaco::net::l4::{L4, Route, RouteStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const DEADLINE: Duration = Duration::from_secs(5);

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {DEADLINE:?}"))
}

fn proxy() -> L4 {
    L4::new(LOOPBACK, Duration::from_secs(2))
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind((LOOPBACK, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// An address on which nothing listens: connecting is refused.
fn dead_addr() -> SocketAddr {
    SocketAddr::new(LOOPBACK, free_port())
}

fn route(port: u16, upstreams: Vec<SocketAddr>) -> Route {
    Route {
        port,
        deployment: "shop".into(),
        service: "db".into(),
        upstreams,
        proxy_protocol: false,
    }
}

/// What a test upstream does with each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Reads until EOF, then writes everything back and closes.
    EchoAtEof,
    /// Echoes as bytes arrive, until EOF.
    Echo,
    /// Writes its name and closes.
    Name(&'static str),
}

/// A test upstream on a kernel-picked loopback port; aborted on drop.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn upstream(behaviour: Behaviour) -> Upstream {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                match behaviour {
                    // Failures show on the client's side of the test.
                    Behaviour::EchoAtEof => {
                        let mut all = Vec::new();
                        if stream.read_to_end(&mut all).await.is_ok() {
                            let _ = stream.write_all(&all).await;
                        }
                    }
                    Behaviour::Echo => {
                        let (mut read, mut write) = stream.split();
                        let _ = tokio::io::copy(&mut read, &mut write).await;
                    }
                    Behaviour::Name(name) => {
                        let _ = stream.write_all(name.as_bytes()).await;
                    }
                }
            });
        }
    });
    Upstream {
        addr,
        accepted,
        task,
    }
}

/// Connects to the route on `port` and reads until the proxy or the upstream closes.
async fn read_all(port: u16) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect((LOOPBACK, port)).await?;
    let mut all = Vec::new();
    stream.read_to_end(&mut all).await?;
    Ok(all)
}

async fn name_at(port: u16) -> String {
    let bytes = within("read the upstream's name", read_all(port))
        .await
        .expect("read through the route");
    String::from_utf8(bytes).unwrap()
}

/// One request/response on an open connection to an echoing upstream.
async fn round_trip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut back = vec![0; message.len()];
    within("echo", stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, message);
}

async fn stats_until(l4: &L4, port: u16, done: impl Fn(&RouteStats) -> bool) -> RouteStats {
    let started = Instant::now();
    loop {
        let stats = l4.stats().get(&port).copied().unwrap_or_default();
        if done(&stats) {
            return stats;
        }
        assert!(started.elapsed() < DEADLINE, "stats of {port}: {stats:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn forwards_bytes_both_ways_and_passes_half_close_on() {
    let echo = upstream(Behaviour::EchoAtEof).await;
    let l4 = proxy();
    let port = free_port();
    assert!(
        l4.set_routes(vec![route(port, vec![echo.addr])])
            .await
            .is_empty()
    );

    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut stream = TcpStream::connect((LOOPBACK, port)).await.unwrap();
    stream.write_all(&payload).await.unwrap();
    // The upstream answers only after it sees EOF, which it gets only if our half-close is
    // passed on while the other direction stays open.
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("echo after half-close", stream.read_to_end(&mut back))
        .await
        .unwrap();
    assert!(back == payload, "echoed {} bytes", back.len());

    let stats = stats_until(&l4, port, |s| s.active == 0).await;
    assert_eq!((stats.accepted, stats.forwarded, stats.failed), (1, 1, 0));
}

#[tokio::test]
async fn connections_rotate_over_the_upstreams() {
    let a = upstream(Behaviour::Name("a")).await;
    let b = upstream(Behaviour::Name("b")).await;
    let l4 = proxy();
    let port = free_port();
    assert!(
        l4.set_routes(vec![route(port, vec![a.addr, b.addr])])
            .await
            .is_empty()
    );

    let mut names = Vec::new();
    for _ in 0..10 {
        names.push(name_at(port).await);
    }
    let count = |name: &str| names.iter().filter(|n| *n == name).count();
    assert_eq!((count("a"), count("b")), (5, 5), "{names:?}");
    assert!(names.windows(2).all(|w| w[0] != w[1]), "{names:?}");
    assert_eq!(
        a.accepted.load(Ordering::SeqCst) + b.accepted.load(Ordering::SeqCst),
        10
    );
}

#[tokio::test]
async fn a_refusing_upstream_is_skipped() {
    let live = upstream(Behaviour::Name("live")).await;
    let l4 = proxy();
    let port = free_port();
    let routes = vec![route(port, vec![dead_addr(), live.addr, dead_addr()])];
    assert!(l4.set_routes(routes).await.is_empty());

    for _ in 0..6 {
        assert_eq!(name_at(port).await, "live");
    }
    let stats = stats_until(&l4, port, |s| s.active == 0).await;
    assert_eq!((stats.accepted, stats.forwarded, stats.failed), (6, 6, 0));
}

#[tokio::test]
async fn a_client_without_reachable_upstream_is_closed_promptly() {
    let l4 = proxy();
    let (dead, empty) = (free_port(), free_port());
    let routes = vec![
        route(dead, vec![dead_addr(), dead_addr()]),
        route(empty, vec![]),
    ];
    assert!(l4.set_routes(routes).await.is_empty());

    for port in [dead, empty] {
        let started = Instant::now();
        let mut stream = TcpStream::connect((LOOPBACK, port)).await.unwrap();
        // Whatever the client sent is dropped with the connection (EOF or reset).
        let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
        let mut buf = [0u8; 16];
        match within("client closed", stream.read(&mut buf)).await {
            Ok(n) => assert_eq!(n, 0, "no upstream, yet {n} bytes came back"),
            Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
        }
        // Refused connects are answered at once; waiting out the 2 s connect timeout would not be.
        assert!(started.elapsed() < Duration::from_secs(1), "port {port}");
        let stats = stats_until(&l4, port, |s| s.active == 0).await;
        assert_eq!((stats.accepted, stats.forwarded, stats.failed), (1, 0, 1));
    }
}

#[tokio::test]
async fn removing_a_route_frees_its_port_at_once_and_open_connections_finish() {
    let echo = upstream(Behaviour::Echo).await;
    let l4 = proxy();
    let (port, other) = (free_port(), free_port());
    let routes = vec![route(port, vec![echo.addr]), route(other, vec![echo.addr])];
    assert!(l4.set_routes(routes).await.is_empty());
    let mut open = TcpStream::connect((LOOPBACK, port)).await.unwrap();
    round_trip(&mut open, b"before").await;

    assert!(
        l4.set_routes(vec![route(other, vec![echo.addr])])
            .await
            .is_empty()
    );
    let refused = TcpStream::connect((LOOPBACK, port)).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(l4.stats().keys().copied().collect::<Vec<_>>(), vec![other]);
    // The port can be taken by someone else right away.
    let squatter = std::net::TcpListener::bind((LOOPBACK, port)).expect("rebind the freed port");
    drop(squatter);
    // The connection accepted before the removal still works, and so does the kept route.
    round_trip(&mut open, b"after").await;
    let mut kept = TcpStream::connect((LOOPBACK, other)).await.unwrap();
    round_trip(&mut kept, b"kept").await;
}

#[tokio::test]
async fn a_kept_route_takes_new_upstreams_without_rebinding() {
    let a = upstream(Behaviour::Name("a")).await;
    let b = upstream(Behaviour::Name("b")).await;
    let l4 = proxy();
    let port = free_port();
    assert!(
        l4.set_routes(vec![route(port, vec![a.addr])])
            .await
            .is_empty()
    );
    assert_eq!(name_at(port).await, "a");

    // A client waiting in the listen queue across the update is served by the new upstream:
    // the socket was not closed and reopened.
    let mut queued = TcpStream::connect((LOOPBACK, port)).await.unwrap();
    let mut moved = route(port, vec![b.addr]);
    moved.deployment = "shop-v2".into();
    assert!(l4.set_routes(vec![moved]).await.is_empty());
    let mut name = String::new();
    within("queued client", queued.read_to_string(&mut name))
        .await
        .unwrap();
    assert!(name == "b" || name == "a", "{name}");
    drop(queued);
    assert_eq!(name_at(port).await, "b");
    assert_eq!(name_at(port).await, "b");
    // The counters are those of the same listener.
    let stats = stats_until(&l4, port, |s| s.active == 0).await;
    assert_eq!(stats.accepted, 4);
}

/// A PROXY v2 header parsed straight from the bytes of haproxy's proxy-protocol.txt §2.2,
/// independently of the producer: (source, destination) for TCP over IPv4 or IPv6.
async fn read_proxy_v2(stream: &mut TcpStream) -> (SocketAddr, SocketAddr) {
    const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed).await.unwrap();
    assert_eq!(&fixed[..12], SIGNATURE, "signature");
    assert_eq!(fixed[12], 0x21, "version 2, command PROXY");
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.unwrap();
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match fixed[13] {
        0x11 => {
            assert_eq!(len, 12, "TCP over IPv4 carries 12 address bytes");
            let ip = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&body[at..at + 4]).unwrap());
            (
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            )
        }
        0x21 => {
            assert_eq!(len, 36, "TCP over IPv6 carries 36 address bytes");
            let ip = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&body[at..at + 16]).unwrap());
            (
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            )
        }
        other => panic!("family/protocol byte {other:#04x}"),
    }
}

#[tokio::test]
async fn the_upstream_learns_the_client_address_from_a_proxy_v2_header() {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let (seen, mut headers) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let header = read_proxy_v2(&mut stream).await;
            seen.send(header).unwrap();
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });

    let l4 = proxy();
    let port = free_port();
    let mut with_header = route(port, vec![upstream_addr]);
    with_header.proxy_protocol = true;
    assert!(l4.set_routes(vec![with_header]).await.is_empty());

    let mut client = TcpStream::connect((LOOPBACK, port)).await.unwrap();
    let (source, destination) = within("header", headers.recv()).await.unwrap();
    assert_eq!(source, client.local_addr().unwrap());
    assert_eq!(destination, SocketAddr::new(LOOPBACK, port));
    // The client's bytes follow the header untouched.
    round_trip(&mut client, b"ping").await;

    // Switching the header off on the kept route takes effect for the next connection: a
    // plain echo upstream returns exactly the client's bytes, nothing prepended.
    let echo = upstream(Behaviour::Echo).await;
    assert!(
        l4.set_routes(vec![route(port, vec![echo.addr])])
            .await
            .is_empty()
    );
    let mut client = TcpStream::connect((LOOPBACK, port)).await.unwrap();
    round_trip(&mut client, b"no header").await;
    assert!(headers.try_recv().is_err());
    server.abort();
}

#[tokio::test]
async fn a_port_in_use_is_reported_while_the_other_routes_work() {
    let echo = upstream(Behaviour::Echo).await;
    let taken = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap();
    let busy = taken.local_addr().unwrap().port();
    let ok = free_port();
    let l4 = proxy();

    let mut twice = route(ok, vec![echo.addr]);
    twice.deployment = "other".into();
    let routes = vec![
        route(busy, vec![echo.addr]),
        route(ok, vec![echo.addr]),
        twice,
    ];
    let errors = l4.set_routes(routes.clone()).await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    let conflict = |port: u16| {
        &errors
            .iter()
            .find(|(p, _)| *p == port)
            .unwrap_or_else(|| panic!("no error for {port}: {errors:?}"))
            .1
    };
    let in_use = conflict(busy);
    assert_eq!(in_use.code, Code::PortConflict, "{in_use:?}");
    assert_eq!(in_use.details["port"], busy.to_string());
    assert_eq!(in_use.details["deployment"], "shop");
    assert_eq!(in_use.details["service"], "db");
    let duplicate = conflict(ok);
    assert_eq!(duplicate.code, Code::PortConflict);
    assert_eq!(duplicate.details["deployment"], "other");

    let mut stream = TcpStream::connect((LOOPBACK, ok)).await.unwrap();
    round_trip(&mut stream, b"works").await;
    assert_eq!(l4.stats().keys().copied().collect::<Vec<_>>(), vec![ok]);

    // Once the port is free, the next call binds it.
    drop(taken);
    let errors = l4.set_routes(routes[..2].to_vec()).await;
    assert!(errors.is_empty(), "{errors:?}");
    let mut stream = TcpStream::connect((LOOPBACK, busy)).await.unwrap();
    round_trip(&mut stream, b"retried").await;
}

#[tokio::test]
async fn stop_lets_open_connections_finish_within_the_grace_period() {
    let echo = upstream(Behaviour::Echo).await;
    let l4 = proxy();
    let port = free_port();
    assert!(
        l4.set_routes(vec![route(port, vec![echo.addr])])
            .await
            .is_empty()
    );
    let mut open = TcpStream::connect((LOOPBACK, port)).await.unwrap();
    round_trip(&mut open, b"hello").await;

    let grace = Duration::from_millis(300);
    let stopping = tokio::spawn(l4.stop(grace));
    // The listener closes first; the open connection keeps working during the grace period.
    let started = Instant::now();
    while TcpStream::connect((LOOPBACK, port)).await.is_ok() {
        assert!(started.elapsed() < DEADLINE, "listener still open");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    round_trip(&mut open, b"still here").await;
    within("stop", stopping).await.unwrap();
    assert!(started.elapsed() >= grace - Duration::from_millis(50));
    // After the grace period the proxy closed it.
    let mut buf = [0u8; 8];
    let read = within("closed after stop", open.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
