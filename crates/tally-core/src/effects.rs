//! Where applying a command writes its side effects: journal entries (with book totals kept
//! for the conservation check), emitted ledger events, and the ledger-wide monthly aggregates.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::ids::{AccountId, AssetCode};
use crate::journal::{Book, JournalEntry, JournalKind, LedgerEvent, LedgerEventKind, Posting};
use crate::money::Amount;
use crate::report::plus;
use crate::state::ApplyResult;

/// Running totals of every book per asset; all six sum to zero per asset at all times.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BookTotals {
    pub customer_grants: Amount,
    pub receivable: Amount,
    pub usage_revenue: Amount,
    pub breakage: Amount,
    pub promotional_expense: Amount,
    pub funding: Amount,
}

impl BookTotals {
    pub fn sum(&self) -> Amount {
        [
            self.customer_grants,
            self.receivable,
            self.usage_revenue,
            self.breakage,
            self.promotional_expense,
            self.funding,
        ]
        .into_iter()
        .fold(Amount::ZERO, plus)
    }

    fn post(&mut self, book: &Book, amount: Amount) {
        let slot = match book {
            Book::CustomerGrant { .. } => &mut self.customer_grants,
            Book::Receivable { .. } => &mut self.receivable,
            Book::UsageRevenue => &mut self.usage_revenue,
            Book::Breakage => &mut self.breakage,
            Book::PromotionalExpense => &mut self.promotional_expense,
            Book::Funding => &mut self.funding,
        };
        *slot = plus(*slot, amount);
    }
}

/// Ledger-wide counters and aggregates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Totals {
    pub journal_seq: u64,
    pub event_seq: u64,
    pub books: BTreeMap<AssetCode, BookTotals>,
    /// Not encoded: rebuilt from the accounts when a snapshot is loaded.
    #[serde(skip)]
    pub reports: crate::report::LedgerReports,
}

pub(crate) struct Out<'a> {
    pub result: &'a mut ApplyResult,
    pub totals: &'a mut Totals,
}

impl Out<'_> {
    /// Appends a journal entry of `account` (whose ordinal is `ordinal`). Postings must balance;
    /// a non-zero sum is a bug in the ledger, so it stops the node rather than writing an
    /// unbalanced journal.
    #[allow(clippy::too_many_arguments)]
    pub fn journal(
        &mut self,
        at_ms: u64,
        account: &AccountId,
        ordinal: u32,
        asset: &AssetCode,
        kind: JournalKind,
        postings: Vec<(Book, Amount)>,
        revenue: Amount,
        cost: Amount,
    ) {
        // A zero posting moves nothing, so it is not written (nor booked: adding zero is a
        // no-op); the balance check below sees the same sum either way.
        let entry_postings = postings
            .into_iter()
            .filter(|(_, amount)| !amount.is_zero())
            .map(|(book, amount)| Posting {
                book,
                asset: asset.clone(),
                amount,
            })
            .collect();
        self.journal_postings(
            at_ms,
            account,
            ordinal,
            asset,
            kind,
            entry_postings,
            revenue,
            cost,
        );
    }

    /// [`Self::journal`] for postings already built (all in `asset`, none zero), which spares
    /// the settlement path an intermediate list.
    #[allow(clippy::too_many_arguments)]
    pub fn journal_postings(
        &mut self,
        at_ms: u64,
        account: &AccountId,
        ordinal: u32,
        asset: &AssetCode,
        kind: JournalKind,
        postings: Vec<Posting>,
        revenue: Amount,
        cost: Amount,
    ) {
        let sum = postings
            .iter()
            .fold(Amount::ZERO, |acc, p| plus(acc, p.amount));
        assert!(
            sum.is_zero(),
            "invariant: unbalanced postings {postings:?} for {kind:?}"
        );
        let books = match self.totals.books.get_mut(asset) {
            Some(books) => books,
            None => self.totals.books.entry(asset.clone()).or_default(),
        };
        for posting in &postings {
            books.post(&posting.book, posting.amount);
        }
        self.totals.journal_seq += 1;
        self.result.journal_ordinals.push(ordinal);
        self.result.journal.push(JournalEntry {
            seq: self.totals.journal_seq,
            at_ms,
            account: account.clone(),
            kind,
            postings,
            revenue,
            cost,
        });
    }

    pub fn emit(&mut self, at_ms: u64, account: &AccountId, kind: LedgerEventKind) {
        self.totals.event_seq += 1;
        self.result.events.push(LedgerEvent {
            seq: self.totals.event_seq,
            at_ms,
            account: account.clone(),
            kind,
        });
    }
}
