//! The network-namespace harness itself: nodes reach each other over real sockets, a
//! partition really cuts a node off, healing restores it, and nothing is left behind.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::netns::TestNet;

/// Runs a TCP connect from node `from` to `addr:port` with a short timeout.
fn can_connect(net: &TestNet, from: usize, addr: std::net::Ipv4Addr, port: u16) -> bool {
    net.command(from, "timeout")
        .args([
            "1",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{addr}/{port}"),
        ])
        .stderr(Stdio::null())
        .status()
        .expect("run bash")
        .success()
}

fn wait_until(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn nodes_talk_partitions_cut_and_cleanup_is_complete() {
    let net = TestNet::create(3);
    let namespaces: Vec<String> = (0..3).map(|i| net.namespace(i)).collect();
    // A listener on node 0 that prints its port once bound.
    let mut listener = net
        .command(0, "python3")
        .args([
            "-c",
            "import socket,sys\ns=socket.socket()\ns.bind(('0.0.0.0',0))\ns.listen(16)\n\
             print(s.getsockname()[1],flush=True)\nwhile True:\n  c,_=s.accept()\n  c.close()",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start listener");
    let mut line = String::new();
    BufReader::new(listener.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("listener port");
    let target = net.addr(0);

    assert!(wait_until(Duration::from_secs(5), || can_connect(
        &net, 1, target, port
    )));
    assert!(can_connect(&net, 2, target, port));

    net.partition(0);
    assert!(
        !can_connect(&net, 1, target, port),
        "partitioned node still reachable"
    );
    net.heal(0);
    assert!(wait_until(Duration::from_secs(5), || can_connect(
        &net, 1, target, port
    )));

    drop(net);
    let _ = listener.wait();
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for ns in namespaces {
        assert!(!list.contains(&ns), "{ns} left behind");
    }
}
