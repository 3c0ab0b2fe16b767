//! The raft state machine adapter: applies committed entries to a [`StateMachineCore`], builds and
//! installs snapshots, and keeps the latest snapshot durable in `<data_dir>/raft/snapshot.bin`.
//!
//! The core lives in memory; durability comes from the snapshot file plus the raft log. On start
//! the last snapshot is restored into the core and openraft re-applies the committed entries
//! after it. A snapshot file is written atomically (temporary file, fsync, rename, fsync of the
//! directory) and carries its metadata and a SHA-256 checksum, so a torn or corrupted file is
//! detected and refused rather than restored.
//!
//! This module must not look inside commands (normal entries go to the core as opaque bytes;
//! blank and membership entries only move `last_applied` and the membership) and must not hide
//! an error: every failure becomes an openraft [`StorageError`] and is reported on the node's
//! [`FatalSignal`].

use std::fs;
use std::io::{Cursor, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder,
    StorageIOError,
};
use sha2::{Digest, Sha256};

use super::types::{
    Entry, LogId, NodeId, Response, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};
use super::{FatalSignal, SharedCore, StateMachineCore};

/// File name of the snapshot inside `<data_dir>/raft/`.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_TEMP_FILE: &str = "snapshot.bin.tmp";

/// First bytes of a snapshot file.
const MAGIC: &[u8; 8] = b"JACOSNAP";
/// Version of the snapshot file layout.
const FORMAT_VERSION: u32 = 1;
const CHECKSUM_LEN: usize = 32;

/// Why a snapshot file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a complete, intact snapshot of a known format.
    #[error("corrupt snapshot file: {0}")]
    Corrupt(String),
    /// The metadata could not be encoded.
    #[error("cannot encode snapshot metadata: {0}")]
    Encode(serde_json::Error),
}

/// Encodes a snapshot file: magic, format version (u32 LE), metadata length (u32 LE), metadata
/// (JSON), data length (u64 LE), data, SHA-256 of everything before it.
pub fn encode_snapshot_file(
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<Vec<u8>, SnapshotFileError> {
    let meta = serde_json::to_vec(meta).map_err(SnapshotFileError::Encode)?;
    let meta_len = u32::try_from(meta.len())
        .map_err(|_| SnapshotFileError::Corrupt("metadata larger than 4 GiB".to_owned()))?;
    let mut out = Vec::with_capacity(8 + 4 + 4 + meta.len() + 8 + data.len() + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    Ok(out)
}

/// Decodes and verifies a snapshot file written by [`encode_snapshot_file`].
pub fn decode_snapshot_file(bytes: &[u8]) -> Result<(SnapshotMeta, Vec<u8>), SnapshotFileError> {
    let corrupt = |why: &str| SnapshotFileError::Corrupt(why.to_owned());
    let body_len = bytes
        .len()
        .checked_sub(CHECKSUM_LEN)
        .ok_or_else(|| corrupt("shorter than its checksum"))?;
    let (body, checksum) = bytes.split_at(body_len);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(corrupt("checksum mismatch"));
    }
    let mut rest = body;
    let magic = take(&mut rest, MAGIC.len()).ok_or_else(|| corrupt("truncated magic"))?;
    if magic != MAGIC {
        return Err(corrupt("not a jaco snapshot"));
    }
    let version = take_u32(&mut rest).ok_or_else(|| corrupt("truncated version"))?;
    if version != FORMAT_VERSION {
        return Err(SnapshotFileError::Corrupt(format!(
            "unknown format version {version}"
        )));
    }
    let meta_len = take_u32(&mut rest).ok_or_else(|| corrupt("truncated metadata length"))?;
    let meta = take(&mut rest, meta_len as usize).ok_or_else(|| corrupt("truncated metadata"))?;
    let meta: SnapshotMeta = serde_json::from_slice(meta)
        .map_err(|error| SnapshotFileError::Corrupt(format!("metadata: {error}")))?;
    let data_len = take_u64(&mut rest).ok_or_else(|| corrupt("truncated data length"))?;
    if rest.len() as u64 != data_len {
        return Err(corrupt("data length mismatch"));
    }
    Ok((meta, rest.to_vec()))
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    take(rest, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn take_u64(rest: &mut &[u8]) -> Option<u64> {
    let b = take(rest, 8)?;
    let mut array = [0u8; 8];
    array.copy_from_slice(b);
    Some(u64::from_le_bytes(array))
}

/// Replaces `dir/snapshot.bin` with `bytes`: temporary file, fsync, rename, fsync of `dir`.
fn write_atomically(dir: &Path, bytes: &[u8]) -> Result<(), SnapshotFileError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| SnapshotFileError::Io {
            action,
            path,
            source,
        }
    };
    let temp = dir.join(SNAPSHOT_TEMP_FILE);
    let target = dir.join(SNAPSHOT_FILE);
    let mut file = fs::File::create(&temp).map_err(io("create", &temp))?;
    file.write_all(bytes).map_err(io("write", &temp))?;
    file.sync_all().map_err(io("fsync", &temp))?;
    drop(file);
    fs::rename(&temp, &target).map_err(io("rename into", &target))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))?;
    Ok(())
}

/// Writes `dir/snapshot.bin` for `meta` and `data` atomically (for `jaco restore`, which seeds a
/// new data directory with a snapshot before raft ever runs there).
pub fn write_snapshot_file(
    dir: &Path,
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<(), SnapshotFileError> {
    write_atomically(dir, &encode_snapshot_file(meta, data)?)
}

/// Reads `dir/snapshot.bin`, `None` when there is none yet.
fn read_file(dir: &Path) -> Result<Option<(SnapshotMeta, Vec<u8>)>, SnapshotFileError> {
    let path = dir.join(SNAPSHOT_FILE);
    match fs::read(&path) {
        Ok(bytes) => decode_snapshot_file(&bytes).map(Some),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SnapshotFileError::Io {
            action: "read",
            path,
            source,
        }),
    }
}

/// The snapshot file of one node and the metadata of what it holds.
///
/// The mutex serializes writers (a snapshot being built and one being installed) and makes
/// sure an older snapshot never replaces a newer one.
struct SnapshotFile {
    dir: PathBuf,
    current: tokio::sync::Mutex<Option<SnapshotMeta>>,
}

impl SnapshotFile {
    /// Persists a snapshot unless (`only_if_newer`) the file already holds a later one. Returns
    /// whether it was written.
    async fn save(
        &self,
        meta: &SnapshotMeta,
        data: Vec<u8>,
        only_if_newer: bool,
    ) -> Result<bool, SnapshotFileError> {
        let mut current = self.current.lock().await;
        if only_if_newer
            && current
                .as_ref()
                .is_some_and(|held| held.last_log_id > meta.last_log_id)
        {
            return Ok(false);
        }
        let bytes = encode_snapshot_file(meta, &data)?;
        let dir = self.dir.clone();
        blocking(move || write_atomically(&dir, &bytes)).await?;
        *current = Some(meta.clone());
        Ok(true)
    }

    /// The current snapshot, read back from disk (only its metadata stays in memory).
    async fn load(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, SnapshotFileError> {
        let current = self.current.lock().await;
        let Some(expected) = current.clone() else {
            return Ok(None);
        };
        let dir = self.dir.clone();
        let (meta, data) = blocking(move || read_file(&dir))
            .await?
            .ok_or_else(|| SnapshotFileError::Corrupt("snapshot file disappeared".to_owned()))?;
        if meta != expected {
            return Err(SnapshotFileError::Corrupt(
                "snapshot file does not hold the current snapshot".to_owned(),
            ));
        }
        Ok(Some((meta, data)))
    }
}

async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, SnapshotFileError> + Send + 'static,
) -> Result<T, SnapshotFileError> {
    match tokio::task::spawn_blocking(op).await {
        Ok(result) => result,
        Err(join) => Err(SnapshotFileError::Corrupt(format!(
            "snapshot task failed: {join}"
        ))),
    }
}

/// The openraft state machine over a shared [`StateMachineCore`].
pub struct StateStore<S: StateMachineCore> {
    core: SharedCore<S>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    snapshots: Arc<SnapshotFile>,
    fatal: FatalSignal,
}

impl<S: StateMachineCore> StateStore<S> {
    /// Opens the state machine whose snapshot lives in `dir` (`<data_dir>/raft`): restores the
    /// last snapshot into `core`, or checks that `core` is empty when there is none.
    pub async fn open(
        dir: &Path,
        core: SharedCore<S>,
        fatal: FatalSignal,
    ) -> Result<Self, StorageError> {
        let owned = dir.to_owned();
        let stored = blocking(move || read_file(&owned))
            .await
            .map_err(|error| snapshot_error(None, ErrorVerb::Read, &error))?;
        let mut store = Self {
            core,
            last_applied: None,
            last_membership: StoredMembership::default(),
            snapshots: Arc::new(SnapshotFile {
                dir: dir.to_owned(),
                current: tokio::sync::Mutex::new(None),
            }),
            fatal,
        };
        match stored {
            Some((meta, data)) => {
                store.restore_core(&meta, &data)?;
                *store.snapshots.current.lock().await = Some(meta);
            }
            None => {
                let applied = store.read_core(|core| core.last_applied())?;
                if applied != 0 {
                    return Err(store.fail(StorageIOError::read_state_machine(AnyError::error(
                        format!(
                            "the state machine core has applied index {applied} but {} holds no \
                             snapshot; start from an empty core",
                            dir.join(SNAPSHOT_FILE).display()
                        ),
                    ))));
                }
            }
        }
        Ok(store)
    }

    /// Reports `error` as fatal and returns it as a [`StorageError`].
    fn fail(&self, error: StorageIOError<NodeId>) -> StorageError {
        let error = StorageError::from(error);
        self.fatal.report(&error);
        error
    }

    fn read_core<T>(&self, read: impl FnOnce(&S) -> T) -> Result<T, StorageError> {
        match self.core.read() {
            Ok(core) => Ok(read(&core)),
            Err(_) => Err(self.fail(poisoned())),
        }
    }

    /// Replaces the core's state with `data` and adopts `meta` as applied state.
    fn restore_core(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let restored = match self.core.write() {
            Ok(mut core) => core.restore(data),
            Err(_) => return Err(self.fail(poisoned())),
        };
        if let Err(reason) = restored {
            return Err(self.fail(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::error(format!("the state machine refused the snapshot: {reason}")),
            )));
        }
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        Ok(())
    }
}

fn poisoned() -> StorageIOError<NodeId> {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        ErrorVerb::Write,
        AnyError::error("the state machine lock is poisoned (a command panicked while applying)"),
    )
}

fn snapshot_error(
    meta: Option<&SnapshotMeta>,
    verb: ErrorVerb,
    error: &SnapshotFileError,
) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(meta.map(SnapshotMeta::signature)),
        verb,
        AnyError::new(error),
    )
    .into()
}

/// A consistent copy of the state taken when openraft asked for a snapshot; it is encoded and
/// written while the state machine goes on applying entries.
pub struct SnapshotBuilder {
    meta: SnapshotMeta,
    data: Result<Vec<u8>, StorageError>,
    snapshots: Arc<SnapshotFile>,
    fatal: FatalSignal,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let data = std::mem::replace(&mut self.data, Ok(Vec::new()))?;
        let meta = self.meta.clone();
        match self.snapshots.save(&meta, data.clone(), true).await {
            Ok(written) => {
                if !written {
                    tracing::info!(snapshot = %meta.snapshot_id, "a newer snapshot is already stored");
                }
                Ok(Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data)),
                })
            }
            Err(error) => {
                let error = snapshot_error(Some(&meta), ErrorVerb::Write, &error);
                self.fatal.report(&error);
                Err(error)
            }
        }
    }
}

impl<S: StateMachineCore> RaftStateMachine<TypeConfig> for StateStore<S> {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut core = match self.core.write() {
            Ok(core) => core,
            Err(_) => {
                let error = StorageError::from(poisoned());
                self.fatal.report(&error);
                return Err(error);
            }
        };
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(Response::default()),
                EntryPayload::Normal(request) => {
                    responses.push(Response(core.apply(entry.log_id.index, &request.0)));
                }
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    responses.push(Response::default());
                }
            }
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let data = self.read_core(|core| core.snapshot());
        let snapshot_id = match self.last_applied {
            Some(log_id) => format!(
                "{}-{}-{}",
                log_id.leader_id.term,
                log_id.index,
                unix_micros()
            ),
            None => format!("empty-{}", unix_micros()),
        };
        SnapshotBuilder {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.last_membership.clone(),
                snapshot_id,
            },
            data,
            snapshots: Arc::clone(&self.snapshots),
            fatal: self.fatal.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        self.restore_core(meta, &data)?;
        if let Err(error) = self.snapshots.save(meta, data, false).await {
            let error = snapshot_error(Some(meta), ErrorVerb::Write, &error);
            self.fatal.report(&error);
            return Err(error);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        match self.snapshots.load().await {
            Ok(stored) => Ok(stored.map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            })),
            Err(error) => {
                let error = snapshot_error(None, ErrorVerb::Read, &error);
                self.fatal.report(&error);
                Err(error)
            }
        }
    }
}

/// Microseconds since the Unix epoch: makes snapshot ids unique across rebuilds and restarts.
fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::NodeAddr;
    use openraft::{CommittedLeaderId, Membership};
    use std::collections::{BTreeMap, BTreeSet};

    fn meta() -> SnapshotMeta {
        let log_id = LogId::new(CommittedLeaderId::new(3, 7), 42);
        let nodes = BTreeMap::from([(
            7,
            NodeAddr {
                name: "node-a".into(),
                addr: "127.0.0.1:7000".into(),
            },
        )]);
        SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::new(
                Some(log_id),
                Membership::new(vec![BTreeSet::from([7])], nodes),
            ),
            snapshot_id: "3-42-1".into(),
        }
    }

    #[test]
    fn a_snapshot_file_round_trips() {
        let bytes = encode_snapshot_file(&meta(), b"state bytes").expect("encodes");
        let (back, data) = decode_snapshot_file(&bytes).expect("decodes");
        assert_eq!(back, meta());
        assert_eq!(data, b"state bytes");
    }

    #[test]
    fn a_damaged_snapshot_file_is_refused() {
        let bytes = encode_snapshot_file(&meta(), b"state bytes").expect("encodes");
        // Torn write: any truncation.
        for len in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(
                    decode_snapshot_file(&bytes[..len]),
                    Err(SnapshotFileError::Corrupt(_))
                ),
                "truncated to {len}"
            );
        }
        // Bit rot anywhere.
        for at in [0, 9, 20, bytes.len() - 40, bytes.len() - 1] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x01;
            assert!(
                decode_snapshot_file(&flipped).is_err(),
                "flipped bit at {at}"
            );
        }
    }

    #[test]
    fn the_snapshot_is_replaced_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_file(dir.path()).expect("reads").is_none());
        write_atomically(
            dir.path(),
            &encode_snapshot_file(&meta(), b"one").expect("encodes"),
        )
        .expect("writes");
        write_atomically(
            dir.path(),
            &encode_snapshot_file(&meta(), b"two").expect("encodes"),
        )
        .expect("writes");
        let (_, data) = read_file(dir.path()).expect("reads").expect("present");
        assert_eq!(data, b"two");
        assert!(!dir.path().join(SNAPSHOT_TEMP_FILE).exists());
    }
}
