//! The process-test harness: real `tallyd` binaries on 127.0.0.1 with temporary data
//! directories, driven through the generated gRPC clients.
//!
//! - [`Cluster::start`] writes one config per node (ports chosen here and checked free), starts
//!   every node, and waits until each is ready. Every child is killed when the `Cluster` is
//!   dropped, also when the test panics; then the last lines of each node's log are printed and
//!   the data directory is kept for inspection.
//! - Faults: [`Cluster::kill9`], [`Cluster::stop`] (SIGTERM, graceful), [`Cluster::restart`].
//! - Membership: [`Cluster::spawn_joiner`] starts a node that is not an initial member.
//! - Reads and checks: [`Cluster::leader`], [`Cluster::converged_hash`], [`Cluster::retry`]
//!   (a write retried across nodes with the same ids, as a real client does).
//!
//! Tests within one binary are serialized by a process-wide lock: this machine has two cores,
//! and two clusters at once would make election timeouts fire for no reason but CPU.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tally_proto::v1;
use tally_proto::v1::admin_client::AdminClient;
use tally_proto::v1::ledger_client::LedgerClient;
use tally_proto::{ErrorCode, TallyError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};
use tonic::{Response, Status};

pub use tally_proto;

pub mod faults;

/// Per-request deadline of the test's clients.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the harness waits for a cluster to reach a state (leader, readiness, convergence).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

static SERIAL: Mutex<()> = Mutex::new(());
static TALLYD: OnceLock<PathBuf> = OnceLock::new();
static PORTS_HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// The `tallyd` binary: `$TALLYD_BIN`, or built once with the same profile as this test.
/// Starts `tallyd --config CONFIG` with its output appended to `log_path`: one way to start a
/// node for every harness (the plain cluster and the fault cluster).
pub fn spawn_tallyd(
    config_path: &std::path::Path,
    log_path: &std::path::Path,
) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("opening the node log");
    Command::new(tallyd_binary())
        .arg("--config")
        .arg(config_path)
        .env(
            "RUST_LOG",
            "info,openraft=warn,sled=warn,h2=warn,tonic=warn",
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("starting tallyd")
}

pub fn tallyd_binary() -> PathBuf {
    TALLYD
        .get_or_init(|| {
            if let Ok(path) = std::env::var("TALLYD_BIN") {
                return PathBuf::from(path);
            }
            // The test executable lives in target/<profile>/deps/; tallyd in target/<profile>/.
            let exe = std::env::current_exe().expect("current_exe");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>")
                .to_path_buf();
            let release = profile_dir
                .file_name()
                .map(|name| name == "release")
                .unwrap_or(false);
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "tally-server", "--bin", "tallyd"]);
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("running cargo build for tallyd");
            assert!(
                status.success(),
                "cargo build -p tally-server --bin tallyd failed"
            );
            let path = profile_dir.join("tallyd");
            assert!(path.exists(), "{} missing after the build", path.display());
            path
        })
        .clone()
}

/// `count` free ports on 127.0.0.1, never the same twice in this process.
pub fn free_ports(count: usize) -> Vec<u16> {
    let mut handed_out = PORTS_HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < count {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("binding a free port");
        let port = listener.local_addr().expect("local_addr").port();
        if handed_out.insert(port) {
            ports.push(port);
        }
        // Held until all are chosen so the kernel cannot hand out one twice.
        listeners.push(listener);
    }
    ports
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// Settings the test may change for every node of a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub voters: u64,
    pub tick_interval_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub logs_to_keep_after_snapshot: u64,
    /// More `[limits]` lines for every node's config (TOML, one setting per line).
    pub extra_limits: &'static str,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            voters: 3,
            tick_interval_ms: 1_000,
            snapshot_logs_since_last: 10_000,
            logs_to_keep_after_snapshot: 1_000,
            extra_limits: "",
        }
    }
}

#[derive(Clone, Debug)]
pub struct NodeAddrs {
    pub client: String,
    pub peer: String,
    pub metrics: String,
}

pub struct NodeProcess {
    pub id: u64,
    pub addrs: NodeAddrs,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let child = spawn_tallyd(&self.config_path, &self.log_path);
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit (SIGKILL after `timeout`). Returns whether it exited
    /// by itself with success.
    fn stop(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = send_signal(child.id() as libc::pid_t, libc::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn log_tail(&self, lines: usize) -> String {
        let Ok(file) = std::fs::File::open(&self.log_path) else {
            return String::new();
        };
        let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

#[allow(unsafe_code)]
fn limit_file_size(command: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure only calls async-signal-safe functions
    // (signal, setrlimit) on values it owns.
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
fn send_signal(pid: libc::pid_t, signal: libc::c_int) -> i32 {
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    unsafe { libc::kill(pid, signal) }
}

pub struct Cluster {
    pub spec: ClusterSpec,
    pub nodes: BTreeMap<u64, NodeProcess>,
    dir: Option<tempfile::TempDir>,
    initial_members: Vec<(u64, NodeAddrs)>,
    _serial: MutexGuard<'static, ()>,
}

fn member_toml(id: u64, addrs: &NodeAddrs) -> String {
    format!(
        "[[initial_members]]\nid = {id}\npeer_addr = \"{}\"\nclient_addr = \"{}\"\n\n",
        addrs.peer, addrs.client
    )
}

impl Cluster {
    /// Starts `spec.voters` nodes (ids 1..) and waits until each is ready.
    pub async fn start(spec: ClusterSpec) -> Cluster {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let binary = tallyd_binary();
        assert!(binary.exists(), "{} missing", binary.display());
        let dir = tempfile::Builder::new()
            .prefix("tally-cluster-")
            .tempdir()
            .expect("temp dir");
        let mut cluster = Cluster {
            spec: spec.clone(),
            nodes: BTreeMap::new(),
            dir: Some(dir),
            initial_members: Vec::new(),
            _serial: serial,
        };
        let initial: Vec<(u64, NodeAddrs)> = (1..=spec.voters)
            .map(|id| (id, cluster.new_addrs()))
            .collect();
        cluster.initial_members = initial.clone();
        for (id, addrs) in initial {
            cluster.add_process(id, addrs, true);
        }
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        for id in &ids {
            cluster.nodes.get_mut(id).expect("node").start();
        }
        for id in &ids {
            cluster.wait_ready(*id).await;
        }
        cluster
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    fn new_addrs(&self) -> NodeAddrs {
        let ports = free_ports(3);
        NodeAddrs {
            client: format!("127.0.0.1:{}", ports[0]),
            peer: format!("127.0.0.1:{}", ports[1]),
            metrics: format!("127.0.0.1:{}", ports[2]),
        }
    }

    fn add_process(&mut self, id: u64, addrs: NodeAddrs, initial_member: bool) {
        let data_dir = self.dir().join(format!("node-{id}"));
        let config_path = self.dir().join(format!("node-{id}.toml"));
        let log_path = self.dir().join(format!("node-{id}.log"));
        let members: String = if initial_member {
            self.initial_members
                .iter()
                .map(|(id, addrs)| member_toml(*id, addrs))
                .collect()
        } else {
            String::new()
        };
        let spec = &self.spec;
        let config = format!(
            "node_id = {id}\n\
             client_addr = \"{client}\"\n\
             peer_addr = \"{peer}\"\n\
             metrics_addr = \"{metrics}\"\n\
             advertise_client_addr = \"{client}\"\n\
             data_dir = \"{data}\"\n\n\
             {members}\
             [raft]\n\
             heartbeat_ms = 150\n\
             election_timeout_ms_min = 1000\n\
             election_timeout_ms_max = 2000\n\
             snapshot_logs_since_last = {since_last}\n\
             logs_to_keep_after_snapshot = {keep}\n\n\
             [limits]\n\
             request_deadline_ms = 8000\n\
             {extra_limits}\n\n\
             [proposer]\n\
             tick_interval_ms = {tick}\n",
            client = addrs.client,
            peer = addrs.peer,
            metrics = addrs.metrics,
            data = data_dir.display(),
            since_last = spec.snapshot_logs_since_last,
            keep = spec.logs_to_keep_after_snapshot,
            tick = spec.tick_interval_ms,
            extra_limits = spec.extra_limits,
        );
        std::fs::write(&config_path, config).expect("writing the node config");
        self.nodes.insert(
            id,
            NodeProcess {
                id,
                addrs,
                config_path,
                data_dir,
                log_path,
                child: None,
            },
        );
    }

    /// Starts a node that is not an initial member (an empty store that waits to be added).
    /// Returns its peer address for `AddLearner`.
    pub async fn spawn_joiner(&mut self, id: u64) -> String {
        let addrs = self.new_addrs();
        let peer = addrs.peer.clone();
        self.add_process(id, addrs, false);
        self.nodes.get_mut(&id).expect("node").start();
        self.wait_live(id).await;
        peer
    }

    pub fn node(&self, id: u64) -> &NodeProcess {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|node| node.is_running())
            .map(|node| node.id)
            .collect()
    }

    pub fn kill9(&mut self, id: u64) {
        eprintln!("[harness] kill -9 node {id}");
        self.nodes.get_mut(&id).expect("node").kill9();
    }

    /// Starts node `id` with a limit on the size of any file it writes (`RLIMIT_FSIZE`, with
    /// SIGXFSZ ignored): a write past it fails with EFBIG, as a full disk fails a write with
    /// ENOSPC, without mounting anything.
    pub fn restart_with_file_size_limit(&mut self, id: u64, bytes: u64) {
        eprintln!("[harness] start node {id} with files limited to {bytes} bytes");
        let node = self.nodes.get_mut(&id).expect("node");
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("opening the node log");
        let mut command = Command::new(tallyd_binary());
        command
            .arg("--config")
            .arg(&node.config_path)
            .env(
                "RUST_LOG",
                "info,openraft=warn,sled=warn,h2=warn,tonic=warn",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        limit_file_size(&mut command, bytes);
        node.child = Some(command.spawn().expect("starting tallyd"));
    }

    /// Waits up to `timeout` for node `id` to exit by itself; its exit code, if it did.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<i32> {
        let node = self.nodes.get_mut(&id).expect("node");
        let started = Instant::now();
        while started.elapsed() < timeout {
            let child = node.child.as_mut().expect("node is running");
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGSTOP (`pause`) and SIGCONT (`resume`): a frozen node keeps its connections open and
    /// answers nothing, as a frozen VM does.
    pub fn pause(&mut self, id: u64) {
        self.signal(id, libc::SIGSTOP, "SIGSTOP");
    }

    pub fn resume(&mut self, id: u64) {
        self.signal(id, libc::SIGCONT, "SIGCONT");
    }

    fn signal(&mut self, id: u64, signal: libc::c_int, name: &str) {
        eprintln!("[harness] {name} node {id}");
        let pid = self.node(id).child.as_ref().expect("node is running").id();
        send_signal(pid as libc::pid_t, signal);
    }

    /// Graceful stop; asserts the node exited cleanly on SIGTERM.
    pub fn stop(&mut self, id: u64) {
        eprintln!("[harness] SIGTERM node {id}");
        let clean = self
            .nodes
            .get_mut(&id)
            .expect("node")
            .stop(Duration::from_secs(20));
        assert!(
            clean,
            "node {id} did not exit cleanly on SIGTERM:\n{}",
            self.node(id).log_tail(30)
        );
    }

    pub fn restart(&mut self, id: u64) {
        eprintln!("[harness] start node {id}");
        self.nodes.get_mut(&id).expect("node").start();
    }

    pub fn channel(&self, id: u64) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.node(id).addrs.client))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .timeout(REQUEST_TIMEOUT)
            .connect_lazy()
    }

    pub fn ledger(&self, id: u64) -> LedgerClient<Channel> {
        LedgerClient::new(self.channel(id)).max_decoding_message_size(64 * 1024 * 1024)
    }

    pub fn admin(&self, id: u64) -> AdminClient<Channel> {
        AdminClient::new(self.channel(id))
    }

    /// GET on the node's metrics listener: (status code, body).
    pub async fn http_get(&self, id: u64, path: &str) -> Option<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(&self.node(id).addrs.metrics)
            .await
            .ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())?;
        Some((status, body))
    }

    pub async fn wait_live(&self, id: u64) {
        self.wait_for(&format!("node {id} live"), || async move {
            matches!(self.http_get(id, "/health/live").await, Some((200, _)))
        })
        .await;
    }

    /// Until `/health/ready` answers 200: a leader is known and Init is applied here.
    pub async fn wait_ready(&self, id: u64) {
        self.wait_for(&format!("node {id} ready"), || async move {
            matches!(self.http_get(id, "/health/ready").await, Some((200, _)))
        })
        .await;
    }

    /// Polls `check` every 100 ms until it holds; panics (with the node logs) after
    /// [`WAIT_TIMEOUT`].
    pub async fn wait_for<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let started = Instant::now();
        while started.elapsed() < WAIT_TIMEOUT {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out after {WAIT_TIMEOUT:?} waiting for {what}");
    }

    pub async fn status(&self, id: u64) -> Option<v1::ClusterStatusReply> {
        self.admin(id)
            .cluster_status(v1::ClusterStatusRequest {})
            .await
            .ok()
            .map(Response::into_inner)
    }

    /// The leader that every running node among `among` agrees on (and is one of them).
    pub async fn leader_among(&self, among: &[u64]) -> u64 {
        let mut found = None;
        let started = Instant::now();
        while started.elapsed() < WAIT_TIMEOUT {
            let mut leaders = BTreeSet::new();
            let mut all_answered = true;
            for id in among {
                match self.status(*id).await {
                    Some(status) => {
                        leaders.insert(status.leader_id);
                    }
                    None => all_answered = false,
                }
            }
            if all_answered && leaders.len() == 1 {
                if let Some(Some(leader)) = leaders.into_iter().next() {
                    if among.contains(&leader) {
                        found = Some(leader);
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found.unwrap_or_else(|| panic!("no agreed leader among {among:?} after {WAIT_TIMEOUT:?}"))
    }

    pub async fn leader(&self) -> u64 {
        let running = self.running();
        self.leader_among(&running).await
    }

    pub async fn state_hash(
        &self,
        id: u64,
        consistency: v1::Consistency,
    ) -> Result<v1::StateHashReply, Status> {
        self.admin(id)
            .state_hash(v1::StateHashRequest {
                consistency: consistency as i32,
                at_index: None,
            })
            .await
            .map(Response::into_inner)
    }

    /// Waits until every node in `ids` reports the same applied index, then asserts they
    /// report the same state hash there; returns it. Ticks move the index about once a second,
    /// so the nodes are sampled together until they line up.
    pub async fn converged_hash(&self, ids: &[u64]) -> v1::StateHashReply {
        let started = Instant::now();
        let mut last = Vec::new();
        while started.elapsed() < WAIT_TIMEOUT {
            let mut replies = Vec::new();
            for id in ids {
                if let Ok(reply) = self.state_hash(*id, v1::Consistency::Follower).await {
                    replies.push(reply);
                }
            }
            if replies.len() == ids.len()
                && replies
                    .iter()
                    .all(|reply| reply.applied_index == replies[0].applied_index)
            {
                for reply in &replies {
                    assert_eq!(
                        reply.hash_hex, replies[0].hash_hex,
                        "nodes {} and {} disagree on the state at index {}: {replies:?}",
                        replies[0].node_id, reply.node_id, reply.applied_index
                    );
                }
                return replies.remove(0);
            }
            last = replies;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nodes {ids:?} never reached the same applied index; last seen {last:?}");
    }

    /// Runs a write against the running nodes in turn (leader first when known) until it
    /// answers, retrying transient failures with the same request, as a client must: the
    /// ledger deduplicates by event id, so a retry never applies twice. Panics on a
    /// non-transient error.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut call: F) -> T
    where
        F: FnMut(LedgerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut attempt = 0usize;
        let mut last_error = None;
        while started.elapsed() < WAIT_TIMEOUT {
            let running = self.running();
            if running.is_empty() {
                panic!("{what}: no node is running");
            }
            let id = running[attempt % running.len()];
            attempt += 1;
            match call(self.ledger(id)).await {
                Ok(response) => return response.into_inner(),
                Err(status) => {
                    let error = TallyError::from_status(&status);
                    if !is_transient(error.code) {
                        panic!(
                            "{what} through node {id} failed: {} {}",
                            error.code, error.message
                        );
                    }
                    last_error = Some(format!("{} {}", error.code, error.message));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("{what}: no success within {WAIT_TIMEOUT:?}; last error {last_error:?}");
    }
}

/// Errors a client retries (with the same ids).
pub fn is_transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unavailable
            | ErrorCode::NotLeader
            | ErrorCode::DeadlineExceeded
            | ErrorCode::NotInitialized
    )
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            node.kill9();
        }
        if std::thread::panicking() {
            for node in self.nodes.values() {
                eprintln!(
                    "----- last lines of node {} ({}) -----",
                    node.id,
                    node.log_path.display()
                );
                eprintln!("{}", node.log_tail(40));
            }
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("[harness] data and logs kept in {}", kept.display());
            }
        }
    }
}

/// Request builders for the ledger setup the tests share.
pub mod requests {
    use super::v1;

    pub fn create_asset(code: &str, scale: u32) -> v1::CreateAssetRequest {
        v1::CreateAssetRequest {
            code: code.to_string(),
            scale,
        }
    }

    /// A price book charging `unit_price` per unit of `meter`.
    pub fn per_unit_prices(
        book: &str,
        asset: &str,
        meter: &str,
        unit_price: &str,
    ) -> v1::PublishPricesRequest {
        v1::PublishPricesRequest {
            book: book.to_string(),
            asset: asset.to_string(),
            effective_from_ms: None,
            rates: vec![v1::Rate {
                meter: meter.to_string(),
                dimensions: Vec::new(),
                model: Some(v1::rate::Model::PerUnit(v1::PerUnit {
                    unit_price: unit_price.to_string(),
                    per: "1".to_string(),
                })),
            }],
        }
    }

    pub fn create_account(id: &str, asset: &str, book: &str) -> v1::CreateAccountRequest {
        v1::CreateAccountRequest {
            id: id.to_string(),
            asset: asset.to_string(),
            price_book: Some(book.to_string()),
            ..Default::default()
        }
    }

    pub fn purchased_grant(
        account: &str,
        grant_id: &str,
        amount: &str,
        paid: &str,
    ) -> v1::AddGrantRequest {
        v1::AddGrantRequest {
            account: account.to_string(),
            grant_id: grant_id.to_string(),
            category: v1::GrantCategory::Purchased as i32,
            amount: amount.to_string(),
            paid: Some(paid.to_string()),
            ..Default::default()
        }
    }

    pub fn usage(
        event_id: &str,
        account: &str,
        meter: &str,
        quantity: &str,
        occurred_at_ms: u64,
    ) -> v1::RecordUsageRequest {
        v1::RecordUsageRequest {
            event: Some(v1::UsageEvent {
                event_id: event_id.to_string(),
                account: account.to_string(),
                meter: meter.to_string(),
                quantity: quantity.to_string(),
                dimensions: Vec::new(),
                occurred_at_ms,
                cost: None,
                hold_id: None,
            }),
        }
    }
}

/// The settlement of a usage reply, or a panic naming what came back instead.
pub fn settlement(result: &Option<v1::UsageResult>) -> (&'static str, v1::Settlement) {
    use v1::usage_result::Outcome;
    match result.as_ref().and_then(|result| result.outcome.as_ref()) {
        Some(Outcome::Settled(settlement)) => ("settled", settlement.clone()),
        Some(Outcome::Duplicate(settlement)) => ("duplicate", settlement.clone()),
        other => panic!("expected a settlement, got {other:?}"),
    }
}

/// Records one usage event through `clients` in turn until one answers, retrying transient
/// failures with the same request (so with the same event id). For spawned writers, which
/// cannot borrow the `Cluster`.
pub async fn record_usage_retrying(
    clients: &[LedgerClient<Channel>],
    request: v1::RecordUsageRequest,
) -> v1::RecordUsageReply {
    let started = Instant::now();
    let mut attempt = 0usize;
    let mut last_error = String::new();
    while started.elapsed() < WAIT_TIMEOUT {
        let mut client = clients[attempt % clients.len()].clone();
        attempt += 1;
        match client.record_usage(request.clone()).await {
            Ok(reply) => return reply.into_inner(),
            Err(status) => {
                let error = TallyError::from_status(&status);
                assert!(
                    is_transient(error.code),
                    "usage failed: {} {}",
                    error.code,
                    error.message
                );
                last_error = format!("{} {}", error.code, error.message);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("usage never answered within {WAIT_TIMEOUT:?}; last error {last_error}");
}

/// Spawns a writer that records one `tokens` usage event of `quantity` on `account` after
/// another (ids `{prefix}-0`, `{prefix}-1`...), each retried through `clients` until it
/// settles, with `pause` between them, until `stop` turns true: resolves to how many it wrote.
pub fn spawn_writer(
    clients: Vec<LedgerClient<Channel>>,
    account: &str,
    prefix: &str,
    quantity: &str,
    pause: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let (account, prefix, quantity) = (
        account.to_string(),
        prefix.to_string(),
        quantity.to_string(),
    );
    tokio::spawn(async move {
        let mut count = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let request = requests::usage(
                &format!("{prefix}-{count}"),
                &account,
                "tokens",
                &quantity,
                now_ms(),
            );
            settlement(&record_usage_retrying(&clients, request).await.result);
            count += 1;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        count
    })
}

impl Cluster {
    /// Asset `CREDITS` (scale 0), price book `std` charging 1 per `tokens`, and `account` with
    /// a purchased grant of `grant` credits. Retried across nodes, so it works during faults.
    pub async fn setup_credits_account(&self, account: &str, grant: u64) {
        use requests::*;
        self.retry("create asset", |mut client| async move {
            client.create_asset(create_asset("CREDITS", 0)).await
        })
        .await;
        self.retry("publish prices", |mut client| async move {
            client
                .publish_prices(per_unit_prices("std", "CREDITS", "tokens", "1"))
                .await
        })
        .await;
        let account = account.to_string();
        self.retry("create account", |mut client| {
            let request = create_account(&account, "CREDITS", "std");
            async move { client.create_account(request).await }
        })
        .await;
        self.retry("add grant", |mut client| {
            let request = purchased_grant(&account, "initial", &grant.to_string(), "100");
            async move { client.add_grant(request).await }
        })
        .await;
    }

    /// A linearizable read of `account` through some running node.
    pub async fn account(&self, account: &str) -> v1::Account {
        let account = account.to_string();
        self.retry("get account", |mut client| {
            let request = v1::GetAccountRequest {
                account: account.clone(),
                consistency: v1::Consistency::Linearizable as i32,
            };
            async move { client.get_account(request).await }
        })
        .await
        .account
        .expect("account in reply")
    }

    /// A linearizable all-time report of `account` through some running node.
    pub async fn report(&self, account: &str) -> v1::Report {
        let account = account.to_string();
        self.retry("report", |mut client| {
            let request = v1::ReportRequest {
                account: Some(account.clone()),
                month: None,
                consistency: v1::Consistency::Linearizable as i32,
            };
            async move { client.report(request).await }
        })
        .await
        .report
        .expect("report in reply")
    }

    /// Clients for every running node.
    pub fn clients(&self) -> Vec<LedgerClient<Channel>> {
        self.running()
            .into_iter()
            .map(|id| self.ledger(id))
            .collect()
    }
}
