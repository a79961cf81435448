//! [`UsageBatcher`]: collects usage events and sends them as `RecordUsageBatch` calls of up to
//! `batch_events_max` events, for high-volume ingest.

use tally_core::BATCH_EVENTS_MAX;
use tally_proto::v1;

use crate::client::Client;
use crate::error::ClientError;
use crate::usage::EventOutcome;

/// Buffers events; each full buffer becomes one batch (one log entry). Outcomes come back per
/// event, in the order the events were pushed.
pub struct UsageBatcher {
    client: Client,
    batch_events_max: usize,
    atomic: bool,
    pending: Vec<v1::UsageEvent>,
}

impl UsageBatcher {
    /// `batch_events_max` is clamped to 1..=8,190 (the ledger's limit per batch). With `atomic`
    /// each batch settles all or nothing.
    pub fn new(client: Client, batch_events_max: usize, atomic: bool) -> UsageBatcher {
        let batch_events_max = batch_events_max.clamp(1, BATCH_EVENTS_MAX);
        UsageBatcher {
            client,
            batch_events_max,
            atomic,
            pending: Vec::with_capacity(batch_events_max),
        }
    }

    pub fn batch_events_max(&self) -> usize {
        self.batch_events_max
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Adds an event; when that fills a batch, sends it and returns its outcomes. On an error
    /// the batch stays buffered (same events, same ids) so that a later `flush` retries it.
    pub async fn push(
        &mut self,
        event: v1::UsageEvent,
    ) -> Result<Option<Vec<EventOutcome>>, ClientError> {
        self.pending.push(event);
        if self.pending.len() >= self.batch_events_max {
            return self.flush().await.map(Some);
        }
        Ok(None)
    }

    /// Sends what is buffered (nothing to send gives no outcomes).
    pub async fn flush(&mut self) -> Result<Vec<EventOutcome>, ClientError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let outcomes = self
            .client
            .record_usage_batch(self.pending.clone(), self.atomic)
            .await?;
        self.pending.clear();
        Ok(outcomes)
    }
}
