//! kill -9 while appending: every append the store acknowledged is there after a restart,
//! byte for byte, with no hole before it.
//!
//! The parent test re-runs this test binary as a child (`kill9_child_process`, selected with
//! an environment variable) that appends entries and prints each acknowledged index, kills it
//! with SIGKILL at a random moment (seeded; the seed is printed, set `TALLY_TEST_SEED` to
//! replay), reopens the store and checks. SIGKILL keeps the kernel's page cache, so this proves
//! nothing is acknowledged while still buffered in the process and that the log recovers from a
//! torn write (a cut record at the tail of the last segment); surviving power loss rests on
//! the fdatasync calls themselves (see `src/log_store.rs`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{RaftLogReader, Vote};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const CHILD_DIR_ENV: &str = "TALLY_STORE_KILL9_CHILD_DIR";
/// Set for the child of the parallel-sync test: it appends as leader with
/// `sync_own_appends_in_parallel`, and acknowledges an entry once its background sync is done.
const CHILD_PARALLEL_ENV: &str = "TALLY_STORE_KILL9_PARALLEL";
/// The child stops by itself after this long if nobody kills it.
const CHILD_RUN_MS_MAX: u64 = 30_000;
const ROUNDS: usize = 4;
/// Small segments, so that kills also land while appends start new segment files.
const SMALL_SEGMENTS: tally_store::LogOptions = tally_store::LogOptions {
    segment_bytes_target: 1024 * 1024,
    cache_bytes_max: 0,
};

/// Deterministic content of log entry `i`: the parent regenerates it to check integrity.
/// Every 10th entry is large (a 3000-event batch).
fn expected_entry(i: u64) -> RaftEntry {
    let at_ms = BASE_MS + i;
    match i % 10 {
        0 => normal(
            1,
            i,
            tally_core::Entry {
                at_ms,
                commands: vec![tally_core::Command::UsageBatch {
                    events: (0..3_000).map(|k| usage(i % 7, k, at_ms, "3.25")).collect(),
                    atomic: true,
                }],
            },
        ),
        5 => blank(1, i),
        _ => normal(
            1,
            i,
            tally_core::Entry {
                at_ms,
                commands: (0..1 + i % 3)
                    .map(|k| {
                        tally_core::Command::Usage(usage(k, i, at_ms, &format!("{}.{}", i, k)))
                    })
                    .collect(),
            },
        ),
    }
}

#[test]
#[ignore = "child process of kill9_acknowledged_appends_survive, which runs it"]
fn kill9_child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        eprintln!(
            "{CHILD_DIR_ENV} not set: nothing to do (this runs as a child of the kill -9 test)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (mut log, _sm) =
            tally_store::open_with(std::path::Path::new(&dir), SMALL_SEGMENTS).unwrap();
        let parallel = std::env::var(CHILD_PARALLEL_ENV).is_ok_and(|v| v == "1");
        if parallel {
            // The entries' leader (term 1, node 1) with its vote committed: this node leads.
            log.sync_own_appends_in_parallel(1).unwrap();
            log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        }
        let durability = log.durability();
        let mut next = log
            .get_log_state()
            .await
            .unwrap()
            .last_log_id
            .map_or(1, |l| l.index + 1);
        let mut term = log
            .read_vote()
            .await
            .unwrap()
            .map_or(0, |v| v.leader_id.term);
        let mut rng = SmallRng::seed_from_u64(next);
        let mut out = std::io::stdout().lock();
        let deadline = Instant::now() + Duration::from_millis(CHILD_RUN_MS_MAX);
        while Instant::now() < deadline {
            let n = rng.gen_range(1..=4);
            log.blocking_append((next..next + n).map(expected_entry))
                .await
                .unwrap();
            next += n;
            // What a leader answers for: on disk here (at once without parallel syncs).
            durability.wait_through(next - 1).await.unwrap();
            writeln!(out, "ack {}", next - 1).unwrap();
            out.flush().unwrap();
            if !parallel && rng.gen_ratio(1, 8) {
                term += 1;
                log.save_vote(&Vote::new(term, 1)).await.unwrap();
                writeln!(out, "vote {term}").unwrap();
                out.flush().unwrap();
            }
        }
    });
}

#[test]
fn kill9_acknowledged_appends_survive() {
    kill9_rounds(false);
}

/// The same with the leader's own appends synced in the background: every entry the log
/// reported durable (what apply, and so every answer, waits for) is there after the kill.
#[test]
fn kill9_appends_synced_in_parallel_survive() {
    kill9_rounds(true);
}

fn kill9_rounds(parallel: bool) {
    let seed: u64 = std::env::var("TALLY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("kill9 seed {seed} (TALLY_TEST_SEED={seed} to replay)");
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked_max = 0u64;
    let mut vote_max = 0u64;

    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "kill9_child_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_PARALLEL_ENV, if parallel { "1" } else { "" })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let pump = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut record = |line: &str| {
            if let Some(n) = line.strip_prefix("ack ") {
                acked_max = acked_max.max(n.parse().unwrap());
            } else if let Some(t) = line.strip_prefix("vote ") {
                vote_max = vote_max.max(t.parse().unwrap());
            }
        };
        // Wait until it is appending, then kill it at a random moment.
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("child printed no acknowledgement within 60 s");
            record(&line);
            if line.starts_with("ack ") {
                break;
            }
        }
        let delay_ms = rng.gen_range(20..700);
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "child exited by itself before the kill: {status}"
        );
        pump.join().unwrap();
        for line in rx.try_iter() {
            record(&line);
        }

        let rt = tokio::runtime::Runtime::new().unwrap();
        let (found, vote) = rt.block_on(async {
            let (mut log, _sm) = tally_store::open_with(dir.path(), SMALL_SEGMENTS).unwrap();
            let state = log.get_log_state().await.unwrap();
            let last = state.last_log_id.map_or(0, |l| l.index);
            assert!(
                last >= acked_max,
                "round {round}: acknowledged up to {acked_max}, found only up to {last} (seed {seed})"
            );
            let entries = log.try_get_log_entries(1..=last).await.unwrap();
            assert_eq!(entries.len() as u64, last, "round {round}: hole in the log (seed {seed})");
            for (k, e) in entries.iter().enumerate() {
                assert!(
                    *e == expected_entry(k as u64 + 1),
                    "round {round}: entry {} damaged (seed {seed})",
                    k + 1
                );
            }
            (last, log.read_vote().await.unwrap())
        });
        let vote_term = vote.map_or(0, |v| v.leader_id.term);
        assert!(
            vote_term >= vote_max,
            "round {round}: acknowledged vote term {vote_max}, found {vote_term} (seed {seed})"
        );
        println!("round {round}: killed after {delay_ms} ms; acknowledged {acked_max}, found {found}, vote {vote_term}");
    }
}
