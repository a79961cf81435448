//! An account: one customer balance in one asset, made of grants, debt and holds, and the
//! time-driven transitions of those parts (grant start, expiry, allowance reset, hold expiry).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU64;
use std::sync::Arc;

use crate::calendar::{add_months, month_of, MS_PER_DAY, MS_PER_WEEK};
use crate::command::{AccountStatus, AutoRecharge, GrantCategory, ResetPeriod};
use crate::effects::Out;
use crate::ids::{AccountId, AssetCode, GrantId, HoldId, Key, Meter};
use crate::journal::{Book, JournalKind, LedgerEventKind};
use crate::money::Amount;
use crate::report::{minus, plus, ReportAgg};
use crate::share::{shared, Recent};
use crate::table::FoldHasher;
use crate::vecmap::{insert_one, VecMap};
use crate::view::Month;

/// One account. Kept small (at most 128 bytes, one allocator size class): the state holds one
/// per customer, a million of them per node is an expected size. What most accounts leave at
/// its default (credit terms, debt, settings, holds) is held apart and `None` while default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Account {
    /// Creation order; the compact key of the dedup table.
    pub ordinal: u32,
    pub asset: AssetCode,
    pub scale: u32,
    pub status: AccountStatus,
    /// The asset is the ledger's reporting currency (the default list price is then 1).
    pub reporting_asset: bool,
    /// The ordinal of the account's price book (its id is the ledger's `book_ids[ordinal]`):
    /// 8 bytes, where an id takes 16.
    pub price_book: Option<u32>,
    /// Credit limit, list price and debt; `None` while all are at their defaults (no
    /// credit, the default list price, never in debt). Read and changed through
    /// [`Account::credit_limit`], [`Account::debt`], [`Account::update_credit`] and the like.
    #[serde(with = "shared_credit")]
    credit: Option<Arc<Credit>>,
    /// Metadata and alert rules; `None` when the account has none (most accounts), which
    /// keeps every account's fixed size small.
    pub settings: Option<Box<AccountSettings>>,
    /// A recharge was requested and no purchased grant has arrived since.
    pub recharge_pending: bool,
    /// `balance_depleted` fired and the balance has not come back above zero since.
    pub depleted: bool,
    /// Every grant ever added, in the order added (indices are stable: the dedup table
    /// refers to grants by index). A boxed slice: 8 bytes less than a `Vec`, and grants are
    /// added one at a time anyway.
    pub grants: Box<[Grant]>,
    pub holds: Holds,
    /// Exact charge and cost accrued per meter, and what was already debited/recorded.
    pub accruals: VecMap<Meter, Accrual>,
    pub reports: VecMap<Month, ReportAgg>,
    /// When this account next has a due transition (mirrors the ledger's due index);
    /// [`NOT_DUE`] for none. Read through [`Account::due_at`].
    due: u64,
}

/// `Account::due` of an account with nothing due (an `Option<u64>` would take 16 bytes).
const NOT_DUE: u64 = u64::MAX;

/// An account's credit terms and debt, held apart from [`Account`] because most accounts keep
/// the defaults, and shared between accounts with identical terms (accounts of one plan set
/// the same list price): see [`share_credit`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Credit {
    pub credit_limit: Amount,
    pub list_price: Amount,
    pub debt: Amount,
    /// Revenue on debt at the list price, accrued exactly and recorded rounded.
    pub debt_revenue: Accrued,
}

impl Credit {
    /// The exact representation (scales included): only terms identical in it are shared.
    fn raw(&self) -> [[u8; 16]; 4] {
        [
            self.credit_limit.raw_bytes(),
            self.list_price.raw_bytes(),
            self.debt.raw_bytes(),
            self.debt_revenue.exact.raw_bytes(),
        ]
    }
}

thread_local! {
    static RECENT_CREDIT: Recent<Credit> = Recent::new();
}

/// `credit` in an `Arc`, shared with the last identical terms built on this thread.
fn share_credit(credit: Credit) -> Arc<Credit> {
    let raw = credit.raw();
    let mut hasher = FoldHasher::new(0);
    for part in &raw {
        hasher.bytes(part);
    }
    shared(
        &RECENT_CREDIT,
        hasher.finish(),
        |held| held.raw() == raw,
        || Arc::new(credit),
    )
}

/// Serde for `Account::credit`: encoded as an `Option<Credit>` (as it was when boxed), and
/// shared as it is decoded.
mod shared_credit {
    use super::{share_credit, Arc, Credit};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        credit: &Option<Arc<Credit>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        credit.as_deref().serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Arc<Credit>>, D::Error> {
        Ok(Option::<Credit>::deserialize(deserializer)?.map(share_credit))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AccountSettings {
    pub metadata: Vec<(Key, String)>,
    /// Sorted ascending, unique.
    pub thresholds: Vec<Amount>,
    pub auto_recharge: Option<AutoRecharge>,
    /// Thresholds whose `balance_low` fired and whose `balance_recovered` has not yet.
    pub low_thresholds: Vec<Amount>,
}

static NO_SETTINGS: AccountSettings = AccountSettings {
    metadata: Vec::new(),
    thresholds: Vec::new(),
    auto_recharge: None,
    low_thresholds: Vec::new(),
};

impl AccountSettings {
    pub fn is_empty(&self) -> bool {
        self.metadata.is_empty()
            && self.thresholds.is_empty()
            && self.auto_recharge.is_none()
            && self.low_thresholds.is_empty()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Accrual {
    pub charge: Accrued,
    pub cost: Accrued,
}

/// An exact running total, of which the total rounded at the accrual's scale is booked.
/// Booking the difference between the rounded totals after and before each addition means
/// rounding never leaks money. The booked part is not stored: it is the exact total rounded,
/// and an accrual's scale never changes (the account's asset scale for charges, the reporting
/// scale for cost and revenue), which saves 16 bytes per accrual.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Accrued {
    pub exact: Amount,
}

impl Accrued {
    /// What adding `exact` would book at `scale`, and the new accrual. `None` on overflow.
    pub fn add(self, exact: Amount, scale: u32) -> Option<(Amount, Accrued)> {
        let total = self.exact.checked_add(exact)?;
        let booked_now = total
            .round_half_even(scale)
            .checked_sub(self.exact.round_half_even(scale))?;
        Some((booked_now, Accrued { exact: total }))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum GrantEnd {
    Expired,
    Voided,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Grant {
    pub id: GrantId,
    pub category: GrantCategory,
    pub amount: Amount,
    pub remaining: Amount,
    pub priority: u8,
    pub starts_at: u64,
    pub started: bool,
    /// Times are never 0 here (an expiry is after the start, a reset a period after it), so
    /// `NonZeroU64` keeps these options at 8 bytes; read them through the methods of the
    /// same names.
    pub expires_at: Option<NonZeroU64>,
    pub reset_every: Option<ResetPeriod>,
    pub resets_done: u32,
    pub next_reset: Option<NonZeroU64>,
    /// Boxed: rarely set, and 8 bytes where an inline option takes 20.
    pub rollover_max: Option<Box<Amount>>,
    /// Reporting currency; the revenue of a unit is `paid / amount`.
    pub paid: Amount,
    /// Units drawn (by usage or expiry) in the current period. The revenue booked for them
    /// is a function of them ([`Grant::revenue_of`]), so it is not stored: a grant stays
    /// within 128 bytes (an allocator size class; two grants per account are the usual case).
    pub revenue_units: Amount,
    pub ended: Option<GrantEnd>,
}

impl Grant {
    pub fn is_live(&self) -> bool {
        self.started && self.ended.is_none()
    }

    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at.map(NonZeroU64::get)
    }

    pub fn next_reset(&self) -> Option<u64> {
        self.next_reset.map(NonZeroU64::get)
    }

    pub fn rollover_max(&self) -> Option<Amount> {
        self.rollover_max.as_deref().copied()
    }

    /// Drawdown order: priority; then the sooner of expiry and next reset (never last); then
    /// start; then id bytes.
    pub fn order_key(&self) -> (u8, u64, u64, &str) {
        let soonest = match (self.expires_at(), self.next_reset()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => u64::MAX,
        };
        (self.priority, soonest, self.starts_at, self.id.as_str())
    }

    /// Books revenue for `units` more drawn from this grant: the rounded exact revenue of all
    /// units drawn this period, minus that of the units drawn before. Exact `paid / amount`
    /// is never rounded on its own, so a fully drawn grant books exactly `paid`.
    pub fn book_revenue(&mut self, units: Amount, reporting_scale: u32) -> Amount {
        let before = self.revenue_units;
        self.revenue_units = plus(before, units);
        if self.paid.is_zero() || units.is_zero() {
            return Amount::ZERO;
        }
        minus(
            self.revenue_of(self.revenue_units, reporting_scale),
            self.revenue_of(before, reporting_scale),
        )
    }

    /// The revenue booked for `units` drawn in one period: `units * paid / amount`, exact,
    /// then rounded once to the reporting scale.
    pub fn revenue_of(&self, units: Amount, reporting_scale: u32) -> Amount {
        if units.is_zero() || self.paid.is_zero() {
            return Amount::ZERO;
        }
        if self.paid == self.amount {
            return units.round_half_even(reporting_scale);
        }
        // In integers where that gives the same value; `rust_decimal` otherwise.
        // When `units * paid` leaves `Decimal`'s range (both near 10^15), the share first:
        // `units <= amount`, so `units / amount * paid <= paid` always fits.
        units
            .mul_div_round_half_even(self.paid, self.amount, reporting_scale)
            .unwrap_or_else(|| {
                units
                    .checked_mul(self.paid)
                    .and_then(|x| x.checked_div(self.amount))
                    .or_else(|| units.checked_div(self.amount)?.checked_mul(self.paid))
                    .expect("invariant: units <= amount, so the share of paid fits")
                    .round_half_even(reporting_scale)
            })
    }

    /// How many reset boundaries of an allowance lie at or before `now` (0 for one that does
    /// not reset or starts after `now`; boundaries at or past its expiry do not count): the
    /// smallest `n` whose boundary `n + 1` is after `now`, found by bisection (a daily
    /// allowance back-dated by years has thousands).
    pub fn resets_already_past(&self, now: u64) -> u32 {
        if self.reset_every.is_none() || self.starts_at >= now {
            return 0;
        }
        let after_now = |n: u32| self.reset_boundary(n).is_none_or(|at| at > now);
        // Every period is at least a day, so boundary `hi` is after `now`.
        let days = (now - self.starts_at) / MS_PER_DAY;
        let (mut lo, mut hi) = (
            1u32,
            u32::try_from(days.saturating_add(2)).unwrap_or(u32::MAX),
        );
        if after_now(lo) {
            return 0;
        }
        // Invariant: boundary `lo` is at or before now, boundary `hi` after it.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if after_now(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        lo
    }

    /// The `n`th reset boundary after `starts_at` (n >= 1).
    pub fn reset_boundary(&self, n: u32) -> Option<u64> {
        let period = self.reset_every?;
        let boundary = match period {
            ResetPeriod::Day => self
                .starts_at
                .checked_add(MS_PER_DAY.checked_mul(n as u64)?)?,
            ResetPeriod::Week => self
                .starts_at
                .checked_add(MS_PER_WEEK.checked_mul(n as u64)?)?,
            ResetPeriod::Month => add_months(self.starts_at, n as u64),
        };
        match self.expires_at() {
            Some(expires_at) if boundary >= expires_at => None,
            _ => Some(boundary),
        }
    }
}

/// A grant's expiry or reset time as stored (see [`Grant::expires_at`]).
pub(crate) fn nonzero_time(at: Option<u64>) -> Option<NonZeroU64> {
    debug_assert_ne!(
        at,
        Some(0),
        "grant times are after the epoch's first instant"
    );
    at.and_then(NonZeroU64::new)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum HoldEnd {
    Released,
    Expired,
    Captured,
}

impl From<GrantEnd> for crate::outcome::GrantEndedAs {
    fn from(end: GrantEnd) -> Self {
        match end {
            GrantEnd::Expired => crate::outcome::GrantEndedAs::Expired,
            GrantEnd::Voided => crate::outcome::GrantEndedAs::Voided,
        }
    }
}

impl From<HoldEnd> for crate::outcome::HoldEndedAs {
    fn from(end: HoldEnd) -> Self {
        match end {
            HoldEnd::Released => crate::outcome::HoldEndedAs::Released,
            HoldEnd::Expired => crate::outcome::HoldEndedAs::Expired,
            HoldEnd::Captured => crate::outcome::HoldEndedAs::Captured,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hold {
    pub amount: Amount,
    pub remaining: Amount,
    pub captured: Amount,
    pub expires_at: u64,
    /// How and when it ended; an ended hold is kept for the dedup window so a retried
    /// authorize or release stays a no-op.
    pub ended: Option<(HoldEnd, u64)>,
}

const GRANT_ORDER_INLINE: usize = 8;

/// Grant indices in drawdown order (see [`Account::drawdown_order_small`]).
pub(crate) enum GrantOrder {
    Inline {
        items: [usize; GRANT_ORDER_INLINE],
        len: usize,
    },
    Heap(Vec<usize>),
}

impl GrantOrder {
    pub fn as_slice(&self) -> &[usize] {
        match self {
            GrantOrder::Inline { items, len } => &items[..*len],
            GrantOrder::Heap(list) => list,
        }
    }
}

/// An account's holds by id, with two time indexes: open holds by expiry and ended holds by
/// the time they ended (they are kept for the dedup window, so that a retried authorize or
/// release stays a no-op). Every command on the account, and every transition, looks at the
/// indexes' first entries and at open holds only, never at every hold kept: an account that
/// authorizes per request keeps tens of thousands of ended holds. Most accounts hold none, so
/// it all lives behind a pointer that is null while empty (8 bytes in every account).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Holds(Option<Box<HoldMaps>>);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HoldMaps {
    all: BTreeMap<HoldId, Hold>,
    /// `(expires_at, id)` of every hold with `ended == None`.
    open: BTreeSet<(u64, HoldId)>,
    /// `(ended_at, id)` of every ended hold.
    ended: BTreeSet<(u64, HoldId)>,
    /// What the open holds reserve (the sum of their `remaining`).
    held: Amount,
}

impl HoldMaps {
    fn index(&mut self, id: &HoldId, hold: &Hold) {
        match hold.ended {
            None => {
                self.open.insert((hold.expires_at, id.clone()));
                self.held = plus(self.held, hold.remaining);
            }
            Some((_, at)) => {
                self.ended.insert((at, id.clone()));
            }
        }
    }

    fn unindex(&mut self, id: &HoldId, hold: &Hold) {
        match hold.ended {
            None => {
                self.open.remove(&(hold.expires_at, id.clone()));
                self.held = minus(self.held, hold.remaining);
            }
            Some((_, at)) => {
                self.ended.remove(&(at, id.clone()));
            }
        }
    }
}

impl Holds {
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Every hold kept, open and ended, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&HoldId, &Hold)> {
        self.0.iter().flat_map(|maps| maps.all.iter())
    }

    /// The open holds, latest expiry first (ties: the larger id first).
    pub fn open_latest_first(&self) -> impl Iterator<Item = (&HoldId, &Hold)> {
        self.0.iter().flat_map(|maps| {
            maps.open
                .iter()
                .rev()
                .map(|(_, id)| (id, maps.all.get(id).expect("indexed holds exist")))
        })
    }

    /// The open holds in id order.
    pub fn open_by_id(&self) -> impl Iterator<Item = (&HoldId, &Hold)> {
        self.iter().filter(|(_, hold)| hold.ended.is_none())
    }

    /// The open hold that expires first (ties: the smaller id), with its expiry.
    pub fn first_expiry(&self) -> Option<(u64, &HoldId)> {
        let (at, id) = self.0.as_ref()?.open.first()?;
        Some((*at, id))
    }

    /// The hold that ended first (ties: the smaller id), with the time it ended.
    pub fn first_ended(&self) -> Option<(u64, &HoldId)> {
        let (at, id) = self.0.as_ref()?.ended.first()?;
        Some((*at, id))
    }

    /// What open holds reserve.
    pub fn held(&self) -> Amount {
        self.0.as_ref().map_or(Amount::ZERO, |maps| maps.held)
    }

    pub fn get(&self, id: &HoldId) -> Option<&Hold> {
        self.0.as_ref()?.all.get(id)
    }

    pub fn contains_key(&self, id: &HoldId) -> bool {
        self.get(id).is_some()
    }

    /// Changes a hold in place (the indexes follow); `None` if there is no such hold.
    pub fn update<T>(&mut self, id: &HoldId, change: impl FnOnce(&mut Hold) -> T) -> Option<T> {
        let maps = self.0.as_mut()?;
        let hold = maps.all.get_mut(id)?;
        let was = hold.clone();
        let out = change(hold);
        if (hold.expires_at, hold.ended, hold.remaining)
            != (was.expires_at, was.ended, was.remaining)
        {
            let after = hold.clone();
            maps.unindex(id, &was);
            maps.index(id, &after);
        }
        Some(out)
    }

    pub fn insert(&mut self, id: HoldId, hold: Hold) -> Option<Hold> {
        let maps = self.0.get_or_insert_with(Default::default);
        if let Some(old) = maps.all.get(&id).cloned() {
            maps.unindex(&id, &old);
        }
        maps.index(&id, &hold);
        maps.all.insert(id, hold)
    }

    pub fn remove(&mut self, id: &HoldId) -> Option<Hold> {
        let maps = self.0.as_mut()?;
        let removed = maps.all.remove(id);
        if let Some(hold) = &removed {
            maps.unindex(id, hold);
        }
        if maps.all.is_empty() {
            self.0 = None;
        }
        removed
    }

    /// The indexes list exactly the holds kept (for the state's invariant checks).
    pub fn check_indexes(&self) -> Result<(), String> {
        let Some(maps) = self.0.as_ref() else {
            return Ok(());
        };
        let mut rebuilt = HoldMaps::default();
        for (id, hold) in &maps.all {
            rebuilt.index(id, hold);
        }
        if rebuilt.open != maps.open || rebuilt.ended != maps.ended || rebuilt.held != maps.held {
            return Err("hold indexes disagree with the holds".into());
        }
        if maps.all.is_empty() {
            return Err("an empty hold map is kept".into());
        }
        Ok(())
    }
}

/// Encoded as the map of every hold itself (an empty map when there are none); the indexes are
/// rebuilt when decoded.
impl Serialize for Holds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let len = self.0.as_ref().map_or(0, |maps| maps.all.len());
        let mut map = serializer.serialize_map(Some(len))?;
        for (id, hold) in self.iter() {
            map.serialize_entry(id, hold)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Holds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let all = BTreeMap::<HoldId, Hold>::deserialize(deserializer)?;
        if all.is_empty() {
            return Ok(Holds(None));
        }
        // What open holds reserve must be in range (indexing sums it without checking).
        all.values()
            .filter(|hold| hold.ended.is_none())
            .try_fold(Amount::ZERO, |sum, hold| sum.checked_add(hold.remaining))
            .ok_or_else(|| {
                serde::de::Error::custom("holds reserve more than an amount can hold")
            })?;
        let mut maps = HoldMaps::default();
        for (id, hold) in &all {
            maps.index(id, hold);
        }
        maps.all = all;
        Ok(Holds(Some(Box::new(maps))))
    }
}

/// Ledger-wide parameters transitions need.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    pub reporting_scale: u32,
    pub dedup_window_ms: u64,
}

/// The next time-driven transition of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Transition {
    // Order within the same instant: starts first (new value is live), then resets, then
    // expiries, then holds.
    GrantStart(usize),
    GrantReset(usize),
    GrantExpire(usize),
    HoldExpire,
    HoldForget,
}

impl Account {
    /// A new active account with no grants, no debt and nothing due.
    pub fn new(
        ordinal: u32,
        asset: AssetCode,
        scale: u32,
        reporting_asset: bool,
        price_book: Option<u32>,
    ) -> Account {
        Account {
            ordinal,
            asset,
            scale,
            status: AccountStatus::Active,
            reporting_asset,
            price_book,
            credit: None,
            settings: None,
            recharge_pending: false,
            depleted: false,
            grants: Box::default(),
            holds: Default::default(),
            accruals: Default::default(),
            reports: Default::default(),
            due: NOT_DUE,
        }
    }

    /// 1 in the reporting currency, else 0.
    fn default_list_price(&self) -> Amount {
        if self.reporting_asset {
            Amount::ONE
        } else {
            Amount::ZERO
        }
    }

    fn default_credit(&self) -> Credit {
        Credit {
            credit_limit: Amount::ZERO,
            list_price: self.default_list_price(),
            debt: Amount::ZERO,
            debt_revenue: Accrued::default(),
        }
    }

    pub fn credit_limit(&self) -> Amount {
        self.credit
            .as_ref()
            .map_or(Amount::ZERO, |c| c.credit_limit)
    }

    pub fn list_price(&self) -> Amount {
        self.credit
            .as_ref()
            .map_or_else(|| self.default_list_price(), |c| c.list_price)
    }

    pub fn debt(&self) -> Amount {
        self.credit.as_ref().map_or(Amount::ZERO, |c| c.debt)
    }

    pub fn debt_revenue(&self) -> Accrued {
        self.credit
            .as_ref()
            .map_or(Accrued::default(), |c| c.debt_revenue)
    }

    /// Changes the credit terms or debt, keeping `None` while they are the defaults (one
    /// canonical form, so equal states encode and hash alike).
    pub fn update_credit(&mut self, change: impl FnOnce(&mut Credit)) {
        let default = self.default_credit();
        let mut credit = match self.credit.take() {
            Some(held) => Arc::unwrap_or_clone(held),
            None => default.clone(),
        };
        change(&mut credit);
        if credit != default {
            self.credit = Some(share_credit(credit));
        }
    }

    pub fn due_at(&self) -> Option<u64> {
        (self.due != NOT_DUE).then_some(self.due)
    }

    pub fn set_due_at(&mut self, at: Option<u64>) {
        self.due = at.unwrap_or(NOT_DUE);
    }

    /// Appends a grant (the slice grows by exactly one).
    pub fn push_grant(&mut self, grant: Grant) {
        let end = self.grants.len();
        insert_one(&mut self.grants, end, grant);
    }

    pub fn settings(&self) -> &AccountSettings {
        self.settings.as_deref().unwrap_or(&NO_SETTINGS)
    }

    /// Replaces the settings, keeping `None` for empty ones (one canonical form).
    pub fn set_settings(&mut self, settings: AccountSettings) {
        self.settings = (!settings.is_empty()).then(|| Box::new(settings));
    }

    pub fn held(&self) -> Amount {
        self.holds.held()
    }

    /// Remaining of live grants minus debt.
    pub fn balance(&self) -> Amount {
        let granted = self
            .grants
            .iter()
            .filter(|g| g.is_live())
            .fold(Amount::ZERO, |acc, g| plus(acc, g.remaining));
        minus(granted, self.debt())
    }

    pub fn available(&self) -> Amount {
        minus(self.balance(), self.held())
    }

    /// Indices of live grants with value, in drawdown order.
    pub fn drawdown_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.grants.len())
            .filter(|&i| self.grants[i].is_live() && self.grants[i].remaining.is_positive())
            .collect();
        order.sort_by(|&a, &b| self.grants[a].order_key().cmp(&self.grants[b].order_key()));
        order
    }

    /// [`Self::drawdown_order`] without allocating for accounts with a handful of grants: the
    /// settlement path orders the grants for every event.
    pub fn drawdown_order_small(&self) -> GrantOrder {
        if self.grants.len() > GRANT_ORDER_INLINE {
            return GrantOrder::Heap(self.drawdown_order());
        }
        let mut items = [0usize; GRANT_ORDER_INLINE];
        let mut len = 0;
        for (index, grant) in self.grants.iter().enumerate() {
            if !(grant.is_live() && grant.remaining.is_positive()) {
                continue;
            }
            // Insertion sort: keys are unique (they end with the grant id), so this is the
            // order `drawdown_order` gives.
            let key = grant.order_key();
            let mut at = len;
            while at > 0 && self.grants[items[at - 1]].order_key() > key {
                items[at] = items[at - 1];
                at -= 1;
            }
            items[at] = index;
            len += 1;
        }
        GrantOrder::Inline { items, len }
    }

    pub fn grant_index(&self, id: &GrantId) -> Option<usize> {
        self.grants.iter().position(|g| &g.id == id)
    }

    /// The earliest pending transition, with its time.
    fn next_transition(&self, params: Params) -> Option<(u64, Transition, Option<HoldId>)> {
        let mut best: Option<(u64, Transition, Option<HoldId>)> = None;
        let mut consider = |at: u64, t: Transition, hold: Option<&HoldId>| {
            let better = match &best {
                None => true,
                Some((best_at, best_t, _)) => (at, t) < (*best_at, *best_t),
            };
            if better {
                best = Some((at, t, hold.cloned()));
            }
        };
        for (index, grant) in self.grants.iter().enumerate() {
            if grant.ended.is_some() {
                continue;
            }
            if !grant.started {
                consider(grant.starts_at, Transition::GrantStart(index), None);
                continue;
            }
            if let Some(at) = grant.next_reset() {
                consider(at, Transition::GrantReset(index), None);
            }
            if let Some(at) = grant.expires_at() {
                consider(at, Transition::GrantExpire(index), None);
            }
        }
        if let Some((expires_at, id)) = self.holds.first_expiry() {
            consider(expires_at, Transition::HoldExpire, Some(id));
        }
        if let Some((ended_at, id)) = self.holds.first_ended() {
            consider(
                ended_at.saturating_add(params.dedup_window_ms),
                Transition::HoldForget,
                Some(id),
            );
        }
        best
    }

    pub fn next_due(&self, params: Params) -> Option<u64> {
        self.next_transition(params).map(|(at, _, _)| at)
    }

    /// Applies, in time order, every transition due at or before `now`.
    pub fn run_due(&mut self, id: &AccountId, now: u64, params: Params, out: &mut Out<'_>) {
        while let Some((at, transition, hold)) = self.next_transition(params) {
            if at > now {
                break;
            }
            let balance_before = self.balance();
            match transition {
                Transition::GrantStart(index) => {
                    self.grants[index].started = true;
                    self.repay_debt(id, index, at, out);
                    // Purchased value arrives now: a later crossing may ask for a recharge again.
                    if self.grants[index].category == GrantCategory::Purchased {
                        self.recharge_pending = false;
                    }
                }
                Transition::GrantReset(index) => self.reset_grant(id, index, at, params, out),
                Transition::GrantExpire(index) => self.expire_grant(id, index, at, params, out),
                Transition::HoldExpire => {
                    let hold_id = hold.expect("hold transition names its hold");
                    let released = self
                        .holds
                        .update(&hold_id, |hold| {
                            let released = hold.remaining;
                            hold.remaining = Amount::ZERO;
                            hold.ended = Some((HoldEnd::Expired, at));
                            released
                        })
                        .expect("hold exists");
                    out.emit(
                        at,
                        id,
                        LedgerEventKind::HoldExpired {
                            hold: hold_id,
                            released,
                        },
                    );
                }
                Transition::HoldForget => {
                    let hold_id = hold.expect("hold transition names its hold");
                    self.holds.remove(&hold_id);
                }
            }
            self.balance_events(id, balance_before, at, out);
        }
    }

    fn expire_grant(
        &mut self,
        id: &AccountId,
        index: usize,
        at: u64,
        params: Params,
        out: &mut Out<'_>,
    ) {
        let grant = &mut self.grants[index];
        let expired = grant.remaining;
        grant.remaining = Amount::ZERO;
        grant.ended = Some(GrantEnd::Expired);
        grant.next_reset = None;
        let breakage_revenue = grant.book_revenue(expired, params.reporting_scale);
        let grant_id = grant.id.clone();
        self.book_breakage(id, &grant_id, expired, breakage_revenue, at, out, false);
        out.emit(
            at,
            id,
            LedgerEventKind::GrantExpired {
                grant: grant_id,
                expired,
            },
        );
    }

    /// An allowance's period ends: keep up to `rollover_max`, expire the rest, refill.
    fn reset_grant(
        &mut self,
        id: &AccountId,
        index: usize,
        at: u64,
        params: Params,
        out: &mut Out<'_>,
    ) {
        // A closed account's period still ends (what does not roll over expires), but nothing
        // refills it until it is reopened.
        let closed = self.status == AccountStatus::Closed;
        let grant = &mut self.grants[index];
        let rolled = grant
            .remaining
            .min(grant.rollover_max().unwrap_or(Amount::ZERO));
        let expired = minus(grant.remaining, rolled);
        let breakage_revenue = grant.book_revenue(expired, params.reporting_scale);
        let refill = if closed { Amount::ZERO } else { grant.amount };
        if !closed {
            grant.revenue_units = Amount::ZERO;
        }
        grant.remaining = plus(refill, rolled);
        grant.resets_done += 1;
        grant.next_reset = nonzero_time(grant.reset_boundary(grant.resets_done + 1));
        let grant_id = grant.id.clone();
        self.book_breakage(id, &grant_id, expired, breakage_revenue, at, out, true);
        if !closed {
            out.journal(
                at,
                id,
                self.ordinal,
                &self.asset.clone(),
                JournalKind::AllowanceReset {
                    grant: grant_id.clone(),
                },
                vec![
                    (
                        Book::CustomerGrant {
                            account: id.clone(),
                            grant: grant_id.clone(),
                        },
                        refill,
                    ),
                    (Book::Funding, -refill),
                ],
                Amount::ZERO,
                Amount::ZERO,
            );
            crate::report::book(
                &mut self.reports,
                &mut out.totals.reports,
                &self.asset,
                month_of(at),
                |report| report.granted[0] = plus(report.granted[0], refill),
            );
        }
        if expired.is_positive() {
            out.emit(
                at,
                id,
                LedgerEventKind::GrantExpired {
                    grant: grant_id,
                    expired,
                },
            );
        }
        if !closed {
            self.repay_debt(id, index, at, out);
        }
    }

    /// Journals `expired` units of a grant as breakage and books its revenue.
    #[allow(clippy::too_many_arguments)]
    fn book_breakage(
        &mut self,
        id: &AccountId,
        grant: &GrantId,
        expired: Amount,
        revenue: Amount,
        at: u64,
        out: &mut Out<'_>,
        is_reset: bool,
    ) {
        if expired.is_zero() && revenue.is_zero() {
            return;
        }
        let kind = if is_reset {
            JournalKind::AllowanceReset {
                grant: grant.clone(),
            }
        } else {
            JournalKind::GrantExpired {
                grant: grant.clone(),
            }
        };
        out.journal(
            at,
            id,
            self.ordinal,
            &self.asset.clone(),
            kind,
            vec![
                (
                    Book::CustomerGrant {
                        account: id.clone(),
                        grant: grant.clone(),
                    },
                    -expired,
                ),
                (Book::Breakage, expired),
            ],
            revenue,
            Amount::ZERO,
        );
        // Breakage belongs to the month of the last instant the value was live: a monthly
        // allowance's leftover shows in the month that ended, not the one that began.
        crate::report::book(
            &mut self.reports,
            &mut out.totals.reports,
            &self.asset,
            month_of(at.saturating_sub(1)),
            |report| report.breakage = plus(report.breakage, revenue),
        );
    }

    /// New value first repays debt.
    pub fn repay_debt(&mut self, id: &AccountId, index: usize, at: u64, out: &mut Out<'_>) {
        let debt = self.debt();
        let grant = &mut self.grants[index];
        if !grant.is_live() || debt.is_zero() {
            return;
        }
        let repaid = grant.remaining.min(debt);
        if repaid.is_zero() {
            return;
        }
        grant.remaining = minus(grant.remaining, repaid);
        let grant_id = grant.id.clone();
        self.update_credit(|credit| credit.debt = minus(credit.debt, repaid));
        out.journal(
            at,
            id,
            self.ordinal,
            &self.asset.clone(),
            JournalKind::DebtRepaid {
                grant: grant_id.clone(),
            },
            vec![
                (
                    Book::CustomerGrant {
                        account: id.clone(),
                        grant: grant_id,
                    },
                    -repaid,
                ),
                (
                    Book::Receivable {
                        account: id.clone(),
                    },
                    repaid,
                ),
            ],
            Amount::ZERO,
            Amount::ZERO,
        );
    }

    /// Ends every open hold now, released (the account closes).
    pub(crate) fn release_open_holds(&mut self, now: u64) {
        let open: Vec<HoldId> = self
            .holds
            .open_latest_first()
            .map(|(id, _)| id.clone())
            .collect();
        for hold_id in open {
            self.holds.update(&hold_id, |hold| {
                hold.remaining = Amount::ZERO;
                hold.ended = Some((HoldEnd::Released, now));
            });
        }
    }

    /// Holds may reserve only value that exists: when value disappears (a void, an expiry, a
    /// reset, a lower credit limit), open holds shrink, latest-expiring first, until `held <= balance + credit_limit`.
    pub(crate) fn trim_holds(&mut self) {
        if self.holds.is_empty() {
            return;
        }
        let room = plus(self.balance(), self.credit_limit()).max(Amount::ZERO);
        let mut excess = minus(self.held(), room);
        if !excess.is_positive() {
            return;
        }
        let mut cuts: Vec<(HoldId, Amount)> = Vec::new();
        for (hold_id, hold) in self.holds.open_latest_first() {
            if !excess.is_positive() {
                break;
            }
            let cut = hold.remaining.min(excess);
            excess = minus(excess, cut);
            cuts.push((hold_id.clone(), cut));
        }
        for (hold_id, cut) in cuts {
            self.holds.update(&hold_id, |hold| {
                hold.remaining = minus(hold.remaining, cut);
            });
        }
    }

    /// Emits threshold, depletion, recovery and recharge events after a balance change. Each
    /// alert fires once when its condition starts to hold and re-arms when it stops, so a
    /// consumer sees one `balance_low` per crossing, not one per event.
    pub fn balance_events(&mut self, id: &AccountId, before: Amount, at: u64, out: &mut Out<'_>) {
        let after = self.balance();
        self.balance_events_to(id, before, after, at, out);
    }

    /// [`Self::balance_events`] when the caller already knows the balance after.
    pub fn balance_events_to(
        &mut self,
        id: &AccountId,
        before: Amount,
        after: Amount,
        at: u64,
        out: &mut Out<'_>,
    ) {
        if after == before {
            return;
        }
        if after < before {
            self.trim_holds();
        }
        // A closed account's balance still moves (a grant voided as a refund, one scheduled
        // before the close starting, an allowance expiring) but it is no customer to warn or
        // recharge any more: a `recharge_requested` would have a billing system charge a
        // departed customer's card.
        if self.status == AccountStatus::Closed {
            return;
        }
        if self.settings.is_none() && after.is_positive() && !self.depleted {
            return;
        }
        let mut settings = self.settings.take();
        // A threshold of 0 recovering in the same step as the depletion says the same thing:
        // one `balance_recovered {threshold: 0}`, not two.
        let mut recovered_at_zero = false;
        if let Some(settings) = settings.as_deref_mut() {
            for index in 0..settings.thresholds.len() {
                let threshold = settings.thresholds[index];
                let is_low = settings.low_thresholds.contains(&threshold);
                if after < threshold && !is_low {
                    settings.low_thresholds.push(threshold);
                    out.emit(
                        at,
                        id,
                        LedgerEventKind::BalanceLow {
                            threshold,
                            balance: after,
                        },
                    );
                } else if after >= threshold && is_low {
                    settings.low_thresholds.retain(|t| *t != threshold);
                    recovered_at_zero |= threshold.is_zero();
                    out.emit(
                        at,
                        id,
                        LedgerEventKind::BalanceRecovered {
                            threshold,
                            balance: after,
                        },
                    );
                }
            }
        }
        if !after.is_positive() && !self.depleted {
            self.depleted = true;
            out.emit(at, id, LedgerEventKind::BalanceDepleted { balance: after });
        } else if after.is_positive() && self.depleted {
            self.depleted = false;
            if !recovered_at_zero {
                out.emit(
                    at,
                    id,
                    LedgerEventKind::BalanceRecovered {
                        threshold: Amount::ZERO,
                        balance: after,
                    },
                );
            }
        }
        if let Some(rule) = settings.as_ref().and_then(|s| s.auto_recharge.as_ref()) {
            if !self.recharge_pending && after < rule.below {
                self.recharge_pending = true;
                out.emit(
                    at,
                    id,
                    LedgerEventKind::RechargeRequested {
                        amount: rule.amount,
                        balance: after,
                    },
                );
            }
        }
        self.settings = settings;
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn print_sizes() {
        println!(
            "Account {} Grant {} Hold {} ReportAgg {} Accrual {} Remembered {}",
            std::mem::size_of::<super::Account>(),
            std::mem::size_of::<super::Grant>(),
            std::mem::size_of::<super::Hold>(),
            std::mem::size_of::<crate::report::ReportAgg>(),
            std::mem::size_of::<super::Accrual>(),
            std::mem::size_of::<crate::dedup::Remembered>(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd_account(reporting_asset: bool) -> Account {
        Account::new(0, AssetCode::new("USD").unwrap(), 2, reporting_asset, None)
    }

    /// Memory per account is a product figure (at most 1 KiB per account per node at a
    /// million accounts): an account and each grant fit one 128-byte allocator size class.
    #[test]
    fn account_and_grant_fit_128_bytes() {
        assert!(std::mem::size_of::<Account>() <= 128);
        assert!(std::mem::size_of::<Grant>() <= 128);
    }

    #[test]
    fn revenue_is_booked_as_the_rounded_exact_revenue_of_all_units_drawn() {
        // 10.00 paid for 3 units: a unit's revenue (3.333...) does not terminate.
        let mut grant = test_grant(Amount::from_i64(3), Amount::from_i64(10));
        let booked: Vec<Amount> = (0..3).map(|_| grant.book_revenue(Amount::ONE, 2)).collect();
        let text: Vec<String> = booked.iter().map(|a| a.to_string()).collect();
        assert_eq!(text, ["3.33", "3.34", "3.33"]);
        assert_eq!(
            booked.iter().fold(Amount::ZERO, |sum, a| plus(sum, *a)),
            Amount::from_i64(10),
            "a fully drawn grant books exactly what was paid"
        );
        // Paid as much as granted: a unit is worth one.
        let mut one_to_one = test_grant(Amount::from_i64(5), Amount::from_i64(5));
        assert_eq!(
            one_to_one.book_revenue(Amount::from_i64(2), 2),
            Amount::from_i64(2)
        );
        // Unpaid: no revenue, the units still count.
        let mut free = test_grant(Amount::from_i64(5), Amount::ZERO);
        assert_eq!(free.book_revenue(Amount::from_i64(2), 2), Amount::ZERO);
        assert_eq!(free.revenue_units, Amount::from_i64(2));
    }

    #[test]
    fn an_accrual_books_the_change_of_its_rounded_total() {
        let third = Amount::parse("t", "0.3333").unwrap();
        let mut accrued = Accrued::default();
        let mut booked = Vec::new();
        for _ in 0..3 {
            let (now, next) = accrued.add(third, 2).unwrap();
            booked.push(now.to_string());
            accrued = next;
        }
        // 0.3333 -> 0.33, 0.6666 -> 0.67, 0.9999 -> 1.00: the rounding never leaks.
        assert_eq!(booked, ["0.33", "0.34", "0.33"]);
        assert_eq!(accrued.exact, Amount::parse("t", "0.9999").unwrap());
    }

    #[test]
    fn default_credit_terms_are_not_stored() {
        let fresh = usd_account(true);
        assert_eq!(fresh.list_price(), Amount::ONE);
        assert_eq!(usd_account(false).list_price(), Amount::ZERO);
        assert_eq!(
            (fresh.credit_limit(), fresh.debt()),
            (Amount::ZERO, Amount::ZERO)
        );

        let mut account = fresh.clone();
        account.update_credit(|credit| credit.credit_limit = Amount::from_i64(50));
        assert_eq!(account.credit_limit(), Amount::from_i64(50));
        assert_eq!(
            account.list_price(),
            Amount::ONE,
            "other terms keep their defaults"
        );
        assert!(account.credit.is_some());

        // Back at the defaults, the account is equal to (and encodes like) a fresh one.
        account.update_credit(|credit| credit.credit_limit = Amount::ZERO);
        assert!(account.credit.is_none());
        assert_eq!(account, fresh);
        assert_eq!(
            bincode::serialize(&account).unwrap(),
            bincode::serialize(&fresh).unwrap()
        );

        // A list price of 1 is the default only for the reporting currency.
        let mut other = usd_account(false);
        other.update_credit(|credit| credit.list_price = Amount::ONE);
        assert!(other.credit.is_some());
        assert_eq!(other.list_price(), Amount::ONE);
    }

    #[test]
    fn identical_credit_terms_are_shared_and_changed_apart() {
        let price = |text: &str| Amount::parse("list_price", text).unwrap();
        let mut plan = Vec::new();
        for _ in 0..3 {
            let mut account = usd_account(false);
            account.update_credit(|credit| credit.list_price = price("0.002"));
            plan.push(account);
        }
        let terms = |account: &Account| Arc::clone(account.credit.as_ref().unwrap());
        assert!(Arc::ptr_eq(&terms(&plan[0]), &terms(&plan[2])));

        // Going into debt changes one account's terms, not its neighbours'.
        plan[1].update_credit(|credit| credit.debt = Amount::from_i64(7));
        assert_eq!(plan[1].debt(), Amount::from_i64(7));
        assert_eq!(
            (plan[0].debt(), plan[2].debt()),
            (Amount::ZERO, Amount::ZERO)
        );
        assert_eq!(plan[0].list_price(), price("0.002"));

        // Equal but held at another scale (0.0020): not shared, so each account keeps exactly
        // what it computed.
        let mut other = usd_account(false);
        let rescaled = Amount::from_decimal_raw(rust_decimal::Decimal::new(20, 4));
        other.update_credit(|credit| credit.list_price = rescaled);
        assert!(!Arc::ptr_eq(&terms(&other), &terms(&plan[0])));
        assert_eq!(other.list_price().raw_bytes(), rescaled.raw_bytes());

        // Decoded accounts share too, and encode exactly as before.
        let bytes = bincode::serialize(&plan).unwrap();
        let decoded: Vec<Account> = bincode::deserialize(&bytes).unwrap();
        assert_eq!(decoded, plan);
        assert!(Arc::ptr_eq(&terms(&decoded[0]), &terms(&decoded[2])));
        assert_eq!(bincode::serialize(&decoded).unwrap(), bytes);
    }

    #[test]
    fn debt_and_its_revenue_are_kept_once_accrued() {
        let mut account = usd_account(true);
        account.update_credit(|credit| {
            credit.debt = Amount::from_i64(3);
            credit.debt_revenue.exact = Amount::from_i64(3);
        });
        assert_eq!(account.debt(), Amount::from_i64(3));
        // Repaid: the debt is gone but the revenue accrued on it stays on record.
        account.update_credit(|credit| credit.debt = Amount::ZERO);
        assert_eq!(account.debt(), Amount::ZERO);
        assert_eq!(account.debt_revenue().exact, Amount::from_i64(3));
        assert!(account.credit.is_some());
    }

    #[test]
    fn due_time_round_trips() {
        let mut account = usd_account(true);
        assert_eq!(account.due_at(), None);
        account.set_due_at(Some(0));
        assert_eq!(account.due_at(), Some(0));
        account.set_due_at(Some(1_700_000_000_000));
        assert_eq!(account.due_at(), Some(1_700_000_000_000));
        account.set_due_at(None);
        assert_eq!(account.due_at(), None);
    }

    fn test_grant(amount: Amount, paid: Amount) -> Grant {
        Grant {
            id: GrantId::new("g1").unwrap(),
            category: GrantCategory::Purchased,
            amount,
            remaining: amount,
            priority: 0,
            starts_at: 1,
            started: true,
            expires_at: None,
            reset_every: None,
            resets_done: 0,
            next_reset: None,
            rollover_max: None,
            paid,
            revenue_units: Amount::ZERO,
            ended: None,
        }
    }

    #[test]
    fn grants_grow_by_one() {
        let mut account = usd_account(true);
        assert!(account.grants.is_empty());
        account.push_grant(test_grant(Amount::from_i64(10), Amount::ZERO));
        let mut second = account.grants[0].clone();
        second.id = GrantId::new("g2").unwrap();
        account.push_grant(second);
        let ids: Vec<&str> = account.grants.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, ["g1", "g2"]);
    }
}
