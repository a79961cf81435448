//! A TCP proxy for one directed peer link A->B (A dials B through it), controlled by the test:
//! pass, refuse (drop new and existing connections), blackhole (accept and read, forward
//! nothing) and per-chunk delay, each direction of the byte stream on its own.
//!
//! The kernel here has no netem, so this is how a test cuts, slows or half-breaks one link
//! without touching the others. Every change of mode severs the connections open at that moment:
//! bytes a blackhole swallowed would otherwise leave HTTP/2 framing corrupt when traffic resumes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest chunk the proxy reads at once.
const CHUNK_BYTES_MAX: usize = 64 * 1024;
/// Chunks a delayed direction may queue before the reader waits (back-pressure).
const DELAY_QUEUE_CHUNKS_MAX: usize = 1024;
/// How long the proxy tries to connect to the link's target.
const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// What happens to the bytes of one direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Pass,
    /// Read and discarded: the sender sees a healthy socket that never answers.
    Blackhole,
    /// Each chunk is forwarded this many milliseconds after it was read (order kept).
    DelayMs(u64),
}

/// The state of one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkMode {
    /// Refuse connections: new ones are closed at once (existing ones are severed when set).
    pub refuse: bool,
    /// Bytes from the dialling node (A) to the target (B): requests.
    pub to_target: Flow,
    /// Bytes from B back to A: replies.
    pub to_dialer: Flow,
}

impl LinkMode {
    pub const PASS: LinkMode = LinkMode {
        refuse: false,
        to_target: Flow::Pass,
        to_dialer: Flow::Pass,
    };
    pub const REFUSE: LinkMode = LinkMode {
        refuse: true,
        to_target: Flow::Pass,
        to_dialer: Flow::Pass,
    };
    pub const BLACKHOLE: LinkMode = LinkMode {
        refuse: false,
        to_target: Flow::Blackhole,
        to_dialer: Flow::Blackhole,
    };
    pub fn delay_ms(ms: u64) -> LinkMode {
        LinkMode {
            refuse: false,
            to_target: Flow::DelayMs(ms),
            to_dialer: Flow::DelayMs(ms),
        }
    }
}

struct Shared {
    mode: Mutex<LinkMode>,
    /// Bumped on every mode change; connections opened under an older value end.
    generation: watch::Sender<u64>,
}

/// One running link proxy. Dropping it stops the listener and every connection.
pub struct LinkProxy {
    pub from: u64,
    pub to: u64,
    /// Where the dialling node connects (bound; never port 0).
    pub listen_addr: String,
    pub target_addr: String,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl LinkProxy {
    /// Listens on `listen_addr` (e.g. `127.0.0.1:PORT`) and forwards to `target_addr`.
    pub async fn start(
        from: u64,
        to: u64,
        listen_addr: &str,
        target_addr: &str,
    ) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind(listen_addr).await?;
        // The address really bound (the caller may ask for port 0).
        let bound_addr = listener.local_addr()?.to_string();
        let (generation, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            mode: Mutex::new(LinkMode::PASS),
            generation,
        });
        let accept_task = tokio::spawn(accept_loop(
            listener,
            target_addr.to_string(),
            shared.clone(),
        ));
        Ok(LinkProxy {
            from,
            to,
            listen_addr: bound_addr,
            target_addr: target_addr.to_string(),
            shared,
            accept_task,
        })
    }

    pub fn mode(&self) -> LinkMode {
        *self.shared.mode.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the mode and severs every open connection (unless the mode is unchanged).
    pub fn set(&self, mode: LinkMode) {
        let mut current = self.shared.mode.lock().unwrap_or_else(|p| p.into_inner());
        if *current == mode {
            return;
        }
        *current = mode;
        self.shared
            .generation
            .send_modify(|generation| *generation += 1);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        // Ends every connection task.
        self.shared
            .generation
            .send_modify(|generation| *generation += 1);
    }
}

async fn accept_loop(listener: TcpListener, target: String, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mode = *shared.mode.lock().unwrap_or_else(|p| p.into_inner());
        if mode.refuse {
            drop(inbound);
            continue;
        }
        let generation = shared.generation.subscribe();
        tokio::spawn(serve_connection(
            inbound,
            target.clone(),
            shared.clone(),
            generation,
        ));
    }
}

async fn serve_connection(
    inbound: TcpStream,
    target: String,
    shared: Arc<Shared>,
    mut generation: watch::Receiver<u64>,
) {
    let opened_at = *generation.borrow_and_update();
    let connect = tokio::time::timeout(
        Duration::from_millis(CONNECT_TIMEOUT_MS),
        TcpStream::connect(&target),
    );
    let outbound = match connect.await {
        Ok(Ok(stream)) => stream,
        // The target is down: the dialler sees its connection closed, like a refused connect.
        _ => return,
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let to_target = pump(in_read, out_write, shared.clone(), true);
    let to_dialer = pump(out_read, in_write, shared, false);
    tokio::select! {
        _ = to_target => {}
        _ = to_dialer => {}
        _ = async {
            while generation.changed().await.is_ok() {
                if *generation.borrow() != opened_at {
                    return;
                }
            }
        } => {}
    }
    // Dropping both halves of both sockets closes the connection on each side.
}

/// Copies one direction until either side closes, applying the link's current flow per chunk.
async fn pump(
    mut from: OwnedReadHalf,
    to: OwnedWriteHalf,
    shared: Arc<Shared>,
    towards_target: bool,
) {
    let (queue, mut queued) = mpsc::channel::<(Instant, Vec<u8>)>(DELAY_QUEUE_CHUNKS_MAX);
    let writer = async move {
        let mut to = to;
        while let Some((due, chunk)) = queued.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buffer = vec![0u8; CHUNK_BYTES_MAX];
        loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            let mode = *shared.mode.lock().unwrap_or_else(|p| p.into_inner());
            let flow = if towards_target {
                mode.to_target
            } else {
                mode.to_dialer
            };
            let due = match flow {
                Flow::Blackhole => continue,
                Flow::Pass => Instant::now(),
                Flow::DelayMs(ms) => Instant::now() + Duration::from_millis(ms),
            };
            if queue.send((due, buffer[..read].to_vec())).await.is_err() {
                return;
            }
        }
    };
    // The reader ending drops the queue, so the writer drains what is queued, then ends.
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server; returns its address.
    async fn echo_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(read) = stream.read(&mut buffer).await {
                        if read == 0 || stream.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn proxy() -> LinkProxy {
        let target = echo_server().await;
        LinkProxy::start(1, 2, "127.0.0.1:0", &target)
            .await
            .unwrap()
    }

    /// The proxy's real port (it was asked for port 0).
    async fn connect(proxy: &LinkProxy) -> TcpStream {
        TcpStream::connect(&proxy.listen_addr).await.unwrap()
    }

    /// Sends `ping`; returns what came back within `wait` (None: nothing, Some(empty): closed).
    async fn round_trip(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
        if stream.write_all(b"ping").await.is_err() {
            return Some(Vec::new());
        }
        let mut buffer = [0u8; 4];
        match tokio::time::timeout(wait, stream.read_exact(&mut buffer)).await {
            Err(_) => None,
            Ok(Err(_)) => Some(Vec::new()),
            Ok(Ok(_)) => Some(buffer.to_vec()),
        }
    }

    #[tokio::test]
    async fn pass_forwards_both_ways() {
        let proxy = proxy().await;
        let mut stream = connect(&proxy).await;
        assert_eq!(
            round_trip(&mut stream, Duration::from_secs(5)).await,
            Some(b"ping".to_vec())
        );
    }

    #[tokio::test]
    async fn blackhole_swallows_and_refuse_closes() {
        let proxy = proxy().await;
        proxy.set(LinkMode::BLACKHOLE);
        let mut stream = connect(&proxy).await;
        assert_eq!(
            round_trip(&mut stream, Duration::from_millis(500)).await,
            None
        );

        proxy.set(LinkMode::REFUSE);
        // The blackholed connection was severed by the change...
        let mut buffer = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // ...and a new one is closed at once.
        let mut stream = connect(&proxy).await;
        assert_eq!(
            round_trip(&mut stream, Duration::from_secs(5)).await,
            Some(Vec::new())
        );

        proxy.set(LinkMode::PASS);
        let mut stream = connect(&proxy).await;
        assert_eq!(
            round_trip(&mut stream, Duration::from_secs(5)).await,
            Some(b"ping".to_vec())
        );
    }

    #[tokio::test]
    async fn one_direction_can_be_cut_alone() {
        let proxy = proxy().await;
        proxy.set(LinkMode {
            refuse: false,
            to_target: Flow::Pass,
            to_dialer: Flow::Blackhole,
        });
        let mut stream = connect(&proxy).await;
        // The echo server gets the bytes (it answers), but the answer never comes back.
        assert_eq!(
            round_trip(&mut stream, Duration::from_millis(500)).await,
            None
        );
    }

    #[tokio::test]
    async fn delay_holds_each_chunk() {
        let proxy = proxy().await;
        proxy.set(LinkMode::delay_ms(200));
        let mut stream = connect(&proxy).await;
        let started = std::time::Instant::now();
        assert_eq!(
            round_trip(&mut stream, Duration::from_secs(5)).await,
            Some(b"ping".to_vec())
        );
        // 200 ms each way.
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
    }
}
