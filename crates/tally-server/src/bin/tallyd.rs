//! `tallyd`: parses its arguments and hands over to [`tally_server::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tally_server::config::Config;
use tally_server::shutdown::Shutdown;

/// mimalloc instead of glibc malloc: the settlement path allocates many small short-lived
/// objects (journal entries, gRPC messages), where glibc's malloc/free showed up as ~40% of the
/// leader's samples under load (perf, `make bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A Tally ledger node.
#[derive(Parser, Debug)]
#[command(
    name = "tallyd",
    version,
    about = "A Tally ledger node (Raft-replicated usage ledger)"
)]
struct Args {
    /// The node's TOML configuration file (see cluster-config/example-hosts.toml).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "dev",
        required_unless_present = "dev"
    )]
    config: Option<PathBuf>,
    /// Run a single-node cluster with every default (client 127.0.0.1:7101, metrics :7301).
    #[arg(long)]
    dev: bool,
    /// Data directory for --dev (default ./data/dev).
    #[arg(long, value_name = "DIR", requires = "dev")]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    tally_server::alloc::keep_freed_memory();
    tally_server::logging::init();
    let args = Args::parse();
    let config = match (&args.config, args.dev) {
        (Some(path), _) => match Config::from_file(path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("tallyd: {error}");
                return ExitCode::from(2);
            }
        },
        (None, _) => Config::dev(
            args.data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("./data/dev")),
        ),
    };
    let runtime = match tally_server::runtime::build(&config) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tallyd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = Shutdown::new();
        shutdown.trigger_on_signals()?;
        tally_server::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tallyd: {error:#}");
            ExitCode::FAILURE
        }
    }
}
