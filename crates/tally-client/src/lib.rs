//! tally-client: an async Rust client for a Tally cluster.
//!
//! # Public API
//! - [`Client::new`]`(`[`ClientConfig`]`)`: a cheap-to-clone handle over one or more endpoints
//!   (`host:port`; [`DEFAULT_ENDPOINTS`] is the local `make run` cluster). Needs a Tokio runtime.
//!   - Routing: calls go to the node the client believes leads (learned from the
//!     `tally-leader-addr` metadata on replies and on `not_leader`); a `not_leader` hint is
//!     followed at once; otherwise endpoints are tried in turn.
//!   - Retries: `not_leader`, `unavailable`, `deadline_exceeded`, transport errors and
//!     `not_initialized` are retried with exponential backoff and jitter
//!     (`backoff_ms_initial`..`backoff_ms_max`), always with the same request, within
//!     `attempts_max` and `call_timeout_ms`. Usage events keep their ids, so a retry never
//!     charges twice; when an earlier attempt settled it, the answer is `Duplicate` carrying the
//!     original settlement (treat it like `Settled`).
//!   - Connections: the calls an application makes per request (`record_usage`,
//!     `record_usage_batch*`, `authorize`, `release`, `get_account`) go on one HTTP/2
//!     connection per node ([`unary::Connection`]: the request's headers and message in one
//!     socket write), opened on first use and again once it has ended (the node restarted),
//!     and pinged every `keep_alive_interval_ms` (2 s): a ping unanswered within
//!     `keep_alive_timeout_ms` (2 s) ends it, so a node that went silent without closing it
//!     fails the calls on it for retry elsewhere instead of holding them to their deadline;
//!     every other call goes through one lazily connected tonic channel per node, pinged the
//!     same way while a call or an event stream is open on it. Clones of a `Client` share
//!     both.
//!   - Deadlines: `request_timeout_ms` per attempt (also sent as `grpc-timeout`);
//!     [`Client::with_request_timeout`] for one call site.
//!   - Requests are validated locally (tally-proto's `ToCommand`) before anything is sent, so bad
//!     input fails fast with `invalid_argument` naming the field.
//!   - Ledger calls: `create_asset`, `list_assets`, `create_account`, `update_account`,
//!     `set_account_status`, `get_account`, `add_grant`, `void_grant`, `publish_prices`,
//!     `get_prices`, `publish_costs`, `record_usage` -> [`UsageOutcome`],
//!     `record_usage_batch` -> `Vec<`[`EventOutcome`]`>`, `authorize`, `release`, `history`,
//!     `report`, `events(from_seq, follow)` -> [`EventSubscription`] (resumes by sequence
//!     number across reconnects, a node gone silent included; events skipped by a node are
//!     an error naming the seqs, never passed over). Views are returned as the generated `tally_proto::v1` types.
//!   - Admin calls: `cluster_status_of(endpoint)`, `add_learner`, `promote`, `remove_node`,
//!     `trigger_snapshot_at(endpoint)`, `state_hash_at(endpoint)`, `state_hash_at_index(endpoint, index)` (the hash at exactly one log index, answered when the node applies it).
//! - [`UsageBatcher`]: buffers events and sends `RecordUsageBatch` calls of up to N events
//!   and 4 MiB (`with_batch_bytes_max` for a cluster with another `request_bytes_max`),
//!   `with_in_flight(k)` batches concurrently, returning per-event outcomes in push order
//!   (a batch re-sent after a failure answers after later ones); an event the client's own
//!   checks refuse is refused by `push` alone; batches that failed with the outcome unknown
//!   are kept and re-sent (same ids) by `flush`; batches the cluster refused as a whole
//!   (`invalid_argument`, `request_too_large`) are set aside for `take_refused`.
//! - [`UsageOutcome`] / [`Settlement`] / [`Rejection`]: typed usage results with exact
//!   [`tally_core::Amount`]s.
//! - [`ClientError`] (thiserror): `code()` is always one of the stable [`ErrorCode`]s;
//!   `message()`, `details()`, `is_transient()`, `is_local()` (refused by the client's own
//!   checks of the request, `ClientError::Invalid`, before anything was sent).
//! - [`usage_event`], [`new_event_id`]: helpers to build events.
//! - [`unary`]: gRPC unary calls on a bare HTTP/2 connection (what usage, authorize, release
//!   and `get_account` are sent on; also `tally-bench`'s load): [`unary::Connection::open`],
//!   `call` (reply and metadata), `unary` (with a local deadline), the paths of those calls.

mod batch;
mod client;
mod config;
mod error;
mod events;
pub mod unary;
mod usage;

pub use batch::{UsageBatcher, BATCH_BYTES_MAX_DEFAULT};
pub use client::Client;
pub use config::{normalize_endpoint, ClientConfig, DEFAULT_ENDPOINTS};
pub use error::ClientError;
pub use events::EventSubscription;
pub use tally_proto::{v1, ErrorCode, TallyError};
pub use usage::{BatchSummary, Draw, EventOutcome, Rejection, Settlement, UsageOutcome};

/// A fresh event id: `evt-` and 24 random hex digits (96 bits: collisions are not a concern
/// within a 35-day dedup window).
pub fn new_event_id() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let high: u32 = rng.gen();
    let low: u64 = rng.gen();
    format!("evt-{high:08x}{low:016x}")
}

/// A usage event with no dimensions, cost or hold.
pub fn usage_event(
    event_id: &str,
    account: &str,
    meter: &str,
    quantity: &str,
    occurred_at_ms: u64,
) -> v1::UsageEvent {
    v1::UsageEvent {
        event_id: event_id.to_string(),
        account: account.to_string(),
        meter: meter.to_string(),
        quantity: quantity.to_string(),
        dimensions: Vec::new(),
        occurred_at_ms,
        cost: None,
        hold_id: None,
    }
}
