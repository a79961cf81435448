//! The checker: judges a [`RunRecord`] after the run. Pure, so it is tested on synthetic
//! histories (see the tests below: a lost event, a doubly applied event, a stale read, a wrong
//! balance must each be caught).
//!
//! Per usage event id (all attempts, retries included):
//! - some attempt acknowledged it settled: the journal holds it exactly once, with the charge
//!   the client was told; at most one attempt was told `settled` (the others `duplicate`);
//! - every attempt failed definitively: the journal does not hold it;
//! - otherwise (some attempt unknown): at most once.
//!
//! The same rules hold for grants by grant id. Then: each account's balance equals the grants
//! its journal holds (at the amount the client sent) minus the charges its journal holds; every
//! journal entry's postings sum to zero per asset; a linearizable read reflects every write
//! acknowledged before it started and, per client, never goes backwards; every node that
//! reported a state hash at an applied index reported the same one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use rust_decimal::Decimal;

use super::history::{JournalRec, Op, OpKind, OpOutcome, RunRecord};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Short stable name of the rule (`lost_event`, `applied_twice`, ...).
    pub rule: &'static str,
    pub detail: String,
    /// Ids of the operations involved.
    pub ops: Vec<u64>,
}

/// What a check counted (for the report).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckStats {
    pub ops: usize,
    pub usage_events: usize,
    pub events_acknowledged: usize,
    pub events_definitely_failed: usize,
    pub events_unknown: usize,
    pub events_settled: usize,
    pub insufficient_funds: usize,
    pub reads_checked: usize,
    pub accounts_checked: usize,
    pub hash_indexes_compared: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Attempts {
    Acknowledged,
    DefinitelyFailed,
    Unknown,
}

fn classify<'a>(attempts: impl Iterator<Item = &'a Op>) -> Attempts {
    let mut any_unknown = false;
    for op in attempts {
        match &op.outcome {
            OpOutcome::Settled { .. } | OpOutcome::Applied { .. } => return Attempts::Acknowledged,
            OpOutcome::Failed { .. } => {}
            _ => any_unknown = true,
        }
    }
    if any_unknown {
        Attempts::Unknown
    } else {
        Attempts::DefinitelyFailed
    }
}

pub fn check(record: &RunRecord) -> (CheckStats, Vec<Violation>) {
    let mut stats = CheckStats {
        ops: record.ops.len(),
        ..CheckStats::default()
    };
    let mut violations = Vec::new();
    let mut violate = |rule: &'static str, detail: String, ops: Vec<u64>| {
        violations.push(Violation { rule, detail, ops });
    };

    // Attempts per (account, event id) and per (account, grant id).
    let mut events: BTreeMap<(&str, &str), Vec<&Op>> = BTreeMap::new();
    let mut grants: BTreeMap<(&str, &str), Vec<&Op>> = BTreeMap::new();
    for op in &record.ops {
        match &op.kind {
            OpKind::Usage {
                account, event_id, ..
            } => events.entry((account, event_id)).or_default().push(op),
            OpKind::Grant {
                account, grant_id, ..
            } => grants.entry((account, grant_id)).or_default().push(op),
            _ => {}
        }
        if matches!(&op.outcome, OpOutcome::Failed { code } if code == "insufficient_funds") {
            stats.insufficient_funds += 1;
        }
    }
    stats.usage_events = events.len();

    // Journal occurrences.
    let mut settled: BTreeMap<(&str, &str), Vec<Decimal>> = BTreeMap::new();
    let mut granted: BTreeMap<(&str, &str), Vec<Decimal>> = BTreeMap::new();
    for (account, final_state) in &record.accounts {
        for entry in &final_state.journal {
            match entry.kind.as_str() {
                "usage" => {
                    let event = entry.event_id.as_deref().unwrap_or("");
                    settled
                        .entry((account, event))
                        .or_default()
                        .push(entry.usage_charge());
                }
                "grant_added" => {
                    let grant = entry.grant_id.as_deref().unwrap_or("");
                    granted
                        .entry((account, grant))
                        .or_default()
                        .push(entry.grant_amount());
                }
                _ => {}
            }
            let mut per_asset: BTreeMap<&str, Decimal> = BTreeMap::new();
            for posting in &entry.postings {
                *per_asset.entry(&posting.asset).or_default() += posting.amount;
            }
            for (asset, sum) in per_asset {
                if !sum.is_zero() {
                    violate(
                        "unbalanced_postings",
                        format!("account {account} journal seq {} ({}): postings in {asset} sum to {sum}", entry.seq, entry.kind),
                        Vec::new(),
                    );
                }
            }
        }
    }

    for ((account, event), attempts) in &events {
        let ids: Vec<u64> = attempts.iter().map(|op| op.id).collect();
        let in_journal = settled
            .get(&(*account, *event))
            .cloned()
            .unwrap_or_default();
        let class = classify(attempts.iter().copied());
        if !in_journal.is_empty() {
            stats.events_settled += 1;
        }
        // Every attempt of an event sends the same content: `conflict` means the ledger saw a
        // difference that is not there (or mixed up two events).
        let conflicts: Vec<u64> = attempts
            .iter()
            .filter(|op| matches!(&op.outcome, OpOutcome::Failed { code } if code == "conflict"))
            .map(|op| op.id)
            .collect();
        if !conflicts.is_empty() {
            violate(
                "retry_conflict",
                format!("event {event} of {account}: a retry with the same content was answered `conflict`"),
                conflicts,
            );
        }
        let fresh_acks = attempts
            .iter()
            .filter(|op| {
                matches!(
                    op.outcome,
                    OpOutcome::Settled {
                        duplicate: false,
                        ..
                    }
                )
            })
            .count();
        if fresh_acks > 1 {
            violate(
                "settled_twice_acknowledged",
                format!("event {event} of {account}: {fresh_acks} attempts were told `settled` (not `duplicate`)"),
                ids.clone(),
            );
        }
        match class {
            Attempts::Acknowledged => {
                stats.events_acknowledged += 1;
                if in_journal.is_empty() {
                    violate("lost_event", format!("event {event} of {account} was acknowledged settled but is not in the journal"), ids.clone());
                } else if in_journal.len() > 1 {
                    violate(
                        "applied_twice",
                        format!(
                            "event {event} of {account} is in the journal {} times",
                            in_journal.len()
                        ),
                        ids.clone(),
                    );
                }
                for op in attempts {
                    if let OpOutcome::Settled { charged, .. } = &op.outcome {
                        if let Some(journal_charge) = in_journal.first() {
                            if journal_charge != charged {
                                violate(
                                    "charge_mismatch",
                                    format!("event {event} of {account}: client was told {charged}, journal charged {journal_charge}"),
                                    vec![op.id],
                                );
                            }
                        }
                    }
                }
            }
            Attempts::DefinitelyFailed => {
                stats.events_definitely_failed += 1;
                if !in_journal.is_empty() {
                    violate("failed_event_settled", format!("event {event} of {account} failed definitively on every attempt but is in the journal"), ids.clone());
                }
            }
            Attempts::Unknown => {
                stats.events_unknown += 1;
                if in_journal.len() > 1 {
                    violate("applied_twice", format!("event {event} of {account} (outcome unknown) is in the journal {} times", in_journal.len()), ids.clone());
                }
            }
        }
    }
    for (account, event) in settled.keys() {
        if !events.contains_key(&(*account, *event)) {
            violate(
                "phantom_event",
                format!("event {event} of {account} is in the journal but no client sent it"),
                Vec::new(),
            );
        }
    }

    for ((account, grant), attempts) in &grants {
        let ids: Vec<u64> = attempts.iter().map(|op| op.id).collect();
        let in_journal = granted
            .get(&(*account, *grant))
            .cloned()
            .unwrap_or_default();
        let sent = attempts.iter().find_map(|op| match &op.kind {
            OpKind::Grant { amount, .. } => Some(*amount),
            _ => None,
        });
        match classify(attempts.iter().copied()) {
            Attempts::Acknowledged if in_journal.len() != 1 => violate(
                if in_journal.is_empty() {
                    "lost_grant"
                } else {
                    "applied_twice"
                },
                format!(
                    "grant {grant} of {account} was acknowledged; the journal holds it {} times",
                    in_journal.len()
                ),
                ids.clone(),
            ),
            Attempts::DefinitelyFailed if !in_journal.is_empty() => violate(
                "failed_grant_applied",
                format!("grant {grant} of {account} failed definitively but is in the journal"),
                ids.clone(),
            ),
            Attempts::Unknown if in_journal.len() > 1 => violate(
                "applied_twice",
                format!(
                    "grant {grant} of {account} is in the journal {} times",
                    in_journal.len()
                ),
                ids.clone(),
            ),
            _ => {}
        }
        for amount in &in_journal {
            if Some(*amount) != sent {
                violate(
                    "grant_amount_mismatch",
                    format!("grant {grant} of {account}: sent {sent:?}, journal {amount}"),
                    ids.clone(),
                );
            }
        }
    }
    for (account, grant) in granted.keys() {
        if !grants.contains_key(&(*account, *grant)) {
            violate(
                "phantom_grant",
                format!("grant {grant} of {account} is in the journal but no client sent it"),
                Vec::new(),
            );
        }
    }

    // Balances: the grants in the journal, at the amount sent, minus the charges in the journal.
    for (account, final_state) in &record.accounts {
        stats.accounts_checked += 1;
        let mut expected = Decimal::ZERO;
        for ((grant_account, grant), attempts) in &grants {
            if grant_account != account {
                continue;
            }
            let times = granted
                .get(&(*grant_account, *grant))
                .map(Vec::len)
                .unwrap_or(0) as i64;
            if let Some(OpKind::Grant { amount, .. }) = attempts.first().map(|op| &op.kind) {
                expected += *amount * Decimal::from(times);
            }
        }
        for ((charge_account, _), charges) in &settled {
            if charge_account == account {
                expected -= charges.iter().copied().sum::<Decimal>();
            }
        }
        if final_state.balance != expected {
            violate(
                "wrong_balance",
                format!(
                    "account {account}: balance {} but grants minus settled charges is {expected}",
                    final_state.balance
                ),
                Vec::new(),
            );
        }
    }

    // Reads: linearizable reads reflect every write acknowledged before they started, and per
    // client never go backwards.
    let mut acked_writes: Vec<(u64, u64, u64)> = record
        .ops
        .iter()
        .filter_map(|op| match op.outcome {
            OpOutcome::Settled { log_index, .. } | OpOutcome::Applied { log_index, .. } => {
                Some((op.end_us, log_index, op.id))
            }
            _ => None,
        })
        .collect();
    acked_writes.sort();
    let mut reads: Vec<&Op> = record
        .ops
        .iter()
        .filter(|op| {
            matches!(
                op.kind,
                OpKind::Read {
                    linearizable: true,
                    ..
                }
            ) && matches!(op.outcome, OpOutcome::Read { .. })
        })
        .collect();
    reads.sort_by_key(|op| op.start_us);
    let mut next_write = 0;
    let mut highest_acked: Option<(u64, u64)> = None; // (log_index, op id)
    let mut last_read_per_client: BTreeMap<usize, &Op> = BTreeMap::new();
    for read in reads {
        stats.reads_checked += 1;
        while next_write < acked_writes.len() && acked_writes[next_write].0 < read.start_us {
            let (_, index, id) = acked_writes[next_write];
            if highest_acked
                .map(|(highest, _)| index > highest)
                .unwrap_or(true)
            {
                highest_acked = Some((index, id));
            }
            next_write += 1;
        }
        let OpOutcome::Read {
            applied_index,
            node,
            ..
        } = read.outcome
        else {
            continue;
        };
        if let Some((index, write_id)) = highest_acked {
            if applied_index < index {
                violate(
                    "stale_read",
                    format!("linearizable read on node {node} saw applied index {applied_index}, but a write acknowledged before it started committed at {index}"),
                    vec![write_id, read.id],
                );
            }
        }
        if let Some(previous) = last_read_per_client.get(&read.client) {
            if let OpOutcome::Read {
                applied_index: before,
                ..
            } = previous.outcome
            {
                if previous.end_us < read.start_us && applied_index < before {
                    violate(
                        "read_went_backwards",
                        format!(
                            "client {} read applied index {before}, then {applied_index}",
                            read.client
                        ),
                        vec![previous.id, read.id],
                    );
                }
            }
        }
        last_read_per_client.insert(read.client, read);
    }

    // Read contents: the balance a read returned is the balance after some prefix of the
    // account's journal. A linearizable read's prefix holds every grant and event acknowledged
    // before the read started; no read's prefix holds one first sent after the read ended.
    for (account, final_state) in &record.accounts {
        let journal = &final_state.journal;
        // running[p]: the balance after the first p entries.
        let mut running = vec![Decimal::ZERO];
        let mut position: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (index, entry) in journal.iter().enumerate() {
            let delta: Decimal = entry
                .postings
                .iter()
                .filter(|posting| posting.book == "customer_grant" || posting.book == "receivable")
                .map(|posting| posting.amount)
                .sum();
            running.push(running[index] + delta);
            match entry.kind.as_str() {
                "usage" => {
                    position.insert(("usage", entry.event_id.as_deref().unwrap_or("")), index);
                }
                "grant_added" => {
                    position.insert(("grant", entry.grant_id.as_deref().unwrap_or("")), index);
                }
                _ => {}
            }
        }
        // Per journal position: when its operation was first sent, and when first acknowledged.
        let mut first_sent = vec![u64::MAX; journal.len()];
        let mut first_acked = vec![u64::MAX; journal.len()];
        for op in &record.ops {
            let key = match &op.kind {
                OpKind::Usage {
                    account: a,
                    event_id,
                    ..
                } if a == account => ("usage", event_id.as_str()),
                OpKind::Grant {
                    account: a,
                    grant_id,
                    ..
                } if a == account => ("grant", grant_id.as_str()),
                _ => continue,
            };
            let Some(&index) = position.get(&key) else {
                continue;
            };
            first_sent[index] = first_sent[index].min(op.start_us);
            if matches!(
                op.outcome,
                OpOutcome::Settled { .. } | OpOutcome::Applied { .. }
            ) {
                first_acked[index] = first_acked[index].min(op.end_us);
            }
        }
        for read in &record.ops {
            let OpKind::Read {
                account: read_account,
                linearizable,
            } = &read.kind
            else {
                continue;
            };
            if read_account != account {
                continue;
            }
            let OpOutcome::Read {
                balance,
                node,
                applied_index,
            } = &read.outcome
            else {
                continue;
            };
            // The prefix must include every entry acknowledged before the read started
            // (linearizable reads) and may not include one first sent after it ended.
            let lowest = if *linearizable {
                first_acked
                    .iter()
                    .enumerate()
                    .filter(|(_, acked)| **acked < read.start_us)
                    .map(|(index, _)| index + 1)
                    .max()
                    .unwrap_or(0)
            } else {
                0
            };
            let highest = first_sent
                .iter()
                .position(|sent| *sent != u64::MAX && *sent > read.end_us)
                .unwrap_or(journal.len());
            let fits =
                (lowest..=highest.max(lowest)).any(|p| p < running.len() && running[p] == *balance);
            if !fits {
                violate(
                    "read_matches_no_state",
                    format!(
                        "{} read of {account} on node {node} (applied index {applied_index}) returned balance {balance}, \
                         which is no balance after {lowest}..={highest} journal entries",
                        if *linearizable { "linearizable" } else { "follower" }
                    ),
                    vec![read.id],
                );
            }
        }
    }

    // Replicas' histories: every member serves the same journal entries for an account.
    for (node, histories) in &record.replica_histories {
        for (account, journal) in histories {
            let Some(union) = record.accounts.get(account) else {
                continue;
            };
            let mine: BTreeMap<u64, &JournalRec> =
                journal.iter().map(|entry| (entry.seq, entry)).collect();
            let mut missing = Vec::new();
            for entry in &union.journal {
                match mine.get(&entry.seq) {
                    None => missing.push(entry.seq),
                    Some(own) if *own != entry => violate(
                        "history_diverged",
                        format!("node {node} serves journal seq {} of {account} as {own:?}, another replica as {entry:?}", entry.seq),
                        Vec::new(),
                    ),
                    Some(_) => {}
                }
            }
            if !missing.is_empty() {
                violate(
                    "history_gap",
                    format!("node {node} serves no journal entries {missing:?} of {account}, which another member serves"),
                    Vec::new(),
                );
            }
        }
    }

    // State hashes: one hash per applied index across nodes.
    let mut by_index: BTreeMap<u64, BTreeMap<&str, BTreeSet<u64>>> = BTreeMap::new();
    for sample in &record.hashes {
        by_index
            .entry(sample.applied_index)
            .or_default()
            .entry(&sample.hash_hex)
            .or_default()
            .insert(sample.node);
    }
    for (index, hashes) in &by_index {
        let nodes: BTreeSet<u64> = hashes.values().flatten().copied().collect();
        if nodes.len() > 1 {
            stats.hash_indexes_compared += 1;
        }
        if hashes.len() > 1 {
            violate(
                "state_hash_diverged",
                format!("at applied index {index} nodes report different state hashes: {hashes:?}"),
                Vec::new(),
            );
        }
    }

    (stats, violations)
}

/// The union of several replicas' histories of one account, oldest first (the first replica's
/// version of an entry wins; differences are reported by [`check`] as `history_diverged`).
pub fn union_of(histories: &[&Vec<JournalRec>]) -> Vec<JournalRec> {
    let mut by_seq = BTreeMap::new();
    for history in histories {
        for entry in history.iter() {
            by_seq.entry(entry.seq).or_insert_with(|| entry.clone());
        }
    }
    by_seq.into_values().collect()
}

/// Rules that report a known, documented bug of code outside the tests: printed loudly on every
/// run, fatal only with `FAULT_STRICT=1`. Empty: `history_gap` (a node that caught up by snapshot
/// had no history before it) was fixed in tally-store, whose snapshots now carry the history.
pub const KNOWN_BUG_RULES: &[&str] = &[];

/// The failure report: the seed, the command that replays the run (`reproduce`), the fault
/// schedule and each violation with its operations.
pub fn report(record: &RunRecord, violations: &[Violation], reproduce: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fault run FAILED: {} violation(s); seed {}",
        violations.len(),
        record.seed
    );
    let _ = writeln!(out, "reproduce: {reproduce}  (see tests/README.md)");
    let _ = writeln!(out, "fault schedule:");
    for step in &record.schedule {
        let _ = writeln!(out, "  {step}");
    }
    let by_id: BTreeMap<u64, &Op> = record.ops.iter().map(|op| (op.id, op)).collect();
    for violation in violations.iter().take(50) {
        let _ = writeln!(out, "violation {}: {}", violation.rule, violation.detail);
        for id in &violation.ops {
            if let Some(op) = by_id.get(id) {
                let _ = writeln!(
                    out,
                    "    op {} client {} node {} [{}us..{}us] {:?} -> {:?}",
                    op.id, op.client, op.node, op.start_us, op.end_us, op.kind, op.outcome
                );
            }
        }
    }
    if violations.len() > 50 {
        let _ = writeln!(out, "... and {} more", violations.len() - 50);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::history::{AccountFinal, HashSample, JournalRec, PostingRec};

    fn dec(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn posting(book: &str, amount: &str) -> PostingRec {
        PostingRec {
            book: book.into(),
            asset: "CREDITS".into(),
            amount: dec(amount),
        }
    }

    fn grant_entry(seq: u64, grant: &str, amount: &str) -> JournalRec {
        JournalRec {
            seq,
            kind: "grant_added".into(),
            event_id: None,
            grant_id: Some(grant.into()),
            postings: vec![
                posting("customer_grant", amount),
                posting("funding", &format!("-{amount}")),
            ],
        }
    }

    fn usage_entry(seq: u64, event: &str, charge: &str) -> JournalRec {
        JournalRec {
            seq,
            kind: "usage".into(),
            event_id: Some(event.into()),
            grant_id: None,
            postings: vec![
                posting("customer_grant", &format!("-{charge}")),
                posting("usage_revenue", charge),
            ],
        }
    }

    fn op(
        id: u64,
        client: usize,
        start_us: u64,
        end_us: u64,
        kind: OpKind,
        outcome: OpOutcome,
    ) -> Op {
        Op {
            id,
            client,
            node: 1,
            kind,
            start_us,
            end_us,
            outcome,
        }
    }

    fn usage_kind(event: &str) -> OpKind {
        OpKind::Usage {
            account: "a".into(),
            event_id: event.into(),
            quantity: dec("10"),
            hold_id: None,
            occurred_at_ms: 1,
        }
    }

    fn read_kind() -> OpKind {
        OpKind::Read {
            account: "a".into(),
            linearizable: true,
        }
    }

    /// A consistent run: a grant of 100, e1 settled (10), e2 unknown and settled (10), e3
    /// unknown and not settled, e4 rejected, e5 settled after a retry (unknown, then
    /// duplicate), two reads, equal hashes.
    fn clean() -> RunRecord {
        let settled = |index| OpOutcome::Settled {
            charged: dec("10"),
            duplicate: false,
            log_index: index,
        };
        let unknown = || OpOutcome::Unknown {
            reason: "timeout".into(),
        };
        let ops = vec![
            op(
                0,
                0,
                0,
                10,
                OpKind::Grant {
                    account: "a".into(),
                    grant_id: "g1".into(),
                    amount: dec("100"),
                },
                OpOutcome::Applied {
                    log_index: 3,
                    already_existed: false,
                },
            ),
            op(1, 0, 20, 30, usage_kind("e1"), settled(4)),
            op(2, 1, 20, 40, usage_kind("e2"), unknown()),
            op(3, 1, 50, 60, usage_kind("e3"), unknown()),
            op(
                4,
                0,
                70,
                80,
                usage_kind("e4"),
                OpOutcome::Failed {
                    code: "insufficient_funds".into(),
                },
            ),
            op(5, 1, 70, 90, usage_kind("e5"), unknown()),
            op(
                6,
                1,
                95,
                99,
                usage_kind("e5"),
                OpOutcome::Settled {
                    charged: dec("10"),
                    duplicate: true,
                    log_index: 6,
                },
            ),
            op(
                7,
                0,
                100,
                110,
                read_kind(),
                OpOutcome::Read {
                    node: 2,
                    applied_index: 6,
                    balance: dec("70"),
                },
            ),
            op(
                8,
                0,
                120,
                130,
                read_kind(),
                OpOutcome::Read {
                    node: 3,
                    applied_index: 7,
                    balance: dec("70"),
                },
            ),
        ];
        let journal = vec![
            grant_entry(1, "g1", "100"),
            usage_entry(2, "e1", "10"),
            usage_entry(3, "e2", "10"),
            usage_entry(4, "e5", "10"),
        ];
        RunRecord {
            seed: 42,
            schedule: vec!["t=0s kill -9 leader".into()],
            ops,
            replica_histories: BTreeMap::new(),
            accounts: BTreeMap::from([(
                "a".to_string(),
                AccountFinal {
                    balance: dec("70"),
                    journal,
                },
            )]),
            hashes: vec![
                HashSample {
                    node: 1,
                    applied_index: 7,
                    hash_hex: "aa".into(),
                },
                HashSample {
                    node: 2,
                    applied_index: 7,
                    hash_hex: "aa".into(),
                },
            ],
        }
    }

    /// The violation `rule` is among those found (a mutation may break other rules too).
    fn assert_caught(record: &RunRecord, rule: &str) {
        let found = rules(record);
        assert!(found.contains(&rule), "expected {rule}, found {found:?}");
    }

    fn rules(record: &RunRecord) -> Vec<&'static str> {
        check(record)
            .1
            .into_iter()
            .map(|violation| violation.rule)
            .collect()
    }

    #[test]
    fn a_consistent_history_passes() {
        let (stats, violations) = check(&clean());
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(stats.events_acknowledged, 2);
        assert_eq!(stats.events_unknown, 2);
        assert_eq!(stats.events_definitely_failed, 1);
        assert_eq!(stats.events_settled, 3);
        assert_eq!(stats.reads_checked, 2);
    }

    #[test]
    fn a_lost_event_is_caught() {
        let mut record = clean();
        let account = record.accounts.get_mut("a").unwrap();
        account
            .journal
            .retain(|entry| entry.event_id.as_deref() != Some("e1"));
        account.balance = dec("80");
        assert_caught(&record, "lost_event");
        let report = report(
            &record,
            &check(&record).1,
            "make test-faults SEED=42 DURATION=10 FAULTS=kill_leader",
        );
        assert!(report.contains("seed 42"), "{report}");
        assert!(
            report.contains("reproduce: make test-faults SEED=42 DURATION=10 FAULTS=kill_leader"),
            "{report}"
        );
        assert!(report.contains("kill -9 leader"), "{report}");
        assert!(report.contains("op 1 client 0"), "{report}");
    }

    #[test]
    fn a_doubly_applied_event_is_caught() {
        let mut record = clean();
        let account = record.accounts.get_mut("a").unwrap();
        account.journal.push(usage_entry(5, "e1", "10"));
        account.balance = dec("60");
        assert_caught(&record, "applied_twice");
        // Also for an event whose outcome the client never learned.
        let mut record = clean();
        let account = record.accounts.get_mut("a").unwrap();
        account.journal.push(usage_entry(5, "e2", "10"));
        account.balance = dec("60");
        assert_caught(&record, "applied_twice");
    }

    #[test]
    fn a_definitely_failed_event_that_settled_is_caught() {
        let mut record = clean();
        let account = record.accounts.get_mut("a").unwrap();
        account.journal.push(usage_entry(5, "e4", "10"));
        account.balance = dec("60");
        assert_caught(&record, "failed_event_settled");
    }

    #[test]
    fn a_stale_read_is_caught() {
        // A read that started after e5's retry was acknowledged at index 6 saw index 5.
        let mut record = clean();
        record.ops[7].outcome = OpOutcome::Read {
            node: 2,
            applied_index: 5,
            balance: dec("80"),
        };
        assert_caught(&record, "stale_read");
        // A client's reads going backwards.
        let mut record = clean();
        record.ops[7].outcome = OpOutcome::Read {
            node: 2,
            applied_index: 9,
            balance: dec("70"),
        };
        assert_caught(&record, "read_went_backwards");
    }

    #[test]
    fn a_read_of_a_state_that_never_was_is_caught() {
        // Balance 75 is no prefix of 100, 90, 80, 70.
        let mut record = clean();
        record.ops[8].outcome = OpOutcome::Read {
            node: 3,
            applied_index: 7,
            balance: dec("75"),
        };
        assert_caught(&record, "read_matches_no_state");
        // A linearizable read that misses e1, acknowledged before it started (balance 80
        // exists only before e1 and e2 are both in).
        let mut record = clean();
        record.ops[7].outcome = OpOutcome::Read {
            node: 2,
            applied_index: 6,
            balance: dec("90"),
        };
        assert_caught(&record, "read_matches_no_state");
        // The same as a follower read is allowed to be stale.
        record.ops[7].kind = OpKind::Read {
            account: "a".into(),
            linearizable: false,
        };
        assert!(rules(&record).is_empty());
    }

    #[test]
    fn replica_history_gaps_and_differences_are_caught() {
        let mut record = clean();
        let full = record.accounts["a"].journal.clone();
        let mut partial = full.clone();
        partial.remove(2);
        assert_eq!(union_of(&[&partial, &full]), full);
        record.replica_histories = BTreeMap::from([
            (1, BTreeMap::from([("a".to_string(), full.clone())])),
            (2, BTreeMap::from([("a".to_string(), partial)])),
        ]);
        assert_eq!(rules(&record), vec!["history_gap"]);
        let mut changed = full.clone();
        changed[1].postings[0].amount = dec("-11");
        changed[1].postings[1].amount = dec("11");
        record
            .replica_histories
            .insert(2, BTreeMap::from([("a".to_string(), changed)]));
        assert_eq!(rules(&record), vec!["history_diverged"]);
    }

    #[test]
    fn a_conflict_on_an_identical_retry_is_caught() {
        let mut record = clean();
        record.ops[6].outcome = OpOutcome::Failed {
            code: "conflict".into(),
        };
        assert_caught(&record, "retry_conflict");
    }

    #[test]
    fn a_wrong_balance_is_caught() {
        let mut record = clean();
        record.accounts.get_mut("a").unwrap().balance = dec("80");
        assert_caught(&record, "wrong_balance");
    }

    #[test]
    fn diverged_hashes_unbalanced_postings_and_wrong_charges_are_caught() {
        let mut record = clean();
        record.hashes[1].hash_hex = "bb".into();
        assert_caught(&record, "state_hash_diverged");

        let mut record = clean();
        record.accounts.get_mut("a").unwrap().journal[1].postings[0].amount = dec("-9");
        assert_caught(&record, "unbalanced_postings");

        let mut record = clean();
        record.ops[1].outcome = OpOutcome::Settled {
            charged: dec("11"),
            duplicate: false,
            log_index: 4,
        };
        assert_caught(&record, "charge_mismatch");

        let mut record = clean();
        record
            .accounts
            .get_mut("a")
            .unwrap()
            .journal
            .push(usage_entry(9, "nobody-sent-this", "0"));
        assert_caught(&record, "phantom_event");
    }
}
