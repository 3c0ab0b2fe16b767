//! The backup file: one consistent state snapshot with a header and a checksum (SPEC §4).
//!
//! Layout: the magic line `JACO-BACKUP 1\n`, one line of JSON [`Header`] (cluster id, raft
//! index and term, jaco version, time, payload size), the snapshot payload, and a trailing
//! SHA-256 over everything before it. [`encode`]/[`decode`] are pure; [`write_atomically`] puts
//! a file in place with mode 0600 so that a crash never leaves a half-written backup under the
//! final name. This module must not know how a snapshot is made or restored.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Code, Error};

const MAGIC: &[u8] = b"JACO-BACKUP 1\n";
const CHECKSUM_LEN: usize = 32;

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Cluster the snapshot belongs to.
    pub cluster_id: String,
    /// Raft index the snapshot was taken at.
    pub index: u64,
    /// Raft term of that index.
    pub term: u64,
    /// jaco version that wrote it.
    pub version: String,
    /// When it was taken (Unix milliseconds, UTC).
    pub taken_at_unix_ms: i64,
    /// Payload size in bytes.
    pub size: u64,
}

/// The bytes of a backup file for `header` and `payload` (`header.size` is set here).
pub fn encode(mut header: Header, payload: &[u8]) -> Vec<u8> {
    header.size = payload.len() as u64;
    let mut out = Vec::with_capacity(payload.len() + 256);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&serde_json::to_vec(&header).expect("a header serialises"));
    out.push(b'\n');
    out.extend_from_slice(payload);
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    out
}

/// Parses and verifies a backup file.
pub fn decode(bytes: &[u8]) -> Result<(Header, &[u8]), Error> {
    let corrupt = |why: &str| {
        Error::new(
            Code::ValidationFailed,
            format!("not a valid jaco backup: {why}"),
        )
        .with("reason", "corrupt_backup")
    };
    let body = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| corrupt("missing the JACO-BACKUP 1 header line"))?;
    if bytes.len() < MAGIC.len() + CHECKSUM_LEN {
        return Err(corrupt("file is truncated"));
    }
    let (signed, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(signed).as_slice() != checksum {
        return Err(corrupt(
            "checksum mismatch (the file is damaged or truncated)",
        ));
    }
    let body = &body[..body.len() - CHECKSUM_LEN];
    let newline = body
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| corrupt("header line is not terminated"))?;
    let header: Header = serde_json::from_slice(&body[..newline])
        .map_err(|e| corrupt(&format!("unreadable header: {e}")))?;
    let payload = &body[newline + 1..];
    if payload.len() as u64 != header.size {
        return Err(corrupt("payload size does not match the header"));
    }
    Ok((header, payload))
}

/// Writes `bytes` to `path` through a temporary file in the same directory: mode 0600, fsync,
/// rename, then fsync of the directory. An existing file at `path` is replaced only when the
/// new one is complete.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn header() -> Header {
        Header {
            cluster_id: "c-1".into(),
            index: 42,
            term: 3,
            version: "0.1.0".into(),
            taken_at_unix_ms: 1_700_000_000_000,
            size: 0,
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(header(), b"state bytes");
        let (read, payload) = decode(&bytes).unwrap();
        assert_eq!(payload, b"state bytes");
        assert_eq!(
            read,
            Header {
                size: 11,
                ..header()
            }
        );
    }

    #[test]
    fn any_damage_is_refused() {
        let bytes = encode(header(), b"state bytes");
        for cut in [0, 5, MAGIC.len(), bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        for flip in [0, MAGIC.len() + 3, bytes.len() - 40, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[flip] ^= 0x01;
            let error = decode(&damaged).unwrap_err();
            assert_eq!(error.code, Code::ValidationFailed);
            assert_eq!(error.details["reason"], "corrupt_backup");
        }
        assert!(decode(b"something else entirely, long enough to hold a checksum....").is_err());
    }

    #[test]
    fn written_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.backup");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/backup");
        assert!(write_atomically(&missing, b"x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
