//! Real Raft nodes (the sled store from tally-store) talking over real loopback gRPC through
//! the tonic peer network: election, replication, leader failover and snapshot catch-up.

mod common;

use std::collections::BTreeMap;

use common::*;
use openraft::{BasicNode, ServerState};
use tally_raft::RaftSettings;
use tally_store::NodeId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_fail_over() {
    let settings = test_settings();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Node::start(id, &settings).await);
    }
    let members: BTreeMap<NodeId, BasicNode> = nodes.iter().map(Node::member).collect();
    nodes[0].raft.initialize(members).await.unwrap();

    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), None).await;
    let written = by_id(&nodes, leader)
        .raft
        .client_write(init_entry())
        .await
        .unwrap();
    assert_eq!(written.data.outcomes.len(), 1);
    let last = write_entries(&nodes, 0, 20).await;
    assert!(last > written.log_id.index);
    for node in &nodes {
        node.wait_applied(last).await;
    }
    let hashes: Vec<_> = nodes.iter().map(|node| node.reader.state_hash()).collect();
    assert!(
        hashes.iter().all(|hash| hash == &hashes[0]),
        "replicas disagree: {hashes:?}"
    );
    assert_eq!(hashes[0].0.unwrap().index, last);

    // Kill the leader: the other two elect a new one and keep committing.
    let leader_index = nodes.iter().position(|node| node.id == leader).unwrap();
    let mut old_leader = nodes.remove(leader_index);
    old_leader.stop().await;
    let new_leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Some(leader)).await;
    assert_ne!(new_leader, leader);
    let after = write_entries(&nodes, 100, 10).await;
    assert!(after > last);
    for node in &nodes {
        node.wait_applied(after).await;
    }
    assert_eq!(nodes[0].reader.state_hash(), nodes[1].reader.state_hash());

    // The old leader comes back on its data and address: the others' channels to it reconnect
    // and it catches up to the same state.
    let old_leader = old_leader.restart(&settings).await;
    old_leader.wait_applied(after).await;
    assert_eq!(old_leader.reader.state_hash(), nodes[0].reader.state_hash());
    nodes.push(old_leader);
    let final_index = write_entries(&nodes, 200, 5).await;
    for node in &nodes {
        node.wait_applied(final_index).await;
    }
    assert!(nodes
        .iter()
        .all(|node| node.reader.state_hash() == nodes[0].reader.state_hash()));
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_learner_catches_up_by_chunked_snapshot() {
    let settings = RaftSettings {
        // Snapshot often and keep no log behind it, so the learner cannot be fed from the log.
        snapshot_logs_since_last: 10,
        snapshot_logs_to_keep: 0,
        // Tiny chunks: the snapshot must travel as many InstallSnapshot calls.
        snapshot_chunk_bytes_max: 64,
        ..test_settings()
    };
    let mut nodes = vec![
        Node::start(1, &settings).await,
        Node::start(2, &settings).await,
    ];
    let (leader, _) = form_cluster(&nodes).await;
    let last = write_entries(&nodes, 0, 45).await;
    // Wait until the leader has snapshotted and purged its log.
    by_id(&nodes, leader)
        .raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|purged| purged.index >= 20),
            "log purged",
        )
        .await
        .unwrap();

    // The snapshot the learner will be sent spans many 64-byte chunks.
    let snapshot_bytes = std::fs::metadata(
        by_id(&nodes, leader)
            ._dir
            .path()
            .join("snapshots/current.snap"),
    )
    .unwrap()
    .len();
    assert!(
        snapshot_bytes > 4 * 64,
        "snapshot is only {snapshot_bytes} bytes"
    );

    let learner = Node::start(3, &settings).await;
    by_id(&nodes, leader)
        .raft
        .add_learner(
            3,
            BasicNode {
                addr: learner.addr.clone(),
            },
            true,
        )
        .await
        .unwrap();
    learner.wait_applied(last).await;
    let learner_metrics = learner.raft.metrics().borrow().clone();
    let snapshot = learner_metrics
        .snapshot
        .expect("the learner installed a snapshot");
    assert!(snapshot.index >= 20, "snapshot at {snapshot:?}");
    assert_eq!(learner_metrics.state, ServerState::Learner);
    let stats = by_id(&nodes, leader).network.stats();
    assert!(stats.snapshot_chunks_ok >= 4, "{stats:?}");
    // Same state as the leader at the same index (the membership entry of add_learner may
    // still be on its way to the learner: wait for the leader's last applied).
    let leader_hash = by_id(&nodes, leader).reader.state_hash();
    learner
        .wait_applied(leader_hash.0.map_or(0, |log_id| log_id.index))
        .await;
    assert_eq!(learner.reader.state_hash(), leader_hash);

    nodes.push(learner);
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_above_4_mib_replicate_and_oversized_batches_are_split() {
    // A learner that joins late is sent the whole backlog: ~18 MiB in up to 64 entries per
    // request. With an 8 MiB limit (and byte target) the batches must shrink, and requests that
    // go through are still above tonic's 4 MiB default.
    const LIMIT: usize = 8 * 1024 * 1024;
    let entry_bytes = tally_raft::codec::encode("entry", &big_entry(0))
        .unwrap()
        .len();
    assert!(entry_bytes > 1_400_000, "entry is only {entry_bytes} bytes");
    let (mut nodes, leader, _) = backlog_then_late_learner(LIMIT, 12).await;
    let learner = nodes.last().unwrap();
    assert!(
        learner.raft.metrics().borrow().snapshot.is_none(),
        "caught up from the log, not a snapshot"
    );
    let stats = by_id(&nodes, leader).network.stats();
    // Split either before sending (cut to the byte target) or after the encoder found it too
    // large (PayloadTooLarge, openraft retries with fewer).
    assert!(
        stats.append_batches_split + stats.append_entries_cut >= 1,
        "no batch was split: {stats:?}"
    );
    assert!(
        stats.append_entries_bytes_max > 4 * 1024 * 1024,
        "{stats:?}"
    );
    assert!(stats.append_entries_bytes_max <= LIMIT as u64, "{stats:?}");
    assert_eq!(
        learner.reader.state_hash(),
        by_id(&nodes, leader).reader.state_hash()
    );
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_goes_out_in_appends_near_the_byte_target() {
    // With the default limits a late learner's backlog of ~1.4 MB entries is sent a prefix at a
    // time (each request within APPEND_ENTRIES_BYTES_TARGET, or one entry alone), each answered
    // as a partial success, and the learner still ends with the leader's state.
    let entry_bytes = tally_raft::codec::encode("entry", &big_entry(0))
        .unwrap()
        .len() as u64;
    let (mut nodes, leader, _) = backlog_then_late_learner(tally_raft::MESSAGE_BYTES_MAX, 8).await;
    let stats = by_id(&nodes, leader).network.stats();
    assert!(
        stats.append_entries_cut >= 1,
        "no append was cut: {stats:?}"
    );
    assert!(
        stats.append_entries_bytes_max
            <= (tally_raft::APPEND_ENTRIES_BYTES_TARGET as u64).max(entry_bytes + 4_096),
        "an append above the target: {stats:?}"
    );
    assert_eq!(
        nodes.last().unwrap().reader.state_hash(),
        by_id(&nodes, leader).reader.state_hash()
    );
    for node in &mut nodes {
        node.stop().await;
    }
}

/// Two voters (message limit `limit`) write `entries` big entries (~1.4 MB each), then a third
/// node joins as a learner and must receive the whole backlog by log. Returns the nodes (the
/// learner last), the leader's id and the last index written.
async fn backlog_then_late_learner(limit: usize, entries: u64) -> (Vec<Node>, NodeId, u64) {
    let settings = RaftSettings {
        // Big appends in a debug build on a shared machine: give each RPC time.
        heartbeat_interval_ms: 1_000,
        election_timeout_ms_min: 4_000,
        election_timeout_ms_max: 8_000,
        ..test_settings()
    };
    let mut nodes = vec![
        Node::start_with_limit(1, &settings, limit).await,
        Node::start_with_limit(2, &settings, limit).await,
    ];
    let (leader, _) = form_cluster(&nodes).await;
    let mut last = 0;
    for n in 0..entries {
        last = by_id(&nodes, leader)
            .raft
            .client_write(big_entry(n))
            .await
            .unwrap()
            .log_id
            .index;
    }
    let learner = Node::start_with_limit(3, &settings, limit).await;
    by_id(&nodes, leader)
        .raft
        .add_learner(
            3,
            BasicNode {
                addr: learner.addr.clone(),
            },
            true,
        )
        .await
        .unwrap();
    learner.wait_applied(last).await;
    nodes.push(learner);
    (nodes, leader, last)
}

/// A voter restarted on an empty data directory (a replaced disk, a mount that failed) while
/// still a member must not hand a node that missed the newest committed entries an election:
/// it refuses to vote until an elected leader has caught it up, so the cluster waits for the
/// node that holds them, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_restarted_on_an_empty_store_does_not_elect_a_stale_node() {
    stale_node_and_an_empty_store(false, false).await;
}

/// The same when the node that lost its data is the one that creates the cluster (lowest id
/// in `initial_members`): on its empty store it initializes again, which leaves it a log of
/// the cluster's first entry only, still no ground to vote for a stale node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_node_restarted_on_an_empty_store_does_not_elect_a_stale_node() {
    stale_node_and_an_empty_store(true, false).await;
}

/// The same when the stale node is a former leader: openraft restores a node whose committed
/// vote names itself as leader at once, in its old term, and the empty store (which forgot the
/// newer term it had voted in) took its appends: the two committed over acknowledged entries.
/// The store reads its vote back uncommitted, so a former leader must win an election first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_leader_does_not_resume_its_term_over_an_empty_store() {
    stale_node_and_an_empty_store(false, true).await;
}

/// One node (the leader when `stale_was_leader`, else a follower) falls behind while the other
/// two commit; both of those stop; one of them comes back on an empty directory (initializing
/// the cluster again there when `reinitialize`, as tallyd's bootstrap does for the lowest id),
/// the stale one on its data: no leader until the holder returns, then every acknowledged
/// entry is on all three.
async fn stale_node_and_an_empty_store(reinitialize: bool, stale_was_leader: bool) {
    let settings = test_settings();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Node::start(id, &settings).await);
    }
    let (leader, mut last) = form_cluster(&nodes).await;
    for node in &nodes {
        node.wait_applied(last).await;
    }

    // One node stops and misses what follows, committed by the other two.
    let stale_id = if stale_was_leader {
        leader
    } else {
        nodes.iter().find(|node| node.id != leader).unwrap().id
    };
    let mut stale = nodes.remove(nodes.iter().position(|n| n.id == stale_id).unwrap());
    stale.stop().await;
    last = write_entries(&nodes, 0, 10).await;
    for node in &nodes {
        node.wait_applied(last).await;
    }

    // Both holders stop; one comes back on an EMPTY directory at its address, the stale one on
    // its data. Together they are a majority of the membership.
    let holder = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), None).await;
    let mut leader_node = nodes.remove(nodes.iter().position(|n| n.id == holder).unwrap());
    let mut wiped = nodes.pop().unwrap();
    leader_node.stop().await;
    wiped.stop().await;
    let (wiped_id, wiped_addr) = (wiped.id, wiped.addr.clone());
    drop(wiped);
    let wiped = Node::start_in(
        wiped_id,
        &settings,
        tally_raft::MESSAGE_BYTES_MAX,
        tempfile::tempdir().unwrap(),
        &wiped_addr,
    )
    .await;
    if reinitialize {
        let members: BTreeMap<NodeId, BasicNode> = [
            (
                wiped_id,
                BasicNode {
                    addr: wiped_addr.clone(),
                },
            ),
            stale.member(),
            leader_node.member(),
        ]
        .into_iter()
        .collect();
        wiped.raft.initialize(members).await.unwrap();
    }
    let stale = stale.restart(&settings).await;
    // Several election timeouts: the stale node campaigns, the empty one refuses its vote.
    tokio::time::sleep(std::time::Duration::from_millis(
        4 * settings.election_timeout_ms_max,
    ))
    .await;
    for node in [&stale, &wiped] {
        assert_ne!(
            node.raft.metrics().borrow().state,
            ServerState::Leader,
            "node {} was elected without the committed entries",
            node.id
        );
    }

    // The holder returns: it is elected, and every entry it acknowledged is on all three.
    let leader_node = leader_node.restart(&settings).await;
    let nodes = vec![leader_node, stale, wiped];
    // Right after the restarts leadership may still move once: write through whoever leads.
    let mut attempts = 0;
    let after = loop {
        let elected = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), None).await;
        match by_id(&nodes, elected)
            .raft
            .client_write(asset_entry(100))
            .await
        {
            Ok(written) => break written.log_id.index,
            Err(error) if attempts < 20 => {
                attempts += 1;
                eprintln!("write through node {elected}: {error}; again");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(error) => panic!("no write after the holder returned: {error}"),
        }
    };
    assert!(after > last);
    for node in &nodes {
        node.wait_applied(after).await;
        for n in 0..10 {
            let code = tally_core::AssetCode::new(format!("A{n}")).unwrap();
            assert!(
                node.reader.with_state(|state| state.asset(&code).is_some()),
                "node {} lost the acknowledged entry creating {code}",
                node.id
            );
        }
    }
    let mut nodes = nodes;
    for node in &mut nodes {
        node.stop().await;
    }
}
