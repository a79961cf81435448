//! Journal entries (double entry) and the ledger events the state machine emits.
//!
//! Postings are in the units of one asset; within one journal entry the postings of each asset
//! sum to zero across the books below. Revenue, cost and margin ride along in the reporting
//! currency.

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, AssetCode, EventId, GrantId, HoldId};
use crate::money::Amount;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Book {
    /// What remains of one grant of a customer.
    CustomerGrant {
        account: AccountId,
        grant: GrantId,
    },
    /// What the customer owes beyond their grants (negative while in debt).
    Receivable {
        account: AccountId,
    },
    UsageRevenue,
    Breakage,
    PromotionalExpense,
    /// Where purchased and allowance value comes from.
    Funding,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub book: Book,
    pub asset: AssetCode,
    pub amount: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalKind {
    GrantAdded { grant: GrantId },
    GrantVoided { grant: GrantId, reason: String },
    GrantExpired { grant: GrantId },
    AllowanceReset { grant: GrantId },
    DebtRepaid { grant: GrantId },
    Usage { event_id: EventId },
}

impl JournalKind {
    pub fn name(&self) -> &'static str {
        match self {
            JournalKind::GrantAdded { .. } => "grant_added",
            JournalKind::GrantVoided { .. } => "grant_voided",
            JournalKind::GrantExpired { .. } => "grant_expired",
            JournalKind::AllowanceReset { .. } => "allowance_reset",
            JournalKind::DebtRepaid { .. } => "debt_repaid",
            JournalKind::Usage { .. } => "usage",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Ledger-wide journal sequence, from 1.
    pub seq: u64,
    pub at_ms: u64,
    pub account: AccountId,
    pub kind: JournalKind,
    pub postings: Vec<Posting>,
    /// In the reporting currency.
    pub revenue: Amount,
    pub cost: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEvent {
    /// Ledger-wide event sequence, from 1: a consumer resumes from the last one it saw.
    pub seq: u64,
    pub at_ms: u64,
    pub account: AccountId,
    pub kind: LedgerEventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerEventKind {
    BalanceLow { threshold: Amount, balance: Amount },
    BalanceDepleted { balance: Amount },
    BalanceRecovered { threshold: Amount, balance: Amount },
    RechargeRequested { amount: Amount, balance: Amount },
    GrantExpired { grant: GrantId, expired: Amount },
    HoldExpired { hold: HoldId, released: Amount },
}

impl LedgerEventKind {
    pub fn name(&self) -> &'static str {
        match self {
            LedgerEventKind::BalanceLow { .. } => "balance_low",
            LedgerEventKind::BalanceDepleted { .. } => "balance_depleted",
            LedgerEventKind::BalanceRecovered { .. } => "balance_recovered",
            LedgerEventKind::RechargeRequested { .. } => "recharge_requested",
            LedgerEventKind::GrantExpired { .. } => "grant_expired",
            LedgerEventKind::HoldExpired { .. } => "hold_expired",
        }
    }
}
