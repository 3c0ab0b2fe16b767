//! End-to-end tests of the manifest pipeline on in-memory files: every rule of SPEC §2 and
//! every code it can produce, valid and invalid.

use std::path::Path;

use super::*;
use crate::error::Code;

const JACO: &str = "deployment: shop\n";

fn files(jaco: &str, compose: &str) -> MemoryFiles {
    MemoryFiles::default()
        .with("app/jaco.yaml", jaco)
        .with("app/compose.yaml", compose)
}

fn load_files(files: &MemoryFiles) -> Result<Resolved, Vec<Error>> {
    load(files, Path::new("app/jaco.yaml"), None)
}

fn run(jaco: &str, compose: &str) -> Result<Resolved, Vec<Error>> {
    load_files(&files(jaco, compose))
}

fn ok(jaco: &str, compose: &str) -> Resolved {
    run(jaco, compose).unwrap_or_else(|errors| panic!("expected valid, got {errors:#?}"))
}

fn errors(jaco: &str, compose: &str) -> Vec<Error> {
    match run(jaco, compose) {
        Ok(_) => panic!("expected problems, manifest was valid"),
        Err(errors) => errors,
    }
}

/// The only problem's code, asserting there is exactly one.
fn single(jaco: &str, compose: &str) -> Error {
    let mut all = errors(jaco, compose);
    assert_eq!(all.len(), 1, "expected one problem, got {all:#?}");
    all.remove(0)
}

fn service(body: &str) -> String {
    format!("services:\n  web:\n    image: nginx:1.27\n{body}")
}

#[test]
fn minimal_deployment_resolves_with_defaults() {
    let resolved = ok(JACO, "services:\n  web:\n    image: nginx:1.27\n");
    assert_eq!(resolved.deployment_name(), "shop");
    let web = &resolved.services["web"];
    assert_eq!(web.replicas, 1);
    assert_eq!(web.placement, Placement::Spread);
    assert_eq!(web.update, UpdatePolicy::default());
    assert_eq!(web.container.image, "nginx:1.27");
    assert!(web.container.networks.contains_key("default"));
    assert!(resolved.deployment.networks.contains_key("default"));
    assert_eq!(web.spec_hash.len(), 64);
    assert!(resolved.warnings.is_empty());
}

#[test]
fn yaml_syntax_errors_are_parse_failed_with_position() {
    let error = single("deployment: [shop\n", "services: {}\n");
    assert_eq!(error.code, Code::ParseFailed);
    assert_eq!(error.details["file"], "app/jaco.yaml");
    assert!(error.details.contains_key("line") && error.details.contains_key("column"));

    let error = single(
        JACO,
        "services:\n  web:\n    image: nginx\n   bad: indent\n",
    );
    assert_eq!(error.code, Code::ParseFailed);
    assert_eq!(error.details["file"], "app/compose.yaml");
    assert_eq!(error.details["line"], "4");
}

#[test]
fn compose_discovery_order_and_overrides() {
    let compose = |image: &str| format!("services:\n  web:\n    image: {image}\n");
    let all = MemoryFiles::default()
        .with("app/jaco.yaml", JACO)
        .with("app/docker-compose.yml", compose("d:yml"))
        .with("app/docker-compose.yaml", compose("d:yaml"))
        .with("app/compose.yml", compose("c:yml"));
    assert_eq!(
        load_files(&all).unwrap().services["web"].container.image,
        "c:yml"
    );
    let legacy_only = MemoryFiles::default()
        .with("app/jaco.yaml", JACO)
        .with("app/docker-compose.yml", compose("d:yml"));
    assert_eq!(
        load_files(&legacy_only).unwrap().services["web"]
            .container
            .image,
        "d:yml"
    );

    let named = all
        .clone()
        .with(
            "app/jaco.yaml",
            "deployment: shop\ncompose: stack/app.yml\n",
        )
        .with("app/stack/app.yml", compose("named:1"));
    assert_eq!(
        load_files(&named).unwrap().services["web"].container.image,
        "named:1"
    );

    let explicit = load(
        &all,
        Path::new("app/jaco.yaml"),
        Some(Path::new("app/docker-compose.yaml")),
    );
    assert_eq!(explicit.unwrap().services["web"].container.image, "d:yaml");

    let none = MemoryFiles::default().with("app/jaco.yaml", JACO);
    let errors = load_files(&none).unwrap_err();
    assert_eq!(errors[0].code, Code::ValidationFailed);
    assert_eq!(errors[0].details["field"], "compose");
    assert!(errors[0].message.contains("--compose"));
}

#[test]
fn missing_jaco_yaml_is_reported_not_panicked() {
    let errors = load(
        &MemoryFiles::default(),
        Path::new("nowhere/jaco.yaml"),
        None,
    )
    .unwrap_err();
    assert_eq!(errors[0].code, Code::ValidationFailed);
    assert_eq!(errors[0].details["reason"], "unreadable_file");
}

fn with_env(env: &str, compose: &str) -> MemoryFiles {
    files("deployment: shop\nenvironment: .env\n", compose).with("app/.env", env)
}

#[test]
fn interpolation_uses_only_the_environment_file() {
    let compose = "services:\n  web:\n    image: \"app:${TAG}\"\n    environment:\n      \
                   URL: postgres://${DB_HOST:-db}:${DB_PORT-5432}/x\n      PRICE: $$5\n      \
                   NESTED: ${A:-${B:-deep}}\n      ALT: ${TAG:+set}\n      HOME_FROM_PROCESS: ${HOME}\n";
    let resolved = load_files(&with_env("TAG=1.2\nDB_PORT=\n", compose)).unwrap();
    let env = &resolved.services["web"].container.environment;
    assert_eq!(resolved.services["web"].container.image, "app:1.2");
    assert_eq!(env["URL"], "postgres://db:/x");
    assert_eq!(env["PRICE"], "$5");
    assert_eq!(env["NESTED"], "deep");
    assert_eq!(env["ALT"], "set");
    assert_eq!(
        env["HOME_FROM_PROCESS"], "",
        "the process environment must never leak in"
    );
    assert!(
        resolved
            .warnings
            .iter()
            .any(|w| w.message.contains("HOME is not set")),
        "{:?}",
        resolved.warnings
    );
}

#[test]
fn missing_required_variable_points_at_compose_line_and_column() {
    let compose = "services:\n  web:\n    image: app\n    environment:\n      PASS: ${DB_PASSWORD:?set it in .env}\n";
    let errors = load_files(&with_env("OTHER=1\n", compose)).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = &errors[0];
    assert_eq!(error.code, Code::ValidationFailed);
    assert_eq!(error.details["file"], "app/compose.yaml");
    assert_eq!(error.details["line"], "5");
    assert_eq!(error.details["column"], "13");
    assert!(error.message.contains("DB_PASSWORD"));
    assert!(error.message.contains("set it in .env"));
}

#[test]
fn malformed_reference_is_reported() {
    let compose = "services:\n  web:\n    image: \"app:${TAG\"\n";
    let error = &load_files(&with_env("TAG=1\n", compose)).unwrap_err()[0];
    assert_eq!(error.code, Code::ValidationFailed);
    assert_eq!(error.details["reason"], "interpolation_failed");
    // The quoted scalar starts at column 12; its `$` is the fifth character inside the quotes.
    let position = (
        error.details["line"].as_str(),
        error.details["column"].as_str(),
    );
    assert_eq!(position, ("3", "17"));
}

#[test]
fn environment_file_problems() {
    let compose = "services:\n  web:\n    image: app\n";
    let missing = files("deployment: shop\nenvironment: prod.env\n", compose);
    let error = &load_files(&missing).unwrap_err()[0];
    assert_eq!(error.code, Code::ValidationFailed);
    assert_eq!(error.details["field"], "environment");

    let broken = with_env("A=1\nB=\"unterminated\n", compose);
    let error = &load_files(&broken).unwrap_err()[0];
    assert_eq!(error.code, Code::ValidationFailed);
    assert_eq!(error.details["file"], "app/.env");
    assert_eq!(error.details["line"], "2");
}

#[test]
fn env_files_fold_with_precedence() {
    let compose = service(
        "    env_file: [base.env, {path: override.env}, {path: optional.env, required: false}]\n    \
         environment:\n      EXPLICIT: from-compose\n",
    );
    let fs = files(JACO, &compose)
        .with("app/base.env", "A=base\nB=base\nEXPLICIT=base\n")
        .with("app/override.env", "B=override\nC=${B}-ref\n");
    let env = load_files(&fs).unwrap().services["web"]
        .container
        .environment
        .clone();
    assert_eq!(env["A"], "base");
    assert_eq!(env["B"], "override");
    assert_eq!(env["C"], "override-ref");
    assert_eq!(env["EXPLICIT"], "from-compose");

    let missing = files(JACO, &service("    env_file: nope.env\n"));
    let error = &load_files(&missing).unwrap_err()[0];
    assert_eq!(error.code, Code::ValidationFailed);
    assert_eq!(error.details["field"], "env_file");
    assert_eq!(error.details["service"], "web");
}

#[test]
fn label_files_fold_into_labels() {
    let fs = files(
        JACO,
        &service("    label_file: labels.env\n    labels: [team=web]\n"),
    )
    .with("app/labels.env", "team=ops\ntier=front\n");
    let labels = load_files(&fs).unwrap().services["web"]
        .container
        .labels
        .clone();
    assert_eq!(labels["team"], "web");
    assert_eq!(labels["tier"], "front");
}

#[test]
fn unknown_service_override_and_route_target() {
    let compose = service("");
    let error = single("deployment: shop\nservices:\n  - name: api\n", &compose);
    assert_eq!(error.code, Code::UnknownService);
    assert_eq!(error.details["service"], "api");
    assert!(error.message.contains("declared compose services: [web]"));

    let error = single(
        "deployment: shop\nroutes:\n  - {domain: shop.example.com, service: api, port: 80}\n",
        &compose,
    );
    assert_eq!(error.code, Code::UnknownService);
    assert_eq!(error.details["field"], "routes[0].service");
}

#[test]
fn routes_resolve_with_tls_defaults_and_order() {
    let jaco = "deployment: shop\nroutes:\n  - {domain: shop.example.com, service: web, port: 8080}\n  \
                - {domain: shop.example.com, service: web, port: 9000, path: /api, strip_path: true}\n";
    let resolved = ok(jaco, &service(""));
    let routes = &resolved.deployment.routes;
    assert_eq!(resolved.route_count(), 2);
    assert_eq!(routes[0].path, "/");
    assert_eq!(routes[1].path, "/api");
    assert!(routes.iter().all(|r| r.tls == spec::TlsMode::Auto));
    let off = ok(&format!("{jaco}acme: off\n"), &service(""));
    assert!(
        off.deployment
            .routes
            .iter()
            .all(|r| r.tls == spec::TlsMode::Off)
    );
}

#[test]
fn route_to_unreachable_network_mode_is_refused() {
    let compose =
        "services:\n  web:\n    image: a\n  side:\n    image: b\n    network_mode: none\n";
    let error = single(
        "deployment: shop\nroutes:\n  - {domain: a.example.com, service: side, port: 80}\n",
        compose,
    );
    assert_eq!(error.code, Code::ValidationFailed);
    assert!(error.message.contains("network_mode"));
}

#[test]
fn pinned_hosts_must_cover_replicas() {
    let jaco =
        "deployment: shop\nservices:\n  - {name: web, placement: hosts, hosts: [a], replicas: 2}\n";
    let error = single(jaco, &service(""));
    assert_eq!(error.code, Code::ReplicasExceedPinnedHosts);
    assert_eq!(error.details["replicas"], "2");

    // The replica count may also come from compose.
    let jaco = "deployment: shop\nservices:\n  - {name: web, placement: hosts, hosts: [a, b]}\n";
    let error = single(jaco, &service("    deploy:\n      replicas: 3\n"));
    assert_eq!(error.code, Code::ReplicasExceedPinnedHosts);

    let resolved = ok(jaco, &service("    deploy:\n      replicas: 2\n"));
    assert_eq!(resolved.services["web"].hosts, ["a", "b"]);
}

#[test]
fn unknown_hosts_need_cluster_members() {
    let jaco =
        "deployment: shop\nservices:\n  - {name: web, placement: hosts, hosts: [node-a, node-z]}\n";
    let resolved = ok(jaco, &service(""));
    let members = vec!["node-a".to_owned(), "node-b".to_owned()];
    let errors = check_hosts(&resolved, &members);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].code, Code::UnknownHost);
    assert_eq!(errors[0].details["host"], "node-z");
    assert!(errors[0].message.contains("node-a, node-b"));
    assert!(check_hosts(&resolved, &["node-a".into(), "node-z".into()]).is_empty());
}

#[test]
fn global_placement_runs_one_per_node_and_ignores_compose_replicas() {
    let jaco = "deployment: shop\nservices:\n  - {name: web, placement: global}\n";
    let resolved = ok(jaco, &service("    deploy:\n      replicas: 3\n"));
    assert_eq!(resolved.services["web"].replicas, 0);
    assert_eq!(resolved.services["web"].placement, Placement::Global);
    assert!(
        resolved
            .warnings
            .iter()
            .any(|w| w.field == "deploy.replicas")
    );
}

#[test]
fn unknown_network() {
    let error = single(
        JACO,
        &service("    networks: [front, back]\nnetworks:\n  front: {}\n"),
    );
    assert_eq!(error.code, Code::UnknownNetwork);
    assert_eq!(error.details["network"], "back");
    assert!(error.message.contains("declared: [default, front]"));
    let resolved = ok(
        JACO,
        &service("    networks:\n      front:\n        aliases: [www]\nnetworks:\n  front:\n"),
    );
    assert_eq!(
        resolved.services["web"].container.networks["front"].aliases,
        ["www"]
    );
    assert!(!resolved.deployment.networks.contains_key("default"));
}

#[test]
fn reserved_ports_in_every_spelling() {
    for ports in [
        "[\"80:80\"]",
        "[\"443:8443\"]",
        "[\"79-81:79-81\"]",
        "[\"127.0.0.1:80:8080\"]",
        "[{target: 8443, published: 443}]",
        "[{target: 8080, published: \"80\", protocol: tcp}]",
    ] {
        let error = single(JACO, &service(&format!("    ports: {ports}\n")));
        assert_eq!(error.code, Code::ReservedPort, "{ports}");
        assert_eq!(error.details["service"], "web");
        assert!(error.details["port"] == "80" || error.details["port"] == "443");
        assert_eq!(error.details["line"], "4", "points at the entry: {error:?}");
        if let Some(short) = ports.strip_prefix("[\"") {
            assert_eq!(error.details["entry"], short.trim_end_matches("\"]"));
        }
    }
}

#[test]
fn port_conflicts_inside_one_deployment() {
    let error = single(JACO, &service("    ports: [\"8080:80\", \"8080:81\"]\n"));
    assert_eq!(error.code, Code::PortConflict);
    let compose = "services:\n  a:\n    image: x\n    ports: [\"9000:9000\"]\n  b:\n    image: y\n    ports: [\"9000:80\"]\n";
    let error = single(JACO, compose);
    assert_eq!(error.code, Code::PortConflict);
    assert_eq!(error.details["other_service"], "a");
    // Different protocols do not conflict.
    ok(
        JACO,
        &service("    ports: [\"5353:53/tcp\", \"5353:53/udp\"]\n"),
    );
}

#[test]
fn published_tcp_ports_become_routes_and_others_are_explained() {
    let resolved = ok(
        JACO,
        &service("    ports: [\"8080:80\", \"127.0.0.1:9000:9000\", \"53/udp\", \"7000\"]\n"),
    );
    assert_eq!(
        resolved.deployment.tcp_routes,
        [spec::TcpRoute {
            published_port: 8080,
            service: "web".into(),
            container_port: 80
        }]
    );
    assert_eq!(
        resolved
            .warnings
            .iter()
            .filter(|w| w.field == "ports")
            .count(),
        3
    );
}

#[test]
fn bad_port_syntax() {
    let error = single(JACO, &service("    ports: [\"http\"]\n"));
    assert_eq!(error.code, Code::ValidationFailed);
    assert_eq!(error.details["field"], "ports[0]");
}

#[test]
fn legacy_spellings_name_their_modern_equivalent() {
    for (key, value, modern) in [
        ("log_driver", "json-file", "logging.driver"),
        ("log_opt", "{max-size: 1m}", "logging.options"),
        ("net", "host", "network_mode"),
        ("volume_driver", "local", "long-form volumes with driver"),
        ("dockerfile", "Dockerfile", "build.dockerfile"),
        ("volumes_from", "[db]", "named volumes shared explicitly"),
    ] {
        let error = single(JACO, &service(&format!("    {key}: {value}\n")));
        assert_eq!(error.code, Code::LegacyComposeField, "{key}");
        assert_eq!(error.details["field"], key);
        assert_eq!(error.details["modern_equivalent"], modern);
    }
}

#[test]
fn ignored_keys_warn_and_still_validate() {
    let resolved = ok(
        JACO,
        &service(
            "    restart: always\n    container_name: web1\n    build: .\n    links: [db]\n    \
             deploy:\n      restart_policy: {condition: on-failure}\n      mode: replicated\n",
        ),
    );
    let fields: Vec<&str> = resolved.warnings.iter().map(|w| w.field.as_str()).collect();
    for field in [
        "restart",
        "container_name",
        "build",
        "links",
        "deploy.restart_policy",
        "deploy.mode",
    ] {
        assert!(fields.contains(&field), "{field} not warned: {fields:?}");
    }
    assert!(
        resolved.warnings[0]
            .to_string()
            .starts_with("service \"web\": ")
    );
}

#[test]
fn jaco_never_builds() {
    let error = single(JACO, "services:\n  web:\n    build: .\n");
    assert_eq!(error.code, Code::ValidationFailed);
    assert!(error.message.contains("never builds"));
    assert_eq!(error.details["field"], "image");

    let error = single(JACO, "services:\n  web:\n    command: [sleep, '1']\n");
    assert_eq!(error.code, Code::ValidationFailed);
    assert_eq!(error.details["field"], "image");
}

#[test]
fn rejected_and_unknown_service_keys() {
    for key in [
        "mac_address: 02:42:ac:11:65:43",
        "isolation: hyperv",
        "credential_spec: {file: x}",
        "frobnicate: 1",
    ] {
        let error = single(JACO, &service(&format!("    {key}\n")));
        assert_eq!(error.code, Code::ValidationFailed, "{key}");
        assert_eq!(error.details["service"], "web");
        assert_eq!(error.details["field"], key.split(':').next().unwrap());
    }
    let error = single(JACO, &service("    deploy:\n      bogus: 1\n"));
    assert_eq!(error.details["field"], "deploy.bogus");
    let error = single(JACO, &service("    deploy.replicas: 2\n"));
    assert_eq!(error.details["field"], "deploy.replicas");
}

#[test]
fn top_level_keys() {
    let resolved = ok(
        JACO,
        &format!(
            "version: '3.8'\nname: ignored\nx-anchors: {{}}\n{}",
            service("")
        ),
    );
    assert!(resolved.warnings.iter().any(|w| w.field == "version"));
    let error = single(JACO, &format!("{}bogus: {{}}\n", service("")));
    assert_eq!(error.details["field"], "bogus");
    let error = single(JACO, "networks: {}\n");
    assert_eq!(error.details["field"], "services");
}

#[test]
fn depends_on_forms_and_rules() {
    let compose = "services:\n  web:\n    image: a\n    depends_on:\n      db: {condition: service_healthy}\n      cache:\n  \
                   db:\n    image: b\n  cache:\n    image: c\n  worker:\n    image: d\n    depends_on: [db]\n";
    let resolved = ok(JACO, compose);
    let web = &resolved.services["web"].depends_on;
    assert_eq!(
        web["db"].condition,
        spec::DependencyCondition::ServiceHealthy
    );
    assert_eq!(
        web["cache"].condition,
        spec::DependencyCondition::ServiceStarted
    );
    assert!(resolved.services["worker"].depends_on.contains_key("db"));

    let cases = [
        (
            "depends_on: {db: {condition: service_completed_successfully}}",
            "unsupported_depends_on_condition",
        ),
        ("depends_on: [web]", "invalid_depends_on"),
        ("depends_on: [ghost]", "unknown_depends_on_service"),
    ];
    let optional = "services:\n  web:\n    image: a\n    depends_on:\n      ghost: {required: false}\n      debug: {required: false}\n  debug:\n    image: b\n    profiles: [debug]\n";
    let resolved = ok(JACO, optional);
    assert!(resolved.services["web"].depends_on.is_empty());
    assert_eq!(
        resolved
            .warnings
            .iter()
            .filter(|w| w.field.starts_with("depends_on."))
            .count(),
        2
    );
    for (body, reason) in cases {
        let compose = format!("services:\n  web:\n    image: a\n    {body}\n  db:\n    image: b\n");
        let error = single(JACO, &compose);
        assert_eq!(error.code, Code::ValidationFailed, "{body}");
        assert_eq!(error.details["reason"], reason, "{body}");
    }
}

#[test]
fn privileged_needs_the_label() {
    let error = single(JACO, &service("    privileged: true\n"));
    assert_eq!(error.code, Code::ValidationFailed);
    assert!(error.message.contains("jaco.io/allow-privileged"));
    let error = single(
        JACO,
        &service(
            "    security_opt: [seccomp:unconfined]\n    labels: {jaco.io/allow-privileged: 'yes'}\n",
        ),
    );
    assert_eq!(error.details["field"], "security_opt");
    ok(
        JACO,
        &service("    privileged: true\n    labels: {\"jaco.io/allow-privileged\": \"true\"}\n"),
    );
    ok(
        JACO,
        &service("    privileged: true\n    labels: [jaco.io/allow-privileged=true]\n"),
    );
    // An explicit false needs no label.
    ok(JACO, &service("    privileged: false\n"));
}

#[test]
fn network_mode_is_restricted() {
    for mode in [
        "host",
        "bridge",
        "container:abc",
        "service:ghost",
        "service:web",
    ] {
        let error = single(JACO, &service(&format!("    network_mode: \"{mode}\"\n")));
        assert_eq!(error.code, Code::ValidationFailed, "{mode}");
        assert_eq!(error.details["field"], "network_mode", "{mode}");
    }
    let compose = "services:\n  web:\n    image: a\n  sidecar:\n    image: b\n    network_mode: service:web\n";
    let resolved = ok(JACO, compose);
    assert!(resolved.services["sidecar"].container.networks.is_empty());
    let error = single(
        JACO,
        &service("    network_mode: none\n    networks: [default]\n"),
    );
    assert_eq!(error.details["field"], "networks");
}

#[test]
fn daemon_refuses_unfolded_env_files() {
    let errors =
        resolve_documents(JACO, &service("    env_file: .env\n"), Objects::default()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].code, Code::EnvFileUnresolved);
    assert_eq!(errors[0].details["service"], "web");
    assert!(resolve_documents(JACO, &service(""), Objects::default()).is_ok());
}

#[test]
fn daemon_does_not_interpolate_again() {
    // The CLI already turned `$$` into `$`; the daemon must keep the text as sent.
    let resolved = resolve_documents(
        JACO,
        &service("    environment: {P: \"$5 ${X}\"}\n"),
        Objects::default(),
    )
    .unwrap();
    assert_eq!(
        resolved.services["web"].container.environment["P"],
        "$5 ${X}"
    );
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let jaco = "deployment: Shop\nservices:\n  - name: ghost\nroutes:\n  - {domain: a.example.com, service: web, port: 0}\n";
    let compose = "services:\n  web:\n    image: a\n    ports: [\"80:80\"]\n    log_driver: syslog\n    networks: [nowhere]\n  db:\n    build: .\n";
    let codes: Vec<Code> = errors(jaco, compose).into_iter().map(|e| e.code).collect();
    for code in [
        Code::ValidationFailed,
        Code::UnknownService,
        Code::ReservedPort,
        Code::LegacyComposeField,
        Code::UnknownNetwork,
    ] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
    assert!(codes.len() >= 6, "{codes:?}");
}

#[test]
fn spec_hash_ignores_formatting_and_sees_values() {
    let a = "services:\n  web:\n    image: app:1\n    environment:\n      A: '1'\n      B: two\n    healthcheck:\n      test: curl -f localhost\n      interval: 90s\n";
    let b = "# a comment\nservices:\n  web: {healthcheck: {interval: 1m30s, test: [CMD-SHELL, curl -f localhost]}, environment: [B=two, A=1],\n    image: \"app:1\"}\n";
    let hash = |compose: &str| ok(JACO, compose).services["web"].spec_hash.clone();
    assert_eq!(hash(a), hash(b));
    assert_ne!(hash(a), hash(&a.replace("B: two", "B: twO")));
    assert_ne!(hash(a), hash(&a.replace("interval: 90s", "interval: 91s")));
    // Orchestration settings do not replace containers.
    let scaled = ok(
        "deployment: shop\nservices:\n  - {name: web, replicas: 5}\n",
        a,
    );
    assert_eq!(scaled.services["web"].spec_hash, hash(a));
}

#[test]
fn secrets_are_hashed_mounted_and_never_printed() {
    let compose = "services:\n  web:\n    image: a\n    secrets: [db_password, {source: api_key, target: key, mode: 0400}]\n    \
                   configs: [app_conf]\nsecrets:\n  db_password: {file: ./secrets/db.txt}\n  api_key: {environment: API_KEY}\n\
                   configs:\n  app_conf: {content: \"x=1\"}\n";
    let fs = |password: &str| {
        files("deployment: shop\nenvironment: .env\n", compose)
            .with("app/.env", "API_KEY=k-123\n")
            .with("app/secrets/db.txt", password.to_owned())
    };
    let resolved = load_files(&fs("hunter2")).unwrap();
    let web = &resolved.services["web"].container;
    assert_eq!(web.secrets[0].target, "/run/secrets/db_password");
    assert_eq!(web.secrets[1].target, "/run/secrets/key");
    assert_eq!(web.secrets[1].mode, Some(0o400));
    assert_eq!(web.configs[0].target, "/app_conf");
    assert_eq!(resolved.deployment.secrets["api_key"].content, b"k-123");
    let json = serde_json::to_string(&resolved).unwrap();
    assert!(
        !json.contains("hunter2") && !json.contains("k-123"),
        "{json}"
    );
    let rotated = load_files(&fs("hunter3")).unwrap();
    assert_ne!(
        rotated.services["web"].spec_hash,
        resolved.services["web"].spec_hash
    );

    let error = single(JACO, &service("    secrets: [undeclared]\n"));
    assert_eq!(error.details["field"], "secrets");
    let missing = files(
        JACO,
        &format!("{}secrets:\n  s: {{file: nope.txt}}\n", service("")),
    );
    assert_eq!(
        load_files(&missing).unwrap_err()[0].details["field"],
        "secrets.s.file"
    );
    let external = single(
        JACO,
        &format!("{}secrets:\n  s: {{external: true}}\n", service("")),
    );
    assert!(external.message.contains("not supported"));
}

#[test]
fn profiles_select_services() {
    let compose =
        "services:\n  web:\n    image: a\n  debug:\n    image: b\n    profiles: [debug]\n";
    assert!(!ok(JACO, compose).services.contains_key("debug"));
    let enabled = ok("deployment: shop\nprofiles: [debug]\n", compose);
    assert!(enabled.services.contains_key("debug"));

    let depends = "services:\n  web:\n    image: a\n    depends_on: [debug]\n  debug:\n    image: b\n    profiles: [debug]\n";
    assert_eq!(
        single(JACO, depends).details["reason"],
        "depends_on_disabled_service"
    );
}

#[test]
fn extends_and_include_are_resolved() {
    let compose = "include: [more.yaml]\nservices:\n  base:\n    image: base:1\n    environment: {A: '1', B: '1'}\n  \
                   web:\n    extends: base\n    environment: {B: '2'}\n  api:\n    extends: {file: common.yaml, service: tmpl}\n";
    let fs = files(JACO, compose)
        .with(
            "app/common.yaml",
            "services:\n  tmpl:\n    image: tmpl:2\n    user: nobody\n",
        )
        .with("app/more.yaml", "services:\n  extra:\n    image: extra:3\n");
    let resolved = load_files(&fs).unwrap();
    let web = &resolved.services["web"].container;
    assert_eq!(web.image, "base:1");
    assert_eq!(
        (web.environment["A"].as_str(), web.environment["B"].as_str()),
        ("1", "2")
    );
    assert_eq!(
        resolved.services["api"].container.user.as_deref(),
        Some("nobody")
    );
    assert_eq!(resolved.services["extra"].container.image, "extra:3");

    let ghost = errors(JACO, "services:\n  web:\n    extends: ghost\n");
    assert_eq!(ghost[0].details["field"], "extends.service");
    let cycle = "services:\n  a:\n    extends: b\n  b:\n    extends: a\n";
    assert!(
        errors(JACO, cycle)
            .iter()
            .any(|e| e.message.contains("cycle"))
    );
    let clash = files(JACO, &format!("include: [more.yaml]\n{}", service("")))
        .with("app/more.yaml", "services:\n  web:\n    image: other\n");
    assert_eq!(
        load_files(&clash).unwrap_err()[0].details["field"],
        "services.web"
    );
}

#[test]
fn anchors_and_extension_fields() {
    let compose = "x-common: &common\n  image: app:1\n  environment: &env\n    LOG: info\n  restart: always\n\
                   services:\n  a:\n    <<: *common\n  b:\n    <<: *common\n    environment:\n      <<: *env\n      EXTRA: '1'\n";
    let resolved = ok(JACO, compose);
    assert_eq!(resolved.services["a"].container.image, "app:1");
    assert_eq!(resolved.services["b"].container.environment["LOG"], "info");
    assert_eq!(resolved.services["b"].container.environment["EXTRA"], "1");
}

#[test]
fn healthcheck_forms() {
    let check = |body: &str| {
        ok(JACO, &service(&format!("    healthcheck:\n{body}"))).services["web"]
            .container
            .healthcheck
            .clone()
    };
    let shell = check("      test: curl -f http://localhost\n      retries: 3\n").unwrap();
    assert_eq!(shell.test, ["CMD-SHELL", "curl -f http://localhost"]);
    assert_eq!(shell.retries, Some(3));
    assert!(check("      test: [CMD, pg_isready]\n      disable: true\n").is_none());
    assert!(check("      test: [NONE]\n").is_none());
    let inherited = check("      disable: false\n      interval: 30s\n").unwrap();
    assert!(
        inherited.test.is_empty(),
        "no test keeps the image's own check"
    );
    assert_eq!(inherited.interval.as_deref(), Some("30s"));
    let error = single(
        JACO,
        &service("    healthcheck:\n      test: [pg_isready]\n"),
    );
    assert_eq!(error.details["field"], "healthcheck.test");
    let error = single(
        JACO,
        &service("    healthcheck:\n      test: [CMD, x]\n      interval: 10\n"),
    );
    assert_eq!(error.details["field"], "healthcheck.interval");
}

#[test]
fn update_policy_precedence() {
    let compose = service(
        "    deploy:\n      update_config: {parallelism: 2, delay: 10s, order: stop-first, failure_action: pause}\n",
    );
    let from_compose = ok(JACO, &compose).services["web"].update.clone();
    assert_eq!(from_compose.parallelism, 2);
    assert_eq!(from_compose.order, spec::UpdateOrder::StopFirst);
    assert_eq!(from_compose.delay, "10s");
    assert_eq!(from_compose.failure_action, spec::FailureAction::Pause);
    let jaco = "deployment: shop\nservices:\n  - name: web\n    update: {parallelism: 3, failure_action: rollback}\n";
    let merged = ok(jaco, &compose).services["web"].update.clone();
    assert_eq!(merged.parallelism, 3);
    assert_eq!(merged.order, spec::UpdateOrder::StopFirst);
    assert_eq!(merged.failure_action, spec::FailureAction::Rollback);
}

#[test]
fn resources_prefer_deploy_over_flat_keys() {
    let flat = ok(
        JACO,
        &service(
            "    cpus: 0.5\n    mem_limit: 512m\n    mem_reservation: 128m\n    pids_limit: 100\n",
        ),
    );
    let r = &flat.services["web"].container.resources;
    assert_eq!(
        (r.limits.cpus, r.limits.memory, r.limits.pids),
        (Some(0.5), Some(512 << 20), Some(100))
    );
    assert_eq!(r.reservations.memory, Some(128 << 20));
    let deploy = ok(
        JACO,
        &service(
            "    mem_limit: 512m\n    deploy:\n      resources:\n        limits: {cpus: '2', memory: 1g}\n        reservations: {cpus: '0.25'}\n",
        ),
    );
    let r = &deploy.services["web"].container.resources;
    assert_eq!((r.limits.cpus, r.limits.memory), (Some(2.0), Some(1 << 30)));
    assert_eq!(r.reservations.cpus, Some(0.25));
    let error = single(JACO, &service("    mem_limit: lots\n"));
    assert_eq!(error.details["field"], "mem_limit");
}

#[test]
fn volumes_must_be_declared_and_binds_are_explained() {
    let error = single(JACO, &service("    volumes: [data:/data]\n"));
    assert_eq!(error.details["field"], "volumes[0]");
    let resolved = ok(
        JACO,
        &format!(
            "{}volumes:\n  data:\n  shared: {{name: shared-data, external: true}}\n",
            service(
                "    volumes: [data:/data, shared:/shared:ro, ./conf:/etc/app, /srv:/srv, {type: tmpfs, target: /tmp}]\n"
            )
        ),
    );
    let mounts = &resolved.services["web"].container.volumes;
    assert_eq!(mounts.len(), 5);
    assert!(mounts[1].read_only);
    assert_eq!(
        resolved.deployment.volumes["shared"].name.as_deref(),
        Some("shared-data")
    );
    assert_eq!(
        resolved
            .warnings
            .iter()
            .filter(|w| w.field.starts_with("volumes["))
            .count(),
        1
    );
}

#[test]
fn config_output_has_the_stable_shape() {
    let compose = "services:\n  web:\n    image: \"app:${TAG}\"\n    env_file: web.env\n    environment:\n      MODE: prod\n";
    let fs = files("deployment: shop\nenvironment: .env\n", compose)
        .with("app/.env", "TAG=7\n")
        .with("app/web.env", "FROM_FILE=yes\nMODE=dev\n");
    let json = serde_json::to_value(load_files(&fs).unwrap()).unwrap();
    assert_eq!(json["deployment"]["name"], "shop");
    assert_eq!(json["services"]["web"]["image"], "app:7");
    assert_eq!(
        json["services"]["web"]["environment"],
        serde_json::json!({"FROM_FILE": "yes", "MODE": "prod"})
    );
    assert!(json["services"]["web"]["spec_hash"].is_string());
}
