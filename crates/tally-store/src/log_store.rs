//! The Raft log, the vote and the committed index: openraft's `RaftLogStorage` over append-only
//! segment files of our own (`dir/raft-log/`), one `pwrite` and one `fdatasync` per append.
//!
//! Why not sled: sled 0.34's `flush()` rewrites its page buffers and then needs our extra
//! `fdatasync`s (see `durable.rs`); measured on the dev VM that cost 4-5 ms per append, and
//! openraft 0.9's RaftCore waits for every append to be durable before it does anything else,
//! so the log's sync time bounded the whole node to a couple of hundred entries a second. An
//! append-only file needs one sequential write and one `fdatasync` (~0.2 ms here).
//!
//! Layout of `dir/raft-log/`:
//! - `SEGMENT_FIRST_INDEX.seg` (20-digit, zero-padded): records of consecutive log indexes,
//!   starting at the index in the name. A new segment starts once the active one passes
//!   [`LogOptions::segment_bytes_target`], so purging can delete whole files.
//!   A record: `len: u32 LE` (payload bytes), `crc32: u32 LE` (over the next 24 bytes and the
//!   payload), `index: u64 LE`, `term: u64 LE`, `leader node id: u64 LE`, then the payload: the versioned bincode of the
//!   whole `openraft::Entry` (see `codec.rs`). The log id in the header lets `open`
//!   rebuild the index of the log without decoding any entry.
//! - `vote` and `purged`: the versioned bincode of the vote / the last purged log id behind a
//!   CRC, replaced atomically (write a temp file, fsync it, rename, fsync the directory).
//! - `committed`: the committed log id behind a CRC, overwritten in place and never synced on
//!   its own: a lost or torn committed index only makes the node learn it again from the
//!   leader. `read_committed` answers it only if this log (or the purge point) holds exactly
//!   that log id, so a committed index that reached the disk before the entries it names is
//!   never believed.
//!
//! Preallocation: the active segment is kept zero-filled ahead of its last record (a small
//! append that would pass the filled part writes [`PREALLOCATE_BYTES`] of zeros after its
//! records, in the same `pwrite`). An `fdatasync` of records written over such blocks flushes
//! data only; one that grows the file must also write the inode (its new size and blocks):
//! 90-140 us against 65-70 us on the dev VM (`cargo test -p tally-store --release --test
//! append_cost -- --ignored --nocapture`: one small entry per append, p50 91-101 -> 64-94 us;
//! 64 per append, 256-266 -> 148-181 us). Recovery reads an all-zero rest of a segment as its
//! clean end; a closed segment is trimmed to its records.
//!
//! Durability: `append` writes the records of the whole call with one `pwrite` and returns
//! (and calls its `LogFlushed` callback) only after `fdatasync` of the segment (and of the
//! directory when the append started a new segment), except, after
//! [`LogStore::sync_own_appends_in_parallel`], the entries this node appends as leader: those
//! are called back once written and synced on a thread of their own while they replicate,
//! and [`LogDurability`] tells what waits for that sync (see `log_sync`). `truncate`, `purge`
//! and `save_vote` are synced before they return. Recovery on open: every record's length, CRC and index are
//! checked; a damaged or short record in the LAST segment past the committed index this node
//! saved is taken for the torn write of an append that was never acknowledged, and the segment
//! is cut there (with a warning; the bytes cut are kept in `cut-FIRST-OFFSET.bin`, since a crash
//! cannot be told from damage inside an append: one append may write several records, any of
//! whose pages may be lost); damage in an earlier segment, or at or below that committed index
//! (openraft 0.9 saves a commit only after the append it covers was flushed, and
//! `save_committed` never saves one past what the background sync finished, so those entries
//! were synced and acknowledged), or a log that ends before it, is corruption and stops the
//! open with an error naming the file and the offset. (A cut there had let a node lose
//! committed entries and, with the others down or behind, elect a leader without them.)
//!
//! Reads: the most recent entries stay in memory (up to [`LogOptions::cache_bytes_max`], an
//! entry counted as three times its encoded size: it holds its encoding and its decoded form),
//! since replication and apply read the tail of the log; older entries are read back from the
//! segment files with `pread`.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    CommittedLeaderId, EntryPayload, LogId, OptionalSend, RaftLogReader, StorageError, Vote,
};

use crate::codec;
use crate::durable::sync_dir;
use crate::error::{sto, StoreError, Subject};
use crate::log_sync::{LogDurability, SyncJob, Syncer};
use crate::page_cache::Trim;
use crate::types::{NodeId, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;

/// Tuning of the log files; [`Default`] is what a node uses.
#[derive(Clone, Copy, Debug)]
pub struct LogOptions {
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes_target: u64,
    /// Decoded entries kept in memory for replication and apply, by their encoded size.
    pub cache_bytes_max: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes_target: 64 * 1024 * 1024,
            cache_bytes_max: 16 * 1024 * 1024,
        }
    }
}
/// Zeros written after a small append's records once it passes the zero-filled part of the
/// active segment (see the module docs).
const PREALLOCATE_BYTES: usize = 1024 * 1024;

/// The largest record buffer an append keeps for the next one (see `Log::records`): a peer
/// request holds at most 2 MiB of entries, one proposal at most 8,190 events.
const RECORD_BUFFER_KEPT_BYTES_MAX: usize = 4 * 1024 * 1024;

/// What [`PREALLOCATE_BYTES`] of zeros are written from.
static ZEROS: [u8; PREALLOCATE_BYTES] = [0; PREALLOCATE_BYTES];

/// Appends larger than this are written without preallocating after them: their data
/// outweighs the size update, and zero-filling as much again would double their writes.
const PREALLOCATE_APPEND_BYTES_MAX: usize = 64 * 1024;

/// The largest record payload accepted on read; anything larger is damage, not data.
const RECORD_PAYLOAD_BYTES_MAX: u32 = 256 * 1024 * 1024;
const HEADER_BYTES: usize = 32;
const SEGMENT_SUFFIX: &str = ".seg";

/// openraft's log store. Cheap to clone: the clone is also the log reader that replication
/// tasks use.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    options: LogOptions,
    log: Mutex<Log>,
    /// Where `save_committed` writes; overwritten in place.
    committed_file: File,
    /// How far the log is on disk (see `log_sync`).
    durability: LogDurability,
    /// Set by [`LogStore::sync_own_appends_in_parallel`]: this node's id, and the thread that
    /// syncs the entries it appends as leader.
    own_appends: OnceLock<(NodeId, Syncer)>,
}

struct Segment {
    first_index: u64,
    path: PathBuf,
    file: Arc<File>,
    /// The end of the last record.
    len: u64,
    /// The end of the zero-filled space after it (`len` when there is none).
    allocated: u64,
    /// How far its older pages were advised out of the page cache (see `page_cache`).
    trim: Trim,
}

/// Where one entry's record is.
#[derive(Clone, Copy)]
struct Slot {
    log_id: LogId<NodeId>,
    offset: u64,
    len: u32,
}

struct Log {
    /// Ordered by `first_index`; the last is the one appended to.
    segments: Vec<Segment>,
    /// One slot per entry in the log, for indexes `first_index ..`.
    slots: VecDeque<Slot>,
    first_index: u64,
    /// Decoded copies of the newest entries, for indexes `cache_first ..= last`.
    cache: VecDeque<(Entry, u32)>,
    cache_first: u64,
    cache_bytes: usize,
    cache_bytes_max: usize,
    vote: Option<Vote<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    /// Set when a write or sync failed: after a failed fsync the kernel may have dropped the
    /// dirty pages, so nothing later may be acknowledged.
    failed: Option<String>,
    /// The records of the last append, kept for the next one (up to
    /// [`RECORD_BUFFER_KEPT_BYTES_MAX`]): a buffer made anew for each append of large entries
    /// came from fresh pages that the kernel zeroes first (a follower at 4 x 8,190 spent 2.5%
    /// of its samples zeroing them).
    records: Vec<u8>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, recovering from a torn final append.
    pub(crate) fn open(dir: &Path, options: LogOptions) -> Result<Self, StoreError> {
        crate::durable::create_dir_durable(dir)?;
        // A vote read back from disk is never a committed one: openraft restores a node whose
        // committed vote names itself as leader at once, in its old term, without an election
        // (`Engine::startup`). A former leader restarted after the others moved on would then
        // replicate its stale term to any peer that forgot its own vote (a voter restarted on an
        // empty data directory), and the two could commit over entries the cluster had already
        // acknowledged. Uncommitted, the vote still binds this node to whom it voted for in
        // that term; it only has to win an election to lead again.
        let vote = read_small::<Vote<NodeId>>(&dir.join("vote"), "vote")?.map(|mut vote| {
            vote.committed = false;
            vote
        });
        let last_purged = read_small::<LogId<NodeId>>(&dir.join("purged"), "last purged log id")?;
        let committed_path = dir.join("committed");
        let committed_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&committed_path)
            .map_err(|e| StoreError::io("open", &committed_path, e))?;

        let mut log = Log {
            segments: Vec::new(),
            slots: VecDeque::new(),
            first_index: last_purged.map_or(0, |p| p.index + 1),
            cache: VecDeque::new(),
            cache_first: 0,
            cache_bytes: 0,
            cache_bytes_max: options.cache_bytes_max,
            vote,
            last_purged,
            failed: None,
            records: Vec::new(),
        };
        // Entries up to the committed index this node saved were synced here before it saved
        // it (openraft 0.9 saves a commit only after the append it covers is flushed): damage
        // to them is not the torn write of an unacknowledged append.
        let synced_through = std::fs::read(&committed_path)
            .ok()
            .and_then(|bytes| {
                unframed(&bytes)
                    .and_then(|body| codec::decode::<Option<LogId<NodeId>>>("committed", body).ok())
            })
            .flatten()
            .map(|committed| committed.index);
        let active_end = log.recover(dir, synced_through)?;
        if let Some(synced) = synced_through {
            let held = log.last_log_id().map(|id| id.index);
            if held.is_none_or(|held| held < synced) {
                return Err(StoreError::Corrupt {
                    what: "log",
                    reason: format!(
                        "{} holds the log up to {}, but entries up to {synced} were committed and                          synced on this node: they were lost from its disk. This node cannot                          rejoin with this data directory: see README, Recovery (remove it, then                          add it again on an empty one)",
                        dir.display(),
                        held.map_or("nothing".to_string(), |held| format!("index {held}")),
                    ),
                });
            }
        }
        if active_end != Some(log.next_index()) {
            // No segment yet, or the last one ends before a purge point a snapshot moved past
            // it: the next append must start a segment of its own to stay consecutive.
            log.start_segment(dir, log.next_index())?;
        }
        log.cache_first = log.next_index();
        // What recovery read may still be only in the page cache (a process killed before
        // its background sync ran): on disk before anything counts it as durable.
        let active = log.active();
        active
            .file
            .sync_data()
            .map_err(|e| StoreError::io("fdatasync", &active.path, e))?;
        sync_dir(dir)?;
        let durability = LogDurability::default();
        if let Some(last) = log.last_log_id() {
            durability.raise(last);
        }
        Ok(LogStore {
            inner: Arc::new(Shared {
                dir: dir.to_path_buf(),
                options,
                log: Mutex::new(log),
                committed_file,
                durability,
                own_appends: OnceLock::new(),
            }),
        })
    }

    /// From now on the entries this node (`node_id`) appends as leader are acknowledged to
    /// openraft once written, and synced by a thread of their own while they replicate (see
    /// `log_sync`). Whoever sends this node's commit index to other nodes must bound it with
    /// [`Self::durability`] (`TallyNetwork::with_commit_bound`); the state machine opened
    /// with this log waits for it before it applies. Without this call every append is synced
    /// before it is acknowledged.
    pub fn sync_own_appends_in_parallel(&self, node_id: NodeId) -> Result<(), StoreError> {
        if self.inner.own_appends.get().is_some() {
            return Ok(());
        }
        let syncer = Syncer::start(
            Arc::downgrade(&self.inner),
            |shared, log_id, took| {
                shared.durability.record_sync(took);
                shared.publish_synced(log_id);
            },
            Shared::fail,
        )?;
        let _ = self.inner.own_appends.set((node_id, syncer));
        Ok(())
    }

    /// How far this log is on disk.
    pub fn durability(&self) -> LogDurability {
        self.inner.durability.clone()
    }

    /// Whether `entries` are this node's own as leader, to be acknowledged before their sync:
    /// appended under this node's committed vote as leader, in its term, and none a
    /// membership change (openraft acts on those once committed, inside its core).
    fn own_leader_entries(&self, entries: &[Entry]) -> bool {
        let Some((own, _)) = self.inner.own_appends.get() else {
            return false;
        };
        let Some(vote) = self.lock().vote else {
            return false;
        };
        vote.committed
            && vote.leader_id.node_id == *own
            && entries.iter().all(|entry| {
                entry.log_id.leader_id == vote.leader_id
                    && !matches!(entry.payload, EntryPayload::Membership(_))
            })
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.inner.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_range<R: RangeBounds<u64>>(&self, range: R) -> Result<Vec<Entry>, StoreError> {
        let log = self.lock();
        let end_max = log.next_index();
        let start = match range.start_bound() {
            Bound::Included(n) => *n,
            Bound::Excluded(n) => n.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(log.first_index);
        let end = match range.end_bound() {
            Bound::Included(n) => n.saturating_add(1),
            Bound::Excluded(n) => *n,
            Bound::Unbounded => u64::MAX,
        }
        .min(end_max);
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        for index in start..end {
            out.push(log.entry(index)?);
        }
        Ok(out)
    }

    fn insert_entries<I>(&self, entries: I) -> Result<Option<Arc<File>>, StoreError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut guard = self.lock();
        let log = &mut *guard;
        if let Some(reason) = &log.failed {
            return Err(StoreError::Task(format!(
                "the log failed earlier: {reason}"
            )));
        }
        let mut entries = entries.into_iter().peekable();
        let Some(first) = entries.peek() else {
            return Ok(None);
        };
        let first_index = first.log_id.index;
        if log.slots.is_empty() && log.last_purged.is_none() && first_index != log.next_index() {
            // An empty log that was never purged may begin anywhere (openraft starts at 0; its
            // storage suite does not always).
            log.first_index = first_index;
            log.cache_first = first_index;
            if log.active().first_index != first_index {
                log.start_segment(&self.inner.dir, first_index)?;
                let stale: Vec<Segment> = log.segments.drain(..log.segments.len() - 1).collect();
                remove_segments(&stale)?;
                sync_dir(&self.inner.dir)?;
            }
        }
        if first_index < log.next_index() && first_index >= log.first_index {
            // Entries that replace a suffix (openraft normally truncates first): cut it here;
            // the append's fdatasync makes the shorter file durable with the new records.
            log.truncate_locked(&self.inner.dir, first_index)?;
            self.inner.durability.lower_to(log.last_log_id());
        }
        if first_index != log.next_index() {
            return Err(StoreError::InvalidArgument {
                field: "log_id.index",
                reason: format!(
                    "append at {first_index} would leave a hole: the log ends before {}",
                    log.next_index()
                ),
            });
        }
        let mut new_segment = false;
        if log.active().len >= self.inner.options.segment_bytes_target {
            // Rotation is rare: trim the closed segment to its records and make it durable
            // now, so only the active segment can ever have a torn tail.
            let closed = log.active();
            if closed.allocated > closed.len {
                closed
                    .file
                    .set_len(closed.len)
                    .map_err(|e| StoreError::io("truncate", &closed.path, e))?;
            }
            closed
                .file
                .sync_all()
                .map_err(|e| StoreError::io("fsync", &closed.path, e))?;
            // Read again only by a follower far behind or a restart: out of the page cache.
            Trim::all(&closed.file);
            log.start_segment(&self.inner.dir, first_index)?;
            new_segment = true;
        }
        let base = log.active().len;
        let mut buf = std::mem::take(&mut log.records);
        buf.clear();
        let mut new_slots = Vec::new();
        let mut new_cache = Vec::new();
        for (expected, entry) in (first_index..).zip(entries) {
            if entry.log_id.index != expected {
                return Err(StoreError::InvalidArgument {
                    field: "log_id.index",
                    reason: format!(
                        "entries of one append must be consecutive: {} after {}",
                        entry.log_id.index,
                        expected - 1
                    ),
                });
            }
            let offset = base + buf.len() as u64;
            let len = encode_record(&mut buf, &entry)?;
            new_slots.push(Slot {
                log_id: entry.log_id,
                offset,
                len,
            });
            new_cache.push((entry, len));
        }
        let active = log.active_mut();
        let records = buf.len();
        let end = base + records as u64;
        let mut written = active.file.write_all_at(&buf, base);
        let mut allocated = end;
        if written.is_ok() && end > active.allocated && records <= PREALLOCATE_APPEND_BYTES_MAX {
            // Past the zero-filled part: fill the next stretch right after the records, so the
            // appends that follow overwrite blocks the file already has (module docs). The
            // zeros come from a static (the kernel's zero page until read: no buffer to
            // allocate, clear and fault in for every mebibyte of log).
            written = active.file.write_all_at(&ZEROS[..], end);
            allocated = end + PREALLOCATE_BYTES as u64;
        }
        if let Err(e) = written {
            // Whatever part landed is beyond the slots we know and is cut at the next open
            // (a torn tail) or overwritten by the next append at the same offset.
            log.failed = Some(e.to_string());
            return Err(StoreError::io("write", &log.active().path, e));
        }
        active.len = end;
        active.allocated = active.allocated.max(allocated);
        // The records older than the page cache keeps were synced by earlier appends.
        active.trim.after_append(&active.file, end);
        let file = active.file.clone();
        if buf.capacity() <= RECORD_BUFFER_KEPT_BYTES_MAX {
            log.records = buf;
        }
        log.slots.extend(new_slots);
        for (entry, len) in new_cache {
            log.cache_push(entry, len);
        }
        if new_segment {
            sync_dir(&self.inner.dir)?;
        }
        Ok(Some(file))
    }

    /// `fdatasync`, on the calling task's thread (a follower's appends, and every append
    /// without `sync_own_appends_in_parallel`). openraft 0.9's RaftCore waits for every
    /// append's callback before it does anything else, so handing a sync it must wait for to
    /// a blocking thread would only add two thread switches to the path of every write
    /// (measured: about 35 context switches per one-event request on the leader with
    /// `spawn_blocking`).
    fn sync_file(&self, file: &File) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        if let Err(e) = file.sync_data() {
            self.inner.fail(e.to_string());
            return Err(StoreError::io("fdatasync", &self.inner.dir, e));
        }
        self.inner.durability.record_sync(started.elapsed());
        Ok(())
    }

    fn save_small<T: serde::Serialize>(
        &self,
        name: &str,
        what: &'static str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = framed(&codec::encode(what, value)?);
        crate::durable::replace_file(&self.inner.dir, name, &bytes)
    }
}

impl Shared {
    /// After a sync that covered the entries up to `log_id`: raises the durable mark if that
    /// entry is still in the log (not cut by a truncation meanwhile).
    fn publish_synced(&self, log_id: LogId<NodeId>) {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.slot(log_id.index).map(|s| s.log_id) == Some(log_id) {
            self.durability.raise(log_id);
        }
    }

    fn fail(&self, reason: String) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.failed.get_or_insert_with(|| reason.clone());
        self.durability.fail(reason);
    }
}

impl Log {
    fn next_index(&self) -> u64 {
        self.first_index + self.slots.len() as u64
    }

    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.slots.back().map(|s| s.log_id).or(self.last_purged)
    }

    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("the log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("the log always has an active segment")
    }

    fn slot(&self, index: u64) -> Option<Slot> {
        let pos = index.checked_sub(self.first_index)?;
        self.slots.get(usize::try_from(pos).ok()?).copied()
    }

    /// The segment holding `index`: the last one starting at or before it.
    fn segment_of(&self, index: u64) -> &Segment {
        let pos = self
            .segments
            .partition_point(|s| s.first_index <= index)
            .saturating_sub(1);
        &self.segments[pos]
    }

    fn entry(&self, index: u64) -> Result<Entry, StoreError> {
        if index >= self.cache_first {
            if let Some((entry, _)) = self.cache.get((index - self.cache_first) as usize) {
                return Ok(entry.clone());
            }
        }
        let slot = self
            .slot(index)
            .ok_or_else(|| StoreError::InvalidArgument {
                field: "index",
                reason: format!("log index {index} is not in the log"),
            })?;
        let segment = self.segment_of(index);
        let mut buf = vec![0u8; HEADER_BYTES + slot.len as usize];
        segment
            .file
            .read_exact_at(&mut buf, slot.offset)
            .map_err(|e| StoreError::io("read", &segment.path, e))?;
        match parse_record(&buf) {
            Parsed::Record {
                payload,
                index: found,
                ..
            } if found == index => codec::decode("log entry", payload),
            _ => Err(StoreError::Corrupt {
                what: "log record",
                reason: format!(
                    "{} at offset {}: the record of index {index} no longer reads back",
                    segment.path.display(),
                    slot.offset
                ),
            }),
        }
    }

    fn cache_push(&mut self, entry: Entry, len: u32) {
        if self.cache.is_empty() {
            self.cache_first = entry.log_id.index;
        }
        // A cached entry holds its encoding and its decoded form; the decoded form of usage
        // events is about twice the size of their encoding.
        let charge = len.saturating_mul(3);
        self.cache.push_back((entry, charge));
        self.cache_bytes += charge as usize;
        while self.cache_bytes > self.cache_bytes_max && self.cache.len() > 1 {
            if let Some((_, dropped)) = self.cache.pop_front() {
                self.cache_bytes -= dropped as usize;
                self.cache_first += 1;
            }
        }
    }

    /// Drops cached entries at or after `index` (truncate).
    fn cache_truncate(&mut self, index: u64) {
        while self.cache_first + (self.cache.len() as u64) > index {
            match self.cache.pop_back() {
                Some((_, len)) => self.cache_bytes -= len as usize,
                None => break,
            }
        }
        if self.cache.is_empty() {
            self.cache_first = index;
        }
    }

    /// Drops cached entries at or before `index` (purge).
    fn cache_purge(&mut self, index: u64) {
        while self.cache_first <= index {
            match self.cache.pop_front() {
                Some((_, len)) => {
                    self.cache_bytes -= len as usize;
                    self.cache_first += 1;
                }
                None => {
                    self.cache_first = index + 1;
                    break;
                }
            }
        }
    }

    /// Cuts the log before `index` (files and memory), without syncing. Returns whether
    /// anything was removed.
    fn truncate_locked(&mut self, dir: &Path, index: u64) -> Result<bool, StoreError> {
        if index >= self.next_index() {
            return Ok(false);
        }
        let index = index.max(self.first_index);
        let offset = self.slot(index).map_or(0, |s| s.offset);
        let keep = self
            .segments
            .partition_point(|s| s.first_index <= index)
            .max(1);
        let removed: Vec<Segment> = self.segments.drain(keep..).collect();
        remove_segments(&removed)?;
        let active = self.active_mut();
        active
            .file
            .set_len(offset)
            .map_err(|e| StoreError::io("truncate", &active.path, e))?;
        active.len = offset;
        active.allocated = offset;
        let keep_slots = (index - self.first_index) as usize;
        self.slots.truncate(keep_slots);
        self.cache_truncate(index);
        if !removed.is_empty() {
            sync_dir(dir)?;
        }
        Ok(true)
    }

    fn start_segment(&mut self, dir: &Path, first_index: u64) -> Result<(), StoreError> {
        let path = dir.join(segment_name(first_index));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| StoreError::io("create", &path, e))?;
        self.segments.push(Segment {
            first_index,
            path,
            file: Arc::new(file),
            len: 0,
            allocated: 0,
            trim: Trim::new(0),
        });
        Ok(())
    }

    /// Rebuilds the slots from the segment files, cutting a torn tail off the last one and
    /// deleting segments a purge had finished with. Returns the index after the last record
    /// of the last segment, if there is a segment.
    /// Damage at or below `synced_through` (entries this node synced and saw committed) is
    /// corruption wherever it is: the open fails, naming the file and offset.
    fn recover(
        &mut self,
        dir: &Path,
        synced_through: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let mut active_end = None;
        let mut names = Vec::new();
        let listing = std::fs::read_dir(dir).map_err(|e| StoreError::io("read dir", dir, e))?;
        for item in listing {
            let item = item.map_err(|e| StoreError::io("read dir", dir, e))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) {
                let first_index = stem.parse::<u64>().map_err(|_| StoreError::Corrupt {
                    what: "log segment name",
                    reason: format!("{name} in {} is not INDEX{SEGMENT_SUFFIX}", dir.display()),
                })?;
                names.push((first_index, item.path()));
            }
        }
        names.sort();
        let purged_index = self.last_purged.map(|p| p.index);
        let count = names.len();
        for (position, (first_index, path)) in names.into_iter().enumerate() {
            let is_last = position + 1 == count;
            let bytes = std::fs::read(&path).map_err(|e| StoreError::io("read", &path, e))?;
            let mut offset = 0usize;
            let mut expected = first_index;
            let mut kept = Vec::new();
            // Where the records end, and whether only zeros (or nothing) follow them.
            let (valid_len, clean_end) = loop {
                if offset == bytes.len() {
                    break (offset, true);
                }
                match parse_record(&bytes[offset..]) {
                    Parsed::Record {
                        index,
                        term,
                        node_id,
                        payload,
                    } if index == expected => {
                        let len = payload.len() as u32;
                        if purged_index.is_none_or(|p| index > p) {
                            kept.push(Slot {
                                log_id: LogId::new(CommittedLeaderId::new(term, node_id), index),
                                offset: offset as u64,
                                len,
                            });
                        }
                        offset += HEADER_BYTES + len as usize;
                        expected += 1;
                    }
                    _ if bytes[offset..].iter().all(|&byte| byte == 0) => {
                        // The zero-filled space after the last append: the clean end.
                        break (offset, true);
                    }
                    damaged => {
                        let reason = match damaged {
                            Parsed::Record { index, .. } => {
                                format!("record of index {index} where {expected} belongs")
                            }
                            Parsed::Short => "a short record".to_string(),
                            Parsed::BadLength(len) => format!("a record length of {len}"),
                            Parsed::BadCrc => "a record whose CRC does not match".to_string(),
                        };
                        if !is_last {
                            return Err(StoreError::Corrupt {
                                what: "log segment",
                                reason: format!(
                                    "{} at offset {offset}: {reason}; only the last segment may \
                                     end in a torn write. This node cannot rejoin with this data \
                                     directory: see README, Recovery",
                                    path.display()
                                ),
                            });
                        }
                        if let Some(synced) = synced_through.filter(|&synced| expected <= synced) {
                            return Err(StoreError::Corrupt {
                                what: "log segment",
                                reason: format!(
                                    "{} at offset {offset}: {reason}, at index {expected}, but \
                                     entries up to {synced} were committed and synced on this \
                                     node, so this is damage, not the torn write of an append \
                                     never acknowledged. This node cannot rejoin with this data \
                                     directory: see README, Recovery (remove it, then add it \
                                     again on an empty one)",
                                    path.display()
                                ),
                            });
                        }
                        tracing::warn!(
                            segment = %path.display(),
                            offset,
                            reason,
                            "cutting the torn tail of the log: an append that was never acknowledged"
                        );
                        break (offset, false);
                    }
                }
            };
            // The index after this segment's last record.
            let end = expected;
            if !is_last && purged_index.is_some_and(|p| end <= p + 1) {
                // Every entry in it was purged: a purge stopped before it deleted the file.
                std::fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
                continue;
            }
            for slot in kept {
                if self.slots.is_empty() && self.last_purged.is_none() {
                    // A log that was never purged begins at its first record.
                    self.first_index = slot.log_id.index;
                }
                if slot.log_id.index != self.next_index() {
                    return Err(StoreError::Corrupt {
                        what: "log",
                        reason: format!(
                            "{}: entry {} follows a log that ends before {}",
                            path.display(),
                            slot.log_id.index,
                            self.next_index()
                        ),
                    });
                }
                self.slots.push_back(slot);
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| StoreError::io("open", &path, e))?;
            if !clean_end {
                // A crash cannot be told from damage inside the last segment (one append may
                // write several records, any of whose pages may be lost), so the log is cut at
                // the first bad record either way; what is cut is kept beside it first, for
                // an operator to inspect when it was more than a torn final append.
                keep_cut_bytes(dir, first_index, valid_len, &bytes[valid_len..])?;
                file.set_len(valid_len as u64)
                    .map_err(|e| StoreError::io("truncate", &path, e))?;
                file.sync_all()
                    .map_err(|e| StoreError::io("fsync", &path, e))?;
            }
            self.segments.push(Segment {
                first_index,
                path,
                file: Arc::new(file),
                len: valid_len as u64,
                allocated: if clean_end {
                    bytes.len() as u64
                } else {
                    valid_len as u64
                },
                trim: Trim::new(0),
            });
            active_end = Some(end);
        }
        Ok(active_end)
    }
}

/// Writes the bytes cut off the end of the segment that starts at `first_index` (from
/// `offset` up to the last byte that is not zero: the zero-filled space after them is left
/// out) to `cut-FIRST-OFFSET.bin` in the log directory, synced, and names it in a warning.
/// Nothing reads it back.
fn keep_cut_bytes(
    dir: &Path,
    first_index: u64,
    offset: usize,
    cut: &[u8],
) -> Result<(), StoreError> {
    let written = cut
        .iter()
        .rposition(|&byte| byte != 0)
        .map_or(0, |last| last + 1);
    let path = dir.join(format!("cut-{first_index}-{offset}.bin"));
    let mut file = std::fs::File::create(&path).map_err(|e| StoreError::io("create", &path, e))?;
    file.write_all(&cut[..written])
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io("write", &path, e))?;
    sync_dir(dir)?;
    tracing::warn!(
        kept = %path.display(),
        bytes = written,
        "the bytes cut off the log are kept there; a cut of more than one append's records means the disk damaged acknowledged entries, which this node no longer has"
    );
    Ok(())
}

fn remove_segments(segments: &[Segment]) -> Result<(), StoreError> {
    for segment in segments {
        std::fs::remove_file(&segment.path)
            .map_err(|e| StoreError::io("remove", &segment.path, e))?;
    }
    Ok(())
}

fn segment_name(first_index: u64) -> String {
    format!("{first_index:020}{SEGMENT_SUFFIX}")
}

/// Appends one record for `entry` to `buf`; returns the payload length.
fn encode_record(buf: &mut Vec<u8>, entry: &Entry) -> Result<u32, StoreError> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; 8]);
    buf.extend_from_slice(&entry.log_id.index.to_le_bytes());
    buf.extend_from_slice(&entry.log_id.leader_id.term.to_le_bytes());
    buf.extend_from_slice(&entry.log_id.leader_id.node_id.to_le_bytes());
    codec::encode_into("log entry", entry, buf)?;
    let len = buf.len() - start - HEADER_BYTES;
    let len = u32::try_from(len)
        .ok()
        .filter(|len| *len <= RECORD_PAYLOAD_BYTES_MAX)
        .ok_or_else(|| StoreError::Encode {
            what: "log entry",
            reason: format!("{len} bytes is more than one record may hold"),
        })?;
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(len)
}

enum Parsed<'a> {
    Record {
        index: u64,
        term: u64,
        node_id: u64,
        payload: &'a [u8],
    },
    Short,
    BadLength(u32),
    BadCrc,
}

fn parse_record(bytes: &[u8]) -> Parsed<'_> {
    if bytes.len() < HEADER_BYTES {
        return Parsed::Short;
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let long = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let len = word(0);
    if len == 0 || len > RECORD_PAYLOAD_BYTES_MAX {
        return Parsed::BadLength(len);
    }
    let end = HEADER_BYTES + len as usize;
    if bytes.len() < end {
        return Parsed::Short;
    }
    if crc32fast::hash(&bytes[8..end]) != word(4) {
        return Parsed::BadCrc;
    }
    Parsed::Record {
        index: long(8),
        term: long(16),
        node_id: long(24),
        payload: &bytes[HEADER_BYTES..end],
    }
}

/// `len u32 LE, crc32 u32 LE, body`: the frame of the small files (vote, purged, committed).
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn unframed(bytes: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let body = bytes.get(8..8 + len)?;
    (crc32fast::hash(body) == crc).then_some(body)
}

/// Reads a vote or purge point. Missing is `None`; these files are replaced atomically, so a
/// damaged one is corruption.
fn read_small<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<Option<T>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let body = unframed(&bytes).ok_or_else(|| StoreError::Corrupt {
                what,
                reason: format!("{}: length or CRC does not match", path.display()),
            })?;
            codec::decode(what, body).map(Some)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read", path, e)),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        self.read_range(range).map_err(sto(Subject::ReadLogs))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let log = self.lock();
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: log.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let this = self.clone();
        let vote = *vote;
        tokio::task::spawn_blocking(move || {
            this.save_small("vote", "vote", &vote)?;
            this.lock().vote = Some(vote);
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))
        .and_then(|r| r)
        .map_err(sto(Subject::WriteVote))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Never past what is on disk here: open takes entries up to the saved commit for
        // synced ones (see `log_sync`).
        let committed = self.inner.durability.bound_commit(committed);
        let bytes = codec::encode("committed log id", &committed)
            .map(|body| framed(&body))
            .map_err(sto(Subject::WriteLogs))?;
        // Not synced: see the module comment.
        self.inner
            .committed_file
            .write_all_at(&bytes, 0)
            .map_err(|e| StoreError::io("write", self.inner.dir.join("committed"), e))
            .map_err(sto(Subject::WriteLogs))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let path = self.inner.dir.join("committed");
        let bytes = std::fs::read(&path)
            .map_err(|e| StoreError::io("read", &path, e))
            .map_err(sto(Subject::ReadLogs))?;
        let Some(committed) = unframed(&bytes)
            .and_then(|body| codec::decode::<Option<LogId<NodeId>>>("committed", body).ok())
            .flatten()
        else {
            return Ok(None);
        };
        let log = self.lock();
        let held = log.slot(committed.index).map(|s| s.log_id) == Some(committed)
            || log.last_purged == Some(committed);
        Ok(held.then_some(committed))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|entry| entry.log_id) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let own = self.own_leader_entries(&entries);
        let synced = match self.insert_entries(entries) {
            Ok(Some(file)) if own => {
                // The leader's own entries: synced while they replicate; what makes their
                // commit visible waits for the sync (see `log_sync`).
                let (_, syncer) = self.inner.own_appends.get().expect("checked by own");
                self.inner.durability.queue(last);
                if syncer.queue(SyncJob { file, log_id: last }) {
                    Ok(())
                } else {
                    Err(StoreError::Task("the log sync thread stopped".to_string()))
                }
            }
            Ok(Some(file)) => self
                .sync_file(&file)
                .map(|()| self.inner.publish_synced(last)),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        // A follower's entries are durable before openraft hears of them: the callback is
        // what lets the leader count this node towards a commit quorum.
        match synced {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(sto(Subject::WriteLogs)(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.truncate_from(log_id.index))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))
            .and_then(|r| r)
            .map_err(sto(Subject::WriteLogs))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.purge_upto(log_id))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))
            .and_then(|r| r)
            .map_err(sto(Subject::WriteLogs))
    }
}

impl LogStore {
    /// Removes the entries at `index` and after, durably: a conflicting suffix that comes back
    /// after a crash could be applied.
    fn truncate_from(&self, index: u64) -> Result<(), StoreError> {
        let mut log = self.lock();
        if log.truncate_locked(&self.inner.dir, index)? {
            self.inner.durability.lower_to(log.last_log_id());
            let active = log.active();
            active
                .file
                .sync_all()
                .map_err(|e| StoreError::io("fsync", &active.path, e))?;
        }
        Ok(())
    }

    /// Records the purge point durably, then deletes the segments it made useless.
    fn purge_upto(&self, log_id: LogId<NodeId>) -> Result<(), StoreError> {
        if self
            .lock()
            .last_purged
            .is_some_and(|p| p.index >= log_id.index)
        {
            return Ok(());
        }
        self.save_small("purged", "last purged log id", &log_id)?;
        let mut log = self.lock();
        log.last_purged = Some(log_id);
        // What a purge covers is in a snapshot on disk (one this node built from what it
        // applied, or one installed, synced, from the leader): durable, though the log may
        // never have held it.
        self.inner.durability.raise(log_id);
        let next = log.next_index().max(log_id.index + 1);
        let drop_slots =
            ((log_id.index + 1).saturating_sub(log.first_index) as usize).min(log.slots.len());
        log.slots.drain(..drop_slots);
        log.first_index = log_id.index + 1;
        log.cache_purge(log_id.index);
        if log.slots.is_empty() && log.active().first_index != next {
            // Nothing left (or a snapshot from the leader jumped past the whole log): start
            // afresh at the index after the purge point, so the next append is consecutive
            // within its segment.
            log.start_segment(&self.inner.dir, next)?;
            log.cache_first = next;
        }
        // Every segment but the active one whose successor starts at or before the first
        // kept index holds only purged entries.
        let useless =
            log.segments[1..].partition_point(|next| next.first_index <= log_id.index + 1);
        let removed: Vec<Segment> = log.segments.drain(..useless).collect();
        drop(log);
        remove_segments(&removed)?;
        sync_dir(&self.inner.dir)
    }
}
