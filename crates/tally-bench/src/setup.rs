//! Funding the workload through the public API: the asset, the price and cost books, then every
//! account with its two grants. There is no bulk-create call, so accounts are created with many
//! calls in flight at once (the leader's group commit puts them in a few log entries). Every
//! step is idempotent: run again, it leaves existing accounts and grants as they are.

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt, TryStreamExt};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_proto::v1::ledger_client::LedgerClient;
use tally_proto::{ErrorCode, TallyError};
use tonic::transport::Channel;

use crate::workload;

/// Channels the setup calls are spread over.
const SETUP_CONNECTIONS: usize = 4;
/// How long one setup call keeps retrying transient errors (no leader yet, not initialized).
const SETUP_RETRY_MS_MAX: u64 = 60_000;

/// Retries `call` while it fails with a transient code; `already_exists` counts as done.
async fn call_until_done<T, F, Fut>(
    what: &str,
    retry_for: Duration,
    mut call: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + retry_for;
    loop {
        match call().await {
            Ok(_) => return Ok(()),
            Err(status) => {
                let error = TallyError::from_status(&status);
                match error.code {
                    ErrorCode::AlreadyExists => return Ok(()),
                    ErrorCode::NotInitialized
                    | ErrorCode::Unavailable
                    | ErrorCode::NotLeader
                    | ErrorCode::DeadlineExceeded
                        if Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ => bail!("{what} failed: {}: {}", error.code, error.message),
                }
            }
        }
    }
}

/// Creates (or finds) everything the events need. Returns how long it took.
pub async fn fund(
    leader: &str,
    accounts: &Arc<Vec<String>>,
    concurrency: usize,
    request_timeout: Duration,
    ready_timeout: Duration,
    quiet: bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut clients = Vec::with_capacity(SETUP_CONNECTIONS);
    for _ in 0..SETUP_CONNECTIONS {
        clients.push(crate::connect::ledger_client(
            crate::connect::connect(leader, request_timeout).await?,
        ));
    }
    let client = clients[0].clone();

    // The first call also waits for the cluster to apply its Init entry.
    call_until_done("CreateAsset", ready_timeout, || {
        let mut client = client.clone();
        async move {
            client
                .create_asset(tally_proto::v1::CreateAssetRequest {
                    code: workload::ASSET.to_string(),
                    scale: workload::ASSET_SCALE,
                })
                .await
        }
    })
    .await?;
    let retry_for = Duration::from_millis(SETUP_RETRY_MS_MAX);
    call_until_done("PublishPrices", retry_for, || {
        let mut client = client.clone();
        async move { client.publish_prices(workload::price_book()).await }
    })
    .await?;
    call_until_done("PublishCosts", retry_for, || {
        let mut client = client.clone();
        async move { client.publish_costs(workload::cost_book()).await }
    })
    .await?;

    let funded = Arc::new(AtomicU64::new(0));
    let progress = (!quiet).then(|| {
        let funded = funded.clone();
        let total = accounts.len();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.tick().await;
            loop {
                ticker.tick().await;
                eprintln!(
                    "setup: {} of {total} accounts funded",
                    funded.load(Ordering::Relaxed)
                );
            }
        })
    });
    let result = stream::iter(accounts.iter().enumerate())
        .map(|(index, account)| {
            let client = clients[index % clients.len()].clone();
            let funded = funded.clone();
            async move {
                fund_account(client, account, retry_for).await?;
                funded.fetch_add(1, Ordering::Relaxed);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await;
    if let Some(progress) = progress {
        progress.abort();
    }
    result.context("funding the accounts")?;
    Ok(started.elapsed())
}

async fn fund_account(
    client: LedgerClient<Channel>,
    account: &str,
    retry_for: Duration,
) -> anyhow::Result<()> {
    call_until_done(&format!("CreateAccount {account}"), retry_for, || {
        let mut client = client.clone();
        async move {
            client
                .create_account(workload::create_account(account))
                .await
        }
    })
    .await?;
    let allowance_what = format!("AddGrant {account} allowance");
    let purchased_what = format!("AddGrant {account} purchased");
    let allowance = call_until_done(&allowance_what, retry_for, || {
        let mut client = client.clone();
        async move { client.add_grant(workload::allowance(account)).await }
    });
    let purchased = call_until_done(&purchased_what, retry_for, || {
        let mut client = client.clone();
        async move { client.add_grant(workload::purchased(account)).await }
    });
    let (allowance, purchased) = tokio::join!(allowance, purchased);
    allowance?;
    purchased?;
    Ok(())
}
