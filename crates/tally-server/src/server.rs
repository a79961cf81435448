//! [`run`]: a node's whole life. Binds the listeners, opens the store, starts openraft, creates
//! the cluster exactly once, serves the peer and public services, keeps the ledger initialized
//! and ticking, and shuts down gracefully.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use tally_core::{Applied, Command, Outcome};
use tally_proto::ingest::ledger_server::LedgerServer;
use tally_proto::v1::admin_server::AdminServer;
use tally_raft::{
    NetworkConfig, RaftService, RaftSettings, TallyNetwork, MESSAGE_BYTES_MAX,
    PEER_CONNECTION_WINDOW_BYTES, PEER_FRAME_BYTES_MAX, PEER_STREAM_WINDOW_BYTES,
};
use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::admin_service::AdminService;
use crate::config::Config;
use crate::http::{self, HealthSource};
use crate::incoming;
use crate::ledger_service::LedgerService;
use crate::metrics::Metrics;
use crate::node::NodeContext;
use crate::proposer::{Proposer, ProposerLimits};
use crate::raft_sink::RaftSink;
use crate::shutdown::Shutdown;

/// How often a leader checks whether the ledger still needs its Init entry.
const INIT_CHECK_INTERVAL_MS: u64 = 200;
/// How many committed entries a follower or learner may have left to apply and still report
/// ready (the same bound as for promoting a learner).
const READY_LAG_MAX: u64 = crate::admin_service::PROMOTE_LAG_MAX;
/// Extra time, beyond the request deadline, that in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE_MS: u64 = 2_000;

fn raft_settings(config: &Config) -> RaftSettings {
    let raft = &config.raft;
    RaftSettings {
        cluster_name: "tally".to_string(),
        election_timeout_ms_min: raft.election_timeout_ms_min,
        election_timeout_ms_max: raft.election_timeout_ms_max,
        heartbeat_interval_ms: raft.heartbeat_ms,
        install_snapshot_timeout_ms: raft.install_snapshot_timeout_ms,
        append_entries_max: raft.append_entries_max,
        snapshot_logs_since_last: raft.snapshot_logs_since_last,
        snapshot_logs_to_keep: raft.logs_to_keep_after_snapshot,
        ..RaftSettings::default()
    }
}

async fn bind(field: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {field} {addr}"))
}

struct Health {
    ctx: Arc<NodeContext>,
}

impl HealthSource for Health {
    fn metrics_text(&self) -> String {
        self.ctx.metrics.render(&self.ctx.gauges())
    }

    fn readiness(&self) -> Result<(), String> {
        if *self.ctx.shutdown_signal().borrow() {
            return Err("shutting down".to_string());
        }
        {
            let metrics = self.ctx.raft.metrics();
            let metrics = metrics.borrow();
            if let Err(fatal) = &metrics.running_state {
                return Err(format!("raft has stopped: {fatal}"));
            }
            let id = self.ctx.node_id();
            if metrics
                .membership_config
                .membership()
                .get_node(&id)
                .is_none()
            {
                // An empty store knows no membership at all: a node not added yet, or one
                // that lost its data while still a member (it waits for the leader).
                let known = metrics
                    .membership_config
                    .membership()
                    .nodes()
                    .next()
                    .is_some();
                return Err(if known {
                    format!(
                        "node {id} is not in the cluster's membership (removed, or not added yet)"
                    )
                } else {
                    format!(
                        "node {id} holds no cluster data yet (not added yet, or its data directory was lost: see Recovery); waiting for a leader to contact it"
                    )
                });
            }
            let Some(leader) = metrics.current_leader else {
                return Err("no leader known".to_string());
            };
            let limit = self.ctx.config.raft.election_timeout_ms_max;
            if leader != id || metrics.state != ServerState::Leader {
                // A learner never stands for election, and a node removed from the cluster
                // stops hearing from it: either would go on naming its last leader.
                let contact = &self.ctx.leader_contact;
                match contact.millis_since() {
                    Some(ms) if ms <= limit => {}
                    since => {
                        return Err(format!(
                            "no message from leader {leader} {}",
                            since.map_or("since this node started".to_string(), |ms| format!(
                                "for {ms} ms"
                            ))
                        ))
                    }
                }
                let applied = metrics.last_applied.map_or(0, |log_id| log_id.index);
                let committed = contact.leader_commit();
                if committed.saturating_sub(applied) > READY_LAG_MAX {
                    return Err(format!(
                        "catching up: applied up to index {applied}, the leader has committed {committed}"
                    ));
                }
            } else {
                // A leader cut off from its followers keeps believing it leads until it hears
                // of a newer term; it cannot commit anything meanwhile.
                match metrics.millis_since_quorum_ack {
                    Some(ms) if ms <= limit => {}
                    since => {
                        return Err(format!(
                            "this leader has had no acknowledgement from a quorum {}",
                            since.map_or("yet".to_string(), |ms| format!("for {ms} ms"))
                        ))
                    }
                }
            }
        }
        if !self.ctx.ledger_initialized() {
            return Err("the ledger's Init entry is not applied here yet".to_string());
        }
        Ok(())
    }
}

/// Runs the node until `shutdown` is triggered, then stops gracefully: no new connections,
/// requests in flight finish (within the request deadline), then Raft shuts down.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    config.validate()?;
    let node_id = config.node_id;
    // Bind first: a port already in use fails the start before the store is touched.
    let client_listener = bind("client_addr", &config.client_addr).await?;
    let peer_listener = if config.shared_listener() {
        None
    } else {
        Some(bind("peer_addr", &config.peer_addr).await?)
    };
    let metrics_listener = bind("metrics_addr", &config.metrics_addr).await?;

    tally_store::claim_node_id(&config.data_dir, node_id).with_context(|| {
        format!(
            "cannot use the data directory {}",
            config.data_dir.display()
        )
    })?;
    let (log_store, state_machine) = tally_store::open(&config.data_dir)
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    let log_durability = log_store.durability();
    if config.raft.leader_sync_in_parallel {
        log_store
            .sync_own_appends_in_parallel(node_id)
            .context("starting the log sync thread")?;
    }
    let reader = state_machine.reader();
    // openraft reads the current snapshot at start for its meta only: see the guard's docs.
    let meta_only = state_machine.meta_only_snapshots();
    let raft_config = tally_raft::raft_config(&raft_settings(&config)).context("raft settings")?;
    let network = TallyNetwork::new(
        node_id,
        NetworkConfig {
            connect_timeout_ms: config.raft.peer_connect_timeout_ms,
            peer_dial_overrides: config.peer_dial_overrides()?,
            ..NetworkConfig::default()
        },
    )
    .with_commit_bound(log_durability.clone());
    let raft = openraft::Raft::new(
        node_id,
        Arc::new(raft_config),
        network.clone(),
        log_store,
        state_machine,
    )
    .await
    .context("starting raft")?;
    drop(meta_only);
    // Ends by itself once Raft stops.
    tally_raft::spawn_elections(raft.clone(), network, &raft_settings(&config));

    // Stops what must outlive the client listener: the proposer, the background tasks, the
    // peer listener and the HTTP responder.
    let internal = Shutdown::new();
    let metrics = Arc::new(Metrics::new());
    metrics.watch_log_syncs(log_durability);
    let limits = &config.limits;
    let (proposer, proposer_task) = Proposer::start(
        Arc::new(RaftSink { raft: raft.clone() }),
        ProposerLimits {
            group_commit_wait: Duration::from_millis(config.proposer.group_commit_wait_ms),
            entry_commands_max: limits.entry_commands_max,
            entry_bytes_max: limits.entry_bytes_max,
            queue_max: limits.proposal_queue_max,
            entries_in_flight_max: limits.entries_in_flight_max,
            answer_wait_max: Duration::from_millis(limits.request_deadline_ms),
        },
        metrics.clone(),
        internal.subscribe(),
    );
    let raft_service = RaftService::new(raft.clone());
    let ctx = Arc::new(NodeContext::new(
        config.clone(),
        raft.clone(),
        reader,
        proposer,
        metrics.clone(),
        raft_service.contact(),
        shutdown.subscribe(),
    ));

    // tonic refuses a message above its decoding limit with a bare OUT_OF_RANGE; the service
    // itself refuses anything above `request_bytes_max` with `request_too_large`, naming the
    // limit. So tonic's limit sits well above ours and only stops absurd sizes. Replies (a
    // batch's results) may be larger than the request.
    let ledger = LedgerServer::new(LedgerService::new(ctx.clone()))
        .max_decoding_message_size(
            limits
                .request_bytes_max
                .saturating_mul(4)
                .min(MESSAGE_BYTES_MAX),
        )
        .max_encoding_message_size(MESSAGE_BYTES_MAX);
    let admin = AdminServer::new(AdminService::new(ctx.clone()));
    let raft_service = raft_service.into_server(MESSAGE_BYTES_MAX);
    let deadline = Duration::from_millis(limits.request_deadline_ms);
    let keep_alive_interval = (limits.keep_alive_interval_ms > 0)
        .then(|| Duration::from_millis(limits.keep_alive_interval_ms));
    let keep_alive_timeout = Some(Duration::from_millis(limits.keep_alive_timeout_ms));

    let client_server = {
        // A backstop a second past the request deadline: the handlers answer the deadline
        // themselves, with the ledger's error code (tonic's own timeout answers CANCELLED).
        let mut builder = Server::builder()
            .timeout(deadline + Duration::from_secs(1))
            .http2_keepalive_interval(keep_alive_interval)
            .http2_keepalive_timeout(keep_alive_timeout)
            .max_concurrent_streams(Some(limits.streams_per_connection_max));
        let router = builder
            .add_service(ledger.clone())
            .add_service(admin.clone());
        let router = if config.shared_listener() {
            router.add_service(raft_service.clone())
        } else {
            router
        };
        let incoming = incoming::limited(
            client_listener,
            limits.connections_max,
            shutdown.subscribe(),
        );
        let stop = shutdown.clone();
        tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
                .await
        })
    };
    let peer_server = peer_listener.map(|listener| {
        // Peers: the Raft service, plus Ledger and Admin for requests followers forward. No
        // request timeout layer here: openraft sets its own deadlines per RPC.
        let mut builder = Server::builder()
            .http2_keepalive_interval(keep_alive_interval)
            .http2_keepalive_timeout(keep_alive_timeout)
            .max_concurrent_streams(Some(limits.streams_per_connection_max))
            .initial_stream_window_size(Some(PEER_STREAM_WINDOW_BYTES))
            .initial_connection_window_size(Some(PEER_CONNECTION_WINDOW_BYTES))
            .max_frame_size(Some(PEER_FRAME_BYTES_MAX));
        let router = builder
            .add_service(raft_service)
            .add_service(ledger)
            .add_service(admin);
        let incoming = incoming::limited(listener, limits.connections_max, internal.subscribe());
        let stop = internal.clone();
        tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
                .await
        })
    });
    let http_task = tokio::spawn(http::serve(
        metrics_listener,
        Arc::new(Health { ctx: ctx.clone() }),
        internal.subscribe(),
    ));

    bootstrap(&ctx).await?;
    let init_task = tokio::spawn(keep_initialized(ctx.clone(), internal.clone()));
    let tick_task = tokio::spawn(tick(ctx.clone(), internal.clone()));
    let snapshot_task = tokio::spawn(count_snapshots(ctx.clone(), internal.clone()));
    tracing::info!(
        node_id,
        client_addr = %config.client_addr,
        peer_addr = %config.peer_addr,
        metrics_addr = %config.metrics_addr,
        data_dir = %config.data_dir.display(),
        "tallyd is serving"
    );
    let needed = crate::machine::open_files_needed(limits.connections_max);
    match crate::machine::raise_open_files_limit() {
        Ok((_, after)) if after < needed => tracing::warn!(
            "the open-files limit is {after} (hard limit), below the {needed} that two listeners of limits.connections_max = {} and the node's own files may need: raise it (systemd LimitNOFILE) or lower limits.connections_max",
            limits.connections_max
        ),
        Ok((before, after)) if after > before => {
            tracing::info!("open-files limit raised from {before} to {after} (the hard limit)")
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read or raise the open-files limit"),
    }
    if let Some(advice) = crate::machine::idle_polling_advice() {
        tracing::info!("{advice}");
    }

    // Until a signal, or until Raft stops on a fatal error (a log or state write failed: the
    // disk is full or gone): then nothing can be served, so the node stops and exits with an
    // error for its supervisor to see, instead of running on with nothing behind it.
    let fatal = tokio::select! {
        _ = shutdown.wait() => None,
        fatal = raft_stopped(raft.clone()) => Some(fatal),
    };
    if let Some(fatal) = &fatal {
        tracing::error!(node_id, %fatal, "raft stopped on a fatal error; the node stops");
        shutdown.trigger();
        // The disk failed: the state machine's sled database is never dropped, since sled
        // 0.34's drop syncs its file and panics when that fails (EIO), which turned the
        // documented exit status 1 into a panic (101) with a backtrace. Leaving it is what a
        // crash does, and sled recovers from that at the next start.
        std::mem::forget(ctx.reader.clone());
    }
    tracing::info!(
        node_id,
        "stopping: no new connections; finishing requests in flight"
    );
    let grace = deadline + Duration::from_millis(SHUTDOWN_GRACE_MS);
    match tokio::time::timeout(grace, client_server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%error, "client listener ended with an error"),
        Ok(Err(error)) => tracing::warn!(%error, "client listener task failed"),
        Err(_) => tracing::warn!("requests still in flight after {grace:?}; stopping anyway"),
    }
    internal.trigger();
    // The node's own tasks (proposer, ticks, initialization) may be waiting on a proposal that
    // cannot commit (a leader whose followers were stopped first): they get a short grace, then
    // are cancelled. Such a proposal was never acknowledged to anyone; if it commits later
    // under another leader, that is as if it had been proposed then.
    let tasks_by = tokio::time::Instant::now() + Duration::from_millis(SHUTDOWN_GRACE_MS);
    for (name, task) in [
        ("proposer", proposer_task),
        ("initialization", init_task),
        ("tick", tick_task),
        ("snapshot counter", snapshot_task),
    ] {
        finish_or_cancel(name, task, tasks_by).await;
    }
    match tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), raft.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "raft shutdown"),
        Err(_) => {
            tracing::warn!("raft did not stop within {SHUTDOWN_GRACE_MS} ms; stopping anyway")
        }
    }
    if let Some(peer_server) = peer_server {
        let _ = tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), peer_server).await;
    }
    let _ = http_task.await;
    tracing::info!(node_id, "stopped");
    match fatal {
        None => Ok(()),
        Some(fatal) => Err(anyhow::anyhow!(
            "raft stopped on a fatal error: {fatal} (see the log above; restart the node once the cause is fixed)"
        )),
    }
}

/// Waits for `task` until `by`, then cancels it (saying so).
async fn finish_or_cancel(
    name: &str,
    mut task: tokio::task::JoinHandle<()>,
    by: tokio::time::Instant,
) {
    if tokio::time::timeout_at(by, &mut task).await.is_err() {
        tracing::info!("the {name} task still waits on the log (nothing can commit); cancelled");
        task.abort();
    }
}

/// Resolves with Raft's fatal error once it has stopped on one (never while it runs).
async fn raft_stopped(raft: crate::node::Raft) -> String {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            return fatal.to_string();
        }
        if metrics.changed().await.is_err() {
            // Raft's core task ended without saying why: it panicked (the panic is in the log
            // above) or was torn down.
            return "raft's core task ended unexpectedly (a panic, printed above this line)"
                .to_string();
        }
    }
}

/// Creates the cluster from `initial_members`, exactly once: only the member with the lowest id
/// does it, and only when its store is empty. The others wait for it to contact them.
async fn bootstrap(ctx: &NodeContext) -> anyhow::Result<()> {
    let config = &ctx.config;
    if ctx
        .raft
        .is_initialized()
        .await
        .context("reading raft state")?
    {
        tracing::info!(
            node_id = config.node_id,
            "rejoining the cluster with the data in the store"
        );
        return Ok(());
    }
    if config.bootstrap_node_id() != Some(config.node_id) {
        match config.bootstrap_node_id() {
            Some(creator) => tracing::info!(
                node_id = config.node_id,
                "empty store; waiting to be contacted by the cluster (node {creator} creates it)"
            ),
            None => tracing::info!(
                node_id = config.node_id,
                "empty store; waiting for an operator to add this node (tally cluster add-learner)"
            ),
        }
        // A voter whose data directory was lost and that was restarted without being removed
        // first votes only once a leader has caught it up (tally-raft's RaftService), so it
        // cannot elect a node that missed acknowledged entries.
        return Ok(());
    }
    let members: BTreeMap<u64, BasicNode> = config
        .initial_members
        .iter()
        .map(|member| {
            (
                member.id,
                BasicNode {
                    addr: member.peer_addr.clone(),
                },
            )
        })
        .collect();
    match ctx.raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(node_id = config.node_id, voters = ?config.initial_members.iter().map(|m| m.id).collect::<Vec<_>>(), "created a new cluster");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(error) => Err(anyhow::anyhow!("creating the cluster failed: {error}")),
    }
}

/// On the leader, proposes `Init` until the ledger has applied one. Idempotent: if another
/// leader's Init already committed, core rejects the second one and nothing changes.
async fn keep_initialized(ctx: Arc<NodeContext>, stop: Shutdown) {
    let mut interval = tokio::time::interval(Duration::from_millis(INIT_CHECK_INTERVAL_MS));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopped = stop.subscribe();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        if ctx.ledger_initialized() {
            return;
        }
        if !ctx.is_leader() {
            continue;
        }
        // The leader may not have applied everything committed before its election (an Init
        // from the previous leader among it): wait for that first.
        if ctx.read_barrier().await.is_err() || ctx.ledger_initialized() {
            continue;
        }
        let init = Command::Init(ctx.config.ledger_config());
        match ctx.proposer.propose(init, 64).await {
            Ok(committed) => match committed.outcome {
                Outcome::Applied(Applied::Initialized) => {
                    tracing::info!(log_index = committed.log_index, "ledger initialized");
                    return;
                }
                other => {
                    tracing::info!(outcome = ?other, "Init not applied (already initialized?)")
                }
            },
            Err(error) => tracing::debug!(%error, "proposing Init"),
        }
    }
}

/// On the leader, proposes a `Tick` about every `tick_interval_ms`, so time-driven transitions
/// (expiry, resets, hold expiry) happen without waiting for the next touch of an account.
async fn tick(ctx: Arc<NodeContext>, stop: Shutdown) {
    let mut interval =
        tokio::time::interval(Duration::from_millis(ctx.config.proposer.tick_interval_ms));
    // A tick that is late is not made up: one tick applies everything due anyway.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopped = stop.subscribe();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        if ctx.is_leader() && ctx.ledger_initialized() {
            if let Err(error) = ctx.proposer.propose(Command::Tick, 16).await {
                tracing::debug!(%error, "tick not applied");
            }
        }
    }
}

/// Counts snapshots (built or installed) for `/metrics` by watching openraft's metrics.
async fn count_snapshots(ctx: Arc<NodeContext>, stop: Shutdown) {
    let mut raft_metrics = ctx.raft.metrics();
    let mut last = raft_metrics.borrow_and_update().snapshot;
    let mut stopped = stop.subscribe();
    loop {
        tokio::select! {
            changed = raft_metrics.changed() => if changed.is_err() { return },
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let snapshot = raft_metrics.borrow_and_update().snapshot;
        if snapshot != last && snapshot.is_some() {
            ctx.metrics.record_snapshot_built();
            tracing::info!(index = ?snapshot.map(|log_id| log_id.index), "snapshot");
        }
        last = snapshot;
    }
}
