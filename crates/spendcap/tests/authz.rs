//! Who may call what: the authorization matrix (every route of the route
//! table × every kind of caller, against a real node with real objects),
//! and the attacks of a dead or over-reaching session token.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use api::*;
use client::Client;
use common::{authorize_request, budget, eventually, Cluster, ADMIN_TOKEN, GATEWAY_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};

/// Who calls. Each caller acts on a "subject" session: its own for the
/// revoked and expired tokens, session A for everyone else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Admin,
    /// A's token, on A's objects.
    Own,
    /// B's token, on A's objects.
    Other,
    /// R's token (R is revoked), on R's objects.
    Revoked,
    /// E's token (E has expired by log time), on E's objects.
    Expired,
    Gateway,
    NoToken,
    /// A token that is nobody's (shaped like a session token).
    Garbage,
}

const CALLERS: [Caller; 8] = [
    Caller::Admin,
    Caller::Own,
    Caller::Other,
    Caller::Revoked,
    Caller::Expired,
    Caller::Gateway,
    Caller::NoToken,
    Caller::Garbage,
];

const GARBAGE_TOKEN: &str = "sct_0000000000000000000000000000000000000000000000000000000000000000";

/// A session and its token.
#[derive(Clone)]
struct Subject {
    id: String,
    token: String,
    /// An authorization of this session (never resolved by the matrix).
    hold: String,
    receipt: String,
    /// Active holds made for the cells that pin, capture or void (one per
    /// cell, so every cell finds an active hold).
    spare_holds: Vec<String>,
}

struct World {
    api: String,
    admin: Client,
    a: Subject,
    b: Subject,
    r: Subject,
    e: Subject,
    next: u32,
}

/// Log time moves only with entries: writes budgets until session `id` has
/// expired by it.
async fn expire_by_log_time(admin: &Client, id: &str) {
    let mut tick = 0u32;
    eventually(
        &format!("session {id} to expire by log time"),
        Duration::from_secs(30),
        || {
            tick += 1;
            let n = tick;
            let admin = admin.clone();
            async move {
                admin
                    .create_budget(&CreateBudgetRequest {
                        id: format!("org:tick{n}"),
                        cap: "1".into(),
                        ..Default::default()
                    })
                    .await
                    .ok()?;
                (admin.get_session(id).await.ok()?.status == "expired").then_some(())
            }
        },
    )
    .await;
}

async fn session(admin: &Client, id: &str, expires_in_seconds: u64) -> String {
    admin
        .create_session(&CreateSessionRequest {
            id: Some(id.into()),
            cap: "400".into(),
            agent_id: format!("agent-{id}"),
            budget: Some("org:authz".into()),
            expires_in_seconds: Some(expires_in_seconds),
            ..Default::default()
        })
        .await
        .expect("session")
        .session_token
        .expect("a new session's token")
}

async fn hold(admin: &Client, session: &str, key: &str) -> String {
    let d = admin
        .authorize(session, &authorize_request("1", key))
        .await
        .expect("authorize");
    assert_eq!(d.decision, "approved", "{d:?}");
    d.authorization_id.expect("id")
}

/// A session with a held authorization, a captured one (with its
/// receipt), and `spares` more held ones.
async fn subject(admin: &Client, id: &str, expires_in_seconds: u64, spares: usize) -> Subject {
    let token = session(admin, id, expires_in_seconds).await;
    let held = hold(admin, id, &format!("{id}-held")).await;
    let captured = hold(admin, id, &format!("{id}-captured")).await;
    let receipt = admin
        .capture(&captured, &CaptureRequest::default())
        .await
        .expect("capture")
        .receipt_id;
    let mut spare_holds = Vec::new();
    for i in 0..spares {
        spare_holds.push(hold(admin, id, &format!("{id}-spare{i}")).await);
    }
    Subject {
        id: id.into(),
        token,
        hold: held,
        receipt,
        spare_holds,
    }
}

impl World {
    async fn build(cluster: &Cluster) -> World {
        let admin = cluster.client(0);
        budget(&admin, "org:authz", "100000").await;
        // Each of the routes that pin, capture or void needs an active hold
        // per caller that may succeed; the dead sessions need one per route.
        let a = subject(&admin, "sa", 86_400, 3 * CALLERS.len()).await;
        let b = subject(&admin, "sb", 86_400, 0).await;
        let r = subject(&admin, "sr", 86_400, 3).await;
        let e = subject(&admin, "se", 3, 3).await;
        admin.revoke_session("sr").await.expect("revoke");
        // Log time moves only with entries: write until E has expired by it.
        expire_by_log_time(&admin, "se").await;
        World {
            api: cluster.nodes[0].api(),
            admin,
            a,
            b,
            r,
            e,
            next: 0,
        }
    }

    fn subject(&self, caller: Caller) -> &Subject {
        match caller {
            Caller::Revoked => &self.r,
            Caller::Expired => &self.e,
            _ => &self.a,
        }
    }

    fn token(&self, caller: Caller) -> Option<String> {
        match caller {
            Caller::Admin => Some(ADMIN_TOKEN.into()),
            Caller::Own => Some(self.a.token.clone()),
            Caller::Other => Some(self.b.token.clone()),
            Caller::Revoked => Some(self.r.token.clone()),
            Caller::Expired => Some(self.e.token.clone()),
            Caller::Gateway => Some(GATEWAY_TOKEN.into()),
            Caller::NoToken => None,
            Caller::Garbage => Some(GARBAGE_TOKEN.into()),
        }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    /// An active hold of the caller's subject that no earlier cell used.
    fn spare_hold(&mut self, caller: Caller) -> String {
        let subject = match caller {
            Caller::Revoked => &mut self.r,
            Caller::Expired => &mut self.e,
            _ => &mut self.a,
        };
        subject.spare_holds.pop().expect("enough spare holds")
    }
}

/// One request of the matrix: the concrete path, body, and the token it
/// carries.
struct Call {
    path: String,
    body: Option<Value>,
    token: Option<String>,
}

/// Fills a route's path parameters and body for `caller`.
async fn call_for(world: &mut World, method: &str, route: &str, caller: Caller) -> Call {
    let mut token = world.token(caller);
    let subject = world.subject(caller).clone();
    let (path, body) = match (method, route) {
        ("GET", "/v1/budgets/{id}") => ("/v1/budgets/org:authz".to_string(), None),
        ("PATCH", "/v1/budgets/{id}") => ("/v1/budgets/org:authz".into(), Some(json!({"cap": "100000"}))),
        ("POST", "/v1/budgets") => (route.into(), Some(json!({"id": world.fresh("org:new"), "cap": "1"}))),
        ("POST", "/v1/sessions") => (
            route.into(),
            Some(json!({"id": world.fresh("new"), "cap": "1", "agent_id": "x"})),
        ),
        ("GET", "/v1/sessions/{id}") => (format!("/v1/sessions/{}", subject.id), None),
        ("POST", "/v1/sessions/{id}/revoke") | ("POST", "/v1/sessions/{id}/token") => {
            // A revoke or a rotation that succeeds changes its session: act
            // on a fresh one (as its own token, for the own caller); the
            // dead callers act on their own session.
            let id = match caller {
                Caller::Revoked | Caller::Expired => subject.id.clone(),
                _ => {
                    let id = world.fresh("disposable");
                    let fresh_token = session(&world.admin, &id, 86_400).await;
                    if caller == Caller::Own {
                        token = Some(fresh_token);
                    }
                    id
                }
            };
            let tail = route.rsplit('/').next().unwrap_or_default();
            (format!("/v1/sessions/{id}/{tail}"), None)
        }
        ("POST", "/v1/sessions/{id}/authorizations") => (
            format!("/v1/sessions/{}/authorizations", subject.id),
            Some(json!({"amount": "0.01", "tool": "search", "idempotency_key": world.fresh("k")})),
        ),
        ("POST", "/v1/batch/authorize") => (
            route.into(),
            Some(
                json!({"items": [{"session_id": subject.id, "amount": "0.01", "tool": "search",
                                   "idempotency_key": world.fresh("bk")}]}),
            ),
        ),
        ("GET", "/v1/authorizations") => ("/v1/authorizations?status=settling".into(), None),
        ("GET", "/v1/authorizations/{id}") => (format!("/v1/authorizations/{}", subject.hold), None),
        ("POST", "/v1/authorizations/{id}/settling") => (
            format!("/v1/authorizations/{}/settling", world.spare_hold(caller)),
            Some(json!({"reference": world.fresh("ref")})),
        ),
        ("POST", "/v1/authorizations/{id}/capture") => (
            format!("/v1/authorizations/{}/capture", world.spare_hold(caller)),
            Some(json!({"amount": "0.5"})),
        ),
        ("POST", "/v1/authorizations/{id}/void") => (
            format!("/v1/authorizations/{}/void", world.spare_hold(caller)),
            Some(json!({})),
        ),
        ("GET", "/v1/receipts") | ("GET", "/v1/receipts/export") => {
            (format!("{route}?session_id={}", subject.id), None)
        }
        ("GET", "/v1/receipts/{id}") => (format!("/v1/receipts/{}", subject.receipt), None),
        // Valid-looking but refused bodies: no cell may change membership.
        ("POST", "/v1/cluster/learners") => (
            route.into(),
            Some(json!({"id": 99, "raft_addr": "no-port", "api_addr": "no-port"})),
        ),
        ("POST", "/v1/cluster/membership") => (route.into(), Some(json!({"voters": []}))),
        ("POST", _) | ("PATCH", _) => (route.into(), Some(json!({}))),
        _ => (route.into(), None),
    };
    Call { path, body, token }
}

/// The status each caller must get on each route. Panics on a route it does
/// not know: a new route must be added here (and to the OpenAPI document).
fn expected(method: &str, route: &str, caller: Caller) -> u16 {
    use Caller::*;
    // The probes, metrics and documents are public.
    let public = 200;
    // Admin-only routes: what the admin gets, and the same for the rest.
    let admin_only = |admin: u16| match caller {
        Admin => admin,
        Own | Other | Revoked | Expired | Gateway => 403,
        NoToken | Garbage => 401,
    };
    match (method, route) {
        ("GET", "/healthz" | "/readyz" | "/metrics" | "/v1/openapi.json" | "/console") => public,
        ("POST", "/v1/budgets") => admin_only(201),
        ("GET", "/v1/budgets" | "/v1/budgets/{id}") => admin_only(200),
        ("PATCH", "/v1/budgets/{id}") => admin_only(200),
        ("POST", "/v1/sessions") => admin_only(201),
        ("GET", "/v1/sessions") => admin_only(200),
        ("POST", "/v1/sessions/{id}/revoke" | "/v1/sessions/{id}/token") => admin_only(200),
        ("POST", "/v1/batch/authorize") => admin_only(200),
        ("GET", "/v1/decisions/recent" | "/v1/cluster/status" | "/v1/cluster/digest" | "/v1/cluster/backup") => {
            admin_only(200)
        }
        ("POST", "/v1/cluster/learners" | "/v1/cluster/membership") => admin_only(400),
        ("POST", "/v1/cluster/snapshot") => admin_only(202),
        // "Who am I": only a session token is someone.
        ("GET", "/v1/session") => match caller {
            Admin | Gateway => 404,
            Own | Other | Revoked | Expired => 200,
            NoToken | Garbage => 401,
        },
        // Reading a session or one of its authorizations: the admin, the
        // gateway, the session itself (also once revoked or expired).
        ("GET", "/v1/sessions/{id}" | "/v1/authorizations/{id}") => match caller {
            Admin | Own | Revoked | Expired | Gateway => 200,
            Other => 403,
            NoToken | Garbage => 401,
        },
        ("POST", "/v1/sessions/{id}/authorizations") => match caller {
            Admin | Own => 200,
            Other | Gateway | Revoked | Expired => 403,
            NoToken | Garbage => 401,
        },
        ("GET", "/v1/authorizations") => match caller {
            Admin | Gateway => 200,
            Own | Other | Revoked | Expired => 403,
            NoToken | Garbage => 401,
        },
        // Only the gateway and the admin pin.
        ("POST", "/v1/authorizations/{id}/settling") => match caller {
            Admin | Gateway => 200,
            Own | Other | Revoked | Expired => 403,
            NoToken | Garbage => 401,
        },
        ("POST", "/v1/authorizations/{id}/capture" | "/v1/authorizations/{id}/void") => match caller {
            Admin | Own | Gateway => 200,
            Other | Revoked | Expired => 403,
            NoToken | Garbage => 401,
        },
        // Receipts: the admin and the session itself, never the gateway.
        ("GET", "/v1/receipts" | "/v1/receipts/export" | "/v1/receipts/{id}") => match caller {
            Admin | Own | Revoked | Expired => 200,
            Other | Gateway => 403,
            NoToken | Garbage => 401,
        },
        _ => panic!("no expectation for {method} {route}: add the route to the authorization matrix"),
    }
}

/// The error code a refused cell must carry, where it says more than the
/// status.
fn expected_code(route: &str, caller: Caller, status: u16) -> Option<&'static str> {
    let writes = [
        "/v1/sessions/{id}/authorizations",
        "/v1/authorizations/{id}/settling",
        "/v1/authorizations/{id}/capture",
        "/v1/authorizations/{id}/void",
    ];
    match (caller, status) {
        (_, 401) => Some("unauthorized"),
        (Caller::Revoked, 403) if writes.contains(&route) => Some("session_revoked"),
        (Caller::Expired, 403) if writes.contains(&route) => Some("session_expired"),
        _ => None,
    }
}

async fn send(http: &reqwest::Client, api: &str, method: &str, call: &Call) -> (u16, String) {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http.request(method, format!("{api}{}", call.path));
    if let Some(t) = &call.token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = &call.body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("the node answers");
    let status = resp.status().as_u16();
    // Bodies of the big documents are not needed.
    let text = resp.text().await.unwrap_or_default();
    (status, text.chars().take(400).collect())
}

/// The (method, path) pairs of the OpenAPI document a node serves.
async fn served_document(http: &reqwest::Client, api: &str) -> BTreeSet<(String, String)> {
    let doc: Value = http
        .get(format!("{api}/v1/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("JSON");
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "patch", "put", "delete"].contains(&method.as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_answers_every_caller_as_documented() {
    let cluster = Cluster::start(1, &[]).await;
    let mut world = World::build(&cluster).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client");

    // The matrix is generated from the router's own table, which must be
    // exactly what the served document describes.
    let table: Vec<(&str, &str)> = node::http::route_table().collect();
    let routes: BTreeSet<(String, String)> = table.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(routes, served_document(&http, &world.api).await);

    let mut wrong = Vec::new();
    let mut cells = 0;
    for (method, route) in &table {
        for caller in CALLERS {
            let call = call_for(&mut world, method, route, caller).await;
            let (status, body) = send(&http, &world.api, method, &call).await;
            cells += 1;
            let want = expected(method, route, caller);
            let code = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_string));
            let want_code = expected_code(route, caller, want);
            if status != want || (want_code.is_some() && code.as_deref() != want_code) {
                wrong.push(format!(
                    "{method} {} as {caller:?}: got {status} {code:?}, want {want} {want_code:?}: {body}",
                    call.path
                ));
            }
            assert!(
                status < 500,
                "{method} {} as {caller:?} answered {status}: {body}",
                call.path
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(cells, table.len() * CALLERS.len());
}

/// The agent (its own session token) cannot release a hold the gateway
/// pinned while a payment may be in flight: neither void it nor capture
/// part of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_cannot_void_or_capture_a_hold_the_gateway_pinned() {
    let cluster = Cluster::start(1, &[]).await;
    let admin = cluster.client(0);
    budget(&admin, "org:authz", "1000").await;
    let token = session(&admin, "agent", 86_400).await;
    let agent = Client::with_timeout(&cluster.nodes[0].api(), Some(token), Duration::from_secs(10)).expect("client");
    let gateway = admin.with_token(GATEWAY_TOKEN);
    let d = agent
        .authorize("agent", &authorize_request("1", "pay-1"))
        .await
        .expect("authorize");
    let id = d.authorization_id.expect("approved");
    gateway.mark_settling(&id, "nonce-1").await.expect("the gateway pins");

    let void = agent
        .void(&id, &VoidRequest::default())
        .await
        .expect_err("void refused");
    assert_eq!(
        (void.status(), void.code()),
        (Some(403), Some("hold_settling")),
        "{void:?}"
    );
    let capture = agent
        .capture(
            &id,
            &CaptureRequest {
                amount: Some("0.5".into()),
                ..Default::default()
            },
        )
        .await
        .expect_err("partial capture refused");
    assert_eq!(
        (capture.status(), capture.code()),
        (Some(403), Some("hold_settling")),
        "{capture:?}"
    );

    let view = admin.get_authorization(&id).await.expect("view");
    assert_eq!(view.status, "held");
    assert!(view.settling_since_ms.is_some(), "still pinned: {view:?}");
    assert_eq!(view.captured, "0.00");
    let s = admin.get_session("agent").await.expect("session");
    assert_eq!(s.held, "1.00", "still held: {s:?}");
    assert_eq!(s.spent, "0.00");
    // The gateway, which pinned it, can resolve it.
    gateway
        .capture(&id, &CaptureRequest::default())
        .await
        .expect("the gateway captures");
}

/// A revoked or expired session token is refused for every write before
/// anything is proposed: hammering authorize with fresh idempotency keys
/// adds no record and does not move the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_session_tokens_add_nothing() {
    let cluster = Cluster::start(3, &[]).await;
    let admin = cluster.client(0);
    budget(&admin, "org:authz", "1000").await;
    let revoked = session(&admin, "revoked", 86_400).await;
    let expired = session(&admin, "expired", 2).await;
    let held = hold(&admin, "revoked", "before-revoke").await;
    admin.revoke_session("revoked").await.expect("revoke");
    expire_by_log_time(&admin, "expired").await;
    // Every node has applied the revocation and the expiry (a linearizable
    // read on each).
    for i in 0..3 {
        let c = cluster.client(i);
        assert_eq!(c.get_session("revoked").await.expect("read").status, "revoked");
        assert_eq!(c.get_session("expired").await.expect("read").status, "expired");
    }
    let digest_before = cluster.converged().await;
    let status_before = admin.cluster_status().await.expect("status");

    const ATTEMPTS: usize = 200;
    let as_token = |i: usize, token: &str| {
        Client::with_timeout(&cluster.nodes[i].api(), Some(token.into()), Duration::from_secs(10)).expect("client")
    };
    let revoked_clients: Vec<Client> = (0..3).map(|i| as_token(i, &revoked)).collect();
    let expired_clients: Vec<Client> = (0..3).map(|i| as_token(i, &expired)).collect();
    for i in 0..ATTEMPTS {
        let (c, id, code) = if i % 4 == 3 {
            (&expired_clients[i % 3], "expired", "session_expired")
        } else {
            (&revoked_clients[i % 3], "revoked", "session_revoked")
        };
        let e = c
            .authorize(id, &authorize_request("1", &format!("hammer-{i}")))
            .await
            .expect_err("a dead token cannot authorize");
        assert_eq!((e.status(), e.code()), (Some(403), Some(code)), "{e:?}");
    }
    // Nor capture or void what it held.
    let c = &revoked_clients[1];
    let e = c.void(&held, &VoidRequest::default()).await.expect_err("void refused");
    assert_eq!(e.code(), Some("session_revoked"));
    let e = c
        .capture(&held, &CaptureRequest::default())
        .await
        .expect_err("capture refused");
    assert_eq!(e.code(), Some("session_revoked"));

    let digest_after = cluster.converged().await;
    let status_after = admin.cluster_status().await.expect("status");
    assert_eq!(digest_before, digest_after, "the dead tokens changed the state");
    assert_eq!(status_before.applied_index, status_after.applied_index, "the log moved");
    assert_eq!(
        status_before.last_log_index, status_after.last_log_index,
        "the log moved"
    );
    assert_eq!(status_before.idempotency_keys, status_after.idempotency_keys);
    assert_eq!(status_before.live_holds, status_after.live_holds);
}
