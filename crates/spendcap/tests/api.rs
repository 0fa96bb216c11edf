//! The API over real HTTP on 127.0.0.1: holds, captures, voids, expiry,
//! hierarchy and tool caps, authentication, and a table of bad requests
//! that must each get a 4xx JSON error and change nothing.

mod common;

use std::time::Duration;

use api::*;
use client::Client;
use common::{eventually, Cluster, ADMIN_TOKEN};
use serde_json::{json, Value};

async fn session(c: &Client, id: &str, cap: &str, extra: Value) -> Client {
    let mut body = json!({"id": id, "cap": cap, "agent_id": "agent-1", "expires_in_seconds": 86400});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let req: CreateSessionRequest = serde_json::from_value(body).expect("a valid request");
    let created = c.create_session(&req).await.expect("session");
    c.with_token(created.session_token.expect("token"))
}

fn auth(amount: &str, tool: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        amount: Some(amount.into()),
        tool: tool.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_capture_void_expiry_and_caps_over_http() {
    let cluster = Cluster::start(1, &[]).await;
    let admin = cluster.client(0);
    let s1 = session(&admin, "s1", "25", json!({"tool_caps": {"gpu": "3"}})).await;

    // Capture part of a hold: the rest is released, a receipt is written.
    let d = s1.authorize("s1", &auth("10", "search")).await.expect("authorize");
    assert_eq!(d.decision, "approved");
    assert_eq!(d.remaining.as_deref(), Some("15.00"));
    let id = d.authorization_id.clone().expect("id");
    let c = s1
        .capture(
            &id,
            &CaptureRequest {
                amount: Some("7.25".into()),
                receipt: Some(ReceiptFields {
                    transaction_hash: Some("0x01".into()),
                    signature: Some("0xsig".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("capture");
    assert_eq!((c.captured.as_str(), c.released.as_str()), ("7.25", "2.75"));
    let view = s1.get_session("s1").await.expect("view");
    assert_eq!(
        (view.spent.as_str(), view.held.as_str(), view.remaining.as_str()),
        ("7.25", "0.00", "17.75")
    );
    // A second capture has no second effect.
    let again = s1
        .capture(&id, &CaptureRequest::default())
        .await
        .expect_err("double capture");
    assert_eq!((again.status(), again.code()), (Some(409), Some("already_captured")));
    let void_after = s1
        .void(&id, &VoidRequest::default())
        .await
        .expect_err("void after capture");
    assert_eq!(void_after.code(), Some("already_captured"));

    // Void releases everything.
    let d = s1.authorize("s1", &auth("5", "search")).await.expect("authorize");
    let vid = d.authorization_id.expect("id");
    let v = s1.void(&vid, &VoidRequest::default()).await.expect("void");
    assert_eq!(v.released, "5.00");
    assert_eq!(s1.get_authorization(&vid).await.expect("view").status, "voided");
    assert_eq!(s1.get_session("s1").await.expect("view").remaining, "17.75");

    // Capturing more than is held is refused and changes nothing.
    let d = s1.authorize("s1", &auth("2", "search")).await.expect("authorize");
    let over = s1
        .capture(
            d.authorization_id.as_deref().expect("id"),
            &CaptureRequest {
                amount: Some("2.01".into()),
                ..Default::default()
            },
        )
        .await
        .expect_err("over-capture");
    assert_eq!((over.status(), over.code()), (Some(422), Some("amount_exceeds_hold")));

    // A per-tool cap on the session.
    let gpu = s1.authorize("s1", &auth("3.01", "gpu")).await.expect("authorize");
    assert_eq!(
        (gpu.decision.as_str(), gpu.reason.as_deref(), gpu.tool.as_deref()),
        ("denied", Some("tool_cap"), Some("gpu"))
    );

    // Expiry by log time: the hold is released without traffic, and a late
    // capture says so.
    let d = s1
        .authorize(
            "s1",
            &AuthorizeRequest {
                hold_seconds: Some(1),
                ..auth("1", "search")
            },
        )
        .await
        .expect("authorize");
    let eid = d.authorization_id.expect("id");
    eventually("the hold to expire", Duration::from_secs(30), || async {
        let v = s1.get_authorization(&eid).await.ok()?;
        (v.status == "expired").then_some(())
    })
    .await;
    let late = s1
        .capture(&eid, &CaptureRequest::default())
        .await
        .expect_err("capture after expiry");
    assert_eq!((late.status(), late.code()), (Some(409), Some("authorization_expired")));

    // A hierarchy: a session drawing on a team budget under an org budget.
    admin
        .create_budget(&CreateBudgetRequest {
            id: "org:acme".into(),
            cap: "50".into(),
            ..Default::default()
        })
        .await
        .expect("org");
    admin
        .create_budget(&CreateBudgetRequest {
            id: "team:research".into(),
            cap: "12".into(),
            parent: Some("org:acme".into()),
            ..Default::default()
        })
        .await
        .expect("team");
    let t1 = session(&admin, "t1", "25", json!({"budget": "team:research"})).await;
    let t2 = session(&admin, "t2", "25", json!({"budget": "team:research"})).await;
    assert_eq!(
        t1.authorize("t1", &auth("10", "x")).await.expect("a").decision,
        "approved"
    );
    let denied = t2.authorize("t2", &auth("3", "x")).await.expect("b");
    assert_eq!(denied.reason.as_deref(), Some("budget_cap"));
    assert_eq!(denied.budget_id.as_deref(), Some("team:research"));
    assert_eq!(denied.remaining.as_deref(), Some("2.00"));
    assert_eq!(admin.get_budget("org:acme").await.expect("org").held, "10.00");
    assert_eq!(t2.get_session("t2").await.expect("t2").available, "2.00");

    // Authentication: none or a wrong token is 401; another session's token
    // is 403.
    let anonymous = Client::new(&cluster.nodes[0].api(), None).expect("client");
    assert_eq!(
        anonymous.get_session("s1").await.expect_err("no token").status(),
        Some(401)
    );
    let wrong = anonymous.with_token("sct_0000000000000000000000000000000000000000000000000000000000000000");
    assert_eq!(
        wrong.get_session("s1").await.expect_err("bad token").status(),
        Some(401)
    );
    assert_eq!(
        t1.get_session("s1").await.expect_err("other session").status(),
        Some(403)
    );
    assert_eq!(
        t1.authorize("s1", &auth("1", "x"))
            .await
            .expect_err("other session")
            .status(),
        Some(403)
    );
    let s1_hold = s1
        .authorize("s1", &auth("1", "search"))
        .await
        .expect("hold")
        .authorization_id
        .expect("id");
    let stolen = t1
        .capture(&s1_hold, &CaptureRequest::default())
        .await
        .expect_err("capture another's hold");
    assert_eq!(stolen.status(), Some(403));
    assert_eq!(
        t1.get_authorization(&s1_hold)
            .await
            .expect_err("read another's hold")
            .status(),
        Some(403)
    );
    assert_eq!(
        t1.create_budget(&CreateBudgetRequest::default())
            .await
            .expect_err("not admin")
            .status(),
        Some(403)
    );
    // "Who am I" for a session token.
    assert_eq!(t1.whoami().await.expect("whoami").id, "t1");
    assert_eq!(
        admin.whoami().await.expect_err("admin has no session").status(),
        Some(404)
    );
    // Receipts: the session sees its own.
    let mine = s1.receipts(&ReceiptQuery::default()).await.expect("receipts");
    assert_eq!(mine.items.len(), 1);
    assert_eq!(mine.items[0].transaction_hash.as_deref(), Some("0x01"));
    assert_eq!(
        t1.receipts(&ReceiptQuery::default()).await.expect("none").items.len(),
        0
    );
}

struct Bad {
    what: &'static str,
    method: &'static str,
    path: String,
    token: Option<&'static str>,
    content_type: Option<&'static str>,
    body: String,
    status: u16,
    code: &'static str,
}

fn bad(what: &'static str, method: &'static str, path: &str, body: Value, status: u16, code: &'static str) -> Bad {
    Bad {
        what,
        method,
        path: path.to_string(),
        token: Some(ADMIN_TOKEN),
        content_type: Some("application/json"),
        body: body.to_string(),
        status,
        code,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_json_and_change_nothing() {
    let cluster = Cluster::start(1, &[]).await;
    let admin = cluster.client(0);
    let s1 = session(&admin, "s1", "25", json!({})).await;
    let held = s1
        .authorize("s1", &auth("1", "t"))
        .await
        .expect("hold")
        .authorization_id
        .expect("id");
    let session_token: &'static str = Box::leak(
        admin
            .rotate_token("s1")
            .await
            .expect("a token")
            .session_token
            .into_boxed_str(),
    );
    let before = admin.cluster_digest().await.expect("digest");

    let budget = |v: Value| bad("", "POST", "/v1/budgets", v, 400, "invalid_json");
    let authz = "/v1/sessions/s1/authorizations";
    let capture = format!("/v1/authorizations/{held}/capture");
    let cases = vec![
        Bad {
            token: None,
            ..bad(
                "no token",
                "POST",
                "/v1/budgets",
                json!({"id": "b", "cap": "1"}),
                401,
                "unauthorized",
            )
        },
        Bad {
            token: Some("not-the-token-at-all"),
            ..bad(
                "wrong token",
                "POST",
                "/v1/budgets",
                json!({"id": "b", "cap": "1"}),
                401,
                "unauthorized",
            )
        },
        Bad {
            token: Some(session_token),
            ..bad(
                "session token on an admin route",
                "POST",
                "/v1/budgets",
                json!({"id": "b", "cap": "1"}),
                403,
                "forbidden",
            )
        },
        Bad {
            body: "{".into(),
            ..bad(
                "malformed JSON",
                "POST",
                "/v1/budgets",
                json!(null),
                400,
                "invalid_json",
            )
        },
        Bad {
            content_type: Some("text/plain"),
            ..bad(
                "not JSON",
                "POST",
                "/v1/budgets",
                json!({"id": "b", "cap": "1"}),
                415,
                "unsupported_media_type",
            )
        },
        Bad {
            content_type: None,
            body: String::new(),
            ..bad(
                "no body",
                "POST",
                "/v1/budgets",
                json!(null),
                415,
                "unsupported_media_type",
            )
        },
        Bad {
            body: "x".repeat(100_000),
            ..bad(
                "oversized body",
                "POST",
                "/v1/budgets",
                json!(null),
                413,
                "body_too_large",
            )
        },
        Bad {
            what: "unknown field",
            ..budget(json!({"id": "b", "cap": "1", "colour": "red"}))
        },
        Bad {
            what: "wrong type",
            ..budget(json!({"id": "b", "cap": 25}))
        },
        Bad {
            what: "missing cap",
            ..budget(json!({"id": "b"}))
        },
        Bad {
            what: "array body",
            ..budget(json!([1, 2]))
        },
        bad(
            "negative cap",
            "POST",
            "/v1/budgets",
            json!({"id": "b", "cap": "-1"}),
            400,
            "invalid_amount",
        ),
        bad(
            "zero cap",
            "POST",
            "/v1/budgets",
            json!({"id": "b", "cap": "0.00"}),
            400,
            "invalid_amount",
        ),
        bad(
            "too many decimals",
            "POST",
            "/v1/budgets",
            json!({"id": "b", "cap": "1.0000001"}),
            400,
            "invalid_amount",
        ),
        bad(
            "exponent",
            "POST",
            "/v1/budgets",
            json!({"id": "b", "cap": "1e5"}),
            400,
            "invalid_amount",
        ),
        bad(
            "overflow",
            "POST",
            "/v1/budgets",
            json!({"id": "b", "cap": "9".repeat(45)}),
            400,
            "invalid_amount",
        ),
        bad(
            "id with a space",
            "POST",
            "/v1/budgets",
            json!({"id": "a b", "cap": "1"}),
            400,
            "invalid_request",
        ),
        bad(
            "id too long",
            "POST",
            "/v1/budgets",
            json!({"id": "b".repeat(200), "cap": "1"}),
            400,
            "invalid_request",
        ),
        bad(
            "unknown parent",
            "POST",
            "/v1/budgets",
            json!({"id": "b", "cap": "1", "parent": "ghost"}),
            404,
            "unknown_budget",
        ),
        bad(
            "asset without decimals",
            "POST",
            "/v1/budgets",
            json!({"id": "b", "cap": "1", "asset": "ETH"}),
            400,
            "invalid_request",
        ),
        bad(
            "absurd decimals",
            "POST",
            "/v1/budgets",
            json!({"id": "b", "cap": "1", "asset": "X", "decimals": 40}),
            400,
            "invalid_request",
        ),
        bad(
            "nothing to update",
            "PATCH",
            "/v1/budgets/nope",
            json!({}),
            404,
            "unknown_budget",
        ),
        bad(
            "zero lifetime",
            "POST",
            "/v1/sessions",
            json!({"cap": "1", "agent_id": "a", "expires_in_seconds": 0}),
            400,
            "invalid_request",
        ),
        bad(
            "unknown budget for a session",
            "POST",
            "/v1/sessions",
            json!({"cap": "1", "agent_id": "a", "budget": "ghost"}),
            404,
            "unknown_budget",
        ),
        bad(
            "empty agent",
            "POST",
            "/v1/sessions",
            json!({"cap": "1", "agent_id": ""}),
            400,
            "invalid_request",
        ),
        bad(
            "amount not a number",
            "POST",
            authz,
            json!({"amount": "abc", "tool": "t"}),
            400,
            "invalid_amount",
        ),
        bad(
            "two amounts",
            "POST",
            authz,
            json!({"amount": "1", "amount_atomic": "1", "tool": "t"}),
            400,
            "invalid_request",
        ),
        bad("no amount", "POST", authz, json!({"tool": "t"}), 400, "invalid_request"),
        bad(
            "amount finer than the asset",
            "POST",
            authz,
            json!({"amount": "0.0000001", "tool": "t"}),
            400,
            "invalid_amount",
        ),
        bad(
            "negative atomic amount",
            "POST",
            authz,
            json!({"amount_atomic": "-5", "tool": "t"}),
            400,
            "invalid_amount",
        ),
        bad(
            "zero hold time",
            "POST",
            authz,
            json!({"amount": "1", "tool": "t", "hold_seconds": 0}),
            400,
            "invalid_request",
        ),
        bad(
            "hold time too long",
            "POST",
            authz,
            json!({"amount": "1", "tool": "t", "hold_seconds": 99999}),
            400,
            "invalid_request",
        ),
        bad(
            "empty tool",
            "POST",
            authz,
            json!({"amount": "1", "tool": ""}),
            400,
            "invalid_request",
        ),
        bad(
            "key too long",
            "POST",
            authz,
            json!({"amount": "1", "tool": "t", "idempotency_key": "k".repeat(200)}),
            400,
            "invalid_request",
        ),
        bad(
            "control characters in context",
            "POST",
            authz,
            json!({"amount": "1", "tool": "t", "context": {"note": "a\u{0007}b"}}),
            400,
            "invalid_request",
        ),
        bad(
            "bad session id in the path",
            "POST",
            "/v1/sessions/a%20b/authorizations",
            json!({"amount": "1", "tool": "t"}),
            404,
            "unknown_session",
        ),
        bad(
            "malformed authorization id",
            "POST",
            "/v1/authorizations/xyz/capture",
            json!({}),
            404,
            "unknown_authorization",
        ),
        bad(
            "unknown authorization",
            "POST",
            "/v1/authorizations/au_999999/capture",
            json!({}),
            404,
            "unknown_authorization",
        ),
        bad(
            "negative capture",
            "POST",
            &capture,
            json!({"amount": "-1"}),
            400,
            "invalid_amount",
        ),
        bad(
            "unknown authorization void",
            "POST",
            "/v1/authorizations/au_999999/void",
            json!({}),
            404,
            "unknown_authorization",
        ),
        bad(
            "limit not a number",
            "GET",
            "/v1/receipts?limit=abc",
            json!(null),
            400,
            "invalid_request",
        ),
        bad(
            "limit zero",
            "GET",
            "/v1/receipts?limit=0",
            json!(null),
            400,
            "invalid_request",
        ),
        bad(
            "unknown query parameter",
            "GET",
            "/v1/receipts?colour=red",
            json!(null),
            400,
            "invalid_request",
        ),
        bad(
            "bad receipt cursor",
            "GET",
            "/v1/receipts?after=yesterday",
            json!(null),
            400,
            "invalid_request",
        ),
        bad(
            "unknown route",
            "GET",
            "/v1/nothing-here",
            json!(null),
            404,
            "not_found",
        ),
        bad(
            "wrong method",
            "DELETE",
            "/v1/budgets",
            json!(null),
            405,
            "method_not_allowed",
        ),
        bad(
            "empty batch",
            "POST",
            "/v1/batch/authorize",
            json!({"items": []}),
            400,
            "invalid_request",
        ),
        Bad {
            token: Some("Basic abc"),
            ..bad(
                "not a bearer token",
                "GET",
                "/v1/sessions/s1",
                json!(null),
                401,
                "unauthorized",
            )
        },
    ];
    assert!(cases.len() >= 30);

    let http = reqwest::Client::new();
    for case in &cases {
        let url = format!("{}{}", cluster.nodes[0].api(), case.path);
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("method");
        let mut req = http.request(method, &url);
        if let Some(t) = case.token {
            req = if t.starts_with("Basic ") {
                req.header("authorization", t)
            } else {
                req.bearer_auth(t)
            };
        }
        if let Some(ct) = case.content_type {
            req = req.header("content-type", ct);
        }
        if case.method != "GET" && case.method != "DELETE" {
            req = req.body(case.body.clone());
        }
        let resp = req.send().await.expect("an answer");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("a body");
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{}: not JSON: {text}", case.what));
        assert_eq!(status, case.status, "{}: {text}", case.what);
        assert_eq!(body["code"], case.code, "{}: {text}", case.what);
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: no message",
            case.what
        );
    }

    let after = admin.cluster_digest().await.expect("digest");
    assert_eq!(before, after, "bad requests changed the state");
    // And the node is still healthy.
    let rotated = admin.with_token(session_token);
    assert_eq!(rotated.get_session("s1").await.expect("view").held, "1.00");
    // The token rotated above replaced the first one.
    assert_eq!(s1.get_session("s1").await.expect_err("old token").status(), Some(401));
}
