//! `tally cluster ...`: what each node reports, membership changes, snapshots, state hashes.

use serde_json::{json, Value};
use tally_client::{v1, Client, ClientError, ErrorCode};

use crate::args::ClusterCommand;
use crate::ledger::{role, CommandResult};
use crate::output::{time_text, Failure, Output, Table, EXIT_REFUSED, EXIT_UNAVAILABLE};

/// Rounds of `cluster hash` asking every node for the hash at one index ahead of all of them
/// (each round that finds a node already past it looks further ahead).
const HASH_ROUNDS_MAX: u32 = 5;

/// How far ahead of the furthest node the first round's index is: ticks apply an entry about
/// once a second, so an idle cluster reaches it within seconds, a busy one at once.
const HASH_LEAD_MIN: u64 = 2;

type Answers = Vec<(String, v1::StateHashReply)>;
type Failures = Vec<(String, ClientError)>;

/// Every endpoint's state hash, at one applied index when they can be compared: first what
/// each has applied now (an idle cluster lines up at once); if they stand at different
/// indexes (entries keep coming), each is asked for the hash at exactly one index ahead of
/// them all, which each answers as it applies it, so the hashes are of the same state however
/// busy the cluster is.
async fn hashes_at_one_index(client: &Client) -> (Answers, Failures) {
    // Right after the nodes start (an upgrade's "start them all") no leader is known for a
    // moment and a linearizable hash is refused `not_leader`: wait for one, within the call
    // budget, as every other command does.
    let budget = std::time::Duration::from_millis(client.config().call_timeout_ms);
    let started = std::time::Instant::now();
    let (mut answers, mut errors) = loop {
        let (answers, errors) = gather(client, client.endpoints().to_vec(), None).await;
        let no_leader_yet = errors
            .iter()
            .any(|(_, error)| error.code() == ErrorCode::NotLeader);
        if !no_leader_yet || started.elapsed() >= budget {
            break (answers, errors);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let mut lead = HASH_LEAD_MIN;
    for _ in 0..HASH_ROUNDS_MAX {
        if aligned(&answers) || answers.len() < 2 {
            break;
        }
        let furthest = answers
            .iter()
            .map(|(_, r)| r.applied_index)
            .max()
            .unwrap_or(0);
        let target = furthest + lead;
        let endpoints = answers
            .iter()
            .map(|(endpoint, _)| endpoint.clone())
            .collect();
        let (at_target, failed) = gather(client, endpoints, Some(target)).await;
        let passed = failed
            .iter()
            .any(|(_, error)| error.details().get("field").map(String::as_str) == Some("at_index"));
        if passed {
            // A node was already past the target: see where they all stand now, and look
            // further ahead from there.
            lead = lead.saturating_mul(8);
            let endpoints = answers
                .iter()
                .map(|(endpoint, _)| endpoint.clone())
                .collect();
            let (now, failed) = gather(client, endpoints, None).await;
            errors.extend(failed);
            answers = now;
            continue;
        }
        answers = at_target;
        errors.extend(failed);
        break;
    }
    (answers, errors)
}

/// Whether every answer stands at the same applied index.
fn aligned(answers: &Answers) -> bool {
    answers
        .windows(2)
        .all(|pair| pair[0].1.applied_index == pair[1].1.applied_index)
}

/// Asks every endpoint at once (the hash at `at_index` when given), in the endpoints' order.
async fn gather(
    client: &Client,
    endpoints: Vec<String>,
    at_index: Option<u64>,
) -> (Answers, Failures) {
    let asks: Vec<_> = endpoints
        .into_iter()
        .map(|endpoint| {
            let client = client.clone();
            tokio::spawn(async move {
                let reply = match at_index {
                    Some(index) => client.state_hash_at_index(&endpoint, index).await,
                    None => client.state_hash_at(&endpoint).await,
                };
                (endpoint, reply)
            })
        })
        .collect();
    let (mut answers, mut errors) = (Vec::new(), Vec::new());
    for ask in asks {
        match ask.await.expect("state hash task") {
            (endpoint, Ok(reply)) => answers.push((endpoint, reply)),
            (endpoint, Err(error)) => errors.push((endpoint, error)),
        }
    }
    (answers, errors)
}

fn members_json(members: &[v1::Member]) -> Value {
    json!(members
        .iter()
        .map(|m| json!({"id": m.id, "addr": m.addr, "voter": m.voter}))
        .collect::<Vec<_>>())
}

fn members_text(members: &[v1::Member]) -> String {
    let mut table = Table::new(&["MEMBER", "PEER ADDR", "ROLE"]);
    for member in members {
        table.row(vec![
            member.id.to_string(),
            member.addr.clone(),
            if member.voter { "voter" } else { "learner" }.to_string(),
        ]);
    }
    table.render()
}

fn unreachable(what: &str, errors: &[(String, ClientError)]) -> Failure {
    let list: Vec<String> = errors
        .iter()
        .map(|(endpoint, error)| format!("{endpoint}: {}", error.code()))
        .collect();
    Failure {
        code: "unavailable".into(),
        message: format!("no node answered {what} ({})", list.join("; ")),
        details: serde_json::Map::new(),
        exit: EXIT_UNAVAILABLE,
    }
}

pub async fn cluster(client: &Client, out: Output, command: ClusterCommand) -> CommandResult {
    match command {
        ClusterCommand::Status => status(client, out).await,
        ClusterCommand::AddLearner { id, addr, no_wait } => {
            let reply = client.add_learner(id, &addr, !no_wait).await?;
            let caught_up = reply.not_caught_up.is_empty();
            let done = match (reply.unchanged, caught_up) {
                (true, true) => format!("node {id} ({addr}) is already a member; nothing to add"),
                (true, false) => format!("node {id} ({addr}) is already a member"),
                (false, _) => format!("added node {id} ({addr}) as a learner"),
            };
            membership(out, &done, &reply)?;
            if caught_up {
                return Ok(0);
            }
            // A member that has not caught up is not ready to promote. Exit 3: the same command
            // again waits again.
            if !out.json {
                eprintln!(
                    "\nnode {id} has not caught up: {}.\nIt is a member all the same: `tally cluster status` shows its progress, \
                     running this command again waits again, `tally cluster remove {id}` takes it out.",
                    reply.not_caught_up
                );
            }
            Ok(EXIT_UNAVAILABLE)
        }
        ClusterCommand::Promote { id } => {
            let reply = client.promote(id).await?;
            let done = if reply.unchanged {
                format!("node {id} is already a voter; nothing to promote")
            } else {
                format!("node {id} is now a voter")
            };
            membership(out, &done, &reply)
        }
        ClusterCommand::Remove { id } => {
            let reply = client.remove_node(id).await?;
            let done = if reply.unchanged {
                format!("node {id} is not a member; nothing to remove")
            } else {
                format!("removed node {id}")
            };
            membership(out, &done, &reply)
        }
        ClusterCommand::Snapshot => snapshot(client, out).await,
        ClusterCommand::Hash => hash(client, out).await,
    }
}

fn membership(out: Output, done: &str, reply: &v1::MembershipReply) -> CommandResult {
    if out.json {
        let mut value = json!({
            "members": members_json(&reply.members),
            "log_index": reply.log_index,
            "unchanged": reply.unchanged,
        });
        if !reply.not_caught_up.is_empty() {
            value["not_caught_up"] = Value::String(reply.not_caught_up.clone());
        }
        out.json(&value);
    } else {
        println!("{done} (log index {})\n", reply.log_index);
        print!("{}", members_text(&reply.members));
    }
    Ok(0)
}

async fn status(client: &Client, out: Output) -> CommandResult {
    let mut answers = Vec::new();
    let mut errors = Vec::new();
    for endpoint in client.endpoints() {
        match client.cluster_status_of(endpoint).await {
            Ok(status) => answers.push((endpoint.clone(), status)),
            Err(error) => errors.push((endpoint.clone(), error)),
        }
    }
    if answers.is_empty() {
        return Err(unreachable("cluster status", &errors));
    }
    // Membership as the leader sees it, else as the first node that answered.
    let reference = answers
        .iter()
        .find(|(_, status)| role(status) == "leader")
        .unwrap_or(&answers[0])
        .1
        .clone();
    // A node removed from the cluster may still run, naming its old role and leader: the
    // leader's membership says it is no member (no leader answered: not judged, as a stale
    // node's view could call the others strangers).
    let leader_answered = answers.iter().any(|(_, status)| role(status) == "leader");
    let member = |s: &v1::ClusterStatusReply| {
        leader_answered.then(|| reference.members.iter().any(|m| m.id == s.node_id))
    };
    if out.json {
        let mut nodes: Vec<Value> = answers
            .iter()
            .map(|(endpoint, s)| {
                json!({
                    "endpoint": endpoint, "node_id": s.node_id, "role": role(s), "member": member(s), "term": s.term,
                    "leader_id": s.leader_id, "leader_addr": s.leader_addr,
                    "last_log_index": s.last_log_index, "committed_index": s.committed_index,
                    "applied_index": s.applied_index, "snapshot_index": s.snapshot_index,
                    "ledger_time": crate::output::time_json(Some(s.ledger_time_ms)),
                })
            })
            .collect();
        nodes.extend(errors.iter().map(|(endpoint, error)| {
            json!({"endpoint": endpoint, "error": {"code": error.code().as_str(), "message": error.message()}})
        }));
        out.json(&json!({
            "leader_id": reference.leader_id,
            "members": members_json(&reference.members),
            "joint": reference.joint,
            "nodes": nodes,
        }));
    } else {
        let mut table = Table::new(&[
            "ENDPOINT",
            "NODE",
            "ROLE",
            "TERM",
            "LEADER",
            "LAST LOG",
            "COMMITTED",
            "APPLIED",
            "SNAPSHOT",
            "LEDGER TIME",
        ]);
        for (endpoint, s) in &answers {
            table.row(vec![
                endpoint.clone(),
                s.node_id.to_string(),
                if member(s) == Some(false) {
                    format!("not a member ({})", role(s))
                } else {
                    role(s).to_string()
                },
                s.term.to_string(),
                s.leader_id
                    .map(|id| id.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.last_log_index.to_string(),
                s.committed_index.to_string(),
                s.applied_index.to_string(),
                s.snapshot_index.to_string(),
                time_text(Some(s.ledger_time_ms)),
            ]);
        }
        for (endpoint, error) in &errors {
            table.row(vec![
                endpoint.clone(),
                "-".into(),
                format!("unreachable ({})", error.code()),
            ]);
        }
        print!("{}", table.render());
        println!();
        print!("{}", members_text(&reference.members));
        if reference.joint {
            println!("(a membership change is in progress: joint consensus)");
        }
    }
    Ok(0)
}

async fn snapshot(client: &Client, out: Output) -> CommandResult {
    let mut nodes = Vec::new();
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut not_built = 0;
    for endpoint in client.endpoints() {
        match client.trigger_snapshot_at(endpoint).await {
            Ok(reply) if reply.not_built.is_empty() => {
                nodes.push(json!({"endpoint": endpoint, "snapshot_index": reply.snapshot_index}));
                rows.push(vec![endpoint.clone(), reply.snapshot_index.to_string()]);
            }
            Ok(reply) => {
                nodes.push(json!({"endpoint": endpoint, "snapshot_index": reply.snapshot_index, "not_built": reply.not_built}));
                rows.push(vec![
                    endpoint.clone(),
                    format!("not built: {}", reply.not_built),
                ]);
                not_built += 1;
            }
            Err(error) => {
                nodes.push(json!({"endpoint": endpoint, "error": {"code": error.code().as_str(), "message": error.message()}}));
                rows.push(vec![endpoint.clone(), format!("failed: {error}")]);
                errors.push((endpoint.clone(), error));
            }
        }
    }
    if errors.len() == client.endpoints().len() {
        return Err(unreachable("snapshot", &errors));
    }
    if out.json {
        out.json(&json!({"nodes": nodes}));
    } else {
        let mut table = Table::new(&["ENDPOINT", "SNAPSHOT INDEX"]);
        for row in rows {
            table.row(row);
        }
        print!("{}", table.render());
    }
    // Every node asked must hold a snapshot of what it applied (the upgrade procedure relies
    // on it): one that did not build one, or did not answer, fails the command.
    if not_built > 0 || !errors.is_empty() {
        if !out.json {
            eprintln!(
                "\nsnapshot not built on {} of {} node(s): see the table",
                not_built + errors.len(),
                client.endpoints().len()
            );
        }
        return Ok(EXIT_REFUSED);
    }
    Ok(0)
}

async fn hash(client: &Client, out: Output) -> CommandResult {
    let (answers, errors) = hashes_at_one_index(client).await;
    if answers.is_empty() {
        return Err(unreachable("state hash", &errors));
    }
    let aligned = aligned(&answers);
    let same_hash = answers
        .windows(2)
        .all(|pair| pair[0].1.hash_hex == pair[1].1.hash_hex);
    // Agreement is only decidable between at least two nodes standing at the same applied
    // index: one node answering agrees with nothing.
    let compared = answers.len() >= 2;
    let agree = (aligned && compared).then_some(same_hash);
    if out.json {
        let mut nodes: Vec<Value> = answers
            .iter()
            .map(|(endpoint, r)| json!({"endpoint": endpoint, "node_id": r.node_id, "applied_index": r.applied_index, "hash": r.hash_hex, "ledger_time": crate::output::time_json(Some(r.ledger_time_ms))}))
            .collect();
        nodes.extend(errors.iter().map(|(endpoint, error)| json!({"endpoint": endpoint, "error": {"code": error.code().as_str(), "message": error.message()}})));
        out.json(&json!({"agree": agree, "answered": answers.len(), "unreachable": errors.len(), "nodes": nodes}));
    } else {
        let mut table = Table::new(&["ENDPOINT", "NODE", "APPLIED", "STATE HASH"]);
        for (endpoint, r) in &answers {
            table.row(vec![
                endpoint.clone(),
                r.node_id.to_string(),
                r.applied_index.to_string(),
                r.hash_hex.clone(),
            ]);
        }
        for (endpoint, error) in &errors {
            table.row(vec![
                endpoint.clone(),
                "-".into(),
                "-".into(),
                format!("unreachable ({})", error.code()),
            ]);
        }
        print!("{}", table.render());
        match agree {
            Some(true) if errors.is_empty() => println!("\nall {} nodes agree", answers.len()),
            Some(true) => println!(
                "\nthe {} nodes that answered agree; {} unreachable, not compared",
                answers.len(),
                errors.len()
            ),
            Some(false) => println!("\nDIVERGED: nodes at the same applied index disagree"),
            None if !compared && errors.is_empty() => {
                println!("\none endpoint given: nothing to compare (give every node's --endpoint)")
            }
            None if !compared => println!(
                "\nonly {} of {} nodes answered: nothing to compare",
                answers.len(),
                answers.len() + errors.len()
            ),
            None => println!(
                "\nnodes were at different applied indexes and did not reach a common one: nothing compared; run again"
            ),
        }
    }
    Ok(match agree {
        Some(false) => EXIT_REFUSED,
        // Nothing was compared: not a success a script could take for agreement (one
        // endpoint given on purpose, to read its hash, is).
        None if !compared && !errors.is_empty() => EXIT_UNAVAILABLE,
        None if compared => EXIT_UNAVAILABLE,
        _ => 0,
    })
}
