//! Measures one append + fsync (a measurement, not a timed test: it asserts only that the
//! entries are there). Run:
//! `cargo test -p tally-store --release --test append_cost -- --ignored --nocapture`

mod common;

use std::time::{Duration, Instant};

use common::*;
use openraft::storage::RaftLogStorageExt;
use openraft::RaftLogReader;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

fn small(i: u64) -> RaftEntry {
    normal(
        1,
        i,
        tally_core::Entry {
            at_ms: BASE_MS + i,
            commands: vec![tally_core::Command::Usage(usage(1, i, BASE_MS, "1"))],
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand with --ignored --nocapture"]
async fn measure_append_fsync_cost() {
    const APPENDS: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = tally_store::open(dir.path()).unwrap();
    let mut next = 1;
    for entries_per_append in [1u64, 16, 64] {
        let mut times = Vec::with_capacity(APPENDS as usize);
        for _ in 0..APPENDS {
            let started = Instant::now();
            log.blocking_append((next..next + entries_per_append).map(small))
                .await
                .unwrap();
            times.push(started.elapsed());
            next += entries_per_append;
        }
        times.sort();
        let total: Duration = times.iter().sum();
        println!(
            "append of {entries_per_append:>2} small entries + fdatasync: mean {:?}, p50 {:?}, p99 {:?} ({APPENDS} appends)",
            total / APPENDS as u32,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
        );
    }
    assert_eq!(
        log.try_get_log_entries(..).await.unwrap().len() as u64,
        next - 1
    );
}
