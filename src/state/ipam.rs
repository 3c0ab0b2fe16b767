//! IPAM in the replicated state: the cluster's IPv4 pool carved into /24 subnets, one per
//! (deployment, network, node), allocated deterministically (the lowest free /24) so that every
//! node applying the same commands computes the same addresses. The pool's last /24 is kept
//! for the nodes' mesh addresses (one host address per node, assigned when it joins).
//!
//! This is bookkeeping only: bridges, routes and nftables sets are the `net` subsystem's job.
//!
//! It must not read clocks, randomness or disks, nor touch a network interface.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::error::{Code, Error};
use crate::proto::v1::{
    AllocateSubnet, AllocateSubnetResult, ReleaseSubnet, Subnet, command_result::Outcome,
};

use super::change::{Tx, put, take};
use super::{State, ack, invalid, required};

/// The pool a cluster uses when `InitCluster` names none (SPEC §7).
pub const DEFAULT_IPAM_POOL: &str = "10.244.0.0/16";

/// An IPv4 pool of /24 subnets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    base: u32,
    prefix_len: u8,
}

impl Pool {
    /// Parses `a.b.c.d/n` with 8 ≤ n ≤ 23 (host bits are ignored; a /24 would leave no room
    /// beside the mesh addresses); `validation_failed` otherwise.
    pub fn parse(text: &str) -> Result<Pool, Error> {
        let bad = || {
            invalid(
                "meta.ipam_pool",
                format!("{text:?} is not an IPv4 pool a.b.c.d/8..23"),
            )
            .with("ipam_pool", text)
        };
        let (addr, len) = text.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=23).contains(&prefix_len) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix_len);
        Ok(Pool {
            base: u32::from(addr) & mask,
            prefix_len,
        })
    }

    /// Number of /24s the pool offers to deployments (all but the mesh /24).
    pub fn len(&self) -> u32 {
        (1 << (24 - self.prefix_len)) - 1
    }

    /// Always false: a pool holds at least one /24 for deployments.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `i`-th /24 in CIDR notation.
    pub fn subnet(&self, i: u32) -> String {
        format!("{}/24", Ipv4Addr::from(self.base + (i << 8)))
    }

    /// The mesh address with host number `host` (1..=254) in the pool's last /24.
    pub fn mesh_address(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::from(self.base + (self.len() << 8) + u32::from(host))
    }

    /// The whole pool in CIDR notation.
    pub fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix_len)
    }
}

impl State {
    /// The cluster's IPAM pool (the default before initialisation).
    pub fn ipam_pool(&self) -> Pool {
        let text = self
            .cluster
            .as_ref()
            .map_or(DEFAULT_IPAM_POOL, |meta| meta.ipam_pool.as_str());
        // InitCluster validated the stored pool.
        Pool::parse(text).unwrap_or_else(|_| Pool::parse(DEFAULT_IPAM_POOL).expect("valid"))
    }

    /// The lowest mesh address of `pool` no node holds; empty past 254 nodes (such a node
    /// still joins and hosts replicas, but its own L4 proxy cannot reach replicas on other
    /// nodes; its network supervisor says so).
    pub(super) fn free_mesh_address(&self, pool: Pool) -> String {
        let used: BTreeSet<&str> = (self.nodes.values())
            .map(|n| n.mesh_address.as_str())
            .collect();
        (1..=254)
            .map(|host| pool.mesh_address(host).to_string())
            .find(|address| !used.contains(address.as_str()))
            .unwrap_or_default()
    }

    /// Every allocated subnet, by (deployment, network, node).
    pub fn subnets(&self) -> impl Iterator<Item = &Subnet> {
        self.subnets.values()
    }

    /// The subnet of one (deployment, network, node).
    pub fn subnet(&self, deployment: &str, network: &str, node: &str) -> Option<&Subnet> {
        self.subnets
            .get(&(deployment.to_owned(), network.to_owned(), node.to_owned()))
    }

    pub(super) fn allocate_subnet(
        &mut self,
        tx: &mut Tx,
        c: &AllocateSubnet,
    ) -> Result<Outcome, Error> {
        required(&c.deployment, "deployment")?;
        required(&c.network, "network")?;
        let key = (c.deployment.clone(), c.network.clone(), c.node.clone());
        if let Some(existing) = self.subnets.get(&key) {
            return Ok(allocated(existing.clone()));
        }
        self.existing_node(&c.node)?;
        self.existing_deployment(&c.deployment)?;
        let pool = self.ipam_pool();
        let pool_text = pool.cidr();
        let used: BTreeSet<&str> = self.subnets.values().map(|s| s.cidr.as_str()).collect();
        let cidr = (0..pool.len())
            .map(|i| pool.subnet(i))
            .find(|cidr| !used.contains(cidr.as_str()))
            .ok_or_else(|| {
                Error::new(
                    Code::SubnetPoolExhausted,
                    format!("no free /24 left in {pool_text}"),
                )
                .with("pool", pool_text)
                .with("allocated", used.len())
                .with("deployment", &c.deployment)
                .with("network", &c.network)
                .with("node", &c.node)
            })?;
        let subnet = Subnet {
            deployment: c.deployment.clone(),
            network: c.network.clone(),
            node: c.node.clone(),
            cidr,
            allocated_at_unix_ms: tx.now,
        };
        put(&mut self.subnets, key, subnet.clone(), tx);
        Ok(allocated(subnet))
    }

    pub(super) fn release_subnet(
        &mut self,
        tx: &mut Tx,
        c: &ReleaseSubnet,
    ) -> Result<Outcome, Error> {
        let key = (c.deployment.clone(), c.network.clone(), c.node.clone());
        take(&mut self.subnets, &key, tx);
        Ok(ack())
    }
}

fn allocated(subnet: Subnet) -> Outcome {
    Outcome::AllocateSubnet(AllocateSubnetResult {
        subnet: Some(subnet),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::command::Kind;
    use crate::state::testkit::*;

    fn cidr(outcome: Outcome) -> String {
        match outcome {
            Outcome::AllocateSubnet(AllocateSubnetResult { subnet: Some(s) }) => s.cidr,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn release(deployment: &str, network: &str, node: &str) -> Kind {
        Kind::ReleaseSubnet(ReleaseSubnet {
            deployment: deployment.into(),
            network: network.into(),
            node: node.into(),
        })
    }

    #[test]
    fn test_pool_parsing() {
        let pool = Pool::parse("10.244.3.7/16").expect("valid");
        assert_eq!(pool.len(), 255);
        assert_eq!(pool.subnet(0), "10.244.0.0/24");
        assert_eq!(pool.subnet(254), "10.244.254.0/24");
        assert_eq!(pool.mesh_address(1), Ipv4Addr::new(10, 244, 255, 1));
        assert_eq!(pool.cidr(), "10.244.0.0/16");
        assert_eq!(Pool::parse("192.168.4.0/23").map(|p| p.len()), Ok(1));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/7",
            "10.0.0.0/24",
            "10.0.0.0/25",
            "x/16",
            "10.0.0.0/x",
        ] {
            assert_eq!(
                Pool::parse(bad).map(|_| ()).unwrap_err().code,
                Code::ValidationFailed,
                "{bad}"
            );
        }
    }

    #[test]
    fn test_allocation_is_lowest_free_idempotent_and_reuses_released() {
        let mut h = Harness::initialised();
        h.ok(add_node("n2", 2));
        h.ok(apply_deployment("shop", spec(&[("web", "nginx:1")])));
        assert_eq!(
            cidr(h.ok(allocate_subnet("shop", "default", "n1"))),
            "10.244.0.0/24"
        );
        assert_eq!(
            cidr(h.ok(allocate_subnet("shop", "default", "n2"))),
            "10.244.1.0/24"
        );
        assert_eq!(
            cidr(h.ok(allocate_subnet("shop", "back", "n1"))),
            "10.244.2.0/24"
        );
        // Same key: the existing subnet, and no change.
        let revision = h.state.revision();
        assert_eq!(
            cidr(h.ok(allocate_subnet("shop", "default", "n2"))),
            "10.244.1.0/24"
        );
        assert_eq!(h.state.revision(), revision);
        assert!(h.events.is_empty());
        h.ok(release("shop", "default", "n2"));
        assert!(h.state.subnet("shop", "default", "n2").is_none());
        // Releasing what is not allocated is a no-op.
        h.ok(release("shop", "default", "n2"));
        assert!(h.events.is_empty());
        assert_eq!(
            cidr(h.ok(allocate_subnet("shop", "front", "n2"))),
            "10.244.1.0/24"
        );
    }

    #[test]
    fn test_exhausted_pool_is_subnet_pool_exhausted() {
        let mut h = Harness::new();
        let mut init = init_cluster();
        if let Kind::InitCluster(c) = &mut init {
            c.meta.as_mut().expect("meta").ipam_pool = "10.9.0.0/22".into();
        }
        h.ok(init);
        h.ok(apply_deployment("shop", spec(&[("web", "nginx:1")])));
        h.ok(allocate_subnet("shop", "a", "n1"));
        h.ok(allocate_subnet("shop", "b", "n1"));
        // The last /24 (10.9.3.0/24) holds the mesh addresses.
        assert_eq!(
            cidr(h.ok(allocate_subnet("shop", "c", "n1"))),
            "10.9.2.0/24"
        );
        let err = h.rejected(
            allocate_subnet("shop", "d", "n1"),
            Code::SubnetPoolExhausted,
        );
        assert_eq!(err.details["pool"], "10.9.0.0/22");
        assert_eq!(err.details["allocated"], "3");
    }

    #[test]
    fn test_nodes_get_the_lowest_free_mesh_address() {
        let mut h = Harness::initialised();
        h.ok(add_node("n2", 2));
        let address = |h: &Harness, node: &str| h.state.node(node).unwrap().mesh_address.clone();
        assert_eq!(address(&h, "n1"), "10.244.255.1");
        assert_eq!(address(&h, "n2"), "10.244.255.2");
        h.ok(Kind::RemoveNode(crate::proto::v1::RemoveNode {
            node: "n1".into(),
            force: true,
        }));
        h.ok(add_node("n3", 3));
        assert_eq!(address(&h, "n3"), "10.244.255.1");
    }

    #[test]
    fn test_allocation_errors() {
        let mut h = Harness::initialised();
        h.ok(apply_deployment("shop", spec(&[("web", "nginx:1")])));
        h.rejected(allocate_subnet("shop", "default", "zz"), Code::NotFound);
        h.rejected(
            allocate_subnet("blog", "default", "n1"),
            Code::DeploymentNotFound,
        );
        h.rejected(allocate_subnet("", "default", "n1"), Code::ValidationFailed);
        h.rejected(allocate_subnet("shop", "", "n1"), Code::ValidationFailed);
    }
}
