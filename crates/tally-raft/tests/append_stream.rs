//! AppendEntries go over one `AppendEntriesStream` call per peer connection, answered in
//! order; a peer that does not serve the stream (an older build) gets unary calls instead.

mod common;

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
        self.inner.append_entries_stream(request).await
    }

    async fn vote(
        &self,
        request: Request<v1::RaftRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        self.inner.vote(request).await
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
    let (raft, dir) = common::lone_raft(2).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let service = Partial {
        inner: RaftService::new(raft.clone()),
        refuse,
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut factory = TallyNetwork::new(1, NetworkConfig::default());
    let peer = factory.new_client(2, &BasicNode { addr }).await;
    (raft, peer, dir)
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
