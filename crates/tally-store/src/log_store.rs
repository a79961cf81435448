//! The Raft log, the vote and the committed index: openraft's `RaftLogStorage` over sled.
//!
//! Layout: tree `log` maps the log index (big-endian u64) to the versioned bincode of the whole
//! `openraft::Entry`; tree `log_meta` holds `vote`, `committed` and `last_purged`.
//!
//! Durability: `append`, `save_vote` and `truncate` return (and `append` calls its
//! `LogFlushed` callback) only after [`DiskSync::sync`], i.e. sled `flush()` plus a real
//! `fdatasync`; one sync per call, whatever the number of entries. `save_committed` is not
//! synced on its own: a committed index that is lost in a crash is only older, which is safe,
//! and it becomes durable with the next synced write because sled's log is sequential.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogReader, StorageError, Vote};

use crate::codec::{self, u64_key};
use crate::durable::DiskSync;
use crate::error::{sto, StoreError, Subject};
use crate::types::{NodeId, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// openraft's log store. Cheap to clone: the clone is also the log reader that replication
/// tasks use.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<LogInner>,
}

struct LogInner {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    disk: Arc<DiskSync>,
}

impl LogStore {
    pub(crate) fn open(db: sled::Db, disk: Arc<DiskSync>) -> Result<Self, StoreError> {
        let log = db
            .open_tree("log")
            .map_err(StoreError::sled("open tree log"))?;
        let meta = db
            .open_tree("log_meta")
            .map_err(StoreError::sled("open tree log_meta"))?;
        let store = LogStore {
            inner: Arc::new(LogInner {
                db,
                log,
                meta,
                disk,
            }),
        };
        store.remove_purged_leftovers()?;
        Ok(store)
    }

    /// `purge` records `last_purged` before it deletes the entries; a crash in between leaves
    /// entries at or below it, which are finished off here.
    fn remove_purged_leftovers(&self) -> Result<(), StoreError> {
        if let Some(purged) = self.last_purged()? {
            self.remove_range(..=purged.index)?;
        }
        Ok(())
    }

    fn last_purged(&self) -> Result<Option<LogId<NodeId>>, StoreError> {
        self.read_meta(KEY_LAST_PURGED, "last purged log id")
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        match self
            .inner
            .meta
            .get(key)
            .map_err(StoreError::sled("read log meta"))?
        {
            Some(bytes) => codec::decode(what, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        what: &'static str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = codec::encode(what, value)?;
        self.inner
            .meta
            .insert(key, bytes)
            .map_err(StoreError::sled("write log meta"))?;
        Ok(())
    }

    fn remove_range<R: RangeBounds<u64>>(&self, range: R) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for item in self.inner.log.range(key_range(range)) {
            let (key, _) = item.map_err(StoreError::sled("scan log"))?;
            batch.remove(key);
        }
        self.inner
            .log
            .apply_batch(batch)
            .map_err(StoreError::sled("remove log entries"))
    }

    fn read_range<R: RangeBounds<u64>>(&self, range: R) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.log.range(key_range(range)) {
            let (_, value) = item.map_err(StoreError::sled("read log"))?;
            out.push(codec::decode::<Entry>("log entry", &value)?);
        }
        Ok(out)
    }

    fn last_log_id(&self) -> Result<Option<LogId<NodeId>>, StoreError> {
        match self
            .inner
            .log
            .last()
            .map_err(StoreError::sled("read last log entry"))?
        {
            Some((_, value)) => Ok(Some(codec::decode::<Entry>("log entry", &value)?.log_id)),
            None => Ok(None),
        }
    }

    /// Flush + fsync on a blocking thread, so the async runtime keeps running meanwhile.
    async fn sync(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.disk.sync(&inner.db))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    fn insert_entries<I>(&self, entries: I) -> Result<usize, StoreError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for entry in entries {
            let bytes = codec::encode("log entry", &entry)?;
            batch.insert(&u64_key(entry.log_id.index), bytes);
            count += 1;
        }
        // One batch: after a crash either all of this append is there or none of it, so
        // the log never has a hole.
        self.inner
            .log
            .apply_batch(batch)
            .map_err(StoreError::sled("append log entries"))?;
        Ok(count)
    }
}

fn key_range<R: RangeBounds<u64>>(range: R) -> (Bound<[u8; 8]>, Bound<[u8; 8]>) {
    fn map(b: Bound<&u64>) -> Bound<[u8; 8]> {
        match b {
            Bound::Included(n) => Bound::Included(u64_key(*n)),
            Bound::Excluded(n) => Bound::Excluded(u64_key(*n)),
            Bound::Unbounded => Bound::Unbounded,
        }
    }
    (map(range.start_bound()), map(range.end_bound()))
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
        let last_purged_log_id = self.last_purged().map_err(sto(Subject::ReadLogs))?;
        let last_log_id = self.last_log_id().map_err(sto(Subject::ReadLogs))?;
        Ok(LogState {
            last_log_id: last_log_id.or(last_purged_log_id),
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_VOTE, "vote", vote)
            .map_err(sto(Subject::WriteVote))?;
        self.sync().await.map_err(sto(Subject::WriteVote))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(KEY_VOTE, "vote")
            .map_err(sto(Subject::ReadVote))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_COMMITTED, "committed log id", &committed)
            .map_err(sto(Subject::WriteLogs))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed: Option<Option<LogId<NodeId>>> = self
            .read_meta(KEY_COMMITTED, "committed log id")
            .map_err(sto(Subject::ReadLogs))?;
        Ok(committed.flatten())
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
        if let Err(e) = self.insert_entries(entries) {
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(sto(Subject::WriteLogs)(e));
        }
        // Durable before openraft hears of it: the callback is what lets the leader count this
        // node towards a commit quorum.
        match self.sync().await {
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
        self.remove_range(log_id.index..)
            .map_err(sto(Subject::WriteLogs))?;
        // A truncated conflicting suffix must not come back after a crash.
        self.sync().await.map_err(sto(Subject::WriteLogs))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point first: a crash after it leaves removable leftovers (cleaned
        // at open), never a log whose first entry is missing while nobody knows it was purged.
        self.write_meta(KEY_LAST_PURGED, "last purged log id", &log_id)
            .map_err(sto(Subject::WriteLogs))?;
        self.remove_range(..=log_id.index)
            .map_err(sto(Subject::WriteLogs))?;
        self.sync().await.map_err(sto(Subject::WriteLogs))
    }
}
