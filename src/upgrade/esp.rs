//! The EFI system partition as the updater sees it: a mounted directory (`/efi` on the
//! appliance, a temporary directory in tests) holding `loader/entries/*.conf` and kernel images.
//!
//! Role: list jaco's boot entries, write files atomically (temporary name, sync, rename — vfat
//! renames within a directory are atomic enough for systemd-boot, which never sees a partial
//! `.conf`), delete files. It must not decide what to write ([`super::slots`] does).

use std::fs;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};

use super::io_failed;
use super::slots::{BootEntry, ENTRIES_DIR};
use crate::error::Error;

/// Where the appliance mounts its ESP.
pub const DEFAULT_ESP: &str = "/efi";

/// A mounted ESP.
#[derive(Debug, Clone)]
pub struct Esp {
    root: PathBuf,
}

impl Esp {
    /// The ESP mounted at `root`.
    pub fn at(root: &Path) -> Esp {
        Esp {
            root: root.to_owned(),
        }
    }

    /// Path of an ESP-relative file.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Every jaco boot entry, sorted by file name.
    pub fn entries(&self) -> Result<Vec<BootEntry>, Error> {
        let dir = self.path(ENTRIES_DIR);
        let listing = match fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_failed("list", &dir, &e)),
        };
        let mut entries = Vec::new();
        for item in listing {
            let item = item.map_err(|e| io_failed("list", &dir, &e))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if !name.starts_with("jaco-") || !name.ends_with(".conf") {
                continue;
            }
            let text =
                fs::read_to_string(item.path()).map_err(|e| io_failed("read", &item.path(), &e))?;
            entries.extend(BootEntry::parse(&name, &text));
        }
        entries.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        Ok(entries)
    }

    /// Writes `content` to `relative` atomically; returns the bytes written.
    pub fn write(&self, relative: &str, content: &mut dyn Read) -> Result<u64, Error> {
        let path = self.path(relative);
        let dir = path.parent().expect("ESP paths have a directory");
        fs::create_dir_all(dir).map_err(|e| io_failed("create", dir, &e))?;
        let partial = path.with_extension("partial");
        let result = (|| {
            let mut file = fs::File::create(&partial)?;
            let written = std::io::copy(content, &mut file)?;
            file.flush()?;
            file.sync_all()?;
            fs::rename(&partial, &path)?;
            // vfat has no directory fsync; a failure here is not an error.
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
            Ok::<u64, std::io::Error>(written)
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&partial);
            io_failed("write", &path, &e)
        })
    }

    /// Deletes `relative` (absent is fine).
    pub fn remove(&self, relative: &str) -> Result<(), Error> {
        let path = self.path(relative);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_failed("delete", &path, &e))
            }
            _ => Ok(()),
        }
    }
}
