//! The raft storage layer on a real disk: openraft's conformance suite, durability across a
//! reopen, snapshots across a restart, and storage failures surfacing as fatal errors.

mod raft_fixture;

use std::collections::{BTreeMap, BTreeSet};

use jaco::raft::log_store::LOG_FILE;
use jaco::raft::state_store::SNAPSHOT_FILE;
use jaco::raft::{FatalSignal, LogStore, NodeAddr, Request, StateStore, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder,
    StorageError, Vote,
};
use raft_fixture::{CountingCore, commands, shared_core};
use tempfile::TempDir;

/// Builds a fresh log store and state machine in a temporary directory for each suite case.
struct DiskStores;

impl StoreBuilder<TypeConfig, LogStore, StateStore<CountingCore>, TempDir> for DiskStores {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateStore<CountingCore>), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let fatal = FatalSignal::new();
        let log = LogStore::open(&dir.path().join(LOG_FILE), fatal.clone()).await?;
        let sm = StateStore::open(dir.path(), shared_core(), fatal).await?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(DiskStores).expect("storage suite");
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn normal(term: u64, index: u64, command: &[u8]) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Request(command.to_vec())),
    }
}

fn membership(term: u64, index: u64) -> Entry<TypeConfig> {
    let node = NodeAddr {
        name: "node-a".into(),
        addr: "127.0.0.1:7000".into(),
    };
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(
            vec![BTreeSet::from([1])],
            BTreeMap::from([(1, node)]),
        )),
    }
}

#[tokio::test]
async fn log_vote_and_committed_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(LOG_FILE);
    let mut written = vec![membership(1, 1)];
    written.extend((2..=10).map(|i| normal(1, i, format!("command {i}").as_bytes())));
    {
        let mut log = LogStore::open(&path, FatalSignal::new())
            .await
            .expect("opens");
        log.blocking_append(written.clone()).await.expect("appends");
        log.save_vote(&Vote::new_committed(1, 1))
            .await
            .expect("saves vote");
        log.save_committed(Some(log_id(1, 8)))
            .await
            .expect("saves committed");
        log.purge(log_id(1, 3)).await.expect("purges");
        log.truncate(log_id(1, 10)).await.expect("truncates");
    }

    // A second handle on an open file is refused (redb's lock), so reopening proves the first
    // one was really closed and everything above came back from disk.
    let mut log = LogStore::open(&path, FatalSignal::new())
        .await
        .expect("reopens");
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 9)));
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(Vote::new_committed(1, 1))
    );
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(1, 8))
    );
    let entries = log.try_get_log_entries(0..100).await.expect("entries");
    assert_eq!(entries, written[3..9].to_vec());
}

#[tokio::test]
async fn a_log_already_open_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(LOG_FILE);
    let _first = LogStore::open(&path, FatalSignal::new())
        .await
        .expect("opens");
    assert!(LogStore::open(&path, FatalSignal::new()).await.is_err());
}

#[tokio::test]
async fn a_snapshot_restores_the_core_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let core = shared_core();
    let mut sm = StateStore::open(dir.path(), core.clone(), FatalSignal::new())
        .await
        .expect("opens");
    let mut entries = vec![membership(1, 1)];
    entries.extend((2..=5).map(|i| normal(1, i, &[i as u8])));
    let responses = sm.apply(entries).await.expect("applies");
    assert_eq!(responses[0].0, Vec::<u8>::new(), "membership has no result");
    let result =
        <jaco::proto::v1::CommandResult as prost::Message>::decode(responses[4].0.as_slice())
            .expect("the core's result");
    assert_eq!(result.index, 5, "the core's result names its entry");
    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("builds");
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 5)));
    let before = sm.applied_state().await.expect("applied state");
    drop(sm);

    let restored = shared_core();
    let mut sm = StateStore::open(dir.path(), restored.clone(), FatalSignal::new())
        .await
        .expect("reopens");
    assert_eq!(*restored.read().unwrap(), *core.read().unwrap());
    assert_eq!(commands(&restored), [[2], [3], [4], [5]]);
    assert_eq!(sm.applied_state().await.expect("applied state"), before);
    let current = sm
        .get_current_snapshot()
        .await
        .expect("reads")
        .expect("present");
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot.into_inner(), built.snapshot.into_inner());
}

#[tokio::test]
async fn an_installed_snapshot_is_durable_and_never_replaced_by_an_older_one() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let mut leader = StateStore::open(leader_dir.path(), shared_core(), FatalSignal::new())
        .await
        .expect("opens");
    leader
        .apply((1..=6).map(|i| normal(1, i, &[i as u8])))
        .await
        .expect("applies");
    let newer = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("builds");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut follower = StateStore::open(dir.path(), shared_core(), FatalSignal::new())
        .await
        .expect("opens");
    follower
        .apply((1..=2).map(|i| normal(1, i, &[i as u8])))
        .await
        .expect("applies");
    // A snapshot of index 2 is being built when the leader's snapshot of index 6 arrives.
    let mut older = follower.get_snapshot_builder().await;
    let mut receiving = follower.begin_receiving_snapshot().await.expect("begins");
    *receiving = *newer.snapshot;
    follower
        .install_snapshot(&newer.meta, receiving)
        .await
        .expect("installs");
    older.build_snapshot().await.expect("builds the older one");
    drop(follower);

    let core = shared_core();
    let mut follower = StateStore::open(dir.path(), core.clone(), FatalSignal::new())
        .await
        .expect("reopens");
    let (applied, _) = follower.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(1, 6)));
    assert_eq!(commands(&core).len(), 6);
}

#[tokio::test]
async fn a_corrupt_snapshot_file_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(SNAPSHOT_FILE), b"JACOSNAP and then garbage").expect("writes");
    assert!(
        StateStore::open(dir.path(), shared_core(), FatalSignal::new())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_core_with_state_but_no_snapshot_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let core = shared_core();
    core.write()
        .unwrap()
        .applied
        .push((7, b"applied elsewhere".to_vec()));
    let fatal = FatalSignal::new();
    assert!(
        StateStore::open(dir.path(), core, fatal.clone())
            .await
            .is_err()
    );
    assert!(fatal.error().expect("reported").contains("no snapshot"));
}

#[tokio::test]
async fn a_failed_snapshot_write_is_a_fatal_storage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fatal = FatalSignal::new();
    let mut sm = StateStore::open(dir.path(), shared_core(), fatal.clone())
        .await
        .expect("opens");
    sm.apply([normal(1, 1, b"x")]).await.expect("applies");
    // A directory where the temporary file must go makes the write fail (even as root).
    std::fs::create_dir(dir.path().join("snapshot.bin.tmp")).expect("mkdir");
    let result = sm.get_snapshot_builder().await.build_snapshot().await;
    assert!(result.is_err());
    assert!(fatal.error().is_some(), "the fatal signal fired");
}
