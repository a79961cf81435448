//! tally-bench: drives a running Tally cluster with the standard debit workload and reports
//! settled events/s, rejections, errors and request latency (p50, p90, p99, p99.9, max).
//!
//! # Public API
//! - [`run`]`(RunOptions) -> Option<Summary>` (`None` with `--setup-only`): one benchmark run against a running cluster: finds the
//!   leader (`Admin.ClusterStatus`), funds the accounts unless `--skip-setup` (see
//!   [`setup`]), sends the load ([`driver`]), prints progress on stderr and the result on
//!   stdout, writes it as JSON with `--out`.
//! - [`options`]: the command line ([`options::Cli`]); besides a run, the tools `table`
//!   (merge results into `target/bench/<system>.json`), `pgbench` (pgbench logs into the same
//!   result format) and `compare` (Tally / peer ratios), used by `make bench` and
//!   `make bench-peers` (scripts/bench/).
//! - [`summary`]: [`summary::Summary`] (the JSON of one run), [`summary::Table`] (several),
//!   [`summary::Recorder`] (counters and an hdrhistogram of latency in microseconds).
//! - [`workload`]: what the standard workload creates and sends (asset `CREDITS`, a per-unit
//!   price matched on two dimensions, an allowance and a purchased grant per account, events on
//!   uniformly random accounts with unique ids).
//!
//! - [`reply`]: [`reply::UsageSender`] sends the usage requests and reads each result's
//!   outcome and rejection code only (reply types with the wire format of `tally.v1`'s).
//! - The load is sent on `tally_client::unary::Connection`s: gRPC unary calls on a bare HTTP/2
//!   connection (one socket write per request where tonic's channel makes two), the transport
//!   `tally-client` sends its own usage calls on.
//!
//! The crate talks to the cluster with tonic and that transport directly (the generated clients
//! of `tally_proto::v1` for setup, [`reply`] and the connections for the load), not through
//! `tally-client`'s `Client`, on purpose: that client retries transient errors (a benchmark
//! must count them, not hide them) and parses every settlement's amounts into `Amount`s
//! (client CPU that competes with the nodes when both run on one machine). `--via client`
//! sends the load through `Client` all the same, to measure what an application gets.
//! Benchmarks are measurements, never tests: nothing here runs in `make test` except unit
//! tests of the bench's own logic.

pub mod connect;
pub mod driver;
pub mod options;
pub mod pgbench;
pub mod reply;
pub mod setup;
pub mod summary;
pub mod workload;

/// How long opening one of the load's connections may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

use anyhow::{bail, Context};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driver::{Progress, Schedule};
use options::RunOptions;
use summary::{Recorder, Summary};
use workload::EventSource;

/// One benchmark run; see the crate docs.
/// Returns `None` with `--setup-only`.
pub async fn run(options: RunOptions) -> anyhow::Result<Option<Summary>> {
    if options.events == Some(0) {
        bail!("--events must be at least 1");
    }
    if options.rate == Some(0) {
        bail!("--rate must be at least 1 event per second");
    }
    if options.duration.is_zero() && options.events.is_none() {
        bail!("--duration must be more than 0");
    }
    let timeout = Duration::from_millis(options.request_timeout_ms);
    let ready_timeout = Duration::from_millis(options.ready_timeout_ms);
    let seed = options.seed.unwrap_or_else(workload::now_ms);
    let label = options
        .label
        .clone()
        .unwrap_or_else(|| format!("{}x{}", options.clients, options.events_per_request));
    let log = |line: String| {
        if !options.quiet {
            eprintln!("{line}");
        }
    };

    let leader = connect::find_leader(&options.endpoints, timeout, ready_timeout).await?;
    log(format!(
        "tally-bench {label}: leader at {leader}, seed {seed}"
    ));
    let accounts = workload::account_ids(&options.account_prefix, options.accounts);
    if !options.skip_setup {
        let took = setup::fund(
            &leader,
            &accounts,
            options.setup_concurrency as usize,
            timeout,
            ready_timeout,
            options.quiet,
        )
        .await?;
        log(format!(
            "setup: {} accounts funded in {:.1} s",
            accounts.len(),
            took.as_secs_f64()
        ));
    }

    if options.setup_only {
        return Ok(None);
    }

    let mut clients = Vec::with_capacity(options.clients as usize);
    let mut sources = Vec::with_capacity(options.clients as usize);
    // A tag from the seed and the clock keeps event ids unique across runs on one cluster.
    let run_tag = format!("{:x}", workload::now_ms() ^ seed.rotate_left(17));
    let connections = options
        .connections
        .unwrap_or(options.clients)
        .min(options.clients);
    let every_result = options.batch_reply == "every";
    let mut opened = Vec::with_capacity(connections as usize);
    for connection in 0..connections {
        opened.push(if options.via == "client" {
            // The leader first, so the first call goes there; the other endpoints to follow
            // a change of leader.
            let mut endpoints = vec![leader.clone()];
            endpoints.extend(options.endpoints.iter().cloned());
            let config = tally_client::ClientConfig {
                request_timeout_ms: options.request_timeout_ms,
                ..tally_client::ClientConfig::with_endpoints(endpoints)
            };
            let client = tally_client::Client::new(config)
                .with_context(|| format!("client {connection} for {leader}"))?;
            reply::UsageSender::through_client(client, every_result)
        } else {
            let connection = tally_client::unary::Connection::open(&leader, CONNECT_TIMEOUT)
                .await
                .with_context(|| format!("connection {connection} to {leader}"))?;
            reply::UsageSender::new(connection, every_result)
        });
    }
    for client in 0..options.clients {
        clients.push(opened[(client % connections) as usize].clone());
        sources.push(EventSource::new(accounts.clone(), &run_tag, client, seed));
    }

    let started = Instant::now();
    let schedule = Arc::new(Schedule {
        measure_from: started + options.warmup,
        stop_at: options
            .events
            .is_none()
            .then(|| started + options.warmup + options.duration),
        events_left: options.events.map(|events| AtomicI64::new(events as i64)),
        stopped: AtomicBool::new(false),
    });
    let progress = Arc::new(Progress::default());
    let reporter = (!options.quiet).then(|| {
        let progress = progress.clone();
        let schedule = schedule.clone();
        tokio::spawn(report_progress(started, schedule, progress))
    });

    let (recorder, last_completed) = match options.rate {
        None => {
            let tasks: Vec<_> = clients
                .into_iter()
                .zip(sources)
                .map(|(client, source)| {
                    tokio::spawn(driver::closed_loop_client(
                        client,
                        source,
                        options.events_per_request,
                        timeout,
                        schedule.clone(),
                        progress.clone(),
                    ))
                })
                .collect();
            let mut total = Recorder::default();
            let mut last = None;
            for task in tasks {
                let (recorder, last_completed) = task.await.context("a client task failed")?;
                total.merge(&recorder);
                last = last.max(last_completed);
            }
            (total, last)
        }
        Some(rate) => {
            let interval =
                Duration::from_secs_f64(f64::from(options.events_per_request) / rate as f64);
            driver::open_loop(
                clients,
                sources,
                options.events_per_request,
                interval,
                options.in_flight_max,
                timeout,
                schedule.clone(),
                progress.clone(),
            )
            .await
        }
    };
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    // The measured time ends at the planned stop, or later when the last measured request
    // came back later (its events count, so its time counts too).
    let measured_end = match (last_completed, schedule.stop_at) {
        (Some(last), Some(stop_at)) => last.max(stop_at),
        (Some(last), None) => last,
        (None, Some(stop_at)) => stop_at.min(Instant::now()),
        (None, None) => Instant::now(),
    };
    let measured = measured_end.saturating_duration_since(schedule.measure_from);
    log(format!(
        "warm-up and measured run: {} events settled, {} rejected, {} failed requests in all",
        progress.settled.load(Ordering::Relaxed),
        progress.rejected.load(Ordering::Relaxed),
        progress.errors.load(Ordering::Relaxed)
    ));
    let mut summary = Summary::new(
        "tally",
        label,
        options.clients,
        options.events_per_request,
        options.rate,
        options.accounts,
        options.warmup.as_secs_f64(),
        measured.as_secs_f64(),
        &recorder,
    );
    if options.events_per_request > 1 {
        summary.batch_reply = options.batch_reply.clone();
    }
    summary.connections = Some(connections);
    print!("{}", summary.report());
    if let Some(path) = &options.out {
        write_json(path, &summary)?;
    }
    Ok(Some(summary))
}

async fn report_progress(started: Instant, schedule: Arc<Schedule>, progress: Arc<Progress>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut settled_before = 0;
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let settled = progress.settled.load(Ordering::Relaxed);
        let phase = if now < schedule.measure_from {
            "warm-up"
        } else {
            "measuring"
        };
        eprintln!(
            "[{:>4} s] {phase:<9} {:>9} events/s  settled {:>11}  rejected {}  errors {}  in flight {}",
            now.duration_since(started).as_secs(),
            summary::group(settled - settled_before),
            summary::group(settled),
            progress.rejected.load(Ordering::Relaxed),
            progress.errors.load(Ordering::Relaxed),
            progress.in_flight.load(Ordering::Relaxed),
        );
        settled_before = settled;
    }
}

pub fn write_json<T: serde::Serialize>(path: &std::path::Path, value: &T) -> anyhow::Result<()> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a result file", path.display()))
}
