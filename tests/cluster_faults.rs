//! Faults against a real cluster: kill -9 of the leader, of every node at once, a node that
//! falls behind a compacted log, and membership changes under load. Every test ends by
//! checking that each acknowledged usage event settled exactly once (by the balance, the
//! report's event count and, where it matters, a replay that must come back `duplicate`) and
//! that every replica reaches the same state hash.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tally_tests::requests::usage;
use tally_tests::tally_proto::v1;
use tally_tests::{now_ms, record_usage_retrying, settlement, spawn_writer, Cluster, ClusterSpec};

const GRANT: u64 = 1_000_000;

/// Records `count` events `{prefix}-{n}` of quantity `n % 7 + 1` one after the other, each
/// retried across nodes until acknowledged. Returns the sum of quantities and the requests
/// with their settlements (a replay must send exactly the same content).
async fn write_events_recorded(
    cluster: &Cluster,
    prefix: &str,
    count: u64,
) -> (u64, Vec<(v1::RecordUsageRequest, v1::Settlement)>) {
    let clients = cluster.clients();
    let mut total = 0;
    let mut recorded = Vec::new();
    for n in 0..count {
        let quantity = n % 7 + 1;
        let request = usage(
            &format!("{prefix}-{n}"),
            "acme",
            "tokens",
            &quantity.to_string(),
            now_ms(),
        );
        let reply = record_usage_retrying(&clients, request.clone()).await;
        let (_, settled) = settlement(&reply.result);
        assert_eq!(settled.charged, quantity.to_string());
        total += quantity;
        recorded.push((request, settled));
    }
    (total, recorded)
}

async fn write_events(cluster: &Cluster, prefix: &str, count: u64) -> u64 {
    write_events_recorded(cluster, prefix, count).await.0
}

async fn assert_charged_exactly(cluster: &Cluster, events: u64, charged: u64) {
    let account = cluster.account("acme").await;
    assert_eq!(
        account.balance,
        (GRANT - charged).to_string(),
        "balance after {events} events"
    );
    let report = cluster.report("acme").await;
    assert_eq!(report.events, events, "settled event count");
}

#[tokio::test]
async fn leader_killed_new_leader_takes_over_and_old_leader_catches_up() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", GRANT).await;
    let mut charged = write_events(&cluster, "before", 20).await;

    let old_leader = cluster.leader().await;
    cluster.kill9(old_leader);
    let others = cluster.running();
    let new_leader = cluster.leader_among(&others).await;
    assert_ne!(new_leader, old_leader);
    charged += write_events(&cluster, "during", 20).await;

    cluster.restart(old_leader);
    cluster.wait_ready(old_leader).await;
    charged += write_events(&cluster, "after", 10).await;
    let all = cluster.running();
    assert_eq!(all.len(), 3);
    cluster.converged_hash(&all).await;
    assert_charged_exactly(&cluster, 50, charged).await;
}

#[tokio::test]
async fn every_node_killed_at_once_keeps_every_acknowledged_event_once() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", GRANT).await;
    let (acknowledged_total, acknowledged) = write_events_recorded(&cluster, "acked", 30).await;

    // Ten more in flight while every node dies: their fate is unknown to the client.
    let clients = cluster.clients();
    let mut in_flight = Vec::new();
    let in_flight_requests: Vec<v1::RecordUsageRequest> = (0..10u64)
        .map(|n| usage(&format!("inflight-{n}"), "acme", "tokens", "1", now_ms()))
        .collect();
    for n in 0..10u64 {
        let mut client = clients[(n as usize) % clients.len()].clone();
        let request = in_flight_requests[n as usize].clone();
        in_flight.push((
            request.clone(),
            tokio::spawn(async move { client.record_usage(request).await }),
        ));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    for id in cluster.running() {
        cluster.kill9(id);
    }
    let mut acknowledged_in_flight = Vec::new();
    for (request, task) in in_flight {
        if let Ok(Ok(reply)) = task.await {
            acknowledged_in_flight.push((request, reply.into_inner()));
        }
    }

    for id in 1..=3 {
        cluster.restart(id);
    }
    for id in 1..=3 {
        cluster.wait_ready(id).await;
    }

    // Every acknowledged event is still there: replaying it answers `duplicate` with the
    // original settlement.
    let clients = cluster.clients();
    for (request, original) in &acknowledged {
        let reply = record_usage_retrying(&clients, request.clone()).await;
        let (kind, replayed) = settlement(&reply.result);
        assert_eq!(
            kind, "duplicate",
            "acknowledged event {} was lost",
            original.event_id
        );
        assert_eq!(&replayed, original);
    }
    for (request, original) in &acknowledged_in_flight {
        let reply = record_usage_retrying(&clients, request.clone()).await;
        let (kind, replayed) = settlement(&reply.result);
        assert_eq!(kind, "duplicate");
        assert_eq!(replayed, settlement(&original.result).1);
    }
    // The in-flight events whose outcome was unknown: a retry settles each at most once.
    for request in in_flight_requests {
        let reply = record_usage_retrying(&clients, request).await;
        settlement(&reply.result);
    }
    assert_charged_exactly(&cluster, 40, acknowledged_total + 10).await;
    cluster.converged_hash(&[1, 2, 3]).await;
}

#[tokio::test]
async fn a_node_behind_a_compacted_log_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(ClusterSpec {
        snapshot_logs_since_last: 40,
        logs_to_keep_after_snapshot: 5,
        ..ClusterSpec::default()
    })
    .await;
    cluster.setup_credits_account("acme", GRANT).await;
    let leader = cluster.leader().await;
    let lagging = *cluster
        .running()
        .iter()
        .find(|id| **id != leader)
        .expect("a follower");
    cluster.stop(lagging);
    let lagging_applied = {
        // Its last applied index, as the leader saw it replicated.
        let status = cluster.status(leader).await.expect("leader status");
        status
            .replication_matched_index
            .get(&lagging)
            .copied()
            .unwrap_or(0)
    };

    let charged = write_events(&cluster, "while-away", 150).await;
    for id in cluster.running() {
        cluster
            .admin(id)
            .trigger_snapshot(v1::TriggerSnapshotRequest {})
            .await
            .expect("trigger snapshot");
    }
    let leader_status = cluster.status(leader).await.expect("leader status");
    assert!(
        leader_status.snapshot_index > lagging_applied + 5,
        "the leader's snapshot ({}) must cover entries the lagging node lacks ({lagging_applied})",
        leader_status.snapshot_index
    );

    cluster.restart(lagging);
    cluster.wait_ready(lagging).await;
    let all = cluster.running();
    cluster.converged_hash(&all).await;
    let status = cluster.status(lagging).await.expect("status");
    assert!(
        status.snapshot_index >= leader_status.snapshot_index,
        "node {lagging} should hold the leader's snapshot: {status:?}"
    );
    let (_, metrics) = cluster
        .http_get(lagging, "/metrics")
        .await
        .expect("metrics");
    assert!(
        !metrics.contains(&format!("tally_snapshots_total{{node=\"{lagging}\"}} 0")),
        "{metrics}"
    );
    assert_charged_exactly(&cluster, 150, charged).await;
}

#[tokio::test]
async fn add_learner_promote_and_remove_under_light_load() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", GRANT).await;

    // Light load: one writer, one event every 20 ms, through every initial node in turn.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(
        cluster.clients(),
        "acme",
        "load",
        "1",
        Duration::from_millis(20),
        stop.clone(),
    );

    let peer_addr = cluster.spawn_joiner(4).await;
    let leader = cluster.leader_among(&[1, 2, 3]).await;
    let follower = *cluster
        .running()
        .iter()
        .find(|id| **id != leader && **id != 4)
        .expect("a follower");
    // Through a follower: the change is forwarded to the leader, which answers once node 4
    // has caught up.
    cluster
        .admin(follower)
        .add_learner(v1::AddLearnerRequest {
            id: 4,
            addr: peer_addr.clone(),
            blocking: true,
        })
        .await
        .expect("add learner");
    cluster.wait_ready(4).await;
    // Retries are safe: the same learner again answers with the membership as it is; the same
    // id at another address is refused, naming the field, and changes nothing.
    let again = cluster
        .admin(leader)
        .add_learner(v1::AddLearnerRequest {
            id: 4,
            addr: peer_addr.clone(),
            blocking: false,
        })
        .await
        .expect("add the same learner again")
        .into_inner();
    assert!(
        again.unchanged
            && again
                .members
                .iter()
                .any(|m| m.id == 4 && m.addr == peer_addr),
        "{again:?}"
    );
    let moved = cluster
        .admin(leader)
        .add_learner(v1::AddLearnerRequest {
            id: 4,
            addr: "127.0.0.1:1".to_string(),
            blocking: false,
        })
        .await
        .expect_err("another address for a member");
    assert_eq!(moved.code(), tonic::Code::InvalidArgument, "{moved:?}");
    assert!(moved.message().contains("already a member"), "{moved:?}");
    // Another id at a member's address (a typo) is refused, naming the field and the owner:
    // one machine answering as two voters would cost the cluster its fault tolerance.
    let before = cluster
        .admin(leader)
        .cluster_status(v1::ClusterStatusRequest {})
        .await;
    let taken = cluster
        .admin(leader)
        .add_learner(v1::AddLearnerRequest {
            id: 5,
            addr: peer_addr.clone(),
            blocking: false,
        })
        .await
        .expect_err("another node's address");
    assert_eq!(taken.code(), tonic::Code::InvalidArgument, "{taken:?}");
    let error = tally_proto::TallyError::from_status(&taken);
    assert!(
        error.details.get("field").map(String::as_str) == Some("addr")
            && error.message.contains("node 4's address"),
        "{error:?}"
    );
    let after = cluster
        .admin(leader)
        .cluster_status(v1::ClusterStatusRequest {})
        .await;
    assert_eq!(
        before.expect("status").into_inner().members,
        after.expect("status").into_inner().members,
        "a refused add-learner changes nothing"
    );
    let promoted = cluster
        .admin(leader)
        .promote(v1::PromoteRequest { id: 4 })
        .await
        .expect("promote")
        .into_inner();
    assert!(
        promoted
            .members
            .iter()
            .any(|member| member.id == 4 && member.voter),
        "{promoted:?}"
    );
    // Promoting it again (a retry) changes nothing.
    let again = cluster
        .admin(leader)
        .promote(v1::PromoteRequest { id: 4 })
        .await
        .expect("promote again")
        .into_inner();
    assert!(again.unchanged, "{again:?}");

    let leader = cluster.leader().await;
    let removed = *cluster
        .running()
        .iter()
        .find(|id| **id != leader && **id != 4)
        .expect("a voter to remove");
    let after_removal = cluster
        .admin(leader)
        .remove_node(v1::RemoveNodeRequest { id: removed })
        .await
        .expect("remove node")
        .into_inner();
    assert!(
        after_removal
            .members
            .iter()
            .all(|member| member.id != removed),
        "{after_removal:?}"
    );
    // A retried removal (its first answer lost) answers with the membership as it is.
    let removed_again = cluster
        .admin(leader)
        .remove_node(v1::RemoveNodeRequest { id: removed })
        .await
        .expect("remove the same node again")
        .into_inner();
    assert!(removed_again.unchanged && !after_removal.unchanged);
    assert_eq!(removed_again.members, after_removal.members);
    assert_eq!(removed_again.log_index, after_removal.log_index);
    // A load balancer must stop sending it traffic: out of the membership, or no longer hearing
    // from the leader, it reports not ready (it went on naming its last leader).
    cluster
        .wait_for("the removed node to report not ready", || async {
            matches!(
                cluster.http_get(removed, "/health/ready").await,
                Some((503, body)) if body.contains("not in the cluster's membership")
                    || body.contains("no message from leader")
            )
        })
        .await;
    // Nor may it answer a one-shot event read as if it were caught up (it ended the stream at
    // whatever it held): the read first catches up with the leader's commit index, which the
    // writer keeps moving past what the removed node will ever apply.
    let read = cluster
        .ledger(removed)
        .stream_events(v1::StreamEventsRequest {
            from_seq: 1,
            follow: false,
            ..Default::default()
        })
        .await;
    assert!(
        read.is_err(),
        "a one-shot event read from a removed node answered as if caught up"
    );
    cluster.kill9(removed);

    // Writes go on with the new membership.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    assert!(written > 0);
    let remaining = cluster.running();
    assert_eq!(remaining.len(), 3);
    let leader = cluster.leader_among(&remaining).await;
    let status = cluster.status(leader).await.expect("status");
    let voters: Vec<u64> = status
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect();
    assert!(
        voters.contains(&4) && !voters.contains(&removed),
        "voters {voters:?}"
    );
    cluster.converged_hash(&remaining).await;
    assert_charged_exactly(&cluster, written, written).await;
}

#[tokio::test]
async fn leader_stopped_gracefully_under_load_loses_nothing() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", GRANT).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(
        cluster.clients(),
        "acme",
        "term",
        "2",
        Duration::ZERO,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = cluster.leader().await;
    // SIGTERM: the node stops accepting, answers what is in flight, shuts Raft down and exits 0
    // (`stop` asserts the clean exit).
    cluster.stop(leader);
    let others = cluster.running();
    cluster.leader_among(&others).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart(leader);
    cluster.wait_ready(leader).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    assert!(written > 0);
    cluster.converged_hash(&[1, 2, 3]).await;
    assert_charged_exactly(&cluster, written, 2 * written).await;
}

/// A write that cannot commit (both followers gone) is answered at the request deadline as
/// `deadline_exceeded`, with the ledger's error code in the reply metadata, as every other
/// failure is (the server's own timeout would answer CANCELLED without it); once the followers
/// are back, a retry with the same id settles it once.
#[tokio::test]
async fn a_write_that_cannot_commit_answers_deadline_exceeded_with_its_code() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", GRANT).await;
    let leader = cluster.leader().await;
    let followers: Vec<u64> = cluster
        .running()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    for id in &followers {
        cluster.kill9(*id);
    }
    let request = usage("stuck-1", "acme", "tokens", "1", now_ms());
    let status = cluster
        .ledger(leader)
        .record_usage(request.clone())
        .await
        .expect_err("nothing can commit without a follower");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get(tally_tests::tally_proto::error::CODE_METADATA_KEY)
            .and_then(|value| value.to_str().ok()),
        Some("deadline_exceeded"),
        "{status:?}"
    );
    for id in &followers {
        cluster.restart(*id);
    }
    for id in &followers {
        cluster.wait_ready(*id).await;
    }
    let reply = record_usage_retrying(&cluster.clients(), request).await;
    let (kind, _) = settlement(&reply.result);
    assert!(kind == "settled" || kind == "duplicate", "{kind}");
    assert_charged_exactly(&cluster, 1, 1).await;
}

/// A client that goes silent (its machine gone: no reset, no close) loses its connection to
/// the node's HTTP/2 pings instead of holding a connection slot for ever. The "client" here
/// opens HTTP/2 by hand (preface, settings, the settings ack) and then never answers a ping.
#[tokio::test]
async fn a_silent_client_connection_is_closed_by_the_nodes_pings() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let cluster = Cluster::start(ClusterSpec {
        voters: 1,
        extra_limits: "keep_alive_interval_ms = 300\nkeep_alive_timeout_ms = 300",
        ..ClusterSpec::default()
    })
    .await;
    let mut socket = tokio::net::TcpStream::connect(&cluster.node(1).addrs.client)
        .await
        .unwrap();
    // The connection preface, then an empty SETTINGS frame and a SETTINGS ack (9-byte frame
    // headers: length 0, type 4, flags 0 or ACK, stream 0).
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    hello.extend_from_slice(&[0, 0, 0, 4, 1, 0, 0, 0, 0]);
    socket.write_all(&hello).await.unwrap();
    // Read (and ignore) what the node sends, pings included, until it closes the connection.
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buffer = [0u8; 4096];
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the node kept a silent connection open for 60 s ({} bytes received)",
        received.len()
    );
    // It did ping (a PING frame: type 6) before giving up.
    assert!(
        received
            .windows(4)
            .any(|w| w[3] == 6 && w[0..3] == [0, 0, 8]),
        "no PING frame among {} bytes",
        received.len()
    );
    // The node serves other clients as before.
    let reply = cluster
        .admin(1)
        .cluster_status(v1::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.node_id, 1);
}

/// What an operator's tooling reads: a learner that never caught up (added at an address where
/// nothing answers) is not promoted, as a voter that cannot vote would cost the cluster its
/// fault tolerance; an id that is no member is refused naming `id`; and a leader cut off from
/// both followers stops reporting ready (it believes it leads, but cannot commit anything).
#[tokio::test]
async fn promote_waits_for_a_caught_up_learner_and_a_cut_off_leader_is_not_ready() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", GRANT).await;
    let leader = cluster.leader().await;
    let nowhere = format!("127.0.0.1:{}", tally_tests::free_ports(1)[0]);
    cluster
        .admin(leader)
        .add_learner(v1::AddLearnerRequest {
            id: 5,
            addr: nowhere,
            blocking: false,
        })
        .await
        .expect("a learner is added without waiting");
    let refused = cluster
        .admin(leader)
        .promote(v1::PromoteRequest { id: 5 })
        .await
        .expect_err("a learner that holds nothing");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("node 5 has not caught up"),
        "{refused:?}"
    );
    let status = cluster.status(leader).await.expect("status");
    assert!(
        status
            .members
            .iter()
            .any(|member| member.id == 5 && !member.voter),
        "still a learner: {status:?}"
    );
    let unknown = cluster
        .admin(leader)
        .promote(v1::PromoteRequest { id: 9 })
        .await
        .expect_err("no such member");
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument, "{unknown:?}");
    assert!(unknown.message().contains("not a learner"), "{unknown:?}");
    cluster
        .admin(leader)
        .remove_node(v1::RemoveNodeRequest { id: 5 })
        .await
        .expect("remove the learner");

    let (code, _) = cluster
        .http_get(leader, "/health/ready")
        .await
        .expect("readiness");
    assert_eq!(code, 200);
    for id in cluster.running() {
        if id != leader {
            cluster.kill9(id);
        }
    }
    cluster
        .wait_for("the cut-off leader to report not ready", || async {
            matches!(
                cluster.http_get(leader, "/health/ready").await,
                Some((503, body)) if body.contains("no acknowledgement from a quorum")
            )
        })
        .await;
    // Alive all the same: a supervisor must not restart it for this.
    let (code, _) = cluster
        .http_get(leader, "/health/live")
        .await
        .expect("liveness");
    assert_eq!(code, 200);
}

/// A learner never stands for election, so when every voter is gone it goes on naming its last
/// leader; it must still stop reporting ready, saying why, since it serves nothing current.
#[tokio::test]
async fn a_learner_that_no_longer_hears_from_a_leader_is_not_ready() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", GRANT).await;
    let peer_addr = cluster.spawn_joiner(4).await;
    let (code, body) = cluster
        .http_get(4, "/health/ready")
        .await
        .expect("readiness");
    assert_eq!(code, 503, "{body}");
    // Not added yet: its empty store knows no membership, and says what that can mean.
    assert!(
        body.contains(
            "node 4 holds no cluster data yet (not added yet, or its data directory was lost"
        ),
        "{body}"
    );
    let leader = cluster.leader_among(&[1, 2, 3]).await;
    cluster
        .admin(leader)
        .add_learner(v1::AddLearnerRequest {
            id: 4,
            addr: peer_addr,
            blocking: true,
        })
        .await
        .expect("add learner");
    cluster.wait_ready(4).await;
    for id in [1, 2, 3] {
        cluster.kill9(id);
    }
    cluster
        .wait_for("the orphaned learner to report not ready", || async {
            matches!(
                cluster.http_get(4, "/health/ready").await,
                Some((503, body)) if body.contains(&format!("no message from leader {leader} for"))
            )
        })
        .await;
    let (code, _) = cluster.http_get(4, "/health/live").await.expect("liveness");
    assert_eq!(code, 200);
}

/// A running node other than `leader`.
fn a_follower(cluster: &Cluster, leader: u64) -> u64 {
    cluster
        .running()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower")
}

/// Lines of node `id`'s log that contain `text`.
fn log_lines(cluster: &Cluster, id: u64, text: &str) -> Vec<String> {
    std::fs::read_to_string(&cluster.node(id).log_path)
        .expect("node log")
        .lines()
        .filter(|line| line.contains(text))
        .map(str::to_string)
        .collect()
}

/// While a voter is down the leader says so once, not once per retry and per read (openraft
/// alone logged an ERROR a second, and one per linearizable read), and says when it is back.
#[tokio::test]
async fn a_down_voter_is_logged_once_not_per_request_and_its_return_too() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", GRANT).await;
    let leader = cluster.leader().await;
    let down = a_follower(&cluster, leader);
    cluster.kill9(down);
    let mut client = cluster.ledger(leader);
    for _ in 0..50 {
        let request = v1::GetAccountRequest {
            account: "acme".to_string(),
            consistency: v1::Consistency::Linearizable as i32,
        };
        client
            .get_account(request)
            .await
            .expect("a read with two voters of three");
    }
    write_events(&cluster, "while-down", 20).await;
    // Several of openraft's retry rounds (backoff up to 1 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reported = log_lines(&cluster, leader, &format!("peer {down} at "));
    assert_eq!(reported.len(), 1, "{reported:#?}");
    assert!(
        reported[0].contains("WARN") && reported[0].contains("does not answer"),
        "{reported:#?}"
    );
    for noise in [
        "RPCError",
        "confirming leadership",
        "backoff mode",
        "error replication",
    ] {
        let lines = log_lines(&cluster, leader, noise);
        assert!(lines.is_empty(), "{noise}: {lines:#?}");
    }

    cluster.restart(down);
    cluster.wait_ready(down).await;
    cluster
        .wait_for("the leader to log the peer's return", || async {
            log_lines(&cluster, leader, &format!("peer {down} at "))
                .iter()
                .any(|line| line.contains("INFO") && line.contains("answers again after"))
        })
        .await;
    let all = cluster.running();
    cluster.converged_hash(&all).await;
}

/// Stopping the nodes of a cluster one at a time (an upgrade, host by host) leaves the last one
/// a leader without a quorum: SIGTERM must still stop it, cleanly. (Its ticks wait on
/// proposals that cannot commit; it used to wait for them for ever and ignore more signals.)
#[tokio::test]
async fn the_last_node_stopped_stops_although_nothing_can_commit() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", GRANT).await;
    let charged = write_events(&cluster, "before", 5).await;
    let leader = cluster.leader().await;
    for id in cluster.running() {
        if id != leader {
            cluster.stop(id);
        }
    }
    // Ticks go on being proposed, and wait, while nothing can commit.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    cluster.stop(leader);
    for id in [1, 2, 3] {
        cluster.restart(id);
    }
    for id in [1, 2, 3] {
        cluster.wait_ready(id).await;
    }
    assert_charged_exactly(&cluster, 5, charged).await;
    cluster.converged_hash(&[1, 2, 3]).await;
}

/// A node whose journal file is damaged while it runs (its ledger state is fine: it agrees with
/// the others) answers history reads `unavailable`, naming itself, so clients go to another
/// node, which serves them; it said `internal`, which clients do not retry. Restarted, the node
/// refuses to start on that data directory (its snapshot's history cannot be read), naming
/// `journal.dat` and pointing to Recovery, and exits 1.
#[tokio::test]
async fn history_a_node_cannot_read_is_served_by_another() {
    use std::os::unix::fs::FileExt;
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", GRANT).await;
    write_events(&cluster, "before", 20).await;
    let leader = cluster.leader().await;
    let damaged = a_follower(&cluster, leader);
    // A snapshot, whose history the node checks when it starts again.
    cluster
        .admin(damaged)
        .trigger_snapshot(v1::TriggerSnapshotRequest {})
        .await
        .expect("trigger snapshot");
    let journal = cluster.node(damaged).data_dir.join("journal.dat");
    let mut bytes = std::fs::read(&journal).expect("journal.dat");
    for byte in bytes.iter_mut() {
        *byte ^= 0x5A;
    }
    // In place, as a failing disk would: the node goes on running and appending.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .and_then(|file| file.write_all_at(&bytes, 0))
        .expect("damage journal.dat");

    let request = v1::HistoryRequest {
        account: "acme".to_string(),
        before_seq: None,
        limit: 10,
        consistency: v1::Consistency::Linearizable as i32,
    };
    let status = cluster
        .ledger(damaged)
        .history(request.clone())
        .await
        .expect_err("its journal is damaged");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("node {damaged} cannot read its history")),
        "{status:?}"
    );
    // The others serve it.
    let reply = cluster
        .ledger(leader)
        .history(request)
        .await
        .expect("history from a healthy node");
    assert_eq!(reply.into_inner().entries.len(), 10);

    cluster.stop(damaged);
    cluster.restart(damaged);
    assert_eq!(
        cluster.wait_exit(damaged, Duration::from_secs(30)),
        Some(1),
        "a node whose snapshot's history cannot be read does not start"
    );
    let refused = log_lines(
        &cluster,
        damaged,
        "journal.dat was lost, truncated or replaced",
    );
    assert!(
        refused.iter().any(|line| line.contains("Recovery")),
        "{refused:?}"
    );
}

/// A write sent to a follower while the leader is frozen (its connections open, nothing
/// answered) fails once the follower's pings to the leader go unanswered, as outcome unknown,
/// rather than at its deadline: the client retries and finds the new leader. The retry
/// settles it once.
#[tokio::test]
async fn a_write_forwarded_to_a_frozen_leader_fails_for_a_retry_before_its_deadline() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", GRANT).await;
    let leader = cluster.leader().await;
    let follower = a_follower(&cluster, leader);
    // The follower's connection to the leader is open.
    let mut client = cluster.ledger(follower);
    client
        .record_usage(usage("warm", "acme", "tokens", "1", now_ms()))
        .await
        .expect("a write forwarded to the leader");
    cluster.pause(leader);
    let request = usage("frozen", "acme", "tokens", "2", now_ms());
    let status = client
        .record_usage(request.clone())
        .await
        .expect_err("the leader is frozen");
    eprintln!("forwarded to a frozen leader: {status:?}");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("forwarding to leader")
            && !status.message().contains("Timeout expired"),
        "failed by the connection's pings, not at the deadline: {status:?}"
    );
    cluster.resume(leader);
    let clients = cluster.clients();
    let reply = record_usage_retrying(&clients, request).await;
    let (_, settled) = settlement(&reply.result);
    assert_eq!(settled.charged, "2");
    assert_charged_exactly(&cluster, 2, 3).await;
    let all = cluster.running();
    cluster.converged_hash(&all).await;
}

/// The largest file under `dir`, in bytes.
fn largest_file(dir: &std::path::Path) -> u64 {
    let mut largest = 0;
    for item in std::fs::read_dir(dir).expect("read dir").flatten() {
        let meta = item.metadata().expect("metadata");
        largest = largest.max(if meta.is_dir() {
            largest_file(&item.path())
        } else {
            meta.len()
        });
    }
    largest
}

/// A node whose writes start failing (here past a file-size limit, as a full disk fails them)
/// stops with exit status 1 and a message, the others go on, and restarted once the cause is
/// gone, on the same data, it catches up: nothing acknowledged is lost.
#[tokio::test]
async fn a_node_whose_writes_fail_exits_1_and_catches_up_once_they_work() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", GRANT).await;
    let mut charged = write_events(&cluster, "before", 10).await;
    let leader = cluster.leader().await;
    let failing = a_follower(&cluster, leader);
    cluster.stop(failing);
    let limit = largest_file(&cluster.node(failing).data_dir) + 64 * 1024;
    cluster.restart_with_file_size_limit(failing, limit);
    let mut events = 10;
    let mut exit = None;
    let mut client = cluster.ledger(leader);
    for round in 0..100 {
        let batch = v1::RecordUsageBatchRequest {
            events: (0..200)
                .map(|n| {
                    usage(
                        &format!("during-{round}-{n}"),
                        "acme",
                        "tokens",
                        "1",
                        now_ms(),
                    )
                    .event
                    .expect("event")
                })
                .collect(),
            atomic: false,
            reply: v1::BatchReply::EveryResult as i32,
        };
        let reply = client
            .record_usage_batch(batch)
            .await
            .expect("the leader and one follower commit")
            .into_inner();
        assert_eq!(reply.summary.expect("summary").settled, 200);
        charged += 200;
        events += 200;
        exit = cluster.wait_exit(failing, Duration::from_millis(10));
        if exit.is_some() {
            break;
        }
    }
    assert_eq!(
        exit,
        Some(1),
        "{}",
        cluster.node(failing).log_path.display()
    );
    let log = std::fs::read_to_string(&cluster.node(failing).log_path).unwrap();
    assert!(
        log.contains("raft stopped on a fatal error") && log.contains("File too large"),
        "the cause is logged"
    );
    assert!(!log.contains("panicked"), "a clean exit, not a panic");
    charged += write_events(&cluster, "after", 10).await;
    events += 10;
    cluster.restart(failing);
    cluster.wait_ready(failing).await;
    let all = cluster.running();
    cluster.converged_hash(&all).await;
    assert_charged_exactly(&cluster, events, charged).await;
}

/// A follower frozen (SIGSTOP) for longer than the leader lease plus an election timeout, the
/// way a stalled VM or process looks, resumes as a follower of the same leader in the same
/// term: its pre-vote is refused by nodes that still hear the leader, so it never raises its
/// term. (Without the pre-vote it stood for election on resuming and its higher term deposed
/// the leader: one to two seconds of `not_leader`.) Writes go on throughout.
#[tokio::test]
async fn a_frozen_follower_resumes_without_an_election() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.setup_credits_account("acme", GRANT).await;
    let leader = cluster.leader().await;
    let term = cluster.status(leader).await.expect("leader status").term;
    let follower = a_follower(&cluster, leader);
    cluster.pause(follower);
    // Lease (2 s) plus an election timeout (1-2 s) is when it would stand.
    let charged_frozen = write_events(&cluster, "frozen", 40).await;
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    cluster.resume(follower);
    let charged_after = write_events(&cluster, "resumed", 40).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let all = cluster.running();
    cluster.converged_hash(&all).await;
    for id in &all {
        let status = cluster.status(*id).await.expect("status");
        assert_eq!(
            (status.term, status.leader_id),
            (term, Some(leader)),
            "node {id}: the frozen follower's return changed the term or the leader"
        );
    }
    assert_charged_exactly(&cluster, 80, charged_frozen + charged_after).await;
}
