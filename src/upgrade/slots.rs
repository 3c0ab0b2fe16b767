//! A/B slot and boot-entry decisions (SPEC §9.3), as functions of values.
//!
//! The appliance disk has two root partitions labelled `root-a` and `root-b` of equal size and,
//! on a verity-protected disk, one dm-verity hash partition for each (`root-a-verity`,
//! `root-b-verity`). A slot boots through a systemd-boot Type #1 entry
//! `loader/entries/jaco-<generation>-<version>[+<left>[-<done>]].conf` that names its kernel
//! image (`efi`) and its root partition (`options … root=PARTUUID=<uuid> …`, or with verity
//! `root=/dev/mapper/root roothash=<hash> systemd.verity_root_data=PARTUUID=<uuid>
//! systemd.verity_root_hash=PARTUUID=<hash partition> …`, which the initrd's
//! systemd-veritysetup-generator turns into a checked device); the `+left-done` boot counter is systemd's boot
//! assessment (an entry with a counter is on trial; `+0-…` is bad and sorted last;
//! `systemd-bless-boot` removes the counter once the boot is good). The highest `version`
//! (generation) boots first, so the newest install wins even when it is a forced downgrade.
//!
//! Role: which slot runs, whether its boot is blessed, which slot and entries an install
//! replaces and what the new entry says. It must not touch disks or files ([`super::disk`] and
//! [`super::esp`] do).

use crate::error::{Code, Error};

/// Tries a new entry gets (systemd-boot counts them down; 0 left = bad).
pub const BOOT_TRIES: u32 = 3;
/// Where an install puts kernel images on the ESP.
pub const KERNEL_DIR: &str = "EFI/jaco";
/// Where boot entries live on the ESP.
pub const ENTRIES_DIR: &str = "loader/entries";

/// One of the two root slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// `root-a`.
    A,
    /// `root-b`.
    B,
}

impl Slot {
    /// The GPT partition label.
    pub fn label(self) -> &'static str {
        match self {
            Slot::A => "root-a",
            Slot::B => "root-b",
        }
    }

    /// The GPT label of the slot's dm-verity hash partition.
    pub fn verity_label(self) -> &'static str {
        match self {
            Slot::A => "root-a-verity",
            Slot::B => "root-b-verity",
        }
    }

    /// The short name shown to operators (`a`, `b`).
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// A GPT partition as the slot logic needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// GPT partition label (name).
    pub label: String,
    /// Partition UUID, lowercase.
    pub uuid: String,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The two root slots of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    a: Partition,
    b: Partition,
    /// The hash partitions of slots A and B, on a verity-protected disk.
    verity: Option<(Partition, Partition)>,
}

impl Slots {
    /// Finds `root-a` and `root-b` and, if the disk has them, `root-a-verity` and
    /// `root-b-verity`; `internal` (`reason: no_ab_slots`) unless each pair exists once each,
    /// with equal sizes.
    pub fn find(partitions: &[Partition]) -> Result<Slots, Error> {
        let not_ab =
            |message: String| Error::new(Code::Internal, message).with("reason", "no_ab_slots");
        let labelled = |label: &str| -> Result<Option<Partition>, Error> {
            let mut found = partitions.iter().filter(|p| p.label == label);
            match (found.next(), found.next()) {
                (found, None) => Ok(found.cloned()),
                _ => Err(not_ab(format!(
                    "the disk has two partitions labelled {label}"
                ))),
            }
        };
        let pair = |a: Slot, b: Slot, label: fn(Slot) -> &'static str| match (
            labelled(label(a))?,
            labelled(label(b))?,
        ) {
            (Some(pa), Some(pb)) if pa.size == pb.size => Ok(Some((pa, pb))),
            (Some(pa), Some(pb)) => Err(not_ab(format!(
                "partition sizes differ: {} {} bytes, {} {} bytes",
                pa.label, pa.size, pb.label, pb.size
            ))),
            (None, None) => Ok(None),
            (Some(_), None) | (None, Some(_)) => Err(not_ab(format!(
                "the disk has only one of {} and {}",
                label(a),
                label(b)
            ))),
        };
        let (a, b) = pair(Slot::A, Slot::B, Slot::label)?.ok_or_else(|| {
            not_ab(
                "the disk has no partitions labelled root-a and root-b (not an A/B appliance disk)"
                    .into(),
            )
        })?;
        let verity = pair(Slot::A, Slot::B, Slot::verity_label)?;
        Ok(Slots { a, b, verity })
    }

    /// The partition of `slot`.
    pub fn get(&self, slot: Slot) -> &Partition {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }

    /// The dm-verity hash partition of `slot`, on a verity-protected disk.
    pub fn verity(&self, slot: Slot) -> Option<&Partition> {
        self.verity.as_ref().map(|(a, b)| match slot {
            Slot::A => a,
            Slot::B => b,
        })
    }

    /// The slot whose partition a `root=` value names (`PARTUUID=…` or `PARTLABEL=…`).
    pub fn named_by(&self, root: &str) -> Option<Slot> {
        let (kind, value) = root.split_once('=')?;
        [Slot::A, Slot::B].into_iter().find(|slot| {
            let p = self.get(*slot);
            match kind {
                "PARTUUID" => value.eq_ignore_ascii_case(&p.uuid),
                "PARTLABEL" => value == p.label,
                _ => false,
            }
        })
    }

    /// The running slot, from the kernel command line ([`slot_arg`]).
    pub fn running(&self, cmdline: &str) -> Result<Slot, Error> {
        slot_arg(cmdline)
            .and_then(|root| self.named_by(root))
            .ok_or_else(|| {
                Error::new(
                    Code::Internal,
                    format!(
                        "the kernel command line names no A/B slot as root: {:?}",
                        cmdline.trim()
                    ),
                )
                .with("reason", "unknown_running_slot")
            })
    }
}

/// The value of the last `key` argument (`key` ends in `=`) of a kernel command line.
fn last_arg<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .filter_map(|arg| arg.strip_prefix(key))
        .next_back()
}

/// What names the partition a kernel command line boots from (`PARTUUID=…`/`PARTLABEL=…`):
/// `systemd.verity_root_data=` when the root is verity-protected (`root=` then names the mapped
/// device), `root=` otherwise.
pub fn slot_arg(cmdline: &str) -> Option<&str> {
    last_arg(cmdline, "systemd.verity_root_data=").or_else(|| last_arg(cmdline, "root="))
}

/// The arguments that say where the root comes from; an entry's options replace them all.
const ROOT_ARGS: [&str; 6] = [
    "root=",
    "BOOT_IMAGE=",
    "roothash=",
    "systemd.verity=",
    "systemd.verity_root_data=",
    "systemd.verity_root_hash=",
];

/// `cmdline` with its root arguments replaced by ones naming `root`: directly, or through
/// dm-verity with `verity` = (the hash partition, the root hash).
pub fn slot_options(cmdline: &str, root: &Partition, verity: Option<(&Partition, &str)>) -> String {
    let mut args: Vec<String> = match verity {
        None => vec![format!("root=PARTUUID={}", root.uuid)],
        Some((hash, root_hash)) => vec![
            "root=/dev/mapper/root".to_owned(),
            format!("roothash={root_hash}"),
            format!("systemd.verity_root_data=PARTUUID={}", root.uuid),
            format!("systemd.verity_root_hash=PARTUUID={}", hash.uuid),
        ],
    };
    args.extend(
        cmdline
            .split_whitespace()
            .filter(|arg| !ROOT_ARGS.iter().any(|key| arg.starts_with(key)))
            .map(str::to_owned),
    );
    args.join(" ")
}

/// Whether a kernel command line boots its root through dm-verity (a `roothash=` whose device
/// the initrd must set up, or the boot does not get past it).
pub fn verity_protected(cmdline: &str) -> bool {
    last_arg(cmdline, "roothash=").is_some_and(|hash| !hash.is_empty())
}

/// A jaco boot entry on the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// The file name in `loader/entries/` (with its counter, if any).
    pub file_name: String,
    /// Install generation (the entry's `version` key).
    pub generation: u64,
    /// The jaco version it boots.
    pub version: String,
    /// Boot counter: (tries left, tries done); `None` = blessed.
    pub counter: Option<(u32, u32)>,
    /// The `PARTUUID=` or `PARTLABEL=` naming its root partition ([`slot_arg`] of its
    /// options), if any.
    pub root: Option<String>,
    /// Its kernel image path on the ESP (`efi` key), without the leading `/`.
    pub kernel: Option<String>,
}

impl BootEntry {
    /// Parses an entry file; `None` for files that are not jaco entries.
    pub fn parse(file_name: &str, text: &str) -> Option<BootEntry> {
        let stem = file_name.strip_suffix(".conf")?.strip_prefix("jaco-")?;
        let (base, counter) = match stem.split_once('+') {
            None => (stem, None),
            Some((base, counter)) => {
                let (left, done) = counter.split_once('-').unwrap_or((counter, "0"));
                (base, Some((left.parse().ok()?, done.parse().ok()?)))
            }
        };
        let (generation, version) = base.split_once('-')?;
        let mut entry = BootEntry {
            file_name: file_name.to_owned(),
            generation: generation.parse().ok()?,
            version: version.to_owned(),
            counter,
            root: None,
            kernel: None,
        };
        for line in text.lines() {
            let (key, value) = line
                .trim()
                .split_once(char::is_whitespace)
                .unwrap_or((line, ""));
            match key {
                "options" => entry.root = slot_arg(value).map(str::to_owned),
                "efi" => entry.kernel = Some(value.trim().trim_start_matches('/').to_owned()),
                _ => {}
            }
        }
        Some(entry)
    }

    /// Whether systemd-boot considers it bad (no tries left).
    pub fn is_bad(&self) -> bool {
        matches!(self.counter, Some((0, _)))
    }
}

/// What installing a version into the other slot does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPlan {
    /// The running slot (untouched).
    pub running: Slot,
    /// The slot the image is written to.
    pub target: Slot,
    /// ESP files to delete before the slot is written (entries and kernels of the target
    /// slot's previous version), so a half-written slot is never bootable.
    pub remove: Vec<String>,
    /// The target slot's hash partition, when the entry boots it through dm-verity: the
    /// bundle's hash device goes there.
    pub verity: Option<Partition>,
    /// ESP path of the new kernel image.
    pub kernel: String,
    /// ESP path of the new entry (with `+3`).
    pub entry: String,
    /// The new entry's content.
    pub entry_text: String,
}

/// Plans installing `version` (with its dm-verity `root_hash`, if the bundle has one) from a
/// system running with `cmdline` and boot `entries`.
///
/// Refuses with `upgrade_in_progress` (`reason: boot_not_blessed`) while the running slot's
/// entry still carries a boot counter: that boot is on trial, and the other slot is its
/// fallback, which must not be overwritten. Refuses with `validation_failed` (`reason:
/// verity_required`) a bundle without a root hash on a disk with hash partitions: installing
/// it would silently drop the root's integrity protection. A bundle with a root hash on a disk
/// without hash partitions (built before verity) installs unprotected, as that disk boots.
pub fn plan_install(
    slots: &Slots,
    cmdline: &str,
    entries: &[BootEntry],
    version: &str,
    root_hash: Option<&str>,
) -> Result<InstallPlan, Error> {
    let running = slots.running(cmdline)?;
    let target = running.other();
    let verity = match (slots.verity(target), root_hash) {
        (Some(hash), Some(root_hash)) => Some((hash, root_hash)),
        (None, _) => None,
        (Some(_), None) => {
            return Err(Error::new(
                Code::ValidationFailed,
                format!(
                    "this disk's root slots are dm-verity protected and bundle {version} carries \
                     no verity hash tree (manifest root_hash); build it with image/build.sh"
                ),
            )
            .with("reason", "verity_required")
            .with("version", version));
        }
    };
    let of = |slot: Slot| {
        entries
            .iter()
            .filter(move |e| e.root.as_deref().and_then(|r| slots.named_by(r)) == Some(slot))
    };
    let mut running_entries = of(running).peekable();
    if running_entries.peek().is_none() {
        return Err(Error::new(
            Code::Internal,
            format!(
                "no boot entry on the ESP boots the running slot {}",
                running.label()
            ),
        )
        .with("reason", "no_running_entry"));
    }
    if let Some(trial) = running_entries.find(|e| e.counter.is_some()) {
        return Err(Error::new(
            Code::UpgradeInProgress,
            format!(
                "the running boot ({}) is not blessed yet; slot {} is its fallback and is not \
                 overwritten until the health gate passes",
                trial.file_name,
                target.label()
            ),
        )
        .with("reason", "boot_not_blessed")
        .with("entry", &trial.file_name));
    }
    let running_kernels: Vec<&str> = of(running).filter_map(|e| e.kernel.as_deref()).collect();
    let mut remove = Vec::new();
    for entry in of(target) {
        remove.push(format!("{ENTRIES_DIR}/{}", entry.file_name));
        if let Some(kernel) = &entry.kernel
            && !running_kernels.contains(&kernel.as_str())
        {
            remove.push(kernel.clone());
        }
    }
    let generation = entries.iter().map(|e| e.generation).max().unwrap_or(0) + 1;
    let id = format!("jaco-{generation}-{version}");
    let kernel = format!("{KERNEL_DIR}/{id}.efi");
    let entry_text = format!(
        "title jaco {version} (slot {slot})\nsort-key jaco\nversion {generation}\nefi /{kernel}\noptions {options}\n",
        slot = target.name(),
        options = slot_options(cmdline, slots.get(target), verity),
    );
    Ok(InstallPlan {
        running,
        target,
        remove,
        verity: verity.map(|(hash, _)| hash.clone()),
        kernel,
        entry: format!("{ENTRIES_DIR}/{id}+{BOOT_TRIES}.conf"),
        entry_text,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const UUID_A: &str = "0c3d7c3a-35a3-4b0e-9a57-31f4f0c0a0aa";
    pub(crate) const UUID_B: &str = "7f0e5a4c-8a3b-4f38-8d4c-5b0f9e1d0bbb";

    const UUID_A_VERITY: &str = "aaaaaaaa-35a3-4b0e-9a57-31f4f0c0a0aa";
    const UUID_B_VERITY: &str = "bbbbbbbb-8a3b-4f38-8d4c-5b0f9e1d0bbb";
    const ROOT_HASH: &str = "5c1b0b8f9e4d3a2c1b0a99887766554433221100ffeeddccbbaa998877665544";

    fn part(label: &str, uuid: &str, offset: u64) -> Partition {
        Partition {
            label: label.into(),
            uuid: uuid.into(),
            offset,
            size: 1 << 20,
        }
    }

    fn partitions() -> Vec<Partition> {
        vec![
            part("esp", "11111111-1111-1111-1111-111111111111", 1 << 20),
            part("root-a", UUID_A, 2 << 20),
            part("root-b", UUID_B, 3 << 20),
        ]
    }

    pub(crate) fn slots() -> Slots {
        Slots::find(&partitions()).unwrap()
    }

    fn verity_slots() -> Slots {
        let mut partitions = partitions();
        partitions.push(part("root-a-verity", UUID_A_VERITY, 4 << 20));
        partitions.push(part("root-b-verity", UUID_B_VERITY, 5 << 20));
        Slots::find(&partitions).unwrap()
    }

    fn entry(file_name: &str, root_uuid: &str, kernel: &str) -> BootEntry {
        let text =
            format!("title x\nefi /{kernel}\noptions root=PARTUUID={root_uuid} ro console=ttyS0\n");
        BootEntry::parse(file_name, &text).unwrap()
    }

    const CMDLINE_A: &str =
        "root=PARTUUID=0C3D7C3A-35A3-4B0E-9A57-31F4F0C0A0AA ro console=ttyS0 quiet";

    #[test]
    fn the_running_slot_comes_from_the_root_argument() {
        let s = slots();
        assert_eq!(s.running(CMDLINE_A).unwrap(), Slot::A);
        assert_eq!(
            s.running("console=ttyS0 root=PARTLABEL=root-b").unwrap(),
            Slot::B
        );
        let error = s.running("root=/dev/sda2 ro").unwrap_err();
        assert_eq!(error.details["reason"], "unknown_running_slot");
        let error = Slots::find(&[s.get(Slot::A).clone()]).unwrap_err();
        assert_eq!(error.details["reason"], "no_ab_slots");
        let mut uneven = s.get(Slot::B).clone();
        uneven.size += 512;
        assert!(Slots::find(&[s.get(Slot::A).clone(), uneven]).is_err());
        assert_eq!(s.verity(Slot::A), None);
        // Half a verity pair is not a disk the updater understands.
        let mut half = partitions();
        half.push(part("root-a-verity", UUID_A_VERITY, 4 << 20));
        let error = Slots::find(&half).unwrap_err();
        assert_eq!(error.details["reason"], "no_ab_slots");
    }

    #[test]
    fn a_verity_root_names_its_slot_through_the_verity_data_argument() {
        let s = verity_slots();
        assert_eq!(s.verity(Slot::B).unwrap().uuid, UUID_B_VERITY);
        let cmdline = format!(
            "root=/dev/mapper/root roothash={ROOT_HASH} systemd.verity_root_data=PARTUUID={UUID_B} \
             systemd.verity_root_hash=PARTUUID={UUID_B_VERITY} ro console=ttyS0"
        );
        assert_eq!(s.running(&cmdline).unwrap(), Slot::B);
        assert!(verity_protected(&cmdline));
        assert!(!verity_protected(CMDLINE_A));
        let error = s.running("root=/dev/mapper/root ro").unwrap_err();
        assert_eq!(error.details["reason"], "unknown_running_slot");
    }

    #[test]
    fn on_a_verity_disk_the_new_entry_boots_the_slot_through_its_hash_partition() {
        let s = verity_slots();
        let entries = [entry("jaco-1-1.0.0.conf", UUID_A, "EFI/jaco/a.efi")];
        let plan = plan_install(&s, CMDLINE_A, &entries, "1.2.0", Some(ROOT_HASH)).unwrap();
        assert_eq!(plan.target, Slot::B);
        assert_eq!(plan.verity.as_ref().unwrap().label, "root-b-verity");
        let options = plan.entry_text.lines().last().unwrap();
        assert_eq!(
            options,
            format!(
                "options root=/dev/mapper/root roothash={ROOT_HASH} \
                 systemd.verity_root_data=PARTUUID={UUID_B} \
                 systemd.verity_root_hash=PARTUUID={UUID_B_VERITY} ro console=ttyS0 quiet"
            )
        );
        let back = BootEntry::parse("jaco-2-1.2.0+3.conf", &plan.entry_text).unwrap();
        assert_eq!(s.named_by(back.root.as_deref().unwrap()), Some(Slot::B));

        // From that verity boot, the next install replaces every root argument, none doubled.
        let running_b = options.strip_prefix("options ").unwrap();
        let entries = [
            entries[0].clone(),
            BootEntry::parse("jaco-2-1.2.0.conf", &plan.entry_text).unwrap(),
        ];
        let next = plan_install(&s, running_b, &entries, "1.3.0", Some(&"ab".repeat(32))).unwrap();
        assert_eq!(next.target, Slot::A);
        let options = next.entry_text.lines().last().unwrap();
        assert_eq!(options.matches("roothash=").count(), 1);
        assert_eq!(options.matches("root=").count(), 1);
        assert!(options.contains(&format!("systemd.verity_root_data=PARTUUID={UUID_A} ")));
        assert!(options.contains(&format!(
            "systemd.verity_root_hash=PARTUUID={UUID_A_VERITY} "
        )));
        assert!(!options.contains(ROOT_HASH));

        // A bundle without a hash tree would drop the protection: refused, nothing planned.
        let error = plan_install(&s, CMDLINE_A, &entries[..1], "1.2.0", None).unwrap_err();
        assert_eq!(error.code, Code::ValidationFailed);
        assert_eq!(error.details["reason"], "verity_required");
    }

    #[test]
    fn a_verity_bundle_on_a_disk_without_hash_partitions_installs_unprotected() {
        let entries = [entry("jaco-1-1.0.0.conf", UUID_A, "EFI/jaco/a.efi")];
        let plan = plan_install(&slots(), CMDLINE_A, &entries, "1.2.0", Some(ROOT_HASH)).unwrap();
        assert_eq!(plan.verity, None);
        assert!(
            plan.entry_text
                .contains(&format!("options root=PARTUUID={UUID_B} ro"))
        );
        assert!(!plan.entry_text.contains("roothash"));
    }

    #[test]
    fn entry_names_carry_generation_version_and_counter() {
        let e = entry(
            "jaco-4-1.2.0-rc.1+1-2.conf",
            UUID_B,
            "EFI/jaco/jaco-4-1.2.0-rc.1.efi",
        );
        assert_eq!(
            (e.generation, e.version.as_str(), e.counter),
            (4, "1.2.0-rc.1", Some((1, 2)))
        );
        assert_eq!(e.root.as_deref(), Some(&*format!("PARTUUID={UUID_B}")));
        assert_eq!(e.kernel.as_deref(), Some("EFI/jaco/jaco-4-1.2.0-rc.1.efi"));
        assert!(!e.is_bad());
        assert!(entry("jaco-2-1.0.0+0-3.conf", UUID_B, "k").is_bad());
        assert_eq!(
            entry("jaco-2-1.0.0+3.conf", UUID_B, "k").counter,
            Some((3, 0))
        );
        assert_eq!(entry("jaco-1-1.0.0.conf", UUID_A, "k").counter, None);
        assert!(BootEntry::parse("debian.conf", "").is_none());
        assert!(BootEntry::parse("jaco-x-1.0.0.conf", "").is_none());
    }

    #[test]
    fn an_install_targets_the_other_slot_and_replaces_only_its_entries() {
        let s = slots();
        let entries = [
            entry("jaco-1-1.0.0.conf", UUID_A, "EFI/jaco/jaco-1-1.0.0.efi"),
            entry("jaco-2-1.1.0+0-3.conf", UUID_B, "EFI/jaco/jaco-2-1.1.0.efi"),
        ];
        let plan = plan_install(&s, CMDLINE_A, &entries, "1.2.0", None).unwrap();
        assert_eq!((plan.running, plan.target), (Slot::A, Slot::B));
        assert_eq!(
            plan.remove,
            [
                "loader/entries/jaco-2-1.1.0+0-3.conf",
                "EFI/jaco/jaco-2-1.1.0.efi"
            ]
        );
        assert_eq!(plan.kernel, "EFI/jaco/jaco-3-1.2.0.efi");
        assert_eq!(plan.entry, "loader/entries/jaco-3-1.2.0+3.conf");
        assert_eq!(
            plan.entry_text,
            format!(
                "title jaco 1.2.0 (slot b)\nsort-key jaco\nversion 3\nefi /EFI/jaco/jaco-3-1.2.0.efi\n\
                 options root=PARTUUID={UUID_B} ro console=ttyS0 quiet\n"
            )
        );
        // The new entry parses back as slot B's, on trial.
        let back = BootEntry::parse("jaco-3-1.2.0+3.conf", &plan.entry_text).unwrap();
        assert_eq!(s.named_by(back.root.as_deref().unwrap()), Some(Slot::B));
    }

    #[test]
    fn the_fallback_slot_is_not_overwritten_while_the_running_boot_is_on_trial() {
        let s = slots();
        let cmdline_b = format!("root=PARTUUID={UUID_B} ro");
        let entries = [
            entry("jaco-1-1.0.0.conf", UUID_A, "EFI/jaco/a.efi"),
            entry("jaco-2-1.1.0+2-1.conf", UUID_B, "EFI/jaco/b.efi"),
        ];
        let error = plan_install(&s, &cmdline_b, &entries, "1.2.0", None).unwrap_err();
        assert_eq!(error.code, Code::UpgradeInProgress);
        assert_eq!(error.details["reason"], "boot_not_blessed");
        // Blessed (counter removed): slot A may be replaced now, and its kernel goes too.
        let entries = [
            entries[0].clone(),
            entry("jaco-2-1.1.0.conf", UUID_B, "EFI/jaco/b.efi"),
        ];
        let plan = plan_install(&s, &cmdline_b, &entries, "1.2.0", None).unwrap();
        assert_eq!(plan.target, Slot::A);
        assert_eq!(
            plan.remove,
            ["loader/entries/jaco-1-1.0.0.conf", "EFI/jaco/a.efi"]
        );
        // No entry for the running slot: nothing proves it blessed.
        let error = plan_install(&s, &cmdline_b, &entries[..1], "1.2.0", None).unwrap_err();
        assert_eq!(error.details["reason"], "no_running_entry");
    }
}
