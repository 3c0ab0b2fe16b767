//! jaco.yaml: the closed schema of SPEC §2.1 and the rules that need only this file.
//!
//! Reads a parsed document into a [`JacoFile`], recording every problem (unknown keys with
//! their path in `details.field`, names, enums, placement and route rules). Rules that need
//! the compose file (unknown services, route targets) live in `manifest::mod`; rules that need
//! the cluster (unknown hosts) in [`super::check_hosts`]. No I/O here.

use std::collections::{BTreeMap, BTreeSet};

use super::read::{Reader, join};
use super::spec::{FailureAction, Placement, TlsMode, UpdateOrder};
use crate::error::Code;
use crate::yaml::{Mark, Node};

/// A parsed jaco.yaml.
#[derive(Debug, Clone, Default)]
pub struct JacoFile {
    /// The path it was read from, for error details.
    pub file: String,
    /// Deployment name.
    pub deployment: String,
    /// `compose:` path, relative to jaco.yaml.
    pub compose: Option<String>,
    /// `environment:` path, relative to jaco.yaml.
    pub environment: Option<(String, Mark)>,
    /// ACME on (default) or off.
    pub acme: bool,
    /// ACME contact.
    pub acme_email: Option<String>,
    /// Enabled compose profiles.
    pub profiles: Vec<String>,
    /// Per-service overrides, in file order.
    pub services: Vec<ServiceOverride>,
    /// Routes, in file order.
    pub routes: Vec<RouteEntry>,
}

/// One `services:` entry.
#[derive(Debug, Clone)]
pub struct ServiceOverride {
    /// Compose service it overrides.
    pub name: String,
    /// Where the entry is.
    pub mark: Mark,
    /// `replicas:` when given.
    pub replicas: Option<u32>,
    /// `placement:` when given.
    pub placement: Option<Placement>,
    /// `hosts:`.
    pub hosts: Vec<String>,
    /// `update:` fields that were given.
    pub update: UpdateOverride,
}

/// The `update:` keys that were set; unset ones fall back to compose, then defaults.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct UpdateOverride {
    pub parallelism: Option<u32>,
    pub order: Option<UpdateOrder>,
    pub monitor: Option<String>,
    pub step_timeout: Option<String>,
    pub failure_action: Option<FailureAction>,
}

/// One `routes:` entry.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    /// Host name.
    pub domain: String,
    /// Target service.
    pub service: String,
    /// Container port.
    pub port: u16,
    /// Path prefix (default `/`).
    pub path: String,
    /// Remove the prefix before forwarding.
    pub strip_path: bool,
    /// Explicit `tls:`; `None` follows `acme`.
    pub tls: Option<TlsMode>,
    /// Where the entry is.
    pub mark: Mark,
}

const TOP_KEYS: &[&str] = &[
    "deployment",
    "compose",
    "environment",
    "acme",
    "acme_email",
    "profiles",
    "services",
    "routes",
];
const SERVICE_KEYS: &[&str] = &["name", "replicas", "placement", "hosts", "update"];
const UPDATE_KEYS: &[&str] = &[
    "parallelism",
    "order",
    "monitor",
    "step_timeout",
    "failure_action",
];
const ROUTE_KEYS: &[&str] = &["domain", "service", "port", "path", "strip_path", "tls"];

/// Reads jaco.yaml, recording problems in `reader`.
pub fn read(root: &Node, reader: &mut Reader) -> JacoFile {
    let mut file = JacoFile {
        file: reader.file().to_owned(),
        acme: true,
        ..JacoFile::default()
    };
    if root.as_map().is_none() {
        reader.invalid(root, "", "jaco.yaml must be a mapping");
        return file;
    }
    reader.strict_keys(root, "", TOP_KEYS);
    match root.get("deployment") {
        None => {
            reader.invalid(root, "deployment", "is required");
        }
        Some(node) => {
            if let Some(name) = reader.string(node, "deployment") {
                if is_deployment_name(&name) {
                    file.deployment = name;
                } else {
                    reader.invalid(
                        node,
                        "deployment",
                        format!(
                            "{name:?} is not a valid deployment name \
                             (lowercase letters, digits and '-', starting with a letter or \
                             digit, at most 40 characters)"
                        ),
                    );
                }
            }
        }
    }
    if let Some(node) = root.get("compose") {
        file.compose = reader.required_string(node, "compose");
    }
    if let Some(node) = root.get("environment") {
        file.environment = reader
            .required_string(node, "environment")
            .map(|path| (path, node.mark));
    }
    if let Some(node) = root.get("acme") {
        file.acme = read_acme(node, reader).unwrap_or(true);
    }
    if let Some(node) = root.get("acme_email")
        && let Some(email) = reader.string(node, "acme_email")
    {
        if file.acme && !is_email(&email) {
            reader.invalid(
                node,
                "acme_email",
                format!("{email:?} is not an email address"),
            );
        }
        file.acme_email = Some(email);
    }
    if let Some(node) = root.get("profiles") {
        file.profiles = reader.strings(node, "profiles");
    }
    if let Some(node) = root.get("services") {
        file.services = read_services(node, reader);
    }
    if let Some(node) = root.get("routes") {
        file.routes = read_routes(node, file.acme, reader);
    }
    file
}

/// `acme: on|off`; YAML 1.1 readers turn `on`/`off` into booleans, so both spellings count.
fn read_acme(node: &Node, reader: &mut Reader) -> Option<bool> {
    if let Some(value) = node.as_bool() {
        return Some(value);
    }
    match node.as_scalar().map(str::to_ascii_lowercase).as_deref() {
        Some("on") => Some(true),
        Some("off") => Some(false),
        _ => {
            reader.invalid(node, "acme", "expected on or off");
            None
        }
    }
}

fn read_services(node: &Node, reader: &mut Reader) -> Vec<ServiceOverride> {
    let mut out: Vec<ServiceOverride> = Vec::new();
    for (i, entry) in reader.seq(node, "services").iter().enumerate() {
        let path = format!("services[{i}]");
        if entry.as_map().is_none() {
            reader.invalid(entry, &path, "expected a mapping with at least `name`");
            continue;
        }
        reader.strict_keys(entry, &path, SERVICE_KEYS);
        let Some(name) = entry
            .get("name")
            .and_then(|n| reader.required_string(n, &join(&path, "name")))
        else {
            if entry.get("name").is_none() {
                reader.invalid(entry, &join(&path, "name"), "is required");
            }
            continue;
        };
        if out.iter().any(|s| s.name == name) {
            reader.invalid(
                entry,
                &join(&path, "name"),
                format!("service {name:?} is listed more than once"),
            );
            continue;
        }
        let replicas = entry.get("replicas").and_then(|n| {
            reader
                .int_in(n, &join(&path, "replicas"), 0, 10_000)
                .map(|r| r as u32)
        });
        let placement = entry
            .get("placement")
            .and_then(|n| read_placement(n, &join(&path, "placement"), reader));
        let hosts = entry
            .get("hosts")
            .map(|n| reader.strings(n, &join(&path, "hosts")))
            .unwrap_or_default();
        let update = entry
            .get("update")
            .map(|n| read_update(n, &join(&path, "update"), reader))
            .unwrap_or_default();
        let service = ServiceOverride {
            name,
            mark: entry.mark,
            replicas,
            placement,
            hosts,
            update,
        };
        check_placement(&service, entry, &path, reader);
        out.push(service);
    }
    out
}

fn read_placement(node: &Node, field: &str, reader: &mut Reader) -> Option<Placement> {
    match reader.string(node, field)?.as_str() {
        "spread" => Some(Placement::Spread),
        "pack" => Some(Placement::Pack),
        "hosts" => Some(Placement::Hosts),
        "global" => Some(Placement::Global),
        other => {
            reader.invalid(
                node,
                field,
                format!("unknown placement {other:?} (spread, pack, hosts or global)"),
            );
            None
        }
    }
}

/// Placement rules of SPEC §2.1 that need only the override itself.
fn check_placement(service: &ServiceOverride, entry: &Node, path: &str, reader: &mut Reader) {
    let name = &service.name;
    let hosts_node = entry.get("hosts").unwrap_or(entry);
    match service.placement {
        Some(Placement::Global) if service.replicas.is_some() => {
            reader.invalid(
                entry.get("replicas").unwrap_or(entry),
                &join(path, "replicas"),
                format!(
                    "service {name:?} uses placement: global; remove replicas \
                     (global runs one replica per ready node)"
                ),
            );
        }
        Some(Placement::Hosts) => {
            if service.hosts.is_empty() {
                reader.invalid(
                    hosts_node,
                    &join(path, "hosts"),
                    format!(
                        "service {name:?} uses placement: hosts and needs a non-empty hosts list"
                    ),
                );
            }
            let distinct: BTreeSet<&String> = service.hosts.iter().collect();
            if distinct.len() != service.hosts.len() {
                reader.invalid(
                    hosts_node,
                    &join(path, "hosts"),
                    "lists a host more than once (two replicas never share a pinned host)",
                );
            }
        }
        _ if !service.hosts.is_empty() => {
            reader.invalid(
                hosts_node,
                &join(path, "hosts"),
                "is only allowed with placement: hosts",
            );
        }
        _ => {}
    }
}

fn read_update(node: &Node, path: &str, reader: &mut Reader) -> UpdateOverride {
    let mut update = UpdateOverride::default();
    reader.map(node, path);
    reader.strict_keys(node, path, UPDATE_KEYS);
    if let Some(n) = node.get("parallelism") {
        update.parallelism = reader
            .int_in(n, &join(path, "parallelism"), 1, 10_000)
            .map(|v| v as u32);
    }
    if let Some(n) = node.get("order") {
        update.order = read_order(n, &join(path, "order"), reader);
    }
    if let Some(n) = node.get("monitor") {
        update.monitor = reader.duration(n, &join(path, "monitor"));
    }
    if let Some(n) = node.get("step_timeout") {
        update.step_timeout = reader.duration(n, &join(path, "step_timeout"));
    }
    if let Some(n) = node.get("failure_action") {
        update.failure_action = read_failure_action(n, &join(path, "failure_action"), reader);
    }
    update
}

/// `start-first` | `stop-first` (shared with compose `deploy.update_config.order`).
pub fn read_order(node: &Node, field: &str, reader: &mut Reader) -> Option<UpdateOrder> {
    match reader.string(node, field)?.as_str() {
        "start-first" => Some(UpdateOrder::StartFirst),
        "stop-first" => Some(UpdateOrder::StopFirst),
        other => {
            reader.invalid(
                node,
                field,
                format!("unknown order {other:?} (start-first or stop-first)"),
            );
            None
        }
    }
}

/// `rollback` | `pause` (compose's `continue` is refused: jaco never leaves a failed step
/// behind silently).
pub fn read_failure_action(node: &Node, field: &str, reader: &mut Reader) -> Option<FailureAction> {
    match reader.string(node, field)?.as_str() {
        "rollback" => Some(FailureAction::Rollback),
        "pause" => Some(FailureAction::Pause),
        other => {
            reader.invalid(
                node,
                field,
                format!("unknown failure_action {other:?} (rollback or pause)"),
            );
            None
        }
    }
}

fn read_routes(node: &Node, acme: bool, reader: &mut Reader) -> Vec<RouteEntry> {
    let mut routes: Vec<RouteEntry> = Vec::new();
    for (i, entry) in reader.seq(node, "routes").iter().enumerate() {
        let path = format!("routes[{i}]");
        if entry.as_map().is_none() {
            reader.invalid(entry, &path, "expected a mapping");
            continue;
        }
        reader.strict_keys(entry, &path, ROUTE_KEYS);
        let required = |key: &str, reader: &mut Reader| match entry.get(key) {
            Some(n) => reader.required_string(n, &join(&path, key)),
            None => {
                reader.invalid(entry, &join(&path, key), "is required");
                None
            }
        };
        let domain = required("domain", reader);
        let service = required("service", reader);
        let port = match entry.get("port") {
            Some(n) => reader
                .int_in(n, &join(&path, "port"), 1, 65535)
                .map(|p| p as u16),
            None => {
                reader.invalid(entry, &join(&path, "port"), "is required");
                None
            }
        };
        let route_path = match entry.get("path") {
            Some(n) => reader.string(n, &join(&path, "path")).and_then(|p| {
                if p.starts_with('/') && !p.contains(char::is_whitespace) {
                    Some(p)
                } else {
                    reader.invalid(
                        n,
                        &join(&path, "path"),
                        "must start with '/' and contain no spaces",
                    );
                    None
                }
            }),
            None => Some("/".to_owned()),
        };
        let strip_path = entry
            .get("strip_path")
            .and_then(|n| reader.bool(n, &join(&path, "strip_path")))
            .unwrap_or(false);
        let tls =
            entry
                .get("tls")
                .and_then(|n| match reader.string(n, &join(&path, "tls")).as_deref() {
                    Some("auto") => Some(TlsMode::Auto),
                    Some("off") => Some(TlsMode::Off),
                    _ if n.as_bool() == Some(false) => Some(TlsMode::Off),
                    Some(other) => {
                        reader.invalid(
                            n,
                            &join(&path, "tls"),
                            format!("unknown tls {other:?} (auto or off)"),
                        );
                        None
                    }
                    None => None,
                });
        let (Some(domain), Some(service), Some(port), Some(route_path)) =
            (domain, service, port, route_path)
        else {
            continue;
        };
        let domain_node = entry.get("domain").unwrap_or(entry);
        if !is_domain(&domain) {
            reader.invalid(
                domain_node,
                &join(&path, "domain"),
                format!("{domain:?} is not a valid lowercase DNS name"),
            );
            continue;
        }
        if routes
            .iter()
            .any(|r| r.domain == domain && r.path == route_path)
        {
            reader
                .report(
                    Code::ValidationFailed,
                    entry.mark,
                    format!("route conflict: domain {domain} path {route_path} is declared more than once"),
                )
                .details
                .extend([
                    ("field".to_owned(), path.clone()),
                    ("reason".to_owned(), "route_conflict".to_owned()),
                    ("domain".to_owned(), domain.clone()),
                ]);
            continue;
        }
        routes.push(RouteEntry {
            domain,
            service,
            port,
            path: route_path,
            strip_path,
            tls,
            mark: entry.mark,
        });
    }
    check_tls_mixing(&routes, acme, reader);
    routes
}

/// One domain cannot serve some paths over ACME TLS and others over plain HTTP.
fn check_tls_mixing(routes: &[RouteEntry], acme: bool, reader: &mut Reader) {
    let mut modes: BTreeMap<&str, (BTreeSet<TlsMode>, Mark)> = BTreeMap::new();
    for route in routes {
        let mode = effective_tls(route.tls, acme);
        let slot = modes
            .entry(&route.domain)
            .or_insert_with(|| (BTreeSet::new(), route.mark));
        slot.0.insert(mode);
    }
    for (domain, (set, mark)) in modes {
        if set.len() > 1 {
            reader
                .report(
                    Code::ValidationFailed,
                    mark,
                    format!(
                        "domain {domain} mixes tls: auto and tls: off; use one mode per domain"
                    ),
                )
                .details
                .extend([
                    ("field".to_owned(), "routes".to_owned()),
                    ("reason".to_owned(), "route_tls_mixed".to_owned()),
                    ("domain".to_owned(), domain.to_owned()),
                ]);
        }
    }
}

/// A route's TLS mode: explicit, else `auto` unless the deployment turned ACME off.
pub fn effective_tls(explicit: Option<TlsMode>, acme: bool) -> TlsMode {
    explicit.unwrap_or(if acme { TlsMode::Auto } else { TlsMode::Off })
}

/// `[a-z0-9][a-z0-9-]{0,39}`.
pub fn is_deployment_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 40
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn is_domain(domain: &str) -> bool {
    domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn is_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !local.contains(char::is_whitespace)
                && !domain.contains('@')
                && domain.contains('.')
                && is_domain(&domain.to_ascii_lowercase())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use crate::yaml;

    fn read_str(source: &str) -> (JacoFile, Vec<crate::error::Error>) {
        let root = yaml::parse(source).expect("yaml");
        let mut reader = Reader::new("jaco.yaml");
        let file = read(&root, &mut reader);
        (file, reader.errors)
    }

    fn codes_and_fields(source: &str) -> Vec<(Code, String)> {
        read_str(source)
            .1
            .into_iter()
            .map(|e| (e.code, e.details.get("field").cloned().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let (file, errors) = read_str("deployment: shop\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(file.deployment, "shop");
        assert!(file.acme);
        assert!(file.services.is_empty() && file.routes.is_empty());
    }

    #[test]
    fn full_file_reads_every_key() {
        let (file, errors) = read_str(
            "deployment: shop\ncompose: app.yml\nenvironment: prod.env\nacme: off\n\
             acme_email: ops@example.com\nprofiles: [debug]\n\
             services:\n  - name: web\n    replicas: 3\n    placement: spread\n\
             \x20   update: {parallelism: 2, order: stop-first, monitor: 10s, step_timeout: 2m, failure_action: pause}\n\
             routes:\n  - {domain: shop.example.com, service: web, port: 8080, path: /api, strip_path: true, tls: auto}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(file.compose.as_deref(), Some("app.yml"));
        assert_eq!(
            file.environment.as_ref().map(|e| e.0.as_str()),
            Some("prod.env")
        );
        assert!(!file.acme);
        assert_eq!(file.profiles, ["debug"]);
        let web = &file.services[0];
        assert_eq!(
            (web.replicas, web.placement),
            (Some(3), Some(Placement::Spread))
        );
        assert_eq!(web.update.parallelism, Some(2));
        assert_eq!(web.update.order, Some(UpdateOrder::StopFirst));
        assert_eq!(web.update.step_timeout.as_deref(), Some("2m"));
        assert_eq!(web.update.failure_action, Some(FailureAction::Pause));
        assert_eq!(file.routes[0].path, "/api");
        assert!(file.routes[0].strip_path);
    }

    #[test]
    fn unknown_keys_anywhere_name_their_path() {
        let fields = codes_and_fields(
            "deployment: a\nbogus: 1\nx-note: 2\nservices:\n  - name: web\n    replica: 2\n\
             \x20   update: {speed: 3}\nroutes:\n  - {domain: a.example.com, service: web, port: 80, weight: 1}\n",
        );
        let expected = [
            "bogus",
            "x-note",
            "services[0].replica",
            "services[0].update.speed",
            "routes[0].weight",
        ];
        for field in expected {
            assert!(
                fields.contains(&(Code::ValidationFailed, field.to_owned())),
                "{field} missing from {fields:?}"
            );
        }
        assert_eq!(fields.len(), expected.len());
    }

    #[test]
    fn deployment_name_rules() {
        assert_eq!(
            codes_and_fields("acme: on\n"),
            [(Code::ValidationFailed, "deployment".into())]
        );
        for bad in [
            "Shop",
            "-shop",
            "shop_1",
            "a234567890123456789012345678901234567890x",
            "''",
        ] {
            assert_eq!(
                codes_and_fields(&format!("deployment: {bad}\n")),
                [(Code::ValidationFailed, "deployment".into())],
                "{bad}"
            );
        }
        assert!(codes_and_fields("deployment: 0-shop-9\n").is_empty());
    }

    #[test]
    fn acme_values_and_email() {
        assert!(codes_and_fields("deployment: a\nacme: 'off'\nacme_email: nope\n").is_empty());
        assert_eq!(
            codes_and_fields("deployment: a\nacme: maybe\n"),
            [(Code::ValidationFailed, "acme".into())]
        );
        assert_eq!(
            codes_and_fields("deployment: a\nacme_email: not-an-email\n"),
            [(Code::ValidationFailed, "acme_email".into())]
        );
    }

    #[test]
    fn placement_rules() {
        let cases = [
            (
                "placement: global\n    replicas: 2",
                Code::ValidationFailed,
                "services[0].replicas",
            ),
            (
                "placement: hosts",
                Code::ValidationFailed,
                "services[0].hosts",
            ),
            (
                "placement: spread\n    hosts: [a]",
                Code::ValidationFailed,
                "services[0].hosts",
            ),
            ("hosts: [a]", Code::ValidationFailed, "services[0].hosts"),
            (
                "placement: hosts\n    hosts: [a, a]\n    replicas: 1",
                Code::ValidationFailed,
                "services[0].hosts",
            ),
            (
                "placement: everywhere",
                Code::ValidationFailed,
                "services[0].placement",
            ),
            (
                "replicas: -1",
                Code::ValidationFailed,
                "services[0].replicas",
            ),
        ];
        for (body, code, field) in cases {
            let source = format!("deployment: a\nservices:\n  - name: web\n    {body}\n");
            assert_eq!(
                codes_and_fields(&source),
                [(code, field.to_owned())],
                "{body}"
            );
        }
        let ok = "deployment: a\nservices:\n  - {name: db, placement: hosts, hosts: [a, b], replicas: 2}\n  - {name: agent, placement: global}\n";
        assert!(codes_and_fields(ok).is_empty());
    }

    #[test]
    fn duplicate_service_override_and_missing_name() {
        let fields = codes_and_fields(
            "deployment: a\nservices:\n  - name: web\n  - name: web\n  - replicas: 1\n",
        );
        assert_eq!(
            fields,
            [
                (Code::ValidationFailed, "services[1].name".into()),
                (Code::ValidationFailed, "services[2].name".into())
            ]
        );
    }

    #[test]
    fn update_policy_values() {
        let fields = codes_and_fields(
            "deployment: a\nservices:\n  - name: web\n    update: {parallelism: 0, order: random, monitor: 5, failure_action: continue}\n",
        );
        assert_eq!(
            fields,
            [
                (
                    Code::ValidationFailed,
                    "services[0].update.parallelism".into()
                ),
                (Code::ValidationFailed, "services[0].update.order".into()),
                (Code::ValidationFailed, "services[0].update.monitor".into()),
                (
                    Code::ValidationFailed,
                    "services[0].update.failure_action".into()
                ),
            ]
        );
    }

    #[test]
    fn route_rules() {
        let route = |body: &str| format!("deployment: a\nroutes:\n  - {{{body}}}\n");
        assert_eq!(
            codes_and_fields(&route("service: web, port: 80")),
            [(Code::ValidationFailed, "routes[0].domain".into())]
        );
        assert_eq!(
            codes_and_fields(&route("domain: a.example.com, service: web, port: 0")),
            [(Code::ValidationFailed, "routes[0].port".into())]
        );
        assert_eq!(
            codes_and_fields(&route("domain: A.example.com, service: web, port: 1")),
            [(Code::ValidationFailed, "routes[0].domain".into())]
        );
        assert_eq!(
            codes_and_fields(&route(
                "domain: a.example.com, service: web, port: 1, path: api"
            )),
            [(Code::ValidationFailed, "routes[0].path".into())]
        );
        assert_eq!(
            codes_and_fields(&route(
                "domain: a.example.com, service: web, port: 1, tls: maybe"
            )),
            [(Code::ValidationFailed, "routes[0].tls".into())]
        );
    }

    #[test]
    fn duplicate_domain_and_path_is_a_conflict() {
        let (_, errors) = read_str(
            "deployment: a\nroutes:\n  - {domain: a.example.com, service: web, port: 1}\n  - {domain: a.example.com, service: api, port: 2, path: /}\n",
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].details["reason"], "route_conflict");
    }

    #[test]
    fn mixed_tls_on_one_domain_is_refused() {
        let (_, errors) = read_str(
            "deployment: a\nroutes:\n  - {domain: a.example.com, service: web, port: 1}\n  - {domain: a.example.com, service: api, port: 2, path: /api, tls: off}\n",
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].code, Code::ValidationFailed);
        assert_eq!(errors[0].details["reason"], "route_tls_mixed");

        // With acme off, an unspecified tls means off, so the same pair is consistent.
        let (_, errors) = read_str(
            "deployment: a\nacme: off\nroutes:\n  - {domain: a.example.com, service: web, port: 1}\n  - {domain: a.example.com, service: api, port: 2, path: /api, tls: off}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn not_a_mapping() {
        let (_, errors) = read_str("- just\n- a list\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].code, Code::ValidationFailed);
    }
}
