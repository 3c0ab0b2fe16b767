//! The L4 proxy: one TCP listener per cluster-wide route on this node, forwarding each client
//! connection to one of the route's upstreams (SPEC §2.4).
//!
//! [`L4::set_routes`] reconciles the listeners with the routes it is handed: it binds the new
//! ports, closes the listeners of routes that went (at once, so the port is free when it
//! returns; connections already open may finish) and swaps the upstream list of a kept route
//! without rebinding. Per connection it tries the upstreams in [`select`](super::select)'s
//! order with a connect timeout, optionally sends a PROXY v2 header
//! ([`header`](super::header)), then copies bytes both ways until both sides are done.
//!
//! It must not read the replicated state or decide which replicas are healthy: the caller
//! computes the routes and their upstream addresses and calls again whenever they change. It
//! retries nothing on its own: a port that could not be bound is reported and tried again on
//! the next call.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::header::proxy_v2;
use super::select::{RoundRobin, attempt_order, distinct};
use crate::error::{Code, Error};

/// Pending connections the kernel queues per listener before `accept`.
const BACKLOG: u32 = 1024;

/// Bytes buffered per direction of a connection (so up to 128 KiB per open connection).
/// Against tokio's default of 8 KiB it raised bulk throughput through a route from about 0.2×
/// to 0.5× of the direct path on loopback (docs/benchmarks.md); latency did not change.
const COPY_BUFFER: usize = 64 << 10;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One cluster-wide L4 route as this node serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The host port every node listens on (the compose `published` port).
    pub port: u16,
    /// The deployment that publishes the port (named in errors and logs).
    pub deployment: String,
    /// The service that publishes the port (named in errors and logs).
    pub service: String,
    /// The healthy replicas' container address and port, anywhere in the cluster. Order and
    /// duplicates do not matter; empty means every client is closed at once.
    pub upstreams: Vec<SocketAddr>,
    /// Send a PROXY protocol v2 header (client and listener address) before the client's
    /// bytes.
    pub proxy_protocol: bool,
}

/// Connection counters of one route since its listener was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteStats {
    /// Client connections accepted.
    pub accepted: u64,
    /// Client connections that reached an upstream and were forwarded.
    pub forwarded: u64,
    /// Client connections closed because no upstream could be reached (or the PROXY header
    /// could not be sent).
    pub failed: u64,
    /// Client connections open right now.
    pub active: u64,
}

/// The L4 routes of this node: a set of listeners reconciled by [`L4::set_routes`].
///
/// Dropping it closes the listeners and ends the open connections; [`L4::stop`] first lets
/// them finish.
pub struct L4 {
    bind: IpAddr,
    connect_timeout: Duration,
    listeners: Mutex<BTreeMap<u16, Listener>>,
    /// Serialises reconciliations, which await between reading and writing `listeners`.
    reconcile: tokio::sync::Mutex<()>,
    connections: Arc<Connections>,
}

/// A bound port: its accept loop and what its connections share.
struct Listener {
    route: Arc<RouteState>,
    accept: JoinHandle<()>,
}

/// What the accept loop and the connections of one route share.
struct RouteState {
    target: Mutex<Arc<Target>>,
    turns: RoundRobin,
    accepted: AtomicU64,
    forwarded: AtomicU64,
    failed: AtomicU64,
    active: AtomicU64,
}

/// The replaceable part of a route: where its connections go.
#[derive(Debug)]
struct Target {
    deployment: String,
    service: String,
    upstreams: Vec<SocketAddr>,
    proxy_protocol: bool,
}

/// Every open client connection of this node, for a graceful stop.
struct Connections {
    open: AtomicUsize,
    closed: Notify,
    stop: watch::Sender<bool>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent even if a holder panicked: every write is one
    // assignment or insert.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl L4 {
    /// A proxy with no routes that will listen on `bind` (e.g. `0.0.0.0` or `::`) and give
    /// each upstream `connect_timeout` to accept a connection.
    pub fn new(bind: IpAddr, connect_timeout: Duration) -> L4 {
        L4 {
            bind,
            connect_timeout,
            listeners: Mutex::new(BTreeMap::new()),
            reconcile: tokio::sync::Mutex::new(()),
            connections: Arc::new(Connections {
                open: AtomicUsize::new(0),
                closed: Notify::new(),
                stop: watch::Sender::new(false),
            }),
        }
    }

    /// Makes the listeners match `routes` and returns the ports that could not be served.
    ///
    /// A port no longer routed has its listener closed before this returns (connections
    /// already open may finish); a kept port gets the new upstreams, PROXY setting and names
    /// without rebinding; a new port is bound with `SO_REUSEADDR`. A port that is in use on
    /// this host yields `port_conflict`, any other bind failure `internal` (details: `port`,
    /// `deployment`, `service`, `bind`, `reason`); the same port twice in `routes` yields
    /// `port_conflict` for the second route. Unserved ports are tried again on the next call.
    pub async fn set_routes(&self, routes: Vec<Route>) -> Vec<(u16, Error)> {
        let _one_at_a_time = self.reconcile.lock().await;
        let mut errors = Vec::new();
        let mut wanted = BTreeMap::new();
        for route in routes {
            match wanted.entry(route.port) {
                Entry::Vacant(slot) => {
                    slot.insert(route);
                }
                Entry::Occupied(first) => {
                    let error = route_error(
                        Code::PortConflict,
                        &route,
                        format!(
                            "host port {} is routed twice: to {}/{} and to {}/{}",
                            route.port,
                            first.get().deployment,
                            first.get().service,
                            route.deployment,
                            route.service
                        ),
                    )
                    .with("reason", "duplicate_route");
                    errors.push((route.port, error));
                }
            }
        }

        let gone: Vec<Listener> = {
            let mut listeners = lock(&self.listeners);
            let ports: Vec<u16> = listeners
                .keys()
                .filter(|port| !wanted.contains_key(port))
                .copied()
                .collect();
            ports
                .iter()
                .filter_map(|port| listeners.remove(port))
                .collect()
        };
        for listener in gone {
            listener.accept.abort();
            // Resolves once the task is dropped, and with it the listening socket.
            let _ = listener.accept.await;
        }

        for (port, route) in wanted {
            if let Some(listener) = lock(&self.listeners).get(&port) {
                *lock(&listener.route.target) = Arc::new(Target::from(route));
                continue;
            }
            match listen(SocketAddr::new(self.bind, port)) {
                Ok(socket) => {
                    let state = Arc::new(RouteState::new(Target::from(route)));
                    let accept = tokio::spawn(accept_loop(
                        socket,
                        state.clone(),
                        self.connections.clone(),
                        self.connect_timeout,
                    ));
                    let listener = Listener {
                        route: state,
                        accept,
                    };
                    lock(&self.listeners).insert(port, listener);
                }
                Err(error) => errors.push((port, self.bind_error(&route, &error))),
            }
        }
        errors
    }

    /// The counters of every route that has a listener, by port.
    pub fn stats(&self) -> BTreeMap<u16, RouteStats> {
        lock(&self.listeners)
            .iter()
            .map(|(port, listener)| (*port, listener.route.stats()))
            .collect()
    }

    /// Closes every listener, lets open connections finish for up to `grace`, then ends the
    /// rest and returns once all are closed.
    pub async fn stop(self, grace: Duration) {
        self.set_routes(Vec::new()).await;
        if tokio::time::timeout(grace, self.connections.drained())
            .await
            .is_err()
        {
            tracing::info!(
                open = self.connections.open.load(Ordering::SeqCst),
                "closing L4 connections still open after the grace period"
            );
        }
        self.connections.stop.send_replace(true);
        self.connections.drained().await;
    }

    fn bind_error(&self, route: &Route, error: &io::Error) -> Error {
        let (code, message) = if error.kind() == io::ErrorKind::AddrInUse {
            (
                Code::PortConflict,
                format!(
                    "host port {} of {}/{} is already in use on this node",
                    route.port, route.deployment, route.service
                ),
            )
        } else {
            (
                Code::Internal,
                format!(
                    "cannot listen on host port {} of {}/{}",
                    route.port, route.deployment, route.service
                ),
            )
        };
        route_error(code, route, message)
            .with("bind", SocketAddr::new(self.bind, route.port))
            .with("reason", error)
    }
}

impl Drop for L4 {
    fn drop(&mut self) {
        for listener in lock(&self.listeners).values() {
            listener.accept.abort();
        }
        self.connections.stop.send_replace(true);
    }
}

fn route_error(code: Code, route: &Route, message: String) -> Error {
    Error::new(code, message)
        .with("port", route.port)
        .with("deployment", &route.deployment)
        .with("service", &route.service)
}

/// A listening socket on `addr` with `SO_REUSEADDR`, so a port freed by a removed route (or
/// a restarted daemon) can be bound again while its old connections linger in TIME_WAIT.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

impl From<Route> for Target {
    fn from(route: Route) -> Self {
        Target {
            deployment: route.deployment,
            service: route.service,
            upstreams: distinct(route.upstreams),
            proxy_protocol: route.proxy_protocol,
        }
    }
}

impl RouteState {
    fn new(target: Target) -> Self {
        RouteState {
            target: Mutex::new(Arc::new(target)),
            turns: RoundRobin::new(),
            accepted: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            active: AtomicU64::new(0),
        }
    }

    fn stats(&self) -> RouteStats {
        RouteStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
        }
    }
}

impl Connections {
    /// Resolves when no client connection is open.
    async fn drained(&self) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            // Register before reading the count, so a close in between is not missed.
            closed.as_mut().enable();
            if self.open.load(Ordering::SeqCst) == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// One open client connection, counted on its route and on the node until dropped.
struct Open {
    route: Arc<RouteState>,
    connections: Arc<Connections>,
}

impl Open {
    fn new(route: Arc<RouteState>, connections: Arc<Connections>) -> Open {
        route.accepted.fetch_add(1, Ordering::Relaxed);
        route.active.fetch_add(1, Ordering::Relaxed);
        connections.open.fetch_add(1, Ordering::SeqCst);
        Open { route, connections }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.route.active.fetch_sub(1, Ordering::Relaxed);
        if self.connections.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.connections.closed.notify_waiters();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    route: Arc<RouteState>,
    connections: Arc<Connections>,
    connect_timeout: Duration,
) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                let open = Open::new(route.clone(), connections.clone());
                tokio::spawn(forward(client, peer, open, connect_timeout));
            }
            Err(error) => {
                let target = lock(&route.target).clone();
                tracing::warn!(
                    deployment = %target.deployment,
                    service = %target.service,
                    %error,
                    "L4 accept failed"
                );
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves one client connection: upstream, optional PROXY header, then bytes both ways.
async fn forward(mut client: TcpStream, peer: SocketAddr, open: Open, connect_timeout: Duration) {
    let route = &open.route;
    let target = lock(&route.target).clone();
    // Small request/response exchanges must not wait for Nagle's algorithm on either leg.
    let _ = client.set_nodelay(true);
    let turn = route.turns.next_turn();
    let Some(mut upstream) = connect_first(&target, turn, connect_timeout).await else {
        route.failed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            deployment = %target.deployment,
            service = %target.service,
            %peer,
            upstreams = target.upstreams.len(),
            "L4 client closed: no upstream reachable"
        );
        return;
    };
    let _ = upstream.set_nodelay(true);
    if target.proxy_protocol {
        let sent = match client.local_addr() {
            Ok(local) => upstream.write_all(&proxy_v2(peer, local)).await,
            Err(error) => Err(error),
        };
        if let Err(error) = sent {
            route.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, %error, "L4 client closed: PROXY header not sent");
            return;
        }
    }
    route.forwarded.fetch_add(1, Ordering::Relaxed);
    let mut stop = open.connections.stop.subscribe();
    tokio::select! {
        copied = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUFFER, COPY_BUFFER) => {
            if let Err(error) = copied {
                tracing::debug!(%peer, %error, "L4 connection ended with an error");
            }
        }
        _ = stop.wait_for(|stop| *stop) => {}
    }
}

/// The first upstream that accepts a connection within `timeout`, tried in round-robin order.
async fn connect_first(target: &Target, turn: usize, timeout: Duration) -> Option<TcpStream> {
    for &addr in attempt_order(&target.upstreams, turn) {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(error)) => {
                tracing::debug!(service = %target.service, %addr, %error, "L4 upstream refused");
            }
            Err(_) => {
                tracing::debug!(service = %target.service, %addr, "L4 upstream connect timed out");
            }
        }
    }
    None
}
