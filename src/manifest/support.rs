//! The compose support matrix: every service key jaco knows and its class.
//!
//! One table drives both the validator (which key is honoured, ignored with a warning,
//! legacy, or rejected) and `docs/compose-support.md` (rendered by [`render_markdown`]; a test
//! fails when the committed doc and this table disagree). Keys not in the table are rejected.
//! This module only classifies; it must not interpret values.

/// How jaco treats a compose service key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Honoured: the value is validated and reaches the container.
    Honoured,
    /// Accepted and ignored; the CLI prints the warning.
    Ignored(&'static str),
    /// A v1/v2 spelling: `legacy_compose_field` naming the modern equivalent.
    Legacy(&'static str),
    /// Known and refused: `validation_failed` with the reason.
    Rejected(&'static str),
}

/// One row of the matrix. Nested keys use dots (`deploy.replicas`).
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// The key path inside a service.
    pub key: &'static str,
    /// What jaco does with it.
    pub class: Class,
    /// A note for the docs (how it is honoured), empty when obvious.
    pub note: &'static str,
}

const fn honoured(key: &'static str, note: &'static str) -> Row {
    Row {
        key,
        class: Class::Honoured,
        note,
    }
}

const fn ignored(key: &'static str, why: &'static str) -> Row {
    Row {
        key,
        class: Class::Ignored(why),
        note: "",
    }
}

const fn legacy(key: &'static str, modern: &'static str) -> Row {
    Row {
        key,
        class: Class::Legacy(modern),
        note: "",
    }
}

const fn rejected(key: &'static str, why: &'static str) -> Row {
    Row {
        key,
        class: Class::Rejected(why),
        note: "",
    }
}

/// The matrix for keys of a service (and of its `deploy:` section).
pub const SERVICE_KEYS: &[Row] = &[
    honoured("image", "required: jaco never builds images"),
    honoured("command", "string (split like a shell) or list"),
    honoured("entrypoint", "string (split like a shell) or list"),
    honoured(
        "environment",
        "map or `KEY=value` list; interpolated by the CLI",
    ),
    honoured(
        "env_file",
        "folded into `environment` by the CLI; explicit `environment` wins",
    ),
    honoured(
        "label_file",
        "folded into `labels` by the CLI; explicit `labels` win",
    ),
    honoured("labels", "map or `key=value` list"),
    honoured(
        "annotations",
        "map or `key=value` list; needs Docker API 1.43 (engine 24), older engines ignore them",
    ),
    honoured("user", ""),
    honoured("group_add", ""),
    honoured("working_dir", ""),
    honoured("hostname", ""),
    honoured("domainname", ""),
    honoured("extra_hosts", "list or map"),
    honoured("dns", "string or list"),
    honoured("dns_search", "string or list"),
    honoured("dns_opt", ""),
    honoured("init", ""),
    honoured("read_only", ""),
    honoured("tty", ""),
    honoured("stdin_open", ""),
    honoured("platform", ""),
    honoured("runtime", ""),
    honoured("tmpfs", "string or list"),
    honoured(
        "volumes",
        "named, bind and anonymous; short and long form; `volume.subpath` needs Docker API 1.45",
    ),
    honoured(
        "ports",
        "published TCP ports become cluster-wide L4 routes; 80 and 443 are reserved",
    ),
    honoured("expose", "documentation only"),
    honoured(
        "networks",
        "list or map with `aliases`; must be declared at top level",
    ),
    honoured(
        "depends_on",
        "list or map; `service_started` and `service_healthy`",
    ),
    honoured(
        "healthcheck",
        "including `disable: true`; `start_interval` needs Docker API 1.44",
    ),
    honoured("stop_signal", ""),
    honoured("stop_grace_period", "rounded up to whole seconds"),
    honoured("cap_add", ""),
    honoured("cap_drop", ""),
    honoured("sysctls", "map or list"),
    honoured("ulimits", "number or `{soft, hard}`"),
    honoured("shm_size", ""),
    honoured(
        "ipc",
        "`service:<name>` shares a replica's on the same node",
    ),
    honoured(
        "pid",
        "`service:<name>` shares a replica's on the same node",
    ),
    honoured("uts", ""),
    honoured("userns_mode", ""),
    honoured("cgroup", ""),
    honoured("cgroup_parent", ""),
    honoured(
        "devices",
        "short and long form; CDI names (`vendor/class=name`) need an engine with CDI",
    ),
    honoured("device_cgroup_rules", ""),
    honoured("gpus", "needs the NVIDIA container toolkit on the node"),
    honoured("logging", "`driver` and `options`"),
    honoured("pull_policy", "always, missing, never, build (= missing)"),
    honoured(
        "network_mode",
        "only `none` or `service:<name>` of the same deployment",
    ),
    honoured(
        "privileged",
        "needs the label `jaco.io/allow-privileged: \"true\"` and a privileged token",
    ),
    honoured(
        "security_opt",
        "needs the label `jaco.io/allow-privileged: \"true\"` and a privileged token",
    ),
    honoured("cpus", "superseded by `deploy.resources`"),
    honoured("cpu_shares", ""),
    honoured("cpu_quota", ""),
    honoured("cpu_period", ""),
    honoured("cpuset", ""),
    honoured(
        "mem_limit",
        "superseded by `deploy.resources.limits.memory`",
    ),
    honoured(
        "mem_reservation",
        "superseded by `deploy.resources.reservations.memory`",
    ),
    honoured("memswap_limit", ""),
    honoured("mem_swappiness", ""),
    honoured("oom_kill_disable", ""),
    honoured("oom_score_adj", ""),
    honoured("pids_limit", "superseded by `deploy.resources.limits.pids`"),
    honoured("blkio_config", ""),
    honoured("storage_opt", ""),
    honoured("scale", "default replica count"),
    honoured(
        "profiles",
        "deployed only when jaco.yaml's `profiles:` enables one",
    ),
    honoured("secrets", "mounted read-only at `/run/secrets/<name>`"),
    honoured("configs", "mounted read-only at the target path"),
    honoured("extends", "resolved by the CLI"),
    honoured("deploy", "see the `deploy.*` rows"),
    honoured("deploy.replicas", "default replica count"),
    honoured(
        "deploy.resources",
        "`limits` and `reservations` (cpus, memory, pids, devices)",
    ),
    honoured(
        "deploy.update_config",
        "parallelism, delay, order, monitor, failure_action → rolling-update policy",
    ),
    ignored(
        "build",
        "jaco never builds images; the service runs `image`",
    ),
    ignored("restart", "jaco owns restarts"),
    ignored("container_name", "replicas are named by jaco"),
    ignored("links", "service names resolve through jaco DNS"),
    ignored("external_links", "service names resolve through jaco DNS"),
    ignored("develop", "development-only"),
    ignored("deploy.placement", "use jaco.yaml `placement` and `hosts`"),
    ignored("deploy.restart_policy", "jaco owns restarts"),
    ignored(
        "deploy.rollback_config",
        "jaco rolls back with the update policy",
    ),
    ignored(
        "deploy.mode",
        "use jaco.yaml `placement: global` for one replica per node",
    ),
    ignored(
        "deploy.endpoint_mode",
        "jaco DNS answers every healthy replica",
    ),
    ignored(
        "deploy.labels",
        "swarm service labels have no jaco equivalent",
    ),
    legacy("log_driver", "logging.driver"),
    legacy("log_opt", "logging.options"),
    legacy("net", "network_mode"),
    legacy("volume_driver", "long-form volumes with driver"),
    legacy("dockerfile", "build.dockerfile"),
    legacy("volumes_from", "named volumes shared explicitly"),
    rejected(
        "mac_address",
        "jaco assigns addresses on per-deployment bridges",
    ),
    rejected("isolation", "Windows container isolation is not supported"),
    rejected(
        "credential_spec",
        "Windows credential specs are not supported",
    ),
    rejected("cpu_count", "Windows-only resource control"),
    rejected("cpu_percent", "Windows-only resource control"),
    rejected(
        "cpu_rt_runtime",
        "real-time scheduling is not supported on shared nodes",
    ),
    rejected(
        "cpu_rt_period",
        "real-time scheduling is not supported on shared nodes",
    ),
    rejected("attach", "jaco collects logs itself"),
    rejected("post_start", "lifecycle hooks are not supported yet"),
    rejected("pre_stop", "lifecycle hooks are not supported yet"),
    rejected("provider", "compose providers are not supported"),
    rejected("models", "compose models are not supported"),
    rejected("use_api_socket", "containers never get the docker socket"),
    rejected("pull_refresh_after", "use `pull_policy`"),
];

/// Top-level compose keys and what happens to them.
pub const TOP_LEVEL_KEYS: &[Row] = &[
    honoured("services", ""),
    honoured(
        "networks",
        "one isolated bridge per (deployment, network) on each node",
    ),
    honoured("volumes", "`name:` and `external: true` are honoured"),
    honoured(
        "secrets",
        "`file:` or `environment:` sources, read by the CLI",
    ),
    honoured(
        "configs",
        "`file:`, `environment:` or `content:` sources, read by the CLI",
    ),
    honoured("include", "resolved by the CLI"),
    ignored("version", "obsolete"),
    ignored("name", "the deployment name comes from jaco.yaml"),
    rejected("models", "compose models are not supported"),
];

/// Looks up a service key (dotted for `deploy.*`).
pub fn service_key(key: &str) -> Option<&'static Row> {
    SERVICE_KEYS.iter().find(|row| row.key == key)
}

/// Looks up a top-level key.
pub fn top_level_key(key: &str) -> Option<&'static Row> {
    TOP_LEVEL_KEYS.iter().find(|row| row.key == key)
}

/// How the node's Docker runtime applies honoured keys (rendered into the doc).
const RUNTIME_NOTES: &str = "\
## How replicas run on Docker

Each replica is one container, `jaco_<replica id>`, created through the Docker Engine API
(jaco needs API 1.41, Docker 20.10, or newer; where a key needs a newer API the table says so,
and an older engine ignores that value). Beyond the table:

- **Restarts** are jaco's: containers get no Docker restart policy (`restart` is ignored).
- **Healthchecks**: a service without `healthcheck` (or with `disable: true`) runs with
  Docker's `NONE`, so an image's own `HEALTHCHECK` does not contradict the replica state;
  `healthcheck:` without `test` keeps the image's command with the given timings.
- **Ports** are not published on the container: published TCP ports become cluster-wide L4
  routes served by every node.
- **Networks**: each compose network is a bridge `jaco_<deployment>_<network>` on every node
  that hosts a replica of it, with a /24 from the cluster's pool; deployments are isolated from
  each other. Service names (`<service>`, `<service>.<deployment>`,
  `<service>.jaco.internal`) resolve through jaco's responder on the bridge gateway to every
  running replica in the cluster; a replica carries only its compose `aliases` as Docker
  aliases (node-local names). A service's `dns:` replaces jaco's resolver for it (and with it
  the cluster-wide service names).
- **Named volumes** are `jaco_<deployment>_<volume>`, or the volume's `name:`; `external: true`
  volumes must exist on the node and are never created or removed. Anonymous volumes are
  removed with their container, so a restarted replica starts with fresh ones.
- **Bind mounts** in short form create a missing host path (as `docker run -v` does); long form
  with `bind.create_host_path: false` does not. Sources are paths on the node; a relative
  source is refused by Docker (`docker_error`).
- **Secrets and configs** are written by the node under its `runtime.secrets_dir` (a tmpfs on
  appliance nodes) and bind-mounted read-only at `/run/secrets/<name>` and the config target;
  `mode` defaults to `0444`, `uid`/`gid` must be numeric.
- **`service:<name>`** in `network_mode`, `ipc` and `pid` needs a running replica of that
  service on the same node; the replica stays `pending`, saying so, until there is one.

";

/// Renders `docs/compose-support.md` from the tables.
pub fn render_markdown() -> String {
    let mut out = String::from(
        "# Compose support matrix\n\n\
         <!-- Generated from src/manifest/support.rs by \
         `JACO_BLESS=1 cargo test compose_support_doc`; do not edit by hand. -->\n\n\
         jaco deploys unmodified Compose Specification files. Every service key is in exactly \
         one class:\n\n\
         - **honoured**: validated and applied to every replica;\n\
         - **ignored**: accepted, and the CLI prints a warning saying why;\n\
         - **legacy**: a v1/v2 spelling, refused with `legacy_compose_field` naming the modern \
         equivalent;\n\
         - **rejected**: refused with `validation_failed` (`details: {service, field}`). Any key \
         not listed here is rejected too.\n\n\
         `x-*` extension keys are allowed at every level and ignored.\n\n",
    );
    out.push_str(RUNTIME_NOTES);
    let sections: [(&str, &[Row]); 2] = [
        ("Service keys", SERVICE_KEYS),
        ("Top-level keys", TOP_LEVEL_KEYS),
    ];
    for (title, rows) in sections {
        out.push_str(&format!(
            "## {title}\n\n| key | class | notes |\n|---|---|---|\n"
        ));
        for row in rows {
            let (class, why) = match row.class {
                Class::Honoured => ("honoured", row.note.to_owned()),
                Class::Ignored(why) => ("ignored", why.to_owned()),
                Class::Legacy(modern) => ("legacy", format!("use `{modern}`")),
                Class::Rejected(why) => ("rejected", why.to_owned()),
            };
            out.push_str(&format!("| `{}` | {class} | {why} |\n", row.key));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_key_appears_once() {
        for rows in [SERVICE_KEYS, TOP_LEVEL_KEYS] {
            let mut seen = BTreeSet::new();
            for row in rows {
                assert!(seen.insert(row.key), "{} is listed twice", row.key);
            }
        }
    }

    #[test]
    fn spec_legacy_spellings_are_classified() {
        for key in [
            "log_driver",
            "log_opt",
            "net",
            "volume_driver",
            "dockerfile",
            "volumes_from",
        ] {
            assert!(matches!(
                service_key(key).map(|r| r.class),
                Some(Class::Legacy(_))
            ));
        }
    }

    #[test]
    fn compose_support_doc_matches_the_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/compose-support.md");
        let expected = render_markdown();
        if std::env::var_os("JACO_BLESS").is_some() {
            std::fs::write(&path, &expected).expect("write docs/compose-support.md");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == expected,
            "docs/compose-support.md differs from src/manifest/support.rs; \
             regenerate with `JACO_BLESS=1 cargo test compose_support_doc`"
        );
    }
}
