//! Storage for a Tally node: openraft's log and state machine over sled, with fsynced writes.
//!
//! # Public API
//! - [`open`]`(dir) -> Result<(`[`LogStore`]`, `[`StateMachineStore`]`), `[`StoreError`]`>`:
//!   opens (or creates) a node's data directory: `dir/sled` (the Raft log, vote, committed
//!   index), `dir/state` (journal, history index, events, last applied; a separate sled
//!   database so an append's sync does not wait for them) and `dir/snapshots/current.snap`. Get a [`LedgerReader`] with
//!   `sm.reader()`, then hand both halves to `openraft::Raft::new`. One process per directory:
//!   a second open while another is live fails (after [`SLED_LOCK_WAIT_MS_MAX`]).
//! - [`LogStore`]: `RaftLogStorage` + `RaftLogReader` (storage-v2). An append is acknowledged
//!   to openraft (its `LogFlushed` callback) only after sled `flush()` plus a real
//!   `fdatasync` (see `durable.rs` for why sled's own flush is not enough); one sync per append
//!   call, whatever its size. `save_vote` and `truncate`/`purge` sync too; `save_committed`
//!   rides on the next sync (a lost committed index is only older, which is safe).
//! - [`StateMachineStore`]: `RaftStateMachine`. Holds the in-memory `tally_core::LedgerState`;
//!   applies Normal entries with `LedgerState::apply` and answers [`EntryResponse`]` { outcomes }`
//!   (Blank and Membership entries answer the default, membership is recorded). Journal
//!   entries, the per-account history index, ledger events, `last_applied` and membership go
//!   to sled in ONE batch per applied batch, written before the state lock is released (who
//!   sees the state at index N finds N's journal rows). The state itself is persisted by
//!   snapshots: on open the latest snapshot is loaded, `applied_state()` reports its last
//!   applied log id, and openraft re-applies the committed log after it (journal and event
//!   keys are the deterministic seqs, so re-applying rewrites the same rows).
//! - Snapshots: built on openraft's request (state, last applied, membership, checked by
//!   SHA-256), written with fsync (temp file, rename, directory fsync) before openraft may
//!   purge the log they cover; received snapshots are verified (hash, header, ledger
//!   invariants) before they replace anything. A snapshot also carries the journal,
//!   history-index and event rows it covers, so after one is INSTALLED from the leader this
//!   node's `history`/`events_from` are as complete as the leader's.
//! - [`LedgerReader`] (from [`StateMachineStore::reader`]; cheap to clone, `Send + Sync`, all
//!   methods synchronous and short):
//!   `with_state(|s: &LedgerState| ..)`, `with_applied_state(|s, last_applied| ..)`,
//!   `last_applied()`, `membership()`, `state_hash() -> (Option<LogId>, [u8; 32])` (read
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
//! is an error, never misread. Log keys are the index as big-endian u64.
//!
//! Cost (measured on the dev VM, ext4, debug build, `tests/append_cost.rs`): one append of one
//! small entry + flush + fdatasync ~0.4 ms p50 (p99 ~4.5 ms); 64 entries per append ~2.7 ms.

mod codec;
mod durable;
mod error;
mod log_store;
mod reader;
mod snapshot;
mod state_machine;
pub mod types;

use std::path::Path;
use std::sync::Arc;

pub use error::StoreError;
pub use log_store::LogStore;
pub use reader::{LedgerReader, EVENTS_LIMIT_MAX, HISTORY_LIMIT_MAX};
pub use state_machine::{SnapshotBuilder, StateMachineStore};
pub use types::{EntryResponse, NodeId, TypeConfig};

/// sled's page cache budget, per database (the log's and the state machine's). sled's default is
/// 1 GiB; the state lives in memory anyway and the log is read mostly at its tail, so a smaller
/// cache suffices.
pub const SLED_CACHE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// How long `open` waits for sled's directory lock. sled 0.34 releases it only when its last
/// background job has dropped the database, a few milliseconds after the last handle is
/// dropped, so reopening in the same process right after a drop can briefly find it taken.
/// Another live process holding the directory still fails after this wait.
pub const SLED_LOCK_WAIT_MS_MAX: u64 = 2_000;

/// Opens or creates the store in `dir`.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create dir", dir, e))?;
    // Two sled databases: sled's `flush()` writes every dirty buffer of its database, so with
    // the state machine's journal rows in the log's database each acknowledged append also
    // waited for rows that never need to be durable (they are rebuilt from the log). Apart,
    // an append syncs only the log.
    let log_dir = dir.join("sled");
    let log_db = open_sled(&log_dir)?;
    let log_disk = Arc::new(durable::DiskSync::new(&log_dir)?);
    let state_dir = dir.join("state");
    let state_db = open_sled(&state_dir)?;
    let state_disk = Arc::new(durable::DiskSync::new(&state_dir)?);
    let log = LogStore::open(log_db, log_disk)?;
    let sm = StateMachineStore::open(state_db, state_disk, &dir.join("snapshots"))?;
    Ok((log, sm))
}

fn open_sled(sled_dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(SLED_LOCK_WAIT_MS_MAX);
    loop {
        let result = sled::Config::new()
            .path(sled_dir)
            .cache_capacity(SLED_CACHE_BYTES_MAX)
            .open();
        match result {
            Err(sled::Error::Io(ref e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.map_err(StoreError::sled("open")),
        }
    }
}
