//! The ledger state and its one entry point, [`LedgerState::apply`].
//!
//! Every collection is iterated in a canonical order (`BTreeMap`/`BTreeSet` key order, or
//! creation order for the account table and the dedup records), so iteration order, the
//! snapshot encoding and the state hash are the same on every replica for the same log. The
//! two hash indexes (accounts by id, remembered event ids) only find entries: they are never
//! iterated, encoded or hashed.

use bincode::Options;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

use crate::account::{Account, Params};
use crate::command::{Command, Entry, LedgerConfig, FUTURE_TOLERANCE_MS};
use crate::dedup::{Dedup, Remembered};
use crate::effects::{Out, Totals};
use crate::ids::{AccountId, AssetCode, BookId, EventId};
use crate::journal::{JournalEntry, LedgerEvent};
use crate::money::Amount;
use crate::outcome::{Draw, Outcome, Settlement};
use crate::pricing::PriceBook;
use crate::table::Accounts;
use crate::view::{
    AccountView, AssetView, GrantView, HoldView, Month, PriceVersionView, ReportView,
};

/// Snapshot header: magic and format version.
const SNAPSHOT_MAGIC: &[u8; 8] = b"TALLYSNP";
/// 2: accounts by ordinal, dedup records in their compact byte form.
/// 3: integers and lengths as varints (bincode's default options), as in the log.
/// 4: amounts in their compact form (1 to 13 bytes, see `Amount`'s `Serialize`).
pub const SNAPSHOT_VERSION: u32 = 4;

/// The oldest snapshot version this build reads: a version 3 snapshot differs only in its
/// amounts (16 fixed bytes each), which the amount decoder tells by their length.
pub const SNAPSHOT_VERSION_READ_MIN: u32 = 3;

/// The encoding of snapshots and of the state hash: bincode with varint integers and
/// lengths. About 40% fewer bytes than fixed-width integers (every amount carried an 8-byte
/// length), so a snapshot is built, hashed and shipped in less time and memory.
/// Magic and format version: what a state snapshot starts with.
const SNAPSHOT_PREFIX_LEN: usize = 12;

fn check_snapshot_prefix(bytes: &[u8]) -> Result<(), SnapshotError> {
    if bytes.len() < SNAPSHOT_PREFIX_LEN || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(SnapshotError::Corrupt("missing TALLYSNP header".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if !(SNAPSHOT_VERSION_READ_MIN..=SNAPSHOT_VERSION).contains(&version) {
        return Err(SnapshotError::UnknownVersion(version));
    }
    Ok(())
}

fn snapshot_options() -> impl bincode::Options {
    bincode::DefaultOptions::new()
}

/// What one entry produced: one outcome per command, plus the journal entries and ledger
/// events for storage to persist (the state itself does not keep them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    pub outcomes: Vec<Outcome>,
    pub journal: Vec<JournalEntry>,
    /// The account ordinal of each journal entry (`journal_ordinals[i]` is that of
    /// `journal[i]`): storage chains each account's history by ordinal, and would otherwise
    /// look every entry's account up again by its id.
    pub journal_ordinals: Vec<u32>,
    pub events: Vec<LedgerEvent>,
}

/// The journal lists of an [`ApplyResult`] the caller is done with, to build the next
/// result's in ([`LedgerState::apply_reusing`]).
#[derive(Debug, Default)]
pub struct ApplySpare {
    journal: Vec<JournalEntry>,
    journal_ordinals: Vec<u32>,
}

impl ApplySpare {
    /// Lists kept longer than this many entries are let go rather than kept for the next
    /// entry (an unusually large entry's).
    const KEPT_MAX: usize = 65_536;

    /// Takes `result`'s journal lists (leaving them empty), emptied, to reuse.
    pub fn take(result: &mut ApplyResult) -> ApplySpare {
        let mut journal = std::mem::take(&mut result.journal);
        let mut journal_ordinals = std::mem::take(&mut result.journal_ordinals);
        if journal.capacity() > Self::KEPT_MAX {
            journal = Vec::new();
            journal_ordinals = Vec::new();
        }
        journal.clear();
        journal_ordinals.clear();
        ApplySpare {
            journal,
            journal_ordinals,
        }
    }
}

/// A snapshot being written while the state changes (see [`LedgerState::begin_snapshot`]).
pub struct SnapshotWriter {
    build: u64,
    /// The price books, their ids and the cost book, encoded.
    middle: Vec<u8>,
    dedup: crate::dedup::FrozenRecords,
    /// The due index as of the start, gathered from the accounts as they are written (it is
    /// derived from them: each account with a due time, filed under it).
    due: Vec<(u64, u32)>,
    /// The totals, encoded.
    tail: Vec<u8>,
}

/// What [`LedgerState::write_snapshot_accounts`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotStep {
    /// Accounts are left to write.
    More,
    /// Every account is written: [`SnapshotWriter::finish`] next.
    AccountsWritten,
}

impl SnapshotWriter {
    /// Writes the rest of the snapshot (after every account).
    pub fn finish<W: std::io::Write>(self, mut out: W) -> std::io::Result<()> {
        out.write_all(&self.middle)?;
        encode_part(&mut out, &self.dedup)?;
        // A set is encoded as its length and its items in order, like this sorted list.
        let mut due = self.due;
        due.sort_unstable();
        encode_part(&mut out, &due)?;
        out.write_all(&self.tail)
    }
}

/// What a snapshot starts with: magic and format version.
fn write_snapshot_prefix(out: &mut impl std::io::Write) -> std::io::Result<()> {
    out.write_all(SNAPSHOT_MAGIC)?;
    out.write_all(&SNAPSHOT_VERSION.to_le_bytes())
}

/// `value` in the snapshot's encoding, written to `out`.
fn encode_part<T: serde::Serialize + ?Sized>(
    out: &mut impl std::io::Write,
    value: &T,
) -> std::io::Result<()> {
    snapshot_options()
        .serialize_into(out, value)
        .map_err(|e| match *e {
            bincode::ErrorKind::Io(io) => io,
            other => std::io::Error::other(other.to_string()),
        })
}

#[derive(Debug, PartialEq, Eq)]
pub enum SnapshotError {
    UnknownVersion(u32),
    Corrupt(String),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::UnknownVersion(v) => write!(f, "unknown snapshot format version {v}"),
            SnapshotError::Corrupt(why) => write!(f, "corrupt snapshot: {why}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    pub(crate) now_ms: u64,
    pub(crate) config: Option<LedgerConfig>,
    /// Asset code -> scale.
    pub(crate) assets: BTreeMap<AssetCode, u32>,
    /// Accounts by ordinal, with their ids and an index by id.
    pub(crate) accounts: Accounts,
    pub(crate) price_books: BTreeMap<BookId, PriceBook>,
    /// Price book ids by ordinal.
    pub(crate) book_ids: Vec<BookId>,
    pub(crate) cost_book: Option<PriceBook>,
    /// Remembered event ids (by account ordinal), oldest first.
    pub(crate) dedup: Dedup,
    /// (due time, account ordinal) of every account with a pending time-driven transition.
    pub(crate) due: BTreeSet<(u64, u32)>,
    pub(crate) totals: Totals,
}

impl LedgerState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one replicated entry. Deterministic: depends only on `self` and `entry`.
    pub fn apply(&mut self, entry: &Entry) -> ApplyResult {
        self.apply_reusing(entry, ApplySpare::default())
    }

    /// [`Self::apply`], building the journal lists in `spare`'s (empty): a caller that
    /// applies entry after entry hands back the last result's lists ([`ApplySpare::take`]) instead
    /// of having a new pair allocated, a megabyte and more per entry of 8,190 events, which
    /// was often memory the process had not touched yet (the kernel zeroing it was 2.5% of a
    /// follower's samples at 16 x 100). The result is the same.
    pub fn apply_reusing(&mut self, entry: &Entry, spare: ApplySpare) -> ApplyResult {
        self.now_ms = self.now_ms.max(entry.at_ms);
        // Most usage events journal one entry: room for all of the entry's up front, rather
        // than growing (and copying) the lists batch by batch.
        let usage_events: usize = entry
            .commands
            .iter()
            .map(|command| match command {
                Command::Usage(_) => 1,
                Command::UsageBatch { events, .. } => events.len(),
                _ => 0,
            })
            .sum();
        // An `ApplySpare` only ever holds empty lists (`take` empties them).
        let ApplySpare {
            mut journal,
            mut journal_ordinals,
        } = spare;
        journal.reserve(usage_events);
        journal_ordinals.reserve(usage_events);
        let mut result = ApplyResult {
            outcomes: Vec::with_capacity(entry.commands.len()),
            journal,
            journal_ordinals,
            ..Default::default()
        };
        self.forget_old_event_ids();
        for command in &entry.commands {
            let outcome = self.apply_command(command, &mut result);
            result.outcomes.push(outcome);
        }
        result
    }

    pub(crate) fn params(&self) -> Params {
        let config = self.config.as_ref();
        Params {
            reporting_scale: config.map_or(0, |c| c.reporting_scale),
            dedup_window_ms: config.map_or(0, |c| c.dedup_window_ms),
        }
    }

    /// Forgets the event ids no replay can reach any more. An event settled at `settled_at`
    /// occurred at most `FUTURE_TOLERANCE_MS` later, and a replay of it is accepted while its
    /// `occurred_at >= now - window`, that is up to `now == settled_at + window + tolerance`
    /// inclusive: the id is kept through that instant and forgotten only after it.
    fn forget_old_event_ids(&mut self) {
        let (now, window) = (self.now_ms, self.params().dedup_window_ms);
        self.dedup.forget_while(|settled_at| {
            settled_at
                .saturating_add(window)
                .saturating_add(FUTURE_TOLERANCE_MS)
                < now
        });
    }

    /// Runs the due transitions of one account and re-files it in the due index.
    pub(crate) fn touch(&mut self, id: &AccountId, result: &mut ApplyResult) -> bool {
        let params = self.params();
        let now = self.now_ms;
        let Some(account) = self.accounts.get_mut(id) else {
            return false;
        };
        if account.due_at().is_some_and(|at| at <= now) {
            let mut out = Out {
                result,
                totals: &mut self.totals,
            };
            account.run_due(id, now, params, &mut out);
            reschedule(&mut self.due, account, params);
        }
        true
    }

    /// Applies every due transition ledger-wide (the tick).
    pub(crate) fn run_all_due(&mut self, result: &mut ApplyResult) {
        while let Some(&(at, ordinal)) = self.due.first() {
            if at > self.now_ms {
                break;
            }
            let id = self.accounts.id(ordinal).clone();
            self.touch(&id, result);
        }
    }

    /// Rebuilds the original result of a remembered event.
    pub(crate) fn remembered_settlement(
        book_ids: &[BookId],
        account: &Account,
        id: &AccountId,
        event_id: &EventId,
        remembered: &Remembered,
    ) -> Settlement {
        Settlement {
            event_id: event_id.clone(),
            account: id.clone(),
            charged: remembered.charged,
            balance_after: remembered.balance_after,
            drawdown: remembered
                .draws
                .iter()
                .map(|(index, amount)| Draw {
                    grant: account.grants[*index as usize].id.clone(),
                    amount: *amount,
                })
                .collect(),
            debt_created: remembered.debt_created,
            from_hold: remembered.from_hold,
            revenue: remembered.revenue,
            cost: remembered.cost,
            margin: remembered
                .revenue
                .checked_sub(remembered.cost)
                .expect("bounded amounts"),
            price_book: match remembered.price_book {
                0 => None,
                n => Some(book_ids[n as usize - 1].clone()),
            },
            price_version: remembered.price_version,
            settled_at: remembered.settled_at,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn config(&self) -> Option<&LedgerConfig> {
        self.config.as_ref()
    }

    /// The seq of the last journal entry written (0 for none): a journal entry's seq is one
    /// more than the one before.
    pub fn journal_seq(&self) -> u64 {
        self.totals.journal_seq
    }

    /// The seq of the last ledger event emitted (0 for none).
    pub fn event_seq(&self) -> u64 {
        self.totals.event_seq
    }

    /// Whether the ledger has applied its `Init` (which must come before any other command).
    pub fn is_initialized(&self) -> bool {
        self.config.is_some()
    }

    pub fn asset(&self, code: &AssetCode) -> Option<AssetView> {
        self.assets
            .get(code)
            .map(|scale| self.asset_view(code, *scale))
    }

    fn asset_view(&self, code: &AssetCode, scale: u32) -> AssetView {
        AssetView {
            code: code.clone(),
            scale,
            is_reporting_currency: self
                .config
                .as_ref()
                .is_some_and(|c| &c.reporting_currency == code),
        }
    }

    pub fn assets(&self) -> Vec<AssetView> {
        self.assets
            .iter()
            .map(|(code, scale)| self.asset_view(code, *scale))
            .collect()
    }

    /// The scale of an account's asset, if the account exists: a cheap check for the edge.
    pub fn account_scale(&self, id: &AccountId) -> Option<u32> {
        self.accounts.get(id).map(|account| account.scale)
    }

    /// Number of accounts.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// Number of remembered event ids.
    pub fn remembered_event_count(&self) -> usize {
        self.dedup.len()
    }

    /// The account's ordinal: its place in creation order (the first account is 0). Stable for
    /// the life of the ledger and equal on every node (accounts are never removed), so a store
    /// can keep per-account data in a dense array instead of a map keyed by id.
    pub fn account_ordinal(&self, id: &AccountId) -> Option<u32> {
        self.accounts.ordinal(id)
    }

    /// The id of the account with `ordinal`, if there is one.
    pub fn account_id(&self, ordinal: u32) -> Option<&AccountId> {
        (ordinal < self.accounts.len() as u32).then(|| self.accounts.id(ordinal))
    }

    /// The account as of ledger time now, with due transitions (expiry, reset, hold expiry)
    /// applied to the view even when no tick has run yet.
    pub fn account(&self, id: &AccountId) -> Option<AccountView> {
        let mut account = self.accounts.get(id)?.clone();
        let mut scratch_result = ApplyResult::default();
        let mut scratch_totals = Totals::default();
        account.run_due(
            id,
            self.now_ms,
            self.params(),
            &mut Out {
                result: &mut scratch_result,
                totals: &mut scratch_totals,
            },
        );
        let order = account.drawdown_order();
        let mut grant_indices = order.clone();
        grant_indices.extend((0..account.grants.len()).filter(|i| !order.contains(i)));
        let grants = grant_indices
            .into_iter()
            .map(|index| {
                let g = &account.grants[index];
                let state = match g.ended {
                    Some(crate::account::GrantEnd::Expired) => "expired",
                    Some(crate::account::GrantEnd::Voided) => "voided",
                    None if !g.started => "pending",
                    None if g.remaining.is_zero() => "spent",
                    None => "live",
                };
                GrantView {
                    id: g.id.clone(),
                    category: g.category,
                    amount: g.amount,
                    remaining: g.remaining,
                    priority: g.priority,
                    starts_at: g.starts_at,
                    expires_at: g.expires_at(),
                    reset_every: g.reset_every,
                    next_reset: g.next_reset(),
                    rollover_max: g.rollover_max(),
                    paid: g.paid,
                    state: state.to_string(),
                }
            })
            .collect();
        let holds = account
            .holds
            .open_by_id()
            .map(|(hold_id, h)| HoldView {
                id: hold_id.clone(),
                amount: h.amount,
                remaining: h.remaining,
                captured: h.captured,
                expires_at: h.expires_at,
            })
            .collect();
        Some(AccountView {
            id: id.clone(),
            asset: account.asset.clone(),
            scale: account.scale,
            status: account.status,
            price_book: account
                .price_book
                .map(|book| self.book_ids[book as usize].clone()),
            credit_limit: account.credit_limit(),
            list_price: account.list_price(),
            balance: account.balance(),
            available: account.available(),
            held: account.held(),
            debt: account.debt(),
            metadata: account.settings().metadata.clone(),
            thresholds: account.settings().thresholds.clone(),
            auto_recharge: account.settings().auto_recharge.clone(),
            grants,
            holds,
            as_of: self.now_ms,
        })
    }

    /// Report for one account (or the whole ledger with `None`), for one month or all time.
    /// `None` when the account does not exist.
    pub fn report(&self, account: Option<&AccountId>, month: Option<Month>) -> Option<ReportView> {
        let in_month = |m: &Month| month.is_none_or(|wanted| *m == wanted);
        let mut view = match account {
            Some(id) => {
                let account = self.accounts.get(id)?;
                let mut view = crate::report::to_view(
                    account
                        .reports
                        .iter()
                        .filter(|(m, _)| in_month(m))
                        .map(|(_, agg)| (&account.asset, agg)),
                );
                view.account = Some(id.clone());
                view
            }
            // Ledger-wide figures: the sums kept as the accounts' change.
            None => crate::report::to_view(self.totals.reports.iter(month)),
        };
        view.month = month;
        Some(view)
    }

    /// The price version of `book` in force at `at_ms` (default: now).
    pub fn price_version(&self, book: &BookId, at_ms: Option<u64>) -> Option<PriceVersionView> {
        let price_book = self.price_books.get(book)?;
        let version = price_book.version_at(at_ms.unwrap_or(self.now_ms))?;
        Some(PriceVersionView {
            book: Some(book.clone()),
            asset: price_book.asset.clone(),
            version: version.version,
            effective_from: version.effective_from,
            rates: version.all_rates(),
        })
    }

    /// Every version of a price book, oldest first.
    pub fn price_versions(&self, book: &BookId) -> Option<Vec<PriceVersionView>> {
        let price_book = self.price_books.get(book)?;
        Some(
            price_book
                .versions
                .iter()
                .map(|version| PriceVersionView {
                    book: Some(book.clone()),
                    asset: price_book.asset.clone(),
                    version: version.version,
                    effective_from: version.effective_from,
                    rates: version.all_rates(),
                })
                .collect(),
        )
    }

    /// When the earliest version of `book` takes effect (`None`: no such book).
    pub fn price_first_effective_from(&self, book: &BookId) -> Option<u64> {
        self.price_books.get(book)?.first_effective_from()
    }

    /// When the cost book's earliest version takes effect (`None`: no costs were published).
    pub fn cost_first_effective_from(&self) -> Option<u64> {
        self.cost_book.as_ref()?.first_effective_from()
    }

    /// The cost book version in force at `at_ms` (default: now).
    pub fn cost_version(&self, at_ms: Option<u64>) -> Option<PriceVersionView> {
        let book = self.cost_book.as_ref()?;
        let version = book.version_at(at_ms.unwrap_or(self.now_ms))?;
        Some(PriceVersionView {
            book: None,
            asset: book.asset.clone(),
            version: version.version,
            effective_from: version.effective_from,
            rates: version.all_rates(),
        })
    }

    /// Versioned binary snapshot of the whole state.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.encode_snapshot_into(&mut bytes)
            .expect("writing to a Vec cannot fail");
        bytes
    }

    /// [`Self::encode_snapshot`] written to `out` as it is encoded (no intermediate buffer).
    pub fn encode_snapshot_into<W: std::io::Write>(&self, mut out: W) -> std::io::Result<()> {
        write_snapshot_prefix(&mut out)?;
        encode_part(&mut out, self)
    }

    /// Starts writing a snapshot of the state as it is now, the same bytes as
    /// [`Self::encode_snapshot_into`], without holding the state still while it is written:
    /// this writes the start of it to `out`, keeps the small parts encoded aside and the dedup
    /// records shared, and leaves the accounts (and the due index, gathered from them) to
    /// [`Self::write_snapshot_accounts`], a few at a time, while entries go on being applied
    /// in between (an account changed before it is written is copied first, as it was). Then
    /// [`SnapshotWriter::finish`] writes the rest, without the state. Beginning another
    /// snapshot ends this one's hold on the accounts.
    pub fn begin_snapshot<W: std::io::Write>(
        &mut self,
        mut out: W,
    ) -> std::io::Result<SnapshotWriter> {
        static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let build = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        write_snapshot_prefix(&mut out)?;
        // The fields in their order in the struct (bincode writes a struct as its fields one
        // after the other), the accounts as the length of their list and then each one.
        encode_part(&mut out, &self.now_ms)?;
        encode_part(&mut out, &self.config)?;
        encode_part(&mut out, &self.assets)?;
        encode_part(&mut out, &(self.accounts.len() as u64))?;
        let mut middle = Vec::new();
        encode_part(&mut middle, &self.price_books)?;
        encode_part(&mut middle, &self.book_ids)?;
        encode_part(&mut middle, &self.cost_book)?;
        let mut tail = Vec::new();
        encode_part(&mut tail, &self.totals)?;
        self.accounts.freeze(build);
        Ok(SnapshotWriter {
            build,
            middle,
            dedup: self.dedup.frozen(),
            due: Vec::with_capacity(self.due.len()),
            tail,
        })
    }

    /// Writes the next (up to) `max` accounts of the snapshot `writer` began. `Ok(None)`
    /// when the snapshot cannot be finished from this state (it was replaced, or another
    /// snapshot began): start over.
    pub fn write_snapshot_accounts<W: std::io::Write>(
        &mut self,
        writer: &mut SnapshotWriter,
        mut out: W,
        max: u32,
    ) -> std::io::Result<Option<SnapshotStep>> {
        let due = &mut writer.due;
        let step = self
            .accounts
            .write_frozen(writer.build, max, |id, account| {
                if let Some(at) = account.due_at() {
                    due.push((at, account.ordinal));
                }
                encode_part(&mut out, &(id, account))
            })?;
        Ok(step.map(|done| {
            if done {
                SnapshotStep::AccountsWritten
            } else {
                SnapshotStep::More
            }
        }))
    }

    /// Ends the hold of the snapshot `writer` began on the accounts, if it still has it (a
    /// build that failed: the accounts it had not written stop being copied).
    pub fn abandon_snapshot(&mut self, writer: &SnapshotWriter) {
        self.accounts.thaw(writer.build);
    }

    /// Decodes a snapshot and checks the invariants of what it decoded (the pair of the
    /// checks done after apply), so a corrupt snapshot is refused rather than served.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<Self, SnapshotError> {
        Self::decode_snapshot_from(bytes)
    }

    /// [`Self::decode_snapshot`] read from `reader` as it decodes, so a large snapshot (some
    /// 450 MB at a million accounts) is never in memory beside the state it decodes to. The
    /// snapshot must end where `reader` does: anything after it is refused as corrupt.
    pub fn decode_snapshot_from<R: std::io::Read>(mut reader: R) -> Result<Self, SnapshotError> {
        let unreadable = |e: std::io::Error| SnapshotError::Corrupt(e.to_string());
        let mut prefix = [0u8; SNAPSHOT_PREFIX_LEN];
        match reader.read_exact(&mut prefix) {
            Ok(()) => check_snapshot_prefix(&prefix)?,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(SnapshotError::Corrupt("missing TALLYSNP header".into()))
            }
            Err(e) => return Err(unreadable(e)),
        }
        let mut state: LedgerState = snapshot_options()
            .deserialize_from(&mut reader)
            .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        state.totals.reports = state.ledger_reports_from_accounts();
        if reader.read(&mut [0u8; 1]).map_err(unreadable)? != 0 {
            return Err(SnapshotError::Corrupt(
                "bytes follow the end of the state".into(),
            ));
        }
        // The report sums were just rebuilt from the accounts: comparing them again would
        // only walk every account a second time.
        state
            .check_stored_invariants()
            .map_err(SnapshotError::Corrupt)?;
        Ok(state)
    }

    /// SHA-256 over the canonical encoding of the whole state.
    pub fn state_hash(&self) -> [u8; 32] {
        // Hashed as it is encoded, without holding the encoding in memory.
        let mut hasher = Sha256::new();
        snapshot_options()
            .serialize_into(&mut hasher, self)
            .expect("the state always serializes");
        hasher.finalize().into()
    }

    /// The state hash as lowercase hex.
    pub fn state_hash_hex(&self) -> String {
        self.state_hash()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The ledger-wide report figures, summed from every account's.
    fn ledger_reports_from_accounts(&self) -> crate::report::LedgerReports {
        crate::report::LedgerReports::from_accounts(
            self.accounts
                .values()
                .map(|account| (&account.asset, &account.reports)),
        )
    }

    /// Checks conservation and the other invariants, and that the ledger-wide report sums
    /// kept as events settle are the sum of the accounts' figures; `Err` names what is broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_stored_invariants()?;
        if self.totals.reports != self.ledger_reports_from_accounts() {
            return Err("the ledger-wide report figures are not the sum of the accounts'".into());
        }
        Ok(())
    }

    /// [`Self::check_invariants`] of what a snapshot holds (all but the derived report sums).
    fn check_stored_invariants(&self) -> Result<(), String> {
        let mut grants_by_asset: BTreeMap<&AssetCode, Amount> = BTreeMap::new();
        let mut debt_by_asset: BTreeMap<&AssetCode, Amount> = BTreeMap::new();
        for (id, account) in self.accounts.iter() {
            let grants = grants_by_asset.entry(&account.asset).or_default();
            for grant in &account.grants {
                if grant.remaining.is_negative() {
                    return Err(format!("grant {} of {id} has negative remaining", grant.id));
                }
                *grants = grants.checked_add(grant.remaining).ok_or("overflow")?;
            }
            if account.debt().is_negative() {
                return Err(format!("account {id} has negative debt"));
            }
            if let Some(book) = account.price_book {
                if !self
                    .book_ids
                    .get(book as usize)
                    .is_some_and(|book| self.price_books.contains_key(book))
                {
                    return Err(format!(
                        "account {id} names price book #{book}, which is unknown"
                    ));
                }
            }
            let debt = debt_by_asset.entry(&account.asset).or_default();
            *debt = debt.checked_add(account.debt()).ok_or("overflow")?;
            account
                .holds
                .check_indexes()
                .map_err(|error| format!("account {id}: {error}"))?;
            for (hold_id, hold) in account.holds.iter() {
                if hold.remaining.is_negative() || hold.remaining > hold.amount {
                    return Err(format!(
                        "hold {hold_id} of {id} reserves {}",
                        hold.remaining
                    ));
                }
                if hold.ended.is_some() && !hold.remaining.is_zero() {
                    return Err(format!("ended hold {hold_id} of {id} still reserves value"));
                }
            }
            let params = self.params();
            if account.due_at() != account.next_due(params) {
                return Err(format!("account {id} is filed as due at the wrong time"));
            }
            if let Some(at) = account.due_at() {
                if !self.due.contains(&(at, account.ordinal)) {
                    return Err(format!("account {id} is missing from the due index"));
                }
            }
        }
        let filed = self
            .accounts
            .values()
            .filter(|account| account.due_at().is_some())
            .count();
        if self.due.len() != filed {
            return Err(format!(
                "the due index holds {} entries for {filed} accounts due",
                self.due.len()
            ));
        }
        for (asset, books) in &self.totals.books {
            if !books.sum().is_zero() {
                return Err(format!("postings of {asset} do not sum to zero: {books:?}"));
            }
            let grants = grants_by_asset.get(asset).copied().unwrap_or_default();
            if books.customer_grants != grants {
                return Err(format!(
                    "{asset}: customer grant books hold {} but grants hold {grants}",
                    books.customer_grants
                ));
            }
            let debt = debt_by_asset.get(asset).copied().unwrap_or_default();
            if books.receivable != -debt {
                return Err(format!(
                    "{asset}: receivable is {} but debt is {debt}",
                    books.receivable
                ));
            }
        }
        for (asset, grants) in &grants_by_asset {
            if !grants.is_zero() && !self.totals.books.contains_key(*asset) {
                return Err(format!("{asset}: grants exist without postings"));
            }
        }
        Ok(())
    }
}

/// Re-files an account in the due index after it changed.
pub(crate) fn reschedule(due: &mut BTreeSet<(u64, u32)>, account: &mut Account, params: Params) {
    let next = account.next_due(params);
    if next == account.due_at() {
        return;
    }
    if let Some(old) = account.due_at() {
        due.remove(&(old, account.ordinal));
    }
    if let Some(new) = next {
        due.insert((new, account.ordinal));
    }
    account.set_due_at(next);
}
