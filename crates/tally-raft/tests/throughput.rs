//! Replication figures for the README: a 3-node cluster in one process (sled store with fsync,
//! loopback gRPC), no proposer in front. Ignored by default; run with
//! `cargo test --release -p tally-raft --test throughput -- --ignored --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use openraft::BasicNode;
use tally_core::{Command, Entry};
use tally_store::{EncodedEntry, NodeId};

fn tick_entry(n: u64) -> EncodedEntry {
    Entry {
        at_ms: 1_700_000_000_000 + n,
        commands: vec![Command::Tick],
    }
    .into()
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check: run explicitly in release mode"]
async fn replication_throughput_and_latency() {
    let settings = test_settings();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Node::start(id, &settings).await);
    }
    let members: BTreeMap<NodeId, BasicNode> = nodes.iter().map(Node::member).collect();
    nodes[0].raft.initialize(members).await.unwrap();
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), None).await;
    let raft = by_id(&nodes, leader).raft.clone();
    raft.client_write(init_entry()).await.unwrap();

    // One writer: each entry waits for the previous one (commit latency).
    let sequential = 300;
    let mut latencies = Vec::with_capacity(sequential);
    let started = Instant::now();
    for n in 0..sequential as u64 {
        let sent = Instant::now();
        raft.client_write(tick_entry(n)).await.unwrap();
        latencies.push(sent.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "sequential: {sequential} entries in {elapsed:?} = {:.0} entries/s; commit latency p50 {:?} p99 {:?}",
        sequential as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );

    // Many writers: openraft batches what is pending into one append and one fsync.
    let writers = 64u64;
    let per_writer = 40u64;
    let started = Instant::now();
    let raft = Arc::new(raft);
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let raft = raft.clone();
            tokio::spawn(async move {
                for n in 0..per_writer {
                    raft.client_write(tick_entry(10_000 + writer * per_writer + n))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let total = writers * per_writer;
    println!(
        "concurrent: {writers} writers, {total} entries in {elapsed:?} = {:.0} entries/s",
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "leader network: {:?}",
        by_id(&nodes, leader).network.stats()
    );

    for node in &mut nodes {
        node.stop().await;
    }
}
