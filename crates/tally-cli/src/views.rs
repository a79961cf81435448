//! JSON objects and human text for what the ledger returns (accounts, settlements, reports,
//! journal entries, events). JSON: snake_case, amounts as decimal strings, times RFC 3339.

use serde_json::{json, Value};
use tally_client::{v1, UsageOutcome};
use tally_proto::convert::{account_status_name, grant_category_name, reset_period_name};

use crate::output::{key_values, time_json, time_text, Table};

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

pub fn grant_json(grant: &v1::Grant) -> Value {
    json!({
        "id": grant.id,
        "category": grant_category_name(grant.category),
        "amount": grant.amount,
        "remaining": grant.remaining,
        "priority": grant.priority,
        "starts_at": time_json(Some(grant.starts_at_ms)),
        "expires_at": time_json(grant.expires_at_ms),
        "reset_every": match grant.reset_every { 0 => Value::Null, other => Value::String(reset_period_name(other).to_string()) },
        "next_reset": time_json(grant.next_reset_ms),
        "rollover_max": grant.rollover_max,
        "paid": grant.paid,
        "state": grant.state,
    })
}

pub fn account_json(account: &v1::Account) -> Value {
    json!({
        "account": account.id,
        "asset": account.asset,
        "status": account_status_name(account.status),
        "balance": account.balance,
        "available": account.available,
        "held": account.held,
        "debt": account.debt,
        "credit_limit": account.credit_limit,
        "list_price": account.list_price,
        "price_book": account.price_book,
        "thresholds": account.thresholds,
        "auto_recharge": account.auto_recharge.as_ref().map(|rule| json!({"below": rule.below, "amount": rule.amount})),
        "metadata": account.metadata.iter().map(|pair| (pair.key.clone(), Value::String(pair.value.clone()))).collect::<serde_json::Map<_, _>>(),
        "grants": account.grants.iter().map(grant_json).collect::<Vec<_>>(),
        "holds": account.holds.iter().map(|hold| json!({
            "id": hold.id,
            "amount": hold.amount,
            "remaining": hold.remaining,
            "captured": hold.captured,
            "expires_at": time_json(Some(hold.expires_at_ms)),
        })).collect::<Vec<_>>(),
        "as_of": time_json(Some(account.as_of_ms)),
    })
}

pub fn account_text(account: &v1::Account) -> String {
    let mut text = key_values(&[
        ("account", account.id.clone()),
        ("asset", account.asset.clone()),
        ("status", account_status_name(account.status).to_string()),
        ("balance", account.balance.clone()),
        ("available", account.available.clone()),
        ("held", account.held.clone()),
        ("debt", account.debt.clone()),
        ("credit limit", account.credit_limit.clone()),
        (
            "price book",
            account.price_book.clone().unwrap_or_else(|| "-".into()),
        ),
        ("as of", time_text(Some(account.as_of_ms))),
    ]);
    text.push('\n');
    if account.grants.is_empty() {
        text.push_str("no grants\n");
    } else {
        let mut table = Table::new(&[
            "GRANT",
            "CATEGORY",
            "AMOUNT",
            "REMAINING",
            "PRIORITY",
            "STATE",
            "EXPIRES AT",
            "NEXT RESET",
        ]);
        for grant in &account.grants {
            table.row(vec![
                grant.id.clone(),
                grant_category_name(grant.category).to_string(),
                grant.amount.clone(),
                grant.remaining.clone(),
                grant.priority.to_string(),
                grant.state.clone(),
                time_text(grant.expires_at_ms),
                time_text(grant.next_reset_ms),
            ]);
        }
        text.push_str(&table.render());
    }
    if !account.holds.is_empty() {
        text.push('\n');
        let mut table = Table::new(&["HOLD", "AMOUNT", "REMAINING", "CAPTURED", "EXPIRES AT"]);
        for hold in &account.holds {
            table.row(vec![
                hold.id.clone(),
                hold.amount.clone(),
                hold.remaining.clone(),
                hold.captured.clone(),
                time_text(Some(hold.expires_at_ms)),
            ]);
        }
        text.push_str(&table.render());
    }
    text
}

/// The `usage record` object: `outcome`, `event_id`, and the settlement or the reason.
pub fn usage_json(event_id: &str, outcome: &UsageOutcome) -> Value {
    match outcome {
        UsageOutcome::Settled(settlement) | UsageOutcome::Duplicate(settlement) => json!({
            "outcome": outcome.kind(),
            "event_id": settlement.event_id,
            "account": settlement.account,
            "charged": settlement.charged.to_string(),
            "balance_after": settlement.balance_after.to_string(),
            "drawdown": settlement.drawdown.iter().map(|draw| json!({"grant": draw.grant_id, "amount": draw.amount.to_string()})).collect::<Vec<_>>(),
            "debt_created": settlement.debt_created.to_string(),
            "from_hold": settlement.from_hold.to_string(),
            "revenue": settlement.revenue.to_string(),
            "cost": settlement.cost.to_string(),
            "margin": settlement.margin.to_string(),
            "price_book": settlement.price_book,
            "price_version": settlement.price_version,
            "settled_at": time_json(Some(settlement.settled_at_ms)),
        }),
        UsageOutcome::Conflict { account, event_id } => json!({
            "outcome": "conflict",
            "event_id": event_id,
            "account": account,
            "reason": "conflict",
            "message": format!("event {event_id} was already settled on {account} with different content; nothing changed"),
        }),
        UsageOutcome::Rejected(rejection) => json!({
            "outcome": "rejected",
            "event_id": event_id,
            "reason": rejection.code.as_str(),
            "message": rejection.message,
            "details": rejection.details,
        }),
    }
}

pub fn usage_text(event_id: &str, outcome: &UsageOutcome) -> String {
    match outcome {
        UsageOutcome::Settled(settlement) | UsageOutcome::Duplicate(settlement) => {
            let drawdown: Vec<String> = settlement
                .drawdown
                .iter()
                .map(|draw| format!("{} {}", draw.grant_id, draw.amount))
                .collect();
            let version = match &settlement.price_book {
                Some(book) => format!("{book} v{}", settlement.price_version),
                None => "-".to_string(),
            };
            let mut pairs = vec![
                ("outcome", outcome.kind().to_string()),
                ("event id", settlement.event_id.clone()),
                ("account", settlement.account.clone()),
                ("charged", settlement.charged.to_string()),
                ("balance after", settlement.balance_after.to_string()),
                ("drawdown", or_dash(&drawdown.join(", "))),
            ];
            if !settlement.debt_created.is_zero() {
                pairs.push(("debt created", settlement.debt_created.to_string()));
            }
            if !settlement.from_hold.is_zero() {
                pairs.push(("from hold", settlement.from_hold.to_string()));
            }
            pairs.extend([
                ("revenue", settlement.revenue.to_string()),
                ("cost", settlement.cost.to_string()),
                ("margin", settlement.margin.to_string()),
                ("price", version),
            ]);
            if matches!(outcome, UsageOutcome::Duplicate(_)) {
                pairs.push((
                    "note",
                    "already settled before: this is the original result; nothing changed"
                        .to_string(),
                ));
            }
            key_values(&pairs)
        }
        UsageOutcome::Conflict { account, event_id } => key_values(&[
            ("outcome", "conflict".to_string()),
            ("event id", event_id.clone()),
            (
                "reason",
                format!("event {event_id} was already settled on {account} with different content; nothing changed"),
            ),
        ]),
        UsageOutcome::Rejected(rejection) => {
            let mut pairs = vec![
                ("outcome", "rejected".to_string()),
                ("event id", event_id.to_string()),
                ("reason", rejection.code.as_str().to_string()),
                ("message", rejection.message.clone()),
            ];
            let details: Vec<String> = rejection
                .details
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            if !details.is_empty() {
                pairs.push(("details", details.join(" ")));
            }
            key_values(&pairs)
        }
    }
}

pub fn report_json(report: &v1::Report) -> Value {
    json!({
        "account": report.account,
        "month": report.month,
        "charged": report.charged.iter().map(|a| json!({"asset": a.asset, "amount": a.amount})).collect::<Vec<_>>(),
        "revenue": report.revenue,
        "cost": report.cost,
        "margin": report.margin,
        "breakage": report.breakage,
        "granted": report.granted.iter().map(|g| json!({"category": grant_category_name(g.category), "asset": g.asset, "amount": g.amount})).collect::<Vec<_>>(),
        "events": report.events,
        "meters": report.meters.iter().map(|m| json!({
            "meter": m.meter, "asset": m.asset, "quantity": m.quantity, "charged": m.charged,
            "revenue": m.revenue, "cost": m.cost, "margin": m.margin, "events": m.events,
        })).collect::<Vec<_>>(),
    })
}

pub fn report_text(report: &v1::Report) -> String {
    let charged: Vec<String> = report
        .charged
        .iter()
        .map(|a| format!("{} {}", a.amount, a.asset))
        .collect();
    let granted: Vec<String> = report
        .granted
        .iter()
        .map(|g| {
            format!(
                "{} {} {}",
                grant_category_name(g.category),
                g.amount,
                g.asset
            )
        })
        .collect();
    let mut text = key_values(&[
        (
            "scope",
            report
                .account
                .clone()
                .unwrap_or_else(|| "whole ledger".to_string()),
        ),
        (
            "month",
            report
                .month
                .clone()
                .unwrap_or_else(|| "all time".to_string()),
        ),
        ("events", report.events.to_string()),
        ("charged", or_dash(&charged.join(", "))),
        ("revenue", report.revenue.clone()),
        ("cost", report.cost.clone()),
        ("margin", report.margin.clone()),
        ("breakage", report.breakage.clone()),
        ("granted", or_dash(&granted.join(", "))),
    ]);
    if !report.meters.is_empty() {
        text.push('\n');
        let mut table = Table::new(&[
            "METER", "ASSET", "EVENTS", "QUANTITY", "CHARGED", "REVENUE", "COST", "MARGIN",
        ]);
        for m in &report.meters {
            table.row(vec![
                m.meter.clone(),
                m.asset.clone(),
                m.events.to_string(),
                m.quantity.clone(),
                m.charged.clone(),
                m.revenue.clone(),
                m.cost.clone(),
                m.margin.clone(),
            ]);
        }
        text.push_str(&table.render());
    }
    text
}

pub fn journal_json(entry: &v1::JournalEntry) -> Value {
    json!({
        "seq": entry.seq,
        "at": time_json(Some(entry.at_ms)),
        "account": entry.account,
        "kind": entry.kind,
        "grant": entry.grant_id,
        "event_id": entry.event_id,
        "reason": entry.reason,
        "revenue": entry.revenue,
        "cost": entry.cost,
        "postings": entry.postings.iter().map(|p| {
            let book = p.book.clone().unwrap_or_default();
            json!({"book": book.kind, "account": book.account, "grant": book.grant_id, "asset": p.asset, "amount": p.amount})
        }).collect::<Vec<_>>(),
    })
}

/// The amount this entry moved on the account's own grant books (its balance change).
/// The sum of the entry's postings to the account's own books of `kind` (`customer_grant`:
/// its grants; `receivable`: its debt, negative as debt grows).
fn own_book_change(entry: &v1::JournalEntry, kind: &str) -> tally_core::Amount {
    let mut total = tally_core::Amount::ZERO;
    for posting in &entry.postings {
        let Some(book) = &posting.book else { continue };
        if book.kind == kind && book.account.as_deref() == Some(entry.account.as_str()) {
            if let Ok(amount) = tally_core::Amount::parse("amount", &posting.amount) {
                total = total.checked_add(amount).unwrap_or(total);
            }
        }
    }
    total
}

/// How the entry changed the account's debt: the opposite of its receivable postings.
fn debt_change(entry: &v1::JournalEntry) -> tally_core::Amount {
    let receivable = own_book_change(entry, "receivable");
    if receivable.is_zero() {
        tally_core::Amount::ZERO
    } else {
        -receivable
    }
}

pub fn journal_table(entries: &[v1::JournalEntry]) -> String {
    let mut table = Table::new(&[
        "SEQ",
        "AT",
        "KIND",
        "GRANT/EVENT",
        "GRANTS +/-",
        "DEBT +/-",
        "REVENUE",
        "COST",
        "REASON",
    ]);
    for entry in entries {
        let subject = entry
            .event_id
            .clone()
            .or_else(|| entry.grant_id.clone())
            .unwrap_or_else(|| "-".into());
        table.row(vec![
            entry.seq.to_string(),
            time_text(Some(entry.at_ms)),
            entry.kind.clone(),
            subject,
            own_book_change(entry, "customer_grant").to_string(),
            // The receivable grows (negative postings) as debt does.
            debt_change(entry).to_string(),
            entry.revenue.clone(),
            entry.cost.clone(),
            entry.reason.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table.render()
}

fn event_detail(event: &v1::LedgerEvent) -> (Value, String) {
    use v1::ledger_event::Detail;
    match &event.detail {
        Some(Detail::BalanceLow(d)) => (
            json!({"threshold": d.threshold, "balance": d.balance}),
            format!("balance {} below threshold {}", d.balance, d.threshold),
        ),
        Some(Detail::BalanceDepleted(d)) => (
            json!({"balance": d.balance}),
            format!("balance {}", d.balance),
        ),
        Some(Detail::BalanceRecovered(d)) => (
            json!({"threshold": d.threshold, "balance": d.balance}),
            format!("balance {} back above {}", d.balance, d.threshold),
        ),
        Some(Detail::RechargeRequested(d)) => (
            json!({"amount": d.amount, "balance": d.balance}),
            format!("recharge {} (balance {})", d.amount, d.balance),
        ),
        Some(Detail::GrantExpired(d)) => (
            json!({"grant": d.grant_id, "expired": d.expired}),
            format!("grant {} expired {}", d.grant_id, d.expired),
        ),
        Some(Detail::HoldExpired(d)) => (
            json!({"hold": d.hold_id, "released": d.released}),
            format!("hold {} released {}", d.hold_id, d.released),
        ),
        None => (json!({}), String::new()),
    }
}

pub fn event_json(event: &v1::LedgerEvent) -> Value {
    json!({
        "seq": event.seq,
        "at": time_json(Some(event.at_ms)),
        "account": event.account,
        "kind": event.kind,
        "detail": event_detail(event).0,
    })
}

pub fn event_row(event: &v1::LedgerEvent) -> Vec<String> {
    vec![
        event.seq.to_string(),
        time_text(Some(event.at_ms)),
        event.account.clone(),
        event.kind.clone(),
        event_detail(event).1,
    ]
}

pub const EVENT_HEADERS: [&str; 5] = ["SEQ", "AT", "ACCOUNT", "KIND", "DETAIL"];

#[cfg(test)]
mod tests {
    use super::*;

    fn posting(kind: &str, account: &str, amount: &str) -> v1::Posting {
        v1::Posting {
            book: Some(v1::Book {
                kind: kind.to_string(),
                account: Some(account.to_string()),
                grant_id: None,
            }),
            asset: "CREDITS".to_string(),
            amount: amount.to_string(),
        }
    }

    /// A usage event drawn partly from a grant and partly into debt shows both in the
    /// history table (the debt used to be visible only in the JSON postings).
    #[test]
    fn history_shows_grant_and_debt_changes() {
        let entry = v1::JournalEntry {
            seq: 7,
            account: "bob".to_string(),
            kind: "usage".to_string(),
            event_id: Some("e1".to_string()),
            postings: vec![
                posting("customer_grant", "bob", "-5"),
                posting("receivable", "bob", "-19"),
                posting("customer_grant", "alice", "-100"),
            ],
            ..Default::default()
        };
        assert_eq!(own_book_change(&entry, "customer_grant").to_string(), "-5");
        assert_eq!(debt_change(&entry).to_string(), "19");
        let table = journal_table(&[entry]);
        assert!(table.contains("DEBT +/-"), "{table}");
        let row = table.lines().nth(1).unwrap();
        assert!(row.contains("-5") && row.contains("19"), "{row}");
        let no_debt = v1::JournalEntry {
            account: "bob".to_string(),
            postings: vec![posting("customer_grant", "bob", "10")],
            ..Default::default()
        };
        assert_eq!(debt_change(&no_debt).to_string(), "0");
    }
}
