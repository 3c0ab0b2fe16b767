//! The isolation table on real nftables, with real traffic: a node namespace routes between
//! container namespaces; scope A has two /24s (as if on two nodes), scope B one, and an
//! outside host sits on a non-pool subnet. Packets either arrive (TCP and UDP echo) or are
//! dropped (a connect times out). Also: generations replace each other, drift is reported and
//! repaired, the self-test catches tampering, the Docker exemptions are idempotent, and
//! failures of `nft` are `isolation_unavailable`. Needs root, nft and iptables-nft.

mod support;

use std::io;
use std::net::SocketAddrV4;
use std::process::Command;
use std::time::Duration;

use ipnet::Ipv4Net;
use jaco::error::Code;
use jaco::net::nft::{self, Nft, ObservedTable, RulesetSpec, Scope};
use support::nft::{
    Echo, Host, Lab, Namespaces, connect, eventually, roundtrip, udp_roundtrip, unique_name,
};

/// How long traffic that should pass may take to start passing (ARP, routes).
const PASSES_WITHIN: Duration = Duration::from_secs(5);
/// How long a connect that should be dropped is given.
const DROPPED_AFTER: Duration = Duration::from_millis(500);

fn net(text: &str) -> Ipv4Net {
    text.parse().unwrap()
}

fn scope(deployment: &str, network: &str, subnets: &[&str]) -> Scope {
    Scope {
        deployment: deployment.to_owned(),
        network: network.to_owned(),
        subnets: subnets.iter().map(|s| net(s)).collect(),
    }
}

fn nft_in(namespace: &str) -> Nft {
    Nft::new(
        ["ip", "netns", "exec", namespace, "nft"]
            .map(String::from)
            .to_vec(),
    )
}

/// Runs `nft` with `args` inside `namespace` (out-of-band changes); returns stdout.
fn nft_cli(namespace: &str, args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(["netns", "exec", namespace, "nft"])
        .args(args)
        .output()
        .expect("run nft");
    assert!(
        output.status.success(),
        "nft {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A host with echo servers.
struct Peer {
    host: Host,
    echo: Echo,
}

impl Peer {
    fn tcp(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.host.addr, self.echo.tcp)
    }

    fn udp(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.host.addr, self.echo.udp)
    }
}

/// The lab: scope A on 10.244.1.0/24 and 10.244.2.0/24 (as if on two nodes), scope B on
/// 10.244.3.0/24, an outside host on 192.168.77.0/24; every host runs echo servers.
struct Setup {
    lab: Lab,
    a1: Peer,
    a2: Peer,
    b: Peer,
    outside: Peer,
    nft: Nft,
    table: String,
}

impl Setup {
    fn new() -> Setup {
        let mut lab = Lab::new();
        let mut peer = |subnet: &str| {
            let host = lab.add_host(net(subnet));
            let echo = Echo::start(&host.namespace);
            Peer { host, echo }
        };
        let a1 = peer("10.244.1.0/24");
        let a2 = peer("10.244.2.0/24");
        let b = peer("10.244.3.0/24");
        let outside = peer("192.168.77.0/24");
        let nft = nft_in(&lab.node);
        Setup {
            lab,
            a1,
            a2,
            b,
            outside,
            nft,
            table: unique_name("t"),
        }
    }

    /// Scope A (two /24s) and scope B, whose long name is stored as a hashed set name.
    fn spec(&self) -> RulesetSpec {
        RulesetSpec {
            table: self.table.clone(),
            scopes: vec![
                scope("shop", "backend", &["10.244.1.0/24", "10.244.2.0/24"]),
                scope(
                    "a-deployment-with-a-name-longer-than-any-set-name-may-be",
                    "default",
                    &["10.244.3.0/24"],
                ),
            ],
        }
    }

    async fn read_back(&self) -> Option<ObservedTable> {
        self.nft.read_back(&self.table).await.expect("read back")
    }
}

/// A TCP echo and a UDP echo from `from` to `to` pass (within a deadline).
fn assert_passes(from: &Peer, to: &Peer) {
    let namespace = from.host.namespace.clone();
    eventually(PASSES_WITHIN, || {
        let mut stream = connect(&namespace, to.tcp(), DROPPED_AFTER)?;
        roundtrip(&mut stream, b"hello")
    })
    .unwrap_or_else(|e| panic!("tcp {} -> {}: {e}", from.host.addr, to.host.addr));
    eventually(PASSES_WITHIN, || {
        udp_roundtrip(&namespace, to.udp(), DROPPED_AFTER)
    })
    .unwrap_or_else(|e| panic!("udp {} -> {}: {e}", from.host.addr, to.host.addr));
}

/// TCP and UDP from `from` to `to` are dropped: no answer at all (not even a reset).
fn assert_dropped(from: &Peer, to: &Peer) {
    let namespace = &from.host.namespace;
    let tcp = connect(namespace, to.tcp(), DROPPED_AFTER).map(drop);
    assert_eq!(
        tcp.map_err(|e| e.kind()),
        Err(io::ErrorKind::TimedOut),
        "tcp {} -> {} should be dropped",
        from.host.addr,
        to.host.addr
    );
    let udp = udp_roundtrip(namespace, to.udp(), DROPPED_AFTER).map_err(|e| e.kind());
    assert!(
        matches!(
            udp,
            Err(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
        ),
        "udp {} -> {} should be dropped: {udp:?}",
        from.host.addr,
        to.host.addr
    );
}

#[tokio::test]
async fn scopes_are_isolated_and_host_traffic_is_untouched() {
    let setup = Setup::new();
    let Setup {
        a1, a2, b, outside, ..
    } = &setup;
    // Without the table the node routes everything: the drops below are the table's.
    assert_passes(a1, b);

    let spec = setup.spec();
    setup.nft.apply(&spec).await.expect("apply");
    let observed = setup.read_back().await.expect("table exists");
    assert_eq!(nft::self_test(&spec, &observed), Ok(()));

    // Within scope A, across its two /24s, both ways.
    assert_passes(a1, a2);
    assert_passes(a2, a1);
    // Host traffic: the outside host (not in the pool) reaches both scopes and back.
    assert_passes(outside, a1);
    assert_passes(outside, b);
    assert_passes(b, outside);
    // The node itself reaches both scopes (output chain, not forward).
    for to in [a1, b] {
        let mut stream = eventually(PASSES_WITHIN, || {
            connect(&setup.lab.node, to.tcp(), DROPPED_AFTER)
        })
        .expect("node reaches a container");
        roundtrip(&mut stream, b"node").expect("node echo");
    }
    // Between the scopes, either way, nothing.
    assert_dropped(a1, b);
    assert_dropped(a2, b);
    assert_dropped(b, a1);

    // An established connection keeps flowing, also across a re-apply (a new generation).
    let mut stream = connect(&a1.host.namespace, a2.tcp(), PASSES_WITHIN).expect("connect");
    roundtrip(&mut stream, b"before").expect("echo before re-apply");
    setup.nft.apply(&spec).await.expect("re-apply");
    roundtrip(&mut stream, b"after").expect("echo after re-apply");
}

#[tokio::test]
async fn a_new_generation_replaces_the_previous_one() {
    let setup = Setup::new();
    let Setup { a1, a2, b, .. } = &setup;
    setup.nft.apply(&setup.spec()).await.expect("apply first");
    assert_dropped(a2, b);

    // Scope B is gone; its /24 now belongs to scope C together with A's second /24.
    let second = RulesetSpec {
        table: setup.table.clone(),
        scopes: vec![
            scope("shop", "backend", &["10.244.1.0/24"]),
            scope("shop", "cache", &["10.244.2.0/24", "10.244.3.0/24"]),
        ],
    };
    setup.nft.apply(&second).await.expect("apply second");
    let observed = setup.read_back().await.expect("table exists");
    assert_eq!(nft::self_test(&second, &observed), Ok(()));
    let sets: Vec<&str> = observed.sets.keys().map(String::as_str).collect();
    assert_eq!(
        sets,
        ["dep_net_shop_backend", "dep_net_shop_cache", "jaco_pool"]
    );
    let drops = observed.chains["forward"]
        .rules
        .iter()
        .filter(|r| r.ends_with(" drop"));
    assert_eq!(drops.count(), 1, "one generation, one drop rule");

    // Dropped by the first generation, accepted by the second: no stacked drop shadows it.
    assert_passes(a2, b);
    assert_dropped(a1, a2);
}

#[tokio::test]
async fn drift_is_reported_and_repaired() {
    let setup = Setup::new();
    let Setup { a1, a2, .. } = &setup;
    let spec = setup.spec();
    setup.nft.apply(&spec).await.expect("apply");
    assert_eq!(nft::drift(&spec, setup.read_back().await.as_ref()), None);

    nft_cli(&setup.lab.node, &["flush", "ruleset"]);
    let observed = setup.read_back().await;
    assert_eq!(observed, None);
    assert_eq!(
        nft::drift(&spec, observed.as_ref()),
        Some(format!("table inet {} is missing", setup.table))
    );
    setup.nft.apply(&spec).await.expect("repair");
    assert_eq!(nft::drift(&spec, setup.read_back().await.as_ref()), None);

    // Half of scope A taken out of its set: its two /24s no longer talk.
    let set = "dep_net_shop_backend";
    nft_cli(
        &setup.lab.node,
        &[
            "delete",
            "element",
            "inet",
            &setup.table,
            set,
            "{ 10.244.2.0/24 }",
        ],
    );
    let report = nft::drift(&spec, setup.read_back().await.as_ref()).expect("drift");
    assert_eq!(
        report,
        format!("set {set}: missing elements: 10.244.2.0/24")
    );
    assert_dropped(a1, a2);
    setup.nft.apply(&spec).await.expect("repair");
    assert_eq!(nft::drift(&spec, setup.read_back().await.as_ref()), None);
    assert_passes(a1, a2);
}

impl Setup {
    /// Applies `spec`, checks that the self-test passes, then runs `nft args` out of band
    /// and returns the self-test's complaint about the result.
    async fn tampered(&self, spec: &RulesetSpec, args: impl FnOnce() -> Vec<String>) -> String {
        self.nft.apply(spec).await.expect("apply");
        let observed = self.read_back().await.expect("table exists");
        assert_eq!(nft::self_test(spec, &observed), Ok(()));
        let args = args();
        nft_cli(
            &self.lab.node,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let observed = self.read_back().await.expect("table exists");
        nft::self_test(spec, &observed).expect_err("tampered table passed the self-test")
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(' ').map(str::to_owned).collect()
}

#[tokio::test]
async fn self_test_fails_on_a_tampered_table() {
    let setup = Setup::new();
    let spec = setup.spec();
    let node = &setup.lab.node;
    let table = &setup.table;

    // A scope's accept rule deleted.
    let reason = setup
        .tampered(&spec, || {
            let listing = nft_cli(node, &["-a", "list", "chain", "inet", table, "forward"]);
            let handle = listing
                .lines()
                .find(|line| line.contains("@dep_net_shop_backend") && line.contains("accept"))
                .and_then(|line| line.rsplit("# handle ").next())
                .expect("rule handle");
            words(&format!(
                "delete rule inet {table} forward handle {}",
                handle.trim()
            ))
        })
        .await;
    assert_eq!(
        reason,
        "chain forward: missing rules: ip saddr @dep_net_shop_backend \
         ip daddr @dep_net_shop_backend accept"
    );

    // A policy changed.
    let reason = setup
        .tampered(&spec, || {
            let mut args = words(&format!("add chain inet {table} input"));
            args.push("{ type filter hook input priority 0; policy drop; }".to_owned());
            args
        })
        .await;
    assert_eq!(
        reason,
        "chain input: `type filter hook input priority 0; policy drop;`, \
         expected `type filter hook input priority 0; policy accept;`"
    );

    // A rule added; a set the spec does not know.
    let rule = format!("add rule inet {table} output ip daddr 10.9.9.9 drop");
    let reason = setup.tampered(&spec, || words(&rule)).await;
    assert_eq!(
        reason,
        "chain output: unexpected rules: ip daddr 10.9.9.9 drop"
    );
    let reason = setup
        .tampered(&spec, || {
            let mut args = words(&format!("add set inet {table} extra"));
            args.push("{ type ipv4_addr; }".to_owned());
            args
        })
        .await;
    assert_eq!(reason, "unexpected sets: extra");
}

#[tokio::test]
async fn docker_exemptions_are_inserted_once_and_kept_first() {
    let mut namespaces = Namespaces::default();
    let namespace = namespaces.add("jnfd");
    let iptables: Vec<String> = ["ip", "netns", "exec", &namespace, "iptables"]
        .map(String::from)
        .to_vec();
    let pool = net("10.244.0.0/16");
    let listing = |table: &str, chain: &str| -> Vec<String> {
        let output = Command::new("ip")
            .args([
                "netns", "exec", &namespace, "iptables", "-t", table, "-S", chain,
            ])
            .output()
            .expect("run iptables");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.starts_with("-A "))
            .map(str::to_owned)
            .collect()
    };
    let within = "-s 10.244.0.0/16 -d 10.244.0.0/16 -j";

    assert_eq!(
        nft::ensure_docker_exemptions(&iptables, pool).await,
        Ok(true)
    );
    assert_eq!(
        listing("nat", "POSTROUTING"),
        [format!("-A POSTROUTING {within} RETURN")]
    );
    assert_eq!(
        listing("filter", "DOCKER-USER"),
        [format!("-A DOCKER-USER {within} ACCEPT")]
    );
    assert_eq!(listing("filter", "FORWARD"), ["-A FORWARD -j DOCKER-USER"]);
    assert_eq!(
        listing("raw", "PREROUTING"),
        [format!("-A PREROUTING {within} ACCEPT")]
    );
    assert_eq!(
        nft::ensure_docker_exemptions(&iptables, pool).await,
        Ok(false)
    );

    // Docker creates a network: its MASQUERADE rule lands on top; ours goes back first.
    let masquerade = "-s 10.244.7.0/24 ! -o br-x -j MASQUERADE";
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            &namespace,
            "iptables",
            "-t",
            "nat",
            "-I",
            "POSTROUTING",
            "1",
        ])
        .args(masquerade.split(' '))
        .status()
        .expect("run iptables");
    assert!(status.success());
    assert_eq!(
        nft::ensure_docker_exemptions(&iptables, pool).await,
        Ok(true)
    );
    assert_eq!(
        listing("nat", "POSTROUTING"),
        [
            format!("-A POSTROUTING {within} RETURN"),
            format!("-A POSTROUTING {masquerade}")
        ]
    );
    assert_eq!(
        nft::ensure_docker_exemptions(&iptables, pool).await,
        Ok(false)
    );
}

#[tokio::test]
async fn nft_failures_are_isolation_unavailable() {
    let spec = RulesetSpec {
        table: "jaco".to_owned(),
        scopes: vec![],
    };
    let missing = Nft::new(vec!["/nonexistent/nft".to_owned()]);
    let error = missing.apply(&spec).await.expect_err("no binary");
    assert_eq!(error.code, Code::IsolationUnavailable);
    assert!(
        error.message.starts_with("cannot run `/nonexistent/nft`"),
        "{error}"
    );
    let error = missing.read_back("jaco").await.expect_err("no binary");
    assert_eq!(error.code, Code::IsolationUnavailable);

    let mut namespaces = Namespaces::default();
    let namespace = namespaces.add("jnfe");
    let rejected = RulesetSpec {
        table: "not a name".to_owned(),
        scopes: vec![],
    };
    let error = nft_in(&namespace)
        .apply(&rejected)
        .await
        .expect_err("syntax error");
    assert_eq!(error.code, Code::IsolationUnavailable);
    assert_eq!(error.details["exit_status"], "exit status: 1");
    assert!(
        error.details["stderr"].contains("syntax error"),
        "{error:?}"
    );
    assert!(error.details["command"].ends_with("nft -f -"), "{error:?}");
    assert_eq!(nft_in(&namespace).read_back("absent").await, Ok(None));
    // A wrapper that cannot find nft is an error, not an absent table.
    let wrapped = ["ip", "netns", "exec", &namespace, "/nonexistent/nft"].map(String::from);
    let error = Nft::new(wrapped.to_vec())
        .read_back("absent")
        .await
        .expect_err("no nft");
    assert_eq!(error.code, Code::IsolationUnavailable);
    assert!(
        error.details["stderr"].contains("/nonexistent/nft"),
        "{error:?}"
    );
}
