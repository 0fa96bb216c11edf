//! agent → gateway → ledger (in-process Raft nodes) → test merchant, over
//! real HTTP on 127.0.0.1.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use api::{CreateSessionRequest, DecisionContext, ReceiptQuery};
use common::*;
use futures::future::join_all;
use gateway::receipt::{parse_export, verify_receipt, AuditReceipt, Verdict};
use x402::exact_evm::parse_evm_address;
use x402::{Network, X402Version};
use x402_merchant::{FailureMode, RouteConfig};

fn now_unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The seed's example through x402: a $25 session, three concurrent $10
/// calls → two paid with receipts, one refused for `session_cap` with no
/// signature made (the merchant saw two payment attempts).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_example_two_paid_one_refused_without_a_signature() {
    let ledger = Ledger::start(3).await;
    let merchant = merchant(|_| {}).await;
    let gw = gateway(gateway_config(&ledger, 20_000_000)).await;
    let (sid, token) = ledger.session("25.00", Some(WALLET)).await;
    let agent = Agent::new(&gw, &sid, &token);
    let url = merchant.url(V1_REPORT);

    let calls = (0..3).map(|i| {
        let agent = agent.clone();
        let mut req = agent.request(&url, Some(&format!("seed-call-{i}")));
        req.context = Some(DecisionContext {
            trace_id: Some("trace-seed".into()),
            tool_call_id: Some(format!("tool-call-{i}")),
            note: None,
        });
        async move { agent.send(&req).await }
    });
    let results = join_all(calls).await;

    let paid: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert_eq!(paid.len(), 2, "{results:#?}");
    assert_eq!(refused.len(), 1, "{results:#?}");
    let (status, denial) = refused[0];
    assert_eq!(*status, 402);
    assert_eq!(code(denial), "budget_denied");
    assert_eq!(denial["reason"], "session_cap");
    assert_eq!(units(denial["remaining"].as_str().unwrap()), 5_000_000);
    assert_eq!(denial["requirement"]["amount_atomic"], "10000000");

    let settled = merchant.settled();
    let settled_tx: BTreeSet<String> = settled.iter().map(|s| s.transaction.to_string()).collect();
    for (_, answer) in &paid {
        assert_eq!(answer["status"], 200);
        assert!(answer["body"].as_str().unwrap().contains("paid content"));
        let payment = &answer["payment"];
        assert_eq!(payment["outcome"], "paid");
        assert_eq!(payment["x402_version"], 1);
        assert_eq!(payment["amount"], "10.00");
        assert!(payment["receipt_id"].as_str().unwrap().starts_with("rc_"));
        assert!(settled_tx.contains(payment["transaction_hash"].as_str().unwrap()));
    }

    // Only two payments ever existed: two signatures, two attempts.
    let stats = merchant.stats();
    assert_eq!(stats.payment_attempts, 2, "{stats:?}");
    assert_eq!(stats.settlements_succeeded, 2);
    assert_eq!(settled.len(), 2);
    let gw_stats = gw.stats();
    assert_eq!(gw_stats.signatures, 2, "{gw_stats:?}");
    assert_eq!(gw_stats.denials, 1);
    assert_eq!(gw_stats.captures, 2);

    let view = ledger.view(&sid).await;
    assert_eq!(units(&view.spent), 20_000_000);
    assert_eq!(units(&view.held), 0);

    // Two receipts, each with its transaction hash, the caller's context,
    // and a signature that recovers to the session's wallet.
    let receipts = ledger
        .admin()
        .receipts(&ReceiptQuery {
            session_id: Some(sid.clone()),
            ..ReceiptQuery::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(receipts.len(), 2);
    let host = format!("127.0.0.1:{}", merchant.addr().port());
    for r in &receipts {
        assert_eq!(r.tool, host);
        assert_eq!(r.agent_id, "agent-7");
        assert_eq!(r.amount_atomic, "10000000");
        assert_eq!(r.context.trace_id.as_deref(), Some("trace-seed"));
        assert!(r.context.tool_call_id.as_deref().unwrap().starts_with("tool-call-"));
        assert!(settled_tx.contains(r.transaction_hash.as_deref().unwrap()));
        assert_eq!(r.network.as_deref(), Some("eip155:84532"));
        assert_eq!(r.resource_url.as_deref(), Some(url.as_str()));
        assert_eq!(
            parse_evm_address(r.wallet_address.as_deref().unwrap()),
            parse_evm_address(WALLET)
        );
        assert_eq!(verify_receipt(&AuditReceipt::from(r)), Verdict::Valid, "{r:?}");
    }

    // The auditor's path: the JSONL export verifies receipt by receipt.
    let export = ledger
        .admin()
        .export_receipts(&ReceiptQuery {
            session_id: Some(sid.clone()),
            ..ReceiptQuery::default()
        })
        .await
        .unwrap();
    let exported = parse_export(&export).unwrap();
    assert_eq!(exported.len(), 2);
    assert!(exported.iter().all(|r| verify_receipt(r) == Verdict::Valid));

    gw.shutdown().await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_wire_format_pays_and_captures() {
    let ledger = Ledger::start(1).await;
    let merchant = merchant(|_| {}).await;
    let gw = gateway(gateway_config(&ledger, 20_000_000)).await;
    let (sid, token) = ledger.session("25.00", Some(WALLET)).await;
    let agent = Agent::new(&gw, &sid, &token);

    let (status, answer) = agent.fetch(&merchant.url(V2_REPORT), Some("v2-call")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["payment"]["x402_version"], 2);
    assert_eq!(answer["payment"]["network"], "eip155:84532");
    assert!(
        answer["headers"]["payment-response"].is_string(),
        "the settlement header is relayed"
    );
    let settled = merchant.settled();
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].version, X402Version::V2);
    assert_eq!(settled[0].route, V2_REPORT);
    assert_eq!(settled[0].value, TEN_DOLLARS);

    let receipt = ledger
        .admin()
        .get_receipt(answer["payment"]["receipt_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(receipt.transaction_hash, Some(settled[0].transaction.to_string()));
    assert_eq!(verify_receipt(&AuditReceipt::from(&receipt)), Verdict::Valid);
    assert_eq!(units(&ledger.view(&sid).await.spent), TEN_DOLLARS);
    ledger.shutdown().await;
}

/// Settlement "fails" (the merchant answers 402 with `success:false`) after
/// it received the signed payment: the merchant could still settle that
/// signature until `validBefore`, so the hold is NOT voided: it stays
/// pinned, the agent hears "outcome unknown", and only the gateway's (or the
/// admin's) token resolves it, after `validBefore`, once the chain shows no
/// transfer (here: the merchant's settled list).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settlement_failure_keeps_the_hold_pinned_until_reconciled() {
    let ledger = Ledger::start(1).await;
    // A short payment window, so the test can wait for validBefore.
    let merchant = merchant(|m| m.max_timeout_seconds = 3).await;
    let gw = gateway(gateway_config(&ledger, 20_000_000)).await;
    let (sid, token) = ledger.session("25.00", Some(WALLET)).await;
    let agent = Agent::new(&gw, &sid, &token);
    merchant.set_failure(FailureMode::SettlementFails {
        error_reason: "insufficient_funds".into(),
    });

    let mut pinned = Vec::new();
    for (i, path) in [V1_REPORT, V2_REPORT].into_iter().enumerate() {
        let (status, answer) = agent.fetch(&merchant.url(path), Some(&format!("fails-{i}"))).await;
        assert_eq!(status, 504, "{answer}");
        assert_eq!(code(&answer), "payment_outcome_unknown");
        assert_eq!(answer["error_reason"], "insufficient_funds");
        assert_eq!(answer["upstream_status"], 402);
        let valid_before = answer["valid_before"].as_u64().expect("valid_before");
        let id = answer["authorization_id"].as_str().unwrap().to_string();
        let authorization = ledger.admin().get_authorization(&id).await.unwrap();
        assert_eq!(authorization.status, "held");
        assert!(authorization.settling_since_ms.is_some());
        pinned.push((id, valid_before));
    }
    let view = ledger.view(&sid).await;
    assert_eq!(units(&view.held), 2 * TEN_DOLLARS, "both stay reserved");
    assert_eq!(units(&view.spent), 0);
    assert_eq!(merchant.stats().settlements_failed, 2);
    assert!(merchant.settled().is_empty());
    assert_eq!(gw.stats().voids, 0);
    assert_eq!(gw.stats().unsettled, 2);

    // The agent cannot release them with its own token.
    let as_agent = ledger.as_session(&token);
    for (id, _) in &pinned {
        let e = as_agent
            .void(id, &api::VoidRequest { idempotency_key: None })
            .await
            .unwrap_err();
        assert_eq!((e.status(), e.code()), (Some(403), Some("hold_settling")), "{e}");
    }

    // The reconciler: the chain (the merchant's record) shows no transfer;
    // once validBefore has passed, the gateway's token voids.
    let listed = gateway::reconcile::list_pinned(&ledger.as_gateway(), now_unix_secs())
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    for (id, valid_before) in &pinned {
        let hold = listed.iter().find(|h| h.authorization_id == *id).unwrap();
        assert_eq!(hold.valid_before, Some(*valid_before));
        assert_eq!(
            hold.wallet.as_deref().map(parse_evm_address),
            Some(parse_evm_address(WALLET))
        );
    }
    let last = pinned.iter().map(|(_, vb)| *vb).max().unwrap();
    eventually("validBefore has passed", || async move {
        (now_unix_secs() > last).then_some(())
    })
    .await;
    let listed = gateway::reconcile::list_pinned(&ledger.as_gateway(), now_unix_secs())
        .await
        .unwrap();
    assert!(listed.iter().all(|h| h.expired == Some(true)), "{listed:?}");
    for (id, _) in &pinned {
        ledger
            .as_gateway()
            .void(id, &api::VoidRequest { idempotency_key: None })
            .await
            .unwrap();
    }
    let view = ledger.view(&sid).await;
    assert_eq!(units(&view.held), 0);
    assert_eq!(units(&view.remaining), 25_000_000);

    merchant.set_failure(FailureMode::None);
    let (status, answer) = agent.fetch(&merchant.url(V1_REPORT), Some("after-failure")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(units(&ledger.view(&sid).await.spent), TEN_DOLLARS);
    ledger.shutdown().await;
}

/// The payment leaves and no answer comes back (the merchant settles and
/// hangs): the hold stays pinned for reconciliation, and a retry with the
/// same key never pays again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeout_after_sending_keeps_the_hold_pinned_and_a_retry_does_not_pay_again() {
    let ledger = Ledger::start(1).await;
    let merchant = merchant(|m| m.failure = FailureMode::HangAfterSettle).await;
    let mut config = gateway_config(&ledger, 20_000_000);
    config.limits.upstream_timeout = Duration::from_secs(2);
    let gw = gateway(config).await;
    let (sid, token) = ledger.session("25.00", Some(WALLET)).await;
    let agent = Agent::new(&gw, &sid, &token);
    let url = merchant.url(V1_REPORT);

    let (status, answer) = agent.fetch(&url, Some("hangs")).await;
    assert_eq!(status, 504, "{answer}");
    assert_eq!(code(&answer), "payment_outcome_unknown");
    let authorization_id = answer["authorization_id"].as_str().unwrap().to_string();
    let authorization = ledger.admin().get_authorization(&authorization_id).await.unwrap();
    assert_eq!(authorization.status, "held");
    assert!(authorization.settling_since_ms.is_some());
    let pinned = ledger.admin().settling_authorizations(None).await.unwrap().items;
    assert_eq!(pinned.len(), 1);
    assert_eq!(pinned[0].id, authorization_id);
    assert!(pinned[0]
        .settling_reference
        .as_deref()
        .unwrap()
        .starts_with("x402:eip155:84532:"));
    assert_eq!(units(&ledger.view(&sid).await.held), TEN_DOLLARS);
    assert_eq!(merchant.settled().len(), 1, "the money moved");

    merchant.set_failure(FailureMode::None);
    let (status, retry) = agent.fetch(&url, Some("hangs")).await;
    assert_eq!(status, 409, "{retry}");
    assert_eq!(code(&retry), "payment_pending");
    assert_eq!(retry["authorization_id"], authorization_id.as_str());
    assert_eq!(merchant.stats().payment_attempts, 1, "no second payment");
    assert_eq!(merchant.settled().len(), 1);
    assert_eq!(gw.stats().signatures, 1);
    assert_eq!(gw.stats().unsettled, 1);

    // The pinned hold still reserves its $10; a new request fits the rest.
    let (status, answer) = agent.fetch(&url, Some("next")).await;
    assert_eq!(status, 200, "{answer}");
    let view = ledger.view(&sid).await;
    assert_eq!(units(&view.held), TEN_DOLLARS);
    assert_eq!(units(&view.spent), TEN_DOLLARS);
    ledger.shutdown().await;
}

/// The gateway dies after pinning and sending, before the merchant settles:
/// the hold stays, flagged for reconciliation; a retry through a new
/// gateway with the same key makes no second payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_crash_between_signing_and_settlement_leaves_a_pinned_hold() {
    let ledger = Ledger::start(1).await;
    let merchant = merchant(|m| m.failure = FailureMode::HangBeforeSettle).await;
    let config = gateway_config(&ledger, 20_000_000);
    let first = gateway(config.clone()).await;
    let (sid, token) = ledger.session("25.00", Some(WALLET)).await;
    let agent = Agent::new(&first, &sid, &token);
    let url = merchant.url(V2_REPORT);

    let in_flight = tokio::spawn({
        let agent = agent.clone();
        let url = url.clone();
        async move {
            let req = agent.request(&url, Some("crash-me"));
            agent.try_send_as(&agent.token, &req).await
        }
    });
    wait_merchant(&merchant, "the signed payment arrives", |s| s.requests_hung == 1).await;
    // The hold was pinned before the payment left.
    let pinned = ledger.admin().settling_authorizations(None).await.unwrap().items;
    assert_eq!(pinned.len(), 1);
    assert_eq!(pinned[0].session_id, sid);
    first.abort();
    // The agent sees an error or a dropped connection, never a success.
    if let Ok((status, answer)) = in_flight.await.unwrap() {
        assert_ne!(status, 200, "{answer}");
    }

    let pinned = ledger.admin().settling_authorizations(None).await.unwrap().items;
    assert_eq!(pinned.len(), 1, "still flagged for reconciliation");
    assert_eq!(pinned[0].status, "held");
    assert_eq!(units(&ledger.view(&sid).await.held), TEN_DOLLARS);

    let second = gateway(config).await;
    merchant.set_failure(FailureMode::None);
    let agent = Agent::new(&second, &sid, &token);
    let (status, retry) = agent.fetch(&url, Some("crash-me")).await;
    assert_eq!(status, 409, "{retry}");
    assert_eq!(code(&retry), "payment_pending");
    assert_eq!(retry["authorization_id"], pinned[0].id.as_str());
    assert_eq!(second.stats().signatures, 0);
    let stats = merchant.stats();
    assert_eq!(stats.payment_attempts, 1, "{stats:?}");
    assert!(merchant.settled().is_empty());
    ledger.shutdown().await;
}

/// Same key again after success → `already_paid` with the first receipt;
/// the same key twice at once → one payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_request_never_pays_twice() {
    let ledger = Ledger::start(1).await;
    let merchant = merchant(|_| {}).await;
    let gw = gateway(gateway_config(&ledger, 20_000_000)).await;
    let (sid, token) = ledger.session("100.00", Some(WALLET)).await;
    let agent = Agent::new(&gw, &sid, &token);
    let url = merchant.url(V1_REPORT);

    let (status, first) = agent.fetch(&url, Some("once")).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = agent.fetch(&url, Some("once")).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(code(&again), "already_paid");
    assert_eq!(again["receipt_id"], first["payment"]["receipt_id"]);
    assert_eq!(again["transaction_hash"], first["payment"]["transaction_hash"]);
    assert_eq!(merchant.stats().payment_attempts, 1);

    let both = join_all((0..2).map(|_| {
        let agent = agent.clone();
        let url = url.clone();
        async move { agent.fetch(&url, Some("twice-at-once")).await }
    }))
    .await;
    let ok = both.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 1, "{both:#?}");
    let other = both.iter().find(|(s, _)| *s != 200).unwrap();
    assert_eq!(other.0, 409, "{other:?}");
    assert!(
        ["already_paid", "payment_pending"].contains(&code(&other.1)),
        "{other:?}"
    );
    assert_eq!(merchant.stats().payment_attempts, 2);
    assert_eq!(merchant.settled().len(), 2);
    assert_eq!(gw.stats().signatures, 2);
    assert_eq!(units(&ledger.view(&sid).await.spent), 2 * TEN_DOLLARS);
    ledger.shutdown().await;
}

/// Asserts a refusal left nothing behind: no hold, no signature, no payment
/// attempt at the merchant.
async fn assert_nothing_left(ledger: &Ledger, gw: &gateway::GatewayHandle, merchant: &x402_merchant::MerchantHandle) {
    assert_eq!(ledger.live_holds().await, 0, "no hold");
    assert_eq!(gw.stats().signatures, 0, "no signature");
    assert_eq!(merchant.stats().payment_attempts, 0, "no payment attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_402s_are_refused_before_anything_is_held_or_signed() {
    let ledger = Ledger::start(1).await;
    let merchant = merchant(|m| m.failure = FailureMode::InvalidRequirements).await;
    let gw = gateway(gateway_config(&ledger, 20_000_000)).await;
    let (sid, token) = ledger.session("25.00", Some(WALLET)).await;
    let agent = Agent::new(&gw, &sid, &token);
    for path in [V1_REPORT, V2_REPORT] {
        let (status, answer) = agent.fetch(&merchant.url(path), Some("malformed")).await;
        assert_eq!(status, 502, "{answer}");
        assert_eq!(code(&answer), "malformed_payment_required");
        assert_eq!(answer["upstream_status"], 402);
    }
    assert_nothing_left(&ledger, &gw, &merchant).await;

    merchant.set_failure(FailureMode::UnknownScheme { scheme: "upto".into() });
    for path in [V1_REPORT, V2_REPORT] {
        let (status, answer) = agent.fetch(&merchant.url(path), None).await;
        assert_eq!(status, 402, "{answer}");
        assert_eq!(code(&answer), "no_payable_requirement");
        assert!(answer["message"].as_str().unwrap().contains("upto"), "{answer}");
    }
    assert_nothing_left(&ledger, &gw, &merchant).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_networks_and_assets_are_refused() {
    let ledger = Ledger::start(1).await;
    let gw = gateway(gateway_config(&ledger, 20_000_000)).await;
    let (sid, token) = ledger.session("25.00", Some(WALLET)).await;
    let agent = Agent::new(&gw, &sid, &token);
    let mainnet = merchant(|m| m.network = Network::Base).await;
    let other_token = merchant(|m| m.asset = x402::Address::repeat_byte(0x11)).await;
    for m in [&mainnet, &other_token] {
        for path in [V1_REPORT, V2_REPORT] {
            let (status, answer) = agent.fetch(&m.url(path), None).await;
            assert_eq!(status, 402, "{answer}");
            assert_eq!(code(&answer), "no_payable_requirement");
        }
        assert_nothing_left(&ledger, &gw, m).await;
    }

    // A session counted in another asset cannot pay with USDC.
    let (eur, eur_token) = ledger
        .session_with(CreateSessionRequest {
            cap: "25.00".into(),
            asset: Some("EURC".into()),
            decimals: Some(6),
            agent_id: "agent-eur".into(),
            wallet_address: Some(WALLET.into()),
            ..CreateSessionRequest::default()
        })
        .await;
    let usdc = merchant(|_| {}).await;
    let (status, answer) = Agent::new(&gw, &eur, &eur_token)
        .fetch(&usdc.url(V1_REPORT), None)
        .await;
    assert_eq!(status, 402, "{answer}");
    assert_eq!(code(&answer), "no_payable_requirement");
    assert_nothing_left(&ledger, &gw, &usdc).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amounts_above_a_maximum_or_the_remaining_budget_are_refused_without_a_signature() {
    let ledger = Ledger::start(1).await;
    let merchant = merchant(|m| {
        m.routes
            .push(RouteConfig::new("/paid/v1/cheap", X402Version::V1, 10_000))
    })
    .await;
    // The gateway's per-payment maximum: $5.
    let gw = gateway(gateway_config(&ledger, 5_000_000)).await;
    let (sid, token) = ledger.session("25.00", Some(WALLET)).await;
    let agent = Agent::new(&gw, &sid, &token);
    for path in [V1_REPORT, V2_REPORT] {
        let (status, answer) = agent.fetch(&merchant.url(path), Some("too-much")).await;
        assert_eq!(status, 402, "{answer}");
        assert_eq!(code(&answer), "payment_above_maximum");
        assert_eq!(answer["requirement"]["amount_atomic"], "10000000");
    }
    // The caller's own maximum.
    let mut req = agent.request(&merchant.url("/paid/v1/cheap"), None);
    req.max_amount_atomic = Some("9999".into());
    let (status, answer) = agent.send(&req).await;
    assert_eq!(status, 402, "{answer}");
    assert_eq!(code(&answer), "payment_above_maximum");
    assert_nothing_left(&ledger, &gw, &merchant).await;

    // Above what the session has left: the ledger denies, nothing is signed.
    let big = gateway(gateway_config(&ledger, 20_000_000)).await;
    let (small, small_token) = ledger.session("5.00", Some(WALLET)).await;
    let (status, answer) = Agent::new(&big, &small, &small_token)
        .fetch(&merchant.url(V2_REPORT), Some("over-cap"))
        .await;
    assert_eq!(status, 402, "{answer}");
    assert_eq!(code(&answer), "budget_denied");
    assert_eq!(answer["reason"], "session_cap");
    assert_nothing_left(&ledger, &big, &merchant).await;

    // A per-tool cap: the gateway's tool map names the merchant's paid
    // routes "reports"; an agent-given tool that agrees is accepted.
    let mut mapped = gateway_config(&ledger, 20_000_000);
    mapped.tool_map =
        gateway::ToolRule::parse_list(&format!("127.0.0.1:{}/paid=reports", merchant.addr().port())).unwrap();
    let mapped = gateway(mapped).await;
    let (capped, capped_token) = ledger
        .session_with(CreateSessionRequest {
            cap: "25.00".into(),
            agent_id: "agent-tools".into(),
            wallet_address: Some(WALLET.into()),
            tool_caps: [("reports".to_string(), "5.00".to_string())].into(),
            ..CreateSessionRequest::default()
        })
        .await;
    let capped_agent = Agent::new(&mapped, &capped, &capped_token);
    let mut req = capped_agent.request(&merchant.url(V1_REPORT), Some("tool-capped"));
    req.tool = Some("reports".into());
    let (status, answer) = capped_agent.send(&req).await;
    assert_eq!(status, 402, "{answer}");
    assert_eq!(answer["reason"], "tool_cap");
    assert_nothing_left(&ledger, &mapped, &merchant).await;
    assert_eq!(big.stats().denials, 1);
    assert_eq!(mapped.stats().denials, 1);
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_authenticate_and_free_requests_pass_through() {
    let ledger = Ledger::start(1).await;
    let merchant = merchant(|_| {}).await;
    let gw = gateway(gateway_config(&ledger, 20_000_000)).await;
    let (sid, token) = ledger.session("25.00", Some(WALLET)).await;
    let (other_sid, other_token) = ledger.session("25.00", Some(WALLET)).await;
    let agent = Agent::new(&gw, &sid, &token);
    let paid = merchant.url(V1_REPORT);

    // No payment needed: relayed as is.
    let (status, answer) = agent.fetch(&merchant.url("/not-paid"), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], 404);
    assert!(answer.get("payment").is_none());

    let req = agent.request(&paid, None);
    for bad in [
        ADMIN_TOKEN,
        other_token.as_str(),
        "sct_0000000000000000000000000000000000",
    ] {
        let (status, answer) = agent.send_as(bad, &req).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(code(&answer), "unauthorized");
    }
    let raw = reqwest::Client::new();
    let unauthenticated = raw
        .post(format!("{}/v1/fetch", gw.url()))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let not_json = raw
        .post(format!("{}/v1/fetch", gw.url()))
        .bearer_auth(&token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);
    let (status, answer) = agent
        .send(&gateway::FetchRequest {
            url: "ftp://x/".into(),
            ..req.clone()
        })
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(code(&answer), "invalid_request");

    // Wallets: none on the session, or one the gateway has no key for.
    let (no_wallet, no_wallet_token) = ledger.session("25.00", None).await;
    let (unknown_wallet, unknown_wallet_token) = ledger.session("25.00", Some(OTHER_WALLET)).await;
    for (s, t) in [(no_wallet, no_wallet_token), (unknown_wallet, unknown_wallet_token)] {
        let (status, answer) = Agent::new(&gw, &s, &t).fetch(&paid, None).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(code(&answer), "wallet_unavailable");
    }

    // A revoked session is refused outright.
    ledger.admin().revoke_session(&other_sid).await.unwrap();
    let (status, answer) = Agent::new(&gw, &other_sid, &other_token).fetch(&paid, None).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(code(&answer), "session_inactive");
    assert_nothing_left(&ledger, &gw, &merchant).await;
    ledger.shutdown().await;
}
