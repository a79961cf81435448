//! The operator `Admin` gRPC service: cluster status, membership changes, snapshots, state hash.
//!
//! Membership changes run on the leader; a follower forwards them there (the peer listener
//! serves `Admin` too). A change that meets another one still in progress is retried until
//! the request deadline, since openraft allows one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tally_proto::error::CODE_METADATA_KEY;
use tally_proto::v1;
use tally_proto::v1::admin_client::AdminClient;
use tally_proto::{ErrorCode, TallyError};
use tally_store::NodeId;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::node::{NodeContext, FORWARDED_METADATA_KEY};
use crate::proposer::BoxFuture;

/// Pause between retries of a membership change that met one in progress.
const MEMBERSHIP_RETRY_MS: u64 = 100;

/// Most log entries a learner may be behind the leader's log and still be promoted: a voter
/// that has not caught up (or a learner added at an address where nothing answers) would
/// count towards the quorum without being able to vote for what it lacks.
pub const PROMOTE_LAG_MAX: u64 = 1_000;

/// A membership change for openraft and whether removed voters stay as learners.
type Change = (ChangeMembers<NodeId, BasicNode>, bool);

type ForwardChange<Req> = fn(
    AdminClient<Channel>,
    Request<Req>,
) -> BoxFuture<'static, Result<Response<v1::MembershipReply>, Status>>;

#[derive(Clone)]
pub struct AdminService {
    ctx: Arc<NodeContext>,
}

impl AdminService {
    /// The state hash at exactly log index `index` (see `LedgerReader::hash_at`), waiting for
    /// this node to apply it within the request deadline.
    async fn state_hash_at_index(&self, index: u64) -> Result<v1::StateHashReply, TallyError> {
        let ctx = &self.ctx;
        let applied_now = || ctx.reader.last_applied().map_or(0, |log_id| log_id.index);
        let passed = |applied: u64| {
            TallyError::from(tally_core::InvalidInput::new(
                "at_index",
                format!(
                    "this node has applied up to {applied}, past {index}; ask for a later index"
                ),
            ))
        };
        // `hash_at` takes the applied state's lock, held through an apply: off the runtime.
        let reader = ctx.reader.clone();
        let receiver = tokio::task::spawn_blocking(move || reader.hash_at(index))
            .await
            .map_err(|error| TallyError::internal(format!("state hash task: {error}")))?
            .map_err(passed)?;
        match tokio::time::timeout(ctx.request_deadline(), receiver).await {
            Ok(Ok((hash, ledger_time_ms))) => Ok(v1::StateHashReply {
                hash_hex: hex(&hash),
                applied_index: index,
                ledger_time_ms,
                node_id: ctx.node_id(),
            }),
            // Gone past without applying it here (a snapshot installed over it).
            Ok(Err(_)) => Err(passed(applied_now())),
            Err(_) => Err(TallyError::new(
                ErrorCode::DeadlineExceeded,
                format!(
                    "index {index} was not applied here before the deadline (applied: {})",
                    applied_now()
                ),
            )),
        }
    }

    pub fn new(ctx: Arc<NodeContext>) -> Self {
        AdminService { ctx }
    }

    fn members(&self) -> (Vec<v1::Member>, bool) {
        let metrics = self.ctx.raft_metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| v1::Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        (members, membership.get_joint_config().len() > 1)
    }

    /// The reply to a change the membership already has (a retried removal, a learner added
    /// again at the same address): the membership as it is, once the entry that made it so is
    /// committed (applied here), as a change's reply would be.
    async fn already_so(
        &self,
        deadline: Instant,
    ) -> Result<Response<v1::MembershipReply>, TallyError> {
        let log_id = *self.ctx.raft_metrics().membership_config.log_id();
        self.ctx
            .raft
            .wait(Some(deadline.saturating_duration_since(Instant::now())))
            .applied_index_at_least(log_id.map(|log_id| log_id.index), "membership committed")
            .await
            .map_err(|error| {
                TallyError::new(
                    ErrorCode::DeadlineExceeded,
                    format!("the current membership did not commit before the deadline: {error}"),
                )
            })?;
        let (members, _) = self.members();
        Ok(Response::new(v1::MembershipReply {
            members,
            log_index: log_id.map(|log_id| log_id.index).unwrap_or(0),
            unchanged: true,
            not_caught_up: String::new(),
        }))
    }

    /// Runs a membership change here when this node leads, else forwards it to the leader.
    /// `changes` says what to change, or `None` when the membership already is as asked.
    async fn change<Req>(
        &self,
        method: &'static str,
        request: Request<Req>,
        forward: ForwardChange<Req>,
        changes: impl Fn(&Req) -> Result<Option<Change>, TallyError>,
    ) -> Result<Response<v1::MembershipReply>, Status>
    where
        Req: Send + 'static,
    {
        let started = Instant::now();
        let ctx = &self.ctx;
        let was_forwarded = request.metadata().get(FORWARDED_METADATA_KEY).is_some();
        // The leader hears the caller's deadline, so that it can answer within it.
        let forward_timeout = caller_timeout(request.metadata())
            .map_or(ctx.request_deadline(), |t| t.min(ctx.request_deadline()));
        let message = request.into_inner();
        let result = if ctx.is_leader() {
            self.change_here(&message, &changes)
                .await
                .map_err(|error| error.to_status())
        } else if was_forwarded {
            Err(ctx.not_leader_error().to_status())
        } else {
            match ctx.leader_channel() {
                Ok((_, channel)) => {
                    let mut request = Request::new(message);
                    request.set_timeout(forward_timeout);
                    ctx.mark_forwarded(&mut request);
                    forward(AdminClient::new(channel), request).await
                }
                Err(error) => Err(error.to_status()),
            }
        };
        let code = match &result {
            Ok(_) => "ok".to_string(),
            Err(status) => status
                .metadata()
                .get(CODE_METADATA_KEY)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("unavailable")
                .to_string(),
        };
        ctx.metrics.record_request(method, &code, started.elapsed());
        result
    }

    async fn change_here<Req>(
        &self,
        message: &Req,
        changes: &impl Fn(&Req) -> Result<Option<Change>, TallyError>,
    ) -> Result<Response<v1::MembershipReply>, TallyError> {
        let ctx = &self.ctx;
        let deadline = Instant::now() + ctx.request_deadline();
        loop {
            let Some((change, retain)) = changes(message)? else {
                return self.already_so(deadline).await;
            };
            let attempt = tokio::time::timeout_at(
                deadline.into(),
                ctx.raft.change_membership(change, retain),
            )
            .await;
            let error = match attempt {
                Err(_) => {
                    return Err(TallyError::new(
                        ErrorCode::DeadlineExceeded,
                        "the membership change did not commit before the deadline; check cluster status",
                    ))
                }
                Ok(Ok(response)) => {
                    let (members, _) = self.members();
                    return Ok(Response::new(v1::MembershipReply {
                        members,
                        log_index: response.log_id.index,
                        unchanged: false,
                        not_caught_up: String::new(),
                    }));
                }
                Ok(Err(error)) => error,
            };
            match &error {
                RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                )) if Instant::now() + Duration::from_millis(MEMBERSHIP_RETRY_MS) < deadline => {
                    tokio::time::sleep(Duration::from_millis(MEMBERSHIP_RETRY_MS)).await;
                }
                RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                )) => {
                    return Err(TallyError::unavailable(
                        "another membership change is still in progress; retry later",
                    ))
                }
                RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                    return Err(ctx.not_leader_error())
                }
                RaftError::APIError(ClientWriteError::ChangeMembershipError(change_error)) => {
                    return Err(TallyError::new(
                        ErrorCode::InvalidArgument,
                        change_error.to_string(),
                    )
                    .with_detail("field", "id")
                    .with_detail("reason", change_error.to_string()))
                }
                RaftError::Fatal(fatal) => {
                    return Err(TallyError::unavailable(format!("raft stopped: {fatal}")))
                }
            }
        }
    }
}

/// The caller's deadline for this call, from its `grpc-timeout` header (tonic cancels the
/// handler when it passes): digits and a unit, `H`, `M`, `S`, `m`, `u` or `n`.
fn caller_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3_600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// How long a handler may wait, within the server's `deadline`, and still have its answer
/// reach the caller before the caller's own deadline (`grpc-timeout` in `metadata`): a tenth
/// of that, at least 200 ms, is left for the answer's way back.
fn answer_within(deadline: Duration, metadata: &tonic::metadata::MetadataMap) -> Duration {
    caller_timeout(metadata).map_or(deadline, |timeout| {
        deadline.min(timeout.saturating_sub((timeout / 10).max(Duration::from_millis(200))))
    })
}

fn check_node_id(id: u64) -> Result<(), TallyError> {
    if id == 0 {
        return Err(TallyError::from(tally_core::InvalidInput::new(
            "id",
            "must be at least 1",
        )));
    }
    Ok(())
}

fn role(state: ServerState) -> v1::NodeRole {
    match state {
        ServerState::Leader => v1::NodeRole::Leader,
        ServerState::Follower => v1::NodeRole::Follower,
        ServerState::Candidate => v1::NodeRole::Candidate,
        ServerState::Learner => v1::NodeRole::Learner,
        ServerState::Shutdown => v1::NodeRole::Shutdown,
    }
}

#[tonic::async_trait]
impl v1::admin_server::Admin for AdminService {
    async fn cluster_status(
        &self,
        _request: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusReply>, Status> {
        let started = Instant::now();
        let ctx = &self.ctx;
        let metrics = ctx.raft_metrics();
        let (members, joint) = self.members();
        let replication_matched_index: BTreeMap<u64, u64> = metrics
            .replication
            .as_ref()
            .map(|replication| {
                replication
                    .iter()
                    .map(|(id, matched)| (*id, matched.map(|log_id| log_id.index).unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let ledger_time_ms = ctx
            .reader
            .with_applied_state(|state, _| state.now_ms())
            .await;
        let reply = v1::ClusterStatusReply {
            node_id: ctx.node_id(),
            role: role(metrics.state) as i32,
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            leader_addr: metrics.current_leader.and_then(|id| ctx.client_addr_of(id)),
            members,
            joint,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            committed_index: ctx.commit_index(),
            applied_index: metrics.last_applied.map(|log_id| log_id.index).unwrap_or(0),
            snapshot_index: metrics.snapshot.map(|log_id| log_id.index).unwrap_or(0),
            ledger_time_ms,
            replication_matched_index,
        };
        ctx.metrics
            .record_request("cluster_status", "ok", started.elapsed());
        Ok(Response::new(reply))
    }

    async fn add_learner(
        &self,
        request: Request<v1::AddLearnerRequest>,
    ) -> Result<Response<v1::MembershipReply>, Status> {
        let message = request.get_ref();
        check_node_id(message.id).map_err(|error| error.to_status())?;
        if message
            .addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .is_none()
        {
            return Err(TallyError::from(tally_core::InvalidInput::new(
                "addr",
                format!("{:?} is not host:port", message.addr),
            ))
            .to_status());
        }
        let blocking = message.blocking;
        let id = message.id;
        let addr = message.addr.clone();
        let handled_here = self.ctx.is_leader();
        let wait = answer_within(self.ctx.request_deadline(), request.metadata());
        let mut reply = self
            .change(
                "add_learner",
                request,
                |mut client, request| Box::pin(async move { client.add_learner(request).await }),
                |message| {
                    // openraft keeps a member's address when it is added again: the same
                    // address is a retry (nothing to do), another one is refused.
                    let metrics = self.ctx.raft_metrics();
                    if let Some(node) = metrics.membership_config.membership().get_node(&message.id)
                    {
                        if node.addr == message.addr {
                            return Ok(None);
                        }
                        return Err(TallyError::from(tally_core::InvalidInput::new(
                            "id",
                            format!(
                                "node {} is already a member at {}; remove it first to give it another address",
                                message.id, node.addr
                            ),
                        )));
                    }
                    // Another member's address: that node would answer as both (its Raft
                    // refuses requests meant for another id, so the learner would never
                    // catch up); refuse it here, naming the owner.
                    if let Some((owner, _)) = metrics
                        .membership_config
                        .membership()
                        .nodes()
                        .find(|(_, node)| node.addr == message.addr)
                    {
                        return Err(TallyError::from(tally_core::InvalidInput::new(
                            "addr",
                            format!(
                                "{} is node {owner}'s address; give node {} the address of its own peer listener",
                                message.addr, message.id
                            ),
                        )));
                    }
                    let nodes = BTreeMap::from([(
                        message.id,
                        BasicNode {
                            addr: message.addr.clone(),
                        },
                    )]);
                    Ok(Some((ChangeMembers::AddNodes(nodes), true)))
                },
            )
            .await?;
        if blocking && handled_here {
            // Blocking: answer once the learner's log has caught up with the leader's log as it
            // was when the change committed (a forwarding node leaves this to the leader). The
            // change is committed either way: a wait that ends first says so in a normal reply,
            // so the caller neither retries a change that is done nor takes it as undone.
            let target = reply.get_ref().log_index;
            let matched = |metrics: &openraft::RaftMetrics<NodeId, BasicNode>| {
                metrics
                    .replication
                    .as_ref()
                    .and_then(|replication| replication.get(&id).cloned().flatten())
                    .map(|matched| matched.index)
            };
            let caught_up = self
                .ctx
                .raft
                .wait(Some(wait))
                .metrics(
                    |metrics| matched(metrics).is_some_and(|index| index >= target),
                    "learner caught up",
                )
                .await;
            if caught_up.is_err() {
                let seconds = wait.as_secs_f64();
                reply.get_mut().not_caught_up = match matched(&self.ctx.raft_metrics()) {
                    None => format!(
                        "it received nothing within {seconds:.1} s: check that tallyd runs there with node_id {id}, that {addr} is its peer_addr (not its client_addr) and that the leader reaches it; the leader's log says why (`peer {id} at {addr} does not answer: ...`: no answer, or a snapshot it could not assemble or the learner could not take)"
                    ),
                    Some(index) => format!(
                        "within {seconds:.1} s it received the log up to index {index} of {target}; it is still catching up"
                    ),
                };
            }
        }
        Ok(reply)
    }

    async fn promote(
        &self,
        request: Request<v1::PromoteRequest>,
    ) -> Result<Response<v1::MembershipReply>, Status> {
        check_node_id(request.get_ref().id).map_err(|error| error.to_status())?;
        self.change(
            "promote",
            request,
            |mut client, request| Box::pin(async move { client.promote(request).await }),
            |message| {
                let metrics = self.ctx.raft_metrics();
                let membership = metrics.membership_config.membership();
                let id = message.id;
                if membership.voter_ids().any(|voter| voter == id) {
                    // Already a voter (a retried promote): nothing to change.
                    return Ok(None);
                }
                if membership.get_node(&id).is_none() {
                    return Err(TallyError::from(tally_core::InvalidInput::new(
                        "id",
                        format!("node {id} is not a learner of this cluster; add it first (add-learner)"),
                    )));
                }
                let last = metrics.last_log_index.unwrap_or(0);
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|replication| replication.get(&id).copied().flatten())
                    .map(|log_id| log_id.index);
                match matched {
                    Some(matched) if last.saturating_sub(matched) <= PROMOTE_LAG_MAX => Ok(Some((
                        ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                        true,
                    ))),
                    // Unavailable: the client retries within its budget, which waits for a
                    // learner that is catching up.
                    _ => Err(TallyError::unavailable(format!(
                        "node {id} has not caught up: it holds the log up to {} of the leader's {last} (at most {PROMOTE_LAG_MAX} behind to be promoted); check its address and `tally cluster status`, then promote it again",
                        matched.map_or("nothing".to_string(), |m| m.to_string())
                    ))),
                }
            },
        )
        .await
    }

    async fn change_membership(
        &self,
        request: Request<v1::ChangeMembershipRequest>,
    ) -> Result<Response<v1::MembershipReply>, Status> {
        let message = request.get_ref();
        if message.voters.is_empty() {
            return Err(TallyError::from(tally_core::InvalidInput::new(
                "voters",
                "must name at least one voter",
            ))
            .to_status());
        }
        for id in &message.voters {
            check_node_id(*id).map_err(|error| error.to_status())?;
        }
        self.change(
            "change_membership",
            request,
            |mut client, request| Box::pin(async move { client.change_membership(request).await }),
            |message| {
                Ok(Some((
                    ChangeMembers::ReplaceAllVoters(message.voters.iter().copied().collect()),
                    message.retain,
                )))
            },
        )
        .await
    }

    async fn remove_node(
        &self,
        request: Request<v1::RemoveNodeRequest>,
    ) -> Result<Response<v1::MembershipReply>, Status> {
        check_node_id(request.get_ref().id).map_err(|error| error.to_status())?;
        self.change(
            "remove_node",
            request,
            |mut client, request| Box::pin(async move { client.remove_node(request).await }),
            |message| {
                let metrics = self.ctx.raft_metrics();
                let membership = metrics.membership_config.membership();
                let id = message.id;
                if membership.voter_ids().any(|voter| voter == id) {
                    // Removed from the voters and, with retain = false, from the cluster.
                    Ok(Some((
                        ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                        false,
                    )))
                } else if membership.get_node(&id).is_some() {
                    Ok(Some((
                        ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                        false,
                    )))
                } else {
                    // Not a member (any more): a retried removal has nothing left to do.
                    Ok(None)
                }
            },
        )
        .await
    }

    async fn trigger_snapshot(
        &self,
        request: Request<v1::TriggerSnapshotRequest>,
    ) -> Result<Response<v1::TriggerSnapshotReply>, Status> {
        let started = Instant::now();
        let ctx = &self.ctx;
        // Answered within the caller's deadline, so that `not_built` reaches it.
        let wait = answer_within(ctx.request_deadline(), request.metadata());
        let before = ctx.raft_metrics().snapshot;
        let applied = ctx.raft_metrics().last_applied;
        ctx.raft.trigger().snapshot().await.map_err(|fatal| {
            TallyError::unavailable(format!("raft stopped: {fatal}")).to_status()
        })?;
        // Wait (within the deadline) for a snapshot newer than the previous one; when nothing
        // new was applied since, the previous one already covers everything.
        let previous = before.map(|log_id| log_id.index).unwrap_or(0);
        let (snapshot_index, not_built) = if before.is_some() && before == applied {
            (previous, String::new())
        } else {
            match ctx
                .raft
                .wait(Some(wait))
                .metrics(|metrics| metrics.snapshot != before, "snapshot built")
                .await
            {
                Ok(metrics) => (
                    metrics.snapshot.map(|log_id| log_id.index).unwrap_or(0),
                    String::new(),
                ),
                // A build that fails (the disk full) leaves the previous snapshot in place and
                // says why in this node's log; it is retried a minute later.
                Err(_) => (
                    previous,
                    format!(
                        "no new snapshot within {:.1} s: see node {}'s log (`snapshot build failed` says why, a full disk say); it goes on with its snapshot at index {previous}",
                        wait.as_secs_f64(),
                        ctx.node_id()
                    ),
                ),
            }
        };
        ctx.metrics
            .record_request("trigger_snapshot", "ok", started.elapsed());
        Ok(Response::new(v1::TriggerSnapshotReply {
            snapshot_index,
            not_built,
        }))
    }

    async fn state_hash(
        &self,
        request: Request<v1::StateHashRequest>,
    ) -> Result<Response<v1::StateHashReply>, Status> {
        let started = Instant::now();
        let ctx = &self.ctx;
        if let Some(index) = request.get_ref().at_index {
            let reply = self.state_hash_at_index(index).await;
            let code = reply.as_ref().map_or_else(|e| e.code.as_str(), |_| "ok");
            ctx.metrics
                .record_request("state_hash", code, started.elapsed());
            return reply.map(Response::new).map_err(|error| error.to_status());
        }
        let consistency = tally_proto::convert::consistency(request.get_ref().consistency)
            .map_err(|error| TallyError::from(error).to_status())?;
        if consistency == v1::Consistency::Linearizable {
            ctx.read_barrier()
                .await
                .map_err(|error| error.to_status())?;
        }
        let (applied, hash, ledger_time_ms) = ctx
            .reader
            .with_applied_state(|state, applied| (applied, state.state_hash(), state.now_ms()))
            .await;
        let hash_hex = hex(&hash);
        ctx.metrics
            .record_request("state_hash", "ok", started.elapsed());
        Ok(Response::new(v1::StateHashReply {
            hash_hex,
            applied_index: applied.map(|log_id| log_id.index).unwrap_or(0),
            ledger_time_ms,
            node_id: ctx.node_id(),
        }))
    }
}

/// Lowercase hex of a state hash.
fn hex(hash: &[u8]) -> String {
    hash.iter().map(|byte| format!("{byte:02x}")).collect()
}
