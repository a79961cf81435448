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
            Some(Wire::Rejected(rejection)) => Ok(UsageOutcome::Rejected(Rejection {
                code: ErrorCode::parse(&rejection.code).unwrap_or(ErrorCode::Internal),
                message: rejection.message,
                details: rejection.details.into_iter().collect(),
            })),
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
