//! Core outcomes -> wire replies.
//!
//! Usage outcomes are values (`UsageResult`); for every other command a rejection becomes a
//! [`TallyError`] (a gRPC status), and `Applied` becomes the command's reply.

use std::collections::BTreeMap;

use tally_core::{Amount, Applied, NoRateWhy, Outcome, Reason, Settlement};

use super::fields::amount_text;
use crate::error::{ErrorCode, TallyError};
use crate::v1;

/// Machine-readable details of a rejection (the keys listed in ledger.proto).
pub fn reason_details(reason: &Reason) -> BTreeMap<String, String> {
    let pairs: Vec<(&str, String)> = match reason {
        Reason::InsufficientFunds {
            available,
            required,
        } => vec![
            ("available", amount_text(*available)),
            ("required", amount_text(*required)),
        ],
        Reason::UnknownAccount { account }
        | Reason::AccountFrozen { account }
        | Reason::AccountClosed { account } => vec![("account", account.to_string())],
        Reason::NoRate { meter, why } => {
            let mut details = vec![("meter", meter.clone())];
            match why {
                NoRateWhy::NoPriceBook => {}
                NoRateWhy::NoVersionYet { book, .. } | NoRateWhy::NoMatch { book, .. } => {
                    details.push(("price_book", book.clone()))
                }
            }
            details
        }
        Reason::OutsideTimeWindow {
            occurred_at,
            earliest,
            latest,
        } => vec![
            ("occurred_at_ms", occurred_at.to_string()),
            ("earliest_ms", earliest.to_string()),
            ("latest_ms", latest.to_string()),
        ],
        Reason::InvalidInput(error) => {
            vec![
                ("field", error.field.clone()),
                ("reason", error.reason.clone()),
            ]
        }
        Reason::AlreadyExists { what, id } => vec![("what", what.clone()), ("id", id.clone())],
        Reason::UnknownAsset { asset } => vec![("asset", asset.clone())],
        Reason::UnknownGrant { account, grant } => vec![
            ("account", account.to_string()),
            ("grant_id", grant.to_string()),
        ],
        Reason::UnknownHold { account, hold } => vec![
            ("account", account.to_string()),
            ("hold_id", hold.to_string()),
        ],
        Reason::UnknownPriceBook { book } => vec![("price_book", book.to_string())],
        Reason::EffectiveInPast {
            effective_from,
            now,
        } => vec![
            ("effective_from_ms", effective_from.to_string()),
            ("now_ms", now.to_string()),
        ],
        Reason::Overflow { field } => vec![("field", field.clone())],
        Reason::NotInitialized => vec![],
        Reason::BatchAborted { failed_index } => vec![("failed_index", failed_index.to_string())],
    };
    pairs
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
}

pub fn rejection(reason: &Reason) -> v1::Rejection {
    v1::Rejection {
        code: reason.code().to_string(),
        message: reason.message(),
        details: reason_details(reason),
    }
}

/// Ids are copied with `as_str().to_owned()` (one allocation of the exact size) rather than
/// `to_string()` (through `fmt`): this runs for every event of every batch.
fn settlement(settlement: &Settlement) -> v1::Settlement {
    v1::Settlement {
        event_id: settlement.event_id.as_str().to_owned(),
        account: settlement.account.as_str().to_owned(),
        charged: amount_text(settlement.charged),
        balance_after: amount_text(settlement.balance_after),
        drawdown: settlement
            .drawdown
            .iter()
            .map(|draw| v1::Draw {
                grant_id: draw.grant.as_str().to_owned(),
                amount: amount_text(draw.amount),
            })
            .collect(),
        debt_created: amount_text(settlement.debt_created),
        from_hold: amount_text(settlement.from_hold),
        revenue: amount_text(settlement.revenue),
        cost: amount_text(settlement.cost),
        margin: amount_text(settlement.margin),
        price_book: settlement
            .price_book
            .as_ref()
            .map(|book| book.as_str().to_owned()),
        price_version: settlement.price_version,
        settled_at_ms: settlement.settled_at,
    }
}

fn internal_rejection(message: String) -> v1::Rejection {
    v1::Rejection {
        code: ErrorCode::Internal.as_str().to_string(),
        message,
        details: BTreeMap::new(),
    }
}

/// The result of one usage event, exactly as core named it.
pub fn usage_result(outcome: &Outcome) -> v1::UsageResult {
    use v1::usage_result::Outcome as Wire;
    let wire = match outcome {
        Outcome::Settled(settled) => Wire::Settled(settlement(settled)),
        Outcome::Duplicate(original) => Wire::Duplicate(settlement(original)),
        Outcome::Conflict { account, event_id } => Wire::Conflict(v1::Conflict {
            account: account.to_string(),
            event_id: event_id.to_string(),
        }),
        Outcome::Rejected(rejected) => Wire::Rejected(rejection(&rejected.reason)),
        // Core answers a usage event with one of the four above; anything else is a bug that
        // the client must see rather than a made-up success.
        Outcome::Applied(_) | Outcome::Batch(_) => Wire::Rejected(internal_rejection(format!(
            "core answered a usage event with a {} outcome",
            outcome.kind()
        ))),
    };
    v1::UsageResult {
        outcome: Some(wire),
    }
}

/// `settled`, `duplicate`, `conflict` or `rejected` (`unknown` when empty).
pub fn usage_result_kind(result: &v1::UsageResult) -> &'static str {
    use v1::usage_result::Outcome as Wire;
    match &result.outcome {
        Some(Wire::Settled(_)) => "settled",
        Some(Wire::Duplicate(_)) => "duplicate",
        Some(Wire::Conflict(_)) => "conflict",
        Some(Wire::Rejected(_)) => "rejected",
        None => "unknown",
    }
}

/// One result per event of a batch of `event_count` events. A batch rejected as a whole (e.g.
/// the ledger is not initialized) gives every event that rejection.
pub fn usage_results(outcome: &Outcome, event_count: usize) -> Vec<v1::UsageResult> {
    match outcome {
        Outcome::Batch(outcomes) => outcomes.iter().map(usage_result).collect(),
        other => vec![usage_result(other); event_count],
    }
}

pub fn record_usage_reply(outcome: &Outcome, write: v1::WriteInfo) -> v1::RecordUsageReply {
    v1::RecordUsageReply {
        result: Some(usage_result(outcome)),
        write: Some(write),
    }
}

/// The reply to a batch of `event_count` events, listing what `listed` asks for; the summary
/// always. An unknown `listed` value (a newer client) gets every result.
pub fn record_usage_batch_reply(
    outcome: &Outcome,
    event_count: usize,
    listed: i32,
    write: v1::WriteInfo,
) -> Result<v1::RecordUsageBatchReply, TallyError> {
    let unsettled_only = listed == v1::BatchReply::UnsettledOnly as i32;
    let (results, unsettled) = match outcome {
        Outcome::Batch(outcomes) if unsettled_only => (
            Vec::new(),
            outcomes
                .iter()
                .enumerate()
                .filter(|(_, outcome)| !matches!(outcome, Outcome::Settled(_)))
                .map(|(index, outcome)| v1::IndexedUsageResult {
                    index: index as u32,
                    result: Some(usage_result(outcome)),
                })
                .collect(),
        ),
        _ if unsettled_only => (
            Vec::new(),
            usage_results(outcome, event_count)
                .into_iter()
                .enumerate()
                .map(|(index, result)| v1::IndexedUsageResult {
                    index: index as u32,
                    result: Some(result),
                })
                .collect(),
        ),
        _ => (usage_results(outcome, event_count), Vec::new()),
    };
    Ok(v1::RecordUsageBatchReply {
        results,
        unsettled,
        summary: Some(batch_summary(outcome, event_count)?),
        write: Some(write),
    })
}

/// The counts of a batch's outcomes and the sums of revenue, cost and margin of the events
/// settled now. A batch answered as a whole (one outcome for all its events, e.g. not
/// initialized) counts that outcome once per event.
pub fn batch_summary(
    outcome: &Outcome,
    event_count: usize,
) -> Result<v1::BatchSummary, TallyError> {
    let mut summary = v1::BatchSummary::default();
    let (mut revenue, mut cost, mut margin) =
        (Some(Amount::ZERO), Some(Amount::ZERO), Some(Amount::ZERO));
    let mut count = |outcome: &Outcome, times: u32| match outcome {
        Outcome::Settled(settled) => {
            summary.settled += times;
            // Each is far inside an amount's 28 digits, so 8,190 of them add up exactly; a
            // sum that did not would be a bug, answered as `internal` below.
            revenue = revenue.and_then(|sum| sum.checked_add(settled.revenue));
            cost = cost.and_then(|sum| sum.checked_add(settled.cost));
            margin = margin.and_then(|sum| sum.checked_add(settled.margin));
        }
        Outcome::Duplicate(_) => summary.duplicate += times,
        Outcome::Conflict { .. } => summary.conflict += times,
        // A rejection, or an outcome core never gives a usage event (reported as rejected
        // by `usage_result`).
        Outcome::Rejected(_) | Outcome::Applied(_) | Outcome::Batch(_) => summary.rejected += times,
    };
    match outcome {
        Outcome::Batch(outcomes) => outcomes.iter().for_each(|outcome| count(outcome, 1)),
        other => count(other, event_count as u32),
    }
    let (Some(revenue), Some(cost), Some(margin)) = (revenue, cost, margin) else {
        return Err(TallyError::internal(
            "the batch's revenue, cost or margin does not fit in an amount",
        ));
    };
    summary.revenue = amount_text(revenue);
    summary.cost = amount_text(cost);
    summary.margin = amount_text(margin);
    Ok(summary)
}

/// `Applied` for a non-usage command, a rejection as its error, anything else `internal`.
pub fn expect_applied(outcome: &Outcome) -> Result<&Applied, TallyError> {
    match outcome {
        Outcome::Applied(applied) => Ok(applied),
        Outcome::Rejected(rejected) => Err(TallyError::from_reason(&rejected.reason)),
        other => Err(TallyError::internal(format!(
            "core answered a non-usage command with a {} outcome",
            other.kind()
        ))),
    }
}

/// [`expect_applied`] for a request whose fields the ledger's checks name differently (the
/// wire's `_ms` times, lists wrapped in a message): an invalid-input rejection names the
/// request's field. `wire_names` maps a field path's first part to the request's.
fn expect_applied_as<'a>(
    outcome: &'a Outcome,
    wire_names: &[(&str, &str)],
) -> Result<&'a Applied, TallyError> {
    if let Outcome::Rejected(rejected) = outcome {
        if let Reason::InvalidInput(input) = &rejected.reason {
            let mut input = input.clone();
            input.field = wire_field(&input.field, wire_names);
            return Err(TallyError::from_reason(&Reason::InvalidInput(input)));
        }
    }
    expect_applied(outcome)
}

fn wire_field(field: &str, wire_names: &[(&str, &str)]) -> String {
    for (ledger, wire) in wire_names {
        if let Some(rest) = field.strip_prefix(ledger) {
            if rest.is_empty() || rest.starts_with(['.', '[']) {
                return format!("{wire}{rest}");
            }
        }
    }
    field.to_string()
}

/// `UpdateAccountRequest` wraps its lists and names its rule `set_auto_recharge`.
const UPDATE_ACCOUNT_FIELDS: &[(&str, &str)] = &[
    ("thresholds", "thresholds.amounts"),
    ("metadata", "metadata.pairs"),
    ("auto_recharge", "set_auto_recharge"),
];

/// `AddGrantRequest` carries its times in milliseconds.
const ADD_GRANT_FIELDS: &[(&str, &str)] = &[
    ("starts_at", "starts_at_ms"),
    ("expires_at", "expires_at_ms"),
];

fn unexpected(command: &str, applied: &Applied) -> TallyError {
    TallyError::internal(format!("core answered {command} with {applied:?}"))
}

pub fn create_asset_reply(
    outcome: &Outcome,
    write: v1::WriteInfo,
) -> Result<v1::CreateAssetReply, TallyError> {
    match expect_applied(outcome)? {
        Applied::AssetCreated => Ok(v1::CreateAssetReply {
            already_existed: false,
            write: Some(write),
        }),
        Applied::AlreadyApplied => Ok(v1::CreateAssetReply {
            already_existed: true,
            write: Some(write),
        }),
        other => Err(unexpected("create_asset", other)),
    }
}

pub fn create_account_reply(
    outcome: &Outcome,
    write: v1::WriteInfo,
) -> Result<v1::CreateAccountReply, TallyError> {
    match expect_applied(outcome)? {
        Applied::AccountCreated => Ok(v1::CreateAccountReply {
            already_existed: false,
            write: Some(write),
        }),
        Applied::AlreadyApplied => Ok(v1::CreateAccountReply {
            already_existed: true,
            write: Some(write),
        }),
        other => Err(unexpected("create_account", other)),
    }
}

pub fn update_account_reply(
    outcome: &Outcome,
    write: v1::WriteInfo,
) -> Result<v1::UpdateAccountReply, TallyError> {
    match expect_applied_as(outcome, UPDATE_ACCOUNT_FIELDS)? {
        Applied::AccountUpdated | Applied::AlreadyApplied => {
            Ok(v1::UpdateAccountReply { write: Some(write) })
        }
        other => Err(unexpected("update_account", other)),
    }
}

pub fn set_account_status_reply(
    outcome: &Outcome,
    write: v1::WriteInfo,
) -> Result<v1::SetAccountStatusReply, TallyError> {
    match expect_applied(outcome)? {
        Applied::StatusChanged | Applied::AlreadyApplied => {
            Ok(v1::SetAccountStatusReply { write: Some(write) })
        }
        other => Err(unexpected("set_account_status", other)),
    }
}

pub fn add_grant_reply(
    outcome: &Outcome,
    write: v1::WriteInfo,
) -> Result<v1::AddGrantReply, TallyError> {
    match expect_applied_as(outcome, ADD_GRANT_FIELDS)? {
        Applied::GrantAdded {
            debt_repaid,
            balance_after,
        } => Ok(v1::AddGrantReply {
            debt_repaid: amount_text(*debt_repaid),
            balance_after: amount_text(*balance_after),
            already_existed: false,
            write: Some(write),
        }),
        Applied::AlreadyApplied => Ok(v1::AddGrantReply {
            // Not known now (what the first add repaid): empty, as "0" would read as a fact.
            debt_repaid: String::new(),
            balance_after: String::new(),
            already_existed: true,
            write: Some(write),
        }),
        other => Err(unexpected("add_grant", other)),
    }
}

pub fn void_grant_reply(
    outcome: &Outcome,
    write: v1::WriteInfo,
) -> Result<v1::VoidGrantReply, TallyError> {
    match expect_applied(outcome)? {
        Applied::GrantVoided {
            voided,
            balance_after,
        } => Ok(v1::VoidGrantReply {
            voided: amount_text(*voided),
            balance_after: amount_text(*balance_after),
            already_ended: false,
            ended_as: String::new(),
            write: Some(write),
        }),
        Applied::GrantEnded {
            ended_as,
            balance_after,
        } => Ok(v1::VoidGrantReply {
            voided: "0".to_string(),
            balance_after: amount_text(*balance_after),
            already_ended: true,
            ended_as: ended_as.as_str().to_string(),
            write: Some(write),
        }),
        other => Err(unexpected("void_grant", other)),
    }
}

pub fn publish_prices_reply(
    outcome: &Outcome,
    write: v1::WriteInfo,
) -> Result<v1::PublishPricesReply, TallyError> {
    match expect_applied(outcome)? {
        Applied::PricesPublished {
            book,
            version,
            effective_from,
        } => Ok(v1::PublishPricesReply {
            book: book.to_string(),
            version: *version,
            effective_from_ms: *effective_from,
            write: Some(write),
        }),
        other => Err(unexpected("publish_prices", other)),
    }
}

pub fn publish_costs_reply(
    outcome: &Outcome,
    write: v1::WriteInfo,
) -> Result<v1::PublishCostsReply, TallyError> {
    match expect_applied(outcome)? {
        Applied::CostsPublished {
            version,
            effective_from,
        } => Ok(v1::PublishCostsReply {
            version: *version,
            effective_from_ms: *effective_from,
            write: Some(write),
        }),
        other => Err(unexpected("publish_costs", other)),
    }
}

pub fn authorize_reply(
    outcome: &Outcome,
    write: v1::WriteInfo,
) -> Result<v1::AuthorizeReply, TallyError> {
    match expect_applied(outcome)? {
        Applied::HoldAuthorized {
            expires_at,
            available_after,
        } => Ok(v1::AuthorizeReply {
            expires_at_ms: *expires_at,
            available_after: amount_text(*available_after),
            already_existed: false,
            write: Some(write),
        }),
        Applied::HoldExisted {
            expires_at,
            available_after,
        } => Ok(v1::AuthorizeReply {
            expires_at_ms: *expires_at,
            available_after: amount_text(*available_after),
            already_existed: true,
            write: Some(write),
        }),
        Applied::AlreadyApplied => Ok(v1::AuthorizeReply {
            expires_at_ms: 0,
            available_after: String::new(),
            already_existed: true,
            write: Some(write),
        }),
        other => Err(unexpected("authorize", other)),
    }
}

pub fn release_reply(
    outcome: &Outcome,
    write: v1::WriteInfo,
) -> Result<v1::ReleaseReply, TallyError> {
    match expect_applied(outcome)? {
        Applied::HoldReleased {
            released,
            available_after,
        } => Ok(v1::ReleaseReply {
            released: amount_text(*released),
            available_after: amount_text(*available_after),
            already_ended: false,
            ended_as: String::new(),
            ended_at_ms: 0,
            write: Some(write),
        }),
        Applied::HoldEnded {
            ended_as,
            ended_at,
            available_after,
        } => Ok(v1::ReleaseReply {
            released: "0".to_string(),
            available_after: amount_text(*available_after),
            already_ended: true,
            ended_as: ended_as.as_str().to_string(),
            ended_at_ms: *ended_at,
            write: Some(write),
        }),
        Applied::AlreadyApplied => Ok(v1::ReleaseReply {
            released: "0".to_string(),
            available_after: String::new(),
            already_ended: true,
            ended_as: String::new(),
            ended_at_ms: 0,
            write: Some(write),
        }),
        other => Err(unexpected("release", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::{AccountId, Amount, Draw, EventId, GrantId, InvalidInput, Rejection};

    /// The ledger's checks name `thresholds[1]` or `expires_at`; the request that carried them
    /// calls them `thresholds.amounts[1]` and `expires_at_ms`, and the error names those.
    #[test]
    fn an_invalid_field_is_named_as_the_request_names_it() {
        let write = v1::WriteInfo::default();
        let rejected =
            |field: &str| Outcome::Rejected(Rejection::from(InvalidInput::new(field, "is wrong")));
        for (ledger, wire) in [
            ("thresholds[1]", "thresholds.amounts[1]"),
            ("metadata[0].key", "metadata.pairs[0].key"),
            ("auto_recharge.amount", "set_auto_recharge.amount"),
            ("credit_limit", "credit_limit"),
        ] {
            let error = update_account_reply(&rejected(ledger), write).unwrap_err();
            assert!(
                error.message.starts_with(&format!("invalid {wire}: ")),
                "{error}"
            );
        }
        for (ledger, wire) in [
            ("expires_at", "expires_at_ms"),
            ("starts_at", "starts_at_ms"),
            ("amount", "amount"),
        ] {
            let error = add_grant_reply(&rejected(ledger), write).unwrap_err();
            assert!(
                error.message.starts_with(&format!("invalid {wire}: ")),
                "{error}"
            );
        }
        // A field that only starts with the same letters keeps its name.
        assert_eq!(
            wire_field("thresholdsx", UPDATE_ACCOUNT_FIELDS),
            "thresholdsx"
        );
    }

    fn amount(text: &str) -> Amount {
        Amount::parse("test", text).unwrap()
    }

    fn settled() -> Settlement {
        Settlement {
            event_id: EventId::new("e1").unwrap(),
            account: AccountId::new("acme").unwrap(),
            charged: amount("3.00"),
            balance_after: amount("97"),
            drawdown: vec![
                Draw {
                    grant: GrantId::new("allowance").unwrap(),
                    amount: amount("2"),
                },
                Draw {
                    grant: GrantId::new("topup").unwrap(),
                    amount: amount("1"),
                },
            ],
            debt_created: Amount::ZERO,
            from_hold: Amount::ZERO,
            revenue: amount("0.015"),
            cost: amount("0.01"),
            margin: amount("0.005"),
            price_book: Some(tally_core::BookId::new("standard").unwrap()),
            price_version: 2,
            settled_at: 1_700_000_000_000,
        }
    }

    #[test]
    fn settled_and_duplicate_carry_every_field() {
        let wire = usage_result(&Outcome::Settled(settled()));
        assert_eq!(usage_result_kind(&wire), "settled");
        let Some(v1::usage_result::Outcome::Settled(s)) = wire.outcome else {
            panic!()
        };
        assert_eq!(s.charged, "3");
        assert_eq!(s.balance_after, "97");
        assert_eq!(s.drawdown.len(), 2);
        assert_eq!(s.drawdown[1].grant_id, "topup");
        assert_eq!(s.revenue, "0.015");
        assert_eq!(s.margin, "0.005");
        assert_eq!(s.price_book.as_deref(), Some("standard"));
        assert_eq!(s.price_version, 2);
        let duplicate = usage_result(&Outcome::Duplicate(settled()));
        assert_eq!(usage_result_kind(&duplicate), "duplicate");
    }

    #[test]
    fn rejections_carry_code_message_and_details() {
        let outcome = Outcome::Rejected(Rejection::from(Reason::InsufficientFunds {
            available: amount("1.5"),
            required: amount("3"),
        }));
        let wire = usage_result(&outcome);
        let Some(v1::usage_result::Outcome::Rejected(r)) = wire.outcome else {
            panic!()
        };
        assert_eq!(r.code, "insufficient_funds");
        assert_eq!(r.details["available"], "1.5");
        assert_eq!(r.details["required"], "3");
        assert!(r.message.contains("insufficient funds"));

        let invalid = Reason::InvalidInput(InvalidInput::new(
            "quantity",
            "has 3 digits after the point; USD allows 2",
        ));
        let r = rejection(&invalid);
        assert_eq!(r.code, "invalid_argument");
        assert_eq!(r.details["field"], "quantity");
    }

    #[test]
    fn batch_results_one_per_event() {
        let outcome = Outcome::Batch(vec![
            Outcome::Settled(settled()),
            Outcome::Conflict {
                account: AccountId::new("acme").unwrap(),
                event_id: EventId::new("e2").unwrap(),
            },
        ]);
        let results = usage_results(&outcome, 2);
        assert_eq!(
            results.iter().map(usage_result_kind).collect::<Vec<_>>(),
            ["settled", "conflict"]
        );
        let whole = Outcome::Rejected(Rejection::from(Reason::NotInitialized));
        let results = usage_results(&whole, 3);
        assert_eq!(results.len(), 3);
        assert!(results.iter().all(|r| usage_result_kind(r) == "rejected"));
        let odd = usage_result(&Outcome::Applied(Applied::Ticked));
        let Some(v1::usage_result::Outcome::Rejected(r)) = odd.outcome else {
            panic!()
        };
        assert_eq!(r.code, "internal");
    }

    #[test]
    fn an_unsettled_only_reply_lists_the_exceptions_by_position_with_the_summary() {
        let mut second = settled();
        second.revenue = amount("1.005");
        second.cost = amount("2");
        second.margin = amount("-0.995");
        let outcome = Outcome::Batch(vec![
            Outcome::Settled(settled()),
            Outcome::Duplicate(settled()),
            Outcome::Settled(second),
            Outcome::Conflict {
                account: AccountId::new("acme").unwrap(),
                event_id: EventId::new("e2").unwrap(),
            },
            Outcome::Rejected(Rejection::from(Reason::NotInitialized)),
        ]);
        let write = v1::WriteInfo::default();
        let every =
            record_usage_batch_reply(&outcome, 5, v1::BatchReply::EveryResult as i32, write)
                .unwrap();
        let only =
            record_usage_batch_reply(&outcome, 5, v1::BatchReply::UnsettledOnly as i32, write)
                .unwrap();
        assert_eq!(every.results.len(), 5);
        assert!(every.unsettled.is_empty());
        assert!(only.results.is_empty());
        // The unsettled entries are exactly the full reply's results at their positions.
        let listed: Vec<(u32, v1::UsageResult)> = only
            .unsettled
            .iter()
            .map(|listed| (listed.index, listed.result.clone().unwrap()))
            .collect();
        assert_eq!(
            listed,
            [1, 3, 4].map(|index| (index, every.results[index as usize].clone()))
        );
        // One summary for both, the settled events' money summed exactly (not the duplicate's).
        let expected = v1::BatchSummary {
            settled: 2,
            duplicate: 1,
            conflict: 1,
            rejected: 1,
            revenue: "1.02".into(),
            cost: "2.01".into(),
            margin: "-0.99".into(),
        };
        assert_eq!(only.summary.as_ref(), Some(&expected));
        assert_eq!(every.summary.as_ref(), Some(&expected));
        // An unknown value (a newer client's) gets every result.
        let newer = record_usage_batch_reply(&outcome, 5, 7, write).unwrap();
        assert_eq!(newer.results, every.results);

        // A batch answered as a whole: every event is listed, and counted, with that answer.
        let whole = Outcome::Rejected(Rejection::from(Reason::NotInitialized));
        let reply =
            record_usage_batch_reply(&whole, 3, v1::BatchReply::UnsettledOnly as i32, write)
                .unwrap();
        assert_eq!(
            reply.unsettled.iter().map(|l| l.index).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        let summary = reply.summary.unwrap();
        assert_eq!((summary.settled, summary.rejected), (0, 3));
        assert_eq!(summary.revenue, "0");
    }

    #[test]
    fn non_usage_rejections_become_errors() {
        let write = v1::WriteInfo {
            log_index: 7,
            at_ms: 1,
            leader_id: 1,
        };
        let outcome = Outcome::Rejected(Rejection::from(Reason::UnknownAccount {
            account: AccountId::new("ghost").unwrap(),
        }));
        let error = add_grant_reply(&outcome, write).unwrap_err();
        assert_eq!(error.code, ErrorCode::UnknownAccount);
        assert_eq!(error.details["account"], "ghost");
        assert_eq!(error.to_status().code(), tonic::Code::NotFound);

        let outcome = Outcome::Applied(Applied::GrantAdded {
            debt_repaid: amount("2"),
            balance_after: amount("8"),
        });
        let reply = add_grant_reply(&outcome, write).unwrap();
        assert_eq!(reply.balance_after, "8");
        assert_eq!(reply.write.unwrap().log_index, 7);

        let reply = release_reply(&Outcome::Applied(Applied::AlreadyApplied), write).unwrap();
        assert!(reply.already_ended);
        assert_eq!(reply.released, "0");
        let reply = authorize_reply(&Outcome::Applied(Applied::AlreadyApplied), write).unwrap();
        assert!(reply.already_existed);

        let reply = create_asset_reply(&Outcome::Applied(Applied::AlreadyApplied), write).unwrap();
        assert!(reply.already_existed);
        let error = create_asset_reply(&Outcome::Applied(Applied::Ticked), write).unwrap_err();
        assert_eq!(error.code, ErrorCode::Internal);
    }
}
