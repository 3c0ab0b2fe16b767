//! The service-name zone (SPEC §7 DNS): which names the responder of one (deployment,
//! network) scope answers itself, with which addresses, and which it must refuse or forward.
//!
//! Pure: a [`Zone`] is built from values (healthy replica addresses, declared services) and
//! [`Zone::resolve`] is a function of the zone, the listener's scope and the query name. It
//! must not do I/O, know about sockets or record types, or read the replicated state; the
//! network supervisor hands it the records and the server turns a [`Lookup`] into a reply.
//!
//! Name rules (case-insensitive, trailing dot optional), for a listener of scope
//! (`deployment`, `network`):
//! - `<service>`, `<service>.<deployment>`, `<service>.jaco.internal` → [`Lookup::Local`] with
//!   every healthy replica address of that service in the same (deployment, network), from
//!   every node of the cluster, sorted and without duplicates (the server shuffles per query).
//! - A service declared in the scope but with no healthy replica → `Local` with no address:
//!   the server answers NOERROR with an empty answer (NODATA), not NXDOMAIN. The name exists
//!   (the service is part of the deployment); only its addresses are momentarily gone. NXDOMAIN
//!   says "this name does not exist", which stub resolvers treat as final: glibc and musl
//!   move on to the next search domain (and may resolve `db` to some public `db.<search>`),
//!   and negative-caching resolvers keep the "does not exist" longer than the outage. NODATA
//!   is also what the same name answers for AAAA, so the two record types agree.
//! - `jaco.internal` itself → `Local` with no address (the apex exists; it has no A record).
//! - Names of other deployments (`<x>.<other>` where `<other>` is a deployment of the
//!   cluster), unknown names under `jaco.internal`, unknown services of this scope (bare or
//!   as `<x>.<deployment>`) and any unknown bare single label → [`Lookup::NxDomain`]: a bare
//!   label is never forwarded upstream (no search-list leak of internal names).
//! - Anything else → [`Lookup::Forward`] to the node's upstream resolvers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// The internal suffix every scope answers for (`<service>.jaco.internal`).
pub const INTERNAL_SUFFIX: &str = "jaco.internal";

/// One healthy replica address of a service in one (deployment, network) scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZoneRecord {
    /// The deployment the replica belongs to.
    pub deployment: String,
    /// The compose network the address is on (`default` for the implicit one).
    pub network: String,
    /// The compose service the replica runs.
    pub service: String,
    /// The replica's address on that network.
    pub address: Ipv4Addr,
}

/// A service declared in a (deployment, network) scope, whether or not any replica of it is
/// healthy right now.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZoneService {
    /// The deployment declaring the service.
    pub deployment: String,
    /// The network the service is attached to.
    pub network: String,
    /// The compose service name.
    pub service: String,
}

/// What a responder does with one query name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name is ours: answer authoritatively with these addresses (A records). Empty means
    /// the name exists without addresses (NOERROR, no records).
    Local(Vec<Ipv4Addr>),
    /// The name is ours to refuse (another deployment, an unknown service or bare label).
    NxDomain,
    /// Not ours: ask the upstream resolvers.
    Forward,
}

/// The service names of the whole cluster, per (deployment, network) scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zone {
    /// (deployment, network) → service → healthy addresses, all names lower-case.
    scopes: HashMap<(String, String), BTreeMap<String, Vec<Ipv4Addr>>>,
    /// Every deployment name seen, lower-case.
    deployments: BTreeSet<String>,
}

impl Zone {
    /// A zone holding these healthy replica addresses. Names are compared case-insensitively;
    /// duplicate addresses (one replica reported twice) collapse.
    pub fn from_records(records: impl IntoIterator<Item = ZoneRecord>) -> Zone {
        let mut zone = Zone::default();
        for record in records {
            zone.service_mut(&record.deployment, &record.network, &record.service)
                .push(record.address);
        }
        for services in zone.scopes.values_mut() {
            for addresses in services.values_mut() {
                addresses.sort_unstable();
                addresses.dedup();
            }
        }
        zone
    }

    /// The same zone, also knowing these declared services: one without a healthy replica
    /// answers NOERROR with no address instead of NXDOMAIN, and its deployment's names are
    /// recognised (NXDOMAIN from other scopes) even when nothing of it is healthy.
    pub fn with_services(mut self, services: impl IntoIterator<Item = ZoneService>) -> Zone {
        for service in services {
            self.service_mut(&service.deployment, &service.network, &service.service);
        }
        self
    }

    fn service_mut(
        &mut self,
        deployment: &str,
        network: &str,
        service: &str,
    ) -> &mut Vec<Ipv4Addr> {
        let deployment = deployment.to_ascii_lowercase();
        self.deployments.insert(deployment.clone());
        self.scopes
            .entry((deployment, network.to_ascii_lowercase()))
            .or_default()
            .entry(service.to_ascii_lowercase())
            .or_default()
    }

    /// What the responder of scope (`deployment`, `network`) does with `qname`.
    pub fn resolve(&self, deployment: &str, network: &str, qname: &str) -> Lookup {
        let name = qname
            .strip_suffix('.')
            .unwrap_or(qname)
            .to_ascii_lowercase();
        let deployment = deployment.to_ascii_lowercase();
        let local = |service: &str| {
            self.scopes
                .get(&(deployment.clone(), network.to_ascii_lowercase()))
                .and_then(|services| services.get(service))
                .map_or(Lookup::NxDomain, |addresses| {
                    Lookup::Local(addresses.clone())
                })
        };
        if name == INTERNAL_SUFFIX {
            return Lookup::Local(Vec::new());
        }
        if let Some(prefix) = name.strip_suffix(INTERNAL_SUFFIX) {
            return match prefix.strip_suffix('.') {
                Some(service) if !service.is_empty() && !service.contains('.') => local(service),
                // `a.b.jaco.internal`, `.jaco.internal` or `xjaco.internal`-like names: the
                // first two are ours and unknown; the last is not under our suffix at all.
                Some(_) => Lookup::NxDomain,
                None => Lookup::Forward,
            };
        }
        let labels: Vec<&str> = name.split('.').collect();
        match labels.as_slice() {
            [""] => Lookup::Forward,
            [service] => local(service),
            [service, owner] if *owner == deployment => local(service),
            [_, owner] if self.deployments.contains(*owner) => Lookup::NxDomain,
            _ => Lookup::Forward,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(deployment: &str, network: &str, service: &str, address: [u8; 4]) -> ZoneRecord {
        ZoneRecord {
            deployment: deployment.into(),
            network: network.into(),
            service: service.into(),
            address: address.into(),
        }
    }

    fn zone() -> Zone {
        Zone::from_records([
            record("shop", "default", "db", [10, 244, 0, 3]),
            record("shop", "default", "db", [10, 244, 1, 2]),
            record("shop", "default", "web", [10, 244, 0, 2]),
            // The same replica reported twice collapses.
            record("shop", "default", "web", [10, 244, 0, 2]),
            record("shop", "back", "db", [10, 244, 2, 2]),
            record("blog", "default", "db", [10, 244, 3, 2]),
        ])
        .with_services([ZoneService {
            deployment: "shop".into(),
            network: "default".into(),
            service: "cache".into(),
        }])
    }

    fn local(addresses: &[[u8; 4]]) -> Lookup {
        Lookup::Local(addresses.iter().map(|a| Ipv4Addr::from(*a)).collect())
    }

    #[test]
    fn test_three_forms_answer_every_healthy_address_of_the_scope() {
        let zone = zone();
        let both = local(&[[10, 244, 0, 3], [10, 244, 1, 2]]);
        for name in ["db", "db.shop", "db.jaco.internal", "db.jaco.internal."] {
            assert_eq!(zone.resolve("shop", "default", name), both, "{name}");
        }
        assert_eq!(
            zone.resolve("shop", "default", "web"),
            local(&[[10, 244, 0, 2]])
        );
        assert_eq!(
            zone.resolve("shop", "back", "db"),
            local(&[[10, 244, 2, 2]])
        );
        assert_eq!(
            zone.resolve("blog", "default", "db.blog."),
            local(&[[10, 244, 3, 2]])
        );
    }

    #[test]
    fn test_names_are_case_insensitive_and_the_trailing_dot_optional() {
        let zone = Zone::from_records([record("Shop", "Default", "DB", [10, 244, 0, 3])]);
        let one = local(&[[10, 244, 0, 3]]);
        for name in ["db", "DB.", "Db.SHOP", "db.Jaco.Internal.", "dB.shop."] {
            assert_eq!(zone.resolve("shop", "default", name), one, "{name}");
            assert_eq!(zone.resolve("SHOP", "DEFAULT", name), one, "{name}");
        }
    }

    #[test]
    fn test_other_deployments_and_unknown_internal_names_are_nxdomain() {
        let zone = zone();
        for name in [
            "db.blog",
            "web.blog.",
            "anything.blog",
            "nope.jaco.internal",
            "db.shop.jaco.internal",
            "a.b.jaco.internal",
            ".jaco.internal",
        ] {
            assert_eq!(
                zone.resolve("shop", "default", name),
                Lookup::NxDomain,
                "{name}"
            );
        }
    }

    #[test]
    fn test_services_of_other_networks_of_the_same_deployment_are_invisible() {
        let zone = zone();
        assert_eq!(zone.resolve("shop", "back", "web"), Lookup::NxDomain);
        assert_eq!(zone.resolve("shop", "back", "web.shop"), Lookup::NxDomain);
        assert_eq!(zone.resolve("shop", "elsewhere", "db"), Lookup::NxDomain);
    }

    #[test]
    fn test_unknown_bare_labels_and_unknown_services_are_nxdomain_not_forwarded() {
        let zone = zone();
        for name in ["printer", "localhost", "internal", "nope.shop", "printer."] {
            assert_eq!(
                zone.resolve("shop", "default", name),
                Lookup::NxDomain,
                "{name}"
            );
        }
        // A scope the zone has never heard of still refuses bare labels.
        assert_eq!(zone.resolve("new", "default", "db"), Lookup::NxDomain);
    }

    #[test]
    fn test_declared_service_without_healthy_replica_is_nodata() {
        let zone = zone();
        for name in ["cache", "cache.shop", "cache.jaco.internal"] {
            assert_eq!(
                zone.resolve("shop", "default", name),
                Lookup::Local(vec![]),
                "{name}"
            );
        }
        assert_eq!(
            zone.resolve("shop", "default", "jaco.internal."),
            Lookup::Local(vec![])
        );
    }

    #[test]
    fn test_a_deployment_known_only_by_declared_services_is_recognised() {
        let zone = Zone::from_records([]).with_services([ZoneService {
            deployment: "blog".into(),
            network: "default".into(),
            service: "db".into(),
        }]);
        assert_eq!(zone.resolve("shop", "default", "db.blog"), Lookup::NxDomain);
        assert_eq!(
            zone.resolve("blog", "default", "db.blog"),
            Lookup::Local(vec![])
        );
    }

    #[test]
    fn test_everything_else_is_forwarded() {
        let zone = zone();
        for name in [
            "example.com",
            "example.com.",
            "www.example.com",
            "db.example",
            "db.shop.example.com",
            "notjaco.internal",
            "",
            ".",
        ] {
            assert_eq!(
                zone.resolve("shop", "default", name),
                Lookup::Forward,
                "{name:?}"
            );
        }
    }

    #[test]
    fn test_empty_zone_forwards_dotted_names_and_refuses_bare_ones() {
        let zone = Zone::default();
        assert_eq!(
            zone.resolve("shop", "default", "example.com"),
            Lookup::Forward
        );
        assert_eq!(zone.resolve("shop", "default", "db"), Lookup::NxDomain);
        assert_eq!(zone.resolve("shop", "default", "db.shop"), Lookup::NxDomain);
    }
}
