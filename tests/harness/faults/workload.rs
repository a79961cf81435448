//! The workload: concurrent clients on a few hundred accounts with limited funds (so
//! `insufficient_funds` really happens), usage with and without holds, top-ups, a price change,
//! reads through every node (linearizable and follower reads), and retries that reuse the same
//! ids on a different node. Every attempt is recorded in the [`Recorder`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use tally_proto::v1;
use tally_proto::v1::ledger_client::LedgerClient;
use tally_proto::{ErrorCode, TallyError};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use super::cluster::CLIENT_TIMEOUT;
use super::history::{OpKind, OpOutcome, Recorder};
use crate::now_ms;

pub const ASSET: &str = "CREDITS";
pub const BOOK: &str = "std";
pub const METER: &str = "tokens";

/// The recorder's client number of the setup writes.
pub const SETUP_CLIENT: usize = 1_000;

#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub accounts: usize,
    /// Initial purchased grant per account.
    pub initial_grant: u64,
    pub top_up: u64,
    pub clients: usize,
    /// Attempts per write (the first plus retries on other nodes) while the outcome is unknown.
    pub attempts_max: usize,
    /// Pause between a client's operations.
    pub think_ms: u64,
    /// Share (percent) of operations on the first `hot_accounts` accounts, so those run out of
    /// funds within seconds while the rest stay solvent.
    pub hot_percent: u32,
    /// Share (percent) of usage events sent through two nodes at the same time.
    pub hedge_percent: u32,
    pub hot_accounts: usize,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            accounts: 200,
            initial_grant: 60,
            top_up: 40,
            clients: 6,
            attempts_max: 5,
            think_ms: 5,
            hot_percent: 60,
            hedge_percent: 10,
            hot_accounts: 5,
        }
    }
}

pub fn account_name(index: usize) -> String {
    format!("acct-{index:04}")
}

fn channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(1))
        .timeout(CLIENT_TIMEOUT)
        .connect_lazy()
}

/// One lazily connected ledger client per node.
#[derive(Clone)]
pub struct Clients {
    pub by_node: BTreeMap<u64, LedgerClient<Channel>>,
}

impl Clients {
    pub fn new(endpoints: &BTreeMap<u64, String>) -> Clients {
        Clients {
            by_node: endpoints
                .iter()
                .map(|(id, addr)| {
                    (
                        *id,
                        LedgerClient::new(channel(addr))
                            .max_decoding_message_size(64 * 1024 * 1024),
                    )
                })
                .collect(),
        }
    }
    pub fn ids(&self) -> Vec<u64> {
        self.by_node.keys().copied().collect()
    }
    pub fn get(&self, node: u64) -> LedgerClient<Channel> {
        self.by_node[&node].clone()
    }
}

/// Codes after which the request certainly changed nothing.
fn is_definite(code: ErrorCode) -> bool {
    !matches!(
        code,
        ErrorCode::NotLeader
            | ErrorCode::Unavailable
            | ErrorCode::DeadlineExceeded
            | ErrorCode::Internal
            | ErrorCode::NotInitialized
    )
}

pub fn outcome_of_status(status: &tonic::Status) -> OpOutcome {
    let error = TallyError::from_status(status);
    let from_server = status
        .metadata()
        .get(tally_proto::error::CODE_METADATA_KEY)
        .is_some()
        || !status.details().is_empty();
    if from_server && is_definite(error.code) {
        OpOutcome::Failed {
            code: error.code.as_str().to_string(),
        }
    } else {
        OpOutcome::Unknown {
            reason: format!("{} {}", error.code, error.message),
        }
    }
}

fn dec(text: &str) -> Decimal {
    text.parse()
        .unwrap_or_else(|_| panic!("server sent a bad decimal {text:?}"))
}

fn usage_outcome(reply: &v1::RecordUsageReply) -> OpOutcome {
    use v1::usage_result::Outcome;
    let log_index = reply
        .write
        .as_ref()
        .map(|write| write.log_index)
        .unwrap_or(0);
    match reply
        .result
        .as_ref()
        .and_then(|result| result.outcome.as_ref())
    {
        Some(Outcome::Settled(settlement)) => OpOutcome::Settled {
            charged: dec(&settlement.charged),
            duplicate: false,
            log_index,
        },
        Some(Outcome::Duplicate(settlement)) => OpOutcome::Settled {
            charged: dec(&settlement.charged),
            duplicate: true,
            log_index,
        },
        Some(Outcome::Conflict(_)) => OpOutcome::Failed {
            code: "conflict".into(),
        },
        Some(Outcome::Rejected(rejection)) => OpOutcome::Failed {
            code: rejection.code.clone(),
        },
        None => OpOutcome::Unknown {
            reason: "reply without a result".into(),
        },
    }
}

/// A write request the client may send several times.
#[derive(Clone)]
enum WriteReq {
    Usage(v1::RecordUsageRequest),
    Grant(v1::AddGrantRequest),
    Authorize(v1::AuthorizeRequest),
    Prices(v1::PublishPricesRequest),
}

async fn send_once(mut client: LedgerClient<Channel>, request: WriteReq) -> OpOutcome {
    match request {
        WriteReq::Usage(request) => match client.record_usage(request).await {
            Ok(reply) => usage_outcome(reply.get_ref()),
            Err(status) => outcome_of_status(&status),
        },
        WriteReq::Grant(request) => match client.add_grant(request).await {
            Ok(reply) => OpOutcome::Applied {
                log_index: reply
                    .get_ref()
                    .write
                    .as_ref()
                    .map(|write| write.log_index)
                    .unwrap_or(0),
                already_existed: reply.get_ref().already_existed,
            },
            Err(status) => outcome_of_status(&status),
        },
        WriteReq::Authorize(request) => match client.authorize(request).await {
            Ok(reply) => OpOutcome::Applied {
                log_index: reply
                    .get_ref()
                    .write
                    .as_ref()
                    .map(|write| write.log_index)
                    .unwrap_or(0),
                already_existed: false,
            },
            Err(status) => outcome_of_status(&status),
        },
        WriteReq::Prices(request) => match client.publish_prices(request).await {
            Ok(reply) => OpOutcome::Applied {
                log_index: reply
                    .get_ref()
                    .write
                    .as_ref()
                    .map(|write| write.log_index)
                    .unwrap_or(0),
                already_existed: false,
            },
            Err(status) => outcome_of_status(&status),
        },
    }
}

/// Sends a write, retrying an unknown outcome with the same ids on the next node, up to
/// `attempts_max` times (with a short pause). Every attempt is recorded. Returns the last
/// outcome.
async fn write(
    recorder: &Recorder,
    clients: &Clients,
    client_no: usize,
    first_node: u64,
    kind: OpKind,
    request: WriteReq,
    attempts_max: usize,
) -> OpOutcome {
    let ids = clients.ids();
    let first = ids.iter().position(|id| *id == first_node).unwrap_or(0);
    let mut outcome = OpOutcome::Pending;
    for attempt in 0..attempts_max {
        // Each retry goes to the next node: the same ids, a different entry point.
        let node = ids[(first + attempt) % ids.len()];
        let op = recorder.sent(client_no, node, kind.clone());
        outcome = send_once(clients.get(node), request.clone()).await;
        recorder.finished(op, outcome.clone());
        if !matches!(outcome, OpOutcome::Unknown { .. }) {
            return outcome;
        }
        if attempt + 1 < attempts_max {
            // Long enough in total (~2.5 s) to outlast an election.
            tokio::time::sleep(Duration::from_millis(150 * (attempt as u64 + 1))).await;
        }
    }
    outcome
}

pub fn prices_request(unit_price: &str) -> v1::PublishPricesRequest {
    v1::PublishPricesRequest {
        book: BOOK.to_string(),
        asset: ASSET.to_string(),
        effective_from_ms: None,
        rates: vec![v1::Rate {
            meter: METER.to_string(),
            dimensions: Vec::new(),
            model: Some(v1::rate::Model::PerUnit(v1::PerUnit {
                unit_price: unit_price.to_string(),
                per: "1".to_string(),
            })),
        }],
    }
}

fn grant_request(account: &str, grant_id: &str, amount: u64) -> v1::AddGrantRequest {
    v1::AddGrantRequest {
        account: account.to_string(),
        grant_id: grant_id.to_string(),
        category: v1::GrantCategory::Purchased as i32,
        amount: amount.to_string(),
        paid: Some(amount.to_string()),
        ..Default::default()
    }
}

/// Retries a setup call (not recorded: setup runs before any fault) until it succeeds or says
/// `already_exists`.
async fn setup_call<F, Fut, T>(clients: &Clients, what: &str, mut call: F)
where
    F: FnMut(LedgerClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let ids = clients.ids();
    for attempt in 0..200 {
        let node = ids[attempt % ids.len()];
        match call(clients.get(node)).await {
            Ok(_) => return,
            Err(status) if TallyError::from_status(&status).code == ErrorCode::AlreadyExists => {
                return
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("setup: {what} never succeeded");
}

/// Asset, price book, accounts and their initial grants (recorded: the checker needs every
/// grant). `setup_nodes` are the nodes that run now.
pub async fn setup(recorder: &Recorder, clients: &Clients, spec: &WorkloadSpec) {
    setup_call(clients, "create asset", |mut client| async move {
        client
            .create_asset(v1::CreateAssetRequest {
                code: ASSET.to_string(),
                scale: 0,
            })
            .await
    })
    .await;
    setup_call(clients, "publish prices", |mut client| async move {
        client.publish_prices(prices_request("1")).await
    })
    .await;
    // Eight parallel lanes: setup is a few hundred writes.
    let lanes = 8;
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let clients = clients.clone();
        let recorder = recorder.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            for index in (lane..spec.accounts).step_by(lanes) {
                let account = account_name(index);
                let name = account.clone();
                setup_call(&clients, "create account", |mut client| {
                    let account = name.clone();
                    async move {
                        client
                            .create_account(v1::CreateAccountRequest {
                                id: account,
                                asset: ASSET.to_string(),
                                price_book: Some(BOOK.to_string()),
                                ..Default::default()
                            })
                            .await
                    }
                })
                .await;
                let grant_id = "initial".to_string();
                let kind = OpKind::Grant {
                    account: account.clone(),
                    grant_id: grant_id.clone(),
                    amount: Decimal::from(spec.initial_grant),
                };
                let request =
                    WriteReq::Grant(grant_request(&account, &grant_id, spec.initial_grant));
                let ids = clients.ids();
                let outcome = write(
                    &recorder,
                    &clients,
                    SETUP_CLIENT,
                    ids[index % ids.len()],
                    kind,
                    request,
                    20,
                )
                .await;
                assert!(
                    matches!(outcome, OpOutcome::Applied { .. }),
                    "setup grant of {account}: {outcome:?}"
                );
            }
        }));
    }
    for task in tasks {
        task.await.expect("setup lane");
    }
}

/// The request of a recorded usage operation (the same content on every attempt).
pub fn usage_request(kind: &OpKind) -> v1::RecordUsageRequest {
    let OpKind::Usage {
        account,
        event_id,
        quantity,
        hold_id,
        occurred_at_ms,
    } = kind
    else {
        panic!("not a usage operation: {kind:?}")
    };
    v1::RecordUsageRequest {
        event: Some(v1::UsageEvent {
            event_id: event_id.clone(),
            account: account.clone(),
            meter: METER.to_string(),
            quantity: quantity.to_string(),
            dimensions: Vec::new(),
            occurred_at_ms: *occurred_at_ms,
            cost: None,
            hold_id: hold_id.clone(),
        }),
    }
}

/// The recorder's client number of the resolver (see [`resolve_unknown_events`]).
pub const RESOLVER_CLIENT: usize = 1_001;

/// After the heal: every usage event whose every attempt ended unknown is sent once more (same
/// content, leader first). An event an earlier attempt did settle must come back `duplicate`,
/// however many leaders, restarts and snapshots lie in between. Returns how many were resent.
pub async fn resolve_unknown_events(
    recorder: &Recorder,
    clients: &Clients,
    first_node: u64,
) -> usize {
    let mut by_event: BTreeMap<(String, String), (OpKind, bool)> = BTreeMap::new();
    for op in recorder.ops() {
        if let OpKind::Usage {
            account, event_id, ..
        } = &op.kind
        {
            let unknown = matches!(op.outcome, OpOutcome::Unknown { .. } | OpOutcome::Pending);
            let entry = by_event
                .entry((account.clone(), event_id.clone()))
                .or_insert((op.kind.clone(), true));
            entry.1 &= unknown;
        }
    }
    let mut resent = 0;
    for (kind, all_unknown) in by_event.into_values() {
        if !all_unknown {
            continue;
        }
        resent += 1;
        let request = WriteReq::Usage(usage_request(&kind));
        write(
            recorder,
            clients,
            RESOLVER_CLIENT,
            first_node,
            kind,
            request,
            5,
        )
        .await;
    }
    resent
}

/// Handle on the running clients.
pub struct Running {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Asks the clients to stop and waits for their last operations to finish.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("workload client");
        }
    }
}

/// Starts `spec.clients` clients; client `n` draws from `SmallRng(seed + n)`. Client 0 also
/// publishes a price change once `price_change_after` has passed.
pub fn start(
    recorder: &Recorder,
    clients: &Clients,
    spec: &WorkloadSpec,
    seed: u64,
    price_change_after: Duration,
) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for client_no in 0..spec.clients {
        let recorder = recorder.clone();
        let clients = clients.clone();
        let spec = spec.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(client_no as u64 * 7_919));
            let started = std::time::Instant::now();
            let mut price_changed = client_no != 0;
            let mut holds: Vec<(String, String)> = Vec::new();
            let mut serial = 0u64;
            let ids = clients.ids();
            while !stop.load(Ordering::SeqCst) {
                serial += 1;
                let node = ids[rng.gen_range(0..ids.len())];
                let hot = rng.gen_range(0..100) < spec.hot_percent;
                let account = account_name(rng.gen_range(
                    0..if hot {
                        spec.hot_accounts
                    } else {
                        spec.accounts
                    },
                ));
                if !price_changed && started.elapsed() >= price_change_after {
                    price_changed = true;
                    let kind = OpKind::PublishPrices {
                        book: BOOK.into(),
                        unit_price: Decimal::from(2),
                    };
                    write(
                        &recorder,
                        &clients,
                        client_no,
                        node,
                        kind,
                        WriteReq::Prices(prices_request("2")),
                        spec.attempts_max,
                    )
                    .await;
                    continue;
                }
                let roll = rng.gen_range(0..100);
                if roll < 50 {
                    // Usage, a third of it against a hold this client authorized.
                    let hold = if !holds.is_empty() && rng.gen_bool(0.33) {
                        Some(holds[rng.gen_range(0..holds.len())].clone())
                    } else {
                        None
                    };
                    let account = hold
                        .as_ref()
                        .map(|(account, _)| account.clone())
                        .unwrap_or(account);
                    let hold_id = hold.map(|(_, hold)| hold);
                    let quantity = rng.gen_range(1..=12u64);
                    let event_id = format!("ev-c{client_no}-{serial}");
                    let kind = OpKind::Usage {
                        account,
                        event_id,
                        quantity: Decimal::from(quantity),
                        hold_id,
                        occurred_at_ms: now_ms(),
                    };
                    let request = usage_request(&kind);
                    if rng.gen_range(0..100) < spec.hedge_percent {
                        // A hedged request: the same event through two nodes at once, so two
                        // copies race through forwarding and the log; one settles, one is a
                        // duplicate.
                        let other = ids
                            [(ids.iter().position(|id| *id == node).unwrap_or(0) + 1) % ids.len()];
                        tokio::join!(
                            write(
                                &recorder,
                                &clients,
                                client_no,
                                node,
                                kind.clone(),
                                WriteReq::Usage(request.clone()),
                                spec.attempts_max,
                            ),
                            write(
                                &recorder,
                                &clients,
                                client_no,
                                other,
                                kind,
                                WriteReq::Usage(request),
                                spec.attempts_max,
                            )
                        );
                    } else {
                        write(
                            &recorder,
                            &clients,
                            client_no,
                            node,
                            kind,
                            WriteReq::Usage(request),
                            spec.attempts_max,
                        )
                        .await;
                    }
                } else if roll < 58 {
                    let hold_id = format!("hold-c{client_no}-{serial}");
                    let kind = OpKind::Authorize {
                        account: account.clone(),
                        hold_id: hold_id.clone(),
                        amount: Decimal::from(5),
                    };
                    let request = v1::AuthorizeRequest {
                        account: account.clone(),
                        hold_id: hold_id.clone(),
                        amount: "5".to_string(),
                        expires_in_ms: 30_000,
                    };
                    let outcome = write(
                        &recorder,
                        &clients,
                        client_no,
                        node,
                        kind,
                        WriteReq::Authorize(request),
                        spec.attempts_max,
                    )
                    .await;
                    if matches!(outcome, OpOutcome::Applied { .. }) {
                        holds.push((account, hold_id));
                        if holds.len() > 16 {
                            holds.remove(0);
                        }
                    }
                } else if roll < 65 {
                    let grant_id = format!("top-c{client_no}-{serial}");
                    let kind = OpKind::Grant {
                        account: account.clone(),
                        grant_id: grant_id.clone(),
                        amount: Decimal::from(spec.top_up),
                    };
                    let request = WriteReq::Grant(grant_request(&account, &grant_id, spec.top_up));
                    write(
                        &recorder,
                        &clients,
                        client_no,
                        node,
                        kind,
                        request,
                        spec.attempts_max,
                    )
                    .await;
                } else {
                    let linearizable = rng.gen_bool(0.8);
                    let kind = OpKind::Read {
                        account: account.clone(),
                        linearizable,
                    };
                    let op = recorder.sent(client_no, node, kind);
                    let consistency = if linearizable {
                        v1::Consistency::Linearizable
                    } else {
                        v1::Consistency::Follower
                    };
                    let reply = clients
                        .get(node)
                        .get_account(v1::GetAccountRequest {
                            account,
                            consistency: consistency as i32,
                        })
                        .await;
                    let outcome = match reply {
                        Ok(reply) => {
                            let reply = reply.into_inner();
                            let read = reply.read.unwrap_or_default();
                            OpOutcome::Read {
                                node: read.node_id,
                                applied_index: read.applied_index,
                                balance: dec(&reply.account.unwrap_or_default().balance),
                            }
                        }
                        Err(status) => outcome_of_status(&status),
                    };
                    recorder.finished(op, outcome);
                }
                if spec.think_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(spec.think_ms)).await;
                }
            }
        }));
    }
    Running { stop, tasks }
}
