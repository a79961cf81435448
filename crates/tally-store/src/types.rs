//! The openraft type configuration shared by the store, the peer network and the server.

use serde::{Deserialize, Serialize};
use std::io::Cursor;

pub type NodeId = u64;

/// What applying one log entry answers to the proposer: one outcome per command, in order.
/// Membership and blank entries answer with no outcomes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryResponse {
    pub outcomes: Vec<tally_core::Outcome>,
}

openraft::declare_raft_types!(
    /// Tally's Raft types: the log carries `tally_core::Entry`.
    pub TypeConfig:
        D = tally_core::Entry,
        R = EntryResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
