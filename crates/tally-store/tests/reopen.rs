//! Reopen-after-drop: what the log store acknowledged is what a new process finds.

mod common;

use common::*;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{RaftLogReader, Vote};

fn entry(i: u64) -> RaftEntry {
    match i % 7 {
        0 => blank(2, i),
        3 => membership(2, i, &[1, 2, 3]),
        _ => normal(
            2,
            i,
            tally_core::Entry {
                at_ms: BASE_MS + i,
                commands: vec![tally_core::Command::Usage(usage(1, i, BASE_MS + i, "1.5"))],
            },
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_vote_committed_truncate_purge_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = tally_store::open(dir.path()).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
        assert_eq!(log.read_vote().await.unwrap(), None);
        assert_eq!(log.read_committed().await.unwrap(), None);
        // Several appends of various sizes.
        let mut i = 1;
        for size in [1, 5, 10, 34] {
            log.blocking_append((i..i + size).map(entry)).await.unwrap();
            i += size;
        }
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        log.save_committed(Some(log_id(2, 40))).await.unwrap();
    }
    {
        let (mut log, _sm) = tally_store::open(dir.path()).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(2, 50)));
        assert_eq!(state.last_purged_log_id, None);
        let got = log.try_get_log_entries(1..=50).await.unwrap();
        assert_eq!(got, (1..=50).map(entry).collect::<Vec<_>>());
        assert_eq!(log.try_get_log_entries(10..13).await.unwrap().len(), 3);
        // The vote comes back for the same term and node, but not committed: a former leader
        // must win an election again rather than resume its old term at once.
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 40)));

        log.truncate(log_id(2, 45)).await.unwrap();
        log.purge(log_id(2, 10)).await.unwrap();
    }
    {
        let (mut log, _sm) = tally_store::open(dir.path()).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(2, 44)));
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 10)));
        let got = log.try_get_log_entries(..).await.unwrap();
        assert_eq!(got, (11..=44).map(entry).collect::<Vec<_>>());
        // The log goes on after the truncation point, with a new term.
        log.blocking_append([blank(3, 45)]).await.unwrap();
        // Purge everything: the last log id is then the purged one.
        log.purge(log_id(3, 45)).await.unwrap();
    }
    {
        let (mut log, _sm) = tally_store::open(dir.path()).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(3, 45)));
        assert_eq!(state.last_purged_log_id, Some(log_id(3, 45)));
        assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
        // The log goes on after a purge that emptied it.
        log.blocking_append((46..=60).map(|i| blank(3, i)))
            .await
            .unwrap();
    }
    {
        let (mut log, _sm) = tally_store::open(dir.path()).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(3, 60)));
        assert_eq!(log.try_get_log_entries(..).await.unwrap().len(), 15);
        // A snapshot installed from a leader purges past the end of this log; the log then
        // continues after the snapshot.
        log.purge(log_id(4, 100)).await.unwrap();
        log.blocking_append((101..=110).map(|i| blank(4, i)))
            .await
            .unwrap();
    }
    let (mut log, _sm) = tally_store::open(dir.path()).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(4, 110)));
    assert_eq!(state.last_purged_log_id, Some(log_id(4, 100)));
    let got = log.try_get_log_entries(..).await.unwrap();
    assert_eq!(got, (101..=110).map(|i| blank(4, i)).collect::<Vec<_>>());
}

/// The segment files of `dir`'s log, oldest first, with their sizes.
fn segment_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("raft-log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect();
    files.sort();
    files
}

/// Small appends leave zero-filled space after the last record (so their fdatasync need not
/// grow the file); a reopen reads that space as the clean end, appends after it continue right
/// behind the last record, a record torn in that space is cut, and a closed segment is trimmed
/// to its records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preallocated_space_is_the_clean_end_of_the_log() {
    let options = tally_store::LogOptions {
        segment_bytes_target: 512 * 1024,
        cache_bytes_max: 0,
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = tally_store::open_with(dir.path(), options).unwrap();
        for i in 1..=20 {
            log.blocking_append([entry(i)]).await.unwrap();
        }
    }
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    assert!(files[0].1 >= 1024 * 1024, "zero-filled ahead: {files:?}");
    let (path, size) = files[0].clone();
    let bytes = std::fs::read(&path).unwrap();
    let end_of_records = records_end(&bytes);
    assert!(end_of_records < 20 * 1024, "20 small records, then zeros");
    assert!(bytes[end_of_records..].iter().all(|&b| b == 0));
    {
        let (mut log, _sm) = tally_store::open_with(dir.path(), options).unwrap();
        assert_eq!(
            log.try_get_log_entries(..).await.unwrap(),
            (1..=20).map(entry).collect::<Vec<_>>()
        );
        // The zero-filled space is kept, and the next append lands right after record 20.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        for i in 21..=30 {
            log.blocking_append([entry(i)]).await.unwrap();
        }
    }
    let (mut log, sm) = tally_store::open_with(dir.path(), options).unwrap();
    assert_eq!(
        log.try_get_log_entries(..).await.unwrap(),
        (1..=30).map(entry).collect::<Vec<_>>()
    );
    drop((log, sm));

    // A torn append in the zero-filled space: a header and part of a payload, then zeros.
    let bytes = std::fs::read(&path).unwrap();
    let end_of_records = records_end(&bytes);
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut torn = bytes[..HEADER_OF_FIRST_RECORD].to_vec();
        torn.extend_from_slice(&[7u8; 40]);
        file.write_all_at(&torn, end_of_records as u64).unwrap();
    }
    let (mut log, sm) = tally_store::open_with(dir.path(), options).unwrap();
    assert_eq!(
        log.try_get_log_entries(..).await.unwrap(),
        (1..=30).map(entry).collect::<Vec<_>>(),
        "the torn record is cut, the acknowledged ones stay"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        end_of_records as u64,
        "cut back to the last whole record"
    );
    // What was cut is kept beside the log, without the zeros after it.
    let mut torn = bytes[..HEADER_OF_FIRST_RECORD].to_vec();
    torn.extend_from_slice(&[7u8; 40]);
    assert_eq!(
        std::fs::read(
            dir.path()
                .join(format!("raft-log/cut-1-{end_of_records}.bin"))
        )
        .unwrap(),
        torn
    );
    log.blocking_append([entry(31)]).await.unwrap();
    drop((log, sm));

    // Fill the segment past its target: it is closed (trimmed to its records) and the next
    // append starts a new one.
    let (mut log, sm) = tally_store::open_with(dir.path(), options).unwrap();
    let mut i = 32;
    while segment_files(dir.path()).len() < 2 {
        log.blocking_append([entry(i)]).await.unwrap();
        i += 1;
    }
    drop((log, sm));
    let files = segment_files(dir.path());
    let closed = std::fs::read(&files[0].0).unwrap();
    assert_eq!(
        records_end(&closed),
        closed.len(),
        "a closed segment ends with its last record"
    );
    let (mut log, _sm) = tally_store::open_with(dir.path(), options).unwrap();
    assert_eq!(
        log.try_get_log_entries(..).await.unwrap(),
        (1..i).map(entry).collect::<Vec<_>>()
    );
}

/// A record's header: length, CRC and the log id (see `log_store.rs`).
const HEADER_OF_FIRST_RECORD: usize = 32;

/// Where a segment's records end: follows each record's length until one reads 0.
fn records_end(bytes: &[u8]) -> usize {
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        at += HEADER_OF_FIRST_RECORD + len;
    }
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_entries_survive_reopen() {
    // Large entries in small segments: appends start new segment files, reads after a reopen
    // come from the files (the in-memory cache starts empty), and a purge deletes whole
    // segments it made useless.
    let options = tally_store::LogOptions {
        segment_bytes_target: 64 * 1024,
        cache_bytes_max: 0,
    };
    let segments = |dir: &std::path::Path| {
        std::fs::read_dir(dir.join("raft-log"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".seg")
            })
            .count()
    };
    let dir = tempfile::tempdir().unwrap();
    let big = |i: u64| {
        normal(
            1,
            i,
            tally_core::Entry {
                at_ms: BASE_MS + i,
                commands: vec![tally_core::Command::UsageBatch {
                    events: (0..4_000).map(|k| usage(i, k, BASE_MS, "2")).collect(),
                    atomic: false,
                }],
            },
        )
    };
    {
        let (mut log, _sm) = tally_store::open_with(dir.path(), options).unwrap();
        for i in 1..=3 {
            log.blocking_append([big(i)]).await.unwrap();
        }
        assert_eq!(
            log.try_get_log_entries(1..=3).await.unwrap(),
            (1..=3).map(big).collect::<Vec<_>>()
        );
    }
    assert_eq!(
        segments(dir.path()),
        3,
        "each large entry should open a new segment"
    );
    let (mut log, sm) = tally_store::open_with(dir.path(), options).unwrap();
    let got = log.try_get_log_entries(1..=3).await.unwrap();
    assert_eq!(got, (1..=3).map(big).collect::<Vec<_>>());
    log.purge(log_id(1, 2)).await.unwrap();
    assert_eq!(
        segments(dir.path()),
        1,
        "the segments of entries 1 and 2 are useless after the purge"
    );
    drop((log, sm));
    let (mut log, _sm) = tally_store::open_with(dir.path(), options).unwrap();
    assert_eq!(log.try_get_log_entries(..).await.unwrap(), vec![big(3)]);
}

/// Appends of large and small entries in turn, one after another into the same segment
/// (each append builds its records where the one before built its own): every entry reads
/// back as appended, from the file, before and after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_small_appends_in_turn_read_back_as_appended() {
    let options = tally_store::LogOptions {
        segment_bytes_target: 64 * 1024 * 1024,
        cache_bytes_max: 0,
    };
    let sized = |i: u64| {
        let events = match i % 3 {
            0 => 2_000,
            1 => 1,
            _ => 40,
        };
        normal(
            1,
            i,
            tally_core::Entry {
                at_ms: BASE_MS + i,
                commands: vec![tally_core::Command::UsageBatch {
                    events: (0..events).map(|k| usage(i, k, BASE_MS, "2")).collect(),
                    atomic: false,
                }],
            },
        )
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = tally_store::open_with(dir.path(), options).unwrap();
        for i in 1..=12 {
            log.blocking_append([sized(i)]).await.unwrap();
        }
        // Three entries in one append, the large one first.
        log.blocking_append([sized(13), sized(14), sized(15)])
            .await
            .unwrap();
        assert_eq!(
            log.try_get_log_entries(1..=15).await.unwrap(),
            (1..=15).map(sized).collect::<Vec<_>>()
        );
    }
    let (mut log, _sm) = tally_store::open_with(dir.path(), options).unwrap();
    assert_eq!(
        log.try_get_log_entries(..).await.unwrap(),
        (1..=15).map(sized).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_machine_membership_survives_snapshot_and_reopen() {
    use openraft::storage::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm) = tally_store::open(dir.path()).unwrap();
        sm.apply([membership(1, 1, &[1, 2, 3]), blank(1, 2)])
            .await
            .unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        // Applied after the snapshot: not reflected after a restart until re-applied.
        sm.apply([membership(1, 3, &[1, 2])]).await.unwrap();
    }
    let (_log, mut sm) = tally_store::open(dir.path()).unwrap();
    let (applied, mem) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 2)));
    assert_eq!(mem.log_id(), &Some(log_id(1, 1)));
    // While openraft starts (the guard held), the current snapshot is its meta alone.
    use tokio::io::AsyncReadExt;
    let meta_only = sm.meta_only_snapshots();
    let mut bare = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(bare.meta.last_log_id, Some(log_id(1, 2)));
    let mut data = Vec::new();
    bare.snapshot.read_to_end(&mut data).await.unwrap();
    assert!(data.is_empty());
    drop(meta_only);
    let mut snap = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(snap.meta, bare.meta);
    snap.snapshot.read_to_end(&mut data).await.unwrap();
    assert!(!data.is_empty());
}

#[test]
fn second_open_of_a_live_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _live = tally_store::open(dir.path()).unwrap();
    let err = tally_store::open(dir.path())
        .err()
        .expect("second open must fail");
    assert!(err.to_string().contains("lock"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_snapshot_file_stops_open_loudly() {
    use openraft::storage::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm) = tally_store::open(dir.path()).unwrap();
        sm.apply([membership(1, 1, &[1]), blank(1, 2)])
            .await
            .unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    }
    let path = dir.path().join("snapshots/current.snap");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = tally_store::open(dir.path())
        .err()
        .expect("damaged snapshot must not open");
    assert!(err.to_string().contains("snapshot"), "{err}");
}

#[test]
fn reader_is_a_cheap_shareable_handle() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<tally_store::LedgerReader>();
}

/// Damage inside the last segment past the committed index cannot be told from a torn final
/// append (one append may write several records and lose any of their pages), so the log is
/// cut at the first bad record; the bytes cut are kept in a file beside the log so that
/// nothing is destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_cut_off_the_last_segment_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    // Committed (synced and acknowledged) up to 9: damage past it may be a torn append.
    let (_, bytes, at) = thirty_entries_with_record_10_damaged(dir.path(), 9).await;
    let end_of_records = records_end(&bytes);
    let (mut log, _sm) = tally_store::open(dir.path()).unwrap();
    assert_eq!(
        log.try_get_log_entries(..).await.unwrap(),
        (1..=9).map(entry).collect::<Vec<_>>()
    );
    let mut cut = bytes[at..end_of_records].to_vec();
    cut[HEADER_OF_FIRST_RECORD + 3] ^= 0x01;
    // Kept up to the last byte that is not zero (the zero-filled space after it is left out).
    while cut.last() == Some(&0) {
        cut.pop();
    }
    assert_eq!(
        std::fs::read(dir.path().join(format!("raft-log/cut-1-{at}.bin"))).unwrap(),
        cut,
        "records 10..=30 kept as they were on disk"
    );
}

/// Writes entries 1..=30 one append each, saves `committed` as the committed index, and flips
/// a byte in record 10's payload. Returns the segment, its bytes before the flip, and record
/// 10's offset.
async fn thirty_entries_with_record_10_damaged(
    dir: &std::path::Path,
    committed: u64,
) -> (std::path::PathBuf, Vec<u8>, usize) {
    {
        let (mut log, _sm) = tally_store::open(dir).unwrap();
        for i in 1..=30 {
            log.blocking_append([entry(i)]).await.unwrap();
        }
        log.save_committed(Some(log_id(2, committed)))
            .await
            .unwrap();
    }
    let files = segment_files(dir);
    assert_eq!(files.len(), 1);
    let path = files[0].0.clone();
    let bytes = std::fs::read(&path).unwrap();
    // The offset of record 10: walk the lengths of the first nine.
    let mut at = 0;
    for _ in 0..9 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += HEADER_OF_FIRST_RECORD + len;
    }
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let flipped = bytes[at + HEADER_OF_FIRST_RECORD + 3] ^ 0x01;
        file.write_all_at(&[flipped], (at + HEADER_OF_FIRST_RECORD + 3) as u64)
            .unwrap();
    }
    (path, bytes, at)
}

/// Entries this node saw committed were synced before it saved the commit (openraft 0.9), so
/// damage at or below the committed index is not a torn append: the open fails naming the
/// file, and changes nothing (cutting there had let a node drop acknowledged entries and,
/// with the others down or behind, elect a leader without them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_to_committed_entries_of_the_last_segment_stops_open() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, at) = thirty_entries_with_record_10_damaged(dir.path(), 20).await;
    let damaged = std::fs::read(&path).unwrap();
    let error = tally_store::open(dir.path())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    for part in [
        &path.display().to_string(),
        &format!("offset {at}"),
        "index 10",
        "entries up to 20 were committed and synced on this node",
        "Recovery",
    ] {
        assert!(error.contains(part), "{part}: {error}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), damaged, "nothing cut");
    assert!(!dir.path().join(format!("raft-log/cut-1-{at}.bin")).exists());
}

/// A log that ends before the committed index this node saved lost synced entries (blocks
/// lost to the file system, a segment deleted): the open fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_ends_before_its_committed_index_stops_open() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes, at) = thirty_entries_with_record_10_damaged(dir.path(), 25).await;
    // Record 10 and everything after it zeroed: a clean end at index 9.
    std::fs::write(
        &path,
        [&bytes[..at], &vec![0u8; bytes.len() - at][..]].concat(),
    )
    .unwrap();
    let error = tally_store::open(dir.path())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("holds the log up to index 9, but entries up to 25 were committed"),
        "{error}"
    );
}

/// A data directory belongs to the node that first started on it: the same id again is
/// served, another id is refused naming `node_id` and both ids, and a directory from a build
/// before the node-id file is adopted by the id it is started with.
#[test]
fn a_data_directory_belongs_to_one_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node-1");
    tally_store::claim_node_id(&data, 1).unwrap();
    tally_store::claim_node_id(&data, 1).unwrap();
    let error = tally_store::claim_node_id(&data, 2)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("node_id") && error.contains("belongs to node 1, not node 2"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join(tally_store::NODE_ID_FILE)).unwrap(),
        "1\n",
        "a refused claim rewrites nothing"
    );
    // Written by an older build: a store, no node-id file.
    let older = dir.path().join("older");
    drop(tally_store::open(&older).unwrap());
    assert!(!older.join(tally_store::NODE_ID_FILE).exists());
    tally_store::claim_node_id(&older, 3).unwrap();
    assert!(tally_store::claim_node_id(&older, 1).is_err());
}

/// sled leaves an empty `snap.*.generating` file when the disk fills while it writes a
/// snapshot, and sled 0.34.7 then refuses to open for ever (spacejam/sled#1527: a node
/// restarted on a full disk never started again once space was freed). The unfinished file
/// is removed and the store opens with everything it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_sled_snapshot_does_not_keep_the_store_shut() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = tally_store::open(dir.path()).unwrap();
        log.blocking_append((1..=5).map(entry)).await.unwrap();
    }
    let unfinished = dir.path().join("state/snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&unfinished, b"").unwrap();
    let (mut log, _sm) = tally_store::open(dir.path()).expect("opens without it");
    assert!(!unfinished.exists());
    assert_eq!(
        log.try_get_log_entries(..).await.unwrap(),
        (1..=5).map(entry).collect::<Vec<_>>()
    );
}
