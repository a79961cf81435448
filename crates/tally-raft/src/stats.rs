//! Counters of what the peer network did, shared by every clone of a `TallyNetwork`, for the
//! node's `/metrics` and for tests that must see that a path was really taken.

use std::sync::atomic::{AtomicU64, Ordering};

use openraft::error::RPCError;
use openraft::network::RPCTypes;

/// A snapshot of the counters (monotonic since the network was created).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Successful RPCs by kind.
    pub append_entries_ok: u64,
    pub votes_ok: u64,
    pub snapshot_chunks_ok: u64,
    /// Encoded bytes of the successful AppendEntries requests.
    pub append_entries_bytes: u64,
    /// The largest successful AppendEntries request, encoded.
    pub append_entries_bytes_max: u64,
    /// Appends refused as too large, so openraft retried with fewer entries.
    pub append_batches_split: u64,
    /// Appends that carried only a prefix of the entries openraft handed over, to stay near
    /// the byte target (answered as `PartialSuccess`).
    pub append_entries_cut: u64,
    /// Failures by the kind openraft saw.
    pub unreachable: u64,
    pub timeouts: u64,
    pub remote_errors: u64,
    pub network_errors: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    append_entries_ok: AtomicU64,
    votes_ok: AtomicU64,
    snapshot_chunks_ok: AtomicU64,
    append_entries_bytes: AtomicU64,
    append_entries_bytes_max: AtomicU64,
    append_batches_split: AtomicU64,
    append_entries_cut: AtomicU64,
    unreachable: AtomicU64,
    timeouts: AtomicU64,
    remote_errors: AtomicU64,
    network_errors: AtomicU64,
}

impl Counters {
    /// Counts one AppendEntries sent with only a prefix of its entries.
    pub(crate) fn record_cut(&self) {
        self.append_entries_cut.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one finished RPC of `action` whose request encoded to `request_bytes`.
    pub(crate) fn record<T, N, E>(
        &self,
        action: RPCTypes,
        request_bytes: usize,
        result: &Result<T, RPCError<u64, N, E>>,
    ) where
        N: openraft::Node,
        E: std::error::Error,
    {
        let counter = match (result, action) {
            (Ok(_), RPCTypes::AppendEntries) => {
                self.append_entries_bytes
                    .fetch_add(request_bytes as u64, Ordering::Relaxed);
                self.append_entries_bytes_max
                    .fetch_max(request_bytes as u64, Ordering::Relaxed);
                &self.append_entries_ok
            }
            (Ok(_), RPCTypes::Vote) => &self.votes_ok,
            (Ok(_), RPCTypes::InstallSnapshot) => &self.snapshot_chunks_ok,
            (Err(RPCError::PayloadTooLarge(_)), _) => &self.append_batches_split,
            (Err(RPCError::Unreachable(_)), _) => &self.unreachable,
            (Err(RPCError::Timeout(_)), _) => &self.timeouts,
            (Err(RPCError::RemoteError(_)), _) => &self.remote_errors,
            (Err(RPCError::Network(_)), _) => &self.network_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> NetworkStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        NetworkStats {
            append_entries_ok: load(&self.append_entries_ok),
            votes_ok: load(&self.votes_ok),
            snapshot_chunks_ok: load(&self.snapshot_chunks_ok),
            append_entries_bytes: load(&self.append_entries_bytes),
            append_entries_bytes_max: load(&self.append_entries_bytes_max),
            append_batches_split: load(&self.append_batches_split),
            append_entries_cut: load(&self.append_entries_cut),
            unreachable: load(&self.unreachable),
            timeouts: load(&self.timeouts),
            remote_errors: load(&self.remote_errors),
            network_errors: load(&self.network_errors),
        }
    }
}
