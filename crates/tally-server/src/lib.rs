//! tally-server: the `tallyd` node.
//!
//! # Public API
//! - [`run`]`(config, shutdown) -> anyhow::Result<()>`: runs one node until `shutdown` is
//!   triggered, then stops gracefully. The `tallyd` binary only parses its arguments
//!   (`--config FILE` or `--dev [--data-dir DIR]`) and calls this.
//! - [`config::Config`]: the TOML configuration (`Config::from_file`, `Config::from_toml`,
//!   `Config::dev`), validated as a whole; errors name the field (`raft.heartbeat_ms`).
//! - [`shutdown::Shutdown`]: a watchable stop signal; `trigger_on_signals()` wires SIGTERM and
//!   Ctrl-C to it.
//! - [`logging::init`]: `tallyd`'s logger (`RUST_LOG`, openraft's per-request peer failures
//!   left to `tally_raft::peer_health`'s one line per run of failures).
//! - [`metrics::Metrics`], [`http::serve`]: `/metrics` (Prometheus text), `/health/live`,
//!   `/health/ready` on `metrics_addr`.
//! - [`proposer::Proposer`]: group commit: coalesces waiting commands into one log entry
//!   stamped with `at_ms`, up to `entries_in_flight_max` entries in flight (default 1), each
//!   waiter answered by its index.
//!
//! # Listeners
//! `client_addr` serves `tally.v1.Ledger` and `tally.v1.Admin`. `peer_addr` serves
//! `tally.v1.Raft` plus `Ledger` and `Admin` again, so a follower forwards writes (and asks for
//! read indexes) knowing only the leader's Raft address, which is all the replicated membership
//! holds. With `client_addr == peer_addr` one listener serves all three.
//!
//! # Behaviour clients see
//! - Writes on a follower are forwarded to the leader (once; a forwarded request is never
//!   forwarded again). Replies from the leader carry `tally-leader-id` / `tally-leader-addr`
//!   metadata. With no known leader: `not_leader` (gRPC UNAVAILABLE) with `tally-code`.
//! - Reads are linearizable by default (a read index): the leader confirms leadership with a
//!   quorum (openraft's `get_read_log_id`, the first half of `ensure_linearizable`, under the
//!   request deadline); a follower asks the leader for its read index (a linearizable
//!   `ListAssets` over the peer listener); either waits until it has applied that far, then
//!   reads locally. Concurrent reads share confirmation rounds (`NodeContext::read_barrier`).
//!   `CONSISTENCY_FOLLOWER` skips all that; `ReadInfo` gives node and applied index.
//! - The lowest-id initial member creates the cluster when its store is empty; a leader
//!   proposes `Command::Init` until the ledger has applied it, and refuses other writes with
//!   `not_initialized` before that. A leader proposes `Command::Tick` every `tick_interval_ms`.
//! - Bad input never reaches the log: tally-proto validates the wire, then the leader answers
//!   from its applied state what cannot succeed (unknown account or asset, an amount with more
//!   digits than its asset allows; see `precheck.rs`). So bad input leaves the state hash alone.
//! - `StreamEvents` sends this node's applied events from `from_seq` on, in seq order; a seq
//!   missing from its store ends the stream with `internal` naming the missing seqs instead of
//!   jumping over it. Every accepted connection is pinged (`limits.keep_alive_interval_ms`):
//!   one whose client went silent is closed with its streams.

pub mod admin_service;
pub mod alloc;
pub mod config;
pub mod http;
pub mod incoming;
pub mod ledger_service;
pub mod logging;
pub mod machine;
pub mod metrics;
pub mod node;
pub mod precheck;
pub mod proposer;
pub mod raft_sink;
pub mod runtime;
pub mod server;
pub mod shutdown;

pub use config::Config;
pub use server::run;
pub use shutdown::Shutdown;
