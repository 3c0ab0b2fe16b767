//! The DNS responders with real sockets on loopback: real UDP and TCP queries from hickory's
//! client against `jaco::net::dns::Dns` listeners on random 127.x.y.z addresses, forwarding to
//! fake upstream resolvers that answer, refuse, stay silent or truncate.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use jaco::net::dns::{Dns, DnsSettings, LOCAL_TTL, Listener, Zone, ZoneRecord, ZoneService};
use support::dns::{Behaviour, FakeUpstream, Transport, addresses, ask, listener};

/// The responders' port in these tests: the production one, on unique loopback addresses.
const PORT: u16 = 53;

fn record(deployment: &str, network: &str, service: &str, address: [u8; 4]) -> ZoneRecord {
    ZoneRecord {
        deployment: deployment.into(),
        network: network.into(),
        service: service.into(),
        address: address.into(),
    }
}

fn ips(addresses: &[[u8; 4]]) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = addresses.iter().map(|a| Ipv4Addr::from(*a)).collect();
    ips.sort();
    ips
}

/// shop/default: db ×3 (over two nodes' /24s), web ×1, cache declared but unhealthy;
/// shop/back: db ×1; blog/default: db ×1, web ×1.
fn zone() -> Zone {
    Zone::from_records([
        record("shop", "default", "db", [10, 244, 0, 3]),
        record("shop", "default", "db", [10, 244, 1, 3]),
        record("shop", "default", "db", [10, 244, 1, 4]),
        record("shop", "default", "web", [10, 244, 0, 2]),
        record("shop", "back", "db", [10, 244, 2, 2]),
        record("blog", "default", "db", [10, 244, 3, 2]),
        record("blog", "default", "web", [10, 244, 3, 3]),
    ])
    .with_services([ZoneService {
        deployment: "shop".into(),
        network: "default".into(),
        service: "cache".into(),
    }])
}

fn settings(forwarders: &[&FakeUpstream], upstream_timeout: Duration) -> DnsSettings {
    DnsSettings {
        forwarders: forwarders.iter().map(|f| f.address).collect(),
        upstream_timeout,
        port: PORT,
    }
}

/// Starts `dns` on `listeners`, failing the test on any bind error.
async fn listen(dns: &Dns, listeners: &[Listener]) {
    let failures = dns.set_listeners(listeners).await;
    assert!(failures.is_empty(), "bind failures: {failures:?}");
}

fn at(listener: &Listener) -> SocketAddr {
    SocketAddr::from((listener.address, PORT))
}

#[tokio::test]
async fn test_local_names_of_all_three_forms_return_every_healthy_address() {
    let upstream = FakeUpstream::start(Behaviour::Answer([192, 0, 2, 1].into())).await;
    let dns = Dns::new(settings(&[&upstream], Duration::from_secs(2)));
    dns.set_zone(zone());
    let shop = listener("shop", "default");
    listen(&dns, std::slice::from_ref(&shop)).await;

    let db = ips(&[[10, 244, 0, 3], [10, 244, 1, 3], [10, 244, 1, 4]]);
    for name in ["db", "db.shop.", "db.jaco.internal.", "DB.Shop."] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let answer = ask(at(&shop), name, RecordType::A, transport).await;
            assert_eq!(
                answer.metadata.response_code,
                ResponseCode::NoError,
                "{name}"
            );
            assert!(answer.metadata.authoritative, "{name}");
            assert_eq!(addresses(&answer), db, "{name} over {transport:?}");
            assert!(
                answer.answers.iter().all(|r| r.ttl <= LOCAL_TTL),
                "{name}: short TTL"
            );
        }
    }
    // Other record types of a local name: the name exists, with no such records.
    let aaaa = ask(at(&shop), "db.", RecordType::AAAA, Transport::Udp).await;
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    assert!(aaaa.answers.is_empty());
    // A declared service with no healthy replica: NODATA, not NXDOMAIN.
    let cache = ask(at(&shop), "cache.", RecordType::A, Transport::Udp).await;
    assert_eq!(cache.metadata.response_code, ResponseCode::NoError);
    assert!(cache.answers.is_empty());
    // The order changes between queries (3! orders; 30 identical ones would be a bug).
    let mut orders = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let answer = ask(at(&shop), "db.", RecordType::A, Transport::Udp).await;
        orders.insert(format!(
            "{:?}",
            answer
                .answers
                .iter()
                .map(|r| r.data.clone())
                .collect::<Vec<_>>()
        ));
    }
    assert!(
        orders.len() > 1,
        "answers always in the same order: {orders:?}"
    );
    // None of this went upstream.
    assert_eq!(upstream.udp_queries() + upstream.tcp_queries(), 0);
}

#[tokio::test]
async fn test_other_deployments_names_and_unknown_bare_labels_are_nxdomain() {
    let upstream = FakeUpstream::start(Behaviour::Answer([192, 0, 2, 1].into())).await;
    let dns = Dns::new(settings(&[&upstream], Duration::from_secs(2)));
    dns.set_zone(zone());
    let shop = listener("shop", "default");
    listen(&dns, std::slice::from_ref(&shop)).await;

    for name in [
        "db.blog.",
        "web.blog.",
        "nothing.blog.",
        "printer.",
        "nope.jaco.internal.",
        "nope.shop.",
    ] {
        let answer = ask(at(&shop), name, RecordType::A, Transport::Udp).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NXDomain,
            "{name}"
        );
        assert!(answer.answers.is_empty(), "{name}");
    }
    assert_eq!(
        upstream.udp_queries(),
        0,
        "internal names must not leak upstream"
    );
}

#[tokio::test]
async fn test_two_scopes_on_two_listeners_answer_differently() {
    let dns = Dns::new(settings(&[], Duration::from_secs(2)));
    dns.set_zone(zone());
    let (shop, back, blog) = (
        listener("shop", "default"),
        listener("shop", "back"),
        listener("blog", "default"),
    );
    listen(&dns, &[shop.clone(), back.clone(), blog.clone()]).await;

    let db = |l: &Listener| ask(at(l), "db.", RecordType::A, Transport::Udp);
    assert_eq!(
        addresses(&db(&shop).await),
        ips(&[[10, 244, 0, 3], [10, 244, 1, 3], [10, 244, 1, 4]])
    );
    assert_eq!(addresses(&db(&back).await), ips(&[[10, 244, 2, 2]]));
    assert_eq!(addresses(&db(&blog).await), ips(&[[10, 244, 3, 2]]));
    // web lives on shop's default network only.
    let web = ask(at(&back), "web.", RecordType::A, Transport::Udp).await;
    assert_eq!(web.metadata.response_code, ResponseCode::NXDomain);
    // Each deployment sees the other's names as NXDOMAIN.
    let shop_from_blog = ask(at(&blog), "web.shop.", RecordType::A, Transport::Udp).await;
    assert_eq!(
        shop_from_blog.metadata.response_code,
        ResponseCode::NXDomain
    );
}

#[tokio::test]
async fn test_set_zone_removes_an_unhealthy_replica_from_the_next_answer() {
    let dns = Dns::new(settings(&[], Duration::from_secs(2)));
    dns.set_zone(zone());
    let shop = listener("shop", "default");
    listen(&dns, std::slice::from_ref(&shop)).await;
    let before = ask(at(&shop), "db.", RecordType::A, Transport::Udp).await;
    assert_eq!(addresses(&before).len(), 3);

    // 10.244.1.4 turned unhealthy: the supervisor hands over a zone without it.
    dns.set_zone(Zone::from_records([
        record("shop", "default", "db", [10, 244, 0, 3]),
        record("shop", "default", "db", [10, 244, 1, 3]),
    ]));
    let after = ask(at(&shop), "db.", RecordType::A, Transport::Udp).await;
    assert_eq!(addresses(&after), ips(&[[10, 244, 0, 3], [10, 244, 1, 3]]));
}

#[tokio::test]
async fn test_forwarding_falls_through_a_silent_upstream_within_about_one_timeout() {
    let timeout = Duration::from_millis(500);
    let silent = FakeUpstream::start(Behaviour::Silent).await;
    let good = FakeUpstream::start(Behaviour::Answer([192, 0, 2, 7].into())).await;
    let dns = Dns::new(settings(&[&silent, &good], timeout));
    let shop = listener("shop", "default");
    listen(&dns, std::slice::from_ref(&shop)).await;

    let started = Instant::now();
    let answer = ask(at(&shop), "www.example.com.", RecordType::A, Transport::Udp).await;
    let took = started.elapsed();
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&answer), ips(&[[192, 0, 2, 7]]));
    assert!(!answer.metadata.authoritative);
    assert!(silent.udp_queries() >= 1, "the first upstream was asked");
    assert!(
        took >= timeout,
        "answered before the first upstream's deadline: {took:?}"
    );
    assert!(
        took < timeout * 3,
        "took {took:?} for one {timeout:?} timeout"
    );
}

#[tokio::test]
async fn test_servfail_and_refused_fall_through_and_nxdomain_wins() {
    let servfail = FakeUpstream::start(Behaviour::Code(ResponseCode::ServFail)).await;
    let refused = FakeUpstream::start(Behaviour::Code(ResponseCode::Refused)).await;
    let notimp = FakeUpstream::start(Behaviour::Code(ResponseCode::NotImp)).await;
    let good = FakeUpstream::start(Behaviour::Answer([192, 0, 2, 8].into())).await;
    let dns = Dns::new(settings(
        &[&servfail, &refused, &notimp, &good],
        Duration::from_secs(5),
    ));
    let shop = listener("shop", "default");
    listen(&dns, std::slice::from_ref(&shop)).await;

    let started = Instant::now();
    let answer = ask(at(&shop), "example.org.", RecordType::A, Transport::Udp).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&answer), ips(&[[192, 0, 2, 8]]));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "error codes must not wait for a timeout"
    );
    for upstream in [&servfail, &refused, &notimp, &good] {
        assert_eq!(upstream.udp_queries(), 1, "{}", upstream.address);
    }

    // NXDOMAIN from an upstream is an answer: the chain stops there.
    let nxdomain = FakeUpstream::start(Behaviour::Code(ResponseCode::NXDomain)).await;
    let after = FakeUpstream::start(Behaviour::Answer([192, 0, 2, 9].into())).await;
    let dns = Dns::new(settings(
        &[&servfail, &nxdomain, &after],
        Duration::from_secs(5),
    ));
    let blog = listener("blog", "default");
    listen(&dns, std::slice::from_ref(&blog)).await;
    let answer = ask(
        at(&blog),
        "missing.example.org.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(after.udp_queries(), 0);
}

#[tokio::test]
async fn test_all_upstreams_failing_or_none_configured_is_servfail_never_nxdomain() {
    let timeout = Duration::from_millis(300);
    let silent = FakeUpstream::start(Behaviour::Silent).await;
    let servfail = FakeUpstream::start(Behaviour::Code(ResponseCode::ServFail)).await;
    let refused = FakeUpstream::start(Behaviour::Code(ResponseCode::Refused)).await;
    // An upstream whose port is closed: a transport error.
    let closed = FakeUpstream::start(Behaviour::Silent).await;
    let closed_address = closed.address;
    drop(closed);
    let mut dead = settings(&[&silent, &servfail, &refused], timeout);
    dead.forwarders.push(closed_address);
    let dns = Dns::new(dead);
    let shop = listener("shop", "default");
    listen(&dns, std::slice::from_ref(&shop)).await;
    for transport in [Transport::Udp, Transport::Tcp] {
        let answer = ask(at(&shop), "www.example.com.", RecordType::A, transport).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::ServFail,
            "{transport:?}"
        );
    }

    let lonely = Dns::new(settings(&[], timeout));
    let blog = listener("blog", "default");
    listen(&lonely, std::slice::from_ref(&blog)).await;
    let answer = ask(at(&blog), "www.example.com.", RecordType::A, Transport::Udp).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn test_truncated_udp_answer_is_asked_again_over_tcp() {
    let upstream = FakeUpstream::start(Behaviour::TruncatedOverUdp([192, 0, 2, 10].into())).await;
    let dns = Dns::new(settings(&[&upstream], Duration::from_secs(5)));
    let shop = listener("shop", "default");
    listen(&dns, std::slice::from_ref(&shop)).await;
    let answer = ask(at(&shop), "big.example.com.", RecordType::A, Transport::Udp).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(!answer.metadata.truncation);
    assert_eq!(addresses(&answer), ips(&[[192, 0, 2, 10]]));
    assert!(upstream.udp_queries() >= 1);
    assert_eq!(upstream.tcp_queries(), 1);
}

#[tokio::test]
async fn test_forwarded_queries_work_over_tcp() {
    let upstream = FakeUpstream::start(Behaviour::Answer([192, 0, 2, 11].into())).await;
    let dns = Dns::new(settings(&[&upstream], Duration::from_secs(5)));
    let shop = listener("shop", "default");
    listen(&dns, std::slice::from_ref(&shop)).await;
    let answer = ask(at(&shop), "www.example.net.", RecordType::A, Transport::Tcp).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&answer), ips(&[[192, 0, 2, 11]]));
}

/// Whether both a UDP socket and a TCP listener can be bound on `address` now.
fn port_is_free(address: SocketAddr) -> bool {
    std::net::UdpSocket::bind(address).is_ok() && std::net::TcpListener::bind(address).is_ok()
}

#[tokio::test]
async fn test_removing_a_listener_closes_its_port_and_bind_failures_are_reported() {
    let dns = Dns::new(settings(&[], Duration::from_secs(2)));
    dns.set_zone(zone());
    let (shop, blog) = (listener("shop", "default"), listener("blog", "default"));
    listen(&dns, &[shop.clone(), blog.clone()]).await;
    assert!(!port_is_free(at(&shop)));
    // Unchanged listeners keep running when the set is applied again.
    listen(&dns, &[shop.clone(), blog.clone()]).await;

    listen(&dns, std::slice::from_ref(&blog)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !port_is_free(at(&shop)) {
        assert!(
            Instant::now() < deadline,
            "{} still bound after removal",
            at(&shop)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = ask(at(&blog), "db.", RecordType::A, Transport::Udp).await;
    assert_eq!(addresses(&answer), ips(&[[10, 244, 3, 2]]));

    // An address on no interface (TEST-NET-1) cannot be bound: reported, the rest still runs.
    let nowhere = Listener {
        address: [192, 0, 2, 1].into(),
        ..listener("shop", "default")
    };
    let failures = dns.set_listeners(&[blog.clone(), nowhere.clone()]).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, nowhere.address);
    let answer = ask(at(&blog), "db.", RecordType::A, Transport::Tcp).await;
    assert_eq!(addresses(&answer), ips(&[[10, 244, 3, 2]]));

    listen(&dns, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !port_is_free(at(&blog)) {
        assert!(
            Instant::now() < deadline,
            "{} still bound after removal",
            at(&blog)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
