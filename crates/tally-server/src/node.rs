//! [`NodeContext`]: what every request handler of one node shares: Raft, the store's read
//! handle, the proposer, metrics, and what the node knows about where the leader is.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{RaftMetrics, ServerState};
use tally_proto::v1;
use tally_proto::TallyError;
use tally_raft::LeaderContact;
use tally_store::{LedgerReader, NodeId, TypeConfig};
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

use crate::config::Config;
use crate::metrics::{Metrics, RaftGauges};
use crate::proposer::{ProposeError, Proposer};

pub type Raft = openraft::Raft<TypeConfig>;

/// Metadata key a node sets on a request it forwards to the leader: the leader serves it
/// itself and never forwards it again, so a request cannot bounce between nodes.
pub const FORWARDED_METADATA_KEY: &str = "tally-forwarded-by";

/// Timeout to connect to a peer when forwarding.
const PEER_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// HTTP/2 ping interval and timeout of the connection a follower forwards writes and read-index
/// requests over to the leader.
const FORWARD_KEEP_ALIVE_MS: u64 = 1_000;

pub struct NodeContext {
    pub config: Config,
    pub raft: Raft,
    pub reader: LedgerReader,
    pub proposer: Proposer,
    pub metrics: Arc<Metrics>,
    /// Client addresses of nodes: from `initial_members`, and learned from leaders' replies.
    client_addrs: Mutex<BTreeMap<NodeId, String>>,
    /// One lazily connected channel per peer address, reused for forwarding.
    peer_channels: Mutex<BTreeMap<String, Channel>>,
    /// When this node last accepted a leader's message, and the highest commit index it
    /// heard of from a leader (AppendEntries, read barriers).
    pub leader_contact: Arc<LeaderContact>,
    /// Turns true when the node starts shutting down (long-lived streams end on it).
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Reads waiting for the next read-index round (see `read_barrier`).
    read_rounds: Mutex<ReadRounds>,
}

#[derive(Default)]
struct ReadRounds {
    waiting: Vec<oneshot::Sender<Result<u64, TallyError>>>,
    running: bool,
}

impl NodeContext {
    pub fn new(
        config: Config,
        raft: Raft,
        reader: LedgerReader,
        proposer: Proposer,
        metrics: Arc<Metrics>,
        leader_contact: Arc<LeaderContact>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let mut client_addrs: BTreeMap<NodeId, String> = config
            .initial_members
            .iter()
            .map(|member| (member.id, member.client_addr.clone()))
            .collect();
        client_addrs.insert(config.node_id, config.advertised_client_addr());
        NodeContext {
            config,
            raft,
            reader,
            proposer,
            metrics,
            client_addrs: Mutex::new(client_addrs),
            peer_channels: Mutex::new(BTreeMap::new()),
            leader_contact,
            shutdown,
            read_rounds: Mutex::new(ReadRounds::default()),
        }
    }

    /// A receiver that turns true when the node starts shutting down.
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.clone()
    }

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    pub fn raft_metrics(&self) -> RaftMetrics<NodeId, openraft::BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    pub fn leader_id(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader && metrics.current_leader == Some(self.node_id())
    }

    /// Whether `Init` has been applied on this node.
    pub fn ledger_initialized(&self) -> bool {
        self.reader
            .with_state(tally_core::LedgerState::is_initialized)
    }

    pub fn applied_index(&self) -> u64 {
        self.reader
            .last_applied()
            .map(|log_id| log_id.index)
            .unwrap_or(0)
    }

    /// The client address of node `id`, when this node knows it.
    pub fn client_addr_of(&self, id: NodeId) -> Option<String> {
        self.client_addrs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn learn_client_addr(&self, id: NodeId, addr: &str) {
        let mut addrs = self.client_addrs.lock().unwrap_or_else(|p| p.into_inner());
        if addrs.get(&id).map(String::as_str) != Some(addr) {
            addrs.insert(id, addr.to_string());
        }
    }

    /// Where to dial node `id`'s peer listener: its `raft.peer_dial_overrides` entry (tests
    /// route links through a fault proxy), else its Raft address from the membership.
    pub fn peer_addr_of(&self, id: NodeId) -> Option<String> {
        if let Some(addr) = self.config.raft.peer_dial_overrides.get(&id.to_string()) {
            return Some(addr.clone());
        }
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|node| node.addr.clone())
    }

    /// `not_leader` naming the leader when this node knows it.
    pub fn not_leader_error(&self) -> TallyError {
        let leader = self.leader_id().filter(|id| *id != self.node_id());
        TallyError::not_leader(leader, leader.and_then(|id| self.client_addr_of(id)))
    }

    /// A channel to the leader's peer listener (which serves `Ledger` and `Admin` too), when
    /// another node is the leader.
    pub fn leader_channel(&self) -> Result<(NodeId, Channel), TallyError> {
        let Some(leader) = self.leader_id().filter(|id| *id != self.node_id()) else {
            return Err(self.not_leader_error());
        };
        let Some(addr) = self.peer_addr_of(leader) else {
            return Err(self.not_leader_error());
        };
        let mut channels = self.peer_channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(&addr) {
            return Ok((leader, channel.clone()));
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|error| {
                TallyError::internal(format!(
                    "bad peer address {addr:?} of node {leader}: {error}"
                ))
            })?
            .connect_timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            // A leader that went silent without closing its connections (paused, frozen, cut
            // off) is noticed within about two seconds, failing the requests forwarded to it
            // (outcome unknown: the client retries, and finds the new leader), instead of
            // holding them for their whole deadline.
            .http2_keep_alive_interval(Duration::from_millis(FORWARD_KEEP_ALIVE_MS))
            .keep_alive_timeout(Duration::from_millis(FORWARD_KEEP_ALIVE_MS))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        channels.insert(addr, channel.clone());
        Ok((leader, channel))
    }

    /// The request deadline: the server's limit (tonic also applies the client's `grpc-timeout`).
    pub fn request_deadline(&self) -> Duration {
        Duration::from_millis(self.config.limits.request_deadline_ms)
    }

    /// Makes the applied state at least as fresh as every write acknowledged before this call
    /// (a read index): on the leader by confirming leadership with a quorum (openraft's
    /// `get_read_log_id`, the first half of `ensure_linearizable`), on a follower by asking the
    /// leader for its linearizable applied index; then waiting until this node has applied that
    /// far. Everything under the request deadline, since openraft's confirmation has no timeout
    /// of its own.
    ///
    /// Concurrent reads share confirmation rounds: a read joins the next round that starts
    /// after it arrived (never one already under way, which could predate a write it must see),
    /// so a burst of reads costs one quorum round trip, not one each.
    pub async fn read_barrier(self: &Arc<Self>) -> Result<(), TallyError> {
        let deadline = self.request_deadline();
        let (sender, receiver) = oneshot::channel();
        let start_rounds = {
            let mut rounds = self.read_rounds.lock().unwrap_or_else(|p| p.into_inner());
            rounds.waiting.push(sender);
            !std::mem::replace(&mut rounds.running, true)
        };
        if start_rounds {
            let ctx = self.clone();
            tokio::spawn(async move { ctx.run_read_rounds().await });
        }
        let index = match tokio::time::timeout(deadline, receiver).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(TallyError::unavailable("the read barrier was abandoned")),
            Err(_) => {
                return Err(TallyError::new(
                    tally_proto::ErrorCode::DeadlineExceeded,
                    "could not confirm a read index with the leader before the deadline",
                ))
            }
        };
        if self.applied_index() >= index {
            return Ok(());
        }
        self.raft
            .wait(Some(deadline))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map(|_| ())
            .map_err(|error| {
                TallyError::new(
                    tally_proto::ErrorCode::DeadlineExceeded,
                    format!(
                        "this node did not apply up to the read index {index} in time: {error}"
                    ),
                )
            })
    }

    /// Runs confirmation rounds while reads wait; each round answers every read that was
    /// waiting when it started.
    async fn run_read_rounds(self: Arc<Self>) {
        loop {
            let waiters = {
                let mut rounds = self.read_rounds.lock().unwrap_or_else(|p| p.into_inner());
                if rounds.waiting.is_empty() {
                    rounds.running = false;
                    return;
                }
                std::mem::take(&mut rounds.waiting)
            };
            let result = self.read_index().await;
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }

    /// One confirmation round: the log index a linearizable read must wait for.
    async fn read_index(&self) -> Result<u64, TallyError> {
        let deadline = self.request_deadline();
        if self.is_leader() {
            return match tokio::time::timeout(deadline, self.raft.get_read_log_id()).await {
                Ok(Ok((read_log_id, _applied))) => {
                    Ok(read_log_id.map(|log_id| log_id.index).unwrap_or(0))
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "confirming leadership for a read failed");
                    Err(self.not_leader_error())
                }
                Err(_) => Err(TallyError::new(
                    tally_proto::ErrorCode::DeadlineExceeded,
                    "could not confirm leadership with a quorum before the deadline",
                )),
            };
        }
        let (leader, channel) = self.leader_channel()?;
        let mut client = v1::ledger_client::LedgerClient::new(channel);
        let mut request = tonic::Request::new(v1::ListAssetsRequest {
            consistency: v1::Consistency::Linearizable as i32,
        });
        request.set_timeout(deadline);
        self.mark_forwarded(&mut request);
        let reply = client
            .list_assets(request)
            .await
            .map_err(|status| TallyError::from_status(&status))?;
        let Some(read) = reply.get_ref().read.as_ref() else {
            return Err(TallyError::internal(format!(
                "leader {leader} sent no read info"
            )));
        };
        self.leader_contact.learned_commit(read.applied_index);
        Ok(read.applied_index)
    }

    /// Marks a request as forwarded by this node.
    pub fn mark_forwarded<T>(&self, request: &mut tonic::Request<T>) {
        request.metadata_mut().insert(
            FORWARDED_METADATA_KEY,
            tonic::metadata::MetadataValue::from(self.node_id()),
        );
    }

    /// `ReadInfo` for a read of the state at `applied_index`.
    pub fn read_info(
        &self,
        consistency: v1::Consistency,
        applied_index: u64,
        ledger_time_ms: u64,
    ) -> v1::ReadInfo {
        v1::ReadInfo {
            consistency: consistency as i32,
            node_id: self.node_id(),
            applied_index,
            leader_commit_index: self.commit_index().max(applied_index),
            ledger_time_ms,
            leader_id: self.leader_id(),
        }
    }

    /// The highest index this node knows is committed: on the leader, the index a quorum of
    /// voters has matched; elsewhere the applied index, or what a read barrier or a leader's
    /// AppendEntries named.
    pub fn commit_index(&self) -> u64 {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let applied = metrics.last_applied.map(|log_id| log_id.index).unwrap_or(0);
        let mut commit = applied.max(self.leader_contact.leader_commit());
        if let Some(replication) = &metrics.replication {
            let membership = metrics.membership_config.membership();
            // During a membership change an index is committed once a quorum of EACH of the
            // joint configurations holds it: the smallest of their quorum indexes.
            let mut joint: Option<u64> = None;
            for voters in membership.get_joint_config() {
                let mut matched: Vec<u64> = voters
                    .iter()
                    .map(|id| {
                        if *id == self.node_id() {
                            metrics.last_log_index.unwrap_or(0)
                        } else {
                            replication
                                .get(id)
                                .cloned()
                                .flatten()
                                .map(|log_id| log_id.index)
                                .unwrap_or(0)
                        }
                    })
                    .collect();
                if matched.is_empty() {
                    continue;
                }
                matched.sort_unstable_by(|a, b| b.cmp(a));
                let quorum_index = matched[voters.len() / 2];
                joint = Some(joint.map_or(quorum_index, |j| j.min(quorum_index)));
            }
            if let Some(joint) = joint {
                commit = commit.max(joint.min(metrics.last_log_index.unwrap_or(0)));
            }
        }
        commit
    }

    pub fn gauges(&self) -> RaftGauges {
        let metrics = self.raft_metrics();
        RaftGauges {
            node_id: self.node_id(),
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            is_leader: metrics.state == ServerState::Leader,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            commit_index: self.commit_index(),
            applied_index: metrics.last_applied.map(|log_id| log_id.index).unwrap_or(0),
            snapshot_index: metrics.snapshot.map(|log_id| log_id.index),
            members: metrics.membership_config.membership().nodes().count(),
            ledger_initialized: self.ledger_initialized(),
        }
    }

    /// Maps a proposer failure to the API error.
    pub fn propose_error(&self, error: ProposeError) -> TallyError {
        match error {
            ProposeError::NotLeader { .. } => self.not_leader_error(),
            ProposeError::Overloaded { .. } | ProposeError::ShuttingDown => {
                TallyError::unavailable(error.to_string())
            }
            ProposeError::Encode { .. } => TallyError::internal(error.to_string()),
            ProposeError::Unknown { .. } => TallyError::new(
                tally_proto::ErrorCode::DeadlineExceeded,
                format!("{error}; retry with the same ids, the ledger settles each event once"),
            ),
        }
    }
}
