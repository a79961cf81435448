//! Tally's ledger: a pure, deterministic balance state machine.
//!
//! Architecture Invariant: this crate does no I/O, reads no clock, draws no randomness and
//! iterates no hash map. Everything it knows arrives in an [`Entry`] (ledger time included),
//! so every replica that applies the same log reaches the same state, byte for byte. The
//! `purity` test and `make verify` keep tokio, sled, tonic, openraft and prost out of its
//! dependency tree.

mod account;
mod admin;
mod calendar;
pub mod command;
mod dedup;
mod dimensions;
mod dispatch;
mod effects;
pub mod error;
pub mod ids;
pub mod journal;
pub mod money;
pub mod outcome;
mod pricing;
mod report;
mod share;
pub mod state;
mod table;
mod usage;
pub mod validate;
mod vecmap;
pub mod view;

pub use admin::TIME_MS_MAX;
pub use calendar::{format_utc, month_of, month_start_ms, parse_month, parse_utc};
pub use command::*;
pub use dimensions::{Dimensions, RecentDimensions};
pub use error::InvalidInput;
pub use ids::*;
pub use journal::*;
pub use money::Amount;
pub use outcome::*;
pub use state::{
    ApplyResult, ApplySpare, LedgerState, SnapshotError, SnapshotStep, SnapshotWriter,
    SNAPSHOT_VERSION, SNAPSHOT_VERSION_READ_MIN,
};
pub use usage::carried_cost_scale;
pub use view::*;
