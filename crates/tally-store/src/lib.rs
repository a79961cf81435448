//! Storage for a Tally node: openraft's log (append-only segment files, fdatasync per append)
//! and state machine (in memory; the journal in an append-only file located through sled;
//! snapshots), with durable writes.
//!
//! # Public API
//! - [`open`]`(dir) -> Result<(`[`LogStore`]`, `[`StateMachineStore`]`), `[`StoreError`]`>`:
//!   opens (or creates) a node's data directory: `dir/raft-log` (the Raft log segments, vote,
//!   purge point, committed index; see `log_store.rs`), `dir/state` (a sled database: journal,
//!   events, last applied) and `dir/snapshots/current.snap`. [`open_with`] takes
//!   [`LogOptions`] (segment size, cache size) for tests. Get a [`LedgerReader`] with
//!   `sm.reader()`, then hand both halves to `openraft::Raft::new`. One process per directory:
//!   a second open while another is live fails (sled's lock on `dir/state`, after
//!   [`SLED_LOCK_WAIT_MS_MAX`]). A directory whose log is in the old sled format (`dir/sled`)
//!   is refused with an error that says what to do.
//! - [`LogStore`]: `RaftLogStorage` + `RaftLogReader` (storage-v2). An append writes all its
//!   entries with one `pwrite` and is acknowledged to openraft (its `LogFlushed` callback)
//!   only after `fdatasync`; `save_vote`, `truncate` and `purge` are synced before they
//!   return; `save_committed` is not synced (a lost committed index is only older, and one
//!   that names an entry the log does not hold is ignored). A torn final append is cut off at
//!   open; damage anywhere else stops the open.
//! - [`StateMachineStore`]: `RaftStateMachine`. Holds the in-memory `tally_core::LedgerState`;
//!   applies Normal entries with `LedgerState::apply` and answers [`EntryResponse`]` { outcomes }`
//!   (Blank and Membership entries answer the default, membership is recorded). The journal
//!   entries of each applied entry go, in blocks of up to 16 KiB (each journal entry linked to
//!   the previous one of its account), to an append-only journal file with one write per
//!   applied batch, and a row locating each block (plus the ledger events) to sled, before
//!   the state lock is released (who sees the state at index N finds N's journal rows). The
//!   state itself is persisted by snapshots: on open the latest snapshot is loaded,
//!   `applied_state()` reports its last applied log id, and openraft re-applies the committed
//!   log after it (journal and event keys are the deterministic seqs, so re-applying rewrites
//!   the same blocks and rows).
//! - Snapshots: built on openraft's request (state, last applied, membership, checked by
//!   SHA-256), written with fsync (temp file, rename, directory fsync) before openraft may
//!   purge the log they cover; received snapshots are verified (hash, header, ledger
//!   invariants) before they replace anything. The snapshot kept on
//!   disk holds the state and the account history heads (its cost does not grow with the
//!   journal); the one sent to a follower also carries the journal blocks and event rows, so
//!   after one is INSTALLED from the leader this node's `history`/`events_from` are as
//!   complete as the leader's.
//! - [`LedgerReader`] (from [`StateMachineStore::reader`]; cheap to clone, `Send + Sync`, all
//!   methods synchronous and short but one):
//!   `with_state(|s: &LedgerState| ..)`, `async with_applied_state(|s, last_applied| ..)`
//!   (waits for a write in progress without blocking the runtime thread),
//!   `last_applied()`, `membership()`, `state_hash() -> (Option<LogId>, [u8; 32])`, `hash_at(index)` (the hash at exactly `index`, sent when it is applied) (read
//!   atomically), `history(account, before_seq, limit)` newest first, paged by `before_seq`
//!   (limit <= [`HISTORY_LIMIT_MAX`]), `journal_entry(seq)`, `events_from(seq, limit)` oldest
//!   first (limit <= [`EVENTS_LIMIT_MAX`]), `latest_event_seq()`, and
//!   `subscribe_events() -> tokio::sync::watch::Receiver<u64>` (the latest persisted event
//!   seq): a stream waits on `changed()`, then reads `events_from(last_seen + 1, ..)`. Reads
//!   see applied state; call `Raft::ensure_linearizable` first for a linearizable read.
//!   A limit above the maximum is an `InvalidArgument` error naming `limit`.
//! - [`TypeConfig`], [`EntryResponse`], [`NodeId`]: the openraft type configuration.
//!
//! Every value is bincode (varint) behind a format-version byte; a value of an unknown version
//! is an error, never misread. Log records carry a CRC32 and their log id. The two hottest
//! values, a ledger entry's usage commands and a journal entry, are written by hand in the same
//! bytes (and usage entries read by hand, with bincode answering whatever that reader declines):
//! see `binary.rs`.
//!
//! Page cache: the log's segments and the journal file keep only their newest 16 MiB cached
//! (`page_cache.rs`: `posix_fadvise(DONTNEED)` of the older pages as they grow, which never
//! drops data), so appends reuse pages the kernel already has rather than new ones, which on
//! a VM whose host takes back free memory cost about ten times as much to write into.
//!
//! Cost (measured on the dev VM, ext4, release build,
//! `cargo test -p tally-store --release --test append_cost -- --ignored --nocapture`): one
//! append of one small entry + fdatasync 81 us p50 (p99 114 us); 64 entries per append 167 us.
//! (The sled log this replaced: ~0.4 ms p50, p99 ~4.5 ms, 64 entries ~2.7 ms.)

mod binary;
mod codec;
mod durable;
mod error;
mod journal_file;
mod log_store;
mod log_sync;
mod page_cache;
mod reader;
mod snapshot;
mod state_machine;
mod test_hold;
pub mod types;

use std::path::Path;
use std::sync::Arc;

pub use error::StoreError;
pub use log_store::{LogOptions, LogStore};
pub use log_sync::{
    fail_next_log_sync_for_tests, hold_log_sync_for_tests, LogDurability, SyncHistogram,
    SYNC_BUCKETS_US,
};
pub use reader::{LedgerReader, EVENTS_LIMIT_MAX, HISTORY_LIMIT_MAX};
pub use state_machine::{
    MetaOnlySnapshots, SnapshotBuilder, StateMachineStore, JOURNAL_BLOCK_BYTES_TARGET,
};
pub use types::{EncodedEntry, EntryResponse, NodeId, TypeConfig};

/// sled's page cache budget, per database (the state machine's journal). sled's default is
/// 1 GiB; the state lives in memory anyway and the journal is written at its tail, so a small
/// cache suffices, but not too small: measured at 64 x 1 and 16 x 100 (`make bench`), 16 MiB
/// cost the nodes 25 to 75% more CPU per event and halved throughput (sled thrashes), while
/// 32, 64 and 128 MiB were alike within the run-to-run noise.
pub const SLED_CACHE_BYTES_MAX: u64 = 32 * 1024 * 1024;

/// How long `open` waits for sled's directory lock. sled 0.34 releases it only when its last
/// background job has dropped the database, a few milliseconds after the last handle is
/// dropped, so reopening in the same process right after a drop can briefly find it taken.
/// Another live process holding the directory still fails after this wait.
pub const SLED_LOCK_WAIT_MS_MAX: u64 = 2_000;

/// The file in a data directory naming the node whose store it is.
pub const NODE_ID_FILE: &str = "node-id";

/// Binds `dir` to node `node_id`: the first start writes the id to `dir/node-id` (durably), and
/// every later start must name the same id. A directory written by an older build without the
/// file is adopted by the id it is started with.
///
/// A data directory started under another node's id (a copied config with `node_id` left
/// unchanged) would otherwise run as a second member with that id: two nodes answering as one,
/// its log counted twice, acknowledged writes committed on one machine and lost.
pub fn claim_node_id(dir: &Path, node_id: u64) -> Result<(), StoreError> {
    durable::create_dir_durable(dir)?;
    let path = dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let stored: u64 = text.trim().parse().map_err(|_| StoreError::Corrupt {
                what: "node id file",
                reason: format!("{} holds {text:?}, not a node id", path.display()),
            })?;
            if stored != node_id {
                return Err(StoreError::InvalidArgument {
                    field: "node_id",
                    reason: format!(
                        "the data directory {} belongs to node {stored}, not node {node_id}: start it with node {stored}'s config, or give node {node_id} a data directory of its own",
                        dir.display()
                    ),
                });
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            durable::replace_file(dir, NODE_ID_FILE, format!("{node_id}\n").as_bytes())
        }
        Err(error) => Err(StoreError::io("read", &path, error)),
    }
}

/// Opens or creates the store in `dir`.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    open_with(dir, LogOptions::default())
}

/// [`open`] with log tuning other than the default (tests use small segments).
pub fn open_with(
    dir: &Path,
    log_options: LogOptions,
) -> Result<(LogStore, StateMachineStore), StoreError> {
    durable::create_dir_durable(dir)?;
    // A data directory from a build that kept the Raft log in sled: its log cannot be read
    // by this build, and starting without it would lose acknowledged entries.
    let old_log = dir.join("sled");
    if old_log.exists() {
        return Err(StoreError::Corrupt {
            what: "data directory",
            reason: format!(
                "{} holds a Raft log in the old sled format, which this build does not read; \
                 move the directory away and let the node rejoin (it catches up from the leader)",
                old_log.display()
            ),
        });
    }
    // The state machine's sled database first: its directory lock is what refuses a second
    // process on the same data directory, before anything touches the log.
    let state_dir = dir.join("state");
    // A snapshot without its `state/` (deleted, or a mount that failed): refused before sled
    // would create an empty one, which `mv state.saved state` would then nest the saved one
    // inside. (The snapshot's history is checked in full once the store is open.)
    if !state_dir.exists() && dir.join("snapshots").join("current.snap").exists() {
        return Err(state_machine::history_lost(format!(
            "{} holds a snapshot but no state/ directory: state/ was lost or replaced",
            dir.display()
        )));
    }
    let state_db = open_sled(&state_dir)?;
    let state_disk = Arc::new(durable::DiskSync::new(&state_dir)?);
    let log = LogStore::open(&dir.join("raft-log"), log_options)?;
    let journal = journal_file::JournalFile::open(&dir.join("journal.dat"))?;
    let mut sm = StateMachineStore::open(state_db, state_disk, journal, &dir.join("snapshots"))?;
    sm.wait_for_log(log.durability());
    Ok((log, sm))
}

fn open_sled(sled_dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(SLED_LOCK_WAIT_MS_MAX);
    let mut retried = false;
    loop {
        // No background flush: nothing relies on sled writing on its own (the state machine's
        // rows are rebuilt from the log after a crash, and a snapshot build syncs sled before
        // the snapshot is saved). sled's default flushes every 500 ms and, in between, hands
        // each sealed buffer to a pool thread that it often spawns anew: measured at 1 event
        // per request, 17% of the leader's CPU went to those threads.
        let result = sled::Config::new()
            .path(sled_dir)
            .cache_capacity(SLED_CACHE_BYTES_MAX)
            .flush_every_ms(None)
            .open();
        match result {
            Err(sled::Error::Io(ref e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error @ sled::Error::Corruption { .. })
                if !retried && remove_unfinished_sled_snapshots(sled_dir) =>
            {
                // Once: an open that fails again (or fails otherwise) is reported.
                retried = true;
                tracing::warn!(%error, "sled refused to open with an unfinished snapshot file; opening again without it");
            }
            Err(error) => {
                // A failed open (a full disk) may leave an unfinished snapshot behind: removed
                // now, so that the next start, once the cause is fixed, does not meet it.
                remove_unfinished_sled_snapshots(sled_dir);
                return Err(error).map_err(StoreError::sled("open"));
            }
            Ok(db) => return Ok(db),
        }
    }
}

/// Removes the `snap.*.generating` files in sled's directory: snapshots sled began writing and
/// never finished (a full disk: it leaves an empty one), which sled 0.34.7 then reads as its
/// latest snapshot and refuses to open ("Read corrupted data", spacejam/sled#1527), so a node
/// restarted while its disk was full never started again once space was freed. Unfinished by
/// their name (sled renames a snapshot when it is complete), they hold nothing sled needs.
/// Called only after an open failed other than on the directory lock, so no other process is
/// writing them: then the open is tried again, once, when sled found them corrupt, and in any
/// case they are not left behind. Returns whether one was removed.
fn remove_unfinished_sled_snapshots(sled_dir: &Path) -> bool {
    let Ok(listing) = std::fs::read_dir(sled_dir) else {
        return false;
    };
    let mut removed = false;
    for item in listing.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            match std::fs::remove_file(item.path()) {
                Ok(()) => {
                    tracing::warn!(path = %item.path().display(), "removed an unfinished sled snapshot");
                    removed = true;
                }
                Err(error) => {
                    tracing::warn!(path = %item.path().display(), %error, "cannot remove an unfinished sled snapshot");
                }
            }
        }
    }
    removed
}
