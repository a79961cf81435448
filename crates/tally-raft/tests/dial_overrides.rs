//! `NetworkConfig::peer_dial_overrides`: a peer with an override is dialled at the override,
//! not at its membership address (the fault-injection tests put a proxy there).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{BasicNode, Vote};
use tally_raft::{NetworkConfig, RaftService, TallyNetwork, MESSAGE_BYTES_MAX};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

fn vote_request() -> VoteRequest<u64> {
    VoteRequest {
        vote: Vote::new(1, 1),
        last_log_id: None,
    }
}

#[test]
fn dial_addr_prefers_the_override() {
    let config = NetworkConfig {
        peer_dial_overrides: BTreeMap::from([(2, "127.0.0.1:9002".to_string())]),
        ..NetworkConfig::default()
    };
    assert_eq!(config.dial_addr(2, "10.0.0.2:7201"), "127.0.0.1:9002");
    assert_eq!(config.dial_addr(3, "10.0.0.3:7201"), "10.0.0.3:7201");
}

#[tokio::test]
async fn a_peer_with_an_override_is_dialled_there() {
    let (raft, _dir) = common::lone_raft(2).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let real_addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftService::new(raft.clone()).into_server(MESSAGE_BYTES_MAX))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    // The membership names a port nobody listens on.
    let dead_addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let option = RPCOption::new(Duration::from_secs(2));

    let mut plain = TallyNetwork::new(1, NetworkConfig::default());
    let mut peer = plain
        .new_client(
            2,
            &BasicNode {
                addr: dead_addr.clone(),
            },
        )
        .await;
    let error = peer.vote(vote_request(), option.clone()).await.unwrap_err();
    assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");

    let mut overridden = TallyNetwork::new(
        1,
        NetworkConfig {
            peer_dial_overrides: BTreeMap::from([(2, real_addr)]),
            ..NetworkConfig::default()
        },
    );
    let mut peer = overridden
        .new_client(2, &BasicNode { addr: dead_addr })
        .await;
    let response = peer.vote(vote_request(), option).await.unwrap();
    assert!(response.vote_granted);

    raft.shutdown().await.unwrap();
    server.abort();
}
