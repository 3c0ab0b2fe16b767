//! A [`ContainerPlan`] → the Docker Engine API request that creates its container: every
//! compose field the support matrix classes as honoured, in the engine's own field names.
//!
//! This is the pure half of the Docker implementation ([`super::docker`] is the only user):
//! Docker API types appear here and nowhere else outside `docker.rs`. Choices that are jaco's
//! rather than Docker's:
//! - no restart policy (jaco restarts), no published ports (they become cluster-wide L4 routes,
//!   SPEC §2.4), `expose` is documentation;
//! - no compose healthcheck means Docker's `NONE`, so an image's own `HEALTHCHECK` does not
//!   make Docker disagree with the replica state jaco reports;
//! - `service:<name>` in `network_mode`, `ipc` and `pid` becomes `container:<peer>` with the
//!   peer container the plan names;
//! - bind mounts go through `Binds` (Docker creates a missing host path, as `docker run -v`
//!   and compose do) unless `bind.create_host_path: false` asks for the strict `Mounts` form;
//! - jaco's labels win over compose labels of the same name.
//!
//! Fields a Docker API 1.41 engine cannot express are listed in docs/compose-support.md. This
//! module must not perform I/O.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, EndpointSettings, HealthConfig, HostConfig,
    HostConfigCgroupnsModeEnum, HostConfigLogConfig, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountTmpfsOptions, MountType, MountVolumeOptions,
    NetworkingConfig, ResourcesBlkioWeightDevice, ResourcesUlimits, ThrottleDevice,
};
use serde_json::Value;

use super::ContainerPlan;
use crate::error::{Code, Error};
use crate::manifest::spec::{ContainerSpec, MountKind};
use crate::manifest::units::{parse_bytes, parse_duration};

/// The create call for one container.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    /// Container name.
    pub name: String,
    /// `os[/arch[/variant]]` to select from a multi-platform image.
    pub platform: Option<String>,
    /// The body of `POST /containers/create`.
    pub body: ContainerCreateBody,
    /// Networks beyond the first, connected before the container starts (engines before API
    /// 1.44 attach only one network at creation).
    pub more_networks: Vec<(String, EndpointSettings)>,
}

/// The create request for `plan`; `validation_failed` naming the field when a value cannot be
/// expressed.
pub fn create_request(plan: &ContainerPlan) -> Result<CreateRequest, Error> {
    let spec = plan.spec.as_ref();
    let problem = |field: &str, why: String| {
        Error::new(
            Code::ValidationFailed,
            format!("service {}: {field}: {why}", plan.identity.service),
        )
        .with("service", &plan.identity.service)
        .with("field", field)
    };
    let mut labels = spec.labels.clone();
    labels.extend(plan.identity.labels());
    let network_mode = spec
        .network_mode
        .as_deref()
        .map(|mode| namespace_mode(plan, "network_mode", mode))
        .transpose()?;
    let (binds, mounts) = mounts(plan)?;
    let mut endpoints = plan.networks.iter().map(|attachment| {
        (
            attachment.network.clone(),
            EndpointSettings {
                aliases: Some(attachment.aliases.clone()),
                ..Default::default()
            },
        )
    });
    let (networking_config, more_networks) = if network_mode.is_some() {
        (None, Vec::new())
    } else {
        let first = endpoints.next().map(|endpoint| NetworkingConfig {
            endpoints_config: Some(HashMap::from([endpoint])),
        });
        (first, endpoints.collect())
    };
    let host_config = HostConfig {
        binds: non_empty(binds),
        mounts: non_empty(mounts),
        network_mode,
        ipc_mode: spec
            .ipc
            .as_deref()
            .map(|mode| namespace_mode(plan, "ipc", mode))
            .transpose()?,
        pid_mode: spec
            .pid
            .as_deref()
            .map(|mode| namespace_mode(plan, "pid", mode))
            .transpose()?,
        uts_mode: spec.uts.clone(),
        userns_mode: spec.userns_mode.clone(),
        cgroupns_mode: spec
            .cgroup
            .as_deref()
            .map(|mode| match mode {
                "host" => Ok(HostConfigCgroupnsModeEnum::HOST),
                "private" => Ok(HostConfigCgroupnsModeEnum::PRIVATE),
                other => Err(problem(
                    "cgroup",
                    format!("{other:?} is not host or private"),
                )),
            })
            .transpose()?,
        cgroup_parent: spec.cgroup_parent.clone(),
        group_add: non_empty(spec.group_add.clone()),
        extra_hosts: non_empty(spec.extra_hosts.iter().map(|h| extra_host(h)).collect()),
        dns: non_empty(if spec.dns.is_empty() {
            plan.dns_servers.clone()
        } else {
            spec.dns.clone()
        }),
        dns_search: non_empty(spec.dns_search.clone()),
        dns_options: non_empty(dns_options(plan)),
        init: spec.init,
        readonly_rootfs: spec.read_only,
        runtime: spec.runtime.clone(),
        tmpfs: non_empty_map(spec.tmpfs.iter().map(|entry| match entry.split_once(':') {
            Some((path, options)) => (path.to_owned(), options.to_owned()),
            None => (entry.clone(), String::new()),
        })),
        cap_add: non_empty(spec.cap_add.clone()),
        cap_drop: non_empty(spec.cap_drop.clone()),
        sysctls: non_empty_map(spec.sysctls.clone()),
        ulimits: non_empty(
            (spec.ulimits.iter())
                .map(|(name, limit)| ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(limit.soft),
                    hard: Some(limit.hard),
                })
                .collect(),
        ),
        shm_size: spec
            .shm_size
            .map(|size| signed(size, "shm_size"))
            .transpose()
            .map_err(|why| problem("shm_size", why))?,
        devices: non_empty(
            (spec.devices.iter())
                .filter(|d| !is_cdi(d))
                .map(|d| device_mapping(d))
                .collect(),
        ),
        device_cgroup_rules: non_empty(spec.device_cgroup_rules.clone()),
        device_requests: non_empty(device_requests(spec).map_err(|why| problem("gpus", why))?),
        log_config: spec.logging.as_ref().map(|logging| HostConfigLogConfig {
            typ: logging.driver.clone(),
            config: non_empty_map(logging.options.clone()),
        }),
        privileged: spec.privileged,
        security_opt: non_empty(spec.security_opt.clone()),
        storage_opt: non_empty_map(spec.storage_opt.clone()),
        annotations: non_empty_map(spec.annotations.clone()),
        ..resources(spec).map_err(|(field, why)| problem(field, why))?
    };
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        // `entrypoint: []` or `""` clears the image's entrypoint, as `--entrypoint ""` does.
        entrypoint: spec
            .entrypoint
            .as_ref()
            .map(|words| match words.as_slice() {
                [] => vec![String::new()],
                _ => words.clone(),
            }),
        env: non_empty(
            (spec.environment.iter())
                .map(|(key, value)| format!("{key}={value}"))
                .collect(),
        ),
        labels: Some(labels.into_iter().collect()),
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        hostname: spec.hostname.clone(),
        domainname: spec.domainname.clone(),
        tty: spec.tty,
        open_stdin: spec.stdin_open,
        healthcheck: Some(healthcheck(spec).map_err(|why| problem("healthcheck", why))?),
        stop_signal: spec.stop_signal.clone(),
        stop_timeout: spec
            .stop_grace_period
            .as_deref()
            .map(|text| duration(text).map(|d| d.as_secs_f64().ceil() as i64))
            .transpose()
            .map_err(|why| problem("stop_grace_period", why))?,
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    };
    Ok(CreateRequest {
        name: plan.name.clone(),
        platform: spec.platform.clone(),
        body,
        more_networks,
    })
}

/// `service:<name>` → `container:<peer>`; any other mode as written.
fn namespace_mode(plan: &ContainerPlan, field: &str, mode: &str) -> Result<String, Error> {
    let Some(service) = mode.strip_prefix("service:") else {
        return Ok(mode.to_owned());
    };
    match plan.peers.get(service) {
        Some(peer) => Ok(format!("container:{peer}")),
        None => Err(Error::new(
            Code::ValidationFailed,
            format!("{field}: no container of service {service} to share its namespace with"),
        )
        .with("service", &plan.identity.service)
        .with("field", field)),
    }
}

/// Compose accepts `host=ip` next to Docker's `host:ip`.
fn extra_host(entry: &str) -> String {
    match entry.split_once('=') {
        Some((host, ip)) => format!("{host}:{ip}"),
        None => entry.to_owned(),
    }
}

/// The `Binds` and `Mounts` of the compose volumes, secrets and configs.
fn mounts(plan: &ContainerPlan) -> Result<(Vec<String>, Vec<Mount>), Error> {
    let problem = |index: usize, why: String| {
        Error::new(
            Code::ValidationFailed,
            format!("service {}: volumes[{index}]: {why}", plan.identity.service),
        )
        .with("service", &plan.identity.service)
        .with("field", format!("volumes[{index}]"))
    };
    let mut binds = Vec::new();
    let mut mounts = Vec::new();
    for (index, mount) in plan.spec.volumes.iter().enumerate() {
        let option = |key: &str| mount.options.get(key);
        match mount.kind {
            MountKind::Volume => {
                let source = match &mount.source {
                    None => None,
                    Some(name) => Some(plan.volumes.get(name).cloned().ok_or_else(|| {
                        problem(index, format!("named volume {name:?} is not declared"))
                    })?),
                };
                let no_copy = option("volume.nocopy").and_then(Value::as_bool);
                let subpath = option("volume.subpath").and_then(Value::as_str);
                mounts.push(Mount {
                    typ: Some(MountType::VOLUME),
                    source,
                    target: Some(mount.target.clone()),
                    read_only: Some(mount.read_only),
                    volume_options: (no_copy.is_some() || subpath.is_some()).then(|| {
                        MountVolumeOptions {
                            no_copy,
                            subpath: subpath.map(str::to_owned),
                            ..Default::default()
                        }
                    }),
                    ..Default::default()
                });
            }
            MountKind::Bind => {
                let source = mount.source.clone().unwrap_or_default();
                let propagation = option("bind.propagation").and_then(Value::as_str);
                let selinux = option("bind.selinux").and_then(Value::as_str);
                if option("bind.create_host_path").and_then(Value::as_bool) == Some(false) {
                    if selinux.is_some() {
                        return Err(problem(
                            index,
                            "bind.selinux needs bind.create_host_path (Docker relabels only \
                             short-form binds)"
                                .into(),
                        ));
                    }
                    mounts.push(Mount {
                        typ: Some(MountType::BIND),
                        source: Some(source),
                        target: Some(mount.target.clone()),
                        read_only: Some(mount.read_only),
                        bind_options: propagation
                            .map(|p| {
                                p.parse::<MountBindOptionsPropagationEnum>()
                                    .map(|propagation| MountBindOptions {
                                        propagation: Some(propagation),
                                        ..Default::default()
                                    })
                                    .map_err(|_| {
                                        problem(index, format!("unknown propagation {p:?}"))
                                    })
                            })
                            .transpose()?,
                        ..Default::default()
                    });
                } else {
                    let mut flags = vec![if mount.read_only { "ro" } else { "rw" }];
                    flags.extend(propagation);
                    flags.extend(selinux);
                    binds.push(format!("{source}:{}:{}", mount.target, flags.join(",")));
                }
            }
            MountKind::Tmpfs => {
                let size = option("tmpfs.size")
                    .map(|v| byte_value(v).and_then(|b| signed(b, "tmpfs.size")))
                    .transpose()
                    .map_err(|why| problem(index, why))?;
                let mode = option("tmpfs.mode")
                    .map(file_mode)
                    .transpose()
                    .map_err(|why| problem(index, why))?;
                mounts.push(Mount {
                    typ: Some(MountType::TMPFS),
                    target: Some(mount.target.clone()),
                    read_only: Some(mount.read_only),
                    tmpfs_options: (size.is_some() || mode.is_some()).then_some(
                        MountTmpfsOptions {
                            size_bytes: size,
                            mode,
                            ..Default::default()
                        },
                    ),
                    ..Default::default()
                });
            }
        }
    }
    for file in &plan.files {
        mounts.push(Mount {
            typ: Some(MountType::BIND),
            source: Some(file.source.display().to_string()),
            target: Some(file.target.clone()),
            read_only: Some(true),
            ..Default::default()
        });
    }
    Ok((binds, mounts))
}

/// The healthcheck; Docker's `NONE` when the service has none (or disabled it).
fn healthcheck(spec: &ContainerSpec) -> Result<HealthConfig, String> {
    let Some(check) = &spec.healthcheck else {
        return Ok(HealthConfig {
            test: Some(vec!["NONE".to_owned()]),
            ..Default::default()
        });
    };
    let nanos = |text: &Option<String>| -> Result<Option<i64>, String> {
        text.as_deref()
            .map(|t| duration(t).map(|d| d.as_nanos().min(i64::MAX as u128) as i64))
            .transpose()
    };
    Ok(HealthConfig {
        // An empty test keeps the image's HEALTHCHECK command with these timings.
        test: non_empty(check.test.clone()),
        interval: nanos(&check.interval)?,
        timeout: nanos(&check.timeout)?,
        retries: check.retries.map(i64::from),
        start_period: nanos(&check.start_period)?,
        start_interval: nanos(&check.start_interval)?,
    })
}

/// CPU, memory, pids and block I/O controls (deploy.resources wins over the flat keys; the
/// manifest already folded them).
fn resources(spec: &ContainerSpec) -> Result<HostConfig, (&'static str, String)> {
    let limits = &spec.resources.limits;
    let reservations = &spec.resources.reservations;
    let memory = |value: Option<u64>, field: &'static str| {
        value
            .map(|v| signed(v, field).map_err(|why| (field, why)))
            .transpose()
    };
    let mut host = HostConfig {
        nano_cpus: limits.cpus.map(|cpus| (cpus * 1e9).round() as i64),
        memory: memory(limits.memory, "resources.limits.memory")?,
        memory_reservation: memory(reservations.memory, "resources.reservations.memory")?,
        pids_limit: limits.pids,
        cpu_shares: spec.cpu_shares,
        cpu_quota: spec.cpu_quota,
        cpu_period: spec.cpu_period,
        cpuset_cpus: spec.cpuset.clone(),
        memory_swap: spec.memswap_limit,
        memory_swappiness: spec.mem_swappiness,
        oom_kill_disable: spec.oom_kill_disable,
        oom_score_adj: spec.oom_score_adj,
        ..Default::default()
    };
    if let Some(blkio) = &spec.blkio_config {
        blkio_config(blkio, &mut host).map_err(|why| ("blkio_config", why))?;
    }
    Ok(host)
}

fn blkio_config(blkio: &Value, host: &mut HostConfig) -> Result<(), String> {
    let object = blkio.as_object().ok_or("expected a mapping")?;
    for (key, value) in object {
        match key.as_str() {
            "weight" => host.blkio_weight = Some(integer(value, "weight")?),
            "weight_device" => {
                let mut devices = Vec::new();
                for entry in list(value, key)? {
                    devices.push(ResourcesBlkioWeightDevice {
                        path: Some(text(field(entry, "path")?, "path")?),
                        weight: Some(integer(field(entry, "weight")?, "weight")?),
                    });
                }
                host.blkio_weight_device = Some(devices);
            }
            "device_read_bps" | "device_write_bps" | "device_read_iops" | "device_write_iops" => {
                let mut devices = Vec::new();
                for entry in list(value, key)? {
                    let rate = field(entry, "rate")?;
                    let rate = if key.ends_with("bps") {
                        byte_value(rate).and_then(|b| signed(b, "rate"))?
                    } else {
                        integer(rate, "rate")?
                    };
                    devices.push(ThrottleDevice {
                        path: Some(text(field(entry, "path")?, "path")?),
                        rate: Some(rate),
                    });
                }
                let slot = match key.as_str() {
                    "device_read_bps" => &mut host.blkio_device_read_bps,
                    "device_write_bps" => &mut host.blkio_device_write_bps,
                    "device_read_iops" => &mut host.blkio_device_read_iops,
                    _ => &mut host.blkio_device_write_iops,
                };
                *slot = Some(devices);
            }
            other => return Err(format!("unknown key {other:?}")),
        }
    }
    Ok(())
}

/// `gpus`, `deploy.resources.reservations.devices` and CDI device names as device requests.
fn device_requests(spec: &ContainerSpec) -> Result<Vec<DeviceRequest>, String> {
    let mut requests = Vec::new();
    match &spec.gpus {
        None => {}
        Some(Value::String(all)) if all == "all" => requests.push(DeviceRequest {
            count: Some(-1),
            capabilities: Some(vec![vec!["gpu".to_owned()]]),
            ..Default::default()
        }),
        Some(Value::Array(items)) => {
            for item in items {
                requests.push(device_request(item, Some("gpu"))?);
            }
        }
        Some(other) => return Err(format!("expected `all` or a list, not {other}")),
    }
    if let Some(devices) = &spec.resources.reservations.devices {
        for item in list(devices, "devices")? {
            requests.push(device_request(item, None)?);
        }
    }
    for name in spec.devices.iter().filter(|d| is_cdi(d)) {
        requests.push(DeviceRequest {
            driver: Some("cdi".to_owned()),
            device_ids: Some(vec![name.clone()]),
            ..Default::default()
        });
    }
    Ok(requests)
}

/// One `{driver, count, device_ids, capabilities, options}` entry.
fn device_request(item: &Value, default_capability: Option<&str>) -> Result<DeviceRequest, String> {
    let object = item
        .as_object()
        .ok_or("a device request must be a mapping")?;
    let mut request = DeviceRequest::default();
    for (key, value) in object {
        match key.as_str() {
            "driver" => request.driver = Some(text(value, key)?),
            "count" => {
                request.count = Some(match value {
                    Value::String(all) if all == "all" => -1,
                    _ => integer(value, key)?,
                })
            }
            "device_ids" => request.device_ids = Some(strings(value, key)?),
            "capabilities" => request.capabilities = Some(vec![strings(value, key)?]),
            "options" => {
                let options = value.as_object().ok_or("options must be a mapping")?;
                request.options = Some(
                    (options.iter())
                        .map(|(k, v)| Ok((k.clone(), scalar_text(v, k)?)))
                        .collect::<Result<_, String>>()?,
                );
            }
            other => return Err(format!("unknown device request key {other:?}")),
        }
    }
    if request.capabilities.is_none() {
        let capability = default_capability.ok_or("a device reservation needs capabilities")?;
        request.capabilities = Some(vec![vec![capability.to_owned()]]);
    }
    Ok(request)
}

/// A CDI device name (`vendor.com/class=name`) rather than a device path.
fn is_cdi(device: &str) -> bool {
    !device.starts_with('/') && device.contains('=')
}

/// `host[:container[:permissions]]`.
fn device_mapping(device: &str) -> DeviceMapping {
    let mut parts = device.splitn(3, ':');
    let host = parts.next().unwrap_or_default().to_owned();
    let container = parts.next().map_or_else(|| host.clone(), str::to_owned);
    let permissions = parts.next().unwrap_or("rwm").to_owned();
    DeviceMapping {
        path_on_host: Some(host),
        path_in_container: Some(container),
        cgroup_permissions: Some(permissions),
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

/// A byte count written as a number or a size string (`12mb`).
fn byte_value(value: &Value) -> Result<u64, String> {
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("{n} is not a byte count")),
        Value::String(s) => parse_bytes(s),
        other => Err(format!("{other} is not a byte count")),
    }
}

/// A file mode written as a number (read as octal digits, like compose) or `0o1777`.
fn file_mode(value: &Value) -> Result<i64, String> {
    let digits = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim_start_matches("0o").to_owned(),
        other => return Err(format!("{other} is not a file mode")),
    };
    i64::from_str_radix(&digits, 8).map_err(|_| format!("{digits:?} is not an octal file mode"))
}

fn signed(value: u64, field: &str) -> Result<i64, String> {
    i64::try_from(value).map_err(|_| format!("{field} {value} is too large"))
}

fn field<'v>(entry: &'v Value, key: &str) -> Result<&'v Value, String> {
    entry
        .get(key)
        .ok_or_else(|| format!("an entry lacks {key:?}"))
}

fn list<'v>(value: &'v Value, key: &str) -> Result<&'v Vec<Value>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("{key} must be a list"))
}

fn integer<T: TryFrom<i64>>(value: &Value, key: &str) -> Result<T, String> {
    let number = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    number
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("{key} {value} is not a valid integer"))
}

fn text(value: &Value, key: &str) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{key} must be a string"))
}

fn scalar_text(value: &Value, key: &str) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(value.to_string()),
        _ => Err(format!("{key} must be a scalar")),
    }
}

fn strings(value: &Value, key: &str) -> Result<Vec<String>, String> {
    list(value, key)?
        .iter()
        .map(|item| scalar_text(item, key))
        .collect()
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

fn non_empty_map(
    items: impl IntoIterator<Item = (String, String)>,
) -> Option<HashMap<String, String>> {
    let map: HashMap<String, String> = items.into_iter().collect();
    (!map.is_empty()).then_some(map)
}

/// The resolver options of a container: the compose `dns_opt`, else — when jaco's responders
/// serve it — `attempts:2` (the resolvers' own default). Naming any option stops Docker from
/// copying the host's, and a host `ndots` (Docker's own containers carry `ndots:0`) makes
/// Docker's embedded resolver answer single-label names itself instead of forwarding them,
/// which would hide `<service>` from the gateway responder.
fn dns_options(plan: &ContainerPlan) -> Vec<String> {
    if !plan.spec.dns_opt.is_empty() {
        plan.spec.dns_opt.clone()
    } else if plan.spec.dns.is_empty() && !plan.dns_servers.is_empty() {
        vec!["attempts:2".to_owned()]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::manifest::spec::{
        FileMount, Healthcheck, Logging, Mount as SpecMount, NetworkAttachment as SpecAttachment,
        ResourceValues, Resources, Ulimit,
    };
    use crate::runtime::{FileBind, NetworkAttachment, ReplicaIdentity};

    fn plan(spec: ContainerSpec) -> ContainerPlan {
        ContainerPlan {
            name: "jaco_shop-web-1".into(),
            identity: ReplicaIdentity {
                cluster_id: "c1".into(),
                deployment: "shop".into(),
                service: "web".into(),
                replica_id: "shop-web-1".into(),
                spec_hash: "h1".into(),
                revision: 3,
                restart_generation: 0,
                node: "n1".into(),
            },
            spec: Arc::new(spec),
            networks: vec![NetworkAttachment {
                network: "jaco_shop_default".into(),
                aliases: vec!["web".into()],
            }],
            peers: BTreeMap::from([("db".into(), "jaco_shop-db-1".into())]),
            volumes: BTreeMap::from([("data".into(), "jaco_shop_data".into())]),
            files: Vec::new(),
            dns_servers: vec!["10.244.0.1".into()],
        }
    }

    fn base() -> ContainerSpec {
        ContainerSpec {
            image: "nginx:1.27".into(),
            ..ContainerSpec::default()
        }
    }

    /// The create body as the Docker API receives it.
    fn wire(spec: ContainerSpec) -> Value {
        let request = create_request(&plan(spec)).expect("maps");
        serde_json::to_value(&request.body).expect("serialises")
    }

    fn mount(kind: MountKind, source: Option<&str>, target: &str) -> SpecMount {
        SpecMount {
            kind,
            source: source.map(str::to_owned),
            target: target.into(),
            read_only: false,
            options: BTreeMap::new(),
        }
    }

    type Case = (&'static str, fn(&mut ContainerSpec), &'static str, Value);

    /// One row per honoured field: (name, how the spec sets it, JSON pointer, wire value).
    fn cases() -> Vec<Case> {
        vec![
            ("image", |_| {}, "/Image", json!("nginx:1.27")),
            (
                "command",
                |s| s.command = Some(vec!["sh".into(), "-c".into(), "x".into()]),
                "/Cmd",
                json!(["sh", "-c", "x"]),
            ),
            (
                "entrypoint",
                |s| s.entrypoint = Some(vec!["/init".into()]),
                "/Entrypoint",
                json!(["/init"]),
            ),
            (
                "entrypoint cleared",
                |s| s.entrypoint = Some(vec![]),
                "/Entrypoint",
                json!([""]),
            ),
            (
                "environment",
                |s| {
                    s.environment.insert("B".into(), "2".into());
                    s.environment.insert("A".into(), "x=y".into());
                },
                "/Env",
                json!(["A=x=y", "B=2"]),
            ),
            (
                "user",
                |s| s.user = Some("1000:1000".into()),
                "/User",
                json!("1000:1000"),
            ),
            (
                "group_add",
                |s| s.group_add = vec!["audio".into()],
                "/HostConfig/GroupAdd",
                json!(["audio"]),
            ),
            (
                "working_dir",
                |s| s.working_dir = Some("/srv".into()),
                "/WorkingDir",
                json!("/srv"),
            ),
            (
                "hostname",
                |s| s.hostname = Some("web".into()),
                "/Hostname",
                json!("web"),
            ),
            (
                "domainname",
                |s| s.domainname = Some("example.com".into()),
                "/Domainname",
                json!("example.com"),
            ),
            (
                "extra_hosts",
                |s| s.extra_hosts = vec!["a:10.0.0.1".into(), "b=::1".into()],
                "/HostConfig/ExtraHosts",
                json!(["a:10.0.0.1", "b:::1"]),
            ),
            (
                "dns",
                |s| s.dns = vec!["1.1.1.1".into()],
                "/HostConfig/Dns",
                json!(["1.1.1.1"]),
            ),
            (
                "dns_search",
                |s| s.dns_search = vec!["corp".into()],
                "/HostConfig/DnsSearch",
                json!(["corp"]),
            ),
            (
                "dns_opt",
                |s| s.dns_opt = vec!["ndots:2".into()],
                "/HostConfig/DnsOptions",
                json!(["ndots:2"]),
            ),
            (
                "init",
                |s| s.init = Some(true),
                "/HostConfig/Init",
                json!(true),
            ),
            (
                "read_only",
                |s| s.read_only = Some(true),
                "/HostConfig/ReadonlyRootfs",
                json!(true),
            ),
            ("tty", |s| s.tty = Some(true), "/Tty", json!(true)),
            (
                "stdin_open",
                |s| s.stdin_open = Some(true),
                "/OpenStdin",
                json!(true),
            ),
            (
                "runtime",
                |s| s.runtime = Some("runc".into()),
                "/HostConfig/Runtime",
                json!("runc"),
            ),
            (
                "tmpfs",
                |s| s.tmpfs = vec!["/run".into(), "/tmp:size=64m,mode=1777".into()],
                "/HostConfig/Tmpfs",
                json!({"/run": "", "/tmp": "size=64m,mode=1777"}),
            ),
            (
                "stop_signal",
                |s| s.stop_signal = Some("SIGINT".into()),
                "/StopSignal",
                json!("SIGINT"),
            ),
            (
                "stop_grace_period",
                |s| s.stop_grace_period = Some("1m30s".into()),
                "/StopTimeout",
                json!(90),
            ),
            (
                "stop_grace_period rounds up",
                |s| s.stop_grace_period = Some("1500ms".into()),
                "/StopTimeout",
                json!(2),
            ),
            (
                "cap_add",
                |s| s.cap_add = vec!["NET_ADMIN".into()],
                "/HostConfig/CapAdd",
                json!(["NET_ADMIN"]),
            ),
            (
                "cap_drop",
                |s| s.cap_drop = vec!["ALL".into()],
                "/HostConfig/CapDrop",
                json!(["ALL"]),
            ),
            (
                "sysctls",
                |s| {
                    s.sysctls.insert("net.core.somaxconn".into(), "1024".into());
                },
                "/HostConfig/Sysctls",
                json!({"net.core.somaxconn": "1024"}),
            ),
            (
                "ulimits",
                |s| {
                    s.ulimits.insert(
                        "nofile".into(),
                        Ulimit {
                            soft: 1024,
                            hard: 2048,
                        },
                    );
                },
                "/HostConfig/Ulimits",
                json!([{"Name": "nofile", "Soft": 1024, "Hard": 2048}]),
            ),
            (
                "shm_size",
                |s| s.shm_size = Some(64 << 20),
                "/HostConfig/ShmSize",
                json!(64 << 20),
            ),
            (
                "ipc",
                |s| s.ipc = Some("shareable".into()),
                "/HostConfig/IpcMode",
                json!("shareable"),
            ),
            (
                "ipc service:",
                |s| s.ipc = Some("service:db".into()),
                "/HostConfig/IpcMode",
                json!("container:jaco_shop-db-1"),
            ),
            (
                "pid",
                |s| s.pid = Some("host".into()),
                "/HostConfig/PidMode",
                json!("host"),
            ),
            (
                "uts",
                |s| s.uts = Some("host".into()),
                "/HostConfig/UTSMode",
                json!("host"),
            ),
            (
                "userns_mode",
                |s| s.userns_mode = Some("host".into()),
                "/HostConfig/UsernsMode",
                json!("host"),
            ),
            (
                "cgroup",
                |s| s.cgroup = Some("private".into()),
                "/HostConfig/CgroupnsMode",
                json!("private"),
            ),
            (
                "cgroup_parent",
                |s| s.cgroup_parent = Some("/jaco".into()),
                "/HostConfig/CgroupParent",
                json!("/jaco"),
            ),
            (
                "devices",
                |s| s.devices = vec!["/dev/fuse".into(), "/dev/sda:/dev/xvda:r".into()],
                "/HostConfig/Devices",
                json!([
                    {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"},
                    {"PathOnHost": "/dev/sda", "PathInContainer": "/dev/xvda", "CgroupPermissions": "r"}
                ]),
            ),
            (
                "device_cgroup_rules",
                |s| s.device_cgroup_rules = vec!["c 1:3 mr".into()],
                "/HostConfig/DeviceCgroupRules",
                json!(["c 1:3 mr"]),
            ),
            (
                "gpus all",
                |s| s.gpus = Some(json!("all")),
                "/HostConfig/DeviceRequests",
                json!([{"Count": -1, "Capabilities": [["gpu"]]}]),
            ),
            (
                "gpus list",
                |s| {
                    s.gpus =
                        Some(json!([{"driver": "nvidia", "count": 2, "device_ids": ["0", "1"]}]))
                },
                "/HostConfig/DeviceRequests",
                json!([{"Driver": "nvidia", "Count": 2, "DeviceIDs": ["0", "1"], "Capabilities": [["gpu"]]}]),
            ),
            (
                "CDI device",
                |s| s.devices = vec!["vendor.com/gpu=0".into()],
                "/HostConfig/DeviceRequests",
                json!([{"Driver": "cdi", "DeviceIDs": ["vendor.com/gpu=0"]}]),
            ),
            (
                "logging",
                |s| {
                    s.logging = Some(Logging {
                        driver: Some("json-file".into()),
                        options: BTreeMap::from([("max-size".into(), "10m".into())]),
                    })
                },
                "/HostConfig/LogConfig",
                json!({"Type": "json-file", "Config": {"max-size": "10m"}}),
            ),
            (
                "privileged",
                |s| s.privileged = Some(true),
                "/HostConfig/Privileged",
                json!(true),
            ),
            (
                "security_opt",
                |s| s.security_opt = vec!["no-new-privileges:true".into()],
                "/HostConfig/SecurityOpt",
                json!(["no-new-privileges:true"]),
            ),
            (
                "limits.cpus",
                |s| s.resources.limits.cpus = Some(1.5),
                "/HostConfig/NanoCpus",
                json!(1_500_000_000i64),
            ),
            (
                "limits.memory",
                |s| s.resources.limits.memory = Some(512 << 20),
                "/HostConfig/Memory",
                json!(512 << 20),
            ),
            (
                "limits.pids",
                |s| s.resources.limits.pids = Some(100),
                "/HostConfig/PidsLimit",
                json!(100),
            ),
            (
                "reservations.memory",
                |s| s.resources.reservations.memory = Some(256 << 20),
                "/HostConfig/MemoryReservation",
                json!(256 << 20),
            ),
            (
                "reservations.devices",
                |s| {
                    s.resources.reservations.devices =
                        Some(json!([{"capabilities": ["gpu", "utility"], "count": "all"}]))
                },
                "/HostConfig/DeviceRequests",
                json!([{"Count": -1, "Capabilities": [["gpu", "utility"]]}]),
            ),
            (
                "cpu_shares",
                |s| s.cpu_shares = Some(512),
                "/HostConfig/CpuShares",
                json!(512),
            ),
            (
                "cpu_quota",
                |s| s.cpu_quota = Some(50_000),
                "/HostConfig/CpuQuota",
                json!(50_000),
            ),
            (
                "cpu_period",
                |s| s.cpu_period = Some(100_000),
                "/HostConfig/CpuPeriod",
                json!(100_000),
            ),
            (
                "cpuset",
                |s| s.cpuset = Some("0-1".into()),
                "/HostConfig/CpusetCpus",
                json!("0-1"),
            ),
            (
                "memswap_limit",
                |s| s.memswap_limit = Some(-1),
                "/HostConfig/MemorySwap",
                json!(-1),
            ),
            (
                "mem_swappiness",
                |s| s.mem_swappiness = Some(10),
                "/HostConfig/MemorySwappiness",
                json!(10),
            ),
            (
                "oom_kill_disable",
                |s| s.oom_kill_disable = Some(true),
                "/HostConfig/OomKillDisable",
                json!(true),
            ),
            (
                "oom_score_adj",
                |s| s.oom_score_adj = Some(-500),
                "/HostConfig/OomScoreAdj",
                json!(-500),
            ),
            (
                "blkio weight",
                |s| {
                    s.blkio_config = Some(
                        json!({"weight": 300, "weight_device": [{"path": "/dev/sda", "weight": 400}]}),
                    )
                },
                "/HostConfig/BlkioWeightDevice",
                json!([{"Path": "/dev/sda", "Weight": 400}]),
            ),
            (
                "blkio rates",
                |s| {
                    s.blkio_config = Some(
                        json!({"device_read_bps": [{"path": "/dev/sda", "rate": "12mb"}], "device_write_iops": [{"path": "/dev/sda", "rate": 30}]}),
                    )
                },
                "/HostConfig/BlkioDeviceReadBps",
                json!([{"Path": "/dev/sda", "Rate": 12 << 20}]),
            ),
            (
                "storage_opt",
                |s| {
                    s.storage_opt.insert("size".into(), "20G".into());
                },
                "/HostConfig/StorageOpt",
                json!({"size": "20G"}),
            ),
            (
                "annotations",
                |s| {
                    s.annotations.insert("com.example.a".into(), "1".into());
                },
                "/HostConfig/Annotations",
                json!({"com.example.a": "1"}),
            ),
            (
                "no healthcheck",
                |_| {},
                "/Healthcheck",
                json!({"Test": ["NONE"]}),
            ),
            (
                "healthcheck",
                |s| {
                    s.healthcheck = Some(Healthcheck {
                        test: vec!["CMD-SHELL".into(), "true".into()],
                        interval: Some("1s".into()),
                        timeout: Some("500ms".into()),
                        retries: Some(3),
                        start_period: Some("1m".into()),
                        start_interval: Some("2s".into()),
                    })
                },
                "/Healthcheck",
                json!({
                    "Test": ["CMD-SHELL", "true"],
                    "Interval": 1_000_000_000i64,
                    "Timeout": 500_000_000,
                    "Retries": 3,
                    "StartPeriod": 60_000_000_000i64,
                    "StartInterval": 2_000_000_000i64
                }),
            ),
            (
                "healthcheck keeping the image's test",
                |s| {
                    s.healthcheck = Some(Healthcheck {
                        test: vec![],
                        interval: Some("2s".into()),
                        timeout: None,
                        retries: None,
                        start_period: None,
                        start_interval: None,
                    })
                },
                "/Healthcheck",
                json!({"Interval": 2_000_000_000i64}),
            ),
            (
                "network_mode none",
                |s| s.network_mode = Some("none".into()),
                "/HostConfig/NetworkMode",
                json!("none"),
            ),
            (
                "network_mode service:",
                |s| s.network_mode = Some("service:db".into()),
                "/HostConfig/NetworkMode",
                json!("container:jaco_shop-db-1"),
            ),
            (
                "named volume",
                |s| s.volumes = vec![mount(MountKind::Volume, Some("data"), "/data")],
                "/HostConfig/Mounts",
                json!([{"Type": "volume", "Source": "jaco_shop_data", "Target": "/data", "ReadOnly": false}]),
            ),
            (
                "anonymous volume, nocopy",
                |s| {
                    let mut m = mount(MountKind::Volume, None, "/cache");
                    m.options.insert("volume.nocopy".into(), json!(true));
                    s.volumes = vec![m];
                },
                "/HostConfig/Mounts",
                json!([{"Type": "volume", "Target": "/cache", "ReadOnly": false, "VolumeOptions": {"NoCopy": true}}]),
            ),
            (
                "bind, read-only, propagation, selinux",
                |s| {
                    let mut m = mount(MountKind::Bind, Some("/srv/site"), "/usr/share/nginx/html");
                    m.read_only = true;
                    m.options
                        .insert("bind.propagation".into(), json!("rshared"));
                    m.options.insert("bind.selinux".into(), json!("z"));
                    s.volumes = vec![m];
                },
                "/HostConfig/Binds",
                json!(["/srv/site:/usr/share/nginx/html:ro,rshared,z"]),
            ),
            (
                "strict bind",
                |s| {
                    let mut m = mount(MountKind::Bind, Some("/srv/site"), "/site");
                    m.options
                        .insert("bind.create_host_path".into(), json!(false));
                    m.options.insert("bind.propagation".into(), json!("slave"));
                    s.volumes = vec![m];
                },
                "/HostConfig/Mounts",
                json!([{"Type": "bind", "Source": "/srv/site", "Target": "/site", "ReadOnly": false, "BindOptions": {"Propagation": "slave"}}]),
            ),
            (
                "tmpfs mount",
                |s| {
                    let mut m = mount(MountKind::Tmpfs, None, "/scratch");
                    m.options.insert("tmpfs.size".into(), json!("64m"));
                    m.options.insert("tmpfs.mode".into(), json!(1777));
                    s.volumes = vec![m];
                },
                "/HostConfig/Mounts",
                json!([{"Type": "tmpfs", "Target": "/scratch", "ReadOnly": false, "TmpfsOptions": {"SizeBytes": 64 << 20, "Mode": 0o1777}}]),
            ),
        ]
    }

    #[test]
    fn every_honoured_field_reaches_the_docker_api() {
        for (name, set, pointer, want) in cases() {
            let mut spec = base();
            set(&mut spec);
            let body = wire(spec);
            assert_eq!(
                body.pointer(pointer),
                Some(&want),
                "{name}: {pointer} in {body:#}"
            );
        }
    }

    #[test]
    fn the_gateway_resolvers_serve_unless_compose_sets_dns() {
        let body = wire(base());
        assert_eq!(
            body.pointer("/HostConfig/Dns"),
            Some(&serde_json::json!(["10.244.0.1"]))
        );
        assert_eq!(
            body.pointer("/HostConfig/DnsOptions"),
            Some(&serde_json::json!(["attempts:2"]))
        );
    }

    #[test]
    fn labels_carry_the_replica_identity_over_compose_labels() {
        let mut spec = base();
        spec.labels.insert("com.example.team".into(), "shop".into());
        spec.labels
            .insert("jaco.replica_id".into(), "forged".into());
        let request = create_request(&plan(spec)).unwrap();
        let labels: BTreeMap<String, String> = request.body.labels.unwrap().into_iter().collect();
        assert_eq!(labels["com.example.team"], "shop");
        assert_eq!(labels["jaco.replica_id"], "shop-web-1");
        assert_eq!(labels["jaco.cluster_id"], "c1");
        assert_eq!(labels["jaco.spec_hash"], "h1");
        assert_eq!(labels["jaco.revision"], "3");
        assert_eq!(request.name, "jaco_shop-web-1");
        // Nothing jaco does not want: no restart policy, no published ports.
        let host = wire(base())["HostConfig"].clone();
        assert_eq!(host.get("RestartPolicy"), None);
        assert_eq!(host.get("PortBindings"), None);
    }

    #[test]
    fn the_first_network_is_attached_at_creation_and_the_rest_before_start() {
        let mut p = plan(base());
        p.networks.push(NetworkAttachment {
            network: "jaco_shop_back".into(),
            aliases: vec!["web".into(), "api".into()],
        });
        let request = create_request(&p).unwrap();
        let body = serde_json::to_value(&request.body).unwrap();
        assert_eq!(
            body.pointer("/NetworkingConfig/EndpointsConfig/jaco_shop_default/Aliases"),
            Some(&json!(["web"]))
        );
        assert_eq!(request.more_networks.len(), 1);
        assert_eq!(request.more_networks[0].0, "jaco_shop_back");
        assert_eq!(
            request.more_networks[0].1.aliases,
            Some(vec!["web".to_owned(), "api".to_owned()])
        );
        // A network mode replaces networks altogether.
        let mut spec = base();
        spec.network_mode = Some("none".into());
        spec.networks
            .insert("default".into(), SpecAttachment::default());
        let request = create_request(&plan(spec)).unwrap();
        assert!(request.body.networking_config.is_none());
        assert!(request.more_networks.is_empty());
    }

    #[test]
    fn secrets_and_configs_are_read_only_binds_and_platform_is_a_query_parameter() {
        let mut spec = base();
        spec.platform = Some("linux/arm64".into());
        spec.secrets = vec![FileMount {
            source: "db_password".into(),
            target: "/run/secrets/db_password".into(),
            uid: None,
            gid: None,
            mode: None,
            sha256: "00".into(),
        }];
        let mut p = plan(spec);
        p.files = vec![FileBind {
            source: PathBuf::from("/run/jaco/secrets/shop-web-1/secrets/db_password"),
            target: "/run/secrets/db_password".into(),
        }];
        let request = create_request(&p).unwrap();
        assert_eq!(request.platform.as_deref(), Some("linux/arm64"));
        let body = serde_json::to_value(&request.body).unwrap();
        assert_eq!(
            body.pointer("/HostConfig/Mounts"),
            Some(&json!([{
                "Type": "bind",
                "Source": "/run/jaco/secrets/shop-web-1/secrets/db_password",
                "Target": "/run/secrets/db_password",
                "ReadOnly": true
            }]))
        );
    }

    #[test]
    fn values_docker_cannot_take_name_their_field() {
        type Bad = (fn(&mut ContainerSpec), &'static str);
        let cases: &[Bad] = &[
            (
                |s| s.volumes = vec![mount(MountKind::Volume, Some("undeclared"), "/x")],
                "volumes[0]",
            ),
            (
                |s| s.network_mode = Some("service:cache".into()),
                "network_mode",
            ),
            (|s| s.pid = Some("service:cache".into()), "pid"),
            (|s| s.gpus = Some(json!(3)), "gpus"),
            (
                |s| s.blkio_config = Some(json!({"weight": "heavy"})),
                "blkio_config",
            ),
            (
                |s| {
                    s.blkio_config =
                        Some(json!({"device_read_bps": [{"path": "/dev/sda", "rate": "fast"}]}))
                },
                "blkio_config",
            ),
            (|s| s.cgroup = Some("mine".into()), "cgroup"),
            (
                |s| {
                    s.healthcheck = Some(Healthcheck {
                        test: vec![],
                        interval: Some("soon".into()),
                        timeout: None,
                        retries: None,
                        start_period: None,
                        start_interval: None,
                    })
                },
                "healthcheck",
            ),
            (
                |s| {
                    let mut m = mount(MountKind::Bind, Some("/a"), "/b");
                    m.options
                        .insert("bind.create_host_path".into(), json!(false));
                    m.options
                        .insert("bind.propagation".into(), json!("sideways"));
                    s.volumes = vec![m];
                },
                "volumes[0]",
            ),
            (
                |s| {
                    s.resources = Resources {
                        limits: ResourceValues {
                            memory: Some(u64::MAX),
                            ..Default::default()
                        },
                        ..Default::default()
                    }
                },
                "resources.limits.memory",
            ),
        ];
        for (set, field) in cases {
            let mut spec = base();
            set(&mut spec);
            let error = create_request(&plan(spec)).expect_err(field);
            assert_eq!(error.code, Code::ValidationFailed, "{field}");
            assert_eq!(error.details["field"], *field);
            assert_eq!(error.details["service"], "web");
        }
    }
}
