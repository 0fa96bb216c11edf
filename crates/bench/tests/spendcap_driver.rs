//! The spendcap driver against an in-memory stand-in for the node's HTTP
//! API (the same JSON types, from the `api` crate), served on three ports
//! like a three-node cluster: sessions are created with their tokens,
//! single and batch authorizations are decided, and the correctness check
//! reads spent + held back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{
    AuthorizeRequest, BatchAuthorizeRequest, BatchAuthorizeResponse, BatchItemResult, ClusterStatus,
    CreateSessionRequest, CreateSessionResponse, Decision, ErrorBody, LogPosition, Member, SessionView,
};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bench::loadgen::{self, Job, LoadMode, LoadPlan, Window};
use bench::money::{parse_decimal, to_decimal};
use bench::peers::spendcap::{DriverSettings, SessionTokens, SpendcapDriver, TokenMode};
use bench::peers::Driver;
use bench::tracker::Tracker;
use bench::workload::{AccountSet, OpCounter, Picker};

const ADMIN: &str = "admin-secret";

#[derive(Default)]
struct Session {
    cap: u64,
    held: u64,
    token: String,
}

#[derive(Default)]
struct Ledger {
    sessions: BTreeMap<String, Session>,
    log_index: u64,
    /// Every fifth authorization gets a 503 when set.
    flaky: bool,
    calls: u64,
}

type Shared = Arc<Mutex<Ledger>>;

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string()
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            code: code.into(),
            message: code.into(),
        }),
    )
        .into_response()
}

fn view(id: &str, s: &Session) -> SessionView {
    SessionView {
        id: id.to_string(),
        asset: "USDC".into(),
        decimals: 6,
        // The node may print trailing zeros; the harness must accept them.
        cap: format!("{}.000000", to_decimal(s.cap)),
        spent: "0".into(),
        held: to_decimal(s.held),
        remaining: to_decimal(s.cap - s.held),
        available: to_decimal(s.cap - s.held),
        tool_caps: BTreeMap::new(),
        budget: None,
        tools: None,
        live_holds_max: 1000,
        live_holds: 0,
        agent_id: "a".into(),
        wallet_address: None,
        created_at_ms: 0,
        expires_at_ms: 1,
        status: "active".into(),
        read_index: 0,
    }
}

fn decide(ledger: &mut Ledger, id: &str, amount: &str) -> Decision {
    ledger.log_index += 1;
    let index = ledger.log_index;
    let amount = parse_decimal(amount).expect("decimal amount");
    let approved = match ledger.sessions.get_mut(id) {
        Some(s) if s.held + amount <= s.cap => {
            s.held += amount;
            true
        }
        _ => false,
    };
    Decision {
        decision: if approved { "approved" } else { "denied" }.into(),
        session_id: id.to_string(),
        authorization_id: approved.then(|| format!("auth-{index}")),
        amount: Some(to_decimal(amount)),
        expires_at_ms: None,
        reason: (!approved).then(|| "session_cap".into()),
        budget_id: None,
        tool: None,
        remaining: None,
        message: None,
        replayed: false,
        position: LogPosition {
            log_index: index,
            batch_position: 0,
            log_time_ms: 0,
        },
    }
}

async fn status(State(_): State<Shared>) -> Json<ClusterStatus> {
    Json(ClusterStatus {
        node_id: 1,
        cluster: "mock".into(),
        role: "leader".into(),
        leader_id: Some(1),
        term: 1,
        members: vec![Member {
            id: 1,
            raft_addr: "127.0.0.1:1".into(),
            api_addr: "127.0.0.1:2".into(),
            voter: true,
        }],
        last_log_index: None,
        committed_index: None,
        applied_index: None,
        snapshot_index: None,
        purged_index: None,
        ledger_time_ms: 0,
        budgets: 0,
        sessions: 0,
        live_holds: 0,
        idempotency_keys: 0,
    })
}

async fn create_session(
    State(ledger): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<CreateSessionRequest>,
) -> Response {
    if bearer(&headers) != ADMIN {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let mut ledger = ledger.lock().unwrap();
    let id = body.id.expect("the harness names its sessions");
    let session = Session {
        cap: parse_decimal(&body.cap).unwrap(),
        held: 0,
        token: format!("tok-{id}"),
    };
    let response = CreateSessionResponse {
        session: view(&id, &session),
        session_token: Some(session.token.clone()),
        existed: false,
    };
    ledger.sessions.insert(id, session);
    Json(response).into_response()
}

async fn read_session(State(ledger): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if bearer(&headers) != ADMIN {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let ledger = ledger.lock().unwrap();
    match ledger.sessions.get(&id) {
        Some(s) => Json(view(&id, s)).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found"),
    }
}

async fn authorize(
    State(ledger): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<AuthorizeRequest>,
) -> Response {
    let mut ledger = ledger.lock().unwrap();
    let token = bearer(&headers);
    let allowed = token == ADMIN || ledger.sessions.get(&id).is_some_and(|s| s.token == token);
    if !allowed {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(body.tool, "bench");
    assert_eq!(body.hold_seconds, Some(3600));
    ledger.calls += 1;
    if ledger.flaky && ledger.calls % 5 == 0 {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no_leader");
    }
    let amount = body.amount.expect("the harness sends decimal amounts");
    Json(decide(&mut ledger, &id, &amount)).into_response()
}

async fn batch(State(ledger): State<Shared>, headers: HeaderMap, Json(body): Json<BatchAuthorizeRequest>) -> Response {
    if bearer(&headers) != ADMIN {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert!(body.items.len() <= api::BATCH_ITEMS_MAX);
    let mut ledger = ledger.lock().unwrap();
    let results = body
        .items
        .iter()
        .map(|item| {
            if !ledger.sessions.contains_key(&item.session_id) {
                return BatchItemResult::Error {
                    error: ErrorBody {
                        code: "not_found".into(),
                        message: "no such session".into(),
                    },
                };
            }
            let amount = item.amount.clone().expect("decimal amount");
            BatchItemResult::Decision(decide(&mut ledger, &item.session_id, &amount))
        })
        .collect();
    Json(BatchAuthorizeResponse { results }).into_response()
}

/// Three listeners over one ledger, like three nodes of one cluster.
async fn start_mock(ledger: Shared) -> Vec<String> {
    let app = Router::new()
        .route("/v1/cluster/status", get(status))
        .route("/v1/sessions", post(create_session))
        .route("/v1/sessions/{id}", get(read_session))
        .route("/v1/sessions/{id}/authorizations", post(authorize))
        .route("/v1/batch/authorize", post(batch))
        .with_state(ledger);
    let mut urls = Vec::new();
    for _ in 0..3 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}", listener.local_addr().unwrap()));
        let app = app.clone();
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    urls
}

fn driver(urls: Vec<String>, token_mode: TokenMode) -> SpendcapDriver {
    SpendcapDriver::connect(
        urls,
        8,
        DriverSettings {
            admin_token: ADMIN.into(),
            token_mode,
            hold_seconds: 3600,
            request_timeout: Duration::from_secs(5),
        },
        Arc::new(SessionTokens::default()),
    )
    .unwrap()
}

async fn run_job(
    driver: Arc<SpendcapDriver>,
    set: AccountSet,
    batch_items: usize,
    amount: u64,
) -> (loadgen::LoadResult, bool) {
    let tracker = Arc::new(Tracker::new(set.count));
    let job = Arc::new(Job {
        picker: Picker::Uniform { count: set.count },
        set: set.clone(),
        amount_atomic: amount,
        batch_items,
        tracker: tracker.clone(),
        ops: OpCounter::default(),
        rng_seed: 3,
    });
    let plan = LoadPlan {
        mode: LoadMode::Closed { concurrency: 8 },
        // Bounded by count, not by time: every request counts (no warmup),
        // and the window is only a safety net, so a slow machine makes the
        // run longer, never smaller (it flaked at 16 requests in 300 ms on a
        // loaded machine).
        warmup: Duration::ZERO,
        measure: Duration::from_secs(30),
        request_timeout: Duration::from_secs(5),
        requests_max: 400,
    };
    let window = Window::new(tokio::time::Instant::now(), plan.warmup, plan.measure);
    let result = loadgen::run(driver.clone(), job, plan, window).await.unwrap();
    let stored = driver.read_accounts(&set).await.unwrap();
    let check = tracker.verify(&set, &stored);
    assert!(check.ok, "{check:?}");
    (result, check.ok)
}

#[tokio::test]
async fn authorizes_with_session_tokens_and_checks_out() {
    let ledger = Shared::default();
    let urls = start_mock(ledger.clone()).await;
    let driver = Arc::new(driver(urls, TokenMode::Session));
    // $25 caps, $10 calls: two approvals per session, then denials.
    let set = AccountSet::new("seed-r1", 20, 25_000_000);
    driver.create_accounts(&set).await.unwrap();
    let (result, _) = run_job(driver, set, 1, 10_000_000).await;
    assert_eq!(result.failed_items, 0, "{result:?}");
    assert!(result.denied > result.approved, "{result:?}");
    let ledger = ledger.lock().unwrap();
    assert!(ledger.sessions.values().all(|s| s.held == 20_000_000));
}

#[tokio::test]
async fn batches_and_admin_tokens() {
    let ledger = Shared::default();
    let urls = start_mock(ledger.clone()).await;
    let driver = Arc::new(driver(urls, TokenMode::Admin));
    let set = AccountSet::new("spread", 50, 1_000_000_000_000);
    driver.create_accounts(&set).await.unwrap();
    let (result, _) = run_job(driver, set, 25, 10_000).await;
    assert_eq!(result.failed_items, 0, "{result:?}");
    assert_eq!(result.approved, result.requests * 25);
}

#[tokio::test]
async fn a_503_is_an_error_not_a_denial() {
    let ledger = Shared::default();
    let urls = start_mock(ledger.clone()).await;
    let driver = Arc::new(driver(urls, TokenMode::Session));
    let set = AccountSet::new("hot", 1, 1_000_000_000_000);
    driver.create_accounts(&set).await.unwrap();
    ledger.lock().unwrap().flaky = true;
    let (result, _) = run_job(driver, set, 1, 10_000).await;
    assert!(result.requests_failed > 0, "{result:?}");
    assert_eq!(result.errors.get("http_503").copied(), Some(result.requests_failed));
    assert_eq!(result.denied, 0);
}
