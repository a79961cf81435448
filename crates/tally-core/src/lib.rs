//! Tally's ledger: a pure, deterministic balance state machine.
//!
//! Architecture Invariant: this crate does no I/O, reads no clock, draws no randomness and
//! iterates no hash map. Everything it knows arrives in an [`Entry`] (ledger time included),
//! so every replica that applies the same log reaches the same state, byte for byte. The
//! `purity` test and `make verify` keep tokio, sled, tonic, openraft and prost out of its
//! dependency tree.

pub mod command;
pub mod error;
pub mod ids;
pub mod journal;
pub mod money;
pub mod outcome;
pub mod state;
pub mod view;

pub use command::*;
pub use error::InvalidInput;
pub use ids::*;
pub use journal::*;
pub use money::Amount;
pub use outcome::*;
pub use state::{ApplyResult, LedgerState, SnapshotError};
pub use view::*;
