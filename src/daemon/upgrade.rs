//! This node's side of upgrades: what host it is (A/B appliance or plain binary), installing a
//! verified bundle and rebooting, and reporting after the reboot how the upgrade ended.
//!
//! Role: the thin I/O edge between the daemon and [`crate::upgrade`] — reads os-release, the
//! kernel command line and the settings, runs the installers on blocking threads, runs the
//! reboot command, and turns the pending record left on the data partition into the plan's
//! node status (`succeeded`, or `rolled_back` with the failed version deny-listed) once the
//! node is back. It must not decide versions, slots or verdicts itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::config::{DaemonConfig, UpgradeSettings};
use super::member::Member;
use crate::api::auth::Identity;
use crate::error::{Code, Error};
use crate::proto::v1 as pb;
use crate::upgrade::bundle::Verified;
use crate::upgrade::esp::Esp;
use crate::upgrade::install::{self, Appliance, Installed, Request};
use crate::upgrade::keys::TrustedKeys;
use crate::upgrade::manifest::{BundleKind, host_arch};
use crate::upgrade::record::{self, Outcome, Records};
use crate::upgrade::slots::{self, Slots};
use crate::upgrade::{binary, disk};

/// How often the post-boot reporter looks again (node readiness, blessing).
const REPORT_POLL: Duration = Duration::from_secs(2);

/// What this host is, read at the moment of asking.
#[derive(Debug, Clone)]
pub enum HostKind {
    /// The A/B appliance.
    Appliance(Appliance),
    /// A plain host: the binary is swapped.
    Binary {
        /// The binary to replace.
        binary: PathBuf,
    },
}

/// The running software as the node reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsFacts {
    /// The jaco binary's version ([`UpgradeHost::binary_version`]).
    pub version: String,
    /// The appliance image version (empty off the appliance).
    pub os_version: String,
    /// The running slot (`a`, `b`; empty off the appliance).
    pub boot_slot: String,
    /// Whether the running root is dm-verity protected (the boot's `roothash=`).
    pub root_verity: bool,
}

/// The node's upgrade settings and records.
#[derive(Debug, Clone)]
pub struct UpgradeHost {
    settings: UpgradeSettings,
    records: Records,
}

impl UpgradeHost {
    /// The host as `config` describes it.
    pub fn new(config: &DaemonConfig) -> UpgradeHost {
        let state_dir = config
            .upgrade
            .state_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("upgrade"));
        UpgradeHost {
            settings: config.upgrade.clone(),
            records: Records::at(&state_dir),
        }
    }

    /// The records on the data partition.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Where uploaded bundles are kept until a plan takes them.
    pub fn uploads_dir(&self) -> PathBuf {
        self.records.dir().join("uploads")
    }

    /// Where the bundles of running plans are kept (named by plan id).
    pub fn bundles_dir(&self) -> PathBuf {
        self.records.dir().join("bundles")
    }

    /// Trust roots for bundles fetched from `https://` URLs.
    pub fn ca_file(&self) -> &Path {
        &self.settings.ca_file
    }

    /// Fleet upgrades: how long one node's turn may take.
    pub fn step_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.step_timeout_ms)
    }

    /// The trusted keys.
    pub fn keys(&self) -> Result<TrustedKeys, Error> {
        TrustedKeys::load_dir(&self.settings.keys_dir)
    }

    fn os_release(&self) -> String {
        std::fs::read_to_string(&self.settings.os_release).unwrap_or_default()
    }

    /// Whether this is the appliance (`mode`, or os-release's `IMAGE_ID=jaco` for `auto`).
    pub fn is_appliance(&self) -> bool {
        match self.settings.mode.as_str() {
            "appliance" => true,
            "binary" => false,
            _ => os_release_field(&self.os_release(), "IMAGE_ID").as_deref() == Some("jaco"),
        }
    }

    /// The running version: the image's on the appliance, the binary's elsewhere.
    pub fn running_version(&self) -> String {
        if self.is_appliance() {
            os_release_field(&self.os_release(), "IMAGE_VERSION").unwrap_or_default()
        } else {
            self.binary_version()
        }
    }

    /// The running binary's version: the one its bundle gave it when it was installed from
    /// one (a release's version is the signed manifest's), else the version it was built as.
    pub fn binary_version(&self) -> String {
        let installed = self.records.installed_binaries().unwrap_or_default();
        let running = std::fs::metadata(RUNNING_EXECUTABLE).map(|m| m.len());
        installed
            .iter()
            .rev()
            .filter(|b| running.as_ref().is_ok_and(|size| *size == b.size))
            .find(|b| running_executable_sha256().as_deref() == Some(b.sha256.as_str()))
            .map_or_else(
                || env!("CARGO_PKG_VERSION").to_owned(),
                |b| b.version.clone(),
            )
    }

    /// The running OS facts for the node's record.
    pub fn os_facts(&self) -> OsFacts {
        if !self.is_appliance() {
            return OsFacts {
                version: self.binary_version(),
                ..OsFacts::default()
            };
        }
        let appliance = self.appliance().ok();
        let boot_slot = appliance
            .as_ref()
            .and_then(|a| {
                let slots = Slots::find(&disk::read_partitions(&a.disk).ok()?).ok()?;
                slots.running(&a.cmdline).ok()
            })
            .map(|slot| slot.name().to_owned())
            .unwrap_or_default();
        OsFacts {
            version: self.binary_version(),
            os_version: self.running_version(),
            boot_slot,
            root_verity: appliance.is_some_and(|a| slots::verity_protected(&a.cmdline)),
        }
    }

    fn appliance(&self) -> Result<Appliance, Error> {
        let cmdline = std::fs::read_to_string(&self.settings.cmdline)
            .map_err(|e| crate::upgrade::io_failed("read", &self.settings.cmdline, &e))?;
        let disk = match &self.settings.disk {
            Some(disk) => disk.clone(),
            None => disk_of_root(&cmdline)?,
        };
        Ok(Appliance {
            disk,
            esp: Esp::at(&self.settings.esp),
            cmdline,
            running_version: self.running_version(),
            arch: host_arch().to_owned(),
            records: self.records.clone(),
        })
    }

    /// What this host is now.
    pub fn kind(&self) -> Result<HostKind, Error> {
        if self.is_appliance() {
            return self.appliance().map(HostKind::Appliance);
        }
        let binary = match &self.settings.binary {
            Some(binary) => binary.clone(),
            None => std::env::current_exe().map_err(|e| {
                Error::new(
                    Code::Internal,
                    format!("cannot find the running binary: {e}"),
                )
                .with("reason", "io_failed")
            })?,
        };
        Ok(HostKind::Binary { binary })
    }

    /// Verifies a bundle and checks the version rules and, on the appliance, the disk's
    /// (blessed running boot, verity kept); writes nothing. Blocking.
    pub fn admit(&self, bundle: &Path, force: bool) -> Result<Verified, Error> {
        let keys = self.keys()?;
        let kind = if self.is_appliance() {
            BundleKind::Appliance
        } else {
            BundleKind::Binary
        };
        let request = self.request(bundle, &keys, force, "");
        let verified = install::admit(
            &request,
            kind,
            &self.running_version(),
            host_arch(),
            &self.records,
        )?;
        if kind == BundleKind::Appliance {
            install::plan(&self.appliance()?, &verified.manifest)?;
        }
        Ok(verified)
    }

    fn request<'a>(
        &self,
        bundle: &'a Path,
        keys: &'a TrustedKeys,
        force: bool,
        plan_id: &'a str,
    ) -> Request<'a> {
        Request {
            bundle,
            keys,
            force,
            plan_id,
            now_unix_ms: crate::pki::now_unix_ms(),
        }
    }

    /// Installs a bundle (the other slot, or the binary). Blocking.
    pub fn install(&self, bundle: &Path, force: bool, plan_id: &str) -> Result<Installed, Error> {
        let keys = self.keys()?;
        let request = self.request(bundle, &keys, force, plan_id);
        match self.kind()? {
            HostKind::Appliance(appliance) => install::install(&appliance, &request),
            HostKind::Binary { binary } => binary::install(
                &binary,
                &self.running_version(),
                host_arch(),
                &self.records,
                &request,
            ),
        }
    }

    /// Runs the reboot command (the appliance boots the new slot; systemd restarts a plain
    /// host's daemon with the new binary when the command restarts the service).
    pub async fn reboot(&self) -> Result<(), Error> {
        let mut words = self.settings.reboot_command.split_whitespace();
        let program = words.next().expect("validated: names a program");
        let output = tokio::process::Command::new(program)
            .args(words)
            .output()
            .await
            .map_err(|e| {
                Error::new(
                    Code::UpgradeFailed,
                    format!("cannot run the reboot command {program}: {e}"),
                )
                .with("reason", "reboot_failed")
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::new(
                Code::UpgradeFailed,
                format!(
                    "the reboot command failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            )
            .with("reason", "reboot_failed"))
        }
    }

    /// Whether the running boot is blessed (appliance: its entry carries no boot counter).
    fn running_boot_blessed(&self) -> bool {
        let Ok(appliance) = self.appliance() else {
            return true;
        };
        let Ok(slots) = disk::read_partitions(&appliance.disk).and_then(|p| Slots::find(&p)) else {
            return true;
        };
        let Ok(running) = slots.running(&appliance.cmdline) else {
            return true;
        };
        appliance.esp.entries().is_ok_and(|entries| {
            entries
                .iter()
                .filter(|e| e.root.as_deref().and_then(|r| slots.named_by(r)) == Some(running))
                .all(|e| e.counter.is_none())
        })
    }
}

/// The running process's executable, even after a newer binary replaced its path.
const RUNNING_EXECUTABLE: &str = "/proc/self/exe";

/// SHA-256 of the running executable, hashed once per process (`None` when unreadable).
fn running_executable_sha256() -> Option<String> {
    static SHA256: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SHA256
        .get_or_init(|| {
            use sha2::Digest as _;
            let mut file = std::fs::File::open(RUNNING_EXECUTABLE).ok()?;
            let mut hasher = sha2::Sha256::new();
            std::io::copy(&mut file, &mut hasher).ok()?;
            Some(crate::pki::hex(&hasher.finalize()))
        })
        .clone()
}

/// The whole disk that holds the partition `root=` names (`PARTUUID=…`/`PARTLABEL=…`): the
/// partition's udev link, resolved to its device, whose parent in sysfs is the disk.
fn disk_of_root(cmdline: &str) -> Result<PathBuf, Error> {
    let unknown = |why: String| {
        Error::new(
            Code::Internal,
            format!("cannot tell which disk holds the running root: {why}"),
        )
        .with("reason", "no_ab_slots")
    };
    let root = crate::upgrade::slots::slot_arg(cmdline)
        .ok_or_else(|| unknown("the kernel command line has no root=".into()))?;
    let link = match root.split_once('=') {
        Some(("PARTUUID", uuid)) => {
            PathBuf::from("/dev/disk/by-partuuid").join(uuid.to_ascii_lowercase())
        }
        Some(("PARTLABEL", label)) => PathBuf::from("/dev/disk/by-partlabel").join(label),
        _ => return Err(unknown(format!("root={root} names no partition"))),
    };
    let partition =
        std::fs::canonicalize(&link).map_err(|e| unknown(format!("{}: {e}", link.display())))?;
    let name = partition
        .file_name()
        .ok_or_else(|| unknown(format!("{} has no name", partition.display())))?;
    let sys = std::fs::canonicalize(Path::new("/sys/class/block").join(name))
        .map_err(|e| unknown(format!("sysfs entry of {}: {e}", partition.display())))?;
    let disk = sys
        .parent()
        .and_then(Path::file_name)
        .ok_or_else(|| unknown(format!("{} has no parent disk", sys.display())))?;
    Ok(Path::new("/dev").join(disk))
}

/// The value of `key` in os-release text (quotes removed).
pub fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.trim().split_once('=')?;
        (k == key).then(|| v.trim().trim_matches(['"', '\'']).to_owned())
    })
}

/// The node status that reports `outcome` of `pending`.
pub fn outcome_status(
    node: &str,
    pending: &record::Pending,
    outcome: &Outcome,
    now_unix_ms: i64,
) -> pb::UpgradeNodeStatus {
    let (state, code, message) = match outcome {
        Outcome::Succeeded => (
            pb::UpgradeNodeState::Succeeded,
            String::new(),
            String::new(),
        ),
        Outcome::RolledBack { reason } => (
            pb::UpgradeNodeState::RolledBack,
            Code::UpgradeFailed.to_string(),
            reason.clone(),
        ),
        Outcome::Unknown { running } => (
            pb::UpgradeNodeState::Failed,
            Code::UpgradeFailed.to_string(),
            format!(
                "the node runs {running}, neither {} nor {}",
                pending.from_version, pending.to_version
            ),
        ),
    };
    pb::UpgradeNodeStatus {
        node: node.to_owned(),
        state: state.into(),
        from_version: pending.from_version.clone(),
        to_version: pending.to_version.clone(),
        target_slot: pending.target.clone(),
        code,
        message,
        finished_at_unix_ms: now_unix_ms,
        ..Default::default()
    }
}

/// After a boot: once the node is ready (and, on the appliance, its boot blessed or rolled
/// back), reports how the pending upgrade ended, deny-lists a rolled-back version and forgets
/// the record.
pub async fn report_after_boot(
    member: Arc<Member>,
    host: Arc<UpgradeHost>,
    mut stop: watch::Receiver<bool>,
) {
    let pending = match host.records().pending() {
        Ok(Some(pending)) => pending,
        Ok(None) => return,
        Err(error) => {
            tracing::error!(error = %error.render(true), "cannot read the pending upgrade");
            return;
        }
    };
    let started = std::time::Instant::now();
    loop {
        if let Err(error) = report_once(&member, &host, &pending, started).await {
            tracing::warn!(error = %error.render(true), "upgrade outcome not reported yet; retrying");
        } else if host.records().pending().ok().flatten().is_none() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(REPORT_POLL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// What a plain host does about a swapped binary that is running (the appliance has its boot
/// assessment instead): wait for the node to be ready, keep it once it is, or put `.prev` back
/// when `window` passed without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapVerdict {
    /// Not ready yet, still within the window.
    Wait,
    /// Ready: the new binary stays.
    Keep,
    /// The window passed: roll back, with this reason.
    RollBack(String),
}

/// Judges a swapped binary after `elapsed` of the health window `window`.
pub fn swap_verdict(ready: bool, elapsed: Duration, window: Duration) -> SwapVerdict {
    if ready {
        SwapVerdict::Keep
    } else if elapsed < window {
        SwapVerdict::Wait
    } else {
        SwapVerdict::RollBack(format!(
            "the node was not ready within {} s of starting the new binary",
            window.as_secs()
        ))
    }
}

async fn report_once(
    member: &Member,
    host: &UpgradeHost,
    pending: &record::Pending,
    started: std::time::Instant,
) -> Result<(), Error> {
    let running = host.running_version();
    let outcome = record::outcome(pending, &running, host.records().gate_failure()?.as_ref());
    // Ready as this daemon process saw it: the record may still hold what the process before
    // the upgrade reported.
    let ready = member
        .read(|s| s.node(&member.name).cloned())
        .is_some_and(|n| {
            n.status() == pb::NodeStatus::Ready && crate::net::supervisor::isolation_ok_here(&n)
        });
    if outcome == Outcome::Succeeded {
        if let HostKind::Binary { binary } = host.kind()? {
            let window = Duration::from_millis(host.settings.health_timeout_ms);
            match swap_verdict(ready, started.elapsed(), window) {
                SwapVerdict::Keep => {}
                SwapVerdict::Wait => return Ok(()),
                SwapVerdict::RollBack(reason) => {
                    tracing::error!(%reason, "the new binary is unhealthy; restoring the previous one");
                    host.records().set_gate_failure(&record::GateFailure {
                        version: pending.to_version.clone(),
                        reason,
                    })?;
                    crate::upgrade::binary::roll_back(&binary)?;
                    // The previous binary, restarted, reports the rollback.
                    return host.reboot().await;
                }
            }
        } else if !(ready && host.running_boot_blessed()) {
            // Success is final only once the health gate blessed the boot (a trial boot can
            // still fall back); a rollback is final as soon as the old version runs.
            return Ok(());
        }
    }
    if let Outcome::RolledBack { reason } = &outcome {
        let mut deny = host.records().deny_list()?;
        if deny.deny(&pending.to_version, reason, crate::pki::now_unix_ms()) {
            host.records().set_deny_list(&deny)?;
        }
    }
    tracing::info!(from = %pending.from_version, to = %pending.to_version, ?outcome, "upgrade ended");
    if !pending.plan_id.is_empty() {
        // The node's verdict only: the leader's controller moves the plan on (or stops it).
        let status = outcome_status(&member.name, pending, &outcome, crate::pki::now_unix_ms());
        let kind = pb::command::Kind::UpdateUpgrade(pb::UpdateUpgrade {
            plan_id: pending.plan_id.clone(),
            node_status: Some(status),
            ..Default::default()
        });
        match member
            .submit(&Identity::Node(member.name.clone()), kind)
            .await
        {
            // A plan that is gone (history bound) or finished cannot be updated: nothing to tell.
            Err(error) if error.code == Code::NotFound => {}
            other => {
                other?;
            }
        }
    }
    host.records().clear_pending()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_fields_are_read_without_quotes() {
        let text = "ID=debian\nIMAGE_ID=jaco\nIMAGE_VERSION=\"1.2.0\"\n";
        assert_eq!(os_release_field(text, "IMAGE_ID").as_deref(), Some("jaco"));
        assert_eq!(
            os_release_field(text, "IMAGE_VERSION").as_deref(),
            Some("1.2.0")
        );
        assert_eq!(os_release_field(text, "VERSION_ID"), None);
    }

    #[test]
    fn a_swapped_binary_is_kept_when_ready_and_rolled_back_after_its_window() {
        let window = Duration::from_secs(180);
        assert_eq!(
            swap_verdict(true, Duration::ZERO, window),
            SwapVerdict::Keep
        );
        assert_eq!(
            swap_verdict(false, Duration::from_secs(179), window),
            SwapVerdict::Wait
        );
        let SwapVerdict::RollBack(reason) = swap_verdict(false, window, window) else {
            panic!("rollback expected");
        };
        assert!(reason.contains("180 s"), "{reason}");
        // Ready late but before anyone looked again still counts as ready.
        assert_eq!(
            swap_verdict(true, Duration::from_secs(900), window),
            SwapVerdict::Keep
        );
    }

    #[test]
    fn a_rollback_reports_rolled_back_with_the_gate_reason() {
        let pending = record::Pending {
            plan_id: "p".into(),
            from_version: "1.0.0".into(),
            to_version: "1.1.0".into(),
            target: "b".into(),
            installed_at_unix_ms: 1,
        };
        let status = outcome_status(
            "n1",
            &pending,
            &Outcome::RolledBack {
                reason: "isolation failed".into(),
            },
            9,
        );
        assert_eq!(status.state(), pb::UpgradeNodeState::RolledBack);
        assert_eq!(status.code, "upgrade_failed");
        assert_eq!(status.message, "isolation failed");
        assert_eq!(status.target_slot, "b");
        let ok = outcome_status("n1", &pending, &Outcome::Succeeded, 9);
        assert_eq!(ok.state(), pb::UpgradeNodeState::Succeeded);
        assert!(ok.code.is_empty());
    }
}
