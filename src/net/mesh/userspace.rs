//! The mesh in-process, for kernels without WireGuard: boringtun's `noise::Tunn` per peer, a
//! TUN device (tun-rs) and one UDP socket, driven by three tokio tasks — TUN → encrypt → UDP,
//! UDP → decrypt → TUN, and the WireGuard timers (handshakes, rekeying, the 25 s keepalive).
//!
//! Cryptokey routing as in kernel WireGuard: an outgoing packet goes to the peer whose
//! AllowedIPs hold its destination by longest-prefix match (none → dropped); a decrypted packet
//! reaches the TUN only when that same lookup of its inner source names the peer it came from.
//! Replies go to the configured endpoint (no roaming). The interface lives as long as the
//! device: dropping or stopping the mesh removes it. This module must not configure addresses
//! or routes itself (see `link`) and must not block the runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::Ipv4Net;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tun_rs::{AsyncDevice, DeviceBuilder};

use super::allowed_ips::AllowedIps;
use super::{KEEPALIVE_SECONDS, MeshKey, MeshSettings, PeerStats, Resolved, key, link};
use crate::error::{Code, Error};

/// Room for any IPv4 packet plus WireGuard's 32 bytes of framing.
const BUFFER: usize = 65_536 + 64;
/// How often the WireGuard timers run (boringtun's own device uses the same period).
const TIMER_PERIOD: Duration = Duration::from_millis(250);
/// Handshake initiations accepted per second before cookies are demanded.
const HANDSHAKES_PER_SECOND: u64 = 100;

/// One configured peer. Immutable except its tunnel, which survives updates of the endpoint
/// or AllowedIPs so an established session is kept.
struct PeerState {
    public_key: String,
    index: u32,
    endpoint: SocketAddrV4,
    allowed_ips: Vec<Ipv4Net>,
    tunn: Arc<tokio::sync::Mutex<Tunn>>,
}

/// The peer set; replaced as a whole by `set_peers`.
#[derive(Default)]
struct Table {
    by_key: BTreeMap<[u8; 32], Arc<PeerState>>,
    by_index: HashMap<u32, Arc<PeerState>>,
    routes: AllowedIps<u32>,
}

struct Shared {
    secret: StaticSecret,
    public: PublicKey,
    table: RwLock<Table>,
    next_index: std::sync::Mutex<u32>,
    limiter: RateLimiter,
    udp: UdpSocket,
    tun: AsyncDevice,
}

/// The running userspace mesh; its tasks end when it is stopped or dropped.
pub(super) struct Userspace {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Userspace {
    /// Creates the TUN device and the UDP socket, configures the interface and starts the
    /// tasks. Sockets and the device belong to the network namespace of the calling thread.
    pub(super) async fn start(settings: &MeshSettings, key: &MeshKey) -> Result<Userspace, Error> {
        let tun = DeviceBuilder::new()
            .name(&settings.interface)
            .build_async()
            .map_err(|e| {
                Error::new(Code::Internal, format!("cannot create the TUN device: {e}"))
                    .with("interface", &settings.interface)
            })?;
        let udp = UdpSocket::bind(SocketAddrV4::new([0, 0, 0, 0].into(), settings.listen_port))
            .await
            .map_err(|e| {
                Error::new(
                    Code::Internal,
                    format!("cannot bind the mesh UDP port: {e}"),
                )
                .with("port", settings.listen_port)
            })?;
        link::configure(settings).await?;
        let public = key.public();
        let shared = Arc::new(Shared {
            secret: key.secret().clone(),
            public,
            table: RwLock::default(),
            next_index: std::sync::Mutex::new(1),
            limiter: RateLimiter::new(&public, HANDSHAKES_PER_SECOND),
            udp,
            tun,
        });
        let tasks = vec![
            tokio::spawn(outbound(shared.clone())),
            tokio::spawn(inbound(shared.clone())),
            tokio::spawn(timers(shared.clone())),
        ];
        Ok(Userspace { shared, tasks })
    }

    /// Makes the peers exactly `desired` plus those of `keep` already present. A peer whose
    /// key stays keeps its tunnel (and session); its endpoint and AllowedIPs are replaced.
    pub(super) fn set_peers(&self, desired: &[Resolved], keep: &BTreeSet<String>) {
        let mut table = self.shared.table.write().unwrap_or_else(|e| e.into_inner());
        // Kept peers first, so that a desired peer wins a contested prefix.
        let mut peers: Vec<([u8; 32], Arc<PeerState>)> = table
            .by_key
            .iter()
            .filter(|(_, p)| keep.contains(&p.public_key))
            .map(|(k, p)| (*k, p.clone()))
            .collect();
        for peer in desired {
            let Some(bytes) = key::decode(&peer.public_key) else {
                continue; // resolve() lets only valid keys through
            };
            let (index, tunn) = match table.by_key.get(&bytes) {
                Some(state) => (state.index, state.tunn.clone()),
                None => {
                    let index = self.allocate_index(&table);
                    let tunn = Tunn::new(
                        self.shared.secret.clone(),
                        PublicKey::from(bytes),
                        None,
                        Some(KEEPALIVE_SECONDS),
                        index,
                        None,
                    );
                    (index, Arc::new(tokio::sync::Mutex::new(tunn)))
                }
            };
            let state = PeerState {
                public_key: peer.public_key.clone(),
                index,
                endpoint: peer.endpoint,
                allowed_ips: peer.allowed_ips.clone(),
                tunn,
            };
            peers.push((bytes, Arc::new(state)));
        }
        let routes = AllowedIps::new(
            peers
                .iter()
                .flat_map(|(_, p)| p.allowed_ips.iter().map(|net| (*net, p.index))),
        );
        *table = Table {
            routes,
            by_index: peers.iter().map(|(_, p)| (p.index, p.clone())).collect(),
            by_key: peers.into_iter().collect(),
        };
    }

    fn allocate_index(&self, table: &Table) -> u32 {
        let mut next = self
            .shared
            .next_index
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            // boringtun shifts the index left by 8 bits: it must fit in 24.
            let index = *next & 0x00ff_ffff;
            *next = next.wrapping_add(1);
            if index != 0 && !table.by_index.contains_key(&index) {
                return index;
            }
        }
    }

    pub(super) async fn stats(&self) -> Vec<PeerStats> {
        let peers: Vec<Arc<PeerState>> = {
            let table = self.shared.table.read().unwrap_or_else(|e| e.into_inner());
            table.by_key.values().cloned().collect()
        };
        let mut stats = Vec::with_capacity(peers.len());
        for peer in peers {
            let (since_handshake, tx, rx, _, _) = peer.tunn.lock().await.stats();
            stats.push(PeerStats {
                public_key: peer.public_key.clone(),
                rx_bytes: rx as u64,
                tx_bytes: tx as u64,
                last_handshake: since_handshake.and_then(|d| SystemTime::now().checked_sub(d)),
            });
        }
        stats
    }

    /// Ends the tasks and waits for them, which closes the device and removes the interface.
    pub(super) async fn stop(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Userspace {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Shared {
    fn route(&self, destination: IpAddr) -> Option<Arc<PeerState>> {
        let IpAddr::V4(destination) = destination else {
            return None;
        };
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let index = table.routes.lookup(destination)?;
        table.by_index.get(&index).cloned()
    }

    fn peer_by_index(&self, receiver_index: u32) -> Option<Arc<PeerState>> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.by_index.get(&(receiver_index >> 8)).cloned()
    }

    fn peer_by_key(&self, key: &[u8; 32]) -> Option<Arc<PeerState>> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.by_key.get(key).cloned()
    }

    fn may_send_from(&self, peer: &PeerState, source: std::net::Ipv4Addr) -> bool {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.routes.lookup(source) == Some(peer.index)
    }

    async fn send(&self, packet: &[u8], to: SocketAddr) {
        if let Err(error) = self.udp.send_to(packet, to).await {
            tracing::debug!(%to, %error, "mesh: UDP send failed");
        }
    }

    /// Which peer an incoming datagram belongs to; `None` drops it. A handshake initiation
    /// passes the rate limiter first (which may answer with a cookie instead).
    async fn identify(
        &self,
        datagram: &[u8],
        from: SocketAddr,
        scratch: &mut [u8],
    ) -> Option<Arc<PeerState>> {
        match Tunn::parse_incoming_packet(datagram).ok()? {
            Packet::HandshakeInit(init) => {
                match self
                    .limiter
                    .verify_packet(Some(from.ip()), datagram, scratch)
                {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        let cookie = cookie.to_vec();
                        self.send(&cookie, from).await;
                        return None;
                    }
                    Err(_) => return None,
                }
                let half = parse_handshake_anon(&self.secret, &self.public, &init).ok()?;
                self.peer_by_key(&half.peer_static_public)
            }
            Packet::HandshakeResponse(p) => self.peer_by_index(p.receiver_idx),
            Packet::PacketCookieReply(p) => self.peer_by_index(p.receiver_idx),
            Packet::PacketData(p) => self.peer_by_index(p.receiver_idx),
        }
    }
}

/// TUN → the peer routed for the destination → encrypted → UDP.
async fn outbound(shared: Arc<Shared>) {
    let mut packet = vec![0u8; BUFFER];
    let mut out = vec![0u8; BUFFER];
    loop {
        let length = match shared.tun.recv(&mut packet).await {
            Ok(length) => length,
            Err(error) => {
                tracing::error!(%error, "mesh: reading the TUN device failed; outbound stops");
                return;
            }
        };
        let packet = &packet[..length];
        let Some(peer) = Tunn::dst_address(packet).and_then(|d| shared.route(d)) else {
            continue; // no peer allows this destination
        };
        let mut tunn = peer.tunn.lock().await;
        match tunn.encapsulate(packet, &mut out) {
            TunnResult::WriteToNetwork(datagram) => {
                shared.send(datagram, peer.endpoint.into()).await
            }
            TunnResult::Err(error) => tracing::debug!(?error, "mesh: encapsulate failed"),
            _ => {}
        }
    }
}

/// UDP → the peer it belongs to → decrypted → TUN, if the inner source is the peer's.
async fn inbound(shared: Arc<Shared>) {
    let mut datagram = vec![0u8; BUFFER];
    let mut out = vec![0u8; BUFFER];
    loop {
        let (length, from) = match shared.udp.recv_from(&mut datagram).await {
            Ok(received) => received,
            Err(error) => {
                tracing::error!(%error, "mesh: reading the UDP socket failed; inbound stops");
                return;
            }
        };
        let Some(peer) = shared.identify(&datagram[..length], from, &mut out).await else {
            continue;
        };
        let mut tunn = peer.tunn.lock().await;
        let mut input: &[u8] = &datagram[..length];
        let mut source = Some(from.ip());
        loop {
            match tunn.decapsulate(source, input, &mut out) {
                TunnResult::WriteToNetwork(reply) => {
                    shared.send(reply, peer.endpoint.into()).await;
                    // Flush what was queued waiting for the session, one packet per call.
                    input = &[];
                    source = None;
                    continue;
                }
                TunnResult::WriteToTunnelV4(packet, inner_source) => {
                    if shared.may_send_from(&peer, inner_source) {
                        if let Err(error) = shared.tun.send(packet).await {
                            tracing::debug!(%error, "mesh: writing to the TUN device failed");
                        }
                    } else {
                        tracing::debug!(%inner_source, peer = %peer.public_key, "mesh: source outside the peer's AllowedIPs; dropped");
                    }
                }
                TunnResult::Err(error) => tracing::debug!(?error, "mesh: decapsulate failed"),
                TunnResult::WriteToTunnelV6(..) | TunnResult::Done => {}
            }
            break;
        }
    }
}

/// Handshake retries, rekeying, keepalives; the rate limiter's window.
async fn timers(shared: Arc<Shared>) {
    let mut out = vec![0u8; BUFFER];
    let mut interval = tokio::time::interval(TIMER_PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u32 = 0;
    loop {
        interval.tick().await;
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(4) {
            shared.limiter.reset_count();
        }
        let peers: Vec<Arc<PeerState>> = {
            let table = shared.table.read().unwrap_or_else(|e| e.into_inner());
            table.by_key.values().cloned().collect()
        };
        for peer in peers {
            let mut tunn = peer.tunn.lock().await;
            match tunn.update_timers(&mut out) {
                TunnResult::WriteToNetwork(datagram) => {
                    shared.send(datagram, peer.endpoint.into()).await
                }
                TunnResult::Err(error) => tracing::trace!(?error, "mesh: timer"),
                _ => {}
            }
        }
    }
}
