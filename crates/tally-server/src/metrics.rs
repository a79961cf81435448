//! The node's counters and latency histograms, rendered as Prometheus text.
//!
//! Hand-written rather than a metrics crate: a handful of counters and fixed-bucket histograms
//! behind one mutex is all `/metrics` needs, and it keeps the dependency tree small.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tally_store::{LogDurability, SYNC_BUCKETS_US};

/// Upper bounds of the latency buckets, in seconds (Prometheus convention).
const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

#[derive(Default)]
struct MethodStats {
    /// Requests by gRPC status code name (`ok`, `invalid_argument`, ...).
    by_code: BTreeMap<String, u64>,
    /// Count per bucket of `LATENCY_BUCKETS_SECONDS`, plus one for +Inf.
    buckets: [u64; LATENCY_BUCKETS_SECONDS.len() + 1],
    /// Sum of latencies in microseconds (integer, so no float accumulates error).
    latency_us_sum: u64,
}

/// Raft's view of the node, sampled when `/metrics` is served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftGauges {
    pub node_id: u64,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub is_leader: bool,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: Option<u64>,
    pub members: usize,
    pub ledger_initialized: bool,
}

#[derive(Default)]
pub struct Metrics {
    methods: Mutex<BTreeMap<&'static str, MethodStats>>,
    rejections: Mutex<BTreeMap<String, u64>>,
    events_settled: AtomicU64,
    events_duplicate: AtomicU64,
    entries_proposed: AtomicU64,
    commands_proposed: AtomicU64,
    snapshots_built: AtomicU64,
    requests_forwarded: AtomicU64,
    /// The node's Raft log, whose syncs `tally_log_sync_seconds` shows.
    log: OnceLock<LogDurability>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one finished request of `method` with its result code and latency.
    pub fn record_request(&self, method: &'static str, code: &str, latency: Duration) {
        let mut methods = self
            .methods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stats = methods.entry(method).or_default();
        *stats.by_code.entry(code.to_string()).or_default() += 1;
        let seconds = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        stats.buckets[bucket] += 1;
        stats.latency_us_sum = stats
            .latency_us_sum
            .saturating_add(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn record_rejection(&self, reason_code: &str) {
        let mut rejections = self
            .rejections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *rejections.entry(reason_code.to_string()).or_default() += 1;
    }

    pub fn add_events_settled(&self, count: u64) {
        self.events_settled.fetch_add(count, Ordering::Relaxed);
    }

    pub fn add_events_duplicate(&self, count: u64) {
        self.events_duplicate.fetch_add(count, Ordering::Relaxed);
    }

    pub fn record_entry_proposed(&self, commands: usize) {
        self.entries_proposed.fetch_add(1, Ordering::Relaxed);
        self.commands_proposed
            .fetch_add(commands as u64, Ordering::Relaxed);
    }

    pub fn record_snapshot_built(&self) {
        self.snapshots_built.fetch_add(1, Ordering::Relaxed);
    }

    /// Shows the syncs of `log` (the node's Raft log) as `tally_log_sync_seconds`.
    pub fn watch_log_syncs(&self, log: LogDurability) {
        let _ = self.log.set(log);
    }

    pub fn record_forwarded(&self) {
        self.requests_forwarded.fetch_add(1, Ordering::Relaxed);
    }

    pub fn events_settled(&self) -> u64 {
        self.events_settled.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self, raft: &RaftGauges) -> String {
        let mut out = String::with_capacity(4096);
        let node = raft.node_id;
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name}{{node=\"{node}\"}} {value}");
        };
        gauge(&mut out, "tally_raft_term", "Current Raft term.", raft.term);
        gauge(
            &mut out,
            "tally_raft_leader_id",
            "Id of the leader this node knows of (0 when none).",
            raft.leader_id.unwrap_or(0),
        );
        gauge(
            &mut out,
            "tally_raft_is_leader",
            "1 when this node is the leader.",
            u64::from(raft.is_leader),
        );
        gauge(
            &mut out,
            "tally_raft_last_log_index",
            "Index of the last entry in this node's log.",
            raft.last_log_index,
        );
        gauge(
            &mut out,
            "tally_raft_commit_index",
            "Highest log index known committed by this node (a leader counts its own copy from the write, before its sync: nothing is applied before that sync).",
            raft.commit_index,
        );
        gauge(
            &mut out,
            "tally_raft_applied_index",
            "Highest log index applied to the state machine.",
            raft.applied_index,
        );
        gauge(
            &mut out,
            "tally_raft_snapshot_index",
            "Log index of the last snapshot (0 when none).",
            raft.snapshot_index.unwrap_or(0),
        );
        gauge(
            &mut out,
            "tally_raft_members",
            "Voters and learners in the membership.",
            raft.members as u64,
        );
        gauge(
            &mut out,
            "tally_ledger_initialized",
            "1 once the Init command is applied.",
            u64::from(raft.ledger_initialized),
        );

        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{node=\"{node}\"}} {value}");
        };
        counter(
            &mut out,
            "tally_events_settled_total",
            "Usage events this node answered as settled.",
            self.events_settled.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "tally_events_duplicate_total",
            "Usage events this node answered as duplicates of settled ones.",
            self.events_duplicate.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "tally_entries_proposed_total",
            "Log entries this node proposed as leader.",
            self.entries_proposed.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "tally_commands_proposed_total",
            "Commands this node proposed as leader (group commit: several per entry).",
            self.commands_proposed.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "tally_snapshots_total",
            "Snapshots this node built or installed since it started.",
            self.snapshots_built.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "tally_requests_forwarded_total",
            "Writes this node forwarded to the leader.",
            self.requests_forwarded.load(Ordering::Relaxed),
        );

        {
            let rejections = self
                .rejections
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let _ = writeln!(
                out,
                "# HELP tally_rejections_total Commands rejected by the ledger, by reason."
            );
            let _ = writeln!(out, "# TYPE tally_rejections_total counter");
            for (reason, count) in rejections.iter() {
                let _ = writeln!(
                    out,
                    "tally_rejections_total{{node=\"{node}\",reason=\"{reason}\"}} {count}"
                );
            }
        }

        let methods = self
            .methods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = writeln!(
            out,
            "# HELP tally_requests_total gRPC requests served, by method and status code."
        );
        let _ = writeln!(out, "# TYPE tally_requests_total counter");
        for (method, stats) in methods.iter() {
            for (code, count) in &stats.by_code {
                let _ = writeln!(
                    out,
                    "tally_requests_total{{node=\"{node}\",method=\"{method}\",code=\"{code}\"}} {count}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tally_request_duration_seconds gRPC request latency, by method."
        );
        let _ = writeln!(out, "# TYPE tally_request_duration_seconds histogram");
        for (method, stats) in methods.iter() {
            write_histogram(
                &mut out,
                "tally_request_duration_seconds",
                &format!("node=\"{node}\",method=\"{method}\""),
                LATENCY_BUCKETS_SECONDS
                    .iter()
                    .map(|bound| bound.to_string()),
                &stats.buckets,
                &format!(
                    "{}.{:06}",
                    stats.latency_us_sum / 1_000_000,
                    stats.latency_us_sum % 1_000_000
                ),
            );
        }
        drop(methods);
        if let Some(log) = self.log.get() {
            render_log_syncs(&mut out, node, log);
        }
        out
    }
}

/// `tally_log_sync_seconds`: how long each `fdatasync` of appended Raft log entries took.
fn render_log_syncs(out: &mut String, node: u64, log: &LogDurability) {
    let histogram = log.sync_histogram();
    let _ = writeln!(
        out,
        "# HELP tally_log_sync_seconds Time each fdatasync of appended Raft log entries took (a follower's before it answers, a leader's own while its entries replicate)."
    );
    let _ = writeln!(out, "# TYPE tally_log_sync_seconds histogram");
    write_histogram(
        out,
        "tally_log_sync_seconds",
        &format!("node=\"{node}\""),
        SYNC_BUCKETS_US
            .iter()
            .map(|bound_us| seconds_text(*bound_us)),
        &histogram.counts,
        &seconds_text(histogram.sum_us),
    );
}

/// One histogram series of `name` with `labels`: `counts` per bucket (bounded by `bounds`,
/// then one above the last bound), written cumulative, then its sum and count.
fn write_histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: impl Iterator<Item = String>,
    counts: &[u64],
    sum: &str,
) {
    let mut cumulative = 0;
    for (bound, count) in bounds.zip(counts) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
    }
    let total: u64 = counts.iter().sum();
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
}

/// `us` microseconds as decimal seconds, without trailing zeros (`250` -> `0.00025`).
fn seconds_text(us: u64) -> String {
    let text = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let metrics = Metrics::new();
        metrics.record_request("record_usage", "ok", Duration::from_micros(1_500));
        metrics.record_request("record_usage", "ok", Duration::from_secs(20));
        metrics.record_request(
            "record_usage",
            "invalid_argument",
            Duration::from_micros(100),
        );
        metrics.record_rejection("insufficient_funds");
        metrics.add_events_settled(3);
        let text = metrics.render(&RaftGauges {
            node_id: 2,
            term: 7,
            leader_id: Some(1),
            applied_index: 42,
            ..Default::default()
        });
        assert!(text.contains("tally_raft_term{node=\"2\"} 7\n"));
        assert!(text.contains("tally_raft_leader_id{node=\"2\"} 1\n"));
        assert!(text.contains("tally_raft_applied_index{node=\"2\"} 42\n"));
        assert!(text.contains("tally_events_settled_total{node=\"2\"} 3\n"));
        assert!(
            text.contains("tally_rejections_total{node=\"2\",reason=\"insufficient_funds\"} 1\n")
        );
        assert!(text.contains(
            "tally_requests_total{node=\"2\",method=\"record_usage\",code=\"invalid_argument\"} 1\n"
        ));
        // 100 µs and 1.5 ms fall at or below 2 ms; the 20 s request only in +Inf.
        assert!(text.contains(
            "tally_request_duration_seconds_bucket{node=\"2\",method=\"record_usage\",le=\"0.002\"} 2\n"
        ));
        assert!(text.contains(
            "tally_request_duration_seconds_bucket{node=\"2\",method=\"record_usage\",le=\"+Inf\"} 3\n"
        ));
        assert!(text.contains(
            "tally_request_duration_seconds_sum{node=\"2\",method=\"record_usage\"} 20.001600\n"
        ));
        assert!(
            !text.contains("tally_log_sync_seconds"),
            "no log watched, no log histogram"
        );
    }

    #[test]
    fn renders_the_log_sync_histogram() {
        let metrics = Metrics::new();
        let log = LogDurability::default();
        metrics.watch_log_syncs(log.clone());
        log.record_sync(Duration::from_micros(80));
        log.record_sync(Duration::from_micros(100));
        log.record_sync(Duration::from_micros(140));
        log.record_sync(Duration::from_secs(3));
        let text = metrics.render(&RaftGauges {
            node_id: 2,
            ..Default::default()
        });
        for line in [
            "# TYPE tally_log_sync_seconds histogram\n",
            // 80 and 100 us at or below 100 us; 140 us at or below 250 us; 3 s only in +Inf.
            "tally_log_sync_seconds_bucket{node=\"2\",le=\"0.0001\"} 2\n",
            "tally_log_sync_seconds_bucket{node=\"2\",le=\"0.00025\"} 3\n",
            "tally_log_sync_seconds_bucket{node=\"2\",le=\"1\"} 3\n",
            "tally_log_sync_seconds_bucket{node=\"2\",le=\"+Inf\"} 4\n",
            "tally_log_sync_seconds_sum{node=\"2\"} 3.00032\n",
            "tally_log_sync_seconds_count{node=\"2\"} 4\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
