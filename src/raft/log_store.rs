//! The durable raft log: entries, vote, committed log id and last purged log id in one redb file
//! (`<data_dir>/raft/log.redb`).
//!
//! Every write is one redb transaction committed with `Durability::Immediate` (fsync) before it
//! returns, and an append tells openraft it is durable ([`LogFlushed`]) only after that commit.
//! openraft serializes all writes (vote and log) through one `&mut` handle; readers are clones
//! that use redb's MVCC read transactions and never block writers. Database calls run on tokio's
//! blocking pool so an fsync never stalls a runtime worker.
//!
//! This module must not interpret entries (they are JSON-encoded [`Entry`] values) and must not
//! swallow an error: every failure becomes an openraft [`StorageError`] (which stops the raft
//! core) and is reported on the node's [`FatalSignal`].

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::FatalSignal;
use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

/// File name of the log database inside `<data_dir>/raft/`.
pub const LOG_FILE: &str = "log.redb";

/// Log entries by index: JSON-encoded [`Entry`].
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
/// Single values by name: JSON-encoded vote, committed and last purged log ids.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// What went wrong inside one database call, before it is wrapped into a [`StorageError`].
#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("corrupt {what} in the raft log: {source}")]
    Decode {
        what: String,
        source: serde_json::Error,
    },
    #[error("corrupt raft log: key {key} holds the entry of index {index}")]
    Misplaced { key: u64, index: u64 },
    #[error("raft log task failed: {0}")]
    Task(String),
}

macro_rules! redb_errors_into_db_error {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for DbError {
            fn from(error: $error) -> Self {
                DbError::Redb(error.into())
            }
        })*
    };
}

redb_errors_into_db_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
);

/// The redb-backed raft log store. Clones share the database (a clone is the log reader).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    fatal: FatalSignal,
}

impl LogStore {
    /// Opens the log database at `path`, creating the file and its tables if missing.
    ///
    /// Fails if another process (or another store in this process) has it open.
    pub async fn open(path: &Path, fatal: FatalSignal) -> Result<Self, StorageError> {
        let path = path.to_owned();
        let opened = run_blocking(move || {
            let db = Database::create(&path)?;
            let txn = durable_write(&db)?;
            txn.open_table(LOGS)?;
            txn.open_table(META)?;
            txn.commit()?;
            Ok(db)
        })
        .await;
        match opened {
            Ok(db) => Ok(Self {
                db: Arc::new(db),
                fatal,
            }),
            Err(error) => Err(storage_error(ErrorSubject::Store, ErrorVerb::Read, &error)),
        }
    }

    /// Runs `op` on the blocking pool; an error is wrapped as `subject`/`verb` and reported fatal.
    async fn run<T: Send + 'static>(
        &self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
        op: impl FnOnce(&Database) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let db = Arc::clone(&self.db);
        run_blocking(move || op(&db)).await.map_err(|error| {
            let error = storage_error(subject, verb, &error);
            self.fatal.report(&error);
            error
        })
    }

    async fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError> {
        let bytes =
            serde_json::to_vec(value).map_err(|source| DbError::Encode { what: key, source });
        self.run(subject, ErrorVerb::Write, move |db| {
            let bytes = bytes?;
            let txn = durable_write(db)?;
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn read_meta<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
        subject: ErrorSubject<NodeId>,
    ) -> Result<Option<T>, StorageError> {
        self.run(subject, ErrorVerb::Read, move |db| {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            get_meta(&meta, key)
        })
        .await
    }
}

/// Runs `op` on tokio's blocking pool (a panic inside it becomes an error).
async fn run_blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, DbError> + Send + 'static,
) -> Result<T, DbError> {
    match tokio::task::spawn_blocking(op).await {
        Ok(result) => result,
        Err(join) => Err(DbError::Task(join.to_string())),
    }
}

fn storage_error(subject: ErrorSubject<NodeId>, verb: ErrorVerb, error: &DbError) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(error)).into()
}

/// A write transaction that fsyncs on commit.
fn durable_write(db: &Database) -> Result<redb::WriteTransaction, DbError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    Ok(txn)
}

fn get_meta<T: DeserializeOwned>(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &'static str,
) -> Result<Option<T>, DbError> {
    match meta.get(key)? {
        None => Ok(None),
        Some(value) => serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|source| DbError::Decode {
                what: key.to_owned(),
                source,
            }),
    }
}

fn decode_entry(key: u64, bytes: &[u8]) -> Result<Entry, DbError> {
    let entry: Entry = serde_json::from_slice(bytes).map_err(|source| DbError::Decode {
        what: format!("log entry {key}"),
        source,
    })?;
    if entry.log_id.index != key {
        return Err(DbError::Misplaced {
            key,
            index: entry.log_id.index,
        });
    }
    Ok(entry)
}

/// `range` as owned bounds, or `None` when it cannot contain any index.
fn owned_bounds(range: &impl RangeBounds<u64>) -> Option<(Bound<u64>, Bound<u64>)> {
    let start = range.start_bound().cloned();
    let end = range.end_bound().cloned();
    let first = match start {
        Bound::Included(i) => i,
        Bound::Excluded(i) => i.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let empty = match end {
        Bound::Included(last) => first > last,
        Bound::Excluded(end) => first >= end,
        Bound::Unbounded => false,
    };
    (!empty).then_some((start, end))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let Some(bounds) = owned_bounds(&range) else {
            return Ok(Vec::new());
        };
        self.run(ErrorSubject::Logs, ErrorVerb::Read, move |db| {
            let txn = db.begin_read()?;
            let logs = txn.open_table(LOGS)?;
            let mut entries = Vec::new();
            for row in logs.range::<u64>(bounds)? {
                let (key, value) = row?;
                entries.push(decode_entry(key.value(), value.value())?);
            }
            Ok(entries)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.run(ErrorSubject::Logs, ErrorVerb::Read, |db| {
            let txn = db.begin_read()?;
            let last_purged: Option<LogId> = get_meta(&txn.open_table(META)?, LAST_PURGED)?;
            let last_entry = match txn.open_table(LOGS)?.last()? {
                Some((key, value)) => Some(decode_entry(key.value(), value.value())?.log_id),
                None => None,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last_entry.or(last_purged),
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE, ErrorSubject::Vote).await
    }

    /// Persisted (fsynced) so a restarted node re-applies everything it knew to be committed.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.write_meta(COMMITTED, &committed, ErrorSubject::Store)
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read_meta::<Option<LogId>>(COMMITTED, ErrorSubject::Store)
            .await?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = self
            .run(ErrorSubject::Logs, ErrorVerb::Write, move |db| {
                let txn = durable_write(db)?;
                {
                    let mut logs = txn.open_table(LOGS)?;
                    for entry in &entries {
                        let bytes =
                            serde_json::to_vec(entry).map_err(|source| DbError::Encode {
                                what: "log entry",
                                source,
                            })?;
                        logs.insert(entry.log_id.index, bytes.as_slice())?;
                    }
                }
                // The fsync: only after this returns are the entries durable.
                txn.commit()?;
                Ok(())
            })
            .await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(error) => callback.log_io_completed(Err(io::Error::other(error.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.run(ErrorSubject::Logs, ErrorVerb::Delete, move |db| {
            let txn = durable_write(db)?;
            txn.open_table(LOGS)?
                .retain_in(log_id.index.., |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let record = serde_json::to_vec(&log_id).map_err(|source| DbError::Encode {
            what: LAST_PURGED,
            source,
        });
        self.run(ErrorSubject::Logs, ErrorVerb::Delete, move |db| {
            let record = record?;
            let txn = durable_write(db)?;
            txn.open_table(LOGS)?
                .retain_in(..=log_id.index, |_, _| false)?;
            txn.open_table(META)?
                .insert(LAST_PURGED, record.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_inverted_ranges_read_nothing() {
        assert_eq!(owned_bounds(&(3..3)), None);
        assert_eq!(
            owned_bounds(&(Bound::Included(5), Bound::Included(4))),
            None
        );
        assert_eq!(
            owned_bounds(&(Bound::Excluded(u64::MAX), Bound::Unbounded)),
            None
        );
        assert_eq!(
            owned_bounds(&(2..5)),
            Some((Bound::Included(2), Bound::Excluded(5)))
        );
        assert_eq!(
            owned_bounds(&(..)),
            Some((Bound::Unbounded, Bound::Unbounded))
        );
    }
}
