//! `daemon.yaml`: the daemon's closed configuration schema, its defaults and environment
//! overrides.
//!
//! Every key has a default, so a missing file at the default path means "all defaults"; an
//! unknown key anywhere is an error naming the key and its line (SPEC §1.1). Loading is a
//! function of the file text, the environment and the host name, so it is tested without
//! touching the machine. This module must not start anything.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Code, Error};
use crate::yaml;

/// Where the daemon looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/jaco/daemon.yaml";

/// The daemon configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// This node's name in the cluster (default: the host name).
    pub node_name: String,
    /// Raft log, state, keys and certificates (`JACO_DATA_DIR` overrides).
    pub data_dir: PathBuf,
    /// Address of the TLS gRPC API for CLIs and peers.
    pub api_listen: SocketAddr,
    /// `host:port` that peers and remote CLIs dial (default: `<node_name>:<api port>`).
    pub advertise: Option<String>,
    /// The local control socket (no token; identity `local`).
    pub socket: PathBuf,
    /// Group that owns the control socket (mode 0660); `None` keeps the daemon's group.
    pub socket_group: Option<String>,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub metrics_listen: SocketAddr,
    /// Log level filter (tracing syntax, e.g. `info` or `jaco=debug`); `JACO_LOG` overrides.
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Raft timing and snapshot settings.
    pub raft: RaftSettings,
    /// How many audit events the cluster keeps.
    pub audit_retention: u64,
    /// How long a write waits for a leader before failing with `no_leader`, in milliseconds.
    pub leader_wait_ms: u64,
    /// The node's container runtime.
    pub runtime: RuntimeSettings,
    /// The scheduler's timings (used while this node leads).
    pub scheduler: SchedulerSettings,
    /// What this node offers to replicas' reservations; unset values are detected.
    pub capacity: CapacitySettings,
    /// Isolation, mesh, DNS and L4 routes (SPEC §7).
    pub network: NetworkSettings,
    /// Signed OS and binary upgrades of this node (SPEC §9.3).
    pub upgrade: UpgradeSettings,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human text on a terminal, JSON otherwise.
    Auto,
    /// Always JSON lines.
    Json,
    /// Always human text.
    Text,
}

/// Raft timings (milliseconds) and snapshot policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    /// Leader heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_max_ms: u64,
    /// Take a snapshot (and compact the log) every this many entries.
    pub snapshot_every: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_every: 5_000,
        }
    }
}

/// The node's container runtime (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// The Docker engine's socket, `unix:///path` (or a bare absolute path).
    pub docker_socket: String,
    /// Where secrets and configs are written for bind-mounting (a tmpfs on real nodes).
    pub secrets_dir: PathBuf,
    /// Failed pull attempts before a replica is `failed` with `image_pull_failed`.
    pub pull_retry_budget: u32,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            docker_socket: "unix:///var/run/docker.sock".to_owned(),
            secrets_dir: PathBuf::from("/run/jaco/secrets"),
            pull_retry_budget: 10,
        }
    }
}

/// The scheduler's timings (SPEC §5.4), in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSettings {
    /// A node the leader has not heard from for this long is lost: its replicas move.
    pub node_lost_after_ms: u64,
    /// A drain whose replicas have not all moved after this long stops with `drain_timeout`.
    pub drain_timeout_ms: u64,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            node_lost_after_ms: 15_000,
            drain_timeout_ms: 300_000,
        }
    }
}

impl SchedulerSettings {
    /// The scheduler's view of these settings.
    pub fn plan_settings(&self) -> crate::scheduler::plan::Settings {
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        crate::scheduler::plan::Settings {
            node_lost_after_ms: ms(self.node_lost_after_ms),
            drain_timeout_ms: ms(self.drain_timeout_ms),
        }
    }
}

/// The schedulable capacity this node declares (SPEC §5.2); an unset value is the machine's
/// (every CPU, all memory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacitySettings {
    /// CPU in millicores (1000 = one core).
    pub cpu_millis: Option<u64>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
}

/// Networking on this node (SPEC §7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSettings {
    /// The IPAM pool of a cluster this node initialises (a /8 to /23; the cluster's pool wins
    /// on join). Its last /24 holds the nodes' mesh addresses.
    pub ipam_pool: String,
    /// The `nft` command (words separated by spaces).
    pub nft_command: String,
    /// The nftables table (family `inet`) jaco owns.
    pub nft_table: String,
    /// The `iptables` command, for the exemptions Docker's own rules need.
    pub iptables_command: String,
    /// How often the ruleset is read back and repaired when it drifted, in milliseconds.
    pub drift_check_ms: u64,
    /// The WireGuard interface.
    pub wireguard_interface: String,
    /// The UDP port of the mesh (every node must use the same one unless `wireguard_endpoint`
    /// says otherwise).
    pub wireguard_port: u16,
    /// `auto` (kernel WireGuard when the kernel has it, else in-process), `kernel` or
    /// `userspace`.
    pub wireguard_mode: String,
    /// `host:port` peers send mesh traffic to (default: the advertise host and
    /// `wireguard_port`).
    pub wireguard_endpoint: Option<String>,
    /// Upstream DNS servers (`ip` or `ip:port`), tried in order; empty = the nameservers of
    /// /etc/resolv.conf.
    pub dns_forwarders: Vec<String>,
    /// How long one upstream may take before the next is asked, in milliseconds.
    pub dns_upstream_timeout_ms: u64,
    /// The port of the responder on every bridge gateway.
    pub dns_port: u16,
    /// The address the L4 routes listen on.
    pub l4_bind: IpAddr,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            ipam_pool: crate::state::DEFAULT_IPAM_POOL.to_owned(),
            nft_command: "nft".to_owned(),
            nft_table: "jaco".to_owned(),
            iptables_command: "iptables".to_owned(),
            drift_check_ms: 5_000,
            wireguard_interface: "jaco-wg".to_owned(),
            wireguard_port: 51820,
            wireguard_mode: "auto".to_owned(),
            wireguard_endpoint: None,
            dns_forwarders: Vec::new(),
            dns_upstream_timeout_ms: 2_000,
            dns_port: 53,
            l4_bind: IpAddr::from([0, 0, 0, 0]),
        }
    }
}

/// Upgrades of this node (SPEC §9.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpgradeSettings {
    /// `auto` (the A/B appliance when the os-release file says `IMAGE_ID=jaco`, else the
    /// binary swap), `appliance` or `binary`.
    pub mode: String,
    /// The os-release file that names the running image and its version.
    pub os_release: PathBuf,
    /// The disk holding the `root-a`/`root-b` slots (appliance; default: the disk of the
    /// partition the kernel command line's `root=` names).
    pub disk: Option<PathBuf>,
    /// Where the EFI system partition is mounted (appliance).
    pub esp: PathBuf,
    /// The kernel command line of the running boot (appliance: which slot runs).
    pub cmdline: PathBuf,
    /// Directory of trusted minisign public keys (`*.pub`).
    pub keys_dir: PathBuf,
    /// Pending upgrade, gate verdict, deny-list and uploaded bundles (default
    /// `<data_dir>/upgrade`).
    pub state_dir: Option<PathBuf>,
    /// The command that reboots the machine once a slot is installed (words separated by
    /// spaces).
    pub reboot_command: String,
    /// The binary the swap replaces (binary mode; default: the running executable).
    pub binary: Option<PathBuf>,
    /// Binary mode: how long a swapped-in binary may take to get the node ready before the
    /// previous one is put back, in milliseconds (the appliance's gate has its own timeout).
    pub health_timeout_ms: u64,
    /// Trust roots (PEM) for bundles fetched from `https://` URLs.
    pub ca_file: PathBuf,
    /// Fleet upgrades: how long one node's turn (download, install, reboot, health gate) may
    /// take before the leader stops the fleet, in milliseconds.
    pub step_timeout_ms: u64,
}

impl Default for UpgradeSettings {
    fn default() -> Self {
        UpgradeSettings {
            mode: "auto".to_owned(),
            os_release: PathBuf::from("/etc/os-release"),
            disk: None,
            esp: PathBuf::from(crate::upgrade::esp::DEFAULT_ESP),
            cmdline: PathBuf::from("/proc/cmdline"),
            keys_dir: PathBuf::from(crate::upgrade::keys::DEFAULT_KEYS_DIR),
            state_dir: None,
            reboot_command: "systemctl reboot".to_owned(),
            binary: None,
            health_timeout_ms: 180_000,
            step_timeout_ms: 1_200_000,
            ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            node_name: String::new(),
            data_dir: PathBuf::from("/var/lib/jaco"),
            api_listen: SocketAddr::from(([0, 0, 0, 0], 7000)),
            advertise: None,
            socket: PathBuf::from("/run/jaco/jaco.sock"),
            socket_group: Some("jaco".to_owned()),
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 9100)),
            log: "info".to_owned(),
            log_format: LogFormat::Auto,
            raft: RaftSettings::default(),
            audit_retention: 100_000,
            leader_wait_ms: 5_000,
            runtime: RuntimeSettings::default(),
            scheduler: SchedulerSettings::default(),
            capacity: CapacitySettings::default(),
            network: NetworkSettings::default(),
            upgrade: UpgradeSettings::default(),
        }
    }
}

impl DaemonConfig {
    /// The address peers and CLIs dial.
    pub fn advertise_addr(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| format!("{}:{}", self.node_name, self.api_listen.port()))
    }
}

/// Loads the configuration.
///
/// `text` is the file content (`None` when the file does not exist), `env` reads environment
/// variables, and `hostname` is the default node name.
pub fn load(
    path: &Path,
    text: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    hostname: &str,
) -> Result<DaemonConfig, Error> {
    let mut config = match text {
        None => DaemonConfig::default(),
        Some(text) => parse(path, text)?,
    };
    if config.node_name.is_empty() {
        config.node_name = hostname.trim().to_owned();
    }
    if let Some(dir) = env("JACO_DATA_DIR").filter(|d| !d.is_empty()) {
        config.data_dir = PathBuf::from(dir);
    }
    if let Some(level) = env("JACO_LOG").filter(|l| !l.is_empty()) {
        config.log = level;
    }
    // Per machine on an image shared by every machine (the appliance's /etc is read-only).
    if let Some(advertise) = env("JACO_ADVERTISE").filter(|a| !a.is_empty()) {
        config.advertise = Some(advertise);
    }
    validate(path, config)
}

fn parse(path: &Path, text: &str) -> Result<DaemonConfig, Error> {
    yaml::deserialize(&path.display().to_string(), text)
}

fn validate(path: &Path, config: DaemonConfig) -> Result<DaemonConfig, Error> {
    let invalid = |field: &str, message: String| {
        Err(Error::new(Code::ValidationFailed, message)
            .with("file", path.display())
            .with("field", field))
    };
    if !is_node_name(&config.node_name) {
        return invalid(
            "node_name",
            format!(
                "node_name {:?} must be 1-63 lowercase letters, digits or '-', starting with a \
                 letter or digit",
                config.node_name
            ),
        );
    }
    if let Some(advertise) = &config.advertise {
        let valid = advertise.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return invalid(
                "advertise",
                format!("advertise {advertise:?} must be host:port"),
            );
        }
    }
    let raft = &config.raft;
    if raft.heartbeat_interval_ms == 0
        || raft.election_timeout_min_ms <= raft.heartbeat_interval_ms
        || raft.election_timeout_max_ms <= raft.election_timeout_min_ms
    {
        return invalid(
            "raft",
            "raft timings need 0 < heartbeat_interval_ms < election_timeout_min_ms < \
             election_timeout_max_ms"
                .to_owned(),
        );
    }
    if raft.snapshot_every == 0 {
        return invalid(
            "raft.snapshot_every",
            "raft.snapshot_every must be positive".to_owned(),
        );
    }
    if config.audit_retention == 0 {
        return invalid(
            "audit_retention",
            "audit_retention must be positive".to_owned(),
        );
    }
    let runtime = &config.runtime;
    let socket = runtime.docker_socket.as_str();
    if !(socket.starts_with("unix:///") || socket.starts_with('/')) {
        return invalid(
            "runtime.docker_socket",
            format!("runtime.docker_socket {socket:?} must be unix:///path or an absolute path"),
        );
    }
    if !runtime.secrets_dir.is_absolute() {
        return invalid(
            "runtime.secrets_dir",
            "runtime.secrets_dir must be an absolute path".to_owned(),
        );
    }
    if runtime.pull_retry_budget == 0 {
        return invalid(
            "runtime.pull_retry_budget",
            "runtime.pull_retry_budget must be positive".to_owned(),
        );
    }
    let scheduler = &config.scheduler;
    if scheduler.node_lost_after_ms < 1_000 {
        return invalid(
            "scheduler.node_lost_after_ms",
            "scheduler.node_lost_after_ms must be at least 1000".to_owned(),
        );
    }
    if scheduler.drain_timeout_ms < 1_000 {
        return invalid(
            "scheduler.drain_timeout_ms",
            "scheduler.drain_timeout_ms must be at least 1000".to_owned(),
        );
    }
    if config.capacity.cpu_millis == Some(0) || config.capacity.memory_bytes == Some(0) {
        return invalid(
            "capacity",
            "capacity values must be positive (leave them out to use the machine's)".to_owned(),
        );
    }
    validate_network(&config.network).map_err(|e| e.with("file", path.display()))?;
    if !["auto", "appliance", "binary"].contains(&config.upgrade.mode.as_str()) {
        return invalid(
            "upgrade.mode",
            format!(
                "upgrade.mode {:?} must be auto, appliance or binary",
                config.upgrade.mode
            ),
        );
    }
    if config
        .upgrade
        .reboot_command
        .split_whitespace()
        .next()
        .is_none()
    {
        return invalid(
            "upgrade.reboot_command",
            "upgrade.reboot_command must name a program".to_owned(),
        );
    }
    Ok(config)
}

fn validate_network(network: &NetworkSettings) -> Result<(), Error> {
    let invalid = |field: &str, message: String| {
        Err(Error::new(Code::ValidationFailed, message).with("field", format!("network.{field}")))
    };
    crate::state::Pool::parse(&network.ipam_pool)
        .map_err(|e| e.with("field", "network.ipam_pool"))?;
    for (field, command) in [
        ("nft_command", &network.nft_command),
        ("iptables_command", &network.iptables_command),
    ] {
        if command.split_whitespace().next().is_none() {
            return invalid(field, format!("network.{field} must name a program"));
        }
    }
    if !is_nft_name(&network.nft_table) {
        return invalid(
            "nft_table",
            format!(
                "network.nft_table {:?} must be 1-32 letters, digits or '_'",
                network.nft_table
            ),
        );
    }
    if network.drift_check_ms < 100 || network.drift_check_ms > 10_000 {
        return invalid(
            "drift_check_ms",
            "network.drift_check_ms must be 100..=10000 (drift is repaired within 10 s)".to_owned(),
        );
    }
    let interface = &network.wireguard_interface;
    if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ']) {
        return invalid(
            "wireguard_interface",
            format!("network.wireguard_interface {interface:?} must be 1-15 characters"),
        );
    }
    if network.wireguard_port == 0 || network.dns_port == 0 {
        return invalid(
            "wireguard_port",
            "network.wireguard_port and network.dns_port must be positive".to_owned(),
        );
    }
    if !matches!(
        network.wireguard_mode.as_str(),
        "auto" | "kernel" | "userspace"
    ) {
        return invalid(
            "wireguard_mode",
            format!(
                "network.wireguard_mode {:?} must be auto, kernel or userspace",
                network.wireguard_mode
            ),
        );
    }
    if let Some(endpoint) = &network.wireguard_endpoint
        && !endpoint.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        })
    {
        return invalid(
            "wireguard_endpoint",
            format!("network.wireguard_endpoint {endpoint:?} must be host:port"),
        );
    }
    if let Some(bad) = (network.dns_forwarders.iter()).find(|f| dns_forwarder(f).is_none()) {
        return invalid(
            "dns_forwarders",
            format!("network.dns_forwarders entry {bad:?} must be ip or ip:port"),
        );
    }
    let forwarders: Vec<SocketAddr> = (network.dns_forwarders.iter())
        .filter_map(|f| dns_forwarder(f))
        .collect();
    let pool = network
        .ipam_pool
        .parse::<ipnet::Ipv4Net>()
        .ok()
        .map(|p| p.trunc());
    crate::net::dns::validate_forwarders(&forwarders, pool.as_slice())?;
    if network.dns_upstream_timeout_ms == 0 {
        return invalid(
            "dns_upstream_timeout_ms",
            "network.dns_upstream_timeout_ms must be positive".to_owned(),
        );
    }
    Ok(())
}

/// A DNS forwarder written as `ip` (port 53) or `ip:port`.
pub fn dns_forwarder(text: &str) -> Option<SocketAddr> {
    (text.parse::<SocketAddr>().ok()).or_else(|| {
        text.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

fn is_nft_name(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `[a-z0-9][a-z0-9-]{0,62}`: a DNS label, because node names appear in certificates.
pub fn is_node_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load_text(text: Option<&str>) -> Result<DaemonConfig, Error> {
        load(Path::new("daemon.yaml"), text, &no_env, "node-1\n")
    }

    #[test]
    fn missing_or_empty_file_means_defaults_with_the_host_name() {
        for text in [None, Some(""), Some("# nothing\n")] {
            let config = load_text(text).unwrap();
            assert_eq!(config.node_name, "node-1");
            assert_eq!(config.api_listen.port(), 7000);
            assert_eq!(config.socket, PathBuf::from("/run/jaco/jaco.sock"));
            assert_eq!(config.data_dir, PathBuf::from("/var/lib/jaco"));
            assert_eq!(config.advertise_addr(), "node-1:7000");
            assert_eq!(config.runtime.docker_socket, "unix:///var/run/docker.sock");
            assert_eq!(
                config.runtime.secrets_dir,
                PathBuf::from("/run/jaco/secrets")
            );
            assert_eq!(config.runtime.pull_retry_budget, 10);
        }
    }

    #[test]
    fn every_key_can_be_set() {
        let config = load_text(Some(
            "node_name: a\ndata_dir: /data\napi_listen: 127.0.0.1:7100\nadvertise: 10.0.0.1:7100\n\
             socket: /tmp/j.sock\nsocket_group: wheel\nmetrics_listen: 127.0.0.1:9200\nlog: debug\n\
             log_format: json\nraft: {heartbeat_interval_ms: 50, election_timeout_min_ms: 200, \
             election_timeout_max_ms: 400, snapshot_every: 10}\naudit_retention: 10\nleader_wait_ms: 100\n\
             runtime: {docker_socket: /run/docker.sock, secrets_dir: /tmp/s, pull_retry_budget: 3}\n\
             scheduler: {node_lost_after_ms: 5000, drain_timeout_ms: 60000}\n\
             capacity: {cpu_millis: 1500, memory_bytes: 1073741824}\n\
             network: {ipam_pool: 10.9.0.0/20, nft_command: /usr/sbin/nft, nft_table: t1, \
             iptables_command: iptables-nft, drift_check_ms: 500, wireguard_interface: wg1, \
             wireguard_port: 5000, wireguard_mode: userspace, wireguard_endpoint: 'h:5000', \
             dns_forwarders: ['1.1.1.1', '10.0.0.2:5353'], dns_upstream_timeout_ms: 300, \
             dns_port: 5300, l4_bind: 127.0.0.1}\n",
        ))
        .unwrap();
        assert_eq!(config.network.ipam_pool, "10.9.0.0/20");
        assert_eq!(config.network.wireguard_mode, "userspace");
        assert_eq!(
            (config.network.dns_forwarders.iter())
                .filter_map(|f| dns_forwarder(f))
                .map(|a| a.to_string())
                .collect::<Vec<_>>(),
            ["1.1.1.1:53", "10.0.0.2:5353"]
        );
        assert_eq!(config.node_name, "a");
        assert_eq!(config.advertise_addr(), "10.0.0.1:7100");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.raft.snapshot_every, 10);
        assert_eq!(config.leader_wait_ms, 100);
        assert_eq!(config.runtime.docker_socket, "/run/docker.sock");
        assert_eq!(config.runtime.secrets_dir, PathBuf::from("/tmp/s"));
        assert_eq!(config.runtime.pull_retry_budget, 3);
        let scheduler = config.scheduler.plan_settings();
        assert_eq!(
            (scheduler.node_lost_after_ms, scheduler.drain_timeout_ms),
            (5_000, 60_000)
        );
        assert_eq!(config.capacity.cpu_millis, Some(1500));
        assert_eq!(config.capacity.memory_bytes, Some(1 << 30));
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = |name: &str| match name {
            "JACO_DATA_DIR" => Some("/elsewhere".to_owned()),
            "JACO_LOG" => Some("trace".to_owned()),
            "JACO_ADVERTISE" => Some("10.0.2.2:17001".to_owned()),
            _ => None,
        };
        let config = load(
            Path::new("d.yaml"),
            Some("data_dir: /data\nlog: info\nadvertise: a:7000\n"),
            &env,
            "h",
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/elsewhere"));
        assert_eq!(config.log, "trace");
        assert_eq!(config.advertise_addr(), "10.0.2.2:17001");
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let error = load_text(Some("node_name: a\ndata_dri: /x\n")).unwrap_err();
        assert_eq!(error.code, Code::ValidationFailed);
        assert_eq!(error.details["field"], "data_dri");
        assert_eq!(error.details["line"], "2");

        let error = load_text(Some("raft:\n  heartbeat: 5\n")).unwrap_err();
        assert_eq!(error.details["field"], "heartbeat");
        assert_eq!(error.details["line"], "2");
    }

    #[test]
    fn bad_values_are_refused() {
        for text in [
            "node_name: Node_A\n",
            "api_listen: not-an-address\n",
            "advertise: nohost\n",
            "raft: {heartbeat_interval_ms: 500}\n",
            "raft: {snapshot_every: 0}\n",
            "log_format: xml\n",
            "audit_retention: 0\n",
            "runtime: {docker_socket: tcp://10.0.0.1:2375}\n",
            "runtime: {secrets_dir: relative/dir}\n",
            "runtime: {pull_retry_budget: 0}\n",
            "runtime: {pull_retries: 3}\n",
            "scheduler: {node_lost_after_ms: 10}\n",
            "scheduler: {drain_timeout_ms: 0}\n",
            "capacity: {cpu_millis: 0}\n",
            "network: {ipam_pool: 10.0.0.0/24}\n",
            "network: {nft_table: 'a-b'}\n",
            "network: {nft_command: ' '}\n",
            "network: {drift_check_ms: 60000}\n",
            "network: {wireguard_interface: jaco-wireguard-0}\n",
            "network: {wireguard_mode: fast}\n",
            "network: {wireguard_endpoint: nohost}\n",
            "network: {dns_forwarders: [dns.example]}\n",
            "network: {dns_port: 0}\n",
            "network: {dns_forwarders: [127.0.0.11]}\n",
            "network: {dns_forwarders: ['10.244.3.1']}\n",
        ] {
            let error = load_text(Some(text)).unwrap_err();
            assert_eq!(error.code, Code::ValidationFailed, "{text}");
        }
        let error = load_text(Some("node_name: [a\n")).unwrap_err();
        assert_eq!(error.code, Code::ParseFailed);
    }

    #[test]
    fn node_names() {
        assert!(is_node_name("node-1"));
        assert!(is_node_name("1node"));
        assert!(!is_node_name(""));
        assert!(!is_node_name("-a"));
        assert!(!is_node_name("Node"));
        assert!(!is_node_name(&"a".repeat(64)));
    }
}
