//! Ledger commands other than usage: assets, accounts, grants, prices, holds, reports,
//! history and events.

use serde_json::json;
use tally_client::{v1, Client, ClientError};
use tally_proto::convert::{account_status_name, node_role_name};

use crate::args::{
    AccountCommand, AccountCreateArgs, AccountUpdateArgs, AssetCommand, Category, EventsArgs,
    GrantAddArgs, GrantCommand, HistoryArgs, HoldCommand, Period, PriceCommand, ReportArgs,
};
use crate::output::{key_values, time_json, time_text, Failure, Output, Table};
use crate::rates::{model_text, rate_json, read_rates_file};
use crate::views;

pub type CommandResult = Result<u8, Failure>;

fn log_index(write: &Option<v1::WriteInfo>) -> serde_json::Value {
    write
        .as_ref()
        .map(|w| json!(w.log_index))
        .unwrap_or(serde_json::Value::Null)
}

pub async fn asset(client: &Client, out: Output, command: AssetCommand) -> CommandResult {
    match command {
        AssetCommand::Create { code, scale } => {
            let reply = client.create_asset(&code, scale).await?;
            if out.json {
                out.json(&json!({"asset": code, "scale": scale, "already_existed": reply.already_existed, "log_index": log_index(&reply.write)}));
            } else if reply.already_existed {
                println!("asset {code} (scale {scale}) already existed; nothing changed");
            } else {
                println!("created asset {code} with scale {scale}");
            }
        }
        AssetCommand::List => {
            let assets = client.list_assets().await?;
            if out.json {
                out.json(&json!({"assets": assets.iter().map(|a| json!({"code": a.code, "scale": a.scale, "reporting_currency": a.is_reporting_currency})).collect::<Vec<_>>()}));
            } else {
                let mut table = Table::new(&["ASSET", "SCALE", "REPORTING CURRENCY"]);
                for a in &assets {
                    table.row(vec![
                        a.code.clone(),
                        a.scale.to_string(),
                        if a.is_reporting_currency { "yes" } else { "" }.to_string(),
                    ]);
                }
                print!("{}", table.render());
            }
        }
    }
    Ok(0)
}

fn create_account_request(args: &AccountCreateArgs) -> v1::CreateAccountRequest {
    v1::CreateAccountRequest {
        id: args.id.clone(),
        asset: args.asset.clone(),
        price_book: args.price_book.clone(),
        credit_limit: args.credit_limit.clone(),
        list_price: args.list_price.clone(),
        metadata: args
            .metadata
            .iter()
            .map(|(key, value)| v1::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        thresholds: args.thresholds.clone(),
        auto_recharge: match (&args.auto_recharge_below, &args.auto_recharge_amount) {
            (Some(below), Some(amount)) => Some(v1::AutoRecharge {
                below: below.clone(),
                amount: amount.clone(),
            }),
            _ => None,
        },
    }
}

fn update_account_request(args: &AccountUpdateArgs) -> Result<v1::UpdateAccountRequest, Failure> {
    use v1::update_account_request::{AutoRechargeChange, PriceBookChange};
    let request = v1::UpdateAccountRequest {
        account: args.id.clone(),
        price_book_change: match (&args.price_book, args.clear_price_book) {
            (Some(book), _) => Some(PriceBookChange::SetPriceBook(book.clone())),
            (None, true) => Some(PriceBookChange::ClearPriceBook(true)),
            (None, false) => None,
        },
        credit_limit: args.credit_limit.clone(),
        list_price: args.list_price.clone(),
        metadata: (!args.metadata.is_empty()).then(|| v1::KeyValueList {
            pairs: args
                .metadata
                .iter()
                .map(|(key, value)| v1::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        }),
        thresholds: if args.clear_thresholds {
            Some(v1::AmountList::default())
        } else {
            (!args.thresholds.is_empty()).then(|| v1::AmountList {
                amounts: args.thresholds.clone(),
            })
        },
        auto_recharge_change: match (
            &args.auto_recharge_below,
            &args.auto_recharge_amount,
            args.clear_auto_recharge,
        ) {
            (Some(below), Some(amount), _) => {
                Some(AutoRechargeChange::SetAutoRecharge(v1::AutoRecharge {
                    below: below.clone(),
                    amount: amount.clone(),
                }))
            }
            (_, _, true) => Some(AutoRechargeChange::ClearAutoRecharge(true)),
            _ => None,
        },
    };
    let unchanged = v1::UpdateAccountRequest {
        account: args.id.clone(),
        ..Default::default()
    };
    if request == unchanged {
        return Err(Failure::usage(
            "account update",
            "nothing to change; give at least one of --price-book, --clear-price-book, --credit-limit, --list-price, --threshold, --clear-thresholds, --auto-recharge-below/--auto-recharge-amount, --clear-auto-recharge, --metadata",
        ));
    }
    Ok(request)
}

pub async fn account(client: &Client, out: Output, command: AccountCommand) -> CommandResult {
    let (id, status) = match command {
        AccountCommand::Create(args) => {
            let reply = client.create_account(create_account_request(&args)).await?;
            if out.json {
                out.json(&json!({"account": args.id, "asset": args.asset, "already_existed": reply.already_existed, "log_index": log_index(&reply.write)}));
            } else if reply.already_existed {
                println!("account {} already existed; nothing changed", args.id);
            } else {
                println!("created account {} in {}", args.id, args.asset);
            }
            return Ok(0);
        }
        AccountCommand::Update(args) => {
            let request = update_account_request(&args)?;
            let reply = client.update_account(request).await?;
            let account = client.get_account(&args.id).await?;
            if out.json {
                let mut value = views::account_json(&account);
                value["log_index"] = log_index(&reply.write);
                out.json(&value);
            } else {
                println!("updated account {}\n", args.id);
                print!("{}", views::account_text(&account));
            }
            return Ok(0);
        }
        AccountCommand::Show { id } => {
            let account = client.get_account(&id).await?;
            if out.json {
                out.json(&views::account_json(&account));
            } else {
                print!("{}", views::account_text(&account));
            }
            return Ok(0);
        }
        AccountCommand::Freeze { id } => (id, v1::AccountStatus::Frozen),
        AccountCommand::Unfreeze { id } => (id, v1::AccountStatus::Active),
        AccountCommand::Close { id } => (id, v1::AccountStatus::Closed),
    };
    let reply = client.set_account_status(&id, status).await?;
    let status_name = account_status_name(status as i32);
    if out.json {
        out.json(
            &json!({"account": id, "status": status_name, "log_index": log_index(&reply.write)}),
        );
    } else {
        println!("account {id} is now {status_name}");
    }
    Ok(0)
}

fn add_grant_request(args: &GrantAddArgs) -> v1::AddGrantRequest {
    v1::AddGrantRequest {
        account: args.account.clone(),
        grant_id: args.id.clone(),
        category: match args.category {
            Category::Allowance => v1::GrantCategory::Allowance,
            Category::Promotional => v1::GrantCategory::Promotional,
            Category::Purchased => v1::GrantCategory::Purchased,
        } as i32,
        amount: args.amount.clone(),
        priority: args.priority,
        starts_at_ms: args.starts_at,
        expires_at_ms: args.expires_at,
        reset_every: match args.reset_every {
            None => v1::ResetPeriod::Unspecified,
            Some(Period::Day) => v1::ResetPeriod::Day,
            Some(Period::Week) => v1::ResetPeriod::Week,
            Some(Period::Month) => v1::ResetPeriod::Month,
        } as i32,
        rollover_max: args.rollover_max.clone(),
        paid: args.paid.clone(),
    }
}

pub async fn grant(client: &Client, out: Output, command: GrantCommand) -> CommandResult {
    match command {
        GrantCommand::Add(args) => {
            if matches!(args.category, Category::Purchased) && args.paid.is_none() {
                return Err(Failure::usage(
                    "--paid",
                    "is required for a purchased grant (what the customer paid, in the reporting currency)",
                ));
            }
            if args.reset_every.is_some() && !matches!(args.category, Category::Allowance) {
                return Err(Failure::usage(
                    "--reset-every",
                    "applies to allowances only",
                ));
            }
            let reply = client.add_grant(add_grant_request(&args)).await?;
            if out.json {
                out.json(&json!({
                    "account": args.account, "grant": args.id, "already_existed": reply.already_existed,
                    "debt_repaid": if reply.debt_repaid.is_empty() { serde_json::Value::Null } else { json!(reply.debt_repaid) },
                    "balance_after": if reply.balance_after.is_empty() { serde_json::Value::Null } else { json!(reply.balance_after) },
                    "log_index": log_index(&reply.write),
                }));
            } else if reply.already_existed {
                println!(
                    "grant {} on {} already existed; nothing changed",
                    args.id, args.account
                );
            } else {
                print!(
                    "{}",
                    key_values(&[
                        (
                            "granted",
                            format!("{} to {} as {}", args.amount, args.account, args.id)
                        ),
                        ("debt repaid", reply.debt_repaid.clone()),
                        ("balance after", reply.balance_after.clone()),
                    ])
                );
            }
        }
        GrantCommand::Void {
            account,
            id,
            reason,
        } => {
            let reply = client.void_grant(&account, &id, &reason).await?;
            if out.json {
                let ended_as = (!reply.ended_as.is_empty()).then_some(&reply.ended_as);
                out.json(&json!({"account": account, "grant": id, "voided": reply.voided, "balance_after": reply.balance_after, "already_ended": reply.already_ended, "ended_as": ended_as, "log_index": log_index(&reply.write)}));
            } else if reply.already_ended {
                // A retry whose first answer was lost, or a grant that expired first: nothing
                // was left to void, nothing changed.
                let how = if reply.ended_as.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", reply.ended_as)
                };
                println!(
                    "grant {id} on {account} had already ended{how}; nothing changed (balance {})",
                    reply.balance_after
                );
            } else {
                print!(
                    "{}",
                    key_values(&[
                        (
                            "voided",
                            format!("{} of grant {id} on {account}", reply.voided)
                        ),
                        ("balance after", reply.balance_after.clone()),
                    ])
                );
            }
        }
    }
    Ok(0)
}

/// A price or cost book version (`book` names it when the reply does not: the cost book).
fn print_price_version(out: Output, version: &v1::PriceVersion, book: &str) {
    if out.json {
        out.json(&json!({
            "book": version.book, "asset": version.asset, "version": version.version,
            "effective_from": time_json(Some(version.effective_from_ms)),
            "rates": version.rates.iter().map(rate_json).collect::<Vec<_>>(),
        }));
        return;
    }
    print!(
        "{}",
        key_values(&[
            ("book", version.book.clone().unwrap_or(book.to_string())),
            ("asset", version.asset.clone()),
            ("version", version.version.to_string()),
            ("effective from", time_text(Some(version.effective_from_ms))),
        ])
    );
    println!();
    let mut table = Table::new(&["METER", "MATCH", "MODEL"]);
    for rate in &version.rates {
        let matched: Vec<String> = rate
            .dimensions
            .iter()
            .map(|pair| format!("{}={}", pair.key, pair.value))
            .collect();
        let matched = if matched.is_empty() {
            "*".to_string()
        } else {
            matched.join(",")
        };
        table.row(vec![rate.meter.clone(), matched, model_text(rate)]);
    }
    print!("{}", table.render());
}

fn read_rates(file: &std::path::Path) -> Result<Vec<v1::Rate>, Failure> {
    read_rates_file(file).map_err(|reason| Failure::usage("--file", reason))
}

/// A refused rate named as the rates file names it: the wire's `rates[i].dimensions` is the
/// file's `rates[i].match`.
fn in_rates_file_terms(error: ClientError) -> Failure {
    let mut failure = Failure::from(error);
    let renamed = |text: &str| {
        text.split_inclusive(']')
            .map(|part| match part.strip_prefix(".dimensions") {
                Some(rest) => format!(".match{rest}"),
                None => part.to_string(),
            })
            .collect::<String>()
    };
    failure.message = renamed(&failure.message);
    if let Some(serde_json::Value::String(field)) = failure.details.get_mut("field") {
        *field = renamed(field);
    }
    failure
}

pub async fn price(client: &Client, out: Output, command: PriceCommand) -> CommandResult {
    match command {
        PriceCommand::Publish {
            book,
            asset,
            file,
            effective_at,
        } => {
            let rates = read_rates(&file)?;
            let count = rates.len();
            let reply = client
                .publish_prices(v1::PublishPricesRequest {
                    book: book.clone(),
                    asset,
                    effective_from_ms: effective_at,
                    rates,
                })
                .await
                .map_err(in_rates_file_terms)?;
            if out.json {
                out.json(&json!({"book": reply.book, "version": reply.version, "effective_from": time_json(Some(reply.effective_from_ms)), "rates": count, "log_index": log_index(&reply.write)}));
            } else {
                println!(
                    "published {book} version {} ({count} rates), effective from {}",
                    reply.version,
                    time_text(Some(reply.effective_from_ms))
                );
            }
        }
        PriceCommand::Show { book, at } => {
            let version = client.get_prices(&book, at).await?;
            print_price_version(out, &version, &book);
        }
        PriceCommand::ShowCosts { at } => {
            let version = client.get_costs(at).await?;
            print_price_version(out, &version, "costs");
        }
        PriceCommand::PublishCosts { file, effective_at } => {
            let rates = read_rates(&file)?;
            let count = rates.len();
            let reply = client
                .publish_costs(v1::PublishCostsRequest {
                    effective_from_ms: effective_at,
                    rates,
                })
                .await
                .map_err(in_rates_file_terms)?;
            if out.json {
                out.json(&json!({"version": reply.version, "effective_from": time_json(Some(reply.effective_from_ms)), "rates": count, "log_index": log_index(&reply.write)}));
            } else {
                println!(
                    "published cost book version {} ({count} rates), effective from {}",
                    reply.version,
                    time_text(Some(reply.effective_from_ms))
                );
            }
        }
    }
    Ok(0)
}

pub async fn hold(client: &Client, out: Output, command: HoldCommand) -> CommandResult {
    match command {
        HoldCommand::Authorize {
            account,
            id,
            amount,
            expires_in,
        } => {
            if !(tally_core::HOLD_EXPIRES_IN_MS_MIN..=tally_core::HOLD_EXPIRES_IN_MS_MAX)
                .contains(&expires_in)
            {
                return Err(Failure::usage(
                    "--expires-in",
                    format!("must be between 1s and 24h, got {expires_in} ms"),
                ));
            }
            let reply = client.authorize(&account, &id, &amount, expires_in).await?;
            // A retry of an authorization that already holds (same id and amount) changes
            // nothing; its reply carries the hold's expiry and what is available now (none
            // from a node of a build before session 23).
            let existed = reply.already_existed;
            let expires_at = (reply.expires_at_ms > 0).then_some(reply.expires_at_ms);
            let available =
                (!reply.available_after.is_empty()).then_some(reply.available_after.clone());
            if out.json {
                out.json(&json!({
                    "account": account, "hold": id, "amount": amount, "already_existed": existed,
                    "expires_at": time_json(expires_at),
                    "available_after": available,
                    "log_index": log_index(&reply.write),
                }));
            } else if existed {
                let known = match (expires_at, &available) {
                    (Some(at), Some(available)) => format!(
                        " (expires at {}; available now {available})",
                        time_text(Some(at))
                    ),
                    _ => String::new(),
                };
                println!(
                    "hold {id} on {account} already existed with amount {amount}{known}; nothing changed"
                );
            } else {
                print!(
                    "{}",
                    key_values(&[
                        ("authorized", format!("{amount} on {account} as hold {id}")),
                        ("expires at", time_text(Some(reply.expires_at_ms))),
                        ("available after", reply.available_after.clone()),
                    ])
                );
            }
        }
        HoldCommand::Release { account, id } => {
            let reply = client.release(&account, &id).await?;
            if out.json {
                let ended_as = (!reply.ended_as.is_empty()).then_some(&reply.ended_as);
                let ended_at = (reply.ended_at_ms > 0).then_some(reply.ended_at_ms);
                out.json(&json!({"account": account, "hold": id, "released": reply.released, "available_after": reply.available_after, "already_ended": reply.already_ended, "ended_as": ended_as, "ended_at": time_json(ended_at), "log_index": log_index(&reply.write)}));
            } else if reply.already_ended {
                // A retry whose first answer was lost, or a hold that expired or was fully
                // captured: nothing was left to release, nothing changed.
                let how = if reply.ended_as.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} at {})",
                        reply.ended_as,
                        time_text(Some(reply.ended_at_ms))
                    )
                };
                println!("hold {id} on {account} had already ended{how}; nothing changed");
            } else {
                print!(
                    "{}",
                    key_values(&[
                        (
                            "released",
                            format!("{} of hold {id} on {account}", reply.released)
                        ),
                        ("available after", reply.available_after.clone()),
                    ])
                );
            }
        }
    }
    Ok(0)
}

pub async fn report(client: &Client, out: Output, args: ReportArgs) -> CommandResult {
    let report = client
        .report(args.account.as_deref(), args.month.as_deref())
        .await?;
    if out.json {
        out.json(&views::report_json(&report));
    } else {
        print!("{}", views::report_text(&report));
    }
    Ok(0)
}

pub async fn history(client: &Client, out: Output, args: HistoryArgs) -> CommandResult {
    let reply = client
        .history(&args.account, args.before, args.limit)
        .await?;
    if out.json {
        out.json(&json!({
            "account": args.account,
            "entries": reply.entries.iter().map(views::journal_json).collect::<Vec<_>>(),
            "next_before_seq": reply.next_before_seq,
        }));
    } else {
        if reply.entries.is_empty() {
            println!("no journal entries for {}", args.account);
        } else {
            print!("{}", views::journal_table(&reply.entries));
        }
        if let Some(next) = reply.next_before_seq {
            println!("(more: tally history {} --before {next})", args.account);
        }
    }
    Ok(0)
}

pub async fn events(client: &Client, out: Output, args: EventsArgs) -> CommandResult {
    let mut subscription = client.events(args.from_seq, args.follow);
    if args.follow {
        // A stream: one line per event as it arrives (JSON lines with --json).
        if !out.json {
            println!("{}", views::EVENT_HEADERS.join("  "));
        }
        while let Some(event) = subscription.next().await? {
            if out.json {
                out.json(&views::event_json(&event));
            } else {
                println!("{}", views::event_row(&event).join("  "));
            }
        }
        return Ok(0);
    }
    let mut collected = Vec::new();
    while let Some(event) = subscription.next().await? {
        collected.push(event);
    }
    if out.json {
        out.json(&json!({
            "events": collected.iter().map(views::event_json).collect::<Vec<_>>(),
            "next_seq": subscription.next_seq(),
        }));
    } else if collected.is_empty() {
        println!("no events from seq {}", args.from_seq);
    } else {
        let mut table = Table::new(&views::EVENT_HEADERS);
        for event in &collected {
            table.row(views::event_row(event));
        }
        print!("{}", table.render());
    }
    Ok(0)
}

/// `leader`, `follower`... of a status reply.
pub fn role(status: &v1::ClusterStatusReply) -> &'static str {
    node_role_name(status.role)
}
