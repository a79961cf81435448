//! What a run measured: the counters and latency histogram each client keeps (`Recorder`), the
//! result they add up to (`Summary`, the JSON of `--out`), and tables of several results.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Highest latency the histogram tracks exactly, in microseconds (10 minutes); longer ones are
/// clamped to it, which a benchmark would report as broken anyway.
pub const LATENCY_US_MAX: u64 = 600_000_000;

/// Counters and latencies of one client (or several, once merged). Latencies are request
/// latencies in microseconds.
#[derive(Clone, Debug)]
pub struct Recorder {
    pub latency_us: Histogram<u64>,
    /// Exact, where the histogram only knows the bucket.
    pub latency_us_max: u64,
    pub requests: u64,
    pub events_sent: u64,
    pub settled: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    /// Business rejections by code (`insufficient_funds`...): normal replies.
    pub rejections: BTreeMap<String, u64>,
    /// Failed requests by code (`unavailable`, `deadline_exceeded`...).
    pub errors: BTreeMap<String, u64>,
    /// Events carried by failed requests.
    pub events_failed: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            // Three significant digits: 0.1 % resolution at every magnitude.
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                .expect("histogram bounds are constants and valid"),
            latency_us_max: 0,
            requests: 0,
            events_sent: 0,
            settled: 0,
            duplicates: 0,
            conflicts: 0,
            rejections: BTreeMap::new(),
            errors: BTreeMap::new(),
            events_failed: 0,
        }
    }
}

impl Recorder {
    pub fn record_latency_us(&mut self, latency_us: u64) {
        self.latency_us
            .saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
        self.latency_us_max = self.latency_us_max.max(latency_us);
    }

    pub fn reject(&mut self, code: &str) {
        *self.rejections.entry(code.to_string()).or_default() += 1;
    }

    pub fn error(&mut self, code: &str, events: u64) {
        *self.errors.entry(code.to_string()).or_default() += 1;
        self.events_failed += events;
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms share their bounds");
        self.latency_us_max = self.latency_us_max.max(other.latency_us_max);
        self.requests += other.requests;
        self.events_sent += other.events_sent;
        self.settled += other.settled;
        self.duplicates += other.duplicates;
        self.conflicts += other.conflicts;
        for (code, count) in &other.rejections {
            *self.rejections.entry(code.clone()).or_default() += count;
        }
        for (code, count) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += count;
        }
        self.events_failed += other.events_failed;
    }
}

/// Request latency percentiles in microseconds (floats are fine here: they are measurements,
/// not money).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>, max_us: u64) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        // A quantile is the top of its histogram bucket (3 significant digits), which can lie
        // above the exact maximum: never report more than the slowest request took.
        let at = |quantile| histogram.value_at_quantile(quantile).min(max_us);
        Latency {
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us,
            mean_us: (histogram.mean() * 10.0).round() / 10.0,
        }
    }
}

/// The result of one run: what `--out` writes and what tables are made of.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// `tally` or the peer's name (`postgresql`).
    pub system: String,
    /// `CLIENTSxEVENTS` unless given, e.g. `64x1`.
    pub label: String,
    pub clients: u32,
    /// HTTP/2 connections the clients shared (Tally runs since session 11; none for a peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    pub events_per_request: u32,
    /// `closed` (next request when the previous is answered) or `open` (fixed schedule).
    pub mode: String,
    /// What a batch's reply listed: `unsettled` or `every` (empty: one event per request,
    /// a peer, or a file from before the option).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub batch_reply: String,
    pub target_events_per_second: Option<u64>,
    pub accounts: u32,
    pub warmup_seconds: f64,
    pub measured_seconds: f64,
    pub requests: u64,
    pub events_sent: u64,
    pub settled: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub rejected: u64,
    pub rejections: BTreeMap<String, u64>,
    /// Failed requests.
    pub errors: u64,
    pub error_codes: BTreeMap<String, u64>,
    /// Events carried by failed requests.
    pub events_failed: u64,
    /// Settled events per second of the measured time.
    pub events_per_second: f64,
    pub latency: Latency,
}

impl Summary {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        system: &str,
        label: String,
        clients: u32,
        events_per_request: u32,
        target_events_per_second: Option<u64>,
        accounts: u32,
        warmup_seconds: f64,
        measured_seconds: f64,
        recorder: &Recorder,
    ) -> Summary {
        let events_per_second = if measured_seconds > 0.0 {
            (recorder.settled as f64 / measured_seconds).round()
        } else {
            0.0
        };
        Summary {
            system: system.to_string(),
            label,
            clients,
            connections: None,
            events_per_request,
            mode: if target_events_per_second.is_some() {
                "open".to_string()
            } else {
                "closed".to_string()
            },
            batch_reply: String::new(),
            target_events_per_second,
            accounts,
            warmup_seconds,
            measured_seconds: (measured_seconds * 1000.0).round() / 1000.0,
            requests: recorder.requests,
            events_sent: recorder.events_sent,
            settled: recorder.settled,
            duplicates: recorder.duplicates,
            conflicts: recorder.conflicts,
            rejected: recorder.rejections.values().sum(),
            rejections: recorder.rejections.clone(),
            errors: recorder.errors.values().sum(),
            error_codes: recorder.errors.clone(),
            events_failed: recorder.events_failed,
            events_per_second,
            latency: Latency::of(&recorder.latency_us, recorder.latency_us_max),
        }
    }

    /// A few lines for a person, printed at the end of a run.
    pub fn report(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "{} {}: {} clients{} x {} events/request, {} loop{}, {} accounts, {:.1} s measured",
            self.system,
            self.label,
            self.clients,
            match self.connections {
                Some(1) if self.clients != 1 => " over 1 connection".to_string(),
                Some(connections) if connections != self.clients =>
                    format!(" over {connections} connections"),
                _ => String::new(),
            },
            self.events_per_request,
            self.mode,
            self.target_events_per_second
                .map(|rate| format!(" at {rate} events/s"))
                .unwrap_or_default(),
            self.accounts,
            self.measured_seconds
        );
        let _ = writeln!(
            text,
            "  settled      {} events/s ({} events in {} requests)",
            group(self.events_per_second as u64),
            group(self.settled),
            group(self.requests)
        );
        let _ = writeln!(
            text,
            "  rejections   {} {}",
            self.rejected,
            codes(&self.rejections)
        );
        let _ = writeln!(
            text,
            "  errors       {} {} ({} events in failed requests)",
            self.errors,
            codes(&self.error_codes),
            self.events_failed
        );
        if self.duplicates + self.conflicts > 0 {
            let _ = writeln!(
                text,
                "  duplicates   {} (resends whose first answer was lost, e.g. across a leader change), conflicts {} (event ids are unique: a conflict is a bug)",
                self.duplicates, self.conflicts
            );
        }
        let latency = &self.latency;
        let _ = writeln!(
            text,
            "  latency      p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            millis(latency.p50_us),
            millis(latency.p90_us),
            millis(latency.p99_us),
            millis(latency.p999_us),
            millis(latency.max_us)
        );
        text
    }
}

fn codes(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(code, count)| format!("{code}: {count}"))
        .collect();
    format!("({})", parts.join(", "))
}

/// Microseconds shown as milliseconds with three decimals.
pub fn millis(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

/// `1234567` as `1,234,567`.
pub fn group(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Several runs of one system, as `make bench` writes them to `target/bench/<system>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Table {
    pub system: String,
    pub note: String,
    pub machine: Machine,
    /// Peak resident memory (VmHWM) per process, in KiB.
    pub peak_memory_kib: BTreeMap<String, u64>,
    pub runs: Vec<Summary>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_kib: u64,
    pub kernel: String,
}

impl Machine {
    /// Read from /proc; fields that cannot be read stay empty.
    pub fn this_one() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|line| line.starts_with("model name"))
            .and_then(|line| line.split_once(':'))
            .map(|(_, name)| name.trim().to_string())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = meminfo
            .lines()
            .find(|line| line.starts_with("MemTotal:"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        Machine {
            cpu,
            cores: std::thread::available_parallelism()
                .map(|cores| cores.get())
                .unwrap_or(0),
            memory_kib,
            kernel,
        }
    }
}

impl Table {
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "{}: {} ({} cores, {} MiB, Linux {})",
            self.system,
            self.machine.cpu,
            self.machine.cores,
            self.machine.memory_kib / 1024,
            self.machine.kernel
        );
        if !self.note.is_empty() {
            let _ = writeln!(text, "{}", self.note);
        }
        let _ = writeln!(
            text,
            "| {:<14} | {:>14} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>8} | {:>6} |",
            "shape", "events/s", "p50", "p90", "p99", "p99.9", "max", "rejected", "errors"
        );
        let _ = writeln!(
            text,
            "|{:-<16}|{:->16}|{:->12}|{:->12}|{:->12}|{:->12}|{:->12}|{:->10}|{:->8}|",
            "", "", "", "", "", "", "", "", ""
        );
        for run in &self.runs {
            let latency = &run.latency;
            let _ = writeln!(
                text,
                "| {:<14} | {:>14} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>8} | {:>6} |",
                run.label,
                group(run.events_per_second as u64),
                millis(latency.p50_us),
                millis(latency.p90_us),
                millis(latency.p99_us),
                millis(latency.p999_us),
                millis(latency.max_us),
                run.rejected,
                run.errors
            );
        }
        for (name, kib) in &self.peak_memory_kib {
            let _ = writeln!(
                text,
                "peak memory {name}: {} KiB ({} MiB)",
                group(*kib),
                kib / 1024
            );
        }
        text
    }

    /// Tally / peer for every label both tables have.
    pub fn compare(&self, peer: &Table) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "| {:<14} | {:>12} | {:>12} | {:>7} | {:>10} | {:>10} | {:>7} |",
            "shape",
            format!("{} ev/s", self.system),
            format!("{} ev/s", short(&peer.system)),
            "ratio",
            format!("{} p99", self.system),
            format!("{} p99", short(&peer.system)),
            "ratio"
        );
        let _ = writeln!(
            text,
            "|{:-<16}|{:->14}|{:->14}|{:->9}|{:->12}|{:->12}|{:->9}|",
            "", "", "", "", "", "", ""
        );
        for run in &self.runs {
            for peer_run in peer.runs.iter().filter(|peer_run| {
                peer_run.label == run.label
                    || peer_run.label.starts_with(&format!("{}-", run.label))
            }) {
                let throughput_ratio = if peer_run.events_per_second > 0.0 {
                    format!("{:.2}x", run.events_per_second / peer_run.events_per_second)
                } else {
                    "-".to_string()
                };
                // Lower latency is better: this ratio is the peer's p99 over Tally's.
                let latency_ratio = if run.latency.p99_us > 0 {
                    format!(
                        "{:.2}x",
                        peer_run.latency.p99_us as f64 / run.latency.p99_us as f64
                    )
                } else {
                    "-".to_string()
                };
                let _ = writeln!(
                    text,
                    "| {:<14} | {:>12} | {:>12} | {:>7} | {:>10} | {:>10} | {:>7} |",
                    peer_run.label,
                    group(run.events_per_second as u64),
                    group(peer_run.events_per_second as u64),
                    throughput_ratio,
                    millis(run.latency.p99_us),
                    millis(peer_run.latency.p99_us),
                    latency_ratio
                );
            }
        }
        let _ = writeln!(
            text,
            "(events/s ratio = {0} / {1}; p99 ratio = {1} p99 / {0} p99: above 1 means {0} is better)",
            self.system,
            short(&peer.system)
        );
        // The two tables come from separate runs: say how long each measured, so a table
        // left from another kind of run (a short one, other shapes) shows.
        let seconds = |table: &Table| {
            let measured = table.runs.iter().map(|run| run.measured_seconds);
            let low = measured.clone().fold(f64::INFINITY, f64::min);
            let high = measured.fold(0.0, f64::max);
            if table.runs.is_empty() {
                "no runs".to_string()
            } else if (high - low) < 0.5 {
                format!("{low:.0} s per shape")
            } else {
                format!("{low:.0}-{high:.0} s per shape")
            }
        };
        let _ = writeln!(
            text,
            "(measured: {} {}, {} {})",
            self.system,
            seconds(self),
            short(&peer.system),
            seconds(peer)
        );
        text
    }
}

fn short(system: &str) -> &str {
    if system.starts_with("postgres") {
        "pg"
    } else {
        system
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_quantile_never_exceeds_the_maximum() {
        let mut histogram = super::Histogram::<u64>::new(3).unwrap();
        for value in [1_000, 2_000, 193_003] {
            histogram.record(value).unwrap();
        }
        let latency = super::Latency::of(&histogram, 193_003);
        assert!(histogram.value_at_quantile(0.999) > 193_003);
        assert_eq!(latency.p999_us, 193_003);
        assert_eq!(latency.p50_us, histogram.value_at_quantile(0.5));
    }

    use super::*;

    #[test]
    fn summary_adds_up_the_recorders() {
        let mut first = Recorder {
            requests: 3,
            events_sent: 3,
            settled: 2,
            ..Recorder::default()
        };
        first.reject("insufficient_funds");
        for latency in [100, 200, 300] {
            first.record_latency_us(latency);
        }
        let mut second = Recorder {
            requests: 1,
            events_sent: 100,
            ..Recorder::default()
        };
        second.error("unavailable", 100);
        second.record_latency_us(5_000);
        first.merge(&second);

        let summary = Summary::new("tally", "x".into(), 2, 1, None, 10, 0.0, 2.0, &first);
        assert_eq!(summary.requests, 4);
        assert_eq!(summary.settled, 2);
        assert_eq!(summary.rejected, 1);
        assert_eq!(summary.errors, 1);
        assert_eq!(summary.events_failed, 100);
        assert_eq!(summary.events_per_second, 1.0);
        assert_eq!(summary.latency.max_us, 5_000);
        assert_eq!(summary.latency.p50_us, 200);
        assert_eq!(summary.mode, "closed");

        let json = serde_json::to_string(&summary).unwrap();
        assert!(
            !json.contains("connections"),
            "a peer's run has none: {json}"
        );
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, summary);
    }

    /// The report says when clients shared connections, and the JSON keeps how many.
    #[test]
    fn shared_connections_are_reported() {
        let mut summary = Summary::new(
            "tally",
            "64x1".into(),
            64,
            1,
            None,
            10,
            0.0,
            1.0,
            &Recorder::default(),
        );
        assert!(summary.report().contains("64 clients x 1 events"));
        summary.connections = Some(64);
        assert!(summary.report().contains("64 clients x 1 events"));
        summary.connections = Some(1);
        assert!(summary.report().contains("64 clients over 1 connection x"));
        summary.connections = Some(4);
        assert!(summary.report().contains("64 clients over 4 connections x"));
        let json = serde_json::to_string(&summary).unwrap();
        assert!(json.contains("\"connections\":4"), "{json}");
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back.connections, Some(4));
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(millis(1_234), "1.234 ms");
        assert_eq!(millis(7), "0.007 ms");
    }
}
