//! This node's WireGuard static key: generated once, kept in `<dir>/private.key` (base64,
//! the format `wg` reads, mode 0600) and loaded on every start.
//!
//! The public key is published in the replicated state and every peer pins it, so the key must
//! never change behind their back: a file that exists but cannot be read as a key is an error,
//! never a reason to generate a new one. Creation is atomic (a temp file hard-linked into
//! place), so a crash leaves either no key or a whole one, and two racing starts agree on one.
//! This module must not print or log the secret.

use std::fmt;
use std::fs;
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use boringtun::x25519::{PublicKey, StaticSecret};

use crate::error::{Code, Error};

/// The file name of the key inside its directory.
const FILE: &str = "private.key";

/// This node's x25519 static secret for the WireGuard mesh.
#[derive(Clone)]
pub struct MeshKey {
    secret: StaticSecret,
}

impl fmt::Debug for MeshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshKey")
            .field("public", &self.public_base64())
            .finish_non_exhaustive()
    }
}

impl MeshKey {
    /// The public key in WireGuard's base64 spelling, as published in the state.
    pub fn public_base64(&self) -> String {
        STANDARD.encode(self.public().as_bytes())
    }

    pub(super) fn public(&self) -> PublicKey {
        PublicKey::from(&self.secret)
    }

    pub(super) fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    /// The secret in base64, for handing to `wg set … private-key` (never to a log).
    pub(super) fn secret_base64(&self) -> String {
        STANDARD.encode(self.secret.to_bytes())
    }
}

/// Decodes a WireGuard key (32 bytes in standard base64), as `wg` writes them.
pub(super) fn decode(text: &str) -> Option<[u8; 32]> {
    STANDARD.decode(text.trim()).ok()?.try_into().ok()
}

/// Loads the key from `<dir>/private.key`, creating the directory and the key on first use.
///
/// Errors (`internal`, with `path` in the details): the directory or file cannot be read or
/// written, or the file holds anything but one base64 key of 32 bytes.
pub fn load_or_create(dir: &Path) -> Result<MeshKey, Error> {
    let path = dir.join(FILE);
    match fs::read_to_string(&path) {
        Ok(text) => return parse(&path, &text),
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => return Err(io_error("cannot read the mesh key", &path, &error)),
    }
    fs::create_dir_all(dir).map_err(|e| io_error("cannot create the key directory", dir, &e))?;
    let key = MeshKey {
        secret: StaticSecret::from(rand::random::<[u8; 32]>()),
    };
    let temp = dir.join(format!(".{FILE}.{:08x}.tmp", rand::random::<u32>()));
    let written = write_new(&temp, &key.secret_base64());
    // hard_link, unlike rename, refuses to replace a key another start put there meanwhile.
    let linked = written.and_then(|()| fs::hard_link(&temp, &path));
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("cannot sync the key directory", dir, &e))?;
            Ok(key)
        }
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            let text = fs::read_to_string(&path)
                .map_err(|e| io_error("cannot read the mesh key", &path, &e))?;
            parse(&path, &text)
        }
        Err(error) => Err(io_error("cannot write the mesh key", &path, &error)),
    }
}

fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // The mode given to open() is filtered by the umask; 0600 must hold whatever it is.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(format!("{text}\n").as_bytes())?;
    file.sync_all()
}

fn parse(path: &Path, text: &str) -> Result<MeshKey, Error> {
    match decode(text) {
        Some(bytes) => Ok(MeshKey {
            secret: StaticSecret::from(bytes),
        }),
        None => Err(Error::new(
            Code::Internal,
            "the mesh key file is not a base64 WireGuard key; it is left as it is because \
             peers know its public key (restore it, or delete it to generate a new key and \
             republish)",
        )
        .with("path", path.display())),
    }
}

fn io_error(what: &str, path: &Path, error: &std::io::Error) -> Error {
    Error::new(Code::Internal, format!("{what}: {error}")).with("path", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_with_mode_0600_and_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("wg");
        let first = load_or_create(&keys).unwrap();
        let mode = fs::metadata(keys.join(FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_create(&keys).unwrap();
        assert_eq!(first.public_base64(), second.public_base64());
        assert_eq!(decode(&first.public_base64()).map(|b| b.len()), Some(32));
        let leftovers: Vec<_> = fs::read_dir(&keys).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only private.key remains");
    }

    #[test]
    fn the_file_is_what_wg_reads_and_matches_the_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create(dir.path()).unwrap();
        let text = fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text, format!("{}\n", key.secret_base64()));
        let public = PublicKey::from(&StaticSecret::from(decode(&text).unwrap()));
        assert_eq!(STANDARD.encode(public.as_bytes()), key.public_base64());
    }

    #[test]
    fn a_corrupt_key_is_an_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        for corrupt in ["not base64 at all!", "c2hvcnQ=", ""] {
            fs::write(&path, corrupt).unwrap();
            let error = load_or_create(dir.path()).unwrap_err();
            assert_eq!(error.code, Code::Internal);
            assert_eq!(error.details["path"], path.display().to_string());
            assert_eq!(fs::read_to_string(&path).unwrap(), corrupt);
        }
    }

    #[test]
    fn debug_shows_the_public_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create(dir.path()).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(&key.public_base64()));
        assert!(!shown.contains(&key.secret_base64()));
    }
}
