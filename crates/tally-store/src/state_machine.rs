//! The state machine: openraft's `RaftStateMachine` around the in-memory `tally_core::LedgerState`.
//!
//! What is persisted where:
//! - the ledger state itself only through snapshots (`snapshot.rs`); on open, the latest
//!   snapshot is loaded and `applied_state()` reports its last applied log id, so openraft
//!   re-applies the committed log after it (the log is never purged beyond a snapshot);
//! - per applied batch of entries: for each applied entry that journaled anything, its
//!   journal entries in blocks of a few KiB (not one row per event: a row per event made sled
//!   the node's biggest CPU cost), appended with one write to the journal file
//!   ([`JournalFile`]: sled rewrote blocks kept in it several times over), and in tree `sm`
//!   a row locating each block, plus the ledger events (rare: alerts) one row each. Keys are
//!   the deterministic journal and event sequence numbers, so re-applying after a restart
//!   writes the same blocks and rows again. Nothing here is fsynced on its own (it can
//!   always be rebuilt from the log), but a snapshot build syncs the journal file and then
//!   sled before the snapshot file is written, so journal rows at or below a snapshot never
//!   depend on log entries that may be purged.
//! - the per-account history index is a chain: every journal entry is stored with the seq of
//!   the previous journal entry of the same account, and the newest seq of each account (its
//!   "head") is kept in memory, next to the state, under the same lock. `history` walks the
//!   chain from the head. The heads are saved in every snapshot, and re-applying the log after
//!   it rebuilds them exactly as before.
//!
//! Tree `sm` keys: `J`+first_seq (where a journal block, see [`encode_block`], is in the
//! journal file), `j`+first_seq (a journal block itself, as builds before session 10 kept it;
//! still read, and what a snapshot sent to another node carries), `e`+seq (ledger event).
//! Integers big-endian. (Nodes of earlier builds
//! also wrote `m:last_applied` and `m:membership` with every entry; nothing read them: where
//! the state machine stands comes from the snapshot and the log replayed after it.)
//!
//! The snapshot kept on disk holds the state, the membership and the account heads, not the
//! journal: building one costs the size of the state, however long the journal grows. The
//! snapshot SENT to another node (`get_current_snapshot`) adds every journal block and event
//! row; installing one writes those rows, so a node that caught up by snapshot serves the same
//! history and event stream as one that applied every entry. That transfer grows with the
//! journal.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError,
    StoredMembership,
};

use tally_core::{AccountId, ApplySpare, JournalEntry, LedgerState, SnapshotError, SnapshotStep};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::codec::{self, u64_key};
use crate::durable::DiskSync;
use crate::error::{sto, StoreError, Subject};
use crate::journal_file::{JournalFile, Location, Records};
use crate::log_sync::LogDurability;
use crate::reader::LedgerReader;
use crate::snapshot::{self, Meta, SnapshotFiles};
use crate::test_hold::TestHold;
use crate::types::{EntryResponse, NodeId, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;
pub(crate) type Membership = StoredMembership<NodeId, BasicNode>;

pub(crate) const PREFIX_JOURNAL: u8 = b'j';
/// `J`+first_seq: where a journal block is in the journal file ([`JournalFile`]). Blocks
/// written by earlier builds are `j` rows holding the block itself; both are read.
pub(crate) const PREFIX_JOURNAL_AT: u8 = b'J';
pub(crate) const PREFIX_EVENT: u8 = b'e';
/// The snapshot row holding the account heads (never written to the tree itself).
const KEY_ACCOUNT_HEADS: &[u8] = b"m:account_heads";

/// A key and value for the `sm` tree.
type Row = ([u8; 9], Vec<u8>);

pub(crate) fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&u64_key(seq));
    key
}

/// The newest journal seq of each account that has one.
/// The newest journal seq of every account (the head of its history chain), by account
/// ordinal (`LedgerState::account_ordinal`): 8 bytes per account in a dense array, where a map
/// by id cost about 100. 0 means none yet (seqs start at 1).
#[derive(Clone, Debug, Default)]
pub(crate) struct AccountHeads(Vec<u64>);

impl AccountHeads {
    pub(crate) fn get(&self, ordinal: u32) -> Option<u64> {
        self.0
            .get(ordinal as usize)
            .copied()
            .filter(|&seq| seq != 0)
    }

    /// Sets the head of `ordinal` to `seq`; answers the previous head (0: none).
    fn replace(&mut self, ordinal: u32, seq: u64) -> u64 {
        let at = ordinal as usize;
        if at >= self.0.len() {
            self.0.resize(at + 1, 0);
        }
        std::mem::replace(&mut self.0[at], seq)
    }
}

fn unknown_account(what: &'static str, account: &AccountId) -> StoreError {
    StoreError::Corrupt {
        what,
        reason: format!("names account {account}, which the ledger state does not hold"),
    }
}

/// One applied entry's journal entries as one value, each readable without decoding the
/// others: `count: u32 BE`, `count` end offsets (`u32 BE`, from the start of the items), then
/// per entry `previous seq of the same account: u64 BE (0: none)` + its versioned bincode.
/// `ordinals[i]` is the account ordinal of `journal[i]` (as the state machine reported it).
/// Updates `heads` as it goes.
pub(crate) fn encode_block(
    journal: &[JournalEntry],
    ordinals: &[u32],
    state: &LedgerState,
    heads: &mut AccountHeads,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    debug_assert_eq!(ordinals.len(), journal.len());
    let base = out.len();
    // The offset table first (filled in as the items are written after it), so the items are
    // written once, in place.
    let table = base + 4 + 4 * journal.len();
    // Room for the usual entry (a usage entry takes about 160 bytes, an id-heavy one more), so
    // the buffer is not grown, and copied, while the block is written: that was 4% of a
    // follower's samples at 16 x 100.
    out.reserve(table - base + journal.len() * JOURNAL_ENTRY_BYTES_RESERVED);
    out.extend_from_slice(&(journal.len() as u32).to_be_bytes());
    out.resize(table, 0);
    for (position, (j, &ordinal)) in journal.iter().zip(ordinals).enumerate() {
        debug_assert_eq!(state.account_ordinal(&j.account), Some(ordinal), "{j:?}");
        let previous = heads.replace(ordinal, j.seq);
        out.extend_from_slice(&previous.to_be_bytes());
        crate::binary::encode_journal_entry_into(j, out);
        let end = u32::try_from(out.len() - table).map_err(|_| StoreError::Encode {
            what: "journal block",
            reason: "more than 4 GiB of journal in one entry".to_string(),
        })?;
        let at = base + 4 + 4 * position;
        out[at..at + 4].copy_from_slice(&end.to_be_bytes());
    }
    Ok(())
}

/// Kept from one apply to the next: the journal blocks' buffer and the journal lists of the
/// last applied entry (see [`LedgerState::apply_reusing`]).
#[derive(Default)]
struct Scratch {
    blocks: BlockBuf,
    spare: ApplySpare,
}

/// One apply's journal blocks, encoded back to back as the journal file's records (written as
/// they are, see [`Records`]) into memory kept from one apply to the next. A block per few
/// dozen events, each in a `Vec` of its own and then copied into a write buffer, was hundreds
/// of allocations per large entry, and the memory they came in was often memory the process
/// had not touched yet: the kernel zeroing it was 4% of a follower's samples at 4 x 8,190.
#[derive(Default)]
struct BlockBuf {
    records: Records,
    /// Each block's first journal seq.
    firsts: Vec<u64>,
}

impl BlockBuf {
    fn clear(&mut self) {
        self.records.clear();
        self.firsts.clear();
    }

    /// Each block's first seq and bytes, in order.
    fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.firsts.iter().copied().zip(self.records.payloads())
    }
}

/// About how many bytes one journal block holds: about 150 events' journal entries. Each
/// block costs one row in sled (its location; the bytes are in the journal file), and sled's
/// inserts were 4.2% of the leader's samples at 16 x 100 with blocks of 4 KiB (session 17),
/// so blocks are larger now that they no longer live in sled (whose pages above a quarter of
/// a 512 KiB segment became blob files). A history read reads and checks one block per
/// entry it returns: 16 KiB from the page cache, a few microseconds.
pub const JOURNAL_BLOCK_BYTES_TARGET: usize = 16 * 1024;

/// Bytes reserved per journal entry when a block is encoded.
const JOURNAL_ENTRY_BYTES_RESERVED: usize = 320;

/// Writes one applied entry's journal entries as blocks of about
/// [`JOURNAL_BLOCK_BYTES_TARGET`], each keyed by its first seq (a reader finds the block of a
/// seq as the last block starting at or before it). Updates `heads` as it goes.
fn put_journal(
    blocks: &mut BlockBuf,
    journal: &[JournalEntry],
    ordinals: &[u32],
    state: &LedgerState,
    heads: &mut AccountHeads,
) -> Result<(), StoreError> {
    if ordinals.len() != journal.len() {
        return Err(StoreError::Encode {
            what: "journal block",
            reason: format!(
                "{} journal entries but {} account ordinals",
                journal.len(),
                ordinals.len()
            ),
        });
    }
    let (mut rest, mut rest_ordinals) = (journal, ordinals);
    // How many entries the next block takes: adapted to the size the last block came out at.
    let mut take = 16;
    while let Some(first) = rest.first() {
        let (chunk, tail) = rest.split_at(take.min(rest.len()));
        let (chunk_ordinals, tail_ordinals) = rest_ordinals.split_at(chunk.len());
        blocks.records.begin();
        encode_block(
            chunk,
            chunk_ordinals,
            state,
            heads,
            &mut blocks.records.bytes,
        )?;
        let len = blocks.records.finish()?;
        blocks.firsts.push(first.seq);
        take = (JOURNAL_BLOCK_BYTES_TARGET * chunk.len() / len.max(1)).max(1);
        rest = tail;
        rest_ordinals = tail_ordinals;
    }
    Ok(())
}

/// The blocks of `blocks` (first seq, bytes) this node does not already hold with the same
/// bytes: re-applying the entries after the last snapshot (after a restart) or installing a
/// snapshot finds most of them held (seqs and blocks are deterministic) and does not append
/// them again. A held copy that does not read back whole (its bytes did not reach the disk
/// before a crash, while its row did) is written again. A block at or above
/// `Shared::journal_rows_end` has no row and is not looked up (an entry applied for the first
/// time); one below it costs two sled lookups when nothing is held.
fn blocks_not_held<'a>(
    shared: &Shared,
    blocks: impl Iterator<Item = (u64, &'a [u8])>,
) -> Result<Vec<(u64, &'a [u8])>, StoreError> {
    let rows_end = shared.journal_rows_end.load(Ordering::Acquire);
    let mut missing = Vec::new();
    for (first, block) in blocks {
        // Above every row this node has: nothing to look up (the usual case, an entry applied
        // for the first time).
        if first >= rows_end {
            missing.push((first, block));
            continue;
        }
        let get = |prefix| {
            shared
                .sm
                .get(seq_key(prefix, first))
                .map_err(StoreError::sled("read journal"))
        };
        let held = if let Some(at) = get(PREFIX_JOURNAL_AT)? {
            shared
                .journal
                .read_located(&at)
                .is_ok_and(|held| held == block)
        } else if let Some(held) = get(PREFIX_JOURNAL)? {
            held == block
        } else {
            false
        };
        if !held {
            missing.push((first, block));
        }
    }
    Ok(missing)
}

/// The error of a data directory that lost part of its snapshot's history (`reason` says
/// which part).
pub(crate) fn history_lost(reason: String) -> StoreError {
    StoreError::Corrupt {
        what: "data directory",
        reason: format!(
            "{reason}. The node cannot serve the history of its snapshot: see README, Recovery \
             (remove it from the cluster, then add it again on an empty data directory)"
        ),
    }
}

/// Checks at open that the history the current snapshot covers is there: the journal block
/// holding its last journal entry (located by `state/`, read back from `journal.dat` with
/// its CRC) and the row of its last ledger event. A snapshot is kept only after the journal
/// and the rows up to it were synced, so either missing means part of the data directory was
/// lost or replaced (`state/` deleted, `journal.dat` truncated, replaced or deleted): the
/// node would answer for balances it can no longer show the history of. Damage inside
/// older blocks is found when they are read (history then goes to other nodes).
fn check_history_present(
    sm: &sled::Tree,
    journal: &JournalFile,
    state: &LedgerState,
) -> Result<(), StoreError> {
    let seq = state.journal_seq();
    if seq > 0 {
        let last_row = |prefix| {
            sm.range(seq_key(prefix, 0)..=seq_key(prefix, seq))
                .next_back()
                .transpose()
                .map_err(StoreError::sled("read journal rows"))
        };
        let located = last_row(PREFIX_JOURNAL_AT)?;
        let inline = last_row(PREFIX_JOURNAL)?;
        match (located, inline) {
            (None, None) => {
                return Err(history_lost(format!(
                    "the snapshot's journal runs to entry {seq}, but state/ locates none of it: \
                     state/ was lost or replaced"
                )))
            }
            // Kept in sled itself by a build before session 10: nothing to read elsewhere.
            (Some((key, _)), Some((inline_key, _))) if inline_key[1..] > key[1..] => {}
            (None, Some(_)) => {}
            (Some((_, at)), _) => {
                if let Err(error) = journal.read_located(&at) {
                    return Err(history_lost(format!(
                        "the snapshot's journal runs to entry {seq}, but the block holding it \
                         cannot be read from journal.dat ({error}): journal.dat was lost, \
                         truncated or replaced"
                    )));
                }
            }
        }
    }
    let event = state.event_seq();
    let event_missing = event > 0
        && sm
            .get(seq_key(PREFIX_EVENT, event))
            .map_err(StoreError::sled("read ledger events"))?
            .is_none();
    if event_missing {
        return Err(history_lost(format!(
            "the snapshot's ledger events run to {event}, but state/ does not hold that one: \
             state/ was lost or replaced"
        )));
    }
    Ok(())
}

/// One past the highest first seq of a journal row in `sm` (either prefix; 0: none). A key of
/// an unexpected length answers `u64::MAX`, which only means every block is looked up.
fn journal_rows_end(sm: &sled::Tree) -> Result<u64, StoreError> {
    let mut end = 0;
    for prefix in [PREFIX_JOURNAL_AT, PREFIX_JOURNAL] {
        let last = sm
            .scan_prefix([prefix])
            .next_back()
            .transpose()
            .map_err(StoreError::sled("read last journal row"))?;
        if let Some((key, _)) = last {
            end = end.max(match key.len() {
                9 => codec::key_u64("journal key", &key[1..])?.saturating_add(1),
                _ => u64::MAX,
            });
        }
    }
    Ok(end)
}

/// Appends the blocks of `blocks` this node does not hold yet ([`blocks_not_held`]) to the
/// journal file with one write, and returns the rows locating them, for the caller to insert.
fn store_blocks(shared: &Shared, blocks: &BlockBuf) -> Result<Vec<Row>, StoreError> {
    let missing = blocks_not_held(shared, blocks.iter())?;
    if missing.len() == blocks.firsts.len() {
        // The usual case, none held: the records are written as they were encoded.
        let locations = shared.journal.append_records(&blocks.records)?;
        return Ok(located(shared, &missing, locations));
    }
    store_missing(shared, &missing)
}

/// Appends `missing` (first seq, bytes) with one write, and returns the rows locating them.
fn store_missing(shared: &Shared, missing: &[(u64, &[u8])]) -> Result<Vec<Row>, StoreError> {
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let bytes: Vec<&[u8]> = missing.iter().map(|&(_, block)| block).collect();
    let locations = shared.journal.append(&bytes)?;
    Ok(located(shared, missing, locations))
}

/// The rows locating the just appended blocks `missing` (first seq, bytes) at `locations`;
/// raises `journal_rows_end` past them (before the caller inserts the rows: a bound too high
/// only costs lookups).
fn located(shared: &Shared, missing: &[(u64, &[u8])], locations: Vec<Location>) -> Vec<Row> {
    if let Some(last) = missing.iter().map(|&(first, _)| first).max() {
        shared
            .journal_rows_end
            .fetch_max(last.saturating_add(1), Ordering::AcqRel);
    }
    missing
        .iter()
        .zip(locations)
        .map(|(&(first, _), location)| {
            (
                seq_key(PREFIX_JOURNAL_AT, first),
                location.to_bytes().to_vec(),
            )
        })
        .collect()
}

/// [`store_blocks`] for received blocks, their rows added to `rows`.
fn install_blocks(
    shared: &Shared,
    blocks: Vec<(u64, Vec<u8>)>,
    rows: &mut sled::Batch,
) -> Result<(), StoreError> {
    let blocks = blocks
        .iter()
        .map(|(first, block)| (*first, block.as_slice()));
    let missing = blocks_not_held(shared, blocks)?;
    for (key, value) in store_missing(shared, &missing)? {
        rows.insert(key.to_vec(), value);
    }
    Ok(())
}

/// Entry `position` of a block: the journal entry and the previous seq of its account.
pub(crate) fn decode_block_item(
    block: &[u8],
    position: usize,
) -> Result<Option<(JournalEntry, u64)>, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        what: "journal block",
        reason: reason.to_string(),
    };
    let word = |at: usize| -> Result<usize, StoreError> {
        block
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| corrupt("truncated header"))
    };
    let count = word(0)?;
    if position >= count {
        return Ok(None);
    }
    let items = 4 + 4 * count;
    let start = if position == 0 {
        0
    } else {
        word(4 + 4 * (position - 1))?
    };
    let end = word(4 + 4 * position)?;
    let item = block
        .get(items + start..items + end)
        .filter(|item| item.len() > 8)
        .ok_or_else(|| corrupt("item out of bounds"))?;
    let previous = u64::from_be_bytes(item[..8].try_into().expect("8 bytes"));
    Ok(Some((
        codec::decode("journal entry", &item[8..])?,
        previous,
    )))
}

/// The snapshot row of the account heads, sorted so equal states make equal snapshot bytes.
fn heads_row(heads: &AccountHeads, state: &LedgerState) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
    let mut listed = Vec::with_capacity(heads.0.len());
    list_heads(&heads.0, 0, state, &mut listed)?;
    sorted_heads_row(listed)
}

/// Lists the heads `seqs` of the accounts from ordinal `first` on with their ids (what
/// [`heads_row`] sorts), taken apart so a snapshot build names the accounts a block at a
/// time and sorts outside the state's lock.
fn list_heads(
    seqs: &[u64],
    first: usize,
    state: &LedgerState,
    listed: &mut Vec<(AccountId, u64)>,
) -> Result<(), StoreError> {
    for (ordinal, seq) in (first..).zip(seqs) {
        if *seq == 0 {
            continue;
        }
        let id = u32::try_from(ordinal)
            .ok()
            .and_then(|ordinal| state.account_id(ordinal))
            .ok_or_else(|| StoreError::Corrupt {
                what: "account heads",
                reason: format!("a head for account ordinal {ordinal}, past the ledger's accounts"),
            })?;
        listed.push((id.clone(), *seq));
    }
    Ok(())
}

fn sorted_heads_row(mut sorted: Vec<(AccountId, u64)>) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
    sorted.sort_unstable();
    Ok((
        KEY_ACCOUNT_HEADS.to_vec(),
        codec::encode("account heads", &sorted)?,
    ))
}

/// The account heads a snapshot's history rows carry (none in a snapshot of an empty ledger).
fn heads_from_rows(
    rows: &[(Vec<u8>, Vec<u8>)],
    state: &LedgerState,
) -> Result<AccountHeads, StoreError> {
    let mut heads = AccountHeads::default();
    if let Some((_, value)) = rows
        .iter()
        .find(|(key, _)| key.as_slice() == KEY_ACCOUNT_HEADS)
    {
        let rows: Vec<(AccountId, u64)> = codec::decode("account heads", value)?;
        for (account, seq) in rows {
            let ordinal = state
                .account_ordinal(&account)
                .ok_or_else(|| unknown_account("account heads", &account))?;
            heads.replace(ordinal, seq);
        }
    }
    Ok(heads)
}

/// Decodes a snapshotted ledger state as it is read. `decode_snapshot_from` also checks the
/// state's invariants: a state that decodes but breaks conservation must stop the node
/// loudly, not be served.
fn decode_state(what: &'static str, bytes: impl std::io::Read) -> Result<LedgerState, StoreError> {
    let state = LedgerState::decode_snapshot_from(bytes).map_err(|e| match e {
        // Written by another build (e.g. an older one): say so, and what to do.
        SnapshotError::UnknownVersion(version) => StoreError::UnknownVersion {
            what,
            version: u8::try_from(version).unwrap_or(u8::MAX),
            supported: tally_core::SNAPSHOT_VERSION as u8,
        },
        SnapshotError::Corrupt(_) => StoreError::Corrupt {
            what,
            reason: e.to_string(),
        },
    })?;
    Ok(state)
}

/// See [`StateMachineStore::meta_only_snapshots`].
pub struct MetaOnlySnapshots(Arc<Shared>);

impl Drop for MetaOnlySnapshots {
    fn drop(&mut self) {
        self.0.meta_only.store(false, Ordering::Release);
    }
}

/// Rows of a received snapshot are written to sled in batches of about this many bytes.
const INSTALL_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// A reader that writes what it reads to `to`: a received snapshot's state is decoded and
/// copied into this node's snapshot file in one pass.
struct Tee<'a> {
    from: &'a mut dyn std::io::Read,
    to: &'a mut dyn std::io::Write,
}

impl std::io::Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.from.read(buf)?;
        self.to.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// What the in-memory state reflects: always read and written together under one lock.
pub(crate) struct Applied {
    pub(crate) state: LedgerState,
    /// The history chains' heads, as of `last_applied`.
    pub(crate) heads: AccountHeads,
    pub(crate) last_applied: Option<LogId<NodeId>>,
    pub(crate) membership: Membership,
}

/// After a snapshot build failed, how long before another is tried (openraft asks for one
/// at every commit past the policy's threshold).
const SNAPSHOT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Shared by the state machine, its snapshot builders and every [`LedgerReader`].
pub(crate) struct Shared {
    pub(crate) db: sled::Db,
    pub(crate) sm: sled::Tree,
    /// The journal blocks' bytes; `sm` holds their locations.
    pub(crate) journal: JournalFile,
    pub(crate) disk: Arc<DiskSync>,
    pub(crate) applied: RwLock<Applied>,
    pub(crate) snapshots: SnapshotFiles,
    /// Highest ledger event seq persisted in `sm` (0: none yet).
    pub(crate) event_seq: watch::Sender<u64>,
    snapshot_counter: AtomicU64,
    /// When a snapshot build last failed (writing its file: the disk full, say): builds are
    /// not tried again within [`SNAPSHOT_RETRY_AFTER`] of it.
    snapshot_failed_at: Mutex<Option<Instant>>,
    /// The snapshot assembled for other nodes, or being assembled (see `current_snapshot`).
    outgoing: Mutex<Outgoing>,
    /// Notified when an assembly for other nodes ends.
    outgoing_done: std::sync::Condvar,
    /// How long `current_snapshot` waits for an assembly it started, in ms.
    outgoing_wait_ms: AtomicU64,
    /// While true, an assembly for other nodes waits before it hands over its result (tests).
    outgoing_held: TestHold,
    /// Set while [`MetaOnlySnapshots`] lives: `get_current_snapshot` then answers the meta.
    meta_only: AtomicBool,
    /// Woken whenever a writer releases `applied`: async readers wait on it instead of
    /// blocking their runtime thread (see [`LedgerReader::with_applied_state`]).
    ///
    /// [`LedgerReader::with_applied_state`]: crate::LedgerReader::with_applied_state
    pub(crate) unlocked: tokio::sync::Notify,
    /// One past the highest first seq of any journal row in `sm` (0: none): a block starting
    /// at or above it is not held, and [`blocks_not_held`] does not look it up (two sled
    /// lookups per block; every block of an entry applied for the first time).
    journal_rows_end: AtomicU64,
    /// What applies reuse from one to the next (applies run one at a time; the lock is never
    /// contended).
    scratch: Mutex<Scratch>,
    /// State hashes asked for at a log index not applied yet ([`LedgerReader::hash_at`]):
    /// answered by the apply of that index, right after it, under the same lock.
    pub(crate) hash_marks: Mutex<BTreeMap<u64, Vec<HashMark>>>,
    /// The lowest index in `hash_marks` (`u64::MAX` for none): one load per applied entry.
    pub(crate) hash_mark_min: AtomicU64,
}

/// Where the state hash at one log index goes: the hash and the ledger time there.
pub(crate) type HashMark = tokio::sync::oneshot::Sender<([u8; 32], u64)>;

/// The write lock on the applied state; releasing it wakes the async readers that found it
/// taken.
pub(crate) struct WriteGuard<'a> {
    guard: Option<RwLockWriteGuard<'a, Applied>>,
    unlocked: &'a tokio::sync::Notify,
}

impl std::ops::Deref for WriteGuard<'_> {
    type Target = Applied;
    fn deref(&self) -> &Applied {
        self.guard.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut Applied {
        self.guard.as_mut().expect("held until dropped")
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // Unlock first, then wake: a woken reader must find the lock free.
        drop(self.guard.take());
        self.unlocked.notify_waiters();
    }
}

/// Answers the state hashes asked for at `index` (just applied, `state` as it stands there)
/// and drops those asked for at an earlier index the state went past without applying it (a
/// snapshot installed over it): their askers learn it was missed.
fn answer_hash_marks(shared: &Shared, state: &LedgerState, index: u64) {
    let mut marks = shared.hash_marks.lock().unwrap_or_else(|p| p.into_inner());
    let later = marks.split_off(&(index + 1));
    let mut due = std::mem::replace(&mut *marks, later);
    shared.hash_mark_min.store(
        marks.keys().next().copied().unwrap_or(u64::MAX),
        Ordering::Release,
    );
    drop(marks);
    // Those of earlier indexes are dropped with `due`: their receivers see the miss.
    if let Some(askers) = due.remove(&index) {
        let answer = (state.state_hash(), state.now_ms());
        for asker in askers {
            let _ = asker.send(answer);
        }
    }
}

impl Shared {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // A panic while holding the lock would already have stopped the node loudly; the
        // data behind it is still what was last applied.
        self.applied.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells event streams that events up to `seq` are persisted (never moves backwards).
    fn publish_event_seq(&self, seq: u64) {
        self.event_seq.send_if_modified(|cur| {
            let newer = seq > *cur;
            if newer {
                *cur = seq;
            }
            newer
        });
    }

    fn write(&self) -> WriteGuard<'_> {
        WriteGuard {
            guard: Some(self.applied.write().unwrap_or_else(|p| p.into_inner())),
            unlocked: &self.unlocked,
        }
    }
}

/// openraft's state machine. Get a read handle for the server with [`Self::reader`].
pub struct StateMachineStore {
    shared: Arc<Shared>,
    /// The log opened with this state machine: an entry is applied only once it is on disk
    /// there (a leader's own entries are synced while they replicate: see `log_sync`).
    log_durability: Option<LogDurability>,
}

/// Builds a snapshot of the state as it is when `build_snapshot` runs.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

impl StateMachineStore {
    /// Applies entries only once `durability` says they are on disk (see `log_sync`).
    pub(crate) fn wait_for_log(&mut self, durability: LogDurability) {
        self.log_durability = Some(durability);
    }

    pub(crate) fn open(
        db: sled::Db,
        disk: Arc<DiskSync>,
        journal: JournalFile,
        snapshot_dir: &std::path::Path,
    ) -> Result<Self, StoreError> {
        let sm = db
            .open_tree("sm")
            .map_err(StoreError::sled("open tree sm"))?;
        // The state is decoded straight from the file: the file is never in memory whole.
        let (snapshots, current) =
            SnapshotFiles::open(snapshot_dir, |state| decode_state("snapshot state", state))?;
        let applied = match current {
            Some((meta, state, history)) => Applied {
                heads: heads_from_rows(&snapshot::decode_rows(&history)?, &state)?,
                state,
                last_applied: meta.last_log_id,
                membership: meta.last_membership,
            },
            None => Applied {
                state: LedgerState::new(),
                heads: AccountHeads::default(),
                last_applied: None,
                membership: Membership::default(),
            },
        };
        check_history_present(&sm, &journal, &applied.state)?;
        let last_event = match sm
            .scan_prefix([PREFIX_EVENT])
            .next_back()
            .transpose()
            .map_err(StoreError::sled("read last event"))?
        {
            Some((key, _)) => codec::key_u64("event key", &key[1..])?,
            None => 0,
        };
        let (event_seq, _) = watch::channel(last_event);
        let journal_rows_end = AtomicU64::new(journal_rows_end(&sm)?);
        Ok(StateMachineStore {
            log_durability: None,
            shared: Arc::new(Shared {
                db,
                sm,
                journal,
                disk,
                applied: RwLock::new(applied),
                snapshots,
                event_seq,
                snapshot_counter: AtomicU64::new(0),
                snapshot_failed_at: Mutex::new(None),
                outgoing: Mutex::new(Outgoing::default()),
                outgoing_done: std::sync::Condvar::new(),
                outgoing_wait_ms: AtomicU64::new(OUTGOING_WAIT.as_millis() as u64),
                outgoing_held: TestHold::new(),
                meta_only: AtomicBool::new(false),
                unlocked: tokio::sync::Notify::new(),
                journal_rows_end,
                scratch: Mutex::new(Scratch::default()),
                hash_marks: Mutex::new(BTreeMap::new()),
                hash_mark_min: AtomicU64::new(u64::MAX),
            }),
        })
    }

    /// Until the returned guard is dropped, `get_current_snapshot` answers the current
    /// snapshot's meta with empty data instead of assembling the form sent to followers
    /// (the state and every journal and event row, 2 GB and more at a million accounts,
    /// held until the process ends). Hold it across `openraft::Raft::new`, which reads the
    /// current snapshot once, for its meta only (`get_initial_state`); the guard must be gone
    /// before any follower can be sent a snapshot.
    pub fn meta_only_snapshots(&self) -> MetaOnlySnapshots {
        self.shared.meta_only.store(true, Ordering::Release);
        MetaOnlySnapshots(self.shared.clone())
    }

    /// Moves the journal blocks starting at or before `upto_seq` back into sled as `j` rows,
    /// the way builds before session 10 kept them, and syncs: for tests of reading such a
    /// data directory. Returns how many blocks moved. Not for use on a live node.
    #[doc(hidden)]
    pub fn keep_journal_blocks_in_sled_for_tests(
        &self,
        upto_seq: u64,
    ) -> Result<usize, StoreError> {
        let shared = &self.shared;
        let located: Vec<(sled::IVec, sled::IVec)> = shared
            .sm
            .range(seq_key(PREFIX_JOURNAL_AT, 0)..=seq_key(PREFIX_JOURNAL_AT, upto_seq))
            .collect::<Result<_, _>>()
            .map_err(StoreError::sled("read journal"))?;
        for (key, at) in &located {
            let block = shared.journal.read_located(at)?;
            let first = codec::key_u64("journal key", &key[1..])?;
            shared
                .sm
                .insert(seq_key(PREFIX_JOURNAL, first), block)
                .map_err(StoreError::sled("write journal"))?;
            shared
                .sm
                .remove(key)
                .map_err(StoreError::sled("write journal"))?;
        }
        shared.journal.sync()?;
        shared.disk.sync(&shared.db)?;
        Ok(located.len())
    }

    /// How long `get_current_snapshot` waits for the assembly of a snapshot for another node
    /// before it answers "not ready" (an empty snapshot; see `current_snapshot`). For tests of
    /// an assembly that outlasts the wait; the default is 200 ms.
    #[doc(hidden)]
    pub fn set_outgoing_snapshot_wait_for_tests(&self, wait: Duration) {
        self.shared
            .outgoing_wait_ms
            .store(wait.as_millis() as u64, Ordering::Relaxed);
    }

    /// While `held`, an assembly of the snapshot for another node, once done, waits before it
    /// hands over its result: for tests of what happens while one is at work.
    #[doc(hidden)]
    pub fn hold_outgoing_snapshot_assembly_for_tests(&self, held: bool) {
        self.shared.outgoing_held.set(held);
    }

    /// A cheap, cloneable read handle on the applied state, history and events.
    pub fn reader(&self) -> LedgerReader {
        LedgerReader::new(self.shared.clone())
    }

    /// Applies a batch under the write lock and writes its journal blocks (to the journal
    /// file) and rows (to sled) before releasing it, so anyone who sees the state at index N
    /// also finds N's journal rows.
    ///
    /// One `insert` per row, not a `sled::Batch`: sled 0.34 seals and writes its current IO
    /// buffer twice for every batch (`PageCache::pin_log`), a pwrite on one of its pool
    /// threads per applied entry. The rows need no atomicity of their own: after a crash the
    /// entries after the last snapshot are applied again and write the same rows (seqs are
    /// deterministic), and a snapshot build syncs sled before it is kept.
    fn apply_batch<I>(&self, entries: I) -> Result<Vec<EntryResponse>, StoreError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut responses = Vec::new();
        let mut rows: Vec<Row> = Vec::new();
        let mut scratch = self
            .shared
            .scratch
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        scratch.blocks.clear();
        let mut max_event = None;
        let mut applied = self.shared.write();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(EntryResponse::default()),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    responses.push(EntryResponse::default());
                }
                EntryPayload::Normal(ref data) => {
                    let Applied { state, heads, .. } = &mut *applied;
                    let spare = std::mem::take(&mut scratch.spare);
                    let mut result = state.apply_reusing(data.entry(), spare);
                    put_journal(
                        &mut scratch.blocks,
                        &result.journal,
                        &result.journal_ordinals,
                        state,
                        heads,
                    )?;
                    for ev in &result.events {
                        rows.push((
                            seq_key(PREFIX_EVENT, ev.seq),
                            codec::encode("ledger event", ev)?,
                        ));
                        max_event = max_event.max(Some(ev.seq));
                    }
                    scratch.spare = ApplySpare::take(&mut result);
                    responses.push(EntryResponse {
                        outcomes: result.outcomes,
                    });
                }
            }
            if entry.log_id.index >= self.shared.hash_mark_min.load(Ordering::Acquire) {
                answer_hash_marks(&self.shared, &applied.state, entry.log_id.index);
            }
        }
        rows.extend(store_blocks(&self.shared, &scratch.blocks)?);
        drop(scratch);
        for (key, value) in rows {
            self.shared
                .sm
                .insert(key, value)
                .map_err(StoreError::sled("write applied rows"))?;
        }
        drop(applied);
        self.shared.journal.trim_cache();
        if let Some(seq) = max_event {
            self.shared.publish_event_seq(seq);
        }
        Ok(responses)
    }

    /// Installs a snapshot received from the leader, read from its file without holding it
    /// in memory: checked end to end first, then its history rows go to the `sm` tree as they
    /// are read, and its state is decoded while it is copied into this node's own snapshot
    /// file (the state and the account heads, without the journal rows).
    async fn install(&self, meta: &Meta, file: std::fs::File) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let meta_owned = meta.clone();
        // Durable in this order: the journal rows (the local snapshot does not carry them, and
        // the log before the snapshot is not on this node), then the snapshot; only then is
        // the state replaced, so a restart finds both.
        let (state, heads, max_event) = tokio::task::spawn_blocking(
            move || -> Result<(LedgerState, AccountHeads, Option<u64>), StoreError> {
                let meta = meta_owned;
                let snapshots = &shared.snapshots;
                let mut build = snapshots.start_build(&meta, snapshot::INSTALL_TEMP)?;
                let received = Path::new("received snapshot");
                let mut max_event = None;
                let mut heads_rows = Vec::new();
                let read = snapshot::read_file(
                    file,
                    received,
                    |_, state| {
                        decode_state(
                            "received snapshot state",
                            Tee {
                                from: state,
                                to: &mut build,
                            },
                        )
                    },
                    |history| {
                        // Rows for entries this node already applied are the same bytes
                        // (deterministic seqs), so writing all of them over is safe and fills
                        // any gap.
                        let mut rows = sled::Batch::default();
                        let mut blocks = Vec::new();
                        let mut pending = 0usize;
                        snapshot::read_rows(history, |key, value| {
                            if key.as_slice() == KEY_ACCOUNT_HEADS {
                                heads_rows.push((key, value));
                                return Ok(());
                            }
                            if key.first() == Some(&PREFIX_EVENT) && key.len() == 9 {
                                let seq = codec::key_u64("event key", &key[1..])?;
                                max_event = max_event.max(Some(seq));
                            }
                            pending += key.len() + value.len();
                            if key.first() == Some(&PREFIX_JOURNAL) && key.len() == 9 {
                                let first = codec::key_u64("journal key", &key[1..])?;
                                blocks.push((first, value));
                            } else {
                                rows.insert(key, value);
                            }
                            if pending >= INSTALL_BATCH_BYTES {
                                install_blocks(&shared, std::mem::take(&mut blocks), &mut rows)?;
                                shared
                                    .sm
                                    .apply_batch(std::mem::take(&mut rows))
                                    .map_err(StoreError::sled("write installed snapshot rows"))?;
                                pending = 0;
                            }
                            Ok(())
                        })?;
                        install_blocks(&shared, blocks, &mut rows)?;
                        shared
                            .sm
                            .apply_batch(rows)
                            .map_err(StoreError::sled("write installed snapshot rows"))
                    },
                );
                let (header, state, ()) = read?;
                if header != meta {
                    return Err(StoreError::Corrupt {
                        what: "received snapshot",
                        reason: format!("its header says {header}, openraft's meta says {meta}"),
                    });
                }
                let heads = heads_from_rows(&heads_rows, &state)?;
                snapshots
                    .finish_build(build, &snapshot::encode_rows(&[heads_row(&heads, &state)?]))?;
                // The blocks before the rows that locate them (module docs of journal_file).
                shared.journal.sync()?;
                shared.disk.sync(&shared.db)?;
                snapshots.commit_build(&meta, snapshot::INSTALL_TEMP)?;
                drop_outgoing(&shared);
                Ok((state, heads, max_event))
            },
        )
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        let mut applied = self.shared.write();
        applied.state = state;
        applied.heads = heads;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        drop(applied);
        if let Some(seq) = max_event {
            self.shared.publish_event_seq(seq);
        }
        Ok(())
    }

    /// The snapshot as it is sent to another node: the local one plus every journal block and
    /// event row this node has, so the receiver serves the same history. Rows of entries after
    /// the snapshot point (this node applied more since) are committed data the receiver
    /// rewrites identically when it applies those entries, so carrying them is harmless.
    ///
    /// Assembling it reads the whole journal and writes a file as large, and openraft 0.9 asks
    /// for it on the task that applies entries: a node with a long history applied nothing for
    /// as long as that took (seconds), and did so again every time a receiver that could not
    /// take it was sent it anew. So the assembly runs on a thread of its own, is waited for
    /// at most [`OUTGOING_WAIT`], and is kept (an unlinked file, each sender reading it through
    /// a descriptor of its own) for every later request for the same snapshot, until a newer
    /// snapshot is built or it went unused for [`OUTGOING_KEEP`]. While it is not ready, the
    /// answer is an empty snapshot, which receivers refuse (`tally_raft`'s service) and openraft
    /// asks again a few seconds later.
    ///
    /// A failed assembly (a full disk, a damaged journal block) is not a storage error either:
    /// openraft 0.9 stops the whole node on one here (the leader, when a learner needs a
    /// snapshot: after a Recovery's `remove`, the cluster with it). It is logged, answered with
    /// the empty snapshot, and tried again after [`SNAPSHOT_RETRY_AFTER`].
    async fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let shared = self.shared.clone();
        let meta_only = self.shared.meta_only.load(Ordering::Acquire);
        let found = tokio::task::spawn_blocking(
            move || -> Result<Option<(Meta, std::fs::File)>, StoreError> {
                let Some(meta) = shared.snapshots.current_meta() else {
                    return Ok(None);
                };
                if meta_only {
                    return Ok(Some((meta, shared.snapshots.transfer_file()?)));
                }
                outgoing_snapshot(&shared, meta)
            },
        )
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(found.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

/// How long a request for the snapshot sent to other nodes waits for an assembly to finish
/// before it answers "not ready" (see `current_snapshot`): enough for a history of some
/// tens of MB, short enough that applies barely notice.
const OUTGOING_WAIT: Duration = Duration::from_millis(200);

/// How long an assembled snapshot for other nodes is kept unused (it holds disk space as
/// large as the history) before it is dropped.
const OUTGOING_KEEP: Duration = Duration::from_secs(600);

/// The snapshot assembled for other nodes (see `current_snapshot`).
#[derive(Default)]
struct Outgoing {
    /// Counts assemblies started; an assembly thread only ever touches its own.
    generation: u64,
    /// The id of the local snapshot it is (being) assembled from.
    snapshot_id: Option<String>,
    stage: OutgoingStage,
}

#[derive(Default)]
enum OutgoingStage {
    #[default]
    None,
    Assembling,
    Ready {
        meta: Meta,
        /// Unlinked; every request reads it through a descriptor of its own.
        file: std::fs::File,
        bytes: u64,
        used: Instant,
        /// Whether it was handed to a request yet.
        sent: bool,
    },
    Failed {
        at: Instant,
    },
}

/// The snapshot to send another node, as `current_snapshot` describes: the kept assembly of
/// `meta`'s snapshot, or an empty one while it is being assembled or failed. Blocking.
fn outgoing_snapshot(
    shared: &Arc<Shared>,
    meta: Meta,
) -> Result<Option<(Meta, std::fs::File)>, StoreError> {
    let mut outgoing = shared.outgoing.lock().unwrap_or_else(|p| p.into_inner());
    let same = outgoing.snapshot_id.as_deref() == Some(meta.snapshot_id.as_str());
    let retry = match &outgoing.stage {
        OutgoingStage::Failed { at } => at.elapsed() >= SNAPSHOT_RETRY_AFTER,
        OutgoingStage::None => true,
        _ => false,
    };
    if !same || retry {
        let Some((local, path)) = shared.snapshots.open_current()? else {
            return Ok(None);
        };
        outgoing.generation += 1;
        outgoing.snapshot_id = Some(meta.snapshot_id.clone());
        // Drops an earlier snapshot's assembly, and the disk space it held.
        outgoing.stage = OutgoingStage::Assembling;
        let generation = outgoing.generation;
        let assembler = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot-assembly".to_string())
            .spawn(move || assemble_in_background(assembler, generation, local, path));
        if let Err(error) = spawned {
            outgoing.stage = OutgoingStage::Failed { at: Instant::now() };
            tracing::error!(%error, "cannot start assembling the snapshot another node needs");
        }
    }
    let wait = Duration::from_millis(shared.outgoing_wait_ms.load(Ordering::Relaxed));
    let deadline = Instant::now() + wait;
    while matches!(outgoing.stage, OutgoingStage::Assembling) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        outgoing = shared
            .outgoing_done
            .wait_timeout(outgoing, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    if let OutgoingStage::Ready {
        meta,
        file,
        used,
        sent,
        ..
    } = &mut outgoing.stage
    {
        match reopen(file) {
            Ok(reopened) => {
                *used = Instant::now();
                *sent = true;
                return Ok(Some((meta.clone(), reopened)));
            }
            Err(error) => {
                tracing::error!(%error, "cannot read the assembled snapshot for another node again; it is assembled anew");
                outgoing.stage = OutgoingStage::None;
            }
        }
    }
    // Not ready (or failed): an empty snapshot, which the receiver refuses; asked again later.
    Ok(Some((meta, shared.snapshots.transfer_file()?)))
}

/// Drops the snapshot assembled for other nodes, and the disk space it holds: a newer
/// snapshot replaced the one it was made from. An assembly still at work is left to finish
/// (builds wait for it; an install here means this node follows, and nobody asks it).
fn drop_outgoing(shared: &Shared) {
    let mut outgoing = shared.outgoing.lock().unwrap_or_else(|p| p.into_inner());
    if matches!(outgoing.stage, OutgoingStage::Ready { .. }) {
        // A new generation: the old one's thread stops watching it.
        outgoing.generation += 1;
        outgoing.snapshot_id = None;
        outgoing.stage = OutgoingStage::None;
    }
}

/// Whether a snapshot for other nodes is being assembled now, or was assembled and not sent
/// yet (for at most [`OUTGOING_FIRST_SEND_WAIT`]): the receiver that asked for it is sent it
/// at its next request, a few seconds later, and a newer snapshot before that would have it
/// assembled anew, for ever where snapshots are due more often than that.
fn assembling_outgoing(shared: &Shared) -> bool {
    let outgoing = shared.outgoing.lock().unwrap_or_else(|p| p.into_inner());
    match &outgoing.stage {
        OutgoingStage::Assembling => true,
        OutgoingStage::Ready { sent, used, .. } => {
            !sent && used.elapsed() < OUTGOING_FIRST_SEND_WAIT
        }
        _ => false,
    }
}

/// How long an assembled snapshot for other nodes that no request took yet holds off newer
/// snapshot builds (see `assembling_outgoing`).
const OUTGOING_FIRST_SEND_WAIT: Duration = Duration::from_secs(30);

/// A descriptor of its own (its own offset) on the unlinked file `file`.
fn reopen(file: &std::fs::File) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Assembles the snapshot for other nodes from `local` (at `path`) on this thread, hands it to
/// `shared.outgoing` if assembly `generation` is still the one wanted, then drops it once
/// unused for [`OUTGOING_KEEP`] (holding the store only weakly meanwhile).
fn assemble_in_background(
    shared: Arc<Shared>,
    generation: u64,
    local: std::fs::File,
    path: std::path::PathBuf,
) {
    let started = Instant::now();
    let assembled = assemble_outgoing(&shared, local, &path).and_then(|(meta, file)| {
        let bytes = file
            .metadata()
            .map_err(|e| StoreError::io("stat", Path::new("outgoing snapshot"), e))?
            .len();
        Ok((meta, file, bytes))
    });
    shared.outgoing_held.pass();
    {
        let mut outgoing = shared.outgoing.lock().unwrap_or_else(|p| p.into_inner());
        if outgoing.generation != generation {
            return; // A newer snapshot's assembly replaced this one.
        }
        outgoing.stage = match assembled {
            Ok((meta, file, bytes)) => {
                tracing::info!(
                    index = ?meta.last_log_id.map(|id| id.index),
                    bytes,
                    assembly_ms = started.elapsed().as_millis() as u64,
                    "assembled the snapshot a lagging or new node needs (state, journal and \
                     events; kept for further requests until a newer snapshot, or {} s unused)",
                    OUTGOING_KEEP.as_secs()
                );
                OutgoingStage::Ready {
                    meta,
                    file,
                    bytes,
                    used: Instant::now(),
                    sent: false,
                }
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    "cannot assemble the snapshot a lagging or new node needs; it is sent an \
                     empty one, which it refuses, and stays behind (this node goes on); tried \
                     again in {} s",
                    SNAPSHOT_RETRY_AFTER.as_secs()
                );
                OutgoingStage::Failed { at: Instant::now() }
            }
        };
        shared.outgoing_done.notify_all();
    }
    let weak = Arc::downgrade(&shared);
    drop(shared);
    loop {
        std::thread::sleep(Duration::from_secs(30).min(OUTGOING_KEEP));
        let Some(shared) = weak.upgrade() else {
            return; // The store was closed.
        };
        let mut outgoing = shared.outgoing.lock().unwrap_or_else(|p| p.into_inner());
        if outgoing.generation != generation {
            return;
        }
        match &outgoing.stage {
            OutgoingStage::Ready { used, bytes, .. } if used.elapsed() >= OUTGOING_KEEP => {
                tracing::info!(
                    bytes,
                    "dropped the snapshot assembled for other nodes: unused for {} s",
                    OUTGOING_KEEP.as_secs()
                );
                outgoing.stage = OutgoingStage::None;
                outgoing.snapshot_id = None;
                return;
            }
            OutgoingStage::Ready { .. } => {}
            _ => return,
        }
    }
}

/// The snapshot sent to another node: the local snapshot `local` (at `path`) with its state,
/// then every journal block and ledger event row this node holds. Blocking.
fn assemble_outgoing(
    shared: &Shared,
    local: std::fs::File,
    path: &Path,
) -> Result<(Meta, std::fs::File), StoreError> {
    let outgoing = Path::new("outgoing snapshot");
    let io = |e| StoreError::io("write", outgoing, e);
    let file = shared.snapshots.transfer_file()?;
    // The local snapshot is checked, then its state copied across as it is read.
    let (meta, mut assembly, own_history) = snapshot::read_file(
        local,
        path,
        |meta, state| {
            let mut assembly = snapshot::Assembly::new(file, meta).map_err(io)?;
            assembly.state(state).map_err(io)?;
            Ok(assembly)
        },
        snapshot::history_bytes(path),
    )?;
    for (key, value) in snapshot::decode_rows(&own_history)? {
        assembly.row(&key, &value).map_err(io)?;
    }
    // Journal blocks travel as `j` rows holding the block, whichever way this node
    // keeps them (a receiver of an earlier build reads them as it always did).
    for row in shared.sm.scan_prefix([PREFIX_JOURNAL]) {
        let (key, value) = row.map_err(StoreError::sled("read history rows"))?;
        assembly.row(&key, &value).map_err(io)?;
    }
    for row in shared.sm.scan_prefix([PREFIX_JOURNAL_AT]) {
        let (key, value) = row.map_err(StoreError::sled("read history rows"))?;
        let block = shared.journal.read_located(&value)?;
        let first = codec::key_u64("journal key", &key[1..])?;
        assembly
            .row(&seq_key(PREFIX_JOURNAL, first), &block)
            .map_err(io)?;
    }
    for row in shared.sm.scan_prefix([PREFIX_EVENT]) {
        let (key, value) = row.map_err(StoreError::sled("read history rows"))?;
        assembly.row(&key, &value).map_err(io)?;
    }
    Ok((meta, assembly.finish().map_err(io)?))
}

/// Accounts a snapshot build encodes per hold of the state's lock: some 2 ms of encoding at
/// about 2 us an account, the longest apply then waits for a build.
const ACCOUNTS_PER_HOLD: u32 = 1_024;

/// What a build produced: its meta, the file being written, and the history rows.
type Built = (Meta, snapshot::Build, Vec<u8>);

fn encode_error(e: std::io::Error) -> StoreError {
    StoreError::Encode {
        what: "snapshot state",
        reason: e.to_string(),
    }
}

fn snapshot_meta(applied: &Applied, n: u64) -> Meta {
    let snapshot_id = match applied.last_applied {
        Some(id) => format!(
            "{}-{}-{}-{n}",
            id.leader_id.term, id.leader_id.node_id, id.index
        ),
        None => format!("none-{n}"),
    };
    Meta {
        last_log_id: applied.last_applied,
        last_membership: applied.membership.clone(),
        snapshot_id,
    }
}

/// How a build held the state's lock: the first hold (the begin), the longest, how many.
struct Holds {
    first: Duration,
    longest: Duration,
    count: u32,
}

/// Encodes the state straight into the build file (through a 1 MiB buffer: the encoding is
/// never whole in memory), without holding apply up while it does: the state's lock is
/// taken once to begin (the state's small parts, the account heads' sequence numbers and the
/// meta, all as of one applied index) and then once per [`ACCOUNTS_PER_HOLD`] accounts, and entries are
/// applied in between; an account changed before it is written is copied first, and the
/// dedup records are shared, so the file holds the state as of the index it began at (see
/// `LedgerState::begin_snapshot`). Returns how it held the lock. If the state is replaced
/// meanwhile (a snapshot installed), the build starts over as one encoding of the whole state
/// under the lock; if it fails, it ends its hold on the accounts.
fn encode_in_steps(shared: &Shared, n: u64) -> Result<(Built, Holds), StoreError> {
    // The heads as sequence numbers only (a copy of one array); each hold below names the
    // accounts of the block it wrote (ids never change, and the hold is still this state's).
    let (meta, seqs, start, mut writer, first) = {
        let mut applied = shared.write();
        let held = Instant::now();
        let seqs = applied.heads.0.clone();
        let meta = snapshot_meta(&applied, n);
        let mut start = Vec::new();
        let writer = applied
            .state
            .begin_snapshot(&mut start)
            .map_err(encode_error)?;
        (meta, seqs, start, writer, held.elapsed())
    };
    // A build that fails ends its hold on the accounts (or apply would go on copying them).
    let abandon = |writer: &tally_core::SnapshotWriter, error: StoreError| {
        shared.write().state.abandon_snapshot(writer);
        error
    };
    let mut build = match shared.snapshots.start_build(&meta, snapshot::BUILD_TEMP) {
        Ok(build) => build,
        Err(e) => return Err(abandon(&writer, e)),
    };
    std::io::Write::write_all(&mut build, &start).map_err(|e| abandon(&writer, encode_error(e)))?;
    let mut heads = Vec::with_capacity(seqs.len());
    let mut longest = first;
    let mut holds = 1;
    loop {
        let block = (holds - 1) as usize * ACCOUNTS_PER_HOLD as usize;
        let step = {
            let mut applied = shared.write();
            let held = Instant::now();
            let written = applied
                .state
                .write_snapshot_accounts(&mut writer, &mut build, ACCOUNTS_PER_HOLD)
                .map_err(encode_error)
                .and_then(|step| {
                    if let Some(step) = step {
                        let end = match step {
                            SnapshotStep::More => {
                                seqs.len().min(block + ACCOUNTS_PER_HOLD as usize)
                            }
                            SnapshotStep::AccountsWritten => seqs.len(),
                        };
                        if let Some(block_seqs) = seqs.get(block..end) {
                            list_heads(block_seqs, block, &applied.state, &mut heads)?;
                        }
                    }
                    Ok(step)
                });
            longest = longest.max(held.elapsed());
            match written {
                Ok(step) => step,
                Err(e) => {
                    applied.state.abandon_snapshot(&writer);
                    return Err(e);
                }
            }
        };
        holds += 1;
        match step {
            Some(SnapshotStep::More) => {}
            Some(SnapshotStep::AccountsWritten) => break,
            None => {
                tracing::info!("the state was replaced while a snapshot was built; building again");
                drop(build);
                let (built, whole) = encode_whole(shared, n)?;
                let holds = Holds {
                    first,
                    longest: longest.max(whole),
                    count: holds + 1,
                };
                return Ok((built, holds));
            }
        }
    }
    writer.finish(&mut build).map_err(encode_error)?;
    let history = snapshot::encode_rows(&[sorted_heads_row(heads)?]);
    let holds = Holds {
        first,
        longest,
        count: holds,
    };
    Ok(((meta, build, history), holds))
}

/// The whole state encoded under the lock, in one hold (returned with how long it took).
fn encode_whole(shared: &Shared, n: u64) -> Result<(Built, Duration), StoreError> {
    let applied = shared.read();
    let begun = Instant::now();
    let history = snapshot::encode_rows(&[heads_row(&applied.heads, &applied.state)?]);
    let meta = snapshot_meta(&applied, n);
    let mut build = shared.snapshots.start_build(&meta, snapshot::BUILD_TEMP)?;
    applied
        .state
        .encode_snapshot_into(&mut build)
        .map_err(encode_error)?;
    Ok(((meta, build, history), begun.elapsed()))
}

impl SnapshotBuilder {
    async fn build(&self) -> Result<Snapshot<TypeConfig>, StoreError> {
        let shared = self.shared.clone();
        let n = self.shared.snapshot_counter.fetch_add(1, Ordering::Relaxed);
        let built = tokio::task::spawn_blocking(move || -> Result<Option<Meta>, StoreError> {
            let mut failed_at = shared
                .snapshot_failed_at
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if failed_at.is_some_and(|at| at.elapsed() < SNAPSHOT_RETRY_AFTER) {
                return Ok(None);
            }
            // Not while the current snapshot is being assembled for another node: a newer one
            // would make that assembly stale before it is sent (and a build at every snapshot
            // interval shorter than an assembly would keep the node from ever getting one).
            // openraft asks again at the next commit.
            if assembling_outgoing(&shared) {
                tracing::debug!(
                    "snapshot build deferred: the current one is being assembled for another node"
                );
                return Ok(None);
            }
            // The writes land in the page cache; where the kernel's dirty-page limit is small
            // next to the snapshot they wait for the disk (session 2 saw seconds), but only
            // within one hold of the lock. The hash, by reading the file back, and the fsync
            // come after. The local snapshot holds no journal rows: they are in this node's
            // `sm` tree, synced below before the snapshot is made current;
            // `current_snapshot` adds them when the snapshot leaves for another node.
            let started = Instant::now();
            // Writing the new file touches nothing the node runs on: when it fails (the disk
            // is full: every node builds at about the same index, so all three would stop at
            // once), the file is removed and the node goes on with its last snapshot and its
            // log, which is not purged past it meanwhile.
            let written =
                encode_in_steps(&shared, n).and_then(|((meta, build, history), holds)| {
                    shared.snapshots.finish_build(build, &history)?;
                    shared.snapshots.sync_build(snapshot::BUILD_TEMP)?;
                    Ok((meta, holds))
                });
            let (meta, holds) = match written {
                Ok(written) => written,
                Err(error) => {
                    shared.snapshots.discard_build(snapshot::BUILD_TEMP);
                    *failed_at = Some(Instant::now());
                    tracing::error!(
                        %error,
                        "snapshot build failed, its file removed; the node goes on with its last \
                         snapshot and keeps its log (not purged past that snapshot, so it grows); \
                         the next build is tried in {} s at the earliest",
                        SNAPSHOT_RETRY_AFTER.as_secs()
                    );
                    return Ok(None);
                }
            };
            *failed_at = None;
            drop(failed_at);
            let encoded = started.elapsed();
            // The journal rows up to this snapshot must be durable before the log entries
            // that could rebuild them may be purged: the blocks first, then the rows that
            // locate them. (A failure here is the node's own data: fatal.)
            shared.journal.sync()?;
            shared.disk.sync(&shared.db)?;
            shared.snapshots.commit_build(&meta, snapshot::BUILD_TEMP)?;
            drop_outgoing(&shared);
            tracing::info!(
                index = ?meta.last_log_id.map(|id| id.index),
                state_lock_ms = holds.longest.as_millis() as u64,
                first_hold_ms = holds.first.as_millis() as u64,
                holds = holds.count,
                encode_ms = encoded.as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "snapshot built"
            );
            Ok(Some(meta))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        // A build that failed or was not tried answers the current snapshot's meta (none: the
        // default), which openraft takes as nothing new (`update_snapshot` keeps a snapshot
        // only when it is newer), so it neither purges the log nor stops.
        let meta =
            built.unwrap_or_else(|| self.shared.snapshots.current_meta().unwrap_or_default());
        // openraft 0.9 uses only the meta of a built snapshot (core/sm/worker.rs); what it
        // sends a follower comes from `get_current_snapshot`. So the data is not read back:
        // an empty file (two system calls) stands for it.
        let empty = self.shared.snapshots.transfer_file()?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(empty)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        self.build().await.map_err(sto(Subject::WriteSnapshot))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        let applied = self.shared.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<EntryResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let (Some(durability), Some(last)) = (&self.log_durability, entries.last()) {
            durability
                .wait_through(last.log_id.index)
                .await
                .map_err(sto(Subject::WriteStateMachine))?;
        }
        self.apply_batch(entries)
            .map_err(sto(Subject::WriteStateMachine))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let file = self
            .shared
            .snapshots
            .transfer_file()
            .map_err(sto(Subject::WriteSnapshot))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut file = *snapshot;
        // openraft wrote the chunks through tokio's buffer: flush it, then read from the start.
        let ready = async {
            file.flush().await?;
            file.rewind().await?;
            Ok::<_, std::io::Error>(file.into_std().await)
        };
        let file = ready
            .await
            .map_err(|e| StoreError::io("write", Path::new("received snapshot"), e))
            .map_err(sto(Subject::WriteSnapshot))?;
        self.install(meta, file)
            .await
            .map_err(sto(Subject::WriteSnapshot))
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        self.current_snapshot()
            .await
            .map_err(sto(Subject::ReadSnapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_snapshot_from_another_build_is_refused_with_what_to_do() {
        let mut bytes = LedgerState::new().encode_snapshot();
        assert!(decode_state("snapshot state", &bytes[..]).is_ok());
        // The format version follows the 8-byte magic. The previous version is still read (it
        // differs only in how amounts are written, which their decoder tells apart).
        let older = tally_core::SNAPSHOT_VERSION_READ_MIN;
        bytes[8..12].copy_from_slice(&older.to_le_bytes());
        assert!(decode_state("snapshot state", &bytes[..]).is_ok());
        // Anything older is refused.
        let older = tally_core::SNAPSHOT_VERSION_READ_MIN - 1;
        bytes[8..12].copy_from_slice(&older.to_le_bytes());
        let error = decode_state("snapshot state", &bytes[..]).unwrap_err();
        assert!(
            matches!(error, StoreError::UnknownVersion { version, .. } if u32::from(version) == older),
            "{error}"
        );
        assert!(error.to_string().contains("make clean-data"), "{error}");
        // Damage is still called damage.
        let truncated = &LedgerState::new().encode_snapshot()[..14];
        assert!(matches!(
            decode_state("snapshot state", truncated),
            Err(StoreError::Corrupt { .. })
        ));
    }

    /// A request handler reading the state while an entry is applied must not block its
    /// runtime thread: on a one-thread runtime, another task still runs while the reader
    /// waits, and the reader is woken when the writer lets go.
    #[tokio::test(flavor = "current_thread")]
    async fn an_async_reader_waits_for_a_writer_without_blocking_its_thread() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let (_log, store) = crate::open(dir.path()).unwrap();
        let shared = store.shared.clone();
        let reader = store.reader();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let guard = shared.write();
            locked_tx.send(()).unwrap();
            // Bounded, so that a reader that blocks the thread fails the test, not hangs it.
            let _ = release_rx.recv_timeout(Duration::from_secs(10));
            drop(guard);
        });
        locked_rx.recv().unwrap();

        let read = tokio::spawn(async move {
            reader
                .with_applied_state(|state, applied| (state.now_ms(), applied))
                .await
        });
        let other = tokio::spawn(async { 7 });
        assert_eq!(other.await.unwrap(), 7);
        assert!(
            !read.is_finished(),
            "the reader answered while the writer held the lock"
        );
        release_tx.send(()).unwrap();
        let (now_ms, applied) = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("the reader is woken when the writer lets go")
            .unwrap();
        assert_eq!((now_ms, applied), (0, None));
        holder.join().unwrap();
    }
}
