//! The client side of the peer network: openraft's `RaftNetworkFactory` over tonic.
//!
//! One lazily-connected HTTP/2 channel per peer, shared by every `PeerNetwork` openraft creates
//! for that peer (it creates a new one each time a replication stream restarts). A channel
//! connects on first use and reconnects by itself after the peer comes back.
//!
//! Error mapping, which decides how openraft reacts:
//! - the peer cannot be reached (refused, reset, invalid address, gRPC UNAVAILABLE):
//!   `Unreachable`, so openraft backs off (see [`PeerNetwork::backoff`]) instead of spinning;
//! - no answer within the RPC's time-to-live: `Timeout`;
//! - the peer's Raft answered with an error (e.g. it is shutting down, or a snapshot chunk
//!   does not match): `RemoteError` carrying the decoded openraft error;
//! - an AppendEntries request whose encoding exceeds the message limit: `PayloadTooLarge` with a
//!   hint of half the entries, so openraft retries with smaller batches (likewise when the peer
//!   refuses it as too large: OUT_OF_RANGE or RESOURCE_EXHAUSTED);
//! - anything else (undecodable reply, INTERNAL...): `NetworkError`.
//!
//! AppendEntries requests are cut to [`APPEND_ENTRIES_BYTES_TARGET`] (see there), and go over
//! one `AppendEntriesStream` call per `PeerNetwork` (request, reply, request, reply...), opened
//! on first use and dropped on any error, timeout or cancellation (the next request opens a
//! new one, so a late reply can never be taken for the answer to a later request). A peer that answers
//! UNIMPLEMENTED (an older build) gets unary `AppendEntries` calls from then on. Why: a unary
//! call sets up and tears down an HTTP/2 stream each time, and at one request at a time every
//! committed entry costs a follower two AppendEntries (the entry, then its commit).

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use serde::de::DeserializeOwned;
use tally_proto::v1;
use tally_proto::v1::raft_client::RaftClient;
use tally_store::{LogDurability, NodeId, TypeConfig};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::codec;
use crate::election::{PreVoteRequest, PreVoteResponse};
use crate::peer_health::PeerHealth;
use crate::stats::{Counters, NetworkStats};
use crate::MESSAGE_BYTES_MAX;

/// Bytes a `RaftRequest` adds around its payload (field tag and length), rounded up.
const ENVELOPE_BYTES: usize = 64;

/// The default of [`NetworkConfig::append_entries_bytes_target`]: an AppendEntries request carries the longest prefix of its entries that encodes within
/// this many bytes (at least one entry), and answers `PartialSuccess` up to the last entry it
/// carried; openraft sends the rest next. Why: openraft 0.9 gives every AppendEntries the
/// heartbeat interval as its deadline, follower fsync included, and a request of many MiB
/// (a few 8,190-event batches) misses it on a loaded machine, which makes the leader back off
/// and followers start elections. Small requests keep each round trip well inside it.
pub const APPEND_ENTRIES_BYTES_TARGET: usize = 2 * 1024 * 1024;

/// Transport settings of the peer network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// How long one TCP connect to a peer may take.
    pub connect_timeout_ms: u64,
    /// Upper bound of any one RPC, on top of the time-to-live openraft gives each call
    /// (the heartbeat interval for AppendEntries, `install_snapshot_timeout_ms` per chunk).
    pub request_timeout_ms_max: u64,
    /// Largest encoded request or reply; see [`MESSAGE_BYTES_MAX`].
    pub message_bytes_max: usize,
    /// An AppendEntries carries the longest prefix of its entries within this many bytes;
    /// see [`APPEND_ENTRIES_BYTES_TARGET`] (the default).
    pub append_entries_bytes_target: usize,
    /// HTTP/2 pings keep idle connections alive and notice a dead connection (a peer that
    /// vanished without closing it, a blackholed link) within this interval plus
    /// `connect_timeout_ms`; the channel then reconnects.
    pub keep_alive_interval_ms: u64,
    /// First and largest wait before retrying an unreachable peer (doubling in between).
    pub unreachable_backoff_ms_min: u64,
    pub unreachable_backoff_ms_max: u64,
    /// Where to dial a peer instead of the address the membership gives for it. Empty in
    /// production; the fault-injection tests point each directed link A->B at a proxy they
    /// control, so one link can be cut or slowed without touching the others.
    pub peer_dial_overrides: BTreeMap<NodeId, String>,
}

impl NetworkConfig {
    /// The address to dial for peer `target` whose membership address is `membership_addr`.
    pub fn dial_addr<'a>(&'a self, target: NodeId, membership_addr: &'a str) -> &'a str {
        self.peer_dial_overrides
            .get(&target)
            .map(String::as_str)
            .unwrap_or(membership_addr)
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            connect_timeout_ms: 1_000,
            request_timeout_ms_max: 30_000,
            message_bytes_max: MESSAGE_BYTES_MAX,
            append_entries_bytes_target: APPEND_ENTRIES_BYTES_TARGET,
            keep_alive_interval_ms: 1_000,
            unreachable_backoff_ms_min: 100,
            unreachable_backoff_ms_max: 1_000,
            peer_dial_overrides: BTreeMap::new(),
        }
    }
}

/// How long an AppendEntries without entries waits for this node's own log sync before it
/// tells followers less than the commit (see [`TallyNetwork::with_commit_bound`]): a sync
/// takes well under a millisecond on a healthy disk.
pub const COMMIT_SYNC_WAIT_MAX: Duration = Duration::from_millis(20);

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// The `http://host:port` URI of a peer address given as `host:port` (or already a URI).
fn peer_uri(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// openraft's network factory for Tally: cheap to clone, shares channels across clones.
#[derive(Clone)]
pub struct TallyNetwork {
    /// This node, named in `Timeout` errors.
    node_id: NodeId,
    config: NetworkConfig,
    /// One channel per peer, with the address it was built for (a peer re-added with a new
    /// address gets a new channel).
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
    counters: Arc<Counters>,
    health: Arc<PeerHealth>,
    /// Bounds the commit index sent to followers; see [`Self::with_commit_bound`].
    commit_bound: Option<LogDurability>,
}

impl TallyNetwork {
    pub fn new(node_id: NodeId, config: NetworkConfig) -> Self {
        TallyNetwork {
            node_id,
            config,
            channels: Arc::new(Mutex::new(HashMap::new())),
            counters: Arc::new(Counters::default()),
            health: Arc::new(PeerHealth::default()),
            commit_bound: None,
        }
    }

    /// The commit index this node sends to followers never passes what `durability` (this
    /// node's log) has on disk. Needed with `LogStore::sync_own_appends_in_parallel`:
    /// openraft then counts the leader's own entries towards a commit before their sync, and
    /// a follower told of that commit could apply an entry the cluster may still lose. An
    /// AppendEntries that carries no entries (one that is there to tell the commit) waits up
    /// to [`COMMIT_SYNC_WAIT_MAX`] for the sync instead of telling less.
    pub fn with_commit_bound(mut self, durability: LogDurability) -> Self {
        self.commit_bound = Some(durability);
        self
    }

    /// What the network did so far, across all peers and all clones of this factory.
    pub fn stats(&self) -> NetworkStats {
        self.counters.snapshot()
    }

    fn channel(&self, target: NodeId, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().expect("peer channel map poisoned");
        if let Some((known_addr, channel)) = channels.get(&target) {
            if known_addr == addr {
                return Ok(channel.clone());
            }
        }
        let endpoint = Endpoint::from_shared(peer_uri(addr))
            .map_err(|error| format!("invalid peer address {addr:?} of node {target}: {error}"))?
            .connect_timeout(ms(self.config.connect_timeout_ms))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(ms(self.config.keep_alive_interval_ms))
            .keep_alive_timeout(ms(self.config.connect_timeout_ms.max(1_000)))
            .keep_alive_while_idle(true)
            .initial_stream_window_size(crate::PEER_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(crate::PEER_CONNECTION_WINDOW_BYTES);
        let channel = endpoint.connect_lazy();
        channels.insert(target, (addr.to_string(), channel.clone()));
        Ok(channel)
    }

    /// Asks voter `target` (at `addr`, its membership address) whether it would grant this node
    /// a vote now (see [`crate::election`]), within `timeout`. A peer that does not know the
    /// RPC (a build from before pre-vote) grants it: it would have voted as before.
    pub(crate) async fn ask_pre_vote(
        &self,
        target: NodeId,
        addr: &str,
        request: &PreVoteRequest,
        timeout: Duration,
    ) -> Result<PreVoteResponse, String> {
        let addr = self.config.dial_addr(target, addr).to_string();
        let channel = self.channel(target, &addr)?;
        let data = codec::encode("pre-vote", request).map_err(|e| e.to_string())?;
        let mut call = tonic::Request::new(v1::RaftRequest { data });
        name_target(&mut call, target);
        call.set_timeout(timeout);
        let mut client = RaftClient::new(channel);
        let reply = match tokio::time::timeout(timeout, client.pre_vote(call)).await {
            Err(_) => return Err(format!("no answer within {} ms", timeout.as_millis())),
            Ok(Err(status)) if status.code() == Code::Unimplemented => {
                return Ok(PreVoteResponse::grant())
            }
            Ok(Err(status)) => return Err(status.message().to_string()),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        match reply.result {
            Some(v1::raft_reply::Result::Ok(data)) => {
                codec::decode("pre-vote response", &data).map_err(|e| e.to_string())
            }
            _ => Err("an answer without a pre-vote response".to_string()),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for TallyNetwork {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerNetwork {
        let addr = self.config.dial_addr(target, &node.addr).to_string();
        let client = self.channel(target, &addr).map(|channel| {
            RaftClient::new(channel)
                .max_decoding_message_size(self.config.message_bytes_max)
                .max_encoding_message_size(self.config.message_bytes_max)
        });
        if let Err(error) = &client {
            tracing::error!(target_node = target, %error, "cannot build a client for peer");
        }
        PeerNetwork {
            node_id: self.node_id,
            target,
            target_node: node.clone(),
            addr: Arc::from(node.addr.as_str()),
            client,
            append_stream: None,
            streaming: true,
            config: self.config.clone(),
            counters: self.counters.clone(),
            health: self.health.clone(),
            commit_bound: self.commit_bound.clone(),
        }
    }
}

/// The connection to one peer, as openraft uses it.
pub struct PeerNetwork {
    node_id: NodeId,
    target: NodeId,
    target_node: BasicNode,
    /// `target_node`'s address, for [`PeerHealth`]'s lines.
    addr: Arc<str>,
    /// `Err` when the peer's address is not a valid URI: every call is then `Unreachable`.
    client: Result<RaftClient<Channel>, String>,
    /// The open `AppendEntriesStream` call, if any.
    append_stream: Option<AppendStream>,
    /// False once the peer answered UNIMPLEMENTED to `AppendEntriesStream`.
    streaming: bool,
    config: NetworkConfig,
    counters: Arc<Counters>,
    health: Arc<PeerHealth>,
    commit_bound: Option<LogDurability>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// One open `AppendEntriesStream` call: requests go in through `requests`, and each is
/// answered by the next item of `replies`.
struct AppendStream {
    requests: tokio::sync::mpsc::Sender<v1::RaftRequest>,
    replies: tonic::Streaming<v1::RaftReply>,
}

/// Sends one AppendEntries request on `stream` (opening it first if it is `None`) and waits
/// for its reply. Takes `data` only once the stream is open.
///
/// The stream is taken out of `stream` while in use and put back only once its reply is read:
/// a call that fails, or that is cancelled in between (openraft runs its own timer to the same
/// deadline around the whole call, and dropped the future when it fired first), takes the
/// stream with it, so a reply left unread can never be taken for a later request's.
async fn exchange_on_stream(
    client: &mut RaftClient<Channel>,
    target: NodeId,
    stream: &mut Option<AppendStream>,
    data: &mut Option<Vec<u8>>,
) -> Result<v1::RaftReply, tonic::Status> {
    let mut open = match stream.take() {
        Some(open) => open,
        None => {
            let (requests, receiver) = tokio::sync::mpsc::channel(1);
            let mut request =
                tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
            name_target(&mut request, target);
            let replies = client.append_entries_stream(request).await?.into_inner();
            AppendStream { requests, replies }
        }
    };
    let data = data.take().expect("one request per exchange");
    open.requests
        .send(v1::RaftRequest { data })
        .await
        .map_err(|_| tonic::Status::unavailable("the append stream to the peer closed"))?;
    let reply = open
        .replies
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unavailable("the peer closed the append stream"))?;
    *stream = Some(open);
    Ok(reply)
}

/// Names the node `request` is meant for (see [`crate::TARGET_NODE_METADATA_KEY`]).
fn name_target<T>(request: &mut tonic::Request<T>, target: NodeId) {
    request.metadata_mut().insert(
        crate::TARGET_NODE_METADATA_KEY,
        tonic::metadata::MetadataValue::from(target),
    );
}

impl PeerNetwork {
    fn unreachable<E: Error>(
        &self,
        reason: impl Into<String>,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        RPCError::Unreachable(Unreachable::new(&AnyError::error(reason.into())))
    }

    fn network_error<E: Error>(
        &self,
        reason: impl Into<String>,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        RPCError::Network(NetworkError::new(&AnyError::error(reason.into())))
    }

    fn timeout<E: Error>(
        &self,
        action: RPCTypes,
        ttl: Duration,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        RPCError::Timeout(Timeout {
            action,
            id: self.node_id,
            target: self.target,
            timeout: ttl,
        })
    }

    /// The time one request may take: openraft gives AppendEntries only the heartbeat interval
    /// (a follower's fsync included), so use the whole budget; openraft's own timer at the
    /// same deadline reports the same Timeout if it fires first.
    fn ttl(&self, option: &RPCOption) -> Duration {
        option
            .hard_ttl()
            .min(ms(self.config.request_timeout_ms_max))
    }

    /// Sends one already-encoded request and decodes the reply (see [`Self::exchange`]), and
    /// tells [`PeerHealth`] whether the peer answered, also when openraft's own timer gave up
    /// on the request first (it drops this future at the deadline).
    async fn call<Resp, E>(
        &mut self,
        action: RPCTypes,
        data: Vec<u8>,
        option: &RPCOption,
        shrink_to_entries: Option<u64>,
    ) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let ttl = self.ttl(option);
        let mut pending = Pending {
            health: self.health.clone(),
            target: self.target,
            addr: self.addr.clone(),
            started: std::time::Instant::now(),
            ttl,
            action,
            finished: false,
        };
        let result = self.exchange(action, data, ttl, shrink_to_entries).await;
        pending.finished = true;
        let now = std::time::Instant::now();
        match &result {
            // A refusal as too large is an answer: the peer is there.
            Ok(_) | Err(RPCError::PayloadTooLarge(_)) => {
                self.health.answered(self.target, &pending.addr, now)
            }
            Err(error) => self
                .health
                .failed(self.target, &pending.addr, &error.to_string(), now),
        };
        result
    }

    /// Sends one already-encoded request and decodes the reply, within `ttl` (see
    /// [`Self::ttl`]). `shrink_to_entries` is the batch size to ask for when the peer refuses
    /// the request as too large (appends only).
    async fn exchange<Resp, E>(
        &mut self,
        action: RPCTypes,
        data: Vec<u8>,
        ttl: Duration,
        shrink_to_entries: Option<u64>,
    ) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let target = self.target;
        let client = match &mut self.client {
            Ok(client) => client,
            Err(reason) => {
                let reason = reason.clone();
                return Err(self.unreachable(reason));
            }
        };
        let deadline = tokio::time::Instant::now() + ttl;
        let mut data = Some(data);
        if action == RPCTypes::AppendEntries && self.streaming {
            let stream = &mut self.append_stream;
            let result = tokio::time::timeout_at(
                deadline,
                exchange_on_stream(client, target, stream, &mut data),
            )
            .await;
            if !matches!(result, Ok(Ok(_))) {
                // The reply to this request may still come: never read it as another's.
                *stream = None;
            }
            match result {
                Ok(Err(status)) if status.code() == Code::Unimplemented && data.is_some() => {
                    // An older peer (the stream never opened, the request is still here): unary
                    // calls from now on, starting with this one.
                    tracing::info!(
                        target_node = target,
                        "peer does not serve AppendEntriesStream; using unary AppendEntries"
                    );
                    self.streaming = false;
                }
                other => return self.answer(action, ttl, shrink_to_entries, other),
            }
        }
        let mut request = tonic::Request::new(v1::RaftRequest {
            data: data.take().expect("not sent yet"),
        });
        // The peer stops working on it once the caller has given up.
        request.set_timeout(ttl);
        name_target(&mut request, target);
        let call = async {
            match action {
                RPCTypes::AppendEntries => client.append_entries(request).await,
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let result = tokio::time::timeout_at(deadline, call)
            .await
            .map(|reply| reply.map(tonic::Response::into_inner));
        self.answer(action, ttl, shrink_to_entries, result)
    }

    /// Maps the outcome of one exchange (timed out, a gRPC status, or a reply) to openraft's
    /// result, decoding the reply.
    #[allow(clippy::result_large_err)] // openraft's error type, which the network must return
    fn answer<Resp, E>(
        &self,
        action: RPCTypes,
        ttl: Duration,
        shrink_to_entries: Option<u64>,
        result: Result<Result<v1::RaftReply, tonic::Status>, tokio::time::error::Elapsed>,
    ) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let target = self.target;
        let reply = match result {
            Err(_elapsed) => return Err(self.timeout(action, ttl)),
            Ok(Err(status)) => {
                return Err(match (status.code(), shrink_to_entries) {
                    // A peer with a lower decode limit than ours (tonic answers OUT_OF_RANGE
                    // for a message above its limit): openraft retries with fewer entries.
                    (Code::ResourceExhausted | Code::OutOfRange, Some(entries)) => {
                        RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries))
                    }
                    // A node refusing a request meant for another id (a wrong address in the
                    // membership) answers the same until an operator fixes it: back off as
                    // for an unreachable peer, not retry at once (thousands a second).
                    (Code::Unavailable | Code::FailedPrecondition, _) => {
                        self.unreachable(format!("peer {target}: {}", status.message()))
                    }
                    (Code::DeadlineExceeded | Code::Cancelled, _) => self.timeout(action, ttl),
                    (code, _) => self.network_error(format!(
                        "peer {target} answered {code:?}: {}",
                        status.message()
                    )),
                });
            }
            Ok(Ok(reply)) => reply,
        };
        match reply.result {
            Some(v1::raft_reply::Result::Ok(bytes)) => {
                codec::decode::<Resp>(action_name(action), &bytes)
                    .map_err(|error| self.network_error(error.to_string()))
            }
            Some(v1::raft_reply::Result::Error(bytes)) => {
                let remote: RaftError<NodeId, E> = codec::decode("remote raft error", &bytes)
                    .map_err(|error| self.network_error(error.to_string()))?;
                Err(RPCError::RemoteError(RemoteError::new_with_node(
                    target,
                    self.target_node.clone(),
                    remote,
                )))
            }
            None => Err(self.network_error(format!("peer {target} sent an empty reply"))),
        }
    }
}

/// One request on its way, for [`PeerHealth`]: dropped unfinished near its deadline, it was
/// given up by openraft's own timer (which fires first, having started first), and counts as
/// a timeout; dropped earlier, it was cancelled for another reason and counts as nothing.
struct Pending {
    health: Arc<PeerHealth>,
    target: NodeId,
    addr: Arc<str>,
    started: std::time::Instant,
    ttl: Duration,
    action: RPCTypes,
    finished: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.finished || self.started.elapsed() < self.ttl.mul_f64(0.9) {
            return;
        }
        let reason = format!(
            "no answer to {} within {} ms",
            action_name(self.action),
            self.ttl.as_millis()
        );
        self.health
            .failed(self.target, &self.addr, &reason, std::time::Instant::now());
    }
}

fn action_name(action: RPCTypes) -> &'static str {
    match action {
        RPCTypes::AppendEntries => "append entries",
        RPCTypes::Vote => "vote",
        RPCTypes::InstallSnapshot => "install snapshot",
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        if let Some(bound) = &self.commit_bound {
            rpc.leader_commit = if rpc.entries.is_empty() {
                bound
                    .bound_commit_within(rpc.leader_commit, COMMIT_SYNC_WAIT_MAX)
                    .await
            } else {
                // Entries go out at once; the commit follows with the next request.
                bound.bound_commit(rpc.leader_commit)
            };
        }
        let asked = rpc.entries.len();
        let carried = codec::prefix_within(&rpc.entries, self.config.append_entries_bytes_target);
        let partial = (carried < asked).then(|| {
            self.counters.record_cut();
            rpc.entries.truncate(carried);
            rpc.entries.last().map(|entry| entry.log_id)
        });
        let entries = rpc.entries.len() as u64;
        // Room for the protobuf envelope around the bytes, so the gRPC message stays within
        // the limit both ends enforce.
        let bytes_max = self.config.message_bytes_max.saturating_sub(ENVELOPE_BYTES);
        let (request_bytes, result) = match codec::encode_within("append entries", &rpc, bytes_max)
        {
            Ok(data) => {
                let request_bytes = data.len();
                let shrink_to_entries = (entries > 1).then_some(entries / 2);
                let result = self
                    .call(RPCTypes::AppendEntries, data, &option, shrink_to_entries)
                    .await;
                (request_bytes, result)
            }
            // Too large: openraft retries at once with at most half the entries.
            Err(error) if error.is_size_limit() && entries > 1 => (
                0,
                Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(entries / 2),
                )),
            ),
            Err(error) if error.is_size_limit() => {
                // One entry alone is above the limit: it can never be replicated. The proposer
                // bounds entry size to prevent exactly this; say so loudly.
                tracing::error!(
                    limit = bytes_max,
                    "a single log entry exceeds the peer message limit"
                );
                let reason = format!("one log entry encodes to more than the peer message limit of {bytes_max} bytes");
                (0, Err(self.network_error(reason)))
            }
            Err(error) => (0, Err(self.network_error(error.to_string()))),
        };
        self.counters
            .record(RPCTypes::AppendEntries, request_bytes, &result);
        match (result, partial) {
            (Ok(AppendEntriesResponse::Success), Some(last_carried)) => {
                Ok(AppendEntriesResponse::PartialSuccess(last_carried))
            }
            (result, _) => result,
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let data = codec::encode("install snapshot", &rpc)
            .map_err(|e| self.network_error(e.to_string()))?;
        let request_bytes = data.len();
        let result = self
            .call(RPCTypes::InstallSnapshot, data, &option, None)
            .await;
        self.counters
            .record(RPCTypes::InstallSnapshot, request_bytes, &result);
        result
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        let data = codec::encode("vote", &rpc).map_err(|e| self.network_error(e.to_string()))?;
        let request_bytes = data.len();
        let result = self.call(RPCTypes::Vote, data, &option, None).await;
        self.counters.record(RPCTypes::Vote, request_bytes, &result);
        result
    }

    /// Exponential backoff from `unreachable_backoff_ms_min` to `unreachable_backoff_ms_max`:
    /// a restarted peer is found again within the maximum, a dead one costs little.
    fn backoff(&self) -> Backoff {
        let min = self.config.unreachable_backoff_ms_min.max(1);
        let max = self.config.unreachable_backoff_ms_max.max(min);
        Backoff::new(
            std::iter::successors(Some(min), move |previous| Some((previous * 2).min(max))).map(ms),
        )
    }
}
