//! Connections to the cluster: finding the leader through `Admin.ClusterStatus` (writes sent to
//! a follower would be forwarded, which measures an extra hop), and the tonic channels setup
//! uses (the load itself goes on [`crate::unary`] connections).

use anyhow::{bail, Context};
use std::time::{Duration, Instant};
use tally_proto::v1::{self, admin_client::AdminClient, ledger_client::LedgerClient};
use tonic::transport::{Channel, Endpoint};

/// Replies to an 8,190-event batch are a few MiB; allow well above that.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// `host:port` or a URL, as a URL tonic accepts.
pub fn endpoint_url(address: &str) -> String {
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// One new HTTP/2 connection to `address` (each call opens its own).
pub async fn connect(address: &str, request_timeout: Duration) -> anyhow::Result<Channel> {
    let url = endpoint_url(address);
    Endpoint::from_shared(url.clone())
        .with_context(|| format!("--endpoint {address:?} is not a valid address"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .timeout(request_timeout)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

pub fn ledger_client(channel: Channel) -> LedgerClient<Channel> {
    LedgerClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

/// The client address of the leader, asking each endpoint until one knows it. Waits up to
/// `ready_timeout` for an election.
pub async fn find_leader(
    endpoints: &[String],
    request_timeout: Duration,
    ready_timeout: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + ready_timeout;
    let mut last_problem = String::from("no endpoint given");
    loop {
        for address in endpoints {
            match cluster_status(address, request_timeout).await {
                Ok(status) => {
                    if status.role == v1::NodeRole::Leader as i32 {
                        return Ok(address.clone());
                    }
                    if let Some(leader_addr) = status.leader_addr.filter(|addr| !addr.is_empty()) {
                        return Ok(leader_addr);
                    }
                    last_problem = format!("{address} knows no leader yet");
                }
                Err(error) => last_problem = format!("{error:#}"),
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "no leader found through {} within {} ms: {last_problem}",
                endpoints.join(", "),
                ready_timeout.as_millis()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn cluster_status(
    address: &str,
    request_timeout: Duration,
) -> anyhow::Result<v1::ClusterStatusReply> {
    let channel = connect(address, request_timeout).await?;
    let reply = AdminClient::new(channel)
        .cluster_status(v1::ClusterStatusRequest {})
        .await
        .with_context(|| format!("ClusterStatus on {address}"))?;
    Ok(reply.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_urls() {
        assert_eq!(endpoint_url("127.0.0.1:7101"), "http://127.0.0.1:7101");
        assert_eq!(endpoint_url("http://h:1"), "http://h:1");
    }
}
