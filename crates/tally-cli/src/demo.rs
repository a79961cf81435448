//! `tally demo` (what `make demo` runs): the pitch against a running cluster. Creates customers
//! with a monthly allowance of 10,000 credits that resets plus a purchased top-up of 5,000, a
//! per-token price book for two models, streams usage with the provider's cost on every event,
//! publishes a price change half-way, and shows balances, revenue, cost and margin as it goes.

use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tally_client::{v1, Client, UsageOutcome};
use tally_core::Amount;

use crate::args::DemoArgs;
use crate::ledger::CommandResult;
use crate::output::{Failure, Output, Table};
use crate::usage::now_ms;

const ASSET: &str = "DEMO_CREDITS";
const ASSET_SCALE: u32 = 4;
const NAMES: [&str; 8] = [
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "piedpiper",
    "wonka",
    "stark",
];
/// Credits per token before and after the price change.
const SMALL_PRICE: &str = "0.002";
const LARGE_PRICE: &str = "0.01";
const LARGE_PRICE_RAISED: &str = "0.015";
/// What the model provider charges the operator per token, in USD.
const SMALL_PROVIDER_COST: &str = "0.000002";
const LARGE_PROVIDER_COST: &str = "0.00004";
/// Progress tables printed while streaming.
const SNAPSHOTS: u64 = 6;

fn rates(large_price: &str) -> Vec<v1::Rate> {
    [("small", SMALL_PRICE), ("large", large_price)]
        .iter()
        .map(|(model, price)| v1::Rate {
            meter: "tokens".into(),
            dimensions: vec![v1::KeyValue {
                key: "model".into(),
                value: model.to_string(),
            }],
            model: Some(v1::rate::Model::PerUnit(v1::PerUnit {
                unit_price: price.to_string(),
                per: "1".into(),
            })),
        })
        .collect()
}

struct Customer {
    account: String,
    weight: u64,
    sent: u64,
    rejected: u64,
}

fn amount(text: &str) -> Amount {
    Amount::parse("amount", text).unwrap_or(Amount::ZERO)
}

async fn snapshot(client: &Client, customers: &[Customer]) -> Result<Vec<Value>, Failure> {
    let mut rows = Vec::new();
    for customer in customers {
        let account = client.get_account(&customer.account).await?;
        let report = client.report(Some(&customer.account), None).await?;
        let remaining = |id: &str| {
            account
                .grants
                .iter()
                .find(|grant| grant.id == id)
                .map(|grant| grant.remaining.clone())
                .unwrap_or_default()
        };
        rows.push(json!({
            "account": customer.account,
            "events": report.events,
            "rejected": customer.rejected,
            "balance": account.balance,
            "allowance_remaining": remaining("monthly"),
            "topup_remaining": remaining("topup"),
            "revenue": report.revenue,
            "cost": report.cost,
            "margin": report.margin,
        }));
    }
    Ok(rows)
}

fn print_snapshot(title: &str, rows: &[Value]) {
    println!("\n{title}");
    let mut table = Table::new(&[
        "CUSTOMER",
        "EVENTS",
        "REJECTED",
        "BALANCE",
        "ALLOWANCE LEFT",
        "TOP-UP LEFT",
        "REVENUE USD",
        "COST USD",
        "MARGIN USD",
    ]);
    let mut totals = [Amount::ZERO; 3];
    for row in rows {
        let text = |key: &str| match &row[key] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        for (index, key) in ["revenue", "cost", "margin"].iter().enumerate() {
            totals[index] = totals[index]
                .checked_add(amount(&text(key)))
                .unwrap_or(totals[index]);
        }
        table.row(
            [
                "account",
                "events",
                "rejected",
                "balance",
                "allowance_remaining",
                "topup_remaining",
                "revenue",
                "cost",
                "margin",
            ]
            .iter()
            .map(|key| text(key))
            .collect(),
        );
    }
    table.row(vec![
        "TOTAL".into(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        totals[0].to_string(),
        totals[1].to_string(),
        totals[2].to_string(),
    ]);
    print!("{}", table.render());
}

pub async fn demo(client: &Client, out: Output, args: DemoArgs) -> CommandResult {
    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(now_ms());
    let run: u32 = rng.gen_range(0x1000..0xffff);
    let book = format!("demo-{run:x}-llm");
    let say = |text: String| {
        if !out.json {
            println!("{text}");
        }
    };

    client.create_asset(ASSET, ASSET_SCALE).await?;
    let published = client
        .publish_prices(v1::PublishPricesRequest {
            book: book.clone(),
            asset: ASSET.into(),
            effective_from_ms: None,
            rates: rates(LARGE_PRICE),
        })
        .await?;
    say(format!(
        "price book {book} v{}: small {SMALL_PRICE}, large {LARGE_PRICE} credits per token",
        published.version
    ));

    let mut customers = Vec::new();
    for index in 0..args.customers as usize {
        let name = NAMES[index % NAMES.len()];
        let account = format!("demo-{run:x}-{name}-{index}");
        client
            .create_account(v1::CreateAccountRequest {
                id: account.clone(),
                asset: ASSET.into(),
                price_book: Some(book.clone()),
                list_price: Some("0.01".into()),
                thresholds: vec!["2000".into()],
                ..Default::default()
            })
            .await?;
        client
            .add_grant(v1::AddGrantRequest {
                account: account.clone(),
                grant_id: "monthly".into(),
                category: v1::GrantCategory::Allowance as i32,
                amount: "10000".into(),
                reset_every: v1::ResetPeriod::Month as i32,
                paid: Some("100".into()),
                ..Default::default()
            })
            .await?;
        client
            .add_grant(v1::AddGrantRequest {
                account: account.clone(),
                grant_id: "topup".into(),
                category: v1::GrantCategory::Purchased as i32,
                amount: "5000".into(),
                paid: Some("60".into()),
                ..Default::default()
            })
            .await?;
        customers.push(Customer {
            account,
            // Heavier customers run through their allowance into the top-up, the heaviest
            // into a hard stop.
            weight: index as u64 + 1,
            sent: 0,
            rejected: 0,
        });
    }
    say(format!(
        "{} customers, each: monthly allowance 10000 credits (resets, paid $100) + purchased top-up 5000 (paid $60)",
        customers.len()
    ));
    say(format!(
        "streaming {} usage events in batches of {}, provider cost on every event...",
        args.events, args.batch
    ));

    let total_weight: u64 = customers.iter().map(|c| c.weight).sum();
    let snapshot_every = (args.events / SNAPSHOTS).max(1);
    let mut price_changed = false;
    let mut sent = 0u64;
    let mut settled = 0u64;
    let mut next_snapshot = snapshot_every;
    let mut snapshots = Vec::new();
    while sent < args.events {
        let count = args.batch.min(args.events - sent);
        let mut events = Vec::new();
        let mut owners = Vec::new();
        for offset in 0..count {
            let mut pick = rng.gen_range(0..total_weight);
            let index = customers
                .iter()
                .position(|customer| {
                    if pick < customer.weight {
                        true
                    } else {
                        pick -= customer.weight;
                        false
                    }
                })
                .unwrap_or(0);
            let large = rng.gen_bool(0.5);
            let tokens: u64 = rng.gen_range(200..3000);
            let provider_rate = if large {
                LARGE_PROVIDER_COST
            } else {
                SMALL_PROVIDER_COST
            };
            let cost = Amount::from_i64(tokens as i64)
                .checked_mul(amount(provider_rate))
                .unwrap_or(Amount::ZERO)
                .round_half_even(2);
            events.push(v1::UsageEvent {
                event_id: format!("demo-{run:x}-{}", sent + offset),
                account: customers[index].account.clone(),
                meter: "tokens".into(),
                quantity: tokens.to_string(),
                dimensions: vec![v1::KeyValue {
                    key: "model".into(),
                    value: if large { "large" } else { "small" }.into(),
                }],
                occurred_at_ms: now_ms(),
                cost: Some(cost.to_string()),
                hold_id: None,
            });
            owners.push(index);
        }
        let outcomes = client.record_usage_batch(events, false).await?;
        for (index, outcome) in owners.into_iter().zip(outcomes) {
            customers[index].sent += 1;
            match outcome.outcome {
                UsageOutcome::Settled(_) | UsageOutcome::Duplicate(_) => settled += 1,
                _ => customers[index].rejected += 1,
            }
        }
        sent += count;
        if !price_changed && sent >= args.events / 2 {
            price_changed = true;
            let published = client
                .publish_prices(v1::PublishPricesRequest {
                    book: book.clone(),
                    asset: ASSET.into(),
                    effective_from_ms: None,
                    rates: rates(LARGE_PRICE_RAISED),
                })
                .await?;
            say(format!(
                "\n*** price change after {sent} events: large model {LARGE_PRICE} -> {LARGE_PRICE_RAISED} credits per token ({book} v{}) ***",
                published.version
            ));
        }
        if sent >= next_snapshot || sent == args.events {
            next_snapshot += snapshot_every;
            let rows = snapshot(client, &customers).await?;
            if !out.json {
                print_snapshot(&format!("after {sent} events:"), &rows);
                if sent < args.events {
                    tokio::time::sleep(std::time::Duration::from_millis(args.pause)).await;
                }
            }
            snapshots.push(rows);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let rejected: u64 = customers.iter().map(|c| c.rejected).sum();
    if out.json {
        out.json(&json!({
            "run": format!("{run:x}"),
            "price_book": book,
            "events": sent,
            "settled": settled,
            "rejected": rejected,
            "seconds": format!("{seconds:.3}"),
            "customers": snapshots.pop().unwrap_or_default(),
        }));
    } else {
        let why = if rejected > 0 {
            " (insufficient funds: allowance and top-up used up)"
        } else {
            ""
        };
        println!("\n{sent} events in {seconds:.2} s: {settled} settled, {rejected} rejected{why}");
        if let Some(first) = customers.first() {
            println!(
                "try: tally account show {}    tally report {}    tally history {} --limit 5",
                first.account, first.account, first.account
            );
        }
    }
    Ok(0)
}
