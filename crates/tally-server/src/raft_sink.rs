//! The proposer's [`EntrySink`] over openraft: `client_write_ff` hands entries to Raft in
//! order without waiting, and the returned receiver resolves once the entry is applied.

use openraft::error::ClientWriteError;
use tally_store::EncodedEntry;

use crate::node::Raft;
use crate::proposer::{AppliedEntry, BoxFuture, EntrySink, PendingEntry, ProposeError};

pub struct RaftSink {
    pub raft: Raft,
}

impl EntrySink for RaftSink {
    fn submit(
        &self,
        entry: tally_core::Entry,
    ) -> BoxFuture<'_, Result<PendingEntry, ProposeError>> {
        Box::pin(async move {
            // Encoded once here; the log record and every AppendEntries carry these bytes.
            let entry = EncodedEntry::new(entry).map_err(|error| ProposeError::Encode {
                reason: error.to_string(),
            })?;
            let receiver =
                self.raft
                    .client_write_ff(entry)
                    .await
                    .map_err(|fatal| ProposeError::Unknown {
                        reason: format!("raft stopped: {fatal}"),
                    })?;
            let pending: PendingEntry = Box::pin(async move {
                match receiver.await {
                    Ok(Ok(response)) => Ok(AppliedEntry {
                        log_index: response.log_id.index,
                        outcomes: response.data.outcomes,
                    }),
                    // openraft answers ForwardToLeader only for an entry it did not append, or
                    // one a new leader truncated: either way it will never be applied. (An
                    // entry a snapshot was installed over is never answered at all: the
                    // proposer gives up on it after `answer_wait_max`.)
                    Ok(Err(ClientWriteError::ForwardToLeader(forward))) => {
                        Err(ProposeError::NotLeader {
                            leader_id: forward.leader_id,
                        })
                    }
                    Ok(Err(ClientWriteError::ChangeMembershipError(error))) => {
                        Err(ProposeError::Unknown {
                            reason: format!(
                                "unexpected membership error for a ledger entry: {error}"
                            ),
                        })
                    }
                    // The responder was dropped: Raft shut down with the entry in its log. It may
                    // still commit under another leader.
                    Err(_) => Err(ProposeError::Unknown {
                        reason: "raft stopped before the entry was applied".to_string(),
                    }),
                }
            });
            Ok(pending)
        })
    }
}
