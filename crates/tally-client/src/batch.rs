//! [`UsageBatcher`]: collects usage events and sends them as `RecordUsageBatch` calls of up to
//! `batch_events_max` events and `batch_bytes_max` bytes, optionally several batches in
//! flight, for high-volume ingest.

use std::collections::VecDeque;

use tally_core::BATCH_EVENTS_MAX;
use tally_proto::v1;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::{checked_locally, ClientError};
use crate::usage::EventOutcome;

/// Most batches one batcher keeps in flight.
pub const IN_FLIGHT_MAX: usize = 64;

/// The default cap on one batch request's encoded size: tallyd's default
/// `limits.request_bytes_max` (4 MiB). A cluster configured lower needs
/// [`UsageBatcher::with_batch_bytes_max`].
pub const BATCH_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;

/// The smallest byte cap accepted (tallyd's own floor for `request_bytes_max`).
pub const BATCH_BYTES_MAX_MIN: usize = 1024;

/// A batch request's bytes besides its events: `atomic` and `reply` (a tag and a varint each).
const REQUEST_FIELDS_BYTES: usize = 16;

type BatchTask = JoinHandle<Result<Vec<EventOutcome>, ClientError>>;

/// Buffers events; each full buffer becomes one batch (one log entry). Outcomes come back per
/// event, in the order the events were pushed, whatever order the batches finish in, except
/// for a batch re-sent by `flush` after a failure: its outcomes come after those of batches
/// pushed later.
///
/// With more than one batch in flight, batches may settle in another order than they were
/// pushed (an account that runs out of funds may reject a different event); keep one in flight
/// when file order must decide.
///
/// Dropping it drops what is buffered and the outcomes not yet returned: end with `flush`
/// (until it succeeds, and `unanswered_len()` is 0).
#[must_use = "events pushed are only sent and answered by push and flush"]
pub struct UsageBatcher {
    client: Client,
    batch_events_max: usize,
    batch_bytes_max: usize,
    atomic: bool,
    in_flight_max: usize,
    pending: Vec<v1::UsageEvent>,
    /// `pending` as the request's `events` field encodes it.
    pending_bytes: usize,
    /// Batch calls started, resends of failed batches included.
    batches_sent: u64,
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
    /// each batch settles all or nothing. One batch in flight at a time. A batch is also cut
    /// before its request would pass [`BATCH_BYTES_MAX_DEFAULT`] bytes (events with long ids
    /// or many dimensions), as the cluster refuses a larger request whole.
    pub fn new(client: Client, batch_events_max: usize, atomic: bool) -> UsageBatcher {
        let batch_events_max = batch_events_max.clamp(1, BATCH_EVENTS_MAX);
        UsageBatcher {
            client,
            batch_events_max,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            atomic,
            in_flight_max: 1,
            pending: Vec::with_capacity(batch_events_max),
            pending_bytes: 0,
            batches_sent: 0,
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

    /// Cuts each batch before its encoded request would pass `batch_bytes_max` bytes (at
    /// least 1,024): set it to the cluster's `limits.request_bytes_max` when that is not the
    /// default. An event larger than that on its own goes alone and is refused
    /// (`request_too_large`, see [`UsageBatcher::take_refused`]).
    pub fn with_batch_bytes_max(mut self, batch_bytes_max: usize) -> UsageBatcher {
        self.batch_bytes_max = batch_bytes_max.max(BATCH_BYTES_MAX_MIN);
        self
    }

    pub fn batch_events_max(&self) -> usize {
        self.batch_events_max
    }

    pub fn batch_bytes_max(&self) -> usize {
        self.batch_bytes_max
    }

    /// Batch calls started so far (a failed batch sent again counts again).
    pub fn batches_sent(&self) -> u64 {
        self.batches_sent
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

    /// The events of batches the cluster refused as a whole, saying so (`invalid_argument`,
    /// `request_too_large` with the ledger's code): nothing of them settled and they are not
    /// sent again; fix them and push them anew. (An event the client's own checks refuse is
    /// refused by `push` alone, and never buffered; a batch whose outcome is unknown, even
    /// after an error that will not go away by itself, stays unanswered, never here.)
    pub fn take_refused(&mut self) -> Vec<v1::UsageEvent> {
        std::mem::take(&mut self.refused)
    }

    /// The events of batches whose outcome is unknown and that `flush` would send again (each
    /// batch as it was sent). For a batch that keeps failing with an error that will not go
    /// away by itself (a reply above the client's `reply_bytes_max`): take it out to send it
    /// yourself, with the same ids (what settled answers `duplicate`), never under new ones.
    pub fn take_failed(&mut self) -> Vec<Vec<v1::UsageEvent>> {
        std::mem::take(&mut self.failed)
    }

    /// Adds an event. When that fills a batch it is sent; the outcomes of every batch that
    /// finished meanwhile come back (in push order; often none). On a transient error (the
    /// outcome unknown) the failed batch is kept (same events, same ids) and `flush` sends it
    /// again; its outcomes then come after those of batches pushed later. On a permanent
    /// error the batch is set aside ([`UsageBatcher::take_refused`]). Either way the error is
    /// returned, and outcomes already collected come with the next successful call.
    ///
    /// The event is checked first, as the cluster would check it alone: a bad value is
    /// [`ClientError::Invalid`] naming the field, the event is not buffered, and the others
    /// go on as if it had not been pushed.
    pub async fn push(&mut self, event: v1::UsageEvent) -> Result<Vec<EventOutcome>, ClientError> {
        checked_locally(tally_proto::convert::check_usage_event(&event))?;
        let bytes = event_field_bytes(&event);
        let room = self.batch_bytes_max.saturating_sub(REQUEST_FIELDS_BYTES);
        // What is buffered goes first when this event would take the request past the cap.
        let full = (!self.pending.is_empty() && self.pending_bytes + bytes > room)
            .then(|| self.take_pending());
        self.pending.push(event);
        self.pending_bytes += bytes;
        if full.is_none() && self.pending.len() < self.batch_events_max {
            return Ok(Vec::new());
        }
        if let Some(events) = full {
            self.send(events);
        }
        if self.pending.len() >= self.batch_events_max {
            // Sent only once there is room: on an error it stays buffered for `flush`.
            self.wait_for_room().await?;
            let events = self.take_pending();
            self.send(events);
        }
        self.wait_for_room().await?;
        Ok(std::mem::take(&mut self.ready))
    }

    /// Waits until fewer than `in_flight_max` batches are in flight.
    async fn wait_for_room(&mut self) -> Result<(), ClientError> {
        while self.in_flight.len() >= self.in_flight_max {
            self.finish_oldest().await?;
        }
        Ok(())
    }

    fn take_pending(&mut self) -> Vec<v1::UsageEvent> {
        self.pending_bytes = 0;
        std::mem::take(&mut self.pending)
    }

    /// Sends what is buffered and any batch that failed before (at most `in_flight_max` at
    /// once), waits for every batch in flight, and returns their outcomes in push order. On an
    /// error, what was not sent yet stays for the next `flush`.
    pub async fn flush(&mut self) -> Result<Vec<EventOutcome>, ClientError> {
        // Failed batches went out before anything still in flight was pushed... or after; a
        // retry cannot keep the original order, and does not need to: ids make it safe.
        let mut to_send: VecDeque<Vec<v1::UsageEvent>> = std::mem::take(&mut self.failed).into();
        if !self.pending.is_empty() {
            to_send.push_back(self.take_pending());
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
        self.batches_sent += 1;
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

/// What `event` adds to a `RecordUsageBatchRequest`: its field tag, length and message.
fn event_field_bytes(event: &v1::UsageEvent) -> usize {
    use prost::Message;
    let len = event.encoded_len();
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn event_bytes_add_up_to_the_request() {
        let events: Vec<v1::UsageEvent> = (0..300)
            .map(|i| {
                let mut event = crate::usage_event(&format!("e-{i}"), "acme", "tokens", "1", 1);
                // Long enough that some length prefixes take two and three bytes.
                event.dimensions = (0..i % 17)
                    .map(|d| v1::KeyValue {
                        key: format!("k{d}"),
                        value: "v".repeat(i * 7 % 256),
                    })
                    .collect();
                event
            })
            .collect();
        let request = v1::RecordUsageBatchRequest {
            events: events.clone(),
            atomic: true,
            reply: v1::BatchReply::UnsettledOnly as i32,
        };
        let counted: usize = events.iter().map(event_field_bytes).sum();
        let encoded = request.encoded_len();
        assert!(counted <= encoded && encoded <= counted + REQUEST_FIELDS_BYTES);
    }
}
