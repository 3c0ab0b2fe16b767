//! The raft layer: openraft 0.9 (`storage-v2`) with a durable redb log, a snapshotting state
//! machine adapter and gRPC transport between nodes.
//!
//! It replicates opaque commands and hands them, once committed, to a [`StateMachineCore`]; it
//! must not know what a command means, must not decide membership policy (who is promoted or
//! demoted — the daemon's membership reconciler does) and must not talk to other subsystems.
//!
//! # Pieces
//! - [`types`]: the openraft type configuration ([`TypeConfig`]), [`NodeAddr`] and
//!   [`node_id_from_name`].
//! - [`log_store`]: [`LogStore`], the raft log, vote and committed index in
//!   `<data_dir>/raft/log.redb`, fsynced before openraft is told an append is durable.
//! - [`state_store`]: [`StateStore`], which applies committed entries to the core and keeps the
//!   latest snapshot in `<data_dir>/raft/snapshot.bin`.
//! - [`network`]: [`GrpcNetwork`] (outgoing raft RPCs over the `Internal` gRPC service) and
//!   [`InternalRaftHandlers`] (the incoming side, called by the daemon's `Internal` service).
//! - [`RaftNode`]: starts all of the above for one data directory.
//!
//! # Wiring (daemon)
//! 1. `let node = RaftNode::start(node_id_from_name(&name), data_dir, raft_config(DEFAULT_SNAPSHOT_EVERY)?, core, GrpcNetwork::new(id, endpoint_fn)).await?;`
//! 2. The `Internal` service holds `InternalRaftHandlers::new(node.raft().clone())` and forwards
//!    its `append_entries`, `vote` and `install_snapshot` RPCs to it; the server sets
//!    `max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)`.
//! 3. `cluster init`: `node.raft().initialize(members_by_id([me]))`. Joining: the leader calls
//!    `add_learner(id, addr, true)`, later `change_membership(voter_ids, false)`.
//! 4. `tokio::select!` on `node.fatal().wait()` and exit non-zero when it resolves.
//!
//! # Failure model
//! Every storage error (redb, file system, a corrupt record, a core that cannot restore a
//! snapshot) is returned to openraft as a [`StorageError`], which stops the raft core, and is
//! reported on the node's [`FatalSignal`]. The process must then exit non-zero and let systemd
//! restart it: limping on after a failed fsync risks acknowledging writes that are not durable.

// openraft's trait signatures fix the error types (StorageError, RPCError, ConfigError), which
// are large; boxing them in our helpers would only add conversions at every call.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod membership;
pub mod network;
pub mod state_store;
pub mod types;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use log_store::LogStore;
pub use network::{
    GrpcNetwork, InternalRaftHandlers, MAX_RAFT_MESSAGE_BYTES, plaintext_endpoint, tune_endpoint,
};
pub use state_store::StateStore;
pub use types::{
    NodeAddr, NodeId, Raft, RaftMetrics, Request, Response, StorageError, TypeConfig, id_collision,
    leader_of, members_by_id, node_id_from_name,
};

/// What the raft layer needs from the replicated state machine: opaque commands in, opaque results out.
pub trait StateMachineCore: Send + Sync + 'static {
    /// Applies the committed command at `index` (prost-encoded `Command`); returns the prost-encoded `CommandResult`. Deterministic; an undecodable command yields an `internal` error result, never a panic.
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8>;
    /// The full state as bytes (for raft snapshots and backups).
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the state with a snapshot.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
    /// Index of the last applied command.
    fn last_applied(&self) -> u64;
}

impl<T: StateMachineCore + ?Sized> StateMachineCore for Box<T> {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        (**self).apply(index, command)
    }
    fn snapshot(&self) -> Vec<u8> {
        (**self).snapshot()
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        (**self).restore(snapshot)
    }
    fn last_applied(&self) -> u64 {
        (**self).last_applied()
    }
}

/// The state machine core shared between raft (which applies commands under the write lock)
/// and readers (the API, which read under the read lock). Never hold the lock across an await.
pub type SharedCore<S> = Arc<RwLock<S>>;

/// Default snapshot policy: a snapshot every 5,000 applied entries (openraft's default, SPEC §4).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 5_000;

/// The openraft configuration for a LAN cluster, validated.
///
/// - Heartbeat 100 ms, election timeout 300–600 ms. openraft 0.9 lets a follower campaign only
///   after the leader lease (= `election_timeout_max`) plus its own election timeout (drawn once
///   per start in 300–600 ms) have passed since the last heartbeat, and voters refuse while the
///   lease holds, so a dead leader is replaced 0.9–1.2 s after its last heartbeat (measured
///   1.1–1.3 s from kill to the first accepted write on loopback) — inside SPEC §11's 2 s.
///   openraft also uses the heartbeat interval as the AppendEntries timeout, so a follower's
///   fsync must finish in well under 100 ms.
/// - A snapshot every `snapshot_every` applied entries; after it, the log up to the snapshot is
///   purged except the last 1,000 entries (so a briefly lagging follower catches up from the log),
///   in batches of 256 entries.
/// - Snapshot chunks of 1 MiB (their base64 JSON stays far below [`MAX_RAFT_MESSAGE_BYTES`]) and
///   3 s per chunk, which includes installing the last chunk on the follower.
pub fn raft_config(snapshot_every: u64) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: "jaco".to_owned(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        install_snapshot_timeout: 3_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_every),
        snapshot_max_chunk_size: 1024 * 1024,
        max_in_snapshot_log_to_keep: 1_000,
        purge_batch_size: 256,
        ..Default::default()
    }
    .validate()
}

/// A one-shot "the raft layer is broken" signal.
///
/// Storage code reports the first error here (later ones are only logged), and [`RaftNode`]
/// reports a raft core that stopped on its own. The daemon awaits [`FatalSignal::wait`] and exits
/// non-zero; nothing in this layer exits the process itself.
#[derive(Clone, Debug)]
pub struct FatalSignal {
    tx: Arc<watch::Sender<Option<String>>>,
}

impl Default for FatalSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl FatalSignal {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(None).0),
        }
    }

    /// Records a fatal error (the first one wins) and logs it.
    pub fn report(&self, error: &dyn fmt::Display) {
        let message = error.to_string();
        tracing::error!(error = %message, "fatal raft storage error");
        self.tx.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(message);
                true
            } else {
                false
            }
        });
    }

    /// The first reported error, if any.
    pub fn error(&self) -> Option<String> {
        self.tx.borrow().clone()
    }

    /// Waits until an error is reported and returns it.
    pub async fn wait(&self) -> String {
        let mut rx = self.tx.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(error) => error.clone().unwrap_or_default(),
            // Unreachable: `self` keeps the sender alive.
            Err(_) => String::new(),
        }
    }
}

/// Why a [`RaftNode`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The `raft` directory under the data directory could not be created.
    #[error("cannot create raft data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The log store or the snapshot could not be opened or read.
    #[error("raft storage: {0}")]
    Storage(#[from] StorageError),
    /// openraft refused to start (for example an invalid stored state).
    #[error("raft did not start: {0}")]
    Fatal(#[from] openraft::error::Fatal<NodeId>),
}

/// One running raft node: the openraft handle plus the fatal-error signal of its storage.
///
/// Dropping it does not stop raft; call [`RaftNode::shutdown`].
pub struct RaftNode {
    id: NodeId,
    raft: Raft,
    fatal: FatalSignal,
    watcher: JoinHandle<()>,
}

impl RaftNode {
    /// Opens (or creates) `<data_dir>/raft/`, restores the last snapshot into `core`, and starts
    /// openraft as node `id` with `config` (see [`raft_config`]) and `network`.
    ///
    /// A node restarted from its data directory resumes with its vote, log and state; openraft
    /// re-applies the committed entries after the snapshot. `core` must be empty when no
    /// snapshot exists yet.
    pub async fn start<S: StateMachineCore>(
        id: NodeId,
        data_dir: &Path,
        config: openraft::Config,
        core: SharedCore<S>,
        network: GrpcNetwork,
    ) -> Result<Self, StartError> {
        let dir = data_dir.join("raft");
        std::fs::create_dir_all(&dir).map_err(|source| StartError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let fatal = FatalSignal::new();
        let log_store = LogStore::open(&dir.join(log_store::LOG_FILE), fatal.clone()).await?;
        let state_store = StateStore::open(&dir, core, fatal.clone()).await?;
        let raft = Raft::new(id, Arc::new(config), network, log_store, state_store).await?;
        let watcher = tokio::spawn(watch_running_state(raft.clone(), fatal.clone()));
        Ok(Self {
            id,
            raft,
            fatal,
            watcher,
        })
    }

    /// This node's raft id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The openraft handle (cheap to clone): `client_write`, `initialize`, `add_learner`,
    /// `change_membership`, `ensure_linearizable`, `metrics`, `wait`.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The signal that fires when storage fails or the raft core stops on its own.
    pub fn fatal(&self) -> &FatalSignal {
        &self.fatal
    }

    /// Stops openraft (replication, elections, the state machine worker) and waits for it.
    pub async fn shutdown(self) {
        self.watcher.abort();
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft core task ended abnormally during shutdown");
        }
    }
}

/// Reports a raft core that stopped by itself (a storage error, a panic) on `fatal`. An ordinary
/// [`RaftNode::shutdown`] aborts this task first and ends in `Fatal::Stopped`, which is ignored.
async fn watch_running_state(raft: Raft, fatal: FatalSignal) {
    let mut metrics = raft.metrics();
    loop {
        let stopped = match &metrics.borrow_and_update().running_state {
            Ok(()) => None,
            Err(openraft::error::Fatal::Stopped) => return,
            Err(error) => Some(error.to_string()),
        };
        if let Some(error) = stopped {
            fatal.report(&format_args!("raft core stopped: {error}"));
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lan_config_is_valid_and_snapshots_as_asked() {
        let config = raft_config(50).expect("valid");
        assert_eq!(config.heartbeat_interval, 100);
        assert!(config.election_timeout_min >= 3 * config.heartbeat_interval);
        assert_eq!(
            config.snapshot_policy,
            openraft::SnapshotPolicy::LogsSinceLast(50)
        );
    }

    #[tokio::test]
    async fn the_first_fatal_error_wins() {
        let fatal = FatalSignal::new();
        assert_eq!(fatal.error(), None);
        let waiter = tokio::spawn({
            let fatal = fatal.clone();
            async move { fatal.wait().await }
        });
        fatal.report(&"disk on fire");
        fatal.report(&"second error");
        assert_eq!(waiter.await.expect("joins"), "disk on fire");
        assert_eq!(fatal.error().as_deref(), Some("disk on fire"));
    }
}
