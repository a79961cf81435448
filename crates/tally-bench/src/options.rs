//! Command-line options of `tally-bench`: one benchmark run by default, plus the small tools
//! `make bench` and `make bench-peers` use to merge, convert and compare result files.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Most events one `RecordUsageBatch` may carry (the server's and the core's limit).
pub const EVENTS_PER_REQUEST_MAX: u32 = 8_190;

#[derive(Parser, Debug)]
#[command(
    name = "tally-bench",
    version,
    about = "Drives a running Tally cluster with the standard debit workload and reports settled \
             events/s and request latency.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub tool: Option<Tool>,
    #[command(flatten)]
    pub run: RunOptions,
}

#[derive(Args, Debug, Clone)]
pub struct RunOptions {
    /// A node's client address (host:port); repeat for several. Writes go to the leader, found
    /// through Admin.ClusterStatus on these endpoints.
    #[arg(
        long = "endpoint",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:7101"
    )]
    pub endpoints: Vec<String>,

    /// Accounts the events are spread over (uniformly at random).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub accounts: u32,

    /// Concurrent clients, each with its own connection unless `--connections` says otherwise
    /// (open loop: connections).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4_096))]
    pub clients: u32,

    /// HTTP/2 connections the clients share, client i using connection i mod N, as the callers
    /// of one gRPC channel share it (default: one per client).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4_096))]
    pub connections: Option<u32>,

    /// How the load is sent: `connection`, tally-bench's own HTTP/2 connections to the leader
    /// (every error counted as it comes), or `client`, through `tally-client`'s `Client` as an
    /// application sends (its retries and leader-following included, every reply parsed into
    /// amounts; `--connections` then counts clients, each with its connections of its own).
    #[arg(long, value_name = "HOW", default_value = "connection", value_parser = ["connection", "client"])]
    pub via: String,

    /// Events per request: 1 sends RecordUsage, more sends RecordUsageBatch.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=EVENTS_PER_REQUEST_MAX as i64))]
    pub events_per_request: u32,

    /// How long to measure, after the warm-up (`20`, `20s`, `500ms`, `2m`).
    #[arg(long, value_parser = parse_duration, default_value = "20s", conflicts_with = "events")]
    pub duration: Duration,

    /// Measure until this many events were sent (after the warm-up) instead of for a duration.
    #[arg(long)]
    pub events: Option<u64>,

    /// Load sent before measuring starts; its results are not counted.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub warmup: Duration,

    /// Open loop: send this many events per second on a fixed schedule, whatever the replies
    /// do (latency counts from the scheduled send time, so it includes the timer's lateness
    /// of up to about 1 ms). Without it: closed loop, each client sends its next request when
    /// the previous one is answered.
    #[arg(long, value_name = "EVENTS_PER_SECOND")]
    pub rate: Option<u64>,

    /// Open loop: most requests in flight at once; beyond it sending waits (and the wait shows
    /// in the latency).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub in_flight_max: u32,

    /// What a batch's reply lists: `unsettled` (the counts and only the events that did not
    /// settle, as a high-volume ingest client asks) or `every` (every event's settlement in
    /// full).
    #[arg(long, value_name = "LISTED", default_value = "unsettled", value_parser = ["unsettled", "every"])]
    pub batch_reply: String,

    /// Write the result as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// A name for this run in tables (default: `CLIENTSxEVENTS`, e.g. `64x1`).
    #[arg(long)]
    pub label: Option<String>,

    /// Do not create the asset, price book and accounts (a previous run with the same
    /// `--accounts` and `--account-prefix` did).
    #[arg(long)]
    pub skip_setup: bool,

    /// Only create the asset, price book and accounts, then exit.
    #[arg(long, conflicts_with = "skip_setup")]
    pub setup_only: bool,

    /// Account ids are `PREFIX-000000`, `PREFIX-000001`, ...
    #[arg(long, default_value = "bench")]
    pub account_prefix: String,

    /// Setup calls in flight at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub setup_concurrency: u32,

    /// Deadline of one request.
    #[arg(long, default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// How long to wait for a leader and an initialized ledger before giving up.
    #[arg(long, default_value_t = 60_000)]
    pub ready_timeout_ms: u64,

    /// Seed of the account and quantity choices (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,

    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Tool {
    /// Merges the JSON results of single runs into one table (printed) and one JSON file.
    Table {
        /// Name of the system measured, e.g. `tally`.
        #[arg(long, default_value = "tally")]
        system: String,
        /// Peak resident memory of a process: `NAME=KIB` (repeatable), e.g. `node-1=81234`.
        #[arg(long = "memory", value_name = "NAME=KIB")]
        memory: Vec<String>,
        /// A sentence describing the set-up (replication, machine...), kept in the JSON.
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Result files written by `tally-bench --out` or `tally-bench pgbench`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Turns pgbench per-transaction logs (`pgbench -l`) into a result with the same fields as
    /// a Tally run (one transaction = one event).
    Pgbench {
        #[arg(long)]
        label: String,
        #[arg(long)]
        clients: u32,
        #[arg(long, default_value_t = 10_000)]
        accounts: u32,
        /// Transactions that completed in the first seconds are not counted.
        #[arg(long, value_parser = parse_duration, default_value = "2s")]
        warmup: Duration,
        /// Failed transactions pgbench reported.
        #[arg(long, default_value_t = 0)]
        failed: u64,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(required = true)]
        logs: Vec<PathBuf>,
    },
    /// Prints Tally / peer ratios for the runs both tables have (same label).
    Compare { tally: PathBuf, peer: PathBuf },
}

/// `20`, `20s`, `500ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_ms) = if let Some(number) = text.strip_suffix("ms") {
        (number, 1)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1_000)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60_000)
    } else {
        (text, 1_000)
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 20s, 500ms or 2m"))?;
    value
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn events_per_request_is_limited() {
        let parse = |value: &str| {
            Cli::try_parse_from(["tally-bench", "--events-per-request", value]).map(|cli| cli.run)
        };
        assert_eq!(parse("8190").unwrap().events_per_request, 8_190);
        assert!(parse("8191").is_err());
        assert!(parse("0").is_err());
    }
}
