//! Sending usage and reading back only what the benchmark counts.
//!
//! The node builds and sends every settlement in full (event id, account, amounts, drawdown,
//! revenue, cost, margin...); a client that uses them decodes them all. The load generator
//! needs each result's outcome and, for a rejection, its code, so it decodes the replies with
//! the message types below: the same wire format as `tally.v1.RecordUsageReply` and
//! `RecordUsageBatchReply`, with the settlement bodies skipped instead of turned into strings.
//! On a machine where the generator shares the cores with the nodes, that leaves them the CPU
//! (`make bench` prints the generator's CPU per event next to the nodes').

use std::time::Duration;

use tally_proto::v1;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

use crate::connect::MESSAGE_BYTES_MAX;

/// `tally.v1.RecordUsageReply`, reading only the result's outcome.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CountedReply {
    #[prost(message, optional, tag = "1")]
    pub result: Option<CountedResult>,
}

/// `tally.v1.RecordUsageBatchReply`, reading only each result's outcome.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CountedBatchReply {
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<CountedResult>,
}

/// `tally.v1.UsageResult`: which outcome, and a rejection's code.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CountedResult {
    #[prost(oneof = "Counted", tags = "1, 2, 3, 4")]
    pub outcome: Option<Counted>,
}

/// The outcomes of `tally.v1.UsageResult` (same tags).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Counted {
    #[prost(message, tag = "1")]
    Settled(Skipped),
    #[prost(message, tag = "2")]
    Duplicate(Skipped),
    #[prost(message, tag = "3")]
    Conflict(Skipped),
    #[prost(message, tag = "4")]
    Rejected(RejectionCode),
}

/// A message whose fields are all skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Skipped {}

/// `tally.v1.Rejection`, its code only.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RejectionCode {
    #[prost(string, tag = "1")]
    pub code: String,
}

const RECORD_USAGE: &str = "/tally.v1.Ledger/RecordUsage";
const RECORD_USAGE_BATCH: &str = "/tally.v1.Ledger/RecordUsageBatch";

/// A connection to the leader that sends usage: RecordUsage for one event, RecordUsageBatch
/// for more. Cheap to clone (the channel is shared).
#[derive(Clone)]
pub struct UsageSender {
    grpc: tonic::client::Grpc<Channel>,
}

impl UsageSender {
    pub fn new(channel: Channel) -> Self {
        UsageSender {
            grpc: tonic::client::Grpc::new(channel)
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
        }
    }

    /// Sends `events` and returns one result per event, in order.
    pub async fn send(
        &mut self,
        mut events: Vec<v1::UsageEvent>,
        timeout: Duration,
    ) -> Result<Vec<CountedResult>, tonic::Status> {
        self.grpc.ready().await.map_err(|error| {
            tonic::Status::unavailable(format!("the connection is not ready: {error}"))
        })?;
        if events.len() == 1 {
            let mut request = tonic::Request::new(v1::RecordUsageRequest {
                event: events.pop(),
            });
            request.set_timeout(timeout);
            let codec = ProstCodec::<v1::RecordUsageRequest, CountedReply>::default();
            let reply = self
                .grpc
                .unary(request, PathAndQuery::from_static(RECORD_USAGE), codec)
                .await?;
            Ok(reply.into_inner().result.into_iter().collect())
        } else {
            let mut request = tonic::Request::new(v1::RecordUsageBatchRequest {
                events,
                atomic: false,
            });
            request.set_timeout(timeout);
            let codec = ProstCodec::<v1::RecordUsageBatchRequest, CountedBatchReply>::default();
            let reply = self
                .grpc
                .unary(
                    request,
                    PathAndQuery::from_static(RECORD_USAGE_BATCH),
                    codec,
                )
                .await?;
            Ok(reply.into_inner().results)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use v1::usage_result::Outcome;

    fn settlement(event_id: &str) -> v1::Settlement {
        v1::Settlement {
            event_id: event_id.to_string(),
            account: "acme".to_string(),
            charged: "1.2345".to_string(),
            balance_after: "98.7655".to_string(),
            drawdown: vec![v1::Draw {
                grant_id: "allowance".to_string(),
                amount: "1.2345".to_string(),
            }],
            revenue: "0.5".to_string(),
            cost: "0.1".to_string(),
            margin: "0.4".to_string(),
            price_book: Some("book".to_string()),
            price_version: 3,
            settled_at_ms: 1_700_000_000_000,
            ..Default::default()
        }
    }

    fn kind(outcome: &Option<Counted>) -> String {
        match outcome {
            Some(Counted::Settled(_)) => "settled".into(),
            Some(Counted::Duplicate(_)) => "duplicate".into(),
            Some(Counted::Conflict(_)) => "conflict".into(),
            Some(Counted::Rejected(rejection)) => format!("rejected {}", rejection.code),
            None => "none".into(),
        }
    }

    /// The counted types read the node's replies as the generated ones do: same outcome, same
    /// rejection code, for every kind of result, in order.
    #[test]
    fn counted_replies_read_what_the_full_replies_say() {
        let full = v1::RecordUsageBatchReply {
            results: vec![
                v1::UsageResult {
                    outcome: Some(Outcome::Settled(settlement("e1"))),
                },
                v1::UsageResult {
                    outcome: Some(Outcome::Duplicate(settlement("e2"))),
                },
                v1::UsageResult {
                    outcome: Some(Outcome::Conflict(v1::Conflict {
                        account: "acme".to_string(),
                        event_id: "e3".to_string(),
                    })),
                },
                v1::UsageResult {
                    outcome: Some(Outcome::Rejected(v1::Rejection {
                        code: "insufficient_funds".to_string(),
                        message: "available 1, required 2".to_string(),
                        details: [("available".to_string(), "1".to_string())].into(),
                    })),
                },
                v1::UsageResult { outcome: None },
            ],
            ..Default::default()
        };
        let counted = CountedBatchReply::decode(full.encode_to_vec().as_slice()).unwrap();
        let kinds: Vec<String> = counted
            .results
            .iter()
            .map(|result| kind(&result.outcome))
            .collect();
        assert_eq!(
            kinds,
            [
                "settled",
                "duplicate",
                "conflict",
                "rejected insufficient_funds",
                "none"
            ]
        );

        let single = v1::RecordUsageReply {
            result: Some(v1::UsageResult {
                outcome: Some(Outcome::Settled(settlement("e4"))),
            }),
            write: Some(v1::WriteInfo::default()),
        };
        let counted = CountedReply::decode(single.encode_to_vec().as_slice()).unwrap();
        assert_eq!(kind(&counted.result.unwrap().outcome), "settled");
    }
}
