//! The plain-host fallback of SPEC §9.3: a host that is not the appliance upgrades by replacing
//! the `jaco` binary, keeping the previous one as `<binary>.prev` to roll back to.
//!
//! Role: install a verified binary bundle next to the running binary and swap it in with two
//! renames (the running process keeps its open inode), and put `.prev` back on a failed health
//! check. It must not restart anything (systemd restarts the daemon; the caller decides).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::bundle;
use super::install::{Installed, Request, admit};
use super::io_failed;
use super::manifest::{BINARY, BundleKind};
use super::record::{InstalledBinary, Pending, Records};
use crate::error::Error;

/// Where the previous binary is kept.
pub fn previous_of(binary: &Path) -> PathBuf {
    let mut name = binary.as_os_str().to_owned();
    name.push(".prev");
    PathBuf::from(name)
}

/// Installs a binary bundle over `binary`; the old one becomes [`previous_of`]`(binary)`.
pub fn install(
    binary: &Path,
    running_version: &str,
    arch: &str,
    records: &Records,
    request: &Request<'_>,
) -> Result<Installed, Error> {
    let verified = admit(request, BundleKind::Binary, running_version, arch, records)?;
    let mut staged = binary.as_os_str().to_owned();
    staged.push(".new");
    let staged = PathBuf::from(staged);
    let written = bundle::extract(
        request.bundle,
        request.keys,
        &verified.manifest_sha256,
        &mut |name, reader| {
            debug_assert_eq!(name, BINARY);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o755)
                .open(&staged)
                .map_err(|e| io_failed("create", &staged, &e))?;
            std::io::copy(reader, &mut file)
                .and_then(|_| file.flush())
                .and_then(|()| file.sync_all())
                .map_err(|e| io_failed("write", &staged, &e))
        },
    );
    if let Err(error) = written {
        let _ = fs::remove_file(&staged);
        return Err(error);
    }
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o755))
        .map_err(|e| io_failed("chmod", &staged, &e))?;
    let previous = previous_of(binary);
    fs::rename(binary, &previous).map_err(|e| io_failed("move aside", binary, &e))?;
    if let Err(e) = fs::rename(&staged, binary) {
        let _ = fs::rename(&previous, binary);
        return Err(io_failed("install", binary, &e));
    }
    if let Some(entry) = verified.manifest.files.get(BINARY) {
        records.add_installed_binary(InstalledBinary {
            version: verified.manifest.version.clone(),
            sha256: entry.sha256.clone(),
            size: entry.size,
        })?;
    }
    records.set_pending(&Pending {
        plan_id: request.plan_id.to_owned(),
        from_version: running_version.to_owned(),
        to_version: verified.manifest.version.clone(),
        target: "binary".to_owned(),
        installed_at_unix_ms: request.now_unix_ms,
    })?;
    Ok(Installed {
        verified,
        target: "binary".to_owned(),
        committed: previous.display().to_string(),
    })
}

/// Puts the previous binary back; `Ok(false)` when there is none.
pub fn roll_back(binary: &Path) -> Result<bool, Error> {
    let previous = previous_of(binary);
    if !previous.exists() {
        return Ok(false);
    }
    fs::rename(&previous, binary).map_err(|e| io_failed("restore", &previous, &e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::keys::{TrustedKeys, tests::key_pair};
    use sha2::Digest as _;

    #[test]
    fn a_binary_bundle_swaps_the_binary_and_rolls_back_to_prev() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("jaco");
        fs::write(&binary, b"old binary").unwrap();
        let new = dir.path().join("new-jaco");
        fs::write(&new, b"new binary").unwrap();
        let (sk, public) = key_pair();
        let bundle_path = dir.path().join("b.bundle");
        bundle::create(
            &bundle_path,
            crate::upgrade::manifest::Manifest::new("1.1.0", "1.0.0", "x86_64"),
            &[(BINARY.into(), new)],
            &sk,
        )
        .unwrap();
        let mut keys = TrustedKeys::default();
        keys.add(Path::new("k.pub"), &public).unwrap();
        let records = Records::at(&dir.path().join("records"));
        let request = Request {
            bundle: &bundle_path,
            keys: &keys,
            force: false,
            plan_id: "",
            now_unix_ms: 1,
        };

        let installed = install(&binary, "1.0.0", "x86_64", &records, &request).unwrap();
        assert_eq!(installed.target, "binary");
        assert_eq!(fs::read(&binary).unwrap(), b"new binary");
        assert_eq!(
            fs::metadata(&binary).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(fs::read(previous_of(&binary)).unwrap(), b"old binary");
        assert_eq!(records.pending().unwrap().unwrap().to_version, "1.1.0");
        // The swapped-in bytes are known as 1.1.0 (how a plain host knows what it runs).
        let known = records.installed_binaries().unwrap();
        assert_eq!(known.len(), 1);
        assert_eq!(known[0].version, "1.1.0");
        assert_eq!(known[0].size, 10);
        assert_eq!(
            known[0].sha256,
            crate::pki::hex(&sha2::Sha256::digest(b"new binary"))
        );

        assert!(roll_back(&binary).unwrap());
        assert_eq!(fs::read(&binary).unwrap(), b"old binary");
        assert!(!roll_back(&binary).unwrap());

        // An appliance host refuses a binary bundle and the reverse.
        let error =
            admit(&request, BundleKind::Appliance, "1.0.0", "x86_64", &records).unwrap_err();
        assert_eq!(error.details["reason"], "wrong_bundle_kind");
    }
}
