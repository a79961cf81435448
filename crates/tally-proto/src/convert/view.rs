//! Core views, journal entries and ledger events -> wire messages.

use tally_core::{
    AccountStatus, AccountView, AssetView, Book, GrantCategory, GrantView, HoldView, JournalEntry,
    JournalKind, Key, LedgerEvent, LedgerEventKind, MeterReportView, PriceVersionView, Rate,
    RateModel, ReportView, ResetPeriod,
};

use super::fields::{amount_text, month_text};
use crate::v1;

pub fn asset(view: &AssetView) -> v1::Asset {
    v1::Asset {
        code: view.code.to_string(),
        scale: view.scale,
        is_reporting_currency: view.is_reporting_currency,
    }
}

pub fn grant_category(category: GrantCategory) -> v1::GrantCategory {
    match category {
        GrantCategory::Allowance => v1::GrantCategory::Allowance,
        GrantCategory::Promotional => v1::GrantCategory::Promotional,
        GrantCategory::Purchased => v1::GrantCategory::Purchased,
    }
}

fn account_status(status: AccountStatus) -> v1::AccountStatus {
    match status {
        AccountStatus::Active => v1::AccountStatus::Active,
        AccountStatus::Frozen => v1::AccountStatus::Frozen,
        AccountStatus::Closed => v1::AccountStatus::Closed,
    }
}

fn reset_period(period: Option<ResetPeriod>) -> v1::ResetPeriod {
    match period {
        None => v1::ResetPeriod::Unspecified,
        Some(ResetPeriod::Day) => v1::ResetPeriod::Day,
        Some(ResetPeriod::Week) => v1::ResetPeriod::Week,
        Some(ResetPeriod::Month) => v1::ResetPeriod::Month,
    }
}

fn pairs(pairs: &[(Key, String)]) -> Vec<v1::KeyValue> {
    pairs
        .iter()
        .map(|(key, value)| v1::KeyValue {
            key: key.to_string(),
            value: value.clone(),
        })
        .collect()
}

fn grant(view: &GrantView) -> v1::Grant {
    v1::Grant {
        id: view.id.to_string(),
        category: grant_category(view.category) as i32,
        amount: amount_text(view.amount),
        remaining: amount_text(view.remaining),
        priority: u32::from(view.priority),
        starts_at_ms: view.starts_at,
        expires_at_ms: view.expires_at,
        reset_every: reset_period(view.reset_every) as i32,
        next_reset_ms: view.next_reset,
        rollover_max: view.rollover_max.map(amount_text),
        paid: amount_text(view.paid),
        state: view.state.clone(),
    }
}

fn hold(view: &HoldView) -> v1::Hold {
    v1::Hold {
        id: view.id.to_string(),
        amount: amount_text(view.amount),
        remaining: amount_text(view.remaining),
        captured: amount_text(view.captured),
        expires_at_ms: view.expires_at,
    }
}

pub fn account(view: &AccountView) -> v1::Account {
    v1::Account {
        id: view.id.to_string(),
        asset: view.asset.to_string(),
        scale: view.scale,
        status: account_status(view.status) as i32,
        price_book: view.price_book.as_ref().map(ToString::to_string),
        credit_limit: amount_text(view.credit_limit),
        list_price: amount_text(view.list_price),
        balance: amount_text(view.balance),
        available: amount_text(view.available),
        held: amount_text(view.held),
        debt: amount_text(view.debt),
        metadata: pairs(&view.metadata),
        thresholds: view.thresholds.iter().copied().map(amount_text).collect(),
        auto_recharge: view.auto_recharge.as_ref().map(|rule| v1::AutoRecharge {
            below: amount_text(rule.below),
            amount: amount_text(rule.amount),
        }),
        grants: view.grants.iter().map(grant).collect(),
        holds: view.holds.iter().map(hold).collect(),
        as_of_ms: view.as_of,
    }
}

pub fn rate(rate: &Rate) -> v1::Rate {
    use v1::rate::Model;
    let model = match &rate.model {
        RateModel::PerUnit { unit_price, per } => Model::PerUnit(v1::PerUnit {
            unit_price: amount_text(*unit_price),
            per: amount_text(*per),
        }),
        RateModel::Package { size, price } => Model::Package(v1::Package {
            size: amount_text(*size),
            price: amount_text(*price),
        }),
        RateModel::Graduated { tiers, per } => Model::Graduated(v1::Graduated {
            tiers: tiers
                .iter()
                .map(|tier| v1::Tier {
                    up_to: tier.up_to.map(amount_text),
                    unit_price: amount_text(tier.unit_price),
                })
                .collect(),
            per: amount_text(*per),
        }),
        RateModel::Flat { amount } => Model::Flat(v1::Flat {
            amount: amount_text(*amount),
        }),
    };
    v1::Rate {
        meter: rate.meter.to_string(),
        dimensions: pairs(&rate.dimensions),
        model: Some(model),
    }
}

pub fn price_version(view: &PriceVersionView) -> v1::PriceVersion {
    v1::PriceVersion {
        book: view.book.as_ref().map(ToString::to_string),
        asset: view.asset.to_string(),
        version: view.version,
        effective_from_ms: view.effective_from,
        rates: view.rates.iter().map(rate).collect(),
    }
}

fn meter_report(view: &MeterReportView) -> v1::MeterReport {
    v1::MeterReport {
        meter: view.meter.to_string(),
        asset: view.asset.to_string(),
        quantity: amount_text(view.quantity),
        charged: amount_text(view.charged),
        revenue: amount_text(view.revenue),
        cost: amount_text(view.cost),
        margin: amount_text(view.margin),
        events: view.events,
    }
}

pub fn report(view: &ReportView) -> v1::Report {
    v1::Report {
        account: view.account.as_ref().map(ToString::to_string),
        month: view.month.map(month_text),
        charged: view
            .charged
            .iter()
            .map(|(asset, amount)| v1::AssetAmount {
                asset: asset.to_string(),
                amount: amount_text(*amount),
            })
            .collect(),
        revenue: amount_text(view.revenue),
        cost: amount_text(view.cost),
        margin: amount_text(view.margin),
        breakage: amount_text(view.breakage),
        granted: view
            .granted
            .iter()
            .map(|(category, asset, amount)| v1::CategoryAmount {
                category: grant_category(*category) as i32,
                asset: asset.to_string(),
                amount: amount_text(*amount),
            })
            .collect(),
        events: view.events,
        meters: view.meters.iter().map(meter_report).collect(),
    }
}

fn book(book: &Book) -> v1::Book {
    let (kind, account, grant_id) = match book {
        Book::CustomerGrant { account, grant } => (
            "customer_grant",
            Some(account.to_string()),
            Some(grant.to_string()),
        ),
        Book::Receivable { account } => ("receivable", Some(account.to_string()), None),
        Book::UsageRevenue => ("usage_revenue", None, None),
        Book::Breakage => ("breakage", None, None),
        Book::PromotionalExpense => ("promotional_expense", None, None),
        Book::Funding => ("funding", None, None),
    };
    v1::Book {
        kind: kind.to_string(),
        account,
        grant_id,
    }
}

pub fn journal_entry(entry: &JournalEntry) -> v1::JournalEntry {
    let (grant_id, event_id, reason) = match &entry.kind {
        JournalKind::GrantAdded { grant }
        | JournalKind::GrantExpired { grant }
        | JournalKind::AllowanceReset { grant }
        | JournalKind::DebtRepaid { grant } => (Some(grant.to_string()), None, None),
        JournalKind::GrantVoided { grant, reason } => {
            (Some(grant.to_string()), None, Some(reason.clone()))
        }
        JournalKind::Usage { event_id } => (None, Some(event_id.to_string()), None),
    };
    v1::JournalEntry {
        seq: entry.seq,
        at_ms: entry.at_ms,
        account: entry.account.to_string(),
        kind: entry.kind.name().to_string(),
        grant_id,
        event_id,
        reason,
        postings: entry
            .postings
            .iter()
            .map(|posting| v1::Posting {
                book: Some(book(&posting.book)),
                asset: posting.asset.to_string(),
                amount: amount_text(posting.amount),
            })
            .collect(),
        revenue: amount_text(entry.revenue),
        cost: amount_text(entry.cost),
    }
}

pub fn ledger_event(event: &LedgerEvent) -> v1::LedgerEvent {
    use v1::ledger_event::Detail;
    let detail = match &event.kind {
        LedgerEventKind::BalanceLow { threshold, balance } => Detail::BalanceLow(v1::BalanceLow {
            threshold: amount_text(*threshold),
            balance: amount_text(*balance),
        }),
        LedgerEventKind::BalanceDepleted { balance } => {
            Detail::BalanceDepleted(v1::BalanceDepleted {
                balance: amount_text(*balance),
            })
        }
        LedgerEventKind::BalanceRecovered { threshold, balance } => {
            Detail::BalanceRecovered(v1::BalanceRecovered {
                threshold: amount_text(*threshold),
                balance: amount_text(*balance),
            })
        }
        LedgerEventKind::RechargeRequested { amount, balance } => {
            Detail::RechargeRequested(v1::RechargeRequested {
                amount: amount_text(*amount),
                balance: amount_text(*balance),
            })
        }
        LedgerEventKind::GrantExpired { grant, expired } => {
            Detail::GrantExpired(v1::GrantExpired {
                grant_id: grant.to_string(),
                expired: amount_text(*expired),
            })
        }
        LedgerEventKind::HoldExpired { hold, released } => Detail::HoldExpired(v1::HoldExpired {
            hold_id: hold.to_string(),
            released: amount_text(*released),
        }),
    };
    v1::LedgerEvent {
        seq: event.seq,
        at_ms: event.at_ms,
        account: event.account.to_string(),
        kind: event.kind.name().to_string(),
        detail: Some(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::ToCommand;
    use tally_core::{
        AccountId, Amount, AssetCode, BookId, Command, GrantId, Meter, Month, Posting, Tier,
    };

    fn amount(text: &str) -> Amount {
        Amount::parse("test", text).unwrap()
    }

    #[test]
    fn rates_round_trip_through_the_wire() {
        let rates = vec![
            Rate {
                meter: Meter::new("tokens").unwrap(),
                dimensions: vec![(Key::new("model").unwrap(), "m1".to_string())],
                model: RateModel::PerUnit {
                    unit_price: amount("0.002"),
                    per: amount("1000"),
                },
            },
            Rate {
                meter: Meter::new("images").unwrap(),
                dimensions: vec![],
                model: RateModel::Graduated {
                    tiers: vec![
                        Tier {
                            up_to: Some(amount("100")),
                            unit_price: amount("0.1"),
                        },
                        Tier {
                            up_to: None,
                            unit_price: amount("0.05"),
                        },
                    ],
                    per: Amount::ONE,
                },
            },
            Rate {
                meter: Meter::new("calls").unwrap(),
                dimensions: vec![],
                model: RateModel::Package {
                    size: amount("100"),
                    price: amount("1"),
                },
            },
            Rate {
                meter: Meter::new("seats").unwrap(),
                dimensions: vec![],
                model: RateModel::Flat {
                    amount: amount("5"),
                },
            },
        ];
        let view = PriceVersionView {
            book: Some(BookId::new("standard").unwrap()),
            asset: AssetCode::new("CREDITS").unwrap(),
            version: 3,
            effective_from: 1_000,
            rates: rates.clone(),
        };
        let wire = price_version(&view);
        assert_eq!(wire.version, 3);
        let request = v1::PublishPricesRequest {
            book: wire.book.clone().unwrap(),
            asset: wire.asset.clone(),
            effective_from_ms: Some(wire.effective_from_ms),
            rates: wire.rates.clone(),
        };
        let Command::PublishPrices(spec) = request.to_command().unwrap() else {
            panic!()
        };
        assert_eq!(spec.rates, rates);
    }

    #[test]
    fn journal_and_events() {
        let entry = JournalEntry {
            seq: 9,
            at_ms: 5,
            account: AccountId::new("acme").unwrap(),
            kind: JournalKind::GrantVoided {
                grant: GrantId::new("g1").unwrap(),
                reason: "fraud".into(),
            },
            postings: vec![
                Posting {
                    book: Book::CustomerGrant {
                        account: AccountId::new("acme").unwrap(),
                        grant: GrantId::new("g1").unwrap(),
                    },
                    asset: AssetCode::new("USD").unwrap(),
                    amount: amount("-10"),
                },
                Posting {
                    book: Book::Funding,
                    asset: AssetCode::new("USD").unwrap(),
                    amount: amount("10"),
                },
            ],
            revenue: Amount::ZERO,
            cost: Amount::ZERO,
        };
        let wire = journal_entry(&entry);
        assert_eq!(wire.kind, "grant_voided");
        assert_eq!(wire.reason.as_deref(), Some("fraud"));
        assert_eq!(
            wire.postings[0].book.as_ref().unwrap().kind,
            "customer_grant"
        );
        assert_eq!(wire.postings[0].amount, "-10");
        assert_eq!(wire.postings[1].book.as_ref().unwrap().account, None);

        let event = LedgerEvent {
            seq: 4,
            at_ms: 6,
            account: AccountId::new("acme").unwrap(),
            kind: LedgerEventKind::BalanceLow {
                threshold: amount("100"),
                balance: amount("99.5"),
            },
        };
        let wire = ledger_event(&event);
        assert_eq!(wire.kind, "balance_low");
        assert_eq!(
            wire.detail,
            Some(v1::ledger_event::Detail::BalanceLow(v1::BalanceLow {
                threshold: "100".into(),
                balance: "99.5".into()
            }))
        );
    }

    #[test]
    fn report_month_and_amounts() {
        let view = ReportView {
            account: None,
            month: Some(Month {
                year: 2026,
                month: 3,
            }),
            charged: vec![(AssetCode::new("CREDITS").unwrap(), amount("1500"))],
            revenue: amount("1.5"),
            cost: amount("0.4"),
            margin: amount("1.1"),
            granted: vec![(
                GrantCategory::Purchased,
                AssetCode::new("CREDITS").unwrap(),
                amount("5000"),
            )],
            events: 3,
            ..Default::default()
        };
        let wire = report(&view);
        assert_eq!(wire.month.as_deref(), Some("2026-03"));
        assert_eq!(wire.charged[0].amount, "1500");
        assert_eq!(
            wire.granted[0].category,
            v1::GrantCategory::Purchased as i32
        );
        assert_eq!(wire.margin, "1.1");
        assert_eq!(wire.breakage, "0");
    }
}
