//! [`Client`]: one handle on a cluster. Routes each call to the leader it knows (learned from
//! replies and `not_leader` hints), retries transient failures with the very same request, and
//! bounds every attempt and every call by a deadline.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tally_proto::error::LEADER_ADDR_METADATA_KEY;
use tally_proto::v1;
use tally_proto::v1::admin_client::AdminClient;
use tally_proto::v1::ledger_client::LedgerClient;
use tally_proto::{ErrorCode, TallyError, ToCommand};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::config::{normalize_endpoint, ClientConfig};
use crate::error::{checked_locally, ClientError};
use crate::events::EventSubscription;
use crate::unary::{
    Connection, KeepAlive, AUTHORIZE_PATH, GET_ACCOUNT_PATH, RECORD_USAGE_BATCH_PATH,
    RECORD_USAGE_PATH, RELEASE_PATH,
};
use crate::usage::{BatchSummary, EventOutcome, UsageOutcome};

/// Extra time the local timer allows beyond the `grpc-timeout` the server enforces, so that the
/// server's own `deadline_exceeded` (with its message) usually arrives first.
const LOCAL_DEADLINE_GRACE_MS: u64 = 250;

/// Attempts of a call addressed to one particular node (status, snapshot, hash of that node).
const PINNED_ATTEMPTS_MAX: u32 = 3;

/// Codes worth another attempt with the same request. `not_initialized` is only ever seen while
/// a new cluster applies its first entry.
fn is_retryable(code: ErrorCode) -> bool {
    code.is_transient() || code == ErrorCode::NotInitialized
}

/// A cheap-to-clone handle on a Tally cluster. Needs a Tokio runtime.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    request_timeout: Duration,
}

struct Shared {
    config: ClientConfig,
    endpoints: Vec<String>,
    route: Mutex<Route>,
}

#[derive(Default)]
struct Route {
    /// The node believed to lead (or at least to answer) right now.
    leader: Option<String>,
    /// Next endpoint to try when no leader is known.
    cursor: usize,
    /// tonic channels (every call but usage), opened lazily.
    channels: HashMap<String, Channel>,
    /// HTTP/2 connections for the calls on an application's request path (usage, authorize,
    /// release, get account; see `crate::unary`); a slot is replaced once its connection has ended.
    connections: HashMap<String, Arc<tokio::sync::OnceCell<Connection>>>,
}

/// Where one attempt of a call goes, and its deadline.
pub(crate) struct Attempt {
    pub endpoint: String,
    pub timeout: Duration,
}

impl Client {
    /// A client over `config.endpoints` (at least one). Connections open lazily on first use.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::Endpoint {
                endpoint: String::new(),
                reason: "is missing: give at least one node address".to_string(),
            });
        }
        let mut endpoints = Vec::new();
        for endpoint in &config.endpoints {
            let normalized =
                normalize_endpoint(endpoint).map_err(|reason| ClientError::Endpoint {
                    endpoint: endpoint.clone(),
                    reason,
                })?;
            if !endpoints.contains(&normalized) {
                endpoints.push(normalized);
            }
        }
        let request_timeout = config.request_timeout();
        Ok(Client {
            shared: Arc::new(Shared {
                config,
                endpoints,
                route: Mutex::new(Route::default()),
            }),
            request_timeout,
        })
    }

    /// The same client with another per-attempt deadline for the calls made through it.
    pub fn with_request_timeout(&self, timeout: Duration) -> Client {
        Client {
            shared: self.shared.clone(),
            request_timeout: timeout,
        }
    }

    /// The configured endpoints, normalised to `host:port`.
    pub fn endpoints(&self) -> &[String] {
        &self.shared.endpoints
    }

    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// The node the client currently sends calls to first, when it knows one.
    pub fn known_leader(&self) -> Option<String> {
        self.route().leader.clone()
    }

    fn route(&self) -> std::sync::MutexGuard<'_, Route> {
        self.shared
            .route
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pick(&self, hint: Option<String>) -> String {
        if let Some(hint) = hint {
            return hint;
        }
        let mut route = self.route();
        if let Some(leader) = &route.leader {
            return leader.clone();
        }
        let endpoints = &self.shared.endpoints;
        let endpoint = endpoints[route.cursor % endpoints.len()].clone();
        route.cursor = route.cursor.wrapping_add(1);
        endpoint
    }

    fn remember(&self, answered: &str, metadata: &MetadataMap) {
        let leader = metadata
            .get(LEADER_ADDR_METADATA_KEY)
            .and_then(|value| value.to_str().ok())
            .and_then(|addr| normalize_endpoint(addr).ok())
            .unwrap_or_else(|| answered.to_string());
        self.route().leader = Some(leader);
    }

    fn forget(&self, failed: &str) {
        let mut route = self.route();
        if route.leader.as_deref() == Some(failed) {
            route.leader = None;
        }
    }

    fn channel(&self, endpoint: &str) -> Result<Channel, ClientError> {
        let mut route = self.route();
        if let Some(channel) = route.channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let config = &self.shared.config;
        let mut builder = Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|error| ClientError::Endpoint {
                endpoint: endpoint.to_string(),
                reason: error.to_string(),
            })?
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .tcp_nodelay(true);
        if config.keep_alive_interval_ms > 0 {
            // Pings while a call or stream is open: a followed event stream from a node that
            // went silent ends and is resumed elsewhere instead of waiting forever.
            builder = builder
                .http2_keep_alive_interval(Duration::from_millis(config.keep_alive_interval_ms))
                .keep_alive_timeout(Duration::from_millis(config.keep_alive_timeout_ms.max(1)));
        }
        let channel = builder.connect_lazy();
        route.channels.insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }

    /// The request-path connection to `endpoint`, opened (or opened again, once the last one ended)
    /// when needed. Callers share it, as they share a channel.
    async fn connection(&self, endpoint: &str) -> Result<Connection, Status> {
        let slot = {
            let mut route = self.route();
            let slot = route.connections.entry(endpoint.to_string()).or_default();
            if slot.get().is_some_and(Connection::is_closed) {
                *slot = Arc::default();
            }
            slot.clone()
        };
        let config = &self.shared.config;
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        let keep_alive = (config.keep_alive_interval_ms > 0).then(|| KeepAlive {
            interval: Duration::from_millis(config.keep_alive_interval_ms),
            timeout: Duration::from_millis(config.keep_alive_timeout_ms.max(1)),
        });
        slot.get_or_try_init(|| async {
            Connection::open_keeping_alive(endpoint, connect_timeout, keep_alive)
                .await
                .map(|connection| connection.with_reply_bytes_max(config.reply_bytes_max))
        })
        .await
        .cloned()
    }

    pub(crate) fn ledger(&self, channel: Channel) -> LedgerClient<Channel> {
        let bytes_max = self.shared.config.reply_bytes_max;
        LedgerClient::new(channel)
            .max_decoding_message_size(bytes_max)
            .max_encoding_message_size(bytes_max)
    }

    fn admin(&self, channel: Channel) -> AdminClient<Channel> {
        AdminClient::new(channel)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let config = &self.shared.config;
        let exponent = attempt.saturating_sub(1).min(16);
        let base = config
            .backoff_ms_initial
            .saturating_mul(1 << exponent)
            .min(config.backoff_ms_max);
        // Jitter so that many clients retrying after one leader change do not move in step.
        let jittered = rand::thread_rng().gen_range(base / 2..=base.max(1));
        Duration::from_millis(jittered)
    }

    /// Makes attempts of a call (each sends the very same request) until one gets an answer
    /// that is not transient. `pinned` sends to that node only. `send` makes one attempt and
    /// returns the reply with its metadata (a `tally-leader-addr` there is remembered).
    async fn call<Resp, F, Fut>(
        &self,
        what: &str,
        pinned: Option<&str>,
        mut send: F,
    ) -> Result<Resp, ClientError>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<(MetadataMap, Resp), Status>>,
    {
        let config = &self.shared.config;
        let budget = Duration::from_millis(config.call_timeout_ms);
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut hint: Option<String> = None;
        loop {
            attempt += 1;
            let endpoint = match pinned {
                Some(pinned) => pinned.to_string(),
                None => self.pick(hint.take()),
            };
            let remaining = budget.saturating_sub(started.elapsed());
            let timeout = self
                .request_timeout
                .min(remaining)
                .max(Duration::from_millis(1));
            let local_deadline = timeout + Duration::from_millis(LOCAL_DEADLINE_GRACE_MS);
            let sent = send(Attempt {
                endpoint: endpoint.clone(),
                timeout,
            });
            let result = match tokio::time::timeout(local_deadline, sent).await {
                Ok(result) => result.map_err(|status| TallyError::from_status(&status)),
                Err(_) => Err(TallyError::new(
                    ErrorCode::DeadlineExceeded,
                    format!(
                        "{what}: no answer from {endpoint} within {} ms",
                        timeout.as_millis()
                    ),
                )),
            };
            let error = match result {
                Ok((metadata, reply)) => {
                    if pinned.is_none() {
                        self.remember(&endpoint, &metadata);
                    }
                    return Ok(reply);
                }
                Err(error) => error,
            };
            if !is_retryable(error.code) {
                return Err(ClientError::Api(Box::new(error)));
            }
            self.forget(&endpoint);
            let elapsed = started.elapsed();
            // A call pinned to one node asks about that node: a few tries, then say it is down.
            let attempts_max = match pinned {
                Some(_) => config.attempts_max.min(PINNED_ATTEMPTS_MAX),
                None => config.attempts_max,
            };
            if attempt >= attempts_max || elapsed >= budget {
                return Err(ClientError::RetriesExhausted {
                    attempts: attempt,
                    elapsed_ms: elapsed.as_millis() as u64,
                    endpoint,
                    last: Box::new(error),
                });
            }
            let redirect = error
                .leader_addr
                .as_deref()
                .and_then(|addr| normalize_endpoint(addr).ok())
                .filter(|addr| *addr != endpoint);
            // A fresh leader hint is followed at once; anything else (no leader yet, a node
            // down, a hint that keeps changing) waits a little before the next attempt.
            let follow_at_once = redirect.is_some() && attempt <= 2;
            hint = redirect;
            if !follow_at_once {
                let pause = self
                    .backoff(attempt)
                    .min(budget.saturating_sub(started.elapsed()));
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// [`Self::call`] through tonic's generated clients: `send` gets the channel to the
    /// attempt's node and the request (with the attempt's `grpc-timeout`, unless `stream`: a
    /// followed stream lives as long as the caller wants).
    async fn tonic_call<Req, Resp, F, Fut>(
        &self,
        what: &str,
        request: Req,
        pinned: Option<&str>,
        stream: bool,
        mut send: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: FnMut(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.call(what, pinned, |attempt| {
            let channel = self.channel(&attempt.endpoint);
            let mut wire_request = tonic::Request::new(request.clone());
            if !stream {
                wire_request.set_timeout(attempt.timeout);
            }
            let sent = channel.map(|channel| send(channel, wire_request));
            async move {
                let response = match sent {
                    Ok(sent) => sent.await?,
                    // Not expected: every endpoint the client holds passed
                    // `normalize_endpoint`, which checks that it makes a valid URI.
                    Err(error) => return Err(Status::invalid_argument(error.to_string())),
                };
                let (metadata, reply, _) = response.into_parts();
                Ok((metadata, reply))
            }
        })
        .await
    }

    /// A call on the node's [`Connection`] (one socket write per call), its reply decoded as
    /// `Reply`: usage, authorize, release and get account, the calls an application makes per
    /// request.
    async fn unary_call<Reply>(
        &self,
        what: &str,
        path: &'static str,
        request: &impl prost::Message,
    ) -> Result<Reply, ClientError>
    where
        Reply: prost::Message + Default,
    {
        self.call(what, None, |attempt| async move {
            let connection = self.connection(&attempt.endpoint).await?;
            let reply = connection.call(path, request, attempt.timeout).await?;
            let message = Reply::decode(reply.message)
                .map_err(|error| Status::internal(format!("{what}: the reply: {error}")))?;
            Ok((reply.metadata, message))
        })
        .await
    }

    async fn ledger_call<Req, Resp, F, Fut>(
        &self,
        what: &str,
        request: Req,
        mut send: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: FnMut(LedgerClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.tonic_call(what, request, None, false, |channel, request| {
            send(self.ledger(channel), request)
        })
        .await
    }

    async fn admin_call<Req, Resp, F, Fut>(
        &self,
        what: &str,
        request: Req,
        pinned: Option<&str>,
        mut send: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: FnMut(AdminClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let pinned = match pinned {
            Some(endpoint) => {
                Some(
                    normalize_endpoint(endpoint).map_err(|reason| ClientError::Endpoint {
                        endpoint: endpoint.to_string(),
                        reason,
                    })?,
                )
            }
            None => None,
        };
        self.tonic_call(
            what,
            request,
            pinned.as_deref(),
            false,
            |channel, request| send(self.admin(channel), request),
        )
        .await
    }

    // ---- Assets and accounts ------------------------------------------------------------

    pub async fn create_asset(
        &self,
        code: &str,
        scale: u32,
    ) -> Result<v1::CreateAssetReply, ClientError> {
        let request = v1::CreateAssetRequest {
            code: code.to_string(),
            scale,
        };
        checked_locally(request.to_command())?;
        self.ledger_call("create asset", request, |mut c, r| async move {
            c.create_asset(r).await
        })
        .await
    }

    pub async fn list_assets(&self) -> Result<Vec<v1::Asset>, ClientError> {
        let request = v1::ListAssetsRequest::default();
        let reply = self
            .ledger_call("list assets", request, |mut c, r| async move {
                c.list_assets(r).await
            })
            .await?;
        Ok(reply.assets)
    }

    pub async fn create_account(
        &self,
        request: v1::CreateAccountRequest,
    ) -> Result<v1::CreateAccountReply, ClientError> {
        checked_locally(request.to_command())?;
        self.ledger_call("create account", request, |mut c, r| async move {
            c.create_account(r).await
        })
        .await
    }

    pub async fn update_account(
        &self,
        request: v1::UpdateAccountRequest,
    ) -> Result<v1::UpdateAccountReply, ClientError> {
        checked_locally(request.to_command())?;
        self.ledger_call("update account", request, |mut c, r| async move {
            c.update_account(r).await
        })
        .await
    }

    /// Freezes, unfreezes (`Active`) or closes an account.
    pub async fn set_account_status(
        &self,
        account: &str,
        status: v1::AccountStatus,
    ) -> Result<v1::SetAccountStatusReply, ClientError> {
        let request = v1::SetAccountStatusRequest {
            account: account.to_string(),
            status: status as i32,
        };
        checked_locally(request.to_command())?;
        self.ledger_call("set account status", request, |mut c, r| async move {
            c.set_account_status(r).await
        })
        .await
    }

    /// The account's balance, available, held, debt, grants and holds (linearizable read).
    pub async fn get_account(&self, account: &str) -> Result<v1::Account, ClientError> {
        tally_core::AccountId::parse_as("account", account)?;
        let request = v1::GetAccountRequest {
            account: account.to_string(),
            consistency: v1::Consistency::Linearizable as i32,
        };
        let reply: v1::GetAccountReply = self
            .unary_call("get account", GET_ACCOUNT_PATH, &request)
            .await?;
        reply
            .account
            .ok_or_else(|| ClientError::Protocol("GetAccount reply without an account".into()))
    }

    // ---- Grants, prices, holds --------------------------------------------------------------

    pub async fn add_grant(
        &self,
        request: v1::AddGrantRequest,
    ) -> Result<v1::AddGrantReply, ClientError> {
        checked_locally(request.to_command())?;
        self.ledger_call("add grant", request, |mut c, r| async move {
            c.add_grant(r).await
        })
        .await
    }

    pub async fn void_grant(
        &self,
        account: &str,
        grant_id: &str,
        reason: &str,
    ) -> Result<v1::VoidGrantReply, ClientError> {
        let request = v1::VoidGrantRequest {
            account: account.to_string(),
            grant_id: grant_id.to_string(),
            reason: reason.to_string(),
        };
        checked_locally(request.to_command())?;
        self.ledger_call("void grant", request, |mut c, r| async move {
            c.void_grant(r).await
        })
        .await
    }

    /// Publishes a new price book version. With `effective_from_ms` it is exactly-once: a
    /// retry of the same time and rates (the client retries transient errors by itself) is
    /// answered with the version the first attempt made. Without it ("from now") a retry after
    /// a lost answer publishes the same rates again as the next version, which, should another
    /// publisher's version have come in between, puts these rates back in force over it.
    /// Give an explicit time (a little ahead of now) wherever two publishers may race.
    pub async fn publish_prices(
        &self,
        request: v1::PublishPricesRequest,
    ) -> Result<v1::PublishPricesReply, ClientError> {
        checked_locally(request.to_command())?;
        self.ledger_call("publish prices", request, |mut c, r| async move {
            c.publish_prices(r).await
        })
        .await
    }

    /// The version of `book` in force now, or at `at_ms`.
    pub async fn get_prices(
        &self,
        book: &str,
        at_ms: Option<u64>,
    ) -> Result<v1::PriceVersion, ClientError> {
        tally_core::BookId::parse_as("book", book)?;
        let request = v1::GetPricesRequest {
            book: book.to_string(),
            at_ms,
            consistency: v1::Consistency::Linearizable as i32,
        };
        let reply = self
            .ledger_call("get prices", request, |mut c, r| async move {
                c.get_prices(r).await
            })
            .await?;
        reply
            .version
            .ok_or_else(|| ClientError::Protocol("GetPrices reply without a version".into()))
    }

    /// The cost book's version in force now, or at `at_ms` (`no_rate` when none is yet,
    /// `unknown_price_book` when no costs were ever published).
    pub async fn get_costs(&self, at_ms: Option<u64>) -> Result<v1::PriceVersion, ClientError> {
        let request = v1::GetCostsRequest {
            at_ms,
            consistency: v1::Consistency::Linearizable as i32,
        };
        let reply = self
            .ledger_call("get costs", request, |mut c, r| async move {
                c.get_costs(r).await
            })
            .await?;
        reply
            .version
            .ok_or_else(|| ClientError::Protocol("GetCosts reply without a version".into()))
    }

    /// Publishes a new cost book version; retried like [`Self::publish_prices`], and
    /// exactly-once the same way (with `effective_from_ms`).
    pub async fn publish_costs(
        &self,
        request: v1::PublishCostsRequest,
    ) -> Result<v1::PublishCostsReply, ClientError> {
        checked_locally(request.to_command())?;
        self.ledger_call("publish costs", request, |mut c, r| async move {
            c.publish_costs(r).await
        })
        .await
    }

    pub async fn authorize(
        &self,
        account: &str,
        hold_id: &str,
        amount: &str,
        expires_in_ms: u64,
    ) -> Result<v1::AuthorizeReply, ClientError> {
        let request = v1::AuthorizeRequest {
            account: account.to_string(),
            hold_id: hold_id.to_string(),
            amount: amount.to_string(),
            expires_in_ms,
        };
        checked_locally(request.to_command())?;
        self.unary_call("authorize", AUTHORIZE_PATH, &request).await
    }

    pub async fn release(
        &self,
        account: &str,
        hold_id: &str,
    ) -> Result<v1::ReleaseReply, ClientError> {
        let request = v1::ReleaseRequest {
            account: account.to_string(),
            hold_id: hold_id.to_string(),
        };
        checked_locally(request.to_command())?;
        self.unary_call("release", RELEASE_PATH, &request).await
    }

    // ---- Usage ------------------------------------------------------------------------------

    /// Records one event. Retried attempts send the same event (same id): the ledger settles it
    /// at most once. When an earlier attempt (of this call or of an earlier one) settled it, the
    /// answer is `Duplicate` carrying that original settlement: treat it like `Settled`.
    pub async fn record_usage(&self, event: v1::UsageEvent) -> Result<UsageOutcome, ClientError> {
        let request = v1::RecordUsageRequest { event: Some(event) };
        checked_locally(request.to_command())?;
        let reply: v1::RecordUsageReply = self
            .unary_call("record usage", RECORD_USAGE_PATH, &request)
            .await?;
        let result = reply
            .result
            .ok_or_else(|| ClientError::Protocol("RecordUsage reply without a result".into()))?;
        UsageOutcome::from_wire(result)
    }

    /// Records up to 8,190 events in one log entry; one outcome per event, in order. With
    /// `atomic`, either all settle or none does (an event that had settled before the batch
    /// is answered `duplicate` either way).
    pub async fn record_usage_batch(
        &self,
        events: Vec<v1::UsageEvent>,
        atomic: bool,
    ) -> Result<Vec<EventOutcome>, ClientError> {
        let (events, reply) = self
            .send_usage_batch(events, atomic, v1::BatchReply::EveryResult)
            .await?;
        if reply.results.len() != events.len() {
            return Err(ClientError::Protocol(format!(
                "{} results for {} events",
                reply.results.len(),
                events.len()
            )));
        }
        events
            .into_iter()
            .zip(reply.results)
            .map(|(event, result)| {
                let outcome = UsageOutcome::from_wire(result)?;
                Ok(EventOutcome {
                    event_id: event.event_id,
                    account: event.account,
                    outcome,
                })
            })
            .collect()
    }

    /// [`Self::record_usage_batch`] for high-volume ingest: the reply lists only the events
    /// that did not settle now (duplicates, conflicts, rejections), with counts and the sums
    /// of revenue, cost and margin, instead of every settlement in full. Retried like it. A
    /// node of an earlier build answers every result; the summary is then made from those.
    /// The counts and sums are of what settled in THIS call: a batch sent again after a lost
    /// answer counts 0 settled, its events listed as duplicates carrying their settlements
    /// (add those up for the batch's totals).
    pub async fn record_usage_batch_unsettled(
        &self,
        events: Vec<v1::UsageEvent>,
        atomic: bool,
    ) -> Result<BatchSummary, ClientError> {
        let (events, reply) = self
            .send_usage_batch(events, atomic, v1::BatchReply::UnsettledOnly)
            .await?;
        BatchSummary::from_wire(&events, reply)
    }

    /// Sends a batch (checked first) asking for `listed`; the events come back with the reply.
    async fn send_usage_batch(
        &self,
        events: Vec<v1::UsageEvent>,
        atomic: bool,
        listed: v1::BatchReply,
    ) -> Result<(Vec<v1::UsageEvent>, v1::RecordUsageBatchReply), ClientError> {
        let request = v1::RecordUsageBatchRequest {
            events,
            atomic,
            reply: listed as i32,
        };
        checked_locally(request.to_command())?;
        let reply = self
            .unary_call("record usage batch", RECORD_USAGE_BATCH_PATH, &request)
            .await?;
        Ok((request.events, reply))
    }

    // ---- History, reports, events -----------------------------------------------------------

    /// Journal entries of `account`, newest first; `limit` 1..=1,000 (0 means 50).
    pub async fn history(
        &self,
        account: &str,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<v1::HistoryReply, ClientError> {
        tally_core::AccountId::parse_as("account", account)?;
        let request = v1::HistoryRequest {
            account: account.to_string(),
            before_seq,
            limit,
            consistency: v1::Consistency::Linearizable as i32,
        };
        self.ledger_call(
            "history",
            request,
            |mut c, r| async move { c.history(r).await },
        )
        .await
    }

    /// Usage, revenue, cost and margin for `account` (or the whole ledger), for `month`
    /// (`YYYY-MM`) or all time.
    pub async fn report(
        &self,
        account: Option<&str>,
        month: Option<&str>,
    ) -> Result<v1::Report, ClientError> {
        if let Some(account) = account {
            tally_core::AccountId::parse_as("account", account)?;
        }
        if let Some(month) = month {
            tally_proto::convert::parse_month("month", month)?;
        }
        let request = v1::ReportRequest {
            account: account.map(str::to_string),
            month: month.map(str::to_string),
            consistency: v1::Consistency::Linearizable as i32,
        };
        let reply = self
            .ledger_call(
                "report",
                request,
                |mut c, r| async move { c.report(r).await },
            )
            .await?;
        reply
            .report
            .ok_or_else(|| ClientError::Protocol("Report reply without a report".into()))
    }

    /// Ledger events from `from_seq` on; with `follow` the subscription waits for new ones and
    /// resumes after the last one seen when a node goes away. Without it, it ends once caught
    /// up with the cluster (the answering node first catches up with the leader's commit
    /// index; a node that cannot, such as one removed from the cluster, answers an error).
    pub fn events(&self, from_seq: u64, follow: bool) -> EventSubscription {
        EventSubscription::new(self.clone(), from_seq, follow)
    }

    pub(crate) async fn open_event_stream(
        &self,
        from_seq: u64,
        follow: bool,
    ) -> Result<tonic::Streaming<v1::LedgerEvent>, ClientError> {
        let request = v1::StreamEventsRequest {
            from_seq,
            follow,
            consistency: v1::Consistency::Linearizable as i32,
        };
        self.tonic_call("stream events", request, None, true, |channel, r| {
            let mut client = self.ledger(channel);
            async move { client.stream_events(r).await }
        })
        .await
    }

    // ---- Admin ------------------------------------------------------------------------------

    /// What one node (`endpoint`) knows about itself and the cluster.
    pub async fn cluster_status_of(
        &self,
        endpoint: &str,
    ) -> Result<v1::ClusterStatusReply, ClientError> {
        self.admin_call(
            "cluster status",
            v1::ClusterStatusRequest {},
            Some(endpoint),
            |mut c, r| async move { c.cluster_status(r).await },
        )
        .await
    }

    /// Adds node `id` (peer address `addr`) as a learner; with `blocking`, waits until it has
    /// caught up, within the attempt's deadline. A learner added that has not caught up by then
    /// is answered normally with `not_caught_up` saying why (no answer from it, or how far it
    /// got): the change is committed; calling again waits again.
    pub async fn add_learner(
        &self,
        id: u64,
        addr: &str,
        blocking: bool,
    ) -> Result<v1::MembershipReply, ClientError> {
        let request = v1::AddLearnerRequest {
            id,
            addr: addr.to_string(),
            blocking,
        };
        self.admin_call("add learner", request, None, |mut c, r| async move {
            c.add_learner(r).await
        })
        .await
    }

    pub async fn promote(&self, id: u64) -> Result<v1::MembershipReply, ClientError> {
        self.admin_call(
            "promote",
            v1::PromoteRequest { id },
            None,
            |mut c, r| async move { c.promote(r).await },
        )
        .await
    }

    pub async fn remove_node(&self, id: u64) -> Result<v1::MembershipReply, ClientError> {
        self.admin_call(
            "remove node",
            v1::RemoveNodeRequest { id },
            None,
            |mut c, r| async move { c.remove_node(r).await },
        )
        .await
    }

    /// Builds a snapshot on the node at `endpoint`.
    pub async fn trigger_snapshot_at(
        &self,
        endpoint: &str,
    ) -> Result<v1::TriggerSnapshotReply, ClientError> {
        self.admin_call(
            "trigger snapshot",
            v1::TriggerSnapshotRequest {},
            Some(endpoint),
            |mut c, r| async move { c.trigger_snapshot(r).await },
        )
        .await
    }

    /// The state hash of the node at `endpoint` (caught up with the leader's commit first).
    pub async fn state_hash_at(&self, endpoint: &str) -> Result<v1::StateHashReply, ClientError> {
        self.state_hash_request(
            endpoint,
            v1::StateHashRequest {
                consistency: v1::Consistency::Linearizable as i32,
                at_index: None,
            },
        )
        .await
    }

    /// The state hash of the node at `endpoint` at exactly log index `index`, answered once
    /// that node applies it (nodes asked for the same index answer for the same state, under
    /// any load). Refused (`invalid_argument`, field `at_index`) when the node has applied past
    /// `index`: ask again for a later one.
    pub async fn state_hash_at_index(
        &self,
        endpoint: &str,
        index: u64,
    ) -> Result<v1::StateHashReply, ClientError> {
        self.state_hash_request(
            endpoint,
            v1::StateHashRequest {
                consistency: v1::Consistency::Linearizable as i32,
                at_index: Some(index),
            },
        )
        .await
    }

    async fn state_hash_request(
        &self,
        endpoint: &str,
        request: v1::StateHashRequest,
    ) -> Result<v1::StateHashReply, ClientError> {
        self.admin_call(
            "state hash",
            request,
            Some(endpoint),
            |mut c, r| async move { c.state_hash(r).await },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_port() -> String {
        // Bind then drop: nothing listens there afterwards.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        addr
    }

    #[tokio::test]
    async fn unreachable_nodes_exhaust_the_retry_budget_with_a_transient_code() {
        let config = ClientConfig {
            endpoints: vec![closed_port(), closed_port()],
            attempts_max: 4,
            backoff_ms_initial: 1,
            backoff_ms_max: 5,
            ..ClientConfig::default()
        };
        let client = Client::new(config).unwrap();
        let error = client.list_assets().await.unwrap_err();
        match &error {
            ClientError::RetriesExhausted { attempts, .. } => assert_eq!(*attempts, 4),
            other => panic!("{other:?}"),
        }
        assert_eq!(error.code(), ErrorCode::Unavailable);
        assert!(error.is_transient());
        // Usage goes on the client's own HTTP/2 connections: the same budget, the same code.
        let error = client
            .record_usage(crate::usage_event("e1", "acme", "tokens", "1", 1))
            .await
            .unwrap_err();
        match &error {
            ClientError::RetriesExhausted { attempts, last, .. } => {
                assert_eq!(*attempts, 4);
                assert!(last.message.contains("cannot connect"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(error.code(), ErrorCode::Unavailable);
    }

    #[tokio::test]
    async fn bad_input_fails_before_anything_is_sent() {
        // The endpoint is closed: an answer other than invalid_argument would mean it tried.
        let client = Client::new(ClientConfig::with_endpoints([closed_port()])).unwrap();
        let error = client.create_asset("usd", 2).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert_eq!(error.details()["field"], "code");
        let error = client
            .record_usage(crate::usage_event("e1", "acme", "tokens", "-1", 1))
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert!(error.message().contains("quantity"), "{error}");
        let error = client.report(None, Some("2026-13")).await.unwrap_err();
        assert_eq!(error.details()["field"], "month");
    }

    #[test]
    fn endpoints_are_checked_and_deduplicated() {
        assert!(Client::new(ClientConfig::with_endpoints(Vec::<String>::new())).is_err());
        let error = Client::new(ClientConfig::with_endpoints(["nope"]))
            .err()
            .unwrap();
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        let client = Client::new(ClientConfig::with_endpoints([
            "127.0.0.1:7101",
            "http://127.0.0.1:7101",
        ]))
        .unwrap();
        assert_eq!(client.endpoints(), ["127.0.0.1:7101"]);
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let client = Client::new(ClientConfig::default()).unwrap();
        for attempt in 1..40 {
            let pause = client.backoff(attempt).as_millis() as u64;
            assert!(
                pause <= client.config().backoff_ms_max,
                "{attempt}: {pause}"
            );
        }
        assert!(client.backoff(1).as_millis() <= 50);
        assert!(client.backoff(10).as_millis() >= 500);
    }
}
