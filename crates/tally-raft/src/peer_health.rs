//! One log line when a peer stops answering, a reminder while it lasts, one when it answers
//! again: what an operator needs from the peer network, instead of a line per failed request.
//!
//! openraft 0.9 logs every failed RPC itself (an ERROR and three WARNs per retry of a down
//! follower, about once a second, and an ERROR per linearizable read while a voter is down: a
//! thousand a second under read load). `tallyd` hides those lines (see its log filter) and the
//! network reports through this instead: per peer, a failure that starts an episode is logged
//! at WARN, a failure still going on is logged again once per [`REMINDER`], and the first
//! success after a logged failure at INFO with how long it lasted and how many requests failed.
//! A link that flaps does not log faster than once per [`REMINDER`] either: a failure within
//! it of the last warning counts silently into the next line, unless its run of failures lasts
//! [`LASTING`] (then it is an outage of its own, and logged).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tally_store::NodeId;

/// How often a failure that goes on is logged again (and the least time between two warnings
/// about one peer, unless the second run of failures lasts [`LASTING`]).
pub const REMINDER: Duration = Duration::from_secs(60);

/// A run of failures this long is logged even within [`REMINDER`] of the last warning: a real
/// outage soon after a blip is not left out, only a link that flaps.
pub const LASTING: Duration = Duration::from_secs(5);

/// What [`PeerHealth`] logged for one outcome (returned for tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Nothing (a success while healthy, or a failure within [`REMINDER`] of the last warning).
    Quiet,
    /// The peer stopped answering.
    Failing,
    /// Still failing, `failures` requests in all since `for_` ago.
    StillFailing { failures: u64, for_: Duration },
    /// It answers again after `for_`, `failures` requests having failed.
    Answering { failures: u64, for_: Duration },
}

#[derive(Debug, Default)]
struct PeerState {
    /// When the current run of failures began (`None` while the peer answers).
    failing_since: Option<Instant>,
    /// Requests failed since `failing_since`.
    failures: u64,
    /// When a warning about this peer was last logged.
    warned_at: Option<Instant>,
    /// Whether the current run of failures was logged (so its end is logged too).
    run_logged: bool,
}

/// Per-peer failure tracking shared by every clone of the network factory.
#[derive(Debug, Default)]
pub struct PeerHealth {
    peers: Mutex<HashMap<NodeId, PeerState>>,
}

impl PeerHealth {
    /// Records one answered request to `target`; logs when it ends a logged failure.
    pub fn answered(&self, target: NodeId, addr: &str, now: Instant) -> Report {
        let mut peers = self.peers.lock().expect("peer health poisoned");
        let Some(state) = peers.get_mut(&target) else {
            return Report::Quiet;
        };
        let Some(since) = state.failing_since.take() else {
            return Report::Quiet;
        };
        let failures = std::mem::take(&mut state.failures);
        if !std::mem::take(&mut state.run_logged) {
            return Report::Quiet;
        }
        let for_ = now.saturating_duration_since(since);
        tracing::info!(
            "peer {target} at {addr} answers again after {:.1} s ({failures} requests to it failed)",
            for_.as_secs_f64()
        );
        Report::Answering { failures, for_ }
    }

    /// Records one failed request to `target` (`reason`: the error); logs the start of a run
    /// of failures, and a reminder once per [`REMINDER`] while it lasts.
    pub fn failed(&self, target: NodeId, addr: &str, reason: &str, now: Instant) -> Report {
        let mut peers = self.peers.lock().expect("peer health poisoned");
        let state = peers.entry(target).or_default();
        let starts = state.failing_since.is_none();
        let since = *state.failing_since.get_or_insert(now);
        state.failures += 1;
        let lasting = !state.run_logged && now.saturating_duration_since(since) >= LASTING;
        let due = lasting
            || state
                .warned_at
                .is_none_or(|warned| now.saturating_duration_since(warned) >= REMINDER);
        if !due {
            return Report::Quiet;
        }
        state.warned_at = Some(now);
        let minutes = REMINDER.as_secs() / 60;
        if starts || !state.run_logged {
            state.run_logged = true;
            tracing::warn!(
                "peer {target} at {addr} does not answer: {reason}; Raft keeps retrying, \
                 with backoff (logged again every {minutes} min while it lasts)"
            );
            return Report::Failing;
        }
        let for_ = now.saturating_duration_since(since);
        let failures = state.failures;
        tracing::warn!(
            "peer {target} at {addr} still does not answer after {:.0} s ({failures} requests \
             failed): {reason}",
            for_.as_secs_f64()
        );
        Report::StillFailing { failures, for_ }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: &str = "10.0.0.3:7203";

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_down_peer_is_logged_once_then_once_a_reminder_then_when_it_answers() {
        let health = PeerHealth::default();
        let t0 = Instant::now();
        assert_eq!(health.answered(3, ADDR, t0), Report::Quiet);
        assert_eq!(
            health.failed(3, ADDR, "refused", at(t0, 10)),
            Report::Failing
        );
        // A thousand more failures within the reminder interval: silent.
        for n in 0..1_000 {
            assert_eq!(
                health.failed(3, ADDR, "refused", at(t0, 20 + n)),
                Report::Quiet
            );
        }
        // Another peer is tracked on its own.
        assert_eq!(
            health.failed(2, ADDR, "timeout", at(t0, 30)),
            Report::Failing
        );
        let reminder = REMINDER.as_millis() as u64;
        assert_eq!(
            health.failed(3, ADDR, "refused", at(t0, 10 + reminder)),
            Report::StillFailing {
                failures: 1_002,
                for_: REMINDER
            }
        );
        assert_eq!(
            health.answered(3, ADDR, at(t0, 20 + reminder)),
            Report::Answering {
                failures: 1_002,
                for_: REMINDER + Duration::from_millis(10)
            }
        );
        assert_eq!(
            health.answered(3, ADDR, at(t0, 30 + reminder)),
            Report::Quiet
        );
    }

    #[test]
    fn a_flapping_link_logs_no_more_than_once_a_reminder() {
        let health = PeerHealth::default();
        let t0 = Instant::now();
        assert_eq!(health.failed(3, ADDR, "timeout", t0), Report::Failing);
        assert!(matches!(
            health.answered(3, ADDR, at(t0, 100)),
            Report::Answering { failures: 1, .. }
        ));
        // Fails and recovers again and again within the interval: counted, not logged, and
        // the unlogged runs' ends are not logged either.
        for n in 0..50 {
            assert_eq!(
                health.failed(3, ADDR, "timeout", at(t0, 200 + n * 10)),
                Report::Quiet
            );
            assert_eq!(
                health.answered(3, ADDR, at(t0, 205 + n * 10)),
                Report::Quiet
            );
        }
        // A run that starts silently within the interval and lasts is logged as a start once
        // it has lasted LASTING (a real outage soon after a blip).
        let lasting = LASTING.as_millis() as u64;
        assert_eq!(
            health.failed(3, ADDR, "timeout", at(t0, 1_000)),
            Report::Quiet
        );
        assert_eq!(
            health.failed(3, ADDR, "timeout", at(t0, 1_000 + lasting - 1)),
            Report::Quiet
        );
        assert_eq!(
            health.failed(3, ADDR, "timeout", at(t0, 1_000 + lasting)),
            Report::Failing
        );
        assert!(matches!(
            health.answered(3, ADDR, at(t0, 1_000 + lasting + 1)),
            Report::Answering { failures: 3, .. }
        ));
    }
}
