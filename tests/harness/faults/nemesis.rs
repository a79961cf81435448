//! The nemesis: the faults, each applied for a while and then healed, alone or drawn at random
//! from a seed. Every step is written to the schedule (printed with any violation).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;
use tally_proto::v1;

use super::cluster::FaultCluster;
use super::proxy::LinkMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    KillLeader,
    KillFollower,
    PauseNode,
    IsolateLeader,
    /// One node cut off from the others (blackholed), the rest keep a majority.
    SplitMinority,
    OneWayLoss,
    SlowLinks,
    KillAll,
    /// Add node `voters + 1` as a learner, promote it, remove one of the old voters.
    Membership,
    /// Kill a follower, let the others compact their log, restart it: it catches up by snapshot.
    SnapshotCatchUp,
}

impl Fault {
    pub const ALL: [Fault; 10] = [
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::PauseNode,
        Fault::IsolateLeader,
        Fault::SplitMinority,
        Fault::OneWayLoss,
        Fault::SlowLinks,
        Fault::KillAll,
        Fault::Membership,
        Fault::SnapshotCatchUp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill_leader",
            Fault::KillFollower => "kill_follower",
            Fault::PauseNode => "pause_node",
            Fault::IsolateLeader => "isolate_leader",
            Fault::SplitMinority => "split_minority",
            Fault::OneWayLoss => "one_way_loss",
            Fault::SlowLinks => "slow_links",
            Fault::KillAll => "kill_all",
            Fault::Membership => "membership",
            Fault::SnapshotCatchUp => "snapshot_catch_up",
        }
    }

    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|fault| fault.name() == name)
    }
}

/// The nemesis' view of the cluster: which nodes are members (a removed node is retired and
/// never restarted) and the schedule so far.
pub struct Nemesis {
    pub rng: SmallRng,
    pub started: Instant,
    pub schedule: Vec<String>,
    pub members: BTreeSet<u64>,
    pub retired: BTreeSet<u64>,
    membership_done: bool,
}

impl Nemesis {
    /// `started`: the clock of the schedule's `t=` (the recorder's, so operations' times line
    /// up with the faults).
    pub fn new(rng: SmallRng, members: BTreeSet<u64>, started: Instant) -> Nemesis {
        Nemesis {
            rng,
            started,
            schedule: Vec::new(),
            members,
            retired: BTreeSet::new(),
            membership_done: false,
        }
    }

    pub fn log(&mut self, what: impl AsRef<str>) {
        let line = format!(
            "t={:.1}s {}",
            self.started.elapsed().as_secs_f64(),
            what.as_ref()
        );
        eprintln!("[nemesis] {line}");
        self.schedule.push(line);
    }

    fn hold(&mut self) -> Duration {
        Duration::from_millis(self.rng.gen_range(1_500..=3_500))
    }

    /// Live members (not paused, process running).
    fn live(&self, cluster: &FaultCluster) -> Vec<u64> {
        self.members
            .iter()
            .copied()
            .filter(|id| cluster.node(*id).is_running() && !cluster.node(*id).is_paused())
            .collect()
    }

    async fn leader(&mut self, cluster: &FaultCluster) -> Option<u64> {
        let live = self.live(cluster);
        let leader = cluster.agreed_leader(&live, Duration::from_secs(10)).await;
        if leader.is_none() {
            self.log(format!("no agreed leader among {live:?} within 10 s"));
        }
        leader
    }

    fn pick(&mut self, among: &[u64]) -> Option<u64> {
        among.choose(&mut self.rng).copied()
    }

    /// Applies `fault`, holds it, heals it.
    pub async fn apply(&mut self, cluster: &mut FaultCluster, fault: Fault) {
        match fault {
            Fault::KillLeader | Fault::KillFollower => {
                let Some(leader) = self.leader(cluster).await else {
                    return;
                };
                let target = if fault == Fault::KillLeader {
                    Some(leader)
                } else {
                    let followers: Vec<u64> = self
                        .live(cluster)
                        .into_iter()
                        .filter(|id| *id != leader)
                        .collect();
                    self.pick(&followers)
                };
                let Some(target) = target else { return };
                let hold = self.hold();
                self.log(format!(
                    "kill -9 node {target} (leader was {leader}), restart in {hold:?} (after a new leader is up)"
                ));
                let killed_at = Instant::now();
                cluster.kill9(target);
                if target == leader {
                    // Failover: the survivors must elect one of themselves before the old leader
                    // comes back (else it could simply win again and nothing was tested).
                    let survivors = self.live(cluster);
                    match cluster
                        .agreed_leader(&survivors, Duration::from_secs(15))
                        .await
                    {
                        Some(new_leader) => self.log(format!(
                            "new leader {new_leader} after {} ms",
                            killed_at.elapsed().as_millis()
                        )),
                        None => self.log(format!(
                            "FAILOVER: survivors {survivors:?} elected no leader within 15 s"
                        )),
                    }
                }
                tokio::time::sleep(hold.saturating_sub(killed_at.elapsed())).await;
                cluster.start_node(target);
                self.log(format!("restarted node {target}"));
            }
            Fault::PauseNode => {
                let live = self.live(cluster);
                let Some(target) = self.pick(&live) else {
                    return;
                };
                let hold = self.hold();
                self.log(format!("SIGSTOP node {target} for {hold:?}"));
                cluster.pause(target);
                tokio::time::sleep(hold).await;
                cluster.resume(target);
                self.log(format!("SIGCONT node {target}"));
            }
            Fault::IsolateLeader => {
                let Some(leader) = self.leader(cluster).await else {
                    return;
                };
                let others: Vec<u64> = self
                    .members
                    .iter()
                    .copied()
                    .filter(|id| *id != leader)
                    .collect();
                let hold = self.hold() + Duration::from_millis(1_500);
                self.log(format!(
                    "isolate leader {leader} from {others:?} (connections refused) for {hold:?}"
                ));
                cluster.split(&[leader], &others, LinkMode::REFUSE);
                tokio::time::sleep(hold).await;
                cluster.heal();
                self.log("heal all links");
            }
            Fault::SplitMinority => {
                let members: Vec<u64> = self.members.iter().copied().collect();
                let Some(alone) = self.pick(&members) else {
                    return;
                };
                let rest: Vec<u64> = members.iter().copied().filter(|id| *id != alone).collect();
                let hold = self.hold() + Duration::from_millis(1_500);
                self.log(format!(
                    "split {{{alone}}} | {rest:?} (blackholed) for {hold:?}"
                ));
                cluster.split(&[alone], &rest, LinkMode::BLACKHOLE);
                tokio::time::sleep(hold).await;
                cluster.heal();
                self.log("heal all links");
            }
            Fault::OneWayLoss => {
                let Some(leader) = self.leader(cluster).await else {
                    return;
                };
                let others: Vec<u64> = self
                    .members
                    .iter()
                    .copied()
                    .filter(|id| *id != leader)
                    .collect();
                let Some(other) = self.pick(&others) else {
                    return;
                };
                let (from, to) = if self.rng.gen_bool(0.5) {
                    (leader, other)
                } else {
                    (other, leader)
                };
                let hold = self.hold() + Duration::from_millis(1_000);
                self.log(format!(
                    "one-way loss {from} -> {to} (leader {leader}) for {hold:?}"
                ));
                cluster.lose_one_way(from, to);
                tokio::time::sleep(hold).await;
                cluster.heal();
                self.log("heal all links");
            }
            Fault::SlowLinks => {
                let ms = self.rng.gen_range(20..=200);
                let hold = self.hold();
                self.log(format!("every link +{ms} ms per chunk for {hold:?}"));
                cluster.slow_all(ms);
                tokio::time::sleep(hold).await;
                cluster.heal();
                self.log("heal all links");
            }
            Fault::KillAll => {
                let running: Vec<u64> = self
                    .members
                    .iter()
                    .copied()
                    .filter(|id| cluster.node(*id).is_running())
                    .collect();
                let down = Duration::from_millis(self.rng.gen_range(200..=1_500));
                self.log(format!(
                    "kill -9 every node {running:?}, restart in {down:?}"
                ));
                for id in &running {
                    cluster.kill9(*id);
                }
                tokio::time::sleep(down).await;
                for id in &running {
                    cluster.start_node(*id);
                }
                self.log("restarted every node");
            }
            Fault::Membership => self.membership(cluster).await,
            Fault::SnapshotCatchUp => self.snapshot_catch_up(cluster).await,
        }
    }

    /// Undo everything still in force: links pass, paused nodes continue, members run.
    pub fn heal_all(&mut self, cluster: &mut FaultCluster) {
        cluster.heal();
        for id in self.members.clone() {
            if cluster.node(id).is_paused() {
                cluster.resume(id);
            }
            if !cluster.node(id).is_running() {
                cluster.start_node(id);
            }
        }
        self.log("final heal: links pass, every member runs");
    }

    async fn admin_call<T, F, Fut>(
        &mut self,
        cluster: &FaultCluster,
        what: &str,
        mut call: F,
    ) -> Option<T>
    where
        F: FnMut(v1::admin_client::AdminClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < Duration::from_secs(30) {
            let live = self.live(cluster);
            let node = match cluster.some_leader().await {
                Some(leader) if live.contains(&leader) => leader,
                _ => match self.pick(&live) {
                    Some(node) => node,
                    None => return None,
                },
            };
            match call(cluster.admin(node)).await {
                Ok(reply) => return Some(reply.into_inner()),
                Err(status) => last = format!("{:?} {}", status.code(), status.message()),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.log(format!("{what} failed for 30 s: {last}"));
        None
    }

    async fn membership(&mut self, cluster: &mut FaultCluster) {
        if self.membership_done {
            return;
        }
        let new_id = cluster.spec.voters + 1;
        if !cluster.nodes.contains_key(&new_id) {
            return;
        }
        self.membership_done = true;
        let peer = cluster.node(new_id).addrs.peer.clone();
        self.log(format!("start node {new_id}, add it as a learner"));
        cluster.start_node(new_id);
        cluster.wait_live(new_id).await;
        let added = self
            .admin_call(cluster, "add learner", |mut admin| {
                let peer = peer.clone();
                async move {
                    admin
                        .add_learner(v1::AddLearnerRequest {
                            id: new_id,
                            addr: peer,
                            blocking: true,
                        })
                        .await
                }
            })
            .await;
        if added.is_none() {
            return;
        }
        self.log(format!("promote node {new_id}"));
        if self
            .admin_call(cluster, "promote", |mut admin| async move {
                admin.promote(v1::PromoteRequest { id: new_id }).await
            })
            .await
            .is_none()
        {
            return;
        }
        self.members.insert(new_id);
        let old: Vec<u64> = self
            .members
            .iter()
            .copied()
            .filter(|id| *id != new_id)
            .collect();
        let Some(removed) = self.pick(&old) else {
            return;
        };
        self.log(format!("remove node {removed}"));
        if self
            .admin_call(cluster, "remove node", |mut admin| async move {
                admin
                    .remove_node(v1::RemoveNodeRequest { id: removed })
                    .await
            })
            .await
            .is_none()
        {
            return;
        }
        self.members.remove(&removed);
        self.retired.insert(removed);
        // Give the removed node a moment to learn it is out, then stop it for good.
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.kill9(removed);
        self.log(format!(
            "node {removed} removed and stopped; members now {:?}",
            self.members
        ));
    }

    async fn snapshot_catch_up(&mut self, cluster: &mut FaultCluster) {
        let Some(leader) = self.leader(cluster).await else {
            return;
        };
        let followers: Vec<u64> = self
            .live(cluster)
            .into_iter()
            .filter(|id| *id != leader)
            .collect();
        let Some(lagger) = self.pick(&followers) else {
            return;
        };
        let down = Duration::from_millis(self.rng.gen_range(2_500..=4_000));
        self.log(format!("kill -9 follower {lagger}, writes go on for {down:?}, then snapshot + purge on the others"));
        cluster.kill9(lagger);
        tokio::time::sleep(down).await;
        for id in self.live(cluster) {
            let reply = self
                .admin_call(cluster, "trigger snapshot", |_| {
                    let mut admin = cluster.admin(id);
                    async move { admin.trigger_snapshot(v1::TriggerSnapshotRequest {}).await }
                })
                .await;
            self.log(format!(
                "node {id} snapshot at index {:?}",
                reply.map(|reply| reply.snapshot_index)
            ));
        }
        let target = cluster
            .status(leader)
            .await
            .map(|status| status.applied_index)
            .unwrap_or(0);
        cluster.start_node(lagger);
        self.log(format!(
            "restarted node {lagger}; it must reach index {target}"
        ));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Some(status) = cluster.status(lagger).await {
                if status.applied_index >= target {
                    self.log(format!(
                        "node {lagger} caught up: applied {} (snapshot index {})",
                        status.applied_index, status.snapshot_index
                    ));
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.log(format!(
            "node {lagger} did NOT catch up to {target} within 30 s"
        ));
    }
}
