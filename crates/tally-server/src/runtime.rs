//! The node's async runtime: tokio's multi-threaded scheduler with `worker_threads` workers.
//!
//! One worker per core (the default, `worker_threads = 0`) suits a node with a machine of its
//! own. Where nodes share few cores (several nodes on one small machine), each hand-off between
//! two workers is a thread wake-up; on the 2-core development VM with three nodes and the load
//! generator on it (scripts/bench/README.md, session 21), one worker per node used 15-20% less
//! CPU per event with one event per request, settled as many or a few percent more events/s
//! there, and 3-15% fewer in batches of 100 and 8,190, where a second worker decodes requests
//! while the first applies. So the default stays one per core.

use tokio::runtime::{Builder, Runtime};

use crate::config::Config;

/// The runtime `config` asks for: `worker_threads` workers, or tokio's default when 0 (one per
/// core, or `TOKIO_WORKER_THREADS` from the environment).
pub fn build(config: &Config) -> std::io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    if config.worker_threads > 0 {
        builder.worker_threads(config.worker_threads);
    }
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_runtime_has_the_workers_the_config_names() {
        let mut config = Config::dev(PathBuf::from("unused"));
        for workers in [1, 3] {
            config.worker_threads = workers;
            let runtime = build(&config).expect("a runtime");
            assert_eq!(runtime.metrics().num_workers(), workers);
            // And it runs work.
            assert_eq!(
                runtime
                    .block_on(async { tokio::spawn(async { 7 }).await })
                    .unwrap(),
                7
            );
        }
    }
}
