//! Two nodes of the WireGuard mesh in real network namespaces, for the mesh tests and bench.
//!
//! Network-namespace membership is per thread for the sockets, TUN devices and child
//! processes a thread creates, so each node gets an [`NsRuntime`]: an OS thread that joins the
//! node's namespace (`setns`) and runs a current-thread tokio runtime; everything of that node
//! (its mesh, its servers and clients) runs there through [`NsRuntime::run`]. Test support
//! only: the product runs in the daemon's own namespace.

#![allow(dead_code)] // the test and the bench use different parts

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jaco::error::Error;
use jaco::net::mesh::{self, Mesh, MeshMode, MeshSettings, Peer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::netns::TestNet;

/// How long a condition in these tests may take to become true.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// The mesh UDP port (every node is in its own namespace, so one port serves all tests).
pub const MESH_PORT: u16 = 51820;
/// The TCP port the echo servers listen on.
pub const ECHO_PORT: u16 = 7070;

/// A thread inside a network namespace running a current-thread tokio runtime.
pub struct NsRuntime {
    handle: tokio::runtime::Handle,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsRuntime {
    /// Starts the thread in `/run/netns/<namespace>`.
    pub fn start(namespace: &str) -> NsRuntime {
        let path = PathBuf::from("/run/netns").join(namespace);
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the namespace file");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            handle_tx
                .send(runtime.handle().clone())
                .expect("send handle");
            runtime.block_on(async {
                let _ = shutdown_rx.await;
            });
        });
        let handle = handle_rx.recv().expect("the namespace thread started");
        NsRuntime {
            handle,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Runs `future` on this namespace's thread and waits for its output.
    pub async fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle
            .spawn(future)
            .await
            .expect("task in the namespace")
    }

    /// Starts `future` on this namespace's thread without waiting for it.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Node `i`'s mesh address: 10.99.0.(i+1).
pub fn mesh_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, u8::try_from(i + 1).expect("few nodes"))
}

/// Node `i`'s hosted subnet: 10.244.(i+1).0/24, with .1 on a bridge (as docker would have it).
pub fn subnet_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, u8::try_from(i + 1).expect("few nodes"), 1)
}

/// Node `i`'s settings: the mesh range and the pool routed into the interface.
pub fn settings(i: usize, mode: MeshMode) -> MeshSettings {
    let mut settings = MeshSettings::new(mesh_address(i));
    settings.listen_port = MESH_PORT;
    settings.routes = vec![
        "10.99.0.0/24".parse().unwrap(),
        "10.244.0.0/16".parse().unwrap(),
    ];
    settings.mode = mode;
    settings
}

/// One node: its namespace thread, its key directory and its running mesh.
pub struct Node {
    /// The running mesh (shared so calls can be moved onto the namespace thread).
    pub mesh: Option<Arc<Mesh>>,
    /// The thread all of this node's work runs on.
    pub rt: NsRuntime,
    /// Where the node's key lives.
    pub key_dir: PathBuf,
    /// The node's public key.
    pub public_key: String,
}

/// Two namespaces with a userspace mesh between them (started in `Auto` mode, which is
/// userspace on this kernel); node `i` hosts `subnet_address(i)` on a bridge.
pub struct MeshPair {
    /// The nodes, dropped before the namespaces.
    pub nodes: Vec<Node>,
    /// The namespaces.
    pub net: TestNet,
    _keys: tempfile::TempDir,
}

impl MeshPair {
    /// Creates the namespaces, starts both meshes and makes each the other's peer.
    pub async fn start() -> MeshPair {
        let net = TestNet::create(2);
        let keys = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        for i in 0..2 {
            let status = net
                .command(i, "sh")
                .arg("-c")
                .arg(format!(
                    "ip link add sub0 type bridge && ip addr add {}/24 dev sub0 && ip link set sub0 up",
                    subnet_address(i)
                ))
                .status()
                .expect("subnet bridge");
            assert!(status.success(), "subnet bridge in node {i}");
            let key_dir = keys.path().join(format!("n{i}"));
            let key = mesh::load_or_create(&key_dir).expect("key");
            let rt = NsRuntime::start(&net.namespace(i));
            let mesh = rt
                .run(async move { mesh::start(settings(i, MeshMode::Auto), &key).await })
                .await
                .expect("mesh starts");
            let public_key = mesh::load_or_create(&key_dir).expect("key").public_base64();
            nodes.push(Node {
                mesh: Some(Arc::new(mesh)),
                rt,
                key_dir,
                public_key,
            });
        }
        let pair = MeshPair {
            nodes,
            net,
            _keys: keys,
        };
        for i in 0..2 {
            pair.set_peers(i, vec![pair.peer_of(1 - i)])
                .await
                .expect("peers");
        }
        pair
    }

    /// Node `i` as the other node's peer.
    pub fn peer_of(&self, i: usize) -> Peer {
        Peer {
            name: format!("n{i}"),
            public_key: self.nodes[i].public_key.clone(),
            endpoint: format!("{}:{MESH_PORT}", self.net.addr(i)),
            allowed_ips: vec![
                format!("{}/24", subnet_address(i))
                    .parse::<ipnet::Ipv4Net>()
                    .unwrap()
                    .trunc(),
                format!("{}/32", mesh_address(i)).parse().unwrap(),
            ],
        }
    }

    fn mesh(&self, i: usize) -> Arc<Mesh> {
        self.nodes[i].mesh.clone().expect("mesh running")
    }

    /// `set_peers` on node `i`, run in its namespace.
    pub async fn set_peers(&self, i: usize, peers: Vec<Peer>) -> Result<(), Error> {
        let mesh = self.mesh(i);
        self.nodes[i]
            .rt
            .run(async move { mesh.set_peers(&peers).await })
            .await
    }

    /// The mesh of node `i`, for calls that need no namespace (stats, implementation).
    pub fn mesh_of(&self, i: usize) -> Arc<Mesh> {
        self.mesh(i)
    }

    /// Stops node `i`'s mesh.
    pub async fn stop(&mut self, i: usize) -> Result<(), Error> {
        let mesh = self.nodes[i].mesh.take().expect("mesh running");
        let mesh = Arc::try_unwrap(mesh).unwrap_or_else(|_| panic!("mesh still shared"));
        self.nodes[i].rt.run(async move { mesh.stop().await }).await
    }

    /// Starts node `i`'s mesh again from its key directory and gives it its peer back.
    pub async fn restart(&mut self, i: usize) {
        let key = mesh::load_or_create(&self.nodes[i].key_dir).expect("key");
        let mesh = self.nodes[i]
            .rt
            .run(async move { mesh::start(settings(i, MeshMode::Auto), &key).await })
            .await
            .expect("mesh restarts");
        self.nodes[i].mesh = Some(Arc::new(mesh));
        self.set_peers(i, vec![self.peer_of(1 - i)])
            .await
            .expect("peers");
    }

    /// Starts a TCP echo server on node `i` (all addresses, [`ECHO_PORT`]).
    pub async fn echo_server(&self, i: usize) {
        let listener = self.nodes[i]
            .rt
            .run(async { TcpListener::bind(("0.0.0.0", ECHO_PORT)).await })
            .await
            .expect("echo server binds");
        self.nodes[i].rt.spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
    }

    /// From node `i` (source `from`, or the routing's choice), sends `payload` to the echo
    /// server at `to` and returns what came back; gives up after `timeout`.
    pub async fn echo(
        &self,
        i: usize,
        from: Option<Ipv4Addr>,
        to: Ipv4Addr,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> std::io::Result<Vec<u8>> {
        self.nodes[i]
            .rt
            .run(async move {
                let exchange = async {
                    let mut stream = connect(from, SocketAddrV4::new(to, ECHO_PORT)).await?;
                    stream.write_all(&payload).await?;
                    stream.shutdown().await?;
                    let mut back = Vec::new();
                    stream.read_to_end(&mut back).await?;
                    Ok(back)
                };
                tokio::time::timeout(timeout, exchange)
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            })
            .await
    }

    /// Retries [`MeshPair::echo`] until it returns `payload` or [`DEADLINE`] passes.
    pub async fn echo_eventually(
        &self,
        i: usize,
        from: Option<Ipv4Addr>,
        to: Ipv4Addr,
        payload: &[u8],
    ) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let result = self
                .echo(i, from, to, payload.to_vec(), Duration::from_secs(1))
                .await;
            match result {
                Ok(back) if back == payload => return,
                other if Instant::now() > deadline => {
                    panic!(
                        "no echo from {to} through the mesh: {:?}",
                        other.map(|b| b.len())
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// A TCP connection from `from` (if given) to `to`.
pub async fn connect(from: Option<Ipv4Addr>, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(from) = from {
        socket.bind(SocketAddrV4::new(from, 0).into())?;
    }
    socket.connect(to.into()).await
}
