//! A node whose Raft core has failed stops serving: its probes answer 503
//! `node_failed`, the `spendcap_node_failed` gauge is 1, and every other
//! route answers 503 `node_failed` instead of serving state that no longer
//! advances. The node runs in this process (so its Raft core can be made to
//! fail) and is talked to over real HTTP on 127.0.0.1.

use std::time::{Duration, Instant};

use node::{Limits, Node, NodeConfig, RaftTuning};
use serde_json::{json, Value};

const ADMIN: &str = "failed-node-admin-token-0123456789";

async fn get(http: &reqwest::Client, url: String) -> (u16, String) {
    let resp = http.get(url).bearer_auth(ADMIN).send().await.expect("the node answers");
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

fn code(body: &str) -> Option<String> {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_raft_core_failed_answers_node_failed_everywhere() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = NodeConfig {
        node_id: 1,
        cluster: "failed-node".into(),
        data_dir: dir.path().join("node1"),
        api_listen: "127.0.0.1:0".parse().expect("addr"),
        raft_listen: "127.0.0.1:0".parse().expect("addr"),
        api_advertise: "127.0.0.1:1".into(),
        raft_advertise: "127.0.0.1:2".into(),
        initial_members: Default::default(),
        join: false,
        admin_token: Some(ADMIN.into()),
        peer_token: None,
        gateway_token: None,
        limits: Limits::default(),
        raft: RaftTuning {
            heartbeat: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            ..RaftTuning::default()
        },
    };
    let node = Node::start(config).await.expect("node starts");
    let api = format!("http://{}", node.api_addr);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // Healthy first: ready, a budget written, the gauge at 0.
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&http, format!("{api}/readyz")).await.0 != 200 {
        assert!(Instant::now() < deadline, "the node never became ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let created = http
        .post(format!("{api}/v1/budgets"))
        .bearer_auth(ADMIN)
        .json(&json!({"id": "org:x", "cap": "10"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status().as_u16(), 201);
    assert_eq!(get(&http, format!("{api}/healthz")).await.0, 200);
    let (_, metrics) = get(&http, format!("{api}/metrics")).await;
    assert!(metrics.contains("spendcap_node_failed 0"), "gauge at 0 while healthy");

    // The Raft core stops under the API (as after a fatal storage error).
    node.raft.shutdown().await.expect("raft stops");

    for probe in ["/healthz", "/readyz"] {
        let (status, body) = get(&http, format!("{api}{probe}")).await;
        assert_eq!(status, 503, "{probe}: {body}");
        assert_eq!(code(&body).as_deref(), Some("node_failed"), "{probe}: {body}");
        assert!(body.contains("Raft core"), "{probe} gives the reason: {body}");
    }
    let (status, metrics) = get(&http, format!("{api}/metrics")).await;
    assert_eq!(status, 200, "the metrics stay readable");
    assert!(metrics.contains("spendcap_node_failed 1"), "gauge at 1: {metrics}");

    // Every other route refuses, reads and writes alike, with a body that
    // says so (never "unknown", never stale state).
    for path in [
        "/v1/budgets",
        "/v1/budgets/org:x",
        "/v1/sessions",
        "/v1/cluster/status",
        "/v1/cluster/digest",
        "/v1/openapi.json",
    ] {
        let (status, body) = get(&http, format!("{api}{path}")).await;
        assert_eq!(
            (status, code(&body).as_deref()),
            (503, Some("node_failed")),
            "GET {path}: {body}"
        );
    }
    let write = http
        .post(format!("{api}/v1/budgets"))
        .bearer_auth(ADMIN)
        .json(&json!({"id": "org:y", "cap": "10"}))
        .send()
        .await
        .expect("answer");
    let status = write.status().as_u16();
    let body = write.text().await.unwrap_or_default();
    assert_eq!((status, code(&body).as_deref()), (503, Some("node_failed")), "{body}");
    node.shutdown().await;
}
