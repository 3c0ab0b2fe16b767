//! The WireGuard mesh between nodes (SPEC §7): cross-node container traffic leaves a node
//! encrypted through one interface (`jaco-wg`), whose peers are the other nodes, each allowed
//! the /24s it hosts and its own mesh address.
//!
//! - [`load_or_create`] / [`MeshKey`]: the node's static key, made once and kept on disk.
//! - [`peers`]: the pure derivation of the peer list from the nodes in the state.
//! - [`start`] / [`Mesh`]: the running mesh — kernel WireGuard configured with `ip` and `wg`
//!   where the kernel has it, otherwise an in-process userspace implementation (boringtun on
//!   a TUN device). [`Mesh::set_peers`] reconciles it with a new peer list.
//!
//! The interface gets the node's mesh address as a /32 and the routes of
//! [`MeshSettings::routes`] with that address as source, so traffic the host itself originates
//! (the L4 proxy) is answerable through the mesh; local bridges' /24s are more specific and
//! win. This module must not read the replicated state or publish the key: the network
//! supervisor does both and hands it values.

mod allowed_ips;
mod kernel;
mod key;
mod link;
mod peers;
mod userspace;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;

pub use key::{MeshKey, load_or_create};
pub use peers::{MeshNode, Peer, peers};

use crate::error::{Code, Error};

/// The default name of the mesh interface.
pub const DEFAULT_INTERFACE: &str = "jaco-wg";
/// The default UDP port of the mesh (every node must use the same).
pub const DEFAULT_LISTEN_PORT: u16 = 51820;
/// The default MTU: 1500 on the underlay minus WireGuard's IPv4 overhead, rounded as `wg-quick`.
pub const DEFAULT_MTU: u16 = 1420;
/// The persistent keepalive of every peer, in seconds.
const KEEPALIVE_SECONDS: u16 = 25;
/// How long resolving one endpoint host name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which WireGuard implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MeshMode {
    /// Kernel WireGuard when `ip link add … type wireguard` works, else userspace.
    #[default]
    Auto,
    /// Kernel WireGuard or an error.
    Kernel,
    /// The in-process userspace implementation.
    Userspace,
}

/// How this node's end of the mesh is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    /// The interface name ([`DEFAULT_INTERFACE`]).
    pub interface: String,
    /// The UDP port the mesh listens on ([`DEFAULT_LISTEN_PORT`]).
    pub listen_port: u16,
    /// This node's mesh address, put on the interface as a /32.
    pub address: Ipv4Addr,
    /// Prefixes routed into the interface with `src address` (e.g. the IPAM pool and the mesh
    /// addresses' range).
    pub routes: Vec<Ipv4Net>,
    /// The interface MTU ([`DEFAULT_MTU`]).
    pub mtu: u16,
    /// Kernel, userspace or whichever works.
    pub mode: MeshMode,
}

impl MeshSettings {
    /// The defaults for a node whose mesh address is `address`, with no routes.
    pub fn new(address: Ipv4Addr) -> MeshSettings {
        MeshSettings {
            interface: DEFAULT_INTERFACE.to_owned(),
            listen_port: DEFAULT_LISTEN_PORT,
            address,
            routes: Vec::new(),
            mtu: DEFAULT_MTU,
            mode: MeshMode::Auto,
        }
    }
}

/// Traffic counters of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's public key in base64.
    pub public_key: String,
    /// Bytes received from the peer (inner packets for userspace, as counted by the kernel
    /// otherwise).
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// When the last handshake completed; `None` if never.
    pub last_handshake: Option<SystemTime>,
}

/// A peer ready to apply: its key checked and spelt canonically, its endpoint resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    name: String,
    public_key: String,
    endpoint: SocketAddrV4,
    allowed_ips: Vec<Ipv4Net>,
}

enum Backend {
    Kernel(kernel::Kernel),
    Userspace(userspace::Userspace),
}

/// The running mesh. [`Mesh::stop`] ends it cleanly; dropping a userspace mesh also removes
/// its interface, dropping a kernel one leaves the interface (the next [`start`] replaces it).
pub struct Mesh {
    backend: Backend,
}

/// Starts the mesh with no peers: replaces any interface of the same name left by an earlier
/// run, creates the interface (kernel or userspace per `settings.mode`), sets its key, port,
/// address, MTU and routes, and brings it up.
///
/// Sockets, the TUN device and the `ip`/`wg` commands act in the network namespace of the
/// calling thread. Errors are `internal`; in [`MeshMode::Kernel`] on a kernel without
/// WireGuard the details carry `reason=wireguard_unavailable`.
pub async fn start(settings: MeshSettings, key: &MeshKey) -> Result<Mesh, Error> {
    link::delete(&settings.interface).await?;
    let kernel = match settings.mode {
        MeshMode::Userspace => None,
        MeshMode::Kernel => Some(kernel::create_link(&settings.interface).await),
        MeshMode::Auto => match kernel::create_link(&settings.interface).await {
            Err(error) => {
                tracing::info!(reason = %error.message, "mesh: using userspace WireGuard");
                None
            }
            created => Some(created),
        },
    };
    let backend = match kernel {
        Some(created) => {
            created?;
            Backend::Kernel(kernel::Kernel::configure(&settings, key).await?)
        }
        None => Backend::Userspace(userspace::Userspace::start(&settings, key).await?),
    };
    tracing::info!(
        interface = %settings.interface,
        address = %settings.address,
        port = settings.listen_port,
        implementation = implementation(&backend),
        "mesh: started"
    );
    Ok(Mesh { backend })
}

fn implementation(backend: &Backend) -> &'static str {
    match backend {
        Backend::Kernel(_) => "kernel",
        Backend::Userspace(_) => "userspace",
    }
}

impl Mesh {
    /// Reconciles the peers with `peers`: adds the new, removes the absent, updates endpoint
    /// and AllowedIPs of the rest (an unchanged peer keeps its session). Idempotent.
    ///
    /// A peer whose key is not a WireGuard key or whose endpoint does not resolve to an IPv4
    /// address is skipped — if it is configured already it stays as it was — and everything
    /// else is still applied; the call then returns an `internal` error naming each skipped
    /// peer (`skipped`, and `peer.<name>` with the reason).
    pub async fn set_peers(&self, peers: &[Peer]) -> Result<(), Error> {
        let (desired, keep, skipped) = resolve(peers).await;
        match &self.backend {
            Backend::Kernel(kernel) => kernel.set_peers(&desired, &keep).await?,
            Backend::Userspace(userspace) => userspace.set_peers(&desired, &keep),
        }
        if skipped.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = skipped.iter().map(|(name, _)| name.as_str()).collect();
        let reasons: Vec<String> = skipped.iter().map(|(n, r)| format!("{n}: {r}")).collect();
        let mut error = Error::new(
            Code::Internal,
            format!(
                "{} of {} mesh peers not applied (the others are): {}",
                skipped.len(),
                peers.len(),
                reasons.join("; ")
            ),
        )
        .with("skipped", names.join(","));
        for (name, reason) in skipped {
            error = error.with(format!("peer.{name}"), reason);
        }
        Err(error)
    }

    /// `"kernel"` or `"userspace"`.
    pub fn implementation(&self) -> &'static str {
        implementation(&self.backend)
    }

    /// Per-peer counters and last handshake. Empty if the kernel's counters cannot be read
    /// (logged).
    pub async fn stats(&self) -> Vec<PeerStats> {
        match &self.backend {
            Backend::Kernel(kernel) => kernel.stats().await.unwrap_or_else(|error| {
                tracing::warn!(%error, "mesh: cannot read WireGuard statistics");
                Vec::new()
            }),
            Backend::Userspace(userspace) => userspace.stats().await,
        }
    }

    /// Stops the mesh: its tasks end and the interface is removed.
    pub async fn stop(self) -> Result<(), Error> {
        match self.backend {
            Backend::Kernel(kernel) => kernel.stop().await,
            Backend::Userspace(userspace) => {
                userspace.stop().await;
                Ok(())
            }
        }
    }
}

/// Splits `peers` into those ready to apply, the keys of those skipped (kept as they are if
/// configured) and the skipped with their reasons.
async fn resolve(peers: &[Peer]) -> (Vec<Resolved>, BTreeSet<String>, Vec<(String, String)>) {
    let mut desired: Vec<Resolved> = Vec::new();
    let mut keep = BTreeSet::new();
    let mut skipped = Vec::new();
    for peer in peers {
        let Some(bytes) = key::decode(&peer.public_key) else {
            skipped.push((
                peer.name.clone(),
                "the public key is not a base64 WireGuard key".into(),
            ));
            continue;
        };
        let public_key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
        if let Some(first) = desired.iter().find(|d| d.public_key == public_key) {
            let reason = format!("the public key is already {}'s", first.name);
            skipped.push((peer.name.clone(), reason));
            continue;
        }
        match resolve_endpoint(&peer.endpoint).await {
            Ok(endpoint) => desired.push(Resolved {
                name: peer.name.clone(),
                public_key,
                endpoint,
                allowed_ips: peer.allowed_ips.iter().map(Ipv4Net::trunc).collect(),
            }),
            Err(reason) => {
                keep.insert(public_key);
                skipped.push((peer.name.clone(), reason));
            }
        }
    }
    (desired, keep, skipped)
}

/// `a.b.c.d:port` directly, a host name through the system resolver (first IPv4 address).
async fn resolve_endpoint(endpoint: &str) -> Result<SocketAddrV4, String> {
    if let Ok(address) = endpoint.parse::<SocketAddrV4>() {
        return Ok(address);
    }
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(endpoint)).await;
    let addresses = match lookup {
        Err(_) => {
            return Err(format!(
                "endpoint {endpoint} did not resolve within {RESOLVE_TIMEOUT:?}"
            ));
        }
        Ok(Err(error)) => return Err(format!("endpoint {endpoint} does not resolve: {error}")),
        Ok(Ok(addresses)) => addresses,
    };
    addresses
        .into_iter()
        .find_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("endpoint {endpoint} has no IPv4 address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, key: &str, endpoint: &str) -> Peer {
        Peer {
            name: name.into(),
            public_key: key.into(),
            endpoint: endpoint.into(),
            allowed_ips: vec!["10.244.1.5/24".parse().unwrap()],
        }
    }

    #[tokio::test]
    async fn bad_keys_duplicates_and_unresolvable_endpoints_are_skipped_not_fatal() {
        let a = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let b = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
        let (desired, keep, skipped) = resolve(&[
            peer("a", a, "10.0.0.1:51820"),
            peer("bad", "nope", "10.0.0.2:51820"),
            peer("twin", a, "10.0.0.3:51820"),
            peer("b", b, "no-such-host.invalid:51820"),
            peer(
                "noport",
                "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=",
                "10.0.0.4",
            ),
        ])
        .await;
        assert_eq!(
            desired,
            vec![Resolved {
                name: "a".into(),
                public_key: a.into(),
                endpoint: "10.0.0.1:51820".parse().unwrap(),
                allowed_ips: vec!["10.244.1.0/24".parse().unwrap()],
            }]
        );
        assert_eq!(
            keep,
            BTreeSet::from([
                b.to_owned(),
                "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=".to_owned()
            ])
        );
        let names: Vec<&str> = skipped.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["bad", "twin", "b", "noport"]);
        assert!(
            skipped[2].1.contains("no-such-host.invalid:51820"),
            "{}",
            skipped[2].1
        );
    }

    #[test]
    fn settings_default_to_jaco_wg_on_51820_with_mtu_1420_in_auto_mode() {
        let settings = MeshSettings::new(Ipv4Addr::new(10, 245, 0, 1));
        assert_eq!(settings.interface, "jaco-wg");
        assert_eq!(settings.listen_port, 51820);
        assert_eq!(settings.mtu, 1420);
        assert_eq!(settings.mode, MeshMode::Auto);
        assert!(settings.routes.is_empty());
    }
}
