//! Applying real `tally_core` entries: outcomes, journal and events persisted, snapshot and
//! restart give back the same state hash, snapshot transfer between stores.
//!
//! These check storage behaviour against a reference `LedgerState` fed the same entries, so
//! they hold whatever the ledger rules are.

mod common;

use common::*;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use tally_store::{LedgerReader, StateMachineStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Raft index 1 is the initial membership, 2 the leader's blank entry, ledger entry k at k + 3.
const FIRST_NORMAL: u64 = 3;

async fn apply_range(
    sm: &mut StateMachineStore,
    entries: &[tally_core::Entry],
    range: std::ops::Range<usize>,
    reference: &Reference,
) {
    let chunk: Vec<usize> = range.collect();
    for group in chunk.chunks(4) {
        let batch: Vec<RaftEntry> = group
            .iter()
            .map(|&k| normal(1, k as u64 + FIRST_NORMAL, entries[k].clone()))
            .collect();
        let responses = sm.apply(batch).await.unwrap();
        assert_eq!(responses.len(), group.len());
        for (resp, &k) in responses.iter().zip(group) {
            assert_eq!(
                resp.outcomes, reference.results[k].outcomes,
                "outcomes of entry {k}"
            );
            assert_eq!(resp.outcomes.len(), entries[k].commands.len());
        }
    }
}

fn check_reads(reader: &LedgerReader, reference: &Reference, n: usize, accounts: u64) {
    for a in 0..accounts {
        let acct = account(a);
        let want = reference.history(n, &acct);
        let got = reader.history(&acct, None, 1_000).unwrap();
        assert_eq!(got, want, "history of {acct} after {n} entries");
        // Paging: newest two, then the two before the smallest seq seen.
        if want.len() >= 4 {
            let page1 = reader.history(&acct, None, 2).unwrap();
            let page2 = reader.history(&acct, Some(page1[1].seq), 2).unwrap();
            assert_eq!(page1, want[..2]);
            assert_eq!(page2, want[2..4]);
        }
        // Any before_seq, also one of another account's entries or past the end (for every
        // account of a small scenario, for one in 50 of a large one: a read per seq each).
        if accounts > 150 && a % 50 != 0 {
            continue;
        }
        let last_seq = reference.results[..n]
            .iter()
            .flat_map(|r| r.journal.iter().map(|j| j.seq))
            .max()
            .unwrap_or(0);
        for before in (0..=last_seq + 1).step_by(3) {
            let want_before: Vec<_> = want
                .iter()
                .filter(|j| j.seq < before)
                .take(3)
                .cloned()
                .collect();
            assert_eq!(
                reader.history(&acct, Some(before), 3).unwrap(),
                want_before,
                "history of {acct} before {before} after {n} entries"
            );
        }
    }
    // Every journal entry by its seq.
    for j in reference.results[..n].iter().flat_map(|r| r.journal.iter()) {
        assert_eq!(reader.journal_entry(j.seq).unwrap().as_ref(), Some(j));
    }
    let events = reference.events(n);
    assert!(
        events.len() < 1_000,
        "scenario too big for one events_from page"
    );
    assert_eq!(reader.events_from(0, 1_000).unwrap(), events);
    if let Some(mid) = events.get(events.len() / 2) {
        assert_eq!(
            reader.events_from(mid.seq, 1_000).unwrap(),
            events[events.len() / 2..]
        );
    }
    assert_eq!(
        reader.latest_event_seq(),
        events.last().map_or(0, |e| e.seq)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_entries_persist_journal_and_restart_to_the_same_hash() {
    const ACCOUNTS: u64 = 3;
    let entries = scenario(ACCOUNTS, 40);
    let reference = Reference::new(&entries);
    let n = entries.len();
    let settled: usize = reference
        .results
        .iter()
        .flat_map(|r| r.outcomes.iter())
        .filter(|o| o.kind() == "settled")
        .count();
    let journal: usize = reference.results.iter().map(|r| r.journal.len()).sum();
    let events: usize = reference.results.iter().map(|r| r.events.len()).sum();
    println!(
        "reference: {n} entries, {settled} settled, {journal} journal entries, {events} events"
    );

    let dir = tempfile::tempdir().unwrap();
    let snap_at = n / 2;
    let snapshot_log_id;
    {
        let (_log, mut sm) = tally_store::open(dir.path()).unwrap();
        let reader = sm.reader();
        let mut events_rx = reader.subscribe_events();
        sm.apply([membership(1, 1, &[1, 2, 3]), blank(1, 2)])
            .await
            .unwrap();
        apply_range(&mut sm, &entries, 0..snap_at, &reference).await;
        check_reads(&reader, &reference, snap_at, ACCOUNTS);

        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        snapshot_log_id = snap.meta.last_log_id;
        assert_eq!(
            snapshot_log_id,
            Some(log_id(1, snap_at as u64 - 1 + FIRST_NORMAL))
        );
        assert_eq!(snap.meta.last_membership.log_id(), &Some(log_id(1, 1)));

        apply_range(&mut sm, &entries, snap_at..n, &reference).await;
        check_reads(&reader, &reference, n, ACCOUNTS);
        assert_eq!(
            reader.state_hash(),
            (
                Some(log_id(1, n as u64 - 1 + FIRST_NORMAL)),
                reference.states[n].state_hash()
            )
        );
        assert_eq!(
            events_rx.has_changed().unwrap(),
            !reference.events(n).is_empty()
        );
        if !reference.events(n).is_empty() {
            assert_eq!(*events_rx.borrow_and_update(), reader.latest_event_seq());
        }
    }

    // Restart: the state is the snapshot's, and applied_state says so.
    let (_log, mut sm) = tally_store::open(dir.path()).unwrap();
    let reader = sm.reader();
    let (applied, mem) = sm.applied_state().await.unwrap();
    assert_eq!(applied, snapshot_log_id);
    assert_eq!(mem.log_id(), &Some(log_id(1, 1)));
    assert_eq!(
        reader.state_hash(),
        (snapshot_log_id, reference.states[snap_at].state_hash())
    );
    // Re-applying the tail as openraft does writes the same journal blocks and rows again
    // (or finds them held): history reads as before, once each.
    apply_range(&mut sm, &entries, snap_at..n, &reference).await;
    check_reads(&reader, &reference, n, ACCOUNTS);
    assert_eq!(reader.state_hash().1, reference.states[n].state_hash());
    reader.with_state(|s| s.check_invariants()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_snapshot_reports_nothing_applied() {
    let entries = scenario(2, 5);
    let reference = Reference::new(&entries);
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm) = tally_store::open(dir.path()).unwrap();
        sm.apply([membership(1, 1, &[1]), blank(1, 2)])
            .await
            .unwrap();
        apply_range(&mut sm, &entries, 0..entries.len(), &reference).await;
    }
    let (_log, mut sm) = tally_store::open(dir.path()).unwrap();
    // No snapshot: the in-memory state is empty, so openraft must re-apply from the start.
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, None);
    assert_eq!(
        sm.reader().state_hash(),
        (None, tally_core::LedgerState::new().state_hash())
    );
    sm.apply([membership(1, 1, &[1]), blank(1, 2)])
        .await
        .unwrap();
    apply_range(&mut sm, &entries, 0..entries.len(), &reference).await;
    assert_eq!(
        sm.reader().state_hash().1,
        reference.states[entries.len()].state_hash()
    );
    check_reads(&sm.reader(), &reference, entries.len(), 2);
}

/// After a restart the log after the last snapshot is applied again: its journal blocks are
/// found held, with the same bytes, and are not appended to the journal file a second time;
/// neither are blocks an earlier build kept in sled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapplied_entries_do_not_append_their_journal_again() {
    const ACCOUNTS: u64 = 3;
    let entries = scenario(ACCOUNTS, 30);
    let reference = Reference::new(&entries);
    let n = entries.len();
    let dir = tempfile::tempdir().unwrap();
    let journal_file = dir.path().join("journal.dat");
    let apply_all = |dir: std::path::PathBuf| {
        let entries = entries.clone();
        let reference = &reference;
        async move {
            let (log, mut sm) = tally_store::open(&dir).unwrap();
            assert_eq!(sm.applied_state().await.unwrap().0, None, "no snapshot");
            sm.apply([membership(1, 1, &[1, 2]), blank(1, 2)])
                .await
                .unwrap();
            apply_range(&mut sm, &entries, 0..n, reference).await;
            check_reads(&sm.reader(), reference, n, ACCOUNTS);
            (log, sm)
        }
    };
    let written = {
        let _store = apply_all(dir.path().to_path_buf()).await;
        std::fs::metadata(&journal_file).unwrap().len()
    };
    assert!(written > 1_000, "{written} bytes of journal");
    let (_log, sm) = apply_all(dir.path().to_path_buf()).await;
    assert_eq!(std::fs::metadata(&journal_file).unwrap().len(), written);
    // The same with the blocks where an earlier build kept them.
    assert!(sm.keep_journal_blocks_in_sled_for_tests(u64::MAX).unwrap() > 1);
    drop((_log, sm));
    let _store = apply_all(dir.path().to_path_buf()).await;
    assert_eq!(std::fs::metadata(&journal_file).unwrap().len(), written);
}

/// A data directory of a build before session 10 kept the journal blocks in sled itself; this
/// build keeps them in the journal file and their locations in sled. Such a directory, grown
/// by this build after a restart, serves its whole history, and a snapshot sent from it
/// carries every block, old and new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_blocks_kept_in_sled_by_earlier_builds_are_read_and_sent() {
    const ACCOUNTS: u64 = 3;
    let entries = scenario(ACCOUNTS, 30);
    let reference = Reference::new(&entries);
    let n = entries.len();
    let half = n / 2;
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm) = tally_store::open(dir.path()).unwrap();
        sm.apply([membership(1, 1, &[1, 2]), blank(1, 2)])
            .await
            .unwrap();
        apply_range(&mut sm, &entries, 0..half, &reference).await;
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let moved = sm.keep_journal_blocks_in_sled_for_tests(u64::MAX).unwrap();
        assert!(moved > 1, "{moved} blocks");
        check_reads(&sm.reader(), &reference, half, ACCOUNTS);
    }
    let (_log, mut sm) = tally_store::open(dir.path()).unwrap();
    apply_range(&mut sm, &entries, half..n, &reference).await;
    check_reads(&sm.reader(), &reference, n, ACCOUNTS);

    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut snap = sm.get_current_snapshot().await.unwrap().unwrap();
    let mut transfer = Vec::new();
    snap.snapshot.read_to_end(&mut transfer).await.unwrap();
    let dir_f = tempfile::tempdir().unwrap();
    let (_log_f, mut follower) = tally_store::open(dir_f.path()).unwrap();
    let mut rx = follower.begin_receiving_snapshot().await.unwrap();
    rx.write_all(&transfer).await.unwrap();
    follower.install_snapshot(&snap.meta, rx).await.unwrap();
    check_reads(&follower.reader(), &reference, n, ACCOUNTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_transfers_to_another_store_and_survives_its_restart() {
    let entries = scenario(2, 10);
    let reference = Reference::new(&entries);
    let n = entries.len();
    let dir_l = tempfile::tempdir().unwrap();
    let dir_f = tempfile::tempdir().unwrap();
    let (_log_l, mut leader) = tally_store::open(dir_l.path()).unwrap();
    leader
        .apply([membership(1, 1, &[1, 2]), blank(1, 2)])
        .await
        .unwrap();
    apply_range(&mut leader, &entries, 0..n, &reference).await;
    let built = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    // What openraft sends a follower is `get_current_snapshot` (the built one plus the journal
    // rows); the locally kept one is small.
    let mut snap = leader.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(snap.meta, built.meta);
    let mut transfer = Vec::new();
    snap.snapshot.read_to_end(&mut transfer).await.unwrap();
    let local = std::fs::metadata(dir_l.path().join("snapshots/current.snap"))
        .unwrap()
        .len();
    assert!(
        transfer.len() as u64 > local,
        "the transfer carries the journal, the local snapshot does not"
    );
    let want_hash = reference.states[n].state_hash();

    {
        let (_log_f, mut follower) = tally_store::open(dir_f.path()).unwrap();
        let reader = follower.reader();

        // A damaged transfer is refused and changes nothing.
        let mut bad = follower.begin_receiving_snapshot().await.unwrap();
        let mut bytes = transfer.clone();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        bad.write_all(&bytes).await.unwrap();
        assert!(follower.install_snapshot(&snap.meta, bad).await.is_err());
        assert_eq!(
            reader.state_hash(),
            (None, tally_core::LedgerState::new().state_hash())
        );
        assert!(follower.get_current_snapshot().await.unwrap().is_none());

        let mut rx = follower.begin_receiving_snapshot().await.unwrap();
        rx.write_all(&transfer).await.unwrap();
        follower.install_snapshot(&snap.meta, rx).await.unwrap();
        assert_eq!(reader.state_hash(), (snap.meta.last_log_id, want_hash));
        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snap.meta);
    }
    let (_log_f, mut follower) = tally_store::open(dir_f.path()).unwrap();
    assert_eq!(
        follower.applied_state().await.unwrap(),
        (snap.meta.last_log_id, snap.meta.last_membership.clone())
    );
    assert_eq!(
        follower.reader().state_hash(),
        (snap.meta.last_log_id, want_hash)
    );
    // The snapshot carried the history and events it covers: the node that caught up by
    // snapshot serves the same history and event stream as the one that applied every entry.
    let leader_history = leader.reader().history(&account(0), None, 100).unwrap();
    assert!(!leader_history.is_empty());
    assert_eq!(
        follower.reader().history(&account(0), None, 100).unwrap(),
        leader_history
    );
    assert_eq!(
        follower.reader().events_from(1, 1000).unwrap(),
        leader.reader().events_from(1, 1000).unwrap()
    );
    assert_eq!(
        follower.reader().latest_event_seq(),
        leader.reader().latest_event_seq()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, sm) = tally_store::open(dir.path()).unwrap();
    let reader = sm.reader();
    let err = reader
        .history(&account(0), None, tally_store::HISTORY_LIMIT_MAX + 1)
        .unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    let err = reader
        .events_from(0, tally_store::EVENTS_LIMIT_MAX + 1)
        .unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    assert!(reader.history(&account(0), None, 0).unwrap().is_empty());
}

/// Entries that journal far more than one block holds (every usage entry here settles 700
/// events): their journal is split over several blocks, and every seq, every history page and
/// every `before_seq` still reads back exactly, also after a restart from a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_entries_split_into_blocks_read_back_exactly() {
    const ACCOUNTS: u64 = 700;
    let entries = scenario(ACCOUNTS, 4);
    let reference = Reference::new(&entries);
    let n = entries.len();
    let largest = reference
        .results
        .iter()
        .map(|r| r.journal.iter().map(journal_bytes).sum::<usize>())
        .max()
        .unwrap();
    assert!(
        largest > 4 * tally_store::JOURNAL_BLOCK_BYTES_TARGET,
        "the scenario must journal several blocks per entry, largest entry journals {largest} bytes"
    );
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm) = tally_store::open(dir.path()).unwrap();
        sm.apply([membership(1, 1, &[1, 2, 3]), blank(1, 2)])
            .await
            .unwrap();
        apply_range(&mut sm, &entries, 0..n, &reference).await;
        check_reads(&sm.reader(), &reference, n, ACCOUNTS);
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    }
    let (_log, sm) = tally_store::open(dir.path()).unwrap();
    check_reads(&sm.reader(), &reference, n, ACCOUNTS);
}

/// About what one journal entry takes in a block (its bincode), to size the scenario.
fn journal_bytes(entry: &tally_core::JournalEntry) -> usize {
    bincode::serialized_size(entry).unwrap() as usize
}

/// A snapshot built while entries go on being applied (3,000 accounts: the build takes the
/// state's lock three times and more, and entries may apply in between; that they are kept
/// out of it is checked step by step in tally-core's property test) holds the state at the
/// one index it names: a restart from it has that state's hash, and the rest of the log
/// applies on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_built_while_entries_apply_is_of_the_index_it_names() {
    let entries = scenario(3_000, 20);
    let reference = Reference::new(&entries);
    let n = entries.len();
    let start_at = n / 2;
    let dir = tempfile::tempdir().unwrap();
    let snapshot_log_id;
    {
        let (_log, mut sm) = tally_store::open(dir.path()).unwrap();
        sm.apply([membership(1, 1, &[1, 2, 3]), blank(1, 2)])
            .await
            .unwrap();
        apply_range(&mut sm, &entries, 0..start_at, &reference).await;
        let mut builder = sm.get_snapshot_builder().await;
        let building = tokio::spawn(async move { builder.build_snapshot().await.unwrap() });
        apply_range(&mut sm, &entries, start_at..n, &reference).await;
        let snap = building.await.unwrap();
        snapshot_log_id = snap.meta.last_log_id;
        assert_eq!(sm.reader().state_hash().1, reference.states[n].state_hash());
    }
    let index = snapshot_log_id.unwrap().index;
    assert!(index >= start_at as u64 - 1 + FIRST_NORMAL);
    let applied = (index + 1 - FIRST_NORMAL) as usize;
    let (_log, mut sm) = tally_store::open(dir.path()).unwrap();
    let reader = sm.reader();
    assert_eq!(sm.applied_state().await.unwrap().0, snapshot_log_id);
    assert_eq!(
        reader.state_hash(),
        (snapshot_log_id, reference.states[applied].state_hash()),
        "the snapshot names index {index} but holds another state"
    );
    // The account heads it carries chain each account's history on from where it was.
    for a in (0..3_000).step_by(97) {
        let acct = account(a);
        let want = reference.history(applied, &acct);
        assert_eq!(reader.history(&acct, None, 1_000).unwrap(), want, "{acct}");
    }
    apply_range(&mut sm, &entries, applied..n, &reference).await;
    assert_eq!(reader.state_hash().1, reference.states[n].state_hash());
    for a in (0..3_000).step_by(97) {
        let acct = account(a);
        let want = reference.history(n, &acct);
        assert!(!want.is_empty());
        assert_eq!(reader.history(&acct, None, 1_000).unwrap(), want, "{acct}");
    }
    reader.with_state(|s| s.check_invariants()).unwrap();
}

/// A store with the membership, the leader's blank entry and the first `upto(n)` of the n
/// entries of a two-account scenario applied.
async fn two_accounts_applied(
    upto: impl Fn(usize) -> usize,
) -> (
    tempfile::TempDir,
    Vec<tally_core::Entry>,
    Reference,
    tally_store::LogStore,
    StateMachineStore,
) {
    let entries = scenario(2, 20);
    let reference = Reference::new(&entries);
    let dir = tempfile::tempdir().unwrap();
    let (log, mut sm) = tally_store::open(dir.path()).unwrap();
    sm.apply([membership(1, 1, &[1, 2]), blank(1, 2)])
        .await
        .unwrap();
    apply_range(&mut sm, &entries, 0..upto(entries.len()), &reference).await;
    (dir, entries, reference, log, sm)
}

/// Builds a snapshot; a build that fails to write its file is not a storage error either.
async fn build(sm: &mut StateMachineStore) -> openraft::Snapshot<tally_store::TypeConfig> {
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("a build is never a storage error for its own file")
}

/// A snapshot build that cannot write its file (the disk full; here a directory in the way of
/// the build's temp file) is not a fatal storage error: the build answers the current
/// snapshot's meta, which openraft takes as nothing new, the node goes on applying and
/// reading, and builds are not tried again at once (openraft asks at every commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_build_that_cannot_write_its_file_leaves_the_node_running() {
    let (dir, entries, reference, _log, mut sm) = two_accounts_applied(|n| n / 2).await;
    let n = entries.len();
    let first = build(&mut sm).await;
    assert_eq!(
        first.meta.last_log_id.map(|id| id.index),
        Some(n as u64 / 2 + 2)
    );

    apply_range(&mut sm, &entries, n / 2..n - 2, &reference).await;
    let obstacle = dir.path().join("snapshots/current.snap.build");
    std::fs::create_dir(&obstacle).unwrap();
    let failed = build(&mut sm).await;
    assert_eq!(failed.meta, first.meta, "the current snapshot, nothing new");
    // The node goes on: applies and reads as before.
    apply_range(&mut sm, &entries, n - 2..n, &reference).await;
    check_reads(&sm.reader(), &reference, n, 2);
    // Not tried again at once, even with the way clear.
    std::fs::remove_dir(&obstacle).unwrap();
    let soon = build(&mut sm).await;
    assert_eq!(soon.meta, first.meta);
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, first.meta);
}

/// The bytes of the snapshot sent to other nodes, as `get_current_snapshot` answers now.
async fn outgoing_bytes(
    sm: &mut StateMachineStore,
) -> (openraft::SnapshotMeta<u64, openraft::BasicNode>, Vec<u8>) {
    let mut snapshot = sm.get_current_snapshot().await.unwrap().unwrap();
    let mut bytes = Vec::new();
    snapshot.snapshot.read_to_end(&mut bytes).await.unwrap();
    (snapshot.meta, bytes)
}

/// Damages the first journal block of the store in `dir`.
fn damage_journal(dir: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    let journal = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("journal.dat"))
        .unwrap();
    journal.write_all_at(&[0xA5; 16], 40).unwrap();
}

/// A snapshot for another node that cannot be assembled (here a damaged journal block; a full
/// disk alike) is not a storage error, which would stop the sending node (openraft 0.9): an
/// empty snapshot stands for it, which receivers refuse (`tally-raft`), and the node goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_cannot_be_assembled_for_another_node_leaves_this_one_running() {
    let (dir, entries, reference, _log, mut sm) = two_accounts_applied(|n| n - 2).await;
    let n = entries.len();
    let built = build(&mut sm).await;
    damage_journal(dir.path());
    let (meta, bytes) = outgoing_bytes(&mut sm).await;
    assert_eq!(meta, built.meta);
    assert!(bytes.is_empty(), "an empty snapshot stands for it");
    // The node goes on applying.
    apply_range(&mut sm, &entries, n - 2..n, &reference).await;
    // Not tried again at once (the failure is logged, the next try in 60 s).
    let (_, bytes) = outgoing_bytes(&mut sm).await;
    assert!(bytes.is_empty());
}

/// The snapshot for other nodes is assembled once per snapshot and sent as it is to every
/// later request (openraft asks again for every receiver and every retry; assembling read
/// the whole journal each time, on the task that applies entries), until a newer snapshot is
/// built. Shown by damaging the journal after the first assembly: the kept one is still sent
/// whole, and only the next snapshot's assembly meets the damage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_for_other_nodes_is_assembled_once_per_snapshot() {
    let (dir, entries, reference, _log, mut sm) = two_accounts_applied(|n| n - 2).await;
    let n = entries.len();
    build(&mut sm).await;
    let (meta, first) = outgoing_bytes(&mut sm).await;
    assert!(!first.is_empty());
    damage_journal(dir.path());
    // Two at once read the same bytes, each from the start.
    let mut a = sm.get_current_snapshot().await.unwrap().unwrap();
    let mut b = sm.get_current_snapshot().await.unwrap().unwrap();
    let (mut bytes_a, mut bytes_b) = (Vec::new(), Vec::new());
    let mut half = vec![0; first.len() / 2];
    a.snapshot.read_exact(&mut half).await.unwrap();
    b.snapshot.read_to_end(&mut bytes_b).await.unwrap();
    a.snapshot.read_to_end(&mut bytes_a).await.unwrap();
    half.extend_from_slice(&bytes_a);
    assert_eq!((a.meta, b.meta), (meta.clone(), meta));
    assert!(
        half == first && bytes_b == first,
        "the kept assembly, read twice"
    );

    apply_range(&mut sm, &entries, n - 2..n, &reference).await;
    let newer = build(&mut sm).await;
    let (meta, bytes) = outgoing_bytes(&mut sm).await;
    assert_eq!(meta, newer.meta);
    assert!(
        bytes.is_empty(),
        "the newer snapshot is assembled anew, and meets the damage"
    );
}

/// An assembly that outlasts the wait (a long history) does not hold up the caller, which is
/// openraft's apply task: it is answered with an empty snapshot (refused by the receiver, and
/// asked for again), entries go on being applied, and a later request gets the assembly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_assembly_for_other_nodes_is_not_waited_for() {
    let (_dir, entries, reference, _log, mut sm) = two_accounts_applied(|n| n - 2).await;
    let n = entries.len();
    let built = build(&mut sm).await;
    sm.set_outgoing_snapshot_wait_for_tests(std::time::Duration::ZERO);
    let (meta, bytes) = outgoing_bytes(&mut sm).await;
    assert_eq!(meta, built.meta);
    assert!(bytes.is_empty(), "not ready: the empty snapshot");
    apply_range(&mut sm, &entries, n - 2..n, &reference).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (meta, bytes) = outgoing_bytes(&mut sm).await;
        if !bytes.is_empty() {
            assert_eq!(meta, built.meta);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never assembled");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// While the current snapshot is being assembled for another node, no newer one is built
/// (openraft asks again later): a newer one would make the assembly stale before it is sent,
/// and snapshots built more often than one can be assembled would keep a new node from ever
/// getting one. The build after it goes ahead, and the next request assembles that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_snapshot_is_built_while_the_current_one_is_assembled_for_another_node() {
    let (_dir, entries, reference, _log, mut sm) = two_accounts_applied(|n| n - 2).await;
    let n = entries.len();
    let first = build(&mut sm).await;
    sm.hold_outgoing_snapshot_assembly_for_tests(true);
    let (_, bytes) = outgoing_bytes(&mut sm).await;
    assert!(bytes.is_empty(), "being assembled");
    apply_range(&mut sm, &entries, n - 2..n, &reference).await;
    let deferred = build(&mut sm).await;
    assert_eq!(deferred.meta, first.meta, "no newer snapshot meanwhile");
    sm.hold_outgoing_snapshot_assembly_for_tests(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (meta, bytes) = outgoing_bytes(&mut sm).await;
        if !bytes.is_empty() {
            assert_eq!(meta, first.meta, "the assembly that was at work is sent");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never assembled");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let newer = build(&mut sm).await;
    assert_ne!(newer.meta, first.meta, "built once the assembly is done");
    let (meta, bytes) = outgoing_bytes(&mut sm).await;
    assert_eq!(meta, newer.meta);
    assert!(!bytes.is_empty());
}

/// A data directory that lost part of what its snapshot's history needs (`state/` deleted,
/// `journal.dat` emptied or deleted) is refused at open, naming what and pointing to Recovery,
/// instead of starting a node that answers for balances whose history it cannot show. An
/// intact one opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_missing_its_snapshots_history_is_refused_at_open() {
    for (damage, named) in [
        ("state deleted", "holds a snapshot but no state/ directory"),
        ("state emptied", "state/ locates none of it"),
        (
            "journal emptied",
            "journal.dat was lost, truncated or replaced",
        ),
        (
            "journal deleted",
            "journal.dat was lost, truncated or replaced",
        ),
    ] {
        let (dir, _, _, log, mut sm) = two_accounts_applied(|n| n).await;
        let built = build(&mut sm).await;
        assert!(
            sm.reader()
                .with_state(|state| state.journal_seq() > 0 && state.event_seq() > 0),
            "the scenario writes journal entries and ledger events"
        );
        drop((log, sm));
        drop(tally_store::open(dir.path()).expect("an intact data directory opens"));
        let path = dir.path();
        match damage {
            "state deleted" => std::fs::remove_dir_all(path.join("state")).unwrap(),
            "state emptied" => {
                std::fs::remove_dir_all(path.join("state")).unwrap();
                std::fs::create_dir(path.join("state")).unwrap();
            }
            "journal emptied" => std::fs::File::create(path.join("journal.dat"))
                .map(drop)
                .unwrap(),
            _ => std::fs::remove_file(path.join("journal.dat")).unwrap(),
        }
        let error = tally_store::open(path)
            .err()
            .unwrap_or_else(|| panic!("{damage}: opened"))
            .to_string();
        if damage == "state deleted" {
            assert!(!path.join("state").exists(), "no empty state/ left behind");
        }
        assert!(
            error.contains(named) && error.contains("Recovery"),
            "{damage} (snapshot at {:?}): {error}",
            built.meta.last_log_id
        );
    }
}
