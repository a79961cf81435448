//! Tally's gRPC API and the conversions between wire and core types.
//!
//! Public API (for tally-server, tally-client, tally-cli):
//! - [`v1`]: prost messages and tonic services generated from `proto/tally/v1/*.proto`:
//!   `v1::ledger_server::{Ledger, LedgerServer}`, `v1::admin_server::{Admin, AdminServer}`,
//!   `v1::raft_server::{Raft, RaftServer}` and the matching `*_client::*Client`.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptor set, for gRPC reflection.
//! - [`error`]: [`ErrorCode`] (the stable codes, `as_str()`, `grpc_code()`), [`TallyError`]
//!   (`to_status()` / `from_status()`: the `tally-code`, `tally-leader-id`, `tally-leader-addr`
//!   metadata plus an encoded `v1::ErrorInfo` in the status details).
//! - [`ingest`]: the Ledger service as tally-server runs it: `v1`'s, except that a
//!   `RecordUsageBatchRequest` arrives as its bytes ([`ingest::RecordUsageBatchWire`]) and is
//!   read straight into core events (the same checks and errors as [`ToCommand`] on prost's
//!   message, a third of the instructions per event).
//! - [`convert`]: wire -> core with [`ToCommand::to_command`] on every write request (validation
//!   errors name the field path: `events[3].quantity: must be >= 0, got -1`); read parameters
//!   (`consistency`, `history_limit`, `parse_month`); core -> wire for outcomes
//!   (`usage_result`, `record_usage_reply`, `add_grant_reply`, ... which turn non-usage
//!   rejections into a [`TallyError`]), views (`account`, `asset`, `report`, `price_version`),
//!   `journal_entry` and `ledger_event`; the lower-case names of wire enums both ways
//!   (`grant_category_name`, `parse_grant_category`, `account_status_name`, `node_role_name`...).
//!
//! Wire conventions: amounts are exact decimal strings in canonical form (no exponent, no
//! trailing zeros: `"1.5"`, `"-3"`); times are `*_ms` since the Unix epoch.

pub mod convert;
pub mod error;
pub mod ingest;

pub use convert::ToCommand;
pub use error::{ErrorCode, TallyError};

/// Generated from `proto/tally/v1/*.proto`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("tally.v1");
}

/// The encoded `FileDescriptorSet` of `proto/tally/v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tally_descriptor.bin"));
