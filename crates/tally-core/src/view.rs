//! Read-only views of the state, for the API and the CLI. Computed on demand from the state
//! at the current ledger time; they never change it.

use serde::{Deserialize, Serialize};

use crate::command::{AccountStatus, AutoRecharge, GrantCategory, Rate, ResetPeriod};
use crate::ids::{AccountId, AssetCode, BookId, GrantId, HoldId, Key, Meter};
use crate::money::Amount;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetView {
    pub code: AssetCode,
    pub scale: u32,
    pub is_reporting_currency: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub id: AccountId,
    pub asset: AssetCode,
    pub scale: u32,
    pub status: AccountStatus,
    pub price_book: Option<BookId>,
    pub credit_limit: Amount,
    pub list_price: Amount,
    /// Remaining of live grants minus debt.
    pub balance: Amount,
    /// `balance - held`.
    pub available: Amount,
    pub held: Amount,
    pub debt: Amount,
    pub metadata: Vec<(Key, String)>,
    pub thresholds: Vec<Amount>,
    pub auto_recharge: Option<AutoRecharge>,
    /// Every grant the account has had, in drawdown order for the live ones first.
    pub grants: Vec<GrantView>,
    pub holds: Vec<HoldView>,
    /// Ledger time the view was taken at.
    pub as_of: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantView {
    pub id: GrantId,
    pub category: GrantCategory,
    pub amount: Amount,
    pub remaining: Amount,
    pub priority: u8,
    pub starts_at: u64,
    pub expires_at: Option<u64>,
    pub reset_every: Option<ResetPeriod>,
    pub next_reset: Option<u64>,
    pub rollover_max: Option<Amount>,
    pub paid: Amount,
    /// `live`, `pending` (not started), `expired`, `voided` or `spent`.
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    pub id: HoldId,
    pub amount: Amount,
    pub remaining: Amount,
    pub captured: Amount,
    pub expires_at: u64,
}

/// Calendar month in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Month {
    pub year: i32,
    /// 1..=12.
    pub month: u32,
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportView {
    /// `None` for the whole ledger.
    pub account: Option<AccountId>,
    pub month: Option<Month>,
    /// Usage charged per asset, in that asset.
    pub charged: Vec<(AssetCode, Amount)>,
    /// In the reporting currency.
    pub revenue: Amount,
    pub cost: Amount,
    pub margin: Amount,
    pub breakage: Amount,
    /// Granted per category, per asset.
    pub granted: Vec<(GrantCategory, AssetCode, Amount)>,
    pub events: u64,
    pub meters: Vec<MeterReportView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterReportView {
    pub meter: Meter,
    pub asset: AssetCode,
    pub quantity: Amount,
    pub charged: Amount,
    pub revenue: Amount,
    pub cost: Amount,
    pub margin: Amount,
    pub events: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceVersionView {
    pub book: Option<BookId>,
    pub asset: AssetCode,
    pub version: u32,
    pub effective_from: u64,
    pub rates: Vec<Rate>,
}
