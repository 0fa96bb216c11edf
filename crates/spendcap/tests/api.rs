//! The API over real HTTP on 127.0.0.1: holds, captures, voids, expiry,
//! hierarchy and tool caps, authentication, and a table of bad requests
//! that must each get a 4xx JSON error and change nothing.

mod common;

use std::time::Duration;

use api::*;
use client::Client;
use common::{budget, eventually, Cluster, ADMIN_TOKEN};
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
    budget(&admin, "org:acme", "50").await;
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

/// Issue 11 items 4 and 5 (ledger part) and 7 over HTTP: a session's tool
/// allowlist, a budget's blocked tools, the live-hold limit, and a large
/// decimal amount. On the base commit these fields did not exist (the
/// requests were refused as unknown fields) and "1000000000.5" was refused
/// as too large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlists_blocked_tools_live_hold_limit_and_large_amounts_over_http() {
    let cluster = Cluster::start(1, &[]).await;
    let admin = cluster.client(0);

    // The seed's agent with tools=["search"].
    let agent = session(&admin, "agent", "25", json!({"tools": ["search"]})).await;
    let other = agent.authorize("agent", &auth("1", "gpu")).await.expect("decision");
    assert_eq!(
        (other.decision.as_str(), other.reason.as_deref()),
        ("denied", Some("tool_not_allowed"))
    );
    let ok = agent.authorize("agent", &auth("1", "search")).await.expect("decision");
    assert_eq!(ok.decision, "approved");
    let view = agent.get_session("agent").await.expect("view");
    assert_eq!(view.tools, Some(["search".to_string()].into()));
    assert_eq!((view.live_holds, view.live_holds_max), (1, 1000));

    // A tool blocked on the budget above the session.
    admin
        .create_budget(&CreateBudgetRequest {
            id: "org:blocking".into(),
            cap: "100".into(),
            blocked_tools: ["casino".to_string()].into(),
            ..Default::default()
        })
        .await
        .expect("budget");
    let b = session(&admin, "b", "25", json!({"budget": "org:blocking"})).await;
    let blocked = b.authorize("b", &auth("1", "casino")).await.expect("decision");
    assert_eq!(
        (
            blocked.decision.as_str(),
            blocked.reason.as_deref(),
            blocked.budget_id.as_deref()
        ),
        ("denied", Some("tool_blocked"), Some("org:blocking"))
    );
    assert_eq!(
        b.authorize("b", &auth("1", "search")).await.expect("decision").decision,
        "approved"
    );
    let budget = admin.get_budget("org:blocking").await.expect("budget view");
    assert_eq!(budget.blocked_tools, ["casino".to_string()].into());
    // Unblocking by replacing the list.
    admin
        .update_budget(
            "org:blocking",
            &UpdateBudgetRequest {
                blocked_tools: Some(Default::default()),
                ..Default::default()
            },
        )
        .await
        .expect("unblock");
    assert_eq!(
        b.authorize("b", &auth("1", "casino")).await.expect("decision").decision,
        "approved"
    );

    // A flood of one-unit holds stops at the session's limit.
    let flood = session(&admin, "flood", "25", json!({"live_holds_max": 5})).await;
    let one_unit = AuthorizeRequest {
        amount_atomic: Some("1".into()),
        tool: "search".into(),
        ..Default::default()
    };
    let mut approved = 0;
    let mut denial = None;
    for _ in 0..12 {
        let d = flood.authorize("flood", &one_unit).await.expect("decision");
        if d.decision == "approved" {
            approved += 1;
        } else {
            denial = d.reason;
            break;
        }
    }
    assert_eq!((approved, denial.as_deref()), (5, Some("live_holds_max")));
    assert_eq!(flood.get_session("flood").await.expect("view").live_holds, 5);
    let too_many = admin
        .create_session(&CreateSessionRequest {
            cap: "1".into(),
            agent_id: "a".into(),
            live_holds_max: Some(100_001),
            ..Default::default()
        })
        .await
        .expect_err("limit above the maximum");
    assert_eq!(
        (too_many.status(), too_many.code()),
        (Some(400), Some("invalid_request"))
    );

    // A large decimal amount (integer part above ~340 million).
    let big = session(&admin, "big", "5000000000", json!({})).await;
    let d = big
        .authorize("big", &auth("1000000000.5", "search"))
        .await
        .expect("decision");
    assert_eq!(
        (d.decision.as_str(), d.amount.as_deref()),
        ("approved", Some("1000000000.50"))
    );
}

/// Issue 11 item 6b: a retried create must leave the caller with a working
/// token. On the base commit the retry answered 200 `existed` without the
/// token (and a retry of a create whose answer was lost left the caller
/// with none); a caller-chosen token did not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_create_retried_with_the_same_token_answers_a_working_token() {
    let cluster = Cluster::start(1, &[]).await;
    let admin = cluster.client(0);
    let token = format!("sct_{}", "a1".repeat(32));
    let req = CreateSessionRequest {
        id: Some("retry".into()),
        cap: "25".into(),
        agent_id: "agent".into(),
        token: Some(token.clone()),
        ..Default::default()
    };
    let first = admin.create_session(&req).await.expect("create");
    assert!(!first.existed);
    assert_eq!(first.session_token.as_deref(), Some(token.as_str()));
    let again = admin.create_session(&req).await.expect("retried create");
    assert!(again.existed);
    let answered = again.session_token.expect("the token again");
    assert_eq!(answered, token);
    let me = admin.with_token(answered).whoami().await.expect("the token works");
    assert_eq!(me.id, "retry");

    let other = admin
        .create_session(&CreateSessionRequest {
            token: Some(format!("sct_{}", "b2".repeat(32))),
            ..req.clone()
        })
        .await
        .expect_err("another token");
    assert_eq!((other.status(), other.code()), (Some(409), Some("already_exists")));
    assert!(other.to_string().contains("same token"), "{other}");
    // The first token still works, the other one never did.
    assert!(admin.with_token(token.clone()).whoami().await.is_ok());
    let never = admin.with_token(format!("sct_{}", "b2".repeat(32))).whoami().await;
    assert_eq!(never.expect_err("unknown token").status(), Some(401));

    let bad_character = format!("sct_{}!", "a".repeat(40));
    for bad in [
        "sct_short",
        "xyz_0123456789abcdef0123456789abcdef",
        bad_character.as_str(),
    ] {
        let e = admin
            .create_session(&CreateSessionRequest {
                id: Some("badtoken".into()),
                token: Some(bad.to_string()),
                ..req.clone()
            })
            .await
            .expect_err("bad token");
        assert_eq!((e.status(), e.code()), (Some(400), Some("invalid_request")), "{bad}");
    }
    // The client crate picks the id and token itself: its create is a
    // replay-safe request whose token works.
    let prepared = client::prepare_session(CreateSessionRequest {
        cap: "5".into(),
        agent_id: "agent".into(),
        ..Default::default()
    });
    let a = admin.create_session(&prepared).await.expect("create");
    let b = admin.create_session(&prepared).await.expect("replay");
    assert_eq!((a.existed, b.existed), (false, true));
    assert_eq!(a.session_token, b.session_token);
    assert!(admin.with_token(b.session_token.expect("token")).whoami().await.is_ok());
}

/// Issue 11 item 1: adding a per-tool cap while holds for the tool are
/// live, then capturing, voiding and letting one expire. On the base commit
/// the first release underflowed inside apply and every replica panicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_cap_added_under_live_holds_then_resolved_keeps_three_nodes_healthy() {
    let cluster = Cluster::start(3, &[]).await;
    let admin = cluster.client(cluster.leader().await);
    budget(&admin, "org:patch", "100").await;
    let s = session(&admin, "patched", "50", json!({"budget": "org:patch"})).await;
    let hold = |amount: &str, seconds: u64| AuthorizeRequest {
        hold_seconds: Some(seconds),
        ..auth(amount, "gpu")
    };
    let mut ids = Vec::new();
    for (amount, seconds) in [("4", 600), ("3", 600), ("2", 1)] {
        let d = s.authorize("patched", &hold(amount, seconds)).await.expect("authorize");
        assert_eq!(d.decision, "approved");
        ids.push(d.authorization_id.expect("id"));
    }
    let caps = |cap: &str| UpdateBudgetRequest {
        tool_caps: Some([("gpu".to_string(), cap.to_string())].into()),
        ..Default::default()
    };
    let below = admin
        .update_budget("org:patch", &caps("8"))
        .await
        .expect_err("below live holds");
    assert_eq!((below.status(), below.code()), (Some(409), Some("cap_below_usage")));
    let view = admin
        .update_budget("org:patch", &caps("20"))
        .await
        .expect("add the tool cap");
    assert_eq!(view.tool_caps["gpu"].held, "9.00");

    let captured = admin
        .capture(
            &ids[0],
            &CaptureRequest {
                amount: Some("1".into()),
                ..Default::default()
            },
        )
        .await
        .expect("capture");
    assert_eq!(captured.released, "3.00");
    admin.void(&ids[1], &VoidRequest::default()).await.expect("void");
    eventually("the short hold to expire", Duration::from_secs(30), || async {
        let v = admin.get_authorization(&ids[2]).await.ok()?;
        (v.status == "expired").then_some(())
    })
    .await;
    let view = admin.get_budget("org:patch").await.expect("budget");
    let gpu = &view.tool_caps["gpu"];
    assert_eq!((gpu.spent.as_str(), gpu.held.as_str()), ("1.00", "0.00"));
    // Every node still applies and serves, and all agree.
    for i in 0..3 {
        cluster.client(i).healthz().await.expect("healthy");
    }
    cluster.converged().await;
    let after = s
        .authorize("patched", &auth("1", "gpu"))
        .await
        .expect("authorize after");
    assert_eq!(after.decision, "approved");
    cluster.converged().await;
}
