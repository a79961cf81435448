//! The commands a replicated entry carries. An [`Entry`] is what the leader proposes: its ledger
//! time `at_ms` and the commands it coalesced, each of which gets one [`crate::Outcome`].

use serde::{Deserialize, Serialize};

use crate::dimensions::Dimensions;
use crate::ids::{AccountId, AssetCode, BookId, EventId, GrantId, HoldId, Key, Meter};
use crate::money::Amount;

/// Longest batch of usage events one command may carry.
pub const BATCH_EVENTS_MAX: usize = 8_190;
/// Most metadata pairs on an account and most dimensions on an event.
pub const PAIRS_MAX: usize = 16;
/// Longest metadata or dimension value, in bytes.
pub const PAIR_VALUE_LEN_MAX: usize = 256;
/// Most low-balance thresholds on an account.
pub const THRESHOLDS_MAX: usize = 16;
/// Most rates in one price book version.
pub const RATES_MAX: usize = 1_024;
/// Most tiers in a graduated rate.
pub const TIERS_MAX: usize = 64;
/// Default dedup window: 35 days.
pub const DEDUP_WINDOW_MS_DEFAULT: u64 = 35 * 24 * 3_600_000;
/// How far ahead of ledger time an event's `occurred_at` may be: 5 minutes.
pub const FUTURE_TOLERANCE_MS: u64 = 5 * 60_000;
/// Shortest and longest hold.
pub const HOLD_EXPIRES_IN_MS_MIN: u64 = 1_000;
pub const HOLD_EXPIRES_IN_MS_MAX: u64 = 24 * 3_600_000;
/// Longest free-text reason (grant void), in bytes.
pub const REASON_LEN_MAX: usize = 512;

/// One replicated log entry's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Ledger time stamped by the leader when it proposed the entry (ms since the Unix epoch).
    pub at_ms: u64,
    pub commands: Vec<Command>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Configures a new ledger; must be the first command, and is accepted once.
    Init(LedgerConfig),
    CreateAsset(AssetSpec),
    CreateAccount(AccountSpec),
    UpdateAccount(AccountUpdate),
    SetAccountStatus {
        account: AccountId,
        status: AccountStatus,
    },
    AddGrant(GrantSpec),
    VoidGrant {
        account: AccountId,
        grant: GrantId,
        reason: String,
    },
    PublishPrices(PriceBookVersionSpec),
    PublishCosts(CostBookVersionSpec),
    Usage(UsageEvent),
    UsageBatch {
        events: Vec<UsageEvent>,
        atomic: bool,
    },
    Authorize(HoldSpec),
    Release {
        account: AccountId,
        hold: HoldId,
    },
    /// Applies every due time-driven transition ledger-wide.
    Tick,
}

impl Command {
    /// Short stable name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Init(_) => "init",
            Command::CreateAsset(_) => "create_asset",
            Command::CreateAccount(_) => "create_account",
            Command::UpdateAccount(_) => "update_account",
            Command::SetAccountStatus { .. } => "set_account_status",
            Command::AddGrant(_) => "add_grant",
            Command::VoidGrant { .. } => "void_grant",
            Command::PublishPrices(_) => "publish_prices",
            Command::PublishCosts(_) => "publish_costs",
            Command::Usage(_) => "usage",
            Command::UsageBatch { .. } => "usage_batch",
            Command::Authorize(_) => "authorize",
            Command::Release { .. } => "release",
            Command::Tick => "tick",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerConfig {
    /// The asset revenue, cost and margin are reported in; created by `Init`.
    pub reporting_currency: AssetCode,
    pub reporting_scale: u32,
    /// How long event ids are remembered, and how old an event may be.
    pub dedup_window_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetSpec {
    pub code: AssetCode,
    /// Digits after the point, 0..=18.
    pub scale: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AccountStatus {
    Active,
    Frozen,
    Closed,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Frozen => "frozen",
            AccountStatus::Closed => "closed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoRecharge {
    /// Ask for a recharge when the balance drops below this.
    pub below: Amount,
    /// How much to ask for.
    pub amount: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSpec {
    pub id: AccountId,
    pub asset: AssetCode,
    pub price_book: Option<BookId>,
    /// How far the balance may go below zero. `None` means 0 (hard stop).
    pub credit_limit: Option<Amount>,
    /// Reporting currency per unit of the asset, for revenue on debt. `None` means 1 when the
    /// asset is the reporting currency, else 0.
    pub list_price: Option<Amount>,
    pub metadata: Vec<(Key, String)>,
    pub thresholds: Vec<Amount>,
    pub auto_recharge: Option<AutoRecharge>,
}

/// Changes to an account; `None` leaves a field as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountUpdate {
    pub account: AccountId,
    pub price_book: Option<Option<BookId>>,
    pub credit_limit: Option<Amount>,
    pub list_price: Option<Amount>,
    pub metadata: Option<Vec<(Key, String)>>,
    pub thresholds: Option<Vec<Amount>>,
    pub auto_recharge: Option<Option<AutoRecharge>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GrantCategory {
    Allowance,
    Promotional,
    Purchased,
}

impl GrantCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantCategory::Allowance => "allowance",
            GrantCategory::Promotional => "promotional",
            GrantCategory::Purchased => "purchased",
        }
    }

    /// Default drawdown priority: allowance 10, promotional 20, purchased 50.
    pub fn default_priority(self) -> u8 {
        match self {
            GrantCategory::Allowance => 10,
            GrantCategory::Promotional => 20,
            GrantCategory::Purchased => 50,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResetPeriod {
    Day,
    Week,
    /// Calendar month in UTC anchored at the grant's `starts_at` (clamped to the month's end).
    Month,
}

impl ResetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetPeriod::Day => "day",
            ResetPeriod::Week => "week",
            ResetPeriod::Month => "month",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantSpec {
    pub account: AccountId,
    pub id: GrantId,
    pub category: GrantCategory,
    /// `> 0`, at the asset's scale.
    pub amount: Amount,
    /// 0..=100; lower is drawn first. `None` takes the category's default.
    pub priority: Option<u8>,
    /// `None` means the ledger time at which it is applied.
    pub starts_at: Option<u64>,
    pub expires_at: Option<u64>,
    /// Allowances only.
    pub reset_every: Option<ResetPeriod>,
    /// Allowances with a reset only: most that carries over into the next period.
    pub rollover_max: Option<Amount>,
    /// What the customer paid, in the reporting currency. Required for purchased, must be 0 or
    /// absent for promotional, optional for allowance.
    pub paid: Option<Amount>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RateModel {
    /// `quantity / per * unit_price`.
    PerUnit { unit_price: Amount, per: Amount },
    /// `ceil(quantity / size) * price`, per event.
    Package { size: Amount, price: Amount },
    /// Tiers over the account's usage of the meter in the current calendar month; the last
    /// tier's `up_to` is `None`.
    Graduated { tiers: Vec<Tier>, per: Amount },
    /// `amount` per event.
    Flat { amount: Amount },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub up_to: Option<Amount>,
    pub unit_price: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub meter: Meter,
    /// Every listed dimension must equal the event's value. Sorted by key, keys unique.
    pub dimensions: Vec<(Key, String)>,
    pub model: RateModel,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceBookVersionSpec {
    pub book: BookId,
    pub asset: AssetCode,
    /// `None` means now; a time before now is rejected.
    pub effective_from: Option<u64>,
    pub rates: Vec<Rate>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostBookVersionSpec {
    pub effective_from: Option<u64>,
    /// Rates in the reporting currency.
    pub rates: Vec<Rate>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UsageEvent {
    pub event_id: EventId,
    pub account: AccountId,
    pub meter: Meter,
    /// `>= 0`.
    pub quantity: Amount,
    /// Sorted by key, keys unique, at most 16.
    pub dimensions: Dimensions,
    pub occurred_at: u64,
    /// What this event cost the operator, in the reporting currency. `None`: the cost book.
    pub cost: Option<Amount>,
    pub hold: Option<HoldId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldSpec {
    pub account: AccountId,
    pub id: HoldId,
    /// `> 0`, at the asset's scale.
    pub amount: Amount,
    /// 1 s ..= 24 h.
    pub expires_in_ms: u64,
}
