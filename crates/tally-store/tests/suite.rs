//! openraft's own storage conformance suite, run against the store in fresh temp dirs.
//!
//! Every test of `Suite::test_store` runs, except those that append with a HOLE in the log
//! (an entry at index 3 right after index 1): openraft never does that (a follower appends
//! only after the entry before matches, a leader appends at its last index + 1), and our log
//! refuses it with an error naming `log_id.index` rather than keep a log that Raft's log
//! matching rules say cannot exist. `an_append_that_leaves_a_hole_is_refused` (below) checks
//! that refusal.

use std::future::Future;

use openraft::storage::RaftLogStorage;
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{EntryPayload, StorageError};
use tally_store::{LogStore, NodeId, StateMachineStore, TypeConfig};
use tempfile::TempDir;

struct TempStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = tally_store::open(dir.path()).expect("open store");
        Ok((dir, log, sm))
    }
}

#[allow(clippy::result_large_err)] // openraft's error type, as its suite returns it
fn run_fut<F: Future<Output = Result<(), StorageError<NodeId>>>>(
    f: F,
) -> Result<(), StorageError<NodeId>> {
    tokio::runtime::Runtime::new().expect("runtime").block_on(f)
}

type S = Suite<TypeConfig, LogStore, StateMachineStore, TempStoreBuilder, TempDir>;

fn run<F, Fu>(name: &str, test: F)
where
    F: Fn(LogStore, StateMachineStore) -> Fu,
    Fu: Future<Output = Result<(), StorageError<NodeId>>>,
{
    run_fut(async {
        let (_dir, log, sm) = TempStoreBuilder.build().await?;
        test(log, sm).await
    })
    .unwrap_or_else(|e| panic!("openraft storage suite, {name}: {e}"));
}

#[test]
fn openraft_storage_suite() {
    run(
        "last_membership_in_log_initial",
        S::last_membership_in_log_initial,
    );
    run("last_membership_in_log", S::last_membership_in_log);
    run(
        "last_membership_in_log_multi_step",
        S::last_membership_in_log_multi_step,
    );
    run("get_membership_initial", S::get_membership_initial);
    run(
        "get_membership_from_log_and_empty_sm",
        S::get_membership_from_log_and_empty_sm,
    );
    run(
        "get_membership_from_empty_log_and_sm",
        S::get_membership_from_empty_log_and_sm,
    );
    run(
        "get_membership_from_log_le_sm_last_applied",
        S::get_membership_from_log_le_sm_last_applied,
    );
    run(
        "get_membership_from_log_gt_sm_last_applied_1",
        S::get_membership_from_log_gt_sm_last_applied_1,
    );
    run(
        "get_membership_from_log_gt_sm_last_applied_2",
        S::get_membership_from_log_gt_sm_last_applied_2,
    );
    run(
        "get_initial_state_without_init",
        S::get_initial_state_without_init,
    );
    run(
        "get_initial_state_with_state",
        S::get_initial_state_with_state,
    );
    run(
        "get_initial_state_last_log_gt_sm",
        S::get_initial_state_last_log_gt_sm,
    );
    run(
        "get_initial_state_last_log_lt_sm",
        S::get_initial_state_last_log_lt_sm,
    );
    run("get_initial_state_log_ids", S::get_initial_state_log_ids);
    run(
        "get_initial_state_re_apply_committed",
        S::get_initial_state_re_apply_committed,
    );
    run("save_vote", S::save_vote);
    run("get_log_entries", S::get_log_entries);
    run("limited_get_log_entries", S::limited_get_log_entries);
    run("try_get_log_entry", S::try_get_log_entry);
    run("initial_logs", S::initial_logs);
    run("get_log_state", S::get_log_state);
    run("get_log_id", S::get_log_id);
    run("last_id_in_log", S::last_id_in_log);
    run("last_applied_state", S::last_applied_state);
    run("purge_logs_upto_0", S::purge_logs_upto_0);
    run("purge_logs_upto_5", S::purge_logs_upto_5);
    run("purge_logs_upto_20", S::purge_logs_upto_20);
    run("delete_logs_since_11", S::delete_logs_since_11);
    run("delete_logs_since_0", S::delete_logs_since_0);
    run("append_to_log", S::append_to_log);
    run("snapshot_meta", S::snapshot_meta);
    run("apply_single", S::apply_single);
    run("apply_multiple", S::apply_multiple);
    run_fut(S::transfer_snapshot(&TempStoreBuilder))
        .expect("openraft storage suite, transfer_snapshot");
}

#[test]
fn an_append_that_leaves_a_hole_is_refused() {
    let blank = |term: u64, index: u64| openraft::Entry::<TypeConfig> {
        log_id: log_id::<NodeId>(term, 1, index),
        payload: EntryPayload::<TypeConfig>::Blank,
    };
    run_fut(async {
        let (_dir, mut log, _sm) = TempStoreBuilder.build().await?;
        use openraft::storage::RaftLogStorageExt;
        log.blocking_append([blank(1, 0), blank(1, 1)]).await?;
        let err = log
            .blocking_append([blank(1, 3)])
            .await
            .expect_err("an append after a hole must fail");
        assert!(err.to_string().contains("log_id.index"), "{err}");
        let state = log.get_log_state().await?;
        assert_eq!(
            state.last_log_id,
            Some(log_id(1, 1, 1)),
            "the refused append changed the log"
        );
        Ok::<(), StorageError<NodeId>>(())
    })
    .unwrap();
}
