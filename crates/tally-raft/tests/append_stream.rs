//! AppendEntries go over one `AppendEntriesStream` call per peer connection, answered in
//! order; a peer that does not serve the stream (an older build) gets unary calls instead.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, LogId, Raft, Vote};
use tally_core::{AssetCode, AssetSpec, Command, Entry};
use tally_proto::v1;
use tally_proto::v1::raft_server::{Raft as RaftRpc, RaftServer};
use tally_raft::{NetworkConfig, RaftService, TallyNetwork};
use tally_store::TypeConfig;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Which of the two AppendEntries calls a test server refuses.
#[derive(Clone, Copy, PartialEq)]
enum Refuse {
    /// Unary AppendEntries fails: every append must come over the stream.
    Unary,
    /// AppendEntriesStream is UNIMPLEMENTED, as on a build before it existed.
    Stream,
}

#[derive(Clone)]
struct Partial {
    inner: RaftService,
    refuse: Refuse,
    /// Each streamed reply leaves this many milliseconds late.
    reply_delay_ms: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl RaftRpc for Partial {
    async fn append_entries(
        &self,
        request: Request<v1::RaftRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        if self.refuse == Refuse::Unary {
            return Err(Status::internal("unary AppendEntries used"));
        }
        self.inner.append_entries(request).await
    }

    type AppendEntriesStreamStream = tally_raft::AppendEntriesReplies;

    async fn append_entries_stream(
        &self,
        request: Request<Streaming<v1::RaftRequest>>,
    ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
        if self.refuse == Refuse::Stream {
            return Err(Status::unimplemented("tally.v1.Raft/AppendEntriesStream"));
        }
        let replies = self
            .inner
            .append_entries_stream(request)
            .await?
            .into_inner();
        let delay = self.reply_delay_ms.clone();
        let delayed = replies.then(move |reply| {
            let ms = delay.load(Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                reply
            }
        });
        Ok(Response::new(Box::pin(delayed)))
    }

    async fn vote(
        &self,
        request: Request<v1::RaftRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        self.inner.vote(request).await
    }

    async fn pre_vote(
        &self,
        request: Request<v1::RaftRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        self.inner.pre_vote(request).await
    }

    async fn install_snapshot(
        &self,
        request: Request<v1::RaftRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        self.inner.install_snapshot(request).await
    }
}

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// The leader's append of entry `index` (the log starts at 0), or a heartbeat after it.
fn append(index: u64, with_entry: bool) -> AppendEntriesRequest<TypeConfig> {
    let entry = openraft::Entry::<TypeConfig> {
        log_id: log_id(index),
        payload: EntryPayload::Normal(
            Entry {
                at_ms: 1,
                commands: vec![Command::CreateAsset(AssetSpec {
                    code: AssetCode::new(format!("A{index}")).unwrap(),
                    scale: 2,
                })],
            }
            .into(),
        ),
    };
    AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: if with_entry {
            index.checked_sub(1).map(log_id)
        } else {
            Some(log_id(index))
        },
        leader_commit: None,
        entries: if with_entry { vec![entry] } else { vec![] },
    }
}

/// A follower (node 2) served with `refuse`, and a leader-side peer connection to it.
async fn follower(
    refuse: Refuse,
) -> (Raft<TypeConfig>, tally_raft::PeerNetwork, tempfile::TempDir) {
    let (raft, peer, dir, _) =
        delayed_follower(refuse, TallyNetwork::new(1, NetworkConfig::default())).await;
    (raft, peer, dir)
}

/// [`follower`], with a handle on how late its streamed replies leave, reached through the
/// leader's `network`.
async fn delayed_follower(
    refuse: Refuse,
    mut network: TallyNetwork,
) -> (
    Raft<TypeConfig>,
    tally_raft::PeerNetwork,
    tempfile::TempDir,
    Arc<AtomicU64>,
) {
    let (raft, dir) = common::lone_raft(2).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let reply_delay_ms = Arc::new(AtomicU64::new(0));
    let service = Partial {
        inner: RaftService::new(raft.clone()),
        refuse,
        reply_delay_ms: reply_delay_ms.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let peer = network.new_client(2, &BasicNode { addr }).await;
    (raft, peer, dir, reply_delay_ms)
}

async fn replicate_three_entries(peer: &mut tally_raft::PeerNetwork) {
    let option = || RPCOption::new(Duration::from_secs(5));
    for index in 0..3 {
        let response = peer
            .append_entries(append(index, true), option())
            .await
            .unwrap();
        assert_eq!(response, AppendEntriesResponse::Success, "entry {index}");
        let heartbeat = peer
            .append_entries(append(index, false), option())
            .await
            .unwrap();
        assert_eq!(
            heartbeat,
            AppendEntriesResponse::Success,
            "heartbeat {index}"
        );
    }
}

/// Three entries, each followed by a heartbeat, to a follower served with `refuse`: every
/// request answered, the follower's log holds the three.
async fn replicate_to(refuse: Refuse) {
    let (raft, mut peer, _dir) = follower(refuse).await;
    replicate_three_entries(&mut peer).await;
    let metrics = raft.metrics().borrow().clone();
    assert_eq!(metrics.last_log_index, Some(2));
    raft.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_go_over_one_stream_answered_in_order() {
    replicate_to(Refuse::Unary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_stream_gets_unary_appends() {
    replicate_to(Refuse::Stream).await;
}

/// openraft runs its own timer around every AppendEntries and drops the call when it fires:
/// a call dropped after its request went out must take its stream with it, or the next
/// request would be answered with the dropped one's reply (a leader then believes a follower
/// holds entries it refused, and panics on the contradiction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_never_leaves_its_reply_to_the_next_one() {
    let (raft, mut peer, _dir, delay) = delayed_follower(
        Refuse::Unary,
        TallyNetwork::new(1, NetworkConfig::default()),
    )
    .await;
    let option = || RPCOption::new(Duration::from_secs(5));
    // Entry 0 goes out; its reply is held back and the caller gives up first.
    delay.store(500, Ordering::SeqCst);
    let dropped = tokio::time::timeout(
        Duration::from_millis(100),
        peer.append_entries(append(0, true), option()),
    )
    .await;
    assert!(
        dropped.is_err(),
        "the call was meant to be dropped: {dropped:?}"
    );
    delay.store(0, Ordering::SeqCst);
    // Entry 5 after 4, which the follower does not hold: its own answer is a conflict. Read
    // from the first stream, it would be entry 0's success.
    let response = peer
        .append_entries(append(5, true), option())
        .await
        .unwrap();
    assert!(
        matches!(response, AppendEntriesResponse::Conflict),
        "{response:?}"
    );
    raft.shutdown().await.unwrap();
}

/// The commit a leader tells a follower never passes what the leader's own log has on disk
/// (`TallyNetwork::with_commit_bound`): with the leader's entries synced while they
/// replicate, openraft may count them committed first, and a follower told so could apply an
/// entry the cluster may still lose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_told_to_a_follower_is_bounded_by_the_leaders_synced_log() {
    use openraft::storage::RaftLogStorageExt;

    let leader_dir = tempfile::tempdir().unwrap();
    let (mut leader_log, _sm) = tally_store::open(leader_dir.path()).unwrap();
    let network =
        TallyNetwork::new(1, NetworkConfig::default()).with_commit_bound(leader_log.durability());
    let (raft, mut peer, _dir, _) = delayed_follower(Refuse::Unary, network).await;
    replicate_three_entries(&mut peer).await;
    let option = || RPCOption::new(Duration::from_secs(5));

    // The leader's own log holds nothing on disk yet: the follower is told no commit.
    let mut heartbeat = append(2, false);
    heartbeat.leader_commit = Some(log_id(2));
    let response = peer.append_entries(heartbeat.clone(), option()).await;
    assert_eq!(response.unwrap(), AppendEntriesResponse::Success);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(raft.metrics().borrow().last_applied, None);

    // Once they are on the leader's disk, the same heartbeat lets the follower apply them.
    let entries: Vec<_> = (0..3)
        .flat_map(|index| append(index, true).entries)
        .collect();
    leader_log.blocking_append(entries).await.unwrap();
    assert_eq!(leader_log.durability().through(), Some(log_id(2)));
    let response = peer.append_entries(heartbeat, option()).await;
    assert_eq!(response.unwrap(), AppendEntriesResponse::Success);
    raft.wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(2), "told the commit")
        .await
        .unwrap();
    raft.shutdown().await.unwrap();
}
