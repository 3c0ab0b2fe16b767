//! The appliance installer: a verified bundle into the other A/B slot, with a boot entry on
//! trial (SPEC §9.3).
//!
//! Order, so that nothing half-done is ever bootable: (1) verify the whole bundle, writing
//! nothing; (2) check the version rules; (3) plan from the disk's GPT, the kernel command line
//! and the ESP's entries (refused while the running boot is not blessed, or when a verity disk
//! would lose its protection); (4) delete the target slot's old entry and kernel; (5) stream the
//! root image into the slot, its dm-verity hash device into the slot's hash partition and the
//! kernel image onto the ESP, re-checking every hash; (6) only then write the new entry (`+3`
//! tries, the root hash in its options) — the commit point — and the pending record. It must
//! not reboot (the caller decides when).

use std::path::{Path, PathBuf};

use super::bundle::{self, Verified};
use super::disk;
use super::esp::Esp;
use super::keys::TrustedKeys;
use super::manifest::{BundleKind, KERNEL_IMAGE, Manifest, ROOT_IMAGE, ROOT_VERITY};
use super::policy;
use super::record::{Pending, Records};
use super::slots::{self, InstallPlan, Slots};
use crate::error::{Code, Error};

/// The appliance a node runs on.
#[derive(Debug, Clone)]
pub struct Appliance {
    /// The whole disk (`/dev/vda`, or an image file in tests).
    pub disk: PathBuf,
    /// The mounted ESP.
    pub esp: Esp,
    /// The running kernel's command line (`/proc/cmdline`).
    pub cmdline: String,
    /// The running version (os-release `IMAGE_VERSION`).
    pub running_version: String,
    /// The machine's architecture.
    pub arch: String,
    /// The upgrade records on the data partition.
    pub records: Records,
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The bundle that was installed.
    pub verified: Verified,
    /// Where: the slot name (`a`, `b`) or `binary`.
    pub target: String,
    /// The boot entry on trial (appliance) or the replaced binary's backup (plain host).
    pub committed: String,
}

/// A request to install a bundle.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The bundle file.
    pub bundle: &'a Path,
    /// The keys to verify it with.
    pub keys: &'a TrustedKeys,
    /// Lift the downgrade, min_version and deny-list rules.
    pub force: bool,
    /// The fleet plan (empty for a local install).
    pub plan_id: &'a str,
    /// Now, Unix milliseconds.
    pub now_unix_ms: i64,
}

/// Verifies a bundle of `kind` and checks the version rules; writes nothing.
pub fn admit(
    request: &Request<'_>,
    kind: BundleKind,
    running_version: &str,
    arch: &str,
    records: &Records,
) -> Result<Verified, Error> {
    let verified = bundle::verify(request.bundle, request.keys)?;
    if verified.manifest.kind() != kind {
        return Err(Error::new(
            Code::ValidationFailed,
            format!(
                "the bundle is {:?} bundle; this host takes {kind:?} bundles",
                verified.manifest.kind()
            ),
        )
        .with("reason", "wrong_bundle_kind"));
    }
    policy::check_install(
        &verified.manifest,
        running_version,
        arch,
        &records.deny_list()?,
        request.force,
    )?;
    Ok(verified)
}

/// What installing `manifest` on `host` would do, writing nothing: the disk's checks (an A/B
/// layout, a blessed running boot, verity kept) that [`install`] makes before its first write,
/// so a request can be refused before it is recorded.
pub fn plan(host: &Appliance, manifest: &Manifest) -> Result<(Slots, InstallPlan), Error> {
    let slots = Slots::find(&disk::read_partitions(&host.disk)?)?;
    let plan = slots::plan_install(
        &slots,
        &host.cmdline,
        &host.esp.entries()?,
        &manifest.version,
        manifest.root_hash.as_deref(),
    )?;
    Ok((slots, plan))
}

/// Installs an appliance bundle into the other slot; see the module documentation.
pub fn install(host: &Appliance, request: &Request<'_>) -> Result<Installed, Error> {
    let verified = admit(
        request,
        BundleKind::Appliance,
        &host.running_version,
        &host.arch,
        &host.records,
    )?;
    let (slots, plan) = plan(host, &verified.manifest)?;
    for file in &plan.remove {
        host.esp.remove(file)?;
    }
    let target = slots.get(plan.target).clone();
    let written = bundle::extract(
        request.bundle,
        request.keys,
        &verified.manifest_sha256,
        &mut |name, reader| match name {
            ROOT_IMAGE => {
                let mut image = ruzstd::decoding::StreamingDecoder::new(reader).map_err(|e| {
                    Error::new(
                        Code::UpgradeVerificationFailed,
                        format!("{ROOT_IMAGE} is not zstd: {e}"),
                    )
                    .with("reason", "image_unreadable")
                })?;
                disk::write_partition(&host.disk, &target, &mut image, None).map(drop)
            }
            KERNEL_IMAGE => host.esp.write(&plan.kernel, reader).map(drop),
            // Without hash partitions the entry boots unprotected: the tree is only checked.
            ROOT_VERITY => plan.verity.as_ref().map_or(Ok(()), |hash| {
                let size = verified.manifest.files[ROOT_VERITY].size;
                disk::write_partition(&host.disk, hash, reader, Some(size)).map(drop)
            }),
            other => Err(Error::new(
                Code::Internal,
                format!("no installer for bundle file {other}"),
            )),
        },
    );
    if let Err(error) = written {
        // The slot holds a partial image and has no entry: never bootable. Drop the kernel.
        let _ = host.esp.remove(&plan.kernel);
        return Err(error);
    }
    host.esp
        .write(&plan.entry, &mut plan.entry_text.as_bytes())?;
    host.records.set_pending(&Pending {
        plan_id: request.plan_id.to_owned(),
        from_version: host.running_version.clone(),
        to_version: verified.manifest.version.clone(),
        target: plan.target.name().to_owned(),
        installed_at_unix_ms: request.now_unix_ms,
    })?;
    Ok(Installed {
        verified,
        target: plan.target.name().to_owned(),
        committed: plan.entry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::bundle::tests::{appliance_bundle, verity_appliance_bundle};
    use crate::upgrade::disk::tests::{disk_image, verity_disk_image};
    use crate::upgrade::slots::{BootEntry, Slot};

    struct Fixture {
        _dir: tempfile::TempDir,
        dir: PathBuf,
        host: Appliance,
    }

    /// An A/B disk image whose slot A runs 1.0.0 with a blessed entry.
    fn fixture() -> Fixture {
        fixture_on(disk_image)
    }

    /// [`fixture`] on the disk `make_disk` makes in the fixture's directory.
    fn fixture_on(make_disk: fn(&Path) -> PathBuf) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let disk = make_disk(&path);
        let slots = Slots::find(&disk::read_partitions(&disk).unwrap()).unwrap();
        let a = slots.get(Slot::A).uuid.clone();
        let esp = Esp::at(&path.join("esp"));
        esp.write(
            "loader/entries/jaco-1-1.0.0.conf",
            &mut format!("title jaco 1.0.0\nefi /EFI/jaco/jaco-1-1.0.0.efi\noptions root=PARTUUID={a} ro console=ttyS0\n").as_bytes(),
        )
        .unwrap();
        esp.write("EFI/jaco/jaco-1-1.0.0.efi", &mut &b"old kernel"[..])
            .unwrap();
        let host = Appliance {
            disk,
            esp,
            cmdline: format!("root=PARTUUID={a} ro console=ttyS0"),
            running_version: "1.0.0".into(),
            arch: "x86_64".into(),
            records: Records::at(&path.join("var/upgrade")),
        };
        Fixture {
            _dir: dir,
            dir: path,
            host,
        }
    }

    fn zstd(bytes: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
    }

    fn request<'a>(bundle: &'a Path, keys: &'a TrustedKeys) -> Request<'a> {
        Request {
            bundle,
            keys,
            force: false,
            plan_id: "plan-1",
            now_unix_ms: 42,
        }
    }

    #[test]
    fn a_verified_bundle_lands_in_slot_b_with_an_entry_on_trial() {
        let f = fixture();
        let root: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
        let (bundle, keys) = appliance_bundle(&f.dir, "1.1.0", &zstd(&root), b"new kernel");
        let installed = install(&f.host, &request(&bundle, &keys)).unwrap();
        assert_eq!(installed.target, "b");
        assert_eq!(installed.committed, "loader/entries/jaco-2-1.1.0+3.conf");

        let slots = Slots::find(&disk::read_partitions(&f.host.disk).unwrap()).unwrap();
        let b = slots.get(Slot::B);
        let disk = std::fs::read(&f.host.disk).unwrap();
        let start = usize::try_from(b.offset).unwrap();
        assert_eq!(
            &disk[start..start + root.len()],
            &root[..],
            "slot B holds the image"
        );
        let entries = f.host.esp.entries().unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.file_name.as_str()).collect();
        assert_eq!(names, ["jaco-1-1.0.0.conf", "jaco-2-1.1.0+3.conf"]);
        assert_eq!(
            entries[1].root.as_deref(),
            Some(&*format!("PARTUUID={}", b.uuid))
        );
        assert_eq!(
            std::fs::read(f.host.esp.path("EFI/jaco/jaco-2-1.1.0.efi")).unwrap(),
            b"new kernel"
        );
        let pending = f.host.records.pending().unwrap().unwrap();
        assert_eq!(
            (pending.from_version.as_str(), pending.to_version.as_str()),
            ("1.0.0", "1.1.0")
        );

        // Booted into B on trial: slot A, the fallback, cannot be overwritten yet.
        let on_trial = Appliance {
            cmdline: format!("root=PARTUUID={} ro", b.uuid),
            running_version: "1.1.0".into(),
            ..f.host.clone()
        };
        let (next, next_keys) = appliance_bundle(&f.dir, "1.2.0", &zstd(b"x"), b"k");
        let error = install(&on_trial, &request(&next, &next_keys)).unwrap_err();
        assert_eq!(error.details["reason"], "boot_not_blessed");
    }

    #[test]
    fn a_verity_bundle_fills_the_slots_hash_partition_and_its_entry_names_the_root_hash() {
        let f = fixture_on(verity_disk_image);
        let root: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 241) as u8).collect();
        let hash_device: Vec<u8> = (0..300_000u32).map(|i| (i % 199) as u8).collect();
        let root_hash = "ef".repeat(32);
        let (bundle, keys) = verity_appliance_bundle(
            &f.dir,
            "1.1.0",
            &zstd(&root),
            b"new kernel",
            Some((&hash_device, &root_hash)),
        );
        install(&f.host, &request(&bundle, &keys)).unwrap();

        let slots = Slots::find(&disk::read_partitions(&f.host.disk).unwrap()).unwrap();
        let disk_bytes = std::fs::read(&f.host.disk).unwrap();
        let at = |offset: u64, len: usize| {
            let start = usize::try_from(offset).unwrap();
            &disk_bytes[start..start + len]
        };
        assert_eq!(at(slots.get(Slot::B).offset, root.len()), &root[..]);
        let hash_b = slots.verity(Slot::B).unwrap();
        assert_eq!(at(hash_b.offset, hash_device.len()), &hash_device[..]);
        let hash_a = slots.verity(Slot::A).unwrap();
        assert!(
            at(hash_a.offset, 4096).iter().all(|b| *b == 0),
            "slot A's tree untouched"
        );
        let entry =
            std::fs::read_to_string(f.host.esp.path("loader/entries/jaco-2-1.1.0+3.conf")).unwrap();
        assert!(entry.contains(&format!(
            "options root=/dev/mapper/root roothash={root_hash} \
             systemd.verity_root_data=PARTUUID={} systemd.verity_root_hash=PARTUUID={} ro",
            slots.get(Slot::B).uuid,
            hash_b.uuid
        )));
    }

    #[test]
    fn a_bundle_without_a_hash_tree_is_refused_on_a_verity_disk_before_anything_is_written() {
        let f = fixture_on(verity_disk_image);
        let disk_before = std::fs::read(&f.host.disk).unwrap();
        let entries_before = f.host.esp.entries().unwrap();
        let (bundle, keys) = appliance_bundle(&f.dir, "1.1.0", &zstd(b"root"), b"k");
        let error = install(&f.host, &request(&bundle, &keys)).unwrap_err();
        assert_eq!(error.code, Code::ValidationFailed);
        assert_eq!(error.details["reason"], "verity_required");
        assert_eq!(std::fs::read(&f.host.disk).unwrap(), disk_before);
        assert_eq!(f.host.esp.entries().unwrap(), entries_before);
        assert_eq!(f.host.records.pending().unwrap(), None);
    }

    #[test]
    fn a_corrupted_or_unsigned_bundle_writes_nothing_anywhere() {
        let f = fixture();
        let disk_before = std::fs::read(&f.host.disk).unwrap();
        let entries_before = f.host.esp.entries().unwrap();
        let image = zstd(&[9u8; 100_000]);
        let (bundle, keys) = appliance_bundle(&f.dir, "1.1.0", &image, b"k");
        // Flip one byte of the compressed root image inside the archive.
        let mut bytes = std::fs::read(&bundle).unwrap();
        let at = bytes.windows(image.len()).position(|w| w == image).unwrap() + image.len() / 2;
        bytes[at] ^= 0xff;
        std::fs::write(&bundle, &bytes).unwrap();
        let error = install(&f.host, &request(&bundle, &keys)).unwrap_err();
        assert_eq!(error.code, Code::UpgradeVerificationFailed);
        assert_eq!(error.details["reason"], "checksum_mismatch");

        let (signed, _) = appliance_bundle(&f.dir, "1.1.0", &zstd(b"root"), b"k");
        let error = install(&f.host, &request(&signed, &keys)).unwrap_err();
        assert_eq!(error.details["reason"], "untrusted_key");

        assert_eq!(std::fs::read(&f.host.disk).unwrap(), disk_before);
        assert_eq!(f.host.esp.entries().unwrap(), entries_before);
        assert_eq!(f.host.records.pending().unwrap(), None);
    }

    #[test]
    fn deny_listed_and_older_versions_are_refused_before_the_disk_is_read() {
        let f = fixture();
        let mut deny = f.host.records.deny_list().unwrap();
        deny.deny("1.1.0", "health gate failed", 1);
        f.host.records.set_deny_list(&deny).unwrap();
        let (bundle, keys) = appliance_bundle(&f.dir, "1.1.0", &zstd(b"r"), b"k");
        let error = install(&f.host, &request(&bundle, &keys)).unwrap_err();
        assert_eq!(error.details["reason"], "deny_listed");
        let (old, old_keys) = appliance_bundle(&f.dir, "0.9.0", &zstd(b"r"), b"k");
        let error = install(&f.host, &request(&old, &old_keys)).unwrap_err();
        assert_eq!(error.details["reason"], "downgrade");
        // Forced, the old version installs, and its generation still sorts first.
        let forced = Request {
            force: true,
            ..request(&old, &old_keys)
        };
        let installed = install(&f.host, &forced).unwrap();
        let entry = f
            .host
            .esp
            .entries()
            .unwrap()
            .into_iter()
            .find(|e| e.file_name == installed.committed.rsplit('/').next().unwrap())
            .unwrap();
        assert_eq!(entry.generation, 2);
        assert!(BootEntry::parse(&entry.file_name, "").is_some());
    }
}
