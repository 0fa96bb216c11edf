//! End-to-end tests: a small x402 client (built on the `x402` crate) pays the merchant over
//! real HTTP on 127.0.0.1.

use std::time::Duration;

use alloy_primitives::{keccak256, Address, B256};
use reqwest::StatusCode;
use x402::codec::X402Message;
use x402::exact_evm::BASE_SEPOLIA_USDC;
use x402::{
    build_payment_v1, build_payment_v2, headers, select_requirement, DecodeError, FacilitatorRequest, LocalKeySigner,
    Network, PaymentPayload, PaymentRequiredV1, PaymentRequiredV2, PaymentRequirements, SelectError,
    SettlementResponse, Signer, SupportedResponse, VerifyResponse, WalletSupport, X402Version,
};
use x402_merchant::{
    FailureMode, Merchant, MerchantClock, MerchantConfig, MerchantError, MerchantHandle, RouteConfig,
    NONCE_REUSED_REASON,
};

/// Bound on every wait in these tests; a hit means a bug, not slowness.
const TEST_WAIT: Duration = Duration::from_secs(20);
const V1_PATH: &str = "/paid/v1/resource";
const V2_PATH: &str = "/paid/v2/resource";
const START: u64 = 1_750_000_000;

fn payer() -> LocalKeySigner {
    // Deterministic test key (fixed scalar), never funded anywhere.
    LocalKeySigner::from_bytes(&[0x42; 32]).unwrap()
}

fn nonce(n: u8) -> B256 {
    B256::repeat_byte(n)
}

fn wallet() -> WalletSupport {
    WalletSupport::new().with(Network::BaseSepolia, BASE_SEPOLIA_USDC)
}

async fn start_manual() -> MerchantHandle {
    Merchant::start(MerchantConfig {
        clock: MerchantClock::manual(START),
        ..MerchantConfig::default()
    })
    .await
    .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(TEST_WAIT).build().unwrap()
}

/// Asks for the resource, reads the 402, selects and signs. Returns (header name, value).
async fn make_payment(
    http: &reqwest::Client,
    url: &str,
    version: X402Version,
    signer: &LocalKeySigner,
    now: u64,
    nonce: B256,
) -> (&'static str, String) {
    let first = http.get(url).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::PAYMENT_REQUIRED);
    match version {
        X402Version::V1 => {
            let body = first.bytes().await.unwrap();
            let required = PaymentRequiredV1::from_json_slice(&body).unwrap();
            let chosen = select_requirement(&required.accepts, &wallet()).unwrap();
            let payment = build_payment_v1(chosen.requirement, signer, now, nonce).await.unwrap();
            (headers::X_PAYMENT, payment.to_header().unwrap())
        }
        X402Version::V2 => {
            let header = first
                .headers()
                .get(headers::PAYMENT_REQUIRED)
                .expect("v2 402 carries PAYMENT-REQUIRED")
                .to_str()
                .unwrap()
                .to_owned();
            let required = PaymentRequiredV2::from_header(&header).unwrap();
            let chosen = select_requirement(&required.accepts, &wallet()).unwrap();
            let payment = build_payment_v2(
                chosen.requirement,
                Some(required.resource.clone()),
                required.extensions.clone(),
                signer,
                now,
                nonce,
            )
            .await
            .unwrap();
            (headers::PAYMENT_SIGNATURE, payment.to_header().unwrap())
        }
    }
}

/// Asserts `response` is a 402 and returns its `PAYMENT-REQUIRED` header (v2).
fn payment_required_header(response: &reqwest::Response) -> &str {
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    response
        .headers()
        .get(headers::PAYMENT_REQUIRED)
        .unwrap()
        .to_str()
        .unwrap()
}

fn settlement_of(response: &reqwest::Response, version: X402Version) -> SettlementResponse {
    let value = response
        .headers()
        .get(headers::settlement_header(version))
        .expect("settlement header present")
        .to_str()
        .unwrap();
    SettlementResponse::from_header(value).unwrap()
}

fn signature_hash(header_value: &str, version: X402Version) -> B256 {
    let sig = match version {
        X402Version::V1 => {
            x402::PaymentPayloadV1::from_header(header_value)
                .unwrap()
                .payload
                .signature
        }
        X402Version::V2 => {
            x402::PaymentPayloadV2::from_header(header_value)
                .unwrap()
                .payload
                .signature
        }
    };
    keccak256(&sig)
}

async fn pays_route(version: X402Version, path: &str) {
    let merchant = start_manual().await;
    let http = client();
    let url = merchant.url(path);
    let (name, value) = make_payment(&http, &url, version, &payer(), START, nonce(1)).await;
    let paid = http.get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(paid.status(), StatusCode::OK);

    let settlement = settlement_of(&paid, version);
    assert!(settlement.success);
    assert_eq!(settlement.error_reason, None);
    let expected_tx = signature_hash(&value, version);
    assert_eq!(settlement.transaction, expected_tx.to_string());
    assert_eq!(
        settlement.payer.as_deref().map(|p| p.parse::<Address>().unwrap()),
        Some(payer().address())
    );
    assert_eq!(settlement.network, Network::BaseSepolia.wire_name(version));
    let body: serde_json::Value = paid.json().await.unwrap();
    assert_eq!(body["path"], path);

    let stats = merchant.stats();
    assert_eq!(stats.payment_required_served, 1);
    assert_eq!(stats.payment_attempts, 1);
    assert_eq!(stats.settlements_succeeded, 1);
    assert_eq!(stats.payments_rejected, 0);
    let settled = merchant.settled();
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].payer, payer().address());
    assert_eq!(settled[0].value, 10_000);
    assert_eq!(settled[0].nonce, nonce(1));
    assert_eq!(settled[0].transaction, expected_tx);
    assert_eq!(settled[0].route, path);
    assert_eq!(settled[0].version, version);
    merchant.shutdown().await;
}

#[tokio::test]
async fn pays_v1_route_over_http() {
    pays_route(X402Version::V1, V1_PATH).await;
}

#[tokio::test]
async fn pays_v2_route_over_http() {
    pays_route(X402Version::V2, V2_PATH).await;
}

#[tokio::test]
async fn requirements_are_real_and_match_config() {
    let merchant = Merchant::start(MerchantConfig {
        routes: vec![
            RouteConfig::new("/paid/v1/cheap", X402Version::V1, 1),
            RouteConfig::new("/paid/v2/dear", X402Version::V2, 2_500_000),
        ],
        max_timeout_seconds: 30,
        ..MerchantConfig::default()
    })
    .await
    .unwrap();
    let http = client();

    let v1 = http.get(merchant.url("/paid/v1/cheap")).send().await.unwrap();
    assert_eq!(v1.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(v1.headers().get(headers::PAYMENT_REQUIRED).is_none());
    let body = PaymentRequiredV1::from_json_slice(&v1.bytes().await.unwrap()).unwrap();
    let req = &body.accepts[0];
    assert_eq!(req.scheme, "exact");
    assert_eq!(req.network, "base-sepolia");
    assert_eq!(req.max_amount_required, 1);
    assert_eq!(req.max_timeout_seconds, 30);
    assert_eq!(req.asset, "0x036CbD53842c5426634e7929541eC2318f3dCF7e");
    assert_eq!(req.resource, merchant.url("/paid/v1/cheap"));
    assert_eq!(req.extra.as_ref().unwrap()["name"], "USDC");
    assert_eq!(req.extra.as_ref().unwrap()["version"], "2");

    let v2 = http.get(merchant.url("/paid/v2/dear")).send().await.unwrap();
    let header = payment_required_header(&v2);
    let required = PaymentRequiredV2::from_header(header).unwrap();
    assert_eq!(required.accepts[0].network, "eip155:84532");
    assert_eq!(required.accepts[0].amount, 2_500_000);
    assert_eq!(required.resource.url, merchant.url("/paid/v2/dear"));
    assert_eq!(
        merchant.requirements("/paid/v2/dear"),
        Some(PaymentRequirements::V2(required.accepts[0].clone()))
    );
    assert_eq!(merchant.stats().payment_required_served, 2);
    assert_eq!(merchant.stats().payment_attempts, 0);
}

#[tokio::test]
async fn nonce_reuse_is_rejected() {
    let merchant = start_manual().await;
    let http = client();
    let url = merchant.url(V2_PATH);
    let (name, value) = make_payment(&http, &url, X402Version::V2, &payer(), START, nonce(7)).await;
    let first = http.get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);

    let replay = http.get(&url).header(name, &value).send().await.unwrap();
    let header = payment_required_header(&replay);
    let required = PaymentRequiredV2::from_header(header).unwrap();
    assert_eq!(required.error.as_deref(), Some(NONCE_REUSED_REASON));

    // Same nonce re-signed with a fresh window is still the same (payer, nonce): rejected.
    let (_, resigned) = make_payment(&http, &url, X402Version::V2, &payer(), START + 5, nonce(7)).await;
    let again = http.get(&url).header(name, &resigned).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::PAYMENT_REQUIRED);

    // A fresh nonce pays.
    let (_, fresh) = make_payment(&http, &url, X402Version::V2, &payer(), START, nonce(8)).await;
    let ok = http.get(&url).header(name, &fresh).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    let stats = merchant.stats();
    assert_eq!(stats.settlements_succeeded, 2);
    assert_eq!(stats.payments_rejected, 2);
    assert_eq!(stats.payment_attempts, 4);
    assert_eq!(stats.last_error_reason.as_deref(), Some(NONCE_REUSED_REASON));
    let nonces: Vec<B256> = merchant.settled().iter().map(|p| p.nonce).collect();
    assert_eq!(nonces, vec![nonce(7), nonce(8)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_double_spend_settles_once() {
    let merchant = start_manual().await;
    let http = client();
    let url = merchant.url(V1_PATH);
    let (name, value) = make_payment(&http, &url, X402Version::V1, &payer(), START, nonce(9)).await;
    let requests = (0..8).map(|_| http.get(&url).header(name, &value).send());
    let statuses: Vec<StatusCode> = futures_join_all(requests).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{statuses:?}");
    assert_eq!(merchant.settled().len(), 1);
    assert_eq!(merchant.stats().payments_rejected, 7);
}

/// Minimal join_all over reqwest futures using tokio tasks (keeps dev-deps small).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<StatusCode>
where
    F: std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap().unwrap().status());
    }
    out
}

#[tokio::test]
async fn settlement_failure_switch() {
    let merchant = start_manual().await;
    merchant.set_failure(FailureMode::SettlementFails {
        error_reason: "insufficient_funds".into(),
    });
    let http = client();
    // Distinct nonces: (payer, nonce) is consumed across all routes, as on chain.
    for (version, path, n) in [(X402Version::V1, V1_PATH, 3), (X402Version::V2, V2_PATH, 4)] {
        let url = merchant.url(path);
        let settled_before = merchant.settled().len();
        let (name, value) = make_payment(&http, &url, version, &payer(), START, nonce(n)).await;
        let failed = http.get(&url).header(name, &value).send().await.unwrap();
        assert_eq!(failed.status(), StatusCode::PAYMENT_REQUIRED);
        let settlement = settlement_of(&failed, version);
        assert!(!settlement.success);
        assert_eq!(settlement.error_reason.as_deref(), Some("insufficient_funds"));
        assert_eq!(settlement.transaction, "");
        assert_eq!(merchant.settled().len(), settled_before);

        // The nonce was not consumed: the same payment goes through once the switch is off.
        merchant.set_failure(FailureMode::None);
        let ok = http.get(&url).header(name, &value).send().await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert!(settlement_of(&ok, version).success);
        merchant.set_failure(FailureMode::SettlementFails {
            error_reason: "insufficient_funds".into(),
        });
    }
    let stats = merchant.stats();
    assert_eq!(stats.settlements_failed, 2);
    assert_eq!(stats.settlements_succeeded, 2);
    assert_eq!(merchant.settled().len(), 2);
}

#[tokio::test]
async fn expired_and_invalid_payments_are_rejected() {
    let merchant = start_manual().await;
    let http = client();
    let url = merchant.url(V1_PATH);
    let (name, value) = make_payment(&http, &url, X402Version::V1, &payer(), START, nonce(4)).await;

    // The merchant's clock passes validBefore (START + 60).
    merchant.clock().advance(60);
    let late = http.get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(late.status(), StatusCode::PAYMENT_REQUIRED);
    let body = PaymentRequiredV1::from_json_slice(&late.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body.error.as_deref(),
        Some("invalid_exact_evm_payload_authorization_valid_before")
    );
    // Requirements are still offered with the rejection.
    assert_eq!(body.accepts.len(), 1);

    // Signed with the wrong domain name: signature error.
    merchant.clock().set(START);
    let mut wrong = match merchant.requirements(V1_PATH) {
        Some(PaymentRequirements::V1(r)) => r,
        other => panic!("unexpected {other:?}"),
    };
    wrong.extra = Some(serde_json::json!({"name": "USD Coin", "version": "2"}));
    let bad = build_payment_v1(&wrong, &payer(), START, nonce(5)).await.unwrap();
    let resp = http
        .get(&url)
        .header(name, bad.to_header().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    let body = PaymentRequiredV1::from_json_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body.error.as_deref(), Some("invalid_exact_evm_payload_signature"));

    // Undecodable header: 400.
    let garbage = http.get(&url).header(name, "!!!").send().await.unwrap();
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);

    // A v2 payload on the v1 route (right header name, wrong version): 400.
    let url2 = merchant.url(V2_PATH);
    let (_, v2_value) = make_payment(&http, &url2, X402Version::V2, &payer(), START, nonce(6)).await;
    let wrong_version = http.get(&url).header(name, &v2_value).send().await.unwrap();
    assert_eq!(wrong_version.status(), StatusCode::BAD_REQUEST);

    let stats = merchant.stats();
    assert_eq!(stats.payments_rejected, 4);
    assert_eq!(stats.settlements_succeeded, 0);
    assert!(merchant.settled().is_empty());
}

async fn hang_case(mode: FailureMode, expect_settled: usize) {
    let merchant = start_manual().await;
    let http = client();
    let url = merchant.url(V2_PATH);
    let (name, value) = make_payment(&http, &url, X402Version::V2, &payer(), START, nonce(2)).await;
    merchant.set_failure(mode);
    let request = tokio::spawn({
        let http = http.clone();
        let url = url.clone();
        async move { http.get(&url).header(name, value).send().await }
    });
    let stats = tokio::time::timeout(TEST_WAIT, merchant.wait_for_stats(|s| s.requests_hung == 1))
        .await
        .expect("the merchant should hold the paid request");
    assert_eq!(stats.payment_attempts, 1);
    assert_eq!(merchant.settled().len(), expect_settled);
    assert!(!request.is_finished(), "a hung request must not have an answer");

    // Shutting down releases the request (503 or a dropped connection), without hanging.
    tokio::time::timeout(TEST_WAIT, merchant.shutdown())
        .await
        .expect("shutdown completes even with a hung request");
    let outcome = tokio::time::timeout(TEST_WAIT, request).await.unwrap().unwrap();
    if let Ok(response) = outcome {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test]
async fn hang_before_settle_holds_request_and_settles_nothing() {
    hang_case(FailureMode::HangBeforeSettle, 0).await;
}

#[tokio::test]
async fn hang_after_settle_holds_request_after_settling() {
    hang_case(FailureMode::HangAfterSettle, 1).await;
}

#[tokio::test]
async fn invalid_requirements_switch_serves_malformed_402() {
    let merchant = start_manual().await;
    merchant.set_failure(FailureMode::InvalidRequirements);
    let http = client();

    let v1 = http.get(merchant.url(V1_PATH)).send().await.unwrap();
    assert_eq!(v1.status(), StatusCode::PAYMENT_REQUIRED);
    let err = PaymentRequiredV1::from_json_slice(&v1.bytes().await.unwrap()).unwrap_err();
    assert!(matches!(err, DecodeError::Json(_)), "{err:?}");

    let v2 = http.get(merchant.url(V2_PATH)).send().await.unwrap();
    let header = payment_required_header(&v2);
    let err = PaymentRequiredV2::from_header(header).unwrap_err();
    assert!(matches!(err, DecodeError::Base64(_)), "{err:?}");
    assert_eq!(merchant.stats().payment_required_served, 2);
}

#[tokio::test]
async fn unknown_scheme_switch() {
    let merchant = start_manual().await;
    let http = client();
    let url = merchant.url(V2_PATH);
    // Prepare a valid exact payment first, then switch the offer to an unknown scheme.
    let (name, value) = make_payment(&http, &url, X402Version::V2, &payer(), START, nonce(1)).await;
    merchant.set_failure(FailureMode::UnknownScheme {
        scheme: "teleport".into(),
    });
    let offer = http.get(&url).send().await.unwrap();
    let header = offer
        .headers()
        .get(headers::PAYMENT_REQUIRED)
        .unwrap()
        .to_str()
        .unwrap();
    let required = PaymentRequiredV2::from_header(header).unwrap();
    assert_eq!(required.accepts[0].scheme, "teleport");
    assert_eq!(
        select_requirement(&required.accepts, &wallet()).unwrap_err(),
        SelectError::NoSupportedScheme {
            offered: vec!["teleport".into()]
        }
    );
    let paid = http.get(&url).header(name, &value).send().await.unwrap();
    let header = payment_required_header(&paid);
    let rejected = PaymentRequiredV2::from_header(header).unwrap();
    assert_eq!(rejected.error.as_deref(), Some("invalid_scheme"));
    assert!(merchant.settled().is_empty());
}

#[tokio::test]
async fn facilitator_endpoints_verify_and_settle() {
    let merchant = start_manual().await;
    let http = client();
    let requirements = merchant.requirements(V2_PATH).unwrap();
    let PaymentRequirements::V2(accepted) = &requirements else {
        panic!("v2 route")
    };
    let payload = build_payment_v2(accepted, None, None, &payer(), START, nonce(11))
        .await
        .unwrap();
    let request = FacilitatorRequest {
        x402_version: X402Version::V2,
        payment_payload: PaymentPayload::V2(payload),
        payment_requirements: requirements.clone(),
    };
    let body = request.to_json_vec().unwrap();

    let supported: SupportedResponse = http
        .get(merchant.url("/facilitator/supported"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(supported
        .kinds
        .iter()
        .any(|k| k.x402_version == X402Version::V2 && k.network == "eip155:84532"));

    let post = |path: &'static str, body: Vec<u8>| {
        http.post(merchant.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let verified: VerifyResponse = post("/facilitator/verify", body.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(verified.is_valid, "{verified:?}");
    assert_eq!(verified.payer.unwrap().parse::<Address>().unwrap(), payer().address());

    let settled: SettlementResponse = post("/facilitator/settle", body.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(settled.success);
    assert_eq!(settled.network, "eip155:84532");
    assert_eq!(settled.amount, Some(10_000));
    assert_eq!(settled.transaction, merchant.settled()[0].transaction.to_string());

    // The same authorization cannot be verified or settled again.
    let again: VerifyResponse = post("/facilitator/verify", body.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again.invalid_reason.as_deref(), Some(NONCE_REUSED_REASON));
    let twice: SettlementResponse = post("/facilitator/settle", body).await.unwrap().json().await.unwrap();
    assert!(!twice.success);
    assert_eq!(twice.error_reason.as_deref(), Some(NONCE_REUSED_REASON));

    let junk = post("/facilitator/verify", b"{\"nope\":1}".to_vec()).await.unwrap();
    assert_eq!(junk.status(), StatusCode::BAD_REQUEST);
    let junk: VerifyResponse = junk.json().await.unwrap();
    assert_eq!(junk.invalid_reason.as_deref(), Some("invalid_payload"));

    let oversized = post("/facilitator/verify", vec![b' '; 128 * 1024]).await.unwrap();
    assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(merchant.settled().len(), 1);
}

#[tokio::test]
async fn system_clock_default_config_pays() {
    // The default configuration (system clock) with a client using the system clock too.
    let merchant = Merchant::start(MerchantConfig::default()).await.unwrap();
    let http = client();
    let now = merchant.clock().now_unix_secs();
    assert!(now > START, "system clock looks wrong: {now}");
    let url = merchant.url(V1_PATH);
    let (name, value) = make_payment(&http, &url, X402Version::V1, &payer(), now, nonce(1)).await;
    let paid = http.get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(paid.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_configs_are_typed_errors() {
    let dup = MerchantConfig {
        routes: vec![
            RouteConfig::new("/a", X402Version::V1, 1),
            RouteConfig::new("/a", X402Version::V2, 1),
        ],
        ..MerchantConfig::default()
    };
    for config in [
        dup,
        MerchantConfig {
            routes: vec![],
            ..MerchantConfig::default()
        },
        MerchantConfig {
            routes: vec![RouteConfig::new("no-slash", X402Version::V1, 1)],
            ..MerchantConfig::default()
        },
        MerchantConfig {
            routes: vec![RouteConfig::new("/x/{id}", X402Version::V1, 1)],
            ..MerchantConfig::default()
        },
        MerchantConfig {
            routes: vec![RouteConfig::new("/facilitator/verify", X402Version::V1, 1)],
            ..MerchantConfig::default()
        },
        MerchantConfig {
            max_timeout_seconds: 0,
            ..MerchantConfig::default()
        },
    ] {
        assert!(matches!(
            Merchant::start(config).await,
            Err(MerchantError::InvalidConfig(_))
        ));
    }
}
