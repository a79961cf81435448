//! A real 3-node cluster serving the ledger: writes through the leader and through a follower,
//! linearizable reads from every node, and bad input refused without touching the state.

use tally_tests::requests::{
    create_account, create_asset, per_unit_prices, purchased_grant, usage,
};
use tally_tests::tally_proto::error::{CODE_METADATA_KEY, LEADER_ID_METADATA_KEY};
use tally_tests::tally_proto::ingest::{self, RecordUsageBatchWire};
use tally_tests::tally_proto::v1;
use tally_tests::tally_proto::{ErrorCode, TallyError};
use tally_tests::{now_ms, settlement, Cluster, ClusterSpec};
use tonic::{Code, Request, Status};

fn linearizable() -> i32 {
    v1::Consistency::Linearizable as i32
}

#[tokio::test]
async fn ledger_round_trip_through_leader_and_follower() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let leader = cluster.leader().await;
    let follower = *cluster
        .running()
        .iter()
        .find(|id| **id != leader)
        .expect("a follower");
    let mut via_leader = cluster.ledger(leader);
    let mut via_follower = cluster.ledger(follower);

    // Setup, alternating entry points. A write through a follower is forwarded and the reply
    // names the leader, in the WriteInfo and in the metadata.
    let created = via_follower
        .create_asset(create_asset("CREDITS", 0))
        .await
        .expect("create asset");
    assert_eq!(
        created
            .metadata()
            .get(LEADER_ID_METADATA_KEY)
            .and_then(|v| v.to_str().ok()),
        Some(leader.to_string().as_str())
    );
    let created = created.into_inner();
    assert!(!created.already_existed);
    assert_eq!(created.write.expect("write info").leader_id, leader);
    via_leader
        .publish_prices(per_unit_prices("std", "CREDITS", "tokens", "1"))
        .await
        .expect("publish prices");
    via_follower
        .create_account(create_account("acme", "CREDITS", "std"))
        .await
        .expect("create account");
    let granted = via_leader
        .add_grant(purchased_grant("acme", "topup-1", "1000", "10"))
        .await
        .expect("add grant")
        .into_inner();
    assert_eq!(granted.balance_after, "1000");

    // Usage through the follower, then through the leader.
    let occurred = now_ms();
    let first = via_follower
        .record_usage(usage("evt-1", "acme", "tokens", "100", occurred))
        .await
        .expect("usage via follower")
        .into_inner();
    let (kind, first_settlement) = settlement(&first.result);
    assert_eq!(kind, "settled");
    assert_eq!(first_settlement.charged, "100");
    assert_eq!(first_settlement.balance_after, "900");
    let second = via_leader
        .record_usage(usage("evt-2", "acme", "tokens", "250", occurred))
        .await
        .expect("usage via leader")
        .into_inner();
    let (kind, second_settlement) = settlement(&second.result);
    assert_eq!(kind, "settled");
    assert_eq!(second_settlement.balance_after, "650");
    let last_write = second.write.expect("write info");

    // The same event again, through another node: the original result, nothing charged.
    let retried = via_leader
        .record_usage(usage("evt-1", "acme", "tokens", "100", occurred))
        .await
        .expect("retry")
        .into_inner();
    let (kind, retried_settlement) = settlement(&retried.result);
    assert_eq!(kind, "duplicate");
    assert_eq!(retried_settlement, first_settlement);

    // Both again as one batch through the follower, which forwards the request's bytes as they
    // came: each event's own original result, in order, nothing charged.
    let batch = via_follower
        .record_usage_batch(v1::RecordUsageBatchRequest {
            events: vec![
                usage("evt-2", "acme", "tokens", "250", occurred)
                    .event
                    .expect("event"),
                usage("evt-1", "acme", "tokens", "100", occurred)
                    .event
                    .expect("event"),
            ],
            atomic: false,
            reply: v1::BatchReply::EveryResult as i32,
        })
        .await
        .expect("batch via follower")
        .into_inner();
    assert_eq!(batch.results.len(), 2);
    let (kind, again) = settlement(&Some(batch.results[0].clone()));
    assert_eq!((kind, &again), ("duplicate", &second_settlement));
    let (kind, again) = settlement(&Some(batch.results[1].clone()));
    assert_eq!((kind, &again), ("duplicate", &first_settlement));
    let summary = batch.summary.expect("summary");
    assert_eq!((summary.settled, summary.duplicate), (0, 2));

    // Linearizable reads from every node see both charges, served by that node.
    for id in cluster.running() {
        let reply = cluster
            .ledger(id)
            .get_account(v1::GetAccountRequest {
                account: "acme".to_string(),
                consistency: linearizable(),
            })
            .await
            .unwrap_or_else(|status| panic!("read on node {id}: {status}"))
            .into_inner();
        let account = reply.account.expect("account");
        assert_eq!(account.balance, "650", "balance read on node {id}");
        let read = reply.read.expect("read info");
        assert_eq!(read.node_id, id);
        assert_eq!(read.consistency, v1::Consistency::Linearizable as i32);
        assert!(
            read.applied_index >= last_write.log_index,
            "node {id} read a stale state: {read:?}"
        );

        let report = cluster
            .ledger(id)
            .report(v1::ReportRequest {
                account: Some("acme".to_string()),
                month: None,
                consistency: linearizable(),
            })
            .await
            .expect("report")
            .into_inner()
            .report
            .expect("report body");
        assert_eq!(report.events, 2, "events in the report of node {id}");
    }

    // A follower read says what it is.
    let follower_read = via_follower
        .get_account(v1::GetAccountRequest {
            account: "acme".to_string(),
            consistency: v1::Consistency::Follower as i32,
        })
        .await
        .expect("follower read")
        .into_inner()
        .read
        .expect("read info");
    assert_eq!(follower_read.consistency, v1::Consistency::Follower as i32);
    assert_eq!(follower_read.node_id, follower);

    let history = via_follower
        .history(v1::HistoryRequest {
            account: "acme".to_string(),
            before_seq: None,
            limit: 10,
            consistency: linearizable(),
        })
        .await
        .expect("history")
        .into_inner();
    assert!(
        history.entries.len() >= 3,
        "grant and two charges: {history:?}"
    );

    // Ledger events: an account with a low-balance threshold crosses it; every node can stream
    // the event once it has applied it.
    via_follower
        .create_account(v1::CreateAccountRequest {
            thresholds: vec!["50".to_string()],
            ..create_account("beta", "CREDITS", "std")
        })
        .await
        .expect("account with threshold");
    via_follower
        .add_grant(purchased_grant("beta", "g1", "100", "1"))
        .await
        .expect("grant");
    let crossed = via_follower
        .record_usage(usage("beta-1", "beta", "tokens", "60", occurred))
        .await
        .expect("usage")
        .into_inner();
    assert_eq!(settlement(&crossed.result).1.balance_after, "40");

    // Every replica reaches the same state.
    cluster.converged_hash(&cluster.running()).await;
    let mut last_seq = 0;
    for id in cluster.running() {
        let mut stream = cluster
            .ledger(id)
            .stream_events(v1::StreamEventsRequest {
                from_seq: 0,
                follow: false,
                ..Default::default()
            })
            .await
            .expect("stream events")
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.message().await.expect("stream item") {
            events.push(event);
        }
        assert!(
            events
                .iter()
                .any(|event| event.account == "beta" && event.kind == "balance_low"),
            "node {id} streamed {events:?}"
        );
        assert!(events.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        last_seq = last_seq.max(events.last().map(|event| event.seq).unwrap_or(0));
    }

    // A follow stream on a follower, resumed after the last event seen, delivers the next one
    // as soon as that node applies it.
    let mut following = via_follower
        .stream_events(v1::StreamEventsRequest {
            from_seq: last_seq + 1,
            follow: true,
            ..Default::default()
        })
        .await
        .expect("follow stream")
        .into_inner();
    let depleted = via_leader
        .record_usage(usage("beta-2", "beta", "tokens", "40", occurred))
        .await
        .expect("usage")
        .into_inner();
    assert_eq!(settlement(&depleted.result).1.balance_after, "0");
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), following.message())
        .await
        .expect("an event within 10 s")
        .expect("stream item")
        .expect("stream open");
    assert!(next.seq > last_seq, "{next:?} after {last_seq}");
    assert_eq!(next.account, "beta");

    // The leader counted the four settled events; the follower counted forwarded requests.
    let (status, metrics) = cluster.http_get(leader, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    let settled_line = format!("tally_events_settled_total{{node=\"{leader}\"}} 4");
    assert!(metrics.contains(&settled_line), "{metrics}");
    let (_, follower_metrics) = cluster
        .http_get(follower, "/metrics")
        .await
        .expect("metrics");
    assert!(!follower_metrics.contains(&format!(
        "tally_requests_forwarded_total{{node=\"{follower}\"}} 0"
    )));
    // Both timed their log syncs: the leader its own (in the background), the follower the
    // ones it answers after.
    for (node, text) in [(leader, &metrics), (follower, &follower_metrics)] {
        let prefix = format!("tally_log_sync_seconds_count{{node=\"{node}\"}} ");
        let syncs: u64 = text
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no tally_log_sync_seconds on node {node}: {text}"));
        assert!(syncs > 0, "node {node} counted no log sync");
    }

    // Group commit: a burst of concurrent requests shares log entries, and each waiter still
    // gets its own outcome.
    let counter = |text: &str, name: &str| -> u64 {
        let prefix = format!("{name}{{node=\"{leader}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from {text}"))
    };
    let before = cluster
        .http_get(leader, "/metrics")
        .await
        .expect("metrics")
        .1;
    let burst = 200u64;
    let mut waiters = Vec::new();
    for n in 0..burst {
        let mut client = via_leader.clone();
        waiters.push(tokio::spawn(async move {
            client
                .record_usage(usage(
                    &format!("burst-{n}"),
                    "acme",
                    "tokens",
                    "1",
                    occurred,
                ))
                .await
                .map(|reply| reply.into_inner())
        }));
    }
    for (n, waiter) in waiters.into_iter().enumerate() {
        let reply = waiter.await.expect("task").expect("burst usage");
        let (kind, settled) = settlement(&reply.result);
        assert_eq!(kind, "settled");
        assert_eq!(settled.event_id, format!("burst-{n}"));
    }
    let after = cluster
        .http_get(leader, "/metrics")
        .await
        .expect("metrics")
        .1;
    let commands = counter(&after, "tally_commands_proposed_total")
        - counter(&before, "tally_commands_proposed_total");
    let entries = counter(&after, "tally_entries_proposed_total")
        - counter(&before, "tally_entries_proposed_total");
    assert!(
        commands >= burst,
        "{commands} commands proposed for {burst} requests"
    );
    assert!(
        entries < commands,
        "no coalescing: {entries} entries for {commands} commands"
    );
    let expected_balance = (650 - burst).to_string();
    assert_eq!(cluster.account("acme").await.balance, expected_balance);

    // A burst of concurrent linearizable reads on every node (they share read-index rounds):
    // each sees every write acknowledged before it.
    let mut readers = Vec::new();
    for n in 0..90usize {
        let mut client = cluster.ledger(cluster.running()[n % 3]);
        readers.push(tokio::spawn(async move {
            client
                .get_account(v1::GetAccountRequest {
                    account: "acme".to_string(),
                    consistency: v1::Consistency::Linearizable as i32,
                })
                .await
                .map(|reply| reply.into_inner())
        }));
    }
    for reader in readers {
        let reply = reader.await.expect("task").expect("concurrent read");
        assert_eq!(reply.account.expect("account").balance, expected_balance);
    }
}

/// The field named by an `invalid_argument` status.
fn invalid_field(status: &Status) -> String {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get(CODE_METADATA_KEY)
            .and_then(|v| v.to_str().ok()),
        Some("invalid_argument")
    );
    let error = TallyError::from_status(status);
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(!error.message.is_empty());
    error
        .field()
        .unwrap_or_else(|| panic!("no field named in {error:?}"))
        .to_string()
}

#[tokio::test]
async fn bad_input_is_refused_and_the_state_hash_does_not_move() {
    // No ticks: the applied index then moves only if something reaches the log.
    let cluster = Cluster::start(ClusterSpec {
        tick_interval_ms: 3_600_000,
        ..ClusterSpec::default()
    })
    .await;
    let leader = cluster.leader().await;
    let follower = *cluster
        .running()
        .iter()
        .find(|id| **id != leader)
        .expect("a follower");
    let mut setup = cluster.ledger(leader);
    setup
        .create_asset(create_asset("USDC", 2))
        .await
        .expect("asset");
    setup
        .publish_prices(per_unit_prices("std", "USDC", "tokens", "0.01"))
        .await
        .expect("prices");
    setup
        .create_account(create_account("acme", "USDC", "std"))
        .await
        .expect("account");
    setup
        .add_grant(purchased_grant("acme", "g1", "100", "100"))
        .await
        .expect("grant");
    let before = cluster.converged_hash(&cluster.running()).await;

    for via in [follower, leader] {
        let mut client = cluster.ledger(via);
        let case = |what: &str, result: Result<(), Status>, field: &str| {
            let status = result.expect_err(&format!("{what} through node {via} must fail"));
            let named = invalid_field(&status);
            assert!(
                named.contains(field),
                "{what}: expected field {field}, got {named} ({status:?})"
            );
        };
        case(
            "empty account id",
            client
                .create_account(create_account("", "USDC", "std"))
                .await
                .map(drop),
            "id",
        );
        case(
            "oversized account id",
            client
                .create_account(create_account(&"x".repeat(129), "USDC", "std"))
                .await
                .map(drop),
            "id",
        );
        case(
            "account id with a space",
            client
                .create_account(create_account("bad id", "USDC", "std"))
                .await
                .map(drop),
            "id",
        );
        case(
            "negative grant",
            client
                .add_grant(purchased_grant("acme", "g2", "-5", "1"))
                .await
                .map(drop),
            "amount",
        );
        case(
            "over-precise grant",
            client
                .add_grant(purchased_grant("acme", "g2", "1.234", "1"))
                .await
                .map(drop),
            "amount",
        );
        case(
            "not a number",
            client
                .add_grant(purchased_grant("acme", "g2", "ten", "1"))
                .await
                .map(drop),
            "amount",
        );
        let mut no_category = purchased_grant("acme", "g2", "5", "1");
        no_category.category = v1::GrantCategory::Unspecified as i32;
        case(
            "grant without category",
            client.add_grant(no_category).await.map(drop),
            "category",
        );
        case(
            "negative quantity",
            client
                .record_usage(usage("e-1", "acme", "tokens", "-1", now_ms()))
                .await
                .map(drop),
            "quantity",
        );
        case(
            "empty event id",
            client
                .record_usage(usage("", "acme", "tokens", "1", now_ms()))
                .await
                .map(drop),
            "event_id",
        );
        let mut batch = vec![
            usage("e-2", "acme", "tokens", "1", now_ms())
                .event
                .expect("event"),
            usage("e-3", "acme", "tokens", "1", now_ms())
                .event
                .expect("event"),
        ];
        batch[1].dimensions.push(v1::KeyValue {
            key: "bad key".to_string(),
            value: "x".to_string(),
        });
        case(
            "a batch with a bad dimension key",
            client
                .record_usage_batch(v1::RecordUsageBatchRequest {
                    events: batch,
                    atomic: false,
                    reply: 0,
                })
                .await
                .map(drop),
            "events[1].dimensions[0].key",
        );
        // Batches are read straight from their bytes (forwarded as they came): bytes that are
        // not valid protobuf are refused, naming where.
        let mut raw = ingest::ledger_client::LedgerClient::new(cluster.channel(via));
        // events[0].event_id (field 1 of field 1) holding two bytes that are not UTF-8.
        let not_utf8 = vec![0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
        case(
            "a batch whose event id is not UTF-8",
            raw.record_usage_batch(RecordUsageBatchWire::from(not_utf8))
                .await
                .map(drop),
            "events[0].event_id",
        );
        case(
            "a truncated batch",
            raw.record_usage_batch(RecordUsageBatchWire::from(vec![0x0a, 0x05, 0x0a]))
                .await
                .map(drop),
            "events",
        );
        case(
            "usage without event",
            client
                .record_usage(v1::RecordUsageRequest { event: None })
                .await
                .map(drop),
            "event",
        );
        case(
            "hold too short",
            client
                .authorize(v1::AuthorizeRequest {
                    account: "acme".to_string(),
                    hold_id: "h1".to_string(),
                    amount: "1".to_string(),
                    expires_in_ms: 0,
                })
                .await
                .map(drop),
            "expires_in_ms",
        );
        case(
            "read with an empty account",
            client
                .get_account(v1::GetAccountRequest {
                    account: String::new(),
                    consistency: linearizable(),
                })
                .await
                .map(drop),
            "account",
        );

        // Unknown account: an error for a grant, a rejected result for a usage event.
        let status = client
            .add_grant(purchased_grant("ghost", "g1", "5", "1"))
            .await
            .expect_err("grant to an unknown account");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            TallyError::from_status(&status).code,
            ErrorCode::UnknownAccount
        );
        let reply = client
            .record_usage(usage("e-ghost", "ghost", "tokens", "1", now_ms()))
            .await
            .expect("usage for an unknown account is a normal reply")
            .into_inner();
        match reply.result.and_then(|result| result.outcome) {
            Some(v1::usage_result::Outcome::Rejected(rejection)) => {
                assert_eq!(rejection.code, "unknown_account")
            }
            other => panic!("expected unknown_account, got {other:?}"),
        }

        // A batch above the limit.
        let events: Vec<v1::UsageEvent> = (0..8_191)
            .map(|index| {
                usage(&format!("b-{index}"), "acme", "tokens", "1", now_ms())
                    .event
                    .expect("event")
            })
            .collect();
        let status = client
            .record_usage_batch(Request::new(v1::RecordUsageBatchRequest {
                events,
                atomic: false,
                reply: v1::BatchReply::UnsettledOnly as i32,
            }))
            .await
            .expect_err("a batch of 8,191 events");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(
            TallyError::from_status(&status).code,
            ErrorCode::RequestTooLarge
        );
    }

    // A request above limits.request_bytes_max (4 MiB): refused whole, with the limit named.
    let status = cluster
        .ledger(follower)
        .create_account(v1::CreateAccountRequest {
            metadata: vec![v1::KeyValue {
                key: "blob".to_string(),
                value: "x".repeat(5 * 1024 * 1024),
            }],
            ..create_account("big", "USDC", "std")
        })
        .await
        .expect_err("a 5 MiB request");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let error = TallyError::from_status(&status);
    assert_eq!(error.code, ErrorCode::RequestTooLarge);
    assert!(
        error.message.contains("request_bytes_max"),
        "{}",
        error.message
    );

    let after = cluster.converged_hash(&cluster.running()).await;
    assert_eq!(
        after.applied_index, before.applied_index,
        "bad input reached the log"
    );
    assert_eq!(after.hash_hex, before.hash_hex);
}
