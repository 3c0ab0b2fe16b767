//! Which WireGuard peers this node should have, derived from the nodes in the state: every
//! other node with a published key and an endpoint, allowed to send from the /24s it hosts and
//! from its own mesh address.
//!
//! Pure: no I/O and no resolution of endpoint host names (the mesh does that when it applies
//! the peers). It must not read the replicated state itself; the network supervisor hands it
//! the nodes.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A cluster node as the mesh sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshNode {
    /// The node's name (unique in the cluster).
    pub name: String,
    /// Its WireGuard public key in base64; empty while it has not published one.
    pub public_key: String,
    /// Where its mesh listens, `host:port`; empty when unknown.
    pub endpoint: String,
    /// The node's own mesh address, if it has one.
    pub address: Option<Ipv4Addr>,
    /// The /24s it hosts (one per deployment network with a replica there).
    pub subnets: Vec<Ipv4Net>,
}

/// A WireGuard peer to configure: who it is, where it is, and which inner source addresses
/// it may send from (which are also the destinations routed to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The node's name, for messages.
    pub name: String,
    /// Its public key in base64.
    pub public_key: String,
    /// `host:port`; a host name is resolved when the peer is applied.
    pub endpoint: String,
    /// Its AllowedIPs: sorted, without duplicates, each truncated to its network.
    pub allowed_ips: Vec<Ipv4Net>,
}

/// The peers of `this_node`: every other node that has a public key and an endpoint, sorted
/// by name. AllowedIPs are the node's subnets plus its mesh address as a /32.
pub fn peers(this_node: &str, nodes: &[MeshNode]) -> Vec<Peer> {
    let mut peers: Vec<Peer> = nodes
        .iter()
        .filter(|n| n.name != this_node && !n.public_key.is_empty() && !n.endpoint.is_empty())
        .map(|n| {
            let mut allowed_ips: Vec<Ipv4Net> = n.subnets.iter().map(Ipv4Net::trunc).collect();
            allowed_ips.extend(n.address.map(Ipv4Net::from));
            allowed_ips.sort();
            allowed_ips.dedup();
            Peer {
                name: n.name.clone(),
                public_key: n.public_key.clone(),
                endpoint: n.endpoint.clone(),
                allowed_ips,
            }
        })
        .collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    peers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        name: &str,
        key: &str,
        endpoint: &str,
        address: Option<&str>,
        subnets: &[&str],
    ) -> MeshNode {
        MeshNode {
            name: name.into(),
            public_key: key.into(),
            endpoint: endpoint.into(),
            address: address.map(|a| a.parse().unwrap()),
            subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn nets(list: &[&str]) -> Vec<Ipv4Net> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn every_other_node_becomes_a_peer_with_its_subnets_and_address() {
        let nodes = [
            node(
                "c",
                "kc",
                "10.0.0.3:51820",
                Some("10.245.0.3"),
                &["10.244.5.0/24"],
            ),
            node(
                "a",
                "ka",
                "10.0.0.1:51820",
                Some("10.245.0.1"),
                &["10.244.1.0/24"],
            ),
            node(
                "b",
                "kb",
                "b.example:51820",
                None,
                &["10.244.9.0/24", "10.244.2.0/24"],
            ),
        ];
        let peers = peers("a", &nodes);
        assert_eq!(
            peers,
            vec![
                Peer {
                    name: "b".into(),
                    public_key: "kb".into(),
                    endpoint: "b.example:51820".into(),
                    allowed_ips: nets(&["10.244.2.0/24", "10.244.9.0/24"]),
                },
                Peer {
                    name: "c".into(),
                    public_key: "kc".into(),
                    endpoint: "10.0.0.3:51820".into(),
                    allowed_ips: nets(&["10.244.5.0/24", "10.245.0.3/32"]),
                },
            ]
        );
    }

    #[test]
    fn nodes_without_key_or_endpoint_are_skipped() {
        let nodes = [
            node("a", "ka", "10.0.0.1:51820", None, &[]),
            node("nokey", "", "10.0.0.2:51820", None, &["10.244.1.0/24"]),
            node("noendpoint", "kn", "", None, &["10.244.2.0/24"]),
            node("ok", "ko", "10.0.0.4:51820", None, &[]),
        ];
        let names: Vec<String> = peers("a", &nodes).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["ok"]);
    }

    #[test]
    fn allowed_ips_are_normalised_sorted_and_deduplicated() {
        let nodes = [node(
            "b",
            "kb",
            "10.0.0.2:51820",
            Some("10.244.3.7"),
            &["10.244.3.9/24", "10.244.1.0/24", "10.244.3.0/24"],
        )];
        assert_eq!(
            peers("a", &nodes)[0].allowed_ips,
            nets(&["10.244.1.0/24", "10.244.3.0/24", "10.244.3.7/32"])
        );
    }

    #[test]
    fn the_order_does_not_depend_on_the_input_order() {
        let mut nodes = vec![
            node("b", "kb", "h:1", None, &[]),
            node("d", "kd", "h:1", None, &[]),
            node("c", "kc", "h:1", None, &[]),
        ];
        let first = peers("a", &nodes);
        nodes.reverse();
        assert_eq!(peers("a", &nodes), first);
        assert!(peers("a", &[]).is_empty());
    }
}
