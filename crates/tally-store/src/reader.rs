//! [`LedgerReader`]: the server's read handle on the applied state, history and events.

use std::sync::{Arc, TryLockError};

use openraft::LogId;
use tally_core::{AccountId, JournalEntry, LedgerEvent, LedgerState};
use tokio::sync::watch;

use crate::codec;
use crate::error::StoreError;
use crate::state_machine::{
    decode_block_item, seq_key, Membership, Shared, PREFIX_EVENT, PREFIX_JOURNAL, PREFIX_JOURNAL_AT,
};
use crate::types::NodeId;

/// Most journal entries one `history` call returns.
pub const HISTORY_LIMIT_MAX: usize = 1_000;
/// Most ledger events one `events_from` call returns.
pub const EVENTS_LIMIT_MAX: usize = 1_000;

/// Cheap to clone (one `Arc`); every method but [`Self::with_applied_state`] is synchronous
/// and short, safe to call from async code (though it waits while an entry is being applied:
/// request handlers read the state through the async one). Reads see applied state only:
/// linearizability is the caller's business (`Raft::ensure_linearizable` first, then read
/// here).
#[derive(Clone)]
pub struct LedgerReader {
    shared: Arc<Shared>,
}

impl LedgerReader {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        LedgerReader { shared }
    }

    /// Runs `f` on the applied state under the read lock. Keep `f` short: apply waits for it.
    pub fn with_state<R>(&self, f: impl FnOnce(&LedgerState) -> R) -> R {
        f(&self.shared.read().state)
    }

    /// Runs `f` on the applied state and the log id it reflects (read atomically with it).
    /// While an entry is being applied (the write lock is held, milliseconds for a large
    /// batch) this waits without blocking the runtime thread it runs on, so that thread's
    /// other tasks (connections, replication, other requests) go on meanwhile.
    pub async fn with_applied_state<R>(
        &self,
        f: impl FnOnce(&LedgerState, Option<LogId<NodeId>>) -> R,
    ) -> R {
        loop {
            // Registered before trying, so a release between the try and the wait still wakes
            // this reader.
            let unlocked = self.shared.unlocked.notified();
            tokio::pin!(unlocked);
            unlocked.as_mut().enable();
            match self.shared.applied.try_read() {
                Ok(applied) => return f(&applied.state, applied.last_applied),
                Err(TryLockError::Poisoned(poisoned)) => {
                    let applied = poisoned.into_inner();
                    return f(&applied.state, applied.last_applied);
                }
                Err(TryLockError::WouldBlock) => {}
            }
            // After the match: its result (which may hold a guard) is gone before the wait.
            unlocked.await;
        }
    }

    /// The last log id applied to the in-memory state.
    pub fn last_applied(&self) -> Option<LogId<NodeId>> {
        self.shared.read().last_applied
    }

    /// The last applied membership.
    pub fn membership(&self) -> Membership {
        self.shared.read().membership.clone()
    }

    /// The state hash and the applied log id it is the hash at, read atomically.
    pub fn state_hash(&self) -> (Option<LogId<NodeId>>, [u8; 32]) {
        let applied = self.shared.read();
        (applied.last_applied, applied.state.state_hash())
    }

    /// The state hash and ledger time at log index `index`, once this node applies it: every
    /// node asked for the same index answers for the same state, however far apart they are
    /// while entries keep coming (comparing hashes of whatever each node has applied rarely
    /// lines up under load). `Err` with the applied index when this node is already past
    /// `index`; the receiver errs if the state goes past it without applying it (a snapshot
    /// installed over it). Waiting is the caller's (with its own deadline).
    pub fn hash_at(
        &self,
        index: u64,
    ) -> Result<tokio::sync::oneshot::Receiver<([u8; 32], u64)>, u64> {
        // The applied state's lock first, then the marks' (the order apply takes them in).
        let applied = self.shared.read();
        let at = applied.last_applied.map_or(0, |log_id| log_id.index);
        if at >= index {
            return Err(at);
        }
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let mut marks = self
            .shared
            .hash_marks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Askers that gave up (their receiver dropped) leave nothing behind.
        marks.retain(|_, askers| {
            askers.retain(|asker| !asker.is_closed());
            !askers.is_empty()
        });
        marks.entry(index).or_default().push(sender);
        self.shared.hash_mark_min.store(
            *marks.keys().next().expect("just added"),
            std::sync::atomic::Ordering::Release,
        );
        drop(marks);
        drop(applied);
        Ok(receiver)
    }

    /// Journal entries of `account`, newest first, with `seq < before_seq` when given (to page:
    /// pass the smallest seq of the previous page). `limit` is at most [`HISTORY_LIMIT_MAX`].
    pub fn history(
        &self,
        account: &AccountId,
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        check_limit(limit, HISTORY_LIMIT_MAX)?;
        let mut out = Vec::with_capacity(limit.min(64));
        if limit == 0 {
            return Ok(out);
        }
        let head = {
            let applied = self.shared.read();
            applied
                .state
                .account_ordinal(account)
                .and_then(|ordinal| applied.heads.get(ordinal))
        };
        let Some(mut next) = head else {
            return Ok(out);
        };
        if let Some(before) = before_seq {
            // Paging passes the oldest seq of the previous page, an entry of this account: its
            // link is where this page starts. Any other seq: walk from the head.
            match self.item(before)? {
                Some((entry, previous)) if entry.account == *account => next = previous,
                _ => {
                    while next >= before {
                        next = self.expect_item(account, next)?.1;
                        if next == 0 {
                            return Ok(out);
                        }
                    }
                }
            }
        }
        while next != 0 && out.len() < limit {
            let (entry, previous) = self.expect_item(account, next)?;
            out.push(entry);
            next = previous;
        }
        Ok(out)
    }

    /// A journal entry and the previous seq of its account, if this node has it.
    fn item(&self, seq: u64) -> Result<Option<(JournalEntry, u64)>, StoreError> {
        if seq == 0 {
            return Ok(None);
        }
        // The block holding `seq` is the last one starting at or before it: located in the
        // journal file (`J` rows), or held in sled itself (`j` rows, earlier builds), whichever
        // starts later.
        let last_at_or_before = |prefix| {
            self.shared
                .sm
                .range(seq_key(prefix, 0)..=seq_key(prefix, seq))
                .next_back()
                .transpose()
                .map_err(StoreError::sled("read journal"))?
                .map(|(key, value)| Ok((codec::key_u64("journal key", &key[1..])?, value)))
                .transpose()
        };
        let located = last_at_or_before(PREFIX_JOURNAL_AT)?;
        let held = last_at_or_before(PREFIX_JOURNAL)?;
        let (first, block) = match (located, held) {
            (Some((first, at)), None) => (first, self.shared.journal.read_located(&at)?),
            (Some((first, at)), Some((held_first, _))) if held_first <= first => {
                (first, self.shared.journal.read_located(&at)?)
            }
            (_, Some((first, block))) => (first, block.to_vec()),
            (None, None) => return Ok(None),
        };
        match decode_block_item(&block, (seq - first) as usize)? {
            Some((entry, _)) if entry.seq != seq => Err(StoreError::Corrupt {
                what: "journal block",
                reason: format!(
                    "the block at {first} holds seq {} where {seq} belongs",
                    entry.seq
                ),
            }),
            found => Ok(found),
        }
    }

    fn expect_item(
        &self,
        account: &AccountId,
        seq: u64,
    ) -> Result<(JournalEntry, u64), StoreError> {
        match self.item(seq)? {
            Some(found) if found.0.account == *account => Ok(found),
            _ => Err(StoreError::Corrupt {
                what: "journal",
                reason: format!("the history of {account} names seq {seq}, which is missing"),
            }),
        }
    }

    /// One journal entry by its sequence number, if this node has it.
    pub fn journal_entry(&self, seq: u64) -> Result<Option<JournalEntry>, StoreError> {
        Ok(self.item(seq)?.map(|(entry, _)| entry))
    }

    /// Ledger events with `seq >= from_seq`, oldest first, at most `limit`
    /// (<= [`EVENTS_LIMIT_MAX`]).
    pub fn events_from(&self, from_seq: u64, limit: usize) -> Result<Vec<LedgerEvent>, StoreError> {
        check_limit(limit, EVENTS_LIMIT_MAX)?;
        let start = seq_key(PREFIX_EVENT, from_seq);
        let end = [PREFIX_EVENT + 1];
        let mut out = Vec::with_capacity(limit.min(64));
        for item in self
            .shared
            .sm
            .range(start.to_vec()..end.to_vec())
            .take(limit)
        {
            let (_, value) = item.map_err(StoreError::sled("read events"))?;
            out.push(codec::decode("ledger event", &value)?);
        }
        Ok(out)
    }

    /// The highest ledger event seq persisted on this node (0: none).
    pub fn latest_event_seq(&self) -> u64 {
        *self.shared.event_seq.borrow()
    }

    /// Changes whenever new events are persisted; its value is [`Self::latest_event_seq`]. A
    /// stream waits on `changed()`, then reads `events_from(last_seen + 1, ..)`.
    pub fn subscribe_events(&self) -> watch::Receiver<u64> {
        self.shared.event_seq.subscribe()
    }
}

fn check_limit(limit: usize, max: usize) -> Result<(), StoreError> {
    if limit > max {
        return Err(StoreError::InvalidArgument {
            field: "limit",
            reason: format!("is {limit}; at most {max} allowed"),
        });
    }
    Ok(())
}
