//! [`UsageBatcher`]: collects usage events and sends them as `RecordUsageBatch` calls of up to
//! `batch_events_max` events, optionally several batches in flight, for high-volume ingest.

use std::collections::VecDeque;

use tally_core::BATCH_EVENTS_MAX;
use tally_proto::v1;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::ClientError;
use crate::usage::EventOutcome;

/// Most batches one batcher keeps in flight.
pub const IN_FLIGHT_MAX: usize = 64;

type BatchTask = JoinHandle<Result<Vec<EventOutcome>, ClientError>>;

/// Buffers events; each full buffer becomes one batch (one log entry). Outcomes come back per
/// event, in the order the events were pushed, whatever order the batches finish in.
///
/// With more than one batch in flight, batches may settle in another order than they were
/// pushed (an account that runs out of funds may reject a different event); keep one in flight
/// when file order must decide.
pub struct UsageBatcher {
    client: Client,
    batch_events_max: usize,
    atomic: bool,
    in_flight_max: usize,
    pending: Vec<v1::UsageEvent>,
    in_flight: VecDeque<(Vec<v1::UsageEvent>, BatchTask)>,
    /// Batches whose call failed (outcome unknown): sent again, same ids, by the next `flush`.
    failed: Vec<Vec<v1::UsageEvent>>,
    /// Batches refused as a whole (a permanent error: nothing of them settled); not sent
    /// again, handed back by [`UsageBatcher::take_refused`].
    refused: Vec<v1::UsageEvent>,
    /// Outcomes collected but not yet returned (a later batch failed in the same call).
    ready: Vec<EventOutcome>,
}

impl UsageBatcher {
    /// `batch_events_max` is clamped to 1..=8,190 (the ledger's limit per batch). With `atomic`
    /// each batch settles all or nothing. One batch in flight at a time.
    pub fn new(client: Client, batch_events_max: usize, atomic: bool) -> UsageBatcher {
        let batch_events_max = batch_events_max.clamp(1, BATCH_EVENTS_MAX);
        UsageBatcher {
            client,
            batch_events_max,
            atomic,
            in_flight_max: 1,
            pending: Vec::with_capacity(batch_events_max),
            in_flight: VecDeque::new(),
            failed: Vec::new(),
            refused: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// Up to `in_flight_max` (1..=64) batches sent concurrently (the cluster commits
    /// concurrent batches together, so this raises throughput).
    pub fn with_in_flight(mut self, in_flight_max: usize) -> UsageBatcher {
        self.in_flight_max = in_flight_max.clamp(1, IN_FLIGHT_MAX);
        self
    }

    pub fn batch_events_max(&self) -> usize {
        self.batch_events_max
    }

    /// Events buffered and not yet sent.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Events sent whose outcomes have not been returned yet (in flight or failed).
    pub fn unanswered_len(&self) -> usize {
        self.in_flight
            .iter()
            .map(|(events, _)| events.len())
            .chain(self.failed.iter().map(Vec::len))
            .sum()
    }

    /// The events of batches the cluster (or the client's own checks) refused as a whole with
    /// a permanent error (`invalid_argument`, `request_too_large`): nothing of them settled
    /// and they are not sent again; fix them and push them anew.
    pub fn take_refused(&mut self) -> Vec<v1::UsageEvent> {
        std::mem::take(&mut self.refused)
    }

    /// Adds an event. When that fills a batch it is sent; the outcomes of every batch that
    /// finished meanwhile come back (in push order; often none). On a transient error (the
    /// outcome unknown) the failed batch is kept (same events, same ids) and `flush` sends it
    /// again; its outcomes then come after those of batches pushed later. On a permanent
    /// error the batch is set aside ([`UsageBatcher::take_refused`]). Either way the error is
    /// returned, and outcomes already collected come with the next successful call.
    pub async fn push(&mut self, event: v1::UsageEvent) -> Result<Vec<EventOutcome>, ClientError> {
        self.pending.push(event);
        if self.pending.len() < self.batch_events_max {
            return Ok(Vec::new());
        }
        let events = std::mem::take(&mut self.pending);
        self.send(events);
        while self.in_flight.len() >= self.in_flight_max {
            self.finish_oldest().await?;
        }
        Ok(std::mem::take(&mut self.ready))
    }

    /// Sends what is buffered and any batch that failed before (at most `in_flight_max` at
    /// once), waits for every batch in flight, and returns their outcomes in push order. On an
    /// error, what was not sent yet stays for the next `flush`.
    pub async fn flush(&mut self) -> Result<Vec<EventOutcome>, ClientError> {
        // Failed batches went out before anything still in flight was pushed... or after; a
        // retry cannot keep the original order, and does not need to: ids make it safe.
        let mut to_send: VecDeque<Vec<v1::UsageEvent>> = std::mem::take(&mut self.failed).into();
        if !self.pending.is_empty() {
            to_send.push_back(std::mem::take(&mut self.pending));
        }
        while let Some(events) = to_send.pop_front() {
            while self.in_flight.len() >= self.in_flight_max {
                if let Err(error) = self.finish_oldest().await {
                    to_send.push_front(events);
                    self.failed.extend(to_send);
                    return Err(error);
                }
            }
            self.send(events);
        }
        while !self.in_flight.is_empty() {
            self.finish_oldest().await?;
        }
        Ok(std::mem::take(&mut self.ready))
    }

    fn send(&mut self, events: Vec<v1::UsageEvent>) {
        let client = self.client.clone();
        let atomic = self.atomic;
        let batch = events.clone();
        let task = tokio::spawn(async move { client.record_usage_batch(batch, atomic).await });
        self.in_flight.push_back((events, task));
    }

    /// Waits for the oldest batch in flight; its outcomes join `ready`.
    async fn finish_oldest(&mut self) -> Result<(), ClientError> {
        let Some((events, task)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let result = task.await.unwrap_or_else(|join_error| {
            Err(ClientError::Protocol(format!(
                "the batch task ended abnormally: {join_error}"
            )))
        });
        match result {
            Ok(outcomes) => {
                self.ready.extend(outcomes);
                Ok(())
            }
            Err(error) => {
                // Refused before anything could settle (a bad value, too large): sending it
                // again would fail again. Anything else leaves the outcome unknown: retried.
                let refused = matches!(
                    error.code(),
                    tally_proto::ErrorCode::InvalidArgument
                        | tally_proto::ErrorCode::RequestTooLarge
                );
                if refused {
                    self.refused.extend(events);
                } else {
                    self.failed.push(events);
                }
                Err(error)
            }
        }
    }
}
