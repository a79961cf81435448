//! The public `Ledger` gRPC service.
//!
//! Writes: validate at the edge (nothing malformed reaches the log), then on the leader hand
//! the command to the proposer; on a follower forward the request to the leader, whose reply
//! (and its `tally-leader-id` / `tally-leader-addr` metadata) comes back unchanged.
//! Reads: a read barrier first unless the client asked for a follower read, then the applied
//! state of this node, with `ReadInfo` saying at which index it was read.

use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use tally_core::{AccountId, BookId, Command, LedgerState, Outcome, Reason};
use tally_proto::convert;
use tally_proto::error::{CODE_METADATA_KEY, LEADER_ADDR_METADATA_KEY, LEADER_ID_METADATA_KEY};
use tally_proto::ingest::{self, ledger_client::LedgerClient, RecordUsageBatchWire};
use tally_proto::v1;
use tally_proto::{ErrorCode, TallyError, ToCommand};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::node::{NodeContext, FORWARDED_METADATA_KEY};
use crate::precheck::precheck;
use crate::proposer::{BoxFuture, ProposeError};

/// Ledger events sent to a stream before the next read of the store.
const STREAM_EVENTS_PAGE: usize = 256;
/// Events buffered per stream while the client reads slowly.
const STREAM_EVENTS_BUFFER: usize = 1_024;

#[derive(Clone)]
pub struct LedgerService {
    ctx: Arc<NodeContext>,
}

impl LedgerService {
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        LedgerService { ctx }
    }
}

/// The stable code a reply travelled with (`ok` for a success), for metrics.
fn status_code_name<T>(result: &Result<Response<T>, Status>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(status) => status
            .metadata()
            .get(CODE_METADATA_KEY)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| TallyError::from_status(status).code.as_str().to_string()),
    }
}

type Forward<Req, Reply> =
    fn(LedgerClient<Channel>, Request<Req>) -> BoxFuture<'static, Result<Response<Reply>, Status>>;

impl LedgerService {
    /// The whole life of a write; see the module docs.
    async fn write<Req, Reply>(
        &self,
        method: &'static str,
        request: Request<Req>,
        forward: Forward<Req, Reply>,
        reply: impl FnOnce(&Outcome, v1::WriteInfo) -> Result<Reply, TallyError>,
    ) -> Result<Response<Reply>, Status>
    where
        Req: ToCommand + Message + Send + 'static,
        Reply: Send + 'static,
    {
        let started = Instant::now();
        // The request deadline, answered as `deadline_exceeded` with the ledger's error details
        // (the server's own timeout, a second later, is only a backstop): the proposal may
        // still commit, so the client retries with the same ids.
        let result = match tokio::time::timeout(
            self.ctx.request_deadline(),
            self.write_inner(request, forward, reply),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(TallyError::new(
                ErrorCode::DeadlineExceeded,
                "the write did not complete before the request deadline; its outcome is unknown: retry with the same ids",
            )
            .to_status()),
        };
        self.ctx
            .metrics
            .record_request(method, &status_code_name(&result), started.elapsed());
        result
    }

    async fn write_inner<Req, Reply>(
        &self,
        request: Request<Req>,
        forward: Forward<Req, Reply>,
        reply: impl FnOnce(&Outcome, v1::WriteInfo) -> Result<Reply, TallyError>,
    ) -> Result<Response<Reply>, Status>
    where
        Req: ToCommand + Message + Send + 'static,
        Reply: Send + 'static,
    {
        let ctx = &self.ctx;
        let was_forwarded = request.metadata().get(FORWARDED_METADATA_KEY).is_some();
        let message = request.into_inner();
        let size_bytes = message.encoded_len();
        let limits = &ctx.config.limits;
        if size_bytes > limits.request_bytes_max {
            return Err(TallyError::request_too_large(format!(
                "the request is {size_bytes} bytes; at most {} allowed (limits.request_bytes_max)",
                limits.request_bytes_max
            ))
            .to_status());
        }
        let command = message.to_command().map_err(|error| error.to_status())?;
        if let Command::UsageBatch { events, .. } = &command {
            if events.len() > limits.batch_events_max {
                return Err(TallyError::request_too_large(format!(
                    "events: the batch holds {} events; this node accepts at most {} (limits.batch_events_max)",
                    events.len(),
                    limits.batch_events_max
                ))
                .to_status());
            }
        }
        if !ctx.is_leader() {
            if was_forwarded {
                // The node that forwarded this thought we lead; we do not (any more). Never
                // forward twice: the client goes to the leader named here.
                return Err(ctx.not_leader_error().to_status());
            }
            return self.forward(message, forward).await;
        }
        // Init must be the first command the ledger applies; until the leader has applied it,
        // nothing else is proposed. What cannot succeed is answered from the applied state and
        // never reaches the log; `log_index` then names the applied index the command was
        // checked against. Both read the state without blocking this runtime thread while an
        // entry is being applied.
        let mut refused = self.precheck_applied(&command).await?;
        if refused.is_some() {
            // Before refusing, make sure this node's state holds every acknowledged write: a
            // leader elected a moment ago applies its predecessor's last entries only once its
            // own first entry commits, and a deposed leader that has not heard yet lacks its
            // successor's. The read barrier confirms leadership with a quorum and waits for
            // the apply (it fails, retryably, on a node that is no longer the leader).
            ctx.read_barrier()
                .await
                .map_err(|error| error.to_status())?;
            refused = self.precheck_applied(&command).await?;
        }
        if let Some((outcome, write)) = refused {
            if let Some(rejection) = outcome.rejection() {
                ctx.metrics.record_rejection(rejection.code());
            }
            let reply = reply(&outcome, write).map_err(|error| error.to_status())?;
            let mut response = Response::new(reply);
            self.name_leader(response.metadata_mut());
            return Ok(response);
        }
        match ctx.proposer.propose(command, size_bytes).await {
            Ok(committed) => {
                let write = v1::WriteInfo {
                    log_index: committed.log_index,
                    at_ms: committed.at_ms,
                    leader_id: ctx.node_id(),
                };
                let reply = reply(&committed.outcome, write).map_err(|error| error.to_status())?;
                let mut response = Response::new(reply);
                self.name_leader(response.metadata_mut());
                Ok(response)
            }
            // openraft refused the entry without appending it (or a new leader truncated it):
            // it was not applied, so forwarding it to the new leader cannot apply it twice.
            Err(ProposeError::NotLeader { .. }) if !was_forwarded => {
                self.forward(message, forward).await
            }
            Err(error) => Err(ctx.propose_error(error).to_status()),
        }
    }

    /// The precheck's refusal of `command` on the applied state, with the applied index and
    /// ledger time it was checked against; `NotInitialized` until Init is applied.
    async fn precheck_applied(
        &self,
        command: &Command,
    ) -> Result<Option<(Outcome, v1::WriteInfo)>, Status> {
        let ctx = &self.ctx;
        ctx.reader
            .with_applied_state(|state, applied| {
                if !state.is_initialized() {
                    return Err(TallyError::new(
                        ErrorCode::NotInitialized,
                        "the cluster has not applied its Init entry yet; retry in a moment",
                    ));
                }
                Ok(precheck(command, state).map(|outcome| {
                    let write = v1::WriteInfo {
                        log_index: applied.map(|log_id| log_id.index).unwrap_or(0),
                        at_ms: state.now_ms(),
                        leader_id: ctx.node_id(),
                    };
                    (outcome, write)
                }))
            })
            .await
            .map_err(|error| error.to_status())
    }

    async fn forward<Req, Reply>(
        &self,
        message: Req,
        forward: Forward<Req, Reply>,
    ) -> Result<Response<Reply>, Status>
    where
        Req: Message + Send + 'static,
    {
        let ctx = &self.ctx;
        let (leader, channel) = ctx.leader_channel().map_err(|error| error.to_status())?;
        // The leader encodes replies up to the server's limit (a large batch's every-result
        // reply, after it committed): read as much as it may send.
        let client = LedgerClient::new(channel)
            .max_decoding_message_size(tally_raft::MESSAGE_BYTES_MAX)
            .max_encoding_message_size(ctx.config.limits.request_bytes_max);
        let mut request = Request::new(message);
        request.set_timeout(ctx.request_deadline());
        ctx.mark_forwarded(&mut request);
        ctx.metrics.record_forwarded();
        match forward(client, request).await {
            Ok(response) => {
                if let Some(addr) = response
                    .metadata()
                    .get(LEADER_ADDR_METADATA_KEY)
                    .and_then(|value| value.to_str().ok())
                {
                    ctx.learn_client_addr(leader, addr);
                }
                Ok(response)
            }
            Err(status) => {
                // A status without Tally details is a transport failure: the request may or
                // may not have reached the leader. A reset or a GOAWAY (an HTTP/2 protocol
                // error came back as a permanent `internal`) is `unavailable`: the client
                // retries it with the same ids, which settles it once. What the transport
                // says of the request itself (tonic's message limit, a method an older leader
                // lacks) keeps its own code. Name the leader.
                let mut error = TallyError::from_status(&status);
                if status.metadata().get(CODE_METADATA_KEY).is_none() {
                    let unknown = if error.outcome_unknown() {
                        error.code = ErrorCode::Unavailable;
                        " (the outcome is unknown; retry with the same ids)"
                    } else {
                        ""
                    };
                    error.message = format!(
                        "forwarding to leader {leader} failed{unknown}: {}",
                        status.message()
                    );
                    error.leader_id = Some(leader);
                    error.leader_addr = ctx.client_addr_of(leader);
                }
                Err(error.to_status())
            }
        }
    }

    /// Names this node (the leader) in reply metadata so clients can come here directly.
    fn name_leader(&self, metadata: &mut tonic::metadata::MetadataMap) {
        metadata.insert(
            LEADER_ID_METADATA_KEY,
            MetadataValue::from(self.ctx.node_id()),
        );
        if let Some(addr) = self.ctx.client_addr_of(self.ctx.node_id()) {
            if let Ok(value) = addr.parse() {
                metadata.insert(LEADER_ADDR_METADATA_KEY, value);
            }
        }
    }

    /// Runs `read` on the applied state after the barrier `consistency` asks for.
    async fn read<T>(
        &self,
        method: &'static str,
        consistency: i32,
        read: impl FnOnce(&LedgerState) -> Result<T, TallyError>,
    ) -> Result<(T, v1::ReadInfo), Status> {
        let started = Instant::now();
        let result = self
            .read_inner(consistency, read)
            .await
            .map_err(|error| error.to_status());
        let code = match &result {
            Ok(_) => "ok".to_string(),
            Err(status) => status_code_name::<()>(&Err(status.clone())),
        };
        self.ctx
            .metrics
            .record_request(method, &code, started.elapsed());
        result
    }

    async fn read_inner<T>(
        &self,
        consistency: i32,
        read: impl FnOnce(&LedgerState) -> Result<T, TallyError>,
    ) -> Result<(T, v1::ReadInfo), TallyError> {
        let consistency = convert::consistency(consistency)?;
        if consistency == v1::Consistency::Linearizable {
            self.ctx.read_barrier().await?;
        }
        self.ctx
            .reader
            .with_applied_state(|state, applied| {
                let value = read(state)?;
                let applied_index = applied.map(|log_id| log_id.index).unwrap_or(0);
                Ok((
                    value,
                    self.ctx
                        .read_info(consistency, applied_index, state.now_ms()),
                ))
            })
            .await
    }
}

/// `no_rate` for a book (`what`) whose first version (in force from `first_from`) is after
/// `at_ms`; `None` when the book has no version at all.
fn no_version_at(what: &str, first_from: Option<u64>, at_ms: u64) -> Option<TallyError> {
    let first_from = first_from?;
    Some(
        TallyError::new(
            ErrorCode::NoRate,
            format!(
                "{what} has no version in force at {} (the first takes effect at {})",
                tally_core::format_utc(at_ms),
                tally_core::format_utc(first_from)
            ),
        )
        .with_detail("at_ms", at_ms.to_string())
        .with_detail("first_from_ms", first_from.to_string()),
    )
}

fn unknown_account(account: &AccountId) -> TallyError {
    TallyError::from_reason(&Reason::UnknownAccount {
        account: account.clone(),
    })
}

#[tonic::async_trait]
impl ingest::ledger_server::Ledger for LedgerService {
    async fn create_asset(
        &self,
        request: Request<v1::CreateAssetRequest>,
    ) -> Result<Response<v1::CreateAssetReply>, Status> {
        self.write(
            "create_asset",
            request,
            |mut client, request| Box::pin(async move { client.create_asset(request).await }),
            convert::create_asset_reply,
        )
        .await
    }
    async fn create_account(
        &self,
        request: Request<v1::CreateAccountRequest>,
    ) -> Result<Response<v1::CreateAccountReply>, Status> {
        self.write(
            "create_account",
            request,
            |mut client, request| Box::pin(async move { client.create_account(request).await }),
            convert::create_account_reply,
        )
        .await
    }
    async fn update_account(
        &self,
        request: Request<v1::UpdateAccountRequest>,
    ) -> Result<Response<v1::UpdateAccountReply>, Status> {
        self.write(
            "update_account",
            request,
            |mut client, request| Box::pin(async move { client.update_account(request).await }),
            convert::update_account_reply,
        )
        .await
    }
    async fn set_account_status(
        &self,
        request: Request<v1::SetAccountStatusRequest>,
    ) -> Result<Response<v1::SetAccountStatusReply>, Status> {
        self.write(
            "set_account_status",
            request,
            |mut client, request| Box::pin(async move { client.set_account_status(request).await }),
            convert::set_account_status_reply,
        )
        .await
    }
    async fn add_grant(
        &self,
        request: Request<v1::AddGrantRequest>,
    ) -> Result<Response<v1::AddGrantReply>, Status> {
        self.write(
            "add_grant",
            request,
            |mut client, request| Box::pin(async move { client.add_grant(request).await }),
            convert::add_grant_reply,
        )
        .await
    }
    async fn void_grant(
        &self,
        request: Request<v1::VoidGrantRequest>,
    ) -> Result<Response<v1::VoidGrantReply>, Status> {
        self.write(
            "void_grant",
            request,
            |mut client, request| Box::pin(async move { client.void_grant(request).await }),
            convert::void_grant_reply,
        )
        .await
    }
    async fn publish_prices(
        &self,
        request: Request<v1::PublishPricesRequest>,
    ) -> Result<Response<v1::PublishPricesReply>, Status> {
        self.write(
            "publish_prices",
            request,
            |mut client, request| Box::pin(async move { client.publish_prices(request).await }),
            convert::publish_prices_reply,
        )
        .await
    }
    async fn publish_costs(
        &self,
        request: Request<v1::PublishCostsRequest>,
    ) -> Result<Response<v1::PublishCostsReply>, Status> {
        self.write(
            "publish_costs",
            request,
            |mut client, request| Box::pin(async move { client.publish_costs(request).await }),
            convert::publish_costs_reply,
        )
        .await
    }
    async fn record_usage(
        &self,
        request: Request<v1::RecordUsageRequest>,
    ) -> Result<Response<v1::RecordUsageReply>, Status> {
        self.write(
            "record_usage",
            request,
            |mut client, request| Box::pin(async move { client.record_usage(request).await }),
            |outcome, write| Ok(convert::record_usage_reply(outcome, write)),
        )
        .await
    }
    async fn authorize(
        &self,
        request: Request<v1::AuthorizeRequest>,
    ) -> Result<Response<v1::AuthorizeReply>, Status> {
        self.write(
            "authorize",
            request,
            |mut client, request| Box::pin(async move { client.authorize(request).await }),
            convert::authorize_reply,
        )
        .await
    }
    async fn release(
        &self,
        request: Request<v1::ReleaseRequest>,
    ) -> Result<Response<v1::ReleaseReply>, Status> {
        self.write(
            "release",
            request,
            |mut client, request| Box::pin(async move { client.release(request).await }),
            convert::release_reply,
        )
        .await
    }

    async fn record_usage_batch(
        &self,
        request: Request<RecordUsageBatchWire>,
    ) -> Result<Response<v1::RecordUsageBatchReply>, Status> {
        // The request's top level; its events are read by `to_command` in `write`, which also
        // refuses malformed bytes, naming the field (then these two are never used).
        let (event_count, listed) = request
            .get_ref()
            .batch()
            .map(|batch| (batch.len(), batch.reply))
            .unwrap_or_default();
        self.write(
            "record_usage_batch",
            request,
            |mut client, request| Box::pin(async move { client.record_usage_batch(request).await }),
            move |outcome, write| {
                convert::record_usage_batch_reply(outcome, event_count, listed, write)
            },
        )
        .await
    }

    async fn list_assets(
        &self,
        request: Request<v1::ListAssetsRequest>,
    ) -> Result<Response<v1::ListAssetsReply>, Status> {
        // A follower's read barrier arrives here marked as forwarded: only the leader can
        // answer it; a node that lost leadership says so instead of asking yet another node.
        if request.metadata().get(FORWARDED_METADATA_KEY).is_some() && !self.ctx.is_leader() {
            return Err(self.ctx.not_leader_error().to_status());
        }
        let request = request.into_inner();
        let (assets, read) = self
            .read("list_assets", request.consistency, |state| {
                Ok(state.assets().iter().map(convert::asset).collect())
            })
            .await?;
        Ok(Response::new(v1::ListAssetsReply {
            assets,
            read: Some(read),
        }))
    }

    async fn get_account(
        &self,
        request: Request<v1::GetAccountRequest>,
    ) -> Result<Response<v1::GetAccountReply>, Status> {
        let request = request.into_inner();
        let account = AccountId::parse_as("account", request.account.as_str())
            .map_err(|error| TallyError::from(error).to_status())?;
        let (account, read) = self
            .read("get_account", request.consistency, |state| {
                state
                    .account(&account)
                    .map(|view| convert::account(&view))
                    .ok_or_else(|| unknown_account(&account))
            })
            .await?;
        Ok(Response::new(v1::GetAccountReply {
            account: Some(account),
            read: Some(read),
        }))
    }

    async fn get_prices(
        &self,
        request: Request<v1::GetPricesRequest>,
    ) -> Result<Response<v1::GetPricesReply>, Status> {
        let request = request.into_inner();
        let book = BookId::parse_as("book", request.book.as_str())
            .map_err(|error| TallyError::from(error).to_status())?;
        let (version, read) = self
            .read("get_prices", request.consistency, |state| {
                if let Some(view) = state.price_version(&book, request.at_ms) {
                    return Ok(convert::price_version(&view));
                }
                Err(no_version_at(
                    &format!("price book {book}"),
                    state.price_first_effective_from(&book),
                    request.at_ms.unwrap_or(state.now_ms()),
                )
                .unwrap_or_else(|| {
                    TallyError::from_reason(&Reason::UnknownPriceBook { book: book.clone() })
                }))
            })
            .await?;
        Ok(Response::new(v1::GetPricesReply {
            version: Some(version),
            read: Some(read),
        }))
    }

    async fn get_costs(
        &self,
        request: Request<v1::GetCostsRequest>,
    ) -> Result<Response<v1::GetPricesReply>, Status> {
        let request = request.into_inner();
        let (version, read) = self
            .read("get_costs", request.consistency, |state| {
                if let Some(view) = state.cost_version(request.at_ms) {
                    return Ok(convert::price_version(&view));
                }
                Err(no_version_at(
                    "the cost book",
                    state.cost_first_effective_from(),
                    request.at_ms.unwrap_or(state.now_ms()),
                )
                .unwrap_or_else(|| {
                    TallyError::new(
                        ErrorCode::UnknownPriceBook,
                        "no cost book: no costs were published (events are costed by what they carry, else 0)",
                    )
                }))
            })
            .await?;
        Ok(Response::new(v1::GetPricesReply {
            version: Some(version),
            read: Some(read),
        }))
    }

    async fn history(
        &self,
        request: Request<v1::HistoryRequest>,
    ) -> Result<Response<v1::HistoryReply>, Status> {
        let request = request.into_inner();
        let account = AccountId::parse_as("account", request.account.as_str())
            .map_err(|error| TallyError::from(error).to_status())?;
        let limit = convert::history_limit(request.limit)
            .map_err(|error| TallyError::from(error).to_status())?;
        let (known, read) = self
            .read("history", request.consistency, |state| {
                Ok(state.account(&account).is_some())
            })
            .await?;
        if !known {
            return Err(unknown_account(&account).to_status());
        }
        // The journal index is persisted in the same batch as `last_applied`, so it is at least
        // as fresh as the state the barrier waited for.
        let history = |before_seq: Option<u64>, limit: usize| {
            self.ctx
                .reader
                .history(&account, before_seq, limit)
                .map_err(|error| history_unreadable(self.ctx.node_id(), &error))
        };
        let entries = history(request.before_seq, limit)?;
        // A full page names where the next one starts only when there is one: the page can
        // end exactly at the account's first entry.
        let next_before_seq = match entries.last() {
            Some(last) if entries.len() == limit => {
                (!history(Some(last.seq), 1)?.is_empty()).then_some(last.seq)
            }
            _ => None,
        };
        Ok(Response::new(v1::HistoryReply {
            entries: entries.iter().map(convert::journal_entry).collect(),
            next_before_seq,
            read: Some(read),
        }))
    }

    async fn report(
        &self,
        request: Request<v1::ReportRequest>,
    ) -> Result<Response<v1::ReportReply>, Status> {
        let request = request.into_inner();
        let account = request
            .account
            .as_ref()
            .map(|text| AccountId::parse_as("account", text.as_str()))
            .transpose()
            .map_err(|error| TallyError::from(error).to_status())?;
        let month = request
            .month
            .as_ref()
            .map(|text| convert::parse_month("month", text))
            .transpose()
            .map_err(|error| TallyError::from(error).to_status())?;
        let (report, read) = self
            .read("report", request.consistency, |state| {
                match state.report(account.as_ref(), month) {
                    Some(view) => Ok(convert::report(&view)),
                    None => match &account {
                        Some(account) => Err(unknown_account(account)),
                        None => Ok(v1::Report {
                            month: month.map(convert::month_text),
                            ..Default::default()
                        }),
                    },
                }
            })
            .await?;
        Ok(Response::new(v1::ReportReply {
            report: Some(report),
            read: Some(read),
        }))
    }

    type StreamEventsStream =
        tokio_stream::wrappers::ReceiverStream<Result<v1::LedgerEvent, Status>>;

    async fn stream_events(
        &self,
        request: Request<v1::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let request = request.into_inner();
        let consistency = convert::consistency(request.consistency)
            .map_err(|error| TallyError::from(error).to_status())?;
        if !request.follow && consistency == v1::Consistency::Linearizable {
            // "Caught up" must mean with the cluster: a node behind (or removed from the
            // cluster) would end the stream early, as if there were no newer events.
            self.ctx
                .read_barrier()
                .await
                .map_err(|error| error.to_status())?;
        }
        let reader = self.ctx.reader.clone();
        let mut next_seq = request.from_seq.max(1);
        let follow = request.follow;
        let (sender, receiver) = tokio::sync::mpsc::channel(STREAM_EVENTS_BUFFER);
        let mut changes = reader.subscribe_events();
        let mut stopping = self.ctx.shutdown_signal();
        self.ctx
            .metrics
            .record_request("stream_events", "ok", std::time::Duration::ZERO);
        tokio::spawn(async move {
            loop {
                changes.borrow_and_update();
                let events = match reader.events_from(next_seq, STREAM_EVENTS_PAGE) {
                    Ok(events) => events,
                    Err(error) => {
                        let _ = sender
                            .send(Err(TallyError::internal(format!(
                                "reading events: {error}"
                            ))
                            .to_status()))
                            .await;
                        return;
                    }
                };
                if events.is_empty() {
                    if !follow {
                        return;
                    }
                    tokio::select! {
                        changed = changes.changed() => if changed.is_err() { return },
                        _ = sender.closed() => return,
                        _ = stopping.wait_for(|stop| *stop) => return,
                    }
                    continue;
                }
                for event in &events {
                    // Seqs run from 1 without gaps on every node (a snapshot carries the
                    // events before it). A missing row is damage: say so rather than skip it,
                    // as a consumer acting on every event (a low-balance alert) must not miss
                    // one.
                    if event.seq != next_seq {
                        let _ = sender
                            .send(Err(TallyError::internal(format!(
                                "this node holds no ledger events {next_seq}..={}: its next \
                                 is {}; read them from another node",
                                event.seq.saturating_sub(1),
                                event.seq
                            ))
                            .with_detail("from_seq", next_seq.to_string())
                            .to_status()))
                            .await;
                        return;
                    }
                    next_seq = event.seq + 1;
                    if sender.send(Ok(convert::ledger_event(event))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }
}

/// A history read that failed on this node: its journal or the index of it in `state/` is
/// damaged or gone (the ledger state agrees across nodes; only this node's copy of history is
/// broken). Answered `unavailable`, so clients retry on another node, which can serve it; an
/// ERROR at most once a minute says which node needs Recovery.
fn history_unreadable(node_id: u64, error: &dyn std::fmt::Display) -> Status {
    static LOGGED: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let mut logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
    if logged.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(60)) {
        *logged = Some(std::time::Instant::now());
        tracing::error!(
            %error,
            "this node cannot read its history (its journal.dat or state/ is damaged); reads of \
             history are sent to other nodes; this node needs Recovery (README): remove it and \
             add it again on an empty data directory (logged once a minute)"
        );
    }
    TallyError::unavailable(format!(
        "node {node_id} cannot read its history ({error}); another node can serve it"
    ))
    .to_status()
}
