//! Helpers shared by the store's integration tests: log entries and a small real ledger
//! scenario built from `tally_core` commands.

#![allow(dead_code)]

use std::collections::BTreeSet;

use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership};
use tally_core::*;
use tally_store::TypeConfig;

pub type RaftEntry = openraft::Entry<TypeConfig>;

pub const BASE_MS: u64 = 1_700_000_000_000;

pub fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

pub fn normal(term: u64, index: u64, data: Entry) -> RaftEntry {
    RaftEntry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(data.into()),
    }
}

pub fn blank(term: u64, index: u64) -> RaftEntry {
    RaftEntry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

pub fn membership(term: u64, index: u64, voters: &[u64]) -> RaftEntry {
    RaftEntry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(
            vec![voters.iter().copied().collect::<BTreeSet<u64>>()],
            None,
        )),
    }
}

pub fn amount(text: &str) -> Amount {
    Amount::parse("test", text).unwrap()
}

pub fn account(n: u64) -> AccountId {
    AccountId::new(format!("acct-{n}")).unwrap()
}

pub fn usage(account_n: u64, event: u64, at_ms: u64, quantity: &str) -> UsageEvent {
    UsageEvent {
        event_id: EventId::new(format!("ev-{account_n}-{event}")).unwrap(),
        account: account(account_n),
        meter: Meter::new("tokens").unwrap(),
        quantity: amount(quantity),
        dimensions: Default::default(),
        occurred_at: at_ms,
        cost: None,
        hold: None,
    }
}

/// A real ledger: init, a price book, `accounts` accounts with a purchased grant and a
/// low-balance threshold, then `usage_entries` entries of usage spread over the accounts
/// (enough to cross thresholds and run some accounts dry). Entry i is stamped
/// `BASE_MS + i * 1000`.
pub fn scenario(accounts: u64, usage_entries: u64) -> Vec<Entry> {
    let usd = AssetCode::new("USD").unwrap();
    let book = BookId::new("std").unwrap();
    let mut out = Vec::new();
    let at = |i: usize| BASE_MS + i as u64 * 1_000;
    out.push(Entry {
        at_ms: at(0),
        commands: vec![Command::Init(LedgerConfig {
            reporting_currency: usd.clone(),
            reporting_scale: 2,
            dedup_window_ms: DEDUP_WINDOW_MS_DEFAULT,
        })],
    });
    out.push(Entry {
        at_ms: at(1),
        commands: vec![Command::PublishPrices(PriceBookVersionSpec {
            book: book.clone(),
            asset: usd.clone(),
            effective_from: None,
            rates: vec![Rate {
                meter: Meter::new("tokens").unwrap(),
                dimensions: vec![],
                model: RateModel::PerUnit {
                    unit_price: amount("0.01"),
                    per: amount("1"),
                },
            }],
        })],
    });
    let mut setup = Vec::new();
    for a in 0..accounts {
        setup.push(Command::CreateAccount(AccountSpec {
            id: account(a),
            asset: usd.clone(),
            price_book: Some(book.clone()),
            credit_limit: Some(amount("5")),
            list_price: None,
            metadata: vec![],
            thresholds: vec![amount("20")],
            auto_recharge: None,
        }));
        setup.push(Command::AddGrant(GrantSpec {
            account: account(a),
            id: GrantId::new("g1").unwrap(),
            category: GrantCategory::Purchased,
            amount: amount("100"),
            priority: None,
            starts_at: None,
            expires_at: None,
            reset_every: None,
            rollover_max: None,
            paid: Some(amount("100")),
        }));
    }
    out.push(Entry {
        at_ms: at(2),
        commands: setup,
    });
    for i in 0..usage_entries {
        let index = out.len();
        let at_ms = at(index);
        let commands = (0..accounts)
            .map(|a| {
                Command::Usage(usage(
                    a,
                    i,
                    at_ms,
                    &format!("{}", 500 + 250 * ((i + a) % 5)),
                ))
            })
            .collect();
        out.push(Entry { at_ms, commands });
    }
    out.push(Entry {
        at_ms: at(out.len()),
        commands: vec![Command::Tick],
    });
    out
}

/// Applies `entries` to a fresh in-memory ledger: what the store must agree with.
pub struct Reference {
    pub states: Vec<LedgerState>,
    pub results: Vec<ApplyResult>,
}

impl Reference {
    pub fn new(entries: &[Entry]) -> Self {
        let mut state = LedgerState::new();
        let mut states = vec![state.clone()];
        let mut results = Vec::new();
        for e in entries {
            results.push(state.apply(e));
            states.push(state.clone());
        }
        Reference { states, results }
    }

    /// Journal entries of `account` after the first `n` entries, newest first.
    pub fn history(&self, n: usize, account: &AccountId) -> Vec<JournalEntry> {
        let mut all: Vec<JournalEntry> = self.results[..n]
            .iter()
            .flat_map(|r| r.journal.iter().cloned())
            .filter(|j| &j.account == account)
            .collect();
        all.reverse();
        all
    }

    pub fn events(&self, n: usize) -> Vec<LedgerEvent> {
        self.results[..n]
            .iter()
            .flat_map(|r| r.events.iter().cloned())
            .collect()
    }
}
