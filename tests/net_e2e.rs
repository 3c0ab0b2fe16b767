//! Networking end to end on the container-tier harness (`testvm/cluster.sh`): every node a
//! container with its own dockerd, nftables and `jaco daemon`, so names, isolation, the mesh,
//! L4 routes and drift repair are checked across real engines and network stacks (SPEC §7,
//! issue 6 item 7).
//!
//! One cluster serves the whole scenario (a cluster costs seconds to form and every step builds
//! on the previous one); each step polls with a deadline and says what it saw when it fails.
//! Needs what `tests/cluster_harness.rs` needs: root, Docker, debootstrap (first run),
//! docker-registry, python3 and busybox-static.

mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use support::cluster::Cluster;
use support::docker::busybox_image;

/// How long a step may take.
const STEP: Duration = Duration::from_secs(90);
/// Poll interval.
const POLL: Duration = Duration::from_millis(250);
/// What the fake upstream answers for every A question.
const EXTERNAL_ANSWER: [u8; 4] = [203, 0, 113, 7];
/// A container that runs until it is told to stop.
const SLEEPER: &str = r#"["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]"#;
/// An HTTP server whose page names its container; healthy while the page exists.
const SERVER: &str = r#"["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]"#;

/// A DNS server on the host that answers every A question with [`EXTERNAL_ANSWER`]: the
/// second upstream of the nodes (the first one, 192.0.2.1, never answers).
struct FakeUpstream {
    port: u16,
    _thread: std::thread::JoinHandle<()>,
}

impl FakeUpstream {
    fn start() -> FakeUpstream {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind the fake upstream");
        let port = socket.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while let Ok((len, from)) = socket.recv_from(&mut buffer) {
                if let Some(reply) = answer(&buffer[..len]) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        FakeUpstream {
            port,
            _thread: thread,
        }
    }
}

/// The reply to a one-question query: the question echoed, one A record pointing at it (by
/// name compression) for A questions, none for others.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += usize::from(query[end]) + 1;
    }
    let question_end = end + 5;
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let mut reply = query.get(..question_end)?.to_vec();
    reply[2] = 0x81; // response, recursion desired
    reply[3] = 0x80; // recursion available, NOERROR
    let answers: u16 = u16::from(qtype == 1);
    reply[6..8].copy_from_slice(&answers.to_be_bytes());
    reply[8..12].fill(0);
    if qtype == 1 {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        reply.extend_from_slice(&EXTERNAL_ANSWER);
    }
    Some(reply)
}

fn compose(image: &str) -> String {
    format!(
        "services:
  client:
    image: {image}
    command: {SLEEPER}
  api:
    image: {image}
    command: {SERVER}
    ports: [\"18080:8080\"]
    healthcheck:
      test: [\"CMD\", \"test\", \"-f\", \"/www/index.html\"]
      interval: 1s
      timeout: 5s
      retries: 1
"
    )
}

fn other_compose(image: &str) -> String {
    format!("services:\n  intruder:\n    image: {image}\n    command: {SLEEPER}\n")
}

/// Applies the manifests on node 0 and waits for convergence.
fn apply(cluster: &Cluster, name: &str, jaco: &str, compose: &str) {
    let dir = format!("/tmp/apps/{name}");
    cluster.write_file(0, &format!("{dir}/jaco.yaml"), jaco);
    cluster.write_file(0, &format!("{dir}/compose.yaml"), compose);
    let out = cluster
        .jaco_json(
            0,
            &["apply", &format!("{dir}/jaco.yaml"), "--timeout", "120s"],
        )
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
    assert_eq!(
        out["convergence"]["outcome"], "converged",
        "apply {name}: {out:#}"
    );
}

/// Calls `check` every [`POLL`] until it returns `Some`, or panics after [`STEP`] with `what`
/// and the last thing `check` saw.
fn until<T>(what: &str, mut check: impl FnMut(&mut String) -> Option<T>) -> T {
    let start = Instant::now();
    let mut seen = String::new();
    loop {
        if let Some(value) = check(&mut seen) {
            return value;
        }
        assert!(
            start.elapsed() < STEP,
            "{what}: not within {STEP:?}; last seen: {seen}"
        );
        std::thread::sleep(POLL);
    }
}

/// Runs `args` in the container of replica `replica` on node `node`.
fn in_replica(
    cluster: &Cluster,
    node: usize,
    replica: &str,
    args: &[&str],
) -> Result<String, String> {
    let container = format!("jaco_{replica}");
    let mut full = vec!["exec", container.as_str()];
    full.extend_from_slice(args);
    cluster.try_docker(node, &full)
}

/// `GET /` on `host:8080` from the container of `replica` on `node`, with busybox `nc` (its
/// `wget` resolves through glibc's NSS, which a static busybox cannot load): the response, if
/// it is a 200.
fn get(cluster: &Cluster, node: usize, replica: &str, host: &str) -> Result<String, String> {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 8080");
    let response = in_replica(cluster, node, replica, &["sh", "-c", &script])?;
    if response.starts_with("HTTP/1.") && response.contains(" 200 ") {
        Ok(response)
    } else {
        Err(format!("not a 200: {response:?}"))
    }
}

/// The addresses `nslookup NAME` prints for the answer (after the server's own lines).
fn lookup(
    cluster: &Cluster,
    node: usize,
    replica: &str,
    name: &str,
) -> Result<Vec<String>, String> {
    let out = in_replica(cluster, node, replica, &["nslookup", name])?;
    let answers = out
        .split_once(&format!("Name:\t{name}"))
        .map_or("", |(_, rest)| rest);
    Ok(answers
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Address: ")
                .or_else(|| l.strip_prefix("Address 1: "))
        })
        .map(|a| a.split_whitespace().next().unwrap_or_default().to_owned())
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .collect())
}

/// The address of replica `replica`'s container on node `node`.
fn replica_ip(cluster: &Cluster, node: usize, replica: &str) -> String {
    cluster.docker(
        node,
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &format!("jaco_{replica}"),
        ],
    )
}

/// Packet counters on node `node`'s underlay (eth0): TCP towards the pool, and mesh UDP.
struct UnderlayProbe;

impl UnderlayProbe {
    fn install(cluster: &Cluster, node: usize) {
        let rules = "table inet netprobe {
  chain pre {
    type filter hook prerouting priority -400; policy accept;
    iifname \"eth0\" ip daddr 10.244.0.0/16 meta l4proto tcp counter
    iifname \"eth0\" udp dport 51820 counter
  }
}";
        cluster.write_file(node, "/tmp/netprobe.nft", rules);
        cluster
            .exec(node, &["nft", "-f", "/tmp/netprobe.nft"])
            .expect("install the underlay probe");
    }

    /// (plaintext TCP packets to the pool, mesh UDP packets) seen on eth0.
    fn read(cluster: &Cluster, node: usize) -> (u64, u64) {
        let out = cluster
            .exec(node, &["nft", "list", "chain", "inet", "netprobe", "pre"])
            .expect("read the underlay probe");
        let counts: Vec<u64> = out
            .lines()
            .filter_map(|l| l.split("counter packets ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect();
        (counts[0], counts[1])
    }
}

#[test]
fn names_isolation_mesh_routes_and_drift_repair_across_nodes() {
    let upstream = FakeUpstream::start();
    let cluster = Cluster::up_with(
        3,
        &format!(
            "network: {{dns_forwarders: [192.0.2.1, '@GATEWAY@:{}'], dns_upstream_timeout_ms: 1000, drift_check_ms: 2000}}",
            upstream.port
        ),
    );
    let c = &cluster;
    let image = c.push(&busybox_image(), "jaco-example/busybox:1");

    // shop: client pinned to n0, api pinned to n1; other: intruder pinned to n0.
    apply(
        c,
        "shop",
        "deployment: shop\nacme: off\nservices:\n  - name: client\n    placement: hosts\n    hosts: [n0]\n  - name: api\n    placement: hosts\n    hosts: [n1]\n",
        &compose(&image),
    );
    apply(
        c,
        "other",
        "deployment: other\nacme: off\nservices:\n  - name: intruder\n    placement: hosts\n    hosts: [n0]\n",
        &other_compose(&image),
    );
    let client = "shop-client-1";
    let api_ip = replica_ip(c, 1, "shop-api-1");

    // 1. By name across nodes (n0 → n1), through the mesh: no plaintext TCP on n1's underlay.
    UnderlayProbe::install(c, 1);
    for name in ["api", "api.shop", "api.jaco.internal"] {
        let page = until(
            &format!("GET http://{name}:8080/ from n0"),
            |seen| match get(c, 0, client, name) {
                Ok(page) => Some(page),
                Err(e) => {
                    *seen = e;
                    None
                }
            },
        );
        assert!(!page.trim().is_empty(), "{name}: empty page");
    }
    let (plaintext, mesh) = UnderlayProbe::read(c, 1);
    assert_eq!(
        plaintext, 0,
        "container traffic crossed the underlay unencrypted"
    );
    assert!(mesh > 0, "no mesh packets reached n1");
    println!("cross-node by name: ok ({mesh} mesh packets, 0 plaintext)");

    // 2. Another deployment neither resolves nor reaches shop's api, across nodes; the same
    // address is reachable from shop itself.
    let names = lookup(c, 0, "other-intruder-1", "api.shop").unwrap_or_default();
    assert!(
        names.is_empty(),
        "api.shop resolved for another deployment: {names:?}"
    );
    let blocked = get(c, 0, "other-intruder-1", &api_ip);
    assert!(blocked.is_err(), "other reached shop's api: {blocked:?}");
    get(c, 0, client, &api_ip).expect("shop reaches its api by address");

    // 3. External names: the first upstream is dead, the second answers.
    let external = until(
        "ext.example.test through the upstream chain",
        |seen| match lookup(c, 0, client, "ext.example.test") {
            Ok(addresses) if addresses.contains(&"203.0.113.7".to_owned()) => Some(addresses),
            other => {
                *seen = format!("{other:?}");
                None
            }
        },
    );
    println!("external resolution: {external:?}");

    // 4. The L4 route answers on every node, whichever hosts the replica.
    for node in 0..3 {
        let ip = c.node_ip(node);
        let page = until(
            &format!("L4 route on n{node} ({ip}:18080)"),
            |seen| match http_get(&format!("{ip}:18080")) {
                Ok(page) => Some(page),
                Err(e) => {
                    *seen = e;
                    None
                }
            },
        );
        assert!(!page.is_empty());
    }
    println!("L4 route: answered on all three nodes");

    // 5. A scaled service answers with every healthy replica, and drops an unhealthy one.
    apply(
        c,
        "shop",
        "deployment: shop\nacme: off\nservices:\n  - name: client\n    placement: hosts\n    hosts: [n0]\n  - name: api\n    replicas: 3\n    placement: spread\n",
        &compose(&image),
    );
    let all = until("api answers with three addresses", |seen| {
        let addresses = lookup(c, 0, client, "api").ok()?;
        *seen = format!("{addresses:?}");
        (addresses.len() == 3).then_some(addresses)
    });
    let (sick_node, sick) = (0..3)
        .find_map(|node| {
            let ids = c
                .try_docker(
                    node,
                    &[
                        "ps",
                        "--filter",
                        "name=^jaco_shop-api-",
                        "--format",
                        "{{.Names}}",
                    ],
                )
                .ok()?;
            let first = ids.lines().next()?.strip_prefix("jaco_")?.to_owned();
            Some((node, first))
        })
        .expect("an api replica somewhere");
    let sick_ip = replica_ip(c, sick_node, &sick);
    assert!(all.contains(&sick_ip), "{sick_ip} not in {all:?}");
    in_replica(c, sick_node, &sick, &["rm", "/www/index.html"]).expect("make a replica unhealthy");
    until("the unhealthy replica leaves the answer", |seen| {
        let addresses = lookup(c, 0, client, "api").ok()?;
        *seen = format!("{addresses:?}");
        (!addresses.is_empty() && !addresses.contains(&sick_ip)).then_some(())
    });
    println!("DNS: {all:?}, then without {sick_ip}");

    // 6. Drift: someone flushes n2's ruleset; jaco restores its table and audits the repair.
    c.exec(2, &["nft", "flush", "ruleset"])
        .expect("flush the ruleset");
    let flushed = Instant::now();
    until("the isolation table is back on n2", |seen| {
        match c.exec(2, &["nft", "list", "table", "inet", "jaco"]) {
            Ok(_) => Some(()),
            Err(e) => {
                *seen = e;
                None
            }
        }
    });
    let repaired = flushed.elapsed();
    let events = until("isolation_ruleset_reconciled in the audit log", |seen| {
        let events = c
            .jaco_json(0, &["audit", "--type", "isolation_ruleset_reconciled"])
            .ok()?;
        *seen = format!("{events}");
        let hit = events
            .as_array()?
            .iter()
            .find(|e| e["payload"]["node"] == "n2")?
            .clone();
        Some(hit)
    });
    assert!(
        !events["payload"]["diff"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{events:#}"
    );
    assert!(
        repaired < Duration::from_secs(10),
        "repaired after {repaired:?}"
    );
    println!("drift repaired in {repaired:?}");
}

/// One HTTP/1.0 GET of `/` from `addr`; the body.
fn http_get(addr: &str) -> Result<String, String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{e}"))?,
        Duration::from_secs(3),
    )
    .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not HTTP: {response:?}"))?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return Err(head.to_owned());
    }
    Ok(body.to_owned())
}
