//! The server side of the peer network: the generated `Raft` gRPC service, dispatching each
//! decoded request to this node's `openraft::Raft`.

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use tally_proto::v1;
use tally_proto::v1::raft_server::RaftServer;
use tally_store::{NodeId, TypeConfig};
use tonic::{Request, Response, Status};

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

/// Encodes openraft's answer: `ok` for a response, `error` for the `RaftError` it returned.
fn reply<T: Serialize, E: Serialize>(
    what: &'static str,
    result: Result<T, E>,
) -> Result<Response<v1::RaftReply>, Status> {
    use v1::raft_reply::Result as Wire;
    let wire = match result {
        Ok(response) => {
            Wire::Ok(codec::encode(what, &response).map_err(|e| Status::internal(e.to_string()))?)
        }
        Err(error) => Wire::Error(
            codec::encode("raft error", &error).map_err(|e| Status::internal(e.to_string()))?,
        ),
    };
    Ok(Response::new(v1::RaftReply { result: Some(wire) }))
}

#[tonic::async_trait]
impl v1::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<v1::RaftRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            codec::decode("append entries request", &request.get_ref().data)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        reply(
            "append entries response",
            self.raft.append_entries(rpc).await,
        )
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
