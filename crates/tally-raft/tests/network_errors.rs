//! How the peer network reports failures to openraft: the error kind decides whether openraft
//! backs off (Unreachable), retries smaller (PayloadTooLarge) or treats the peer's own answer
//! (RemoteError).

mod common;

use std::time::Duration;

use openraft::error::{RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, LogId, Vote};
use tally_core::{AssetCode, AssetSpec, Command, Entry};
use tally_raft::{NetworkConfig, RaftService, TallyNetwork, MESSAGE_BYTES_MAX};
use tally_store::TypeConfig;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

fn option() -> RPCOption {
    RPCOption::new(Duration::from_secs(2))
}

fn vote_request() -> VoteRequest<u64> {
    VoteRequest {
        vote: Vote::new(1, 1),
        last_log_id: None,
    }
}

/// A small ledger entry (creates the asset USD) at `index`.
fn usd_entry(index: u64) -> openraft::Entry<TypeConfig> {
    openraft::Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(
            Entry {
                at_ms: 1,
                commands: vec![Command::CreateAsset(AssetSpec {
                    code: AssetCode::new("USD").unwrap(),
                    scale: 2,
                })],
            }
            .into(),
        ),
    }
}

/// Serves `raft`'s peer service on a loopback port with a message limit of `limit` bytes:
/// its address and the server task.
async fn serve(raft: &openraft::Raft<TypeConfig>, limit: usize) -> (String, Server) {
    serve_service(RaftService::new(raft.clone()), limit).await
}

type Server = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// [`serve`] for a service made by the caller (to reach its `contact()`).
async fn serve_service(service: RaftService, limit: usize) -> (String, Server) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let service = service.into_server(limit);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, server)
}

fn append_request(entries: u64) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        leader_commit: None,
        entries: (1..=entries).map(usd_entry).collect(),
    }
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    // Bind then drop to get a port nobody listens on.
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let mut factory = TallyNetwork::new(1, NetworkConfig::default());
    let mut peer = factory.new_client(2, &BasicNode { addr }).await;
    let error = peer.vote(vote_request(), option()).await.unwrap_err();
    assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");

    let mut bad = factory
        .new_client(
            3,
            &BasicNode {
                addr: "not a uri at all".into(),
            },
        )
        .await;
    let error = bad.vote(vote_request(), option()).await.unwrap_err();
    assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");
    let stats = factory.stats();
    assert_eq!(stats.unreachable, 2, "{stats:?}");
    assert_eq!(stats.votes_ok, 0, "{stats:?}");
}

#[tokio::test]
async fn oversized_appends_ask_openraft_for_smaller_batches() {
    let config = NetworkConfig {
        message_bytes_max: 300,
        ..NetworkConfig::default()
    };
    let mut factory = TallyNetwork::new(1, config);
    let mut peer = factory
        .new_client(
            2,
            &BasicNode {
                addr: "127.0.0.1:1".into(),
            },
        )
        .await;
    let request = AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        leader_commit: None,
        entries: (1..=8).map(usd_entry).collect(),
    };
    let error = peer.append_entries(request, option()).await.unwrap_err();
    let RPCError::PayloadTooLarge(too_large) = error else {
        panic!("{error:?}")
    };
    assert_eq!(too_large.entries_hint(), 4);
    assert_eq!(factory.stats().append_batches_split, 1);
}

#[tokio::test]
async fn a_batch_above_the_default_limit_is_cut_before_it_is_sent() {
    // 48 entries of 1.5 MiB: above MESSAGE_BYTES_MAX, which also bounds the encoder. The
    // request is cut to the entries that fit APPEND_ENTRIES_BYTES_TARGET (here one) before
    // anything is encoded, so it is neither refused as too large nor failed; the peer here is
    // unreachable, which is the only error. (That the cut request is answered as a partial
    // success is checked against real peers in tests/cluster.rs.)
    let mut factory = TallyNetwork::new(1, NetworkConfig::default());
    let mut peer = factory
        .new_client(
            2,
            &BasicNode {
                addr: "127.0.0.1:1".into(),
            },
        )
        .await;
    let payload = vec![b'x'; 1_500_000];
    let entries = (1..=48)
        .map(|index| openraft::Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(
                Entry {
                    at_ms: 1,
                    commands: vec![Command::VoidGrant {
                        account: tally_core::AccountId::new("acme").unwrap(),
                        grant: tally_core::GrantId::new("g").unwrap(),
                        reason: String::from_utf8(payload.clone()).unwrap(),
                    }],
                }
                .into(),
            ),
        })
        .collect();
    let request = AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        leader_commit: None,
        entries,
    };
    let error = peer.append_entries(request, option()).await.unwrap_err();
    assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");
    let stats = factory.stats();
    assert_eq!(stats.append_entries_cut, 1, "{stats:?}");
    assert_eq!(stats.append_batches_split, 0, "{stats:?}");
    const { assert!(MESSAGE_BYTES_MAX < 48 * 1_500_000) };
    const { assert!(tally_raft::APPEND_ENTRIES_BYTES_TARGET < 2 * 1_500_000) };
}

#[tokio::test]
async fn the_peers_raft_errors_come_back_as_remote_errors() {
    let (raft, _dir) = common::lone_raft(2).await;
    let (addr, server) = serve(&raft, MESSAGE_BYTES_MAX).await;

    let mut factory = TallyNetwork::new(1, NetworkConfig::default());
    let mut peer = factory.new_client(2, &BasicNode { addr }).await;
    // A running Raft answers a vote request over the wire.
    let response = peer.vote(vote_request(), option()).await.unwrap();
    assert_eq!(response.vote, Vote::new(1, 1));
    assert!(response.vote_granted);

    // A peer whose decode limit is below the request's size refuses it (RESOURCE_EXHAUSTED):
    // openraft is asked for smaller batches.
    let (small_addr, small_server) = serve(&raft, 300).await;
    let mut small_peer = factory.new_client(2, &BasicNode { addr: small_addr }).await;
    let error = small_peer
        .append_entries(append_request(8), option())
        .await
        .unwrap_err();
    let RPCError::PayloadTooLarge(too_large) = error else {
        panic!("{error:?}")
    };
    assert_eq!(too_large.entries_hint(), 4);
    small_server.abort();

    // A stopped Raft answers with its fatal error, decoded on this side.
    raft.shutdown().await.unwrap();
    let error = peer.vote(vote_request(), option()).await.unwrap_err();
    let RPCError::RemoteError(remote) = error else {
        panic!("{error:?}")
    };
    assert_eq!(remote.target, 2);
    assert!(
        matches!(remote.source, RaftError::Fatal(_)),
        "{:?}",
        remote.source
    );
    server.abort();
}

#[tokio::test]
async fn a_node_refuses_requests_meant_for_another_node() {
    // Node 2 serves an address the membership gives to node 3 (a typo in add-learner): node 2
    // must not answer, and later vote, as node 3 too.
    let (raft, _dir) = common::lone_raft(2).await;
    let (addr, server) = serve(&raft, MESSAGE_BYTES_MAX).await;
    let mut factory = TallyNetwork::new(1, NetworkConfig::default());
    let mut wrong = factory
        .new_client(3, &BasicNode { addr: addr.clone() })
        .await;
    let refused = |error: String| {
        assert!(
            error.contains("this is node 2, not node 3"),
            "the refusal names both nodes: {error}"
        );
    };
    // Unreachable: openraft backs off (the refusal repeats until an operator fixes the
    // address; retried at once it flooded the leader's log).
    let error = wrong.vote(vote_request(), option()).await.unwrap_err();
    assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");
    refused(error.to_string());
    // Appends go over the stream; the unary fallback is not taken for a refusal (the second
    // one opens the stream again and is refused again).
    for _ in 0..2 {
        let error = wrong
            .append_entries(append_request(1), option())
            .await
            .unwrap_err();
        assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");
        refused(error.to_string());
    }
    assert_eq!(
        raft.metrics().borrow().last_log_index,
        None,
        "node 2 appended nothing meant for node 3"
    );

    // Meant for node 2: served.
    let mut right = factory.new_client(2, &BasicNode { addr }).await;
    let response = right.vote(vote_request(), option()).await.unwrap();
    assert!(response.vote_granted, "{response:?}");

    raft.shutdown().await.unwrap();
    server.abort();
}

/// A node that heard a leader name commit index N refuses its vote to a candidate whose log
/// ends before N (it cannot hold the committed entries) before openraft is asked (whose own
/// check only compares the candidate's log with this node's, here shorter); a candidate past N
/// goes on to openraft. The refusal is told apart by its answer: it names no log of this node,
/// openraft's always does.
#[tokio::test]
async fn no_vote_for_a_log_that_ends_before_a_known_commit() {
    let (raft, _dir) = common::lone_raft(2).await;
    raft.initialize(std::collections::BTreeMap::from([(
        2,
        BasicNode {
            addr: "127.0.0.1:1".to_string(),
        },
    )]))
    .await
    .unwrap();
    raft.wait(Some(Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "lone leader")
        .await
        .unwrap();
    let service = RaftService::new(raft.clone());
    service.contact().learned_commit(50);
    let (addr, server) = serve_service(service, MESSAGE_BYTES_MAX).await;
    let mut factory = TallyNetwork::new(1, NetworkConfig::default());
    let mut peer = factory.new_client(2, &BasicNode { addr }).await;
    let ask = |term: u64, last_index: u64| VoteRequest {
        vote: Vote::new(term, 1),
        last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 2), last_index)),
    };
    let refused = peer.vote(ask(5, 10), option()).await.unwrap();
    assert!(
        !refused.vote_granted && refused.last_log_id.is_none(),
        "{refused:?}"
    );
    assert_eq!(
        raft.metrics().borrow().state,
        openraft::ServerState::Leader,
        "a refused vote changes nothing here"
    );
    // Past the known commit: openraft answers (here it keeps its leader lease, so it does
    // not grant either, but it is its answer, naming its log).
    let passed_on = peer.vote(ask(6, 60), option()).await.unwrap();
    assert!(passed_on.last_log_id.is_some(), "{passed_on:?}");
    raft.shutdown().await.unwrap();
    server.abort();
}

/// An empty snapshot is what a leader sends when it could not assemble one (a full disk, a
/// damaged journal block): the receiver refuses it before openraft sees it (installing it
/// would be a fatal storage error on the receiver), as Unreachable, so the leader's
/// replication backs off instead of stopping; the receiver's state is untouched.
#[tokio::test]
async fn an_empty_snapshot_is_refused_before_openraft_sees_it() {
    use openraft::raft::InstallSnapshotRequest;
    use openraft::SnapshotMeta;
    let (raft, _dir) = common::lone_raft(2).await;
    let (addr, server) = serve(&raft, MESSAGE_BYTES_MAX).await;
    let mut factory = TallyNetwork::new(1, NetworkConfig::default());
    let mut client = factory.new_client(2, &BasicNode { addr }).await;
    let request = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        meta: SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 40)),
            ..Default::default()
        },
        offset: 0,
        data: Vec::new(),
        done: true,
    };
    let error = client
        .install_snapshot(request, option())
        .await
        .unwrap_err();
    assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("an empty snapshot: the leader has none ready"),
        "{error}"
    );
    let metrics = raft.metrics().borrow().clone();
    assert_eq!(metrics.snapshot, None, "nothing installed");
    assert_eq!(metrics.last_applied, None);
    raft.shutdown().await.unwrap();
    server.abort();
}
