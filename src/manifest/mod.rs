//! Manifests: jaco.yaml + a Compose file → a validated, resolved deployment (SPEC §2).
//!
//! Two entry points share one pipeline:
//! - [`load`] is the CLI side: it reads jaco.yaml, discovers the compose file, interpolates
//!   with the `environment:` file, resolves `include`/`extends`, folds `env_file`, reads
//!   secrets, validates, and returns the [`Resolved`] deployment or **every** problem found;
//!   [`load_documents`] also returns the resolved [`Documents`] that `jaco apply` sends.
//! - [`resolve_documents`] is the daemon side: it trusts nothing the CLI did, re-validates the
//!   documents it was sent, and refuses ones that still need the operator's files
//!   (`env_file_unresolved`).
//!
//! Submodules: `dotenv` and `interpolate` (env files and
//! `${VAR}`), `units` (durations, sizes, shell words), `read` (typed reading with error
//! collection), `support` (the compose support matrix), `jaco_file` (jaco.yaml schema),
//! `compose` (compose schema), `resolve` (CLI-side file work), `spec` (the resolved model and
//! spec hash). Only `resolve` and this module touch files, and only through [`FileSource`].

mod compose;
mod dotenv;
mod interpolate;
mod jaco_file;
mod read;
mod resolve;
pub mod spec;
pub mod support;
pub mod units;
pub mod wire;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use compose::Objects;
use read::Reader;
pub use read::Warning;
use spec::{DeploymentSpec, Placement, Route, ServiceSpec, TcpRoute, UpdatePolicy};

use crate::error::{Code, Error};
use crate::yaml;

/// Where manifest files come from: the real disk for the CLI, memory for tests and fuzzing.
pub trait FileSource {
    /// The whole content of `path`.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
}

/// Reads the real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filesystem;

impl FileSource for Filesystem {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// Files held in memory, by path (tests, fuzzing, documents received over the API).
#[derive(Debug, Clone, Default)]
pub struct MemoryFiles(pub BTreeMap<PathBuf, Vec<u8>>);

impl MemoryFiles {
    /// Adds a file.
    pub fn with(mut self, path: impl Into<PathBuf>, content: impl Into<Vec<u8>>) -> Self {
        self.0.insert(path.into(), content.into());
        self
    }
}

impl FileSource for MemoryFiles {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    }
}

/// Compose file names tried next to jaco.yaml, in order (SPEC §2.1).
pub const COMPOSE_DISCOVERY: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// A validated deployment: what `jaco config` prints and `jaco apply` sends.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// Deployment-wide settings, routes, networks, volumes, secrets and configs.
    pub deployment: DeploymentSpec,
    /// Every active compose service, by name.
    pub services: BTreeMap<String, ServiceSpec>,
    /// Remarks for the operator (ignored keys, ports without routes, unset variables).
    #[serde(skip)]
    pub warnings: Vec<Warning>,
}

impl Resolved {
    /// The deployment name.
    pub fn deployment_name(&self) -> &str {
        &self.deployment.name
    }

    /// Number of HTTP(S) routes.
    pub fn route_count(&self) -> usize {
        self.deployment.routes.len()
    }
}

/// The documents `jaco apply` sends for a deployment: jaco.yaml as written, and the compose
/// document after every step that needs the operator's files (interpolation, `include`,
/// `extends`, `env_file` and `label_file` folding). [`resolve_documents`] resolves them, with
/// the secret and config contents, to the same deployment [`load`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Documents {
    /// jaco.yaml, unchanged.
    pub jaco_yaml: String,
    /// The resolved compose document.
    pub compose_yaml: String,
    /// Where the compose file was found (for messages).
    pub compose_path: PathBuf,
}

/// CLI side: loads, resolves and validates the deployment described by `jaco_yaml`.
///
/// `compose` overrides the compose file (else jaco.yaml's `compose:`, else discovery). On
/// failure returns every problem found, each with file, line and column where known.
pub fn load(
    files: &dyn FileSource,
    jaco_yaml: &Path,
    compose: Option<&Path>,
) -> Result<Resolved, Vec<Error>> {
    load_documents(files, jaco_yaml, compose).map(|(resolved, _)| resolved)
}

/// [`load`], also returning the [`Documents`] to send to the daemon.
pub fn load_documents(
    files: &dyn FileSource,
    jaco_yaml: &Path,
    compose: Option<&Path>,
) -> Result<(Resolved, Documents), Vec<Error>> {
    let jaco_dir = resolve::parent_dir(jaco_yaml);
    let jaco_text = read_source(files, jaco_yaml).map_err(|e| vec![e])?;
    let jaco_root = parse_source(&jaco_text, jaco_yaml).map_err(|e| vec![e])?;
    let mut jaco_reader = Reader::new(jaco_yaml.display().to_string());
    let jaco = jaco_file::read(&jaco_root, &mut jaco_reader);
    let mut errors = std::mem::take(&mut jaco_reader.errors);

    let vars = match &jaco.environment {
        Some((relative, mark)) => read_vars(
            files,
            &jaco_dir.join(relative),
            *mark,
            jaco_yaml,
            &mut errors,
        ),
        None => resolve::Vars::new(),
    };
    let (compose_path, mut compose_root) =
        match read_compose(files, &jaco_dir, compose, jaco.compose.as_deref()) {
            Ok(found) => found,
            Err(error) => {
                errors.push(error);
                return Err(errors);
            }
        };
    let compose_dir = resolve::parent_dir(&compose_path);
    let mut reader = Reader::new(compose_path.display().to_string());
    resolve::interpolate_tree(&mut compose_root, &vars, &mut reader);
    resolve::resolve_include(&mut compose_root, &compose_dir, files, &vars, &mut reader);
    resolve::resolve_extends(&mut compose_root, &compose_dir, files, &vars, &mut reader);
    resolve::fold_files(&mut compose_root, &compose_dir, files, &mut reader);
    let objects = resolve::read_objects(&compose_root, &compose_dir, files, &vars, &mut reader);
    let resolved = finish(
        jaco,
        &compose_root,
        objects,
        reader,
        errors,
        jaco_reader.warnings,
    )?;
    let documents = Documents {
        jaco_yaml: jaco_text,
        compose_yaml: yaml::emit(&compose_root),
        compose_path,
    };
    Ok((resolved, documents))
}

/// Daemon side: validates documents the CLI already resolved. `objects` are the secret and
/// config contents sent with them.
pub fn resolve_documents(
    jaco_yaml: &str,
    compose_yaml: &str,
    objects: Objects,
) -> Result<Resolved, Vec<Error>> {
    let jaco_root = parse_source(jaco_yaml, Path::new("jaco.yaml")).map_err(|e| vec![e])?;
    let mut jaco_reader = Reader::new("jaco.yaml");
    let jaco = jaco_file::read(&jaco_root, &mut jaco_reader);
    let mut errors = std::mem::take(&mut jaco_reader.errors);
    let compose_root = match parse_source(compose_yaml, Path::new("compose.yaml")) {
        Ok(root) => root,
        Err(error) => {
            errors.push(error);
            return Err(errors);
        }
    };
    let mut reader = Reader::new("compose.yaml");
    resolve::check_unresolved(&compose_root, &mut reader);
    finish(
        jaco,
        &compose_root,
        objects,
        reader,
        errors,
        jaco_reader.warnings,
    )
}

/// Daemon side, with cluster knowledge: pinned hosts must be members (`unknown_host`).
pub fn check_hosts(resolved: &Resolved, members: &[String]) -> Vec<Error> {
    let mut errors = Vec::new();
    for (name, service) in &resolved.services {
        for host in &service.hosts {
            if !members.contains(host) {
                errors.push(
                    Error::new(
                        Code::UnknownHost,
                        format!(
                            "unknown_host: {host}; cluster members: [{}]",
                            members.join(", ")
                        ),
                    )
                    .with("service", name)
                    .with("host", host)
                    .with("members", members.join(",")),
                );
            }
        }
    }
    errors
}

fn finish(
    jaco: jaco_file::JacoFile,
    compose_root: &yaml::Node,
    objects: Objects,
    mut reader: Reader,
    mut errors: Vec<Error>,
    mut warnings: Vec<Warning>,
) -> Result<Resolved, Vec<Error>> {
    let compose = compose::read(compose_root, objects, &jaco.profiles, &mut reader);
    let resolved = assemble(jaco, compose, &mut reader);
    errors.append(&mut reader.errors);
    warnings.append(&mut reader.warnings);
    if errors.is_empty() {
        Ok(Resolved {
            warnings,
            ..resolved
        })
    } else {
        Err(errors)
    }
}

/// Combines jaco.yaml and compose into the resolved model, checking the rules that need both.
fn assemble(jaco: jaco_file::JacoFile, compose: compose::Compose, reader: &mut Reader) -> Resolved {
    let declared: Vec<&str> = compose.services.keys().map(String::as_str).collect();
    let jaco_file_name = jaco.file.clone();
    let mut jaco_problem = |code: Code, message: String, details: &[(&str, &str)]| {
        let mut error = Error::new(code, message).with("file", &jaco_file_name);
        for (k, v) in details {
            error = error.with(*k, *v);
        }
        reader.errors.push(error);
    };
    for (i, service) in jaco.services.iter().enumerate() {
        if !compose.services.contains_key(&service.name) {
            jaco_problem(
                Code::UnknownService,
                format!(
                    "unknown service: {}; declared compose services: [{}]",
                    service.name,
                    declared.join(", ")
                ),
                &[
                    ("service", &service.name),
                    ("field", &format!("services[{i}].name")),
                    ("line", &service.mark.line.to_string()),
                ],
            );
        }
    }
    let mut routes = Vec::new();
    for (i, route) in jaco.routes.iter().enumerate() {
        let field = format!("routes[{i}].service");
        let line = route.mark.line.to_string();
        match compose.services.get(&route.service) {
            None => jaco_problem(
                Code::UnknownService,
                format!(
                    "route {}{} references unknown service {}; declared compose services: [{}]",
                    route.domain,
                    route.path,
                    route.service,
                    declared.join(", ")
                ),
                &[
                    ("service", &route.service),
                    ("field", &field),
                    ("line", &line),
                ],
            ),
            Some(target) if target.container.network_mode.is_some() => jaco_problem(
                Code::ValidationFailed,
                format!(
                    "route {}{} targets service {} whose network_mode ({}) makes it unreachable",
                    route.domain,
                    route.path,
                    route.service,
                    target.container.network_mode.as_deref().unwrap_or_default()
                ),
                &[
                    ("service", &route.service),
                    ("field", &field),
                    ("line", &line),
                ],
            ),
            Some(_) => routes.push(Route {
                domain: route.domain.clone(),
                path: route.path.clone(),
                service: route.service.clone(),
                port: route.port,
                strip_path: route.strip_path,
                tls: jaco_file::effective_tls(route.tls, jaco.acme),
            }),
        }
    }
    routes.sort();

    let mut services = BTreeMap::new();
    let mut tcp_routes = Vec::new();
    let mut used_networks = std::collections::BTreeSet::new();
    for (name, mut service) in compose.services {
        let overrides = jaco.services.iter().find(|s| s.name == name.as_str());
        let placement = overrides
            .and_then(|o| o.placement)
            .unwrap_or(Placement::Spread);
        let hosts = overrides.map(|o| o.hosts.clone()).unwrap_or_default();
        let mut replicas = overrides
            .and_then(|o| o.replicas)
            .or(service.replicas)
            .unwrap_or(1);
        if placement == Placement::Global {
            if overrides.and_then(|o| o.replicas).is_none() && service.replicas.is_some() {
                reader.set_service(Some(&name));
                reader.warn(
                    "deploy.replicas",
                    "ignored: placement: global runs one replica per ready node",
                );
                reader.set_service(None);
            }
            replicas = 0;
        }
        if placement == Placement::Hosts && !hosts.is_empty() && replicas as usize > hosts.len() {
            let line = overrides
                .map(|o| o.mark.line.to_string())
                .unwrap_or_default();
            jaco_problem_exceed(reader, &jaco.file, &name, replicas, hosts.len(), &line);
        }
        let update = update_policy(overrides.map(|o| &o.update), &service.update);
        for mount in service
            .container
            .secrets
            .iter_mut()
            .map(|m| (m, &compose.secrets))
            .chain(
                service
                    .container
                    .configs
                    .iter_mut()
                    .map(|m| (m, &compose.configs)),
            )
        {
            let (mount, objects) = mount;
            if let Some(object) = objects.get(&mount.source) {
                mount.sha256 = object.sha256.clone();
            }
        }
        reader.set_service(Some(&name));
        for port in &service.container.ports {
            if compose::makes_route(port) {
                tcp_routes.push(TcpRoute {
                    published_port: port.published.unwrap_or_default(),
                    service: name.clone(),
                    container_port: port.target,
                });
            } else {
                let why = if port.published.is_none() {
                    "it publishes no host port"
                } else if port.protocol != "tcp" {
                    "only TCP ports become routes"
                } else {
                    "it is scoped to one host address"
                };
                reader.warn(
                    "ports",
                    format!("port {} creates no cluster-wide route: {why}", port.target),
                );
            }
        }
        reader.set_service(None);
        used_networks.extend(service.container.networks.keys().cloned());
        services.insert(
            name,
            ServiceSpec {
                spec_hash: spec::spec_hash(&service.container),
                replicas,
                placement,
                hosts,
                update,
                depends_on: service.depends_on,
                container: service.container,
            },
        );
    }
    tcp_routes.sort();
    let networks = compose
        .networks
        .into_iter()
        .filter(|(name, _)| name != "default" || used_networks.contains(name))
        .collect();
    Resolved {
        deployment: DeploymentSpec {
            name: jaco.deployment,
            acme: jaco.acme,
            acme_email: jaco.acme_email,
            profiles: jaco.profiles,
            routes,
            tcp_routes,
            networks,
            volumes: compose.volumes,
            secrets: compose.secrets,
            configs: compose.configs,
        },
        services,
        warnings: Vec::new(),
    }
}

fn jaco_problem_exceed(
    reader: &mut Reader,
    file: &str,
    service: &str,
    replicas: u32,
    hosts: usize,
    line: &str,
) {
    reader.errors.push(
        Error::new(
            Code::ReplicasExceedPinnedHosts,
            format!(
                "cannot place {replicas} replicas of {service:?} on {hosts} pinned hosts \
                 (never two replicas of a service on one pinned host)"
            ),
        )
        .with("file", file)
        .with("line", line)
        .with("service", service)
        .with("replicas", replicas)
        .with("hosts", hosts),
    );
}

/// jaco.yaml's `update:` wins over compose `deploy.update_config`, which wins over defaults.
fn update_policy(
    jaco: Option<&jaco_file::UpdateOverride>,
    compose: &compose::ComposeUpdate,
) -> UpdatePolicy {
    let defaults = UpdatePolicy::default();
    let jaco = jaco.cloned().unwrap_or_default();
    UpdatePolicy {
        parallelism: jaco
            .parallelism
            .or(compose.parallelism)
            .unwrap_or(defaults.parallelism),
        order: jaco.order.or(compose.order).unwrap_or(defaults.order),
        monitor: jaco
            .monitor
            .or(compose.monitor.clone())
            .unwrap_or(defaults.monitor),
        step_timeout: jaco.step_timeout.unwrap_or(defaults.step_timeout),
        delay: compose.delay.clone().unwrap_or(defaults.delay),
        failure_action: jaco
            .failure_action
            .or(compose.failure_action)
            .unwrap_or(defaults.failure_action),
    }
}

fn read_source(files: &dyn FileSource, path: &Path) -> Result<String, Error> {
    let bytes = files.read(path).map_err(|error| {
        Error::new(
            Code::ValidationFailed,
            format!("cannot read {}: {error}", path.display()),
        )
        .with("file", path.display())
        .with("reason", "unreadable_file")
    })?;
    String::from_utf8(bytes).map_err(|_| {
        Error::new(
            Code::ParseFailed,
            format!("{} is not UTF-8 text", path.display()),
        )
        .with("file", path.display())
    })
}

fn parse_source(text: &str, path: &Path) -> Result<yaml::Node, Error> {
    yaml::parse(text).map_err(|error| {
        Error::new(Code::ParseFailed, format!("{}: {}", path.display(), error))
            .with("file", path.display())
            .with("line", error.mark.line)
            .with("column", error.mark.column)
            .with("error", &error.message)
    })
}

fn read_vars(
    files: &dyn FileSource,
    path: &Path,
    mark: yaml::Mark,
    jaco_yaml: &Path,
    errors: &mut Vec<Error>,
) -> resolve::Vars {
    let text = match read_source(files, path) {
        Ok(text) => text,
        Err(error) => {
            errors.push(
                error
                    .with("field", "environment")
                    .with("jaco_yaml_line", mark.line)
                    .with("jaco_yaml", jaco_yaml.display()),
            );
            return resolve::Vars::new();
        }
    };
    match dotenv::parse(&text) {
        Ok(pairs) => pairs.into_iter().collect(),
        Err(error) => {
            errors.push(
                Error::new(
                    Code::ValidationFailed,
                    format!("{}: {}", path.display(), error),
                )
                .with("file", path.display())
                .with("line", error.line)
                .with("column", error.column)
                .with("field", "environment"),
            );
            resolve::Vars::new()
        }
    }
}

/// Finds, reads and parses the compose file.
fn read_compose(
    files: &dyn FileSource,
    jaco_dir: &Path,
    explicit: Option<&Path>,
    from_jaco: Option<&str>,
) -> Result<(PathBuf, yaml::Node), Error> {
    let path = find_compose(files, jaco_dir, explicit, from_jaco)?;
    let text = read_source(files, &path)?;
    let root = parse_source(&text, &path)?;
    Ok((path, root))
}

fn find_compose(
    files: &dyn FileSource,
    jaco_dir: &Path,
    explicit: Option<&Path>,
    from_jaco: Option<&str>,
) -> Result<PathBuf, Error> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(relative) = from_jaco {
        return Ok(jaco_dir.join(relative));
    }
    COMPOSE_DISCOVERY
        .iter()
        .map(|name| jaco_dir.join(name))
        .find(|path| files.read(path).is_ok())
        .ok_or_else(|| {
            Error::new(
                Code::ValidationFailed,
                format!(
                    "no compose file found next to jaco.yaml in {} (tried {}); set `compose:` in jaco.yaml or pass --compose",
                    if jaco_dir.as_os_str().is_empty() { ".".to_owned() } else { jaco_dir.display().to_string() },
                    COMPOSE_DISCOVERY.join(", ")
                ),
            )
            .with("field", "compose")
        })
}

#[cfg(test)]
mod tests;
