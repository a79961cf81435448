//! Elections with a pre-vote (Raft thesis, section 9.6), which openraft 0.9 does not have.
//!
//! Without it, a voter that stops hearing from the leader for an election timeout (it was cut
//! off, or its process or VM was frozen) starts an election at once: it raises its term, the
//! others refuse it (their leader lease holds), but the leader's next append meets the higher
//! term and the leader steps down. The cluster then elects again, and writes answer
//! `not_leader` for one to two seconds, although nothing was wrong with the leader.
//!
//! So openraft's own election timer is off (`Config::enable_elect = false`, see
//! [`crate::raft_config`]) and [`spawn_elections`] runs it instead: when a voter has heard
//! nothing from a leader (and granted no vote) for as long as openraft would wait, it first asks
//! every other voter, through the `PreVote` RPC, whether it would grant a vote now. A peer says
//! yes only when openraft's own vote handler would (its leader lease has expired, the
//! candidate's log is at least as long as its own) and Tally's vote rules allow it
//! ([`crate::RaftService`]), without changing anything. Only with a yes from a majority of
//! every voter set does the node start openraft's election (`Trigger::elect`), so the term rises
//! only when the election can be won. Terms are not compared: a candidate behind in term learns
//! the higher one from the refusals of the election it then starts, as in openraft.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use openraft::{LogId, Raft, ServerState, Vote};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tally_store::{NodeId, TypeConfig};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{RaftSettings, TallyNetwork};

/// Asked of a peer before an election: would it vote for this candidate now?
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    /// The term the candidate would stand in (its current term plus one), for the peer's log.
    pub term: u64,
    /// The candidate's last log id, compared as openraft's vote handler compares it.
    pub last_log_id: Option<LogId<NodeId>>,
}

/// A peer's answer to a [`PreVoteRequest`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreVoteResponse {
    pub granted: bool,
    /// Why not, when not granted.
    pub refusal: Option<String>,
}

impl PreVoteResponse {
    pub(crate) fn grant() -> Self {
        PreVoteResponse {
            granted: true,
            refusal: None,
        }
    }

    pub(crate) fn refuse(reason: impl Into<String>) -> Self {
        PreVoteResponse {
            granted: false,
            refusal: Some(reason.into()),
        }
    }
}

/// What the election timer needs of openraft's state, read in one go.
struct View {
    state: ServerState,
    voter: bool,
    /// The voter sets: one, or two during a membership change (joint consensus).
    configs: Vec<Vec<NodeId>>,
    /// Each other voter with its address.
    peers: Vec<(NodeId, String)>,
    vote: Vote<NodeId>,
    /// When this node last heard from its leader or changed its vote; `None` if never.
    vote_modified: Option<Instant>,
}

impl View {
    /// Whether `later`, read after this one, shows the same vote, not modified since: no vote
    /// granted, no leader heard from in between.
    fn vote_unchanged(&self, later: &View) -> bool {
        self.vote == later.vote && self.vote_modified == later.vote_modified
    }
}

async fn view(raft: &Raft<TypeConfig>, me: NodeId) -> Option<View> {
    raft.with_raft_state(move |st| {
        let membership = st.membership_state.effective();
        let configs: Vec<Vec<NodeId>> = membership.get_joint_config().clone();
        let voters: BTreeSet<NodeId> = configs.iter().flatten().copied().collect();
        let peers = voters
            .iter()
            .filter(|id| **id != me)
            .map(|id| {
                let addr = membership
                    .get_node(id)
                    .map(|node| node.addr.clone())
                    .unwrap_or_default();
                (*id, addr)
            })
            .collect();
        View {
            state: st.server_state,
            voter: voters.contains(&me),
            configs,
            peers,
            vote: *st.vote_ref(),
            vote_modified: st.vote_last_modified(),
        }
    })
    .await
    .ok()
}

/// True when `granted` holds a majority of every voter set in `configs`.
pub(crate) fn is_quorum(configs: &[Vec<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    !configs.is_empty()
        && configs.iter().all(|config| {
            let yes = config.iter().filter(|id| granted.contains(id)).count();
            yes * 2 > config.len()
        })
}

/// Asks every other voter of `view` for a pre-vote, all at once, and stops as soon as a
/// majority of every voter set (this node included) said yes: a frozen or cut-off peer is not
/// waited for, as every moment between the round and the election is one in which another
/// node may win first. The voters that said yes, and why the others did not.
async fn pre_vote_round(
    network: &TallyNetwork,
    me: NodeId,
    view: &View,
    request: &PreVoteRequest,
    ask_timeout: Duration,
) -> (BTreeSet<NodeId>, Vec<String>) {
    let mut asks: FuturesUnordered<_> = view
        .peers
        .iter()
        .map(|(id, addr)| async move {
            let answer = network.ask_pre_vote(*id, addr, request, ask_timeout).await;
            (*id, answer)
        })
        .collect();
    let mut granted: BTreeSet<NodeId> = BTreeSet::from([me]);
    let mut refusals = Vec::new();
    while !is_quorum(&view.configs, &granted) {
        let Some((id, answer)) = asks.next().await else {
            break;
        };
        match answer {
            Ok(response) if response.granted => {
                granted.insert(id);
            }
            Ok(response) => refusals.push(format!(
                "node {id}: {}",
                response.refusal.unwrap_or_default()
            )),
            Err(error) => refusals.push(format!("node {id}: {error}")),
        }
    }
    (granted, refusals)
}

/// Runs this node's election timer (see the module docs) until its Raft stops. Start it right
/// after `openraft::Raft::new` on every node whose Raft was configured by
/// [`crate::raft_config`]: without it no node of the cluster ever starts an election after the
/// first.
pub fn spawn_elections(
    raft: Raft<TypeConfig>,
    network: TallyNetwork,
    settings: &RaftSettings,
) -> JoinHandle<()> {
    let timeout_min = settings.election_timeout_ms_min;
    let timeout_max = settings.election_timeout_ms_max;
    // openraft's leader lease: a node that follows a leader waits this much more.
    let lease = Duration::from_millis(timeout_max);
    let tick = Duration::from_millis((settings.heartbeat_interval_ms / 3).clamp(10, 100));
    let ask_timeout = Duration::from_millis(timeout_min / 2);
    tokio::spawn(async move {
        let me = raft.metrics().borrow().id;
        let started = Instant::now();
        let random_timeout =
            || Duration::from_millis(rand::thread_rng().gen_range(timeout_min..timeout_max));
        let mut timeout = random_timeout();
        let mut last_attempt: Option<Instant> = None;
        let mut refusals_logged: Option<Instant> = None;
        loop {
            tokio::time::sleep(tick).await;
            // The leader's case from the metrics, without a message to its Raft core.
            let (stopped, leading) = {
                let metrics = raft.metrics();
                let metrics = metrics.borrow();
                (
                    metrics.running_state.is_err(),
                    metrics.state == ServerState::Leader,
                )
            };
            if stopped {
                return; // Raft stopped.
            }
            if leading {
                continue;
            }
            let Some(view) = view(&raft, me).await else {
                return; // Raft stopped.
            };
            if view.state == ServerState::Leader || !view.voter {
                continue;
            }
            if view.peers.is_empty() {
                // The only voter: nobody to ask or to disturb (openraft elects at once too).
                if view.state != ServerState::Candidate && raft.trigger().elect().await.is_err() {
                    return;
                }
                continue;
            }
            let wait = if view.vote.is_committed() {
                lease + timeout
            } else {
                timeout
            };
            let quiet = view
                .vote_modified
                .map_or_else(|| started.elapsed(), |at| at.elapsed());
            if quiet < wait || last_attempt.is_some_and(|at| at.elapsed() < timeout) {
                continue;
            }
            last_attempt = Some(Instant::now());
            timeout = random_timeout();

            let request = PreVoteRequest {
                candidate: me,
                term: view.vote.leader_id().term + 1,
                last_log_id: raft.data_metrics().borrow().last_log,
            };
            let (granted, refusals) =
                pre_vote_round(&network, me, &view, &request, ask_timeout).await;
            if is_quorum(&view.configs, &granted) {
                // Meanwhile this node may have voted for another candidate, or heard from a
                // new leader: an election now would depose it (the higher term wins). The
                // window left, between this read and openraft taking the election, is one
                // message on its queue.
                let Some(now) = self::view(&raft, me).await else {
                    return;
                };
                if !view.vote_unchanged(&now) || now.state == ServerState::Leader {
                    continue;
                }
                tracing::info!(
                    term = request.term,
                    granted = ?granted,
                    "heard from no leader for {} ms; a majority would vote for this node: starting an election",
                    quiet.as_millis()
                );
                if raft.trigger().elect().await.is_err() {
                    return;
                }
            } else if refusals_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                // Expected while the leader is alive and only this node cannot hear it; once a
                // minute is enough to say why this node is not taking over.
                refusals_logged = Some(Instant::now());
                tracing::info!(
                    refusals = %refusals.join("; "),
                    "heard from no leader for {} ms, but no majority would vote for this node: \
                     no election (pre-vote; logged at most once a minute)",
                    quiet.as_millis()
                );
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quorum_needs_a_majority_of_every_voter_set() {
        let granted = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<_>>();
        let three = vec![vec![1, 2, 3]];
        assert!(!is_quorum(&three, &granted(&[1])));
        assert!(is_quorum(&three, &granted(&[1, 3])));
        let four = vec![vec![1, 2, 3, 4]];
        assert!(!is_quorum(&four, &granted(&[1, 2])));
        assert!(is_quorum(&four, &granted(&[1, 2, 4])));
        // Joint consensus: {1,2,3} -> {3,4,5}.
        let joint = vec![vec![1, 2, 3], vec![3, 4, 5]];
        assert!(!is_quorum(&joint, &granted(&[1, 2])));
        assert!(!is_quorum(&joint, &granted(&[4, 5])));
        assert!(is_quorum(&joint, &granted(&[1, 3, 4])));
        assert!(!is_quorum(&[], &granted(&[1])));
    }
}
