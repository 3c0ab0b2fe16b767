//! Compose documents: the support matrix enforced key by key, every honoured value read into
//! its canonical [`ContainerSpec`] form, and the cross-service rules of SPEC §2.2–2.6.
//!
//! Input is a document that the resolver already interpolated and folded (no `env_file:`,
//! `extends:` or `include:` left) plus the secret and config contents the resolver read.
//! Pure: no files, no environment. Deployment-level rules that need jaco.yaml live in
//! `manifest::mod`.

use std::collections::{BTreeMap, BTreeSet};

use super::read::{Reader, join};
use super::spec::{
    ContainerSpec, Dependency, DependencyCondition, FileMount, FileObject, Healthcheck, Logging,
    Mount, MountKind, NetworkAttachment, NetworkSpec, Port, PullPolicy, ResourceValues, Resources,
    Ulimit, VolumeSpec, Written,
};
use super::support::{self, Class};
use super::units;
use crate::error::Code;
use crate::yaml::{Mark, Node, Value};

/// The label that admits `privileged` and `security_opt` (SPEC §2.6).
pub const PRIVILEGED_LABEL: &str = "jaco.io/allow-privileged";

/// Most port numbers one range entry may expand to.
const MAX_PORT_RANGE: usize = 1024;

/// A compose document read into values.
#[derive(Debug, Clone, Default)]
pub struct Compose {
    /// Active services (profiles applied), by name.
    pub services: BTreeMap<String, ComposeService>,
    /// Declared networks plus `default`.
    pub networks: BTreeMap<String, NetworkSpec>,
    /// Declared named volumes.
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, FileObject>,
    /// Configs by name.
    pub configs: BTreeMap<String, FileObject>,
}

/// One compose service.
#[derive(Debug, Clone, Default)]
pub struct ComposeService {
    /// Where the service is defined.
    pub mark: Mark,
    /// The container spec.
    pub container: ContainerSpec,
    /// `depends_on`, normalised.
    pub depends_on: BTreeMap<String, Dependency>,
    /// Default replica count from `deploy.replicas` or `scale`.
    pub replicas: Option<u32>,
    /// `deploy.update_config`, mapped onto jaco's policy.
    pub update: ComposeUpdate,
}

/// The parts of `deploy.update_config` jaco maps onto its rolling-update policy.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct ComposeUpdate {
    pub parallelism: Option<u32>,
    pub delay: Option<String>,
    pub order: Option<super::spec::UpdateOrder>,
    pub monitor: Option<String>,
    pub failure_action: Option<super::spec::FailureAction>,
}

/// Secret and config contents gathered by the resolver, by name.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// Secret contents.
    pub secrets: BTreeMap<String, FileObject>,
    /// Config contents.
    pub configs: BTreeMap<String, FileObject>,
}

/// Reads a compose document. `profiles` are the profiles jaco.yaml enables.
pub fn read(root: &Node, objects: Objects, profiles: &[String], reader: &mut Reader) -> Compose {
    let mut compose = Compose {
        secrets: objects.secrets,
        configs: objects.configs,
        ..Compose::default()
    };
    if root.as_map().is_none() {
        reader.invalid(root, "", "a compose file must be a mapping");
        return compose;
    }
    check_top_level_keys(root, reader);
    compose.networks = read_networks(root, reader);
    compose.volumes = read_volumes(root, reader);
    let Some(services) = root.get("services") else {
        reader.invalid(
            root,
            "services",
            "is required: a compose file needs at least one service",
        );
        return compose;
    };
    let entries = reader.map(services, "services");
    if entries.is_empty() && services.as_map().is_some() {
        reader.invalid(services, "services", "declares no service");
    }
    let mut inactive = BTreeSet::new();
    for (key, node) in entries {
        let name = key.as_scalar().unwrap_or_default().to_owned();
        if !is_service_name(&name) {
            reader.invalid(
                key,
                &format!("services.{name}"),
                "service names use letters, digits, '_', '.' and '-', starting with a letter or digit",
            );
            continue;
        }
        reader.set_service(Some(&name));
        if node.as_map().is_none() {
            reader.invalid(node, "", "a service must be a mapping");
            continue;
        }
        if !profile_enabled(node, profiles, reader) {
            inactive.insert(name);
            continue;
        }
        let service = read_service(node, reader);
        compose.services.insert(name, service);
    }
    reader.set_service(None);
    drop_optional_dependencies(&mut compose, reader);
    check_references(&compose, &inactive, reader);
    compose
}

/// `required: false` dependencies on services that are not deployed are dropped, as compose
/// does, with a warning instead of an error.
fn drop_optional_dependencies(compose: &mut Compose, reader: &mut Reader) {
    let deployed: BTreeSet<String> = compose.services.keys().cloned().collect();
    for (name, service) in &mut compose.services {
        service.depends_on.retain(|dependency, spec| {
            let keep = spec.required || deployed.contains(dependency);
            if !keep {
                reader.set_service(Some(name));
                reader.warn(
                    &join("depends_on", dependency),
                    format!("optional dependency {dependency:?} is not deployed; ignored"),
                );
            }
            keep
        });
    }
    reader.set_service(None);
}

fn check_top_level_keys(root: &Node, reader: &mut Reader) {
    for (key, _) in root.as_map().unwrap_or_default() {
        let name = key.as_scalar().unwrap_or_default();
        if name.starts_with("x-") {
            continue;
        }
        match support::top_level_key(name).map(|row| row.class) {
            Some(Class::Honoured) => {}
            Some(Class::Ignored(why)) => reader.warn(name, format!("ignored: {why}")),
            Some(Class::Rejected(why)) => {
                reader.invalid(key, name, format!("not supported: {why}"))
            }
            Some(Class::Legacy(_)) | None => {
                reader.invalid(key, name, "is not a supported top-level compose key")
            }
        }
    }
}

fn profile_enabled(node: &Node, enabled: &[String], reader: &mut Reader) -> bool {
    let Some(profiles) = node.get("profiles") else {
        return true;
    };
    let listed = reader.strings(profiles, "profiles");
    listed.is_empty() || listed.iter().any(|p| enabled.contains(p))
}

fn read_networks(root: &Node, reader: &mut Reader) -> BTreeMap<String, NetworkSpec> {
    let mut networks = BTreeMap::new();
    networks.insert("default".to_owned(), NetworkSpec::default());
    let Some(node) = root.get("networks") else {
        return networks;
    };
    for (key, value) in reader.map(node, "networks") {
        let name = key.as_scalar().unwrap_or_default().to_owned();
        let path = join("networks", &name);
        let mut spec = NetworkSpec::default();
        if !value.is_null() {
            reader.map(value, &path);
            reader.closed_keys(
                value,
                &path,
                &[
                    "driver",
                    "driver_opts",
                    "attachable",
                    "enable_ipv6",
                    "ipam",
                    "internal",
                    "labels",
                    "name",
                    "external",
                ],
            );
            for ignored in [
                "driver",
                "driver_opts",
                "attachable",
                "enable_ipv6",
                "ipam",
                "name",
            ] {
                if value.get(ignored).is_some() {
                    reader.warn(
                        &join(&path, ignored),
                        "ignored: jaco creates an isolated bridge per (deployment, network) and allocates its subnets",
                    );
                }
            }
            if let Some(external) = value.get("external")
                && reader.bool(external, &join(&path, "external")) == Some(true)
            {
                reader.invalid(
                        external,
                        &join(&path, "external"),
                        "external networks are not supported: jaco networks are per deployment and isolated",
                    );
            }
            if let Some(n) = value.get("internal") {
                spec.internal = reader.bool(n, &join(&path, "internal")).unwrap_or(false);
            }
            if let Some(n) = value.get("labels") {
                spec.labels = reader.dict(n, &join(&path, "labels"), '=');
            }
        }
        networks.insert(name, spec);
    }
    networks
}

fn read_volumes(root: &Node, reader: &mut Reader) -> BTreeMap<String, VolumeSpec> {
    let mut volumes = BTreeMap::new();
    let Some(node) = root.get("volumes") else {
        return volumes;
    };
    for (key, value) in reader.map(node, "volumes") {
        let name = key.as_scalar().unwrap_or_default().to_owned();
        let path = join("volumes", &name);
        let mut spec = VolumeSpec::default();
        if !value.is_null() {
            reader.map(value, &path);
            reader.closed_keys(
                value,
                &path,
                &["driver", "driver_opts", "external", "labels", "name"],
            );
            if let Some(n) = value.get("name") {
                spec.name = reader.required_string(n, &join(&path, "name"));
            }
            if let Some(n) = value.get("external") {
                spec.external = reader.bool(n, &join(&path, "external")).unwrap_or(false);
            }
            if let Some(n) = value.get("driver") {
                spec.driver = reader.string(n, &join(&path, "driver"));
            }
            if let Some(n) = value.get("driver_opts") {
                spec.driver_opts = reader.dict(n, &join(&path, "driver_opts"), '=');
            }
            if let Some(n) = value.get("labels") {
                spec.labels = reader.dict(n, &join(&path, "labels"), '=');
            }
        }
        volumes.insert(name, spec);
    }
    volumes
}

/// Reads one service, classifying every key through the support matrix.
fn read_service(node: &Node, reader: &mut Reader) -> ComposeService {
    let mut service = ComposeService {
        mark: node.mark,
        ..ComposeService::default()
    };
    let mut flat = ResourceValues::default();
    let mut flat_reservation = ResourceValues::default();
    let mut deploy_resources = None;
    let mut build_without_image = None;
    for (key, value) in node.as_map().unwrap_or_default() {
        let name = key.as_scalar().unwrap_or_default();
        if name.starts_with("x-") {
            continue;
        }
        // Dotted rows describe keys nested under `deploy:`, never service keys.
        let row = support::service_key(name).filter(|_| !name.contains('.'));
        match row.map(|row| row.class) {
            None => {
                reader.invalid(
                    key,
                    name,
                    format!("unsupported compose field {name:?} (not in jaco's support matrix)"),
                );
                continue;
            }
            Some(Class::Rejected(why)) => {
                reader.invalid(key, name, format!("not supported: {why}"));
                continue;
            }
            Some(Class::Legacy(modern)) => {
                report_legacy(reader, key, name, modern);
                continue;
            }
            Some(Class::Ignored(why)) => {
                if name == "build" && node.get("image").is_none() {
                    build_without_image = Some(key);
                } else {
                    reader.warn(name, format!("ignored: {why}"));
                }
                continue;
            }
            Some(Class::Honoured) => {}
        }
        let c = &mut service.container;
        match name {
            "image" => c.image = read_image(value, reader).unwrap_or_default(),
            "command" => c.command = read_command(value, name, reader),
            "entrypoint" => c.entrypoint = read_command(value, name, reader),
            "environment" => c.environment = reader.dict(value, name, '='),
            "labels" => c.labels = reader.dict(value, name, '='),
            "annotations" => c.annotations = reader.dict(value, name, '='),
            "user" => c.user = reader.string(value, name),
            "group_add" => c.group_add = reader.strings(value, name),
            "working_dir" => c.working_dir = reader.string(value, name),
            "hostname" => c.hostname = reader.string(value, name),
            "domainname" => c.domainname = reader.string(value, name),
            "extra_hosts" => c.extra_hosts = read_extra_hosts(value, reader),
            "dns" => c.dns = reader.strings(value, name),
            "dns_search" => c.dns_search = reader.strings(value, name),
            "dns_opt" => c.dns_opt = reader.strings(value, name),
            "init" => c.init = reader.bool(value, name),
            "read_only" => c.read_only = reader.bool(value, name),
            "tty" => c.tty = reader.bool(value, name),
            "stdin_open" => c.stdin_open = reader.bool(value, name),
            "platform" => c.platform = reader.string(value, name),
            "runtime" => c.runtime = reader.string(value, name),
            "tmpfs" => c.tmpfs = reader.strings(value, name),
            "volumes" => c.volumes = read_mounts(value, reader),
            "ports" => c.ports = read_ports(value, reader),
            "expose" => c.expose = reader.strings(value, name),
            "networks" => c.networks = read_attachments(value, reader),
            "network_mode" => c.network_mode = read_network_mode(value, reader),
            "depends_on" => service.depends_on = read_depends_on(value, reader),
            "healthcheck" => c.healthcheck = read_healthcheck(value, reader),
            "stop_signal" => c.stop_signal = reader.string(value, name),
            "stop_grace_period" => c.stop_grace_period = reader.duration(value, name),
            "cap_add" => c.cap_add = reader.strings(value, name),
            "cap_drop" => c.cap_drop = reader.strings(value, name),
            "sysctls" => c.sysctls = reader.dict(value, name, '='),
            "ulimits" => c.ulimits = read_ulimits(value, reader),
            "shm_size" => c.shm_size = reader.bytes(value, name),
            "ipc" => c.ipc = reader.string(value, name),
            "pid" => c.pid = reader.string(value, name),
            "uts" => c.uts = reader.string(value, name),
            "userns_mode" => c.userns_mode = reader.string(value, name),
            "cgroup" => c.cgroup = read_enum(value, name, &["host", "private"], reader),
            "cgroup_parent" => c.cgroup_parent = reader.string(value, name),
            "devices" => c.devices = read_devices(value, reader),
            "device_cgroup_rules" => c.device_cgroup_rules = reader.strings(value, name),
            "gpus" => c.gpus = Some(value.to_json()),
            "logging" => c.logging = read_logging(value, reader),
            "pull_policy" => c.pull_policy = read_pull_policy(value, reader),
            "privileged" => c.privileged = reader.bool(value, name),
            "security_opt" => c.security_opt = reader.strings(value, name),
            "cpus" => flat.cpus = reader.number(value, name),
            "cpu_shares" => c.cpu_shares = reader.int(value, name),
            "cpu_quota" => c.cpu_quota = reader.int(value, name),
            "cpu_period" => c.cpu_period = reader.int(value, name),
            "cpuset" => c.cpuset = reader.string(value, name),
            "mem_limit" => flat.memory = reader.bytes(value, name),
            "mem_reservation" => flat_reservation.memory = reader.bytes(value, name),
            "memswap_limit" => c.memswap_limit = read_signed_bytes(value, name, reader),
            "mem_swappiness" => c.mem_swappiness = reader.int_in(value, name, 0, 100),
            "oom_kill_disable" => c.oom_kill_disable = reader.bool(value, name),
            "oom_score_adj" => c.oom_score_adj = reader.int_in(value, name, -1000, 1000),
            "pids_limit" => flat.pids = reader.int_in(value, name, -1, i64::MAX),
            "blkio_config" => c.blkio_config = Some(value.to_json()),
            "storage_opt" => c.storage_opt = reader.dict(value, name, '='),
            "scale" => service.replicas = reader.int_in(value, name, 0, 10_000).map(|r| r as u32),
            "secrets" => c.secrets = read_file_mounts(value, name, reader),
            "configs" => c.configs = read_file_mounts(value, name, reader),
            "profiles" => {}
            "deploy" => deploy_resources = read_deploy(value, &mut service, reader),
            "env_file" | "label_file" | "extends" => {
                // The resolver removes these before reading; meeting one here means the
                // document bypassed it (see `check_unresolved`).
            }
            other => unreachable!("support matrix row {other} has no reader"),
        }
    }
    if let Some(key) = build_without_image {
        reader.invalid(
            key,
            "image",
            "the service has `build` but no `image`: jaco never builds images; build and push the image, then set `image:`",
        );
    } else if node.get("image").is_none() {
        reader.invalid(node, "image", "is required: jaco runs prebuilt images");
    }
    service.container.resources = deploy_resources.unwrap_or(Resources {
        limits: flat,
        reservations: flat_reservation,
    });
    if service.container.network_mode.is_none() && service.container.networks.is_empty() {
        service
            .container
            .networks
            .insert("default".to_owned(), NetworkAttachment::default());
    }
    check_service_rules(node, &service, reader);
    service
}

fn report_legacy(reader: &mut Reader, key: &Node, name: &str, modern: &str) {
    reader
        .report(
            Code::LegacyComposeField,
            key.mark,
            format!("{name} is a compose v1/v2 spelling; use {modern} instead"),
        )
        .details
        .extend([
            ("field".to_owned(), name.to_owned()),
            ("modern_equivalent".to_owned(), modern.to_owned()),
        ]);
}

/// Rules inside one service that need several of its keys.
fn check_service_rules(node: &Node, service: &ComposeService, reader: &mut Reader) {
    let c = &service.container;
    let wants_privilege = c.privileged == Some(true) || !c.security_opt.is_empty();
    if wants_privilege && c.labels.get(PRIVILEGED_LABEL).map(String::as_str) != Some("true") {
        let mut fields = Vec::new();
        if c.privileged == Some(true) {
            fields.push("privileged");
        }
        if !c.security_opt.is_empty() {
            fields.push("security_opt");
        }
        let at = node.get(fields[0]).unwrap_or(node);
        reader.invalid(
            at,
            fields[0],
            format!(
                "uses {} but lacks the label {PRIVILEGED_LABEL}: \"true\" that admits privileged workloads",
                fields.join(" and ")
            ),
        );
    }
    if c.network_mode.is_some() && node.get("networks").is_some() {
        reader.invalid(
            node.get("networks").unwrap_or(node),
            "networks",
            "cannot be combined with network_mode",
        );
    }
}

fn read_image(node: &Node, reader: &mut Reader) -> Option<String> {
    let image = reader.required_string(node, "image")?;
    if image.contains(char::is_whitespace) {
        reader.invalid(
            node,
            "image",
            format!("{image:?} is not an image reference"),
        );
        return None;
    }
    Some(image)
}

fn read_command(node: &Node, field: &str, reader: &mut Reader) -> Option<Vec<String>> {
    match &node.value {
        Value::Scalar { .. } if node.is_null() => None,
        Value::Scalar { text, .. } => match units::shell_split(text) {
            Ok(words) => Some(words),
            Err(why) => {
                reader.invalid(node, field, why);
                None
            }
        },
        _ => Some(reader.strings(node, field)),
    }
}

fn read_enum(node: &Node, field: &str, allowed: &[&str], reader: &mut Reader) -> Option<String> {
    let value = reader.string(node, field)?;
    if allowed.contains(&value.as_str()) {
        Some(value)
    } else {
        reader.invalid(
            node,
            field,
            format!("{value:?} is not one of {}", allowed.join(", ")),
        );
        None
    }
}

fn read_signed_bytes(node: &Node, field: &str, reader: &mut Reader) -> Option<i64> {
    if node.as_i64() == Some(-1) {
        return Some(-1);
    }
    reader
        .bytes(node, field)
        .map(|b| i64::try_from(b).unwrap_or(i64::MAX))
}

fn read_extra_hosts(node: &Node, reader: &mut Reader) -> Vec<String> {
    match &node.value {
        Value::Map(_) => reader
            .dict(node, "extra_hosts", '=')
            .into_iter()
            .map(|(host, ip)| format!("{host}:{ip}"))
            .collect(),
        _ => reader.strings(node, "extra_hosts"),
    }
}

fn read_mounts(node: &Node, reader: &mut Reader) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for (i, item) in reader.seq(node, "volumes").iter().enumerate() {
        let field = format!("volumes[{i}]");
        let mount = match &item.value {
            Value::Map(_) => read_long_mount(item, &field, reader),
            _ => reader.string(item, &field).and_then(|text| {
                parse_short_mount(&text)
                    .map_err(|why| reader.invalid(item, &field, why))
                    .ok()
            }),
        };
        if let Some(mount) = mount {
            if mount.kind == MountKind::Bind
                && mount.source.as_deref().is_some_and(|s| !s.starts_with('/'))
            {
                reader.warn(
                    &field,
                    format!(
                        "relative bind source {:?} is a path on each node, not on this machine; \
                         files next to the compose file are not copied",
                        mount.source.as_deref().unwrap_or_default()
                    ),
                );
            }
            mounts.push(mount);
        }
    }
    mounts
}

/// `[source:]target[:mode]` with mode flags such as `ro`, `rw`, `z`, `nocopy`, `rshared`.
fn parse_short_mount(text: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, None),
        [source, target] => (Some(*source), *target, None),
        [source, target, mode] => (Some(*source), *target, Some(*mode)),
        _ => return Err(format!("{text:?} is not `[source:]target[:mode]`")),
    };
    if !target.starts_with('/') {
        return Err(format!(
            "target {target:?} must be an absolute path in the container"
        ));
    }
    let kind = match source {
        Some(s) if s.starts_with(['/', '.', '~']) => MountKind::Bind,
        Some("") => return Err(format!("{text:?} has an empty source")),
        _ => MountKind::Volume,
    };
    let mut mount = Mount {
        kind,
        source: source.map(str::to_owned),
        target: target.to_owned(),
        read_only: false,
        options: BTreeMap::new(),
    };
    for flag in mode.into_iter().flat_map(|m| m.split(',')) {
        match flag {
            "ro" => mount.read_only = true,
            "rw" => {}
            "z" | "Z" => {
                mount.options.insert("bind.selinux".into(), flag.into());
            }
            "nocopy" => {
                mount.options.insert("volume.nocopy".into(), true.into());
            }
            "consistent" | "cached" | "delegated" => {}
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                mount.options.insert("bind.propagation".into(), flag.into());
            }
            other => return Err(format!("unknown volume mode {other:?} in {text:?}")),
        }
    }
    Ok(mount)
}

fn read_long_mount(node: &Node, field: &str, reader: &mut Reader) -> Option<Mount> {
    reader.closed_keys(
        node,
        field,
        &[
            "type",
            "source",
            "target",
            "read_only",
            "bind",
            "volume",
            "tmpfs",
            "consistency",
        ],
    );
    let kind = match node
        .get("type")
        .and_then(|n| reader.string(n, &join(field, "type")))
        .as_deref()
    {
        Some("volume") => MountKind::Volume,
        Some("bind") => MountKind::Bind,
        Some("tmpfs") => MountKind::Tmpfs,
        Some(other) => {
            reader.invalid(
                node.get("type").unwrap_or(node),
                &join(field, "type"),
                format!("mount type {other:?} is not supported (volume, bind or tmpfs)"),
            );
            return None;
        }
        None => {
            if node.get("type").is_none() {
                reader.invalid(node, &join(field, "type"), "is required");
            }
            return None;
        }
    };
    let Some(target) = node
        .get("target")
        .and_then(|n| reader.required_string(n, &join(field, "target")))
    else {
        if node.get("target").is_none() {
            reader.invalid(node, &join(field, "target"), "is required");
        }
        return None;
    };
    let source = node
        .get("source")
        .and_then(|n| reader.string(n, &join(field, "source")));
    if kind == MountKind::Bind && source.is_none() {
        reader.invalid(node, &join(field, "source"), "is required for a bind mount");
        return None;
    }
    let read_only = node
        .get("read_only")
        .and_then(|n| reader.bool(n, &join(field, "read_only")))
        .unwrap_or(false);
    let mut options = BTreeMap::new();
    for section in ["bind", "volume", "tmpfs"] {
        if let Some(sub) = node.get(section) {
            for (key, value) in reader.map(sub, &join(field, section)) {
                let name = key.as_scalar().unwrap_or_default();
                options.insert(format!("{section}.{name}"), value.to_json());
            }
        }
    }
    Some(Mount {
        kind,
        source,
        target,
        read_only,
        options,
    })
}

fn read_ports(node: &Node, reader: &mut Reader) -> Vec<Port> {
    let mut ports = Vec::new();
    for (i, item) in reader.seq(node, "ports").iter().enumerate() {
        let field = format!("ports[{i}]");
        let parsed = match &item.value {
            Value::Map(_) => read_long_port(item, &field, reader),
            _ => match item.as_scalar().filter(|_| !item.is_null()) {
                Some(text) => parse_short_port(text),
                None => Err("expected a port string, number or mapping".to_owned()),
            },
        };
        let written = Written {
            text: item
                .as_scalar()
                .map_or_else(|| item.to_json().to_string(), str::to_owned),
            line: item.mark.line,
            column: item.mark.column,
        };
        match parsed {
            Ok(entries) => ports.extend(entries.into_iter().map(|port| Port {
                written: written.clone(),
                ..port
            })),
            Err(why) => reader.invalid(item, &field, why),
        }
    }
    ports
}

/// `[[ip:]published:]target[/protocol]`, with ranges (`8000-8001:80-81`) expanded.
pub fn parse_short_port(text: &str) -> Result<Vec<Port>, String> {
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((spec, protocol)) => (spec, protocol),
        None => (text, "tcp"),
    };
    let protocol = parse_protocol(protocol)?;
    let (host_ip, rest) = split_host_ip(spec)?;
    let (published, target) = match rest.rsplit_once(':') {
        Some((published, target)) => (Some(published), target),
        None => (None, rest),
    };
    let targets = parse_port_range(target)?;
    let published = match published {
        None | Some("") => None,
        Some(p) => Some(parse_port_range(p)?),
    };
    expand_ports(targets, published, host_ip, protocol, text)
}

fn parse_protocol(protocol: &str) -> Result<String, String> {
    match protocol {
        "tcp" | "udp" | "sctp" => Ok(protocol.to_owned()),
        other => Err(format!("unknown protocol {other:?} (tcp, udp or sctp)")),
    }
}

/// Splits an optional host address (`1.2.3.4:` or `[::1]:`) off a short port spec.
fn split_host_ip(spec: &str) -> Result<(Option<String>, &str), String> {
    if let Some(rest) = spec.strip_prefix('[') {
        let (ip, rest) = rest
            .split_once("]:")
            .ok_or_else(|| format!("{spec:?}: unterminated IPv6 address"))?;
        return Ok((Some(ip.to_owned()), rest));
    }
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.len() {
        1 | 2 => Ok((None, spec)),
        3 => {
            let ip = parts[0];
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(format!("{ip:?} is not an IP address"));
            }
            Ok((Some(ip.to_owned()), &spec[ip.len() + 1..]))
        }
        _ => Err(format!("{spec:?} is not `[[ip:]published:]target`")),
    }
}

fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let port = |s: &str| -> Result<u16, String> {
        match s.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("{s:?} is not a port number (1-65535)")),
        }
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(format!("port range {text:?} is reversed"));
            }
            Ok((a, b))
        }
        None => {
            let p = port(text)?;
            Ok((p, p))
        }
    }
}

fn expand_ports(
    targets: (u16, u16),
    published: Option<(u16, u16)>,
    host_ip: Option<String>,
    protocol: String,
    entry: &str,
) -> Result<Vec<Port>, String> {
    let count = usize::from(targets.1 - targets.0) + 1;
    if count > MAX_PORT_RANGE {
        return Err(format!("{entry:?} spans more than {MAX_PORT_RANGE} ports"));
    }
    if let Some(published) = published {
        let published_count = usize::from(published.1 - published.0) + 1;
        if published_count != count {
            return Err(format!(
                "{entry:?}: published and target ranges must have the same length"
            ));
        }
    }
    Ok((0..count as u16)
        .map(|i| Port {
            target: targets.0 + i,
            published: published.map(|p| p.0 + i),
            host_ip: host_ip.clone(),
            protocol: protocol.clone(),
            written: Written::default(),
        })
        .collect())
}

fn read_long_port(node: &Node, field: &str, reader: &mut Reader) -> Result<Vec<Port>, String> {
    reader.closed_keys(
        node,
        field,
        &[
            "target",
            "published",
            "host_ip",
            "protocol",
            "mode",
            "name",
            "app_protocol",
        ],
    );
    let target = node
        .get("target")
        .and_then(Node::as_scalar)
        .ok_or("`target` is required")?;
    let targets = parse_port_range(target)?;
    let published = match node.get("published").filter(|n| !n.is_null()) {
        Some(n) => Some(parse_port_range(
            n.as_scalar().ok_or("`published` must be a port")?,
        )?),
        None => None,
    };
    let protocol = match node.get("protocol").and_then(Node::as_scalar) {
        Some(p) => parse_protocol(p)?,
        None => "tcp".to_owned(),
    };
    let host_ip = node
        .get("host_ip")
        .and_then(Node::as_scalar)
        .map(str::to_owned);
    if let Some(mode) = node.get("mode").and_then(Node::as_scalar)
        && mode != "ingress"
        && mode != "host"
    {
        return Err(format!("port mode {mode:?} is not ingress or host"));
    }
    expand_ports(targets, published, host_ip, protocol, target)
}

fn read_attachments(node: &Node, reader: &mut Reader) -> BTreeMap<String, NetworkAttachment> {
    let mut out = BTreeMap::new();
    match &node.value {
        Value::Seq(_) => {
            for name in reader.strings(node, "networks") {
                out.insert(name, NetworkAttachment::default());
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries {
                let name = key.as_scalar().unwrap_or_default().to_owned();
                let path = join("networks", &name);
                let mut attachment = NetworkAttachment::default();
                if !value.is_null() {
                    reader.map(value, &path);
                    for (k, v) in value.as_map().unwrap_or_default() {
                        match k.as_scalar().unwrap_or_default() {
                            "aliases" => attachment.aliases = reader.strings(v, &join(&path, "aliases")),
                            "priority" | "gw_priority" => {
                                reader.int(v, &join(&path, k.as_scalar().unwrap_or_default()));
                            }
                            other if other.starts_with("x-") => {}
                            other => reader.invalid(
                                k,
                                &join(&path, other),
                                "is not supported: jaco assigns addresses on its own bridges (aliases and priority are)",
                            ),
                        }
                    }
                }
                out.insert(name, attachment);
            }
        }
        _ if node.is_null() => {}
        Value::Scalar { .. } => reader.invalid(node, "networks", "expected a list or a mapping"),
    }
    out
}

fn read_network_mode(node: &Node, reader: &mut Reader) -> Option<String> {
    let mode = reader.string(node, "network_mode")?;
    if mode.is_empty() {
        return None;
    }
    if mode == "none" || mode.strip_prefix("service:").is_some_and(|s| !s.is_empty()) {
        return Some(mode);
    }
    reader.invalid(
        node,
        "network_mode",
        format!(
            "{mode:?} is not supported: only `none` or `service:<name>` of the same deployment \
             (host, bridge and container modes bypass jaco's isolation, DNS and routes)"
        ),
    );
    None
}

fn read_depends_on(node: &Node, reader: &mut Reader) -> BTreeMap<String, Dependency> {
    let mut out = BTreeMap::new();
    let started = Dependency {
        condition: DependencyCondition::ServiceStarted,
        required: true,
        restart: false,
    };
    match &node.value {
        Value::Seq(_) => {
            for name in reader.strings(node, "depends_on") {
                out.insert(name, started.clone());
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries {
                let name = key.as_scalar().unwrap_or_default().to_owned();
                let path = join("depends_on", &name);
                let mut dependency = started.clone();
                if !value.is_null() {
                    reader.map(value, &path);
                    reader.closed_keys(value, &path, &["condition", "required", "restart"]);
                    if let Some(n) = value.get("condition") {
                        match reader.string(n, &join(&path, "condition")).as_deref() {
                            Some("service_started") => {}
                            Some("service_healthy") => {
                                dependency.condition = DependencyCondition::ServiceHealthy
                            }
                            Some(other) => {
                                reader.invalid(
                                    n,
                                    &join(&path, "condition"),
                                    format!(
                                        "condition {other:?} is not supported (service_started or service_healthy)"
                                    ),
                                );
                                if let Some(error) = reader.errors.last_mut() {
                                    error.details.insert(
                                        "reason".into(),
                                        "unsupported_depends_on_condition".into(),
                                    );
                                }
                            }
                            None => {}
                        }
                    }
                    if let Some(n) = value.get("required") {
                        dependency.required =
                            reader.bool(n, &join(&path, "required")).unwrap_or(true);
                    }
                    if let Some(n) = value.get("restart") {
                        dependency.restart =
                            reader.bool(n, &join(&path, "restart")).unwrap_or(false);
                    }
                }
                out.insert(name, dependency);
            }
        }
        _ if node.is_null() => {}
        Value::Scalar { .. } => reader.invalid(node, "depends_on", "expected a list or a mapping"),
    }
    out
}

fn read_healthcheck(node: &Node, reader: &mut Reader) -> Option<Healthcheck> {
    reader.map(node, "healthcheck");
    reader.closed_keys(
        node,
        "healthcheck",
        &[
            "test",
            "interval",
            "timeout",
            "retries",
            "start_period",
            "start_interval",
            "disable",
        ],
    );
    if let Some(n) = node.get("disable")
        && reader.bool(n, "healthcheck.disable") == Some(true)
    {
        return None;
    }
    let test = match node.get("test") {
        // No test: keep the image's HEALTHCHECK command, with the timings given here.
        None => Vec::new(),
        Some(n) => match &n.value {
            Value::Scalar { text, .. } if !n.is_null() => {
                vec!["CMD-SHELL".to_owned(), text.clone()]
            }
            _ => reader.strings(n, "healthcheck.test"),
        },
    };
    match test.first().map(String::as_str) {
        Some("NONE") => return None,
        None if node.get("test").is_none() => {}
        Some("CMD") | Some("CMD-SHELL") if test.len() > 1 => {}
        _ => {
            reader.invalid(
                node.get("test").unwrap_or(node),
                "healthcheck.test",
                "must be a string, or a list starting with CMD, CMD-SHELL or NONE followed by the command",
            );
            return None;
        }
    }
    let duration = |key: &str, reader: &mut Reader| {
        node.get(key)
            .and_then(|n| reader.duration(n, &join("healthcheck", key)))
    };
    Some(Healthcheck {
        test,
        interval: duration("interval", reader),
        timeout: duration("timeout", reader),
        start_period: duration("start_period", reader),
        start_interval: duration("start_interval", reader),
        retries: node
            .get("retries")
            .and_then(|n| reader.int_in(n, "healthcheck.retries", 0, 1_000_000))
            .map(|r| r as u32),
    })
}

fn read_ulimits(node: &Node, reader: &mut Reader) -> BTreeMap<String, Ulimit> {
    let mut out = BTreeMap::new();
    for (key, value) in reader.map(node, "ulimits") {
        let name = key.as_scalar().unwrap_or_default().to_owned();
        let path = join("ulimits", &name);
        let limit = if value.as_map().is_some() {
            reader.closed_keys(value, &path, &["soft", "hard"]);
            let soft = value
                .get("soft")
                .and_then(|n| reader.int(n, &join(&path, "soft")));
            let hard = value
                .get("hard")
                .and_then(|n| reader.int(n, &join(&path, "hard")));
            match (soft, hard) {
                (Some(soft), Some(hard)) if soft <= hard => Some(Ulimit { soft, hard }),
                (Some(_), Some(_)) => {
                    reader.invalid(value, &path, "soft limit exceeds hard limit");
                    None
                }
                _ => {
                    reader.invalid(value, &path, "needs both soft and hard");
                    None
                }
            }
        } else {
            reader.int(value, &path).map(|limit| Ulimit {
                soft: limit,
                hard: limit,
            })
        };
        if let Some(limit) = limit {
            out.insert(name, limit);
        }
    }
    out
}

fn read_devices(node: &Node, reader: &mut Reader) -> Vec<String> {
    let mut out = Vec::new();
    for (i, item) in reader.seq(node, "devices").iter().enumerate() {
        let field = format!("devices[{i}]");
        if item.as_map().is_some() {
            reader.closed_keys(item, &field, &["source", "target", "permissions"]);
            let Some(source) = item
                .get("source")
                .and_then(|n| reader.required_string(n, &join(&field, "source")))
            else {
                if item.get("source").is_none() {
                    reader.invalid(item, &join(&field, "source"), "is required");
                }
                continue;
            };
            let target = item
                .get("target")
                .and_then(|n| reader.string(n, &join(&field, "target")))
                .unwrap_or_else(|| source.clone());
            let permissions = item
                .get("permissions")
                .and_then(|n| reader.string(n, &join(&field, "permissions")))
                .unwrap_or_else(|| "rwm".to_owned());
            out.push(format!("{source}:{target}:{permissions}"));
        } else if let Some(text) = reader.string(item, &field) {
            out.push(text);
        }
    }
    out
}

fn read_logging(node: &Node, reader: &mut Reader) -> Option<Logging> {
    reader.map(node, "logging");
    reader.closed_keys(node, "logging", &["driver", "options"]);
    Some(Logging {
        driver: node
            .get("driver")
            .and_then(|n| reader.string(n, "logging.driver")),
        options: node
            .get("options")
            .map(|n| reader.dict(n, "logging.options", '='))
            .unwrap_or_default(),
    })
}

fn read_pull_policy(node: &Node, reader: &mut Reader) -> Option<PullPolicy> {
    match reader.string(node, "pull_policy")?.as_str() {
        "always" => Some(PullPolicy::Always),
        "missing" | "if_not_present" | "build" => Some(PullPolicy::Missing),
        "never" => Some(PullPolicy::Never),
        other => {
            reader.invalid(
                node,
                "pull_policy",
                format!("{other:?} is not supported (always, missing, never or build)"),
            );
            None
        }
    }
}

fn read_file_mounts(node: &Node, field: &str, reader: &mut Reader) -> Vec<FileMount> {
    let mut out = Vec::new();
    for (i, item) in reader.seq(node, field).iter().enumerate() {
        let path = format!("{field}[{i}]");
        let (source, target, uid, gid, mode) = if item.as_map().is_some() {
            reader.closed_keys(item, &path, &["source", "target", "uid", "gid", "mode"]);
            let Some(source) = item
                .get("source")
                .and_then(|n| reader.required_string(n, &join(&path, "source")))
            else {
                if item.get("source").is_none() {
                    reader.invalid(item, &join(&path, "source"), "is required");
                }
                continue;
            };
            let text = |key: &str, reader: &mut Reader| {
                item.get(key)
                    .and_then(|n| reader.string(n, &join(&path, key)))
            };
            let mode = item
                .get("mode")
                .and_then(|n| read_file_mode(n, &join(&path, "mode"), reader));
            (
                source,
                text("target", reader),
                text("uid", reader),
                text("gid", reader),
                mode,
            )
        } else {
            let Some(source) = reader.required_string(item, &path) else {
                continue;
            };
            (source, None, None, None, None)
        };
        let target = match (field, target) {
            ("secrets", Some(t)) if !t.starts_with('/') => format!("/run/secrets/{t}"),
            ("secrets", None) => format!("/run/secrets/{source}"),
            (_, Some(t)) => t,
            (_, None) => format!("/{source}"),
        };
        out.push(FileMount {
            source,
            target,
            uid,
            gid,
            mode,
            sha256: String::new(),
        });
    }
    out
}

/// File modes are octal in compose (`0440`); a plain YAML integer is read as octal digits too.
fn read_file_mode(node: &Node, field: &str, reader: &mut Reader) -> Option<u32> {
    let text = reader.string(node, field)?;
    let digits = text.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Some(mode),
        _ => {
            reader.invalid(node, field, format!("{text:?} is not an octal file mode"));
            None
        }
    }
}

/// Reads `deploy:`; returns `deploy.resources` when present (it supersedes the flat keys).
fn read_deploy(
    node: &Node,
    service: &mut ComposeService,
    reader: &mut Reader,
) -> Option<Resources> {
    let mut resources = None;
    for (key, value) in reader.map(node, "deploy") {
        let name = key.as_scalar().unwrap_or_default();
        if name.starts_with("x-") {
            continue;
        }
        let path = join("deploy", name);
        match support::service_key(&path).map(|row| row.class) {
            Some(Class::Honoured) => {}
            Some(Class::Ignored(why)) => {
                reader.warn(&path, format!("ignored: {why}"));
                continue;
            }
            _ => {
                reader.invalid(
                    key,
                    &path,
                    format!("unsupported compose field {path:?} (not in jaco's support matrix)"),
                );
                continue;
            }
        }
        match name {
            "replicas" => {
                let replicas = reader.int_in(value, &path, 0, 10_000).map(|r| r as u32);
                if let (Some(scale), Some(replicas)) = (service.replicas, replicas)
                    && scale != replicas
                {
                    reader.invalid(value, &path, format!("conflicts with scale: {scale}"));
                }
                service.replicas = replicas.or(service.replicas);
            }
            "resources" => resources = Some(read_resources(value, reader)),
            "update_config" => service.update = read_update_config(value, reader),
            other => unreachable!("deploy row {other} has no reader"),
        }
    }
    resources
}

fn read_resources(node: &Node, reader: &mut Reader) -> Resources {
    reader.map(node, "deploy.resources");
    reader.closed_keys(node, "deploy.resources", &["limits", "reservations"]);
    let read_values = |key: &str, reader: &mut Reader| {
        let path = join("deploy.resources", key);
        let mut values = ResourceValues::default();
        let Some(n) = node.get(key) else {
            return values;
        };
        reader.map(n, &path);
        reader.closed_keys(
            n,
            &path,
            &["cpus", "memory", "pids", "devices", "generic_resources"],
        );
        values.cpus = n
            .get("cpus")
            .and_then(|v| reader.number(v, &join(&path, "cpus")));
        values.memory = n
            .get("memory")
            .and_then(|v| reader.bytes(v, &join(&path, "memory")));
        values.pids = n
            .get("pids")
            .and_then(|v| reader.int_in(v, &join(&path, "pids"), -1, i64::MAX));
        values.devices = n.get("devices").map(Node::to_json);
        if n.get("generic_resources").is_some() {
            reader.warn(
                &join(&path, "generic_resources"),
                "ignored: swarm generic resources have no jaco equivalent",
            );
        }
        values
    };
    Resources {
        limits: read_values("limits", reader),
        reservations: read_values("reservations", reader),
    }
}

fn read_update_config(node: &Node, reader: &mut Reader) -> ComposeUpdate {
    let path = "deploy.update_config";
    reader.map(node, path);
    reader.closed_keys(
        node,
        path,
        &[
            "parallelism",
            "delay",
            "order",
            "monitor",
            "failure_action",
            "max_failure_ratio",
        ],
    );
    let mut update = ComposeUpdate::default();
    if let Some(n) = node.get("parallelism") {
        // Compose's 0 means "all at once"; jaco needs a bound, so 0 is refused.
        update.parallelism = reader
            .int_in(n, &join(path, "parallelism"), 1, 10_000)
            .map(|v| v as u32);
    }
    if let Some(n) = node.get("delay") {
        update.delay = reader.duration(n, &join(path, "delay"));
    }
    if let Some(n) = node.get("order") {
        update.order = super::jaco_file::read_order(n, &join(path, "order"), reader);
    }
    if let Some(n) = node.get("monitor") {
        update.monitor = reader.duration(n, &join(path, "monitor"));
    }
    if let Some(n) = node.get("failure_action") {
        update.failure_action =
            super::jaco_file::read_failure_action(n, &join(path, "failure_action"), reader);
    }
    if node.get("max_failure_ratio").is_some() {
        reader.warn(
            &join(path, "max_failure_ratio"),
            "ignored: any failed step triggers the failure action",
        );
    }
    update
}

/// Rules across services and top-level declarations.
fn check_references(compose: &Compose, inactive: &BTreeSet<String>, reader: &mut Reader) {
    let declared_networks: Vec<&str> = compose.networks.keys().map(String::as_str).collect();
    let mut published: BTreeMap<(u16, String), String> = BTreeMap::new();
    for (name, service) in &compose.services {
        reader.set_service(Some(name));
        let c = &service.container;
        let mark = service.mark;
        for network in c.networks.keys() {
            if !compose.networks.contains_key(network) {
                reader
                    .report(
                        Code::UnknownNetwork,
                        mark,
                        format!(
                            "unknown network: {network}; declared: [{}]",
                            declared_networks.join(", ")
                        ),
                    )
                    .details
                    .insert("network".into(), network.clone());
            }
        }
        for (dependency, spec) in &service.depends_on {
            let problem = if dependency == name {
                Some((
                    "invalid_depends_on",
                    format!("service {name:?} depends on itself"),
                ))
            } else if inactive.contains(dependency) && spec.required {
                Some((
                    "depends_on_disabled_service",
                    format!("depends on {dependency:?}, which no enabled profile activates"),
                ))
            } else if !compose.services.contains_key(dependency) && !inactive.contains(dependency) {
                Some((
                    "unknown_depends_on_service",
                    format!("depends on undefined service {dependency:?}"),
                ))
            } else {
                None
            };
            if let Some((reason, message)) = problem {
                reader
                    .report(Code::ValidationFailed, mark, message)
                    .details
                    .extend([
                        ("field".to_owned(), join("depends_on", dependency)),
                        ("reason".to_owned(), reason.to_owned()),
                    ]);
            }
        }
        if let Some(target) = c
            .network_mode
            .as_deref()
            .and_then(|m| m.strip_prefix("service:"))
            && (target == name || !compose.services.contains_key(target))
        {
            reader
                .report(
                    Code::ValidationFailed,
                    mark,
                    format!(
                        "network_mode service:{target} must name another service of this deployment"
                    ),
                )
                .details
                .insert("field".into(), "network_mode".into());
        }
        for (i, mount) in c.volumes.iter().enumerate() {
            if let (MountKind::Volume, Some(source)) = (mount.kind, &mount.source)
                && !compose.volumes.contains_key(source)
            {
                reader
                    .report(
                        Code::ValidationFailed,
                        mark,
                        format!("volume {source:?} is not declared in the top-level volumes"),
                    )
                    .details
                    .insert("field".into(), format!("volumes[{i}]"));
            }
        }
        for (kind, mounts, declared) in [
            ("secrets", &c.secrets, &compose.secrets),
            ("configs", &c.configs, &compose.configs),
        ] {
            for mount in mounts {
                if !declared.contains_key(&mount.source) {
                    reader
                        .report(
                            Code::ValidationFailed,
                            mark,
                            format!("{kind} {:?} is not declared at top level", mount.source),
                        )
                        .details
                        .insert("field".into(), kind.into());
                }
            }
        }
        for port in &c.ports {
            check_port(port, name, &mut published, reader);
        }
    }
    reader.set_service(None);
}

fn check_port(
    port: &Port,
    service: &str,
    published: &mut BTreeMap<(u16, String), String>,
    reader: &mut Reader,
) {
    let Some(host_port) = port.published else {
        return;
    };
    let entry = port.written.text.clone();
    let mark = Mark {
        line: port.written.line,
        column: port.written.column,
    };
    if host_port == 80 || host_port == 443 {
        reader
            .report(
                Code::ReservedPort,
                mark,
                format!(
                    "service {service:?} publishes reserved host port {host_port} (entry {entry:?}); \
                     80 and 443 belong to jaco's HTTP/S ingress: use routes in jaco.yaml"
                ),
            )
            .details
            .extend([
                ("port".to_owned(), host_port.to_string()),
                ("entry".to_owned(), entry),
            ]);
        return;
    }
    let key = (host_port, port.protocol.clone());
    if let Some(owner) = published.get(&key) {
        reader
            .report(
                Code::PortConflict,
                mark,
                format!(
                    "host port {host_port}/{} is published by both {owner:?} and {service:?}",
                    port.protocol
                ),
            )
            .details
            .extend([
                ("port".to_owned(), host_port.to_string()),
                ("other_service".to_owned(), owner.clone()),
            ]);
    } else {
        published.insert(key, service.to_owned());
    }
}

/// True when a published port becomes a cluster-wide L4 route (TCP, all interfaces).
pub fn makes_route(port: &Port) -> bool {
    port.published.is_some()
        && port.protocol == "tcp"
        && matches!(port.host_ip.as_deref(), None | Some("0.0.0.0") | Some("::"))
}

/// Compose's service-name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn is_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ports() {
        let one = |s: &str| parse_short_port(s).unwrap();
        assert_eq!(
            one("8080:80"),
            [Port {
                target: 80,
                published: Some(8080),
                host_ip: None,
                protocol: "tcp".into(),
                written: Written::default(),
            }]
        );
        assert_eq!(one("53/udp")[0].protocol, "udp");
        assert_eq!(one("9000")[0].published, None);
        assert_eq!(
            one("127.0.0.1:5432:5432")[0].host_ip.as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(one("[::1]:5432:5432")[0].host_ip.as_deref(), Some("::1"));
        assert_eq!(one("127.0.0.1::5432")[0].published, None);
        let range = one("8000-8002:9000-9002");
        assert_eq!(range.len(), 3);
        assert_eq!((range[2].published, range[2].target), (Some(8002), 9002));
        for bad in [
            "",
            "abc",
            "0:80",
            "70000:80",
            "8000-8001:80",
            "80/xyz",
            "9-1",
            "a.b.c:1:2",
            "1:2:3:4",
        ] {
            assert!(parse_short_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn short_mounts() {
        let m = parse_short_mount("data:/var/lib/data:ro").unwrap();
        assert_eq!(
            (m.kind, m.source.as_deref(), m.read_only),
            (MountKind::Volume, Some("data"), true)
        );
        let m = parse_short_mount("./conf:/etc/app:z").unwrap();
        assert_eq!(m.kind, MountKind::Bind);
        assert_eq!(m.options["bind.selinux"], "z");
        let m = parse_short_mount("/cache").unwrap();
        assert_eq!((m.kind, m.source), (MountKind::Volume, None));
        for bad in ["relative", "a:b", "a:/b:bogus", ":/b", "a:b:c:d"] {
            assert!(parse_short_mount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn route_making_ports() {
        let port = |s: &str| parse_short_port(s).unwrap().remove(0);
        assert!(makes_route(&port("8080:80")));
        assert!(makes_route(&port("0.0.0.0:8080:80")));
        assert!(!makes_route(&port("127.0.0.1:8080:80")));
        assert!(!makes_route(&port("8080:80/udp")));
        assert!(!makes_route(&port("80")));
    }

    #[test]
    fn service_names() {
        assert!(is_service_name("web"));
        assert!(is_service_name("Web_1.a-b"));
        assert!(!is_service_name("_web"));
        assert!(!is_service_name(""));
        assert!(!is_service_name("we b"));
    }
}
