//! The node's configuration: one TOML file, parsed with serde and validated as a whole, so a
//! node never starts on settings that cannot work together.
//!
//! Addresses: `client_addr` serves the public `Ledger` and `Admin` services; `peer_addr` serves
//! the Raft peer service *and* the `Ledger` service again, so a follower can forward a write to
//! the leader knowing only the leader's Raft address (the only address openraft's membership
//! carries). When both are the same address, one listener serves all three services.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tally_core::{AssetCode, BATCH_EVENTS_MAX, DEDUP_WINDOW_MS_DEFAULT};

/// The hard ceiling on `group_commit_wait_ms`: the product promises no request waits longer
/// than this before it is proposed.
pub const GROUP_COMMIT_WAIT_MS_MAX: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config field `{field}` is invalid: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// One member of the cluster as the initial configuration names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: u64,
    /// Where the other nodes reach this node's Raft peer service.
    pub peer_addr: String,
    /// Where clients reach this node's `Ledger` and `Admin` services.
    pub client_addr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// How often the leader sends heartbeats.
    pub heartbeat_ms: u64,
    /// A follower that hears nothing for a random time in [min, max) starts an election.
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
    /// Build a snapshot (and allow the log before it to be purged) after this many applied
    /// entries since the last one.
    pub snapshot_logs_since_last: u64,
    /// How many entries before the last snapshot are kept for followers that lag a little
    /// (so they catch up by log, not by a whole snapshot).
    pub logs_to_keep_after_snapshot: u64,
    /// Most entries in one append-entries message.
    pub append_entries_max: u64,
    /// How long one TCP connect to a peer may take.
    pub peer_connect_timeout_ms: u64,
    /// Deadline of one snapshot chunk transfer (and of installing the last one).
    pub install_snapshot_timeout_ms: u64,
    /// The leader syncs its own new log entries while they replicate, instead of before: a
    /// write then waits for the slower of the two syncs, not for both in turn. What makes a
    /// commit visible (apply, the answer, the commit sent to followers) still waits for the
    /// leader's sync, so an answered write is on a majority's disks either way. `false` is
    /// the earlier order (sync, then replicate).
    pub leader_sync_in_parallel: bool,
    /// Testing aid, empty in production: dial peer `id` (a TOML key, e.g. `2 = "127.0.0.1:19012"`)
    /// at this `host:port` instead of the peer address the membership holds, for Raft traffic and
    /// for writes forwarded to it. The fault-injection tests route every directed link A->B
    /// through a proxy this way, so one link can be cut, blackholed or slowed alone.
    pub peer_dial_overrides: BTreeMap<String, String>,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_ms: 100,
            election_timeout_ms_min: 500,
            election_timeout_ms_max: 1_000,
            snapshot_logs_since_last: 50_000,
            logs_to_keep_after_snapshot: 1_000,
            append_entries_max: 256,
            peer_connect_timeout_ms: 1_000,
            install_snapshot_timeout_ms: 10_000,
            leader_sync_in_parallel: true,
            peer_dial_overrides: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted gRPC request message, in bytes.
    pub request_bytes_max: usize,
    /// Most usage events in one batch request (never more than the core's 8,190).
    pub batch_events_max: usize,
    /// Most concurrent client connections per listener.
    pub connections_max: usize,
    /// Deadline for a request when the client sets none (and the cap on the one it sets).
    pub request_deadline_ms: u64,
    /// Most commands coalesced into one log entry.
    pub entry_commands_max: usize,
    /// Most request bytes coalesced into one log entry.
    pub entry_bytes_max: usize,
    /// Most requests waiting to be proposed; beyond it a request is refused as overloaded.
    pub proposal_queue_max: usize,
    /// Most log entries proposed and not yet applied at once (pipelining). While all are
    /// busy, requests queue and the next entry takes them all (see `proposer.rs`). Default 1:
    /// on the dev VM (3 nodes, 2 cores) 1 beat 2 and 4 at every `make bench` shape (64 x 1:
    /// 9,916 events/s against 8,152 and 8,738; 16 x 100: 60,937 against 57,290 and 52,348):
    /// fewer, larger entries cost every node less than overlapping ones. Raise it when the
    /// round trip between nodes, not CPU, bounds the rate.
    pub entries_in_flight_max: usize,
    /// Most concurrent gRPC streams per connection.
    pub streams_per_connection_max: u32,
    /// HTTP/2 pings on every accepted connection (client and peer listeners): one after this
    /// many ms without a frame from the other end (0: none). A ping unanswered within
    /// `keep_alive_timeout_ms` closes the connection, so a client whose machine vanished (no
    /// reset, no close) does not hold a connection slot and its event streams forever.
    pub keep_alive_interval_ms: u64,
    pub keep_alive_timeout_ms: u64,
}

/// The largest `limits.entry_bytes_max` (and so `request_bytes_max`) accepted.
pub const ENTRY_BYTES_MAX_LIMIT: usize = tally_raft::MESSAGE_BYTES_MAX / 2;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            request_bytes_max: 4 * 1024 * 1024,
            batch_events_max: BATCH_EVENTS_MAX,
            connections_max: 1_024,
            request_deadline_ms: 10_000,
            entry_commands_max: 4_096,
            entry_bytes_max: 4 * 1024 * 1024,
            proposal_queue_max: 65_536,
            entries_in_flight_max: 1,
            streams_per_connection_max: 256,
            keep_alive_interval_ms: 20_000,
            keep_alive_timeout_ms: 20_000,
        }
    }
}

/// What `Command::Init` configures when the cluster is created; fixed for the ledger's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    pub reporting_currency: String,
    pub reporting_scale: u32,
    pub dedup_window_ms: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            reporting_currency: "USD".to_string(),
            reporting_scale: 2,
            dedup_window_ms: DEDUP_WINDOW_MS_DEFAULT,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProposerConfig {
    /// Once a pipeline slot is free, how long the first waiting request may wait for
    /// neighbours to share its log entry (0: not at all; see `proposer.rs`).
    pub group_commit_wait_ms: u64,
    /// How often the leader proposes a `Tick` entry.
    pub tick_interval_ms: u64,
}

impl Default for ProposerConfig {
    fn default() -> Self {
        ProposerConfig {
            group_commit_wait_ms: 0,
            tick_interval_ms: 1_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node_id: u64,
    /// Listen address of the public `Ledger` and `Admin` services.
    pub client_addr: String,
    /// Listen address of the Raft peer service (and of `Ledger`, for forwarded writes).
    pub peer_addr: String,
    /// Listen address of the HTTP `/metrics` and `/health/*` responder.
    pub metrics_addr: String,
    /// The client address other nodes and clients are told to use for this node (when it
    /// listens on 0.0.0.0, say). Defaults to this node's `client_addr` in `initial_members`,
    /// else `client_addr`.
    #[serde(default)]
    pub advertise_client_addr: Option<String>,
    pub data_dir: PathBuf,
    /// The members the cluster is created with. Only read when the data directory is empty;
    /// afterwards the membership lives in the replicated log.
    #[serde(default)]
    pub initial_members: Vec<MemberConfig>,
    #[serde(default)]
    pub raft: RaftConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub ledger: LedgerSettings,
    #[serde(default)]
    pub proposer: ProposerConfig,
    /// Threads that run the node's async work (requests, Raft, apply). 0: one per core (or
    /// what `TOKIO_WORKER_THREADS` says). See [`crate::runtime`].
    #[serde(default)]
    pub worker_threads: usize,
}

/// The most `worker_threads` a node accepts.
pub const WORKER_THREADS_MAX: usize = 1024;

impl Config {
    /// Reads, parses and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::from_toml(&text).map_err(|error| match error {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: error.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// A single-node cluster with every default, for `tallyd --dev`.
    pub fn dev(data_dir: PathBuf) -> Config {
        Config {
            node_id: 1,
            client_addr: "127.0.0.1:7101".to_string(),
            peer_addr: "127.0.0.1:7201".to_string(),
            metrics_addr: "127.0.0.1:7301".to_string(),
            advertise_client_addr: None,
            data_dir,
            initial_members: vec![MemberConfig {
                id: 1,
                peer_addr: "127.0.0.1:7201".to_string(),
                client_addr: "127.0.0.1:7101".to_string(),
            }],
            raft: RaftConfig::default(),
            limits: LimitsConfig::default(),
            ledger: LedgerSettings::default(),
            proposer: ProposerConfig::default(),
            worker_threads: 0,
        }
    }

    /// The client address this node tells others to use.
    pub fn advertised_client_addr(&self) -> String {
        if let Some(addr) = &self.advertise_client_addr {
            return addr.clone();
        }
        self.initial_members
            .iter()
            .find(|member| member.id == self.node_id)
            .map(|member| member.client_addr.clone())
            .unwrap_or_else(|| self.client_addr.clone())
    }

    /// The node that creates the cluster: the lowest id among the initial members. Creating it
    /// from exactly one node means two nodes can never form two different clusters.
    pub fn bootstrap_node_id(&self) -> Option<u64> {
        self.initial_members.iter().map(|member| member.id).min()
    }

    /// Whether the listeners for clients and peers are one and the same.
    pub fn shared_listener(&self) -> bool {
        self.client_addr == self.peer_addr
    }

    /// `Command::Init` for this configuration.
    pub fn ledger_config(&self) -> tally_core::LedgerConfig {
        tally_core::LedgerConfig {
            // Validated in `validate`, so this cannot fail on a loaded config.
            reporting_currency: AssetCode::new(self.ledger.reporting_currency.clone())
                .expect("reporting_currency was validated when the config was loaded"),
            reporting_scale: self.ledger.reporting_scale,
            dedup_window_ms: self.ledger.dedup_window_ms,
        }
    }

    /// `raft.peer_dial_overrides` with its keys parsed as node ids.
    pub fn peer_dial_overrides(&self) -> Result<BTreeMap<u64, String>, ConfigError> {
        let mut overrides = BTreeMap::new();
        for (key, addr) in &self.raft.peer_dial_overrides {
            let field = format!("raft.peer_dial_overrides.{key}");
            let id = key
                .parse::<u64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| invalid(&field, "the key must be a node id (at least 1)"))?;
            check_host_port(&field, addr)?;
            overrides.insert(id, addr.clone());
        }
        Ok(overrides)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(invalid("node_id", "must be at least 1"));
        }
        let client: SocketAddr = parse_addr("client_addr", &self.client_addr)?;
        let peer: SocketAddr = parse_addr("peer_addr", &self.peer_addr)?;
        let metrics: SocketAddr = parse_addr("metrics_addr", &self.metrics_addr)?;
        if metrics == client || metrics == peer {
            return Err(invalid(
                "metrics_addr",
                "must differ from client_addr and peer_addr (it is a plain HTTP listener)",
            ));
        }
        if let Some(addr) = &self.advertise_client_addr {
            check_host_port("advertise_client_addr", addr)?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if self.worker_threads > WORKER_THREADS_MAX {
            return Err(invalid(
                "worker_threads",
                format!(
                    "{} threads; at most {WORKER_THREADS_MAX} (0: one per core)",
                    self.worker_threads
                ),
            ));
        }
        let mut ids = BTreeSet::new();
        for (index, member) in self.initial_members.iter().enumerate() {
            let field = |name: &str| format!("initial_members[{index}].{name}");
            if member.id == 0 {
                return Err(invalid(field("id"), "must be at least 1"));
            }
            if !ids.insert(member.id) {
                return Err(invalid(
                    field("id"),
                    format!("node id {} appears twice", member.id),
                ));
            }
            check_host_port(&field("peer_addr"), &member.peer_addr)?;
            check_host_port(&field("client_addr"), &member.client_addr)?;
        }
        // A node missing from `initial_members` is valid: it joins later as a learner (added
        // through `Admin.AddLearner`) and never creates a cluster itself.

        let raft = &self.raft;
        if raft.heartbeat_ms == 0 {
            return Err(invalid("raft.heartbeat_ms", "must be at least 1"));
        }
        // The same bound the Raft layer holds the settings to, checked here so the file is
        // refused naming its own field, not at startup.
        if raft.election_timeout_ms_min < raft.heartbeat_ms.saturating_mul(3) {
            return Err(invalid(
                "raft.election_timeout_ms_min",
                format!(
                    "must be at least 3 x raft.heartbeat_ms ({}), or a follower starts an election after one slow heartbeat; got {}",
                    raft.heartbeat_ms.saturating_mul(3),
                    raft.election_timeout_ms_min
                ),
            ));
        }
        if raft.election_timeout_ms_max <= raft.election_timeout_ms_min {
            return Err(invalid(
                "raft.election_timeout_ms_max",
                format!(
                    "must be greater than raft.election_timeout_ms_min ({})",
                    raft.election_timeout_ms_min
                ),
            ));
        }
        if raft.snapshot_logs_since_last == 0 {
            return Err(invalid(
                "raft.snapshot_logs_since_last",
                "must be at least 1",
            ));
        }
        if raft.append_entries_max == 0 {
            return Err(invalid("raft.append_entries_max", "must be at least 1"));
        }
        if raft.peer_connect_timeout_ms == 0 {
            return Err(invalid(
                "raft.peer_connect_timeout_ms",
                "must be at least 1",
            ));
        }
        if raft.install_snapshot_timeout_ms == 0 {
            return Err(invalid(
                "raft.install_snapshot_timeout_ms",
                "must be at least 1",
            ));
        }
        self.peer_dial_overrides()?;

        let limits = &self.limits;
        if limits.request_bytes_max < 1024 {
            return Err(invalid("limits.request_bytes_max", "must be at least 1024"));
        }
        if limits.batch_events_max == 0 || limits.batch_events_max > BATCH_EVENTS_MAX {
            return Err(invalid(
                "limits.batch_events_max",
                format!("must be in 1..={BATCH_EVENTS_MAX}"),
            ));
        }
        for (field, value) in [
            ("limits.connections_max", limits.connections_max),
            ("limits.entry_commands_max", limits.entry_commands_max),
            ("limits.proposal_queue_max", limits.proposal_queue_max),
            ("limits.entries_in_flight_max", limits.entries_in_flight_max),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if limits.request_deadline_ms == 0 {
            return Err(invalid("limits.request_deadline_ms", "must be at least 1"));
        }
        if limits.streams_per_connection_max == 0 {
            return Err(invalid(
                "limits.streams_per_connection_max",
                "must be at least 1",
            ));
        }
        if limits.keep_alive_interval_ms > 0 && limits.keep_alive_timeout_ms == 0 {
            return Err(invalid(
                "limits.keep_alive_timeout_ms",
                "must be at least 1 while limits.keep_alive_interval_ms pings",
            ));
        }
        // One entry must fit in one peer message (64 MiB), with room for its encoding and the
        // message around it: an entry that cannot be replicated stalls the cluster.
        if limits.entry_bytes_max > ENTRY_BYTES_MAX_LIMIT {
            return Err(invalid(
                "limits.entry_bytes_max",
                format!(
                    "must be at most {ENTRY_BYTES_MAX_LIMIT} (half the peers' 64 MiB message limit, so that one entry always fits in one message)"
                ),
            ));
        }
        if limits.entry_bytes_max < limits.request_bytes_max {
            return Err(invalid(
                "limits.entry_bytes_max",
                format!(
                    "must be at least limits.request_bytes_max ({}), so the largest request fits in one entry",
                    limits.request_bytes_max
                ),
            ));
        }

        AssetCode::new(self.ledger.reporting_currency.clone())
            .map_err(|error| invalid("ledger.reporting_currency", error.reason))?;
        if self.ledger.reporting_scale > tally_core::money::SCALE_MAX {
            return Err(invalid(
                "ledger.reporting_scale",
                format!("must be in 0..={}", tally_core::money::SCALE_MAX),
            ));
        }
        if self.ledger.dedup_window_ms < 60_000 {
            return Err(invalid(
                "ledger.dedup_window_ms",
                "must be at least 60000 (one minute); the default is 35 days",
            ));
        }

        if self.proposer.group_commit_wait_ms > GROUP_COMMIT_WAIT_MS_MAX {
            return Err(invalid(
                "proposer.group_commit_wait_ms",
                format!("must be in 0..={GROUP_COMMIT_WAIT_MS_MAX}"),
            ));
        }
        if self.proposer.tick_interval_ms < 10 {
            return Err(invalid("proposer.tick_interval_ms", "must be at least 10"));
        }
        Ok(())
    }
}

fn parse_addr(field: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            field,
            format!("{text:?} is not an IP:port listen address such as 127.0.0.1:7101"),
        )
    })
}

/// Advertised addresses may be host names, so only the `host:port` shape is checked.
fn check_host_port(field: &str, text: &str) -> Result<(), ConfigError> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(invalid(field, format!("{text:?} is not host:port")));
    };
    if host.is_empty() || port.parse::<u16>().map(|port| port == 0).unwrap_or(true) {
        return Err(invalid(
            field,
            format!("{text:?} is not host:port with a port in 1..=65535"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE_NODES: &str = r#"
node_id = 2
client_addr = "127.0.0.1:7102"
peer_addr = "127.0.0.1:7202"
metrics_addr = "127.0.0.1:7302"
data_dir = "./data/node-2"

[[initial_members]]
id = 1
peer_addr = "127.0.0.1:7201"
client_addr = "127.0.0.1:7101"

[[initial_members]]
id = 2
peer_addr = "127.0.0.1:7202"
client_addr = "127.0.0.1:7102"

[raft]
heartbeat_ms = 50

[proposer]
group_commit_wait_ms = 2
"#;

    #[test]
    fn parses_with_defaults() {
        let config = Config::from_toml(THREE_NODES).unwrap();
        assert_eq!(config.node_id, 2);
        assert_eq!(config.raft.heartbeat_ms, 50);
        assert_eq!(config.raft.election_timeout_ms_min, 500);
        assert_eq!(config.limits.batch_events_max, 8_190);
        assert_eq!(config.proposer.group_commit_wait_ms, 2);
        assert_eq!(config.proposer.tick_interval_ms, 1_000);
        assert_eq!(config.bootstrap_node_id(), Some(1));
        assert_eq!(config.advertised_client_addr(), "127.0.0.1:7102");
        assert_eq!(config.ledger_config().reporting_currency.as_str(), "USD");
        assert!(!config.shared_listener());
        assert_eq!(config.worker_threads, 0, "one worker per core unless told");
        let two = THREE_NODES.replacen("node_id = 2", "node_id = 2\nworker_threads = 2", 1);
        assert_eq!(Config::from_toml(&two).unwrap().worker_threads, 2);
    }

    fn error_field(text: &str) -> String {
        match Config::from_toml(text).unwrap_err() {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("expected a field error, got {other}"),
        }
    }

    #[test]
    fn names_the_bad_field() {
        let with = |from: &str, to: &str| THREE_NODES.replacen(from, to, 1);
        assert_eq!(
            error_field(&with(
                "group_commit_wait_ms = 2",
                "group_commit_wait_ms = 3"
            )),
            "proposer.group_commit_wait_ms"
        );
        assert_eq!(error_field(&with("node_id = 2", "node_id = 0")), "node_id");
        assert_eq!(
            error_field(&with(
                r#"client_addr = "127.0.0.1:7102""#,
                r#"client_addr = "nowhere""#
            )),
            "client_addr"
        );
        assert_eq!(
            error_field(&with("heartbeat_ms = 50", "heartbeat_ms = 600")),
            "raft.election_timeout_ms_min"
        );
        // Above the heartbeat but under three of them: refused here, as the Raft layer would
        // refuse it at startup under a name the file does not use.
        assert_eq!(
            error_field(&with("heartbeat_ms = 50", "heartbeat_ms = 200")),
            "raft.election_timeout_ms_min"
        );
        assert_eq!(
            error_field(&with("\nid = 2", "\nid = 1")),
            "initial_members[1].id"
        );
        assert_eq!(
            error_field(&format!(
                "{THREE_NODES}\n[limits]\nbatch_events_max = 9000\n"
            )),
            "limits.batch_events_max"
        );
        assert_eq!(
            error_field(&format!(
                "{THREE_NODES}\n[limits]\nrequest_bytes_max = 50331648\nentry_bytes_max = 201326592\n"
            )),
            "limits.entry_bytes_max"
        );
        assert_eq!(
            error_field(&format!(
                "{THREE_NODES}\n[limits]\nrequest_bytes_max = 50331648\n"
            )),
            "limits.entry_bytes_max"
        );
        assert_eq!(
            error_field(&format!(
                "{THREE_NODES}\n[limits]\nkeep_alive_timeout_ms = 0\n"
            )),
            "limits.keep_alive_timeout_ms"
        );
        // No pings: then no timeout is needed.
        Config::from_toml(&format!(
            "{THREE_NODES}\n[limits]\nkeep_alive_interval_ms = 0\nkeep_alive_timeout_ms = 0\n"
        ))
        .unwrap();
        assert_eq!(
            error_field(&format!(
                "{THREE_NODES}\n[ledger]\nreporting_currency = \"usd\"\n"
            )),
            "ledger.reporting_currency"
        );
        assert_eq!(
            error_field(&with("node_id = 2", "node_id = 2\nworker_threads = 5000")),
            "worker_threads"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = format!("{THREE_NODES}\nheartbeat = 5\n");
        match Config::from_toml(&text).unwrap_err() {
            ConfigError::Parse { message, .. } => {
                assert!(message.contains("heartbeat"), "{message}")
            }
            other => panic!("expected a parse error, got {other}"),
        }
    }

    #[test]
    fn peer_dial_overrides_parse_and_are_checked() {
        let with = |table: &str| format!("{THREE_NODES}\n[raft.peer_dial_overrides]\n{table}\n");
        let text = with("1 = \"127.0.0.1:19021\"");
        // `[raft]` is already open in THREE_NODES; a sub-table after it is fine in TOML.
        let config = Config::from_toml(&text).unwrap();
        assert_eq!(
            config.peer_dial_overrides().unwrap(),
            BTreeMap::from([(1, "127.0.0.1:19021".to_string())])
        );
        assert!(Config::from_toml(THREE_NODES)
            .unwrap()
            .peer_dial_overrides()
            .unwrap()
            .is_empty());
        assert_eq!(
            error_field(&with("x = \"127.0.0.1:1\"")),
            "raft.peer_dial_overrides.x"
        );
        assert_eq!(
            error_field(&with("3 = \"nowhere\"")),
            "raft.peer_dial_overrides.3"
        );
    }

    #[test]
    fn dev_config_is_valid() {
        Config::dev(PathBuf::from("./data/dev")).validate().unwrap();
    }
}
