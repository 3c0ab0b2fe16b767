//! What this node's networking should look like, read from the replicated state as plain
//! values: the isolation scopes, the mesh members, the healthy replicas DNS answers with, the
//! bridges whose gateways this node serves, and the L4 routes with their upstreams.
//!
//! [`view`] is a pure function of the state, the node's name and the clock; the supervisor
//! turns the result into nftables, WireGuard, DNS and proxy objects. This module must not touch
//! the machine or change the state.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;

use crate::net::mesh::MeshNode;
use crate::proto::v1::ReplicaState;
use crate::runtime::plan::gateway;
use crate::state::State;

/// A replica that answers on one of its networks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HealthyReplica {
    /// Deployment.
    pub deployment: String,
    /// Compose network.
    pub network: String,
    /// Service.
    pub service: String,
    /// Its address on that network.
    pub address: Ipv4Addr,
}

/// A bridge of this node: a (deployment, network) it hosts and the gateway it owns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalBridge {
    /// Deployment.
    pub deployment: String,
    /// Compose network.
    pub network: String,
    /// The bridge's own address (`.1` of the subnet).
    pub gateway: Ipv4Addr,
}

/// An L4 route with the replicas it may forward to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpTarget {
    /// The host port every node listens on.
    pub port: u16,
    /// Owning deployment.
    pub deployment: String,
    /// Target service.
    pub service: String,
    /// `address:container_port` of every healthy replica of the service.
    pub upstreams: Vec<SocketAddr>,
    /// Send a PROXY protocol v2 header first.
    pub proxy_protocol: bool,
}

/// The networking the state asks of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkView {
    /// The cluster's IPAM pool (also the range routed into the mesh).
    pub pool: Ipv4Net,
    /// This node's mesh address, if it has one.
    pub mesh_address: Option<Ipv4Addr>,
    /// Every (deployment, network) with the /24s it has on any node.
    pub scopes: BTreeMap<(String, String), Vec<Ipv4Net>>,
    /// The bridges this node hosts.
    pub bridges: Vec<LocalBridge>,
    /// Every node of the cluster.
    pub members: Vec<MeshNode>,
    /// Every running replica's address on each of its networks.
    pub healthy: Vec<HealthyReplica>,
    /// Every (deployment, network, service) the deployments declare, healthy or not.
    pub services: Vec<(String, String, String)>,
    /// Every L4 route.
    pub tcp_routes: Vec<TcpTarget>,
}

/// The view of node `node` in `state`.
///
/// A replica counts as healthy when its last observation says `running` (the agent reports
/// health changes at once, so an unhealthy replica leaves DNS and the routes with its next
/// report). Unparsable addresses in the state are skipped, not fatal.
pub fn view(state: &State, node: &str) -> NetworkView {
    let pool = state.ipam_pool().cidr().parse().unwrap_or_else(|_| {
        Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).expect("a valid default pool")
    });
    let mut scopes: BTreeMap<(String, String), Vec<Ipv4Net>> = BTreeMap::new();
    let mut hosted: BTreeMap<&str, Vec<Ipv4Net>> = BTreeMap::new();
    let mut bridges = Vec::new();
    for subnet in state.subnets() {
        let Ok(cidr) = subnet.cidr.parse::<Ipv4Net>() else {
            continue;
        };
        scopes
            .entry((subnet.deployment.clone(), subnet.network.clone()))
            .or_default()
            .push(cidr);
        hosted.entry(subnet.node.as_str()).or_default().push(cidr);
        if subnet.node == node {
            bridges.push(LocalBridge {
                deployment: subnet.deployment.clone(),
                network: subnet.network.clone(),
                gateway: gateway(cidr),
            });
        }
    }
    let members = (state.nodes())
        .map(|n| MeshNode {
            name: n.name.clone(),
            public_key: n.wireguard_public_key.clone(),
            endpoint: n.wireguard_endpoint.clone(),
            address: n.mesh_address.parse().ok(),
            subnets: hosted.remove(n.name.as_str()).unwrap_or_default(),
        })
        .collect();
    let mesh_address = state.node(node).and_then(|n| n.mesh_address.parse().ok());

    let mut healthy = Vec::new();
    for observed in state.replicas_observed() {
        if observed.state() != ReplicaState::Running {
            continue;
        }
        let Some(desired) = state.replica_desired(&observed.id) else {
            continue;
        };
        for (network, address) in &observed.network_addresses {
            if let Ok(address) = address.parse() {
                healthy.push(HealthyReplica {
                    deployment: desired.deployment.clone(),
                    network: network.clone(),
                    service: desired.service.clone(),
                    address,
                });
            }
        }
    }
    healthy.sort();
    let services = (state.deployments())
        .flat_map(|d| {
            let services = d
                .spec
                .as_ref()
                .map(|s| s.services.as_slice())
                .unwrap_or(&[]);
            services.iter().flat_map(move |s| {
                (s.networks.iter()).map(move |n| (d.name.clone(), n.clone(), s.name.clone()))
            })
        })
        .collect();

    let tcp_routes = (state.tcp_routes())
        .filter_map(|route| {
            Some(TcpTarget {
                port: u16::try_from(route.published_port).ok()?,
                deployment: route.deployment.clone(),
                service: route.service.clone(),
                upstreams: upstreams(state, route)?,
                proxy_protocol: route.proxy_protocol,
            })
        })
        .collect();
    NetworkView {
        pool,
        mesh_address,
        scopes,
        bridges,
        members,
        healthy,
        services,
        tcp_routes,
    }
}

/// One upstream per running replica of the route's service: its address on the first of its
/// networks (by name) and the route's container port; `None` for a port out of range.
fn upstreams(state: &State, route: &crate::proto::v1::TcpRoute) -> Option<Vec<SocketAddr>> {
    let container_port = u16::try_from(route.container_port).ok()?;
    let mut upstreams: Vec<SocketAddr> = (state.replicas_observed())
        .filter(|observed| observed.state() == ReplicaState::Running)
        .filter(|observed| {
            state.replica_desired(&observed.id).is_some_and(|desired| {
                desired.deployment == route.deployment && desired.service == route.service
            })
        })
        .filter_map(|observed| {
            (observed.network_addresses.values()).find_map(|a| a.parse::<Ipv4Addr>().ok())
        })
        .map(|address| SocketAddr::from((address, container_port)))
        .collect();
    upstreams.sort();
    Some(upstreams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1 as pb;
    use crate::proto::v1::command::Kind;
    use crate::scheduler::plan::{Settings, reconcile};
    use crate::state::testkit::{Harness, add_node, allocate_subnet, apply_deployment, service};

    fn ready(h: &mut Harness, node: &str) {
        h.ok(Kind::SetNodeStatus(pb::SetNodeStatus {
            node: node.into(),
            status: pb::NodeStatus::Ready.into(),
            ..Default::default()
        }));
    }

    fn observe(h: &mut Harness, id: &str, state: pb::ReplicaState, address: &str) {
        let node = h.state.replica_desired(id).unwrap().node.clone();
        h.ok(Kind::ReportReplicas(pb::ReportReplicas {
            node,
            observations: vec![pb::ReplicaObserved {
                id: id.into(),
                state: state.into(),
                network_addresses: [("default".to_owned(), address.to_owned())].into(),
                ..Default::default()
            }],
        }));
    }

    /// n1 and n2, `shop` with web ×2 publishing 8080 → 80 and db ×1, `blog` with web ×1.
    fn cluster() -> Harness {
        let mut h = Harness::initialised();
        h.ok(add_node("n2", 2));
        ready(&mut h, "n1");
        ready(&mut h, "n2");
        let mut web = service("web", "web:1");
        web.replicas = 2;
        let shop = pb::DeploymentSpec {
            services: vec![web, service("db", "db:1")],
            tcp_routes: vec![pb::TcpRoute {
                published_port: 8080,
                deployment: "shop".into(),
                service: "web".into(),
                container_port: 80,
                proxy_protocol: true,
            }],
            ..Default::default()
        };
        h.ok(apply_deployment("shop", shop));
        let blog = pb::DeploymentSpec {
            services: vec![service("web", "blog:1")],
            ..Default::default()
        };
        h.ok(apply_deployment("blog", blog));
        let plan = reconcile(&h.state, h.now, &Settings::default());
        h.ok_as("n1", Kind::SchedulerBatch(plan.batch));
        h
    }

    #[test]
    fn scopes_bridges_and_members_come_from_the_subnets_and_nodes() {
        let mut h = cluster();
        h.ok(allocate_subnet("shop", "default", "n1"));
        h.ok(allocate_subnet("shop", "default", "n2"));
        h.ok(allocate_subnet("blog", "default", "n2"));
        let v = view(&h.state, "n1");
        assert_eq!(v.pool.to_string(), "10.244.0.0/16");
        assert_eq!(v.mesh_address, Some(Ipv4Addr::new(10, 244, 255, 1)));
        let scope = |d: &str| v.scopes[&(d.to_owned(), "default".to_owned())].clone();
        assert_eq!(
            scope("shop"),
            [
                "10.244.0.0/24".parse().unwrap(),
                "10.244.1.0/24".parse().unwrap()
            ]
        );
        assert_eq!(scope("blog"), ["10.244.2.0/24".parse().unwrap()]);
        assert_eq!(
            v.bridges,
            [LocalBridge {
                deployment: "shop".into(),
                network: "default".into(),
                gateway: Ipv4Addr::new(10, 244, 0, 1),
            }]
        );
        let n2 = v.members.iter().find(|m| m.name == "n2").unwrap();
        assert_eq!(n2.address, Some(Ipv4Addr::new(10, 244, 255, 2)));
        assert_eq!(n2.subnets.len(), 2);
    }

    #[test]
    fn only_running_replicas_are_answered_and_routed() {
        let mut h = cluster();
        let ids: Vec<(String, String)> = (h.state.replicas_desired())
            .map(|r| (r.id.clone(), format!("{}/{}", r.deployment, r.service)))
            .collect();
        let id_of = |what: &str, n: usize| {
            ids.iter()
                .filter(|(_, s)| s == what)
                .nth(n)
                .unwrap()
                .0
                .clone()
        };
        observe(
            &mut h,
            &id_of("shop/web", 0),
            pb::ReplicaState::Running,
            "10.244.0.2",
        );
        observe(
            &mut h,
            &id_of("shop/web", 1),
            pb::ReplicaState::Degraded,
            "10.244.1.2",
        );
        observe(
            &mut h,
            &id_of("shop/db", 0),
            pb::ReplicaState::Running,
            "10.244.0.3",
        );
        observe(
            &mut h,
            &id_of("blog/web", 0),
            pb::ReplicaState::Running,
            "not-an-ip",
        );
        let v = view(&h.state, "n2");
        let answered: Vec<(&str, &str, String)> = (v.healthy.iter())
            .map(|r| {
                (
                    r.deployment.as_str(),
                    r.service.as_str(),
                    r.address.to_string(),
                )
            })
            .collect();
        assert_eq!(
            answered,
            [
                ("shop", "db", "10.244.0.3".to_owned()),
                ("shop", "web", "10.244.0.2".to_owned())
            ]
        );
        assert_eq!(
            v.tcp_routes,
            [TcpTarget {
                port: 8080,
                deployment: "shop".into(),
                service: "web".into(),
                upstreams: vec!["10.244.0.2:80".parse().unwrap()],
                proxy_protocol: true,
            }]
        );
    }
}
