//! Building openraft's `Config` from Tally's named settings, with the limits that the peer
//! network imposes checked up front.

use openraft::{Config, SnapshotPolicy};

use crate::MESSAGE_BYTES_MAX;

/// Raft timing, batching and snapshot settings, in Tally's naming (units last).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftSettings {
    pub cluster_name: String,
    /// A follower that hears nothing from a leader for a random time in
    /// `[election_timeout_ms_min, election_timeout_ms_max)` starts an election.
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
    /// How often the leader sends heartbeats. openraft also uses it as the timeout of every
    /// AppendEntries RPC, so it must cover a follower's fsync of one batch of entries.
    pub heartbeat_interval_ms: u64,
    /// Timeout of one InstallSnapshot chunk RPC (sending it and, for the last one, installing).
    pub install_snapshot_timeout_ms: u64,
    /// Most entries in one AppendEntries RPC. With group commit an entry may carry many
    /// commands; the network additionally halves a batch whose encoding exceeds
    /// [`MESSAGE_BYTES_MAX`].
    pub append_entries_max: u64,
    /// Build a snapshot after this many new log entries; 0 = only on request.
    pub snapshot_logs_since_last: u64,
    /// Log entries already covered by a snapshot that are kept, so a briefly lagging follower
    /// catches up from the log rather than a snapshot.
    pub snapshot_logs_to_keep: u64,
    /// Size of one InstallSnapshot chunk. Must stay well below [`MESSAGE_BYTES_MAX`].
    pub snapshot_chunk_bytes_max: u64,
    /// A follower further behind than this many entries is sent a snapshot.
    pub replication_lag_entries_max: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            cluster_name: "tally".to_string(),
            election_timeout_ms_min: 1_000,
            election_timeout_ms_max: 2_000,
            heartbeat_interval_ms: 250,
            install_snapshot_timeout_ms: 10_000,
            append_entries_max: 64,
            snapshot_logs_since_last: 10_000,
            snapshot_logs_to_keep: 1_000,
            snapshot_chunk_bytes_max: 4 * 1024 * 1024,
            replication_lag_entries_max: 20_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RaftConfigError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// openraft's own checks; kept as text (its error type is large and not needed further).
    #[error("openraft rejected the config: {0}")]
    Openraft(String),
}

fn invalid(field: &'static str, reason: String) -> RaftConfigError {
    RaftConfigError::Invalid { field, reason }
}

/// The openraft `Config` for `settings`, validated. Its own election timer is off: run
/// [`crate::spawn_elections`] next to every Raft built with it.
pub fn raft_config(settings: &RaftSettings) -> Result<Config, RaftConfigError> {
    if settings.heartbeat_interval_ms == 0 {
        return Err(invalid("heartbeat_interval_ms", "must be > 0".to_string()));
    }
    // Several heartbeats must fit in the shortest election timeout, or a follower starts an
    // election after one slow fsync.
    if settings.election_timeout_ms_min < 3 * settings.heartbeat_interval_ms {
        return Err(invalid(
            "election_timeout_ms_min",
            format!(
                "must be at least 3 x heartbeat_interval_ms ({}), got {}",
                3 * settings.heartbeat_interval_ms,
                settings.election_timeout_ms_min
            ),
        ));
    }
    if settings.election_timeout_ms_max <= settings.election_timeout_ms_min {
        return Err(invalid(
            "election_timeout_ms_max",
            format!(
                "must be above election_timeout_ms_min ({}), got {}",
                settings.election_timeout_ms_min, settings.election_timeout_ms_max
            ),
        ));
    }
    if settings.append_entries_max == 0 {
        return Err(invalid("append_entries_max", "must be > 0".to_string()));
    }
    // Room for the request's envelope (vote, meta, offset) next to the chunk.
    let chunk_bytes_limit = (MESSAGE_BYTES_MAX / 2) as u64;
    if settings.snapshot_chunk_bytes_max == 0
        || settings.snapshot_chunk_bytes_max > chunk_bytes_limit
    {
        return Err(invalid(
            "snapshot_chunk_bytes_max",
            format!(
                "must be 1..={chunk_bytes_limit} (half the peer message limit), got {}",
                settings.snapshot_chunk_bytes_max
            ),
        ));
    }
    if settings.install_snapshot_timeout_ms == 0 {
        return Err(invalid(
            "install_snapshot_timeout_ms",
            "must be > 0".to_string(),
        ));
    }
    let snapshot_policy = match settings.snapshot_logs_since_last {
        0 => SnapshotPolicy::Never,
        logs => SnapshotPolicy::LogsSinceLast(logs),
    };
    let config = Config {
        cluster_name: settings.cluster_name.clone(),
        election_timeout_min: settings.election_timeout_ms_min,
        election_timeout_max: settings.election_timeout_ms_max,
        heartbeat_interval: settings.heartbeat_interval_ms,
        install_snapshot_timeout: settings.install_snapshot_timeout_ms,
        max_payload_entries: settings.append_entries_max,
        replication_lag_threshold: settings.replication_lag_entries_max,
        snapshot_policy,
        snapshot_max_chunk_size: settings.snapshot_chunk_bytes_max,
        max_in_snapshot_log_to_keep: settings.snapshot_logs_to_keep,
        // Elections are started by `crate::spawn_elections`, after a pre-vote.
        enable_elect: false,
        ..Config::default()
    };
    config
        .validate()
        .map_err(|error| RaftConfigError::Openraft(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = raft_config(&RaftSettings::default()).unwrap();
        assert_eq!(config.heartbeat_interval, 250);
        assert_eq!(
            config.snapshot_policy,
            SnapshotPolicy::LogsSinceLast(10_000)
        );
        assert_eq!(config.max_payload_entries, 64);
        assert!(!config.enable_elect, "elections go through the pre-vote");
    }

    #[test]
    fn bad_settings_name_the_field() {
        let error = raft_config(&RaftSettings {
            election_timeout_ms_min: 500,
            ..RaftSettings::default()
        })
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("election_timeout_ms_min: must be at least 3 x"),
            "{error}"
        );
        let error = raft_config(&RaftSettings {
            election_timeout_ms_max: 1_000,
            ..RaftSettings::default()
        })
        .unwrap_err();
        assert!(
            error.to_string().starts_with("election_timeout_ms_max"),
            "{error}"
        );
        let error = raft_config(&RaftSettings {
            snapshot_chunk_bytes_max: MESSAGE_BYTES_MAX as u64,
            ..RaftSettings::default()
        })
        .unwrap_err();
        assert!(
            error.to_string().starts_with("snapshot_chunk_bytes_max"),
            "{error}"
        );
        let never = raft_config(&RaftSettings {
            snapshot_logs_since_last: 0,
            ..RaftSettings::default()
        })
        .unwrap();
        assert_eq!(never.snapshot_policy, SnapshotPolicy::Never);
    }
}
