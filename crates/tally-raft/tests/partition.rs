//! Peer links through an in-process TCP proxy that the test controls: a follower cut off by a
//! blackhole (bytes held, connections kept open, as a partition looks to TCP) or by dropped
//! connections falls behind, and catches up once the link heals, over channels that noticed the
//! dead connection and reconnected.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use openraft::BasicNode;
use tally_raft::RaftSettings;
use tally_store::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Forward bytes both ways.
    Pass,
    /// Hold every byte (stop reading) until the link passes again.
    Blackhole,
    /// Close every connection, and every new one at once.
    Drop,
}

/// A TCP proxy in front of one node's peer listener.
struct Proxy {
    addr: String,
    link: watch::Sender<Link>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (link, link_watch) = watch::channel(Link::Pass);
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let link = link_watch.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if *link.borrow() == Link::Drop {
                        return;
                    }
                    let Ok(outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (inbound_read, inbound_write) = inbound.into_split();
                    let (outbound_read, outbound_write) = outbound.into_split();
                    // When either direction ends, both sockets close.
                    tokio::select! {
                        _ = pump(inbound_read, outbound_write, link.clone()) => {}
                        _ = pump(outbound_read, inbound_write, link) => {}
                    }
                });
            }
        });
        Proxy { addr, link, task }
    }

    fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

/// Waits while the link is blackholed; false when it is (or becomes) dropped.
async fn wait_passable(link: &mut watch::Receiver<Link>) -> bool {
    loop {
        let current = *link.borrow_and_update();
        match current {
            Link::Pass => return true,
            Link::Drop => return false,
            Link::Blackhole => {
                if link.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut link: watch::Receiver<Link>) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if !wait_passable(&mut link).await {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // Re-check the link (a Drop closes idle connections too).
            _ = link.changed() => continue,
        };
        let bytes = match read {
            Ok(0) | Err(_) => return,
            Ok(bytes) => bytes,
        };
        // Bytes read just before a blackhole are held, not lost: TCP would retransmit them.
        if !wait_passable(&mut link).await {
            return;
        }
        if to.write_all(&buffer[..bytes]).await.is_err() {
            return;
        }
    }
}

fn applied(node: &Node) -> u64 {
    node.raft
        .metrics()
        .borrow()
        .last_applied
        .map_or(0, |log_id| log_id.index)
}

/// Three nodes, each behind its own proxy (peers know one another only by the proxies'
/// addresses), with a leader elected and Init plus ten entries applied everywhere: the nodes,
/// the proxies (same order), the leader and the last index.
async fn cluster_behind_proxies(settings: &RaftSettings) -> (Vec<Node>, Vec<Proxy>, NodeId, u64) {
    let mut nodes = Vec::new();
    let mut proxies = Vec::new();
    for id in 1..=3 {
        let node = Node::start(id, settings).await;
        proxies.push(Proxy::start(node.addr.clone()).await);
        nodes.push(node);
    }
    let members: BTreeMap<NodeId, BasicNode> = nodes
        .iter()
        .zip(&proxies)
        .map(|(node, proxy)| {
            (
                node.id,
                BasicNode {
                    addr: proxy.addr.clone(),
                },
            )
        })
        .collect();
    nodes[0].raft.initialize(members).await.unwrap();
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), None).await;
    by_id(&nodes, leader)
        .raft
        .client_write(init_entry())
        .await
        .unwrap();
    let last = write_entries(&nodes, 0, 10).await;
    for node in &nodes {
        node.wait_applied(last).await;
    }
    (nodes, proxies, leader, last)
}

/// Stops every node, then every proxy.
async fn stop_all(nodes: &mut [Node], proxies: Vec<Proxy>) {
    for node in nodes {
        node.stop().await;
    }
    for proxy in proxies {
        proxy.task.abort();
    }
}

fn term(node: &Node) -> u64 {
    node.raft.metrics().borrow().current_term
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_follower_catches_up_after_blackhole_and_dropped_connections() {
    let settings = test_settings();
    let (mut nodes, proxies, leader, _) = cluster_behind_proxies(&settings).await;
    let follower_index = nodes.iter().position(|node| node.id != leader).unwrap();
    for (round, link) in [Link::Blackhole, Link::Drop].into_iter().enumerate() {
        proxies[follower_index].set(link);
        let before = applied(&nodes[follower_index]);
        let last = write_entries(&nodes, 100 * (round as u64 + 1), 20).await;
        // Longer than several heartbeats and the keep-alive: the follower really is cut off.
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        assert!(
            applied(&nodes[follower_index]) < last,
            "{link:?}: the follower applied {} of {last} while cut off (from {before})",
            applied(&nodes[follower_index])
        );

        proxies[follower_index].set(Link::Pass);
        let healed_at = std::time::Instant::now();
        nodes[follower_index].wait_applied(last).await;
        let catch_up = healed_at.elapsed();
        eprintln!("{link:?}: caught up {catch_up:?} after the link healed");
        // Bounded by the keep-alive interval (1 s) plus its timeout, the unreachable backoff (1 s)
        // and a heartbeat.
        assert!(
            catch_up < Duration::from_secs(8),
            "{link:?}: catch-up took {catch_up:?}"
        );
        let hashes: Vec<_> = nodes.iter().map(|node| node.reader.state_hash()).collect();
        for node in &nodes {
            node.wait_applied(last).await;
        }
        let hashes_after: Vec<_> = nodes.iter().map(|node| node.reader.state_hash()).collect();
        assert!(
            hashes_after.iter().all(|hash| hash.1 == hashes_after[0].1),
            "{link:?}: replicas disagree: {hashes:?} / {hashes_after:?}"
        );
    }
    // The leader saw the cut (timeouts while blackholed, unreachable once dropped).
    let leader_now = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), None).await;
    let stats = by_id(&nodes, leader_now).network.stats();
    assert!(
        stats.timeouts + stats.unreachable + stats.network_errors > 0,
        "{stats:?}"
    );

    stop_all(&mut nodes, proxies).await;
}

/// A follower that hears nothing from the leader for several election timeouts, while its own
/// messages still reach the others (only the links into it are cut), asks them for a pre-vote,
/// is refused (they hear the leader), and so never raises its term: once the link heals it
/// follows the same leader in the same term. Without the pre-vote it stood for election with a
/// higher term, and the leader's next append to it made the leader step down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_for_several_election_timeouts_rejoins_without_an_election() {
    let settings = test_settings();
    let (mut nodes, proxies, leader, _) = cluster_behind_proxies(&settings).await;
    let term_before = term(by_id(&nodes, leader));
    let follower_index = nodes.iter().position(|node| node.id != leader).unwrap();
    proxies[follower_index].set(Link::Blackhole);
    // Lease (1.2 s) plus an election timeout (0.6-1.2 s) is when the follower would stand;
    // this is more than twice that, with writes going on.
    let cut_at = std::time::Instant::now();
    let mut n = 1_000;
    while cut_at.elapsed() < Duration::from_millis(5_500) {
        write_entries(&nodes, n, 5).await;
        n += 5;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxies[follower_index].set(Link::Pass);
    let last = write_entries(&nodes, n, 5).await;
    nodes[follower_index].wait_applied(last).await;

    for node in &nodes {
        let metrics = node.raft.metrics().borrow().clone();
        assert_eq!(
            (metrics.current_term, metrics.current_leader),
            (term_before, Some(leader)),
            "node {}: the cut-off follower's return changed the term or the leader",
            node.id
        );
    }
    stop_all(&mut nodes, proxies).await;
}

/// A leader that goes silent (its process frozen, its host lost: connections to it stay open
/// and nothing answers) is replaced by one election, and the new leader stays. The two others
/// run into their election timeouts together, and each one's pre-vote waits on the silent
/// node; the first version then let the second stand for election right after it had voted
/// for the first, deposing it, again and again until the old leader came back (a failover
/// audit saw it in 12 of 20 rounds, terms +3 to +13, writes stalled meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_leader_is_replaced_by_one_election_that_holds() {
    let settings = test_settings();
    for round in 0..3 {
        let (mut nodes, proxies, leader, _) = cluster_behind_proxies(&settings).await;
        let term_before = term(by_id(&nodes, leader));
        let leader_index = nodes.iter().position(|node| node.id == leader).unwrap();
        // Silent: connections to it (new ones too) open and hold their bytes, and its Raft
        // sends nothing.
        proxies[leader_index].set(Link::Blackhole);
        nodes[leader_index].raft.shutdown().await.unwrap();
        let others: Vec<&Node> = nodes.iter().filter(|node| node.id != leader).collect();
        let new_leader = wait_for_leader(&others, Some(leader)).await;
        let new_term = term(by_id(&nodes, new_leader));
        assert!(new_term > term_before);
        // Well past another election timeout and lease: the new leader keeps its term.
        tokio::time::sleep(Duration::from_millis(3_000)).await;
        for node in &others {
            let metrics = node.raft.metrics().borrow().clone();
            assert_eq!(
                (metrics.current_term, metrics.current_leader),
                (new_term, Some(new_leader)),
                "round {round}, node {}: the new leader was deposed (terms {term_before} -> \
                 {new_term} -> {})",
                node.id,
                metrics.current_term
            );
        }
        // Connections to the old leader's server must close for it to stop.
        proxies[leader_index].set(Link::Drop);
        stop_all(&mut nodes, proxies).await;
    }
}
