//! A/B slot and boot-entry decisions (SPEC §9.3), as functions of values.
//!
//! The appliance disk has two root partitions labelled `root-a` and `root-b` of equal size. A
//! slot boots through a systemd-boot Type #1 entry `loader/entries/jaco-<generation>-<version>
//! [+<left>[-<done>]].conf` that names its kernel image (`efi`) and its root partition
//! (`options … root=PARTUUID=<uuid> …`); the `+left-done` boot counter is systemd's boot
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
}

impl Slots {
    /// Finds `root-a` and `root-b`; `internal` (`reason: no_ab_slots`) unless both exist once,
    /// with equal sizes.
    pub fn find(partitions: &[Partition]) -> Result<Slots, Error> {
        let one = |slot: Slot| {
            let mut found = partitions.iter().filter(|p| p.label == slot.label());
            match (found.next(), found.next()) {
                (Some(p), None) => Ok(p.clone()),
                _ => Err(Error::new(
                    Code::Internal,
                    format!(
                        "the disk has no single partition labelled {} (not an A/B appliance disk)",
                        slot.label()
                    ),
                )
                .with("reason", "no_ab_slots")),
            }
        };
        let (a, b) = (one(Slot::A)?, one(Slot::B)?);
        if a.size != b.size {
            return Err(Error::new(
                Code::Internal,
                format!(
                    "slot sizes differ: root-a {} bytes, root-b {} bytes",
                    a.size, b.size
                ),
            )
            .with("reason", "no_ab_slots"));
        }
        Ok(Slots { a, b })
    }

    /// The partition of `slot`.
    pub fn get(&self, slot: Slot) -> &Partition {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
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

    /// The running slot, from the kernel command line's `root=`.
    pub fn running(&self, cmdline: &str) -> Result<Slot, Error> {
        root_arg(cmdline)
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

/// The value of the last `root=` argument of a kernel command line.
pub fn root_arg(cmdline: &str) -> Option<&str> {
    cmdline
        .split_whitespace()
        .filter_map(|arg| arg.strip_prefix("root="))
        .next_back()
}

/// `cmdline` with its `root=` arguments replaced by one naming `partition`.
pub fn with_root(cmdline: &str, partition: &Partition) -> String {
    let mut args: Vec<String> = cmdline
        .split_whitespace()
        .filter(|arg| !arg.starts_with("root=") && !arg.starts_with("BOOT_IMAGE="))
        .map(str::to_owned)
        .collect();
    args.insert(0, format!("root=PARTUUID={}", partition.uuid));
    args.join(" ")
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
    /// The `root=PARTUUID=` or `PARTLABEL=` value of its options, if any.
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
                "options" => entry.root = root_arg(value).map(str::to_owned),
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
    /// ESP path of the new kernel image.
    pub kernel: String,
    /// ESP path of the new entry (with `+3`).
    pub entry: String,
    /// The new entry's content.
    pub entry_text: String,
}

/// Plans installing `version` from a system running with `cmdline` and boot `entries`.
///
/// Refuses with `upgrade_in_progress` (`reason: boot_not_blessed`) while the running slot's
/// entry still carries a boot counter: that boot is on trial, and the other slot is its
/// fallback, which must not be overwritten.
pub fn plan_install(
    slots: &Slots,
    cmdline: &str,
    entries: &[BootEntry],
    version: &str,
) -> Result<InstallPlan, Error> {
    let running = slots.running(cmdline)?;
    let target = running.other();
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
        options = with_root(cmdline, slots.get(target)),
    );
    Ok(InstallPlan {
        running,
        target,
        remove,
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

    pub(crate) fn slots() -> Slots {
        let part = |label: &str, uuid: &str, offset| Partition {
            label: label.into(),
            uuid: uuid.into(),
            offset,
            size: 1 << 20,
        };
        Slots::find(&[
            part("esp", "11111111-1111-1111-1111-111111111111", 1 << 20),
            part("root-a", UUID_A, 2 << 20),
            part("root-b", UUID_B, 3 << 20),
        ])
        .unwrap()
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
        let plan = plan_install(&s, CMDLINE_A, &entries, "1.2.0").unwrap();
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
        let error = plan_install(&s, &cmdline_b, &entries, "1.2.0").unwrap_err();
        assert_eq!(error.code, Code::UpgradeInProgress);
        assert_eq!(error.details["reason"], "boot_not_blessed");
        // Blessed (counter removed): slot A may be replaced now, and its kernel goes too.
        let entries = [
            entries[0].clone(),
            entry("jaco-2-1.1.0.conf", UUID_B, "EFI/jaco/b.efi"),
        ];
        let plan = plan_install(&s, &cmdline_b, &entries, "1.2.0").unwrap();
        assert_eq!(plan.target, Slot::A);
        assert_eq!(
            plan.remove,
            ["loader/entries/jaco-1-1.0.0.conf", "EFI/jaco/a.efi"]
        );
        // No entry for the running slot: nothing proves it blessed.
        let error = plan_install(&s, &cmdline_b, &entries[..1], "1.2.0").unwrap_err();
        assert_eq!(error.details["reason"], "no_running_entry");
    }
}
