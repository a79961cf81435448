//! Client settings: endpoints, deadlines and the retry budget (every limit named with its unit).

use std::time::Duration;

/// The local 3-node cluster of `make run` (`cluster-config/node-*.toml`).
pub const DEFAULT_ENDPOINTS: [&str; 3] = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"];

/// How a [`crate::Client`] talks to the cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` (or `http://host:port`) of one or more nodes' client listeners.
    pub endpoints: Vec<String>,
    /// Deadline of one attempt of one call (sent to the server as `grpc-timeout` too).
    pub request_timeout_ms: u64,
    /// Deadline for opening a TCP connection to a node.
    pub connect_timeout_ms: u64,
    /// Total time one call may spend across all its attempts (an attempt under way when it
    /// runs out may take up to 250 ms more to be given up).
    pub call_timeout_ms: u64,
    /// Attempts per call, the first included.
    pub attempts_max: u32,
    /// First backoff between attempts; doubles up to `backoff_ms_max`, with jitter.
    pub backoff_ms_initial: u64,
    pub backoff_ms_max: u64,
    /// Largest reply accepted (history pages and batch replies can be large).
    pub reply_bytes_max: usize,
    /// HTTP/2 pings on every connection to a node while it carries a call or an event stream
    /// (the one usage, authorize, release and get account go on, always): one every this
    /// many ms (0: none). A ping unanswered within `keep_alive_timeout_ms` ends the
    /// connection and fails its calls in flight, which are then retried elsewhere: a node
    /// whose machine vanished (no reset, no close) costs a call about interval + timeout
    /// instead of its whole `request_timeout_ms`, and a followed event stream resumes on
    /// another node instead of waiting forever.
    pub keep_alive_interval_ms: u64,
    pub keep_alive_timeout_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoints: DEFAULT_ENDPOINTS.iter().map(|s| s.to_string()).collect(),
            request_timeout_ms: 10_000,
            connect_timeout_ms: 2_000,
            call_timeout_ms: 30_000,
            attempts_max: 30,
            backoff_ms_initial: 50,
            backoff_ms_max: 1_000,
            reply_bytes_max: 64 * 1024 * 1024,
            keep_alive_interval_ms: 2_000,
            keep_alive_timeout_ms: 2_000,
        }
    }
}

impl ClientConfig {
    pub fn with_endpoints<I, S>(endpoints: I) -> ClientConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..ClientConfig::default()
        }
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Normalises `host:port` or `http://host:port` to the `host:port` the client keys nodes by.
pub fn normalize_endpoint(endpoint: &str) -> Result<String, String> {
    let trimmed = endpoint.trim();
    let bare = trimmed
        .strip_prefix("http://")
        .unwrap_or(trimmed)
        .trim_end_matches('/');
    if trimmed.starts_with("https://") {
        return Err("uses https; tallyd serves plain gRPC (http)".to_string());
    }
    let Some((host, port)) = bare.rsplit_once(':') else {
        return Err("must be host:port, e.g. 127.0.0.1:7101".to_string());
    };
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err("must be host:port, e.g. 127.0.0.1:7101".to_string());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("has port {port:?}; expected 1..=65535")),
        Ok(_) => match format!("http://{bare}").parse::<http::Uri>() {
            Ok(_) => Ok(bare.to_string()),
            Err(error) => Err(format!("is not a valid address: {error}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_normalise() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:7101").unwrap(),
            "127.0.0.1:7101"
        );
        assert_eq!(
            normalize_endpoint("http://localhost:7102/").unwrap(),
            "localhost:7102"
        );
        assert!(normalize_endpoint("localhost").is_err());
        assert!(normalize_endpoint("localhost:0").is_err());
        assert!(normalize_endpoint("localhost:99999").is_err());
        assert!(normalize_endpoint(":7101").is_err());
        assert!(normalize_endpoint("https://x:1").is_err());
        assert!(normalize_endpoint("exa^mple:7101").is_err());
    }
}
