//! A real three-node cluster: no overspend under concurrency across nodes,
//! leader loss under load, a wiped node rejoining through a snapshot,
//! idempotent retries across a leader change, and a whole-cluster restart.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::*;
use client::{Client, ClientError};
use common::{authorize_request, budget, eventually, Cluster};
use futures::future::join_all;

async fn create_session(c: &Client, id: &str, cap: &str) -> String {
    let r = c
        .create_session(&CreateSessionRequest {
            id: Some(id.into()),
            cap: cap.into(),
            agent_id: "agent".into(),
            expires_in_seconds: Some(86_400),
            ..Default::default()
        })
        .await
        .expect("create session");
    r.session_token.expect("a new session's token")
}

/// Authorizes until the outcome is definite, retrying an unknown outcome
/// with the same key on the next node (as a careful client does).
async fn authorize_definitely(clients: &[Client], first: usize, session: &str, amount: &str, key: String) -> Decision {
    let mut last = None;
    for attempt in 0..40 {
        let c = &clients[(first + attempt) % clients.len()];
        match c.authorize(session, &authorize_request(amount, &key)).await {
            Ok(d) => return d,
            Err(e) if e.is_unknown() || matches!(e.code(), Some("no_leader" | "overloaded")) => last = Some(e),
            Err(ClientError::Unreachable(e)) => last = Some(ClientError::Unreachable(e)),
            Err(e) => panic!("authorize failed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no definite outcome for {session}/{key}: {last:?}");
}

fn dollars(text: &str) -> u128 {
    ledger::amount::parse_decimal(text, 6).expect("an amount").units()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_example_across_nodes_never_overspends() {
    let cluster = Cluster::start(3, &[]).await;
    let clients: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();

    // The seed's example: a $25 session, three concurrent $10 calls, each to
    // a different node.
    create_session(&clients[0], "seed", "25.00").await;
    let decisions =
        join_all((0..3).map(|i| authorize_definitely(&clients, i, "seed", "10.00", format!("seed-{i}")))).await;
    let approved = decisions.iter().filter(|d| d.decision == "approved").count();
    assert_eq!(approved, 2, "{decisions:?}");
    let denied: Vec<_> = decisions.iter().filter(|d| d.decision == "denied").collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].reason.as_deref(), Some("session_cap"));

    // 200 fresh sessions, 3 to 50 concurrent $10 calls each, spread over
    // the nodes, ten sessions at a time.
    for group in 0..20 {
        let sessions: Vec<String> = (0..10).map(|j| format!("s-{group}-{j}")).collect();
        join_all(sessions.iter().map(|s| create_session(&clients[group % 3], s, "25.00"))).await;
        let runs = sessions.iter().enumerate().map(|(j, s)| {
            let concurrency = 3 + ((group * 10 + j) * 7) % 48;
            let clients = &clients;
            async move {
                let ds = join_all(
                    (0..concurrency).map(|k| authorize_definitely(clients, k, s, "10.00", format!("{s}-{k}"))),
                )
                .await;
                let approved = ds.iter().filter(|d| d.decision == "approved").count();
                assert_eq!(
                    approved, 2,
                    "session {s} at concurrency {concurrency}: {approved} approvals"
                );
                assert!(ds
                    .iter()
                    .filter(|d| d.decision == "denied")
                    .all(|d| d.reason.as_deref() == Some("session_cap")));
            }
        });
        join_all(runs).await;
    }
    // Every node, read linearizably, agrees on what each session holds.
    for group in [0, 7, 19] {
        for i in 0..3 {
            let view = clients[i].get_session(&format!("s-{group}-3")).await.expect("session");
            assert_eq!(view.held, "20.00");
            assert_eq!(view.remaining, "5.00");
        }
    }
    cluster.converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_under_load_loses_no_acknowledged_approval() {
    let mut cluster = Cluster::start(3, &[]).await;
    let clients: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    let sessions: Vec<String> = (0..20).map(|i| format!("load-{i}")).collect();
    for s in &sessions {
        create_session(&clients[0], s, "25.00").await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, String, u128)>>> = Arc::default();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let clients = clients.clone();
            let sessions = sessions.clone();
            let stop = stop.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                // Bounded: at most this many calls per worker.
                for n in 0..400usize {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let s = &sessions[(w * 7 + n) % sessions.len()];
                    let amount = format!("{}.00", 1 + (n + w) % 4);
                    let d = authorize_definitely(&clients, n + w, s, &amount, format!("w{w}-{n}")).await;
                    if d.decision == "approved" {
                        let id = d.authorization_id.expect("an approval has an id");
                        acked.lock().unwrap().push((s.clone(), id, dollars(&amount)));
                    }
                }
            })
        })
        .collect();

    let before = cluster.leader().await;
    eventually("load to get going", Duration::from_secs(30), || async {
        (acked.lock().unwrap().len() >= 20).then_some(())
    })
    .await;
    cluster.kill(before);
    let after = cluster.leader().await;
    assert_ne!(after, before);
    let acked_at_kill = acked.lock().unwrap().len();
    eventually(
        "load to continue under the new leader",
        Duration::from_secs(60),
        || async { (acked.lock().unwrap().len() >= acked_at_kill + 20).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }

    // The old leader comes back and catches up.
    cluster.spawn(before);
    cluster.wait_ready(before).await;
    cluster.converged().await;

    let acked = acked.lock().unwrap().clone();
    let mut per_session: BTreeMap<String, u128> = BTreeMap::new();
    for (s, _, amount) in &acked {
        *per_session.entry(s.clone()).or_default() += amount;
    }
    for (s, total) in &per_session {
        assert!(
            *total <= dollars("25"),
            "acknowledged approvals on {s} exceed the cap: {total}"
        );
    }
    // Every acknowledged approval is in every node's state.
    for i in 0..3 {
        for (s, id, amount) in &acked {
            let view = clients[i]
                .get_authorization(id)
                .await
                .expect("an acknowledged hold exists");
            assert_eq!(&view.session_id, s);
            assert_eq!(dollars(&view.amount), *amount);
            assert_eq!(view.status, "held");
        }
        for s in &sessions {
            let view = clients[i].get_session(s).await.expect("session");
            assert_eq!(
                dollars(&view.held),
                per_session.get(s).copied().unwrap_or(0),
                "{s} on node {i}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_node_rejoins_through_a_snapshot() {
    let mut cluster = Cluster::start(3, &["--snapshot-logs", "20", "--logs-to-keep", "5"]).await;
    let clients: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    create_session(&clients[0], "snap", "1000.00").await;
    for n in 0..60 {
        authorize_definitely(&clients, n, "snap", "1.00", format!("k{n}")).await;
    }
    let leader = cluster.leader().await;
    let victim = (leader + 1) % 3;
    for i in 0..3 {
        clients[i].trigger_snapshot().await.expect("snapshot");
    }
    eventually("the leader to purge its log", Duration::from_secs(60), || async {
        let s = clients[leader].cluster_status().await.ok()?;
        s.purged_index.filter(|p| *p > 5).map(|_| ())
    })
    .await;

    cluster.kill(victim);
    std::fs::remove_dir_all(&cluster.nodes[victim].data_dir).expect("wipe");
    cluster.spawn(victim);
    cluster.wait_ready(victim).await;
    cluster.converged().await;
    let status = clients[victim].cluster_status().await.expect("status");
    assert!(
        status.snapshot_index.is_some(),
        "the wiped node got its state from a snapshot: {status:?}"
    );
    let view = clients[victim].get_session("snap").await.expect("the session is there");
    assert_eq!(view.held, "60.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_with_the_same_key_through_another_node_after_a_leader_change() {
    let mut cluster = Cluster::start(3, &[]).await;
    let clients: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    create_session(&clients[0], "retry", "25.00").await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let first = clients[follower]
        .authorize("retry", &authorize_request("10.00", "the-key"))
        .await
        .expect("authorize");
    assert_eq!(first.decision, "approved");

    cluster.kill(leader);
    let new_leader = cluster.leader().await;
    let other = (0..3).find(|i| *i != leader && *i != follower).expect("a third node");
    assert_ne!(new_leader, leader);
    let again = authorize_definitely(&clients[other..=other], 0, "retry", "10.00", "the-key".to_string()).await;
    assert_eq!(again.authorization_id, first.authorization_id);
    assert!(again.replayed);
    assert_eq!(
        again.position, first.position,
        "a replay answers with the first decision's position"
    );
    let view = clients[other].get_session("retry").await.expect("session");
    assert_eq!(view.held, "10.00", "one hold for one key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_restart_keeps_everything() {
    let mut cluster = Cluster::start(3, &[]).await;
    let c = cluster.client(0);
    budget(&c, "team:research", "100").await;
    c.create_session(&CreateSessionRequest {
        id: Some("keep".into()),
        cap: "25".into(),
        agent_id: "agent-9".into(),
        budget: Some("team:research".into()),
        expires_in_seconds: Some(86_400),
        ..Default::default()
    })
    .await
    .expect("session");
    let held = c
        .authorize("keep", &authorize_request("4.00", "hold-me"))
        .await
        .expect("a");
    let paid = c
        .authorize("keep", &authorize_request("6.00", "pay-me"))
        .await
        .expect("b");
    let voided = c
        .authorize("keep", &authorize_request("1.00", "void-me"))
        .await
        .expect("c");
    let paid_id = paid.authorization_id.clone().expect("id");
    c.capture(
        &paid_id,
        &CaptureRequest {
            amount: Some("5.50".into()),
            receipt: Some(ReceiptFields {
                transaction_hash: Some("0xfeed".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .expect("capture");
    c.void(voided.authorization_id.as_deref().expect("id"), &VoidRequest::default())
        .await
        .expect("void");
    let digest = cluster.converged().await;

    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    for i in 0..3 {
        cluster.wait_ready(i).await;
    }
    let after = cluster.converged().await;
    assert_eq!(after, digest, "a restart changes no state");
    let c = cluster.client(1);
    let view = c.get_session("keep").await.expect("session survives");
    assert_eq!((view.spent.as_str(), view.held.as_str()), ("5.50", "4.00"));
    let budget = c.get_budget("team:research").await.expect("budget survives");
    assert_eq!(budget.spent, "5.50");
    let hold = c
        .get_authorization(held.authorization_id.as_deref().expect("id"))
        .await
        .expect("hold");
    assert_eq!(hold.status, "held");
    let receipts = c.receipts(&ReceiptQuery::default()).await.expect("receipts");
    assert_eq!(receipts.items.len(), 1);
    assert_eq!(receipts.items[0].transaction_hash.as_deref(), Some("0xfeed"));
    // The idempotency record survived too: the retry replays.
    let again = c
        .authorize("keep", &authorize_request("4.00", "hold-me"))
        .await
        .expect("retry");
    assert!(again.replayed);
    assert_eq!(again.authorization_id, held.authorization_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_peers_refuses_to_start_without_a_peer_token() {
    let mut cluster = Cluster::prepare(3, &[]);
    cluster.peer_token = None;
    cluster.spawn(0);
    let status = cluster
        .wait_exit(0, Duration::from_secs(60))
        .expect("a three-member node without a peer token exits");
    assert!(!status.success());
    let log = cluster.log_text(0);
    for needle in ["peer token", "--peer-token", "SPENDCAP_PEER_TOKEN"] {
        assert!(log.contains(needle), "the error names {needle:?}: {log}");
    }
    // A node that joins later will have peers too.
    let joining = cluster.add_joining_node();
    let status = cluster
        .wait_exit(joining, Duration::from_secs(60))
        .expect("a joining node without a peer token exits");
    assert!(!status.success());
    assert!(cluster.log_text(joining).contains("--join"));

    // A single node needs none, and then accepts no Raft RPC at all.
    let mut single = Cluster::prepare(1, &[]);
    single.peer_token = None;
    single.start_all().await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!(
            "http://127.0.0.1:{}{}",
            single.nodes[0].raft_port,
            node::peer::PATH_VOTE
        ))
        .header(node::peer::HEADER_CLUSTER, "spendcap")
        .header(node::peer::HEADER_TARGET, "1")
        .header(node::peer::HEADER_PEER_TOKEN, "any-token-at-all-0123456789")
        .body(Vec::<u8>::new())
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 401);
    // ...and refuses to grow into a cluster without one.
    let e = single
        .client(0)
        .add_learner(&AddLearnerRequest {
            id: 2,
            raft_addr: "127.0.0.1:9".into(),
            api_addr: "127.0.0.1:9".into(),
        })
        .await
        .expect_err("no learner without a peer token");
    assert_eq!(e.code(), Some("peer_token_required"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_rpcs_without_the_right_peer_token_are_refused_and_change_nothing() {
    use node::peer::*;
    let cluster = Cluster::start(3, &[]).await;
    let admin = cluster.client(0);
    create_session(&admin, "victim", "10").await;
    let leader = cluster.leader().await;
    let digest = cluster.converged().await;
    // What an attacker on the network would send the leader's Raft port:
    // a forwarded batch revoking a session.
    let body = postcard::to_allocvec(&node::proposer::ProposeRequest {
        commands: vec![ledger::Command::RevokeSession {
            session_id: ledger::SessionId::new("victim").expect("id"),
        }],
    })
    .expect("encode");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let target = cluster.nodes[leader].id.to_string();
    let raft_port = cluster.nodes[leader].raft_port;
    let send = |path: &'static str, token: Option<&'static str>| {
        let mut req = http
            .post(format!("http://127.0.0.1:{raft_port}{path}"))
            .header(HEADER_CLUSTER, "spendcap")
            .header(HEADER_TARGET, target.clone())
            .body(body.clone());
        if let Some(t) = token {
            req = req.header(HEADER_PEER_TOKEN, t);
        }
        req.send()
    };
    for path in [PATH_APPEND, PATH_VOTE, PATH_SNAPSHOT, PATH_PROPOSE, PATH_READ_INDEX] {
        let none = send(path, None).await.expect("answer");
        assert_eq!(none.status().as_u16(), 401, "{path} without a token");
        let wrong = send(path, Some("not-the-peer-token-0123456789")).await.expect("answer");
        assert_eq!(wrong.status().as_u16(), 403, "{path} with a wrong token");
        let prefix = send(path, Some("test-peer-token")).await.expect("answer");
        assert_eq!(prefix.status().as_u16(), 403, "{path} with a prefix of the token");
    }
    assert_eq!(cluster.converged().await, digest, "refused RPCs changed the state");
    assert_eq!(admin.get_session("victim").await.expect("read").status, "active");

    // The same request with the peer token is acted on: the refusals above
    // were about the token, not the body.
    let ok = send(PATH_PROPOSE, Some(common::PEER_TOKEN)).await.expect("answer");
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(admin.get_session("victim").await.expect("read").status, "revoked");
}

/// The batch endpoint's items are decided together, in one entry and in
/// order, also when sent to a follower while single writes arrive at every
/// node (they share one queue and batcher with everything else).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_through_a_follower_is_one_entry_in_order_among_other_writes() {
    let cluster = Cluster::start(3, &[]).await;
    let clients: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    create_session(&clients[leader], "b", "1000.00").await;
    create_session(&clients[leader], "single", "1000.00").await;
    const ITEMS: usize = 300;
    let batch = |round: usize| BatchAuthorizeRequest {
        items: (0..ITEMS)
            .map(|i| BatchAuthorizeItem {
                session_id: "b".into(),
                amount: Some("0.01".into()),
                tool: "search".into(),
                idempotency_key: Some(format!("batch-{round}-{i}")),
                ..Default::default()
            })
            .collect(),
    };
    for round in 0..3 {
        let singles = join_all(
            (0..30).map(|k| authorize_definitely(&clients, k, "single", "0.01", format!("single-{round}-{k}"))),
        );
        let request = batch(round);
        let (response, singles) = tokio::join!(clients[follower].batch_authorize(&request), singles);
        let response = response.expect("the batch is decided");
        assert_eq!(response.results.len(), ITEMS);
        let positions: Vec<LogPosition> = response
            .results
            .iter()
            .map(|r| match r {
                BatchItemResult::Decision(d) => {
                    assert_eq!(d.decision, "approved", "{d:?}");
                    d.position
                }
                BatchItemResult::Error { error } => panic!("item refused: {error:?}"),
            })
            .collect();
        let first = &positions[0];
        for (i, p) in positions.iter().enumerate() {
            assert_eq!(p.log_index, first.log_index, "item {i} is in another entry");
            assert_eq!(
                p.batch_position,
                first.batch_position + i as u32,
                "item {i} out of order"
            );
        }
        assert!(singles.iter().all(|d| d.decision == "approved"));
    }
    let view = clients[follower].get_session("b").await.expect("session");
    assert_eq!(view.held, "9.00");
    cluster.converged().await;
}
