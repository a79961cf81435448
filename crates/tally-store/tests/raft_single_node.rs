//! The store under a real openraft `Raft` (one voter, so no network is ever used): writes
//! through `client_write`, a snapshot with log purge, shutdown, restart on the same directory,
//! and the state openraft rebuilds (snapshot + re-applied committed log) has the same hash.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, Raft};
use tally_store::{NodeId, TypeConfig};

/// A one-node cluster never sends an RPC; if openraft tried, the test should see it fail.
struct NoPeers;

fn no_peer<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(
        "single-node test cluster has no peers",
    )))
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;
    async fn new_client(&mut self, _target: NodeId, _node: &BasicNode) -> NoPeers {
        NoPeers
    }
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(no_peer())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(no_peer())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(no_peer())
    }
}

fn config() -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        // Purge the log right up to each snapshot, so a restart must start from the snapshot.
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        ..Default::default()
    };
    Arc::new(config.validate().unwrap())
}

const WAIT: Option<Duration> = Some(Duration::from_secs(20));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_raft_restarts_from_snapshot_and_log_to_the_same_hash() {
    let entries = scenario(3, 30);
    let reference = Reference::new(&entries);
    let n = entries.len();
    let snap_at = n / 2;
    let dir = tempfile::tempdir().unwrap();

    let last_index;
    {
        let (log, sm) = tally_store::open(dir.path()).unwrap();
        let reader = sm.reader();
        let raft = Raft::<TypeConfig>::new(1, config(), NoPeers, log, sm)
            .await
            .unwrap();
        raft.initialize(BTreeMap::from([(1, BasicNode::default())]))
            .await
            .unwrap();
        raft.wait(WAIT)
            .current_leader(1, "leader elected")
            .await
            .unwrap();

        let mut snapshot_log_id = None;
        let mut last_written = None;
        for (k, entry) in entries.iter().enumerate() {
            let resp = raft.client_write(entry.clone().into()).await.unwrap();
            assert_eq!(
                resp.data.outcomes, reference.results[k].outcomes,
                "entry {k}"
            );
            last_written = Some(resp.log_id);
            if k + 1 == snap_at {
                raft.trigger().snapshot().await.unwrap();
                let m = raft
                    .wait(WAIT)
                    .snapshot(resp.log_id, "snapshot built")
                    .await
                    .unwrap();
                snapshot_log_id = m.snapshot;
                raft.wait(WAIT)
                    .purged(Some(resp.log_id), "log purged")
                    .await
                    .unwrap();
            }
        }
        // The response comes once the entry is applied: the reader already reflects it.
        last_index = last_written.unwrap().index;
        assert_eq!(
            reader.state_hash(),
            (last_written, reference.states[n].state_hash())
        );
        assert!(snapshot_log_id.is_some());
        raft.shutdown().await.unwrap();
    }

    // Restart: openraft loads the snapshot, re-applies the committed log after it, elects
    // itself again and commits a blank entry.
    let (log, sm) = tally_store::open(dir.path()).unwrap();
    let reader = sm.reader();
    let raft = Raft::<TypeConfig>::new(1, config(), NoPeers, log, sm)
        .await
        .unwrap();
    raft.wait(WAIT)
        .applied_index_at_least(Some(last_index), "re-applied after restart")
        .await
        .unwrap();
    assert_eq!(reader.state_hash().1, reference.states[n].state_hash());
    for a in 0..3 {
        assert_eq!(
            reader.history(&account(a), None, 1_000).unwrap(),
            reference.history(n, &account(a))
        );
    }
    // And it still takes writes.
    raft.wait(WAIT)
        .current_leader(1, "leader after restart")
        .await
        .unwrap();
    let resp = raft
        .client_write(
            tally_core::Entry {
                at_ms: BASE_MS + 10_000_000,
                commands: vec![tally_core::Command::Tick],
            }
            .into(),
        )
        .await
        .unwrap();
    assert_eq!(resp.data.outcomes.len(), 1);
    raft.shutdown().await.unwrap();
}
