//! Fault-injection scenarios (issue 5): each fault alone, then all of them mixed from a seed,
//! against a real 3-node cluster whose peer links run through test-controlled proxies. Every
//! run checks the recorded history (see `tally_tests::faults::checker`); a failure prints the
//! seed and the fault schedule. `make test` runs a short pass of each; long runs:
//! `make test-faults SEED=... DURATION=...` (tests/README.md).

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
