//! Helpers shared by the multi-node tests: real Raft nodes on the sled store, serving the
//! peer service on loopback gRPC.

// Each test crate uses a different subset.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Raft, ServerState};
use tally_core::{
    AccountId, AssetCode, AssetSpec, Command, Entry, EventId, Key, LedgerConfig, Meter, UsageEvent,
    DEDUP_WINDOW_MS_DEFAULT,
};
use tally_raft::{
    raft_config, NetworkConfig, RaftService, RaftSettings, TallyNetwork, MESSAGE_BYTES_MAX,
};
use tally_store::{EncodedEntry, LedgerReader, NodeId, TypeConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Node {
    pub id: NodeId,
    pub addr: String,
    pub raft: Raft<TypeConfig>,
    pub reader: LedgerReader,
    pub network: TallyNetwork,
    pub stop_server: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<()>>,
    pub _dir: tempfile::TempDir,
}

impl Node {
    pub async fn start(id: NodeId, settings: &RaftSettings) -> Node {
        Node::start_with_limit(id, settings, MESSAGE_BYTES_MAX).await
    }

    pub async fn start_with_limit(
        id: NodeId,
        settings: &RaftSettings,
        message_bytes_max: usize,
    ) -> Node {
        Node::start_in(
            id,
            settings,
            message_bytes_max,
            tempfile::tempdir().unwrap(),
            "127.0.0.1:0",
        )
        .await
    }

    /// Starts node `id` on the data in `dir`, listening on `listen_addr`.
    pub async fn start_in(
        id: NodeId,
        settings: &RaftSettings,
        message_bytes_max: usize,
        dir: tempfile::TempDir,
        listen_addr: &str,
    ) -> Node {
        let (log, state_machine) = tally_store::open(dir.path()).unwrap();
        // As tallyd runs by default: the leader syncs its own entries while they replicate.
        log.sync_own_appends_in_parallel(id).unwrap();
        let reader = state_machine.reader();
        let config = Arc::new(raft_config(settings).unwrap());
        let network = TallyNetwork::new(
            id,
            NetworkConfig {
                message_bytes_max,
                // A node started with its own message limit sends appends up to that limit, so
                // tests of the limit see requests that large.
                append_entries_bytes_target: if message_bytes_max == tally_raft::MESSAGE_BYTES_MAX {
                    tally_raft::APPEND_ENTRIES_BYTES_TARGET
                } else {
                    message_bytes_max
                },
                ..NetworkConfig::default()
            },
        )
        .with_commit_bound(log.durability());
        let raft = Raft::new(id, config, network.clone(), log, state_machine)
            .await
            .unwrap();
        tally_raft::spawn_elections(raft.clone(), network.clone(), settings);

        let listener = TcpListener::bind(listen_addr).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop_server, stopped) = oneshot::channel::<()>();
        let service = RaftService::new(raft.clone()).into_server(message_bytes_max);
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Node {
            id,
            addr,
            raft,
            reader,
            network,
            stop_server: Some(stop_server),
            server: Some(server),
            _dir: dir,
        }
    }

    /// Stops the node and starts it again on the same data and address, like a process
    /// restart.
    pub async fn restart(mut self, settings: &RaftSettings) -> Node {
        self.stop().await;
        let Node {
            id,
            addr,
            raft,
            reader,
            _dir: dir,
            ..
        } = self;
        // The store's sled handles live in these; release its directory lock before reopening.
        drop(raft);
        drop(reader);
        Node::start_in(id, settings, MESSAGE_BYTES_MAX, dir, &addr).await
    }

    pub fn member(&self) -> (NodeId, BasicNode) {
        (
            self.id,
            BasicNode {
                addr: self.addr.clone(),
            },
        )
    }

    /// Stops Raft and the peer server; a no-op when already stopped.
    pub async fn stop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        self.raft.shutdown().await.unwrap();
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        server.await.unwrap();
    }

    pub async fn wait_applied(&self, index: u64) {
        self.raft
            .wait(Some(WAIT))
            .applied_index_at_least(Some(index), "replicated")
            .await
            .unwrap_or_else(|e| panic!("node {} did not apply {index}: {e}", self.id));
    }
}

/// A Raft node `id` on a fresh store, with default settings, not initialized and served
/// nowhere: the caller serves it as the test needs. Keep the directory alive with it.
pub async fn lone_raft(id: NodeId) -> (Raft<TypeConfig>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (log, state_machine) = tally_store::open(dir.path()).unwrap();
    let config = Arc::new(raft_config(&RaftSettings::default()).unwrap());
    let network = TallyNetwork::new(id, NetworkConfig::default());
    let raft = Raft::new(id, config, network, log, state_machine)
        .await
        .unwrap();
    (raft, dir)
}

pub fn test_settings() -> RaftSettings {
    RaftSettings {
        cluster_name: "tally-raft-test".to_string(),
        election_timeout_ms_min: 600,
        election_timeout_ms_max: 1_200,
        heartbeat_interval_ms: 150,
        ..RaftSettings::default()
    }
}

pub async fn wait_for_leader(nodes: &[&Node], not: Option<NodeId>) -> NodeId {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for node in nodes {
            let metrics = node.raft.metrics().borrow().clone();
            if metrics.state == ServerState::Leader && Some(node.id) != not {
                return node.id;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Initializes the cluster of `nodes` from the first of them, waits for a leader and has it
/// commit the ledger's Init: the leader and Init's log index.
pub async fn form_cluster(nodes: &[Node]) -> (NodeId, u64) {
    let members: std::collections::BTreeMap<NodeId, BasicNode> =
        nodes.iter().map(Node::member).collect();
    nodes[0].raft.initialize(members).await.unwrap();
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), None).await;
    let index = by_id(nodes, leader)
        .raft
        .client_write(init_entry())
        .await
        .unwrap()
        .log_id
        .index;
    (leader, index)
}

/// Writes `count` asset entries from `from` on, each through whoever leads then: the last
/// one's log index.
pub async fn write_entries(nodes: &[Node], from: u64, count: u64) -> u64 {
    let mut last = 0;
    for n in from..from + count {
        let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), None).await;
        last = by_id(nodes, leader)
            .raft
            .client_write(asset_entry(n))
            .await
            .unwrap()
            .log_id
            .index;
    }
    last
}

pub fn init_entry() -> EncodedEntry {
    Entry {
        at_ms: 1_700_000_000_000,
        commands: vec![Command::Init(LedgerConfig {
            reporting_currency: AssetCode::new("USD").unwrap(),
            reporting_scale: 2,
            dedup_window_ms: DEDUP_WINDOW_MS_DEFAULT,
        })],
    }
    .into()
}

pub fn asset_entry(n: u64) -> EncodedEntry {
    Entry {
        at_ms: 1_700_000_000_000 + n,
        commands: vec![Command::CreateAsset(AssetSpec {
            code: AssetCode::new(format!("A{n}")).unwrap(),
            scale: (n % 10) as u32,
        })],
    }
    .into()
}

pub fn by_id(nodes: &[Node], id: NodeId) -> &Node {
    nodes.iter().find(|node| node.id == id).unwrap()
}

/// A usage batch entry of roughly 1.5 MiB: long ids and 16 full-length dimensions per event.
pub fn big_entry(n: u64) -> EncodedEntry {
    let dimensions: Vec<(Key, String)> = (0..16)
        .map(|d| {
            (
                Key::new(format!("dimension_{d:02}")).unwrap(),
                "v".repeat(256),
            )
        })
        .collect();
    let events = (0..330)
        .map(|e| UsageEvent {
            event_id: EventId::new(format!("{n:06}-{e:06}-{}", "x".repeat(110))).unwrap(),
            account: AccountId::new(format!("account-{}", "y".repeat(100))).unwrap(),
            meter: Meter::new("tokens").unwrap(),
            quantity: tally_core::Amount::from_i64(e as i64),
            dimensions: dimensions.clone().into(),
            occurred_at: 1_700_000_000_000,
            cost: None,
            hold: None,
        })
        .collect();
    Entry {
        at_ms: 1_700_000_000_000 + n,
        commands: vec![Command::UsageBatch {
            events,
            atomic: false,
        }],
    }
    .into()
}
