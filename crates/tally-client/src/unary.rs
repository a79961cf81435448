//! gRPC unary calls on a bare HTTP/2 connection (the `h2` crate): how [`crate::Client`] sends
//! the calls on an application's request path (`RecordUsage`, `RecordUsageBatch`,
//! `Authorize`, `Release`, `GetAccount`), and how `tally-bench` sends its load.
//!
//! Why not tonic's `Channel`: through hyper's HTTP/2 client a request's headers and its message
//! leave in two socket writes. hyper hands the body to a task of its own when h2 has no send
//! capacity for the new stream yet, and h2 assigns capacity to a stream only on the
//! connection's next pass (a new stream waits as "pending open" until then), so the headers
//! are flushed first and the message after them. Queued on the `SendStream` straight after
//! `send_request`, the message is buffered by h2 and written in the same flush as the headers:
//! one write per request, no extra task, no channel hop through tonic's buffer (measured on the
//! load generator in session 19: 54-61 -> 38-41 us of CPU per one-event call). The calls are
//! ordinary gRPC (`content-type: application/grpc`, `te: trailers`, `grpc-timeout`,
//! length-prefixed messages, `grpc-status` in the trailers or in a trailers-only reply, read
//! with tonic's own `Status::from_header_map`, so a refusal's metadata arrives as tonic's client
//! would give it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use prost::Message;
use tally_proto::TallyError;
use tokio::net::TcpStream;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

/// The gRPC paths of the calls on an application's request path (`tally.v1.Ledger`), as sent on
/// a [`Connection`].
pub const RECORD_USAGE_PATH: &str = "/tally.v1.Ledger/RecordUsage";
pub const RECORD_USAGE_BATCH_PATH: &str = "/tally.v1.Ledger/RecordUsageBatch";
pub const AUTHORIZE_PATH: &str = "/tally.v1.Ledger/Authorize";
pub const RELEASE_PATH: &str = "/tally.v1.Ledger/Release";
pub const GET_ACCOUNT_PATH: &str = "/tally.v1.Ledger/GetAccount";

/// The stream and connection windows this client offers (replies to an 8,190-event batch
/// asking for every result are a few MiB).
const WINDOW_BYTES: u32 = 8 * 1024 * 1024;

/// The largest reply message accepted unless [`Connection::with_reply_bytes_max`] says
/// otherwise (tonic's client default is 4 MiB, too small for a large batch's every result).
pub const REPLY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One HTTP/2 connection; cheap to clone (clones share it, as the callers of one channel do).
#[derive(Clone)]
pub struct Connection {
    send: SendRequest<Bytes>,
    /// `http://host:port`, the scheme and authority of every request.
    origin: String,
    reply_bytes_max: usize,
    /// Set once the connection has ended (closed by either side or broken): every later call
    /// on it fails, and a caller that keeps connections opens a new one instead.
    closed: Arc<AtomicBool>,
}

/// A successful call: the reply message's protobuf encoding and the reply's headers (as gRPC
/// metadata).
pub struct Reply {
    pub message: Bytes,
    pub metadata: MetadataMap,
}

/// HTTP/2 pings on an open connection: one every `interval`; a ping not answered within
/// `timeout` ends the connection, failing the calls in flight on it (a peer that vanished
/// without closing it, or a link that went dark, is noticed then, not only at each call's
/// deadline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Connection {
    /// Opens a TCP connection to `address` (`host:port`) and does the HTTP/2 handshake; the
    /// connection is driven by a task of its own until every clone is dropped. Failing to
    /// connect is `Unavailable`, naming the address. No keep-alive pings (see
    /// [`Connection::open_keeping_alive`]).
    pub async fn open(address: &str, connect_timeout: Duration) -> Result<Connection, Status> {
        Connection::open_keeping_alive(address, connect_timeout, None).await
    }

    /// [`Connection::open`], then pings the server as `keep_alive` says (None: no pings).
    pub async fn open_keeping_alive(
        address: &str,
        connect_timeout: Duration,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Connection, Status> {
        let authority = address
            .strip_prefix("http://")
            .unwrap_or(address)
            .trim_end_matches('/');
        let cannot =
            |why: String| Status::unavailable(format!("cannot connect to {authority}: {why}"));
        let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(authority))
            .await
            .map_err(|_| {
                cannot(format!(
                    "no answer within {} ms",
                    connect_timeout.as_millis()
                ))
            })?
            .map_err(|error| cannot(error.to_string()))?;
        tcp.set_nodelay(true)
            .map_err(|error| cannot(error.to_string()))?;
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(WINDOW_BYTES)
            .initial_connection_window_size(WINDOW_BYTES)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(|error| cannot(format!("HTTP/2 handshake: {error}")))?;
        let closed = Arc::new(AtomicBool::new(false));
        let ended = closed.clone();
        let pinger = keep_alive.and_then(|keep_alive| Some((keep_alive, connection.ping_pong()?)));
        tokio::spawn(async move {
            // Ends when the server closes the connection, it breaks, or every clone is
            // dropped, or a ping goes unanswered; a call in flight then fails with its own
            // error (dropping the connection fails its streams).
            match pinger {
                None => {
                    let _ = connection.await;
                }
                Some((keep_alive, mut ping_pong)) => {
                    let pings = async move {
                        loop {
                            tokio::time::sleep(keep_alive.interval).await;
                            let pong = ping_pong.ping(h2::Ping::opaque());
                            match tokio::time::timeout(keep_alive.timeout, pong).await {
                                Ok(Ok(_)) => {}
                                Ok(Err(_)) | Err(_) => break,
                            }
                        }
                    };
                    tokio::select! {
                        _ = &mut connection => {}
                        () = pings => {}
                    }
                }
            }
            ended.store(true, Ordering::Release);
        });
        Ok(Connection {
            send,
            origin: format!("http://{authority}"),
            reply_bytes_max: REPLY_BYTES_MAX,
            closed,
        })
    }

    /// The same connection accepting reply messages of up to `bytes` bytes.
    pub fn with_reply_bytes_max(mut self, bytes: usize) -> Connection {
        self.reply_bytes_max = bytes;
        self
    }

    /// Whether the connection has ended; calls on it can only fail.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Calls `path` (`/package.Service/Method`) with `message` and returns the reply's protobuf
    /// encoding, or the call's status when it is not OK. The deadline covers the whole call and
    /// is sent as `grpc-timeout`.
    pub async fn unary(
        &self,
        path: &'static str,
        message: &impl Message,
        timeout: Duration,
    ) -> Result<Bytes, Status> {
        match tokio::time::timeout(timeout, self.call(path, message, timeout)).await {
            Ok(result) => result.map(|reply| reply.message),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no reply within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// Calls `path` with `message`, asking the server (`grpc-timeout`) to give up after
    /// `timeout`; has no timer of its own (the caller bounds it). A status that is not OK
    /// comes back as the error, its metadata (the trailers' other headers) included.
    pub async fn call(
        &self,
        path: &'static str,
        message: &impl Message,
        timeout: Duration,
    ) -> Result<Reply, Status> {
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("{}{path}", self.origin))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            // At most eight digits (gRPC over HTTP/2): milliseconds up to about 27 hours.
            .header(
                "grpc-timeout",
                format!("{}m", timeout.as_millis().clamp(1, 99_999_999)),
            )
            .body(())
            .map_err(|error| Status::internal(format!("request for {path}: {error}")))?;
        let mut send = self.send.clone().ready().await.map_err(transport)?;
        let (response, mut body_out) = send.send_request(request, false).map_err(transport)?;
        // Buffered by h2 until the stream has send capacity; written with the headers.
        body_out
            .send_data(length_prefixed(message), true)
            .map_err(transport)?;
        let response = response.await.map_err(transport)?;
        let (parts, mut body) = response.into_parts();
        match grpc_status(&parts.headers) {
            // A trailers-only reply: the status is in the headers, and there is no message.
            Some(Err(status)) => return Err(status),
            Some(Ok(())) => return Err(Status::internal("an OK reply without a message")),
            None => {}
        }
        if parts.status != http::StatusCode::OK {
            return Err(Status::unknown(format!("HTTP status {}", parts.status)));
        }
        let mut received = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(transport)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if received.len() + chunk.len() > self.reply_bytes_max + 5 {
                // The request was answered, so it may well have been applied: not a refusal
                // of the request (`internal` with the outcome unknown, not
                // `request_too_large`).
                return Err(TallyError::internal(format!(
                    "the reply is larger than reply_bytes_max ({} bytes), so it was not read; \
                     the request may have been applied: raise reply_bytes_max and send it again \
                     with the same ids (answered as duplicates)",
                    self.reply_bytes_max
                ))
                .with_detail("limit", self.reply_bytes_max.to_string())
                .with_outcome_unknown()
                .to_status());
            }
            received.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(transport)?;
        match trailers.as_ref().and_then(grpc_status) {
            Some(Ok(())) => {}
            Some(Err(status)) => return Err(status),
            None => return Err(Status::internal("the reply ended without a grpc-status")),
        }
        Ok(Reply {
            message: one_message(received.freeze())?,
            metadata: MetadataMap::from_headers(parts.headers),
        })
    }
}

/// `message`'s encoding behind gRPC's five-byte prefix (not compressed, length big-endian),
/// encoded straight into the buffer the request is sent from.
fn length_prefixed(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut framed = BytesMut::with_capacity(5 + len);
    framed.put_u8(0);
    framed.put_u32(len as u32);
    message.encode_raw(&mut framed);
    framed.freeze()
}

/// The one length-prefixed message of a unary reply.
fn one_message(mut received: Bytes) -> Result<Bytes, Status> {
    if received.len() < 5 {
        return Err(Status::internal(format!(
            "the reply holds {} bytes, not a length-prefixed message",
            received.len()
        )));
    }
    if received[0] != 0 {
        return Err(Status::internal(
            "the reply is compressed; none was asked for",
        ));
    }
    let length = u32::from_be_bytes([received[1], received[2], received[3], received[4]]) as usize;
    if received.len() != 5 + length {
        return Err(Status::internal(format!(
            "the reply's message says {length} bytes; {} follow",
            received.len() - 5
        )));
    }
    Ok(received.split_off(5))
}

/// The status in `headers` (`grpc-status`, and `grpc-message`, `grpc-status-details-bin` and
/// the other headers as metadata, read as tonic reads them): `Ok(())` for OK, `None` when
/// there is none.
fn grpc_status(headers: &http::HeaderMap) -> Option<Result<(), Status>> {
    let status = Status::from_header_map(headers)?;
    Some(match status.code() {
        Code::Ok => Ok(()),
        _ => Err(status),
    })
}

/// An HTTP/2 failure (refused or reset stream, the connection gone) as `Unavailable`, which a
/// caller may retry: usage carries its event ids, so a retry never charges twice.
fn transport(error: h2::Error) -> Status {
    Status::unavailable(format!("HTTP/2: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_proto::ingest::RecordUsageBatchWire;

    #[test]
    fn a_message_round_trips_through_the_prefix() {
        for message in [&b""[..], b"\x08\x01", &[7u8; 70_000][..]] {
            // Encodes as exactly these bytes.
            let framed = length_prefixed(&RecordUsageBatchWire::from(message.to_vec()));
            assert_eq!(framed.len(), 5 + message.len());
            assert_eq!(framed[0], 0);
            assert_eq!(
                one_message(framed).unwrap(),
                Bytes::copy_from_slice(message)
            );
        }
    }

    #[test]
    fn a_malformed_reply_is_an_error_not_a_message() {
        assert!(one_message(Bytes::from_static(b"\0\0\0")).is_err());
        assert!(one_message(Bytes::from_static(b"\x01\0\0\0\x01x")).is_err());
        assert!(one_message(Bytes::from_static(b"\0\0\0\0\x02x")).is_err());
        assert!(one_message(Bytes::from_static(b"\0\0\0\0\x01xy")).is_err());
    }

    #[test]
    fn statuses_are_read_from_headers() {
        let mut headers = http::HeaderMap::new();
        assert!(grpc_status(&headers).is_none());
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(matches!(grpc_status(&headers), Some(Ok(()))));
        headers.insert("grpc-status", "9".parse().unwrap());
        headers.insert(
            "grpc-message",
            "not%20the%20leader%3A%20try%20node%202".parse().unwrap(),
        );
        let status = grpc_status(&headers).unwrap().unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "not the leader: try node 2");
        headers.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(
            grpc_status(&headers).unwrap().unwrap_err().code(),
            Code::Unknown
        );
    }

    #[test]
    fn a_tally_error_in_trailers_keeps_its_code_details_and_leader() {
        // What a node sends when it refuses a call (tally-proto's `to_status`), written as
        // headers the way tonic's server writes trailers, and read back here.
        let sent =
            tally_proto::TallyError::new(tally_proto::ErrorCode::NotLeader, "not the leader")
                .with_detail("node", "2");
        let sent = tally_proto::TallyError {
            leader_addr: Some("127.0.0.1:7102".to_string()),
            leader_id: Some(2),
            ..sent
        };
        let mut headers = http::HeaderMap::new();
        sent.to_status().add_header(&mut headers).unwrap();
        let status = grpc_status(&headers).unwrap().unwrap_err();
        let back = tally_proto::TallyError::from_status(&status);
        assert_eq!(back.code, tally_proto::ErrorCode::NotLeader);
        assert_eq!(back.message, "not the leader");
        assert_eq!(back.details["node"], "2");
        assert_eq!(back.leader_addr.as_deref(), Some("127.0.0.1:7102"));
        assert_eq!(back.leader_id, Some(2));
    }

    /// A server that accepted the connection and then went silent (a stopped process, a
    /// vanished machine): with pings the connection ends and its calls fail as `Unavailable`;
    /// without them it stays open.
    #[tokio::test]
    async fn an_unanswered_ping_ends_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let keep_alive = KeepAlive {
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(50),
        };
        let pinged =
            Connection::open_keeping_alive(&address, Duration::from_secs(2), Some(keep_alive))
                .await
                .unwrap();
        let quiet = Connection::open(&address, Duration::from_secs(2))
            .await
            .unwrap();
        // Accepted and held, never read or answered.
        let _held = (
            listener.accept().await.unwrap(),
            listener.accept().await.unwrap(),
        );
        let waited = std::time::Instant::now();
        while !pinged.is_closed() {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the pinged connection is still open"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let error = pinged
            .unary(
                RECORD_USAGE_PATH,
                &RecordUsageBatchWire::default(),
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unavailable, "{error}");
        assert!(!quiet.is_closed());
    }
}
