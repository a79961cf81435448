//! A tiny HTTP/1.1 responder for `/metrics`, `/health/live` and `/health/ready`.
//!
//! Three GET routes do not justify an HTTP framework: this reads one request head (bounded in
//! size and time), answers, and closes the connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Longest request head accepted, in bytes.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// How long a client has to send its request head.
const REQUEST_HEAD_TIMEOUT_MS: u64 = 5_000;
/// Most scrapes served at once.
const CONNECTIONS_MAX: usize = 64;

/// What the HTTP routes report; implemented by the node.
pub trait HealthSource: Send + Sync + 'static {
    /// Prometheus text.
    fn metrics_text(&self) -> String;
    /// `Ok` when the node can serve requests: it knows a leader and has applied `Init`.
    /// `Err` says why not.
    fn readiness(&self) -> Result<(), String>;
}

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn HealthSource>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the limit: drop the connection rather than queue scrapes without bound.
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(error) = answer(stream, source.as_ref()).await {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, source: &dyn HealthSource) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let read_head = async {
        loop {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&chunk[..read]);
            if head.windows(4).any(|window| window == b"\r\n\r\n") {
                return Ok(true);
            }
            if head.len() > REQUEST_HEAD_BYTES_MAX {
                return Ok(false);
            }
        }
    };
    let complete =
        match tokio::time::timeout(Duration::from_millis(REQUEST_HEAD_TIMEOUT_MS), read_head).await
        {
            Ok(result) => result?,
            Err(_) => false,
        };
    if !complete {
        return respond(&mut stream, 400, "text/plain", "bad request\n").await;
    }
    let text = String::from_utf8_lossy(&head);
    let request_line = text.lines().next().unwrap_or("");
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    if method != "GET" {
        return respond(&mut stream, 405, "text/plain", "only GET is served here\n").await;
    }
    match path {
        "/metrics" => {
            let body = source.metrics_text();
            respond(&mut stream, 200, "text/plain; version=0.0.4", &body).await
        }
        "/health/live" => respond(&mut stream, 200, "text/plain", "live\n").await,
        "/health/ready" => match source.readiness() {
            Ok(()) => respond(&mut stream, 200, "text/plain", "ready\n").await,
            Err(why) => {
                respond(
                    &mut stream,
                    503,
                    "text/plain",
                    &format!("not ready: {why}\n"),
                )
                .await
            }
        },
        _ => {
            respond(
                &mut stream,
                404,
                "text/plain",
                "not found; try /metrics, /health/live, /health/ready\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        ready: bool,
    }

    impl HealthSource for Fixed {
        fn metrics_text(&self) -> String {
            "tally_raft_term{node=\"1\"} 3\n".to_string()
        }
        fn readiness(&self) -> Result<(), String> {
            if self.ready {
                Ok(())
            } else {
                Err("no leader".to_string())
            }
        }
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_the_three_routes() {
        for ready in [true, false] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = watch::channel(false);
            let server = tokio::spawn(serve(listener, Arc::new(Fixed { ready }), stopped));
            let metrics = get(addr, "/metrics").await;
            assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
            assert!(metrics.ends_with("tally_raft_term{node=\"1\"} 3\n"));
            assert!(get(addr, "/health/live").await.starts_with("HTTP/1.1 200"));
            let readiness = get(addr, "/health/ready").await;
            if ready {
                assert!(readiness.starts_with("HTTP/1.1 200"), "{readiness}");
            } else {
                assert!(readiness.starts_with("HTTP/1.1 503"), "{readiness}");
                assert!(readiness.contains("no leader"));
            }
            assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
            stop.send(true).unwrap();
            server.await.unwrap();
        }
    }
}
