//! Reads a disk's GPT and writes a slot image into one partition of it — of a block device on
//! the appliance (`/dev/vda`), or of a disk image file in tests; the same code either way.
//!
//! Role: the only module that opens the disk. It writes strictly inside the partition it is
//! given (an image larger than the slot is refused before the first byte) and syncs before it
//! returns. It must not decide which partition to write ([`super::slots`] does).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::io_failed;
use super::slots::Partition;
use crate::error::{Code, Error};

/// The partitions of the GPT on `disk`.
pub fn read_partitions(disk: &Path) -> Result<Vec<Partition>, Error> {
    let table = gpt::GptConfig::new()
        .writable(false)
        .open(disk)
        .map_err(|e| {
            Error::new(
                Code::Internal,
                format!("cannot read the partition table of {}: {e}", disk.display()),
            )
            .with("reason", "no_partition_table")
            .with("path", disk.display())
        })?;
    let block = u64::from(*table.logical_block_size());
    Ok(table
        .partitions()
        .values()
        .filter(|p| p.is_used())
        .map(|p| Partition {
            label: p.name.clone(),
            uuid: p.part_guid.hyphenated().to_string(),
            offset: p.first_lba * block,
            size: (p.last_lba + 1 - p.first_lba) * block,
        })
        .collect())
}

/// Writes `image` into `partition` of `disk`; returns the bytes written. `validation_failed`
/// (`reason: image_too_large`) when the image does not fit, detected before the partition is
/// touched only if `image_size` is known, and otherwise as soon as the end is passed (the slot
/// is then left partially written, which the caller never makes bootable).
pub fn write_partition(
    disk: &Path,
    partition: &Partition,
    image: &mut dyn Read,
    image_size: Option<u64>,
) -> Result<u64, Error> {
    if let Some(size) = image_size
        && size > partition.size
    {
        return Err(too_large(partition, size));
    }
    let mut device = OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(|e| io_failed("open for writing", disk, &e))?;
    device
        .seek(SeekFrom::Start(partition.offset))
        .map_err(|e| io_failed("seek in", disk, &e))?;
    let written = copy_within(image, &mut device, partition)?;
    device.sync_all().map_err(|e| io_failed("sync", disk, &e))?;
    Ok(written)
}

fn copy_within(
    image: &mut dyn Read,
    device: &mut File,
    partition: &Partition,
) -> Result<u64, Error> {
    let mut buffer = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let n = match image.read(&mut buffer) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::new(
                    Code::UpgradeVerificationFailed,
                    format!("the slot image could not be read: {e}"),
                )
                .with("reason", "image_unreadable"));
            }
        };
        if written + n as u64 > partition.size {
            return Err(too_large(partition, written + n as u64));
        }
        device.write_all(&buffer[..n]).map_err(|e| {
            Error::new(
                Code::Internal,
                format!("writing slot {}: {e}", partition.label),
            )
            .with("reason", "io_failed")
        })?;
        written += n as u64;
    }
}

fn too_large(partition: &Partition, size: u64) -> Error {
    Error::new(
        Code::ValidationFailed,
        format!(
            "the slot image ({size} bytes or more) does not fit partition {} ({} bytes)",
            partition.label, partition.size
        ),
    )
    .with("reason", "image_too_large")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A sparse disk image file with a GPT: esp (4 MiB), root-a and root-b (8 MiB each), var.
    pub(crate) fn disk_image(dir: &Path) -> PathBuf {
        disk_image_with(dir, false)
    }

    /// [`disk_image`] with the dm-verity hash partitions root-a-verity and root-b-verity
    /// (1 MiB each) before var.
    pub(crate) fn verity_disk_image(dir: &Path) -> PathBuf {
        disk_image_with(dir, true)
    }

    fn disk_image_with(dir: &Path, hash_partitions: bool) -> PathBuf {
        let path = dir.join("disk.raw");
        let file = File::create(&path).unwrap();
        file.set_len(32 << 20).unwrap();
        drop(file);
        let mbr =
            gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from((32u64 << 20) / 512 - 1).unwrap());
        let mut device = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        mbr.overwrite_lba0(&mut device).unwrap();
        let mut disk = gpt::GptConfig::new()
            .writable(true)
            .create_from_device(device, None)
            .unwrap();
        disk.update_partitions(Default::default()).unwrap();
        let root = gpt::partition_types::LINUX_ROOT_X64;
        disk.add_partition("esp", 4 << 20, gpt::partition_types::EFI, 0, None)
            .unwrap();
        disk.add_partition("root-a", 8 << 20, root.clone(), 0, None)
            .unwrap();
        disk.add_partition("root-b", 8 << 20, root, 0, None)
            .unwrap();
        if hash_partitions {
            for label in ["root-a-verity", "root-b-verity"] {
                let hash = gpt::partition_types::LINUX_FS;
                disk.add_partition(label, 1 << 20, hash, 0, None).unwrap();
            }
        }
        disk.add_partition("var", 4 << 20, gpt::partition_types::LINUX_FS, 0, None)
            .unwrap();
        disk.write().unwrap();
        path
    }

    #[test]
    fn a_slot_is_written_inside_its_partition_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = disk_image(dir.path());
        let parts = read_partitions(&path).unwrap();
        let labels: Vec<&str> = parts.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["esp", "root-a", "root-b", "var"]);
        let b = parts.iter().find(|p| p.label == "root-b").unwrap();
        assert_eq!(b.size, 8 << 20);
        let before = std::fs::read(&path).unwrap();
        let image = vec![0xA5u8; 3 << 20];
        let written = write_partition(&path, b, &mut &image[..], Some(image.len() as u64)).unwrap();
        assert_eq!(written, 3 << 20);
        let after = std::fs::read(&path).unwrap();
        let start = usize::try_from(b.offset).unwrap();
        assert_eq!(&after[start..start + image.len()], &image[..]);
        // Every byte outside the written range is unchanged (the GPT and the other slots too).
        assert_eq!(&after[..start], &before[..start]);
        assert_eq!(
            &after[start + image.len()..],
            &before[start + image.len()..]
        );
    }

    #[test]
    fn an_image_larger_than_the_slot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = disk_image(dir.path());
        let parts = read_partitions(&path).unwrap();
        let a = parts.iter().find(|p| p.label == "root-a").unwrap();
        let before = std::fs::read(&path).unwrap();
        let big = vec![1u8; (8 << 20) + 1];
        let error = write_partition(&path, a, &mut &big[..], Some(big.len() as u64)).unwrap_err();
        assert_eq!(error.details["reason"], "image_too_large");
        assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");
        // Unknown size (a decompressing stream): stopped at the partition's end, never past it.
        let error = write_partition(&path, a, &mut &big[..], None).unwrap_err();
        assert_eq!(error.details["reason"], "image_too_large");
        let after = std::fs::read(&path).unwrap();
        let end = usize::try_from(a.offset + a.size).unwrap();
        assert_eq!(&after[end..], &before[end..]);
    }

    #[test]
    fn a_file_without_a_partition_table_is_not_a_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blank");
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        assert_eq!(
            read_partitions(&path).unwrap_err().details["reason"],
            "no_partition_table"
        );
    }
}
