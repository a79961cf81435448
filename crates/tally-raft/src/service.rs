//! The server side of the peer network: the generated `Raft` gRPC service, dispatching each
//! decoded request to this node's `openraft::Raft`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest, VoteResponse,
};
use openraft::Vote;
use serde::Serialize;
use tally_proto::v1;
use tally_proto::v1::raft_server::RaftServer;
use tally_store::{NodeId, TypeConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::codec;
use crate::election::{PreVoteRequest, PreVoteResponse};

/// What this node last heard from a leader: when a leader's AppendEntries (a heartbeat
/// included) or snapshot chunk was last accepted, and the highest commit index a leader named.
/// openraft's metrics say neither on a follower, and a learner never stands for election, so
/// without this a learner whose leader died, or a node removed from the cluster, goes on
/// naming its last leader as if all were well.
#[derive(Debug)]
pub struct LeaderContact {
    since: Instant,
    /// Milliseconds after `since`, plus one, of the last contact; 0 for none yet.
    last: AtomicU64,
    commit: AtomicU64,
    /// The vote of the leader whose message was last accepted: a message from it counts as
    /// contact when it arrives, not only once a long append of it is written.
    leader_vote: Mutex<Option<Vote<NodeId>>>,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact {
            since: Instant::now(),
            last: AtomicU64::new(0),
            commit: AtomicU64::new(0),
            leader_vote: Mutex::new(None),
        }
    }
}

impl LeaderContact {
    /// A message from `vote` arrived: contact, if that is the leader accepted last.
    fn arrived(&self, vote: &Vote<NodeId>) {
        let known = self
            .leader_vote
            .lock()
            .map(|v| *v == Some(*vote))
            .unwrap_or(false);
        if known {
            self.heard(None);
        }
    }

    /// A message from `vote` was accepted.
    fn accepted(&self, vote: Vote<NodeId>, commit: Option<u64>) {
        if let Ok(mut leader_vote) = self.leader_vote.lock() {
            *leader_vote = Some(vote);
        }
        self.heard(commit);
    }

    fn heard(&self, commit: Option<u64>) {
        let now = self.since.elapsed().as_millis() as u64 + 1;
        self.last.fetch_max(now, Ordering::Relaxed);
        if let Some(commit) = commit {
            self.commit.fetch_max(commit, Ordering::Relaxed);
        }
    }

    /// Milliseconds since a leader's message was last accepted; `None` if none was yet.
    pub fn millis_since(&self) -> Option<u64> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            last => Some((self.since.elapsed().as_millis() as u64 + 1).saturating_sub(last)),
        }
    }

    /// Notes a commit index learned from the leader some other way (a read barrier's answer).
    pub fn learned_commit(&self, index: u64) {
        self.commit.fetch_max(index, Ordering::Relaxed);
    }

    /// The highest commit index heard of from a leader: named in an accepted AppendEntries or
    /// learned by [`Self::learned_commit`] (0 for none).
    pub fn leader_commit(&self) -> u64 {
        self.commit.load(Ordering::Relaxed)
    }
}

/// Empty snapshots from the leader for this long are worth a warning: it cannot assemble one.
const EMPTY_SNAPSHOTS_WARN_AFTER: Duration = Duration::from_secs(60);

/// Since when the leader has sent only empty snapshots, and when that was last a warning.
type EmptySnapshots = (Instant, Option<Instant>);

/// Serves this node's Raft to its peers.
#[derive(Clone)]
pub struct RaftService {
    raft: openraft::Raft<TypeConfig>,
    node_id: NodeId,
    contact: Arc<LeaderContact>,
    /// Since when the leader has sent only empty snapshots, and when that was last logged as
    /// a warning; `None` once a real one arrives.
    empty_snapshots: Arc<Mutex<Option<EmptySnapshots>>>,
}

impl RaftService {
    pub fn new(raft: openraft::Raft<TypeConfig>) -> Self {
        let node_id = raft.metrics().borrow().id;
        RaftService {
            raft,
            node_id,
            contact: Arc::default(),
            empty_snapshots: Arc::default(),
        }
    }

    /// A refusal of `rpc` where granting it could elect a node without entries the cluster
    /// committed, which openraft's own check (the candidate's log is at least as long as this
    /// node's) misses when this node's log is short for a reason of its own:
    ///
    /// - Its store is empty (no log past the cluster's first entry, no snapshot): a voter
    ///   restarted on an empty data directory (a replaced disk, a mount that failed, a
    ///   directory moved away without removing the node first) has forgotten what it
    ///   acknowledged and whom it voted for, and any log is at least as long as none. It votes
    ///   only for a candidate whose log holds nothing past the cluster's first entry (a new
    ///   cluster forming), and otherwise waits to be caught up by a leader the others elected.
    /// - The candidate's log ends before the highest commit index a leader has named to this
    ///   node: entries up to that index are committed, so a leader must hold them. This covers
    ///   a node still catching up after losing its data (it holds part of the log, so it is not
    ///   empty, but less than it once acknowledged) and costs no legitimate candidate anything.
    fn vote_refusal(&self, rpc: &VoteRequest<NodeId>) -> Option<VoteResponse<NodeId>> {
        let candidate_index = rpc.last_log_id.map_or(0, |log_id| log_id.index);
        let reason = self.refusal_reason(candidate_index)?;
        tracing::warn!(
            candidate = rpc.vote.leader_id().voted_for(),
            candidate_last_log_index = candidate_index,
            known_commit = self.contact.leader_commit(),
            "refusing to vote: {reason}"
        );
        Some(VoteResponse {
            vote: self.raft.metrics().borrow().vote,
            vote_granted: false,
            last_log_id: None,
        })
    }

    /// Why Tally's own rules (see [`Self::vote_refusal`]) refuse a candidate whose log ends at
    /// `candidate_index`, if they do.
    fn refusal_reason(&self, candidate_index: u64) -> Option<&'static str> {
        // At most the cluster's first entry (index 0, the initial membership): what the node
        // with the lowest id in `initial_members` writes when it starts on an empty store
        // and creates the cluster anew.
        let empty = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            metrics.last_log_index.unwrap_or(0) == 0 && metrics.snapshot.is_none()
        };
        if empty && candidate_index > 0 {
            Some(
                "this node's store is empty but the cluster has a log; it waits to be caught up by \
                 an elected leader. If this node lost its data directory, remove it from the cluster \
                 and add it again (README, Recovery)",
            )
        } else if candidate_index < self.contact.leader_commit() {
            Some("the candidate's log ends before the commit index a leader named to this node")
        } else {
            None
        }
    }

    /// Whether this node would grant `rpc.candidate` a vote now (see [`crate::election`]),
    /// changing nothing: what openraft's vote handler checks before it looks at terms (the
    /// leader lease of the leader this node follows, the candidate's last log id against its
    /// own), a leader that a quorum answered within the lease, and Tally's own rules.
    async fn pre_vote_answer(&self, rpc: &PreVoteRequest) -> PreVoteResponse {
        let candidate_index = rpc.last_log_id.map_or(0, |log_id| log_id.index);
        if let Some(reason) = self.refusal_reason(candidate_index) {
            return PreVoteResponse::refuse(reason);
        }
        let lease = Duration::from_millis(self.raft.config().election_timeout_max);
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state == openraft::ServerState::Leader
            && metrics
                .millis_since_quorum_ack
                .is_some_and(|millis| u128::from(millis) <= lease.as_millis())
        {
            return PreVoteResponse::refuse(format!(
                "this node is the leader of term {} and a quorum answered it within {} ms",
                metrics.current_term,
                lease.as_millis()
            ));
        }
        // A vote granted (or cast for itself) within the shortest election timeout: that
        // election is still being decided, and a yes here would let a second candidate
        // depose its winner (the higher term wins). As the Raft thesis has a node that just
        // granted a vote wait out its election timer.
        let settle = Duration::from_millis(self.raft.config().election_timeout_min);
        let recent = self
            .raft
            .with_raft_state(move |st| {
                let vote = *st.vote_ref();
                let since = st.vote_last_modified().map(|at| at.elapsed());
                if vote.is_committed() && since.is_some_and(|since| since <= lease) {
                    Some(format!(
                        "this node heard from its leader, node {}, within the last {} ms",
                        vote.leader_id().voted_for().unwrap_or_default(),
                        lease.as_millis()
                    ))
                } else if !vote.is_committed() && since.is_some_and(|since| since <= settle) {
                    Some(format!(
                        "this node voted in term {} (for node {}) within the last {} ms; that \
                         election is still being decided",
                        vote.leader_id().term,
                        vote.leader_id().voted_for().unwrap_or_default(),
                        settle.as_millis()
                    ))
                } else {
                    None
                }
            })
            .await;
        match recent {
            Err(_) => return PreVoteResponse::refuse("this node's Raft has stopped"),
            Ok(Some(reason)) => return PreVoteResponse::refuse(reason),
            Ok(None) => {}
        }
        let own = self.raft.data_metrics().borrow().last_log;
        if rpc.last_log_id < own {
            return PreVoteResponse::refuse(format!(
                "the candidate's last log id {} is behind this node's {}",
                log_id_text(rpc.last_log_id),
                log_id_text(own)
            ));
        }
        PreVoteResponse::grant()
    }

    /// Refuses a request meant for another node (see [`crate::TARGET_NODE_METADATA_KEY`]).
    fn check_target<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(value) = request.metadata().get(crate::TARGET_NODE_METADATA_KEY) else {
            return Ok(());
        };
        let target = value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<NodeId>().ok());
        match target {
            Some(target) if target == self.node_id => Ok(()),
            Some(target) => Err(Status::failed_precondition(format!(
                "this is node {}, not node {target}: the cluster's membership gives node {target} \
                 an address that node {} serves; remove node {target} and add it again at its own address",
                self.node_id, self.node_id
            ))),
            None => Err(Status::invalid_argument(format!(
                "{} is not a node id: {value:?}",
                crate::TARGET_NODE_METADATA_KEY
            ))),
        }
    }

    /// What this service hears from leaders (see [`LeaderContact`]).
    pub fn contact(&self) -> Arc<LeaderContact> {
        self.contact.clone()
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
    contact: &LeaderContact,
    data: &[u8],
) -> Result<(v1::RaftReply, bool), Status> {
    let rpc: AppendEntriesRequest<TypeConfig> = codec::decode("append entries request", data)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let commit = rpc.leader_commit.map(|log_id| log_id.index);
    let vote = rpc.vote;
    contact.arrived(&vote);
    let result = raft.append_entries(rpc).await;
    // Any answer but "my vote is newer" accepts the sender as the leader of its term.
    if matches!(&result, Ok(response) if !matches!(response, AppendEntriesResponse::HigherVote(_)))
    {
        contact.accepted(vote, commit);
    }
    let stopped = matches!(result, Err(openraft::error::RaftError::Fatal(_)));
    Ok((encode_reply("append entries response", result)?, stopped))
}

/// The replies of an AppendEntriesStream call.
pub type AppendEntriesReplies = Pin<Box<dyn Stream<Item = Result<v1::RaftReply, Status>> + Send>>;

/// A log id as openraft writes it (`T1-N2-99`), `none` for none.
fn log_id_text(log_id: Option<openraft::LogId<NodeId>>) -> String {
    log_id.map_or_else(|| "none".to_string(), |log_id| log_id.to_string())
}

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
        self.check_target(&request)?;
        append_entries_reply(&self.raft, &self.contact, &request.get_ref().data)
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
        self.check_target(&request)?;
        let state = Some((
            self.raft.clone(),
            self.contact.clone(),
            request.into_inner(),
        ));
        let replies = futures::stream::unfold(state, |state| async move {
            let (raft, contact, mut requests) = state?;
            let request = match requests.message().await {
                Ok(Some(request)) => request,
                Ok(None) => return None,
                Err(status) => return Some((Err(status), None)),
            };
            match append_entries_reply(&raft, &contact, &request.data).await {
                Ok((reply, false)) => Some((Ok(reply), Some((raft, contact, requests)))),
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
        self.check_target(&request)?;
        let rpc: VoteRequest<NodeId> = codec::decode("vote request", &request.get_ref().data)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(refusal) = self.vote_refusal(&rpc) {
            return reply::<_, openraft::error::RaftError<NodeId>>("vote response", Ok(refusal));
        }
        reply("vote response", self.raft.vote(rpc).await)
    }

    async fn pre_vote(
        &self,
        request: Request<v1::RaftRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        self.check_target(&request)?;
        let rpc: PreVoteRequest = codec::decode("pre-vote request", &request.get_ref().data)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let answer = self.pre_vote_answer(&rpc).await;
        tracing::debug!(
            candidate = rpc.candidate,
            term = rpc.term,
            granted = answer.granted,
            refusal = answer.refusal.as_deref().unwrap_or(""),
            "pre-vote"
        );
        reply::<_, openraft::error::RaftError<NodeId>>("pre-vote response", Ok(answer))
    }

    async fn install_snapshot(
        &self,
        request: Request<v1::RaftRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        self.check_target(&request)?;
        let rpc: InstallSnapshotRequest<TypeConfig> =
            codec::decode("install snapshot request", &request.get_ref().data)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let vote = rpc.vote;
        self.contact.arrived(&vote);
        if rpc.offset == 0 && rpc.done && rpc.data.is_empty() {
            // No snapshot is empty: the leader has none ready for this node yet (it assembles
            // one in the background, `tally_store`'s `current_snapshot`) or could not assemble
            // one (a full disk, a damaged journal block: its log says so). Refused before
            // openraft sees it (installing it would fail this node's storage, a fatal error);
            // the leader sends it again a few seconds later.
            let now = Instant::now();
            let mut refusals = self
                .empty_snapshots
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let (first, warned) = refusals.get_or_insert((now, None));
            if *first == now {
                tracing::info!(
                    leader = %vote.leader_id,
                    "the leader has no snapshot ready for this node yet (it assembles one); \
                     refused, it sends one again shortly"
                );
            } else if first.elapsed() >= EMPTY_SNAPSHOTS_WARN_AFTER
                && warned.is_none_or(|at| at.elapsed() >= EMPTY_SNAPSHOTS_WARN_AFTER)
            {
                *warned = Some(now);
                tracing::warn!(
                    leader = %vote.leader_id,
                    "the leader has sent no usable snapshot for {} s: it cannot assemble one \
                     (see its log); this node stays behind until it can (logged once a minute)",
                    first.elapsed().as_secs()
                );
            }
            return Err(Status::failed_precondition(
                "an empty snapshot: the leader has none ready (being assembled, or it could not \
                 assemble one: see its log)",
            ));
        }
        if rpc.offset == 0 {
            *self
                .empty_snapshots
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
        let result = self.raft.install_snapshot(rpc).await;
        // Accepted when this node's vote is no newer than the sender's.
        if matches!(&result, Ok(response) if response.vote <= vote) {
            self.contact.accepted(vote, None);
        }
        reply("install snapshot response", result)
    }
}
