//! Tally's Raft plumbing: the tonic peer network for openraft, its server side, and the
//! openraft configuration.
//!
//! Public API (for tally-server):
//! - [`TallyNetwork::new`]`(node_id, `[`NetworkConfig`]`)`: openraft's `RaftNetworkFactory`
//!   for `tally_store::TypeConfig`. Hand it to `openraft::Raft::new`. One lazily-connected tonic
//!   channel per peer (address from `BasicNode.addr`, `host:port`), connect and request
//!   timeouts, message limit [`MESSAGE_BYTES_MAX`], transport errors mapped so openraft backs off
//!   from unreachable peers and shrinks oversized appends (see `network.rs`). HTTP/2 keep-alive
//!   (1 s) notices a dead or blackholed connection, so a healed link carries traffic again
//!   within about two seconds.
//!   [`TallyNetwork::stats`] returns [`NetworkStats`] (RPCs, bytes, split batches, failures by
//!   kind) for `/metrics`; keep a clone of the factory to read them.
//! - [`RaftService::new`]`(raft).into_server(`[`MESSAGE_BYTES_MAX`]`)`: the `tally.v1.Raft`
//!   gRPC service to add to the node's peer listener; its [`RaftService::contact`] says when
//!   this node last accepted a leader's message and the highest commit index one named.
//! - [`raft_config`]`(&`[`RaftSettings`]`) -> openraft::Config`: election/heartbeat timing,
//!   append batch size and snapshot policy, validated, errors naming the setting. openraft's own
//!   election timer is off in it: start [`spawn_elections`]`(raft, network, &settings)` next to
//!   every Raft, which stands for election only after a pre-vote of a majority (`election.rs`),
//!   so a node that could not hear a live leader does not depose it.
//! - [`codec`]: the bincode encoding of openraft messages inside the service's `bytes` fields.
//!
//! Snapshots travel in chunks of `RaftSettings::snapshot_chunk_bytes_max` (openraft 0.9 sends
//! `SnapshotData`, a file, through repeated `InstallSnapshot` calls); keep the chunk
//! well below the message limit (`raft_config` enforces at most half of it).
//!
//! Timing caveat: openraft 0.9 uses `heartbeat_interval_ms` as the deadline of every
//! AppendEntries RPC, so it must cover a follower's fsync of one batch; a timed-out append is
//! simply sent again at the next heartbeat.
//!
//! Tests (`cargo test -p tally-raft`) run real Raft nodes on the real store over loopback gRPC:
//! election, replication and failover with restart; catch-up by chunked snapshot; appends above
//! 4 MiB split to the limit; a follower cut off by a blackholing or connection-dropping TCP proxy
//! catching up after the link heals; and how each transport failure reaches openraft.

pub mod codec;
mod config;
mod election;
mod network;
pub mod peer_health;
mod service;
mod stats;

pub use config::{raft_config, RaftConfigError, RaftSettings};
pub use election::{spawn_elections, PreVoteRequest, PreVoteResponse};
pub use network::{NetworkConfig, PeerNetwork, TallyNetwork, APPEND_ENTRIES_BYTES_TARGET};
pub use service::{AppendEntriesReplies, LeaderContact, RaftService};
pub use stats::NetworkStats;

/// The request metadata naming the node a Raft RPC is meant for. A node refuses a request meant
/// for another id (`FAILED_PRECONDITION`): an address given to the membership for one node but
/// served by another (a typo in `add-learner`) would otherwise let one machine answer, and
/// later vote, as two members. Requests without it (older builds) are served.
pub const TARGET_NODE_METADATA_KEY: &str = "tally-raft-target";

/// Largest peer message, encoded, in either direction: 64 MiB. Batched appends exceed tonic's
/// 4 MiB default; the proposer keeps one entry far below this, and the network halves an
/// append batch that would exceed it.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// HTTP/2 flow-control windows between peers, both ends: an AppendEntries request is cut at
/// [`APPEND_ENTRIES_BYTES_TARGET`] (2 MiB), so a window of several of them lets the leader
/// send one whole without waiting for a WINDOW_UPDATE (hyper's default is 1 MiB), and fixed
/// windows need no BDP pings. Peers are trusted: this bounds what a connection may buffer.
pub const PEER_STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// See [`PEER_STREAM_WINDOW_BYTES`].
pub const PEER_CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// Largest HTTP/2 frame a node's peer server accepts (the sender cuts its DATA frames to it):
/// 1 MiB. h2 reads each frame into a buffer of its own size; with the default of 16 KiB a
/// follower took a new buffer for every 16 KiB of an append, and the fresh memory's page
/// faults were 3% of its samples at 16 x 100 (session 17).
pub const PEER_FRAME_BYTES_MAX: u32 = 1024 * 1024;
