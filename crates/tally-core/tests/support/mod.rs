//! A tiny command language for ledger scenarios, shared by the scenario runner and the
//! property tests. One command per line; see `tests/scenarios/README.md`.

#![allow(dead_code)]

use tally_core::*;

pub fn amount(text: &str) -> Amount {
    Amount::parse("test", text).unwrap_or_else(|e| panic!("bad amount {text:?}: {e}"))
}

/// Parses a time: RFC 3339 UTC, or an offset from `base` like `+90s`, `+10m`, `+2h`, `+3d`.
pub fn time(text: &str, base: u64) -> u64 {
    if let Some(offset) = text.strip_prefix('+') {
        return base + duration_ms(offset);
    }
    parse_utc(text).unwrap_or_else(|| panic!("bad time {text:?}"))
}

pub fn duration_ms(text: &str) -> u64 {
    let (number, unit) = text.split_at(text.len() - 1);
    let number: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("bad duration {text:?}"));
    number
        * match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => panic!("bad duration unit {other:?}"),
        }
}

/// Splits `key=value` options from positional words.
pub struct Words<'a> {
    pub positional: Vec<&'a str>,
    pub options: Vec<(&'a str, &'a str)>,
}

impl<'a> Words<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut positional = Vec::new();
        let mut options = Vec::new();
        for word in text.split_whitespace() {
            match word.split_once('=') {
                Some((k, v)) => options.push((k, v)),
                None => positional.push(word),
            }
        }
        Words {
            positional,
            options,
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.options
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    pub fn dims(&self, reserved: &[&str]) -> Vec<(Key, String)> {
        let mut dims: Vec<(Key, String)> = self
            .options
            .iter()
            .filter(|(k, _)| !reserved.contains(k))
            .map(|(k, v)| (Key::new(*k).unwrap(), v.to_string()))
            .collect();
        dims.sort();
        dims
    }
}

fn rate(text: &str) -> Rate {
    // meter[k=v,k=v] MODEL ARGS...
    let mut parts = text.split_whitespace();
    let head = parts.next().expect("rate needs a meter");
    let (meter, dims) = match head.split_once('[') {
        Some((meter, rest)) => {
            let inner = rest.strip_suffix(']').expect("closing ]");
            let mut dims: Vec<(Key, String)> = inner
                .split(',')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("k=v");
                    (Key::new(k).unwrap(), v.to_string())
                })
                .collect();
            dims.sort();
            (meter, dims)
        }
        None => (head, Vec::new()),
    };
    let model_name = parts.next().expect("rate needs a model");
    let args: Vec<&str> = parts.collect();
    let joined = args.join(" ");
    let words = Words::new(&joined);
    let per = amount(words.get("per").unwrap_or("1"));
    let model = match model_name {
        "per_unit" => RateModel::PerUnit {
            unit_price: amount(words.positional[0]),
            per,
        },
        "package" => RateModel::Package {
            size: amount(words.positional[0]),
            price: amount(words.positional[1]),
        },
        "flat" => RateModel::Flat {
            amount: amount(words.positional[0]),
        },
        "graduated" => RateModel::Graduated {
            tiers: words.positional[0]
                .split(',')
                .map(|tier| {
                    let (up_to, price) = tier.split_once(':').expect("up_to:price");
                    Tier {
                        up_to: (up_to != "*").then(|| amount(up_to)),
                        unit_price: amount(price),
                    }
                })
                .collect(),
            per,
        },
        other => panic!("unknown rate model {other}"),
    };
    Rate {
        meter: Meter::new(meter).unwrap(),
        dimensions: dims,
        model,
    }
}

pub fn usage_event(words: &Words<'_>, now: u64) -> UsageEvent {
    // usage ACCOUNT EVENT METER QTY [k=v].. [cost=] [hold=] [occurred=]
    UsageEvent {
        account: AccountId::new(words.positional[1]).unwrap(),
        event_id: EventId::new(words.positional[2]).unwrap(),
        meter: Meter::new(words.positional[3]).unwrap(),
        quantity: Amount::parse("quantity", words.positional[4]).unwrap(),
        dimensions: words.dims(&["cost", "hold", "occurred"]).into(),
        occurred_at: words.get("occurred").map_or(now, |t| time(t, now)),
        cost: words.get("cost").map(amount),
        hold: words.get("hold").map(|h| HoldId::new(h).unwrap()),
    }
}

/// Parses one command line into commands (a `repeat` line gives many).
pub fn commands(line: &str, now: u64) -> Vec<Command> {
    let words = Words::new(line);
    let p = &words.positional;
    let account = |i: usize| AccountId::new(p[i]).unwrap();
    let command = match p[0] {
        "init" => Command::Init(LedgerConfig {
            reporting_currency: AssetCode::new(p[1]).unwrap(),
            reporting_scale: p[2].parse().unwrap(),
            dedup_window_ms: words
                .get("window")
                .map_or(DEDUP_WINDOW_MS_DEFAULT, duration_ms),
        }),
        "asset" => Command::CreateAsset(AssetSpec {
            code: AssetCode::new(p[1]).unwrap(),
            scale: p[2].parse().unwrap(),
        }),
        "account" => Command::CreateAccount(AccountSpec {
            id: account(1),
            asset: AssetCode::new(p[2]).unwrap(),
            price_book: words.get("book").map(|b| BookId::new(b).unwrap()),
            credit_limit: words.get("limit").map(amount),
            list_price: words.get("list").map(amount),
            metadata: Vec::new(),
            thresholds: words
                .get("thresholds")
                .map(|t| t.split(',').map(amount).collect())
                .unwrap_or_default(),
            auto_recharge: words.get("recharge").map(|r| {
                let (below, amount_text) = r.split_once(':').unwrap();
                AutoRecharge {
                    below: amount(below),
                    amount: amount(amount_text),
                }
            }),
        }),
        "update" => Command::UpdateAccount(AccountUpdate {
            account: account(1),
            price_book: words.get("book").map(|b| Some(BookId::new(b).unwrap())),
            credit_limit: words.get("limit").map(amount),
            list_price: words.get("list").map(amount),
            metadata: None,
            thresholds: words
                .get("thresholds")
                .map(|t| t.split(',').map(amount).collect()),
            // `recharge=5:20` sets the rule, `recharge=none` clears it.
            auto_recharge: words.get("recharge").map(|r| {
                r.split_once(':').map(|(below, amount_text)| AutoRecharge {
                    below: amount(below),
                    amount: amount(amount_text),
                })
            }),
        }),
        "freeze" | "unfreeze" | "close" => Command::SetAccountStatus {
            account: account(1),
            status: match p[0] {
                "freeze" => AccountStatus::Frozen,
                "unfreeze" => AccountStatus::Active,
                _ => AccountStatus::Closed,
            },
        },
        "grant" => Command::AddGrant(GrantSpec {
            account: account(1),
            id: GrantId::new(p[2]).unwrap(),
            category: match p[3] {
                "allowance" => GrantCategory::Allowance,
                "promotional" => GrantCategory::Promotional,
                "purchased" => GrantCategory::Purchased,
                other => panic!("unknown category {other}"),
            },
            amount: Amount::parse("amount", p[4]).unwrap(),
            priority: words.get("prio").map(|v| v.parse().unwrap()),
            starts_at: words.get("starts").map(|t| time(t, now)),
            expires_at: words.get("expires").map(|t| time(t, now)),
            reset_every: words.get("reset").map(|r| match r {
                "day" => ResetPeriod::Day,
                "week" => ResetPeriod::Week,
                "month" => ResetPeriod::Month,
                other => panic!("bad reset {other}"),
            }),
            rollover_max: words.get("rollover").map(amount),
            paid: words.get("paid").map(amount),
        }),
        "void" => Command::VoidGrant {
            account: account(1),
            grant: GrantId::new(p[2]).unwrap(),
            reason: p[3..].join(" "),
        },
        "prices" | "costs" => {
            // prices BOOK ASSET [from=T] : RATE ; RATE
            let (head, rates_text) = line.split_once(" : ").expect("prices line needs ' : '");
            let head_words = Words::new(head);
            let rates = rates_text.split(';').map(rate).collect();
            let effective_from = head_words.get("from").map(|t| time(t, now));
            if p[0] == "prices" {
                Command::PublishPrices(PriceBookVersionSpec {
                    book: BookId::new(head_words.positional[1]).unwrap(),
                    asset: AssetCode::new(head_words.positional[2]).unwrap(),
                    effective_from,
                    rates,
                })
            } else {
                Command::PublishCosts(CostBookVersionSpec {
                    effective_from,
                    rates,
                })
            }
        }
        "usage" => Command::Usage(usage_event(&words, now)),
        "batch" | "batch_atomic" => {
            // batch ACCOUNT METER ID:QTY ID:QTY ...
            let events = p[3..]
                .iter()
                .map(|item| {
                    let (id, qty) = item.split_once(':').unwrap();
                    UsageEvent {
                        account: account(1),
                        event_id: EventId::new(id).unwrap(),
                        meter: Meter::new(p[2]).unwrap(),
                        quantity: amount(qty),
                        dimensions: words.dims(&[]).into(),
                        occurred_at: now,
                        cost: None,
                        hold: None,
                    }
                })
                .collect();
            Command::UsageBatch {
                events,
                atomic: p[0] == "batch_atomic",
            }
        }
        "authorize" => Command::Authorize(HoldSpec {
            account: account(1),
            id: HoldId::new(p[2]).unwrap(),
            amount: amount(p[3]),
            expires_in_ms: duration_ms(p[4]),
        }),
        "release" => Command::Release {
            account: account(1),
            hold: HoldId::new(p[2]).unwrap(),
        },
        "tick" => Command::Tick,
        "repeat" => {
            // repeat N ACCOUNT PREFIX METER QTY
            let count: usize = p[1].parse().unwrap();
            return (0..count)
                .map(|i| {
                    Command::Usage(UsageEvent {
                        account: account(2),
                        event_id: EventId::new(format!("{}-{i}", p[3])).unwrap(),
                        meter: Meter::new(p[4]).unwrap(),
                        quantity: amount(p[5]),
                        dimensions: words.dims(&[]).into(),
                        occurred_at: now,
                        cost: None,
                        hold: None,
                    })
                })
                .collect();
        }
        other => panic!("unknown command {other:?}"),
    };
    vec![command]
}
