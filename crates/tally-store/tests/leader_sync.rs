//! The leader's own entries are acknowledged to openraft once written and synced while they
//! replicate (`LogStore::sync_own_appends_in_parallel`); nothing that makes a commit visible
//! runs ahead of that sync: apply waits for it, and the commit index saved on disk (and, in
//! tally-raft, the one sent to followers) is bounded by it. Everything else is synced before it
//! is acknowledged.
//!
//! The background sync is held with `hold_log_sync_for_tests`, which acts on the whole test
//! process: the tests here take turns.

mod common;

use std::time::Duration;

use common::*;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::Vote;
use tally_store::{fail_next_log_sync_for_tests, hold_log_sync_for_tests};

static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SETTLE: Duration = Duration::from_millis(300);
const PATIENCE: Duration = Duration::from_secs(10);

/// The scenario's first `n` ledger entries as log entries 1..=n of leader (term 2, node 1).
fn leader_entries(n: usize) -> Vec<RaftEntry> {
    scenario(3, 4)
        .into_iter()
        .take(n)
        .enumerate()
        .map(|(k, entry)| normal(2, k as u64 + 1, entry))
        .collect()
}

/// Releases the held sync however the test ends, so a failing test does not hang the others.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        hold_log_sync_for_tests(false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_own_entries_are_applied_only_once_synced() {
    let _turn = TURNS.lock().await;
    let (_dir, mut log, mut sm) = store_with(Some(1), Vote::new_committed(2, 1)).await;
    let durability = log.durability();
    let entries = leader_entries(3);
    assert_eq!(entries.len(), 3);

    let _release = Release;
    hold_log_sync_for_tests(true);
    // Acknowledged while its sync waits: this is what lets openraft replicate at once.
    tokio::time::timeout(PATIENCE, log.blocking_append(entries.clone()))
        .await
        .expect("the leader's own append is acknowledged before its sync")
        .unwrap();
    assert_eq!(durability.through(), None, "nothing synced yet");
    assert_eq!(durability.bound_commit(Some(log_id(2, 3))), None);
    // A commit saved meanwhile is bounded by the sync: a restart takes entries up to the
    // saved commit for synced ones.
    log.save_committed(Some(log_id(2, 3))).await.unwrap();
    assert_eq!(log.read_committed().await.unwrap(), None);

    let apply = tokio::spawn(async move {
        let responses = sm.apply(entries).await.unwrap();
        (sm, responses)
    });
    tokio::time::sleep(SETTLE).await;
    assert!(
        !apply.is_finished(),
        "an entry is applied (and answered) only once it is on the leader's disk"
    );

    hold_log_sync_for_tests(false);
    let (mut sm, responses) = tokio::time::timeout(PATIENCE, apply)
        .await
        .expect("applied once synced")
        .unwrap();
    assert_eq!(responses.len(), 3);
    assert_eq!(durability.through(), Some(log_id(2, 3)));
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(2, 3)));
    log.save_committed(Some(log_id(2, 3))).await.unwrap();
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_are_not_the_leaders_own_are_synced_before_they_are_acknowledged() {
    let _turn = TURNS.lock().await;
    let _release = Release;
    hold_log_sync_for_tests(true);

    // A follower: the vote names another node (1) as leader; this is node 3.
    let (_dir, mut log) = log_with(Some(3), Vote::new_committed(2, 1)).await;
    append_synced_at_once(&mut log, leader_entries(2)).await;
    assert_eq!(log.durability().through(), Some(log_id(2, 2)));

    // The leader's own membership change: openraft acts on its commit inside its core.
    let (_dir, mut log) = log_with(Some(1), Vote::new_committed(2, 1)).await;
    append_synced_at_once(&mut log, vec![membership(2, 1, &[1, 2, 3])]).await;
    assert_eq!(log.durability().through(), Some(log_id(2, 1)));

    // A vote not yet committed (a candidate's).
    let (_dir, mut log) = log_with(Some(1), Vote::new(2, 1)).await;
    append_synced_at_once(&mut log, leader_entries(2)).await;
    assert_eq!(log.durability().through(), Some(log_id(2, 2)));

    // Without sync_own_appends_in_parallel.
    let (_dir, mut log) = log_with(None, Vote::new_committed(2, 1)).await;
    append_synced_at_once(&mut log, leader_entries(4)).await;
    assert_eq!(log.durability().through(), Some(log_id(2, 4)));
    // A truncation takes the cut entries out of what is durable; a purge past the end of the
    // log (a snapshot installed from the leader) counts as durable.
    log.truncate(log_id(2, 3)).await.unwrap();
    assert_eq!(log.durability().through(), Some(log_id(2, 2)));
    log.purge(log_id(2, 10)).await.unwrap();
    assert_eq!(log.durability().through(), Some(log_id(2, 10)));
}

/// A store on a fresh directory with `vote` saved; `own`: the node id given to
/// `sync_own_appends_in_parallel` (None: not called).
async fn log_with(own: Option<u64>, vote: Vote<u64>) -> (tempfile::TempDir, tally_store::LogStore) {
    let (dir, log, _sm) = store_with(own, vote).await;
    (dir, log)
}

/// [`log_with`], and the state machine opened with the log.
async fn store_with(
    own: Option<u64>,
    vote: Vote<u64>,
) -> (
    tempfile::TempDir,
    tally_store::LogStore,
    tally_store::StateMachineStore,
) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, sm) = tally_store::open(dir.path()).unwrap();
    if let Some(own) = own {
        log.sync_own_appends_in_parallel(own).unwrap();
    }
    log.save_vote(&vote).await.unwrap();
    (dir, log, sm)
}

/// Appends `entries` while the background sync is held: what is durable right after the
/// append returns tells whether they were synced before they were acknowledged.
async fn append_synced_at_once(log: &mut tally_store::LogStore, entries: Vec<RaftEntry>) {
    tokio::time::timeout(PATIENCE, log.blocking_append(entries))
        .await
        .expect("the append returns")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_synced_in_the_background_are_durable_after_a_reopen() {
    let _turn = TURNS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = tally_store::open(dir.path()).unwrap();
        log.sync_own_appends_in_parallel(1).unwrap();
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        let _release = Release;
        hold_log_sync_for_tests(true);
        log.blocking_append(leader_entries(3)).await.unwrap();
        assert_eq!(log.durability().through(), None);
        // Dropped with the sync still held: the process goes on, as after kill -9 the page
        // cache does; open syncs what it finds before it counts it as durable.
    }
    let (log, _sm) = tally_store::open(dir.path()).unwrap();
    assert_eq!(log.durability().through(), Some(log_id(2, 3)));
}

/// A failed background sync (a failing disk) fails the log: the entries it covered are never
/// applied (so never answered), and nothing is appended after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_background_sync_fails_the_log() {
    let _turn = TURNS.lock().await;
    let (_dir, mut log, mut sm) = store_with(Some(1), Vote::new_committed(2, 1)).await;
    let entries = leader_entries(3);
    fail_next_log_sync_for_tests();
    log.blocking_append(entries[..2].to_vec()).await.unwrap();

    let applied = tokio::time::timeout(PATIENCE, sm.apply(entries[..2].to_vec()))
        .await
        .expect("apply gives up once the sync failed");
    let error = applied.expect_err("entries whose sync failed are not applied");
    assert!(error.to_string().contains("failed to sync"), "{error}");
    assert_eq!(log.durability().through(), None);
    assert_eq!(sm.applied_state().await.unwrap().0, None);
    let error = log
        .blocking_append(entries[2..].to_vec())
        .await
        .expect_err("nothing is appended after a failed sync");
    assert!(error.to_string().contains("failed earlier"), "{error}");
}

/// A power cut while the leader's own entries await their background sync: what the disk kept
/// is what was synced (the segment files as they were at the last completed sync). The node
/// opens again (the commit it saved meanwhile was bounded by the sync, so its log does not
/// end before it), without the unsynced entries, none of which was applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_before_the_background_sync_loses_only_unapplied_entries() {
    let _turn = TURNS.lock().await;
    let entries = leader_entries(6);
    let (dir, mut log, mut sm) = store_with(Some(1), Vote::new_committed(2, 1)).await;
    log.blocking_append(entries[..3].to_vec()).await.unwrap();
    sm.apply(entries[..3].to_vec()).await.unwrap();
    log.durability().wait_through(3).await.unwrap();
    log.save_committed(Some(log_id(2, 3))).await.unwrap();
    // The disk as the last completed sync left it.
    let segments = dir.path().join("raft-log");
    let synced: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&segments)
        .unwrap()
        .map(|item| item.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    assert!(!synced.is_empty());

    let release = Release;
    hold_log_sync_for_tests(true);
    log.blocking_append(entries[3..].to_vec()).await.unwrap();
    // openraft would count 4..=6 committed once a follower has them; the commit saved on disk
    // stays at what is synced here.
    log.save_committed(Some(log_id(2, 6))).await.unwrap();
    let apply = tokio::spawn(async move { sm.apply(entries[3..].to_vec()).await });
    tokio::time::sleep(SETTLE).await;
    assert!(!apply.is_finished(), "nothing unsynced is applied");
    apply.abort();
    drop(log);
    // The cut: every byte written since that sync is gone.
    for (path, bytes) in &synced {
        std::fs::write(path, bytes).unwrap();
    }
    drop(release);

    let (mut log, _sm) = tally_store::open(dir.path()).expect("opens after the power cut");
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(2, 3)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 3)));
}
