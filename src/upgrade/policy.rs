//! Which bundle versions a node may install: architecture, anti-downgrade, `min_version` and the
//! deny-list of versions that failed their health gate here (SPEC §9.2–9.3).
//!
//! Role: pure decisions over values (the manifest, the running version, the deny-list), and the
//! deny-list's schema. It must not read files or clocks; [`super::record`] stores the deny-list.

use serde::{Deserialize, Serialize};

use super::manifest::{Manifest, parse_version};
use crate::error::{Code, Error};

/// A version that failed on this node and is never installed again without force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeniedVersion {
    /// The version.
    pub version: String,
    /// Why it was denied (the health gate's reason).
    pub reason: String,
    /// When, in Unix milliseconds.
    pub at_unix_ms: i64,
}

/// The node's deny-list (kept on the data partition).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyList {
    /// Denied versions, oldest first; one record per version.
    pub versions: Vec<DeniedVersion>,
}

impl DenyList {
    /// The record of `version`, if it is denied.
    pub fn find(&self, version: &str) -> Option<&DeniedVersion> {
        self.versions.iter().find(|d| d.version == version)
    }

    /// Adds `version` (or keeps its first record); returns whether it was new.
    pub fn deny(&mut self, version: &str, reason: &str, at_unix_ms: i64) -> bool {
        if self.find(version).is_some() {
            return false;
        }
        self.versions.push(DeniedVersion {
            version: version.to_owned(),
            reason: reason.to_owned(),
            at_unix_ms,
        });
        true
    }
}

/// Decides whether `manifest` may be installed on a node that runs `running` on `host_arch`.
///
/// Refusals are `validation_failed` with `reason` one of `arch_mismatch`, `same_version`,
/// `downgrade`, `below_min_version`, `deny_listed`; `force` lifts all but the architecture
/// and the same-version rule (re-installing the running version into the other slot would
/// leave two slots claiming one version).
pub fn check_install(
    manifest: &Manifest,
    running: &str,
    host_arch: &str,
    deny: &DenyList,
    force: bool,
) -> Result<(), Error> {
    let refuse = |reason: &str, message: String| {
        Err(Error::new(Code::ValidationFailed, message)
            .with("reason", reason)
            .with("version", &manifest.version)
            .with("running_version", running))
    };
    if manifest.arch != host_arch {
        return refuse(
            "arch_mismatch",
            format!(
                "the bundle is for {}, this node is {host_arch}",
                manifest.arch
            ),
        );
    }
    let running_version = parse_version(running)?;
    let version = manifest.version();
    if version == running_version {
        return refuse("same_version", format!("this node already runs {running}"));
    }
    if force {
        return Ok(());
    }
    if version < running_version {
        return refuse(
            "downgrade",
            format!(
                "{} is older than the running {running}; pass --allow-downgrade to install it",
                manifest.version
            ),
        );
    }
    if running_version < manifest.min_version() {
        return refuse(
            "below_min_version",
            format!(
                "{} needs at least {} running first (this node runs {running}); pass \
                 --allow-downgrade to install it anyway",
                manifest.version, manifest.min_version
            ),
        );
    }
    if let Some(denied) = deny.find(&manifest.version) {
        return refuse(
            "deny_listed",
            format!(
                "{} failed on this node before ({}); it is not retried unless forced",
                manifest.version, denied.reason
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::manifest::{BINARY, tests::manifest};

    fn reason(result: Result<(), Error>) -> String {
        let error = result.unwrap_err();
        assert_eq!(error.code, Code::ValidationFailed);
        error.details["reason"].clone()
    }

    #[test]
    fn newer_versions_install_and_the_rest_are_refused_with_a_reason() {
        let none = DenyList::default();
        let mut m = manifest("1.2.0", &[BINARY]);
        m.min_version = "1.1.0".into();
        assert!(check_install(&m, "1.1.5", "x86_64", &none, false).is_ok());
        assert_eq!(
            reason(check_install(&m, "1.2.0", "x86_64", &none, false)),
            "same_version"
        );
        assert_eq!(
            reason(check_install(&m, "1.3.0", "x86_64", &none, false)),
            "downgrade"
        );
        assert_eq!(
            reason(check_install(&m, "1.0.9", "x86_64", &none, false)),
            "below_min_version"
        );
        assert_eq!(
            reason(check_install(&m, "1.1.5", "aarch64", &none, false)),
            "arch_mismatch"
        );
        let mut deny = DenyList::default();
        assert!(deny.deny("1.2.0", "health gate: docker unreachable", 5));
        assert!(!deny.deny("1.2.0", "again", 6));
        assert_eq!(
            deny.find("1.2.0").unwrap().reason,
            "health gate: docker unreachable"
        );
        assert_eq!(
            reason(check_install(&m, "1.1.5", "x86_64", &deny, false)),
            "deny_listed"
        );
    }

    #[test]
    fn force_lifts_downgrade_min_version_and_deny_list_but_not_arch_or_same_version() {
        let mut deny = DenyList::default();
        deny.deny("1.2.0", "bad", 1);
        let m = manifest("1.2.0", &[BINARY]);
        assert!(check_install(&m, "1.3.0", "x86_64", &deny, true).is_ok());
        assert_eq!(
            reason(check_install(&m, "1.3.0", "aarch64", &deny, true)),
            "arch_mismatch"
        );
        assert_eq!(
            reason(check_install(&m, "1.2.0", "x86_64", &deny, true)),
            "same_version"
        );
    }
}
