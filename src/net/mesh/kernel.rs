//! The mesh on kernel WireGuard: `ip link add … type wireguard` and `wg` (wireguard-tools)
//! for the key, the port and the peers; the kernel does the cryptography and the routing.
//!
//! Deliberately small: every change is one `wg set` invocation rendered by a pure function,
//! and the statistics come from `wg show <if> dump`, parsed by a pure function. This module
//! must not fall back to anything: deciding between kernel and userspace is the caller's job.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use super::{MeshSettings, PeerStats, Resolved, link};
use crate::error::{Code, Error};
use crate::net::mesh::MeshKey;

/// A kernel WireGuard interface this process created.
#[derive(Debug)]
pub(super) struct Kernel {
    interface: String,
}

/// Creates the WireGuard link; an error means this kernel cannot do WireGuard (or we may not).
pub(super) async fn create_link(interface: &str) -> Result<(), Error> {
    link::run(
        "ip",
        &["link", "add", "dev", interface, "type", "wireguard"],
        None,
    )
    .await
    .map(drop)
    .map_err(|error| {
        Error::new(
            Code::Internal,
            format!("kernel WireGuard is not available: {}", error.message),
        )
        .with("reason", "wireguard_unavailable")
        .with("interface", interface)
    })
}

impl Kernel {
    /// Configures the link [`create_link`] made: key, port, address, MTU, up, routes. On
    /// failure the link is deleted again.
    pub(super) async fn configure(settings: &MeshSettings, key: &MeshKey) -> Result<Kernel, Error> {
        let kernel = Kernel {
            interface: settings.interface.clone(),
        };
        let port = settings.listen_port.to_string();
        let configured = async {
            let args = [
                "set",
                &kernel.interface,
                "private-key",
                "/dev/stdin",
                "listen-port",
                &port,
            ];
            link::run("wg", &args, Some(&key.secret_base64())).await?;
            link::configure(settings).await
        };
        match configured.await {
            Ok(()) => Ok(kernel),
            Err(error) => {
                let _ = link::delete(&kernel.interface).await;
                Err(error)
            }
        }
    }

    /// Makes the kernel's peers exactly `desired` plus whatever of `keep` it already has.
    pub(super) async fn set_peers(
        &self,
        desired: &[Resolved],
        keep: &BTreeSet<String>,
    ) -> Result<(), Error> {
        let current = link::run("wg", &["show", &self.interface, "peers"], None).await?;
        let current: Vec<&str> = current.split_whitespace().collect();
        let args = set_arguments(&self.interface, &current, desired, keep);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        link::run("wg", &args, None).await.map(drop)
    }

    pub(super) async fn stats(&self) -> Result<Vec<PeerStats>, Error> {
        let dump = link::run("wg", &["show", &self.interface, "dump"], None).await?;
        Ok(parse_dump(&dump))
    }

    pub(super) async fn stop(self) -> Result<(), Error> {
        link::delete(&self.interface).await
    }
}

/// One `wg set` that removes the peers neither desired nor kept and sets every desired one
/// (endpoint, AllowedIPs — which `wg` replaces as a whole — and the 25 s keepalive).
fn set_arguments(
    interface: &str,
    current: &[&str],
    desired: &[Resolved],
    keep: &BTreeSet<String>,
) -> Vec<String> {
    let mut args = vec!["set".to_owned(), interface.to_owned()];
    for key in current {
        if !keep.contains(*key) && !desired.iter().any(|p| p.public_key == *key) {
            args.extend(["peer".into(), (*key).to_owned(), "remove".into()]);
        }
    }
    for peer in desired {
        let allowed: Vec<String> = peer.allowed_ips.iter().map(ToString::to_string).collect();
        args.extend([
            "peer".into(),
            peer.public_key.clone(),
            "endpoint".into(),
            peer.endpoint.to_string(),
            "allowed-ips".into(),
            allowed.join(","),
            "persistent-keepalive".into(),
            super::KEEPALIVE_SECONDS.to_string(),
        ]);
    }
    args
}

/// Parses `wg show <if> dump`: a line for the interface, then per peer `public-key
/// preshared-key endpoint allowed-ips latest-handshake rx tx keepalive`, tab-separated.
fn parse_dump(dump: &str) -> Vec<PeerStats> {
    dump.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [public_key, _, _, _, handshake, rx, tx, ..] = fields[..] else {
                return None;
            };
            let handshake: u64 = handshake.parse().ok()?;
            Some(PeerStats {
                public_key: public_key.to_owned(),
                rx_bytes: rx.parse().ok()?,
                tx_bytes: tx.parse().ok()?,
                last_handshake: (handshake > 0)
                    .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs(handshake)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(key: &str, endpoint: &str, allowed: &[&str]) -> Resolved {
        Resolved {
            name: key.to_lowercase(),
            public_key: key.into(),
            endpoint: endpoint.parse().unwrap(),
            allowed_ips: allowed.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn one_wg_set_removes_stale_peers_and_sets_the_desired_ones() {
        let desired = [
            resolved("B=", "10.0.0.2:51820", &["10.244.1.0/24", "10.245.0.2/32"]),
            resolved("C=", "10.0.0.3:51820", &[]),
        ];
        let keep = BTreeSet::from(["K=".to_owned()]);
        let args = set_arguments("jaco-wg", &["A=", "B=", "K="], &desired, &keep);
        assert_eq!(
            args.join(" "),
            "set jaco-wg peer A= remove \
             peer B= endpoint 10.0.0.2:51820 allowed-ips 10.244.1.0/24,10.245.0.2/32 \
             persistent-keepalive 25 \
             peer C= endpoint 10.0.0.3:51820 allowed-ips  persistent-keepalive 25"
        );
    }

    #[test]
    fn the_dump_yields_per_peer_counters_and_handshake_times() {
        let dump = "PRIV=\tPUB=\t51820\toff\n\
                    B=\t(none)\t10.0.0.2:51820\t10.244.1.0/24\t1700000000\t1200\t3400\t25\n\
                    C=\t(none)\t(none)\t(none)\t0\t0\t0\t25\n";
        let stats = parse_dump(dump);
        assert_eq!(
            stats,
            vec![
                PeerStats {
                    public_key: "B=".into(),
                    rx_bytes: 1200,
                    tx_bytes: 3400,
                    last_handshake: Some(
                        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
                    ),
                },
                PeerStats {
                    public_key: "C=".into(),
                    rx_bytes: 0,
                    tx_bytes: 0,
                    last_handshake: None,
                },
            ]
        );
        assert!(parse_dump("").is_empty());
    }
}
