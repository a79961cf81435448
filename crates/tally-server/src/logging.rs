//! `tallyd`'s log: what an operator reads, one line per thing that happened.
//!
//! openraft 0.9 logs every failed peer request itself, several lines each: while one voter is
//! down the leader wrote an ERROR and three WARNs a second for it, and an ERROR for every
//! linearizable read (a thousand a second under read load); nodes starting together each wrote
//! a WARN per stale vote reply. [`QuietPeerRetries`] drops exactly those lines (matched by
//! their text and level, from openraft only); the peer network reports the same facts once
//! per run of failures instead (`tally_raft::peer_health`: a WARN when a peer stops
//! answering, a reminder a minute, an INFO when it answers again). Every other openraft WARN
//! and ERROR (storage errors, fatal errors, snapshot failures) still shows.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// The default filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,openraft=warn,sled=warn,h2=warn";

/// openraft's per-request lines about peers that do not answer, as (level, how the message
/// starts). Each is reported by `tally_raft::peer_health` instead, or is routine (a vote reply
/// that came after the vote changed).
const QUIET: &[(Level, &str)] = &[
    // replication: every failed AppendEntries, then its backoff.
    (Level::WARN, "error replication to target="),
    (Level::ERROR, "RPCError"),
    (Level::WARN, "update progress error"),
    (Level::WARN, "heartbeat error: "),
    // the name of the function comes first: `...::backoff_drain_events backoff mode: ...`
    (
        Level::WARN,
        "*backoff mode: drain events without processing them",
    ),
    // elections: every vote request a down peer did not answer.
    (Level::ERROR, "while requesting vote"),
    (Level::ERROR, "timeout"),
    // every linearizable read while a voter is down.
    (
        Level::ERROR,
        "timeout while confirming leadership for read request",
    ),
    // a vote reply that arrived after this node's vote changed: routine during elections.
    (
        Level::WARN,
        "A message will be ignored because vote changed",
    ),
    // a read of Raft's state (the election timer, a pre-vote answer) as Raft stops, or one
    // whose caller is gone (a pre-vote the candidate stopped waiting for once a majority
    // answered): the caller handles it; clean shutdowns and elections wrote them at ERROR.
    (Level::ERROR, "*with_raft_state: rx recv error"),
    (Level::ERROR, "*with_raft_state: to-Raft tx send error"),
    // every retry of a snapshot a peer did not take (the peer's own line says why).
    (Level::WARN, "error sending InstallSnapshot RPC"),
    (Level::WARN, "failed to send snapshot"),
];

/// True when an event of openraft at `level` with message `message` (and `core_result`, the
/// field openraft names why its core stopped with) is one of [`QUIET`], or a request that
/// reached Raft as it was stopping cleanly (`failure sending RaftMsg to RaftCore ...` with
/// `Err(Stopped)`: every clean shutdown wrote one at ERROR).
fn is_quiet(target: &str, level: Level, message: &str, core_result: &str) -> bool {
    if !target.starts_with("openraft") {
        return false;
    }
    if level == Level::ERROR && message.starts_with("failure ") && core_result == "Err(Stopped)" {
        return true;
    }
    QUIET.iter().any(|&(quiet_level, text)| {
        level == quiet_level
            && match text.strip_prefix('*') {
                Some(inner) => message.contains(inner),
                // "timeout" alone is the vote timeout; longer messages name what timed out.
                None if text == "timeout" => message == text,
                None => message.starts_with(text),
            }
    })
}

/// The layer that drops [`QUIET`] lines for every layer after it.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuietPeerRetries;

/// An event's message, and its `core_result` field when it has one.
#[derive(Default)]
struct Message {
    text: String,
    core_result: String,
}

impl Message {
    fn field(&mut self, field: &Field) -> Option<&mut String> {
        match field.name() {
            "message" => Some(&mut self.text),
            "core_result" => Some(&mut self.core_result),
            _ => None,
        }
    }
}

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(out) = self.field(field) {
            out.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if let Some(out) = self.field(field) {
            use std::fmt::Write;
            let _ = write!(out, "{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for QuietPeerRetries {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        // Only openraft's WARNs and ERRORs get here at all under the default filter.
        if !metadata.target().starts_with("openraft") || *metadata.level() > Level::WARN {
            return true;
        }
        let mut message = Message::default();
        event.record(&mut message);
        !is_quiet(
            metadata.target(),
            *metadata.level(),
            &message.text,
            &message.core_result,
        )
    }
}

/// Installs `tallyd`'s logger on stdout: `RUST_LOG` or [`DEFAULT_FILTER`], without targets,
/// colours on a terminal, openraft's per-request peer failures dropped.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::registry()
        .with(filter)
        .with(QuietPeerRetries)
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
        )
        .init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records the messages of the events that reach it.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut message = Message::default();
            event.record(&mut message);
            self.0.lock().unwrap().push(message.text);
        }
    }

    /// As openraft's `Fatal` prints (`core_result` is a `Result<Infallible, Fatal>`).
    #[derive(Debug)]
    enum Fatal {
        Stopped,
        StorageError,
    }

    #[test]
    fn openraft_peer_retries_are_dropped_and_everything_else_kept() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(QuietPeerRetries)
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            // The lines openraft 0.9.25 writes, with their targets and levels.
            tracing::warn!(target: "openraft::replication", error = "Unreachable node", "error replication to target={}", 3);
            tracing::error!(target: "openraft::replication", err = "Unreachable node", "RPCError");
            tracing::warn!(target: "openraft::replication", "openraft::replication::ReplicationCore<_, _, _>::backoff_drain_events backoff mode: drain events without processing them");
            tracing::warn!(target: "openraft::engine::handler::replication_handler", "update progress error");
            tracing::error!(target: "openraft::core::raft_core", "while requesting vote");
            tracing::error!(target: "openraft::core::raft_core", "timeout");
            tracing::error!(target: "openraft::core::raft_core", "timeout while confirming leadership for read request");
            tracing::warn!(target: "openraft::core::raft_core", "A message will be ignored because vote changed: msg sent by vote: T1-N1:uncommitted");
            tracing::warn!(target: "openraft::network::snapshot_transport", error = "Unreachable node", "error sending InstallSnapshot RPC");
            tracing::warn!(target: "openraft::replication", error = "Unreachable node", "failed to send snapshot");
            tracing::error!(target: "openraft::raft", error = "channel closed", "{}: rx recv error", "openraft::raft::Raft<_>::with_raft_state");
            tracing::error!(target: "openraft::raft", "{}: to-Raft tx send error", "openraft::raft::Raft<_>::with_raft_state");
            tracing::error!(target: "openraft::raft::raft_inner", core_result = ?Err::<(), Fatal>(Fatal::Stopped), "failure {}; message: {}", "sending RaftMsg to RaftCore", "AppendEntries");
            // Kept: a storage error in replication (same text, ERROR), other openraft errors,
            // the same texts from anyone else, and openraft's lower levels (for RUST_LOG).
            tracing::error!(target: "openraft::replication", "error replication to target={}", 3);
            tracing::error!(target: "openraft::core::raft_core", "quit RaftCore::main on error");
            tracing::warn!(target: "openraft::replication", "failed to get snapshot from state machine");
            tracing::error!(target: "openraft::raft::raft_inner", core_result = ?Err::<(), Fatal>(Fatal::StorageError), "failure {}; message: {}", "sending RaftMsg to RaftCore", "AppendEntries");
            tracing::error!(target: "tally_server::node", "RPCError");
            tracing::info!(target: "openraft::replication", "RPCError");
        });
        assert_eq!(
            *seen.0.lock().unwrap(),
            [
                "error replication to target=3",
                "quit RaftCore::main on error",
                "failed to get snapshot from state machine",
                "failure sending RaftMsg to RaftCore; message: AppendEntries",
                "RPCError",
                "RPCError",
            ]
        );
    }
}
