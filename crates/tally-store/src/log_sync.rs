//! How far the Raft log is on this node's disk, and the thread that syncs the leader's own
//! appends while they replicate.
//!
//! openraft 0.9's core awaits every append's `LogFlushed` callback before it hands the new
//! entries to replication, so a leader that synced before calling back put its own
//! `fdatasync` and a follower's in series on the path of every write. With
//! [`crate::LogStore::sync_own_appends_in_parallel`], the entries this node proposes as leader
//! are called back once written (`pwrite`), and [`Syncer`]'s thread runs their `fdatasync`
//! while they replicate. openraft then counts the leader's copy towards a commit before it is
//! on disk, so everything that makes a commit visible waits here for the leader's own sync
//! instead ([`LogDurability`]):
//! - the state machine applies an entry handed to the background sync only once it is
//!   durable here (`apply`): a client's answer, a linearizable read and a snapshot all come
//!   after apply, so an entry answered to anyone is on the leader's disk and on the disks of
//!   the followers whose answers made openraft's quorum: a majority, as Raft requires;
//! - the commit index sent to followers is bounded by it (`TallyNetwork::with_commit_bound`),
//!   so no follower applies an entry the cluster could still lose;
//! - the commit index saved on disk is bounded by it (`save_committed`), which open relies
//!   on ("entries up to the saved commit were synced here").
//! - Membership changes are synced before they are called back, as before: openraft acts on
//!   their commit inside its core (the next step of a joint change), where no gate reaches.
//!
//! A failed background sync marks the log failed (nothing later is appended or applied) and
//! the waiters get an error: the node stops instead of answering for an entry it may have lost.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::LogId;
use tokio::sync::watch;

use crate::error::StoreError;
use crate::test_hold::TestHold;
use crate::types::NodeId;

/// What is on disk of the log: every entry up to `through` (in this log: a truncation lowers
/// it), or nothing more ever once `failed`. `queued`: the last entry handed to the background
/// sync; an entry past it was synced before openraft heard of it (or is not in this log at
/// all), so nothing waits for it.
#[derive(Clone, Debug, Default, PartialEq)]
struct Mark {
    through: Option<LogId<NodeId>>,
    queued: Option<LogId<NodeId>>,
    failed: Option<String>,
}

impl Mark {
    fn durable(&self, index: u64) -> bool {
        self.through.is_some_and(|t| t.index >= index)
    }

    /// Whether the entry at `index` needs no more waiting for.
    fn settled(&self, index: u64) -> bool {
        self.durable(index) || self.queued.is_none_or(|q| q.index < index)
    }
}

/// Upper bounds of the buckets of [`SyncHistogram`], in microseconds.
pub const SYNC_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// How long the `fdatasync` calls of appended log entries took on this node (a follower's,
/// and a leader's own in the background): the disk's part of every write's latency.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncHistogram {
    /// Syncs per bucket of [`SYNC_BUCKETS_US`] (at or below its bound and above the one
    /// before), then those above the last bound.
    pub counts: Vec<u64>,
    pub sum_us: u64,
}

#[derive(Default)]
struct SyncTimes {
    counts: [AtomicU64; SYNC_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A handle on how far this node's log is durable. Cheap to clone.
#[derive(Clone)]
pub struct LogDurability {
    mark: Arc<watch::Sender<Mark>>,
    times: Arc<SyncTimes>,
}

impl Default for LogDurability {
    fn default() -> Self {
        LogDurability {
            mark: Arc::new(watch::Sender::new(Mark::default())),
            times: Arc::default(),
        }
    }
}

impl std::fmt::Debug for LogDurability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LogDurability")
            .field(&*self.mark.borrow())
            .finish()
    }
}

impl LogDurability {
    /// The last log id durable here, if any.
    pub fn through(&self) -> Option<LogId<NodeId>> {
        self.mark.borrow().through
    }

    /// `committed`, lowered to what is durable here: what this node may tell others is
    /// committed.
    pub fn bound_commit(&self, committed: Option<LogId<NodeId>>) -> Option<LogId<NodeId>> {
        let mark = self.mark.borrow();
        match (committed, mark.through) {
            (Some(c), Some(t)) if c.index > t.index => Some(t),
            (Some(_), None) => None,
            (c, _) => c,
        }
    }

    /// Waits up to `wait_max` for the log to be durable through `committed`, and returns
    /// `committed` bounded by what is then durable (see [`Self::bound_commit`]).
    pub async fn bound_commit_within(
        &self,
        committed: Option<LogId<NodeId>>,
        wait_max: Duration,
    ) -> Option<LogId<NodeId>> {
        if let Some(c) = committed {
            if self.bound_commit(committed) != committed {
                let mut rx = self.mark.subscribe();
                let _ = tokio::time::timeout(
                    wait_max,
                    rx.wait_for(|m| m.failed.is_some() || m.durable(c.index)),
                )
                .await;
            }
        }
        self.bound_commit(committed)
    }

    /// Returns once the entry at `index` (and every one before it) is durable here, if it was
    /// handed to the background sync (any other entry of the log was synced before openraft
    /// heard of it); an error if the log failed first (a failed `fdatasync`).
    pub async fn wait_through(&self, index: u64) -> Result<(), StoreError> {
        // Without a subscription when nothing is to wait for (nearly every apply).
        if self.mark.borrow().settled(index) {
            return Ok(());
        }
        let mut rx = self.mark.subscribe();
        let mark = rx
            .wait_for(|m| m.failed.is_some() || m.settled(index))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
        match &mark.failed {
            Some(reason) if !mark.settled(index) => Err(failed(reason)),
            _ => Ok(()),
        }
    }

    /// Records that the entries up to `log_id` were handed to the background sync (before
    /// openraft hears of them).
    pub(crate) fn queue(&self, log_id: LogId<NodeId>) {
        self.raise_field(|m| &mut m.queued, log_id);
    }

    /// Records that the log is durable through `log_id` (never lowers the mark).
    pub(crate) fn raise(&self, log_id: LogId<NodeId>) {
        self.raise_field(|m| &mut m.through, log_id);
    }

    /// Sets the mark's `field` to `log_id` if that is further; waiters wake only then.
    fn raise_field(
        &self,
        field: fn(&mut Mark) -> &mut Option<LogId<NodeId>>,
        log_id: LogId<NodeId>,
    ) {
        self.mark.send_if_modified(|m| {
            let slot = field(m);
            let higher = slot.is_none_or(|id| id.index < log_id.index);
            if higher {
                *slot = Some(log_id);
            }
            higher
        });
    }

    /// The log was cut to end at `last` (a truncation): the mark goes no further.
    pub(crate) fn lower_to(&self, last: Option<LogId<NodeId>>) {
        let past = |id: Option<LogId<NodeId>>| {
            id.is_some_and(|id| last.is_none_or(|l| id.index > l.index))
        };
        self.mark.send_if_modified(|m| {
            let (through, queued) = (past(m.through), past(m.queued));
            if through {
                m.through = last;
            }
            if queued {
                m.queued = last;
            }
            through || queued
        });
    }

    /// The log's syncs so far.
    pub fn sync_histogram(&self) -> SyncHistogram {
        SyncHistogram {
            counts: self
                .times
                .counts
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .collect(),
            sum_us: self.times.sum_us.load(Ordering::Relaxed),
        }
    }

    /// Counts one sync of appended entries that took `took`. (Public for the tests of what
    /// renders [`Self::sync_histogram`]; the log store counts its own.)
    #[doc(hidden)]
    pub fn record_sync(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = SYNC_BUCKETS_US.partition_point(|bound| *bound < us);
        self.times.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.times.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub(crate) fn fail(&self, reason: String) {
        self.mark.send_modify(|m| {
            m.failed.get_or_insert(reason);
        });
    }
}

fn failed(reason: &str) -> StoreError {
    StoreError::Task(format!("the log failed to sync: {reason}"))
}

/// One background sync: the file the entries up to `log_id` were written to.
pub(crate) struct SyncJob {
    pub(crate) file: Arc<File>,
    pub(crate) log_id: LogId<NodeId>,
}

/// The thread that syncs the leader's own appends; it ends when the log store is dropped.
pub(crate) struct Syncer {
    jobs: mpsc::Sender<SyncJob>,
}

impl Syncer {
    /// `publish` is called after each successful sync with the last log id it covers (the
    /// log store checks the entry is still in the log and raises the mark); `fail` with the
    /// error of a failed one. Both get the store through `store`, which the thread holds
    /// weakly so that dropping the store ends it.
    pub(crate) fn start<S: Send + Sync + 'static>(
        store: Weak<S>,
        publish: fn(&S, LogId<NodeId>, Duration),
        fail: fn(&S, String),
    ) -> Result<Syncer, StoreError> {
        let (jobs, rx) = mpsc::channel::<SyncJob>();
        std::thread::Builder::new()
            .name("tally-log-sync".to_string())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Everything queued meanwhile is covered by one sync per file (a new
                    // segment only starts after the previous one was synced in full).
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let mut files: Vec<&Arc<File>> = Vec::new();
                    for job in &batch {
                        if !files.iter().any(|f| Arc::ptr_eq(f, &job.file)) {
                            files.push(&job.file);
                        }
                    }
                    HOLD.pass();
                    let started = Instant::now();
                    let result = if FAIL_NEXT.swap(false, Ordering::SeqCst) {
                        Err(std::io::Error::other("a failure injected by a test"))
                    } else {
                        files.iter().try_for_each(|file| file.sync_data())
                    };
                    let Some(store) = store.upgrade() else {
                        return;
                    };
                    let last = batch.last().expect("one job at least").log_id;
                    match result {
                        Ok(()) => publish(&store, last, started.elapsed()),
                        Err(error) => {
                            tracing::error!(%error, "fdatasync of the Raft log failed; this node stops taking writes");
                            fail(&store, error.to_string());
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Task(format!("cannot start the log sync thread: {e}")))?;
        Ok(Syncer { jobs })
    }

    /// Queues a sync; false if the thread is gone.
    pub(crate) fn queue(&self, job: SyncJob) -> bool {
        self.jobs.send(job).is_ok()
    }
}

/// Test aid: while closed, background syncs wait before they start (see
/// [`hold_log_sync_for_tests`]).
static HOLD: TestHold = TestHold::new();

/// Test aid: `true` makes every background log sync in this process wait until called again
/// with `false`, so a test can see what happens between a leader's append and its sync.
#[doc(hidden)]
pub fn hold_log_sync_for_tests(held: bool) {
    HOLD.set(held);
}

static FAIL_NEXT: AtomicBool = AtomicBool::new(false);

/// Test aid: the next background log sync in this process fails as a failing disk's would.
#[doc(hidden)]
pub fn fail_next_log_sync_for_tests() {
    FAIL_NEXT.store(true, Ordering::SeqCst);
}
