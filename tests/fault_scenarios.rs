//! Fault-injection scenarios (issue 5): each fault alone, then all of them mixed from a seed,
//! against a real 3-node cluster whose peer links run through test-controlled proxies. Every
//! run checks the recorded history (see `tally_tests::faults::checker`); a failure prints the
//! seed and the fault schedule. `make test` runs a short pass of each; long runs:
//! `make test-faults SEED=... DURATION=...` (see tests/README.md).
//!
//! Environment: `FAULT_SEED`, `FAULT_DURATION_S` override every scenario's seed and duration;
//! `FAULT_FAULTS=kill_leader,slow_links` restricts the fault pool of `mixed`.

use std::time::Duration;

use tally_tests::faults::nemesis::Fault;
use tally_tests::faults::run::{duration_from_env, run, seed_from_env, RunSpec};

/// A short pass per scenario keeps the whole suite within a few minutes on 2 cores.
const SHORT: Duration = Duration::from_secs(10);

async fn scenario(name: &str, default_seed: u64, faults: Vec<Fault>) {
    let seed = seed_from_env(default_seed);
    let duration = duration_from_env(SHORT);
    run(RunSpec::new(name, seed, duration, faults)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_leader() {
    scenario("kill_leader", 1, vec![Fault::KillLeader]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_follower() {
    scenario("kill_follower", 2, vec![Fault::KillFollower]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_node() {
    scenario("pause_node", 3, vec![Fault::PauseNode]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolate_leader() {
    scenario("isolate_leader", 4, vec![Fault::IsolateLeader]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_minority() {
    scenario("split_minority", 5, vec![Fault::SplitMinority]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_loss() {
    scenario("one_way_loss", 6, vec![Fault::OneWayLoss]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_links() {
    scenario("slow_links", 7, vec![Fault::SlowLinks]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_all() {
    scenario("kill_all", 8, vec![Fault::KillAll]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership() {
    scenario("membership", 9, vec![Fault::Membership]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_catch_up() {
    scenario("snapshot_catch_up", 10, vec![Fault::SnapshotCatchUp]).await;
}

/// Every fault, drawn at random from the seed. `make test-faults` runs only this one, long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed() {
    let faults = match std::env::var("FAULT_FAULTS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|name| {
                Fault::parse(name.trim()).unwrap_or_else(|| {
                    panic!(
                        "FAULT_FAULTS: unknown fault {name:?}; known: {:?}",
                        Fault::ALL.map(Fault::name)
                    )
                })
            })
            .collect(),
        _ => Fault::ALL.to_vec(),
    };
    let seed = seed_from_env(11);
    let duration = duration_from_env(Duration::from_secs(20));
    run(RunSpec::new("mixed", seed, duration, faults)).await;
}
