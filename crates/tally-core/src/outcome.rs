//! What applying a command produced: exactly one [`Outcome`] per command.
//!
//! A business rejection is a value here, never an `Err`: the log entry was applied, the command
//! just changed nothing.

use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;
use crate::ids::{AccountId, BookId, EventId, GrantId, HoldId};
use crate::money::Amount;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A non-usage command took effect.
    Applied(Applied),
    /// A usage event settled now.
    Settled(Settlement),
    /// The same event (same id, same content) settled before; this is its original result.
    Duplicate(Settlement),
    /// The same event id settled before with different content; nothing changed.
    Conflict {
        account: AccountId,
        event_id: EventId,
    },
    Rejected(Rejection),
    /// One outcome per event of a usage batch, in order.
    Batch(Vec<Outcome>),
}

impl Outcome {
    /// Stable outcome name: `applied`, `settled`, `duplicate`, `conflict`, `rejected`, `batch`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Applied(_) => "applied",
            Outcome::Settled(_) => "settled",
            Outcome::Duplicate(_) => "duplicate",
            Outcome::Conflict { .. } => "conflict",
            Outcome::Rejected(_) => "rejected",
            Outcome::Batch(_) => "batch",
        }
    }

    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Outcome::Rejected(rejection) => Some(rejection),
            _ => None,
        }
    }

    pub fn settlement(&self) -> Option<&Settlement> {
        match self {
            Outcome::Settled(settlement) | Outcome::Duplicate(settlement) => Some(settlement),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Initialized,
    AssetCreated,
    AccountCreated,
    AccountUpdated,
    StatusChanged,
    GrantAdded {
        debt_repaid: Amount,
        balance_after: Amount,
    },
    GrantVoided {
        voided: Amount,
        balance_after: Amount,
    },
    PricesPublished {
        book: BookId,
        version: u32,
        effective_from: u64,
    },
    CostsPublished {
        version: u32,
        effective_from: u64,
    },
    HoldAuthorized {
        expires_at: u64,
        available_after: Amount,
    },
    HoldReleased {
        released: Amount,
        available_after: Amount,
    },
    /// A release of a hold that had already ended (a retry whose first answer was lost, or a
    /// hold that expired or was captured in full): nothing changed. How and when it ended,
    /// and what is available now.
    HoldEnded {
        ended_as: HoldEndedAs,
        ended_at: u64,
        available_after: Amount,
    },
    /// A void of a grant that had already ended (a retry whose first answer was lost, or a
    /// grant that expired first): nothing changed. How it ended, and the balance now.
    GrantEnded {
        ended_as: GrantEndedAs,
        balance_after: Amount,
    },
    /// An authorize retried (the same hold id and amount): nothing changed. The hold's expiry
    /// as first authorized, and what is available now.
    HoldExisted {
        expires_at: u64,
        available_after: Amount,
    },
    Ticked,
    /// The same create command (same content) was applied before; nothing changed.
    AlreadyApplied,
}

/// The result of one settled usage event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub event_id: EventId,
    pub account: AccountId,
    /// Debited from the balance, in the account's asset, at the asset's scale.
    pub charged: Amount,
    pub balance_after: Amount,
    /// What each grant gave, in drawdown order.
    pub drawdown: Vec<Draw>,
    /// Debt this charge created beyond the live grants.
    pub debt_created: Amount,
    /// What the hold named by the event covered.
    pub from_hold: Amount,
    /// Revenue, cost and margin in the reporting currency.
    pub revenue: Amount,
    pub cost: Amount,
    pub margin: Amount,
    pub price_book: Option<BookId>,
    /// The price book version that priced the event (0 when the meter needed no price book).
    pub price_version: u32,
    pub settled_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draw {
    pub grant: GrantId,
    pub amount: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub reason: Reason,
}

impl Rejection {
    pub fn code(&self) -> &'static str {
        self.reason.code()
    }
}

impl From<Reason> for Rejection {
    fn from(reason: Reason) -> Self {
        Rejection { reason }
    }
}

impl From<InvalidInput> for Rejection {
    fn from(error: InvalidInput) -> Self {
        Rejection {
            reason: Reason::InvalidInput(error),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    InsufficientFunds {
        available: Amount,
        required: Amount,
    },
    UnknownAccount {
        account: AccountId,
    },
    AccountFrozen {
        account: AccountId,
    },
    AccountClosed {
        account: AccountId,
    },
    NoRate {
        meter: String,
        /// Why: the account has no price book, its book has no version in force yet, or no
        /// rate of the version in force matches.
        why: NoRateWhy,
    },
    OutsideTimeWindow {
        occurred_at: u64,
        earliest: u64,
        latest: u64,
    },
    InvalidInput(InvalidInput),
    AlreadyExists {
        what: String,
        id: String,
    },
    UnknownAsset {
        asset: String,
    },
    UnknownGrant {
        account: AccountId,
        grant: GrantId,
    },
    UnknownHold {
        account: AccountId,
        hold: HoldId,
    },
    UnknownPriceBook {
        book: BookId,
    },
    /// Publishing a price version that would take effect before ledger time.
    EffectiveInPast {
        effective_from: u64,
        now: u64,
    },
    /// Arithmetic left the representable range; the command was not applied.
    Overflow {
        field: String,
    },
    NotInitialized,
    /// An atomic batch was not applied because event `failed_index` failed.
    BatchAborted {
        failed_index: u32,
    },
}

impl Reason {
    /// Stable code, the same one the API returns.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::InsufficientFunds { .. } => "insufficient_funds",
            Reason::UnknownAccount { .. } => "unknown_account",
            Reason::AccountFrozen { .. } => "account_frozen",
            Reason::AccountClosed { .. } => "account_closed",
            Reason::NoRate { .. } => "no_rate",
            Reason::OutsideTimeWindow { .. } => "outside_time_window",
            Reason::InvalidInput(_) => "invalid_argument",
            Reason::AlreadyExists { .. } => "already_exists",
            Reason::UnknownAsset { .. } => "unknown_asset",
            Reason::UnknownGrant { .. } => "unknown_grant",
            Reason::UnknownHold { .. } => "unknown_hold",
            Reason::UnknownPriceBook { .. } => "unknown_price_book",
            Reason::EffectiveInPast { .. } => "effective_in_past",
            Reason::Overflow { .. } => "overflow",
            Reason::NotInitialized => "not_initialized",
            Reason::BatchAborted { .. } => "batch_aborted",
        }
    }

    /// A sentence a person understands.
    pub fn message(&self) -> String {
        match self {
            Reason::InsufficientFunds { available, required } => format!(
                "insufficient funds: {required} required, {available} available (including credit limit)"
            ),
            Reason::UnknownAccount { account } => format!("unknown account {account}"),
            Reason::AccountFrozen { account } => format!("account {account} is frozen"),
            Reason::AccountClosed { account } => format!("account {account} is closed"),
            Reason::NoRate { meter, why } => match why {
                NoRateWhy::NoPriceBook => {
                    format!("no rate for meter {meter:?}: the account has no price book")
                }
                NoRateWhy::NoVersionYet { book, first_from } => format!(
                    "no rate for meter {meter:?}: price book {book} has no version in force yet (the first takes effect at {})",
                    crate::calendar::format_utc(*first_from)
                ),
                NoRateWhy::NoMatch { book, version } => format!(
                    "no rate for meter {meter:?} and these dimensions in price book {book} (version {version}, in force)"
                ),
            },
            Reason::OutsideTimeWindow { occurred_at, earliest, latest } => format!(
                "occurred_at {} is outside the accepted window {} .. {} (the dedup window before ledger time, 5 minutes after it)",
                crate::calendar::format_utc(*occurred_at),
                crate::calendar::format_utc(*earliest),
                crate::calendar::format_utc(*latest)
            ),
            Reason::InvalidInput(error) => format!("invalid {}: {}", error.field, error.reason),
            Reason::AlreadyExists { what, id } => format!("{what} {id} already exists with different content"),
            Reason::UnknownAsset { asset } => format!("unknown asset {asset}"),
            Reason::UnknownGrant { account, grant } => {
                format!("account {account} has no grant {grant}")
            }
            Reason::UnknownHold { account, hold } => format!(
                "account {account} has no hold {hold} (never authorized on it, or ended more than the dedup window ago)"
            ),
            Reason::UnknownPriceBook { book } => format!("unknown price book {book}"),
            Reason::EffectiveInPast { effective_from, now } => format!(
                "effective_from {} is before ledger time {}: settled charges never move",
                crate::calendar::format_utc(*effective_from),
                crate::calendar::format_utc(*now)
            ),
            Reason::Overflow { field } => format!(
                "{field} leads to an amount out of the representable range (a charge, sum or product past 28 significant digits)"
            ),
            Reason::NotInitialized => "the ledger is not initialized yet".to_string(),
            Reason::BatchAborted { failed_index } => {
                format!("atomic batch not applied: event {failed_index} failed")
            }
        }
    }
}

/// Why an event found no rate (see [`Reason::NoRate`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoRateWhy {
    NoPriceBook,
    NoVersionYet { book: String, first_from: u64 },
    NoMatch { book: String, version: u32 },
}

/// How a grant ended (see [`Applied::GrantEnded`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantEndedAs {
    Voided,
    Expired,
}

impl GrantEndedAs {
    /// `voided` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantEndedAs::Voided => "voided",
            GrantEndedAs::Expired => "expired",
        }
    }
}

/// How a hold ended (see [`Applied::HoldEnded`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldEndedAs {
    Released,
    Expired,
    Captured,
}

impl HoldEndedAs {
    /// `released`, `expired` or `captured`.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldEndedAs::Released => "released",
            HoldEndedAs::Expired => "expired",
            HoldEndedAs::Captured => "captured",
        }
    }
}
