//! A test network of real Linux network namespaces: one hidden "hub" namespace holding a
//! bridge, and one namespace per node joined to it by a veth pair, so that each node has its
//! own address and network stack and a partition is a real cut (the node's link goes down).
//!
//! Every name is unique per process and instance, so tests run in parallel; `Drop` kills what
//! runs inside the namespaces and deletes them even when the test fails. Needs root and
//! iproute2. Test support only: the product never creates namespaces.

#![allow(dead_code)] // each test binary uses a different part of the support code

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A bridge and `nodes` namespaces on 10.77.0.0/24 (addresses .1, .2, …).
pub struct TestNet {
    prefix: String,
    nodes: usize,
}

fn ip(args: &[&str]) -> Output {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2 must be installed)");
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl TestNet {
    /// Creates the hub, its bridge and `nodes` connected namespaces.
    pub fn create(nodes: usize) -> TestNet {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("jt{:x}x{id}", std::process::id());
        let net = TestNet { prefix, nodes: 0 };
        let hub = net.hub();
        ip(&["netns", "add", &hub]);
        let mut net = net;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..nodes {
            let ns = net.namespace(i);
            ip(&["netns", "add", &ns]);
            net.nodes = i + 1;
            let peer = format!("v{i}");
            ip(&[
                "-n", &hub, "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &hub, "link", "set", &peer, "master", "br0", "up"]);
            let cidr = format!("{}/24", net.addr(i));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    /// The namespace name of node `i`.
    pub fn namespace(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    /// The address of node `i`.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, u8::try_from(i + 1).expect("at most 254 nodes"))
    }

    /// A command that runs `program` inside node `i`'s namespace.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(i)])
            .arg(program);
        command
    }

    /// Cuts node `i` off from every other node (its link on the bridge goes down).
    pub fn partition(&self, i: usize) {
        ip(&["-n", &self.hub(), "link", "set", &format!("v{i}"), "down"]);
    }

    /// Reconnects node `i`.
    pub fn heal(&self, i: usize) {
        ip(&["-n", &self.hub(), "link", "set", &format!("v{i}"), "up"]);
    }

    fn kill_and_delete(namespace: &str) {
        if let Ok(output) = Command::new("ip")
            .args(["netns", "pids", namespace])
            .output()
        {
            for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", namespace])
            .status();
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            Self::kill_and_delete(&self.namespace(i));
        }
        Self::kill_and_delete(&self.hub());
    }
}
