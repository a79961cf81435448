//! [`FaultCluster`]: real `tallyd` processes whose every peer link goes through a
//! [`LinkProxy`](super::proxy::LinkProxy), plus the process faults (kill -9, SIGSTOP/SIGCONT,
//! restart) and the network faults (isolate, split, one-way loss, slow links).
//!
//! Node A dials node B through proxy A->B because A's config carries
//! `[raft.peer_dial_overrides] B = "<proxy A->B>"`. Proxies exist for every ordered pair among
//! `max_nodes` ids from the start, so a node added later (a learner) is wired the same way.
//! Every process is killed when the cluster is dropped, also when a test panics; the data and
//! logs are then kept and the logs' last lines printed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use tally_proto::v1;
use tally_proto::v1::admin_client::AdminClient;
use tally_proto::v1::ledger_client::LedgerClient;
use tonic::transport::{Channel, Endpoint};

use super::proxy::{Flow, LinkMode, LinkProxy};
use crate::{free_ports, tallyd_binary, NodeAddrs};

/// Per-request deadline of the fault tests' clients: short, so a partition turns requests into
/// `unknown` outcomes quickly instead of stalling the workload.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(4);

/// Settings of a fault cluster.
#[derive(Clone, Debug)]
pub struct FaultSpec {
    /// Initial voters, ids 1..=voters.
    pub voters: u64,
    /// Ids voters+1..=max_nodes may join later; their proxies exist from the start.
    pub max_nodes: u64,
    pub snapshot_logs_since_last: u64,
    pub logs_to_keep_after_snapshot: u64,
}

impl Default for FaultSpec {
    fn default() -> Self {
        FaultSpec {
            voters: 3,
            max_nodes: 4,
            snapshot_logs_since_last: 10_000,
            logs_to_keep_after_snapshot: 1_000,
        }
    }
}

pub struct FaultNode {
    pub id: u64,
    pub addrs: NodeAddrs,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl FaultNode {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
    pub fn is_paused(&self) -> bool {
        self.paused
    }
    fn pid(&self) -> Option<libc::pid_t> {
        self.child.as_ref().map(|child| child.id() as libc::pid_t)
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
fn signal(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// One fault cluster at a time per test binary: cargo runs a binary's tests in parallel, and
/// two clusters on two cores would make elections fire for no reason but CPU.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct FaultCluster {
    pub spec: FaultSpec,
    /// Every node that may ever run (ids 1..=max_nodes); only some are started.
    pub nodes: BTreeMap<u64, FaultNode>,
    /// Proxy per directed link (from, to).
    pub links: BTreeMap<(u64, u64), LinkProxy>,
    dir: Option<tempfile::TempDir>,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl FaultCluster {
    /// Writes the configs, starts the proxies and the initial voters, and waits until each
    /// voter is ready (leader known, Init applied).
    pub async fn start(spec: FaultSpec) -> FaultCluster {
        assert!(spec.voters >= 1 && spec.max_nodes >= spec.voters);
        let serial = SERIAL.lock().await;
        let binary = tallyd_binary();
        assert!(binary.exists(), "{} missing", binary.display());
        let dir = tempfile::Builder::new()
            .prefix("tally-faults-")
            .tempdir()
            .expect("temp dir");
        let ids: Vec<u64> = (1..=spec.max_nodes).collect();
        let addrs: BTreeMap<u64, NodeAddrs> = ids
            .iter()
            .map(|id| {
                let ports = free_ports(3);
                let addrs = NodeAddrs {
                    client: format!("127.0.0.1:{}", ports[0]),
                    peer: format!("127.0.0.1:{}", ports[1]),
                    metrics: format!("127.0.0.1:{}", ports[2]),
                };
                (*id, addrs)
            })
            .collect();
        let mut links = BTreeMap::new();
        for from in &ids {
            for to in &ids {
                if from == to {
                    continue;
                }
                let port = free_ports(1)[0];
                let proxy =
                    LinkProxy::start(*from, *to, &format!("127.0.0.1:{port}"), &addrs[to].peer)
                        .await
                        .expect("starting a link proxy");
                links.insert((*from, *to), proxy);
            }
        }
        let mut cluster = FaultCluster {
            spec: spec.clone(),
            nodes: BTreeMap::new(),
            links,
            dir: Some(dir),
            _serial: serial,
        };
        for id in &ids {
            let node = cluster.write_config(*id, &addrs);
            cluster.nodes.insert(*id, node);
        }
        for id in 1..=spec.voters {
            cluster.start_node(id);
        }
        for id in 1..=spec.voters {
            cluster.wait_ready(id).await;
        }
        cluster
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    fn write_config(&self, id: u64, addrs: &BTreeMap<u64, NodeAddrs>) -> FaultNode {
        let own = &addrs[&id];
        let data_dir = self.dir().join(format!("node-{id}"));
        let config_path = self.dir().join(format!("node-{id}.toml"));
        let log_path = self.dir().join(format!("node-{id}.log"));
        let members: String = if id <= self.spec.voters {
            (1..=self.spec.voters)
                .map(|member| {
                    format!(
                        "[[initial_members]]\nid = {member}\npeer_addr = \"{}\"\nclient_addr = \"{}\"\n\n",
                        addrs[&member].peer, addrs[&member].client
                    )
                })
                .collect()
        } else {
            String::new()
        };
        let overrides: String = self
            .links
            .iter()
            .filter(|((from, _), _)| *from == id)
            .map(|((_, to), proxy)| format!("{to} = \"{}\"\n", proxy.listen_addr))
            .collect();
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
             [raft.peer_dial_overrides]\n\
             {overrides}\n\
             [limits]\n\
             request_deadline_ms = 3000\n",
            client = own.client,
            peer = own.peer,
            metrics = own.metrics,
            data = data_dir.display(),
            since_last = self.spec.snapshot_logs_since_last,
            keep = self.spec.logs_to_keep_after_snapshot,
        );
        std::fs::write(&config_path, config).expect("writing a node config");
        FaultNode {
            id,
            addrs: own.clone(),
            config_path,
            log_path,
            child: None,
            paused: false,
        }
    }

    pub fn node(&self, id: u64) -> &FaultNode {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Nodes with a live process (paused ones included).
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|node| node.is_running())
            .map(|node| node.id)
            .collect()
    }

    pub fn start_node(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node");
        assert!(node.child.is_none(), "node {id} already runs");
        let child = crate::spawn_tallyd(&node.config_path, &node.log_path);
        node.child = Some(child);
        node.paused = false;
    }

    pub fn kill9(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    pub fn pause(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node");
        if let Some(pid) = node.pid() {
            signal(pid, libc::SIGSTOP);
            node.paused = true;
        }
    }

    pub fn resume(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node");
        if let Some(pid) = node.pid() {
            signal(pid, libc::SIGCONT);
        }
        node.paused = false;
    }

    // ---- network faults -------------------------------------------------------------------

    pub fn set_link(&self, from: u64, to: u64, mode: LinkMode) {
        if let Some(link) = self.links.get(&(from, to)) {
            link.set(mode);
        }
    }

    /// Every link back to pass.
    pub fn heal(&self) {
        for link in self.links.values() {
            link.set(LinkMode::PASS);
        }
    }

    /// Cuts every link between the groups (both directions) with `mode`.
    pub fn split(&self, group_a: &[u64], group_b: &[u64], mode: LinkMode) {
        for a in group_a {
            for b in group_b {
                self.set_link(*a, *b, mode);
                self.set_link(*b, *a, mode);
            }
        }
    }

    /// Bytes from `from` to `to` are lost; the other direction still flows. Both connections
    /// carry such bytes: requests on `from`->`to`, replies on `to`->`from`.
    pub fn lose_one_way(&self, from: u64, to: u64) {
        self.set_link(
            from,
            to,
            LinkMode {
                refuse: false,
                to_target: Flow::Blackhole,
                to_dialer: Flow::Pass,
            },
        );
        self.set_link(
            to,
            from,
            LinkMode {
                refuse: false,
                to_target: Flow::Pass,
                to_dialer: Flow::Blackhole,
            },
        );
    }

    /// Every link between members gets `ms` of latency per chunk in both directions.
    pub fn slow_all(&self, ms: u64) {
        for link in self.links.values() {
            link.set(LinkMode::delay_ms(ms));
        }
    }

    // ---- clients --------------------------------------------------------------------------

    fn channel(&self, id: u64) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.node(id).addrs.client))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(1))
            .timeout(CLIENT_TIMEOUT)
            .connect_lazy()
    }

    pub fn ledger(&self, id: u64) -> LedgerClient<Channel> {
        LedgerClient::new(self.channel(id)).max_decoding_message_size(64 * 1024 * 1024)
    }

    pub fn admin(&self, id: u64) -> AdminClient<Channel> {
        AdminClient::new(self.channel(id))
    }

    /// Client endpoints of every node, for workload tasks that outlive a borrow of the cluster.
    pub fn endpoints(&self) -> BTreeMap<u64, String> {
        self.nodes
            .iter()
            .map(|(id, node)| (*id, node.addrs.client.clone()))
            .collect()
    }

    pub async fn status(&self, id: u64) -> Option<v1::ClusterStatusReply> {
        let mut admin = self.admin(id);
        let call = admin.cluster_status(v1::ClusterStatusRequest {});
        match tokio::time::timeout(Duration::from_secs(2), call).await {
            Ok(Ok(reply)) => Some(reply.into_inner()),
            _ => None,
        }
    }

    async fn http_ok(&self, id: u64, path: &str) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect(&self.node(id).addrs.metrics)
                .await
                .ok()?;
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
                .await
                .ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await.ok()?;
            Some(response.split_whitespace().nth(1) == Some("200"))
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), attempt).await,
            Ok(Some(true))
        )
    }

    pub async fn wait_ready(&self, id: u64) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if self.http_ok(id, "/health/ready").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "node {id} not ready after 60 s:\n{}",
            self.node(id).log_tail(30)
        );
    }

    pub async fn wait_live(&self, id: u64) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if self.http_ok(id, "/health/live").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "node {id} not live after 60 s:\n{}",
            self.node(id).log_tail(30)
        );
    }

    /// The leader as node `id` sees it right now.
    pub async fn leader_seen_by(&self, id: u64) -> Option<u64> {
        self.status(id).await.and_then(|status| status.leader_id)
    }

    /// The leader that every node in `among` agrees on, within `timeout`.
    pub async fn agreed_leader(&self, among: &[u64], timeout: Duration) -> Option<u64> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            let mut seen = Vec::new();
            for id in among {
                seen.push(self.leader_seen_by(*id).await);
            }
            if let Some(Some(leader)) = seen.first() {
                if seen.iter().all(|l| *l == Some(*leader)) && among.contains(leader) {
                    return Some(*leader);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Any leader some running, unpaused node knows of.
    pub async fn some_leader(&self) -> Option<u64> {
        for id in self.running() {
            if self.node(id).is_paused() {
                continue;
            }
            if let Some(leader) = self.leader_seen_by(id).await {
                return Some(leader);
            }
        }
        None
    }

    /// Voters and learners of the effective membership, as node `id` sees it.
    pub async fn members(&self, id: u64) -> Option<Vec<v1::Member>> {
        self.status(id).await.map(|status| status.members)
    }

    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in self.nodes.values() {
            if node.log_path.exists() {
                out.push_str(&format!(
                    "----- last lines of node {} ({}) -----\n",
                    node.id,
                    node.log_path.display()
                ));
                out.push_str(&node.log_tail(lines));
                out.push('\n');
            }
        }
        out
    }

    /// Keeps the data directory after the test (for a failing run).
    pub fn keep_dir(&mut self) -> Option<PathBuf> {
        self.dir.take().map(|dir| dir.keep())
    }
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill9(id);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(40));
            if let Some(kept) = self.keep_dir() {
                eprintln!("[faults] data and logs kept in {}", kept.display());
            }
        }
    }
}
