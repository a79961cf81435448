//! Sending usage and reading back only what the benchmark counts.
//!
//! The load generator needs each result's outcome and, for a rejection, its code. A batch is
//! sent asking for the unsettled events only (`BATCH_REPLY_UNSETTLED_ONLY`, what a
//! high-volume ingest client would ask for; `--batch-reply every` asks for every result): the
//! reply holds the counts and the exceptions. A full reply (one event, or every result) builds
//! and sends every settlement in full (event id, account, amounts, drawdown, revenue, cost,
//! margin...); the generator decodes those with the message types below: the same wire format
//! as `tally.v1.RecordUsageReply` and `RecordUsageBatchReply`, with the settlement bodies
//! skipped instead of turned into strings. On a machine where the generator shares the cores
//! with the nodes, that leaves them the CPU (`make bench` prints the generator's CPU per event
//! next to the nodes').

use std::time::Duration;

use prost::Message;
use tally_client::UsageOutcome;
use tally_proto::{v1, TallyError};

use crate::workload::UsageRequest;
use tally_client::unary::{Connection, RECORD_USAGE_BATCH_PATH, RECORD_USAGE_PATH};

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

/// What one reply said, counted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub settled: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    /// The code of each rejection.
    pub rejections: Vec<String>,
    /// Results without an outcome (a broken reply).
    pub empty: u64,
}

impl Counts {
    fn of_results(results: impl IntoIterator<Item = CountedResult>) -> Counts {
        let mut counts = Counts::default();
        for result in results {
            counts.add(result.outcome);
        }
        counts
    }

    fn add(&mut self, outcome: Option<Counted>) {
        match outcome {
            Some(Counted::Settled(_)) => self.settled += 1,
            Some(Counted::Duplicate(_)) => self.duplicates += 1,
            Some(Counted::Conflict(_)) => self.conflicts += 1,
            Some(Counted::Rejected(rejection)) => self.rejections.push(rejection.code),
            None => self.empty += 1,
        }
    }

    /// A `BATCH_REPLY_UNSETTLED_ONLY` reply to `events` events: the summary's settled count,
    /// the listed exceptions one by one; a reply whose counts do not add up to the batch
    /// counts the difference as empty results.
    fn of_unsettled(reply: UnsettledBatchReply, events: u64) -> Counts {
        let mut counts = Counts::default();
        let Some(summary) = reply.summary else {
            if !reply.results.is_empty() {
                // A node of an earlier build: every result, no summary.
                let mut counts = Counts::of_results(reply.results);
                counts.empty += events.saturating_sub(counts.total());
                return counts;
            }
            counts.empty = events;
            return counts;
        };
        counts.settled = u64::from(summary.settled);
        for listed in reply.unsettled {
            counts.add(listed.result.and_then(|result| result.outcome));
        }
        counts.empty += events.saturating_sub(counts.total());
        counts
    }

    fn add_outcome(&mut self, outcome: &UsageOutcome) {
        match outcome {
            UsageOutcome::Settled(_) => self.settled += 1,
            UsageOutcome::Duplicate(_) => self.duplicates += 1,
            UsageOutcome::Conflict { .. } => self.conflicts += 1,
            UsageOutcome::Rejected(rejection) => {
                self.rejections.push(rejection.code.as_str().to_string())
            }
        }
    }

    /// Results counted, of every kind.
    fn total(&self) -> u64 {
        self.settled + self.duplicates + self.conflicts + self.rejections.len() as u64 + self.empty
    }
}

/// `tally.v1.RecordUsageBatchReply` as `BATCH_REPLY_UNSETTLED_ONLY` fills it, reading the
/// summary's settled count and each listed result's outcome (and every result, which a node
/// of an earlier build sends instead).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnsettledBatchReply {
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<CountedResult>,
    #[prost(message, repeated, tag = "2")]
    pub unsettled: Vec<ListedResult>,
    #[prost(message, optional, tag = "3")]
    pub summary: Option<SettledCount>,
}

/// `tally.v1.IndexedUsageResult`, its result's outcome.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListedResult {
    #[prost(message, optional, tag = "2")]
    pub result: Option<CountedResult>,
}

/// `tally.v1.BatchSummary`, its settled count.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SettledCount {
    #[prost(uint32, tag = "1")]
    pub settled: u32,
}

/// What sends usage: RecordUsage for one event, RecordUsageBatch for more. Cheap to clone
/// (clones share the connections).
#[derive(Clone)]
pub struct UsageSender {
    via: Via,
    /// Batches ask for every result instead of the unsettled ones only.
    every_result: bool,
}

#[derive(Clone)]
enum Via {
    /// gRPC unary calls on a bare HTTP/2 connection to the leader
    /// (`tally_client::unary`), every error counted as it comes.
    Connection(Connection),
    /// `tally-client`'s `Client`, as an application sends (`--via client`): its retries and
    /// leader-following included, every reply parsed into amounts.
    Client(tally_client::Client),
}

impl UsageSender {
    pub fn new(connection: Connection, every_result: bool) -> Self {
        UsageSender {
            via: Via::Connection(connection),
            every_result,
        }
    }

    /// Usage sent through `client` (`--via client`).
    pub fn through_client(client: tally_client::Client, every_result: bool) -> Self {
        UsageSender {
            via: Via::Client(client),
            every_result,
        }
    }

    /// What batches ask the reply to list.
    pub fn batch_reply(&self) -> v1::BatchReply {
        if self.every_result {
            v1::BatchReply::EveryResult
        } else {
            v1::BatchReply::UnsettledOnly
        }
    }

    /// Sends `request` (its batches asking for [`Self::batch_reply`]) and counts the outcomes.
    pub async fn send(
        &mut self,
        request: UsageRequest,
        timeout: Duration,
    ) -> Result<Counts, tonic::Status> {
        let connection = match &self.via {
            Via::Connection(connection) => connection,
            Via::Client(client) => {
                return send_through_client(client, request, self.every_result)
                    .await
                    .map_err(|error| TallyError::new(error.code(), error.to_string()).to_status())
            }
        };
        let (request, event_count) = match request {
            UsageRequest::One(request) => {
                let reply: CountedReply =
                    unary(connection, RECORD_USAGE_PATH, &request, timeout).await?;
                return Ok(Counts::of_results(reply.result));
            }
            UsageRequest::Batch { request, events } => (request, events),
        };
        if self.every_result {
            let reply: CountedBatchReply =
                unary(connection, RECORD_USAGE_BATCH_PATH, &request, timeout).await?;
            Ok(Counts::of_results(reply.results))
        } else {
            let reply: UnsettledBatchReply =
                unary(connection, RECORD_USAGE_BATCH_PATH, &request, timeout).await?;
            Ok(Counts::of_unsettled(reply, event_count))
        }
    }
}

/// One unary call of `path` on `connection`, its reply decoded as `Reply` (a reading of the
/// real one).
async fn unary<Reply>(
    connection: &Connection,
    path: &'static str,
    message: &impl Message,
    timeout: Duration,
) -> Result<Reply, tonic::Status>
where
    Reply: prost::Message + Default,
{
    let reply = connection.unary(path, message, timeout).await?;
    Reply::decode(reply)
        .map_err(|error| tonic::Status::internal(format!("{path}: the reply: {error}")))
}

/// `request` sent with `client`'s `record_usage`, `record_usage_batch` (every result) or
/// `record_usage_batch_unsettled`, its outcomes counted. The client bounds each attempt by
/// its own request timeout.
async fn send_through_client(
    client: &tally_client::Client,
    request: UsageRequest,
    every_result: bool,
) -> Result<Counts, tally_client::ClientError> {
    let mut counts = Counts::default();
    let (events, atomic) = match request {
        UsageRequest::One(request) => {
            let event = request.event.unwrap_or_default();
            counts.add_outcome(&client.record_usage(event).await?);
            return Ok(counts);
        }
        UsageRequest::Batch { request, .. } => {
            let request =
                v1::RecordUsageBatchRequest::decode(request.bytes().clone()).map_err(|error| {
                    tally_client::ClientError::Protocol(format!("the batch built: {error}"))
                })?;
            (request.events, request.atomic)
        }
    };
    if every_result {
        for outcome in client.record_usage_batch(events, atomic).await? {
            counts.add_outcome(&outcome.outcome);
        }
    } else {
        let summary = client.record_usage_batch_unsettled(events, atomic).await?;
        counts.settled = u64::from(summary.settled);
        for (_, outcome) in &summary.unsettled {
            counts.add_outcome(&outcome.outcome);
        }
    }
    Ok(counts)
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

    /// An unsettled-only reply, read with the counting types: the summary's settled count and
    /// each listed exception; counts that fall short of the batch are empty results.
    #[test]
    fn unsettled_only_replies_are_counted_like_full_ones() {
        let full = v1::RecordUsageBatchReply {
            unsettled: vec![
                v1::IndexedUsageResult {
                    index: 1,
                    result: Some(v1::UsageResult {
                        outcome: Some(Outcome::Duplicate(settlement("e2"))),
                    }),
                },
                v1::IndexedUsageResult {
                    index: 3,
                    result: Some(v1::UsageResult {
                        outcome: Some(Outcome::Rejected(v1::Rejection {
                            code: "no_rate".to_string(),
                            ..Default::default()
                        })),
                    }),
                },
            ],
            summary: Some(v1::BatchSummary {
                settled: 3,
                duplicate: 1,
                rejected: 1,
                revenue: "1.5".to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let read = |events| {
            Counts::of_unsettled(
                UnsettledBatchReply::decode(full.encode_to_vec().as_slice()).unwrap(),
                events,
            )
        };
        let expected = Counts {
            settled: 3,
            duplicates: 1,
            rejections: vec!["no_rate".to_string()],
            ..Default::default()
        };
        assert_eq!(read(5), expected);
        assert_eq!(
            read(7),
            Counts {
                empty: 2,
                ..expected
            }
        );
        // A node of an earlier build: every result, no summary.
        let earlier = v1::RecordUsageBatchReply {
            results: vec![
                v1::UsageResult {
                    outcome: Some(Outcome::Settled(settlement("e1"))),
                },
                v1::UsageResult {
                    outcome: Some(Outcome::Duplicate(settlement("e2"))),
                },
            ],
            ..Default::default()
        };
        let counts = Counts::of_unsettled(
            UnsettledBatchReply::decode(earlier.encode_to_vec().as_slice()).unwrap(),
            2,
        );
        assert_eq!((counts.settled, counts.duplicates, counts.empty), (1, 1, 0));
        let no_summary = v1::RecordUsageBatchReply::default();
        let counts = Counts::of_unsettled(
            UnsettledBatchReply::decode(no_summary.encode_to_vec().as_slice()).unwrap(),
            4,
        );
        assert_eq!(counts.empty, 4);
    }
}
