//! The gateway as an adversary sees it (issue 11): a hostile merchant that
//! takes a signed payment and answers "no", an agent that labels an
//! expensive host with a cheap tool, a merchant that asks for a payment
//! window of hours, and an agent that points the gateway at loopback,
//! private or the system's own addresses. Real ledger nodes, the test
//! merchant and the gateway, over HTTP on 127.0.0.1.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use api::{CaptureRequest, CreateSessionRequest, ReceiptFields, VoidRequest};
use common::*;
use gateway::{HostPattern, ToolRule, UpstreamPolicy};
use x402::X402Version;
use x402_merchant::{FailureMode, MerchantHandle, RouteConfig};

fn now_unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Nothing happened: no hold, no signature, and the merchant never saw a
/// request (not even the unpaid one).
async fn assert_untouched(ledger: &Ledger, gw: &gateway::GatewayHandle, merchant: &MerchantHandle) {
    assert_eq!(ledger.live_holds().await, 0, "no hold");
    assert_eq!(gw.stats().signatures, 0, "no signature");
    let stats = merchant.stats();
    assert_eq!(
        stats.payment_required_served, 0,
        "no request reached the merchant: {stats:?}"
    );
    assert_eq!(stats.payment_attempts, 0, "{stats:?}");
}

/// A hostile merchant takes the signed payment, settles it (the money
/// moves) and answers 400 as if it had refused; another answers 503 without
/// settling. Neither hold may be voided by the gateway: both stay pinned,
/// the agent hears "outcome unknown", and the agent's own session token can
/// neither void nor capture them. The gateway's token resolves them:
/// capture for the one the chain (the merchant's record) shows paid; void
/// for the other once its validBefore has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_merchant_answering_4xx_after_a_signed_payment_cannot_make_the_gateway_release_the_hold() {
    let ledger = Ledger::start(1).await;
    let merchant = merchant(|m| {
        m.max_timeout_seconds = 3;
        m.failure = FailureMode::AnswerAfterPayment {
            status: 400,
            settle: true,
        };
    })
    .await;
    let gw = gateway(gateway_config(&ledger, 20_000_000)).await;
    let (sid, token) = ledger.session("25.00", Some(WALLET)).await;
    let agent = Agent::new(&gw, &sid, &token);

    // 1. Settles, then says 400.
    let (status, answer) = agent.fetch(&merchant.url(V1_REPORT), Some("lied-to")).await;
    assert_eq!(status, 504, "{answer}");
    assert_eq!(code(&answer), "payment_outcome_unknown");
    assert_eq!(answer["upstream_status"], 400);
    let paid_id = answer["authorization_id"].as_str().unwrap().to_string();
    let paid_vb = answer["valid_before"].as_u64().expect("valid_before");
    let settled = merchant.settled();
    assert_eq!(settled.len(), 1, "the money moved");
    assert_eq!(
        settled[0].valid_before, paid_vb,
        "the agent is told the signed validBefore"
    );

    // 2. Does not settle, says 503.
    merchant.set_failure(FailureMode::AnswerAfterPayment {
        status: 503,
        settle: false,
    });
    let (status, answer) = agent.fetch(&merchant.url(V2_REPORT), Some("maybe")).await;
    assert_eq!(status, 504, "{answer}");
    assert_eq!(code(&answer), "payment_outcome_unknown");
    assert_eq!(answer["upstream_status"], 503);
    let open_id = answer["authorization_id"].as_str().unwrap().to_string();
    let open_vb = answer["valid_before"].as_u64().expect("valid_before");

    for id in [&paid_id, &open_id] {
        let a = ledger.admin().get_authorization(id).await.unwrap();
        assert_eq!(a.status, "held", "{a:?}");
        assert!(a.settling_since_ms.is_some(), "{a:?}");
    }
    let view = ledger.view(&sid).await;
    assert_eq!(units(&view.held), 2 * TEN_DOLLARS, "the cap still counts both");
    assert_eq!(gw.stats().voids, 0);

    // The agent cannot release or shrink them with its own token.
    let as_agent = ledger.as_session(&token);
    for id in [&paid_id, &open_id] {
        let e = as_agent
            .void(id, &VoidRequest { idempotency_key: None })
            .await
            .unwrap_err();
        assert_eq!((e.status(), e.code()), (Some(403), Some("hold_settling")), "{e}");
        let e = as_agent
            .capture(
                id,
                &CaptureRequest {
                    amount_atomic: Some("1".into()),
                    ..CaptureRequest::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!((e.status(), e.code()), (Some(403), Some("hold_settling")), "{e}");
    }
    // Nor through the gateway: a retry with the same key pays nothing.
    merchant.set_failure(FailureMode::None);
    let (status, retry) = agent.fetch(&merchant.url(V1_REPORT), Some("lied-to")).await;
    assert_eq!(status, 409, "{retry}");
    assert_eq!(code(&retry), "payment_pending");
    assert_eq!(merchant.stats().payment_attempts, 2);

    // Reconciliation with the gateway's token: the list carries what to ask
    // the chain and the validBefore.
    let listed = gateway::reconcile::list_pinned(&ledger.as_gateway(), now_unix_secs())
        .await
        .unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let paid = listed.iter().find(|h| h.authorization_id == paid_id).unwrap();
    assert_eq!(paid.valid_before, Some(paid_vb));
    assert_eq!(
        paid.nonce.as_deref(),
        Some(format!("0x{}", alloy_primitives::hex::encode(settled[0].nonce.as_slice())).as_str())
    );
    // Paid on chain → capture.
    ledger
        .as_gateway()
        .capture(
            &paid_id,
            &CaptureRequest {
                receipt: Some(ReceiptFields {
                    transaction_hash: Some(settled[0].transaction.to_string()),
                    ..ReceiptFields::default()
                }),
                ..CaptureRequest::default()
            },
        )
        .await
        .unwrap();
    // Not paid, and validBefore has passed → void.
    eventually("validBefore has passed", || async move {
        (now_unix_secs() > open_vb).then_some(())
    })
    .await;
    ledger
        .as_gateway()
        .void(&open_id, &VoidRequest { idempotency_key: None })
        .await
        .unwrap();
    let view = ledger.view(&sid).await;
    assert_eq!(units(&view.spent), TEN_DOLLARS, "the settled payment is counted");
    assert_eq!(units(&view.held), 0);
    assert!(ledger
        .admin()
        .settling_authorizations(None)
        .await
        .unwrap()
        .items
        .is_empty());
    ledger.shutdown().await;
}

/// The agent labels a $10 report with the name of a cheap tool whose cap
/// has room: the label is refused before anything is sent; without a label
/// the payment is charged to the tool the upstream maps to, whose cap says
/// no. Only the cheap upstream is charged to the cheap tool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cheap_tool_label_on_an_expensive_host_is_refused_and_the_real_tool_is_charged() {
    let ledger = Ledger::start(1).await;
    let expensive = merchant(|_| {}).await;
    let cheap = merchant(|m| m.routes = vec![RouteConfig::new("/quote", X402Version::V2, 10_000)]).await;
    let mut config = gateway_config(&ledger, 20_000_000);
    config.tool_map = ToolRule::parse_list(&format!(
        "127.0.0.1:{}=reports, 127.0.0.1:{}/quote=quotes",
        expensive.addr().port(),
        cheap.addr().port()
    ))
    .unwrap();
    let gw = gateway(config).await;
    let (sid, token) = ledger
        .session_with(CreateSessionRequest {
            cap: "25.00".into(),
            agent_id: "agent-labels".into(),
            wallet_address: Some(WALLET.into()),
            tool_caps: [
                ("reports".to_string(), "5.00".to_string()),
                ("quotes".to_string(), "20.00".to_string()),
            ]
            .into(),
            ..CreateSessionRequest::default()
        })
        .await;
    let agent = Agent::new(&gw, &sid, &token);

    let mut req = agent.request(&expensive.url(V1_REPORT), Some("mislabelled"));
    req.tool = Some("quotes".into());
    let (status, answer) = agent.send(&req).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(code(&answer), "tool_mismatch");
    assert!(answer["message"].as_str().unwrap().contains("reports"), "{answer}");
    assert_untouched(&ledger, &gw, &expensive).await;

    // Unlabelled: charged to "reports", whose $5 cap denies $10.
    let (status, answer) = agent.fetch(&expensive.url(V2_REPORT), Some("unlabelled")).await;
    assert_eq!(status, 402, "{answer}");
    assert_eq!(code(&answer), "budget_denied");
    assert_eq!(answer["reason"], "tool_cap");
    assert_eq!(expensive.stats().payment_attempts, 0);

    // The cheap upstream is charged to the cheap tool.
    let (status, answer) = agent.fetch(&cheap.url("/quote"), Some("quote")).await;
    assert_eq!(status, 200, "{answer}");
    let receipt = ledger
        .admin()
        .get_receipt(answer["payment"]["receipt_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(receipt.tool, "quotes");
    let view = ledger.view(&sid).await;
    assert_eq!(units(&view.spent), 10_000);
    assert_eq!(ledger.live_holds().await, 0);
    ledger.shutdown().await;
}

/// A requirement whose maxTimeoutSeconds is above the gateway's bound is
/// refused before anything is held or signed; one within it is signed with
/// `validBefore = signing time + maxTimeoutSeconds`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payment_windows_above_the_bound_are_refused_and_valid_before_follows_the_bound() {
    let ledger = Ledger::start(1).await;
    let (sid, token) = ledger.session("25.00", Some(WALLET)).await;

    // The default bound (300 s) against an hour.
    let hour = merchant(|m| m.max_timeout_seconds = 3600).await;
    let gw = gateway(gateway_config(&ledger, 20_000_000)).await;
    let agent = Agent::new(&gw, &sid, &token);
    for path in [V1_REPORT, V2_REPORT] {
        let (status, answer) = agent.fetch(&hour.url(path), Some("an-hour")).await;
        assert_eq!(status, 402, "{answer}");
        assert_eq!(code(&answer), "max_timeout_above_maximum");
        assert!(answer["message"].as_str().unwrap().contains("3600"), "{answer}");
    }
    assert_eq!(ledger.live_holds().await, 0);
    assert_eq!(gw.stats().signatures, 0);
    assert_eq!(hour.stats().payment_attempts, 0);

    // A configured bound of 60 s: 61 is refused, 60 is paid with
    // validBefore = signing time + 60.
    let mut config = gateway_config(&ledger, 20_000_000);
    config.max_timeout_seconds = 60;
    let bounded = gateway(config).await;
    let agent = Agent::new(&bounded, &sid, &token);
    let just_over = merchant(|m| m.max_timeout_seconds = 61).await;
    let (status, answer) = agent.fetch(&just_over.url(V1_REPORT), Some("61")).await;
    assert_eq!(status, 402, "{answer}");
    assert_eq!(code(&answer), "max_timeout_above_maximum");
    assert_eq!(just_over.stats().payment_attempts, 0);

    let at_bound = merchant(|m| m.max_timeout_seconds = 60).await;
    let before = now_unix_secs();
    let (status, answer) = agent.fetch(&at_bound.url(V2_REPORT), Some("60")).await;
    let after = now_unix_secs();
    assert_eq!(status, 200, "{answer}");
    let vb = at_bound.settled()[0].valid_before;
    assert!(before + 60 <= vb && vb <= after + 60, "{before} {vb} {after}");
    assert_eq!(answer["payment"]["valid_before"], vb);
    ledger.shutdown().await;
}

/// Without `allow_private`, loopback, private, link-local and IPv6
/// loopback upstreams are refused, even when allowlisted and even behind a
/// name (`localhost`): no request is sent, no hold is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_and_loopback_upstreams_are_refused_even_after_resolution() {
    let ledger = Ledger::start(1).await;
    let merchant = merchant(|_| {}).await;
    let mut config = strict_gateway_config(&ledger, 20_000_000);
    config.upstreams = UpstreamPolicy {
        allow: HostPattern::parse_list("127.0.0.1,localhost,[::1],10.0.0.1,169.254.169.254,100.64.0.1").unwrap(),
        allow_any: false,
        allow_private: false,
    };
    let gw = gateway(config).await;
    let (sid, token) = ledger.session("25.00", Some(WALLET)).await;
    let agent = Agent::new(&gw, &sid, &token);
    let port = merchant.addr().port();
    for url in [
        merchant.url(V1_REPORT),
        format!("http://localhost:{port}{V1_REPORT}"),
        format!("http://[::1]:{port}{V1_REPORT}"),
        format!("http://2130706433:{port}{V1_REPORT}"),
        "http://10.0.0.1/paid".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://100.64.0.1/".to_string(),
    ] {
        let (status, answer) = agent.fetch(&url, Some("ssrf")).await;
        assert_eq!(status, 403, "{url}: {answer}");
        assert_eq!(code(&answer), "upstream_not_allowed", "{url}: {answer}");
    }
    assert_untouched(&ledger, &gw, &merchant).await;

    // Not allowlisted at all (and no network is touched to say so).
    let (status, answer) = agent.fetch("http://paid.example.org/x", None).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("allowlist"), "{answer}");

    // --upstream-allow-any does not open private addresses.
    let mut any = strict_gateway_config(&ledger, 20_000_000);
    any.upstreams.allow_any = true;
    let any = gateway(any).await;
    let (status, answer) = Agent::new(&any, &sid, &token)
        .fetch(&merchant.url(V1_REPORT), None)
        .await;
    assert_eq!(status, 403, "{answer}");

    // No allowlist: every upstream is refused.
    let none = gateway(strict_gateway_config(&ledger, 20_000_000)).await;
    let (status, answer) = Agent::new(&none, &sid, &token)
        .fetch(&merchant.url(V1_REPORT), None)
        .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(code(&answer), "upstream_not_allowed");
    assert_untouched(&ledger, &none, &merchant).await;
    assert_untouched(&ledger, &any, &merchant).await;
    ledger.shutdown().await;
}

/// Even with private addresses allowed (tests, demos), the ledger nodes'
/// and the gateway's own sockets are refused: an agent cannot make the
/// gateway call the ledger's API or itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ledger_and_the_gateway_itself_are_never_upstreams() {
    let ledger = Ledger::start(1).await;
    let merchant = merchant(|_| {}).await;
    let gw = gateway(gateway_config(&ledger, 20_000_000)).await;
    let (sid, token) = ledger.session("25.00", Some(WALLET)).await;
    let agent = Agent::new(&gw, &sid, &token);
    let ledger_api = format!("{}/v1/sessions/{sid}", ledger.urls[0]);
    let itself = format!("{}/v1/stats", gw.url());
    for url in [ledger_api, itself] {
        let (status, answer) = agent.fetch(&url, None).await;
        assert_eq!(status, 403, "{url}: {answer}");
        assert_eq!(code(&answer), "upstream_not_allowed", "{url}: {answer}");
    }
    // The same gateway still reaches the merchant.
    let (status, answer) = agent.fetch(&merchant.url(V1_REPORT), Some("fine")).await;
    assert_eq!(status, 200, "{answer}");
    ledger.shutdown().await;
}
