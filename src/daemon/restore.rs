//! `jaco restore`: recreates a node offline from a backup file, as the single voter of the same
//! cluster (same cluster id, CA, tokens and state).
//!
//! It writes into an empty data directory only: a fresh node key and certificate signed by the
//! cluster CA from the backup, the state as raft's snapshot with a membership of this node
//! alone, a raft vote at the backup's term (so that the node's first election starts after it),
//! and a marker from which the daemon records `restore_completed` in the audit log once it
//! leads. This module must not touch a directory that holds anything, nor run raft.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::storage::RaftLogStorage as _;
use serde::{Deserialize, Serialize};

use crate::backup;
use crate::error::{Code, Error};
use crate::pki::{ClusterCa, NodeIdentity, NodeKey, now_unix_ms};
use crate::raft::log_store::{LOG_FILE, LogStore};
use crate::raft::state_store::write_snapshot_file;
use crate::raft::types::{LogId, SnapshotMeta, StoredMembership, Vote};
use crate::raft::{FatalSignal, NodeAddr, node_id_from_name};
use crate::state::State;

/// The marker a restore leaves for the daemon (`<data_dir>/restored.json`).
pub const MARKER_FILE: &str = "restored.json";

/// What a restore did, for the operator and for the audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// Cluster id of the backup.
    pub cluster_id: String,
    /// Raft index the backup was taken at.
    pub index: u64,
    /// Raft term of that index.
    pub term: u64,
    /// The node recreated.
    pub node: String,
    /// Its advertised address (the single voter's raft address).
    pub advertise: String,
    /// When the backup was taken (Unix ms).
    pub taken_at_unix_ms: i64,
    /// The data directory written.
    pub data_dir: PathBuf,
}

fn refused(message: String) -> Error {
    Error::new(Code::ValidationFailed, message)
}

/// Restores `backup_bytes` into `data_dir` as node `node_name` (which must be in the backup's
/// node table) advertised at `advertise` (default: the address the table records for it).
pub async fn restore(
    backup_bytes: &[u8],
    data_dir: &Path,
    node_name: &str,
    advertise: Option<&str>,
) -> Result<Restored, Error> {
    let (header, payload) = backup::decode(backup_bytes)?;
    let state = State::from_snapshot_bytes(payload).map_err(|e| {
        refused(format!("the backup's state does not load: {e}")).with("reason", "corrupt_backup")
    })?;
    let meta = state
        .cluster_meta()
        .cloned()
        .ok_or_else(|| refused("the backup holds no initialised cluster".into()))?;
    if meta.cluster_id != header.cluster_id || state.last_applied_index() != header.index {
        return Err(refused(format!(
            "the backup header (cluster {}, index {}) does not match its state (cluster {}, index {})",
            header.cluster_id,
            header.index,
            meta.cluster_id,
            state.last_applied_index()
        ))
        .with("reason", "mismatched_backup"));
    }
    let node = state.node(node_name).cloned().ok_or_else(|| {
        let known: Vec<&str> = state.nodes().map(|n| n.name.as_str()).collect();
        refused(format!(
            "node {node_name:?} is not in the backup's node table ({}); pass --node-name",
            known.join(", ")
        ))
        .with("field", "node_name")
        .with("nodes", known.join(","))
    })?;
    ensure_empty(data_dir)?;

    let advertise = advertise.unwrap_or(&node.raft_address).to_owned();
    let ca = ClusterCa::from_pem(&meta.ca_cert_pem, &meta.ca_key_pem)?;
    let key = NodeKey::generate()?;
    let now = now_unix_ms();
    let csr = key.csr(node_name, &node.sans)?;
    let identity = NodeIdentity {
        cert_pem: ca.sign_node_csr(&csr, node_name, &node.sans, now)?,
        key_pem: key.pem().to_owned(),
        ca_pem: meta.ca_cert_pem.clone(),
    };
    identity.verify(now)?;

    let id = node_id_from_name(node_name);
    let raft_dir = data_dir.join("raft");
    std::fs::create_dir_all(&raft_dir).map_err(|e| io_error("create", &raft_dir, e))?;
    let last = LogId::new(
        openraft::CommittedLeaderId::new(header.term, id),
        header.index,
    );
    let membership = openraft::Membership::new(
        vec![BTreeSet::from([id])],
        BTreeMap::from([(
            id,
            NodeAddr {
                name: node_name.to_owned(),
                addr: advertise.clone(),
            },
        )]),
    );
    let snapshot = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
        snapshot_id: format!("restore-{}-{}", header.index, now),
    };
    write_snapshot_file(&raft_dir, &snapshot, payload).map_err(|e| {
        Error::new(Code::Internal, format!("cannot write the snapshot: {e}"))
            .with("path", raft_dir.display())
    })?;
    let mut log = LogStore::open(&raft_dir.join(LOG_FILE), FatalSignal::new())
        .await
        .map_err(|e| Error::new(Code::Internal, format!("cannot create the raft log: {e}")))?;
    log.save_vote(&Vote::new(header.term, id))
        .await
        .map_err(|e| Error::new(Code::Internal, format!("cannot write the raft vote: {e}")))?;
    drop(log);

    let restored = Restored {
        cluster_id: meta.cluster_id,
        index: header.index,
        term: header.term,
        node: node_name.to_owned(),
        advertise,
        taken_at_unix_ms: header.taken_at_unix_ms,
        data_dir: data_dir.to_owned(),
    };
    let marker = serde_json::to_vec(&restored).expect("a marker serialises");
    backup::write_atomically(&data_dir.join(MARKER_FILE), &marker)
        .map_err(|e| io_error("write", &data_dir.join(MARKER_FILE), e))?;
    // The certificate last: its presence is what makes the daemon start as a member.
    identity.save(data_dir)?;
    Ok(restored)
}

/// The marker of a restore whose audit event is still to be recorded, if any.
pub fn pending_marker(data_dir: &Path) -> Option<Restored> {
    serde_json::from_slice(&std::fs::read(data_dir.join(MARKER_FILE)).ok()?).ok()
}

/// Removes the marker once its audit event is committed.
pub fn clear_marker(data_dir: &Path) {
    let path = data_dir.join(MARKER_FILE);
    if let Err(error) = std::fs::remove_file(&path) {
        tracing::warn!(%error, path = %path.display(), "cannot remove the restore marker");
    }
}

/// Creates `dir` (mode 0700) or accepts it when empty.
fn ensure_empty(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(refused(format!(
                    "{} is not empty; restore only writes into an empty data directory (stop the \
                     daemon and move the old directory aside)",
                    dir.display()
                ))
                .with("reason", "data_dir_not_empty")
                .with("path", dir.display()));
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_error("create", dir, e)),
        Err(error) => Err(io_error("read", dir, error)),
    }
}

fn io_error(action: &str, path: &Path, error: std::io::Error) -> Error {
    Error::new(
        Code::Internal,
        format!("cannot {action} {}: {error}", path.display()),
    )
    .with("path", path.display())
}
