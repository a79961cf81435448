//! `tally-bench` against a real 3-node cluster: the standard workload funded through the
//! public API, then its load sent as gRPC unary calls on bare HTTP/2 connections
//! (`tally_client::unary`) and through `tally-client`'s `Client` (`--via client`), one event
//! per request and in batches, with both batch reply forms.
//! Every event sent must come back settled, and the leader's own count of settled events must
//! move by exactly as many; a call the server refuses must come back as that refusal, read
//! from the reply's `grpc-status`.

use std::time::Duration;

use clap::Parser;
use prost::Message;
use tally_bench::options::Cli;
use tally_bench::summary::Summary;
use tally_client::unary::{Connection, RECORD_USAGE_PATH};
use tally_tests::tally_proto::v1;
use tally_tests::{Cluster, ClusterSpec};
use tonic::Code;

async fn bench(args: &[&str]) -> Summary {
    let cli = Cli::try_parse_from(["tally-bench"].iter().chain(args)).expect("arguments");
    assert!(cli.tool.is_none());
    tally_bench::run(cli.run)
        .await
        .expect("the run")
        .expect("a summary")
}

async fn settled_on(cluster: &Cluster, node: u64) -> u64 {
    let (_, text) = cluster
        .http_get(node, "/metrics")
        .await
        .expect("the metrics");
    text.lines()
        .find(|line| {
            line.strip_prefix("tally_events_settled_total")
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .and_then(|line| line.split_whitespace().last())
        .and_then(|value| value.parse().ok())
        .expect("tally_events_settled_total")
}

/// One measured run against `endpoint` on the test's 20 accounts, counted from its first
/// event; `args` (split at spaces) add the shape, and `--skip-setup` after the first run.
async fn bench_on(endpoint: &str, args: &str) -> Summary {
    let mut all = vec![
        "--endpoint",
        endpoint,
        "--accounts",
        "20",
        "--warmup",
        "0s",
        "--quiet",
    ];
    all.extend(args.split_whitespace());
    bench(&all).await
}

#[tokio::test]
async fn the_load_generator_settles_every_event_it_sends() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let leader = cluster.leader().await;
    let endpoint = cluster.node(leader).addrs.client.clone();
    let before = settled_on(&cluster, leader).await;
    let e = endpoint.as_str();

    // Setup, then one event per request: four clients over two shared connections.
    let one = bench_on(e, "--clients 4 --connections 2 --events 300").await;
    // Batches, each reply listing every result, then only the unsettled ones.
    let every = bench_on(
        e,
        "--skip-setup --clients 3 --events-per-request 50 --batch-reply every --events 1000",
    )
    .await;
    let unsettled = bench_on(
        e,
        "--skip-setup --clients 2 --events-per-request 400 --events 2000",
    )
    .await;
    // The same through tally-client's `Client` (4 clients sharing 2): one event per call, then
    // batches of both reply forms.
    let client = "--skip-setup --via client --clients 4 --connections 2";
    let client_one = bench_on(e, &format!("{client} --events 200")).await;
    let client_every = bench_on(
        e,
        &format!("{client} --events-per-request 30 --batch-reply every --events 600"),
    )
    .await;
    let client_unsettled = bench_on(
        e,
        &format!("{client} --events-per-request 300 --events 1200"),
    )
    .await;
    let runs = [
        &one,
        &every,
        &unsettled,
        &client_one,
        &client_every,
        &client_unsettled,
    ];
    for summary in runs {
        assert_eq!(summary.errors, 0, "{summary:?}");
        assert_eq!(summary.rejected, 0, "{summary:?}");
        assert!(summary.events_sent > 0, "{summary:?}");
        assert_eq!(summary.settled, summary.events_sent, "{summary:?}");
    }
    assert_eq!(one.requests, one.events_sent);
    assert_eq!(unsettled.requests * 400, unsettled.events_sent);
    assert_eq!(client_one.requests, client_one.events_sent);
    let sent: u64 = runs.iter().map(|summary| summary.events_sent).sum();
    assert_eq!(settled_on(&cluster, leader).await - before, sent);
}

#[tokio::test]
async fn a_refused_call_comes_back_as_its_status() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let leader = cluster.leader().await;
    let connection = Connection::open(&cluster.node(leader).addrs.client, Duration::from_secs(2))
        .await
        .expect("a connection");
    // No event: refused before anything is proposed, naming the field.
    let refused = connection
        .unary(
            RECORD_USAGE_PATH,
            &v1::RecordUsageRequest::default(),
            Duration::from_secs(5),
        )
        .await
        .expect_err("an empty request is refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("event"), "{refused:?}");
    // A method the server does not have.
    let missing = connection
        .unary(
            "/tally.v1.Ledger/NoSuchMethod",
            &v1::ClusterStatusRequest {},
            Duration::from_secs(5),
        )
        .await
        .expect_err("no such method");
    assert_eq!(missing.code(), Code::Unimplemented, "{missing:?}");
    // The connection still carries calls after both.
    let status = connection
        .unary(
            "/tally.v1.Admin/ClusterStatus",
            &v1::ClusterStatusRequest {},
            Duration::from_secs(5),
        )
        .await
        .expect("ClusterStatus");
    let status = v1::ClusterStatusReply::decode(status).expect("a ClusterStatusReply");
    assert_eq!(status.role, v1::NodeRole::Leader as i32);
}
