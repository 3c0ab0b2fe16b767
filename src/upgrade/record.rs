//! What an upgrade leaves on the data partition for the boot after it
//! (`/var/lib/jaco/upgrade/` by default): the pending upgrade, the health gate's verdict on a
//! failed boot, and the deny-list.
//!
//! Role: read and write those small JSON files atomically (temporary file, sync, rename), and
//! decide, from the pending record and the version that actually booted, how an upgrade ended
//! ([`outcome`], pure). It must not install anything or talk to the daemon.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::io_failed;
use super::policy::DenyList;
use crate::error::{Code, Error};

/// Default directory of the records (on the data partition).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/jaco/upgrade";

/// An installed upgrade waiting for its reboot and health gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The fleet plan it belongs to (empty for a local install).
    pub plan_id: String,
    /// The version running when it was installed.
    pub from_version: String,
    /// The version installed.
    pub to_version: String,
    /// The slot it was written to (`a`, `b`), or `binary`.
    pub target: String,
    /// When it was installed, Unix milliseconds.
    pub installed_at_unix_ms: i64,
}

/// The health gate's reason for failing a boot, written before it marks the boot bad.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateFailure {
    /// The version that failed.
    pub version: String,
    /// Why.
    pub reason: String,
}

/// A binary a plain host installed from a bundle: the version its signed manifest gave it.
/// A plain host knows its running version by finding the running executable here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledBinary {
    /// The bundle's version.
    pub version: String,
    /// Lowercase hex SHA-256 of the binary (from the manifest).
    pub sha256: String,
    /// Its size in bytes (compared first, so that most lookups hash nothing).
    pub size: u64,
}

/// How many installed binaries are remembered (the running one and the one before it, with
/// room for an interrupted upgrade).
const INSTALLED_BINARIES_KEPT: usize = 4;

/// How a pending upgrade ended, judged after a boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new version runs (the health gate blessed it, or the host has no boot assessment).
    Succeeded,
    /// The old version runs again: the new one failed and was rolled back; deny-list it.
    RolledBack {
        /// The health gate's reason, or why the boot itself failed.
        reason: String,
    },
    /// Neither version runs (an operator booted something else): report and forget it.
    Unknown {
        /// What runs instead.
        running: String,
    },
}

/// Judges `pending` from the version that booted and the gate's recorded failure, if any.
pub fn outcome(pending: &Pending, running: &str, failure: Option<&GateFailure>) -> Outcome {
    if running == pending.to_version {
        Outcome::Succeeded
    } else if running == pending.from_version {
        let reason = failure
            .filter(|f| f.version == pending.to_version)
            .map(|f| f.reason.clone())
            .unwrap_or_else(|| {
                format!(
                    "{} did not come up: the boot loader fell back to {} after its tries ran out",
                    pending.to_version, pending.from_version
                )
            });
        Outcome::RolledBack { reason }
    } else {
        Outcome::Unknown {
            running: running.to_owned(),
        }
    }
}

/// The record files in one directory.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// The records kept in `dir` (created when first written).
    pub fn at(dir: &Path) -> Records {
        Records {
            dir: dir.to_owned(),
        }
    }

    /// The directory (bundles being installed are staged here too).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pending upgrade, if any.
    pub fn pending(&self) -> Result<Option<Pending>, Error> {
        self.read("pending.json")
    }

    /// Records `pending`.
    pub fn set_pending(&self, pending: &Pending) -> Result<(), Error> {
        self.write("pending.json", pending)
    }

    /// Forgets the pending upgrade and the gate's verdict on it.
    pub fn clear_pending(&self) -> Result<(), Error> {
        for name in ["pending.json", "gate-failure.json"] {
            let path = self.dir.join(name);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_failed("delete", &path, &e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The gate's recorded failure, if any.
    pub fn gate_failure(&self) -> Result<Option<GateFailure>, Error> {
        self.read("gate-failure.json")
    }

    /// Records the gate's failure.
    pub fn set_gate_failure(&self, failure: &GateFailure) -> Result<(), Error> {
        self.write("gate-failure.json", failure)
    }

    /// The deny-list (empty when none was written).
    pub fn deny_list(&self) -> Result<DenyList, Error> {
        Ok(self.read("deny-list.json")?.unwrap_or_default())
    }

    /// Replaces the deny-list.
    pub fn set_deny_list(&self, deny: &DenyList) -> Result<(), Error> {
        self.write("deny-list.json", deny)
    }

    /// The binaries installed from bundles, oldest first (empty when none was).
    pub fn installed_binaries(&self) -> Result<Vec<InstalledBinary>, Error> {
        Ok(self.read("installed-binaries.json")?.unwrap_or_default())
    }

    /// Remembers `binary` as installed (a reinstall of the same bytes moves it last).
    pub fn add_installed_binary(&self, binary: InstalledBinary) -> Result<(), Error> {
        let mut installed = self.installed_binaries()?;
        installed.retain(|b| b.sha256 != binary.sha256);
        installed.push(binary);
        let excess = installed.len().saturating_sub(INSTALLED_BINARIES_KEPT);
        installed.drain(..excess);
        self.write("installed-binaries.json", &installed)
    }

    fn read<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        let path = self.dir.join(name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_failed("read", &path, &e)),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::new(
                Code::Internal,
                format!("{} is corrupt: {e}", path.display()),
            )
            .with("reason", "record_corrupt")
            .with("path", path.display())
        })
    }

    fn write<T: Serialize>(&self, name: &str, value: &T) -> Result<(), Error> {
        fs::create_dir_all(&self.dir).map_err(|e| io_failed("create", &self.dir, &e))?;
        let path = self.dir.join(name);
        let partial = self.dir.join(format!(".{name}.partial"));
        let bytes = serde_json::to_vec_pretty(value).expect("records serialise");
        let result = (|| {
            let mut file = fs::File::create(&partial)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&partial, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        })();
        result.map_err(|e| io_failed("write", &path, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Pending {
        Pending {
            plan_id: "p1".into(),
            from_version: "1.0.0".into(),
            to_version: "1.1.0".into(),
            target: "b".into(),
            installed_at_unix_ms: 7,
        }
    }

    #[test]
    fn the_booted_version_decides_how_an_upgrade_ended() {
        let p = pending();
        assert_eq!(outcome(&p, "1.1.0", None), Outcome::Succeeded);
        let gate = GateFailure {
            version: "1.1.0".into(),
            reason: "docker unreachable".into(),
        };
        assert_eq!(
            outcome(&p, "1.0.0", Some(&gate)),
            Outcome::RolledBack {
                reason: "docker unreachable".into()
            }
        );
        // A verdict about another version does not explain this rollback.
        let stale = GateFailure {
            version: "0.9.0".into(),
            reason: "old".into(),
        };
        let Outcome::RolledBack { reason } = outcome(&p, "1.0.0", Some(&stale)) else {
            panic!("rolled back expected");
        };
        assert!(reason.contains("tries ran out"), "{reason}");
        assert_eq!(
            outcome(&p, "2.0.0", None),
            Outcome::Unknown {
                running: "2.0.0".into()
            }
        );
    }

    #[test]
    fn records_round_trip_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::at(&dir.path().join("upgrade"));
        assert_eq!(records.pending().unwrap(), None);
        assert_eq!(records.deny_list().unwrap(), DenyList::default());
        records.set_pending(&pending()).unwrap();
        records
            .set_gate_failure(&GateFailure {
                version: "1.1.0".into(),
                reason: "x".into(),
            })
            .unwrap();
        assert_eq!(records.pending().unwrap(), Some(pending()));
        records.clear_pending().unwrap();
        assert_eq!(records.pending().unwrap(), None);
        assert_eq!(records.gate_failure().unwrap(), None);
        std::fs::write(dir.path().join("upgrade/pending.json"), "{").unwrap();
        assert_eq!(
            records.pending().unwrap_err().details["reason"],
            "record_corrupt"
        );
    }

    #[test]
    fn installed_binaries_are_remembered_newest_last_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::at(dir.path());
        assert!(records.installed_binaries().unwrap().is_empty());
        let binary = |version: &str, sha: &str| InstalledBinary {
            version: version.into(),
            sha256: sha.into(),
            size: 1,
        };
        for (i, version) in ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"]
            .iter()
            .enumerate()
        {
            records
                .add_installed_binary(binary(version, &format!("sha{i}")))
                .unwrap();
        }
        // The same bytes installed again (say, after a rollback) move last, not twice.
        records
            .add_installed_binary(binary("1.2.0", "sha2"))
            .unwrap();
        let versions: Vec<String> = records
            .installed_binaries()
            .unwrap()
            .into_iter()
            .map(|b| b.version)
            .collect();
        assert_eq!(versions, ["1.1.0", "1.3.0", "1.4.0", "1.2.0"]);
    }
}
