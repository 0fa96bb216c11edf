//! Operating a cluster: backup and restore into a new cluster, replacing a
//! node (learner, promote, remove), and logs that carry request ids and
//! never a secret.

mod common;

use std::process::Command;
use std::time::Duration;

use api::*;
use client::Client;
use common::{authorize_request, eventually, Cluster, ADMIN_TOKEN, GATEWAY_TOKEN, PEER_TOKEN};

fn spendcap(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_spendcap"))
        .args(args)
        .output()
        .expect("run spendcap");
    assert!(
        out.status.success(),
        "spendcap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Budgets, sessions, live holds, captures with receipts and voids.
async fn populate(c: &Client) {
    c.create_budget(&CreateBudgetRequest {
        id: "org:acme".into(),
        cap: "500".into(),
        tool_caps: [("gpu".to_string(), "50".to_string())].into(),
        ..Default::default()
    })
    .await
    .expect("budget");
    for i in 0..12 {
        let sid = format!("s{i}");
        c.create_session(&CreateSessionRequest {
            id: Some(sid.clone()),
            cap: "25".into(),
            agent_id: format!("agent-{}", i % 3),
            budget: Some("org:acme".into()),
            expires_in_seconds: Some(86_400),
            ..Default::default()
        })
        .await
        .expect("session");
        let a = c
            .authorize(&sid, &authorize_request("10", &format!("{sid}-a")))
            .await
            .expect("a");
        let b = c
            .authorize(&sid, &authorize_request("5", &format!("{sid}-b")))
            .await
            .expect("b");
        c.capture(
            a.authorization_id.as_deref().expect("id"),
            &CaptureRequest {
                amount: Some(format!("{}.25", 3 + i % 5)),
                receipt: Some(ReceiptFields {
                    transaction_hash: Some(format!("0x{i:04x}")),
                    payment_request_id: Some(format!("req-{i}")),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("capture");
        if i % 2 == 0 {
            c.void(b.authorization_id.as_deref().expect("id"), &VoidRequest::default())
                .await
                .expect("void");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_then_restore_into_a_new_cluster_keeps_every_cent() {
    let old = Cluster::start(3, &[]).await;
    populate(&old.client(0)).await;
    let digest = old.converged().await;
    let receipts = old
        .client(1)
        .export_receipts(&ReceiptQuery::default())
        .await
        .expect("export");
    assert_eq!(receipts.lines().count(), 12);
    let sessions = old.client(2).list_sessions(None, Some(100)).await.expect("sessions");

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("spendcap.backup");
    let summary = spendcap(&[
        "backup",
        "--out",
        &file.display().to_string(),
        "--api",
        &old.nodes[1].api(),
        "--token",
        ADMIN_TOKEN,
    ]);
    let summary: serde_json::Value = serde_json::from_str(&summary).expect("a JSON summary");
    assert_eq!(
        summary["digest"],
        digest.as_str(),
        "the backup holds exactly the cluster's state"
    );
    drop(old);

    // A damaged copy is refused.
    let mut bytes = std::fs::read(&file).expect("backup");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    let damaged = dir.path().join("damaged.backup");
    std::fs::write(&damaged, bytes).expect("write");
    let refused = Command::new(env!("CARGO_BIN_EXE_spendcap"))
        .args(["restore", "--from", &damaged.display().to_string(), "--data-dir"])
        .arg(dir.path().join("nowhere"))
        .output()
        .expect("run");
    assert!(!refused.status.success(), "a damaged backup must not restore");

    // A new cluster, new addresses, restored from the backup.
    let mut new = Cluster::prepare(3, &[]);
    for node in &new.nodes {
        spendcap(&[
            "restore",
            "--from",
            &file.display().to_string(),
            "--data-dir",
            &node.data_dir.display().to_string(),
            "--id",
            &node.id.to_string(),
            "--initial-members",
            new.members(),
        ]);
    }
    new.start_all().await;
    assert_eq!(new.converged().await, digest);
    let c = new.client(0);
    assert_eq!(
        c.export_receipts(&ReceiptQuery::default()).await.expect("export"),
        receipts
    );
    assert_eq!(
        c.list_sessions(None, Some(100)).await.expect("sessions").items.len(),
        sessions.items.len()
    );
    for old_view in &sessions.items {
        let view = c.get_session(&old_view.id).await.expect("session");
        assert_eq!((&view.spent, &view.held), (&old_view.spent, &old_view.held));
    }
    // The restored cluster keeps deciding: s1 holds 5 and spent 4.25 of 25.
    let d = c
        .authorize("s1", &authorize_request("15.75", "after-restore"))
        .await
        .expect("authorize");
    assert_eq!(d.decision, "approved");
    let d = c
        .authorize("s1", &authorize_request("0.01", "over"))
        .await
        .expect("authorize");
    assert_eq!(d.reason.as_deref(), Some("session_cap"));
    // Idempotency records came along too.
    let again = c.authorize("s1", &authorize_request("5", "s1-b")).await.expect("retry");
    assert!(again.replayed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_is_replaced_by_adding_a_learner_promoting_it_and_removing_the_old_one() {
    let mut cluster = Cluster::start(3, &[]).await;
    populate(&cluster.client(0)).await;
    let leader = cluster.leader().await;
    let old = (leader + 1) % 3;
    let old_id = cluster.nodes[old].id;

    let new = cluster.add_joining_node();
    let new_id = cluster.nodes[new].id;
    let lc = cluster.client(leader);
    lc.add_learner(&AddLearnerRequest {
        id: new_id,
        raft_addr: format!("127.0.0.1:{}", cluster.nodes[new].raft_port),
        api_addr: format!("127.0.0.1:{}", cluster.nodes[new].api_port),
    })
    .await
    .expect("add learner");
    let voters: Vec<u64> = cluster.nodes.iter().map(|n| n.id).filter(|id| *id != old_id).collect();
    let changed = lc
        .change_membership(&ChangeMembershipRequest { voters: voters.clone() })
        .await
        .expect("promote the learner, remove the old node");
    assert!(changed.members.iter().any(|m| m.id == new_id && m.voter));
    assert!(!changed.members.iter().any(|m| m.id == old_id));
    cluster.stop(old);

    // The cluster without the old node decides, and the new node has it all.
    cluster.wait_ready(new).await;
    let c = cluster.client(new);
    let d = c
        .authorize("s3", &authorize_request("1", "after-replace"))
        .await
        .expect("authorize");
    assert_eq!(d.decision, "approved");
    let status = c.cluster_status().await.expect("status");
    assert_eq!(status.members.iter().filter(|m| m.voter).count(), 3);
    cluster.converged().await;
    // A membership change sent to a follower says where the leader is.
    let follower = (0..cluster.nodes.len())
        .find(|i| *i != leader && *i != old)
        .expect("a follower");
    let refused = cluster
        .client(follower)
        .change_membership(&ChangeMembershipRequest { voters })
        .await;
    if let Err(e) = refused {
        assert_eq!(e.code(), Some("not_leader"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_carry_request_ids_and_never_a_token() {
    let mut cluster = Cluster::prepare(3, &["--log-format", "json"]);
    cluster.rust_log = "info,node=debug,openraft=warn".into();
    cluster.start_all().await;
    let admin = cluster.client(0);
    let created = admin
        .create_session(&CreateSessionRequest {
            id: Some("logged".into()),
            cap: "25".into(),
            agent_id: "a".into(),
            ..Default::default()
        })
        .await
        .expect("session");
    let token = created.session_token.expect("token");
    let s = Client::with_timeout(&cluster.nodes[1].api(), Some(token.clone()), Duration::from_secs(10)).expect("c");
    for i in 0..5 {
        s.authorize("logged", &authorize_request("1", &format!("k{i}")))
            .await
            .expect("authorize");
    }
    const GARBAGE: &str = "sct_not-a-real-token-0123456789";
    let _ = cluster.client(2).with_token(GARBAGE).get_session("logged").await;
    // The gateway's token is used too (and the peer token on every Raft RPC).
    cluster
        .client(2)
        .with_token(GATEWAY_TOKEN)
        .get_session("logged")
        .await
        .expect("the gateway reads a session");
    let rotated = admin.rotate_token("logged").await.expect("rotate").session_token;
    // Wait until every node has logged the requests sent to it (node 0:
    // create and rotate; node 1: five authorizations; node 2: the garbage
    // and the gateway's reads), so the scan below reads all of them.
    for (node, sent) in [(0, 2), (1, 5), (2, 2)] {
        eventually("request logs", Duration::from_secs(10), || async {
            let served = cluster
                .log_text(node)
                .lines()
                .filter(|l| l.contains("\"served\""))
                .count();
            (served >= sent).then_some(())
        })
        .await;
    }
    let mut request_lines = 0;
    for i in 0..3 {
        let text = cluster.log_text(i);
        // Every secret sent to or between the nodes: admin, peer, gateway,
        // the session's tokens (before and after rotation), and the
        // garbage one.
        for secret in [
            ADMIN_TOKEN,
            PEER_TOKEN,
            GATEWAY_TOKEN,
            token.as_str(),
            rotated.as_str(),
            GARBAGE,
        ] {
            assert!(!text.contains(secret), "node {i} logged a token");
        }
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON log lines");
            if v["message"] == "served" || v["fields"]["message"] == "served" {
                let id = v["span"]["request_id"].as_str().unwrap_or_default();
                assert!(id.starts_with('n'), "a request log line without a request id: {line}");
                request_lines += 1;
            }
        }
    }
    assert!(request_lines >= 5, "found {request_lines} request log lines");
}

/// A node that generates its admin token writes it to its file (mode 0600)
/// and prints only the file's path, never the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generated_admin_token_is_never_printed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("node1");
    let log = dir.path().join("node1.log");
    let out = std::fs::File::create(&log).expect("log file");
    let api = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spendcap"))
        .args(["serve", "--data-dir", &data.display().to_string()])
        .args(["--api-listen", &format!("127.0.0.1:{api}")])
        .args(["--raft-listen", &format!("127.0.0.1:{}", common::free_port())])
        .env("RUST_LOG", "debug")
        .env_remove("SPENDCAP_ADMIN_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .expect("spawn spendcap serve");
    let c = Client::with_timeout(&format!("http://127.0.0.1:{api}"), None, Duration::from_secs(5)).expect("client");
    let ready = eventually("the node ready", Duration::from_secs(60), || {
        let c = c.clone();
        async move { c.readyz().await.ok() }
    })
    .await;
    assert_eq!(ready.node_id, 1);
    let token_file = data.join("admin-token");
    let token = std::fs::read_to_string(&token_file).expect("the token file");
    let token = token.trim();
    assert!(token.len() >= 16);
    // The token works, and was printed nowhere.
    c.with_token(token)
        .cluster_status()
        .await
        .expect("the generated token is the admin's");
    let text = eventually("the startup lines", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("generated an admin token").then_some(text) }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(!text.contains(token), "the admin token was printed: {text}");
    assert!(
        text.contains(&token_file.display().to_string()),
        "the file's path is printed: {text}"
    );
}
