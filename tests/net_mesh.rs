//! The WireGuard mesh between two real network namespaces, userspace implementation (this
//! kernel has no WireGuard): TCP through the tunnel to the other node's mesh address and to a
//! subnet it hosts, only encrypted UDP on the underlay, cryptokey routing on the receiving
//! side, peer removal and re-adding, the key across a restart, and kernel mode failing clearly.
//!
//! Needs root, iproute2, nft and /dev/net/tun. Every test has its own namespaces, so they run
//! in parallel; `Drop` removes them even when a test fails.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jaco::error::Code;
use jaco::net::mesh::{self, MeshMode};
use support::mesh::{
    DEADLINE, MESH_PORT, MeshPair, NsRuntime, mesh_address, settings, subnet_address,
};
use support::netns::TestNet;

/// The marker the tests send; it must never appear on the underlay in plaintext.
fn marker() -> Vec<u8> {
    b"jaco-mesh-marker-".repeat(4096)
}

fn nft(net: &TestNet, i: usize, args: &[&str]) -> String {
    let output = net.command(i, "nft").args(args).output().expect("run nft");
    assert!(
        output.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Counts, in node `i`'s namespace, IPv4 packets on its underlay (eth0): UDP to the mesh
/// port, and everything else.
fn count_underlay(net: &TestNet, i: usize) {
    let ruleset = format!(
        "table ip meshtest {{
           chain out {{ type filter hook output priority 0; policy accept;
             oifname \"eth0\" udp dport {MESH_PORT} counter accept comment \"mesh\"
             oifname \"eth0\" counter comment \"other\"
           }}
           chain in {{ type filter hook input priority 0; policy accept;
             iifname \"eth0\" udp dport {MESH_PORT} counter accept comment \"mesh\"
             iifname \"eth0\" counter comment \"other\"
           }}
         }}"
    );
    let path = std::env::temp_dir().join(format!("{}-{i}.nft", net.namespace(i)));
    std::fs::write(&path, ruleset).expect("write ruleset");
    nft(net, i, &["-f", path.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(path);
}

/// (mesh packets, other packets) counted by [`count_underlay`], both directions.
fn underlay_counters(net: &TestNet, i: usize) -> (u64, u64) {
    let listing = nft(net, i, &["list", "table", "ip", "meshtest"]);
    let (mut mesh, mut other) = (0, 0);
    for line in listing.lines() {
        let Some(rest) = line.split("counter packets ").nth(1) else {
            continue;
        };
        let packets: u64 = rest.split_whitespace().next().unwrap().parse().unwrap();
        if line.contains("\"mesh\"") {
            mesh += packets;
        } else {
            other += packets;
        }
    }
    (mesh, other)
}

#[tokio::test]
async fn tcp_crosses_the_mesh_encrypted_to_mesh_addresses_and_hosted_subnets() {
    let pair = MeshPair::start().await;
    assert_eq!(pair.mesh_of(0).implementation(), "userspace");
    count_underlay(&pair.net, 0);
    count_underlay(&pair.net, 1);
    pair.echo_server(1).await;
    pair.echo_server(0).await;

    pair.echo_eventually(0, None, mesh_address(1), &marker())
        .await;
    pair.echo_eventually(0, None, subnet_address(1), &marker())
        .await;
    pair.echo_eventually(1, None, subnet_address(0), &marker())
        .await;

    for i in 0..2 {
        let (mesh, other) = underlay_counters(&pair.net, i);
        assert!(
            mesh > 20,
            "node {i}: the traffic went through the mesh port ({mesh} packets)"
        );
        assert_eq!(other, 0, "node {i}: nothing but mesh UDP on the underlay");
    }
    // The counters do see other traffic: the same echo straight over the underlay.
    pair.echo_eventually(0, None, pair.net.addr(1), b"plain")
        .await;
    assert!(
        underlay_counters(&pair.net, 0).1 > 0,
        "the underlay counter counts"
    );

    let stats = pair.mesh_of(0).stats().await;
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].public_key, pair.nodes[1].public_key);
    assert!(stats[0].last_handshake.is_some());
    assert!(stats[0].tx_bytes >= 3 * marker().len() as u64, "{stats:?}");
    assert!(stats[0].rx_bytes >= 3 * marker().len() as u64, "{stats:?}");
}

#[tokio::test]
async fn a_packet_whose_inner_source_is_outside_the_senders_allowed_ips_is_dropped() {
    let pair = MeshPair::start().await;
    // Node 1 records the sources of the UDP datagrams it receives on its mesh address.
    let seen: Arc<Mutex<Vec<Ipv4Addr>>> = Arc::default();
    let socket = pair.nodes[1]
        .rt
        .run(async { tokio::net::UdpSocket::bind((mesh_address(1), 9999)).await })
        .await
        .expect("bind");
    let record = seen.clone();
    pair.nodes[1].rt.spawn(async move {
        let mut buffer = [0u8; 64];
        while let Ok((_, std::net::SocketAddr::V4(from))) = socket.recv_from(&mut buffer).await {
            record.lock().unwrap().push(*from.ip());
        }
    });
    // Node 0 gets a second address inside the routed mesh range but not in its AllowedIPs.
    let spoofed = Ipv4Addr::new(10, 99, 0, 99);
    let status = pair
        .net
        .command(0, "ip")
        .args(["addr", "add", &format!("{spoofed}/32"), "dev", "lo"])
        .status();
    assert!(status.expect("ip").success());
    let send_from = |source: Ipv4Addr| {
        pair.nodes[0].rt.run(async move {
            let socket = tokio::net::UdpSocket::bind((source, 0))
                .await
                .expect("bind");
            socket
                .send_to(b"hello", SocketAddrV4::new(mesh_address(1), 9999))
                .await
                .expect("send");
        })
    };
    let arrived = |source: Ipv4Addr| seen.lock().unwrap().contains(&source);

    // The tunnel is up: the node's own address gets through.
    let deadline = Instant::now() + DEADLINE;
    while !arrived(mesh_address(0)) {
        assert!(
            Instant::now() < deadline,
            "datagrams from the mesh address never arrived"
        );
        send_from(mesh_address(0)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The spoofed source is encrypted by node 0 (its route goes into the mesh) but dropped by
    // node 1, while the mesh address, sent after it, still arrives.
    seen.lock().unwrap().clear();
    for _ in 0..5 {
        send_from(spoofed).await;
    }
    let deadline = Instant::now() + DEADLINE;
    while !arrived(mesh_address(0)) {
        assert!(
            Instant::now() < deadline,
            "the control datagram never arrived"
        );
        send_from(mesh_address(0)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !arrived(spoofed),
        "a source outside node 0's AllowedIPs was delivered"
    );

    // Control: once node 1 allows that source from node 0, it arrives.
    let mut peer = pair.peer_of(0);
    peer.allowed_ips
        .push(format!("{spoofed}/32").parse().unwrap());
    pair.set_peers(1, vec![peer]).await.expect("peers");
    let deadline = Instant::now() + DEADLINE;
    while !arrived(spoofed) {
        assert!(
            Instant::now() < deadline,
            "the allowed source never arrived"
        );
        send_from(spoofed).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn removing_a_peer_cuts_traffic_and_re_adding_restores_it() {
    let pair = MeshPair::start().await;
    pair.echo_server(1).await;
    pair.echo_eventually(0, None, mesh_address(1), b"before")
        .await;

    pair.set_peers(0, vec![]).await.expect("no peers");
    assert!(pair.mesh_of(0).stats().await.is_empty());
    let cut = pair
        .echo(
            0,
            None,
            mesh_address(1),
            b"cut".to_vec(),
            Duration::from_secs(2),
        )
        .await;
    assert!(
        cut.is_err(),
        "traffic still flows without the peer: {cut:?}"
    );

    // Re-added together with a peer whose endpoint does not resolve: that one is reported,
    // the other applied.
    let mut ghost = pair.peer_of(1);
    ghost.name = "ghost".into();
    ghost.public_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into();
    ghost.endpoint = "ghost.invalid:51820".into();
    ghost.allowed_ips = vec!["10.244.50.0/24".parse().unwrap()];
    let error = pair
        .set_peers(0, vec![pair.peer_of(1), ghost])
        .await
        .unwrap_err();
    assert_eq!(error.code, Code::Internal);
    assert_eq!(error.details["skipped"], "ghost");
    assert!(
        error.details["peer.ghost"].contains("ghost.invalid:51820"),
        "{error:?}"
    );
    pair.echo_eventually(0, None, mesh_address(1), b"after")
        .await;
    // Applying the same peers again changes nothing and keeps the session (a new tunnel
    // would have no handshake yet).
    let handshake = pair.mesh_of(0).stats().await[0]
        .last_handshake
        .expect("handshake");
    pair.set_peers(0, vec![pair.peer_of(1)])
        .await
        .expect("same peers");
    let kept = pair.mesh_of(0).stats().await[0]
        .last_handshake
        .expect("session kept");
    let drift = kept
        .duration_since(handshake)
        .unwrap_or_else(|e| e.duration());
    assert!(
        drift < Duration::from_secs(1),
        "the handshake moved by {drift:?}"
    );
    pair.echo_eventually(0, None, mesh_address(1), b"again")
        .await;
}

#[tokio::test]
async fn the_key_survives_a_restart_and_stop_removes_the_interface() {
    let mut pair = MeshPair::start().await;
    pair.echo_server(1).await;
    pair.echo_eventually(0, None, mesh_address(1), b"first life")
        .await;
    let before = pair.nodes[0].public_key.clone();

    pair.stop(0).await.expect("stop");
    let deadline = Instant::now() + DEADLINE;
    while pair
        .net
        .command(0, "ip")
        .args(["link", "show", "jaco-wg"])
        .output()
        .expect("ip")
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the interface outlived the stopped mesh"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    pair.restart(0).await;
    let after = mesh::load_or_create(&pair.nodes[0].key_dir)
        .expect("key")
        .public_base64();
    assert_eq!(after, before);
    // Node 1 was not told anything: it still knows node 0 by the same key.
    pair.echo_eventually(0, None, mesh_address(1), b"second life")
        .await;
}

#[tokio::test]
async fn kernel_mode_fails_clearly_on_a_kernel_without_wireguard() {
    let net = TestNet::create(1);
    let keys = tempfile::tempdir().expect("tempdir");
    let key = mesh::load_or_create(keys.path()).expect("key");
    let rt = NsRuntime::start(&net.namespace(0));
    let result = rt
        .run(async move { mesh::start(settings(0, MeshMode::Kernel), &key).await })
        .await;
    let error = result.err().expect("kernel mode fails here");
    assert_eq!(error.code, Code::Internal);
    assert_eq!(error.details["reason"], "wireguard_unavailable");
    assert!(
        error.message.contains("kernel WireGuard is not available"),
        "{error}"
    );
    let leftover = net
        .command(0, "ip")
        .args(["link", "show", "jaco-wg"])
        .output()
        .expect("ip");
    assert!(!leftover.status.success(), "no interface is left behind");
}
