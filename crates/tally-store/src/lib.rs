//! Storage for a Tally node: openraft's log and state machine over sled.

pub mod types;

pub use types::{EntryResponse, NodeId, TypeConfig};
