//! A routed lab for the isolation table: one "node" namespace with IP forwarding on, and one
//! namespace per "container" (or outside host) joined to the node by a veth pair on its own
//! subnet (`.1` on the node, `.2` in the container, default route via `.1`). Packets between
//! two containers are forwarded by the node, so the node's nftables forward chain sees them.
//!
//! Sockets are real: [`in_namespace`] runs a closure on a thread that has entered a
//! namespace, so sockets it creates live there and can be used from anywhere afterwards.
//! Names are unique per process and instance (tests run in parallel); `Drop` deletes every
//! namespace even when the test fails. Needs root and iproute2. Test support only.

#![allow(dead_code)] // each test binary uses a different part of the support code

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A process- and instance-unique name for a namespace, starting with `tag`.
pub fn unique_name(tag: &str) -> String {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{:x}x{id}", std::process::id())
}

/// Runs `ip` with `args`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Network namespaces deleted on drop.
#[derive(Default)]
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Creates a namespace with a unique name starting with `tag`, loopback up.
    pub fn add(&mut self, tag: &str) -> String {
        let name = unique_name(tag);
        ip(&["netns", "add", &name]);
        self.names.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// A namespace on one subnet of the lab.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name.
    pub namespace: String,
    /// Its address (`.2` of its subnet).
    pub addr: Ipv4Addr,
}

/// The node namespace and its attached hosts.
pub struct Lab {
    namespaces: Namespaces,
    /// The node (router) namespace, where the isolation table goes.
    pub node: String,
    hosts: usize,
}

impl Lab {
    /// A node namespace with IP forwarding on and no hosts yet.
    pub fn new() -> Lab {
        let mut namespaces = Namespaces::default();
        let node = namespaces.add("jnft");
        let forwarding = Command::new("ip")
            .args([
                "netns",
                "exec",
                &node,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .status()
            .expect("run sysctl");
        assert!(forwarding.success(), "enable forwarding in {node}");
        Lab {
            namespaces,
            node,
            hosts: 0,
        }
    }

    /// Attaches a new namespace on `subnet` (its `.2`; the node holds `.1`).
    pub fn add_host(&mut self, subnet: Ipv4Net) -> Host {
        let namespace = self.namespaces.add("jnfh");
        let link = format!("h{}", self.hosts);
        self.hosts += 1;
        let base = u32::from(subnet.network());
        let gateway = Ipv4Addr::from(base + 1);
        let addr = Ipv4Addr::from(base + 2);
        let len = subnet.prefix_len();
        ip(&[
            "-n", &self.node, "link", "add", &link, "type", "veth", "peer", "name", "eth0",
            "netns", &namespace,
        ]);
        ip(&[
            "-n",
            &self.node,
            "addr",
            "add",
            &format!("{gateway}/{len}"),
            "dev",
            &link,
        ]);
        ip(&["-n", &self.node, "link", "set", &link, "up"]);
        ip(&[
            "-n",
            &namespace,
            "addr",
            "add",
            &format!("{addr}/{len}"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &namespace, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            &namespace,
            "route",
            "add",
            "default",
            "via",
            &gateway.to_string(),
        ]);
        Host { namespace, addr }
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

/// Runs `f` on a fresh thread inside network namespace `namespace`; sockets created by `f`
/// belong to that namespace.
pub fn in_namespace<T: Send + 'static>(
    namespace: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let path = format!("/run/netns/{namespace}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

/// A TCP and a UDP echo server in a namespace, on ports the kernel picked; they run on
/// threads that end with the test process.
pub struct Echo {
    /// The TCP port.
    pub tcp: u16,
    /// The UDP port.
    pub udp: u16,
}

impl Echo {
    /// Starts both servers in `namespace`, listening on every address.
    pub fn start(namespace: &str) -> Echo {
        let (listener, socket) = in_namespace(namespace, || {
            let listener = TcpListener::bind("0.0.0.0:0").expect("bind tcp");
            let socket = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
            (listener, socket)
        });
        let echo = Echo {
            tcp: listener.local_addr().expect("tcp addr").port(),
            udp: socket.local_addr().expect("udp addr").port(),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buffer = [0u8; 256];
                    while let Ok(n @ 1..) = stream.read(&mut buffer) {
                        if stream.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        std::thread::spawn(move || {
            let mut buffer = [0u8; 256];
            while let Ok((n, from)) = socket.recv_from(&mut buffer) {
                let _ = socket.send_to(&buffer[..n], from);
            }
        });
        echo
    }
}

/// Opens a TCP connection from `namespace` to `to`, giving up after `timeout`.
pub fn connect(namespace: &str, to: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    in_namespace(namespace, move || {
        let stream = TcpStream::connect_timeout(&SocketAddr::V4(to), timeout)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(stream)
    })
}

/// Sends `message` on an open connection and reads the echo back.
pub fn roundtrip(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    stream.write_all(message)?;
    let mut echoed = vec![0u8; message.len()];
    stream.read_exact(&mut echoed)?;
    if echoed == message {
        Ok(())
    } else {
        Err(io::Error::other("echo differs"))
    }
}

/// One UDP datagram from `namespace` to `to` and its echo, waiting at most `timeout`.
pub fn udp_roundtrip(namespace: &str, to: SocketAddrV4, timeout: Duration) -> io::Result<()> {
    in_namespace(namespace, move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(timeout))?;
        socket.send_to(b"jaco", to)?;
        let mut buffer = [0u8; 16];
        let (n, _) = socket.recv_from(&mut buffer)?;
        if &buffer[..n] == b"jaco" {
            Ok(())
        } else {
            Err(io::Error::other("echo differs"))
        }
    })
}

/// Retries `attempt` until it succeeds or `deadline` passes; the last error on failure.
pub fn eventually<T>(
    deadline: Duration,
    mut attempt: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let start = Instant::now();
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(e) if start.elapsed() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
