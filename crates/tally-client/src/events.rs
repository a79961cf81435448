//! [`EventSubscription`]: a resumable stream of ledger events (low balance, expiries...).

use tally_proto::v1;

use crate::client::Client;
use crate::error::ClientError;

/// Reopens of the stream in a row without receiving an event before giving up.
const REOPENS_IN_A_ROW_MAX: u32 = 10;

/// Events in sequence order, without gaps or repeats across reconnects: after a lost stream
/// (the node restarted, or went silent and the client's pings gave it up) it asks again from
/// the last sequence number seen plus one, on whichever node answers. A node that lacks some
/// events (damage) answers `internal` naming the missing seqs, and so does the subscription
/// itself if a stream ever skips one: an error, not a silent jump.
pub struct EventSubscription {
    client: Client,
    next_seq: u64,
    follow: bool,
    stream: Option<tonic::Streaming<v1::LedgerEvent>>,
    reopens_in_a_row: u32,
    finished: bool,
}

impl EventSubscription {
    pub(crate) fn new(client: Client, from_seq: u64, follow: bool) -> EventSubscription {
        EventSubscription {
            client,
            next_seq: from_seq.max(1),
            follow,
            stream: None,
            reopens_in_a_row: 0,
            finished: false,
        }
    }

    /// The sequence number the next event will have at least.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next event; `None` once caught up (without `follow`).
    pub async fn next(&mut self) -> Result<Option<v1::LedgerEvent>, ClientError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let stream = self
                        .client
                        .open_event_stream(self.next_seq, self.follow)
                        .await?;
                    self.stream.insert(stream)
                }
            };
            match stream.message().await {
                Ok(Some(event)) => {
                    self.reopens_in_a_row = 0;
                    if event.seq < self.next_seq {
                        // Already delivered before a reconnect.
                        continue;
                    }
                    if event.seq > self.next_seq {
                        // The node skipped events (tallyd refuses to; an older build did not).
                        self.stream = None;
                        return Err(ClientError::Api(Box::new(
                            tally_proto::TallyError::internal(format!(
                                "the event stream skipped seq {}..={}; read them from another node",
                                self.next_seq,
                                event.seq - 1
                            ))
                            .with_detail("from_seq", self.next_seq.to_string()),
                        )));
                    }
                    self.next_seq = event.seq + 1;
                    return Ok(Some(event));
                }
                Ok(None) if !self.follow => {
                    self.finished = true;
                    return Ok(None);
                }
                // A followed stream that ends (node shutting down) or fails is reopened from
                // where it stopped, on whichever node answers.
                Ok(None) => self.reopen().await?,
                Err(status) => {
                    // A status without a Tally code is the transport's (a reset, a connection
                    // closed by its pings): resumed like any transient error, as reading
                    // events again changes nothing.
                    let from_node = status
                        .metadata()
                        .contains_key(tally_proto::error::CODE_METADATA_KEY);
                    let error = tally_proto::TallyError::from_status(&status);
                    if from_node && !error.code.is_transient() {
                        self.stream = None;
                        return Err(ClientError::Api(Box::new(error)));
                    }
                    self.reopen().await?;
                }
            }
        }
    }

    async fn reopen(&mut self) -> Result<(), ClientError> {
        self.stream = None;
        self.reopens_in_a_row += 1;
        if self.reopens_in_a_row > REOPENS_IN_A_ROW_MAX {
            return Err(ClientError::Api(Box::new(
                tally_proto::TallyError::unavailable(format!(
                    "the event stream broke {REOPENS_IN_A_ROW_MAX} times in a row at seq {}",
                    self.next_seq
                )),
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(
            100 * u64::from(self.reopens_in_a_row),
        ))
        .await;
        Ok(())
    }
}
