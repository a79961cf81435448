//! The recorded history of a fault run: every client operation with what the client saw
//! (acknowledged with its outcome, failed definitively, or unknown), and the final state read
//! back from the cluster. Plain data, so the checker is a pure function and can be tested on
//! synthetic histories.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rust_decimal::Decimal;

/// What one operation asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Usage {
        account: String,
        event_id: String,
        quantity: Decimal,
        hold_id: Option<String>,
        /// Part of the event's content: a retry must send the same value.
        occurred_at_ms: u64,
    },
    /// A purchased grant (initial funds and top-ups).
    Grant {
        account: String,
        grant_id: String,
        amount: Decimal,
    },
    Authorize {
        account: String,
        hold_id: String,
        amount: Decimal,
    },
    PublishPrices {
        book: String,
        unit_price: Decimal,
    },
    /// GetAccount; `linearizable` false for a follower read (may be stale by contract).
    Read {
        account: String,
        linearizable: bool,
    },
}

impl OpKind {
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Read { .. })
    }
}

/// What the client learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpOutcome {
    /// Sent, no answer recorded yet (the run ended while it was in flight: unknown).
    Pending,
    /// A usage event settled (`duplicate` when the ledger answered with the original result).
    Settled {
        charged: Decimal,
        duplicate: bool,
        log_index: u64,
    },
    /// Any other acknowledged write (grant, hold, prices); `already_existed` for a repeat.
    Applied {
        log_index: u64,
        already_existed: bool,
    },
    /// A business answer that changed nothing: a usage rejection (`insufficient_funds`...) or
    /// conflict, or an error status with a definite code.
    Failed { code: String },
    /// A read's answer.
    Read {
        node: u64,
        applied_index: u64,
        balance: Decimal,
    },
    /// Timeout, transport error, `unavailable`/`not_leader`/`deadline_exceeded`: it may or may
    /// not have been applied.
    Unknown { reason: String },
}

/// One operation, as one client attempted it on one node. A retry is a new operation with
/// the same ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub id: u64,
    pub client: usize,
    pub node: u64,
    pub kind: OpKind,
    /// Microseconds since the run started.
    pub start_us: u64,
    pub end_us: u64,
    pub outcome: OpOutcome,
}

/// Shared, append-only recorder the clients write into.
#[derive(Clone)]
pub struct Recorder {
    started: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            started: Instant::now(),
            ops: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl Recorder {
    /// When the recording started: the nemesis' schedule uses the same clock.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Records that `client` sent `kind` to `node`; returns the operation's id.
    pub fn sent(&self, client: usize, node: u64, kind: OpKind) -> u64 {
        let start_us = self.now_us();
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        let id = ops.len() as u64;
        ops.push(Op {
            id,
            client,
            node,
            kind,
            start_us,
            end_us: u64::MAX,
            outcome: OpOutcome::Pending,
        });
        id
    }

    pub fn finished(&self, id: u64, outcome: OpOutcome) {
        let end_us = self.now_us();
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        let op = &mut ops[id as usize];
        op.end_us = end_us;
        op.outcome = outcome;
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One posting of a journal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostingRec {
    /// `customer_grant`, `receivable`, `usage_revenue`, ...
    pub book: String,
    pub asset: String,
    pub amount: Decimal,
}

/// One journal entry of an account's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalRec {
    pub seq: u64,
    /// `usage`, `grant_added`, ...
    pub kind: String,
    pub event_id: Option<String>,
    pub grant_id: Option<String>,
    pub postings: Vec<PostingRec>,
}

impl JournalRec {
    /// What a usage entry charged: its usage-revenue posting (in the account's asset).
    pub fn usage_charge(&self) -> Decimal {
        self.postings
            .iter()
            .filter(|posting| posting.book == "usage_revenue")
            .map(|posting| posting.amount)
            .sum()
    }

    /// What a grant_added entry put on the customer's grant book.
    pub fn grant_amount(&self) -> Decimal {
        self.postings
            .iter()
            .filter(|posting| posting.book == "customer_grant")
            .map(|posting| posting.amount)
            .sum()
    }
}

/// An account as read back at the end of the run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountFinal {
    pub balance: Decimal,
    /// Oldest first.
    pub journal: Vec<JournalRec>,
}

/// A state hash one node reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashSample {
    pub node: u64,
    pub applied_index: u64,
    pub hash_hex: String,
}

/// Everything the checker looks at.
#[derive(Clone, Debug, Default)]
pub struct RunRecord {
    pub seed: u64,
    /// The nemesis' schedule as it ran, one line per step.
    pub schedule: Vec<String>,
    pub ops: Vec<Op>,
    /// Balances (linearizable) and the union of every replica's history per account.
    pub accounts: BTreeMap<String, AccountFinal>,
    /// Each member's own history per account (node -> account -> oldest first), read after
    /// the members converged; compared with the union.
    pub replica_histories: BTreeMap<u64, BTreeMap<String, Vec<JournalRec>>>,
    pub hashes: Vec<HashSample>,
}
