//! What it takes to start one replica: its [`ContainerPlan`], the Docker networks and volumes
//! that must exist first, and the secret and config files to write — derived from the replica,
//! its resolved deployment and the node's secrets directory (SPEC §6, contract of issue 4).
//!
//! Naming: container `jaco_<replica id>`; network `jaco_<deployment>_<network>`; named volume
//! `jaco_<deployment>_<volume>` unless the compose volume has `name:` (that name) or is
//! `external` (its name as is, never created). Files live under
//! `<secrets_dir>/<replica id>/{secrets,configs}/<name>`. jaco labels what it creates with the
//! cluster id and deployment, which is how teardown finds it later.
//!
//! Pure: values in, plans out. This module must not write files or call Docker; the node
//! agent's executor does, in the order [`ReplicaPlan`] lists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{
    ContainerPlan, FileBind, LABEL_CLUSTER_ID, LABEL_DEPLOYMENT, LABEL_NETWORK, LABEL_VOLUME,
    NetworkAttachment, NetworkPlan, ReplicaIdentity, VolumePlan,
};
use crate::error::{Code, Error};
use crate::manifest::spec::{DeploymentSpec, FileMount, MountKind, ServiceSpec};
use crate::proto::v1::ReplicaDesired;

/// Default mode of a secret or config file (compose's).
const DEFAULT_FILE_MODE: u32 = 0o444;

/// The container name of a replica.
pub fn container_name(replica: &str) -> String {
    format!("jaco_{replica}")
}

/// The Docker network of a compose network of a deployment.
pub fn network_name(deployment: &str, network: &str) -> String {
    format!("jaco_{deployment}_{network}")
}

/// MTU of jaco's bridges: room for the WireGuard header (60 bytes over IPv4/IPv6 plus UDP)
/// inside a 1500-byte underlay, so cross-node packets never need fragmenting.
pub const BRIDGE_MTU: u32 = 1420;

/// The Linux bridge of a (deployment, network) of a cluster: `jaco-` and 10 hex digits of a
/// SHA-256, within the kernel's 15-character interface names and distinct per cluster, so two
/// clusters sharing an engine (tests) never collide.
pub fn bridge_name(cluster_id: &str, deployment: &str, network: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{cluster_id}/{deployment}/{network}"));
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("jaco-{hex}")
}

/// The compose network a Docker network of `deployment` stands for (`None` for other
/// networks).
pub fn compose_network<'a>(deployment: &str, docker_network: &'a str) -> Option<&'a str> {
    docker_network
        .strip_prefix("jaco_")?
        .strip_prefix(deployment)?
        .strip_prefix('_')
}

/// The directory holding a replica's secret and config files.
pub fn files_dir(secrets_dir: &Path, replica: &str) -> PathBuf {
    secrets_dir.join(replica)
}

/// A named volume a replica mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeUse {
    /// jaco creates it when missing (labelled, so teardown may remove it).
    Ensure(VolumePlan),
    /// `external: true`: it must exist; jaco never creates or removes it.
    External(String),
}

/// A secret or config file to write before the container starts.
#[derive(Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// Where on the node.
    pub path: PathBuf,
    /// The content (secret material for secrets).
    pub content: Vec<u8>,
    /// File mode.
    pub mode: u32,
    /// Owner, when the compose entry sets `uid`.
    pub uid: Option<u32>,
    /// Group, when the compose entry sets `gid`.
    pub gid: Option<u32>,
}

impl std::fmt::Debug for FileWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWrite")
            .field("path", &self.path)
            .field("bytes", &self.content.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish()
    }
}

/// Everything needed to start a replica, in the order it must happen: files, networks,
/// volumes, then the container.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaPlan {
    /// Secret and config files.
    pub files: Vec<FileWrite>,
    /// Networks to ensure.
    pub networks: Vec<NetworkPlan>,
    /// Volumes to ensure or check.
    pub volumes: Vec<VolumeUse>,
    /// The container.
    pub container: ContainerPlan,
}

/// The compose networks a replica of `service` attaches to (none with `network_mode`).
pub fn service_networks(service: &ServiceSpec) -> impl Iterator<Item = &str> {
    let spec = &service.container;
    (spec.networks.keys())
        .filter(|_| spec.network_mode.is_none())
        .map(String::as_str)
}

/// The plan for `desired`, a replica of `service` in `deployment`. `peers` are the container
/// names standing in for `service:<name>` namespace modes; `subnets` the /24 of each of its
/// networks on this node.
///
/// The service name is deliberately not a Docker network alias: Docker's embedded resolver
/// would answer it with this node's replicas only, while jaco's responder on the gateway
/// answers with the healthy replicas of the whole cluster.
pub fn replica_plan(
    cluster_id: &str,
    desired: &ReplicaDesired,
    deployment: &DeploymentSpec,
    service: &ServiceSpec,
    peers: BTreeMap<String, String>,
    subnets: &BTreeMap<String, ipnet::Ipv4Net>,
    secrets_dir: &Path,
) -> Result<ReplicaPlan, Error> {
    let spec = &service.container;
    let owned = |kind: &str, name: &str| {
        BTreeMap::from([
            (LABEL_CLUSTER_ID.to_owned(), cluster_id.to_owned()),
            (LABEL_DEPLOYMENT.to_owned(), desired.deployment.clone()),
            (kind.to_owned(), name.to_owned()),
        ])
    };
    let networks: Vec<NetworkPlan> = service_networks(service)
        .map(|network| {
            let declared = deployment.networks.get(network);
            let mut labels = declared.map(|n| n.labels.clone()).unwrap_or_default();
            labels.extend(owned(LABEL_NETWORK, network));
            NetworkPlan {
                name: network_name(&desired.deployment, network),
                labels,
                internal: declared.is_some_and(|n| n.internal),
                subnet: subnets.get(network).copied(),
                bridge: bridge_name(cluster_id, &desired.deployment, network),
            }
        })
        .collect();
    let attachments = (spec.networks.iter())
        .filter(|_| spec.network_mode.is_none())
        .map(|(network, attachment)| NetworkAttachment {
            network: network_name(&desired.deployment, network),
            aliases: attachment.aliases.clone(),
        })
        .collect();
    let dns_servers = (networks.iter())
        .filter_map(|n| n.subnet.map(|s| gateway(s).to_string()))
        .collect();

    let mut volumes = Vec::new();
    let mut volume_names = BTreeMap::new();
    for mount in spec.volumes.iter().filter(|m| m.kind == MountKind::Volume) {
        let Some(name) = &mount.source else { continue };
        if volume_names.contains_key(name) {
            continue;
        }
        let declared = deployment.volumes.get(name).ok_or_else(|| {
            Error::new(
                Code::ValidationFailed,
                format!(
                    "service {}: volume {name:?} is not declared",
                    desired.service
                ),
            )
            .with("service", &desired.service)
            .with("field", "volumes")
        })?;
        let docker_name = declared
            .name
            .clone()
            .unwrap_or_else(|| match declared.external {
                true => name.clone(),
                false => format!("jaco_{}_{name}", desired.deployment),
            });
        volumes.push(if declared.external {
            VolumeUse::External(docker_name.clone())
        } else {
            let mut labels = declared.labels.clone();
            labels.extend(owned(LABEL_VOLUME, name));
            VolumeUse::Ensure(VolumePlan {
                name: docker_name.clone(),
                driver: declared.driver.clone(),
                driver_opts: declared.driver_opts.clone(),
                labels,
            })
        });
        volume_names.insert(name.clone(), docker_name);
    }

    let dir = files_dir(secrets_dir, &desired.id);
    let mut files = Vec::new();
    let mut binds = Vec::new();
    for (kind, mounts, objects) in [
        ("secrets", &spec.secrets, &deployment.secrets),
        ("configs", &spec.configs, &deployment.configs),
    ] {
        for mount in mounts {
            let write = file_write(&dir, kind, mount, objects, &desired.service)?;
            binds.push(FileBind {
                source: write.path.clone(),
                target: mount.target.clone(),
            });
            files.push(write);
        }
    }

    Ok(ReplicaPlan {
        files,
        networks,
        volumes,
        container: ContainerPlan {
            name: container_name(&desired.id),
            identity: ReplicaIdentity::of(cluster_id, desired),
            spec: Arc::new(spec.clone()),
            networks: attachments,
            peers,
            volumes: volume_names,
            files: binds,
            dns_servers,
        },
    })
}

/// The gateway of a jaco subnet: its first host address, the bridge's own address on the
/// node, where the DNS responder listens.
pub fn gateway(subnet: ipnet::Ipv4Net) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// The file of one secret or config mount.
fn file_write(
    dir: &Path,
    kind: &str,
    mount: &FileMount,
    objects: &BTreeMap<String, crate::manifest::spec::FileObject>,
    service: &str,
) -> Result<FileWrite, Error> {
    let invalid = |why: String| {
        Error::new(
            Code::ValidationFailed,
            format!("service {service}: {kind} {}: {why}", mount.source),
        )
        .with("service", service)
        .with("field", kind)
    };
    let name = &mount.source;
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(invalid("is not a usable file name".into()));
    }
    let object = objects
        .get(name)
        .ok_or_else(|| invalid("has no content in this revision".into()))?;
    let id = |text: &Option<String>, what: &str| {
        text.as_deref()
            .map(|t| {
                t.parse::<u32>()
                    .map_err(|_| invalid(format!("{what} {t:?} is not a number")))
            })
            .transpose()
    };
    Ok(FileWrite {
        path: dir.join(kind).join(name),
        content: object.content.clone(),
        mode: mount.mode.unwrap_or(DEFAULT_FILE_MODE),
        uid: id(&mount.uid, "uid")?,
        gid: id(&mount.gid, "gid")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::spec::{
        ContainerSpec, FileObject, Mount, NetworkAttachment as ComposeAttachment, NetworkSpec,
        VolumeSpec,
    };

    fn desired() -> ReplicaDesired {
        ReplicaDesired {
            id: "shop-web-2".into(),
            deployment: "shop".into(),
            service: "web".into(),
            index: 2,
            node: "n1".into(),
            spec_hash: "h".into(),
            revision: 4,
            restart_generation: 1,
            ..Default::default()
        }
    }

    fn deployment() -> DeploymentSpec {
        let network = |internal: bool| NetworkSpec {
            internal,
            labels: BTreeMap::from([("team".to_owned(), "shop".to_owned())]),
        };
        DeploymentSpec {
            name: "shop".into(),
            acme: false,
            acme_email: None,
            profiles: vec![],
            routes: vec![],
            tcp_routes: vec![],
            networks: BTreeMap::from([
                ("default".to_owned(), network(false)),
                ("back".to_owned(), network(true)),
            ]),
            volumes: BTreeMap::from([
                ("data".to_owned(), VolumeSpec::default()),
                (
                    "shared".to_owned(),
                    VolumeSpec {
                        name: Some("company-shared".into()),
                        driver: Some("local".into()),
                        ..VolumeSpec::default()
                    },
                ),
                (
                    "legacy".to_owned(),
                    VolumeSpec {
                        external: true,
                        ..VolumeSpec::default()
                    },
                ),
            ]),
            secrets: BTreeMap::from([(
                "db_password".to_owned(),
                FileObject::new(b"hunter2".to_vec()),
            )]),
            configs: BTreeMap::from([("nginx".to_owned(), FileObject::new(b"conf".to_vec()))]),
        }
    }

    fn service(set: impl FnOnce(&mut ContainerSpec)) -> ServiceSpec {
        let mut container = ContainerSpec {
            image: "nginx".into(),
            ..ContainerSpec::default()
        };
        container
            .networks
            .insert("default".into(), ComposeAttachment::default());
        container.networks.insert(
            "back".into(),
            ComposeAttachment {
                aliases: vec!["api".into()],
            },
        );
        set(&mut container);
        ServiceSpec {
            spec_hash: "h".into(),
            replicas: 1,
            placement: crate::manifest::spec::Placement::Spread,
            hosts: vec![],
            update: Default::default(),
            depends_on: BTreeMap::new(),
            container,
        }
    }

    fn volume(source: Option<&str>, target: &str) -> Mount {
        Mount {
            kind: MountKind::Volume,
            source: source.map(str::to_owned),
            target: target.into(),
            read_only: false,
            options: BTreeMap::new(),
        }
    }

    fn file(source: &str, target: &str) -> FileMount {
        FileMount {
            source: source.into(),
            target: target.into(),
            uid: None,
            gid: None,
            mode: None,
            sha256: String::new(),
        }
    }

    fn plan_for(service: &ServiceSpec) -> Result<ReplicaPlan, Error> {
        replica_plan(
            "c1",
            &desired(),
            &deployment(),
            service,
            BTreeMap::new(),
            &BTreeMap::from([("default".to_owned(), "10.244.3.0/24".parse().unwrap())]),
            Path::new("/run/jaco/secrets"),
        )
    }

    #[test]
    fn names_follow_the_contract() {
        assert_eq!(container_name("shop-web-1"), "jaco_shop-web-1");
        assert_eq!(network_name("shop", "default"), "jaco_shop_default");
        assert_eq!(compose_network("shop", "jaco_shop_back"), Some("back"));
        assert_eq!(compose_network("shop", "jaco_shopping_back"), None);
        assert_eq!(compose_network("shop", "bridge"), None);
    }

    #[test]
    fn networks_are_labelled_addressed_and_attached_without_the_service_alias() {
        let plan = plan_for(&service(|_| {})).unwrap();
        let names: Vec<&str> = plan.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["jaco_shop_back", "jaco_shop_default"]);
        let back = &plan.networks[0];
        assert!(back.internal);
        assert_eq!(back.labels["jaco.cluster_id"], "c1");
        assert_eq!(back.labels["jaco.deployment"], "shop");
        assert_eq!(back.labels["jaco.network"], "back");
        assert_eq!(back.labels["team"], "shop");
        let attached: Vec<(&str, Vec<&str>)> = (plan.container.networks.iter())
            .map(|a| {
                (
                    a.network.as_str(),
                    a.aliases.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            attached,
            [
                ("jaco_shop_back", vec!["api"]),
                ("jaco_shop_default", vec![])
            ]
        );
        // Only the network with an allocated subnet gets one, and its gateway is the resolver.
        assert_eq!(back.subnet, None);
        assert_eq!(
            plan.networks[1].subnet,
            Some("10.244.3.0/24".parse().unwrap())
        );
        assert_eq!(plan.container.dns_servers, ["10.244.3.1"]);
        assert_eq!(back.bridge.len(), 15);
        assert!(back.bridge.starts_with("jaco-"));
        assert_ne!(back.bridge, plan.networks[1].bridge);
        assert_ne!(back.bridge, bridge_name("c2", "shop", "back"));
        assert_eq!(plan.container.name, "jaco_shop-web-2");
        let identity = &plan.container.identity;
        assert_eq!(
            (identity.revision, identity.restart_generation),
            (4, 1),
            "{identity:?}"
        );

        let isolated = plan_for(&service(|c| c.network_mode = Some("none".into()))).unwrap();
        assert!(isolated.networks.is_empty() && isolated.container.networks.is_empty());
    }

    #[test]
    fn volumes_are_scoped_named_or_external() {
        let plan = plan_for(&service(|c| {
            c.volumes = vec![
                volume(Some("data"), "/data"),
                volume(Some("data"), "/again"),
                volume(Some("shared"), "/shared"),
                volume(Some("legacy"), "/legacy"),
                volume(None, "/anonymous"),
            ]
        }))
        .unwrap();
        assert_eq!(plan.volumes.len(), 3, "{:?}", plan.volumes);
        let VolumeUse::Ensure(data) = &plan.volumes[0] else {
            panic!("{:?}", plan.volumes[0])
        };
        assert_eq!(data.name, "jaco_shop_data");
        assert_eq!(data.labels["jaco.volume"], "data");
        assert_eq!(data.labels["jaco.cluster_id"], "c1");
        let VolumeUse::Ensure(shared) = &plan.volumes[1] else {
            panic!("{:?}", plan.volumes[1])
        };
        assert_eq!(shared.name, "company-shared");
        assert_eq!(shared.driver.as_deref(), Some("local"));
        assert_eq!(plan.volumes[2], VolumeUse::External("legacy".into()));
        assert_eq!(
            plan.container.volumes,
            BTreeMap::from([
                ("data".to_owned(), "jaco_shop_data".to_owned()),
                ("legacy".to_owned(), "legacy".to_owned()),
                ("shared".to_owned(), "company-shared".to_owned()),
            ])
        );
        let error = plan_for(&service(|c| c.volumes = vec![volume(Some("nope"), "/x")]))
            .expect_err("undeclared");
        assert_eq!(error.details["field"], "volumes");
    }

    #[test]
    fn secrets_and_configs_become_files_under_the_replica_directory() {
        let plan = plan_for(&service(|c| {
            c.secrets = vec![FileMount {
                uid: Some("1000".into()),
                gid: Some("1001".into()),
                mode: Some(0o400),
                ..file("db_password", "/run/secrets/db_password")
            }];
            c.configs = vec![file("nginx", "/etc/nginx/nginx.conf")];
        }))
        .unwrap();
        assert_eq!(
            plan.files,
            [
                FileWrite {
                    path: "/run/jaco/secrets/shop-web-2/secrets/db_password".into(),
                    content: b"hunter2".to_vec(),
                    mode: 0o400,
                    uid: Some(1000),
                    gid: Some(1001),
                },
                FileWrite {
                    path: "/run/jaco/secrets/shop-web-2/configs/nginx".into(),
                    content: b"conf".to_vec(),
                    mode: 0o444,
                    uid: None,
                    gid: None,
                },
            ]
        );
        assert_eq!(
            plan.container.files,
            [
                FileBind {
                    source: "/run/jaco/secrets/shop-web-2/secrets/db_password".into(),
                    target: "/run/secrets/db_password".into(),
                },
                FileBind {
                    source: "/run/jaco/secrets/shop-web-2/configs/nginx".into(),
                    target: "/etc/nginx/nginx.conf".into(),
                },
            ]
        );
        assert!(
            !format!("{:?}", plan.files).contains("hunter2"),
            "no content in Debug"
        );

        for bad in [
            file("missing", "/x"),
            file("../escape", "/x"),
            FileMount {
                uid: Some("www-data".into()),
                ..file("db_password", "/x")
            },
        ] {
            let error = plan_for(&service(|c| c.secrets = vec![bad.clone()])).expect_err("bad");
            assert_eq!(error.code, Code::ValidationFailed, "{bad:?}");
        }
    }
}
