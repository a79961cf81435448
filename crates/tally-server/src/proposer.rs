//! The leader's proposer: group commit with pipelining.
//!
//! Requests queue here; one task drains the queue, coalesces every request waiting (up to a
//! command and byte limit) into one `tally_core::Entry` stamped with the wall clock, hands it
//! to Raft, and answers each waiter with the outcome at its index once the entry is applied.
//! Up to `entries_in_flight_max` entries may be replicating at once. The task takes a slot in
//! that pipeline BEFORE it collects requests: a lone request finds a free slot and is proposed
//! at once, and while every slot is busy (each entry costs the leader an fsync and a round
//! trip to a follower) requests pile up and the next entry takes them all. That is group
//! commit without a timer; `group_commit_wait_ms` (default 0) can add a wait for neighbours
//! after a slot is free, up to [`crate::config::GROUP_COMMIT_WAIT_MS_MAX`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tally_core::{Command, Entry, Outcome};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::metrics::Metrics;

/// Why a proposal has no outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader. When it comes back from Raft after the entry was handed
    /// over, the entry may still commit under the new leader: usage events are deduplicated by
    /// event id in the replicated state, so a retry is safe.
    #[error("this node is not the leader")]
    NotLeader { leader_id: Option<u64> },
    /// The proposal queue is full; nothing was proposed.
    #[error("the node is overloaded: {queued_max} requests already wait to be proposed")]
    Overloaded { queued_max: usize },
    /// The node is shutting down; nothing was proposed.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The entry could not be encoded for the log; nothing was proposed. (A bug: every entry
    /// within the request limits encodes.)
    #[error("the entry could not be encoded for the log: {reason}")]
    Encode { reason: String },
    /// The entry was handed to Raft and its fate is unknown (the leader changed or stopped
    /// before answering). It may or may not be applied.
    #[error("the outcome is unknown: {reason}")]
    Unknown { reason: String },
}

/// An entry Raft applied: its log index and one outcome per command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedEntry {
    pub log_index: u64,
    pub outcomes: Vec<Outcome>,
}

/// The outcome of one proposed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub outcome: Outcome,
    pub log_index: u64,
    /// The ledger time the entry was stamped with.
    pub at_ms: u64,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An entry handed to Raft: resolves once it is applied (or failed).
pub type PendingEntry = BoxFuture<'static, Result<AppliedEntry, ProposeError>>;

/// Where entries go: Raft on a real node (see `node.rs`), a recording fake in unit tests.
pub trait EntrySink: Send + Sync + 'static {
    /// Hands `entry` to Raft. Resolves once it is queued in order; the inner future resolves
    /// once it is applied (or failed).
    fn submit(&self, entry: Entry) -> BoxFuture<'_, Result<PendingEntry, ProposeError>>;
}

#[derive(Clone, Copy, Debug)]
pub struct ProposerLimits {
    pub group_commit_wait: Duration,
    pub entry_commands_max: usize,
    pub entry_bytes_max: usize,
    pub queue_max: usize,
    pub entries_in_flight_max: usize,
    /// How long an entry handed to Raft may go unanswered before its slot in the pipeline is
    /// freed and its waiters are told the outcome is unknown (the request deadline: they have
    /// given up by then anyway). openraft 0.9 never answers an entry that a snapshot installed
    /// over (a leader paused while others moved on and purged past it), and with the slot held
    /// for ever the node proposed nothing again: once it led again, no write, no tick.
    pub answer_wait_max: Duration,
}

struct Proposal {
    command: Command,
    /// The request's encoded size, for the entry byte limit.
    size_bytes: usize,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Committed, ProposeError>>,
}

/// The handle request handlers use. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Proposal>,
    queue_max: usize,
}

impl Proposer {
    /// Starts the draining task; it stops when `shutdown` turns true, answering what still
    /// waits with `ShuttingDown`.
    pub fn start(
        sink: Arc<dyn EntrySink>,
        limits: ProposerLimits,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> (Proposer, tokio::task::JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(limits.queue_max);
        let task = tokio::spawn(drain(receiver, sink, limits, metrics, shutdown));
        (
            Proposer {
                queue,
                queue_max: limits.queue_max,
            },
            task,
        )
    }

    /// Proposes one command and waits for its outcome.
    pub async fn propose(
        &self,
        command: Command,
        size_bytes: usize,
    ) -> Result<Committed, ProposeError> {
        let (reply, answer) = oneshot::channel();
        let proposal = Proposal {
            command,
            size_bytes,
            enqueued: Instant::now(),
            reply,
        };
        self.queue.try_send(proposal).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ProposeError::Overloaded {
                queued_max: self.queue_max,
            },
            mpsc::error::TrySendError::Closed(_) => ProposeError::ShuttingDown,
        })?;
        answer.await.unwrap_or(Err(ProposeError::ShuttingDown))
    }
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

async fn drain(
    mut receiver: mpsc::Receiver<Proposal>,
    sink: Arc<dyn EntrySink>,
    limits: ProposerLimits,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let in_flight = Arc::new(Semaphore::new(limits.entries_in_flight_max));
    // A proposal that did not fit in the previous entry opens the next one.
    let mut carried: Option<Proposal> = None;
    loop {
        let first = match carried.take() {
            Some(proposal) => proposal,
            None => tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                received = receiver.recv() => match received {
                    Some(proposal) => proposal,
                    None => break,
                },
            },
        };
        // A slot in the pipeline first: while every slot is taken, requests pile up in the
        // queue, and the next entry takes them all. Under load that is what groups requests
        // into entries; a lone request finds a free slot and goes at once.
        let permit = tokio::select! {
            biased;
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => {
                    carried = Some(first);
                    break;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => {
                carried = Some(first);
                break;
            }
        };
        let deadline = tokio::time::Instant::from_std(first.enqueued + limits.group_commit_wait);
        let mut bytes = first.size_bytes;
        let mut batch = vec![first];
        loop {
            if batch.len() >= limits.entry_commands_max || bytes >= limits.entry_bytes_max {
                break;
            }
            let next = match receiver.try_recv() {
                Ok(proposal) => Some(proposal),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if tokio::time::Instant::now() >= deadline {
                        None
                    } else {
                        tokio::select! {
                            received = receiver.recv() => received,
                            _ = tokio::time::sleep_until(deadline) => None,
                        }
                    }
                }
            };
            let Some(proposal) = next else { break };
            if bytes + proposal.size_bytes > limits.entry_bytes_max {
                carried = Some(proposal);
                break;
            }
            bytes += proposal.size_bytes;
            batch.push(proposal);
        }
        // A waiter that gave up (deadline passed, client gone) will never read its outcome and
        // its client may retry: leaving it out is safe and saves the log the work.
        batch.retain(|proposal| !proposal.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let at_ms = wall_clock_ms();
        let (commands, replies): (Vec<Command>, Vec<_>) = batch
            .into_iter()
            .map(|proposal| (proposal.command, proposal.reply))
            .unzip();
        metrics.record_entry_proposed(commands.len());
        let entry = Entry { at_ms, commands };
        match sink.submit(entry).await {
            Ok(pending) => {
                let metrics = metrics.clone();
                let wait = limits.answer_wait_max;
                tokio::spawn(async move {
                    let result = tokio::time::timeout(wait, pending)
                        .await
                        .unwrap_or_else(|_| {
                            tracing::warn!(
                                wait_ms = wait.as_millis() as u64,
                                "an entry handed to Raft had no answer in time; its slot is freed \
                             and its requests are told the outcome is unknown"
                            );
                            Err(ProposeError::Unknown {
                                reason: format!(
                                    "Raft did not answer within {} ms (a leader change or a \
                                 snapshot may have replaced the entry)",
                                    wait.as_millis()
                                ),
                            })
                        });
                    drop(permit);
                    answer(replies, result, at_ms, &metrics);
                });
            }
            Err(error) => {
                drop(permit);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
    receiver.close();
    if let Some(proposal) = carried {
        let _ = proposal.reply.send(Err(ProposeError::ShuttingDown));
    }
    while let Ok(proposal) = receiver.try_recv() {
        let _ = proposal.reply.send(Err(ProposeError::ShuttingDown));
    }
    // Entries already handed to Raft finish on their own tasks: wait for them, so a graceful
    // shutdown answers every request that was in flight.
    let _ = in_flight
        .acquire_many(limits.entries_in_flight_max as u32)
        .await;
}

fn answer(
    replies: Vec<oneshot::Sender<Result<Committed, ProposeError>>>,
    result: Result<AppliedEntry, ProposeError>,
    at_ms: u64,
    metrics: &Metrics,
) {
    match result {
        Ok(applied) if applied.outcomes.len() == replies.len() => {
            for (reply, outcome) in replies.into_iter().zip(applied.outcomes) {
                count_outcome(&outcome, metrics);
                let _ = reply.send(Ok(Committed {
                    outcome,
                    log_index: applied.log_index,
                    at_ms,
                }));
            }
        }
        Ok(applied) => {
            // One outcome per command is the state machine's contract; a mismatch means the
            // applied entry is not the one proposed, which must never happen. A broken
            // invariant stops the node loudly (a panic here would only end this task).
            tracing::error!(
                log_index = applied.log_index,
                outcomes = applied.outcomes.len(),
                commands = replies.len(),
                "an applied entry answered a different number of outcomes than it had commands; stopping"
            );
            eprintln!(
                "tallyd: invariant broken: entry at index {} answered {} outcomes for {} commands",
                applied.log_index,
                applied.outcomes.len(),
                replies.len()
            );
            std::process::abort();
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

fn count_outcome(outcome: &Outcome, metrics: &Metrics) {
    match outcome {
        Outcome::Settled(_) => metrics.add_events_settled(1),
        Outcome::Duplicate(_) => metrics.add_events_duplicate(1),
        Outcome::Rejected(rejection) => metrics.record_rejection(rejection.code()),
        Outcome::Conflict { .. } => metrics.record_rejection("conflict"),
        Outcome::Batch(outcomes) => outcomes
            .iter()
            .for_each(|inner| count_outcome(inner, metrics)),
        Outcome::Applied(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tally_core::{Applied, LedgerState};

    /// Applies entries to a real `LedgerState` in submission order, after a delay, so the test
    /// sees how requests were grouped into entries.
    struct Recording {
        entries: Mutex<Vec<Entry>>,
        state: Arc<Mutex<LedgerState>>,
        delay: Duration,
    }

    impl EntrySink for Recording {
        fn submit(&self, entry: Entry) -> BoxFuture<'_, Result<PendingEntry, ProposeError>> {
            let mut entries = self.entries.lock().unwrap();
            entries.push(entry.clone());
            let log_index = entries.len() as u64;
            let state = self.state.clone();
            let delay = self.delay;
            Box::pin(async move {
                let pending: PendingEntry = Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    let outcomes = state.lock().unwrap().apply(&entry).outcomes;
                    Ok(AppliedEntry {
                        log_index,
                        outcomes,
                    })
                });
                Ok(pending)
            })
        }
    }

    fn limits() -> ProposerLimits {
        ProposerLimits {
            group_commit_wait: Duration::from_millis(2),
            entry_commands_max: 100,
            entry_bytes_max: 1_000,
            queue_max: 1_000,
            entries_in_flight_max: 4,
            answer_wait_max: Duration::from_secs(10),
        }
    }

    fn start(
        sink: Arc<Recording>,
        limits: ProposerLimits,
    ) -> (Proposer, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (stop, stopped) = watch::channel(false);
        let (proposer, task) = Proposer::start(sink, limits, Arc::new(Metrics::new()), stopped);
        (proposer, stop, task)
    }

    fn recording(delay_ms: u64) -> Arc<Recording> {
        Arc::new(Recording {
            entries: Mutex::new(Vec::new()),
            state: Arc::new(Mutex::new(LedgerState::new())),
            delay: Duration::from_millis(delay_ms),
        })
    }

    #[tokio::test]
    async fn concurrent_requests_share_entries_and_get_their_own_outcome() {
        let sink = recording(20);
        let (proposer, stop, task) = start(sink.clone(), limits());
        let mut waiters = Vec::new();
        for _ in 0..250 {
            let proposer = proposer.clone();
            waiters.push(tokio::spawn(async move {
                proposer.propose(Command::Tick, 10).await
            }));
        }
        let mut indexes = Vec::new();
        for waiter in waiters {
            let committed = waiter.await.unwrap().unwrap();
            // Every command gets exactly one outcome from the state machine.
            assert!(matches!(
                committed.outcome,
                Outcome::Rejected(_) | Outcome::Applied(Applied::Ticked)
            ));
            indexes.push(committed.log_index);
        }
        let entries = sink.entries.lock().unwrap().clone();
        let commands: usize = entries.iter().map(|entry| entry.commands.len()).sum();
        assert_eq!(commands, 250);
        // 250 requests of 10 bytes with a 1,000 byte and 100 command limit: at least 3 entries,
        // and far fewer than one per request.
        assert!(
            entries.len() >= 3 && entries.len() < 100,
            "{} entries",
            entries.len()
        );
        assert!(entries.iter().all(|entry| entry.commands.len() <= 100));
        assert!(entries
            .windows(2)
            .all(|pair| pair[0].at_ms <= pair[1].at_ms));
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    /// Never answers the first entry (as openraft 0.9 never answers an entry a snapshot was
    /// installed over), answers the others at once.
    struct LosesTheFirst {
        submitted: Mutex<u64>,
    }

    impl EntrySink for LosesTheFirst {
        fn submit(&self, entry: Entry) -> BoxFuture<'_, Result<PendingEntry, ProposeError>> {
            let mut submitted = self.submitted.lock().unwrap();
            *submitted += 1;
            let log_index = *submitted;
            Box::pin(async move {
                let pending: PendingEntry = if log_index == 1 {
                    Box::pin(std::future::pending())
                } else {
                    Box::pin(async move {
                        let outcomes = LedgerState::new().apply(&entry).outcomes;
                        Ok(AppliedEntry {
                            log_index,
                            outcomes,
                        })
                    })
                };
                Ok(pending)
            })
        }
    }

    #[tokio::test]
    async fn an_entry_raft_never_answers_frees_its_slot() {
        let mut one_slot = limits();
        one_slot.entries_in_flight_max = 1;
        one_slot.answer_wait_max = Duration::from_millis(100);
        let (stop, stopped) = watch::channel(false);
        let (proposer, task) = Proposer::start(
            Arc::new(LosesTheFirst {
                submitted: Mutex::new(0),
            }),
            one_slot,
            Arc::new(Metrics::new()),
            stopped,
        );
        let lost =
            tokio::time::timeout(Duration::from_secs(10), proposer.propose(Command::Tick, 10))
                .await
                .expect("answered, not left waiting");
        assert!(
            matches!(&lost, Err(ProposeError::Unknown { reason }) if reason.contains("did not answer")),
            "{lost:?}"
        );
        // The slot is free again: the next entry is proposed and answered (it waited for ever).
        let next =
            tokio::time::timeout(Duration::from_secs(10), proposer.propose(Command::Tick, 10))
                .await
                .expect("the proposer goes on");
        assert_eq!(next.unwrap().log_index, 2);
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_lone_request_is_proposed_within_the_wait() {
        let sink = recording(0);
        let (proposer, stop, task) = start(sink.clone(), limits());
        let started = Instant::now();
        proposer.propose(Command::Tick, 10).await.unwrap();
        // Generous bound: the wait is 2 ms, the machine is shared; this catches a proposer that
        // waits for a full batch instead of its deadline.
        assert!(started.elapsed() < Duration::from_millis(500));
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_shutdown_answers_everyone() {
        let sink = recording(50);
        let mut small = limits();
        small.queue_max = 2;
        small.entries_in_flight_max = 1;
        let (proposer, stop, task) = start(sink.clone(), small);
        let mut waiters = Vec::new();
        for _ in 0..20 {
            let proposer = proposer.clone();
            waiters.push(tokio::spawn(async move {
                proposer.propose(Command::Tick, 10).await
            }));
        }
        let mut overloaded = 0;
        let mut results = Vec::new();
        for waiter in waiters {
            match waiter.await.unwrap() {
                Err(ProposeError::Overloaded { queued_max: 2 }) => overloaded += 1,
                other => results.push(other),
            }
        }
        assert!(overloaded > 0);
        assert!(results.iter().all(|result| result.is_ok()));
        stop.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(
            proposer.propose(Command::Tick, 1).await,
            Err(ProposeError::ShuttingDown)
        );
    }
}
