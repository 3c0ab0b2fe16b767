//! The bundle manifest (`manifest.json`): version, min_version, arch, every payload file's
//! SHA-256 and size and, for a verity-protected root, the root hash of its hash tree; plus the
//! parsing of the versions it names.
//!
//! Role: the manifest's schema (closed: an unknown key is refused, so an older node never
//! silently ignores a newer rule), its canonical bytes, and which kind of bundle a set of files
//! makes. It must not read files or check signatures ([`super::bundle`] does).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::verification_failed;
use crate::error::{Code, Error};

/// The root filesystem image of an appliance bundle (zstd-compressed raw slot image).
pub const ROOT_IMAGE: &str = "root.img.zst";
/// The unified kernel image of an appliance bundle.
pub const KERNEL_IMAGE: &str = "kernel.efi";
/// The dm-verity hash device of the root image (superblock + hash tree, `veritysetup format`),
/// in a verity-protected appliance bundle.
pub const ROOT_VERITY: &str = "root.verity";
/// The binary of a plain-host bundle.
pub const BINARY: &str = "jaco";
/// Largest manifest a node reads (it lists a handful of files).
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;

/// One payload file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Lowercase hex SHA-256 of the file's bytes as stored in the bundle.
    pub sha256: String,
    /// Size in bytes as stored in the bundle.
    pub size: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The version the bundle installs (semantic version, no build metadata).
    pub version: String,
    /// The lowest running version that may install it without force.
    pub min_version: String,
    /// The machine architecture (`x86_64`, `aarch64`), as `uname -m` names it.
    pub arch: String,
    /// The dm-verity root hash of [`ROOT_VERITY`] (lowercase hex), present exactly when the
    /// bundle carries that file. Signed with the rest: it is what the kernel checks every block
    /// of the root against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hash: Option<String>,
    /// Payload files by name.
    pub files: BTreeMap<String, FileEntry>,
}

/// What a bundle installs, decided by its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    /// A root slot image and its kernel image, for the A/B appliance.
    Appliance,
    /// The `jaco` binary alone, for a plain host.
    Binary,
}

impl Manifest {
    /// A manifest with no files yet and no root hash.
    pub fn new(version: &str, min_version: &str, arch: &str) -> Self {
        Manifest {
            version: version.to_owned(),
            min_version: min_version.to_owned(),
            arch: arch.to_owned(),
            root_hash: None,
            files: BTreeMap::new(),
        }
    }

    /// Parses and checks manifest bytes; every problem is `upgrade_verification_failed`
    /// (reason `manifest_invalid`) because the manifest is only read after its signature
    /// verified, so a bad one is a bad release.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            verification_failed("manifest_invalid", format!("manifest.json is invalid: {e}"))
        })?;
        manifest.check()?;
        Ok(manifest)
    }

    /// The canonical bytes a bundle stores and signs (pretty JSON, keys in order).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest serialises");
        bytes.push(b'\n');
        bytes
    }

    /// The parsed `version`.
    pub fn version(&self) -> semver::Version {
        parse_version(&self.version).expect("checked at parse")
    }

    /// The parsed `min_version`.
    pub fn min_version(&self) -> semver::Version {
        parse_version(&self.min_version).expect("checked at parse")
    }

    /// What the bundle installs.
    pub fn kind(&self) -> BundleKind {
        if self.files.contains_key(BINARY) {
            BundleKind::Binary
        } else {
            BundleKind::Appliance
        }
    }

    /// The file names of the bundle's format.
    pub fn check(&self) -> Result<(), Error> {
        let invalid = |message: String| verification_failed("manifest_invalid", message);
        for (field, text) in [
            ("version", &self.version),
            ("min_version", &self.min_version),
        ] {
            parse_version(text).map_err(|e| invalid(format!("manifest {field}: {}", e.message)))?;
        }
        if self.min_version() > self.version() {
            return Err(invalid(format!(
                "manifest min_version {} is above its version {}",
                self.min_version, self.version
            )));
        }
        if self.arch.is_empty()
            || !self
                .arch
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(invalid(format!(
                "manifest arch {:?} is not an architecture",
                self.arch
            )));
        }
        let names: Vec<&str> = self.files.keys().map(String::as_str).collect();
        let appliance = [KERNEL_IMAGE, ROOT_IMAGE];
        let verity_appliance = [KERNEL_IMAGE, ROOT_IMAGE, ROOT_VERITY];
        if names != appliance && names != verity_appliance && names != [BINARY] {
            return Err(invalid(format!(
                "manifest files {names:?} are neither an appliance bundle ({appliance:?}, \
                 optionally with {ROOT_VERITY:?}) nor a binary bundle ([{BINARY:?}])"
            )));
        }
        match (&self.root_hash, self.files.contains_key(ROOT_VERITY)) {
            (Some(hash), true) if is_lower_hex(hash, 64) => {}
            (Some(_), true) => {
                return Err(invalid(
                    "manifest root_hash is not 64 lowercase hex digits (SHA-256)".into(),
                ));
            }
            (None, false) => {}
            (Some(_), false) | (None, true) => {
                return Err(invalid(format!(
                    "manifest root_hash and the file {ROOT_VERITY} come together or not at all"
                )));
            }
        }
        for (name, entry) in &self.files {
            if !is_lower_hex(&entry.sha256, 64) {
                return Err(invalid(format!(
                    "manifest sha256 of {name} is not lowercase hex"
                )));
            }
        }
        Ok(())
    }
}

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Parses a release version: semantic versioning without build metadata (`+` separates the
/// boot counter in boot entry names). `validation_failed` (field `version`) otherwise.
pub fn parse_version(text: &str) -> Result<semver::Version, Error> {
    let invalid = |message: String| {
        Error::new(Code::ValidationFailed, message)
            .with("field", "version")
            .with("version", text)
    };
    let version = semver::Version::parse(text)
        .map_err(|e| invalid(format!("{text:?} is not a semantic version: {e}")))?;
    if !version.build.is_empty() {
        return Err(invalid(format!(
            "{text:?} carries build metadata (+…); release versions must not"
        )));
    }
    Ok(version)
}

/// The architecture this binary was built for, as the manifest names it.
pub fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn manifest(version: &str, files: &[&str]) -> Manifest {
        Manifest {
            root_hash: files.contains(&ROOT_VERITY).then(|| "cd".repeat(32)),
            files: files
                .iter()
                .map(|name| {
                    let entry = FileEntry {
                        sha256: "ab".repeat(32),
                        size: 1,
                    };
                    ((*name).to_owned(), entry)
                })
                .collect(),
            ..Manifest::new(version, "0.1.0", "x86_64")
        }
    }

    #[test]
    fn a_manifest_round_trips_through_its_canonical_bytes() {
        let m = manifest("1.2.3", &[ROOT_IMAGE, KERNEL_IMAGE]);
        let back = Manifest::parse(&m.to_bytes()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.kind(), BundleKind::Appliance);
        assert_eq!(manifest("1.0.0", &[BINARY]).kind(), BundleKind::Binary);
        let verity = manifest("1.2.3", &[ROOT_IMAGE, KERNEL_IMAGE, ROOT_VERITY]);
        let bytes = verity.to_bytes();
        assert!(String::from_utf8_lossy(&bytes).contains(&"cd".repeat(32)));
        assert_eq!(Manifest::parse(&bytes).unwrap(), verity);
        // Without verity the key is left out, so older readers' bytes are unchanged.
        assert!(!String::from_utf8_lossy(&m.to_bytes()).contains("root_hash"));
    }

    #[test]
    fn malformed_manifests_are_verification_failures() {
        let mut cases = Vec::new();
        cases.push(b"{not json".to_vec());
        let mut extra = serde_json::to_value(manifest("1.0.0", &[BINARY])).unwrap();
        extra["surprise"] = 1.into();
        cases.push(serde_json::to_vec(&extra).unwrap());
        cases.push(manifest("1.0", &[BINARY]).to_bytes());
        cases.push(manifest("1.0.0+build5", &[BINARY]).to_bytes());
        cases.push(manifest("1.0.0", &[BINARY, ROOT_IMAGE]).to_bytes());
        cases.push(manifest("1.0.0", &[ROOT_IMAGE]).to_bytes());
        cases.push(manifest("1.0.0", &["../etc/passwd"]).to_bytes());
        let mut low = manifest("1.0.0", &[BINARY]);
        low.min_version = "2.0.0".into();
        cases.push(low.to_bytes());
        let mut upper = manifest("1.0.0", &[BINARY]);
        upper.files.get_mut(BINARY).unwrap().sha256 = "AB".repeat(32);
        cases.push(upper.to_bytes());
        let mut hashless = manifest("1.0.0", &[ROOT_IMAGE, KERNEL_IMAGE, ROOT_VERITY]);
        hashless.root_hash = None;
        cases.push(hashless.to_bytes());
        let mut treeless = manifest("1.0.0", &[ROOT_IMAGE, KERNEL_IMAGE]);
        treeless.root_hash = Some("cd".repeat(32));
        cases.push(treeless.to_bytes());
        let mut short = manifest("1.0.0", &[ROOT_IMAGE, KERNEL_IMAGE, ROOT_VERITY]);
        short.root_hash = Some("cd".repeat(16));
        cases.push(short.to_bytes());
        let mut arch = manifest("1.0.0", &[BINARY]);
        arch.arch = "x86/64".into();
        cases.push(arch.to_bytes());
        for bytes in cases {
            let error = Manifest::parse(&bytes).unwrap_err();
            assert_eq!(
                error.code,
                Code::UpgradeVerificationFailed,
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(error.details["reason"], "manifest_invalid");
        }
    }

    #[test]
    fn versions_are_semantic_and_ordered() {
        assert!(parse_version("1.10.0").unwrap() > parse_version("1.9.9").unwrap());
        assert!(parse_version("2.0.0-rc.1").unwrap() < parse_version("2.0.0").unwrap());
        assert_eq!(
            parse_version("latest").unwrap_err().code,
            Code::ValidationFailed
        );
    }
}
