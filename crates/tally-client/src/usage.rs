//! Typed results of usage events: exact amounts, the four outcomes the ledger defines.

use std::collections::BTreeMap;

use tally_core::Amount;
use tally_proto::{v1, ErrorCode};

use crate::error::ClientError;

/// What one grant gave to a charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draw {
    pub grant_id: String,
    pub amount: Amount,
}

/// A settled usage event (amounts exact; revenue, cost and margin in the reporting currency).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub event_id: String,
    pub account: String,
    pub charged: Amount,
    pub balance_after: Amount,
    pub drawdown: Vec<Draw>,
    pub debt_created: Amount,
    pub from_hold: Amount,
    pub revenue: Amount,
    pub cost: Amount,
    pub margin: Amount,
    pub price_book: Option<String>,
    /// 0 when no price book was needed.
    pub price_version: u32,
    pub settled_at_ms: u64,
}

/// A business rejection: nothing changed; a retry may succeed later (after a top-up...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    pub details: BTreeMap<String, String>,
}

/// The outcome of one usage event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsageOutcome {
    /// Settled now, by this call.
    Settled(Settlement),
    /// The same event id and content settled before (by an earlier call, or by an earlier
    /// attempt of this call whose answer was lost): the original settlement; nothing changed.
    Duplicate(Settlement),
    /// The same event id settled before with different content; nothing changed.
    Conflict {
        account: String,
        event_id: String,
    },
    Rejected(Rejection),
}

impl UsageOutcome {
    /// `settled`, `duplicate`, `conflict` or `rejected`.
    pub fn kind(&self) -> &'static str {
        match self {
            UsageOutcome::Settled(_) => "settled",
            UsageOutcome::Duplicate(_) => "duplicate",
            UsageOutcome::Conflict { .. } => "conflict",
            UsageOutcome::Rejected(_) => "rejected",
        }
    }

    /// The settlement of a settled or duplicate event.
    pub fn settlement(&self) -> Option<&Settlement> {
        match self {
            UsageOutcome::Settled(settlement) | UsageOutcome::Duplicate(settlement) => {
                Some(settlement)
            }
            _ => None,
        }
    }

    /// Parses a wire result; amounts that are not exact decimals are a protocol error.
    pub fn from_wire(result: v1::UsageResult) -> Result<UsageOutcome, ClientError> {
        use v1::usage_result::Outcome as Wire;
        match result.outcome {
            Some(Wire::Settled(settlement)) => {
                Ok(UsageOutcome::Settled(parse_settlement(settlement)?))
            }
            Some(Wire::Duplicate(settlement)) => {
                Ok(UsageOutcome::Duplicate(parse_settlement(settlement)?))
            }
            Some(Wire::Conflict(conflict)) => Ok(UsageOutcome::Conflict {
                account: conflict.account,
                event_id: conflict.event_id,
            }),
            Some(Wire::Rejected(rejection)) => {
                let mut details: BTreeMap<String, String> = rejection.details.into_iter().collect();
                // A code this client does not know (from a newer server) is `internal` here;
                // the server's own code is kept in the details, not dropped.
                let code = ErrorCode::parse(&rejection.code).unwrap_or_else(|| {
                    details.insert("code".to_string(), rejection.code.clone());
                    ErrorCode::Internal
                });
                Ok(UsageOutcome::Rejected(Rejection {
                    code,
                    message: rejection.message,
                    details,
                }))
            }
            None => Err(ClientError::Protocol(
                "a usage result without an outcome".to_string(),
            )),
        }
    }
}

/// One event of a batch and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventOutcome {
    pub event_id: String,
    pub account: String,
    pub outcome: UsageOutcome,
}

/// What a batch sent with [`crate::Client::record_usage_batch_unsettled`] answered: counts,
/// the money of the events settled now, and only the events that did not settle now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSummary {
    pub settled: u32,
    pub duplicate: u32,
    pub conflict: u32,
    pub rejected: u32,
    /// Sums over the events settled now, in the reporting currency, exact.
    pub revenue: Amount,
    pub cost: Amount,
    pub margin: Amount,
    /// The events that did not settle now (duplicate, conflict, rejected), in batch order,
    /// each with its position in the batch.
    pub unsettled: Vec<(usize, EventOutcome)>,
}

impl BatchSummary {
    /// Parses a reply to a batch of `events` (the request's, for their ids); a reply whose
    /// counts or positions do not fit the batch is a protocol error.
    pub fn from_wire(
        events: &[v1::UsageEvent],
        reply: v1::RecordUsageBatchReply,
    ) -> Result<BatchSummary, ClientError> {
        let protocol = |what: String| ClientError::Protocol(format!("batch reply: {what}"));
        if reply.summary.is_none() && !events.is_empty() && reply.results.len() == events.len() {
            // A node of an earlier build: it lists every result and no summary.
            return BatchSummary::from_every_result(events, reply.results);
        }
        let wire = reply
            .summary
            .ok_or_else(|| protocol("no summary".to_string()))?;
        let total = [wire.settled, wire.duplicate, wire.conflict, wire.rejected]
            .iter()
            .map(|&n| n as usize)
            .sum::<usize>();
        if total != events.len() {
            return Err(protocol(format!(
                "the counts add up to {total} for {} events",
                events.len()
            )));
        }
        let expected = total - wire.settled as usize;
        if reply.unsettled.len() != expected {
            return Err(protocol(format!(
                "{} unsettled results listed for {expected} unsettled events",
                reply.unsettled.len()
            )));
        }
        let mut unsettled = Vec::with_capacity(reply.unsettled.len());
        for listed in reply.unsettled {
            let index = listed.index as usize;
            let event = events
                .get(index)
                .ok_or_else(|| protocol(format!("index {index} outside the batch")))?;
            let result = listed
                .result
                .ok_or_else(|| protocol(format!("index {index} without a result")))?;
            let outcome = UsageOutcome::from_wire(result)?;
            if matches!(outcome, UsageOutcome::Settled(_)) {
                return Err(protocol(format!(
                    "index {index} listed as unsettled settled"
                )));
            }
            unsettled.push((
                index,
                EventOutcome {
                    event_id: event.event_id.clone(),
                    account: event.account.clone(),
                    outcome,
                },
            ));
        }
        let money = |field: &str, text: &str| {
            Amount::parse(field, text)
                .map_err(|error| ClientError::Protocol(format!("batch reply: summary.{error}")))
        };
        Ok(BatchSummary {
            settled: wire.settled,
            duplicate: wire.duplicate,
            conflict: wire.conflict,
            rejected: wire.rejected,
            revenue: money("revenue", &wire.revenue)?,
            cost: money("cost", &wire.cost)?,
            margin: money("margin", &wire.margin)?,
            unsettled,
        })
    }
}

impl BatchSummary {
    /// The summary of a reply that lists every event's result (one per event, in order).
    fn from_every_result(
        events: &[v1::UsageEvent],
        results: Vec<v1::UsageResult>,
    ) -> Result<BatchSummary, ClientError> {
        let mut summary = BatchSummary {
            settled: 0,
            duplicate: 0,
            conflict: 0,
            rejected: 0,
            revenue: Amount::ZERO,
            cost: Amount::ZERO,
            margin: Amount::ZERO,
            unsettled: Vec::new(),
        };
        let overflow = || ClientError::Protocol("batch reply: the sums overflow".to_string());
        for (index, (event, result)) in events.iter().zip(results).enumerate() {
            let outcome = UsageOutcome::from_wire(result)?;
            match &outcome {
                UsageOutcome::Settled(settled) => {
                    summary.settled += 1;
                    summary.revenue = summary
                        .revenue
                        .checked_add(settled.revenue)
                        .ok_or_else(overflow)?;
                    summary.cost = summary
                        .cost
                        .checked_add(settled.cost)
                        .ok_or_else(overflow)?;
                    summary.margin = summary
                        .margin
                        .checked_add(settled.margin)
                        .ok_or_else(overflow)?;
                    continue;
                }
                UsageOutcome::Duplicate(_) => summary.duplicate += 1,
                UsageOutcome::Conflict { .. } => summary.conflict += 1,
                UsageOutcome::Rejected(_) => summary.rejected += 1,
            }
            summary.unsettled.push((
                index,
                EventOutcome {
                    event_id: event.event_id.clone(),
                    account: event.account.clone(),
                    outcome,
                },
            ));
        }
        Ok(summary)
    }
}

fn wire_amount(field: &str, text: &str) -> Result<Amount, ClientError> {
    // Empty means zero on the wire for amounts that did not apply (no hold, no debt).
    if text.is_empty() {
        return Ok(Amount::ZERO);
    }
    Amount::parse(field, text).map_err(|error| ClientError::Protocol(format!("settlement.{error}")))
}

fn parse_settlement(wire: v1::Settlement) -> Result<Settlement, ClientError> {
    let drawdown = wire
        .drawdown
        .into_iter()
        .map(|draw| {
            Ok(Draw {
                amount: wire_amount("drawdown.amount", &draw.amount)?,
                grant_id: draw.grant_id,
            })
        })
        .collect::<Result<Vec<_>, ClientError>>()?;
    Ok(Settlement {
        charged: wire_amount("charged", &wire.charged)?,
        balance_after: wire_amount("balance_after", &wire.balance_after)?,
        debt_created: wire_amount("debt_created", &wire.debt_created)?,
        from_hold: wire_amount("from_hold", &wire.from_hold)?,
        revenue: wire_amount("revenue", &wire.revenue)?,
        cost: wire_amount("cost", &wire.cost)?,
        margin: wire_amount("margin", &wire.margin)?,
        event_id: wire.event_id,
        account: wire.account,
        drawdown,
        price_book: wire.price_book,
        price_version: wire.price_version,
        settled_at_ms: wire.settled_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_settlement() -> v1::Settlement {
        v1::Settlement {
            event_id: "e1".into(),
            account: "acme".into(),
            charged: "12.5".into(),
            balance_after: "-0.25".into(),
            drawdown: vec![v1::Draw {
                grant_id: "g1".into(),
                amount: "12.25".into(),
            }],
            debt_created: "0.25".into(),
            from_hold: "".into(),
            revenue: "1.2".into(),
            cost: "0.4".into(),
            margin: "0.8".into(),
            price_book: Some("std".into()),
            price_version: 2,
            settled_at_ms: 7,
        }
    }

    #[test]
    fn parses_each_outcome_exactly() {
        use v1::usage_result::Outcome as Wire;
        let settled = UsageOutcome::from_wire(v1::UsageResult {
            outcome: Some(Wire::Settled(wire_settlement())),
        })
        .unwrap();
        assert_eq!(settled.kind(), "settled");
        let settlement = settled.settlement().unwrap();
        assert_eq!(settlement.charged.to_string(), "12.5");
        assert_eq!(settlement.balance_after.to_string(), "-0.25");
        assert_eq!(settlement.from_hold, Amount::ZERO);
        assert_eq!(settlement.drawdown[0].amount.to_string(), "12.25");

        let duplicate = UsageOutcome::from_wire(v1::UsageResult {
            outcome: Some(Wire::Duplicate(wire_settlement())),
        })
        .unwrap();
        assert_eq!(duplicate.kind(), "duplicate");
        assert_eq!(duplicate.settlement(), settled.settlement());

        let rejected = UsageOutcome::from_wire(v1::UsageResult {
            outcome: Some(Wire::Rejected(v1::Rejection {
                code: "insufficient_funds".into(),
                message: "not enough".into(),
                details: [("available".to_string(), "1".to_string())].into(),
            })),
        })
        .unwrap();
        match rejected {
            UsageOutcome::Rejected(rejection) => {
                assert_eq!(rejection.code, ErrorCode::InsufficientFunds);
                assert_eq!(rejection.details["available"], "1");
            }
            other => panic!("{other:?}"),
        }
        // A code from a newer server: internal here, its own code kept.
        let newer = UsageOutcome::from_wire(v1::UsageResult {
            outcome: Some(Wire::Rejected(v1::Rejection {
                code: "budget_exceeded".into(),
                message: "over budget".into(),
                details: Default::default(),
            })),
        })
        .unwrap();
        match newer {
            UsageOutcome::Rejected(rejection) => {
                assert_eq!(rejection.code, ErrorCode::Internal);
                assert_eq!(rejection.details["code"], "budget_exceeded");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_batch_summary_must_fit_its_batch() {
        use v1::usage_result::Outcome as Wire;
        let events: Vec<v1::UsageEvent> = ["e0", "e1", "e2"]
            .iter()
            .map(|id| v1::UsageEvent {
                event_id: id.to_string(),
                account: "acme".into(),
                ..Default::default()
            })
            .collect();
        let conflict = |index: u32| v1::IndexedUsageResult {
            index,
            result: Some(v1::UsageResult {
                outcome: Some(Wire::Conflict(v1::Conflict {
                    account: "acme".into(),
                    event_id: "e1".into(),
                })),
            }),
        };
        let reply = v1::RecordUsageBatchReply {
            unsettled: vec![conflict(1)],
            summary: Some(v1::BatchSummary {
                settled: 2,
                conflict: 1,
                revenue: "0.5".into(),
                cost: "0.25".into(),
                margin: "0.25".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let summary = BatchSummary::from_wire(&events, reply.clone()).unwrap();
        assert_eq!((summary.settled, summary.conflict), (2, 1));
        assert_eq!(summary.revenue.to_string(), "0.5");
        assert_eq!(summary.unsettled.len(), 1);
        assert_eq!(summary.unsettled[0].0, 1);
        assert_eq!(summary.unsettled[0].1.event_id, "e1");
        assert_eq!(summary.unsettled[0].1.outcome.kind(), "conflict");

        let broken = |change: &dyn Fn(&mut v1::RecordUsageBatchReply)| {
            let mut reply = reply.clone();
            change(&mut reply);
            BatchSummary::from_wire(&events, reply)
                .unwrap_err()
                .message()
        };
        assert!(broken(&|r| r.summary = None).contains("no summary"));
        assert!(broken(&|r| r.summary.as_mut().unwrap().settled = 3).contains("add up to 4"));
        assert!(broken(&|r| r.unsettled.clear()).contains("0 unsettled results"));
        assert!(broken(&|r| r.unsettled[0] = conflict(3)).contains("index 3 outside"));
        assert!(
            broken(&|r| r.summary.as_mut().unwrap().revenue = "x".into())
                .contains("summary.revenue")
        );
        let settled_listed = broken(&|r| {
            r.unsettled[0].result = Some(v1::UsageResult {
                outcome: Some(Wire::Settled(wire_settlement())),
            })
        });
        assert!(
            settled_listed.contains("listed as unsettled"),
            "{settled_listed}"
        );

        // A node of an earlier build answers every result and no summary: the same summary.
        let every = v1::RecordUsageBatchReply {
            results: vec![
                v1::UsageResult {
                    outcome: Some(Wire::Settled(wire_settlement())),
                },
                conflict(1).result.unwrap(),
                v1::UsageResult {
                    outcome: Some(Wire::Settled(wire_settlement())),
                },
            ],
            ..Default::default()
        };
        let summary = BatchSummary::from_wire(&events, every).unwrap();
        assert_eq!((summary.settled, summary.conflict), (2, 1));
        assert_eq!(summary.revenue.to_string(), "2.4");
        assert_eq!(summary.cost.to_string(), "0.8");
        assert_eq!(summary.margin.to_string(), "1.6");
        assert_eq!(summary.unsettled.len(), 1);
        assert_eq!(summary.unsettled[0].0, 1);
        assert_eq!(summary.unsettled[0].1.event_id, "e1");
    }

    #[test]
    fn malformed_replies_are_protocol_errors() {
        use v1::usage_result::Outcome as Wire;
        let mut bad = wire_settlement();
        bad.charged = "1e3".into();
        let error = UsageOutcome::from_wire(v1::UsageResult {
            outcome: Some(Wire::Settled(bad)),
        })
        .unwrap_err();
        assert_eq!(error.code(), ErrorCode::Internal);
        assert!(error.message().contains("charged"), "{error}");
        let error = UsageOutcome::from_wire(v1::UsageResult { outcome: None }).unwrap_err();
        assert_eq!(error.code(), ErrorCode::Internal);
    }
}
