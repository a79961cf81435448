//! Reads pgbench's per-transaction logs (`pgbench -l`) into the same `Summary` a Tally run
//! produces, so both go through one histogram and one percentile computation.
//!
//! A log line is `client_id transaction_no latency_us script_no epoch_s epoch_us [lag_us]`;
//! the last two fields are when the transaction ended. Failed transactions (pgbench 15 logs
//! `failed` or `skipped` in the latency field) are counted as errors.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::time::Duration;

use crate::summary::{Recorder, Summary};

struct Transaction {
    ended_us: u64,
    latency_us: Option<u64>,
}

fn parse_line(line: &str) -> Option<Transaction> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 6 {
        return None;
    }
    let epoch_s: u64 = fields[4].parse().ok()?;
    let epoch_us: u64 = fields[5].parse().ok()?;
    Some(Transaction {
        ended_us: epoch_s * 1_000_000 + epoch_us,
        latency_us: fields[2].parse().ok(),
    })
}

/// A summary of the transactions that ended after `warmup` from the first start.
pub fn summarize(
    label: String,
    clients: u32,
    accounts: u32,
    warmup: Duration,
    failed: u64,
    logs: &[PathBuf],
) -> anyhow::Result<Summary> {
    let mut transactions = Vec::new();
    for path in logs {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read pgbench log {}", path.display()))?;
        transactions.extend(text.lines().filter_map(parse_line));
    }
    if transactions.is_empty() {
        bail!("no transactions in the pgbench logs");
    }
    let started_us = transactions
        .iter()
        .map(|transaction| {
            transaction
                .ended_us
                .saturating_sub(transaction.latency_us.unwrap_or(0))
        })
        .min()
        .unwrap_or(0);
    let ended_us = transactions
        .iter()
        .map(|transaction| transaction.ended_us)
        .max()
        .unwrap_or(0);
    let measure_from_us = started_us + warmup.as_micros() as u64;
    if ended_us <= measure_from_us {
        bail!("the run is shorter than its warm-up");
    }
    let mut recorder = Recorder::default();
    for transaction in transactions
        .iter()
        .filter(|transaction| transaction.ended_us >= measure_from_us)
    {
        recorder.requests += 1;
        recorder.events_sent += 1;
        match transaction.latency_us {
            Some(latency_us) => {
                recorder.settled += 1;
                recorder.record_latency_us(latency_us);
            }
            None => recorder.error("failed", 1),
        }
    }
    // pgbench's own total covers the whole run, warm-up included, and the failures the logs
    // list are already counted above: only those the logs left out are added.
    let logged_failures = transactions
        .iter()
        .filter(|transaction| transaction.latency_us.is_none())
        .count() as u64;
    let unlogged = failed.saturating_sub(logged_failures);
    if unlogged > 0 {
        *recorder.errors.entry("failed_reported".into()).or_default() += unlogged;
    }
    let measured_seconds = (ended_us - measure_from_us) as f64 / 1e6;
    Ok(Summary::new(
        "postgresql",
        label,
        clients,
        1,
        None,
        accounts,
        warmup.as_secs_f64(),
        measured_seconds,
        &recorder,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_log_and_skips_the_warmup() {
        let dir = std::env::temp_dir().join(format!("tally-bench-pgbench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("pgbench_log.1");
        // Starts at t=100 s; 1 transaction in the first second, then 4 over the next 2 s.
        let lines = [
            "0 0 1000 0 100 500000",
            "0 1 2000 0 101 500000",
            "0 2 3000 0 102 0",
            "1 0 4000 0 102 500000",
            "1 1 failed 0 103 0",
        ];
        std::fs::write(&log, lines.join("\n")).unwrap();
        let summary = summarize(
            "1x1".into(),
            2,
            10,
            Duration::from_secs(1),
            0,
            std::slice::from_ref(&log),
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(summary.settled, 3);
        assert_eq!(summary.errors, 1);
        assert_eq!(summary.latency.max_us, 4000);
        // From 100.499 s + 1 s to 103 s.
        assert!(
            (summary.measured_seconds - 1.501).abs() < 0.001,
            "{}",
            summary.measured_seconds
        );
        assert_eq!(summary.system, "postgresql");
    }

    /// pgbench's reported failure total includes the failures its log lists: each is counted
    /// once; only failures the log does not list are added.
    #[test]
    fn a_failure_in_the_log_and_in_the_total_counts_once() {
        let dir =
            std::env::temp_dir().join(format!("tally-bench-pgbench-failed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("pgbench_log.1");
        let lines = ["0 0 1000 0 100 0", "0 1 failed 0 102 0", "0 2 1000 0 103 0"];
        std::fs::write(&log, lines.join("\n")).unwrap();
        let count = |failed| {
            summarize(
                "1x1".into(),
                1,
                10,
                Duration::from_secs(1),
                failed,
                std::slice::from_ref(&log),
            )
            .unwrap()
            .errors
        };
        assert_eq!(count(1), 1);
        assert_eq!(count(3), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
