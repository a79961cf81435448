//! The server side of the peer network: the generated `Raft` gRPC service, dispatching each
//! decoded request to this node's `openraft::Raft`.

use std::pin::Pin;

use futures::Stream;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use tally_proto::v1;
use tally_proto::v1::raft_server::RaftServer;
use tally_store::{NodeId, TypeConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::codec;

/// Serves this node's Raft to its peers.
#[derive(Clone)]
pub struct RaftService {
    raft: openraft::Raft<TypeConfig>,
}

impl RaftService {
    pub fn new(raft: openraft::Raft<TypeConfig>) -> Self {
        RaftService { raft }
    }

    /// The tonic service with the message limits raised to `message_bytes_max` (batched appends
    /// and snapshot chunks exceed tonic's 4 MiB default). Use the same limit on every node.
    pub fn into_server(self, message_bytes_max: usize) -> RaftServer<RaftService> {
        RaftServer::new(self)
            .max_decoding_message_size(message_bytes_max)
            .max_encoding_message_size(message_bytes_max)
    }
}

/// Decodes one AppendEntries request, hands it to `raft` and encodes its answer, saying
/// whether `raft` has stopped (answered `Fatal`: it will answer nothing else).
async fn append_entries_reply(
    raft: &openraft::Raft<TypeConfig>,
    data: &[u8],
) -> Result<(v1::RaftReply, bool), Status> {
    let rpc: AppendEntriesRequest<TypeConfig> = codec::decode("append entries request", data)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let result = raft.append_entries(rpc).await;
    let stopped = matches!(result, Err(openraft::error::RaftError::Fatal(_)));
    Ok((encode_reply("append entries response", result)?, stopped))
}

/// The replies of an AppendEntriesStream call.
pub type AppendEntriesReplies = Pin<Box<dyn Stream<Item = Result<v1::RaftReply, Status>> + Send>>;

/// Encodes openraft's answer: `ok` for a response, `error` for the `RaftError` it returned.
fn reply<T: Serialize, E: Serialize>(
    what: &'static str,
    result: Result<T, E>,
) -> Result<Response<v1::RaftReply>, Status> {
    encode_reply(what, result).map(Response::new)
}

fn encode_reply<T: Serialize, E: Serialize>(
    what: &'static str,
    result: Result<T, E>,
) -> Result<v1::RaftReply, Status> {
    use v1::raft_reply::Result as Wire;
    let wire = match result {
        Ok(response) => {
            Wire::Ok(codec::encode(what, &response).map_err(|e| Status::internal(e.to_string()))?)
        }
        Err(error) => Wire::Error(
            codec::encode("raft error", &error).map_err(|e| Status::internal(e.to_string()))?,
        ),
    };
    Ok(v1::RaftReply { result: Some(wire) })
}

#[tonic::async_trait]
impl v1::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<v1::RaftRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        append_entries_reply(&self.raft, &request.get_ref().data)
            .await
            .map(|(reply, _)| Response::new(reply))
    }

    type AppendEntriesStreamStream = AppendEntriesReplies;

    /// Answers each request of the stream in turn, in order; ends the stream after the first
    /// request it cannot answer (its status is the last item), after the answer saying this
    /// node's Raft has stopped (so a graceful shutdown of the server, which waits for open
    /// streams, is not held up by a leader that keeps its stream open), or when the leader
    /// closes it.
    async fn append_entries_stream(
        &self,
        request: Request<Streaming<v1::RaftRequest>>,
    ) -> Result<Response<AppendEntriesReplies>, Status> {
        let state = Some((self.raft.clone(), request.into_inner()));
        let replies = futures::stream::unfold(state, |state| async move {
            let (raft, mut requests) = state?;
            let request = match requests.message().await {
                Ok(Some(request)) => request,
                Ok(None) => return None,
                Err(status) => return Some((Err(status), None)),
            };
            match append_entries_reply(&raft, &request.data).await {
                Ok((reply, false)) => Some((Ok(reply), Some((raft, requests)))),
                Ok((reply, true)) => Some((Ok(reply), None)),
                Err(status) => Some((Err(status), None)),
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn vote(
        &self,
        request: Request<v1::RaftRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        let rpc: VoteRequest<NodeId> = codec::decode("vote request", &request.get_ref().data)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        reply("vote response", self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<v1::RaftRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> =
            codec::decode("install snapshot request", &request.get_ref().data)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        reply(
            "install snapshot response",
            self.raft.install_snapshot(rpc).await,
        )
    }
}
