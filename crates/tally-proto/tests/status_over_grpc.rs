//! A Tally error survives a real gRPC round trip (HTTP/2 over loopback): code, metadata,
//! details and leader hint come back intact, and a large message passes once limits are raised.

use tally_core::{Amount, InvalidInput, Reason};
use tally_proto::v1;
use tally_proto::v1::raft_client::RaftClient;
use tally_proto::v1::raft_server::{Raft, RaftServer};
use tally_proto::{ErrorCode, TallyError};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// Answers each method with a fixed error, or echoes the payload size.
struct Fixed;

#[tonic::async_trait]
impl Raft for Fixed {
    async fn append_entries(
        &self,
        _: Request<v1::RaftRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        Err(TallyError::not_leader(Some(3), Some("127.0.0.1:7003".to_string())).to_status())
    }

    type AppendEntriesStreamStream = tokio_stream::Empty<Result<v1::RaftReply, Status>>;

    async fn append_entries_stream(
        &self,
        _: Request<tonic::Streaming<v1::RaftRequest>>,
    ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
        Err(Status::unimplemented("not served here"))
    }

    async fn vote(&self, _: Request<v1::RaftRequest>) -> Result<Response<v1::RaftReply>, Status> {
        Err(TallyError::from_reason(&Reason::InsufficientFunds {
            available: Amount::parse("a", "0.5").unwrap(),
            required: Amount::from_i64(2),
        })
        .to_status())
    }

    async fn pre_vote(
        &self,
        _: Request<v1::RaftRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        Err(Status::unimplemented("not served here"))
    }

    async fn install_snapshot(
        &self,
        request: Request<v1::RaftRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        if request.get_ref().data.is_empty() {
            return Err(TallyError::from(InvalidInput::new(
                "events[3].quantity",
                "must be >= 0, got -1",
            ))
            .to_status());
        }
        let size = request.get_ref().data.len() as u64;
        Ok(Response::new(v1::RaftReply {
            result: Some(v1::raft_reply::Result::Ok(size.to_le_bytes().to_vec())),
        }))
    }
}

#[tokio::test]
async fn errors_and_large_messages_cross_the_wire() {
    const LIMIT: usize = 16 * 1024 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServer::new(Fixed).max_decoding_message_size(LIMIT))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut client = RaftClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_encoding_message_size(LIMIT);
    let request = || Request::new(v1::RaftRequest { data: vec![] });

    let error = TallyError::from(client.append_entries(request()).await.unwrap_err());
    assert_eq!(error.code, ErrorCode::NotLeader);
    assert_eq!(error.leader_id, Some(3));
    assert_eq!(error.leader_addr.as_deref(), Some("127.0.0.1:7003"));

    let status = client.vote(request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        status.metadata().get("tally-code").unwrap(),
        "insufficient_funds"
    );
    let error = TallyError::from_status(&status);
    assert_eq!(error.code, ErrorCode::InsufficientFunds);
    assert_eq!(error.details["available"], "0.5");
    assert_eq!(error.details["required"], "2");

    let error = TallyError::from(client.install_snapshot(request()).await.unwrap_err());
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert_eq!(error.field(), Some("events[3].quantity"));
    assert_eq!(error.message, "events[3].quantity: must be >= 0, got -1");

    // 8 MiB: above tonic's 4 MiB default, accepted with the raised limits.
    let big = Request::new(v1::RaftRequest {
        data: vec![7; 8 * 1024 * 1024],
    });
    let reply = client.install_snapshot(big).await.unwrap().into_inner();
    let Some(v1::raft_reply::Result::Ok(bytes)) = reply.result else {
        panic!()
    };
    assert_eq!(
        u64::from_le_bytes(bytes.try_into().unwrap()),
        8 * 1024 * 1024
    );

    // Above the server's limit: refused. Depending on when the server notices, tonic reports
    // OUT_OF_RANGE or resets the stream (INTERNAL); either way nothing is mistaken for a
    // business rejection.
    let too_big = Request::new(v1::RaftRequest {
        data: vec![7; LIMIT + 1],
    });
    let status = client.install_snapshot(too_big).await.unwrap_err();
    assert!(status.metadata().get("tally-code").is_none());
    let error = TallyError::from_status(&status);
    assert!(
        matches!(error.code, ErrorCode::RequestTooLarge | ErrorCode::Internal),
        "{error}"
    );

    server.abort();
    let _ = server.await;
}
